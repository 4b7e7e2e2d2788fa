/**
 * GGUF tensors → MatMulNBits matrices ({@link QuantizedMatrix}).
 *
 * Without loss where ggml's block is integer codes times one float scale per sub-block: the codes move to
 * unsigned codes around the operator's default zero point (8 for 4 bits, 128 for 8 bits), the scale is the
 * float32 that llama.cpp's dequantizer multiplies by, so (code - zp) · scale is llama.cpp's value bit for bit:
 *   Q4_0 → 4-bit, block 32 · Q3_K → 4-bit, block 16 · Q8_0, Q5_0, IQ4_NL, IQ4_XS, MXFP4 → 8-bit, block 32 ·
 *   Q6_K → 8-bit, block 16.
 *
 * The types with a per-block offset (x = S·q - O: Q4_1, Q4_K → 4-bit block 32; Q2_K → 4-bit block 16;
 * Q5_1, Q5_K → 8-bit block 32) keep their codes and scales; the zero point is O/S rounded to an integer,
 * and what that rounding leaves, c = S·zp - O per block, is added through offset columns: the input's sum
 * over each block times c, as extra columns of the same product (see `QuantizedMatrix.offsetColumns`).
 * Only c is quantized (per block of corrections, symmetric, same bits), so the error added is a small
 * fraction of the type's own (measured in the tests; README). onnxruntime 1.30 also takes float zero
 * points, which would be exact, but only in its unpacked fp32 path: several times slower per token.
 *
 * Embeddings (GatherBlockQuantized has no offset columns) of those types are requantized to 8 bits,
 * block 32, round-to-nearest with zero points.
 */
import type { QuantizedMatrix } from '../../onnx/llama-spec.js';
import type { BlockType } from './block.js';
import { BLOCK_TYPES } from './index.js';

/** True when `type` maps onto MatMulNBits without changing any value. */
export function isLossless(type: number): boolean {
  return BLOCK_TYPES.get(type)?.codes !== undefined;
}

/**
 * The layout {@link toNBits} gives a tensor of `type` with `offsetColumns: false`, known before its bytes are read: the
 * repacked codes' bits and sub-block, or 8 bits, block 32, with zero points where the type's blocks carry offsets.
 */
export function nbitsLayoutOf(type: number): { bits: 4 | 8; blockSize: number; zeroPoints: boolean } {
  const t = BLOCK_TYPES.get(type);
  if (!t) throw new Error(`ggml type ${type} is not a block-quantized type`);
  const c = t.codes;
  return c ? { bits: c.maxCode - c.minCode < 16 ? 4 : 8, blockSize: c.subBlock, zeroPoints: false } : { bits: 8, blockSize: 32, zeroPoints: true };
}

/**
 * Repacks the raw bytes of a `[rows, cols]` tensor of a ggml block type as a MatMulNBits matrix. With
 * `offsetColumns: false` (embeddings), types with offsets are requantized to 8 bits instead.
 */
export function toNBits(type: number, bytes: Uint8Array, rows: number, cols: number, opts: { offsetColumns?: boolean } = {}): QuantizedMatrix {
  const t = BLOCK_TYPES.get(type);
  if (!t) throw new Error(`ggml type ${type} is not a block-quantized type`);
  if (t.codes) return repack(t, bytes, rows, cols);
  return opts.offsetColumns === false ? requantize8(t, bytes, rows, cols) : withOffsets(t, bytes, rows, cols);
}

function repack(t: BlockType, bytes: Uint8Array, rows: number, cols: number): QuantizedMatrix {
  const c = t.codes!;
  const bits: 4 | 8 = c.maxCode - c.minCode < 16 ? 4 : 8;
  const mid = bits === 4 ? 8 : 128;
  const n = rows * cols;
  const data = new Uint8Array((n * bits) / 8);
  const scales = new Float32Array(n / c.subBlock);
  const codes = new Int16Array(t.blockElems);
  const blockScales = new Float32Array(t.blockElems / c.subBlock);
  const subPerBlock = blockScales.length;
  for (let b = 0, at = 0, e = 0; e < n; b++, at += t.blockBytes, e += t.blockElems) {
    c.read(bytes, at, codes, blockScales);
    scales.set(blockScales, b * subPerBlock);
    if (bits === 8) for (let i = 0; i < t.blockElems; i++) data[e + i] = codes[i]! + mid;
    else for (let i = 0; i < t.blockElems; i += 2) data[(e + i) >> 1] = (codes[i]! + mid) | ((codes[i + 1]! + mid) << 4);
  }
  return { kind: 'nbits', rows, cols, bits, blockSize: c.subBlock, data, scales };
}

/** Writes one code (4-bit: nibble `i` of the row's bytes from `rowAt`). */
function put(data: Uint8Array, bits: number, rowAt: number, i: number, code: number): void {
  if (bits === 8) data[rowAt + i] = code;
  else data[rowAt + (i >> 1)]! |= code << ((i & 1) * 4);
}
function putZp(zps: Uint8Array, bits: number, rowAt: number, b: number, zp: number): void {
  if (bits === 8) zps[rowAt + b] = zp;
  else zps[rowAt + (b >> 1)]! |= zp << ((b & 1) * 4);
}

