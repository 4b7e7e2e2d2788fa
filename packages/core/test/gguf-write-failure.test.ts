/**
 * A GGUF conversion whose writing fails (here: the file-size limit `ulimit -f`, as a full disk would) says so naming
 * the GGUF file and where the module was going, and leaves nothing: not the destination folder `convert gguf`
 * created, not a half-written cache entry. Conversions broken off by a kill are still listed by `reasonplug cache`
 * and swept by the next one.
 */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fromSources, models } from '../../../test/support/paths.js';
import { cliPath, runReasonplug } from './support/cli.js';
import { testDir } from './support/models.js';
import { age } from './support/owners.js';

/** `reasonplug ...args` with files limited to 500 KiB (the converted stories260K graph is about 1 MiB). */
async function limitedReasonplug(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stderr: string }> {
  const quoted = [process.execPath, ...fromSources, cliPath, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  try {
    await promisify(execFile)('bash', ['-c', `ulimit -f 500 && exec ${quoted}`], { env: { ...process.env, ...env } });
    return { code: 0, stderr: '' };
  } catch (err) {
    const e = err as { code: number; stderr: string };
    return { code: e.code, stderr: e.stderr };
  }
}

const SHA = '270cba1bd5109f42d03350f60406024560464db173c0e387d91f0426d3bd256d';

describe('a GGUF conversion that cannot be written', function () {
  this.timeout(120_000);

  it('convert gguf names the file and the destination, and removes the folder it made', async () => {
    const dest = join(testDir('convert-limit'), 'new', 'module');
    const run = await limitedReasonplug(['convert', 'gguf', models.stories260K, dest]);
    expect(run.code).to.not.equal(0);
    expect(run.stderr).to.match(new RegExp(`^reasonplug: ConversionError: cannot write the module converted from ${models.stories260K} into ${dest}: EFBIG: file too large`));
    // Both folders were made by the conversion: neither is left, so trying again is not refused as "not empty".
    expect(await readdir(join(dest, '..', '..'))).to.deep.equal([]);

    // A destination that was there before is kept, emptied of what was written.
    const existing = join(testDir('convert-existing'), 'module');
    await mkdir(existing);
    expect((await limitedReasonplug(['convert', 'gguf', models.stories260K, existing])).stderr).to.match(/ConversionError: .* EFBIG/);
    expect(await readdir(existing)).to.deep.equal([]);
  });

  it('a conversion into the cache names the file and the cache entry, and leaves no entry; one broken off is still listed, then swept', async () => {
    const cache = join(testDir('cache-limit'), 'cache');
    const env = { REASONPLUG_CACHE: cache };
    const args = ['generate', '--model', models.stories260K, '--prompt', 'Once upon a time', '--max-tokens', '4'];
    const run = await limitedReasonplug(args, env);
    expect(run.code).to.not.equal(0);
    const entry = join(cache, 'gguf', `${SHA}-kv16-v8`);
    expect(run.stderr).to.match(new RegExp(`^reasonplug: ConversionError: cannot write the module converted from ${models.stories260K} into ${entry}: EFBIG: file too large`));
    expect(await readdir(join(cache, 'gguf'))).to.deep.equal([]);

    // What a killed conversion leaves (a temp directory of a process that is gone) is listed, and the next conversion removes it.
    const broken = `${entry}.4194303-0a1b.tmp`;
    await mkdir(broken);
    await writeFile(join(broken, 'model.onnx'), 'half');
    // (not written for long: a conversion in another PID namespace looks dead here too while it writes)
    await age(broken);
    expect((await runReasonplug(['cache'], env)).stdout).to.match(/gguf .* a conversion in progress or broken off/);
    const ok = await runReasonplug(args, env);
    expect(ok.stdout).to.match(/^, there was/);
    expect(await readdir(join(cache, 'gguf'))).to.deep.equal([`${SHA}-kv16-v8`]);
  });
});
