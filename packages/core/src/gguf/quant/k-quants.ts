/**
 * ggml's K-quants (ggml-common.h, super-blocks of 256 elements): Q2_K, Q3_K, Q4_K, Q5_K, Q6_K. Each
 * super-block carries f16 super-scales and small per-sub-block scales (and, for Q2/Q4/Q5_K, mins);
 * the element order follows ggml's `dequantize_row_q*_K` loops.
 */
import { dequantizeByAffine, dequantizeByCodes, type BlockType } from './block.js';
import { halfAt } from './half.js';

const QK_K = 256;

/** The 6-bit scale and min of sub-block j from the 12 packed bytes of Q4_K/Q5_K (ggml's get_scale_min_k4). */
function scaleMinK4(src: Uint8Array, q: number, j: number): [number, number] {
  if (j < 4) return [src[q + j]! & 63, src[q + j + 4]! & 63];
  return [(src[q + j + 4]! & 0xf) | ((src[q + j - 4]! >> 6) << 4), (src[q + j + 4]! >> 4) | ((src[q + j]! >> 6) << 4)];
}

/** The 8 sub-block scales and offsets of a Q4_K/Q5_K block (f16 d and dmin, then the 12 packed bytes). */
function readScaleMinsK4(src: Uint8Array, at: number, scales: Float32Array, offsets: Float32Array): void {
  const d = halfAt(src, at);
  const dmin = halfAt(src, at + 2);
  for (let j = 0; j < 8; j++) {
    const [s, m] = scaleMinK4(src, at + 4, j);
    scales[j] = d * s;
    offsets[j] = dmin * m;
  }
}

/** Q2_K: scales[16] (low nibble scale, high nibble min), qs[64] 2-bit, f16 d, f16 dmin; x = d·sc·q - dmin·m. */
export const Q2_K: BlockType = {
  name: 'Q2_K',
  type: 10,
  blockElems: QK_K,
  blockBytes: 84,
  dequantize(src, at, dst, out, n) {
    dequantizeByAffine(Q2_K, src, at, dst, out, n);
  },
  affine: {
    subBlock: 16,
    maxCode: 3,
    read(src, at, codes, scales, offsets) {
      const d = halfAt(src, at + 80);
      const dmin = halfAt(src, at + 82);
      let is = 0;
      let i = 0;
      for (let half = 0; half < 2; half++) {
        const q = at + 16 + half * 32;
        for (let shift = 0; shift < 8; shift += 2) {
          for (let part = 0; part < 2; part++) {
            const sc = src[at + is]!;
            scales[is] = d * (sc & 0xf);
            offsets[is++] = dmin * (sc >> 4);
            for (let l = 0; l < 16; l++) codes[i++] = (src[q + part * 16 + l]! >> shift) & 3;
          }
        }
      }
    },
  },
};

/** The 16 signed 6-bit scales of a Q3_K block, unpacked from its 12 bytes. */
function q3Scales(src: Uint8Array, s: number, out: Int8Array): void {
  for (let j = 0; j < 16; j++) {
    const low = j < 8 ? (src[s + j]! & 0xf) : src[s + j - 8]! >> 4;
    const high = (src[s + 8 + (j % 4)]! >> (2 * Math.floor(j / 4))) & 3;
    out[j] = (low | (high << 4)) - 32;
  }
}

const q3sc = new Int8Array(16);

/** Q3_K: hmask[32], qs[64] 2-bit, 12 bytes of 6-bit scales, f16 d; x = d·(sc - 32)·(q - 4). */
export const Q3_K: BlockType = {
  name: 'Q3_K',
  type: 11,
  blockElems: QK_K,
  blockBytes: 110,
  dequantize(src, at, dst, out, n) {
    dequantizeByCodes(Q3_K, src, at, dst, out, n);
  },
  codes: {
    subBlock: 16,
    minCode: -4,
    maxCode: 3,
    read(src, at, codes, scales) {
      const d = halfAt(src, at + 108);
      q3Scales(src, at + 96, q3sc);
      for (let j = 0; j < 16; j++) scales[j] = d * q3sc[j]!;
      let i = 0;
      let m = 1;
      for (let half = 0; half < 2; half++) {
        const q = at + 32 + half * 32;
        for (let shift = 0; shift < 8; shift += 2, m <<= 1) {
          for (let part = 0; part < 2; part++) {
            for (let l = 0; l < 16; l++) {
              const k = part * 16 + l;
              codes[i++] = ((src[q + k]! >> shift) & 3) - (src[at + k]! & m ? 0 : 4);
            }
          }
        }
      }
    },
  },
};

