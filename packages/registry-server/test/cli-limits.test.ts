/**
 * The built `reasonplug-registry` (plain `node`, as npm users run it) under an open-files limit too low for Node to
 * load it. The child is started as `bash -c 'ulimit -n …; exec node …'`: a process may always lower its own limits.
 */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { builtPackage } from '../../../test/support/built-package.js';
import { scratch } from './support/tmp.js';

const run = promisify(execFile);

/** Runs `node ...args` in a shell that first raises or lowers the open-files limit to `files`. */
async function withOpenFiles(files: number, args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    // (a serve that started after all is killed, not left behind)
    const { stdout, stderr } = await run('bash', ['-c', `ulimit -n ${files} && exec "$0" "$@"`, process.execPath, ...args], { timeout: 20_000 });
    return { stdout, stderr, code: 0 };
  } catch (err) {
    const e = err as { stdout: string; stderr: string; code: number };
    return { stdout: e.stdout, stderr: e.stderr, code: e.code };
  }
}

describe('reasonplug-registry under a low open-files limit', function () {
  this.timeout(60_000);

  before(function () {
    // ulimit in bash, the limit read from /proc
    if (process.platform !== 'linux') this.skip();
  });

  it('says that the limit is too low to start, and how to raise it', async () => {
    const bin = join(await builtPackage('registry-server', await scratch('built')), 'bin', 'reasonplug-registry.js');
    const low = await withOpenFiles(64, [bin, 'serve', '--data', await scratch('data'), '--port', '0']);
    expect(low.code, low.stderr).to.equal(1);
    expect(low.stdout).to.equal('');
    expect(low.stderr).to.match(/^reasonplug-registry: cannot start with an open-files limit of 64 \(ulimit -n\): loading it takes about \d+ open files at once; raise the limit \(`ulimit -n 1024`\) and run it again\n$/);
    const { version } = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
    const raised = await withOpenFiles(1024, [bin, '--version']);
    expect([raised.code, raised.stdout]).to.deep.equal([0, `${version}\n`]);
  });
});
