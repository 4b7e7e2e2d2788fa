import { expect } from 'chai';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { Engine } from '../src/engine.js';
import { buildLlamaModel, randomLlamaWeights } from '../src/onnx/llama-builder.js';
import type { LlamaConfig } from '../src/onnx/llama-spec.js';
import { DataType, makeNode, makeTensor, readModel, writeModel, type ModelProto, type TensorProto } from '../src/onnx/proto.js';
import { float16ToFloat32, float32ArrayToFloat16 } from '../src/onnx/graph-builder.js';
import { dequantizeMatrix } from '../src/onnx/quantized-matrix.js';
import { prepareDecoder } from '../src/onnx/prepared-cache.js';
import { quantizeModel } from '../src/modules/quantize-module.js';
import { buildProjectorModel, randomProjectorWeights, writeProjectorModel } from '../src/onnx/projector-builder.js';
import { cacheDir, testDir } from './support/models.js';
import { bareGreedy } from './support/bare-loop.js';

/**
 * Graphs shaped like transformers.js / optimum exports: q4f16 (MatMulNBits computing in fp16 with fp16 scales,
 * with fp16 I/O or fp32 I/O behind Casts as `keep_io_types` leaves them) and bnb4 (MatMulBnb4, FP4 and NF4),
 * each decoded by the engine and by onnxruntime's bare loop on the same file.
 */
const config: LlamaConfig = { vocabSize: 128, hiddenSize: 64, numLayers: 2, numHeads: 4, numKvHeads: 2, intermediateSize: 128 };
const PROMPTS = [
  [5, 17, 3, 44, 9, 61],
  [12, 80],
];
const STEPS = 10;

function raw(t: TensorProto): Uint8Array {
  return t.rawData!;
}

function initializers(model: ModelProto): Map<string, TensorProto> {
  return new Map((model.graph!.initializer ?? []).map((t) => [t.name!, t as TensorProto]));
}

function attr(node: { attribute?: { name?: string | null; i?: unknown }[] | null }, name: string): number {
  return Number(node.attribute!.find((a) => a.name === name)!.i);
}

/**
 * Makes every MatMulNBits compute in fp16 (T = float16), as in a q4f16 export: fp16 scales, its input cast
 * down and its output cast back up for the fp32 nodes around it.
 */
function halveMatMulNBits(model: ModelProto): number {
  const graph = model.graph!;
  const inits = initializers(model);
  const converted = new Set<string>();
  const nodes = [];
  let count = 0;
  for (const node of graph.node!) {
    if (node.opType !== 'MatMulNBits') {
      nodes.push(node);
      continue;
    }
    const [a, , scales] = node.input!;
    if (!converted.has(scales!)) {
      const t = inits.get(scales!)!;
      const bytes = raw(t);
      const f32 = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
      const half = float32ArrayToFloat16(f32);
      t.dataType = DataType.FLOAT16;
      t.rawData = new Uint8Array(half.buffer);
      converted.add(scales!);
    }
    const out = node.output![0]!;
    nodes.push(makeNode('Cast', [a!], [`${out}_in16`], { to: DataType.FLOAT16 }));
    node.input![0] = `${out}_in16`;
    node.output![0] = `${out}_out16`;
    nodes.push(node);
    nodes.push(makeNode('Cast', [`${out}_out16`], [out], { to: DataType.FLOAT }));
    count++;
  }
  graph.node = nodes as typeof graph.node;
  return count;
}

/**
 * What `keep_io_types` leaves of an fp16 graph: every fp16 graph input (past KV) and output (logits, present
 * KV) becomes fp32, with a Cast right after the input and right before the output.
 */
