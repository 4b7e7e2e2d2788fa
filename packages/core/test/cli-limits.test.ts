/**
 * The built CLI (plain `node`, as npm users run it) under the process limits users run into: an open-files limit too
 * low for Node to load it, an address-space limit too low for onnxruntime to load a model. Each child is started as
 * `bash -c 'ulimit …; exec node …'`, which needs no privileges: a process may always lower its own limits.
 */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { mkdir, readdir, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { randomLlamaWeights, writeLlamaModel } from '../src/onnx/llama-builder.js';
import type { LlamaConfig } from '../src/onnx/llama-spec.js';
import { builtPackage } from '../../../test/support/built-package.js';
import { repoRoot } from '../../../test/support/paths.js';
import { smallConfig } from './support/models.js';
import { useTempDir } from './support/temp-cache.js';
import type { CliResult } from './support/cli.js';

const run = promisify(execFile);

/** Runs `node ...args` in a shell that first runs `limit` (`ulimit -n 64`), with `env` over this process's. */
async function limited(limit: string, args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  try {
    const { stdout, stderr } = await run('bash', ['-c', `${limit} && exec "$0" "$@"`, process.execPath, ...args], { env: { ...process.env, ...env }, timeout: 60_000 });
    return { stdout, stderr, code: 0 };
  } catch (err) {
    const e = err as CliResult;
    return { stdout: e.stdout, stderr: e.stderr, code: e.code };
  }
}

/** Bytes in the files of a directory. */
async function bytesIn(dir: string): Promise<number> {
  const sizes = await Promise.all((await readdir(dir)).map(async (name) => (await stat(join(dir, name))).size));
  return sizes.reduce((a, b) => a + b, 0);
}

describe('the built CLI under process limits', function () {
  this.timeout(180_000);
  const scratch = useTempDir('reasonplug-limits-');
  let bin = '';

  before(async function () {
    // ulimit in bash, and the peak address space read from /proc
    if (process.platform !== 'linux') this.skip();
    bin = join(await builtPackage('core', join(scratch.dir, 'core')), 'bin', 'reasonplug.js');
  });

  it('says that the open-files limit is too low to start, and how to raise it; other failures to load as they are', async () => {
    const { version } = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
    const low = await limited('ulimit -n 64', [bin, '--version']);
    expect(low.code, low.stderr).to.equal(1);
    expect(low.stdout).to.equal('');
    expect(low.stderr).to.match(/^reasonplug: cannot start with an open-files limit of 64 \(ulimit -n\): loading it takes about \d+ open files at once; raise the limit \(`ulimit -n 1024`\) and run it again\n$/);
    const raised = await limited('ulimit -n 1024', [bin, '--version']);
    expect([raised.code, raised.stdout]).to.deep.equal([0, `${version}\n`]);

    // A dependency that is really missing, under an ordinary limit: the loader's own error, as without the check.
    const modules = join(scratch.dir, 'node_modules-without-commander');
    await mkdir(modules);
    for (const name of await readdir(join(repoRoot, 'node_modules'))) {
      if (name !== 'commander') await symlink(join(repoRoot, 'node_modules', name), join(modules, name));
    }
    const broken = join(await builtPackage('core', join(scratch.dir, 'core-without-commander'), modules), 'bin', 'reasonplug.js');
    const missing = await limited('ulimit -n 1024', [broken, '--version']);
    expect(missing.code).to.equal(1);
    expect(missing.stderr).to.include("Error [ERR_MODULE_NOT_FOUND]: Cannot find package 'commander'").and.not.include('open-files limit');
  });

  it('says that a model does not fit in memory, naming it and its size, where onnxruntime runs out loading it', async () => {
    // One arena for every thread: glibc otherwise reserves 64 MiB of address space for each thread's arena as threads
    // contend, which moved the peak by up to 135 MiB from run to run; with one, runs agree within a few MiB.
    const env = { REASONPLUG_CACHE: join(scratch.dir, 'cache'), MALLOC_ARENA_MAX: '1' };
    const small = join(scratch.dir, 'small');
    const big = join(scratch.dir, 'big');
    await mkdir(small);
    await mkdir(big);
    await writeLlamaModel(join(small, 'model.onnx'), smallConfig, randomLlamaWeights(smallConfig, 1), { externalData: true });
    // ~118 MiB of weights, most of it one layer's MLP
    const wide: LlamaConfig = { ...smallConfig, hiddenSize: 1024, numLayers: 1, numHeads: 16, numKvHeads: 16, intermediateSize: 8192 };
    await writeLlamaModel(join(big, 'model.onnx'), wide, randomLlamaWeights(wide, 1), { externalData: true });
    const generate = (dir: string) => ['generate', '--model', join(dir, 'model.onnx'), '--prompt-ids', '1,2,3', '--max-tokens', '1'];

    // The address space a whole run with the small model peaks at (the main thread reports it as the process exits)...
    const observer = join(scratch.dir, 'peak.mjs');
    await writeFile(
      observer,
      "import { readFileSync, writeSync } from 'node:fs';\nimport { isMainThread } from 'node:worker_threads';\n" +
        "if (isMainThread) process.on('exit', () => writeSync(2, `peak ${/VmPeak:\\s+(\\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))[1]} KiB\\n`));\n",
    );
    const baseline = await limited('true', ['--import', pathToFileURL(observer).href, bin, ...generate(small)], env);
    expect(baseline.code, baseline.stderr).to.equal(0);
    const peakKib = Number(/^peak (\d+) KiB$/m.exec(baseline.stderr)![1]);

    // ...and room for half the big model's bytes above it: onnxruntime needs some 1.7 times them (its mapping of the
    // weights file, then their packed copies), so it runs out while Node and the worker have all the room they took.
    const bytes = await bytesIn(big);
    const failed = await limited(`ulimit -v ${peakKib + Math.round(bytes / 2 / 1024)}`, [bin, ...generate(big)], env);
    expect(failed.code, failed.stderr).to.equal(1);
    // (onnxruntime logs its own lines before it; the CLI's is the one that names the model)
    const line = failed.stderr.split('\n').find((l) => l.startsWith('reasonplug: '));
    const mib = (bytes / 2 ** 20).toFixed(1);
    expect(line, failed.stderr).to.include(`reasonplug: ModelMemoryError: not enough memory to load ${join(big, 'model.onnx')} (${mib} MiB on disk): onnxruntime failed to allocate memory for it (`);
    expect(line).to.match(/\); the process's address space is limited to \d+\.\d+ GiB \(ulimit -v\)$/);
  });
});
