/**
 * UniR fusion in fp32: `z = Σ w_i · T(z_i)` over the shared vocabulary, with T the identity (raw logits,
 * UniR's default) or log-softmax (GenARM / model-arithmetic style). The reasoners' part of the sum is built
 * where their logits are (a lane worker adds each reasoner's term as soon as it has run); the backbone's term
 * and the normalisation are applied last, in one pass.
 */

import { combineInto, weightedInto } from '../sampling/logit-kernels.js';

/** How each model's logits are transformed before weighting. */
export type FusionMode = 'logits' | 'logprobs';

/** Each model's T in one call: the backbone's, and each reasoner's in the order given. */
export interface FusionModes {
  backbone: FusionMode;
  reasoners: FusionMode[];
}

/**
 * Each model's T for one call. A mode the call (else the load) gives applies to every model. Otherwise each reasoner
 * has the one its manifest declares (logits without one), and the backbone log-softmax when a reasoner the call
 * weights declares it, so that a composition whose reasoners all declare one mode fuses wholly in it; a reasoner the
 * call leaves out or weights 0 decides nothing (the models' order neither).
 */
export function fusionModes(given: FusionMode | undefined, reasoners: readonly { declared: FusionMode | undefined; weighted: boolean }[]): FusionModes {
  if (given) return { backbone: given, reasoners: reasoners.map(() => given) };
  const own = reasoners.map((r) => r.declared ?? 'logits');
  return { backbone: reasoners.some((r, i) => r.weighted && own[i] === 'logprobs') ? 'logprobs' : 'logits', reasoners: own };
}

/** One model's `[rows × stride]` logits and its weight for this step. */
export interface FusionInput {
  logits: Float32Array;
  /** Logits per row in `logits` (a padded vocabulary may be wider than the shared one). */
  stride: number;
  weight: number;
}

/**
 * Adds `w · T(z)` of one model to `acc` (`[rows × vocab]`), reading only the first `vocab` logits of each row
 * so that padded vocabularies are truncated. With `first`, writes instead of adding (no clearing pass).
 */
export function accumulateLogits(acc: Float32Array, input: FusionInput, rows: number, vocab: number, mode: FusionMode, first: boolean): void {
  const { logits, stride, weight } = input;
  for (let r = 0; r < rows; r++) {
    const o = r * vocab;
    const z = r * stride;
    if (weight === 0) {
      if (first) acc.fill(0, o, o + vocab);
      continue;
    }
    const row = logits.subarray(z, z + vocab);
    weightedInto(acc.subarray(o, o + vocab), row, weight, mode === 'logprobs' ? logSumExp(row) : 0, !first);
  }
}

/**
 * Writes `scale · (T(z_backbone) + Σ parts)` into `out`: the backbone's term (weight 1) joined with partial
 * sums of weighted reasoner terms (each `[rows × vocab]`), in a single pass per row.
 */
export function combineWithBackbone(
  out: Float32Array,
  backbone: { logits: Float32Array; stride: number },
  parts: readonly Float32Array[],
  rows: number,
  vocab: number,
  mode: FusionMode,
  scale: number,
): Float32Array {
  const { logits, stride } = backbone;
  for (let r = 0; r < rows; r++) {
    const o = r * vocab;
    const z = r * stride;
    const row = logits.subarray(z, z + vocab);
    const shift = mode === 'logprobs' ? logSumExp(row) : 0;
    const into = out.subarray(o, o + vocab);
    if (parts.length === 0) {
      weightedInto(into, row, scale, shift, false);
      continue;
    }
    // Several parts (lanes, each the sum of its reasoners' terms, in the reasoners' order) are summed first, so that
    // the row is fused by the same operations as one part holding every term (a call's reasoners inline, the batch).
    let sum = parts[0]!.subarray(o, o + vocab);
    if (parts.length > 1) {
      if (partsSum.length < vocab) partsSum = new Float32Array(vocab);
      const joined = partsSum.subarray(0, vocab);
      joined.set(sum);
      for (const p of parts.slice(1)) weightedInto(joined, p.subarray(o, o + vocab), 1, 0, true);
      sum = joined;
    }
    combineInto(into, row, sum, shift, scale);
  }
  return out;
}

/** The row that several parts are summed into (this thread's; rows are fused one at a time). */
let partsSum = new Float32Array(0);

/**
 * `1 / Σ w` for normalised fusion (an anti-expert's negative weight counts negatively, as in proxy-tuning); 1
 * otherwise. Throws for a sum that is not above zero.
 */
export function fusionScale(weights: readonly number[], normalize: boolean): number {
  if (!normalize) return 1;
  const sum = weights.reduce((s, w) => s + w, 0);
  const refused = unnormalisableSum(sum);
  if (refused) throw new RangeError(refused);
  return 1 / sum;
}

/**
 * Why normalised fusion cannot divide by the weights' sum `sum`, or undefined when it can: dividing by zero has no
 * result, and dividing by a negative sum is a negative temperature, which would turn the distribution upside down
 * (the least likely tokens first).
 */
export function unnormalisableSum(sum: number): string | undefined {
  if (sum > 0 && Number.isFinite(1 / sum)) return undefined;
  const why = sum < 0 ? ' (below zero: dividing by it would invert the distribution)' : '';
  return `cannot normalise composed logits: the weights sum to ${sum === 0 ? 'zero' : sum}${why}`;
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
