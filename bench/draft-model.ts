/**
 * Speculative decoding with a draft model, against decoding without it and against llama.cpp with and without its
 * own (node-llama-cpp's DraftSequenceTokenPredictor), on the same pair of GGUF files, greedy:
 *   - the draft: stories260K, the real trained model (../shared/models);
 *   - the target: a wide copy of it (bench/support/wide-stories.ts): its feed-forward layers grown to 65536 neurons,
 *     the new ones nudging its output by `--nudge`, stored as `--type` (F16 by default, 127 MB; Q8_0 67 MB). It writes
 *     nearly what stories260K writes, so the draft is right most of the time and wrong where the nudge tipped the
 *     target another way, and its step costs what a model of its bytes costs: a pair shaped as a family's large and
 *     small model are, with an acceptance set by the nudge.
 * Both engines draft up to `--draft-max` tokens and stop at a token the draft model gives less than `--p-min`.
 * Figures per generation: decode ms per token after the first, target steps per token, the share of drafted tokens
 * kept, and how many leading tokens equal the same contender's without drafts (all of them on exact arithmetic;
 * quantized graphs round a run of several positions differently from one, and a near tie can go the other way).
 * Contenders rotate within each round; medians over rounds and prompts, but the share kept, which is pooled (all
 * the runs' kept tokens over all their drafted ones).
 *
 *   npm run bench:draft-model [-- --rounds 3 --tokens 128 --type F16|Q8_0|Q4_0 --draft-max 4 --p-min 0.5 --nudge 0.4]
 */
import { parseArgs } from 'node:util';
import { join } from 'node:path';
import { Engine } from '../packages/core/src/engine.js';
import { BLOCK_TYPES } from '../packages/core/src/gguf/quant/index.js';
import { GGML } from '../packages/core/test/support/ggml-quantize.js';
import { models, repoRoot } from '../test/support/paths.js';
import { cached, writtenStamp } from './support/models.js';
import { writeWideStories } from './support/wide-stories.js';
import { printTable } from './support/stats.js';
import { interleavedRuns, llamaCppRun, medianMs, speculativeFigures, type Generate } from './support/speculative.js';

const STORIES = ['Once upon a time, there was a little girl named Lily.', 'Tom had a big red ball. He liked to play with the ball in the park.', 'One day, a cat and a dog went to the park.'];
/** Neurons of each feed-forward layer of the wide target (stories260K has 172). */
const WIDTH = 65536;
/** The width of the copy whose bytes stamp the target: past stories260K's 172 and, as {@link WIDTH}, whole blocks of each type. */
const MINI_WIDTH = 256;
// (llama.cpp at one thread: at two it runs this machine's small models several times slower, see the README)
type Contender = 'reasonplug' | 'reasonplug + draft' | 'llama.cpp 1t' | 'llama.cpp 1t + draft';
const CONTENDERS: Contender[] = ['reasonplug', 'reasonplug + draft', 'llama.cpp 1t', 'llama.cpp 1t + draft'];
const WITHOUT: Partial<Record<Contender, Contender>> = { 'reasonplug + draft': 'reasonplug', 'llama.cpp 1t + draft': 'llama.cpp 1t' };
interface Settings {
  draftMax: number;
  pMin: number;
}

/**
 * The wide target as `type`, in `.cache/bench/draft/`, written again when what the writer makes of a copy
 * {@link MINI_WIDTH} wide changes (its code, or stories260K).
 */
async function target(type: string, nudge: number): Promise<string> {
  const ggml = (GGML as Record<string, number>)[type];
  if (ggml === undefined || !['Q8_0', 'Q4_0', 'F16'].includes(type)) throw new Error(`--type must be Q8_0, Q4_0 or F16; got ${type}`);
  const path = join(repoRoot, '.cache', 'bench', 'draft', `stories-wide-${WIDTH}-${nudge}-${type}.gguf`);
  const write = (to: string, width: number) => writeWideStories(models.stories260K, to, width - 172, nudge, ggml, BLOCK_TYPES.get(ggml)?.blockElems ?? 1);
  const recipe = JSON.stringify({ width: WIDTH, nudge, type, writer: await writtenStamp((to) => write(to, MINI_WIDTH)) });
  return cached(path, recipe, () => write(path, WIDTH));
}

