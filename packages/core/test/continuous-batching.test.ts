import { expect } from 'chai';
import { Engine, QueueFullError, type GenerationStream, type StreamOptions } from '../src/engine.js';
import { join } from 'node:path';
import type { GenerationResult } from '../src/generate/types.js';
import type { PromptInput } from '../src/runtime/protocol.js';
import { DecoderSession } from '../src/runtime/decoder-session.js';
import { composedBurstAsAlone, joinAndLeave, togetherAsAlone } from './support/batch-kv-scenario.js';
import { logprobGap } from './support/logprob-compare.js';
import { BatchKv, PREFILL_SCORE_SPAN, prefillRunLength, RowPrefill } from '../src/runtime/batch-kv.js';
import { ContinuousBatch } from '../src/generate/continuous-batch.js';
import type { WeightSpec } from '../src/compose/weights.js';
import { prepareDecoder } from '../src/onnx/prepared-cache.js';
import { builtModel, cacheDir, smallConfig, testDir } from './support/models.js';
import { makeModule, storiesConfig, storiesModule } from './support/modules.js';
import { followScript } from './support/graph-edits.js';
import { TextTokenizer } from '../src/tokenizer/tokenizer.js';
import { buildProjectorModel, randomProjectorWeights, writeProjectorModel } from '../src/onnx/projector-builder.js';

/** A call as the test makes it: what to send, and after how many tokens of the first call it is sent. */
interface Call {
  input: PromptInput;
  options: StreamOptions;
  /** Tokens the first call has streamed before this one starts. */
  at: number;
  /** Aborts this call after it has streamed this many tokens. */
  abortAfter?: number;
}

/** Runs a call alone (nothing else on the engine), aborting it as the concurrent run would. */
async function alone(engine: Engine, call: Call): Promise<GenerationResult> {
  return collect(engine, call, () => {}).result;
}

/** Starts a call; `onToken` sees its token count after each streamed token. */
function collect(engine: Engine, call: Call, onToken: (n: number) => void): { result: Promise<GenerationResult> } {
  const controller = new AbortController();
  const stream: GenerationStream = engine.stream(call.input, { ...call.options, signal: controller.signal });
  const result = (async () => {
    let n = 0;
    for await (const _ of stream) {
      n++;
      if (n === call.abortAfter) controller.abort();
      onToken(n);
    }
    return stream.result;
  })();
  return { result };
}

const summary = (r: GenerationResult) => r.rows.map((row) => ({ ids: row.ids, text: row.text, finishReason: row.finishReason }));

/**
 * Starts `calls[0]`, and each other call once the first has streamed `call.at` tokens; every call's result (each
 * checked to have started while the first ran, so none is left out) and the most rows seen running at once.
 */
async function staggered(engine: Engine, calls: readonly Call[]): Promise<{ got: GenerationResult[]; busiest: number }> {
  const results: Promise<GenerationResult>[] = [];
  let busiest = 0;
  const startDue = (tokensOfFirst: number) => {
    calls.forEach((call, i) => {
      if (i > 0 && call.at <= tokensOfFirst && !results[i]) results[i] = collect(engine, call, () => {}).result;
    });
    // Sampled at every token of the first call, not only as calls start: on a loaded machine the calls started
    // last may not have joined yet when they are sent, while the earlier ones are still running.
    void engine.stats().then((s) => (busiest = Math.max(busiest, s.running)));
  };
  results[0] = collect(engine, calls[0]!, startDue).result;
  startDue(0);
  await results[0];
  expect(calls.map((_, i) => i).filter((i) => !results[i]), 'calls not started while the first ran').to.deep.equal([]);
  return { got: await Promise.all(results), busiest };
}

