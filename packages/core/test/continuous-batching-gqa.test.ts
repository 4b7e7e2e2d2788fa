import { expect } from 'chai';
import { join } from 'node:path';
import { Engine, type GenerationStream, type StreamOptions } from '../src/engine.js';
import type { GenerationResult } from '../src/generate/types.js';
import type { PromptInput } from '../src/runtime/protocol.js';
import { DecoderSession } from '../src/runtime/decoder-session.js';
import { BatchKv, prefillTogether } from '../src/runtime/batch-kv.js';
import { RowShards } from '../src/runtime/row-shards.js';
import { composedBurstAsAlone, joinAndLeave, togetherAsAlone } from './support/batch-kv-scenario.js';
import { logprobGap } from './support/logprob-compare.js';
import { ContinuousBatch } from '../src/generate/continuous-batch.js';
import { buildGenaiLlamaModel, type GenaiBuildOptions } from '../src/onnx/genai-builder.js';
import { randomLlamaWeights } from '../src/onnx/llama-builder.js';
import type { LlamaConfig } from '../src/onnx/llama-spec.js';
import { writeModel } from '../src/onnx/proto.js';
import { prepareDecoder } from '../src/onnx/prepared-cache.js';
import { builtModel, cacheDir, smallConfig, testDir } from './support/models.js';
import { makeModule, storiesConfig } from './support/modules.js';

// GroupQueryAttention's CPU kernel rotates heads whose size is a multiple of 16.
const config: LlamaConfig = { vocabSize: 96, hiddenSize: 64, numLayers: 3, numHeads: 4, numKvHeads: 2, intermediateSize: 128 };

async function genaiSession(name: string, options: GenaiBuildOptions, seed: number): Promise<DecoderSession> {
  const path = join(testDir(name), 'genai.onnx');
  await writeModel(path, buildGenaiLlamaModel(config, randomLlamaWeights(config, seed, 0.08), options));
  const p = await prepareDecoder(path, { lastLogitsOnly: true, logitsFloat32: true, cacheDir });
  expect(p.padding).to.equal('right');
  return DecoderSession.create({ path: p.preparedPath, padding: p.padding });
}

/** A GroupQueryAttention graph of the builder, as the GGUF converter writes them (with `num_logits_to_keep`). */
async function gqaSession(name: string, seed: number): Promise<DecoderSession> {
  const p = await prepareDecoder(await builtModel(name, config, { attention: 'gqa', numLogitsToKeep: true }, seed), { lastLogitsOnly: true, logitsFloat32: true, cacheDir });
  expect(p.padding).to.equal('right');
  return DecoderSession.create({ path: p.preparedPath, padding: p.padding });
}

