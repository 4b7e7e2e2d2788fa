/**
 * UniR fusion on the host, in fp32: `z = Σ w_i · T(z_i)` over the shared vocabulary, with T the identity
 * (raw logits, UniR's default) or log-softmax (GenARM / model-arithmetic style).
 */

/** How each model's logits are transformed before weighting. */
export type FusionMode = 'logits' | 'logprobs';

/** One model's `[rows × stride]` logits and its weight for this step. */
export interface FusionInput {
  logits: Float32Array;
  /** Logits per row in `logits` (a padded vocabulary may be wider than the shared one). */
  stride: number;
  weight: number;
}

/**
 * Writes `Σ w_i · T(z_i)` into `out` (`[rows × vocab]`), reading only the first `vocab` logits of each row so
 * padded vocabularies are truncated. With `normalize`, the sum is divided by `Σ w_i` (an anti-expert's
 * negative weight counts negatively, as in proxy-tuning).
 */
export function fuseLogits(
  out: Float32Array,
  inputs: readonly FusionInput[],
  rows: number,
  vocab: number,
  mode: FusionMode,
  normalize = false,
): Float32Array {
  const totalWeight = inputs.reduce((s, x) => s + x.weight, 0);
  const scale = normalize ? 1 / totalWeight : 1;
  if (normalize && !Number.isFinite(scale)) {
    throw new RangeError('cannot normalise composed logits: the weights sum to zero');
  }
  const used = inputs.filter((x) => x.weight !== 0);
  for (let r = 0; r < rows; r++) {
    const o = r * vocab;
    if (used.length === 0) out.fill(0, o, o + vocab);
    used.forEach(({ logits, stride, weight }, k) => {
      const z = r * stride;
      const shift = mode === 'logprobs' ? logSumExp(logits.subarray(z, z + vocab)) : 0;
      const w = weight * scale;
      // The first model writes, the others add: one pass per model over the vocabulary, this is per token.
      if (k === 0) for (let v = 0; v < vocab; v++) out[o + v] = w * (logits[z + v]! - shift);
      else for (let v = 0; v < vocab; v++) out[o + v]! += w * (logits[z + v]! - shift);
    });
  }
  return out;
}

/** log Σ exp(z), stable (max subtracted, float64 accumulation). */
export function logSumExp(z: Float32Array): number {
  let max = -Infinity;
  for (let i = 0; i < z.length; i++) if (z[i]! > max) max = z[i]!;
  if (max === -Infinity) return -Infinity;
  let sum = 0;
  for (let i = 0; i < z.length; i++) sum += Math.exp(z[i]! - max);
  return max + Math.log(sum);
}
