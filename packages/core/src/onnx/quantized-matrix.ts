/**
 * Helpers for {@link QuantizedMatrix} (MatMulNBits layout): row slices and row concatenation (fused GGUF
 * projections, the builder's one q/k/v product), and dequantization (int8 prompt graphs; tests, error measurements).
 */
import type { QuantizedMatrix, WeightMatrix } from './llama-spec.js';

/** True for a block-quantized matrix. */
export function isQuantized(m: WeightMatrix): m is QuantizedMatrix {
  return !(m instanceof Float32Array);
}

/** Columns stored per row: the matrix's own plus its offset columns. */
export function storedColumns(m: QuantizedMatrix): number {
  return m.cols + (m.offsetColumns ?? 0);
}

/** Blocks per row (a partial last block counts). */
export function blocksPerRow(m: QuantizedMatrix): number {
  return Math.ceil(storedColumns(m) / m.blockSize);
}

/** Bytes of codes per row. */
export function rowBytes(m: QuantizedMatrix): number {
  return (blocksPerRow(m) * m.blockSize * m.bits) / 8;
}

/** Bytes of zero points per row (4-bit: two per byte). */
function zpRowBytes(m: QuantizedMatrix): number {
  const blocks = blocksPerRow(m);
  return m.bits === 4 ? Math.ceil(blocks / 2) : blocks;
}

/** Rows [from, from + n) of a dense (`cols` columns) or quantized matrix. */
export function sliceRows(m: WeightMatrix, from: number, n: number, cols: number): WeightMatrix {
  if (!isQuantized(m)) return m.slice(from * cols, (from + n) * cols);
  const blocks = blocksPerRow(m);
  const rb = rowBytes(m);
  const zb = zpRowBytes(m);
  return {
    ...m,
    rows: n,
    data: m.data.slice(from * rb, (from + n) * rb),
    scales: m.scales.slice(from * blocks, (from + n) * blocks),
    ...(m.zeroPoints ? { zeroPoints: m.zeroPoints.slice(from * zb, (from + n) * zb) } : {}),
  };
}

/** The rows of `runs` (each `[from, n]`), in that order, as one matrix (dense of `cols` columns, or quantized). */
export function pickRows(m: WeightMatrix, runs: readonly (readonly [number, number])[], cols: number): WeightMatrix {
  const parts = runs.map(([from, n]) => sliceRows(m, from, n, cols));
  if (isQuantized(m)) return concatRows(parts as QuantizedMatrix[])!;
  return concatArrays(parts as Float32Array[], (n) => new Float32Array(n));
}

/** Arrays one after another in a new array made by `make`. */
function concatArrays<T extends Uint8Array | Float32Array>(parts: T[], make: (n: number) => T): T {
  const out = make(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** The midpoint zero points of a matrix without explicit ones, packed. */
function defaultZeroPoints(m: QuantizedMatrix): Uint8Array {
  return new Uint8Array(m.rows * zpRowBytes(m)).fill(m.bits === 4 ? 0x88 : 128);
}

/** Stacks quantized matrices of one layout (bits, block size, columns, offset columns) row-wise; undefined when they differ. */
export function concatRows(ms: QuantizedMatrix[]): QuantizedMatrix | undefined {
  const [a] = ms;
  const same = (m: QuantizedMatrix) =>
    m.bits === a!.bits && m.blockSize === a!.blockSize && m.cols === a!.cols && (m.offsetColumns ?? 0) === (a!.offsetColumns ?? 0);
  if (!a || !ms.every(same)) return undefined;
  const withZp = ms.some((m) => m.zeroPoints);
  return {
    kind: 'nbits',
    rows: ms.reduce((n, m) => n + m.rows, 0),
    cols: a.cols,
    bits: a.bits,
    blockSize: a.blockSize,
    data: concatArrays(ms.map((m) => m.data), (n) => new Uint8Array(n)),
    scales: concatArrays(ms.map((m) => m.scales), (n) => new Float32Array(n)),
    ...(withZp ? { zeroPoints: concatArrays(ms.map((m) => m.zeroPoints ?? defaultZeroPoints(m)), (n) => new Uint8Array(n)) } : {}),
    ...(a.offsetColumns ? { offsetColumns: a.offsetColumns } : {}),
  };
}

/**
 * The float32 values of a matrix, `[rows, cols]` row-major: (code - zero point) · scale, plus each block's
 * offset where the matrix has offset columns (the matrix the operator applies).
 */
export function dequantizeMatrix(m: WeightMatrix): Float32Array {
  if (!isQuantized(m)) return m;
  const out = new Float32Array(m.rows * m.cols);
  const row = new Float32Array(storedColumns(m));
  for (let r = 0; r < m.rows; r++) out.set(dequantizeRow(m, r, row), r * m.cols);
  return out;
}

/**
 * Row `r`'s values as the operator applies them, into `out` (at least `cols` long, reused across rows): each block's
 * offset added where the matrix has offset columns. Returns them (`out`'s first `cols`).
 */
export function dequantizeRow(m: QuantizedMatrix, r: number, out: Float32Array): Float32Array {
  const blocks = blocksPerRow(m);
  const zb = zpRowBytes(m);
  const mid = m.bits === 4 ? 8 : 128;
  const { blockSize, data, scales, zeroPoints, cols } = m;
  const offsetColumns = storedColumns(m) - cols;
  for (let b = 0; b < blocks; b++) {
    const first = b * blockSize;
    const end = Math.min(blockSize, cols - first);
    if (end <= 0) break;
    const scale = scales[r * blocks + b]!;
    const zp = zeroPoints ? (m.bits === 8 ? zeroPoints[r * zb + b]! : (zeroPoints[r * zb + (b >> 1)]! >> ((b & 1) * 4)) & 15) : mid;
    const base = (r * blocks + b) * blockSize;
    if (offsetColumns > 0) {
      // Offset column b multiplies the sum of block b of the input: it is added to the block's values instead, in the
      // same sum (one rounding to float32, as the operator's would be).
      const offset = offsetOf(m, r, cols + b);
      for (let j = 0; j < end; j++) out[first + j] = (codeAt(m, r, first + j) - zp) * scale + offset;
    } else if (m.bits === 8) {
      for (let j = 0; j < end; j++) out[first + j] = (data[base + j]! - zp) * scale;
    } else {
      // (two codes a byte, low nibble first; a block starts on a byte: its size is even)
      for (let j = 0; j < end; j += 2) {
        const byte = data[(base + j) >> 1]!;
        out[first + j] = ((byte & 15) - zp) * scale;
        if (j + 1 < end) out[first + j + 1] = ((byte >> 4) - zp) * scale;
      }
    }
  }
  return out.subarray(0, cols);
}

/** Row `r`'s code at stored column `c`. */
function codeAt(m: QuantizedMatrix, r: number, c: number): number {
  const i = r * blocksPerRow(m) * m.blockSize + c;
  return m.bits === 8 ? m.data[i]! : (m.data[i >> 1]! >> ((i & 1) * 4)) & 15;
}

/** Row `r`'s value at stored column `c` (an offset column), unrounded. */
function offsetOf(m: QuantizedMatrix, r: number, c: number): number {
  const blocks = blocksPerRow(m);
  const b = Math.floor(c / m.blockSize);
  const zb = zpRowBytes(m);
  const zp = m.zeroPoints ? (m.bits === 8 ? m.zeroPoints[r * zb + b]! : (m.zeroPoints[r * zb + (b >> 1)]! >> ((b & 1) * 4)) & 15) : m.bits === 4 ? 8 : 128;
  return (codeAt(m, r, c) - zp) * m.scales[r * blocks + b]!;
}
