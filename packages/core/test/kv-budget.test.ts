/**
 * `kvBudgetBytes`, `maxQueue` and `stats()` against what the engine holds: rows composing reasoners on the batch's
 * thread, a converted GGUF graph's room for appended steps, and calls that run alone (traced, or weighting reasoners
 * in lanes on an idle engine).
 */
import { expect } from 'chai';
import { Engine, type StreamOptions } from '../src/engine.js';
import type { BatchStats } from '../src/generate/continuous-batch.js';
import type { GenerationResult } from '../src/generate/types.js';
import type { PromptInput } from '../src/runtime/protocol.js';
import { cacheDir } from './support/models.js';
import { makeModule, storiesConfig, storiesModule } from './support/modules.js';

const ids = (r: GenerationResult) => r.rows.map((row) => row.ids);

/** Runs `calls` at once, reading stats() until they are done; their results, and the most rows and KV bytes seen. */
async function burst(engine: Engine, calls: readonly { input: PromptInput; options: StreamOptions }[]): Promise<{ got: GenerationResult[]; running: number; kvBytes: number }> {
  let running = 0;
  let kvBytes = 0;
  let done = false;
  const watch = (async () => {
    while (!done) {
      const s = await engine.stats();
      running = Math.max(running, s.running);
      kvBytes = Math.max(kvBytes, s.kvBytes);
    }
  })();
  const got = await Promise.all(calls.map((c) => engine.generate(c.input, c.options))).finally(() => (done = true));
  await watch;
  return { got, running, kvBytes };
}

/** stats() read three times, 20 ms apart, while a call runs (from its first token on; then it is aborted). */
async function statsWhileRunning(engine: Engine, input: PromptInput, options: StreamOptions): Promise<BatchStats[]> {
  const controller = new AbortController();
  const stream = engine.stream(input, { ...options, signal: controller.signal });
  const seen: BatchStats[] = [];
  // Read at the first token and again some tokens later (not after a time: a loaded machine may not step meanwhile).
  let tokens = 0;
  for await (const _ of stream) {
    if (tokens++ % 8 !== 0 || seen.length === 3) continue;
    seen.push(await engine.stats());
    if (seen.length === 3) controller.abort();
  }
  expect((await stream.result).rows[0]!.finishReason, 'still running when stats() was read').to.equal('abort');
  return seen;
}

describe('kvBudgetBytes with reasoners on the batch thread', function () {
  this.timeout(180_000);
  let backbone: string;
  let reasoner: string;

  before(async () => {
    [backbone, reasoner] = await Promise.all([
      makeModule({ name: 'kvb-backbone', kind: 'backbone', seed: 41 }),
      makeModule({ name: 'kvb-reasoner', seed: 42, config: storiesConfig({ hiddenSize: 32 }) }),
    ]);
  });

  it("charges each row its reasoners' caches too: a burst stays within the budget, each call giving what it gives alone", async () => {
    const reasoners = [{ model: reasoner, name: 'r', weight: 1 }];
    // Backbone 384 bytes a position, the reasoner 256: a budget of two rows of 3 + 20 positions on both (29,440
    // bytes) holds three on the backbone alone.
    const budget = 2 * 23 * 640;
    const engine = await Engine.load({ model: backbone, cacheDir, placement: 'inline', reasoners, kvBudgetBytes: budget, maxBatch: 8 });
    try {
      expect((await engine.stats()).bytesPerPosition).to.equal(640);
      const calls = Array.from({ length: 6 }, (_, i) => ({ input: { promptIds: [1, 30 + i, 40 + i] }, options: { maxTokens: 20, ignoreEos: true } }));
      const alone: number[][][] = [];
      for (const call of calls) alone.push(ids(await engine.generate(call.input, call.options)));
      const { got, running, kvBytes } = await burst(engine, calls);
      expect(got.map(ids)).to.deep.equal(alone);
      expect(running, 'rows at once').to.be.within(2, 2);
      expect(kvBytes).to.be.at.most(budget);
      // 53 positions fit on the backbone alone (20,352 bytes), not with the reasoner.
      const err = await engine.generate({ promptIds: [1, 5, 6] }, { maxTokens: 50 }).catch((e: Error) => e);
      expect(err).to.have.property('name', 'KvBudgetError');
      expect((err as Error).message).to.match(/needs 33920 bytes of KV cache \(1 rows × 53 positions on backbone \+ r\), more than the budget of 29440 bytes/);
      // Without the reasoner the row is charged the backbone's cache only.
      const plain = await engine.generate({ promptIds: [1, 5, 6] }, { maxTokens: 50, reasoners: [] });
      expect(plain.rows[0]!.ids).to.have.length(50);
    } finally {
      await engine.dispose();
    }
  });

  it('holds a traced call (alone) to the budget and counts its rows and caches in stats() while it runs', async () => {
    const reasoners = [{ model: reasoner, name: 'r', weight: 1 }];
    const engine = await Engine.load({ model: backbone, cacheDir, placement: 'inline', reasoners, kvBudgetBytes: 1000 * 640 });
    try {
      const over = await engine.generate({ promptIds: [1, 23] }, { maxTokens: 1100, ignoreEos: true, trace: 1 }).catch((e: Error) => e);
      expect(over).to.have.property('name', 'KvBudgetError');
      expect((over as Error).message).to.match(/needs 705280 bytes of KV cache \(1 rows × 1102 positions on backbone \+ r\), more than the budget of 640000 bytes/);
      const seen = await statsWhileRunning(engine, { promptIds: [1, 23] }, { maxTokens: 990, ignoreEos: true, trace: 1 });
      for (const s of seen) {
        expect(s.running).to.equal(1);
        // Its backbone's and reasoner's caches: the prompt and the tokens fed so far.
        expect(s.kvBytes).to.be.within(2 * 640, 992 * 640);
      }
      expect(seen[2]!.kvBytes).to.be.greaterThan(seen[0]!.kvBytes);
      expect(await engine.stats()).to.include({ running: 0, waiting: 0, kvBytes: 0 });
    } finally {
      await engine.dispose();
    }
  });
});

