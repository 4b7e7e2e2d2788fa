import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { copyFile, mkdir, open, readFile, stat, truncate, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { defaultDigestDir } from '../src/modules/file-digest.js';
import { ModuleIntegrityError, writeModuleDir } from '../src/modules/module-dir.js';
import { randomLlamaWeights, writeLlamaModel } from '../src/onnx/llama-builder.js';
import type { LlamaConfig } from '../src/onnx/llama-spec.js';
import { prepareDecoder, preparedCacheStats } from '../src/onnx/prepared-cache.js';
import { OnnxFormatError } from '../src/onnx/proto.js';
import { openDecoder, prepareModel } from '../src/runtime/prepare-model.js';
import { rejection } from './support/assertions.js';
import { testDir } from './support/models.js';
import { flipKeepingStat } from './support/tamper.js';

const config: LlamaConfig = { vocabSize: 64, hiddenSize: 16, numLayers: 1, numHeads: 2, intermediateSize: 32 };
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const T = 1_700_000_000;
const ADAPT = { lastLogitsOnly: true, logitsFloat32: true } as const;

/** Writes `bytes` over a file in place (same inode; same size required), then sets its mtime back to `T`. */
async function overwriteKeepingStat(path: string, bytes: Buffer): Promise<void> {
  const before = await stat(path, { bigint: true });
  expect(bytes.length).to.equal(Number(before.size));
  const fh = await open(path, 'r+');
  await fh.write(bytes, 0, bytes.length, 0);
  await fh.close();
  await utimes(path, T, T);
  const after = await stat(path, { bigint: true });
  expect([after.size, after.ino, after.mtimeNs]).to.deep.equal([before.size, before.ino, before.mtimeNs]);
}

describe('prepared-graph cache integrity', function () {
  this.timeout(60_000);

  it('bytes changed under a module graph (size, inode and mtime kept) are refused, never cached as the good graph', async () => {
    const root = testDir('poison');
    const module = join(root, 'poison');
    await mkdir(module);
    const model = join(module, 'model.onnx');
    // Same config, other weights: another graph of exactly the same size.
    const badSource = join(root, 'bad.onnx');
    await writeLlamaModel(model, config, randomLlamaWeights(config, 1), {});
    await writeLlamaModel(badSource, config, randomLlamaWeights(config, 2), {});
    const good = await readFile(model);
    const bad = await readFile(badSource);
    expect(bad.length).to.equal(good.length);
    await utimes(model, T, T);
    await writeModuleDir(module, {
      name: 'poison',
      version: '1.0.0',
      kind: 'backbone',
      tasks: ['math'],
      description: 'prepared-cache poisoning test',
      license: 'MIT',
      compat: { tokenizer: `sha256:${'ab'.repeat(32)}`, vocabSize: 64 },
      files: { model: 'model.onnx' },
    });
    const cacheDir = join(root, 'prepared');
    const first = await prepareModel(module, cacheDir);
    expect(first.prepared.digest).to.equal(`sha256:${sha(good)}`);
    const goodPrepared = await readFile(first.prepared.preparedPath);

    await overwriteKeepingStat(model, bad);
    // Through the engine's path, the module check refuses it first.
    expect(await rejection(prepareModel(module, cacheDir))).to.be.instanceOf(ModuleIntegrityError);
    // Preparing directly (a fresh cache, so a miss that reads the bytes) refuses it by the manifest digest.
    const refused = await rejection(prepareDecoder(model, { ...ADAPT, cacheDir: join(root, 'fresh'), expectedSha256: sha(good) }));
    expect(refused).to.be.instanceOf(ModuleIntegrityError);
    expect(refused.message).to.include(`${model} (files.model) has SHA-256 ${sha(bad)} but the manifest says ${sha(good)}`);

    // The original bug's mechanism: a stat record that still vouches for the good digest. What is read is hashed,
    // so the bad graph is filed under the bad digest (or refused against the manifest), never under the good one.
    const st = await stat(model, { bigint: true });
    const record = join(defaultDigestDir(), `${st.dev}-${st.ino}.json`);
    const stale = JSON.stringify({ sha256: sha(good), size: good.length, mtimeNs: String(st.mtimeNs), ctimeNs: String(st.ctimeNs) });
    await mkdir(defaultDigestDir(), { recursive: true });
    await writeFile(record, stale);
    const staleCache = join(root, 'stale');
    const poisoned = await prepareDecoder(model, { ...ADAPT, cacheDir: staleCache });
    expect(poisoned.digest, 'filed under the digest of the bytes read').to.equal(`sha256:${sha(bad)}`);
    await writeFile(record, stale);
    const staleRefused = await rejection(prepareDecoder(model, { ...ADAPT, cacheDir: staleCache, expectedSha256: sha(good) }));
    expect(staleRefused).to.be.instanceOf(ModuleIntegrityError);
    expect(staleRefused.message).to.include(`has SHA-256 ${sha(bad)} but the manifest says ${sha(good)}`);

    // Restored: both caches give the graph prepared from the good bytes.
    await overwriteKeepingStat(model, good);
    const restored = await prepareModel(module, cacheDir);
    expect(restored.prepared.digest).to.equal(`sha256:${sha(good)}`);
    expect(restored.prepared.preparedPath).to.equal(first.prepared.preparedPath);
    expect(sha(await readFile(restored.prepared.preparedPath))).to.equal(sha(goodPrepared));
    const fromStale = await prepareDecoder(model, { ...ADAPT, cacheDir: staleCache, expectedSha256: sha(good) });
    expect(fromStale.preparedPath).to.not.equal(poisoned.preparedPath);
    expect(sha(await readFile(fromStale.preparedPath))).to.equal(sha(goodPrepared));
  });

  it('a damaged prepared graph in the cache is prepared again, not loaded', async () => {
    const root = testDir('prepared-damage');
    const model = join(root, 'model.onnx');
    await writeLlamaModel(model, config, randomLlamaWeights(config, 3), {});
    const cacheDir = join(root, 'prepared');
    const first = await prepareDecoder(model, { ...ADAPT, cacheDir });
    const good = await readFile(first.preparedPath);
    await utimes(first.preparedPath, T, T);
    await flipKeepingStat(first.preparedPath, Math.floor(good.length / 2));
    const parses = preparedCacheStats.parses;
    const again = await prepareDecoder(model, { ...ADAPT, cacheDir });
    expect(preparedCacheStats.parses, 'a miss').to.equal(parses + 1);
    expect(again.preparedPath).to.equal(first.preparedPath);
    expect(sha(await readFile(again.preparedPath))).to.equal(sha(good));
  });

  it('says in one line that an external-data file is truncated (expected and actual size) or missing, before onnxruntime', async () => {
    const root = testDir('truncated-data');
    const model = join(root, 'model.onnx');
    const data = join(root, 'model.onnx.data');
    await writeLlamaModel(model, config, randomLlamaWeights(config, 4), { externalData: true });
    const full = (await stat(data)).size;
    const cacheDir = join(root, 'prepared');
    await prepareDecoder(model, { ...ADAPT, cacheDir });
    const whole = await readFile(data);

    const cut = full - 1000;
    await truncate(data, cut);
    const expected = new RegExp(`^${data.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is truncated: model\\.onnx expects at least ${full} bytes of external data in it, the file has ${cut}; is the download or copy complete\\?$`);
    // A cache hit, a fresh preparation, no adaptation at all, and the session path all say so.
    for (const attempt of [
      () => prepareDecoder(model, { ...ADAPT, cacheDir }),
      () => prepareDecoder(model, { ...ADAPT, cacheDir: join(root, 'fresh') }),
      () => prepareDecoder(model, {}),
      () => openDecoder(model, {}, cacheDir),
    ]) {
      const err = await rejection(attempt());
      expect(err).to.be.instanceOf(OnnxFormatError);
      expect(err.message).to.match(expected);
    }

    const elsewhere = testDir('no-data');
    await copyFile(model, join(elsewhere, 'model.onnx'));
    const missing = await rejection(prepareDecoder(join(elsewhere, 'model.onnx'), { ...ADAPT, cacheDir }));
    expect(missing).to.be.instanceOf(OnnxFormatError);
    expect(missing.message).to.equal(`${join(elsewhere, 'model.onnx.data')} is missing: model.onnx keeps weights in it (${full} bytes expected); copy it beside the model`);

    await writeFile(data, whole);
    const { session } = await openDecoder(model, {}, cacheDir);
    await session.release();
  });
});
