/**
 * Embeddings from the backbone: the final (post-norm) hidden state at an input's last token, what llama.cpp gives
 * for a causal model without a pooling type and what last-token pooling (Qwen3-Embedding, e5-mistral) takes.
 */
import { TokenizerError, type TextTokenizer } from '../tokenizer/tokenizer.js';
import { RowPrefill } from './batch-kv.js';
import type { DecoderSession } from './decoder-session.js';
import type { EmbedInput, EmbedResult } from './protocol.js';
import { POOLING_FILE, type Pooling } from '../modules/pooling.js';

/** Raised when embeddings are asked of an engine whose backbone does not give its hidden state. */
export class EmbeddingsUnavailableError extends Error {
  override name = 'EmbeddingsUnavailableError';
}

/** The refusal for a model that pools its embeddings otherwise than by its last token. */
export function poolingRefused(model: string, pooling: Pooling): EmbeddingsUnavailableError {
  return new EmbeddingsUnavailableError(
    `${model} pools its embeddings by ${pooling} (its ${POOLING_FILE}, or the GGUF's pooling_type); the engine gives last-token embeddings only`,
  );
}

/** Raised for inputs that cannot be embedded or scored (none, empty, too long, ids outside the vocabulary). */
export class EmbedInputError extends RangeError {
  override name = 'EmbedInputError';
}

/**
 * One vector per input, in order. Each input is prefilled alone, `chunk` tokens per run and apart from the
 * session's and the batch's caches (as a prompt joining the batch is), so running rows wait one chunk at a time.
 */
export async function embed(
  backbone: DecoderSession,
  tokenizer: TextTokenizer | undefined,
  input: EmbedInput,
  limits: { chunk: number; contextLength?: number },
): Promise<EmbedResult> {
  if (!backbone.signature.hiddenState) throw new EmbeddingsUnavailableError('the backbone\'s graph gives no final hidden state');
  const prompts = promptsOf(input, tokenizer, 'embed', backbone.vocabSize, limits.contextLength);
  const vectors: Float32Array[] = [];
  for (const prompt of prompts) {
    const run = new RowPrefill(backbone, prompt, limits.chunk);
    while ((await run.next()) === undefined);
    vectors.push(run.hidden!.slice());
  }
  return { vectors, promptTokens: prompts.map((p) => p.length) };
}

/**
 * The token ids of each input (texts tokenized with the special tokens the tokenizer adds: BOS, and EOS where it
 * adds one), checked: at least one input, none empty, past the context or outside the vocabulary. `what` names the
 * call in errors.
 */
export function promptsOf(input: EmbedInput, tokenizer: TextTokenizer | undefined, what: string, vocabSize: number, contextLength?: number): number[][] {
  let prompts: number[][];
  if (input === null || typeof input !== 'object') throw new EmbedInputError(`${what} takes { texts: string[] } or { ids: number[][] }`);
  if ('ids' in input && Array.isArray(input.ids)) prompts = input.ids;
  else {
    if (!('texts' in input) || !Array.isArray(input.texts)) throw new EmbedInputError(`${what} takes { texts: string[] } or { ids: number[][] }`);
    if (!tokenizer) throw new TokenizerError(`${what}: this model has no tokenizer.json beside it; give token ids instead of text`);
    // (a text whose beginning alone is past the context is refused before the rest is encoded)
    prompts = input.texts.map((t: unknown, i) => {
      if (typeof t !== 'string') throw new EmbedInputError(`${what}: input ${i} is ${t === null ? 'null' : typeof t}, not a text`);
      return tokenizer.encode(t, true, contextLength);
    });
  }
  if (prompts.length === 0) throw new EmbedInputError(`${what}: give at least one input`);
  prompts.forEach((p, i) => {
    if (p.length === 0) throw new EmbedInputError(`${what}: input ${i} has no tokens`);
    if (contextLength !== undefined && p.length > contextLength) {
      throw new EmbedInputError(`${what}: input ${i} is ${p.length} tokens, more than the context length of ${contextLength} positions; shorten it`);
    }
    const bad = p.find((id) => !Number.isInteger(id) || id < 0 || id >= vocabSize);
    if (bad !== undefined && typeof bad === 'number' && Number.isFinite(bad) && !Number.isInteger(bad)) throw new EmbedInputError(`${what}: input ${i} holds token id ${bad}, which is not a whole number`);
    if (bad !== undefined) throw new EmbedInputError(`${what}: input ${i} holds token id ${bad}, outside the vocabulary (0 to ${vocabSize - 1})`);
  });
  return prompts;
}
