/**
 * The log-probability the backbone gives each prompt token after the tokens before it (OpenAI's legacy `echo` with
 * `logprobs`, vLLM's `prompt_logprobs`): what evaluation harnesses score a continuation by. Each prompt is run alone
 * in chunks, as an embedding input is, apart from the session's and the batch's caches.
 */
import { LogprobPass } from '../sampling/logprobs.js';
import type { TokenLogprobs } from '../generate/types.js';
import { RowPrefill } from './batch-kv.js';
import type { DecoderSession } from './decoder-session.js';
import { EmbedInputError, promptsOf } from './embed.js';
import type { EmbedInput } from './protocol.js';
import type { TextTokenizer } from '../tokenizer/tokenizer.js';

/** One prompt scored: its ids, and for each token after the first an entry (`logprobs[j]` scores `ids[j + 1]`). */
export interface ScoredPrompt {
  ids: number[];
  logprobs: TokenLogprobs[];
}

/** The prompts scored, in order. */
export interface PromptLogprobsResult {
  prompts: ScoredPrompt[];
}

/** Logits held at once while scoring (a chunk of positions × the vocabulary), in floats: 64 MB. */
const LOGITS_HELD = 16 << 20;

export async function promptLogprobs(
  backbone: DecoderSession,
  tokenizer: TextTokenizer | undefined,
  input: EmbedInput,
  top: number,
  limits: { chunk: number; contextLength?: number },
): Promise<PromptLogprobsResult> {
  if (!backbone.signature.numLogitsToKeep) throw new EmbedInputError("prompt log-probabilities need the logits of every position: this backbone's graph gives the last one's only");
  const prompts = promptsOf(input, tokenizer, 'prompt log-probabilities', backbone.vocabSize, limits.contextLength);
  const vocab = backbone.vocabSize;
  const chunk = Math.max(1, Math.min(limits.chunk, Math.floor(LOGITS_HELD / vocab)));
  const scored: ScoredPrompt[] = [];
  for (const prompt of prompts) {
    const entries: TokenLogprobs[] = new Array<TokenLogprobs>(prompt.length - 1);
    // Position p's logits score token p + 1 (a chunk refused and run again whole writes the same entries again).
    const score = (from: number, logits: Float32Array) => {
      for (let row = 0; row * vocab < logits.length; row++) {
        const next = from + row + 1;
        if (next >= prompt.length) break;
        const pass = new LogprobPass(logits.subarray(row * vocab, (row + 1) * vocab), top);
        const id = prompt[next]!;
        entries[next - 1] = { id, logprob: pass.logprobOf(id), top: pass.top };
      }
    };
    const run = new RowPrefill(backbone, prompt, chunk, undefined, score);
    while ((await run.next()) === undefined);
    scored.push({ ids: prompt, logprobs: entries });
  }
  return { prompts: scored };
}
