/**
 * ggml's 32-element block types (ggml-common.h): Q4_0, Q4_1, Q5_0, Q5_1, Q8_0. In each block the low
 * nibbles of qs[j] hold element j and the high nibbles element j + 16; Q5 types keep the fifth bit of
 * element j in bit j of the little-endian u32 qh.
 */
import { dequantizeByAffine, dequantizeByCodes, type BlockType } from './block.js';
import { halfAt } from './half.js';

const QK = 32;

/** Q4_0: f16 d, 16 bytes of nibbles; x = (q - 8) · d. */
export const Q4_0: BlockType = {
  name: 'Q4_0',
  type: 2,
  blockElems: QK,
  blockBytes: 18,
  dequantize(src, at, dst, out, n) {
    dequantizeByCodes(Q4_0, src, at, dst, out, n);
  },
  codes: {
    subBlock: QK,
    minCode: -8,
    maxCode: 7,
    read(src, at, codes, scales) {
      scales[0] = halfAt(src, at);
      for (let j = 0; j < 16; j++) {
        const q = src[at + 2 + j]!;
        codes[j] = (q & 0xf) - 8;
        codes[j + 16] = (q >> 4) - 8;
      }
    },
  },
};

/** Q4_1: f16 d, f16 m, nibbles; x = q · d + m. */
export const Q4_1: BlockType = {
  name: 'Q4_1',
  type: 3,
  blockElems: QK,
  blockBytes: 20,
  dequantize(src, at, dst, out, n) {
    dequantizeByAffine(Q4_1, src, at, dst, out, n);
  },
  affine: {
    subBlock: QK,
    maxCode: 15,
    read(src, at, codes, scales, offsets) {
      scales[0] = halfAt(src, at);
      offsets[0] = -halfAt(src, at + 2);
      for (let j = 0; j < 16; j++) {
        const q = src[at + 4 + j]!;
        codes[j] = q & 0xf;
        codes[j + 16] = q >> 4;
      }
    },
  },
};

function qh32(src: Uint8Array, at: number): number {
  return (src[at]! | (src[at + 1]! << 8) | (src[at + 2]! << 16) | (src[at + 3]! << 24)) >>> 0;
}

/** Q5_0: f16 d, u32 qh, nibbles; x = (q - 16) · d. */
export const Q5_0: BlockType = {
  name: 'Q5_0',
  type: 6,
  blockElems: QK,
  blockBytes: 22,
  dequantize(src, at, dst, out, n) {
    dequantizeByCodes(Q5_0, src, at, dst, out, n);
  },
  codes: {
    subBlock: QK,
    minCode: -16,
    maxCode: 15,
    read(src, at, codes, scales) {
      scales[0] = halfAt(src, at);
      const qh = qh32(src, at + 2);
      for (let j = 0; j < 16; j++) {
        const q = src[at + 6 + j]!;
        codes[j] = ((q & 0xf) | (((qh >>> j) & 1) << 4)) - 16;
        codes[j + 16] = ((q >> 4) | (((qh >>> (j + 16)) & 1) << 4)) - 16;
      }
    },
  },
};

/** Q5_1: f16 d, f16 m, u32 qh, nibbles; x = q · d + m. */
export const Q5_1: BlockType = {
  name: 'Q5_1',
  type: 7,
  blockElems: QK,
  blockBytes: 24,
  dequantize(src, at, dst, out, n) {
    dequantizeByAffine(Q5_1, src, at, dst, out, n);
  },
  affine: {
    subBlock: QK,
    maxCode: 31,
    read(src, at, codes, scales, offsets) {
      scales[0] = halfAt(src, at);
      offsets[0] = -halfAt(src, at + 2);
      const qh = qh32(src, at + 4);
      for (let j = 0; j < 16; j++) {
        const q = src[at + 8 + j]!;
        codes[j] = (q & 0xf) | (((qh >>> j) & 1) << 4);
        codes[j + 16] = (q >> 4) | (((qh >>> (j + 16)) & 1) << 4);
      }
    },
  },
};

/** Q8_0: f16 d, 32 int8; x = q · d. */
export const Q8_0: BlockType = {
  name: 'Q8_0',
  type: 8,
  blockElems: QK,
  blockBytes: 34,
  dequantize(src, at, dst, out, n) {
    dequantizeByCodes(Q8_0, src, at, dst, out, n);
  },
  codes: {
    subBlock: QK,
    minCode: -128,
    maxCode: 127,
    read(src, at, codes, scales) {
      scales[0] = halfAt(src, at);
      for (let j = 0; j < QK; j++) codes[j] = (src[at + 2 + j]! << 24) >> 24;
    },
  },
};
