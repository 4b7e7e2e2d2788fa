/**
 * The log-probability a model (the backbone, or its composition with reasoners) gives each prompt token after the
 * tokens before it (OpenAI's legacy `echo` with `logprobs`, vLLM's `prompt_logprobs`): what evaluation harnesses
 * score a continuation by. Each prompt runs alone in chunks, as an embedding input does, apart from the sessions'
 * and the batch's caches; a composition's models run the same chunks side by side and are fused at every position
 * as a generation step fuses them (`z = T(z_backbone) + Σ w_i · T(z_i)`).
 */
import { accumulateLogits, combineWithBackbone, fusionScale, type FusionMode } from '../compose/fusion.js';
import { LogprobPass } from '../sampling/logprobs.js';
import type { TokenLogprobs } from '../generate/types.js';
import { RowPrefill } from './batch-kv.js';
import type { DecoderSession } from './decoder-session.js';
import { EmbedInputError, promptsOf } from './embed.js';
import type { EmbedInput } from './protocol.js';
import type { TextTokenizer } from '../tokenizer/tokenizer.js';

/** One prompt scored: its ids, and for each token after the first an entry (`logprobs[j]` scores `ids[j + 1]`). */
export interface ScoredPrompt {
  /** The prompt's token ids. */
  ids: number[];
  /** One per id after the first: `logprobs[j]` is `ids[j + 1]`'s, with its alternatives. */
  logprobs: TokenLogprobs[];
}

/** The prompts scored, in order. */
export interface PromptLogprobsResult {
  /** One per input, in order. */
  prompts: ScoredPrompt[];
}

/** The reasoners fused with the backbone, each with a constant weight, and how. */
export interface ScoringComposition {
  reasoners: { session: DecoderSession; weight: number }[];
  mode: FusionMode;
  normalize: boolean;
  /** The vocabulary the models share (the fused row's width). */
  vocab: number;
}

/**
 * Logits held at once while scoring (a chunk of positions × the vocabulary, per model), in floats: 64 MB; but a whole
 * prompt's where a model quantizes each run's activations together (they must be computed in one run).
 */
const LOGITS_HELD = 16 << 20;

export async function promptLogprobs(
  backbone: DecoderSession,
  tokenizer: TextTokenizer | undefined,
  input: EmbedInput,
  top: number,
  limits: { chunk: number; contextLength?: number },
  composition?: ScoringComposition,
): Promise<PromptLogprobsResult> {
  const reasoners = composition?.reasoners.filter((r) => r.weight !== 0) ?? [];
  const models = [backbone, ...reasoners.map((r) => r.session)];
  for (const m of models) {
    if (!m.signature.numLogitsToKeep) throw new EmbedInputError(`prompt log-probabilities need the logits of every position: ${m.label}'s graph gives the last one's only`);
  }
  const prompts = promptsOf(input, tokenizer, 'prompt log-probabilities', backbone.vocabSize, limits.contextLength);
  const vocab = composition?.vocab ?? backbone.vocabSize;
  const stride = backbone.vocabSize;
  const widest = Math.max(...models.map((m) => m.vocabSize));
  // A graph with a run-wide activation scale runs each prompt whole (see RowPrefill): the others keep in step with it.
  const whole = models.some((m) => m.runWideActivationScale);
  const chunk = whole ? Infinity : Math.max(1, Math.min(limits.chunk, Math.floor(LOGITS_HELD / widest / models.length)));
  const fuse = composition && reasoners.length > 0 ? fuser(stride, reasoners, composition, vocab) : undefined;
  const scored: ScoredPrompt[] = [];
  for (const prompt of prompts) {
    const entries: TokenLogprobs[] = new Array<TokenLogprobs>(prompt.length - 1);
    // Each model's logits of the chunk just run, by model; position p's score token p + 1.
    const latest: { from: number; logits: Float32Array }[] = [];
    const runs = models.map((m, i) => new RowPrefill(m, prompt, chunk, undefined, (from, logits) => (latest[i] = { from, logits })));
    for (let done = false; !done; ) {
      const last = await Promise.all(runs.map((r) => r.next()));
      done = last[0] !== undefined;
      const from = latest[0]!.from;
      const rows = latest[0]!.logits.length / stride;
      // (a graph that refused a chunk ran the prompt whole: the models are no longer in step)
      if (latest.some((l, i) => l.from !== from || l.logits.length !== rows * models[i]!.vocabSize) || last.some((l) => (l !== undefined) !== done)) {
        throw new EmbedInputError('prompt log-probabilities: the composition\'s models ran the prompt in different chunks (a graph that takes a prompt whole); score with the backbone alone');
      }
      for (let row = 0; row < rows; row++) {
        const next = from + row + 1;
        if (next >= prompt.length) break;
        const z = fuse ? fuse(latest, row) : latest[0]!.logits.subarray(row * stride, row * stride + vocab);
        const pass = new LogprobPass(z, top);
        const id = prompt[next]!;
        entries[next - 1] = { id, logprob: pass.logprobOf(id), top: pass.top };
      }
    }
    scored.push({ ids: prompt, logprobs: entries });
  }
  return { prompts: scored };
}

/** Fuses row `row` of each model's latest logits into one row, as a generation step's composition does. */
function fuser(backboneStride: number, reasoners: ScoringComposition['reasoners'], c: ScoringComposition, vocab: number) {
  const sum = new Float32Array(vocab);
  const out = new Float32Array(vocab);
  const scale = fusionScale([1, ...reasoners.map((r) => r.weight)], c.normalize);
  return (latest: readonly { logits: Float32Array }[], row: number): Float32Array => {
    reasoners.forEach((r, i) => {
      const stride = r.session.vocabSize;
      accumulateLogits(sum, { logits: latest[i + 1]!.logits.subarray(row * stride, (row + 1) * stride), stride, weight: r.weight }, 1, vocab, c.mode, i === 0);
    });
    return combineWithBackbone(out, { logits: latest[0]!.logits.subarray(row * backboneStride, (row + 1) * backboneStride), stride: backboneStride }, [sum], 1, vocab, c.mode, scale);
  };
}