describe('batch KV cache', () => {
  it('gives each row the logits it gets alone while rows of other lengths join, move (taken out and added back) and leave', async () => {
    // Compared as logits, not ids: a padded key left unmasked shows here even where greedy ids survive it.
    const model = await builtModel('cb-kv', { ...smallConfig, numLayers: 3 }, {}, 21);
    const p = await prepareDecoder(model, { lastLogitsOnly: true, logitsFloat32: true, cacheDir });
    const session = await DecoderSession.create({ path: p.preparedPath });
    try {
      expect(await joinAndLeave(session, new BatchKv(session))).to.be.lessThan(1e-4);
    } finally {
      await session.release();
    }
  });

  it('prefills past 2048 positions in shorter runs, their attention scores within PREFILL_SCORE_SPAN, with the logits of short runs', async () => {
    expect([prefillRunLength(256, 0), prefillRunLength(256, 1792), prefillRunLength(3, 20_000), prefillRunLength(Infinity, 50_000)]).to.deep.equal([256, 256, 3, Infinity]);
    for (const done of [1793, 4096, 8192]) {
      const run = prefillRunLength(256, done);
      expect(run, `after ${done}`).to.be.below(256);
      expect(run * (done + run)).to.be.at.most(PREFILL_SCORE_SPAN);
      expect((run + 1) * (done + run + 1)).to.be.above(PREFILL_SCORE_SPAN);
    }
    expect(prefillRunLength(256, 200_000), 'never below 32 tokens a run').to.equal(32);
    const model = await builtModel('cb-long-prefill', smallConfig, {}, 23);
    const p = await prepareDecoder(model, { lastLogitsOnly: true, logitsFloat32: true, cacheDir });
    const session = await DecoderSession.create({ path: p.preparedPath });
    try {
      const prompt = Array.from({ length: 5600 }, (_, i) => 3 + ((i * 31) % (smallConfig.vocabSize - 3)));
      const prefill = async (chunk: number) => {
        const row = new RowPrefill(session, prompt, chunk);
        let runs = 0;
        for (;;) {
          runs++;
          const logits = await row.next();
          if (logits) return { logits, runs };
        }
      };
      const long = await prefill(256);
      // 8 runs of 256 to 2048 positions, then 230, 210, 195, … 96, 94 and the last 48: 35 against 22 runs of 256
      expect(long.runs).to.equal(35);
      const short = await prefill(64);
      let worst = 0;
      long.logits.forEach((v, i) => (worst = Math.max(worst, Math.abs(v - short.logits[i]!))));
      expect(worst).to.be.below(1e-4);
    } finally {
      await session.release();
    }
  });
});

