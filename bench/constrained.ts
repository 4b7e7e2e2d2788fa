/**
 * bench:constrained — what the grammar stage costs per token, on the 24M model's 32,000-token Llama vocabulary
 * and on a real 151,936-token byte-level BPE vocabulary of Qwen2's size (the first 151,643 pieces of o200k_base,
 * from js-tiktoken, and 293 added tokens, as Qwen2 has):
 * - mask only, synthetic: the XGrammar bitmask of the next step plus applying it to the logits, along random
 *   paths through a JSON Schema (random logits, masked, argmax: uniform among the allowed tokens, so exotic long
 *   tokens too); split into the bitmask (computed while the model runs, off the critical path) and what is on
 *   it: writing −∞ (apply, as sampling did) or, greedy, walking the allowed tokens for the argmax instead of the
 *   argmax over the row (walk − argmax); sampled (T = 0.8), candidates gathered from the allowed tokens against
 *   the free row's pick. Measured twice per step: after evicting the CPU caches as the model's
 *   step does, and again on a twin matcher right after (the caches warm: XGrammar's own floor);
 * - accepting the sampled token;
 * - in decoding: the Engine's own per-call figures (`timing.grammar`) from real decodes of a 24M-shaped model
 *   over each vocabulary (the continuous batch: the sampler's own pick checked first, a bitmask only when it is
 *   refused or computed ahead after a structural state), greedy and sampled, beside the free decode step;
 *   vocabularies and settings interleaved, medians over the rounds;
 * - schema compile time (distinct schemas, so that neither cache answers), and the first use (library load and
 *   vocabulary).
 * Prints a JSON line and tables. The environment's `ROUNDS` (default 5) sets the in-decoding part's interleaved
 * rounds; the synthetic parts' steps are fixed.
 *
 *   [ROUNDS=5] npm run bench:constrained
 */
import { readFile, writeFile, copyFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import o200k from 'js-tiktoken/ranks/o200k_base';
import { Engine } from '../packages/core/src/engine.js';
import type { Timing } from '../packages/core/src/generate/types.js';
import { loadXGrammar, type EmbindIntVector } from '../packages/core/src/constrain/xgrammar-loader.js';
import { vectorWords } from '../packages/core/src/constrain/xgrammar-factory.js';
import { XGrammarFactory, grammarVocabulary, type Constraint, type GrammarVocabulary, type ResponseFormat } from '../packages/core/src/constrain/index.js';
import { argmax, argmaxAllowed, applyBitmask, createRng, Sampler } from '../packages/core/src/sampling/index.js';
import { models } from '../test/support/paths.js';
import { benchLlama, LLAMA_24M, PROMPT } from './support/models.js';
import { median, printTable } from './support/stats.js';

const schema = (city: string) => ({
  type: 'object',
  properties: {
    [city]: { type: 'string', maxLength: 40 },
    days: { type: 'integer', minimum: 1, maximum: 14 },
    units: { enum: ['metric', 'imperial'] },
    hourly: { type: 'array', items: { type: 'number', minimum: -50, maximum: 60 }, maxItems: 24 },
  },
  required: [city, 'days'],
});
const SCHEMA = schema('city');
const FORMAT: ResponseFormat = { type: 'json_schema', schema: SCHEMA };
/**
 * For the decode step: a reply that cannot end within the run (20 required properties, at least three tokens
 * each), so both runs time the same number of steps. No counted repetitions (`minLength: 1000`, `minItems: 50`):
 * XGrammar takes milliseconds for some bitmasks under those, which would time them instead of the stage.
 */
const LONG: ResponseFormat = {
  type: 'json_schema',
  schema: (() => {
    const keys = Array.from({ length: 20 }, (_, i) => `line${i}`);
    return { type: 'object', properties: Object.fromEntries(keys.map((k) => [k, { type: 'string' }])), required: keys };
  })(),
};
const TOKENS = 1500;
/** Steps of the bitmask breakdown. */
const BREAKDOWN_STEPS = 400;
/** Interleaved rounds of the in-decoding calls, and tokens per call. */
const ROUNDS = Number(process.env.ROUNDS ?? 5);
const DECODE_TOKENS = 48;
const QWEN_VOCAB = 151_936;
const QWEN_PIECES = 151_643;
/** More than the last-level cache of the machines this runs on: what a model's decode step reads through. */
const EVICT_FLOATS = 8 << 20;

/** GPT-2's byte-to-character map, in which byte-level BPE vocabularies (Qwen2's too) write their pieces. */
function byteLevelChars(): string[] {
  const printable = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  let next = 256;
  return Array.from({ length: 256 }, (_, b) => String.fromCodePoint(printable(b) ? b : next++));
}

/**
 * The first 151,643 pieces of o200k_base by rank, byte-level encoded: the vocabulary its BPE training had at
 * that size (ranks are merge order). js-tiktoken ships ranks as lines `<key> <first rank> <base64 piece>…`.
 */
function realLargeVocabulary(): string[] {
  const chars = byteLevelChars();
  const pieces = new Array<string>(QWEN_PIECES);
  for (const line of o200k.bpe_ranks.split('\n')) {
    const [, first, ...encoded] = line.split(' ');
    encoded.forEach((b64, i) => {
      const rank = Number(first) + i;
      if (rank < QWEN_PIECES) pieces[rank] = Array.from(Buffer.from(b64, 'base64'), (b) => chars[b]!).join('');
    });
  }
  if (pieces.some((p) => p === undefined)) throw new Error('o200k_base ranks: a rank below 151,643 is missing');
  return pieces;
}

/** tokenizer.json for those pieces (byte-level BPE; then Qwen2's added tokens, the first one EOS). */
function largeTokenizerJson(pieces: string[]): object {
  const named = ['<|endoftext|>', '<|im_start|>', '<|im_end|>'];
  const added = Array.from({ length: QWEN_VOCAB - pieces.length }, (_, i) => ({
    id: pieces.length + i, content: named[i] ?? `<|extra_${i}|>`, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
  }));
  return {
    version: '1.0', truncation: null, padding: null, added_tokens: added, normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: null, decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: true, vocab: Object.fromEntries(pieces.map((p, i) => [p, i])), merges: [] },
  };
}