function keepIoTypes(model: ModelProto): void {
  const graph = model.graph!;
  const [before, after] = [[] as ReturnType<typeof makeNode>[], [] as ReturnType<typeof makeNode>[]];
  for (const input of graph.input!) {
    const tt = input.type!.tensorType!;
    if (tt.elemType !== DataType.FLOAT16) continue;
    const inner = `${input.name}_fp16`;
    for (const n of graph.node!) n.input = n.input!.map((x) => (x === input.name ? inner : x));
    before.push(makeNode('Cast', [input.name!], [inner], { to: DataType.FLOAT16 }));
    tt.elemType = DataType.FLOAT;
  }
  for (const output of graph.output!) {
    const tt = output.type!.tensorType!;
    if (tt.elemType !== DataType.FLOAT16) continue;
    const inner = `${output.name}_fp16`;
    for (const n of graph.node!) n.output = n.output!.map((x) => (x === output.name ? inner : x));
    after.push(makeNode('Cast', [inner], [output.name!], { to: DataType.FLOAT }));
    tt.elemType = DataType.FLOAT;
  }
  graph.node = [...before, ...graph.node!, ...after] as typeof graph.node;
}

/** bitsandbytes' 4-bit code books, code → value (onnxruntime's fp4/nf4 maps). */
const CODEBOOKS = {
  FP4: [0, 0.005208333333, 0.66666667, 1, 0.33333333, 0.5, 0.16666667, 0.25, -0, -0.005208333333, -0.66666667, -1, -0.33333333, -0.5, -0.16666667, -0.25],
  NF4: [
    -1, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1,
  ],
} as const;

/**
 * Rewrites every MatMulNBits as `com.microsoft::MatMulBnb4` over the same (dequantized) weights: B `[N, K]`
 * flattened in blocks of `blockSize` with one absmax each, codes two per byte, first one in the high nibble.
 */
function toBnb4(model: ModelProto, quantType: 'FP4' | 'NF4', blockSize = 32): number {
  const inits = initializers(model);
  const book = CODEBOOKS[quantType];
  const added: TensorProto[] = [];
  let count = 0;
  for (const node of model.graph!.node!) {
    if (node.opType !== 'MatMulNBits') continue;
    const [K, N, bs] = [attr(node, 'K'), attr(node, 'N'), attr(node, 'block_size')];
    const [, qw, sc, zp] = node.input!.map((n) => inits.get(n)!);
    const s = raw(sc!);
    const w = dequantizeMatrix({
      kind: 'nbits',
      rows: N,
      cols: K,
      bits: 4,
      blockSize: bs,
      data: raw(qw!),
      scales: new Float32Array(s.buffer.slice(s.byteOffset, s.byteOffset + s.byteLength)),
      zeroPoints: raw(zp!),
    });
    const blocks = Math.ceil(w.length / blockSize);
    const absmax = new Float32Array(blocks);
    const codes = new Uint8Array(Math.ceil(w.length / 2));
    for (let b = 0; b < blocks; b++) {
      const block = w.subarray(b * blockSize, (b + 1) * blockSize);
      absmax[b] = block.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      block.forEach((v, i) => {
        const x = absmax[b] ? v / absmax[b]! : 0;
        let best = 0;
        for (let c = 1; c < 16; c++) if (Math.abs(book[c]! - x) < Math.abs(book[best]! - x)) best = c;
        const at = b * blockSize + i;
        codes[at >> 1]! |= at % 2 === 0 ? best << 4 : best;
      });
    }
    const name = node.output![0]!;
    added.push(makeTensor(`${name}.bnb4`, DataType.UINT8, [codes.length], codes), makeTensor(`${name}.absmax`, DataType.FLOAT, [blocks], absmax));
    node.opType = 'MatMulBnb4';
    node.input = [node.input![0]!, `${name}.bnb4`, `${name}.absmax`];
    node.attribute = makeNode('MatMulBnb4', [], [], { K, N, block_size: blockSize, quant_type: quantType === 'FP4' ? 0 : 1 }).attribute!;
    count++;
  }
  const graph = model.graph!;
  graph.initializer = [...graph.initializer!, ...added] as typeof graph.initializer;
  // Drop the MatMulNBits tensors nothing reads any more.
  const read = new Set(graph.node!.flatMap((n) => n.input ?? []));
  graph.initializer = graph.initializer!.filter((t) => read.has(t.name!));
  return count;
}

