/** Validation of a generation's options: the sampling options, and what ends a row. */
import { validateSamplingOptions } from '../sampling/index.js';
import { MAX_TOP_LOGPROBS } from '../sampling/logprobs.js';
import type { GenerateOptions } from './types.js';

/** Raised for an invalid generation option (sampling options raise `SamplingOptionsError`). */
export class GenerateOptionsError extends Error {
  override name = 'GenerateOptionsError';
  constructor(
    /** The offending option, e.g. `maxTokens` or `stop[1]`. */
    readonly option: string,
    message: string,
  ) {
    super(message);
  }
}

function fail(option: string, rule: string, got: unknown): never {
  throw new GenerateOptionsError(option, `generation option ${option} ${rule} (got ${typeof got === 'string' ? JSON.stringify(got) : String(got)})`);
}

const isId = (v: unknown) => Number.isSafeInteger(v) && (v as number) >= 0;

/**
 * Checks the options of one generation: sampling options as {@link validateSamplingOptions} does, `maxTokens`
 * a whole number >= 1, `logprobs` 0 to 20, `stop` a list of non-empty strings (an empty one would match before the first
 * character), `eosTokenIds` a list of token ids, `keepTokens` a list of non-empty strings, `thinkingBudget` a whole
 * number of tokens >= 0 with non-empty tags, `prediction` a string. Throws naming the option.
 */
export function validateGenerateOptions(options: GenerateOptions): void {
  validateSamplingOptions(options);
  const { maxTokens, stop, eosTokenIds, logprobs, keepTokens, thinkingBudget, prediction } = options;
  if (logprobs !== undefined && !(Number.isSafeInteger(logprobs) && logprobs >= 0 && logprobs <= MAX_TOP_LOGPROBS)) {
    fail('logprobs', `must be a whole number from 0 to ${MAX_TOP_LOGPROBS} (alternatives per token)`, logprobs);
  }
  if (maxTokens !== undefined && !(Number.isSafeInteger(maxTokens) && maxTokens >= 1)) fail('maxTokens', 'must be a whole number >= 1', maxTokens);
  if (stop !== undefined) {
    if (!Array.isArray(stop)) fail('stop', 'must be a list of strings', stop);
    stop.forEach((s, i) => {
      if (typeof s !== 'string') fail(`stop[${i}]`, 'must be a string', s);
      if (s === '') fail(`stop[${i}]`, 'must not be empty: an empty stop string would end every row before its first character', s);
    });
  }
  if (eosTokenIds !== undefined) {
    if (!Array.isArray(eosTokenIds)) fail('eosTokenIds', 'must be a list of token ids', eosTokenIds);
    eosTokenIds.forEach((id, i) => isId(id) || fail(`eosTokenIds[${i}]`, 'must be a whole number >= 0', id));
  }
  if (keepTokens !== undefined) {
    if (!Array.isArray(keepTokens)) fail('keepTokens', 'must be a list of token texts', keepTokens);
    keepTokens.forEach((t, i) => (typeof t === 'string' && t !== '') || fail(`keepTokens[${i}]`, 'must be a non-empty string', t));
  }
  if (prediction !== undefined && typeof prediction !== 'string') fail('prediction', "must be a string (the reply's expected text)", prediction);
  if (thinkingBudget !== undefined) {
    if (typeof thinkingBudget !== 'object' || thinkingBudget === null) fail('thinkingBudget', 'must be an object { tokens, open, close, opened? }', thinkingBudget);
    const { tokens, open, close, opened } = thinkingBudget;
    if (!(Number.isSafeInteger(tokens) && tokens >= 0)) fail('thinkingBudget.tokens', 'must be a whole number >= 0', tokens);
    for (const [key, tag] of [['open', open], ['close', close]] as const) (typeof tag === 'string' && tag !== '') || fail(`thinkingBudget.${key}`, 'must be a non-empty string (a thought tag)', tag);
    if (opened !== undefined && typeof opened !== 'boolean') fail('thinkingBudget.opened', 'must be true or false', opened);
  }
}
