import { expect } from 'chai';
import * as ort from 'onnxruntime-node';
import { chmod, mkdir, readdir, readFile, rename, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomLlamaWeights, writeLlamaModel } from '../src/onnx/llama-builder.js';
import { prepareDecoder, type PreparedDecoder } from '../src/onnx/prepared-cache.js';
import { Engine } from '../src/engine.js';
import { storiesModule } from './support/modules.js';
import { withEnv } from './support/greedy-each.js';
import { smallConfig, testDir } from './support/models.js';

const ADAPT = { lastLogitsOnly: true, logitsFloat32: true } as const;

/** A model directory whose weights are in `model.onnx.data`, as converted modules keep them. */
async function modelDir(): Promise<string> {
  const dir = testDir('unwritable-model');
  await writeLlamaModel(join(dir, 'model.onnx'), smallConfig, randomLlamaWeights(smallConfig, 3, 0.08), { externalData: true });
  return dir;
}

/** onnxruntime's session of a prepared graph, from its bytes (as a graph with external data is loaded). */
function sessionOf(graph: Uint8Array, prepared: PreparedDecoder): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(graph, { extra: { session: { model_external_initializers_file_folder_path: prepared.externalDataDir! } } });
}

/** The greedy ids `session` (of a prepared builder graph: int64 ids, fp32 cache, `num_logits_to_keep`) gives after `prompt`. */
async function greedy(session: ort.InferenceSession, prompt: number[], steps: number): Promise<number[]> {
  const ids = (values: number[]) => new ort.Tensor('int64', BigInt64Array.from(values, BigInt), [1, values.length]);
  let past: Record<string, ort.Tensor> = {};
  for (const m of session.inputMetadata) {
    const shape = (m as { shape: readonly (number | string)[] }).shape;
    if (m.name.startsWith('past_key_values.')) past[m.name] = new ort.Tensor('float32', new Float32Array(0), [1, shape[1] as number, 0, shape[3] as number]);
  }
  const out: number[] = [];
  let feed = prompt;
  let length = 0;
  for (let s = 0; s < steps; s++) {
    const positions = feed.map((_, i) => length + i);
    length += feed.length;
    const keep = new ort.Tensor('int64', BigInt64Array.of(1n), []);
    const r = await session.run({ input_ids: ids(feed), attention_mask: ids(new Array(length).fill(1)), position_ids: ids(positions), num_logits_to_keep: keep, ...past });
    const row = [...(r['logits']!.data as Float32Array)];
    const next = row.indexOf(Math.max(...row));
    out.push(next);
    past = Object.fromEntries(Object.keys(past).map((name) => [name, r[name.replace('past_key_values.', 'present.')]!]));
    feed = [next];
  }
  return out;
}

/**
 * Checks that `got`, prepared where the cache could not be written, hands over in memory the graph a writable cache
 * holds (`reference`), that onnxruntime loads it from those bytes and generates what the cached graph does, and that
 * the warning names `cacheDir` and `remedy`.
 */
async function expectInMemory(got: PreparedDecoder, reference: PreparedDecoder, cacheDir: string, remedy: string): Promise<void> {
  expect(reference.graph).to.equal(undefined);
  expect(got.graph, 'the prepared graph in memory').to.be.instanceOf(Uint8Array);
  const cached = await readFile(reference.preparedPath);
  expect(Buffer.from(got.graph!).equals(cached)).to.equal(true);
  expect(got.sessionDir).to.equal(undefined);
  expect(got.externalDataDir).to.equal(reference.externalDataDir);
  expect(got.warnings).to.have.length(1);
  expect(got.warnings![0]).to.include(cacheDir).and.include(remedy).and.include('from memory');
  const fromMemory = await sessionOf(got.graph!, got);
  const fromCache = await sessionOf(cached, reference);
  try {
    const tokens = await greedy(fromCache, [1, 5, 17], 12);
    expect(await greedy(fromMemory, [1, 5, 17], 12)).to.deep.equal(tokens);
  } finally {
    await Promise.all([fromMemory.release(), fromCache.release()]);
  }
}