type Variant = { name: string; dtype: 'float32' | 'float16'; edit: (m: ModelProto) => number; op: string; kv: 'float16' | 'float32' };
const VARIANTS: Variant[] = [
  { name: 'q4f16, fp16 I/O', dtype: 'float16', edit: halveMatMulNBits, op: 'MatMulNBits', kv: 'float16' },
  {
    name: 'q4f16, fp32 I/O and KV (keep_io_types)',
    dtype: 'float16',
    edit: (m) => {
      keepIoTypes(m);
      return halveMatMulNBits(m);
    },
    op: 'MatMulNBits',
    kv: 'float32',
  },
  { name: 'bnb4 NF4', dtype: 'float32', edit: (m) => toBnb4(m, 'NF4'), op: 'MatMulBnb4', kv: 'float32' },
  { name: 'bnb4 FP4, fp16 I/O', dtype: 'float16', edit: (m) => toBnb4(m, 'FP4'), op: 'MatMulBnb4', kv: 'float16' },
];

/** Builds the float graph, quantizes it with `reasonplug quantize` (4-bit), then applies the variant's edit. */
async function exportOf(v: Variant, seed: number): Promise<string> {
  const dir = testDir(`qexport-${v.name.replace(/\W+/g, '-')}-${seed}`);
  const float = join(dir, 'float.onnx');
  await writeModel(float, buildLlamaModel(config, randomLlamaWeights(config, seed, 0.08), { dtype: v.dtype }));
  const q4 = join(dir, 'q4.onnx');
  await quantizeModel(float, q4, { bits: 4, headBits: 4, accuracy: 'fp32' }); // every MatMul at 4 bits, as toBnb4 reads them
  const model = await readModel(q4);
  expect(v.edit(model)).to.equal(11); // 2 layers × (qkv, o, gate, up, down) + the LM head
  const path = join(dir, 'model.onnx');
  await writeModel(path, model);
  return path;
}

function argmax(row: Float32Array): number {
  return row.reduce((best, x, i) => (x > row[best]! ? i : best), 0);
}

/**
 * One prefill on a prepared graph (last-position fp32 logits, hidden state, inputs_embeds), from ids and from
 * the same tokens' embedding rows.
 */
async function preparedStep(path: string, prompt: number[], table: Uint8Array, fp16: boolean) {
  const session = await ort.InferenceSession.create(path);
  try {
    const ids = (v: number[]) => new ort.Tensor('int64', BigInt64Array.from(v, BigInt), [1, v.length]);
    const meta = session.inputMetadata as unknown as { name: string; type: string; shape: readonly (number | string)[] }[];
    const embedType = meta.find((m) => m.name === 'inputs_embeds')!.type;
    const h = config.hiddenSize;
    const rows = fp16 ? Float32Array.from(new Uint16Array(new Uint8Array(table).buffer), float16ToFloat32) : new Float32Array(new Uint8Array(table).buffer);
    const feeds = (tokens: number[], embeds: number[]) => {
      const f: Record<string, ort.Tensor> = {
        input_ids: ids(tokens),
        attention_mask: ids(prompt.map(() => 1)),
        position_ids: ids(prompt.map((_, i) => i)),
        num_logits_to_keep: new ort.Tensor('int64', BigInt64Array.from([1n]), []),
      };
      const x = new Float32Array(embeds.length * h);
      embeds.forEach((t, i) => x.set(rows.subarray(t * h, (t + 1) * h), i * h));
      f.inputs_embeds = embedType === 'float16' ? new ort.Tensor('float16', float32ArrayToFloat16(x), [1, embeds.length, h]) : new ort.Tensor('float32', x, [1, embeds.length, h]);
      for (const m of meta) {
        if (!m.name.startsWith('past_key_values.')) continue;
        const dims = [1, m.shape[1] as number, 0, m.shape[3] as number];
        f[m.name] = m.type === 'float16' ? new ort.Tensor('float16', new Uint16Array(0), dims) : new ort.Tensor('float32', new Float32Array(0), dims);
      }
      return f;
    };
    const byIdsOut = await session.run(feeds(prompt, []));
    const byEmbedsOut = await session.run(feeds([], prompt));
    return { byIds: { logits: byIdsOut.logits!, hidden: byIdsOut.last_hidden_state! }, byEmbeds: byEmbedsOut.logits! };
  } finally {
    await session.release();
  }
}