/**
 * Where XGrammar's bitmask time goes, along random paths through the in-decoding schema (LONG) on a copy of the
 * library of its own: the C++ call alone (`GetNextTokenBitmask`, which also allocates the vector), + reading
 * it into the row's buffer (what the constraint does), and the library's `getNextTokenBitmask` (awaits, then a
 * new array per token), each after evicting the caches; medians, µs.
 */
async function fillBreakdown(vocab: GrammarVocabulary, eos: number) {
  const instance = loadXGrammar();
  const n = vocab.tokens.length;
  const info = await instance.xg.TokenizerInfo.createTokenizerInfo(vocab.tokens, vocab.kind, vocab.prependSpace, n);
  const compiler = await instance.xg.GrammarCompiler.createGrammarCompiler(info);
  const format = LONG as { schema: object };
  const compiled = await compiler.compileJSONSchema(JSON.stringify(format.schema), false, undefined, [', ', ': '], true);
  const binding = instance.binding();
  if (!binding) throw new Error('this XGrammar bundle does not let its module out');
  const words = new Int32Array((n + 31) >>> 5);
  const rng = createRng(8);
  const t = { call: [] as number[], inPlace: [] as number[], library: [] as number[] };
  const fresh = () => instance.xg.GrammarMatcher.createGrammarMatcher(compiled, [eos]);
  let matcher = await fresh();
  for (let k = 0; k < BREAKDOWN_STEPS; k++) {
    const handle = (matcher as unknown as { handle: { GetNextTokenBitmask(n: number): EmbindIntVector } }).handle;
    let bitmask: Int32Array | undefined;
    const ways = {
      call: async () => handle.GetNextTokenBitmask(n).delete(),
      inPlace: async () => {
        const vector = handle.GetNextTokenBitmask(n);
        words.set(vectorWords(vector, binding, words.length));
        vector.delete();
      },
      library: async () => void (bitmask = await matcher.getNextTokenBitmask()),
    };
    const order = (['call', 'inPlace', 'library'] as const).map((_, j, all) => all[(j + k) % 3]!);
    // The same state three ways, each after an eviction; which goes first (and may find lines the others left) rotates.
    for (const way of order) {
      evict.fill(k + way.length);
      const t0 = performance.now();
      await ways[way]();
      t[way].push((performance.now() - t0) * 1000);
    }
    if (!bitmask) throw new Error('no bitmask');
    // Uniform among the allowed tokens, as the synthetic paths.
    const allowed: number[] = [];
    for (let i = 0; i < n; i++) if ((bitmask[i >> 5]! >>> (i & 31)) & 1) allowed.push(i);
    matcher.acceptToken(allowed[Math.floor(rng() * allowed.length)]!);
    if (matcher.isTerminated()) {
      matcher.dispose();
      matcher = await fresh();
    }
  }
  matcher.dispose();
  return { callUs: median(t.call), inPlaceUs: median(t.inPlace), libraryUs: median(t.library) };
}

