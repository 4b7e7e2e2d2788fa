/**
 * A .gguf file where a model is expected: converted once into $REASONPLUG_CACHE (keyed by its digest),
 * loaded as the module it became; a bad file leaves nothing in the cache.
 */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { copyFile, mkdir, open, readdir, readFile, stat, truncate, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { Engine } from '../src/engine.js';
import { GgufError } from '../src/index.js'; // users catch it from the package's entry
import { convertGguf } from '../src/gguf/convert.js';
import { ggufModuleDir } from '../src/gguf/gguf-module.js';
import { RACY_MS } from '../src/modules/file-digest.js';
import { loadModuleDir, ModuleIntegrityError } from '../src/modules/module-dir.js';
import { resolveModelPath } from '../src/registry/resolve-model.js';
import { startServer } from '../src/serve/server.js';
import { HASHING_DIGEST, type TransferProgress } from '../src/registry/download.js';
import { STORIES } from './support/gguf-models.js';
import { useTempCache } from './support/temp-cache.js';

describe('a .gguf file as the model', function () {
  this.timeout(120_000);
  const scratch = useTempCache('reasonplug-gguf-module-');

  it("a conversion in the current layout removes the same file's entries of earlier layouts whatever their options, and nothing else", async () => {
    const path = join(scratch.dir, 'stories-layouts.gguf');
    await copyFile(STORIES, path);
    const cacheDir = join(scratch.dir, 'layouts-cache');
    const sha = '270cba1bd5109f42d03350f60406024560464db173c0e387d91f0426d3bd256d';
    const other = 'f'.repeat(64);
    // (`<sha>-v4`: the default conversion as builds named it before keys and values were float16 by default)
    const old = [`${sha}-kv16-v5`, `${sha}-kv16-v3`, `${sha}-v4`, `${sha}-f16-v6`];
    // the file's conversions with other options in the current layout, another file's
    const kept = [`${sha}-v8`, `${sha}-f16-v8`, `${other}-kv16-v5`, `${other}-v4`];
    for (const name of [...old, ...kept]) {
      await mkdir(join(cacheDir, 'gguf', name), { recursive: true });
      await writeFile(join(cacheDir, 'gguf', name, 'model.onnx'), 'an earlier conversion');
    }
    const dir = await ggufModuleDir(path, { cacheDir });
    expect((await readdir(join(cacheDir, 'gguf'))).sort()).to.deep.equal([...kept, basename(dir)].sort());
    expect(basename(dir)).to.equal(`${sha}-kv16-v8`);
  });

  it('Engine.load converts it once into the cache and runs it; a second load (and a reasoner of the same file) reuses the conversion', async () => {
    const path = join(scratch.dir, 'stories.gguf');
    await copyFile(STORIES, path);
    const engine = await Engine.load({ model: path, reasoners: [{ model: path, weight: 0.5 }] });
    let modelStat;
    try {
      const r = await engine.generate({ promptIds: [1] }, { maxTokens: 4 });
      expect(r.rows[0]!.ids).to.deep.equal([403, 407, 261, 378]); // "Once upon a time", as llama.cpp reads the file
      const entries = await readdir(join(scratch.cache, 'gguf'));
      expect(entries).to.have.length(1);
      expect(entries[0]).to.match(/^270cba1bd5109f42d03350f60406024560464db173c0e387d91f0426d3bd256d-kv16-v8$/);
      modelStat = await stat(join(scratch.cache, 'gguf', entries[0]!, 'model.onnx'));
    } finally {
      await engine.dispose();
    }

    // A second load finds the conversion.
    const second = await Engine.load({ model: path });
    try {
      expect((await second.generate({ promptIds: [1] }, { maxTokens: 4 })).rows[0]!.ids).to.deep.equal([403, 407, 261, 378]);
    } finally {
      await second.dispose();
    }
    const afterSecond = await stat(join(scratch.cache, 'gguf', (await readdir(join(scratch.cache, 'gguf')))[0]!, 'model.onnx'));
    expect([afterSecond.ino, afterSecond.mtimeMs]).to.deep.equal([modelStat.ino, modelStat.mtimeMs]);

    // The same bytes under another name: found by digest, not converted again.
    const renamed = join(scratch.dir, 'renamed.gguf');
    await copyFile(path, renamed);
    const events: TransferProgress[] = [];
    const dir = await resolveModelPath(renamed, { onProgress: (p) => events.push(p) });
    expect(await readdir(join(scratch.cache, 'gguf'))).to.have.length(1);
    const again = await stat(join(dir, 'model.onnx'));
    expect(again.mtimeMs).to.equal(modelStat.mtimeMs);
    expect(again.ino).to.equal(modelStat.ino);
    // hashing progress only: no tensor was read
    expect(events.every((e) => e.digest === HASHING_DIGEST)).to.equal(true);
    const manifest = JSON.parse(await readFile(join(dir, 'reasonplug.json'), 'utf8')) as { provenance: { convertedFrom: { file: string } } };
    expect(manifest.provenance.convertedFrom.file).to.equal('stories.gguf');
  });

  it('a GGUF file is shown by its own name, not by the copy of the same bytes its cache entry was converted from', async () => {
    const [alpha, beta] = ['alpha', 'beta'].map((n) => join(scratch.dir, 'copies', `${n}.gguf`));
    await mkdir(join(scratch.dir, 'copies'), { recursive: true });
    for (const copy of [alpha!, beta!]) await copyFile(STORIES, copy);
    const dir = await resolveModelPath(alpha!);
    expect(await resolveModelPath(beta!)).to.equal(dir);
    const server = await startServer({ engine: { model: beta!, reasoners: [{ model: alpha! }] }, port: 0 });
    try {
      await server.ready;
      const { data } = (await (await fetch(`${server.url}/v1/models`)).json()) as { data: { id: string }[] };
      expect(data.map((m) => m.id)).to.deep.equal(['beta', 'beta+alpha']);
    } finally {
      await server.close();
    }
  });

  it('a file: URL names the file it points to (percent-escapes decoded); one of another host is refused by name', async () => {
    const spaced = join(scratch.dir, 'with space é', 'stories.gguf');
    await mkdir(join(spaced, '..'), { recursive: true });
    await copyFile(STORIES, spaced);
    const url = pathToFileURL(spaced).href;
    expect(url).to.include('with%20space%20%C3%A9');
    expect(await resolveModelPath(url)).to.equal(await resolveModelPath(spaced));
    const err = await resolveModelPath('file://elsewhere/models/x.gguf').catch((e: Error) => e);
    expect((err as Error).name).to.equal('ModelNotFoundError');
    expect((err as Error).message).to.match(/^file:\/\/elsewhere\/models\/x\.gguf is not a file URL of this machine: /);
  });

  it('reasonplug generate --model file.gguf converts into $REASONPLUG_CACHE and writes the story', async () => {
    const cli = fileURLToPath(new URL('../src/cli/reasonplug.ts', import.meta.url));
    const cliCache = join(scratch.dir, 'cli-cache');
    const args = ['--import', 'tsx', cli, 'generate', '--model', STORIES, '--prompt', 'Once upon a time', '--max-tokens', '12'];
    const env = { ...process.env, REASONPLUG_CACHE: cliCache };
    const { stdout } = await promisify(execFile)(process.execPath, args, { env });
    expect(stdout).to.match(/^, there was a little/);
    expect(await readdir(join(cliCache, 'gguf'))).to.have.length(1);
  });

  it('reports conversion progress through the tensor data', async () => {
    const other = join(scratch.dir, 'other-cache');
    const events: TransferProgress[] = [];
    await resolveModelPath(STORIES, { cacheDir: other, onProgress: (p) => events.push(p) });
    const reads = events.filter((e) => e.digest.startsWith('sha256:2'));
    expect(reads.length).to.be.greaterThan(10);
    for (let i = 1; i < reads.length; i++) expect(reads[i]!.bytes).to.be.at.least(reads[i - 1]!.bytes);
    expect(reads.at(-1)).to.include({ done: true });
  });

  it('hashes an unchanged GGUF once: later loads take its digest from a stat record; a changed file is hashed and converted again', async () => {
    const path = join(scratch.dir, 'stories-stat.gguf');
    await copyFile(STORIES, path);
    // a file written within RACY_MS of its hashing is never recorded (its timestamps may not show the next write)
    await new Promise((r) => setTimeout(r, RACY_MS + 200));
    const cacheDir = join(scratch.dir, 'stat-cache');
    const hashing = (events: TransferProgress[]) => events.filter((e) => e.digest === HASHING_DIGEST).length;
    const first: TransferProgress[] = [];
    const dir = await ggufModuleDir(path, { cacheDir, onProgress: (p) => first.push(p) });
    expect(hashing(first)).to.be.greaterThan(0);
    const second: TransferProgress[] = [];
    expect(await ggufModuleDir(path, { cacheDir, onProgress: (p) => second.push(p) })).to.equal(dir);
    expect(hashing(second)).to.equal(0); // not a byte of the GGUF read
    // Another byte in the last tensor's data (same size; mtime set back): ctime moved, so it is hashed again.
    const { size, mtime, atime } = await stat(path);
    const fh = await open(path, 'r+');
    const byte = Buffer.alloc(1);
    await fh.read(byte, 0, 1, size - 3);
    await fh.write(Buffer.from([byte[0]! ^ 0x10]), 0, 1, size - 3);
    await fh.utimes(atime, mtime);
    await fh.close();
    const third: TransferProgress[] = [];
    const changed = await ggufModuleDir(path, { cacheDir, onProgress: (p) => third.push(p) });
    expect(hashing(third)).to.be.greaterThan(0);
    expect(changed).to.not.equal(dir);
  });

  it('a module converted with external data (the default from 16 MiB of weights) lists model.onnx.data, verifies it and decodes the same tokens', async () => {
    const dir = join(scratch.dir, 'stories-external');
    const { manifest } = await convertGguf(STORIES, dir, { externalData: true });
    expect(manifest.files.modelData?.path).to.equal('model.onnx.data');
    expect((await stat(join(dir, 'model.onnx'))).size).to.be.below(64 * 1024); // the graph only
    const engine = await Engine.load({ model: dir });
    try {
      expect((await engine.generate({ promptIds: [1] }, { maxTokens: 4 })).rows[0]!.ids).to.deep.equal([403, 407, 261, 378]);
    } finally {
      await engine.dispose();
    }
    await truncate(join(dir, 'model.onnx.data'), manifest.files.modelData!.size - 1);
    const err = await loadModuleDir(dir).catch((e: unknown) => e);
    expect(err).to.be.instanceOf(ModuleIntegrityError);
    expect(err).to.include({ file: 'modelData', problem: 'size' });
  });

  it('a truncated or corrupt GGUF fails with a GgufError and leaves nothing in the cache', async () => {
    const raw = await readFile(STORIES);
    const truncated = join(scratch.dir, 'truncated.gguf');
    await writeFile(truncated, raw);
    await truncate(truncated, raw.length - 5000);
    const corrupt = join(scratch.dir, 'corrupt.gguf');
    await writeFile(corrupt, Buffer.concat([Buffer.from('GGUX'), raw.subarray(4)]));
    const badCache = join(scratch.dir, 'bad-cache');
    for (const bad of [truncated, corrupt]) {
      const err = await resolveModelPath(bad, { cacheDir: badCache }).catch((e: unknown) => e);
      expect(err, bad).to.be.instanceOf(GgufError);
      expect(await readdir(join(badCache, 'gguf')).catch(() => [])).to.deep.equal([]);
    }
    const err = await Engine.load({ model: truncated }).catch((e: unknown) => e);
    expect(err).to.be.instanceOf(GgufError);
    expect((err as Error).message).to.match(/truncated|tensor/i);
    expect(await readdir(join(scratch.cache, 'gguf'))).to.have.length(1); // only the good conversion of the first test
  });
});
