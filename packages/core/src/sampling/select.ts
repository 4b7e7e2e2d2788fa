/** Selection primitives for the hot loop: argmax and k-th-largest without sorting the vocabulary. */
import { maxIndexOf } from './logit-kernels.js';

/** From this many values on, the argmax runs in WebAssembly SIMD (below, the copy and call cost more than they save). */
const SIMD_MIN_LENGTH = 1024;

/**
 * Index of the largest of `logits[0 .. limit)` in one pass; the first one on ties. NaN is never
 * chosen over a number. Returns 0 when every entry is -Infinity/NaN, -1 when the range is empty.
 * @param limit how many leading entries to consider (e.g. the real vocab size of a padded row); default all.
 */
export function argmax(logits: Float32Array, limit?: number): number {
  const n = limit === undefined ? logits.length : Math.min(Math.max(0, Math.floor(limit)), logits.length);
  if (n === 0) return -1;
  return Math.max(0, maxIndexIn(logits, 0, n));
}

/**
 * Index of the largest of `logits[from .. to)`, the first one on ties, NaN never chosen; -1 when none is
 * above -Infinity.
 */
export function maxIndexIn(logits: Float32Array, from: number, to: number): number {
  if (to - from >= SIMD_MIN_LENGTH) {
    const at = maxIndexOf(logits.subarray(from, to));
    return at < 0 ? -1 : from + at;
  }
  // (shorter ranges: a grammar's allowed runs, many per token) Four independent running maxima break the
  // compare-and-branch dependency chain: ~1.6x faster than one lane.
  let b0 = -Infinity, b1 = -Infinity, b2 = -Infinity, b3 = -Infinity;
  let i0 = -1, i1 = -1, i2 = -1, i3 = -1;
  let i = from;
  for (; i + 3 < to; i += 4) {
    const v0 = logits[i]!, v1 = logits[i + 1]!, v2 = logits[i + 2]!, v3 = logits[i + 3]!;
    if (v0 > b0) { b0 = v0; i0 = i; }
    if (v1 > b1) { b1 = v1; i1 = i + 1; }
    if (v2 > b2) { b2 = v2; i2 = i + 2; }
    if (v3 > b3) { b3 = v3; i3 = i + 3; }
  }
  // Merge the lanes keeping the first index among equal maxima (straight-line: this runs once per range of
  // allowed tokens under a grammar, many times per token).
  let best = b0;
  let idx = i0;
  if (b1 > best || (b1 === best && b1 !== -Infinity && i1 < idx)) { best = b1; idx = i1; }
  if (b2 > best || (b2 === best && b2 !== -Infinity && i2 < idx)) { best = b2; idx = i2; }
  if (b3 > best || (b3 === best && b3 !== -Infinity && i3 < idx)) { best = b3; idx = i3; }
  for (; i < to; i++) {
    const v = logits[i]!;
    if (v > best) { best = v; idx = i; }
  }
  return idx;
}

/**
 * Value of the k-th largest (1-based) of `a[0 .. n)`, reordering `a` in place (Hoare quickselect
 * with a median-of-three pivot; O(n) on average, robust to many equal keys). `a` must hold no NaN.
 * After the call, `a[0 .. k-1)` are >= the result.
 */
export function quickselectKthLargest(a: Float32Array, n: number, k: number): number {
  if (k < 1 || k > n) throw new RangeError(`quickselectKthLargest: k=${k} outside [1, ${n}]`);
  const target = k - 1;
  let lo = 0;
  let hi = n - 1;
  while (hi > lo) {
    const mid = (lo + hi) >>> 1;
    const x = a[lo]!;
    const y = a[mid]!;
    const z = a[hi]!;
    // median of three
    const pivot = x < y ? (y < z ? y : x < z ? z : x) : x < z ? x : y < z ? z : y;
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (a[i]! > pivot) i++;
      while (a[j]! < pivot) j--;
      if (i <= j) {
        const t = a[i]!;
        a[i] = a[j]!;
        a[j] = t;
        i++;
        j--;
      }
    }
    // now a[lo..j] >= pivot, a[i..hi] <= pivot, a[j+1..i-1] == pivot
    if (target <= j) hi = j;
    else if (target >= i) lo = i;
    else return a[target]!;
  }
  return a[target]!;
}

/**
 * Value of the k-th largest (1-based) of the entries of `values[0 .. n)` that are not -Infinity or
 * NaN, together with how many entries are strictly greater, using a size-k min-heap in `heap`
 * (capacity >= k). One pass; most entries cost a single comparison against the heap root, so this
 * is the fast path for small k. Returns undefined when fewer than k entries are eligible.
 */
export function heapKthLargest(
  values: Float32Array,
  n: number,
  k: number,
  heap: Float32Array,
): { value: number; greater: number } | undefined {
  if (k < 1) throw new RangeError(`heapKthLargest: k must be >= 1 (got ${k})`);
  let size = 0;
  let i = 0;
  // fill phase
  for (; i < n && size < k; i++) {
    const v = values[i]!;
    if (!(v > -Infinity)) continue;
    // sift up
    let c = size++;
    while (c > 0) {
      const p = (c - 1) >> 1;
      const pv = heap[p]!;
      if (pv <= v) break;
      heap[c] = pv;
      c = p;
    }
    heap[c] = v;
  }
  if (size < k) return undefined;
  let root = heap[0]!;
  for (; i < n; i++) {
    const v = values[i]!;
    if (!(v > root)) continue; // also rejects NaN and -Infinity
    // replace root and sift down
    let c = 0;
    for (;;) {
      const l = 2 * c + 1;
      if (l >= k) break;
      const r = l + 1;
      let m = l;
      let mv = heap[l]!;
      if (r < k) {
        const rv = heap[r]!;
        if (rv < mv) {
          m = r;
          mv = rv;
        }
      }
      if (mv >= v) break;
      heap[c] = mv;
      c = m;
    }
    heap[c] = v;
    root = heap[0]!;
  }
  let greater = 0;
  for (let j = 0; j < k; j++) if (heap[j]! > root) greater++;
  return { value: root, greater };
}
