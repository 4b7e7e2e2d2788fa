/**
 * An error-weighted scale-and-offset search for one block of an asymmetric (uint zero point) quantization, after
 * llama.cpp's `make_qkx2_quants` (the Q4_K search), written for MatMulNBits' integer zero point.
 *
 * Why: round-to-nearest over the block's full range (or a few shrunken copies of it, as the GGUF requantizer's
 * `quantizeBlock` tries) only moves the scale; the offset stays pinned to the block's minimum, so a block whose
 * extremes are lopsided wastes levels. Here each candidate grid gives codes, then the scale and offset are fitted
 * to those codes by weighted least squares, the offset rounded to an integer zero point and the scale refitted.
 * Errors are weighted by `rms(block) + |x|` (Q4_K's choice, no calibration data): large weights, which move
 * a product most, are kept more exactly than small ones.
 */

/** Candidate grids: the full range scaled to `top + RMIN + RDELTA·k` levels, k = 0..NSTEP (llama.cpp's Q4_K values). */
const RMIN = -1;
const RDELTA = 0.1;
const NSTEP = 20;

/**
 * Quantizes `x[from, from + n)` to codes in `[0, top]` (written to `codes[0, n)`) with `x ≈ scale·(code − zp)`;
 * returns `[scale, zp]`. All-zero (or constant zero) blocks give scale 0.
 */
export function searchBlock(x: Float32Array, from: number, n: number, top: number, codes: Uint8Array): [number, number] {
  let lo = Infinity;
  let hi = -Infinity;
  let sumSq = 0;
  for (let i = from; i < from + n; i++) {
    const v = x[i]!;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
    sumSq += v * v;
  }
  // Zero must stay representable (code = zp), as in every asymmetric format with an integer zero point.
  lo = Math.min(lo, 0);
  hi = Math.max(hi, 0);
  if (hi === lo) {
    codes.fill(0, 0, n);
    return [0, 0];
  }
  const rms = Math.sqrt(sumSq / n);
  const w = new Float64Array(n);
  for (let i = 0; i < n; i++) w[i] = rms + Math.abs(x[from + i]!);

  /** Weighted squared error of `(scale, zp)` with round-to-nearest codes. */
  const error = (scale: number, zp: number): number => {
    let err = 0;
    for (let i = 0; i < n; i++) {
      const v = x[from + i]!;
      const q = Math.min(top, Math.max(0, Math.round(v / scale) + zp));
      const d = (q - zp) * scale - v;
      err += w[i]! * d * d;
    }
    return err;
  };

  let bestScale = Math.fround((hi - lo) / top);
  let bestZp = Math.min(top, Math.max(0, Math.round(-lo / bestScale)));
  let bestErr = error(bestScale, bestZp);
  const l = new Uint8Array(n);
  for (let k = 0; k <= NSTEP; k++) {
    const iscale = (top + RMIN + RDELTA * k) / (hi - lo);
    let sw = 0;
    let sl = 0;
    let sl2 = 0;
    let sx = 0;
    let sxl = 0;
    for (let i = 0; i < n; i++) {
      const v = x[from + i]!;
      const q = Math.min(top, Math.max(0, Math.round(iscale * (v - lo))));
      l[i] = q;
      const wi = w[i]!;
      sw += wi;
      sl += wi * q;
      sl2 += wi * q * q;
      sx += wi * v;
      sxl += wi * v * q;
    }
    // Weighted least squares x ≈ a·l + b on these codes, b ≤ 0 so that zero lies on the grid.
    const det = sw * sl2 - sl * sl;
    if (det <= 0) continue;
    let a = (sw * sxl - sx * sl) / det;
    let b = (sl2 * sx - sl * sxl) / det;
    if (b > 0) {
      b = 0;
      a = sxl / sl2;
    }
    if (!(a > 0)) continue;
    // The offset must be an integer number of steps: round it, then refit the scale for these codes.
    const zp = Math.min(top, Math.max(0, Math.round(-b / a)));
    let num = 0;
    let den = 0;
    for (let i = 0; i < n; i++) {
      const c = l[i]! - zp;
      num += w[i]! * x[from + i]! * c;
      den += w[i]! * c * c;
    }
    if (!(den > 0) || !(num > 0)) continue;
    const scale = Math.fround(num / den);
    const err = error(scale, zp);
    if (err < bestErr) {
      bestErr = err;
      bestScale = scale;
      bestZp = zp;
    }
  }
  for (let i = 0; i < n; i++) codes[i] = Math.min(top, Math.max(0, Math.round(x[from + i]! / bestScale) + bestZp));
  return [bestScale, bestZp];
}
