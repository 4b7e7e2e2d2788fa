/** Validation of a generation's options: their names, the sampling options, and what ends a row. */
import { validateSamplingOptions } from '../sampling/index.js';
import { MAX_TOP_LOGPROBS } from '../sampling/logprobs.js';
import type { GenerateRequestOptions } from '../runtime/protocol.js';
import { FORMAT_FIELD_NAMES, THOUGHT_FIELD_NAMES } from '../constrain/types.js';
import type { GenerateOptions, ThinkingBudget } from './types.js';

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

/**
 * The options a call takes, by name: a generation's, and the composition and constraint options that travel with them
 * (the engine's call options, the CLI's). The type makes a new option fail to compile until it is listed here.
 */
const CALL_OPTION_NAMES = {
  temperature: true, topK: true, topP: true, minP: true, repetitionPenalty: true, repetitionWindow: true, frequencyPenalty: true,
  presencePenalty: true, logitBias: true, seed: true,
  maxTokens: true, stop: true, includeStopString: true, eosTokenIds: true, ignoreEos: true, stopTokenIds: true, minTokens: true, keepTokens: true,
  thinkingBudget: true, logprobs: true, prediction: true,
  reasoners: true, mode: true, normalize: true, trace: true, latent: true, latentPlaceholder: true,
  responseFormat: true,
} as const satisfies Record<keyof GenerateRequestOptions, true>;

/** A thinking budget's fields by name. */
const THINKING_BUDGET_NAMES = { tokens: true, open: true, close: true, opened: true } as const satisfies Record<keyof ThinkingBudget, true>;

/**
 * Throws a TypeError for a key of `options` that `known` does not list (whatever its value: a misspelt option would
 * otherwise be dropped without a word, as `max_tokens` ran 256 tokens), suggesting the name meant. `what` names the
 * options in the message (`generation`, `Engine.load`); `path`, where `options` is nested in them, names its place
 * (`draftModel`, `reasoners[1]`), which the message then puts before the key and the name meant.
 */
export function refuseUnknownOptions(options: object, known: Readonly<Record<string, true>>, what: string, path?: string): void {
  const at = path === undefined ? '' : `${path}.`;
  for (const key of Object.keys(options)) {
    if (Object.hasOwn(known, key)) continue;
    const meant = nearestName(key, Object.keys(known));
    throw new TypeError(`unknown ${what} option ${JSON.stringify(at + key)}${meant ? ` (did you mean ${at}${meant}?)` : ''}`);
  }
}

/**
 * Refuses names outside a response format's fields, in its thought and its tool calls' answer too: `{ type:
 * 'json_object', schema }` admitted any object, and OpenAI's `{ type: 'json_schema', json_schema: { schema } }` failed
 * on a missing schema without saying where it goes. A format that is no object, or of no known type, is left to the
 * constraint stage, which refuses it.
 */
function refuseUnknownFormatFields(format: unknown, path: string, isAnswer: boolean): void {
  if (format === null || typeof format !== 'object' || Array.isArray(format)) return;
  const { type, thought, answer } = format as Record<string, unknown>;
  if (typeof type !== 'string' || !Object.hasOwn(FORMAT_FIELD_NAMES, type)) return;
  if (type === 'json_schema' && Object.hasOwn(format, 'json_schema')) {
    throw new TypeError(`unknown generation option "${path}.json_schema" (give the schema itself as ${path}.schema, { type: 'json_schema', schema }: it is not nested in json_schema as in OpenAI's response_format)`);
  }
  if (type === 'json_object' && Object.hasOwn(format, 'schema')) {
    throw new TypeError(`unknown generation option "${path}.schema" (a json_object format admits any object and takes no schema: give { type: 'json_schema', schema })`);
  }
  const fields = FORMAT_FIELD_NAMES[type as keyof typeof FORMAT_FIELD_NAMES];
  refuseUnknownOptions(format, isAnswer ? fields : { ...fields, thought: true }, 'generation', path);
  if (thought !== null && typeof thought === 'object') refuseUnknownOptions(thought, THOUGHT_FIELD_NAMES, 'generation', `${path}.thought`);
  if (type === 'tool_calls') refuseUnknownFormatFields(answer, `${path}.answer`, true);
}

