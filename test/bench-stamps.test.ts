/**
 * The benches' recipes for GGUF files and converted modules (bench/support/models.ts): what the GGUF writer and the
 * converter write for a miniature, so that a file or module from older code is written again. Real writer, real
 * converter.
 */
import { expect } from 'chai';
import { converterStamp, ggufWriterStamp, SERVING_SHAPE } from '../bench/support/models.js';
import { GGML } from '../packages/core/test/support/ggml-quantize.js';
import type { LlamaShape } from '../bench/support/random-llama.js';

const q4 = () => GGML.Q4_0;

describe('bench recipes', function () {
  this.timeout(120_000);

  it('stamp a converted module with what the converter writes: the same for the same output, another for another', async function () {
    const f16 = await converterStamp(SERVING_SHAPE, q4, { kvCache: 'float16' });
    expect(await converterStamp(SERVING_SHAPE, q4, { kvCache: 'float16' })).to.equal(f16);
    // a converter writing other graphs (here: float32 keys and values) or other weights stamps otherwise
    expect(await converterStamp(SERVING_SHAPE, q4, { kvCache: 'float32' })).to.not.equal(f16);
    expect(await converterStamp(SERVING_SHAPE, () => GGML.Q8_0, { kvCache: 'float16' })).to.not.equal(f16);
  });

  it('stamp a GGUF with what the writer writes, for every architecture the benches write', function () {
    const shapes: LlamaShape[] = [
      SERVING_SHAPE,
      { ...SERVING_SHAPE, arch: 'qwen3moe', experts: { count: 32, used: 4 } },
      { ...SERVING_SHAPE, kvHeads: 12, arch: 'deepseek2', experts: { count: 32, used: 4 }, latent: { kvLora: 256, rope: 32, nope: 64, value: 64 } },
      { ...SERVING_SHAPE, arch: 'granitehybrid', hybrid: { attention: [5, 11] } },
    ];
    const stamps = shapes.map((s) => ggufWriterStamp(s, q4));
    expect(new Set(stamps).size).to.equal(shapes.length);
    expect(ggufWriterStamp(SERVING_SHAPE, q4)).to.equal(stamps[0]);
    expect(ggufWriterStamp(SERVING_SHAPE, () => GGML.Q8_0)).to.not.equal(stamps[0]);
  });
});
