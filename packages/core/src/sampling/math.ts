/** Numeric kernels for the sampling hot loop. */

const LOG2E = Math.LOG2E;
/** Adding and subtracting 1.5 * 2^52 rounds a double of magnitude < 2^51 to the nearest integer. */
const ROUND_MAGIC = 6755399441055744;
/** POW2_NEG[k] = 2^-k for k = 0 .. 1076 (the tail is subnormal, then 0). */
const POW2_NEG = new Float64Array(1077);
for (let k = 0; k < POW2_NEG.length; k++) POW2_NEG[k] = Math.pow(2, -k);

// Taylor coefficients of 2^f = e^(f ln 2): C_i = ln(2)^i / i!
const C = (() => {
  const out: number[] = [];
  let term = 1;
  for (let i = 1; i <= 9; i++) {
    term *= Math.LN2 / i;
    out.push(term);
  }
  return out;
})();
const C1 = C[0]!;
const C2 = C[1]!;
const C3 = C[2]!;
const C4 = C[3]!;
const C5 = C[4]!;
const C6 = C[5]!;
const C7 = C[6]!;
const C8 = C[7]!;
const C9 = C[8]!;

/**
 * e^x for x <= 0 (the only case softmax needs after subtracting the max), about 2-3x faster than
 * Math.exp in V8, with relative error below 1e-11 (far under float32 logit precision):
 * 2^(x log2 e) split into an integer power from a table and 2^f, |f| <= 1/2, by a degree-9
 * polynomial in Estrin form. Returns 0 for x <= -745 (where e^x underflows) and for NaN.
 * Do not call with x > 0.
 */
export function expNeg(x: number): number {
  if (!(x > -745)) return 0;
  const t = x * LOG2E;
  const r = t + ROUND_MAGIC - ROUND_MAGIC; // nearest integer, <= 0
  const f = t - r;
  const f2 = f * f;
  const p =
    1 + f * C1 + f2 * (C2 + f * C3 + f2 * (C4 + f * C5 + f2 * (C6 + f * C7 + f2 * (C8 + f * C9))));
  return p * POW2_NEG[-r | 0]!;
}
