/**
 * Prompt lookup: drafts for speculative decoding taken from the row's own tokens. Where the last few tokens
 * (prompt and reply so far) occurred before, the tokens that followed them then are proposed as the next ones;
 * the model checks the whole draft in one run and keeps what it would have written itself. Replies that quote
 * or edit their context (retrieval answers, code edits, extraction, summaries) repeat long stretches of it.
 */
import { refuseUnknownOptions } from './options.js';

/** How drafts are looked up. */
export interface PromptLookupOptions {
  /** Tokens drafted at most per step (default 4). */
  draftTokens?: number;
  /** Longest run of last tokens looked for (default 3): longer matches are tried first. */
  maxNgram?: number;
  /** Shortest run of last tokens looked for (default 2). */
  minNgram?: number;
}

/** {@link PromptLookupOptions} by name, for refusing the others (the type makes a new option fail to compile until it is listed). */
const PROMPT_LOOKUP_OPTION_NAMES = { draftTokens: true, maxNgram: true, minNgram: true } as const satisfies Record<keyof PromptLookupOptions, true>;

/** {@link PromptLookupOptions} with every default filled in. */
export type PromptLookup = Required<PromptLookupOptions>;

/** The defaults: what `promptLookup: true` means, and how a request's prediction is looked up in. */
export const DEFAULT_PROMPT_LOOKUP: PromptLookup = { draftTokens: 4, maxNgram: 3, minNgram: 2 };

/** Checks the options (typed errors for the caller's input: a name outside them is refused as Engine.load's are) and fills in the defaults. */
export function promptLookup(options: true | PromptLookupOptions): PromptLookup {
  if (options !== true && (typeof options !== 'object' || options === null || Array.isArray(options))) {
    // (a number reads as the CLI's `--prompt-lookup N`, which is `{ draftTokens: N }` here)
    throw new TypeError(`promptLookup must be true, false or { draftTokens?, minNgram?, maxNgram? }; got ${JSON.stringify(options)}`);
  }
  const o = options === true ? {} : options;
  refuseUnknownOptions(o, PROMPT_LOOKUP_OPTION_NAMES, 'Engine.load', 'promptLookup');
  const whole = (name: string, v: number | undefined, min: number) => {
    if (v !== undefined && !(Number.isInteger(v) && v >= min)) throw new RangeError(`promptLookup.${name} must be a whole number >= ${min}; got ${v}`);
  };
  whole('draftTokens', o.draftTokens, 1);
  whole('maxNgram', o.maxNgram, 1);
  whole('minNgram', o.minNgram, 1);
  const maxNgram = o.maxNgram ?? Math.max(DEFAULT_PROMPT_LOOKUP.maxNgram, o.minNgram ?? 0);
  const minNgram = o.minNgram ?? Math.min(DEFAULT_PROMPT_LOOKUP.minNgram, maxNgram);
  if (minNgram > maxNgram) throw new RangeError(`promptLookup.minNgram (${minNgram}) is more than maxNgram (${maxNgram})`);
  return { draftTokens: o.draftTokens ?? DEFAULT_PROMPT_LOOKUP.draftTokens, maxNgram, minNgram };
}

/**
 * The draft after `tokens` (the prompt, then the reply so far): for the longest run of last tokens, from
 * `maxNgram` down to `minNgram`, that occurred earlier, the up to `limit` tokens that followed its latest earlier
 * occurrence. Empty when no such run occurred.
 */
export function lookupDraft(tokens: readonly number[], lookup: PromptLookup, limit = lookup.draftTokens): number[] {
  const end = tokens.length;
  if (limit <= 0) return [];
  for (let n = Math.min(lookup.maxNgram, end - 1); n >= lookup.minNgram; n--) {
    // Latest first: the nearest context is the likeliest to be continued the same way.
    for (let start = end - n - 1; start >= 0; start--) {
      if (occursAt(tokens, start, tokens, end, n)) return tokens.slice(start + n, Math.min(end, start + n + limit));
    }
  }
  return [];
}

/**
 * The draft after `reply` (the reply so far) from a prediction of the whole reply (OpenAI's Predicted Outputs):
 * while the reply is the prediction's beginning, what follows it there; else, for the longest run of the reply's
 * last tokens (from `maxNgram` down to `minNgram`) found in the prediction, the tokens after its occurrence nearest
 * the reply's own length (edits keep most of a text where it was). Up to `limit` tokens; empty when none match.
 */
export function lookupPrediction(prediction: readonly number[], reply: readonly number[], lookup: PromptLookup, limit = lookup.draftTokens): number[] {
  if (limit <= 0) return [];
  const end = reply.length;
  if (end <= prediction.length && reply.every((t, i) => t === prediction[i])) return prediction.slice(end, end + limit);
  for (let n = Math.min(lookup.maxNgram, end); n >= lookup.minNgram; n--) {
    let best = -1;
    // (a match must have a token after it)
    for (let start = 0; start + n < prediction.length; start++) {
      if (occursAt(prediction, start, reply, end, n) && (best < 0 || Math.abs(start + n - end) < Math.abs(best + n - end))) best = start;
    }
    if (best >= 0) return prediction.slice(best + n, best + n + limit);
  }
  return [];
}

/** Whether the `n` tokens of `tail` before `tailEnd` stand in `source` from `start`. */
function occursAt(source: readonly number[], start: number, tail: readonly number[], tailEnd: number, n: number): boolean {
  for (let i = 0; i < n; i++) if (source[start + i] !== tail[tailEnd - n + i]) return false;
  return true;
}