/** Q4_K: f16 d, f16 dmin, 12 bytes of 6-bit scales/mins, qs[128] nibbles; x = d·sc·q - dmin·m in sub-blocks of 32. */
export const Q4_K: BlockType = {
  name: 'Q4_K',
  type: 12,
  blockElems: QK_K,
  blockBytes: 144,
  dequantize(src, at, dst, out, n) {
    dequantizeByAffine(Q4_K, src, at, dst, out, n);
  },
  affine: {
    subBlock: 32,
    maxCode: 15,
    read(src, at, codes, scales, offsets) {
      readScaleMinsK4(src, at, scales, offsets);
      for (let j = 0; j < 4; j++) {
        const q = at + 16 + j * 32;
        for (let l = 0; l < 32; l++) {
          codes[64 * j + l] = src[q + l]! & 0xf;
          codes[64 * j + 32 + l] = src[q + l]! >> 4;
        }
      }
    },
  },
};

/** Q5_K: f16 d, f16 dmin, 12 bytes of scales/mins, qh[32], qs[128]; x = d·sc·q - dmin·m, q of 5 bits. */
export const Q5_K: BlockType = {
  name: 'Q5_K',
  type: 13,
  blockElems: QK_K,
  blockBytes: 176,
  dequantize(src, at, dst, out, n) {
    dequantizeByAffine(Q5_K, src, at, dst, out, n);
  },
  affine: {
    subBlock: 32,
    maxCode: 31,
    read(src, at, codes, scales, offsets) {
      readScaleMinsK4(src, at, scales, offsets);
      for (let j = 0; j < 4; j++) {
        const ql = at + 48 + j * 32;
        for (let l = 0; l < 32; l++) {
          const h = src[at + 16 + l]!;
          codes[64 * j + l] = (src[ql + l]! & 0xf) | ((h >> (2 * j)) & 1 ? 16 : 0);
          codes[64 * j + 32 + l] = (src[ql + l]! >> 4) | ((h >> (2 * j + 1)) & 1 ? 16 : 0);
        }
      }
    },
  },
};

/** Q6_K: ql[128], qh[64], int8 scales[16], f16 d; x = d·sc·(q - 32), q of 6 bits, sub-blocks of 16. */
export const Q6_K: BlockType = {
  name: 'Q6_K',
  type: 14,
  blockElems: QK_K,
  blockBytes: 210,
  dequantize(src, at, dst, out, n) {
    dequantizeByCodes(Q6_K, src, at, dst, out, n);
  },
  codes: {
    subBlock: 16,
    minCode: -32,
    maxCode: 31,
    read(src, at, codes, scales) {
      const d = halfAt(src, at + 208);
      for (let j = 0; j < 16; j++) scales[j] = d * ((src[at + 192 + j]! << 24) >> 24);
      for (let half = 0; half < 2; half++) {
        const ql = at + half * 64;
        const qh = at + 128 + half * 32;
        const y = half * 128;
        for (let l = 0; l < 32; l++) {
          const h = src[qh + l]!;
          codes[y + l] = ((src[ql + l]! & 0xf) | ((h & 3) << 4)) - 32;
          codes[y + l + 32] = ((src[ql + l + 32]! & 0xf) | (((h >> 2) & 3) << 4)) - 32;
          codes[y + l + 64] = ((src[ql + l]! >> 4) | (((h >> 4) & 3) << 4)) - 32;
          codes[y + l + 96] = ((src[ql + l + 32]! >> 4) | (((h >> 6) & 3) << 4)) - 32;
        }
      }
    },
  },
};
