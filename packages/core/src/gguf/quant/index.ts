/**
 * The ggml block types the converter reads, by ggml type number. Types not listed here (IQ1/IQ2/IQ3,
 * TQ, NVFP4, repacked Q4_0_4_4 …) are refused by name.
 */
import type { BlockType } from './block.js';
import { IQ4_NL, IQ4_XS } from './iq4.js';
import { Q2_K, Q3_K, Q4_K, Q5_K, Q6_K } from './k-quants.js';
import { Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 } from './legacy.js';
import { MXFP4 } from './mxfp4.js';

export type { BlockType } from './block.js';

/** Block types by ggml type number. */
export const BLOCK_TYPES: ReadonlyMap<number, BlockType> = new Map(
  [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS, MXFP4].map((t) => [t.type, t]),
);

/** Dequantizes a whole tensor's bytes (`elementCount` a multiple of the block size) to float32. */
export function dequantize(t: BlockType, bytes: Uint8Array, elementCount: number): Float32Array {
  const out = new Float32Array(elementCount);
  t.dequantize(bytes, 0, out, 0, elementCount / t.blockElems);
  return out;
}