async function greedy(options: Parameters<typeof Engine.load>[0], generate: Parameters<Engine['generate']>[1] = {}) {
  const engine = await Engine.load({ cacheDir, ...options });
  try {
    return await engine.generate({ promptIds: PROMPTS }, { maxTokens: STEPS, ...generate });
  } finally {
    await engine.dispose();
  }
}

describe('fp16, q4f16 and bnb4 exports against onnxruntime\'s bare loop', function () {
  this.timeout(120_000);
  let projector: string;
  before(async () => {
    projector = join(testDir('qexport-projector'), 'projector.onnx');
    await writeProjectorModel(projector, buildProjectorModel({ hiddenSize: config.hiddenSize }, randomProjectorWeights({ hiddenSize: config.hiddenSize }, 5)));
  });

  for (const v of VARIANTS) {
    it(`${v.name}: a batch of two prompts decodes as the bare loop does, token for token; prepared steps and latent steps run`, async () => {
      const path = await exportOf(v, 31);
      const model = await readModel(path);
      const ops = model.graph!.node!.map((n) => n.opType);
      expect(ops.filter((o) => o === v.op)).to.have.length(11);
      const ioType = v.kv === 'float16' ? DataType.FLOAT16 : DataType.FLOAT;
      const kvIn = model.graph!.input!.find((i) => i.name === 'past_key_values.0.key')!;
      expect(kvIn.type!.tensorType!.elemType).to.equal(ioType);
      expect(model.graph!.output!.find((o) => o.name === 'logits')!.type!.tensorType!.elemType).to.equal(ioType);
      if (v.op === 'MatMulNBits') {
        const scales = initializers(model).get(model.graph!.node!.find((n) => n.opType === 'MatMulNBits')!.input![2]!)!;
        expect(scales.dataType).to.equal(DataType.FLOAT16);
      }

      const got = (await greedy({ model: path })).rows.map((r) => r.ids);
      const expected = await Promise.all(PROMPTS.map((p) => bareGreedy(path, p, STEPS)));
      expect(got).to.deep.equal(expected);
      expect(got[0]).to.not.deep.equal(got[1]);

      // The prepared graph: last-position fp32 logits, the hidden state and inputs_embeds, on this graph.
      const prepared = await prepareDecoder(path, { lastLogitsOnly: true, logitsFloat32: true, hiddenState: true, inputsEmbeds: true, cacheDir });
      expect(prepared.padding).to.equal('left');
      const table = initializers(model).get('model.embed_tokens.weight')!;
      const step = await preparedStep(prepared.preparedPath, PROMPTS[0]!, raw(table), table.dataType === DataType.FLOAT16);
      expect(step.byIds.logits.dims).to.deep.equal([1, 1, config.vocabSize]);
      expect(step.byIds.logits.type).to.equal('float32');
      expect(step.byIds.hidden.dims).to.deep.equal([1, 1, config.hiddenSize]);
      expect(argmax(step.byIds.logits.data as Float32Array)).to.equal(expected[0]![0]);
      // The same prompt as embedding rows gives the same logits.
      const a = step.byIds.logits.data as Float32Array;
      const b = step.byEmbeds.data as Float32Array;
      expect(Math.max(...a.map((x, i) => Math.abs(x - b[i]!)))).to.be.below(1e-3);
      const latent = await greedy({ model: path, projector }, { latent: 'fixed:2' });
      expect(latent.usage.latentSteps).to.equal(2 * PROMPTS.length); // two per row
      expect(latent.rows.map((r) => r.ids)).to.not.deep.equal(got);
    });
  }

});
