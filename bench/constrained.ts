/**
 * bench:constrained — what the grammar stage costs per token, on the 24M model's 32,000-token Llama vocabulary
 * and on a 151,936-token byte-level vocabulary (Qwen2's size: GPT-2's 50,257 pieces, pairs of them up to 151,643,
 * and 293 added tokens):
 * - mask only: the XGrammar bitmask of the next step plus applying it to the logits, along random paths through
 *   a JSON Schema (random logits, masked, argmax, accepted); split into the bitmask (computed while the model
 *   runs, off the critical path) and the application (on it);
 * - the decode step of a 24M model over each vocabulary, free and under a JSON Schema (rounds interleaved);
 * - schema compile time, and the first use (library load and vocabulary).
 * Prints a JSON line and tables.
 */
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Engine } from '../packages/core/src/engine.js';
import { XGrammarFactory, grammarVocabulary, type GrammarVocabulary, type ResponseFormat } from '../packages/core/src/constrain/index.js';
import { createRng } from '../packages/core/src/sampling/index.js';
import { models } from '../test/support/paths.js';
import { benchLlama, LLAMA_24M, PROMPT } from './support/models.js';
import { median, printTable } from './support/stats.js';

const SCHEMA = {
  type: 'object',
  properties: {
    city: { type: 'string', maxLength: 40 },
    days: { type: 'integer', minimum: 1, maximum: 14 },
    units: { enum: ['metric', 'imperial'] },
    hourly: { type: 'array', items: { type: 'number', minimum: -50, maximum: 60 }, maxItems: 24 },
  },
  required: ['city', 'days'],
};
const FORMAT: ResponseFormat = { type: 'json_schema', schema: SCHEMA };
/** For the decode step: a reply that cannot end within the run, so both runs time the same number of steps. */
const LONG: ResponseFormat = { type: 'json_schema', schema: { type: 'object', properties: { story: { type: 'string', minLength: 1000 } }, required: ['story'] } };
const TOKENS = 2000;
const QWEN_VOCAB = 151_936;

/** A byte-level vocabulary of Qwen2's size built from GPT-2's pieces. */
async function qwenSizedVocabulary(): Promise<string[]> {
  const gpt2 = JSON.parse(await readFile(join(models.gpt2Legacy, 'tokenizer.json'), 'utf8')) as { model: { vocab: Record<string, number> } };
  const pieces = Object.entries(gpt2.model.vocab).sort((a, b) => a[1] - b[1]).map(([t]) => t);
  const tokens = [...pieces];
  const seen = new Set(tokens);
  const rng = createRng(7);
  while (tokens.length < 151_643) {
    const t = pieces[Math.floor(rng() * 20_000)]! + pieces[Math.floor(rng() * pieces.length)]!;
    if (!seen.has(t)) tokens.push(t), seen.add(t);
  }
  return tokens;
}

/** tokenizer.json for those pieces (byte-level BPE; ids past the pieces are added tokens, the first one EOS). */
function qwenSizedTokenizerJson(pieces: string[]): object {
  const added = Array.from({ length: QWEN_VOCAB - pieces.length }, (_, i) => ({
    id: pieces.length + i, content: `<|extra_${i}|>`, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
  }));
  return {
    version: '1.0', truncation: null, padding: null, added_tokens: added, normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: null, decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: true, vocab: Object.fromEntries(pieces.map((p, i) => [p, i])), merges: [] },
  };
}