describe('prepared-graph cache that cannot be written', function () {
  this.timeout(60_000);

  it('a cache directory that is a file: the graph is used from memory, the file left as it was', async () => {
    const dir = await modelDir();
    const model = join(dir, 'model.onnx');
    const reference = await prepareDecoder(model, { ...ADAPT, cacheDir: join(testDir('writable'), 'prepared') });
    const cacheDir = join(testDir('file-cache'), 'prepared');
    await writeFile(cacheDir, 'not a directory');
    const got = await prepareDecoder(model, { ...ADAPT, cacheDir });
    await expectInMemory(got, reference, cacheDir, 'writable cache directory');
    expect(await readFile(cacheDir, 'utf8')).to.equal('not a directory');
  });

  it('a default cache under a file (ENOTDIR, root too): the warning names REASONPLUG_CACHE', async () => {
    const dir = await modelDir();
    const model = join(dir, 'model.onnx');
    const reference = await prepareDecoder(model, { ...ADAPT, cacheDir: join(testDir('writable'), 'prepared') });
    const file = join(testDir('under-file'), 'file');
    await writeFile(file, '');
    const got = await withEnv({ REASONPLUG_CACHE: join(file, 'cache') }, () => prepareDecoder(model, ADAPT));
    await expectInMemory(got, reference, join(file, 'cache', 'prepared'), 'REASONPLUG_CACHE');
  });

  it('data files that are links into blobs/ (a relocated graph) under a cache that is a file: relocated in memory', async () => {
    const dir = await modelDir();
    const model = join(dir, 'model.onnx');
    // The Hugging Face cache's layout: each file a link to a blob named by its hash.
    const blobs = testDir('blobs');
    await rename(join(dir, 'model.onnx.data'), join(blobs, '9f3c'));
    await symlink(join(blobs, '9f3c'), join(dir, 'model.onnx.data'));
    const reference = await prepareDecoder(model, { ...ADAPT, cacheDir: join(testDir('writable'), 'prepared') });
    expect(reference.externalDataDir).to.equal(blobs);
    const cacheDir = join(testDir('file-cache'), 'prepared');
    await writeFile(cacheDir, '');
    await expectInMemory(await prepareDecoder(model, { ...ADAPT, cacheDir }), reference, cacheDir, 'writable cache directory');
  });

  it('a read-only cache directory (chmod 0555): the graph is used from memory, nothing written into it', async function () {
    // (chmod does not bind root)
    if (process.getuid?.() === 0) this.skip();
    const dir = await modelDir();
    const model = join(dir, 'model.onnx');
    const reference = await prepareDecoder(model, { ...ADAPT, cacheDir: join(testDir('writable'), 'prepared') });
    const cacheDir = join(testDir('read-only'), 'prepared');
    await mkdir(cacheDir);
    await chmod(cacheDir, 0o555);
    try {
      const got = await prepareDecoder(model, { ...ADAPT, cacheDir });
      await expectInMemory(got, reference, cacheDir, 'writable cache directory');
      expect(await readdir(cacheDir)).to.deep.equal([]);
    } finally {
      await chmod(cacheDir, 0o755);
    }
  });

  it('the engine loads a ready module with a cache it cannot write: the same tokens, and a warning naming the cache', async () => {
    const module = await storiesModule();
    const prompt = { promptIds: [1, 403, 407] };
    const writable = await Engine.load({ model: module, cacheDir: join(testDir('engine-writable'), 'prepared') });
    const expected = (await writable.generate(prompt, { maxTokens: 12 })).rows[0]!.ids;
    await writable.dispose();
    const cacheDir = join(testDir('engine-file-cache'), 'prepared');
    await writeFile(cacheDir, '');
    const engine = await Engine.load({ model: module, cacheDir });
    try {
      expect((await engine.generate(prompt, { maxTokens: 12 })).rows[0]!.ids).to.deep.equal(expected);
      expect(engine.info.warnings.join('\n')).to.include(`cannot write the prepared graph of ${join(module, 'model.onnx')} to the cache ${cacheDir}`);
    } finally {
      await engine.dispose();
    }
    expect(await readFile(cacheDir, 'utf8')).to.equal('');
  });
});
