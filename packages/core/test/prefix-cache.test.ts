/**
 * Prefix caching on real engines: conversations whose turns begin with earlier prompts prefill only what is new,
 * and every reply equals the reply of an engine without the cache (the stories260K model, a 4-bit module with
 * int8 activations, a composition); the cache's budget and its stats. The 4-bit module is wide enough for
 * onnxruntime's single-row int8 path to differ: running a prompt's last token alone from the cache changed its
 * replies (checked by mutation).
 */
import { expect } from 'chai';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Engine, type EngineOptions } from '../src/engine.js';
import type { GenerationResult } from '../src/generate/types.js';
import { quantizeModel } from '../src/modules/quantize-module.js';
import { cacheDir, testDir } from './support/models.js';
import { makeModule, storiesConfig, storiesGqaModule, storiesModule } from './support/modules.js';
import { refuseChunksAfterPast } from './support/graph-edits.js';
import { createRng } from '../src/sampling/index.js';
import { logprobGap } from './support/logprob-compare.js';
import { buildGenaiLlamaModel } from '../src/onnx/genai-builder.js';
import { randomLlamaWeights } from '../src/onnx/llama-builder.js';
import type { LlamaConfig } from '../src/onnx/llama-spec.js';
import { writeModel } from '../src/onnx/proto.js';

/** An onnxruntime-genai-style GroupQueryAttention graph (vocabulary 96) of random weights. */
async function genaiModel(name: string, seed: number): Promise<string> {
  const config: LlamaConfig = { vocabSize: 96, hiddenSize: 64, numLayers: 2, numHeads: 4, numKvHeads: 2, intermediateSize: 128 };
  const model = join(testDir(name), 'genai.onnx');
  await writeModel(model, buildGenaiLlamaModel(config, randomLlamaWeights(config, seed, 0.08), {}));
  return model;
}

/** Each turn's reply: greedy, with the log-probabilities of 5 alternatives per token. */
const TURN = { maxTokens: 12, logprobs: 5 };

/** Length of the common prefix of two prompts. */
function common(a: readonly number[], b: readonly number[]): number {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
}

/**
 * Prompts of three conversations, turn after turn, interleaved: the previous prompt and its reply with none, one,
 * two or many new tokens after it; the same prompt again (a regenerated answer); the previous prompt and one or
 * two new tokens without the reply (prompts that begin with a cached one and run one or two tokens more).
 */
async function conversations(
  engine: Engine,
  rng: () => number,
  vocab: number,
  onTurn: (prompt: number[], row: GenerationResult['rows'][number], cached: number | undefined) => Promise<void>,
): Promise<void> {
  const tokens = (n: number) => Array.from({ length: n }, () => 3 + Math.floor(rng() * (vocab - 3)));
  const prompts = [tokens(20), tokens(40), tokens(70)];
  const next: ((prompt: number[], reply: number[]) => number[])[] = [
    (p, r) => [...p, ...r],
    (p) => p,
    (p, r) => [...p, ...r, ...tokens(1)],
    (p) => [...p, ...tokens(1)],
    (p, r) => [...p, ...r, ...tokens(30)],
    (p) => [...p, ...tokens(2)],
    (p, r) => [...p, ...r, ...tokens(2)],
  ];
  for (let turn = 0; turn < 7; turn++) {
    for (let c = 0; c < prompts.length; c++) {
      const prompt = prompts[c]!;
      const { rows, usage } = await engine.generate({ promptIds: prompt }, TURN);
      await onTurn(prompt, rows[0]!, usage.cachedPromptTokens);
      prompts[c] = next[(turn + c) % next.length]!(prompt, rows[0]!.ids);
    }
  }
}

