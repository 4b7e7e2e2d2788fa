/**
 * Dense float matrices → MatMulNBits blocks ({@link QuantizedMatrix}, the layout the GGUF repacker and the
 * builder share): round-to-nearest with a uint8 zero point per block. Each block's scale and zero point come from
 * one of two searches ({@link BlockSearch}).
 */
import { quantizeBlock } from '../../gguf/quant/nbits.js';
import type { QuantizedMatrix } from '../llama-spec.js';
import { searchBlock } from './block-search.js';

/**
 * How a block's scale and zero point are chosen: `range` (default) keeps the zero point at the block's minimum and
 * tries a few shrunken scales (the GGUF requantizer's `quantizeBlock`); `weighted` fits both to the codes by
 * error-weighted least squares over a grid of candidate ranges (block-search.ts, after llama.cpp's Q4_K search).
 * On the example modules `weighted` has 1.6% less weight error but follows the fp32 logits no better
 * (eval/fidelity.ts; docs/benchmarks.md "Results table"), so it is opt-in.
 */
export type BlockSearch = 'weighted' | 'range';

/**
 * Quantizes a row-major `[rows, cols]` matrix in blocks of `blockSize` consecutive values of a row (MatMulNBits
 * quantizes `Wᵀ`: one row per output, blocks along the inputs). `cols` must be a multiple of `blockSize`.
 */
export function quantizeMatrix(values: Float32Array, rows: number, cols: number, bits: 4 | 8, blockSize: number, search: BlockSearch = 'range'): QuantizedMatrix {
  if (cols % blockSize !== 0) throw new Error(`quantizeMatrix: ${cols} columns are not a multiple of the block size ${blockSize}`);
  const top = (1 << bits) - 1;
  const blocks = cols / blockSize;
  const zpRow = bits === 4 ? Math.ceil(blocks / 2) : blocks;
  const data = new Uint8Array((rows * cols * bits) / 8);
  const scales = new Float32Array(rows * blocks);
  const zeroPoints = new Uint8Array(rows * zpRow);
  const codes = new Uint8Array(blockSize);
  const pick = search === 'weighted' ? searchBlock : quantizeBlock;
  for (let r = 0; r < rows; r++) {
    for (let b = 0; b < blocks; b++) {
      const from = r * cols + b * blockSize;
      const [s, zp] = pick(values, from, blockSize, top, codes);
      scales[r * blocks + b] = s;
      if (bits === 8) {
        data.set(codes, from);
        zeroPoints[r * zpRow + b] = zp;
      } else {
        for (let i = 0; i < blockSize; i += 2) data[(from + i) >> 1] = codes[i]! | (codes[i + 1]! << 4);
        zeroPoints[r * zpRow + (b >> 1)]! |= zp << ((b & 1) * 4);
      }
    }
  }
  return { kind: 'nbits', rows, cols, bits, blockSize, data, scales, zeroPoints };
}
