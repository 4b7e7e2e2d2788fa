/** Reference arithmetic over logits, in float64, for tests that check fused or transformed logits by hand. */

/** log-softmax of the first `n` logits of `z`. */
export function logSoftmax64(z: ArrayLike<number>, n: number): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < n; i++) max = Math.max(max, z[i]!);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += Math.exp(z[i]! - max);
  const lse = max + Math.log(sum);
  return Float64Array.from({ length: n }, (_, i) => z[i]! - lse);
}

/** The index of the largest value (the first, on a tie). */
export function argmax(z: ArrayLike<number>): number {
  let b = 0;
  for (let i = 1; i < z.length; i++) if (z[i]! > z[b]!) b = i;
  return b;
}
