/**
 * Drafts on row shards: a call alone runs on the backbone's own session (the shards only take wide steps), so prompt
 * lookup, a draft model and a request's prediction draft there as they do without shards, and every output is the
 * unsharded engine's. stories260K (a converted GGUF: positions taken back for free) with its Q4_0 re-encoding as the
 * draft model, and a builder graph (joined caches: positions taken back by a copy).
 */
import { expect } from 'chai';
import { join } from 'node:path';
import { Engine, type EngineOptions, type StreamOptions } from '../src/engine.js';
import type { GenerationResult } from '../src/generate/types.js';
import type { BatchStats } from '../src/generate/continuous-batch.js';
import { cacheDir } from './support/models.js';
import { makeModule, storiesConfig, storiesModule } from './support/modules.js';
import { writeStoriesQ4Draft } from './support/gguf-models.js';
import { useTempCache } from './support/temp-cache.js';

// (a reply that repeats itself: prompt lookup drafts much of it)
const prompt = 'Tom had a big red ball. He liked to play with the ball.';
const rows = (r: GenerationResult) => r.rows.map((row) => ({ ids: row.ids, text: row.text, finishReason: row.finishReason }));

describe('row shards with drafts', function () {
  this.timeout(180_000);
  const scratch = useTempCache('reasonplug-shard-drafts-');
  // Two threads and the default 8 rows: two shards, wide from 4 rows.
  const base = { cacheDir, intraOpThreads: 2 };
  let plain: Engine;
  let engines: Record<'lookup' | 'drafting', { sharded: Engine; unsharded: Engine }>;
  let predicting: Engine;

  before(async () => {
    const stories = await storiesModule();
    const draftGguf = join(scratch.dir, 'stories260K-q4_0.gguf');
    await writeStoriesQ4Draft(draftGguf);
    const load = (extra: Partial<EngineOptions>) => Engine.load({ model: stories, ...base, ...extra });
    // (the draft model drafts every step: adaptive, it would draft next to none on a backbone this small)
    const drafts = { draftModel: { model: draftGguf, adaptive: false } };
    const loaded = await Promise.all([
      load({}),
      load({ rowShards: true, promptLookup: true }),
      load({ promptLookup: true }),
      load({ rowShards: true, ...drafts }),
      load(drafts),
      load({ rowShards: true }),
    ]);
    plain = loaded[0];
    engines = { lookup: { sharded: loaded[1], unsharded: loaded[2] }, drafting: { sharded: loaded[3], unsharded: loaded[4] } };
    predicting = loaded[5];
    for (const e of [engines.lookup.sharded, engines.drafting.sharded, predicting]) expect((await e.stats()).rowShards).to.include({ workers: 2, minRows: 4, open: true });
  });
  after(async () => {
    await Promise.all([plain, predicting, ...Object.values(engines ?? {}).flatMap((e) => [e.sharded, e.unsharded])].map((e) => e?.dispose()));
  });

  for (const source of ['lookup', 'drafting'] as const) {
    it(`${source === 'lookup' ? 'prompt lookup' : 'a draft model'} drafts for a call alone as without shards: the same output, drafts and steps, greedy and seeded`, async () => {
      const { sharded, unsharded } = engines[source];
      for (const options of [{ maxTokens: 96 }, { maxTokens: 80, temperature: 0.7, topP: 0.9, seed: 1 }] as StreamOptions[]) {
        const before = (await sharded.stats()).drafts!;
        const [want, got, without] = [await plain.generate({ prompt }, options), await sharded.generate({ prompt }, options), await unsharded.generate({ prompt }, options)];
        expect(rows(got)).to.deep.equal(rows(want));
        const after = await sharded.stats();
        const accepted = after.drafts!.acceptedTokens - before.acceptedTokens;
        expect(accepted, 'drafted tokens the call wrote').to.be.greaterThan(options.seed === undefined ? 30 : 0);
        expect(got.timing.decodeSteps).to.be.at.most(got.usage.completionTokens - accepted);
        expect(got.timing.decodeSteps).to.equal(without.timing.decodeSteps);
        // A lone row's steps and drafted runs stay on the backbone's session.
        expect(after.rowShards).to.include({ wideSteps: 0 });
        expect(after.kvBytes, 'KV bytes once idle').to.equal(0);
      }
      expect((await sharded.stats()).drafts).to.deep.equal((await unsharded.stats()).drafts);
    });
  }

  it("drafts from a request's prediction on row shards, its accepted tokens counted, the output as without", async () => {
    const want = await plain.generate({ prompt }, { maxTokens: 60 });
    const text = want.rows[0]!.text;
    const got = await predicting.generate({ prompt }, { maxTokens: 60, prediction: text });
    expect(rows(got)).to.deep.equal(rows(want));
    expect(got.usage.acceptedPredictionTokens).to.be.greaterThan(30);
    expect(got.usage.rejectedPredictionTokens).to.equal(0);
    expect(got.usage.acceptedPredictionTokens! + got.timing.decodeSteps).to.equal(got.rows[0]!.ids.length - 1);
  });

  it('drafts for a call again once the calls that joined it on the shards have left, each call as it is alone', async () => {
    const sharded = engines.lookup.sharded;
    const shorts = ['Tim and Sam went to the park.', 'The sun was hot.', 'A cat sat on a mat.', 'Ben had a red car.'];
    const before = await sharded.stats();
    const stream = sharded.stream({ prompt }, { maxTokens: 120 });
    let others: Promise<GenerationResult[]> | undefined;
    let left: Promise<BatchStats> | undefined;
    let tokens = 0;
    // They join while the call drafts: 5 rows, wide; as they finish, its row comes back from the shards.
    for await (const _ of stream) {
      if (++tokens !== 12) continue;
      others = Promise.all(shorts.map((p) => sharded.generate({ prompt: p }, { maxTokens: 12 })));
      left = others.then(() => sharded.stats());
    }
    const [a, joined, alone] = [await stream.result, await others!, await left!];
    const after = await sharded.stats();
    expect(rows(a)).to.deep.equal(rows(await plain.generate({ prompt }, { maxTokens: 120 })));
    for (const [i, p] of shorts.entries()) expect(rows(joined[i]!)).to.deep.equal(rows(await plain.generate({ prompt: p }, { maxTokens: 12 })));
    expect(after.rowShards!.wideSteps - before.rowShards!.wideSteps, 'wide steps').to.be.greaterThan(0);
    // Alone again, it drafts.
    expect(after.drafts!.acceptedTokens - alone.drafts!.acceptedTokens, 'drafted tokens written after the others left').to.be.greaterThan(20);
    expect(a.timing.decodeSteps).to.be.lessThan(a.usage.completionTokens - 30);
    expect(after.kvBytes).to.equal(0);
  });

  it('drafts on a graph of joined caches (the rejected rest taken back by a copy), the output as without shards', async () => {
    const backbone = await makeModule({ name: 'rs-lookup-backbone', kind: 'backbone', config: storiesConfig({ hiddenSize: 64, numLayers: 3 }), seed: 11 });
    const load = (on: boolean) => Engine.load({ model: backbone, ...base, ...(on ? { rowShards: true, promptLookup: { draftTokens: 6, minNgram: 1 } } : {}) });
    const [off, on] = await Promise.all([load(false), load(true)]);
    try {
      // A random model's greedy reply falls into loops, which lookup drafts.
      const input = 'the cat sat on the mat and the cat sat on the';
      const [want, got] = [await off.generate({ prompt: input }, { maxTokens: 64 }), await on.generate({ prompt: input }, { maxTokens: 64 })];
      expect(rows(got)).to.deep.equal(rows(want));
      const stats = await on.stats();
      expect(stats.rowShards).to.include({ open: true, wideSteps: 0 });
      expect(stats.drafts!.acceptedTokens).to.be.greaterThan(0);
      expect(got.timing.decodeSteps).to.be.lessThan(want.timing.decodeSteps);
    } finally {
      await Promise.all([off.dispose(), on.dispose()]);
    }
  });
});