/** Mask time per token along random paths through the grammar: bitmask (prepared) and its application. */
async function maskTimes(vocab: GrammarVocabulary, eos: number) {
  const t0 = performance.now();
  const factory = new XGrammarFactory(vocab, `bench-${vocab.tokens.length}`);
  await factory.create({ type: 'json_object' }, [eos]);
  const firstMs = performance.now() - t0;
  const compiles: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t = performance.now();
    await factory.compile({ type: 'json_schema', schema: { ...SCHEMA, title: `round ${i}` } });
    compiles.push(performance.now() - t);
  }
  const rng = createRng(3);
  const n = vocab.tokens.length;
  const logits = new Float32Array(n);
  const bitmask: number[] = [];
  const apply: number[] = [];
  let constraint = await factory.create(FORMAT, [eos]);
  for (let k = 0; k < TOKENS; k++) {
    for (let i = 0; i < n; i++) logits[i] = rng();
    let t = performance.now();
    constraint.prepare!();
    await new Promise((r) => setImmediate(r)); // the model's step: the prepared bitmask is computed meanwhile
    bitmask.push((performance.now() - t) * 1000);
    t = performance.now();
    await constraint.mask(logits);
    apply.push((performance.now() - t) * 1000);
    let best = 0;
    for (let i = 1; i < n; i++) if (logits[i]! > logits[best]!) best = i;
    constraint.accept(best);
    if (constraint.isComplete()) {
      constraint.dispose();
      constraint = await factory.create(FORMAT, [eos]);
    }
  }
  constraint.dispose();
  const bitmaskUs = median(bitmask);
  const applyUs = median(apply);
  return { maskUs: bitmaskUs + applyUs, bitmaskUs, applyUs, compileMs: median(compiles), firstMs };
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
const pieces = await qwenSizedVocabulary();
const large24m = await benchLlama('llama-24m-v152k', { ...LLAMA_24M, vocabSize: QWEN_VOCAB, tieWordEmbeddings: true }, 1);
const largeTokenizer = join(dirname(large24m), 'tokenizer.json');
if (!existsSync(largeTokenizer)) {
  await writeFile(largeTokenizer, JSON.stringify(qwenSizedTokenizerJson(pieces)));
  await writeFile(join(dirname(large24m), 'tokenizer_config.json'), JSON.stringify({ eos_token: '<|extra_0|>' }));
}

const small = await maskTimes(grammarVocabulary(JSON.parse(await readFile(join(models.llamaFp16, 'tokenizer.json'), 'utf8')), 32_000), 2);
const large = await maskTimes({ tokens: [...pieces, ...new Array<string>(QWEN_VOCAB - pieces.length).fill('')], kind: 'byte_level', prependSpace: false }, pieces.length);
const smallStep = await decodeSteps(small24m, PROMPT);
const largeStep = await decodeSteps(large24m, [15, 16, 17, 18, 19, 20, 21, 22]);
const row = (m: typeof small, s: typeof smallStep) => ({ ...m, ...s, maskShare: m.maskUs / 1000 / s.freeMs, onPathShare: m.applyUs / 1000 / s.freeMs, overhead: s.constrainedMs / s.freeMs - 1 });
const result = { bench: 'constrained', schema: SCHEMA, vocab32k: row(small, smallStep), vocab152k: row(large, largeStep) };
console.log(JSON.stringify(result));
const pct = (x: number) => `${(x * 100).toFixed(2)}%`;
printTable('Grammar stage per token, medians (µs; share of the free decode step of a 24M-shaped model over that vocabulary)', ['vocabulary', 'mask µs', 'of which bitmask (overlapped)', 'apply (on path)', 'mask share', 'on-path share', 'compile ms', 'first use ms'], [
  ['32,000 (Llama, byte fallback)', small.maskUs, small.bitmaskUs, small.applyUs, pct(result.vocab32k.maskShare), pct(result.vocab32k.onPathShare), small.compileMs, small.firstMs],
  ['151,936 (byte-level)', large.maskUs, large.bitmaskUs, large.applyUs, pct(result.vocab152k.maskShare), pct(result.vocab152k.onPathShare), large.compileMs, large.firstMs],
]);
printTable('Decode step of a 24M-shaped model, ms/token, median of 5 interleaved rounds', ['vocabulary', 'free', 'JSON Schema', 'overhead'], [
  ['32,000', smallStep.freeMs, smallStep.constrainedMs, pct(result.vocab32k.overhead)],
  ['151,936', largeStep.freeMs, largeStep.constrainedMs, pct(result.vocab152k.overhead)],
]);
