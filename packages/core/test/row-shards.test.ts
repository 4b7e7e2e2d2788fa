import { expect } from 'chai';
import { Engine } from '../src/engine.js';
import { DecoderSession } from '../src/runtime/decoder-session.js';
import { BatchKv, RowPrefill, type BatchCache, type RowCache } from '../src/runtime/batch-kv.js';
import { RowShards, rowShardWorkers } from '../src/runtime/row-shards.js';
import { prepareDecoder } from '../src/onnx/prepared-cache.js';
import { builtModel, cacheDir, smallConfig } from './support/models.js';
import { makeModule } from './support/modules.js';

describe('row shards', function () {
  this.timeout(120_000);

  it('give every row the logits the one-session batch cache gives, as rows join and leave across minRows', async () => {
    const model = await builtModel('rs-kv', { ...smallConfig, numLayers: 3 }, {}, 23);
    const p = await prepareDecoder(model, { lastLogitsOnly: true, logitsFloat32: true, cacheDir });
    const session = await DecoderSession.create({ path: p.preparedPath }, { intraOpThreads: 2 });
    const shards = await RowShards.open(session, { path: p.preparedPath }, 2, 4, p.weightBytes);
    const plain = new BatchKv(session);
    const V = session.vocabSize;
    const prompts = [[1, 5, 9, 30, 41, 7, 60], [12], [40, 41, 42], [3, 4], [7, 8, 9, 10, 11], [90, 2, 3, 4], [50]];
    const cacheOf = async (prompt: number[]): Promise<RowCache> => {
      const run = new RowPrefill(session, prompt, 3);
      while (!(await run.next()));
      return run.cache;
    };
    let worst = 0;
    let tokens = 0;
    const both = async (change: (kv: BatchCache) => void) => {
      change(plain);
      change(shards);
      const ids = Array.from({ length: plain.rows }, () => (tokens++ * 7) % V);
      const [a, b] = [await plain.step(ids), await shards.step(ids)];
      expect(b.length).to.equal(a.length);
      for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
      expect(shards.bytes).to.be.at.most(plain.bytes);
      expect(shards.rows).to.equal(plain.rows);
    };
    try {
      const caches = await Promise.all(prompts.map(cacheOf));
      await both((kv) => kv.rebuild([], caches.slice(0, 2))); // 2 rows: the backbone's session
      await both(() => {});
      await both((kv) => kv.rebuild([0, 1], caches.slice(2, 6))); // 6 rows: widened onto the shards (3 + 3)
      await both(() => {});
      await both((kv) => kv.rebuild([5, 0, 2, 3], [])); // 4 rows, reordered: still on the shards
      await both((kv) => kv.rebuild([0, 1, 2, 3], [caches[6]!])); // one joins the smaller shard
      await both((kv) => kv.rebuild([4, 1], [])); // 2 rows: they come back from the shards
      await both(() => {});
      await both((kv) => kv.rebuild([1, 0], caches.slice(0, 3))); // wide again
      await both(() => {});
      plain.rebuild([], []);
      shards.rebuild([], []);
      expect(shards.bytes).to.equal(0);
      expect(worst).to.be.lessThan(1e-4);
      expect(shards.stats()).to.include({ workers: 2, minRows: 4, weightBytes: 2 * p.weightBytes, wideSteps: 6, narrowSteps: 4 });
      // Rows moved onto and off the shards are counted with the copies.
      expect(shards.counters.copiedBytes).to.be.greaterThan(0);
    } finally {
      await shards.release();
      await session.release();
    }
  });

  it('a shard that dies fails the step with a ShardError; later steps of any width run on the backbone session', async () => {
    const model = await builtModel('rs-kv', { ...smallConfig, numLayers: 3 }, {}, 23);
    const p = await prepareDecoder(model, { lastLogitsOnly: true, logitsFloat32: true, cacheDir });
    const session = await DecoderSession.create({ path: p.preparedPath }, { intraOpThreads: 2 });
    const shards = await RowShards.open(session, { path: p.preparedPath }, 2, 4, p.weightBytes);
    const plain = new BatchKv(session);
    try {
      const caches: RowCache[] = [];
      for (const prompt of [[1, 2, 3], [4, 5], [6], [7, 8, 9, 10]]) {
        const run = new RowPrefill(session, prompt, 8);
        while (!(await run.next()));
        caches.push(run.cache);
      }
      shards.rebuild([], caches);
      await shards.step([1, 2, 3, 4]);
      await shards.killShard(1);
      const err = await shards.step([1, 2, 3, 4]).catch((e: Error) => e);
      expect(err).to.have.property('name', 'ShardError');
      expect((err as Error).message).to.match(/a row shard of the backbone stopped/);
      shards.rebuild([], []);
      shards.rebuild([], caches);
      plain.rebuild([], caches);
      const [a, b] = [await plain.step([5, 6, 7, 8]), await shards.step([5, 6, 7, 8])];
      expect(Array.from(b)).to.deep.equal(Array.from(a));
      expect(shards.stats()).to.include({ wideSteps: 2, narrowSteps: 1 });
    } finally {
      await shards.release();
      await session.release();
    }
  });

  it('engine: concurrent calls of different lengths, samplers and stops on row shards each give what they give alone', async () => {
    const backbone = await makeModule({ name: 'rs-backbone', kind: 'backbone', seed: 31 });
    // Off by default; asked for, they open with the engine.
    const plain = await Engine.load({ model: backbone, cacheDir, maxBatch: 8, intraOpThreads: 2 });
    expect((await plain.stats()).rowShards).to.equal(undefined);
    await plain.dispose();
    const engine = await Engine.load({ model: backbone, cacheDir, maxBatch: 8, intraOpThreads: 2, rowShards: true });
    try {
      const free = await engine.generate({ prompt: 'Once upon a time' }, { maxTokens: 16 });
      const stop = free.rows[0]!.text.slice(6, 9);
      const calls: [{ promptIds: number[] } | { prompt: string }, Parameters<Engine['generate']>[1]][] = [
        [{ promptIds: [1, 5, 9, 30, 41, 7, 100, 300, 12] }, { maxTokens: 30, ignoreEos: true }],
        [{ prompt: 'Once upon a time' }, { maxTokens: 16, stop: [stop] }],
        [{ promptIds: [1, 77] }, { maxTokens: 24, temperature: 0.8, topK: 20, seed: 5, ignoreEos: true }],
        [{ promptIds: [1, 3, 300, 200, 17] }, { maxTokens: 6, ignoreEos: true }],
        [{ promptIds: [1, 60, 61, 62] }, { maxTokens: 12, topP: 0.9, temperature: 1.2, seed: 9, ignoreEos: true }],
        [{ promptIds: [1, 8] }, { maxTokens: 20, ignoreEos: true }],
      ];
      const rows = (r: Awaited<ReturnType<Engine['generate']>>) => r.rows.map((row) => ({ ids: row.ids, finishReason: row.finishReason }));
      const alone = [];
      for (const [input, options] of calls) alone.push(rows(await engine.generate(input, options)));
      const before = (await engine.stats()).rowShards!;
      expect(before).to.include({ workers: 2, open: true, wideSteps: 0 });
      const together = await Promise.all(calls.map(([input, options]) => engine.generate(input, options)));
      expect(together.map(rows)).to.deep.equal(alone);
      const after = await engine.stats();
      expect(after).to.include({ running: 0, kvBytes: 0 });
      // Six rows decode on the shards; as the short calls finish, fewer than four go back to the backbone's session.
      expect(after.rowShards!.wideSteps - before.wideSteps).to.be.greaterThan(0);
      expect(after.rowShards!.narrowSteps - before.narrowSteps).to.be.greaterThan(0);
    } finally {
      await engine.dispose();
    }
  });

  it('are opened only when asked for, for a CPU backbone of two or more threads whose batch can be wide enough', () => {
    const base = { choice: true, threads: 2, device: undefined, latent: false, maxBatch: 8 };
    expect(rowShardWorkers(base)).to.equal(2);
    expect(rowShardWorkers({ ...base, threads: 3, maxBatch: 6 })).to.equal(3);
    expect(rowShardWorkers({ ...base, choice: undefined })).to.equal(0);
    expect(rowShardWorkers({ ...base, choice: false })).to.equal(0);
    expect(rowShardWorkers({ ...base, threads: 1 })).to.equal(0);
    expect(rowShardWorkers({ ...base, latent: true })).to.equal(0);
    expect(rowShardWorkers({ ...base, device: 'cuda' })).to.equal(0);
    expect(rowShardWorkers({ ...base, maxBatch: 3 })).to.equal(0);
  });
});