function withOffsets(t: BlockType, bytes: Uint8Array, rows: number, cols: number): QuantizedMatrix {
  const a = t.affine!;
  const bits: 4 | 8 = a.maxCode < 16 ? 4 : 8;
  const top = (1 << bits) - 1;
  const mid = bits === 4 ? 8 : 128;
  const bs = a.subBlock;
  const mainBlocks = cols / bs;
  const offsetColumns = mainBlocks;
  const blocks = Math.ceil((cols + offsetColumns) / bs);
  const rowCodes = blocks * bs;
  const rowBytes = (rowCodes * bits) / 8;
  const zpRow = bits === 4 ? Math.ceil(blocks / 2) : blocks;
  const data = new Uint8Array(rows * rowBytes);
  const scales = new Float32Array(rows * blocks);
  const zeroPoints = new Uint8Array(rows * zpRow);
  const codes = new Int16Array(t.blockElems);
  const sc = new Float32Array(t.blockElems / bs);
  const off = new Float32Array(t.blockElems / bs);
  const corr = new Float64Array(mainBlocks);
  const ggufRowBytes = (cols / t.blockElems) * t.blockBytes;
  for (let r = 0; r < rows; r++) {
    const rowAt = r * rowBytes;
    for (let gb = 0; gb < cols / t.blockElems; gb++) {
      a.read(bytes, r * ggufRowBytes + gb * t.blockBytes, codes, sc, off);
      for (let s = 0; s < sc.length; s++) {
        const b = gb * sc.length + s;
        const S = sc[s]!;
        const O = off[s]!;
        const zp = S === 0 ? 0 : Math.min(top, Math.max(0, Math.round(O / S)));
        scales[r * blocks + b] = S;
        putZp(zeroPoints, bits, r * zpRow, b, zp);
        corr[b] = S * zp - O;
        for (let i = 0; i < bs; i++) put(data, bits, rowAt, b * bs + i, codes[s * bs + i]!);
      }
    }
    // the corrections, quantized symmetrically per block of bs of them
    const half = bits === 4 ? 7 : 127;
    for (let b = mainBlocks; b < blocks; b++) {
      const from = (b - mainBlocks) * bs;
      const to = Math.min(mainBlocks, from + bs);
      let amax = 0;
      for (let j = from; j < to; j++) amax = Math.max(amax, Math.abs(corr[j]!));
      const s = Math.fround(amax / half);
      scales[r * blocks + b] = s;
      putZp(zeroPoints, bits, r * zpRow, b, mid);
      for (let j = from; j < from + bs; j++) put(data, bits, rowAt, cols + j, j < to && s > 0 ? Math.round(corr[j]! / s) + mid : mid);
    }
  }
  return { kind: 'nbits', rows, cols, bits, blockSize: bs, data, scales, zeroPoints, offsetColumns };
}

/** Scales tried per block, as fractions of the full-range scale (1 keeps the extremes exact). */
const SCALE_SEARCH = [1, 0.97, 0.94, 0.91, 0.88, 0.85];

/** Round-to-nearest asymmetric quantization of one block; returns [scale, zero point]. */
export function quantizeBlock(x: Float32Array, from: number, n: number, top: number, codes: Uint8Array): [number, number] {
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = from; i < from + n; i++) {
    lo = Math.min(lo, x[i]!);
    hi = Math.max(hi, x[i]!);
  }
  lo = Math.min(lo, 0);
  hi = Math.max(hi, 0);
  if (hi === lo) {
    codes.fill(0, 0, n);
    return [0, 0];
  }
  let best: [number, number] = [0, 0];
  let bestErr = Infinity;
  for (const f of SCALE_SEARCH) {
    const s = Math.fround(((hi - lo) / top) * f);
    const zp = Math.min(top, Math.max(0, Math.round(-lo / s)));
    let err = 0;
    for (let i = from; i < from + n; i++) {
      const q = Math.min(top, Math.max(0, Math.round(x[i]! / s) + zp));
      const d = (q - zp) * s - x[i]!;
      err += d * d;
    }
    if (err < bestErr) {
      bestErr = err;
      best = [s, zp];
    }
  }
  const [s, zp] = best;
  for (let i = 0; i < n; i++) codes[i] = Math.min(top, Math.max(0, Math.round(x[from + i]! / s) + zp));
  return best;
}

function requantize8(t: BlockType, bytes: Uint8Array, rows: number, cols: number): QuantizedMatrix {
  const blockSize = 32;
  const blocks = cols / blockSize;
  const data = new Uint8Array(rows * cols);
  const scales = new Float32Array(rows * blocks);
  const zeroPoints = new Uint8Array(rows * blocks);
  const row = new Float32Array(cols);
  const codes = new Uint8Array(blockSize);
  const rowBytes = (cols / t.blockElems) * t.blockBytes;
  for (let r = 0; r < rows; r++) {
    t.dequantize(bytes, r * rowBytes, row, 0, cols / t.blockElems);
    for (let b = 0; b < blocks; b++) {
      const [s, zp] = quantizeBlock(row, b * blockSize, blockSize, 255, codes);
      scales[r * blocks + b] = s;
      zeroPoints[r * blocks + b] = zp;
      data.set(codes, r * cols + b * blockSize);
    }
  }
  return { kind: 'nbits', rows, cols, bits: 8, blockSize, data, scales, zeroPoints };
}
