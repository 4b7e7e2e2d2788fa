/**
 * Speculative decoding by prompt lookup, against decoding without it and against llama.cpp with and without its
 * own prompt lookup (node-llama-cpp's InputLookupTokenPredictor, which looks in the prompt only), on the same GGUF
 * files, greedy, 2 threads (llama.cpp also at 1, its better setting on this 2-vCPU machine):
 *   - `stories260K`: the real trained model (../shared/models), story openings as prompts, replies to EOS or the
 *     token limit: the ground truth of what drafts from a reply's own context are worth;
 *   - `llama125m`: the serving benchmark's random ~125M Q4_0 Llama, random prompt ids, `ignore_eos`: its greedy
 *     replies fall into loops, which drafts follow (an upper bound on acceptance, not a workload);
 *   - `toy-math`: the example math reasoner composed with its backbone (builder graphs: a rejected draft is a copy of
 *     the row's cache), on held-out problems whose replies rarely repeat: what drafts cost where they fail.
 * Figures per generation: decode ms per token after the first, model steps per token, the share of drafted
 * tokens kept, and how many leading tokens equal the same contender's without drafts (all of them, but where a
 * run of several positions rounds a near tie the other way). `reasonplug + prediction` passes each call a
 * prediction of its reply (OpenAI's Predicted Outputs): the reply without drafts with one word in its middle replaced,
 * as an edit of a text would be. Contenders rotate within each round; medians over
 * rounds and prompts, but the share kept, which is pooled (all the runs' kept tokens over all their drafted ones).
 *
 *   npm run bench:prompt-lookup [-- --rounds 3 --tokens 128 --models stories260k,llama125m,toy-math]
 */
import { parseArgs } from 'node:util';
import { join } from 'node:path';
import { Engine, type EngineOptions } from '../packages/core/src/engine.js';
import { createRng } from '../packages/core/src/sampling/index.js';
import { models as sharedModels, repoRoot } from '../test/support/paths.js';
import { servingGguf } from './support/models.js';
import { printTable } from './support/stats.js';
import { interleavedRuns, llamaCppRun, medianMs, speculativeFigures, type Generate } from './support/speculative.js';

const THREADS = 2;
const DRAFT = 4;
const STORIES = ['Once upon a time, there was a little girl named Lily.', 'Tom had a big red ball. He liked to play with the ball in the park.', 'One day, a cat and a dog went to the park.'];
type Contender = 'reasonplug' | 'reasonplug + lookup' | 'reasonplug + prediction' | 'llama.cpp' | 'llama.cpp + lookup' | 'llama.cpp 1t' | 'llama.cpp 1t + lookup';
const CONTENDERS: Contender[] = ['reasonplug', 'reasonplug + lookup', 'reasonplug + prediction', 'llama.cpp', 'llama.cpp + lookup', 'llama.cpp 1t', 'llama.cpp 1t + lookup'];
/** Each contender with lookup, and the one it is compared with (the same without lookup). */
const WITHOUT: Partial<Record<Contender, Contender>> = {
  'reasonplug + lookup': 'reasonplug',
  'reasonplug + prediction': 'reasonplug',
  'llama.cpp + lookup': 'llama.cpp',
  'llama.cpp 1t + lookup': 'llama.cpp 1t',
};

/**
 * The engine, with prompt lookup or without; with `predictions` (text by prompt), each call passes its prompt's
 * as OpenAI's Predicted Outputs (drafts from the prediction only).
 */
async function engineContender(load: EngineOptions, lookup: boolean, ignoreEos: boolean, predictions?: Map<number[], string>): Promise<{ generate: Generate; dispose: () => Promise<void> }> {
  const engine = await Engine.load({ ...load, intraOpThreads: THREADS, ...(lookup ? { promptLookup: { draftTokens: DRAFT } } : {}) });
  const generate: Generate = async (promptIds, tokens) => {
    const before = (await engine.stats()).drafts;
    const prediction = predictions?.get(promptIds);
    const r = await engine.generate({ promptIds }, { maxTokens: tokens, ignoreEos, ...(prediction !== undefined ? { prediction } : {}) });
    const after = (await engine.stats()).drafts;
    const { acceptedPredictionTokens: kept = 0, rejectedPredictionTokens: rejected = 0 } = r.usage;
    return {
      ids: r.rows[0]!.ids,
      msPerToken: r.timing.msPerToken,
      steps: r.timing.decodeSteps,
      drafted: prediction !== undefined ? kept + rejected : (after?.draftedTokens ?? 0) - (before?.draftedTokens ?? 0),
      accepted: prediction !== undefined ? kept : (after?.acceptedTokens ?? 0) - (before?.acceptedTokens ?? 0),
    };
  };
  return { generate, dispose: () => engine.dispose() };
}

/** The reply without drafts, one word in its middle replaced: a prediction as an edit of a text gives one. */
async function editedReplies(load: EngineOptions, prompts: number[][], tokens: number, ignoreEos: boolean): Promise<Map<number[], string>> {
  const engine = await Engine.load({ ...load, intraOpThreads: THREADS });
  const out = new Map<number[], string>();
  for (const promptIds of prompts) {
    const text = (await engine.generate({ promptIds }, { maxTokens: tokens, ignoreEos })).rows[0]!.text;
    const words = text.split(' ');
    words[Math.floor(words.length / 2)] = 'banana';
    out.set(promptIds, words.join(' '));
  }
  await engine.dispose();
  return out;
}