describe('continuous batching', function () {
  this.timeout(120_000);
  let engine: Engine;
  let backbone: string;

  before(async () => {
    let reasoner: string;
    [backbone, reasoner] = await Promise.all([
      makeModule({ name: 'cb-backbone', kind: 'backbone', seed: 11 }),
      makeModule({ name: 'cb-reasoner', seed: 12, config: storiesConfig({ hiddenSize: 32 }) }),
    ]);
    // Chunks of 3 prompt tokens: every prompt longer than that joins over several steps.
    // Inline: the reasoner's session is on the backbone's thread, where the batch steps it for the rows that use it.
    engine = await Engine.load({ model: backbone, cacheDir, maxBatch: 8, prefillChunk: 3, placement: 'inline', reasoners: [{ model: reasoner, name: 'r', weight: 0 }] });
  });
  after(() => engine?.dispose());

  it('requests joining at different steps, with their own prompts, settings, stops, reasoner weights and aborts, each give what they give alone', async () => {
    const free = await engine.generate({ prompt: 'Once upon a time' }, { maxTokens: 16 });
    const stop = free.rows[0]!.text.slice(6, 9);
    const calls: Call[] = [
      { input: { promptIds: [1, 5, 9, 30, 41, 7, 100, 300, 12] }, options: { maxTokens: 40, ignoreEos: true }, at: 0 },
      { input: { prompt: 'Once upon a time' }, options: { maxTokens: 16, stop: [stop] }, at: 2 },
      { input: { promptIds: [1, 77] }, options: { maxTokens: 24, temperature: 0.8, topK: 20, seed: 5 }, at: 2 },
      { input: { promptIds: [1, 3, 300, 200, 17] }, options: { maxTokens: 12, topP: 0.9, temperature: 1.2, seed: 9, repetitionPenalty: 1.3 }, at: 5 },
      { input: { promptIds: [1, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70] }, options: { maxTokens: 200, ignoreEos: true }, at: 6, abortAfter: 7 },
      { input: { promptIds: [[1, 8], [1, 9, 10, 11, 12, 13, 14]] }, options: { maxTokens: 10 }, at: 9 },
      // The reasoner runs for these rows only, with their own weights (a schedule, and GenARM's normalised logprobs).
      { input: { promptIds: [1, 40, 41] }, options: { maxTokens: 8, reasoners: [{ name: 'r', weight: 1 }] }, at: 10 },
      { input: { promptIds: [1, 40, 41] }, options: { maxTokens: 8, reasoners: [{ name: 'r', weight: 0 }] }, at: 11 },
      { input: { promptIds: [1, 40, 41, 42, 43] }, options: { maxTokens: 10, reasoners: [{ name: 'r', weight: [{ until: 3, weight: 2 }, { weight: 0.5 }] }], mode: 'logprobs', normalize: true }, at: 12 },
    ];
    // An abort lands between steps, wherever the worker then is: such a call is checked as a prefix of its run.
    const expected: ReturnType<typeof summary>[] = [];
    for (const call of calls) expected.push(summary(await alone(engine, { ...call, abortAfter: undefined })));
    expect(expected[2]).to.not.deep.equal(expected[0]);
    expect(expected[1]![0]!.finishReason).to.equal('stop');
    expect(expected[6]).to.not.deep.equal(expected[7], 'the reasoner changes the greedy continuation');

    const { got, busiest } = await staggered(engine, calls);
    got.forEach((r, i) => {
      if (calls[i]!.abortAfter === undefined) return expect(summary(r), `call ${i}`).to.deep.equal(expected[i]);
      const row = r.rows[0]!;
      expect(row.finishReason).to.equal('abort');
      expect(row.ids.length).to.be.within(calls[i]!.abortAfter!, expected[i]![0]!.ids.length - 1);
      expect(row.ids).to.deep.equal(expected[i]![0]!.ids.slice(0, row.ids.length));
    });
    expect(busiest, 'rows decoded together at some point').to.be.greaterThan(2);
  });

  it('holds no KV cache once a burst is over, and rebuilding the batch copies less than a per-row layout would', async () => {
    // The previous test's last rows may still be leaving the batch: wait until nothing runs (bounded), then the
    // cache must be empty, not merely shrinking.
    let idle = await engine.stats();
    for (let i = 0; i < 100 && idle.running + idle.waiting > 0; i++) {
      await new Promise((r) => setTimeout(r, 20));
      idle = await engine.stats();
    }
    expect(idle).to.include({ running: 0, waiting: 0, kvBytes: 0 });
    const burst = Array.from({ length: 6 }, (_, i) => engine.generate({ promptIds: [1, 20 + i, 30 + i] }, { maxTokens: 10 + 3 * i, ignoreEos: true }));
    // Asked right after the calls, so that the worker reads it after them, at the batch's first yield (a wait of a
    // few milliseconds let a fast machine finish the burst first).
    const during = await engine.stats();
    await Promise.all(burst);
    const after = await engine.stats();
    expect(during.running + during.waiting).to.be.greaterThan(0);
    expect(after).to.include({ kvBytes: 0, running: 0, waiting: 0 });
    expect(after.counters.copiedBytes).to.be.greaterThan(0);
    expect(after.counters.copiedBytes).to.be.lessThan(after.counters.perRowLayoutBytes);
  });

  it('keeps the KV cache within kvBudgetBytes: a call that fits only alone waits, one that never fits is a KvBudgetError', async () => {
    // 2 layers × (keys + values) × 2 KV heads × head size 12 × 4 bytes = 384 bytes per position.
    const tight = await Engine.load({ model: backbone, cacheDir, kvBudgetBytes: 10_000 });
    try {
      const opts = { maxTokens: 20, ignoreEos: true };
      const one = await tight.generate({ promptIds: [1, 5, 6] }, opts);
      const two = await tight.generate({ promptIds: [1, 7, 8] }, opts);
      // 23 positions × 384 bytes fit; two such rows (17,664 bytes) do not, so the second waits for the first.
      const a = tight.generate({ promptIds: [1, 5, 6] }, opts);
      const b = tight.generate({ promptIds: [1, 7, 8] }, opts);
      const during = await tight.stats();
      expect(during.running).to.be.at.most(1);
      expect([(await a).rows[0]!.ids, (await b).rows[0]!.ids]).to.deep.equal([one.rows[0]!.ids, two.rows[0]!.ids]);
      const err = await tight.generate({ promptIds: [1, 5, 6] }, { maxTokens: 40 }).catch((e: Error) => e);
      expect(err).to.have.property('name', 'KvBudgetError');
      expect((err as Error).message).to.match(/needs 16512 bytes of KV cache \(1 rows × 43 positions\), more than the budget of 10000 bytes/);
    } finally {
      await tight.dispose();
    }
  });

  it('refuses a call beyond maxQueue with a QueueFullError, and the queue goes on', async () => {
    const small = await Engine.load({ model: backbone, cacheDir, maxBatch: 1, maxQueue: 1 });
    try {
      const controller = new AbortController();
      const running = small.generate({ promptIds: [1, 2] }, { maxTokens: 100_000, ignoreEos: true, signal: controller.signal });
      const waiting = small.generate({ promptIds: [1, 3] }, { maxTokens: 4 });
      const refused = small.generate({ promptIds: [1, 4] }, { maxTokens: 4 });
      const err = await refused.then(
        () => undefined,
        (e: Error) => e,
      );
      expect(err).to.be.instanceOf(QueueFullError);
      expect(err!.message).to.match(/maxQueue 1/);
      controller.abort();
      expect((await running).rows[0]!.finishReason).to.equal('abort');
      expect((await waiting).rows[0]!.ids).to.have.length(4);
    } finally {
      await small.dispose();
    }
  });
});