describe('right-padded batch KV cache (GroupQueryAttention graphs)', function () {
  this.timeout(60_000);

  const variants: [string, GenaiBuildOptions][] = [
    ['fp32, rotary inside GQA, packed qkv', {}],
    ['fp16 I/O, RotaryEmbedding from position_ids, int32 ids', { dtype: 'float16', rotary: 'op', packedQkv: false, idsType: 'int32' }],
  ];
  for (const [name, options] of variants) {
    it(`gives each row the logits it gets alone while rows of other lengths join, move and leave, where the left-padded cache does not (${name})`, async () => {
      const session = await genaiSession(`cb-gqa-kv-${name.replace(/\W+/g, '-')}`, options, 41);
      try {
        const kv = new BatchKv(session);
        expect(kv.padding).to.equal('right');
        expect(await joinAndLeave(session, kv)).to.be.lessThan(1e-4);
        // The same rows in a left-padded cache: GQA reads shorter rows' padding as keys.
        expect(await joinAndLeave(session, new BatchKv(session, 'left'))).to.be.greaterThan(0.1);
      } finally {
        await session.release();
      }
    });
  }

  it('prompts of different lengths prefilled together give each row exactly the logits it gets alone, and at the next step', async () => {
    const session = await gqaSession('cb-gqa-together', 43);
    try {
      const { prefill, step, kv } = await togetherAsAlone(session, [[3, 8, 20, 1, 9, 44, 61], [12], [40, 41, 42]], [5, 50, 70]);
      // One right-padded run computes each row as its prompt alone does, to the bit: the int8 activations of
      // quantized graphs leave no room for rounding differences.
      expect(prefill).to.equal(0);
      expect(step).to.be.lessThan(1e-4);
      // Each row's own positions were copied into the batch, the padding not.
      expect(kv.counters.copiedBytes).to.equal((7 + 1 + 3) * kv.bytesPerPosition);
    } finally {
      await session.release();
    }
    // An onnxruntime-genai export has no num_logits_to_keep: its prepared graph gets one, and the same holds.
    const genai = await genaiSession('cb-gqa-genai-together', {}, 43);
    try {
      expect(genai.keepsLogits).to.equal(true);
      const { prefill, step } = await togetherAsAlone(genai, [[3, 8, 20, 1, 9, 44, 61], [12], [40, 41, 42]], [5, 50, 70]);
      expect(prefill).to.equal(0);
      expect(step).to.be.lessThan(1e-4);
    } finally {
      await genai.release();
    }
  });

  it('LongRoPE rows on either side of the original context, prefilled and stepped together, each take their own factors', async () => {
    // Lengths 7, 1 and 5 against an original context of 5: the first row runs on the long factors, the others on
    // the short ones, and the last crosses over at the step. A choice made for the whole batch fails this.
    const divisors = (step: number) => Array.from({ length: 8 }, (_, j) => 1 + j * step);
    const longRope = { ...config, longRope: { short: divisors(0.5), long: divisors(6), originalContext: 5 } };
    const p = await prepareDecoder(await builtModel('cb-gqa-long-rope', longRope, { attention: 'gqa', numLogitsToKeep: true }, 47), { lastLogitsOnly: true, logitsFloat32: true, cacheDir });
    const session = await DecoderSession.create({ path: p.preparedPath, padding: p.padding });
    try {
      expect(session.padding).to.equal('right');
      const { prefill, step } = await togetherAsAlone(session, [[3, 8, 20, 1, 9, 44, 61], [12], [40, 41, 42, 43, 44]], [5, 50, 70]);
      expect(prefill).to.equal(0);
      expect(step).to.be.lessThan(1e-4);
    } finally {
      await session.release();
    }
  });

  it('a burst of composed requests on a GQA backbone with a left-padded reasoner is prefilled together on each model and gives each what it gives alone', async () => {
    const backbone = await gqaSession('cb-gqa-composed-backbone', 45);
    const rp = await prepareDecoder(await builtModel('cb-gqa-composed-reasoner', smallConfig, {}, 46), { lastLogitsOnly: true, logitsFloat32: true, cacheDir });
    const reasoner = await DecoderSession.create({ path: rp.preparedPath });
    expect(reasoner.padding).to.equal('left');
    try {
      await composedBurstAsAlone(backbone, reasoner);
    } finally {
      await Promise.all([backbone.release(), reasoner.release()]);
    }
  });

  it('row shards take rows prefilled together (right-padded, their positions from slot 0) and step them as the one-session cache does', async () => {
    const p = await prepareDecoder(await builtModel('cb-gqa-shards', config, { attention: 'gqa', numLogitsToKeep: true }, 44), { lastLogitsOnly: true, logitsFloat32: true, cacheDir });
    const source = { path: p.preparedPath, padding: p.padding };
    const session = await DecoderSession.create(source, { intraOpThreads: 2 });
    const shards = await RowShards.open(session, source, 2, 2, p.weightBytes);
    try {
      const plain = new BatchKv(session);
      const { caches } = await prefillTogether(session, [[3, 8, 20, 1, 9, 44, 61], [12, 13], [40, 41, 42], [7, 8, 9, 10]]);
      plain.rebuild([], caches);
      shards.rebuild([], caches);
      let worst = 0;
      for (let step = 0; step < 4; step++) {
        const ids = [5 + step, 50 + step, 70 + step, 20 + step];
        const [a, b] = [await plain.step(ids), await shards.step(ids)];
        for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
      }
      expect(shards.stats()).to.include({ wideSteps: 4 });
      expect(worst).to.be.lessThan(1e-4);
    } finally {
      await shards.release();
      await session.release();
    }
  });

  it('a burst of requests of different lengths is prefilled together, joins at one step and gives each what it gives alone', async () => {
    const request = (prompt: number[]) => ({
      prompts: [prompt],
      options: { maxTokens: 8, ignoreEos: true, logprobs: 3 },
      eosTokenIds: [],
      shouldAbort: () => false,
      onToken: () => {},
    });
    const prompts = [[3, 8, 20, 1, 9, 44, 61], [12], [40, 41, 42]];
    // Graphs with num_logits_to_keep (converted GGUFs) and without (genai exports, which the prepared graph gives one).
    for (const [name, open] of [
      ['builder', () => gqaSession('cb-gqa-burst', 42)],
      ['genai', () => genaiSession('cb-gqa-burst-genai', {}, 42)],
    ] as const) {
      const session = await open();
      try {
        const batch = new ContinuousBatch(session, session.vocabSize, { maxBatch: 8 });
        const alone: GenerationResult['rows'][number][] = [];
        for (const prompt of prompts) alone.push((await batch.submit(request(prompt))).rows[0]!);
        expect(new Set(alone.map((r) => r.ids.join(','))).size, name).to.be.greaterThan(1);
        const before = batch.stats().counters.copiedBytes;
        const burst = await Promise.all(prompts.map((prompt) => batch.submit(request(prompt))));
        // Token for token, and log-probabilities to the bit for the rows prefilled together.
        expect(burst.map((r) => r.rows[0]!.ids), name).to.deep.equal(alone.map((r) => r.ids));
        expect(burst.map((r) => r.rows[0]!.logprobs![0]), name).to.deep.equal(alone.map((r) => r.logprobs![0]));
        // One rebuild took the rows: each prompt's positions copied once (rows joining one by one would copy
        // the rows already in the batch again).
        expect(batch.stats().counters.copiedBytes - before, name).to.equal((7 + 1 + 3) * new BatchKv(session).bytesPerPosition);
        expect(batch.stats(), name).to.include({ kvBytes: 0, running: 0 });
      } finally {
        await session.release();
      }
    }
  });
});

