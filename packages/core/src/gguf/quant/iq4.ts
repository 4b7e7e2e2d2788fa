/**
 * ggml's non-linear 4-bit types (ggml-common.h): IQ4_NL (blocks of 32) and IQ4_XS (super-blocks of 256
 * with 6-bit sub-block scales). A nibble indexes a fixed table of 16 int8 levels, so the values are
 * still integer codes times a float scale (the codes are the table's levels, not the nibbles).
 */
import { dequantizeByCodes, tableNibbleType, type BlockType } from './block.js';
import { halfAt } from './half.js';

/** ggml's kvalues_iq4nl. */
export const IQ4_LEVELS: readonly number[] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/** IQ4_NL: f16 d, 16 bytes of nibbles (low: element j, high: j + 16); x = d · level[q]. */
export const IQ4_NL: BlockType = tableNibbleType({ name: 'IQ4_NL', type: 20, levels: IQ4_LEVELS, scaleBytes: 2, scale: halfAt });

/** IQ4_XS: f16 d, u16 scales_h, scales_l[4], qs[128]; sub-block ib has scale d · (ls - 32), ls of 6 bits. */
export const IQ4_XS: BlockType = {
  name: 'IQ4_XS',
  type: 23,
  blockElems: 256,
  blockBytes: 136,
  dequantize(src, at, dst, out, n) {
    dequantizeByCodes(IQ4_XS, src, at, dst, out, n);
  },
  codes: {
    subBlock: 32,
    minCode: -127,
    maxCode: 113,
    read(src, at, codes, scales) {
      const d = halfAt(src, at);
      const sh = src[at + 2]! | (src[at + 3]! << 8);
      for (let ib = 0; ib < 8; ib++) {
        const ls = ((src[at + 4 + (ib >> 1)]! >> (4 * (ib & 1))) & 0xf) | (((sh >> (2 * ib)) & 3) << 4);
        scales[ib] = d * (ls - 32);
        const qs = at + 8 + ib * 16;
        for (let j = 0; j < 16; j++) {
          const q = src[qs + j]!;
          codes[ib * 32 + j] = IQ4_LEVELS[q & 0xf]!;
          codes[ib * 32 + j + 16] = IQ4_LEVELS[q >> 4]!;
        }
      }
    },
  },
};