/** The two ways a token is picked: greedy (the walk) and sampled (candidates gathered from the allowed tokens). */
const SETTINGS = { greedy: { temperature: 0 }, sampled: { temperature: 0.8, seed: 5 } } as const;
type Setting = keyof typeof SETTINGS;

const evict = new Float32Array(EVICT_FLOATS);
const samplers = [new Sampler(SETTINGS.sampled), new Sampler(SETTINGS.sampled)] as const;
let sampledRows = [new Float32Array(0), new Float32Array(0)] as const;
/**
 * Microseconds a step of the constraint takes: its bitmask (prepared, as while the model runs; the fill as the
 * constraint's clock timed it), then on the
 * logits: the greedy walk over the allowed tokens, the free argmax (what the walk replaces), and writing −∞
 * (the apply). Returns the token the masked row's argmax picks (the walk must agree).
 */
async function step(constraint: Constraint, logits: Float32Array, walkFirst: boolean) {
  constraint.prepare!();
  await new Promise((r) => setImmediate(r)); // the model's step: the prepared bitmask is computed meanwhile
  const allowed = await constraint.allowed();
  // The fill as the constraint timed it (the event loop's turn around it left out).
  const bitmask = constraint.clock.fills.at(-1)!;
  // Both read the same row: which goes first (and finds it less warm) alternates.
  const timed = (f: () => number) => {
    const t0 = performance.now();
    const id = f();
    return { id, us: (performance.now() - t0) * 1000 };
  };
  const walkFn = () => argmaxAllowed(logits, allowed);
  const freeFn = () => argmax(logits);
  const first = timed(walkFirst ? walkFn : freeFn);
  const second = timed(walkFirst ? freeFn : walkFn);
  const [walked, free] = walkFirst ? [first, second] : [second, first];
  // Sampled (T = 0.8): candidates gathered from the allowed tokens, against the free row's pick.
  sampledRows[0].set(logits);
  sampledRows[1].set(logits);
  const underMask = () => samplers[0].sample(sampledRows[0], { generated: [] }, allowed);
  const unmasked = () => samplers[1].sample(sampledRows[1], { generated: [] });
  const s1 = timed(walkFirst ? underMask : unmasked);
  const s2 = timed(walkFirst ? unmasked : underMask);
  const [sampled, freeSampled] = walkFirst ? [s1, s2] : [s2, s1];
  const t = performance.now();
  applyBitmask(logits, allowed);
  const apply = (performance.now() - t) * 1000;
  const token = argmax(logits);
  if (token !== walked.id) throw new Error(`the walk picked ${walked.id}, the masked argmax ${token}`);
  return { bitmask, apply, walk: walked.us, free: free.us, sampled: sampled.us, freeSampled: freeSampled.us, token };
}

