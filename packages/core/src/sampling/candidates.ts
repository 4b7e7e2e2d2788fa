/**
 * Compact candidate lists (llama.cpp's `cur_p`): once the vocabulary has been narrowed, the later
 * stages of the chain work on (token id, logit) pairs of the survivors only instead of rescanning
 * the whole vocab row. Candidates are always kept in ascending token-id order, so every stage
 * computes exactly what it would on the dense row with the dropped entries set to -Infinity.
 */

import { expNeg } from './math.js';

/** A truncation stage that can also work on a compact candidate list. */
export interface CandidateFilter {
  /**
   * Narrow the candidates `idx[0 .. n)` / `val[0 .. n)` (ascending ids; values never -Infinity or
   * NaN) in place, keeping their order; return the new count (>= 1 whenever n >= 1).
   */
  filter(idx: Int32Array, val: Float32Array, n: number): number;
}

/** Growable scratch arrays for candidate lists; reused across tokens so the hot loop allocates nothing. */
export class CandidateBuffer {
  idx = new Int32Array(0);
  val = new Float32Array(0);
  /** Softmax weights for {@link drawCandidates}. */
  w = new Float64Array(0);

  reserve(n: number): void {
    if (this.idx.length >= n) return;
    const cap = Math.max(n, this.idx.length * 2);
    this.idx = new Int32Array(cap);
    this.val = new Float32Array(cap);
    this.w = new Float64Array(cap);
  }
}

/** Copy every entry of `logits` that is not -Infinity/NaN into `buf`; returns the count. */
export function gatherFinite(logits: Float32Array, buf: CandidateBuffer): number {
  const n = logits.length;
  buf.reserve(n);
  const idx = buf.idx;
  const val = buf.val;
  let c = 0;
  for (let i = 0; i < n; i++) {
    const v = logits[i]!;
    if (v > -Infinity) {
      idx[c] = i;
      val[c++] = v;
    }
  }
  return c;
}

/** Set every entry of `logits` whose id is not in `idx[0 .. n)` (ascending) to -Infinity. */
export function maskToCandidates(logits: Float32Array, idx: Int32Array, n: number): void {
  let from = 0;
  for (let j = 0; j < n; j++) {
    const id = idx[j]!;
    if (id > from) logits.fill(-Infinity, from, id);
    from = id + 1;
  }
  if (from < logits.length) logits.fill(-Infinity, from);
}

/**
 * Draw one candidate from softmax(val[0 .. n)) with `rng` (uniform [0,1)): max-subtracted
 * exponentials summed in float64, then an inverse-CDF scan in id order. Returns the token id, or
 * -1 when n = 0. A single candidate, or a +Infinity max (the first +Infinity candidate takes all
 * the mass), is returned without consuming the RNG.
 */
export function drawCandidates(
  idx: Int32Array,
  val: Float32Array,
  n: number,
  rng: () => number,
  w: Float64Array,
): number {
  if (n === 0) return -1;
  let m = val[0]!;
  let mj = 0;
  for (let j = 1; j < n; j++) {
    const v = val[j]!;
    if (v > m) {
      m = v;
      mj = j;
    }
  }
  if (n === 1 || m === Infinity) return idx[mj]!;
  let sum = 0;
  for (let j = 0; j < n; j++) {
    const e = expNeg(val[j]! - m);
    w[j] = e;
    sum += e;
  }
  const r = rng() * sum; // < sum, and acc below ends at exactly sum (same additions, same order)
  let acc = 0;
  for (let j = 0; j < n; j++) {
    acc += w[j]!;
    if (acc > r) return idx[j]!;
  }
  return idx[mj]!; // unreachable unless rng() >= 1
}