describe('continuous batching with latent steps', function () {
  this.timeout(120_000);
  const H = 48;
  const MARKER_TEXT = 'a cat. <implicit_thought>2</implicit_thought> It ran.';
  let engine: Engine;
  let tokenizer: TextTokenizer;
  let discrete: number[];

  before(async () => {
    tokenizer = await TextTokenizer.fromDirectory(await storiesModule());
    // A backbone that writes MARKER_TEXT after 'Once upon a time' and leaves two positions after the marker for
    // its latent steps (hidden states untouched: the steps compute as usual); a random projector.
    const prompt = tokenizer.encode('Once upon a time');
    discrete = tokenizer.encode(MARKER_TEXT, false);
    const markerEnd = discrete.findIndex((_, i) => tokenizer.decode(discrete.slice(0, i + 1)).includes('</implicit_thought>'));
    const script = [...new Array<number>(prompt.length - 1).fill(0), ...discrete.slice(0, markerEnd + 1), discrete[markerEnd]!, discrete[markerEnd]!, ...discrete.slice(markerEnd + 1), 2];
    const dir = await makeModule({ name: 'cb-latent', kind: 'backbone', config: storiesConfig({ hiddenSize: H }), seed: 21, edit: (p) => followScript(p, 512, script) });
    const projector = join(testDir('cb-projector'), 'projector.onnx');
    await writeProjectorModel(projector, buildProjectorModel({ hiddenSize: H }, randomProjectorWeights({ hiddenSize: H }, 5, 0.2)));
    engine = await Engine.load({ model: dir, projector, cacheDir, maxBatch: 8, prefillChunk: 3 });
  });
  after(() => engine?.dispose());

  it('marker and fixed:K rows think in the batch, joining at different steps, each giving what it gives alone (ids, text, steps, logprobs)', async () => {
    const story = { prompt: 'Once upon a time' };
    const calls: Call[] = [
      { input: story, options: { maxTokens: discrete.length, latentPlaceholder: '…', logprobs: 2 }, at: 0 },
      { input: { promptIds: [1, 403, 407] }, options: { maxTokens: 6, latent: 'fixed:3', logprobs: 2 }, at: 0 },
      { input: story, options: { maxTokens: discrete.length, latent: 'never', logprobs: 2 }, at: 1 },
      // Joins later: its marker comes at another step than the first call's.
      { input: story, options: { maxTokens: discrete.length, logprobs: 2 }, at: 3 },
      { input: { promptIds: [1, 60, 61, 62, 63] }, options: { maxTokens: 8, latent: 'fixed:1', logprobs: 2 }, at: 4 },
    ];
    // Alone in the decode loop (a trace keeps a call out of the batch), stepping the backbone's own session.
    const expected: GenerationResult[] = [];
    for (const call of calls) expected.push(await alone(engine, { ...call, options: { ...call.options, trace: 1 } }));
    expect(expected[0]!.rows[0]!.ids).to.deep.equal(discrete);
    expect(expected[0]!.usage.latentSteps).to.equal(2);
    expect(expected[2]!.rows[0]!.text).to.include('<implicit_thought>2</implicit_thought>');

    const { got, busiest } = await staggered(engine, calls);
    let worst = 0;
    got.forEach((r, i) => {
      const [row, want] = [r.rows[0]!, expected[i]!.rows[0]!];
      expect({ ...summary(r)[0], latentSteps: row.latentSteps }, `call ${i}`).to.deep.equal({ ...summary(expected[i]!)[0], latentSteps: want.latentSteps });
      expect(r.usage.latentSteps, `call ${i}`).to.equal(expected[i]!.usage.latentSteps);
      worst = Math.max(worst, logprobGap(row.logprobs!, want.logprobs!));
    });
    expect(worst, 'log-probabilities as alone').to.be.below(1e-4);
    expect(busiest, 'rows decoded together at some point').to.be.greaterThan(2);
  });
});