describe('prefix caching', function () {
  this.timeout(300_000);

  // what to load, and the prompts kept on the batch's thread at the end (one per conversation and model there)
  const cases: [string, () => Promise<Omit<EngineOptions, 'prefixCacheBytes'>>, number, number?][] = [
    ['the stories260K model (fp32)', async () => ({ model: await storiesModule() }), 3],
    [
      'a 4-bit module with int8 activations (a decode step computes a position otherwise than a prefill)',
      async () => {
        const src = await makeModule({ name: 'prefix-q-src', config: storiesConfig({ hiddenSize: 256, numLayers: 4, numHeads: 8, numKvHeads: 4, intermediateSize: 512 }), seed: 41 });
        const dest = join(testDir('prefix-q'), 'q4');
        await rm(dest, { recursive: true, force: true });
        await quantizeModel(src, dest, { bits: 4 });
        return { model: dest };
      },
      3,
    ],
    [
      'a composition on the batch thread (each model keeps its own prompts)',
      async () => ({ model: await storiesModule(), reasoners: [{ model: await makeModule({ name: 'prefix-r', seed: 42 }), weight: 1 }], placement: 'inline' }),
      6,
    ],
    [
      'a composition whose reasoner runs in a lane, each call alone (the decode loop; the lane keeps its prompts)',
      async () => ({ model: await storiesModule(), reasoners: [{ model: await makeModule({ name: 'prefix-r', seed: 42 }), weight: 1 }], placement: 'lanes' }),
      3,
    ],
    [
      'an onnxruntime-genai GroupQueryAttention graph (right-padded)',
      async () => ({ model: await genaiModel('prefix-genai', 43) }),
      3,
      96,
    ],
  ];
  for (const [name, options, entries, vocab = 512] of cases) {
    it(`${name}: each turn prefills only what follows the longest earlier prompt, and replies as without the cache (tokens, log-probabilities to 1e-4)`, async () => {
      const base = { ...(await options()), cacheDir };
      const [on, off] = await Promise.all([Engine.load(base), Engine.load({ ...base, prefixCacheBytes: 0 })]);
      try {
        const earlier: number[][] = [];
        let expected = 0;
        let queried = 0;
        await conversations(on, createRng(7), vocab, async (prompt, row, cached) => {
          const alone = await off.generate({ promptIds: prompt }, TURN);
          expect(row.ids, `${prompt.length}-token prompt`).to.deep.equal(alone.rows[0]!.ids);
          expect(logprobGap(row.logprobs!, alone.rows[0]!.logprobs!), `${prompt.length}-token prompt`).to.be.below(1e-4);
          expect(alone.usage.cachedPromptTokens).to.equal(undefined);
          // At least two tokens run, and a prefix shorter than 16 is not worth a copy.
          const reuse = Math.min(prompt.length - 2, Math.max(0, ...earlier.map((e) => common(e, prompt))));
          expect(cached, `${prompt.length}-token prompt`).to.equal(reuse >= 16 ? reuse : undefined);
          expected += reuse >= 16 ? reuse : 0;
          queried += prompt.length;
          earlier.push(prompt);
        });
        const stats = (await on.stats()).prefixCache;
        expect(stats.queriedTokens).to.equal(queried);
        expect(stats.hitTokens).to.equal(expected);
        expect(stats.hitTokens).to.be.greaterThan(queried / 2);
        // one entry per conversation: a prompt that a later one begins with gives way to it
        expect(stats.entries).to.equal(entries);
        const off0 = (await off.stats()).prefixCache;
        expect([off0.hitTokens, off0.bytes, off0.entries]).to.deep.equal([0, 0, 0]);
      } finally {
        await Promise.all([on.dispose(), off.dispose()]);
      }
    });
  }

  for (const [name, load, vocab] of [
    ['left-padded (attention op by op)', async () => ({ model: await makeModule({ name: 'prefix-burst', seed: 45 }) }), 512],
    ['right-padded (stories260K, converted with GroupQueryAttention)', async () => ({ model: await storiesGqaModule() }), 512],
    [
      'right-padded (an onnxruntime-genai GQA graph)',
      async () => ({ model: await genaiModel('prefix-genai-burst', 44) }),
      96,
    ],
  ] as const) {
    it(`prompts prefilled together in a burst are kept as rows of their run, ${name}: their follow-ups reply as without the cache (tokens, log-probabilities to 1e-4)`, async () => {
      const base = { ...(await load()), cacheDir };
      const [on, off] = await Promise.all([Engine.load(base), Engine.load({ ...base, prefixCacheBytes: 0 })]);
      try {
        const rng = createRng(11);
        const tokens = (n: number) => Array.from({ length: n }, () => 3 + Math.floor(rng() * (vocab - 3)));
        const burst = [tokens(20), tokens(31), tokens(26)];
        // the rows of one call: prefilled in one run, padded to the longest
        await on.generate({ promptIds: burst }, { maxTokens: 4 });
        expect((await on.stats()).prefixCache.entries).to.equal(3);
        for (const prompt of burst) {
          const next = [...prompt, ...tokens(5)];
          const got = await on.generate({ promptIds: next }, { maxTokens: 10, logprobs: 5 });
          expect(got.usage.cachedPromptTokens).to.equal(prompt.length);
          const want = await off.generate({ promptIds: next }, { maxTokens: 10, logprobs: 5 });
          expect(got.rows[0]!.ids).to.deep.equal(want.rows[0]!.ids);
          // log-probabilities too: a cache misplaced by the padding can leave greedy tokens as they were
          expect(logprobGap(got.rows[0]!.logprobs!, want.rows[0]!.logprobs!)).to.be.below(1e-4);
        }
      } finally {
        await Promise.all([on.dispose(), off.dispose()]);
      }
    });
  }

  it('a graph that refuses a run after a past (as onnxruntime-genai mask subgraphs do) runs the prompt whole, and its cache turns off', async () => {
    const model = await makeModule({ name: 'prefix-refusing', seed: 46, edit: refuseChunksAfterPast });
    const off = await Engine.load({ model, cacheDir, prefixCacheBytes: 0 });
    try {
      const rng = createRng(13);
      const tokens = (n: number) => Array.from({ length: n }, () => 3 + Math.floor(rng() * 509));
      // in the continuous batch, and alone (a traced call runs outside the batch, through the session's own prefill)
      for (const trace of [undefined, 1]) {
        const on = await Engine.load({ model, cacheDir });
        try {
          const options = { maxTokens: 8, logprobs: 5, ...(trace ? { trace } : {}) };
          const first = tokens(30);
          await on.generate({ promptIds: first }, options);
          expect((await on.stats()).prefixCache.entries, `trace ${trace}`).to.equal(1);
          const next = [...first, ...tokens(6)];
          const got = await on.generate({ promptIds: next }, options);
          const want = await off.generate({ promptIds: next }, options);
          expect(got.rows[0]!.ids, `trace ${trace}`).to.deep.equal(want.rows[0]!.ids);
          expect(logprobGap(got.rows[0]!.logprobs!, want.rows[0]!.logprobs!)).to.be.below(1e-4);
          expect(got.usage.cachedPromptTokens, `trace ${trace}`).to.equal(undefined);
          // the follow-up would have replaced the first prompt's entry: none left means the refusal turned it off
          const stats = (await on.stats()).prefixCache;
          expect([stats.hitTokens, stats.entries, stats.bytes], `trace ${trace}`).to.deep.equal([0, 0, 0]);
        } finally {
          await on.dispose();
        }
      }
    } finally {
      await off.dispose();
    }
  });

  it('keeps its prompts within the byte budget, least recently used out first, apart from the running rows', async () => {
    const model = await storiesModule();
    const probe = await Engine.load({ model, cacheDir });
    const perPosition = (await probe.stats()).bytesPerPosition;
    await probe.dispose();
    // room for 100 positions: two 40-token prompts, not three
    const engine = await Engine.load({ model, cacheDir, prefixCacheBytes: 100 * perPosition });
    try {
      const rng = createRng(3);
      const [a, b, c] = [0, 1, 2].map(() => Array.from({ length: 40 }, () => 3 + Math.floor(rng() * 509)));
      const run = async (prompt: number[]) => (await engine.generate({ promptIds: prompt }, { maxTokens: 2 })).rows[0]!;
      for (const p of [a!, b!]) await run(p);
      await run([...a!, 9, 9]); // takes a (and replaces it: a prompt that begins with it covers it)
      await run(c!); // b goes
      const before = (await engine.stats()).prefixCache;
      expect(before.entries).to.equal(2);
      expect(before.bytes).to.equal(82 * perPosition); // a with its two tokens, and c
      expect(before.bytes).to.be.at.most(before.budgetBytes);
      await run([...a!, 1, 2]);
      await run([...b!, 1, 2]);
      const after = (await engine.stats()).prefixCache;
      expect(after.hitTokens - before.hitTokens).to.equal(40); // a's 40 positions; b's were dropped
      expect((await engine.stats()).kvBytes).to.equal(0); // the budget of running rows holds none of it
    } finally {
      await engine.dispose();
    }
    const err = await Engine.load({ model, prefixCacheBytes: -1 }).catch((e: Error) => e);
    expect((err as Error).message).to.match(/prefixCacheBytes must be a whole number >= 0/);
  });
});
