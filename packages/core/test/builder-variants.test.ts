/**
 * The Llama-block variants of the builder beyond what GGUF conversion exercises against llama.cpp
 * (gguf-arch.test.ts): the `(1 + w)` norm offset of Hugging Face Gemma checkpoints, and config checks.
 */
import { expect } from 'chai';
import * as ort from 'onnxruntime-node';
import { buildLlamaModel, randomLlamaWeights } from '../src/onnx/llama-builder.js';
import type { LlamaConfig, LlamaWeights } from '../src/onnx/llama-spec.js';
import { encodeModel } from '../src/onnx/proto.js';

const GEMMA: LlamaConfig = {
  vocabSize: 48,
  hiddenSize: 32,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  intermediateSize: 40,
  tieWordEmbeddings: true,
  postNorms: true,
  qkNorm: true,
  hiddenAct: 'gelu_tanh',
  embeddingScale: Math.sqrt(32),
  finalLogitSoftcap: 10,
  attnLogitSoftcap: 5,
  slidingWindow: 3,
  layerTypes: ['sliding', 'full'],
  ropeThetaLocal: 10000,
  ropeTheta: 1e6,
};

async function logits(config: LlamaConfig, weights: LlamaWeights, ids: number[]): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(encodeModel(buildLlamaModel(config, weights)));
  try {
    const S = ids.length;
    const kv = config.numKvHeads ?? config.numHeads;
    const hd = config.headDim ?? config.hiddenSize / config.numHeads;
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', BigInt64Array.from(ids, BigInt), [1, S]),
      attention_mask: new ort.Tensor('int64', new BigInt64Array(S).fill(1n), [1, S]),
      position_ids: new ort.Tensor('int64', BigInt64Array.from(ids, (_, i) => BigInt(i)), [1, S]),
    };
    for (let i = 0; i < config.numLayers; i++) {
      for (const kind of ['key', 'value']) feeds[`past_key_values.${i}.${kind}`] = new ort.Tensor('float32', new Float32Array(0), [1, kv, 0, hd]);
    }
    return (await session.run(feeds)).logits!.data as Float32Array;
  } finally {
    await session.release();
  }
}

describe('builder: Llama-block variants', function () {
  this.timeout(30_000);

  it('normWeightOffset 1 on w equals offset 0 on 1 + w (Hugging Face Gemma vs GGUF norm weights)', async () => {
    const stored = randomLlamaWeights(GEMMA, 7, 0.2);
    const minusOne = (a?: Float32Array) => a && a.map((x) => x - 1);
    const hf: LlamaWeights = {
      ...stored,
      finalNorm: minusOne(stored.finalNorm)!,
      layers: stored.layers.map((l) => ({
        ...l,
        attnNorm: minusOne(l.attnNorm)!,
        mlpNorm: minusOne(l.mlpNorm)!,
        postAttnNorm: minusOne(l.postAttnNorm)!,
        postMlpNorm: minusOne(l.postMlpNorm)!,
        qNorm: minusOne(l.qNorm)!,
        kNorm: minusOne(l.kNorm)!,
      })),
    };
    const ids = [3, 17, 4, 40, 9, 22, 1];
    const a = await logits(GEMMA, stored, ids);
    const b = await logits({ ...GEMMA, normWeightOffset: 1 }, hf, ids);
    expect(a.length).to.equal(ids.length * GEMMA.vocabSize);
    let maxDiff = 0;
    for (let i = 0; i < a.length; i++) maxDiff = Math.max(maxDiff, Math.abs(a[i]! - b[i]!));
    expect(maxDiff).to.be.lessThan(1e-4);
    // and the offset matters: without it the same weights give other logits
    const c = await logits(GEMMA, hf, ids);
    expect(Math.abs(c[0]! - a[0]!) + Math.abs(c[5]! - a[5]!)).to.be.greaterThan(1e-3);
    // final soft-capping bounds every logit
    expect(Math.max(...Array.from(a, Math.abs))).to.be.at.most(10);
  });

  it('refuses inconsistent variant configs, naming the field', () => {
    const w = randomLlamaWeights({ ...GEMMA, layerTypes: undefined, slidingWindow: undefined }, 1);
    const build = (c: Partial<LlamaConfig>) => () => buildLlamaModel({ ...GEMMA, ...c }, w);
    expect(build({ slidingWindow: undefined })).to.throw(/slidingWindow/);
    expect(build({ layerTypes: ['full'] })).to.throw(/layerTypes/);
    expect(build({ ropeFreqFactors: [1, 2] })).to.throw(/ropeFreqFactors has 2 entries/);
    expect(build({ hiddenAct: 'relu' as 'silu' })).to.throw(/hiddenAct/);
    expect(build({ attnLogitSoftcap: 0 })).to.throw(/attnLogitSoftcap/);
    expect(() => buildLlamaModel({ ...GEMMA, qkvBias: true }, w)).to.throw(/bq \(qkvBias\)/);
  });
});