async function engineContender(model: string, draft: Settings | undefined): Promise<{ generate: Generate; dispose: () => Promise<void> }> {
  const engine = await Engine.load({
    model,
    intraOpThreads: 2,
    ...(draft ? { draftModel: { model: models.stories260K, draftTokens: draft.draftMax, minProbability: draft.pMin } } : {}),
  });
  const generate: Generate = async (promptIds, tokens) => {
    const before = (await engine.stats()).drafts;
    const r = await engine.generate({ promptIds }, { maxTokens: tokens });
    const after = (await engine.stats()).drafts;
    return {
      ids: r.rows[0]!.ids,
      msPerToken: r.timing.msPerToken,
      steps: r.timing.decodeSteps,
      drafted: (after?.draftedTokens ?? 0) - (before?.draftedTokens ?? 0),
      accepted: (after?.acceptedTokens ?? 0) - (before?.acceptedTokens ?? 0),
    };
  };
  return { generate, dispose: () => engine.dispose() };
}

async function llamaCppContender(model: string, draft: Settings | undefined, threads: number): Promise<{ generate: Generate; dispose: () => Promise<void> }> {
  const { getLlama, LlamaLogLevel, DraftSequenceTokenPredictor } = await import('node-llama-cpp');
  const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
  const loaded = await llama.loadModel({ modelPath: model });
  const ctx = await loaded.createContext({ contextSize: 512, threads });
  const draftModel = draft ? await llama.loadModel({ modelPath: models.stories260K }) : undefined;
  const draftCtx = draftModel ? await draftModel.createContext({ contextSize: 512, threads }) : undefined;
  const generate: Generate = async (promptIds, tokens) => {
    // A fresh draft sequence and predictor each time: its counts are this call's.
    const draftSeq = draftCtx?.getSequence();
    const predictor = draftSeq && draft ? new DraftSequenceTokenPredictor(draftSeq, { maxTokens: draft.draftMax, minConfidence: draft.pMin }) : undefined;
    try {
      return await llamaCppRun(ctx, promptIds, tokens, loaded.tokens.eos, predictor);
    } finally {
      if (draftSeq && !draftSeq.disposed) draftSeq.dispose();
    }
  };
  const dispose = async () => {
    await ctx.dispose();
    await loaded.dispose();
    await draftCtx?.dispose();
    await draftModel?.dispose();
  };
  return { generate, dispose };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      rounds: { type: 'string', default: '3' },
      tokens: { type: 'string', default: '128' },
      type: { type: 'string', default: 'F16' },
      'draft-max': { type: 'string', default: '4' },
      'p-min': { type: 'string', default: '0.5' },
      nudge: { type: 'string', default: '0.4' },
    },
  });
  const rounds = Number(values.rounds);
  const tokens = Number(values.tokens);
  const settings: Settings = { draftMax: Number(values['draft-max']), pMin: Number(values['p-min']) };
  const model = await target(values.type, Number(values.nudge));
  const tokenizer = await Engine.load({ model: models.stories260K });
  const prompts = await Promise.all(STORIES.map((s) => tokenizer.tokenize(s)));
  await tokenizer.dispose();
  const contenders: Record<Contender, { generate: Generate; dispose: () => Promise<void> }> = {
    reasonplug: await engineContender(model, undefined),
    'reasonplug + draft': await engineContender(model, settings),
    'llama.cpp 1t': await llamaCppContender(model, undefined, 1),
    'llama.cpp 1t + draft': await llamaCppContender(model, settings, 1),
  };
  const results = await interleavedRuns(contenders, CONTENDERS, WITHOUT, prompts, rounds, tokens);
  for (const c of Object.values(contenders)) await c.dispose();
  const base = medianMs(results.reasonplug.runs);
  const rows = CONTENDERS.map((c) => {
    const without = WITHOUT[c];
    return { contender: c, ...speculativeFigures(results[c], base, without ? medianMs(results[without].runs) : undefined) };
  });
  console.log(JSON.stringify({ bench: 'draft-model', type: values.type, draftMax: settings.draftMax, pMin: settings.pMin, rows }));
  printTable(
    `Draft model (stories260K) for a wide ${values.type} copy of it, greedy, up to ${tokens} tokens, draft ≤ ${settings.draftMax} at p ≥ ${settings.pMin} (medians over ${rounds} rounds × ${STORIES.length} prompts; kept of drafted pooled over them)`,
    ['contender', 'tokens', 'ms/token', 'vs reasonplug', 'vs without', 'steps/token', 'kept of drafted (pooled)', 'same as without'],
    rows.map((r) => [r.contender, r.tokens, r.msPerToken, `${r.vsReasonplug}x`, r.vsWithout !== undefined ? `${r.vsWithout}x` : '-', r.stepsPerToken, r.keptOfDrafted ?? '-', r.sameAsWithout ?? '-'] as (string | number)[]),
  );
}

await main();