describe('prompts prefilled together', () => {
  it('give each prompt the logits it gets alone, and a burst of requests joins the batch at one step with the tokens each gives alone', async () => {
    const model = await builtModel('cb-together', { ...smallConfig, numLayers: 3 }, {}, 23);
    const p = await prepareDecoder(model, { lastLogitsOnly: true, logitsFloat32: true, cacheDir });
    const session = await DecoderSession.create({ path: p.preparedPath });
    const V = session.vocabSize;
    try {
      const prompts = [[3, 8, 20, 1, 9, 44, 61], [12], [40, 41, 42]];
      // Together: one left-padded run, its rows added to the batch cache, then a step; against each alone.
      const { prefill, step, kv } = await togetherAsAlone(session, prompts, [5, 50, 70]);
      expect(Math.max(prefill, step)).to.be.lessThan(1e-4);
      // Only each row's own positions were copied into the batch, the padding not.
      expect(kv.counters.copiedBytes).to.equal((7 + 1 + 3) * kv.bytesPerPosition);

      // A burst submitted at once: greedy tokens as alone, and the rows joined in one rebuild (each prompt's
      // positions copied once; staggered joins would copy the rows already in the batch again).
      const batch = new ContinuousBatch(session, V, { maxBatch: 8 });
      const request = (prompt: number[]) => ({
        prompts: [prompt],
        options: { maxTokens: 6, ignoreEos: true },
        eosTokenIds: [],
        shouldAbort: () => false,
        onToken: () => {},
      });
      const alone: number[][] = [];
      for (const prompt of prompts) alone.push((await batch.submit(request(prompt))).rows[0]!.ids);
      const before = batch.stats().counters.copiedBytes;
      const burst = await Promise.all(prompts.map((prompt) => batch.submit(request(prompt))));
      expect(burst.map((r) => r.rows[0]!.ids)).to.deep.equal(alone);
      expect(batch.stats().counters.copiedBytes - before).to.equal((7 + 1 + 3) * kv.bytesPerPosition);
    } finally {
      await session.release();
    }
  });

  it("a request's rows with one prompt (several choices) are prefilled once and each samples as a call of its own seed does", async () => {
    const model = await builtModel('cb-twins', { ...smallConfig, numLayers: 3 }, {}, 25);
    const p = await prepareDecoder(model, { lastLogitsOnly: true, logitsFloat32: true, cacheDir });
    const session = await DecoderSession.create({ path: p.preparedPath });
    // Counts the rows of each prompt run (runs without a past) on the session, which the batch drives.
    const prefillRows: number[] = [];
    const forward = session.forward.bind(session);
    session.forward = (...args: Parameters<DecoderSession['forward']>) => {
      if (args[2] === undefined) prefillRows.push(args[1]);
      return forward(...args);
    };
    try {
      const batch = new ContinuousBatch(session, session.vocabSize, { maxBatch: 8 });
      const [a, b] = [[3, 8, 20, 1, 9, 44, 61], [12, 13]];
      const request = (prompts: number[][], seed: number) => ({
        prompts,
        // a temperature other than 1 writes over the logits: each row needs its own copy
        options: { maxTokens: 8, ignoreEos: true, temperature: 0.8, seed },
        eosTokenIds: [],
        shouldAbort: () => false,
        onToken: () => {},
      });
      const rows = (await batch.submit(request([a, a, b, a], 7))).rows.map((r) => r.ids);
      // the two distinct prompts ran as one run of two rows, not four
      expect(prefillRows).to.deep.equal([2]);
      const alone: number[][] = [];
      // each prompt samples as it does alone, its repeats in the request from seed + 1, seed + 2
      for (const [prompt, repeat] of [[a, 0], [a, 1], [b, 0], [a, 2]] as const) alone.push((await batch.submit(request([prompt], 7 + repeat))).rows[0]!.ids);
      expect(rows).to.deep.equal(alone);
      expect(new Set([rows[0], rows[1], rows[3]].map((ids) => ids!.join()))).to.have.property('size', 3);
      expect(batch.stats().running).to.equal(0);
    } finally {
      await session.release();
    }
  });

  it('composed requests in a burst are prefilled together on each of their models and give what they give alone', async () => {
    const [backboneModel, reasonerModel] = await Promise.all([
      builtModel('cb-together-backbone', smallConfig, {}, 24),
      builtModel('cb-together-reasoner', { ...smallConfig, numLayers: 1 }, {}, 25),
    ]);
    const prepare = (m: string) => prepareDecoder(m, { lastLogitsOnly: true, logitsFloat32: true, cacheDir });
    const [bp, rp] = await Promise.all([prepare(backboneModel), prepare(reasonerModel)]);
    const backbone = await DecoderSession.create({ path: bp.preparedPath });
    const reasoner = await DecoderSession.create({ path: rp.preparedPath });
    try {
      await composedBurstAsAlone(backbone, reasoner);
    } finally {
      await Promise.all([backbone.release(), reasoner.release()]);
    }
  });
});

