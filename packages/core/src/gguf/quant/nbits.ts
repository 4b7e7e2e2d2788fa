/**
 * GGUF tensors → MatMulNBits matrices ({@link QuantizedMatrix}).
 *
 * Without loss where ggml's block is integer codes times one float scale per sub-block: the codes move to
 * unsigned codes around the operator's default zero point (8 for 4 bits, 128 for 8 bits), the scale is the
 * float32 that llama.cpp's dequantizer multiplies by, so (code - zp) · scale is llama.cpp's value bit for bit:
 *   Q4_0 → 4-bit, block 32 · Q3_K → 4-bit, block 16 · Q8_0, Q5_0, IQ4_NL, IQ4_XS → 8-bit, block 32 ·
 *   Q6_K → 8-bit, block 16.
 * The types with a per-block offset (Q4_1, Q5_1, Q2_K, Q4_K, Q5_K: x = d·q - m) have no exact integer zero
 * point; they are dequantized and requantized round-to-nearest with a uint8 zero point per block (the scale
 * chosen by a small search for the least squared error): Q4_1, Q4_K → 4-bit block 32, Q2_K → 4-bit block 16,
 * Q5_1, Q5_K → 8-bit block 32. (onnxruntime 1.30 also takes float zero points, which would be exact, but
 * only in its unpacked fp32 path: several times slower per token.) `requantizationError` measures the error.
 */
import type { QuantizedMatrix } from '../../onnx/llama-spec.js';
import type { BlockType } from './block.js';
import { BLOCK_TYPES } from './index.js';

/** How each affine type is requantized: bits and block size. */
const REQUANT: Readonly<Record<string, { bits: 4 | 8; blockSize: number }>> = {
  Q4_1: { bits: 4, blockSize: 32 },
  Q4_K: { bits: 4, blockSize: 32 },
  Q2_K: { bits: 4, blockSize: 16 },
  Q5_1: { bits: 8, blockSize: 32 },
  Q5_K: { bits: 8, blockSize: 32 },
};

/** True when `type` maps onto MatMulNBits without changing any value. */
export function isLossless(type: number): boolean {
  return BLOCK_TYPES.get(type)?.codes !== undefined;
}

/** Repacks the raw bytes of a `[rows, cols]` tensor of a ggml block type as a MatMulNBits matrix. */
export function toNBits(type: number, bytes: Uint8Array, rows: number, cols: number): QuantizedMatrix {
  const t = BLOCK_TYPES.get(type);
  if (!t) throw new Error(`ggml type ${type} is not a block-quantized type`);
  return t.codes ? repack(t, bytes, rows, cols) : requantize(t, bytes, rows, cols);
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

function requantize(t: BlockType, bytes: Uint8Array, rows: number, cols: number): QuantizedMatrix {
  const { bits, blockSize } = REQUANT[t.name]!;
  const top = (1 << bits) - 1;
  const blocks = cols / blockSize;
  const zpRow = bits === 4 ? Math.ceil(blocks / 2) : blocks;
  const data = new Uint8Array((rows * cols * bits) / 8);
  const scales = new Float32Array(rows * blocks);
  const zeroPoints = new Uint8Array(rows * zpRow);
  const row = new Float32Array(cols);
  const codes = new Uint8Array(blockSize);
  const rowBytes = (cols / t.blockElems) * t.blockBytes;
  for (let r = 0; r < rows; r++) {
    t.dequantize(bytes, r * rowBytes, row, 0, cols / t.blockElems);
    for (let b = 0; b < blocks; b++) {
      const [s, zp] = quantizeBlock(row, b * blockSize, blockSize, top, codes);
      scales[r * blocks + b] = s;
      const e = r * cols + b * blockSize;
      if (bits === 8) {
        data.set(codes, e);
        zeroPoints[r * zpRow + b] = zp;
      } else {
        for (let i = 0; i < blockSize; i += 2) data[(e + i) >> 1] = codes[i]! | (codes[i + 1]! << 4);
        zeroPoints[r * zpRow + (b >> 1)]! |= zp << ((b & 1) * 4);
      }
    }
  }
  return { kind: 'nbits', rows, cols, bits, blockSize, data, scales, zeroPoints };
}
