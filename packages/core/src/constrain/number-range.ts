/**
 * Exact EBNF for JSON numbers within bounds. XGrammar 0.1.27 gets two-sided bounds wrong (an integer in
 * [-5, 120] admits 121…129; a number in [0, 3] admits 3.5; exclusive bounds admit the bound; decimal bounds
 * admit any character) and ignores `multipleOf`, so bounded numbers are written here and spliced into its
 * grammar. Fractions are written with 1–6 digits ending in a non-zero digit, so `k.f` lies strictly between
 * `k` and `k + 1`; a bound that is not an integer keeps the numbers whose integer part alone proves them in
 * range (a subset of the valid values: every number written is valid).
 */
import { literalTrie } from './literal-trie.js';
import { ConstraintError } from './types.js';

/** Numeric keywords of one schema. */
export interface NumericBounds {
  integer: boolean;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  multipleOf?: number;
}

/** Integer ranges enumerated for `multipleOf` at most this many values wide. */
const MAX_ENUMERATED = 2048;
/**
 * Digits of an integer part on a side without a bound, at most: as XGrammar's own numbers are bounded
 * (xgrammar-factory.ts), else a model could run on with digits (`minimum: 0` took 400).
 */
const OPEN_DIGITS = 32;
const FRACTION = '"." [0-9]{0,5} [1-9]';

/** Same-length digit strings lo..hi (leading zeros allowed): one EBNF sequence per alternative. */
function sameLength(lo: string, hi: string): string[] {
  if (lo.length === 1) return [lo === hi ? `"${lo}"` : `[${lo}-${hi}]`];
  if (lo[0] === hi[0]) return sameLength(lo.slice(1), hi.slice(1)).map((rest) => `"${lo[0]}" ${rest}`);
  const n = lo.length - 1;
  const out: string[] = [];
  const loRest = lo.slice(1);
  const hiRest = hi.slice(1);
  const allZero = /^0+$/.test(loRest);
  const allNine = /^9+$/.test(hiRest);
  const firstFull = allZero ? Number(lo[0]) : Number(lo[0]) + 1;
  const lastFull = allNine ? Number(hi[0]) : Number(hi[0]) - 1;
  if (!allZero) out.push(...sameLength(loRest, '9'.repeat(n)).map((rest) => `"${lo[0]}" ${rest}`));
  if (firstFull <= lastFull) out.push(`${firstFull === lastFull ? `"${firstFull}"` : `[${firstFull}-${lastFull}]`} [0-9]{${n}}`);
  if (!allNine) out.push(...sameLength('0'.repeat(n), hiRest).map((rest) => `"${hi[0]}" ${rest}`));
  return out;
}

/** Decimal integers in [lo, hi] (0 ≤ lo ≤ hi; hi may be Infinity: up to {@link OPEN_DIGITS} digits), no leading zeros: EBNF alternatives. */
function naturalRange(lo: number, hi: number): string[] {
  const out: string[] = [];
  const loLen = String(lo).length;
  const finiteHi = Number.isFinite(hi) ? hi : 10 ** loLen - 1;
  // Lengths whose every number is in range are one `[1-9] [0-9]{m,n}`: XGrammar 0.1.27 admits out-of-range
  // numbers when many alternatives of neighbouring lengths share a prefix (measured: [17, 99999999] took
  // 100000000), and one counted repetition avoids that.
  let full: [number, number] | undefined;
  const flush = () => {
    if (full) out.push(full[0] === 1 ? (full[1] === 1 ? '[0-9]' : `([0-9] | [1-9] [0-9]{1,${full[1] - 1}})`) : `[1-9] [0-9]{${full[0] - 1},${full[1] - 1}}`);
    full = undefined;
  };
  for (let len = loLen; len <= String(finiteHi).length; len++) {
    const a = Math.max(lo, len === 1 ? 0 : 10 ** (len - 1));
    const b = Math.min(finiteHi, 10 ** len - 1);
    if (a > b) continue;
    if (a === (len === 1 ? 0 : 10 ** (len - 1)) && b === 10 ** len - 1) {
      full = full ? [full[0], len] : [len, len];
      continue;
    }
    flush();
    out.push(...sameLength(String(a), String(b)));
  }
  flush();
  if (!Number.isFinite(hi)) out.push(`[1-9] [0-9]{${loLen},${OPEN_DIGITS - 1}}`);
  return out;
}

