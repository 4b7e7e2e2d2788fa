/**
 * Attention as GGUF conversion writes it (`attention: 'gqa'`: one com.microsoft::GroupQueryAttention per layer,
 * rotary inside or by ops, residual Adds fused into the norms), and the op-by-op graph with its rotary kernel and
 * fused norms (`rotaryKernel`, `fuseResidualNorms`), against the plain op-by-op graph of the same weights,
 * feature by feature of the Llama variants, in bare onnxruntime sessions: prefill then single-token steps.
 */
import { expect } from 'chai';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { buildLlamaModel, randomLlamaWeights, type LlamaBuildOptions } from '../src/onnx/llama-builder.js';
import type { LlamaConfig } from '../src/onnx/llama-spec.js';
import { writeModel } from '../src/onnx/proto.js';
import { testDir } from './support/models.js';

const base: LlamaConfig = { vocabSize: 96, hiddenSize: 64, numLayers: 2, numHeads: 4, numKvHeads: 2, intermediateSize: 128 };
const PROMPT = [1, 5, 9, 22, 40, 3, 17, 8, 60, 11];
const STEPS = 10;

/** The last position's logits of a prefill of PROMPT and of each greedy step after it (each input in the graph's own type). */
async function run(path: string): Promise<Float32Array[]> {
  const s = await ort.InferenceSession.create(path);
  try {
    const meta = (n: string) => s.inputMetadata.find((m) => m.name === n) as { shape?: number[]; type?: string } | undefined;
    const dims = (n: string) => meta(n)?.shape ?? [];
    let past: Record<string, ort.Tensor> = {};
    for (const n of s.inputNames) {
      const half = meta(n)?.type === 'float16';
      if (n.startsWith('past_')) past[n] = new ort.Tensor(half ? 'float16' : 'float32', half ? new Uint16Array(0) : new Float32Array(0), [1, dims(n)[1]!, 0, dims(n)[3]!]);
    }
    const out: Float32Array[] = [];
    let feed = PROMPT;
    let total = 0;
    for (let i = 0; i <= STEPS; i++) {
      const T = total + feed.length;
      const inputs: Record<string, ort.Tensor> = {
        input_ids: new ort.Tensor('int64', BigInt64Array.from(feed, BigInt), [1, feed.length]),
        attention_mask: new ort.Tensor('int64', new BigInt64Array(T).fill(1n), [1, T]),
        ...past,
      };
      if (s.inputNames.includes('position_ids')) inputs.position_ids = new ort.Tensor('int64', BigInt64Array.from(feed, (_, j) => BigInt(total + j)), [1, feed.length]);
      if (s.inputNames.includes('inputs_embeds')) inputs.inputs_embeds = new ort.Tensor('float32', new Float32Array(0), [1, 0, base.hiddenSize]);
      if (s.inputNames.includes('use_cache_branch')) inputs.use_cache_branch = new ort.Tensor('bool', [total > 0], [1]);
      const r = await s.run(inputs);
      const logits = r.logits!;
      const V = logits.dims[2]!;
      const all = logits.type === 'float16' ? halfToFloat(logits.data as Uint16Array) : (logits.data as Float32Array);
      const last = all.slice((logits.dims[1]! - 1) * V);
      out.push(last);
      past = {};
      for (const n of Object.keys(r)) if (n.startsWith('present.')) past[n.replace('present.', 'past_key_values.')] = r[n]!;
      total = T;
      feed = [last.indexOf(Math.max(...last))];
    }
    return out;
  } finally {
    await s.release();
  }
}

function halfToFloat(h: Uint16Array): Float32Array {
  return Float32Array.from(h, (x) => {
    const e = (x >> 10) & 31;
    const m = x & 1023;
    const sign = x >> 15 ? -1 : 1;
    return e === 0 ? sign * m * 2 ** -24 : sign * (1 + m / 1024) * 2 ** (e - 15);
  });
}

