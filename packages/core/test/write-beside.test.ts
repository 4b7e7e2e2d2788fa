/**
 * A command's output directory is written beside its destination and renamed onto it: stopped mid-write (Ctrl-C, a
 * kill), it leaves no half-written destination, which a rerun would refuse as not empty, and the rerun removes the
 * temp the stopped run left.
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeBeside } from '../src/cli/write-beside.js';
import { testDir } from './support/models.js';

const MODULE = fileURLToPath(new URL('../src/cli/write-beside.ts', import.meta.url));

/** Runs writeBeside(dest) in a child that writes one file, says so, and waits; stops it with `signal` then. */
function stoppedWhileWriting(dest: string, signal: NodeJS.Signals): Promise<NodeJS.Signals | null> {
  const script = `
    import { mkdir, writeFile } from 'node:fs/promises';
    import { writeBeside } from ${JSON.stringify(MODULE)};
    await writeBeside(${JSON.stringify(dest)}, async (tmp) => {
      await mkdir(tmp);
      await writeFile(tmp + '/model.onnx.data', Buffer.alloc(1 << 20));
      process.stdout.write('writing\\n');
      await new Promise((r) => setTimeout(r, 60_000));
    });`;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve) => {
    child.stdout.on('data', () => child.kill(signal));
    child.on('exit', (_code, stoppedBy) => resolve(stoppedBy));
  });
}

describe('writing a command output beside its destination', function () {
  this.timeout(60_000);

  for (const signal of ['SIGINT', 'SIGKILL'] as const) {
    it(`${signal} mid-write stops at once and leaves no destination; the next run removes the temp and writes it`, async () => {
      const root = testDir(`write-beside-${signal}`);
      const dest = join(root, 'out');
      expect(await stoppedWhileWriting(dest, signal)).to.equal(signal);
      const left = await readdir(root);
      expect(left).to.have.length(1);
      expect(left[0]).to.match(/^out\.\d+-[0-9a-f]+\.tmp$/);
      // Another destination's temp, beside it, is not this one's to remove.
      await mkdir(join(root, `out.x.${left[0]!.slice('out.'.length)}`));
      await writeBeside(dest, async (tmp) => {
        await mkdir(tmp);
        await writeFile(join(tmp, 'reasonplug.json'), '{}');
      });
      expect((await readdir(root)).sort()).to.deep.equal(['out', `out.x.${left[0]!.slice('out.'.length)}`]);
    });
  }

  it('a finished write lands on the destination (an empty directory there is taken); a failed one leaves nothing and names the destination', async () => {
    const root = testDir('write-beside-done');
    const dest = join(root, 'out');
    await mkdir(dest);
    await writeBeside(dest, async (tmp) => {
      await mkdir(tmp);
      await writeFile(join(tmp, 'reasonplug.json'), '{}');
    });
    expect(await readFile(join(dest, 'reasonplug.json'), 'utf8')).to.equal('{}');
    const failed = join(root, 'failed');
    const err = await writeBeside(failed, async (tmp) => {
      await mkdir(tmp);
      throw new Error(`cannot write ${join(tmp, 'model.onnx')}: disk full`);
    }).catch((e: Error) => e);
    expect((err as Error).message, 'named by the destination').to.equal(`cannot write ${join(failed, 'model.onnx')}: disk full`);
    expect(existsSync(failed)).to.equal(false);
    expect(await readdir(root)).to.deep.equal(['out']);
  });
});