/** Mask time per token along random paths through the grammar, caches cold and warm; accept time; compile time. */
async function maskTimes(vocab: GrammarVocabulary, eos: number) {
  const t0 = performance.now();
  const factory = new XGrammarFactory(vocab, `bench-${vocab.tokens.length}`);
  await factory.create({ type: 'json_object' }, [eos]);
  const firstMs = performance.now() - t0;
  const compiles: number[] = [];
  for (let i = 0; i < 3; i++) {
    const t = performance.now();
    await factory.compile({ type: 'json_schema', schema: schema(`city_${i}`) }, [eos]);
    compiles.push(performance.now() - t);
  }
  const rng = createRng(3);
  const n = vocab.tokens.length;
  const logits = new Float32Array(n);
  const twin = new Float32Array(n);
  sampledRows = [new Float32Array(n), new Float32Array(n)];
  const t = { cold: [] as number[], coldApply: [] as number[], coldWalk: [] as number[], argmax: [] as number[], warm: [] as number[], warmApply: [] as number[], warmWalk: [] as number[], sampled: [] as number[], freeSampled: [] as number[], accept: [] as number[] };
  const fresh = async () => [await factory.create(FORMAT, [eos]), await factory.create(FORMAT, [eos])];
  let [cold, warm] = await fresh();
  for (let k = 0; k < TOKENS; k++) {
    evict.fill(k);
    for (let i = 0; i < n; i++) logits[i] = rng();
    twin.set(logits);
    const c = await step(cold!, logits, k % 2 === 0);
    const w = await step(warm!, twin, k % 2 === 0);
    t.cold.push(c.bitmask), t.coldApply.push(c.apply), t.coldWalk.push(c.walk - c.free), t.argmax.push(c.free), t.sampled.push(c.sampled - c.freeSampled), t.freeSampled.push(c.freeSampled);
    t.warm.push(w.bitmask), t.warmApply.push(w.apply), t.warmWalk.push(w.walk - w.free);
    const best = c.token;
    const a = performance.now();
    cold!.accept(best);
    t.accept.push((performance.now() - a) * 1000);
    warm!.accept(best);
    if (cold!.isComplete()) {
      cold!.dispose(), warm!.dispose();
      [cold, warm] = await fresh();
    }
  }
  cold!.dispose(), warm!.dispose();
  const [bitmaskUs, applyUs, walkUs, argmaxUs, warmBitmaskUs, warmApplyUs, warmWalkUs] = [t.cold, t.coldApply, t.coldWalk, t.argmax, t.warm, t.warmApply, t.warmWalk].map(median) as number[] as [number, number, number, number, number, number, number];
  const p90 = [...t.cold].sort((a, b) => a - b)[Math.floor(t.cold.length * 0.9)]!;
  return {
    maskUs: bitmaskUs + applyUs, bitmaskUs, bitmaskP90Us: p90, applyUs, walkUs, argmaxUs, greedyMaskUs: bitmaskUs + walkUs,
    warmMaskUs: warmBitmaskUs + warmApplyUs, warmBitmaskUs, warmApplyUs, warmWalkUs,
    sampledPickUs: median(t.sampled), freeSampledUs: median(t.freeSampled),
    acceptUs: median(t.accept), compileMs: median(compiles), firstMs,
  };
}


interface InDecoding {
  /** ms per decode step, free and under the schema. */
  freeMs: number;
  constrainedMs: number;
  /** The Engine's `timing.grammar` of the constrained calls: per-call medians (and the bitmask's mean and largest), medians over rounds. */
  bitmaskUs: number;
  bitmaskMeanUs: number;
  bitmaskMaxUs: number;
  /** Share of bitmasks computed while a model step (or the prefill) ran. */
  overlapped: number;
  /** Share of tokens picked without a bitmask (the sampler's own pick, accepted by the grammar). */
  unmasked: number;
  /** The bitmasks' time spread over all tokens: Σ bitmask µs / tokens (what the stage's fill costs per token). */
  bitmaskPerTokenUs: number;
  /** Waits: the mean (a refused pick's bitmask computed on demand waits its whole fill), and the median. */
  waitMeanUs: number;
  waitUs: number;
  pickUs: number;
  /** The grammar's check and advance per token (a refused first pick adds its check). */
  acceptUs: number;
}

/**
 * Real decodes through the Engine (its continuous batch) of each model, free and under a JSON Schema, greedy and
 * sampled, models and settings interleaved in every round; medians over the rounds.
 */
