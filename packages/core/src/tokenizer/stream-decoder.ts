/**
 * Incremental detokenization: turns a growing id sequence into text deltas without ever emitting half a
 * UTF-8 character (byte-fallback tokens) and without losing the spaces a decoder strips at the start.
 */

/** Decodes a whole id list; the stream decoder only needs this one function. */
export type DecodeFn = (ids: readonly number[]) => string;

/** Prompt tokens kept as decoding context: enough for any decoder's look-behind (spaces, byte runs). */
const CONTEXT_TOKENS = 6;

/**
 * Keeps a small window of ids: text is emitted once decoding the window no longer ends in an
 * incomplete character (U+FFFD). Decoding a window that starts a few tokens back keeps context-dependent
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
    this.ids.push(id);
    const prefixText = (this.prefixText ??= this.decode(this.ids.slice(this.prefixOffset, this.readOffset)));
    const fullText = this.decode(this.ids.slice(this.prefixOffset));
    if (fullText.length > prefixText.length && !fullText.endsWith('\uFFFD')) {
      const delta = fullText.slice(prefixText.length);
      this.prefixOffset = this.readOffset;
      this.readOffset = this.ids.length;
      this.prefixText = undefined;
      return delta;
    }
    return '';
  }

  /**
   * Text still held back, as the decode gives it: an unfinished character at the very end as U+FFFD, a U+FFFD the
   * ids spell out as itself (push cannot tell them apart, and waits on both). Call it whatever ends the text.
   */
  flush(): string {
    const prefixText = this.prefixText ?? this.decode(this.ids.slice(this.prefixOffset, this.readOffset));
    const fullText = this.decode(this.ids.slice(this.prefixOffset));
    this.prefixOffset = this.readOffset = this.ids.length;
    this.prefixText = undefined;
    return fullText.slice(prefixText.length);
  }
}
