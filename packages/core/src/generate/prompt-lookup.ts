/**
 * Prompt lookup: drafts for speculative decoding taken from the row's own tokens. Where the last few tokens
 * (prompt and reply so far) occurred before, the tokens that followed them then are proposed as the next ones;
 * the model checks the whole draft in one run and keeps what it would have written itself. Replies that quote
 * or edit their context (retrieval answers, code edits, extraction, summaries) repeat long stretches of it.
 */

/** How drafts are looked up. */
export interface PromptLookupOptions {
  /** Tokens drafted at most per step (default 4). */
  draftTokens?: number;
  /** Longest run of last tokens looked for (default 3): longer matches are tried first. */
  maxNgram?: number;
  /** Shortest run of last tokens looked for (default 2). */
  minNgram?: number;
}

/** {@link PromptLookupOptions} with every default filled in. */
export type PromptLookup = Required<PromptLookupOptions>;

/** Checks the options (typed errors for the caller's input) and fills in the defaults. */
export function promptLookup(options: true | PromptLookupOptions): PromptLookup {
  const o = options === true ? {} : options;
  const whole = (name: string, v: number | undefined, min: number) => {
    if (v !== undefined && !(Number.isInteger(v) && v >= min)) throw new RangeError(`promptLookup.${name} must be a whole number >= ${min}; got ${v}`);
  };
  whole('draftTokens', o.draftTokens, 1);
  whole('maxNgram', o.maxNgram, 1);
  whole('minNgram', o.minNgram, 1);
  const maxNgram = o.maxNgram ?? Math.max(3, o.minNgram ?? 0);
  const minNgram = o.minNgram ?? Math.min(2, maxNgram);
  if (minNgram > maxNgram) throw new RangeError(`promptLookup.minNgram (${minNgram}) is more than maxNgram (${maxNgram})`);
  return { draftTokens: o.draftTokens ?? 4, maxNgram, minNgram };
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
      let same = true;
      for (let i = 0; i < n && same; i++) same = tokens[start + i] === tokens[end - n + i];
      if (same) return tokens.slice(start + n, Math.min(end, start + n + limit));
    }
  }
  return [];
}
