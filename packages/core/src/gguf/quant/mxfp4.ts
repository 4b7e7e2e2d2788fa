/**
 * ggml's MXFP4 (the OCP microscaling FP4 of gpt-oss's experts; ggml-common.h): blocks of 32 E2M1 values sharing
 * one E8M0 exponent. ggml stores the E2M1 values doubled as integers (0, ±1, ±2, ±3, ±4, ±6, ±8, ±12) and halves
 * the exponent's power of two, so each block is integer codes times one float scale: `2^(e - 128) · level[q]`.
 */
import { dequantizeByCodes, type BlockType } from './block.js';

/** ggml's kvalues_mxfp4: twice the E2M1 values a nibble encodes (sign in the top bit). */
export const MXFP4_LEVELS: readonly number[] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/** MXFP4: u8 e (E8M0), 16 bytes of nibbles (low: element j, high: j + 16); x = 2^(e - 128) · level[q]. */
export const MXFP4: BlockType = {
  name: 'MXFP4',
  type: 39,
  blockElems: 32,
  blockBytes: 17,
  dequantize(src, at, dst, out, n) {
    dequantizeByCodes(MXFP4, src, at, dst, out, n);
  },
  codes: {
    subBlock: 32,
    minCode: -12,
    maxCode: 12,
    read(src, at, codes, scales) {
      // A power of two from 2^-128 (a float32 subnormal, as ggml's own bits) to 2^127: exact in float32.
      scales[0] = Math.pow(2, src[at]! - 128);
      for (let j = 0; j < 16; j++) {
        const q = src[at + 1 + j]!;
        codes[j] = MXFP4_LEVELS[q & 0xf]!;
        codes[j + 16] = MXFP4_LEVELS[q >> 4]!;
      }
    },
  },
};