/** A call as the test makes it: what to send, and after how many tokens of the first call it is sent. */
interface Call {
  input: PromptInput;
  options: StreamOptions;
  at: number;
  abortAfter?: number;
}

function collect(engine: Engine, call: Call, onToken: (n: number) => void): Promise<GenerationResult> {
  const controller = new AbortController();
  const stream: GenerationStream = engine.stream(call.input, { ...call.options, signal: controller.signal });
  return (async () => {
    let n = 0;
    for await (const _ of stream) {
      n++;
      if (n === call.abortAfter) controller.abort();
      onToken(n);
    }
    return stream.result;
  })();
}

describe('continuous batching of GroupQueryAttention graphs', function () {
  this.timeout(120_000);
  let engine: Engine;

  before(async () => {
    // genai-style modules over the stories tokenizer (text prompts and stop strings), head size 16.
    const genaiModule = (name: string, cfg: LlamaConfig, seed: number, options: GenaiBuildOptions) =>
      makeModule({ name, kind: name.includes('backbone') ? 'backbone' : 'logit-reasoner', config: cfg, seed, edit: (p) => writeModel(p, buildGenaiLlamaModel(cfg, randomLlamaWeights(cfg, seed, 0.1), options)) });
    const [backbone, reasoner] = await Promise.all([
      genaiModule('cb-gqa-backbone', storiesConfig({ hiddenSize: 64 }), 51, {}),
      genaiModule('cb-gqa-reasoner', storiesConfig({ hiddenSize: 64, numLayers: 1 }), 52, { rotary: 'op', packedQkv: false }),
    ]);
    engine = await Engine.load({ model: backbone, cacheDir, maxBatch: 8, prefillChunk: 3, placement: 'inline', reasoners: [{ model: reasoner, name: 'r', weight: 0 }] });
  });
  after(() => engine?.dispose());

  it('requests of different lengths joining at different steps, with stops, sampling, reasoner weights and aborts, each give what they give alone (ids, text, logprobs); the KV cache returns to idle', async () => {
    const free = await engine.generate({ prompt: 'Once upon a time' }, { maxTokens: 16 });
    const stop = free.rows[0]!.text.slice(6, 9);
    const lp = { logprobs: 2 } as const;
    const calls: Call[] = [
      { input: { promptIds: [1, 5, 9, 30, 41, 7, 100, 300, 12] }, options: { maxTokens: 30, ignoreEos: true, ...lp }, at: 0 },
      { input: { prompt: 'Once upon a time' }, options: { maxTokens: 16, stop: [stop], ...lp }, at: 2 },
      { input: { promptIds: [1, 77] }, options: { maxTokens: 20, temperature: 0.8, topK: 20, seed: 5, ...lp }, at: 2 },
      { input: { promptIds: [1, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70] }, options: { maxTokens: 200, ignoreEos: true }, at: 4, abortAfter: 5 },
      { input: { promptIds: [[1, 8], [1, 9, 10, 11, 12, 13, 14]] }, options: { maxTokens: 10, ...lp }, at: 6 },
      // The reasoner (also a GQA graph, with its own right-padded cache) runs for these rows only.
      { input: { promptIds: [1, 40, 41] }, options: { maxTokens: 8, reasoners: [{ name: 'r', weight: 1 }], ...lp }, at: 7 },
      { input: { promptIds: [1, 40, 41, 42, 43] }, options: { maxTokens: 10, reasoners: [{ name: 'r', weight: 0.5 }], mode: 'logprobs', normalize: true, ...lp }, at: 8 },
    ];
    // Alone in the decode loop (a trace keeps a call out of the batch), on the session's own cache.
    const expected: GenerationResult[] = [];
    for (const call of calls) expected.push(await collect(engine, { ...call, abortAfter: undefined, options: { ...call.options, trace: 1 } }, () => {}));
    expect(expected[1]!.rows[0]!.finishReason).to.equal('stop');
    expect(expected[5]!.rows[0]!.ids).to.not.deep.equal(
      (await engine.generate({ promptIds: [1, 40, 41] }, { maxTokens: 8, trace: 1 })).rows[0]!.ids,
      'the reasoner changes the greedy continuation',
    );

    const results: Promise<GenerationResult>[] = [];
    let busiest = 0;
    const started = new Set<number>();
    const startDue = (tokensOfFirst: number) => {
      calls.forEach((call, i) => {
        if (i > 0 && call.at <= tokensOfFirst && !started.has(i)) {
          started.add(i);
          results[i] = collect(engine, call, () => {});
        }
      });
      // At every token of the first call: on a loaded machine the calls sent last may not have joined yet.
      void engine.stats().then((s) => (busiest = Math.max(busiest, s.running)));
    };
    results[0] = collect(engine, calls[0]!, startDue);
    startDue(0);
    // Every call has started once the first is done (Promise.all would see only the calls started so far).
    await results[0];
    expect(started.size).to.equal(calls.length - 1);
    const got = await Promise.all(results);
    let worst = 0;
    got.forEach((r, i) => {
      const want = expected[i]!;
      if (calls[i]!.abortAfter !== undefined) {
        const row = r.rows[0]!;
        expect(row.finishReason).to.equal('abort');
        expect(row.ids.length).to.be.within(calls[i]!.abortAfter!, want.rows[0]!.ids.length - 1);
        expect(row.ids).to.deep.equal(want.rows[0]!.ids.slice(0, row.ids.length));
        return;
      }
      r.rows.forEach((row, k) => {
        const w = want.rows[k]!;
        expect({ ids: row.ids, text: row.text, finishReason: row.finishReason }, `call ${i} row ${k}`).to.deep.equal({ ids: w.ids, text: w.text, finishReason: w.finishReason });
        worst = Math.max(worst, logprobGap(row.logprobs!, w.logprobs!));
      });
    });
    expect(worst, 'log-probabilities as alone').to.be.below(1e-4);
    expect(busiest, 'rows decoded together at some point').to.be.greaterThan(2);

    let idle = await engine.stats();
    for (let i = 0; i < 100 && idle.running + idle.waiting > 0; i++) {
      await new Promise((r) => setTimeout(r, 20));
      idle = await engine.stats();
    }
    expect(idle).to.include({ running: 0, waiting: 0, kvBytes: 0 });
    // The rows ran in the batch's caches, not alone.
    expect(idle.counters.copiedBytes).to.be.greaterThan(0);
  });
});
