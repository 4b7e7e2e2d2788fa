import { expect } from 'chai';
import { join } from 'node:path';
import { Engine } from '../src/engine.js';
import { graphFacts } from '../src/onnx/graph-facts.js';
import { buildLlamaModel, randomLlamaWeights } from '../src/onnx/llama-builder.js';
import { DataType, makeNode, makeTensor, readModel, writeModel, type ModelProto, type NodeProto, type TensorProto } from '../src/onnx/proto.js';
import { bareGreedy, bareLogits } from './support/bare-loop.js';
import { cacheDir, smallConfig, testDir } from './support/models.js';

/**
 * Graphs as onnxruntime's `quantize_dynamic` writes them (the hub's `model_int8.onnx` / `model_quantized.onnx`):
 * each MatMul with a constant weight becomes DynamicQuantizeLinear of its input (one scale and zero point over the
 * whole tensor) + MatMulInteger over int8 weights, scaled back to float. Rows or positions run together would
 * change each other's rounding; each call must still give what it gives alone, and a lone prompt what
 * onnxruntime's bare loop gives.
 */

/** Rewrites every MatMul over a 2-D fp32 initializer as quantize_dynamic does (symmetric int8 weights per tensor). */
function quantizeDynamic(model: ModelProto): number {
  const graph = model.graph!;
  const inits = new Map((graph.initializer ?? []).map((t) => [t.name!, t as TensorProto]));
  const nodes: NodeProto[] = [];
  const added: TensorProto[] = [];
  for (const node of graph.node!) {
    const w = node.opType === 'MatMul' ? inits.get(node.input![1]!) : undefined;
    if (!w || w.dataType !== DataType.FLOAT || w.dims!.length !== 2) {
      nodes.push(node);
      continue;
    }
    const raw = w.rawData!;
    const f = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
    const scale = f.reduce((m, v) => Math.max(m, Math.abs(v)), 0) / 127 || 1;
    const q = Int8Array.from(f, (v) => Math.max(-127, Math.min(127, Math.round(v / scale))));
    const y = node.output![0]!;
    added.push(
      makeTensor(`${y}.Wq`, DataType.INT8, w.dims!.map(Number), new Uint8Array(q.buffer)),
      makeTensor(`${y}.Wzp`, DataType.INT8, [], new Uint8Array(1)),
      makeTensor(`${y}.Ws`, DataType.FLOAT, [], new Uint8Array(new Float32Array([scale]).buffer)),
    );
    nodes.push(
      makeNode('DynamicQuantizeLinear', [node.input![0]!], [`${y}.xq`, `${y}.xs`, `${y}.xzp`]),
      makeNode('MatMulInteger', [`${y}.xq`, `${y}.Wq`, `${y}.xzp`, `${y}.Wzp`], [`${y}.i32`]),
      makeNode('Cast', [`${y}.i32`], [`${y}.f`], { to: DataType.FLOAT }),
      makeNode('Mul', [`${y}.xs`, `${y}.Ws`], [`${y}.s`]),
      makeNode('Mul', [`${y}.f`, `${y}.s`], [y]),
    );
  }
  graph.node = nodes as typeof graph.node;
  const read = new Set(nodes.flatMap((n) => n.input ?? []));
  graph.initializer = [...graph.initializer!.filter((t) => read.has(t.name!)), ...added] as typeof graph.initializer;
  return added.length / 3;
}

const PROMPTS = [
  [5, 17, 3, 44, 9, 61, 22, 8, 71, 30, 12, 55, 19],
  [12, 80],
  [40, 2, 66, 91, 7],
];
/** A prompt past the prefix cache's shortest prefix (16 tokens), and one that begins with it. */
const LONG = [3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46, 26, 43, 38, 32, 79, 50, 28, 84, 19];
const LONGER = [...LONG, 71, 69, 39];
const STEPS = 24;

/** The log-probability of token `id` in a row of logits. */
function logprobOf(row: Float32Array, id: number): number {
  const max = Math.max(...row);
  return row[id]! - max - Math.log(row.reduce((s, x) => s + Math.exp(x - max), 0));
}

