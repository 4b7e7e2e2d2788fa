import { expect } from 'chai';
import { buildLlamaModel, randomLlamaWeights } from '../src/onnx/llama-builder.js';
import { buildGenaiLlamaModel } from '../src/onnx/genai-builder.js';
import { graphFacts } from '../src/onnx/graph-facts.js';
import { quantizeGraph } from '../src/onnx/quantize/quantize-graph.js';
import { UnsupportedModelError } from '../src/onnx/signature.js';
import { testDir } from './support/models.js';

const config = { vocabSize: 512, hiddenSize: 64, numLayers: 2, numHeads: 4, numKvHeads: 2, intermediateSize: 128 };
const weights = randomLlamaWeights(config, 1);
/** Projections and head, in values: 2 × (64·128 + 64·64 + 3·64·128) + 512·64. */
const STEP_VALUES = 2 * (64 * 128 + 64 * 64 + 3 * 64 * 128) + 512 * 64;
const EMBED_VALUES = 512 * 64;

describe('graph facts: the bytes a decode step reads', () => {
  it('counts every weight a step multiplies by, not the embedding table it gathers a row of', () => {
    const f = graphFacts(buildLlamaModel(config, weights));
    expect(f.padding).to.equal('left');
    const norms = 4 * (2 * 2 + 1) * 64 * 4; // small vectors and constants stay in both counts
    expect(f.stepBytes).to.be.within(STEP_VALUES * 4, STEP_VALUES * 4 + norms + 4096);
    expect(f.weightBytes - f.stepBytes).to.be.within(EMBED_VALUES * 4, EMBED_VALUES * 4 + 4096);
  });

  it('fp16 weights cast to fp32 count at fp32 (onnxruntime folds the Cast at load); 4-bit weights count packed', () => {
    const fp32 = graphFacts(buildLlamaModel(config, weights)).stepBytes;
    const fp16 = graphFacts(buildLlamaModel(config, weights, { dtype: 'float16' }));
    expect(fp16.weightBytes).to.be.below(0.55 * graphFacts(buildLlamaModel(config, weights)).weightBytes);
    expect(fp16.stepBytes).to.be.within(0.98 * fp32, 1.02 * fp32);
    const q4 = graphFacts(quantizeGraph(buildLlamaModel(config, weights), 'm', testDir('facts'), { headBits: 4 }).model);
    // 4 bits a value plus a 4-byte scale and half a byte of zero point per 32 values: 0.64 bytes a value.
    expect(q4.stepBytes).to.be.within(STEP_VALUES * 0.6, STEP_VALUES * 0.7 + 8192);
  });

  it('counts the operators a step runs, and quantizing leaves them as many (a MatMulNBits per MatMul)', () => {
    const model = buildLlamaModel(config, weights);
    const fp32 = graphFacts(model);
    expect(fp32.stepNodes).to.equal(model.graph!.node!.filter((n) => n.opType !== 'Constant').length);
    expect(fp32.stepNodes).to.be.above(50);
    const q4 = graphFacts(quantizeGraph(model, 'm', testDir('facts-nodes')).model);
    // bytes fall to a fifth, operators do not: what makes a small quantized model's step cost more than its bytes
    expect(q4.stepBytes).to.be.below(0.3 * fp32.stepBytes);
    expect(q4.stepNodes).to.be.within(fp32.stepNodes - 8, fp32.stepNodes);
  });

  it('refuses a quantized operator onnxruntime does not run, naming it and the ones that run', () => {
    const { model } = quantizeGraph(buildLlamaModel(config, weights), 'm', testDir('facts-op'));
    const node = model.graph!.node!.find((n) => n.opType === 'MatMulNBits')!;
    node.opType = 'MatMulFpQ4';
    expect(() => graphFacts(model)).to.throw(UnsupportedModelError, /com\.microsoft::MatMulFpQ4 \(node `[^`]+`\), a quantized operator onnxruntime does not run; quantized operators that run: MatMulNBits/);
  });

  it('GroupQueryAttention graphs are right-padded, and their rotary caches are not read whole', () => {
    const f = graphFacts(buildGenaiLlamaModel(config, weights, { maxPositions: 4096 }));
    expect(f.padding).to.equal('right');
    expect(f.weightBytes - f.stepBytes).to.be.above(EMBED_VALUES * 4 + 2 * 4096 * 8 * 4 - 1);
  });
});