async function inDecoding(runs: { model: string; promptIds: number[] }[]): Promise<Record<Setting, InDecoding>[]> {
  const engines: Engine[] = [];
  try {
    for (const r of runs) engines.push(await Engine.load({ model: r.model }));
    const settings = Object.keys(SETTINGS) as Setting[];
    const samples = runs.map(() => Object.fromEntries(settings.map((s) => [s, [] as { free: number; constrained: number; grammar: NonNullable<Timing['grammar']> }[]])) as Record<Setting, { free: number; constrained: number; grammar: NonNullable<Timing['grammar']> }[]>);
    const call = (v: number, setting: Setting, constrained: boolean) =>
      engines[v]!.generate({ promptIds: runs[v]!.promptIds }, { ...SETTINGS[setting], maxTokens: DECODE_TOKENS, ignoreEos: true, ...(constrained ? { responseFormat: LONG } : {}) });
    for (let v = 0; v < runs.length; v++) for (const setting of settings) await call(v, setting, true); // warm-up, compile
    for (let round = 0; round < ROUNDS; round++) {
      for (let v = 0; v < runs.length; v++) {
        for (const setting of settings) {
          const free = await call(v, setting, false);
          const constrained = await call(v, setting, true);
          const grammar = constrained.timing.grammar;
          if (!grammar || grammar.tokens !== DECODE_TOKENS) throw new Error(`the constrained call reported ${JSON.stringify(grammar)}`);
          samples[v]![setting].push({ free: free.timing.msPerToken, constrained: constrained.timing.msPerToken, grammar });
        }
      }
    }
    return samples.map((bySetting) =>
      Object.fromEntries(
        settings.map((setting) => {
          const xs = bySetting[setting];
          const m = (f: (x: (typeof xs)[number]) => number) => median(xs.map(f));
          return [setting, {
            freeMs: m((x) => x.free), constrainedMs: m((x) => x.constrained),
            bitmaskUs: m((x) => x.grammar.bitmaskUs.median), bitmaskMeanUs: m((x) => x.grammar.bitmaskUs.mean), bitmaskMaxUs: m((x) => x.grammar.bitmaskUs.max),
            overlapped: m((x) => (x.grammar.bitmasks ? x.grammar.overlapped / x.grammar.bitmasks : 1)), unmasked: m((x) => x.grammar.unmasked / x.grammar.tokens),
            bitmaskPerTokenUs: m((x) => (x.grammar.bitmaskUs.mean * x.grammar.bitmasks) / x.grammar.tokens),
            waitMeanUs: m((x) => x.grammar.waitUs.mean), waitUs: m((x) => x.grammar.waitUs.median), pickUs: m((x) => x.grammar.pickUs.median), acceptUs: m((x) => x.grammar.acceptUs.median),
          }];
        }),
      ) as Record<Setting, InDecoding>,
    );
  } finally {
    await Promise.all(engines.map((e) => e.dispose()));
  }
}

// The 24M bench model with the Llama tokenizer it was shaped for; a 24M-shaped model over the large vocabulary.
const small24m = await benchLlama('llama-24m', LLAMA_24M, 1);
for (const f of ['tokenizer.json', 'tokenizer_config.json']) await copyFile(join(models.llamaFp16, f), join(dirname(small24m), f));
const large24m = await benchLlama('llama-24m-v152k', { ...LLAMA_24M, vocabSize: QWEN_VOCAB, tieWordEmbeddings: true }, 1);
const largeJson = largeTokenizerJson(realLargeVocabulary());
await writeFile(join(dirname(large24m), 'tokenizer.json'), JSON.stringify(largeJson));
await writeFile(join(dirname(large24m), 'tokenizer_config.json'), JSON.stringify({ eos_token: '<|endoftext|>' }));

