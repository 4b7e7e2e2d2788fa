import { expect } from 'chai';
import { buildLlamaModel, randomLlamaWeights } from '../src/onnx/llama-builder.js';
import { buildGenaiLlamaModel } from '../src/onnx/genai-builder.js';
import { graphFacts } from '../src/onnx/graph-facts.js';
import { quantizeGraph } from '../src/onnx/quantize/quantize-graph.js';
import { UnsupportedModelError } from '../src/onnx/signature.js';
import { quantizeMatrix } from '../src/onnx/quantize/quantize-matrix.js';
import type { QuantizedMatrix } from '../src/onnx/llama-spec.js';
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

  it("a mixture of experts' step reads the experts one token uses: k of them, float or quantized", () => {
    const moe = { ...config, moe: { experts: 8, used: 2, normalize: true } };
    const w = randomLlamaWeights(moe, 1);
    const f = graphFacts(buildLlamaModel(moe, w));
    // 8 experts of 3·64·128 values a layer, 2 of them read a step; the router's 8·64 values all
    const experts = 2 * 8 * 3 * 64 * 128;
    const dense = STEP_VALUES - 2 * 3 * 64 * 128 + 2 * 8 * 64;
    expect(f.weightBytes - f.stepBytes).to.be.within(EMBED_VALUES * 4 + (experts * 4 * 6) / 8, EMBED_VALUES * 4 + (experts * 4 * 6) / 8 + 4096);
    expect(f.stepBytes).to.be.within((dense + experts / 4) * 4, (dense + experts / 4) * 4 + 8192);
    const q8 = (m: Float32Array | QuantizedMatrix, cols: number) => quantizeMatrix(m as Float32Array, (m as Float32Array).length / cols, cols, 8, 32);
    const quantized = { ...w, layers: w.layers.map((l) => ({ ...l, moe: { ...l.moe!, gate: q8(l.moe!.gate, 64), up: q8(l.moe!.up, 64), down: q8(l.moe!.down, 128) } })) };
    const q = graphFacts(buildLlamaModel(moe, quantized));
    // a byte a value, plus a 4-byte scale and a zero point per 32: about a quarter of the float experts' bytes
    expect(q.stepBytes - (f.stepBytes - (experts / 4) * 4)).to.be.within((experts / 4) * 1.1, (experts / 4) * 1.2);
  });

  it("quantizing a mixture of experts' graph keeps its routers float (reported) and quantizes its other MatMuls", () => {
    const moe = { ...config, moe: { experts: 8, used: 2, normalize: true } };
    const { model, report } = quantizeGraph(buildLlamaModel(moe, randomLlamaWeights(moe, 1)), 'm', testDir('facts-moe'), { headBits: 8 });
    const ops = (op: string) => model.graph!.node!.filter((n) => n.opType === op);
    expect(report.skipped.filter((s) => s.startsWith('router'))).to.have.length(2);
    // each layer: its router, scores for the MoE operator, a plain MatMul still
    const routers = new Set(ops('MoE').map((n) => n.input![1]));
    expect(ops('MatMul').filter((n) => routers.has(n.output![0]!))).to.have.length(2);
    expect(ops('MatMulNBits')).to.have.length(report.matmuls).and.not.be.empty;
    expect(ops('MoE')).to.have.length(2);
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