describe('GroupQueryAttention graphs (what GGUF conversion writes) equal the op-by-op graph', function () {
  this.timeout(60_000);
  const cases: [string, LlamaConfig, LlamaBuildOptions][] = [
    ['NeoX rotary inside the kernel', base, {}],
    ['adjacent (llama GGUF) rotary inside the kernel', { ...base, ropeStyle: 'adjacent' }, {}],
    ['heads of 8: rotary by ops before the kernel', { ...base, ropeStyle: 'adjacent', numHeads: 8, numKvHeads: 4 }, {}],
    ['rotary by ops on request, q/k/v biases', { ...base, qkvBias: true }, { gqaRotary: 'ops' }],
    ['q/k norms, key length 32', { ...base, qkNorm: true, headDim: 32 }, {}],
    ['llama 3 frequency factors, base 500000', { ...base, ropeStyle: 'adjacent', ropeTheta: 500000, ropeFreqFactors: Array.from({ length: 8 }, (_, i) => 1 + i) }, {}],
    [
      'Gemma 2/3: soft-capping, query scale, sliding window of 3 with its own rope base, linear scaling',
      {
        ...base,
        numLayers: 4,
        postNorms: true,
        hiddenAct: 'gelu_tanh',
        embeddingScale: 8,
        queryScale: 0.2,
        attnLogitSoftcap: 2,
        finalLogitSoftcap: 8,
        slidingWindow: 3,
        layerTypes: ['sliding', 'full', 'sliding', 'full'],
        ropeThetaLocal: 100,
        ropeScale: 4,
        ropeScaleLocal: 1,
      },
      {},
    ],
    [
      "gpt-oss: attention sinks, sliding window of 3 on even layers, q/k/v and output biases, experts with biases",
      {
        ...base,
        numLayers: 4,
        headDim: 32,
        qkvBias: true,
        projectionBias: true,
        attentionSinks: true,
        slidingWindow: 3,
        layerTypes: ['sliding', 'full', 'sliding', 'full'],
        intermediateSize: 32,
        moe: { experts: 4, used: 2, normalize: true, biases: true, swiglu: { alpha: 1.702, beta: 1, limit: 7 } },
      },
      {},
    ],
    ['merged decoder', base, { mergedDecoder: true }],
    ['inputs_embeds and last_hidden_state', base, { inputsEmbeds: true, outputHidden: true }],
    ['residual Adds apart from the norms', base, { fuseResidualNorms: false }],
  ];
  cases.forEach(([label, config, options], i) => {
    it(label, async () => {
      const dir = testDir(`gguf-attention-${i}`);
      const weights = randomLlamaWeights(config, 7 + i, 0.3);
      const ops = join(dir, 'ops.onnx');
      const gqa = join(dir, 'gqa.onnx');
      // (gqaRotary and fuseResidualNorms: false change nothing in an op-by-op graph)
      await writeModel(ops, buildLlamaModel(config, weights, options));
      await writeModel(gqa, buildLlamaModel(config, weights, { ...options, attention: 'gqa', maxPositions: 64 }));
      // and the op graph with its rotary kernel (RotaryEmbedding from caches) and its residual Adds in the norms
      const opsKernels = join(dir, 'ops-kernels.onnx');
      const withKernels = buildLlamaModel(config, weights, { ...options, rotaryKernel: true, fuseResidualNorms: true, maxPositions: 64 });
      const rotaryKernels = withKernels.graph!.node!.filter((n) => n.opType === 'RotaryEmbedding').length;
      // (a merged decoder's are inside its branches)
      const kernelsWanted = !options.mergedDecoder && (config.headDim ?? base.hiddenSize / config.numHeads) % 16 === 0 ? config.numLayers : 0;
      expect(rotaryKernels, 'one rotary kernel a layer where the head size allows').to.equal(kernelsWanted);
      await writeModel(opsKernels, withKernels);
      const expected = await run(ops);
      for (const [form, path] of [['gqa', gqa], ['ops with kernels', opsKernels]]) {
        const got = await run(path!);
        let worst = 0;
        got.forEach((row, s) => row.forEach((v, j) => (worst = Math.max(worst, Math.abs(v - expected[s]![j]!)))));
        expect(worst, `${form}: largest logit difference over the prefill and the steps`).to.be.below(1e-4);
      }
      const greedy = (rows: Float32Array[]) => rows.map((r) => r.indexOf(Math.max(...r)));
      expect(new Set(greedy(expected)).size, 'a degenerate model proves little').to.be.greaterThan(3);
    });
  });

  for (const [label, config] of [
    ['', { ...base, ropeStyle: 'adjacent' }],
    // the sinks in the query's type (fp16 here, as GroupQueryAttention's head_sink must be)
    [', with attention sinks', { ...base, attentionSinks: true }],
  ] as [string, LlamaConfig][]) {
    it(`fp16 I/O: attention runs in fp16 on the fp16 cache and keeps the greedy tokens${label}`, async () => {
      const dir = testDir(`gguf-attention-fp16${label ? '-sinks' : ''}`);
      const weights = randomLlamaWeights(config, 3, 0.3);
      await writeModel(join(dir, 'ops.onnx'), buildLlamaModel(config, weights, { dtype: 'float16' }));
      await writeModel(join(dir, 'gqa.onnx'), buildLlamaModel(config, weights, { dtype: 'float16', attention: 'gqa', maxPositions: 64 }));
      const greedy = (rows: Float32Array[]) => rows.map((r) => r.indexOf(Math.max(...r)));
      expect(greedy(await run(join(dir, 'gqa.onnx')))).to.deep.equal(greedy(await run(join(dir, 'ops.onnx'))));
    });
  }

  for (const [label, config] of [
    ['', { ...base, ropeStyle: 'adjacent' }],
    [', with attention sinks (cast to fp16 for the kernel)', { ...base, attentionSinks: true }],
  ] as [string, LlamaConfig][]) {
    it(`fp16 keys and values under fp32 weights (kvDtype): the kernel in fp16 on an fp16 cache, near the fp32 graph${label}`, async () => {
      const dir = testDir(`gguf-attention-kv16${label ? '-sinks' : ''}`);
      const weights = randomLlamaWeights(config, 4, 0.3);
      await writeModel(join(dir, 'ops.onnx'), buildLlamaModel(config, weights, {}));
      await writeModel(join(dir, 'gqa.onnx'), buildLlamaModel(config, weights, { kvDtype: 'float16', attention: 'gqa', maxPositions: 64 }));
      const s = await ort.InferenceSession.create(join(dir, 'gqa.onnx'));
      const types = Object.fromEntries([...s.inputMetadata, ...s.outputMetadata].map((m) => [m.name, (m as { type?: string }).type]));
      await s.release();
      expect([types['past_key_values.0.key'], types['present.1.value'], types.logits]).to.deep.equal(['float16', 'float16', 'float32']);
      const expected = await run(join(dir, 'ops.onnx'));
      const got = await run(join(dir, 'gqa.onnx'));
      // fp16 keeps 11 significant bits of q, k, v and the kernel's output: differences of a few thousandths of the logits' range
      let worst = 0;
      let range = 0;
      got.forEach((row, i) => row.forEach((v, j) => (worst = Math.max(worst, Math.abs(v - expected[i]![j]!)))));
      expected.forEach((row) => (range = Math.max(range, Math.max(...row) - Math.min(...row))));
      expect(worst / range, `largest logit difference (${worst}) over the logits' range (${range})`).to.be.below(5e-3);
      const greedy = (rows: Float32Array[]) => rows.map((r) => r.indexOf(Math.max(...r)));
      expect(greedy(got)).to.deep.equal(greedy(expected));
    });
  }

  it('refuses position_ids (GroupQueryAttention takes positions from the mask) and an unknown attention', () => {
    const weights = randomLlamaWeights(base, 1);
    expect(() => buildLlamaModel(base, weights, { attention: 'gqa', positionIds: true })).to.throw(/no position_ids input/);
    expect(() => buildLlamaModel(base, weights, { attention: 'flash' as 'gqa' })).to.throw(/unknown attention flash/);
  });
});
