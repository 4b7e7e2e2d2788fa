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
  const stored = storedColumns(m);
  const blocks = blocksPerRow(m);
  const zb = zpRowBytes(m);
  const mid = m.bits === 4 ? 8 : 128;
  const { blockSize, data, scales, zeroPoints } = m;
  const zeroPoint = (b: number) => (zeroPoints ? (m.bits === 8 ? zeroPoints[r * zb + b]! : (zeroPoints[r * zb + (b >> 1)]! >> ((b & 1) * 4)) & 15) : mid);
  const code = (c: number) => {
    const i = r * blocks * blockSize + c;
    return m.bits === 8 ? data[i]! : (data[i >> 1]! >> ((i & 1) * 4)) & 15;
  };
  // Offset columns multiply the sum of a block of the input: each is added to its block's columns instead, in the same
  // sum as the column's own value (one rounding to float32, as the operator's would be).
  const offsets = new Float64Array(stored > m.cols ? stored - m.cols : 0);
  for (let k = 0; k < offsets.length; k++) {
    const c = m.cols + k;
    const b = Math.floor(c / blockSize);
    offsets[k] = (code(c) - zeroPoint(b)) * scales[r * blocks + b]!;
  }
  for (let b = 0; b < blocks; b++) {
    const first = b * blockSize;
    const end = Math.min(blockSize, m.cols - first);
    if (end <= 0) break;
    const scale = scales[r * blocks + b]!;
    const zp = zeroPoint(b);
    const base = (r * blocks + b) * blockSize;
    // (block b's columns take offset column b; none added where there are none, which keeps a -0 as it is)
    const offset = offsets.length > 0 ? offsets[b]! : undefined;
    const put = (c: number, v: number) => {
      out[c] = offset === undefined ? v : v + offset;
    };
    if (m.bits === 8) for (let j = 0; j < end; j++) put(first + j, (data[base + j]! - zp) * scale);
    else {
      // (two codes a byte, low nibble first; a block starts on a byte: its size is even)
      for (let j = 0; j < end; j += 2) {
        const byte = data[(base + j) >> 1]!;
        put(first + j, ((byte & 15) - zp) * scale);
        if (j + 1 < end) put(first + j + 1, ((byte >> 4) - zp) * scale);
      }
    }
  }
  return out.subarray(0, m.cols);
}
