/**
 * ggml's MXFP4 (the OCP microscaling FP4 of gpt-oss's experts; ggml-common.h): blocks of 32 E2M1 values sharing
 * one E8M0 exponent. ggml stores the E2M1 values doubled as integers (0, ±1, ±2, ±3, ±4, ±6, ±8, ±12) and halves
 * the exponent's power of two, so each block is integer codes times one float scale: `2^(e - 128) · level[q]`.
 */
import { tableNibbleType, type BlockType } from './block.js';

/** ggml's kvalues_mxfp4: twice the E2M1 values a nibble encodes (sign in the top bit). */
export const MXFP4_LEVELS: readonly number[] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/** MXFP4: u8 e (E8M0), 16 bytes of nibbles (low: element j, high: j + 16); x = 2^(e - 128) · level[q]. */
export const MXFP4: BlockType = tableNibbleType({
  name: 'MXFP4',
  type: 39,
  levels: MXFP4_LEVELS,
  scaleBytes: 1,
  // A power of two from 2^-128 (a float32 subnormal, as ggml's own bits) to 2^127: exact in float32.
  scale: (src, at) => Math.pow(2, src[at]! - 128),
});