describe('maxQueue and kvBudgetBytes for calls alone with reasoners in lanes', function () {
  this.timeout(180_000);
  let backbone: string;
  let reasoner: string;

  before(async () => {
    [backbone, reasoner] = await Promise.all([
      makeModule({ name: 'kvb-lane-backbone', kind: 'backbone', seed: 43 }),
      makeModule({ name: 'kvb-lane-reasoner', seed: 44, config: storiesConfig({ hiddenSize: 32 }) }),
    ]);
  });

  it('maxQueue 0 runs calls that start at once alone (traced, composed on an idle engine) and refuses one that would wait', async () => {
    const engine = await Engine.load({ model: backbone, cacheDir, placement: 'lanes', maxQueue: 0, reasoners: [{ model: reasoner, name: 'r', weight: 1 }] });
    try {
      const options = { maxTokens: 6, ignoreEos: true };
      for (const extra of [{}, { trace: 1 }, { reasoners: [] }, { reasoners: [], trace: 1 }]) {
        const r = await engine.generate({ promptIds: [1, 40, 41] }, { ...options, ...extra });
        expect(r.rows[0]!.ids, JSON.stringify(extra)).to.have.length(6);
      }
      // A traced call behind a running one would wait: refused.
      const controller = new AbortController();
      const running = engine.generate({ promptIds: [1, 2] }, { maxTokens: 100_000, ignoreEos: true, reasoners: [], signal: controller.signal });
      while ((await engine.stats()).running === 0) await new Promise((r) => setTimeout(r, 5));
      const err = await engine.generate({ promptIds: [1, 3] }, { ...options, trace: 1 }).catch((e: Error) => e);
      expect(err).to.have.property('name', 'QueueFullError');
      controller.abort();
      expect((await running).rows[0]!.finishReason).to.equal('abort');
    } finally {
      await engine.dispose();
    }
  });

  it("holds a composed call alone to the budget (its backbone's cache: the lane keeps the reasoner's) and counts it in stats()", async () => {
    // 384 bytes a position on the backbone: 1000 positions.
    const engine = await Engine.load({ model: backbone, cacheDir, placement: 'lanes', kvBudgetBytes: 1000 * 384, reasoners: [{ model: reasoner, name: 'r', weight: 1 }] });
    try {
      const over = await engine.generate({ promptIds: [1, 23] }, { maxTokens: 1100, ignoreEos: true }).catch((e: Error) => e);
      expect(over).to.have.property('name', 'KvBudgetError');
      expect((over as Error).message).to.match(/needs 423168 bytes of KV cache \(1 rows × 1102 positions\), more than the budget of 384000 bytes/);
      const seen = await statsWhileRunning(engine, { promptIds: [1, 23] }, { maxTokens: 990, ignoreEos: true });
      for (const s of seen) {
        expect(s.running).to.equal(1);
        expect(s.kvBytes).to.be.within(2 * 384, 992 * 384);
        // Alone, in the lanes: no batch step ran.
        expect(s.counters.perRowLayoutBytes).to.equal(0);
      }
      expect(seen[2]!.kvBytes).to.be.greaterThan(seen[0]!.kvBytes);
    } finally {
      await engine.dispose();
    }
  });
});