describe('continuous batching with reasoners in lanes', function () {
  this.timeout(120_000);
  let engine: Engine;

  before(async () => {
    const [backbone, reasoner] = await Promise.all([
      makeModule({ name: 'cb-lane-backbone', kind: 'backbone', seed: 31 }),
      makeModule({ name: 'cb-lane-reasoner', seed: 32, config: storiesConfig({ hiddenSize: 32 }) }),
    ]);
    engine = await Engine.load({ model: backbone, cacheDir, maxBatch: 8, placement: 'lanes', reasoners: [{ model: reasoner, name: 'r', weight: 0 }] });
  });
  after(() => engine?.dispose());

  it('calls weighting a lane-placed reasoner join the batch (a copy of it on the backbone thread), each giving what it gives alone in the lane', async () => {
    expect(engine.info.placement.kind).to.equal('lanes');
    const composed = (weight: StreamOptions['reasoners']) => ({ maxTokens: 10, logprobs: 2, reasoners: weight });
    // The first call keeps the engine busy: a composed call arriving at an idle engine runs alone in the lanes.
    const calls: Call[] = [
      // Long enough to be still running when the last call starts, however late its streamed tokens arrive here.
      { input: { promptIds: [1, 5, 9, 30, 41] }, options: { maxTokens: 160, ignoreEos: true, logprobs: 2 }, at: 0 },
      { input: { promptIds: [1, 40, 41] }, options: composed([{ name: 'r', weight: 1 }]), at: 1 },
      { input: { promptIds: [1, 77] }, options: composed([{ name: 'r', weight: [{ until: 3, weight: 2 }, { weight: 0.5 }] }]), at: 2 },
      { input: { promptIds: [1, 40, 41] }, options: { ...composed([{ name: 'r', weight: 1.5 }]), mode: 'logprobs', normalize: true }, at: 4 },
    ];
    // Alone: a trace keeps a call out of the batch, in the decode loop with the reasoner in its lane.
    const expected: GenerationResult[] = [];
    for (const call of calls) expected.push(await alone(engine, { ...call, options: { ...call.options, trace: 1 } }));
    expect(summary(expected[1]!)).to.not.deep.equal(summary(await alone(engine, { ...calls[1]!, options: { maxTokens: 10 } })), 'the reasoner changes the greedy continuation');

    const { got, busiest } = await staggered(engine, calls);
    let worst = 0;
    got.forEach((r, i) => {
      expect(summary(r), `call ${i}`).to.deep.equal(summary(expected[i]!));
      r.rows[0]!.logprobs!.forEach((e, t) => (worst = Math.max(worst, Math.abs(e.logprob - expected[i]!.rows[0]!.logprobs![t]!.logprob))));
    });
    expect(worst, 'log-probabilities as alone').to.be.below(1e-4);
    expect(busiest, 'rows decoded together at some point').to.be.greaterThan(2);
  });

  it('a composed call on an idle engine runs alone with its reasoner in the lane (no batch row), as a traced call does', async () => {
    const options = { maxTokens: 48, ignoreEos: true, logprobs: 2, reasoners: [{ name: 'r', weight: 1 }] };
    const traced = await alone(engine, { input: { promptIds: [1, 40, 41] }, options: { ...options, trace: 1 }, at: 0 });
    // Asked while it streams: a batch row would step the batch's caches (its row counts as running either way).
    const stepped = (await engine.stats()).counters.perRowLayoutBytes;
    const seen: Promise<{ running: number; perRowLayoutBytes: number }>[] = [];
    const stream = engine.stream({ promptIds: [1, 40, 41] }, options);
    for await (const _ of stream) seen.push(engine.stats().then((s) => ({ running: s.running, perRowLayoutBytes: s.counters.perRowLayoutBytes })));
    const result = await stream.result;
    expect(summary(result)).to.deep.equal(summary(traced));
    result.rows[0]!.logprobs!.forEach((e, t) => expect(Math.abs(e.logprob - traced.rows[0]!.logprobs![t]!.logprob)).to.be.below(1e-6));
    const stats = await Promise.all(seen);
    expect(stats.length).to.equal(48);
    expect(stats.every((s) => s.perRowLayoutBytes === stepped && s.running <= 1), `batch steps while it ran: ${JSON.stringify(stats)}`).to.equal(true);
  });
});

