/**
 * IEEE-754 binary16 conversions. Apart from the graph builder, so that a decoder session (which writes fp16 inputs)
 * does not load the protobuf modules the builder needs.
 */
const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** IEEE-754 binary16 bits of one float32 bit pattern, rounded to nearest, ties to even (subnormals, ±inf, NaN kept). */
export function float32BitsToFloat16(bits: number): number {
  const sign = (bits >>> 16) & 0x8000;
  const abs = bits & 0x7fffffff;
  if (abs >= 0x7f800000) return sign | (abs > 0x7f800000 ? 0x7e00 | ((abs >>> 13) & 0x3ff) : 0x7c00);
  if (abs >= 0x477ff000) return sign | 0x7c00; // ≥ 65520 rounds past the largest half (65504)
  if (abs >= 0x38800000) {
    // Normal half: re-bias the exponent (127 → 15), round the 13 dropped mantissa bits to nearest even.
    const m = abs - 0x38000000;
    return sign | ((m + 0x0fff + ((m >>> 13) & 1)) >>> 13);
  }
  if (abs <= 0x33000000) return sign; // ≤ 2^-25 (the tie rounds to even zero)
  // Subnormal half: value = mantissa · 2^-24.
  const e = abs >>> 23;
  const mant = (abs & 0x7fffff) | 0x800000;
  const shift = 126 - e; // 14..24
  let r = mant >>> shift;
  const rem = mant & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  if (rem > half || (rem === half && (r & 1) === 1)) r++;
  return sign | r;
}

/** Converts a float32 number to binary16 bits (round to nearest even). */
export function float32ToFloat16(x: number): number {
  f32Scratch[0] = x;
  return float32BitsToFloat16(u32Scratch[0]!);
}

/** Converts a whole Float32Array to binary16 bits (round to nearest even), without per-element allocation. */
export function float32ArrayToFloat16(src: Float32Array): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < bits.length; i++) {
    const b = bits[i]!;
    const abs = b & 0x7fffffff;
    // Fast path: normal halves (the overwhelming majority of weights).
    if (abs >= 0x38800000 && abs < 0x477ff000) {
      const m = abs - 0x38000000;
      out[i] = ((b >>> 16) & 0x8000) | ((m + 0x0fff + ((m >>> 13) & 1)) >>> 13);
    } else {
      out[i] = float32BitsToFloat16(b);
    }
  }
  return out;
}

/** Converts binary16 bits back to a float32 number. */
export function float16ToFloat32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 31) return m ? NaN : sign * Infinity;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}