describe('kvBudgetBytes on a converted GGUF graph (new keys and values written into room)', function () {
  this.timeout(180_000);
  let stories: string;

  before(async () => {
    stories = await storiesModule();
  });

  it("keeps no room past what the rows may still write: a row's cache within its reservation, a burst within the budget", async () => {
    const prompt = [1, 298, 443, 386, 450, 450, 19, 448, 382, 35];
    const probe = await Engine.load({ model: stories, cacheDir, prefixCacheBytes: 0 });
    let bpp: number;
    let alone: GenerationResult;
    try {
      bpp = (await probe.stats()).bytesPerPosition;
      const one = await burst(probe, [{ input: { promptIds: prompt }, options: { maxTokens: 40, ignoreEos: true } }]);
      alone = one.got[0]!;
      expect(one.running, 'seen running').to.equal(1);
      // 10 prompt positions and 40 tokens: 50 at most (the 64 slots of room would make 74).
      expect(one.kvBytes / bpp).to.be.within(11, 50);
    } finally {
      await probe.dispose();
    }
    // Four rows of 10 + 30 positions: the budget admits all four at once.
    const budget = 4 * 40 * bpp;
    const engine = await Engine.load({ model: stories, cacheDir, kvBudgetBytes: budget, prefixCacheBytes: 0 });
    try {
      const calls = [0, 1, 2, 3].map((i) => ({ input: { promptIds: [1, 20 + i, ...prompt.slice(2)] }, options: { maxTokens: 30, ignoreEos: true } }));
      const { got, kvBytes } = await burst(engine, calls);
      expect(kvBytes).to.be.at.most(budget);
      expect(got.every((r) => r.rows[0]!.ids.length === 30)).to.equal(true);
      const again = await engine.generate({ promptIds: prompt }, { maxTokens: 40, ignoreEos: true });
      expect(again.rows[0]!.ids).to.deep.equal(alone.rows[0]!.ids);
    } finally {
      await engine.dispose();
    }
  });

  it("charges a draft model's row too, and keeps no room past the reservation in its cache", async () => {
    const prompt = [1, 403, 407, 261, 378, 434, 285, 363, 274, 400];
    const probe = await Engine.load({ model: stories, cacheDir, prefixCacheBytes: 0 });
    const bpp = (await probe.stats()).bytesPerPosition;
    await probe.dispose();
    const draftModel = { model: stories, adaptive: false, draftTokens: 4 };
    // The backbone's 50 positions alone: the draft model's row does not fit beside them.
    const tight = await Engine.load({ model: stories, cacheDir, kvBudgetBytes: 50 * bpp, prefixCacheBytes: 0, draftModel });
    try {
      const err = await tight.generate({ promptIds: prompt }, { maxTokens: 40, ignoreEos: true }).catch((e: Error) => e);
      expect(err).to.have.property('name', 'KvBudgetError');
      expect((err as Error).message).to.match(/\(1 rows × 50 positions, and the draft model's row\)/);
    } finally {
      await tight.dispose();
    }
    // Both rows' 50 positions: it runs, drafting, within the budget (the draft cache held 75 positions, 64 of room).
    const budget = 2 * 50 * bpp;
    const engine = await Engine.load({ model: stories, cacheDir, kvBudgetBytes: budget, prefixCacheBytes: 0, draftModel });
    try {
      const { got, kvBytes } = await burst(engine, [{ input: { promptIds: prompt }, options: { maxTokens: 40, ignoreEos: true } }]);
      expect(got[0]!.rows[0]!.ids).to.have.length(40);
      expect((await engine.stats()).drafts!.draftedTokens).to.be.above(0);
      expect(kvBytes).to.be.at.most(budget);
    } finally {
      await engine.dispose();
    }
  });
});
