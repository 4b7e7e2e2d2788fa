/**
 * bench:constrained — what the grammar stage costs per token, on the 24M model's 32,000-token Llama vocabulary
 * and on a real 151,936-token byte-level BPE vocabulary of Qwen2's size (the first 151,643 pieces of o200k_base,
 * from js-tiktoken, and 293 added tokens, as Qwen2 has):
 * - mask only: the XGrammar bitmask of the next step plus applying it to the logits, along random paths through
 *   a JSON Schema (random logits, masked, argmax: uniform among the allowed tokens, so exotic long tokens too);
 *   split into the bitmask (computed while the model runs, off the critical path) and its application (on it).
 *   Measured twice per step: after evicting the CPU caches as the model's step does (what decoding sees), and
 *   again on a twin matcher right after (the caches warm: XGrammar's own floor);
 * - accepting the sampled token;
 * - the decode step of a 24M model over each vocabulary, free and under a JSON Schema (rounds interleaved);
 * - schema compile time (distinct schemas, so that neither cache answers), and the first use (library load and
 *   vocabulary).
 * Prints a JSON line and tables.
 */
import { readFile, writeFile, copyFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import o200k from 'js-tiktoken/ranks/o200k_base';
import { Engine } from '../packages/core/src/engine.js';
import { XGrammarFactory, grammarVocabulary, type Constraint, type GrammarVocabulary, type ResponseFormat } from '../packages/core/src/constrain/index.js';
import { createRng } from '../packages/core/src/sampling/index.js';
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

const evict = new Float32Array(EVICT_FLOATS);
/** Microseconds a step of the constraint takes: its bitmask (prepared, as while the model runs) and its application. */
async function step(constraint: Constraint, logits: Float32Array): Promise<{ bitmask: number; apply: number }> {
  let t = performance.now();
  constraint.prepare!();
  await new Promise((r) => setImmediate(r)); // the model's step: the prepared bitmask is computed meanwhile
  const bitmask = (performance.now() - t) * 1000;
  t = performance.now();
  await constraint.mask(logits);
  return { bitmask, apply: (performance.now() - t) * 1000 };
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
    await factory.compile({ type: 'json_schema', schema: schema(`city_${i}`) });
    compiles.push(performance.now() - t);
  }
  const rng = createRng(3);
  const n = vocab.tokens.length;
  const logits = new Float32Array(n);
  const twin = new Float32Array(n);
  const t = { cold: [] as number[], coldApply: [] as number[], warm: [] as number[], warmApply: [] as number[], accept: [] as number[] };
  const fresh = async () => [await factory.create(FORMAT, [eos]), await factory.create(FORMAT, [eos])];
  let [cold, warm] = await fresh();
  for (let k = 0; k < TOKENS; k++) {
    evict.fill(k);
    for (let i = 0; i < n; i++) logits[i] = rng();
    twin.set(logits);
    const c = await step(cold!, logits);
    const w = await step(warm!, twin);
    t.cold.push(c.bitmask), t.coldApply.push(c.apply), t.warm.push(w.bitmask), t.warmApply.push(w.apply);
    let best = 0;
    for (let i = 1; i < n; i++) if (logits[i]! > logits[best]!) best = i;
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
  const [bitmaskUs, applyUs, warmBitmaskUs, warmApplyUs] = [t.cold, t.coldApply, t.warm, t.warmApply].map(median) as [number, number, number, number];
  const p90 = [...t.cold].sort((a, b) => a - b)[Math.floor(t.cold.length * 0.9)]!;
  return { maskUs: bitmaskUs + applyUs, bitmaskUs, bitmaskP90Us: p90, applyUs, warmMaskUs: warmBitmaskUs + warmApplyUs, warmBitmaskUs, warmApplyUs, acceptUs: median(t.accept), compileMs: median(compiles), firstMs };
}

/** A 24M-shaped model's ms per decode step, free and under a schema (rounds interleaved). */
async function decodeSteps(model: string, promptIds: number[]): Promise<{ freeMs: number; constrainedMs: number }> {
  const engine = await Engine.load({ model });
  try {
    const free: number[] = [];
    const constrained: number[] = [];
    const opts = { maxTokens: 48, ignoreEos: true, temperature: 0.8, seed: 5 };
    await engine.generate({ promptIds }, { ...opts, responseFormat: LONG });
    for (let round = 0; round < 5; round++) {
      free.push((await engine.generate({ promptIds }, opts)).timing.msPerToken);
      constrained.push((await engine.generate({ promptIds }, { ...opts, responseFormat: LONG })).timing.msPerToken);
    }
    return { freeMs: median(free), constrainedMs: median(constrained) };
  } finally {
    await engine.dispose();
  }
}

// The 24M bench model with the Llama tokenizer it was shaped for; a 24M-shaped model over the large vocabulary.
const small24m = await benchLlama('llama-24m', LLAMA_24M, 1);
for (const f of ['tokenizer.json', 'tokenizer_config.json']) await copyFile(join(models.llamaFp16, f), join(dirname(small24m), f));
const large24m = await benchLlama('llama-24m-v152k', { ...LLAMA_24M, vocabSize: QWEN_VOCAB, tieWordEmbeddings: true }, 1);
const largeJson = largeTokenizerJson(realLargeVocabulary());
await writeFile(join(dirname(large24m), 'tokenizer.json'), JSON.stringify(largeJson));
await writeFile(join(dirname(large24m), 'tokenizer_config.json'), JSON.stringify({ eos_token: '<|endoftext|>' }));

const small = await maskTimes(grammarVocabulary(JSON.parse(await readFile(join(models.llamaFp16, 'tokenizer.json'), 'utf8')), 32_000), 2);
const large = await maskTimes(grammarVocabulary(largeJson, QWEN_VOCAB), QWEN_PIECES);
const smallStep = await decodeSteps(small24m, PROMPT);
const largeStep = await decodeSteps(large24m, [15, 16, 17, 18, 19, 20, 21, 22]);
const row = (m: typeof small, s: typeof smallStep) => ({ ...m, ...s, maskShare: m.maskUs / 1000 / s.freeMs, onPathShare: m.applyUs / 1000 / s.freeMs, overhead: s.constrainedMs / s.freeMs - 1 });
const result = { bench: 'constrained', schema: SCHEMA, vocab32k: row(small, smallStep), vocab152k: row(large, largeStep) };
console.log(JSON.stringify(result));
const pct = (x: number) => `${(x * 100).toFixed(2)}%`;
const names = ['32,000 (Llama, byte fallback)', '151,936 (o200k_base pieces, byte-level)'];
printTable('Grammar stage per token, medians (µs; share of the free decode step of a 24M-shaped model over that vocabulary); caches evicted before each step', ['vocabulary', 'mask µs', 'of which bitmask (overlapped)', 'apply (on path)', 'bitmask p90', 'mask share', 'on-path share', 'accept µs', 'compile ms', 'first use ms'], [
  [names[0]!, small.maskUs, small.bitmaskUs, small.applyUs, small.bitmaskP90Us, pct(result.vocab32k.maskShare), pct(result.vocab32k.onPathShare), small.acceptUs, small.compileMs, small.firstMs],
  [names[1]!, large.maskUs, large.bitmaskUs, large.applyUs, large.bitmaskP90Us, pct(result.vocab152k.maskShare), pct(result.vocab152k.onPathShare), large.acceptUs, large.compileMs, large.firstMs],
]);
printTable('The same steps again on a twin matcher right after, caches warm (XGrammar\'s floor), µs', ['vocabulary', 'mask', 'bitmask', 'apply'], [
  [names[0]!, small.warmMaskUs, small.warmBitmaskUs, small.warmApplyUs],
  [names[1]!, large.warmMaskUs, large.warmBitmaskUs, large.warmApplyUs],
]);
printTable('Decode step of a 24M-shaped model, ms/token, median of 5 interleaved rounds', ['vocabulary', 'free', 'JSON Schema', 'overhead'], [
  ['32,000', smallStep.freeMs, smallStep.constrainedMs, pct(result.vocab32k.overhead)],
  ['151,936', largeStep.freeMs, largeStep.constrainedMs, pct(result.vocab152k.overhead)],
]);
