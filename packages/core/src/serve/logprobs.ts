/** The engine's per-token log-probabilities in OpenAI's two shapes: chat's `logprobs.content` and legacy completions'. */
import type { TokenLogprob, TokenLogprobs } from '../generate/types.js';

/** OpenAI's (and vLLM's) stand-in for a log-probability of −∞, which JSON cannot carry. */
const FLOOR = -9999;

const logprobOf = (t: TokenLogprob) => Math.max(t.logprob, FLOOR);
/** A token without a tokenizer to name it is shown by id, as vLLM's `return_tokens_as_token_ids` does. */
const tokenOf = (t: TokenLogprob) => t.token ?? `token_id:${t.id}`;
const bytesOf = (t: TokenLogprob) => t.bytes ?? [...Buffer.from(tokenOf(t), 'utf8')];

/**
 * The entries of the tokens a reply's text shows: the last tokens that show nothing (the end-of-sequence token, a
 * stop string's tokens, cut from the text) are not the message's tokens (OpenAI lists "message content tokens").
 * `shown` is the text's length; entries the engine placed nowhere (no tokenizer) stay.
 */
export function shownEntries(entries: readonly TokenLogprobs[], shown: number): TokenLogprobs[] {
  let end = entries.length;
  while (end > 0 && entries[end - 1]!.offset !== undefined && entries[end - 1]!.offset! >= shown) end--;
  return entries.slice(0, end);
}

/**
 * Chat's `choices[].logprobs`: `{ content: [{ token, logprob, bytes, top_logprobs }], refusal: null }` (OpenAI's schema
 * requires `refusal`, the tokens of a refusal, which a reply here never has).
 */
export function chatLogprobs(entries: readonly TokenLogprobs[]) {
  return {
    refusal: null,
    content: entries.map((e) => ({
      token: tokenOf(e),
      logprob: logprobOf(e),
      bytes: bytesOf(e),
      top_logprobs: e.top.map((t) => ({ token: tokenOf(t), logprob: logprobOf(t), bytes: bytesOf(t) })),
    })),
  };
}

/**
 * Legacy completions' `choices[].logprobs`: parallel lists of tokens, their log-probabilities, the alternatives
 * (token → logprob, the chosen token among them, as vLLM reports) and each token's character offset in the
 * choice's text: where the engine found its text in the reply, after `echoed` characters of echoed prompt.
 */
export function completionLogprobs(entries: readonly TokenLogprobs[], echoed: number) {
  const tokens: string[] = [];
  const tokenLogprobs: number[] = [];
  const top: Record<string, number>[] = [];
  const textOffset: number[] = [];
  for (const e of entries) {
    const token = tokenOf(e);
    tokens.push(token);
    tokenLogprobs.push(logprobOf(e));
    top.push(Object.fromEntries([...e.top, e].map((t) => [tokenOf(t), logprobOf(t)])));
    textOffset.push(echoed + (e.offset ?? 0));
  }
  return { tokens, token_logprobs: tokenLogprobs, top_logprobs: top, text_offset: textOffset };
}

/** Legacy completions' lists; the prompt's first token has no log-probability (nothing before it): `null`. */
export type LegacyLogprobs = { tokens: string[]; token_logprobs: (number | null)[]; top_logprobs: (Record<string, number> | null)[]; text_offset: number[] };

/**
 * A scored prompt as the start of legacy completions' lists (`echo` with `logprobs`): its first token with `null`,
 * then each token's log-probability after those before it. `first` names the first token; `visible` gives each
 * token's length in the echoed text (special tokens such as BOS take none), from which the offsets run.
 */
export function promptLegacyLogprobs(entries: readonly TokenLogprobs[], first: string, visible: readonly number[]): LegacyLogprobs {
  const offsets: number[] = [];
  visible.reduce((at, n) => (offsets.push(at), at + n), 0);
  const listed = completionLogprobs(entries, 0);
  return {
    tokens: [first, ...listed.tokens],
    token_logprobs: [null, ...listed.token_logprobs],
    top_logprobs: [null, ...listed.top_logprobs],
    text_offset: offsets,
  };
}

/** Two runs of legacy lists, one after the other (the echoed prompt's, then the completion's). */
export function joinLegacy(a: LegacyLogprobs, b: LegacyLogprobs): LegacyLogprobs {
  return {
    tokens: [...a.tokens, ...b.tokens],
    token_logprobs: [...a.token_logprobs, ...b.token_logprobs],
    top_logprobs: [...a.top_logprobs, ...b.top_logprobs],
    text_offset: [...a.text_offset, ...b.text_offset],
  };
}
