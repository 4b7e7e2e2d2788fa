import { expect } from 'chai';
import { BLOCK_TYPES, dequantize } from '../src/gguf/quant/index.js';
import { isLossless, toNBits } from '../src/gguf/quant/nbits.js';
import { dequantizeMatrix } from '../src/onnx/quantized-matrix.js';
import { seededNormals } from '../src/onnx/random-weights.js';
import { GGML, quantizeGgml } from './support/ggml-quantize.js';

/** Largest error of each element, relative to the largest magnitude of its row. */
function relErr(ref: Float32Array, got: Float32Array, cols: number): number {
  let worst = 0;
  for (let r = 0; r < ref.length / cols; r++) {
    let amax = 0;
    for (let c = 0; c < cols; c++) amax = Math.max(amax, Math.abs(ref[r * cols + c]!));
    for (let c = 0; c < cols; c++) worst = Math.max(worst, Math.abs(ref[r * cols + c]! - got[r * cols + c]!) / amax);
  }
  return worst;
}

describe('gguf quantized types', () => {
  const rows = 8;
  const cols = 512;
  const x = seededNormals(7)(rows * cols, 0.05);
  // with a few outliers, as real weights have
  for (let i = 0; i < x.length; i += 97) x[i] = x[i]! * 6;

  // quantization error bounds of the reference quantizers, relative to the row's largest magnitude
  const bound: Record<string, number> = {
    Q4_0: 0.1, Q4_1: 0.1, Q5_0: 0.05, Q5_1: 0.05, Q8_0: 0.01, Q2_K: 0.35, Q3_K: 0.2, Q4_K: 0.1, Q5_K: 0.05, Q6_K: 0.03, IQ4_NL: 0.12, IQ4_XS: 0.12,
  };
  for (const [name, type] of Object.entries(GGML)) {
    const block = BLOCK_TYPES.get(type);
    if (!block) continue;
    it(`${name}: reference quantizer → dequantizer stays within the type's error; MatMulNBits ${isLossless(type) ? 'repack is exact' : 'requantization error measured'}`, () => {
      const bytes = quantizeGgml(x, type);
      expect(bytes.length).to.equal((x.length / block.blockElems) * block.blockBytes);
      const deq = dequantize(block, bytes, x.length);
      expect(relErr(x, deq, cols), name).to.be.below(bound[name]!);
      const m = toNBits(type, bytes, rows, cols);
      expect(m.rows).to.equal(rows);
      expect(m.data.length).to.equal((rows * cols * m.bits) / 8);
      const back = dequantizeMatrix(m);
      if (isLossless(type)) {
        expect(m.zeroPoints).to.equal(undefined);
        expect(Buffer.from(back.buffer).equals(Buffer.from(deq.buffer)), `${name} repack is bit-exact`).to.equal(true);
      } else {
        const e = relErr(deq, back, cols);
        expect(e).to.be.above(0);
        expect(e, name).to.be.below(m.bits === 8 ? 0.01 : 0.1);
      }
    });
  }
});
