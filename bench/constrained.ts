/**
 * bench:constrained — what the grammar stage costs: per-token mask time (XGrammar bitmask + applying it to the
 * logits) on the 24M model's 32,000-token Llama vocabulary and on a 151,936-token byte-level vocabulary (Qwen2's
 * size: GPT-2's 50,257 pieces, pairs of them to 151,643, and 293 added tokens), schema compile time, and the
 * decode step of the 24M model with and without a JSON Schema. Prints a JSON line and tables.
 */
import { copyFile, readFile } from 'node:fs/promises';
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

/** A byte-level vocabulary of Qwen2's size built from GPT-2's pieces. */
async function qwenSizedVocabulary(): Promise<GrammarVocabulary> {
  const gpt2 = JSON.parse(await readFile(join(models.gpt2Legacy, 'tokenizer.json'), 'utf8')) as { model: { vocab: Record<string, number> } };
  const pieces = Object.entries(gpt2.model.vocab).sort((a, b) => a[1] - b[1]).map(([t]) => t);
  const tokens = [...pieces];
  const seen = new Set(tokens);
  const rng = createRng(7);
  while (tokens.length < 151_643) {
    const t = pieces[Math.floor(rng() * 20_000)]! + pieces[Math.floor(rng() * pieces.length)]!;
    if (!seen.has(t)) tokens.push(t), seen.add(t);
  }
  while (tokens.length < 151_936) tokens.push('');
  return { tokens, kind: 'byte_level', prependSpace: false };
}

/** Mask time per token along random paths through the grammar (random logits, masked, argmax, accepted). */
async function maskTimes(vocab: GrammarVocabulary, eos: number): Promise<{ maskUs: number; compileMs: number; firstMs: number }> {
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
  const times: number[] = [];
  let constraint = await factory.create(FORMAT, [eos]);
  for (let k = 0; k < TOKENS; k++) {
    for (let i = 0; i < n; i++) logits[i] = rng();
    const t = performance.now();
    await constraint.mask(logits);
    times.push((performance.now() - t) * 1000);
    let best = 0;
    for (let i = 1; i < n; i++) if (logits[i]! > logits[best]!) best = i;
    constraint.accept(best);
    if (constraint.isComplete()) {
      constraint.dispose();
      constraint = await factory.create(FORMAT, [eos]);
    }
  }
  constraint.dispose();
  return { maskUs: median(times), compileMs: median(compiles), firstMs };
}

/** The 24M model's ms per decode step, free and under the schema (rounds interleaved). */
async function decodeSteps(): Promise<{ freeMs: number; constrainedMs: number }> {
  const model = await benchLlama('llama-24m', LLAMA_24M, 1);
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) await copyFile(join(models.llamaFp16, f), join(dirname(model), f));
  const engine = await Engine.load({ model });
  try {
    const free: number[] = [];
    const constrained: number[] = [];
    const opts = { maxTokens: 64, ignoreEos: true, temperature: 0.8, seed: 5 };
    await engine.generate({ promptIds: PROMPT }, { ...opts, responseFormat: LONG });
    for (let round = 0; round < 5; round++) {
      free.push((await engine.generate({ promptIds: PROMPT }, opts)).timing.msPerToken);
      const r = await engine.generate({ promptIds: PROMPT }, { ...opts, responseFormat: LONG });
      constrained.push(r.timing.msPerToken);
    }
    return { freeMs: median(free), constrainedMs: median(constrained) };
  } finally {
    await engine.dispose();
  }
}

const llama = grammarVocabulary(JSON.parse(await readFile(join(models.llamaFp16, 'tokenizer.json'), 'utf8')), 32_000);
const small = await maskTimes(llama, 2);
const large = await maskTimes(await qwenSizedVocabulary(), 151_643);
const step = await decodeSteps();
const share = (us: number) => us / 1000 / step.freeMs;
const result = {
  bench: 'constrained',
  schema: SCHEMA,
  vocab32k: { ...small, shareOfStep: share(small.maskUs) },
  vocab152k: { ...large, shareOfStep: share(large.maskUs) },
  decode24m: { ...step, overhead: step.constrainedMs / step.freeMs - 1 },
};
console.log(JSON.stringify(result));
printTable('Grammar stage per token (mask only: bitmask + applying it), median', ['vocabulary', 'mask µs', 'share of a 24M step', 'schema compile ms', 'first use ms'], [
  ['32,000 (Llama, byte fallback)', small.maskUs, `${(share(small.maskUs) * 100).toFixed(2)}%`, small.compileMs, small.firstMs],
  ['151,936 (byte-level)', large.maskUs, `${(share(large.maskUs) * 100).toFixed(2)}%`, large.compileMs, large.firstMs],
]);
printTable('24M model decode step, median of 5 interleaved rounds', ['run', 'ms/token'], [
  ['free', step.freeMs],
  ['JSON Schema (a long string field)', step.constrainedMs],
  ['overhead', `${((step.constrainedMs / step.freeMs - 1) * 100).toFixed(1)}%`],
]);