const alt = (parts: string[]) => (parts.length === 1 ? parts[0]! : `(${parts.join(' | ')})`);

/**
 * One side of the number line: magnitudes m ≥ 0 (written as-is, or after "-"), plain integers in
 * [intLo, intHi] and `k.f` for k in [fracLo, fracHi].
 */
function side(sign: string, intLo: number, intHi: number, fracLo: number, fracHi: number): string[] {
  const out: string[] = [];
  if (intLo <= intHi) out.push(...naturalRange(intLo, intHi).map((d) => `${sign}${d}`));
  if (fracLo <= fracHi) out.push(`${sign}${alt(naturalRange(fracLo, fracHi))} ${FRACTION}`);
  return out;
}

/** An EBNF expression for the JSON numbers (or integers) these bounds admit. */
export function numberRangeEbnf(b: NumericBounds, where: string): string {
  const lo = Math.max(b.minimum ?? -Infinity, b.exclusiveMinimum ?? -Infinity);
  const hi = Math.min(b.maximum ?? Infinity, b.exclusiveMaximum ?? Infinity);
  const loStrict = b.exclusiveMinimum !== undefined && b.exclusiveMinimum >= (b.minimum ?? -Infinity);
  const hiStrict = b.exclusiveMaximum !== undefined && b.exclusiveMaximum <= (b.maximum ?? Infinity);
  // Smallest and largest integers in range.
  const iLo = loStrict && Number.isInteger(lo) ? lo + 1 : Math.ceil(lo);
  const iHi = hiStrict && Number.isInteger(hi) ? hi - 1 : Math.floor(hi);
  for (const v of [iLo, iHi]) {
    if (Number.isFinite(v) && !Number.isSafeInteger(v)) throw new ConstraintError(`${where}: bound ${v} is beyond the safe integer range`);
  }
  if (b.multipleOf !== undefined) {
    if (!b.integer || !Number.isInteger(b.multipleOf) || !Number.isFinite(iLo) || !Number.isFinite(iHi) || iHi - iLo > MAX_ENUMERATED) {
      throw new ConstraintError(
        `${where}: multipleOf is enforced only on integers with both bounds at most ${MAX_ENUMERATED} apart (XGrammar ignores it)`,
      );
    }
    const values: string[] = [];
    for (let v = iLo; v <= iHi; v++) if (v % b.multipleOf === 0) values.push(String(v));
    if (values.length === 0) throw new ConstraintError(`${where}: no integer in range is a multiple of ${b.multipleOf}`);
    // As a prefix tree: the alternation "-20" | "-15" | … admitted -25.
    return literalTrie(values);
  }
  const parts: string[] = [];
  // k.f lies in (k, k+1): it is in range when k ≥ lo and k + 1 ≤ hi (strict bounds included).
  const fLo = Math.ceil(lo);
  const fHi = Number.isFinite(hi) ? Math.floor(hi) - 1 : Infinity;
  // Non-negative side: integers [max(iLo,0), iHi], fractions k ∈ [max(fLo,0), fHi].
  parts.push(...side('', Math.max(iLo, 0), iHi, Math.max(fLo, 0), b.integer ? -1 : fHi));
  // Negative side, by magnitude m: -m in range ⇔ m ∈ [-iHi, -iLo]; -(m.f) ∈ (-(m+1), -m): needs -(m+1) ≥ lo, -m ≤ hi.
  const nIntLo = Math.max(-iHi, 1);
  const nIntHi = -iLo;
  const nFracLo = Math.max(Number.isFinite(hi) ? Math.ceil(-hi) : 0, 0);
  const nFracHi = Number.isFinite(lo) ? Math.floor(-lo) - 1 : Infinity;
  parts.push(...side('"-" ', nIntLo, nIntHi, nFracLo, b.integer ? -1 : nFracHi));
  if (parts.length === 0) {
    throw new ConstraintError(
      `${where}: no number the engine writes satisfies these bounds (minimum/maximum): it writes integers, and fractions ` +
        'k.f only in whole units k..k+1 inside the range; widen the range to hold an integer or a whole unit',
    );
  }
  return alt(parts);
}
