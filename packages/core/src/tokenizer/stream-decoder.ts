/**
 * Incremental detokenization: turns a growing id sequence into text deltas without ever emitting half a
 * UTF-8 character (byte-fallback tokens) and without losing the spaces a decoder strips at the start.
 */

/** The bytes one id adds to a decode's text (none for an id the decode drops, such as a skipped special token). */
export type TokenBytesFn = (id: number) => readonly number[] | undefined;

/**
 * Decodes a whole id list; the stream decoder needs only this. A decode with a byte view gives `bytes` too, which
 * tells a character not finished yet from bytes that can be none: without it, a U+FFFD at the end may be either.
 */
export interface DecodeFn {
  (ids: readonly number[]): string;
  readonly bytes?: TokenBytesFn;
}

/**
 * Whether `bytes` end in the first bytes of a character, which more bytes may complete: a decode shows them as one
 * U+FFFD until then (WHATWG's decoder, the tokenizers'). Bytes that can no longer be a character (a lone continuation
 * byte, `FF`, `E0 80`) are U+FFFD for good, as is a U+FFFD written out (`EF BF BD`).
 */
function endsMidCharacter(bytes: readonly number[]): boolean {
  let lead = bytes.length - 1;
  while (lead >= 0 && bytes.length - lead <= 3 && (bytes[lead]! & 0xc0) === 0x80) lead--;
  if (lead < 0) return false;
  const first = bytes[lead]!;
  const length = first >= 0xc2 && first <= 0xdf ? 2 : first >= 0xe0 && first <= 0xef ? 3 : first >= 0xf0 && first <= 0xf4 ? 4 : 0;
  if (bytes.length - lead >= length) return false;
  const second = bytes[lead + 1];
  if (second === undefined) return true;
  // The byte after E0, ED, F0 or F4 is bounded (no overlong forms, surrogates or code points past U+10FFFF).
  const [low, high] = first === 0xe0 ? [0xa0, 0xbf] : first === 0xed ? [0x80, 0x9f] : first === 0xf0 ? [0x90, 0xbf] : first === 0xf4 ? [0x80, 0x8f] : [0x80, 0xbf];
  return second >= low && second <= high;
}

/**
 * Whether `text`, the decode of `ids`, ends in a character not finished yet (its U+FFFD stands for bytes that more
 * ids may complete), which is held back: the one definition both the stream decoder and the tokens' names go by.
 * Without `bytes` to tell, any U+FFFD at the end is.
 */
export function endsHeld(text: string, ids: readonly number[], bytes?: TokenBytesFn): boolean {
  if (!text.endsWith('\uFFFD')) return false;
  if (!bytes) return true;
  const last: number[] = [];
  for (let i = ids.length - 1; i >= 0 && last.length < 4; i--) last.unshift(...(bytes(ids[i]!) ?? []));
  return endsMidCharacter(last);
}

/** Prompt tokens kept as decoding context: enough for any decoder's look-behind (spaces, byte runs). */
const CONTEXT_TOKENS = 6;

/**
 * Keeps a small window of ids: text is emitted once decoding the window no longer ends in an
 * incomplete character (see {@link endsHeld}). Decoding a window that starts a few tokens back keeps context-dependent
 * decoders (leading-space stripping, byte fusion) correct at O(window) cost per token.
 */
export class StreamDecoder {
  private readonly ids: number[];
  private prefixOffset = 0;
  private readOffset: number;
  /** Decoded text of ids[prefixOffset, readOffset): unchanged until the offsets move, so decoded once. */
  private prefixText: string | undefined;

  /**
   * `context` is the tail of the prompt: decoding against it keeps the first generated token's leading
   * space, which decoders strip at the start of a sequence.
   */
  constructor(
    private readonly decode: DecodeFn,
    context: readonly number[] = [],
  ) {
    this.ids = context.slice(-CONTEXT_TOKENS);
    this.readOffset = this.ids.length;
  }

  /** Adds one id; returns the text it completes (possibly empty). */
  push(id: number): string {
    // An id the decode drops (a skipped special token: no bytes) changes no decode and completes nothing; kept out of
    // the window, a run of them (EOS under ignoreEos) does not grow it.
    if (this.decode.bytes?.(id)?.length === 0) return '';
    this.ids.push(id);
    const prefixText = (this.prefixText ??= this.decode(this.ids.slice(this.prefixOffset, this.readOffset)));
    const fullText = this.decode(this.ids.slice(this.prefixOffset));
    if (fullText.length > prefixText.length && !endsHeld(fullText, this.ids, this.decode.bytes)) {
      const delta = fullText.slice(prefixText.length);
      this.prefixOffset = this.readOffset;
      this.readOffset = this.ids.length;
      this.prefixText = undefined;
      return delta;
    }
    return '';
  }

  /**
   * Text still held back, as the decode gives it: an unfinished character at the very end as U+FFFD (and, for a
   * decode without a byte view, which cannot tell them apart, U+FFFD the ids spell out or bytes that are no
   * character). Call it whatever ends the text.
   */
  flush(): string {
    const prefixText = this.prefixText ?? this.decode(this.ids.slice(this.prefixOffset, this.readOffset));
    const fullText = this.decode(this.ids.slice(this.prefixOffset));
    this.prefixOffset = this.readOffset = this.ids.length;
    this.prefixText = undefined;
    return fullText.slice(prefixText.length);
  }
}
