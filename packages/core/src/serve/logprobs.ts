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
 * A streamed reply's entries not given out yet, in order, and the UTF-16 units of its text sent so far, which place
 * them: each rides with the first text after its own has started (a character's first bytes wait for the token
 * completing it; a possible stop string's tokens, to be let out or cut).
 */
export class HeldEntries {
  private pending: TokenLogprobs[] = [];
  private sent = 0;

  /** Holds a token's entry, if it has one, and counts the text it completed as sent. */
  push(text: string, entry?: TokenLogprobs): void {
    if (entry) this.pending.push(entry);
    this.sent += text.length;
  }

  /**
   * Takes out the entries the text sent so far shows: each whose text starts within it (the engine places a token
   * that completes no character yet where its character will start), and each placed nowhere (no tokenizer). The
   * others wait for more text, or for {@link end}.
   */
  released(): TokenLogprobs[] {
    const shows = ({ offset }: TokenLogprobs) => offset === undefined || offset < this.sent;
    let out = 0;
    while (out < this.pending.length && shows(this.pending[out]!)) out++;
    return this.pending.splice(0, out);
  }

  /** Ends the reply: drops the last entries, which show nothing (see {@link shownEntries}), and gives those still held. */
  end(): TokenLogprobs[] {
    this.pending = shownEntries(this.pending, this.sent);
    return [...this.pending];
  }
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
 * Code points in `text`, as Python's `len` counts them (a surrogate pair one, a lone surrogate one too): the unit of
 * legacy `text_offset`, which OpenAI's Python-served API and vLLM (`text_offset[i] + len(token)`) count in, so that a
 * Python client's `text[offset:]` starts at the token. JavaScript's `length` counts UTF-16 units, one more for each
 * character past U+FFFF (an emoji).
 */
function codePoints(text: string): number {
  let n = 0;
  for (let i = 0; i < text.length; i++, n++) {
    const c = text.charCodeAt(i);
    if (c >= 0xd800 && c < 0xdc00 && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00) i++;
  }
  return n;
}

/**
 * One choice's `text_offset`s: the engine's offsets into the reply (UTF-16 units) as code points into the choice's
 * text, the echoed prompt first. Fed the reply's text as it goes out and asked offsets in order, within the text fed,
 * it counts each stretch of text once, so that a long streamed reply costs its length rather than its square.
 */
export class TextOffsets {
  /** The reply's text past the last offset asked. */
  private rest = '';
  /** Units of the reply before the last offset asked, and code points of the choice's text before it. */
  private units = 0;
  private points: number;

  constructor(echoed: string) {
    this.points = codePoints(echoed);
  }

  /** Adds the reply's next text. */
  push(text: string): this {
    this.rest += text;
    return this;
  }

  /**
   * Where the reply's UTF-16 `offset` (no less than the last asked, no further than the text fed) falls in the
   * choice's text, in code points.
   */
  at(offset: number): number {
    const ahead = offset - this.units;
    this.points += codePoints(this.rest.slice(0, ahead));
    this.rest = this.rest.slice(ahead);
    this.units = offset;
    return this.points;
  }
}

/**
 * Legacy completions' `choices[].logprobs`: parallel lists of tokens, their log-probabilities, the alternatives
 * (token → logprob, the chosen token among them, as vLLM reports) and each token's offset in the choice's text
 * (`offsets`, fed the reply's text this far): where the engine found its text in the reply.
 */
export function completionLogprobs(entries: readonly TokenLogprobs[], offsets: TextOffsets) {
  const tokens: string[] = [];
  const tokenLogprobs: number[] = [];
  const top: Record<string, number>[] = [];
  const textOffset: number[] = [];
  for (const e of entries) {
    const token = tokenOf(e);
    tokens.push(token);
    tokenLogprobs.push(logprobOf(e));
    top.push(Object.fromEntries([...e.top, e].map((t) => [tokenOf(t), logprobOf(t)])));
    textOffset.push(offsets.at(e.offset ?? 0));
  }
  return { tokens, token_logprobs: tokenLogprobs, top_logprobs: top, text_offset: textOffset };
}

/** Legacy completions' lists; the prompt's first token has no log-probability (nothing before it): `null`. */
export type LegacyLogprobs = { tokens: string[]; token_logprobs: (number | null)[]; top_logprobs: (Record<string, number> | null)[]; text_offset: number[] };

/**
 * A scored prompt as the start of legacy completions' lists (`echo` with `logprobs`): its first token with `null`,
 * then each token's log-probability after those before it. `first` names the first token; `visible` gives each
 * token's text in the echoed prompt (special tokens such as BOS show none), from which the offsets run.
 */
export function promptLegacyLogprobs(entries: readonly TokenLogprobs[], first: string, visible: readonly string[]): LegacyLogprobs {
  const offsets: number[] = [];
  visible.reduce((at, text) => (offsets.push(at), at + codePoints(text)), 0);
  // (the prompt's entries have no offsets of their own: `visible` places them)
  const listed = completionLogprobs(entries, new TextOffsets(''));
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