/**
 * The name `key` most likely meant: the camelCase of a snake_case key (the options are camelCase, OpenAI's and
 * Python's are not), else the closest name within two edits, ignoring case (the first listed of equally close ones).
 */
export function nearestName(key: string, names: readonly string[]): string | undefined {
  const camel = key.toLowerCase().replace(/_+([a-z0-9])/g, (_, c: string) => c.toUpperCase());
  if (names.includes(camel)) return camel;
  let best: string | undefined;
  let bestDistance = 3;
  for (const name of names) {
    const d = editDistance(camel.toLowerCase(), name.toLowerCase());
    if (d < bestDistance) [best, bestDistance] = [name, d];
  }
  return best;
}

/**
 * Edits that turn `a` into `b`, each inserting, deleting or changing a character or swapping two adjacent ones
 * (optimal string alignment: `modle` is one edit from `model`, as from `mode`).
 */
function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const row = d[i]!;
      row[j] = Math.min(d[i - 1]![j]! + 1, row[j - 1]! + 1, d[i - 1]![j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) row[j] = Math.min(row[j]!, d[i - 2]![j - 2]! + 1);
    }
  }
  return d[a.length]![b.length]!;
}

const isId = (v: unknown) => Number.isSafeInteger(v) && (v as number) >= 0;

/** A surrogate outside a pair (a `u` pattern reads a pair as the one character it is): text that is not well-formed. */
const LONE_SURROGATE = /\p{Surrogate}/u;

/** Why a stop string must be well-formed, as both the engine and the server word their refusals. */
export const ILL_FORMED_STOP = 'must be well-formed UTF-16: a lone surrogate would match inside a character, cutting it in half';

/** The index of the first of `stops` that is not well-formed UTF-16 (holds a lone surrogate), or -1. */
export function illFormedStop(stops: readonly string[]): number {
  return stops.findIndex((s) => LONE_SURROGATE.test(s));
}

/** The token limit of a call that sets none. */
export const DEFAULT_MAX_TOKENS = 256;

/**
 * Checks the options of one generation: no name outside a call's options, nor inside a `thinkingBudget` or a
 * `responseFormat` outside theirs (a TypeError naming it, see {@link refuseUnknownOptions}; composition and constraint
 * options may come along, their values unchecked here), sampling options as {@link validateSamplingOptions} does, `maxTokens`
 * a whole number >= 1, `minTokens` a whole number from 0 to `maxTokens` (default {@link DEFAULT_MAX_TOKENS}), `logprobs` 0 to
 * 20, `stop` a list of non-empty, well-formed strings (an empty one would match before the first character, a lone
 * surrogate such as JSON's `"\udc69"` inside an emoji, leaving half of it), `includeStopString` true or false,
 * `eosTokenIds` and `stopTokenIds` lists of token ids (whether the vocabulary has them is {@link checkStopTokenIds}'s),
 * `keepTokens` a list of non-empty strings, `thinkingBudget` a whole number of tokens >= 0 with non-empty tags,
 * `prediction` a string. Throws naming the option.
 */
