/**
 * The two small interfaces every stage of the sampler chain speaks.
 *
 * Modelled on llama.cpp's sampler chain: each stage is a logit processor that narrows or reshapes
 * the distribution in place, and the last step draws one token from what is left.
 */

/** Per-sequence state a processor may read. */
export interface SamplingContext {
  /** Token ids generated so far in this sequence (oldest first). */
  generated: ArrayLike<number>;
  /** Token ids of the prompt (oldest first), if the processor should see them. */
  prompt?: ArrayLike<number>;
}

/**
 * A logit processor mutates a Float32Array of logits in place (length = vocab).
 * `-Infinity` means the token is excluded; processors never re-admit an excluded token.
 * NaN entries are treated as excluded by every processor and by the final draw.
 */
export interface LogitProcessor {
  readonly name: string;
  apply(logits: Float32Array, ctx: SamplingContext): void;
}
