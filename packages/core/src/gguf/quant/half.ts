/** IEEE binary16 → float32, through a table of all 65536 bit patterns (built once). */
let table: Float32Array | undefined;

/** The float32 value of every float16 bit pattern. */
export function halfTable(): Float32Array {
  if (table) return table;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    if (exp === 0) t[h] = sign * frac * 2 ** -24;
    else if (exp === 31) t[h] = frac ? NaN : sign * Infinity;
    else t[h] = sign * (1 + frac / 1024) * 2 ** (exp - 15);
  }
  return (table = t);
}

/** Reads the float16 at byte `at` of `b` as float32. */
export function halfAt(b: Uint8Array, at: number): number {
  return halfTable()[b[at]! | (b[at + 1]! << 8)]!;
}