describe('continuous batching when sampling a row throws', function () {
  this.timeout(60_000);
  /** How `p` settles, or 'never settled' after `ms` (a request the batch lost track of would wait for ever). */
  const settled = (p: Promise<unknown>, ms = 15_000) =>
    Promise.race([p.then(() => 'resolved', (e: Error) => `rejected: ${e.message}`), new Promise<string>((r) => setTimeout(() => r('never settled'), ms))]);
  const open = async (name: string, config: typeof smallConfig, seed: number) => {
    const p = await prepareDecoder(await builtModel(name, config, {}, seed), { lastLogitsOnly: true, logitsFloat32: true, cacheDir });
    return DecoderSession.create({ path: p.preparedPath });
  };

  it('a throw while a joining row is sampled rejects its request, and the batch goes on', async () => {
    const session = await open('cb-throw', smallConfig, 27);
    try {
      const batch = new ContinuousBatch(session, session.vocabSize, { maxBatch: 8 });
      const request = (onToken: () => void) => ({ prompts: [[1, 5, 9]], options: { maxTokens: 4, ignoreEos: true }, eosTokenIds: [], shouldAbort: () => false, onToken });
      // The caller's callback fails at the row's first token, sampled as the row joins the batch.
      const failing = request(() => {
        throw new Error('the listener failed');
      });
      expect(await settled(batch.submit(failing))).to.equal('rejected: the listener failed');
      expect((await batch.submit(request(() => {}))).rows[0]!.ids).to.have.length(4);
      expect(batch.stats().running).to.equal(0);
    } finally {
      await session.release();
    }
  });

  it('a composed request whose normalised weights sum to zero or below fails on its own, as it joins or later; the others give what they give alone', async () => {
    const [backbone, reasoner] = await Promise.all([open('cb-norm-backbone', smallConfig, 28), open('cb-norm-reasoner', { ...smallConfig, numLayers: 1 }, 29)]);
    try {
      const batch = new ContinuousBatch(backbone, backbone.vocabSize, { maxBatch: 8 }, [{ session: reasoner, name: 'r' }]);
      const request = (weight?: WeightSpec, onToken: () => void = () => {}) => ({
        prompts: [[1, 5, 9, 30]],
        options: { maxTokens: 12, ignoreEos: true },
        eosTokenIds: [],
        shouldAbort: () => false,
        onToken,
        ...(weight === undefined ? {} : { composition: { reasoners: [{ index: 0, weight }], mode: 'logits' as const, normalize: true } }),
      });
      const alone = (await batch.submit(request())).rows[0]!.ids;
      // Alone: its row fails as it joins (the first token).
      expect(await settled(batch.submit(request(-1)))).to.equal('rejected: cannot normalise composed logits: the weights sum to zero');
      // Joining while another request runs: that one goes on.
      let zero: Promise<string> | undefined;
      const running = batch.submit(request(undefined, () => (zero ??= settled(batch.submit(request(-1))))));
      expect((await running).rows[0]!.ids).to.deep.equal(alone);
      expect(await zero).to.match(/^rejected: .*sum to zero$/);
      // A schedule whose sum falls below zero at its third token fails there (a negative sum would invert the distribution).
      let streamed = 0;
      const falling = batch.submit(request([{ until: 2, weight: 0.5 }, { weight: -2 }], () => streamed++));
      expect(await settled(falling)).to.match(/^rejected: cannot normalise composed logits: the weights sum to -1 \(below zero/);
      expect(streamed).to.equal(2);
      expect(batch.stats().running).to.equal(0);
    } finally {
      await Promise.all([backbone.release(), reasoner.release()]);
    }
  });
});