const smallVocab = grammarVocabulary(JSON.parse(await readFile(join(models.llamaFp16, 'tokenizer.json'), 'utf8')), 32_000);
const largeVocab = grammarVocabulary(largeJson, QWEN_VOCAB);
const small = await maskTimes(smallVocab, 2);
const large = await maskTimes(largeVocab, QWEN_PIECES);
const breakdown = [await fillBreakdown(smallVocab, 2), await fillBreakdown(largeVocab, QWEN_PIECES)];
const [smallDec, largeDec] = await inDecoding([
  { model: small24m, promptIds: PROMPT },
  { model: large24m, promptIds: [15, 16, 17, 18, 19, 20, 21, 22] },
]);
const row = (m: typeof small, d: Record<Setting, InDecoding>) => ({
  ...m,
  inDecoding: d,
  maskShare: m.maskUs / 1000 / d.sampled.freeMs,
  onPathShare: m.applyUs / 1000 / d.sampled.freeMs,
  overhead: { greedy: d.greedy.constrainedMs / d.greedy.freeMs - 1, sampled: d.sampled.constrainedMs / d.sampled.freeMs - 1 },
});
const result = { bench: 'constrained', schema: SCHEMA, rounds: ROUNDS, vocab32k: { ...row(small, smallDec!), bitmaskBreakdown: breakdown[0] }, vocab152k: { ...row(large, largeDec!), bitmaskBreakdown: breakdown[1] } };
console.log(JSON.stringify(result));
const pct = (x: number) => `${(x * 100).toFixed(2)}%`;
const names = ['32,000 (Llama, byte fallback)', '151,936 (o200k_base pieces, byte-level)'];
const synth = [small, large];
printTable('Synthetic: grammar stage per token along random paths, medians of 1,500 steps (µs); caches evicted before each step', ['vocabulary', 'bitmask (overlapped)', 'bitmask p90', 'apply (−∞ writes)', 'bitmask + apply', 'walk − argmax', 'bitmask + walk − argmax', 'free argmax', 'sampled pick − free', 'free sampled pick', 'accept µs', 'compile ms', 'first use ms'], synth.map((m, i) => [
  names[i]!, m.bitmaskUs, m.bitmaskP90Us, m.applyUs, m.maskUs, m.walkUs, m.greedyMaskUs, m.argmaxUs, m.sampledPickUs, m.freeSampledUs, m.acceptUs, m.compileMs, m.firstMs,
]));
printTable('Synthetic: the same steps again on a twin matcher right after, caches warm (XGrammar\'s floor), µs', ['vocabulary', 'bitmask', 'apply', 'bitmask + apply', 'walk − argmax'], synth.map((m, i) => [
  names[i]!, m.warmBitmaskUs, m.warmApplyUs, m.warmMaskUs, m.warmWalkUs,
]));
const decoding = [smallDec!, largeDec!];
printTable(`In decoding: the Engine's timing.grammar over ${DECODE_TOKENS}-token calls of a 24M-shaped model (continuous batch), per-call figures, medians of ${ROUNDS} interleaved rounds; µs unless named`, ['vocabulary', 'pick', 'tokens without a bitmask', 'bitmask per token (Σ fill / tokens)', 'one bitmask: median / mean / max', 'computed ahead (of those computed)', 'wait mean / median (on path)', 'pick median (on path)', 'check + advance median (on path)', 'free pick (synthetic)', 'free step ms', 'schema step ms', 'step overhead'], decoding.flatMap((d, i) =>
  (Object.keys(SETTINGS) as Setting[]).map((setting) => {
    const x = d[setting];
    const freePick = setting === 'greedy' ? synth[i]!.argmaxUs : synth[i]!.freeSampledUs;
    return [
      names[i]!, setting === 'greedy' ? 'greedy' : 'sampled T=0.8', pct(x.unmasked), x.bitmaskPerTokenUs, `${x.bitmaskUs.toFixed(1)} / ${x.bitmaskMeanUs.toFixed(1)} / ${x.bitmaskMaxUs.toFixed(0)}`, pct(x.overlapped), `${x.waitMeanUs.toFixed(1)} / ${x.waitUs.toFixed(1)}`, x.pickUs, x.acceptUs, freePick, x.freeMs, x.constrainedMs, pct(x.constrainedMs / x.freeMs - 1),
    ];
  }),
));
printTable(`XGrammar's bitmask broken down, ${BREAKDOWN_STEPS} random-path steps through the in-decoding schema, caches evicted, medians (µs)`, ['vocabulary', 'C++ GetNextTokenBitmask', '+ read into the row\'s buffer (our fill)', 'library getNextTokenBitmask (awaits, new array)'], breakdown.map((b, i) => [
  names[i]!, b.callUs, b.inPlaceUs, b.libraryUs,
]));