export function validateGenerateOptions(options: GenerateOptions): void {
  validateSamplingOptions(options);
  refuseUnknownOptions(options, CALL_OPTION_NAMES, 'generation');
  const { responseFormat } = options as GenerateRequestOptions;
  if (Array.isArray(responseFormat)) responseFormat.forEach((f, i) => refuseUnknownFormatFields(f, `responseFormat[${i}]`, false));
  else refuseUnknownFormatFields(responseFormat, 'responseFormat', false);
  const { maxTokens, minTokens, stop, includeStopString, eosTokenIds, stopTokenIds, logprobs, keepTokens, thinkingBudget, prediction } = options;
  if (logprobs !== undefined && !(Number.isSafeInteger(logprobs) && logprobs >= 0 && logprobs <= MAX_TOP_LOGPROBS)) {
    fail('logprobs', `must be a whole number from 0 to ${MAX_TOP_LOGPROBS} (alternatives per token)`, logprobs);
  }
  if (maxTokens !== undefined && !(Number.isSafeInteger(maxTokens) && maxTokens >= 1)) fail('maxTokens', 'must be a whole number >= 1', maxTokens);
  if (minTokens !== undefined) {
    if (!(Number.isSafeInteger(minTokens) && minTokens >= 0)) fail('minTokens', 'must be a whole number >= 0', minTokens);
    const limit = maxTokens ?? DEFAULT_MAX_TOKENS;
    if (minTokens > limit) fail('minTokens', `must be at most maxTokens (${limit}${maxTokens === undefined ? ', the default' : ''})`, minTokens);
  }
  if (stop !== undefined) {
    if (!Array.isArray(stop)) fail('stop', 'must be a list of strings', stop);
    stop.forEach((s, i) => {
      if (typeof s !== 'string') fail(`stop[${i}]`, 'must be a string', s);
      if (s === '') fail(`stop[${i}]`, 'must not be empty: an empty stop string would end every row before its first character', s);
      if (LONE_SURROGATE.test(s)) fail(`stop[${i}]`, ILL_FORMED_STOP, s);
    });
  }
  if (includeStopString !== undefined && typeof includeStopString !== 'boolean') fail('includeStopString', 'must be true or false', includeStopString);
  for (const [name, ids] of [['eosTokenIds', eosTokenIds], ['stopTokenIds', stopTokenIds]] as const) {
    if (ids === undefined) continue;
    if (!Array.isArray(ids)) fail(name, 'must be a list of token ids', ids);
    ids.forEach((id, i) => isId(id) || fail(`${name}[${i}]`, 'must be a whole number >= 0', id));
  }
  if (keepTokens !== undefined) {
    if (!Array.isArray(keepTokens)) fail('keepTokens', 'must be a list of token texts', keepTokens);
    keepTokens.forEach((t, i) => (typeof t === 'string' && t !== '') || fail(`keepTokens[${i}]`, 'must be a non-empty string', t));
  }
  if (prediction !== undefined && typeof prediction !== 'string') fail('prediction', "must be a string (the reply's expected text)", prediction);
  if (thinkingBudget !== undefined) {
    if (typeof thinkingBudget !== 'object' || thinkingBudget === null) fail('thinkingBudget', 'must be an object { tokens, open, close, opened? }', thinkingBudget);
    refuseUnknownOptions(thinkingBudget, THINKING_BUDGET_NAMES, 'generation', 'thinkingBudget');
    const { tokens, open, close, opened } = thinkingBudget;
    if (!(Number.isSafeInteger(tokens) && tokens >= 0)) fail('thinkingBudget.tokens', 'must be a whole number >= 0', tokens);
    for (const [key, tag] of [['open', open], ['close', close]] as const) (typeof tag === 'string' && tag !== '') || fail(`thinkingBudget.${key}`, 'must be a non-empty string (a thought tag)', tag);
    if (opened !== undefined && typeof opened !== 'boolean') fail('thinkingBudget.opened', 'must be true or false', opened);
  }
}

/** Throws a {@link GenerateOptionsError} for a `stopTokenIds` id outside a vocabulary of `vocab` tokens (it could never be sampled). */
export function checkStopTokenIds(ids: readonly number[] | undefined, vocab: number): void {
  ids?.forEach((id, i) => id < vocab || fail(`stopTokenIds[${i}]`, `names a token outside the model's vocabulary of ${vocab} tokens (ids 0 to ${vocab - 1})`, id));
}