describe('dynamic-quantized graphs (DynamicQuantizeLinear + MatMulInteger): every row as alone', function () {
  this.timeout(120_000);
  let path: string;
  let float: string;
  /** Prompts longer than 4 tokens would be prefilled and scored in several chunks. */
  let chunked: Engine;
  /** Default chunks: calls arriving together would be prefilled together. */
  let batched: Engine;
  /** Each row's ids and their log-probabilities. */
  const rows = async (engine: Engine, prompt: number[] | number[][]) =>
    (await engine.generate({ promptIds: prompt }, { maxTokens: STEPS, logprobs: 1 })).rows.map((r) => ({ ids: r.ids, logprobs: r.logprobs!.map((l) => l.logprob) }));

  before(async () => {
    const dir = testDir('dynamic-quant');
    const model = buildLlamaModel(smallConfig, randomLlamaWeights(smallConfig, 11, 0.08)) as ModelProto;
    float = join(dir, 'float.onnx');
    await writeModel(float, model);
    expect(quantizeDynamic(model)).to.equal(9); // 2 layers × (o, gate, up, down) + the LM head
    path = join(dir, 'model_int8.onnx');
    await writeModel(path, model);
    chunked = await Engine.load({ model: path, cacheDir, prefillChunk: 4 });
    batched = await Engine.load({ model: path, cacheDir });
  });

  after(() => Promise.all([chunked?.dispose(), batched?.dispose()]));

  it('its graph facts say so, and a lone prompt decodes as onnxruntime\'s bare loop (whole prompt, then one token a step)', async () => {
    expect(graphFacts(await readModel(path)).runWideActivationScale).to.equal(true);
    expect(graphFacts(await readModel(float)).runWideActivationScale).to.equal(undefined);
    for (const prompt of PROMPTS) expect((await rows(chunked, prompt))[0]!.ids, `prompt ${prompt}`).to.deep.equal(await bareGreedy(path, prompt, STEPS));
  });

  it('a prompt that begins with an earlier one runs whole, as onnxruntime runs it (no cached prefix)', async () => {
    for (const prompt of [LONG, LONGER]) {
      const expected = await bareGreedy(path, prompt, STEPS);
      const logits = await bareLogits(path, prompt);
      const first = logprobOf(logits.subarray(logits.length - smallConfig.vocabSize), expected[0]!);
      // In the batch, and in the session's own loop (a traced call).
      for (const trace of [undefined, 1]) {
        const [row] = (await batched.generate({ promptIds: prompt }, { maxTokens: STEPS, logprobs: 1, ...(trace ? { trace } : {}) })).rows;
        expect(row!.ids, `trace ${trace}`).to.deep.equal(expected);
        expect(row!.logprobs![0]!.logprob, `trace ${trace}`).to.be.closeTo(first, 1e-6);
      }
    }
  });

  it('prompt log-probabilities are those of one run of the whole prompt', async () => {
    const { prompts } = await chunked.promptLogprobs({ ids: [LONG] });
    const logits = await bareLogits(path, LONG);
    const vocab = smallConfig.vocabSize;
    prompts[0]!.logprobs.forEach((entry, j) => expect(entry.logprob, `position ${j}`).to.be.closeTo(logprobOf(logits.subarray(j * vocab, (j + 1) * vocab), entry.id), 1e-6));
    // A reasoner composed with it (the float graph, which takes chunks) runs the prompt whole beside it.
    const composed = await Engine.load({ model: path, reasoners: [{ model: float, weight: 0.5 }], placement: 'inline', cacheDir, prefillChunk: 4 });
    try {
      expect((await composed.promptLogprobs({ ids: [LONG] })).prompts[0]!.logprobs).to.have.length(LONG.length - 1);
    } finally {
      await composed.dispose();
    }
  });

  it('three concurrent calls each give what the call alone gives, to the log-probability', async () => {
    const alone = [];
    for (const p of PROMPTS) alone.push((await rows(batched, p))[0]!);
    const together = await Promise.all(PROMPTS.map(async (p) => (await rows(batched, p))[0]!));
    expect(together).to.deep.equal(alone);
    expect(new Set(alone.map((r) => String(r.ids))).size).to.equal(PROMPTS.length);
  });

  it('a batch of prompts of different lengths gives each prompt what it gives alone, to the log-probability', async () => {
    const alone = [];
    for (const p of PROMPTS) alone.push((await rows(batched, p))[0]!);
    expect(await rows(batched, PROMPTS)).to.deep.equal(alone);
    // A traced call runs in the session's own loop, each row in a run of its own over the longest row's masked
    // padding (last bits apart, see DecoderSession.runRows): its tokens are each prompt's alone.
    const traced = await batched.generate({ promptIds: PROMPTS }, { maxTokens: STEPS, trace: 1 });
    expect(traced.rows.map((r) => r.ids)).to.deep.equal(alone.map((r) => r.ids));
  });
});