async function llamaCppContender(gguf: string, lookup: boolean, ignoreEos: boolean, contextSize: number, threads: number): Promise<{ generate: Generate; dispose: () => Promise<void> }> {
  const { getLlama, LlamaLogLevel, InputLookupTokenPredictor } = await import('node-llama-cpp');
  const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
  const model = await llama.loadModel({ modelPath: gguf });
  const ctx = await model.createContext({ contextSize, threads });
  const eos = model.tokens.eos;
  const generate: Generate = async (promptIds, tokens) => {
    // A fresh predictor each time: it starts from this prompt, and its counts are this call's.
    let tokenPredictor: InstanceType<typeof InputLookupTokenPredictor> | undefined;
    if (lookup) {
      // (a raw sequence's predictor is told the prompt; llama.cpp's completion classes do this themselves)
      tokenPredictor = new InputLookupTokenPredictor({ patternLength: { min: 2, max: 3 }, predictionLength: { max: DRAFT } });
      tokenPredictor.updateInputTokens(promptIds as never[]);
    }
    return llamaCppRun(ctx, promptIds, tokens, ignoreEos ? undefined : eos, tokenPredictor);
  };
  return { generate, dispose: async () => (await ctx.dispose(), await model.dispose()) };
}

/** The benchmark's models: two GGUF files, and a composition of the example modules (builder graphs, joined caches). */
const MODELS = ['stories260k', 'llama125m', 'toy-math'] as const;
type ModelName = (typeof MODELS)[number];
/** Held-out problems of the example math reasoner: replies that rarely repeat, where drafts mostly fail. */
const PROBLEMS = ['Q:50-4-8-3-9', 'Q:21-9+6+9', 'Q:7+8-3+12'];

async function benchModel(name: ModelName, rounds: number, tokens: number): Promise<Record<string, unknown>[]> {
  const modules = join(repoRoot, 'examples', 'modules');
  const gguf = name === 'stories260k' ? sharedModels.stories260K : name === 'llama125m' ? await servingGguf() : undefined;
  const load: EngineOptions = gguf
    ? { model: gguf }
    : { model: join(modules, 'toy-backbone-s'), reasoners: [{ model: join(modules, 'toy-math-reasoner') }], placement: 'inline' };
  const ignoreEos = name === 'llama125m';
  let prompts: number[][];
  if (name === 'llama125m') {
    const rng = createRng(7);
    prompts = STORIES.map(() => [1, ...Array.from({ length: 24 }, () => 100 + Math.floor(rng() * 31000))]);
  } else {
    const tokenizer = await Engine.load({ model: load.model });
    prompts = await Promise.all((name === 'toy-math' ? PROBLEMS : STORIES).map((s) => tokenizer.tokenize(s)));
    await tokenizer.dispose();
  }
  // (the random model's vocabulary is no text tokenizer: its replies' text does not encode back to their ids; the
  // example modules are no GGUF files for llama.cpp)
  const active = CONTENDERS.filter((c) => (name === 'stories260k' || c !== 'reasonplug + prediction') && (gguf !== undefined || c.startsWith('reasonplug')));
  const contenders: Partial<Record<Contender, { generate: Generate; dispose: () => Promise<void> }>> = {
    reasonplug: await engineContender(load, false, ignoreEos),
    'reasonplug + lookup': await engineContender(load, true, ignoreEos),
    ...(active.includes('reasonplug + prediction') ? { 'reasonplug + prediction': await engineContender(load, false, ignoreEos, await editedReplies(load, prompts, tokens, ignoreEos)) } : {}),
    ...(gguf
      ? {
          'llama.cpp': await llamaCppContender(gguf, false, ignoreEos, 1024, THREADS),
          'llama.cpp + lookup': await llamaCppContender(gguf, true, ignoreEos, 1024, THREADS),
          'llama.cpp 1t': await llamaCppContender(gguf, false, ignoreEos, 1024, 1),
          'llama.cpp 1t + lookup': await llamaCppContender(gguf, true, ignoreEos, 1024, 1),
        }
      : {}),
  };
  const results = await interleavedRuns(contenders, active, WITHOUT, prompts, rounds, tokens);
  for (const c of Object.values(contenders)) await c!.dispose();
  const base = medianMs(results.reasonplug.runs);
  return active.map((c) => ({ model: name, contender: c, ...speculativeFigures(results[c], base) }));
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      rounds: { type: 'string', default: '3' },
      tokens: { type: 'string', default: '128' },
      models: { type: 'string', default: MODELS.join(',') },
    },
  });
  const rows: Record<string, unknown>[] = [];
  for (const name of values.models.split(',')) {
    if (!MODELS.includes(name as ModelName)) throw new Error(`unknown model ${name}; one of ${MODELS.join(', ')}`);
    rows.push(...(await benchModel(name as ModelName, Number(values.rounds), Number(values.tokens))));
  }
  console.log(JSON.stringify({ bench: 'prompt-lookup', threads: THREADS, draftTokens: DRAFT, rows }));
  printTable(
    `Prompt lookup, ${THREADS} threads, greedy, up to ${values.tokens} tokens (medians over ${values.rounds} rounds × ${STORIES.length} prompts; kept of drafted pooled over them)`,
    ['model', 'contender', 'tokens', 'ms/token', 'vs reasonplug', 'steps/token', 'kept of drafted (pooled)', 'same as without'],
    rows.map((r) => [r.model, r.contender, r.tokens, r.msPerToken, `${r.vsReasonplug}x`, r.stepsPerToken, r.keptOfDrafted ?? '-', r.sameAsWithout ?? '-'] as (string | number)[]),
  );
}

await main();
