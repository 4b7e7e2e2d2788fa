/**
 * Builds Llama decoders the way onnxruntime-genai's model builder writes them: attention is one
 * `com.microsoft::GroupQueryAttention` per layer whose `seqlens_k` (valid keys − 1 per row) and
 * `total_sequence_length` are derived from `attention_mask` inside the graph, and rotary embeddings are applied
 * inside the attention (`do_rotary` with cos/sin caches) or by `com.microsoft::RotaryEmbedding` from
 * `position_ids`. Same weights as {@link buildLlamaModel}, so the two graphs of one model can be compared token
 * for token. Such graphs take their positions and valid keys from `seqlens_k`: batches must be right-padded.
 */
import type { onnx as O } from 'onnx-proto';
import { DataType, makeNode, makeTensor, makeValueInfo } from './proto.js';
import { GraphBuilder, float32ArrayToFloat16, transpose2d } from './graph-builder.js';
import type { LlamaConfig, LlamaWeights } from './llama-spec.js';
import { LlamaConfigError } from './llama-builder.js';

const MS = 'com.microsoft';

/** Options of {@link buildGenaiLlamaModel}. */
export interface GenaiBuildOptions {
  /**
   * Storage type of the weights and of the float I/O (past/present, logits). Default float32. With float16,
   * attention runs in fp16 as in genai's fp16 exports (q, k, v cast down, the output cast up); the rest stays fp32.
   */
  dtype?: 'float32' | 'float16';
  /** Element type of `input_ids` and `attention_mask` (and `position_ids`). Default int64. */
  idsType?: 'int64' | 'int32';
  /**
   * `inside` (default): GroupQueryAttention rotates q and k itself (`do_rotary`, positions from `seqlens_k`), the
   * graph has no `position_ids`. `op`: a `position_ids` input feeds `com.microsoft::RotaryEmbedding` nodes.
   */
  rotary?: 'inside' | 'op';
  /** q, k and v as one packed product fed to GroupQueryAttention's `query` (default), or three separate inputs. */
  packedQkv?: boolean;
  /** Rows of the cos/sin caches: the longest sequence the graph can run. Default 512. */
  maxPositions?: number;
}

const PLAIN_LLAMA_KEYS = new Set<keyof LlamaConfig>([
  'vocabSize',
  'hiddenSize',
  'numLayers',
  'numHeads',
  'numKvHeads',
  'headDim',
  'intermediateSize',
  'ropeTheta',
  'rmsNormEps',
  'ropeStyle',
  'tieWordEmbeddings',
]);

/** A builder of a Llama decoder in onnxruntime-genai's layout (see the module comment). */
export function buildGenaiLlamaModel(config: LlamaConfig, weights: LlamaWeights, options: GenaiBuildOptions = {}): O.IModelProto {
  // The plain Llama block only: a variant this layout does not write must not be dropped silently.
  const variants = (Object.keys(config) as (keyof LlamaConfig)[]).filter((k) => !PLAIN_LLAMA_KEYS.has(k) && config[k] !== undefined);
  if (variants.length > 0) throw new LlamaConfigError(`buildGenaiLlamaModel writes the plain Llama block; it does not write ${variants.join(', ')}`);
  const vocab = config.vocabSize;
  const hidden = config.hiddenSize;
  const heads = config.numHeads;
  const kvHeads = config.numKvHeads ?? heads;
  const headDim = config.headDim ?? hidden / heads;
  const inter = config.intermediateSize;
  const eps = config.rmsNormEps ?? 1e-5;
  const theta = config.ropeTheta ?? 10000;
  const interleaved = (config.ropeStyle ?? 'half') === 'adjacent' ? 1 : 0;
  const fp16 = options.dtype === 'float16';
  const ioType = fp16 ? DataType.FLOAT16 : DataType.FLOAT;
  const idsType = options.idsType === 'int32' ? DataType.INT32 : DataType.INT64;
  const rotaryOp = options.rotary === 'op';
  const packed = options.packedQkv ?? true;
  const maxPos = options.maxPositions ?? 512;
  const qDim = heads * headDim;
  const kvDim = kvHeads * headDim;

  const g = new GraphBuilder();
  const inputs = [
    makeValueInfo(g.reserve('input_ids'), idsType, ['batch_size', 'sequence_length']),
    makeValueInfo(g.reserve('attention_mask'), idsType, ['batch_size', 'total_sequence_length']),
  ];
  if (rotaryOp) inputs.push(makeValueInfo(g.reserve('position_ids'), idsType, ['batch_size', 'sequence_length']));
  const outputs = [makeValueInfo(g.reserve('logits'), ioType, ['batch_size', 'sequence_length', vocab])];
  for (let i = 0; i < config.numLayers; i++) {
    for (const kind of ['key', 'value']) {
      inputs.push(makeValueInfo(g.reserve(`past_key_values.${i}.${kind}`), ioType, ['batch_size', kvHeads, 'past_sequence_length', headDim]));
      outputs.push(makeValueInfo(g.reserve(`present.${i}.${kind}`), ioType, ['batch_size', kvHeads, 'total_sequence_length', headDim]));
    }
  }
  const ms = (opType: string, ins: string[], outs: string[], attrs: Parameters<typeof makeNode>[3]) =>
    g.nodes.push(makeNode(opType, ins, outs, attrs, g.fresh(`n_${opType}`), MS));

  const stored = (name: string, dims: number[], data: Float32Array): string => {
    const t = g.initializer(fp16 ? makeTensor(name, DataType.FLOAT16, dims, float32ArrayToFloat16(data)) : makeTensor(name, DataType.FLOAT, dims, data));
    return fp16 ? g.op('Cast', [t], { to: DataType.FLOAT }) : t;
  };
  const matrix = (name: string, out: number, inp: number, data: Float32Array) => stored(`${name}.T`, [inp, out], transpose2d(data, out, inp));
  const rms = (x: string, w: string): string => {
    const ms2 = g.op('ReduceMean', [g.op('Pow', [x, g.f32([2], [])])], { axes: [-1], keepdims: 1 });
    return g.op('Mul', [g.op('Div', [x, g.op('Sqrt', [g.op('Add', [ms2, g.f32([eps], [])])])]), w]);
  };
  const toFloat = (x: string) => (fp16 ? g.op('Cast', [x], { to: DataType.FLOAT }) : x);

  // As the genai builder derives them: seqlens_k = Σ mask − 1 per row (int32), total_sequence_length = mask width.
  const one = g.i64([1]);
  const maskSum = g.op('ReduceSum', [g.op('Cast', [`attention_mask`], { to: DataType.INT64 }), one], { keepdims: 0 });
  const seqlensK = g.op('Cast', [g.op('Sub', [maskSum, g.i64([1], [])])], { to: DataType.INT32 });
  const totalLen = g.op('Cast', [g.op('Squeeze', [g.op('Slice', [g.op('Shape', ['attention_mask']), one, g.i64([2])]), g.i64([0])])], { to: DataType.INT32 });

  const half = headDim / 2;
  const freqs = new Float32Array(maxPos * half);
  for (let p = 0; p < maxPos; p++) for (let j = 0; j < half; j++) freqs[p * half + j] = p * Math.pow(theta, (-2 * j) / headDim);
  const cache = (name: string, values: Float32Array) =>
    fp16 ? g.initializer(makeTensor(name, DataType.FLOAT16, [maxPos, half], float32ArrayToFloat16(values))) : g.f32Array(name, [maxPos, half], values);
  const cosCache = cache('cos_cache', freqs.map(Math.cos));
  const sinCache = cache('sin_cache', freqs.map(Math.sin));
  // The attention's own type: its past and present are the graph's KV I/O (genai feeds them straight in).
  const toAttn = (x: string) => (fp16 && x ? g.op('Cast', [x], { to: DataType.FLOAT16 }) : x);
  const positions = rotaryOp ? g.op('Cast', ['position_ids'], { to: DataType.INT64 }) : '';
  const rotate = (x: string, n: number): string => {
    const out = g.fresh('rotary');
    ms('RotaryEmbedding', [x, positions, cosCache, sinCache], [out], { interleaved, num_heads: n, rotary_embedding_dim: headDim });
    return out;
  };

  let h = toFloat(g.op('Gather', [g.initializer(fp16 ? makeTensor('model.embed_tokens.weight', DataType.FLOAT16, [vocab, hidden], float32ArrayToFloat16(weights.embed)) : makeTensor('model.embed_tokens.weight', DataType.FLOAT, [vocab, hidden], weights.embed)), 'input_ids'], { axis: 0 }));
  weights.layers.forEach((l, i) => {
    const p = `model.layers.${i}`;
    const x = rms(h, stored(`${p}.input_layernorm.weight`, [hidden], l.attnNorm!));
    let q: string, k: string, v: string;
    const wq = matrix(`${p}.attn.q_proj.weight`, qDim, hidden, l.wq!);
    const wk = matrix(`${p}.attn.k_proj.weight`, kvDim, hidden, l.wk!);
    const wv = matrix(`${p}.attn.v_proj.weight`, kvDim, hidden, l.wv!);
    if (packed && !rotaryOp) {
      q = toAttn(g.op('MatMul', [x, g.op('Concat', [wq, wk, wv], { axis: 1 })]));
      k = '';
      v = '';
    } else {
      q = toAttn(g.op('MatMul', [x, wq]));
      k = toAttn(g.op('MatMul', [x, wk]));
      v = toAttn(g.op('MatMul', [x, wv]));
      if (rotaryOp) {
        q = rotate(q, heads);
        k = rotate(k, kvHeads);
      }
    }
    const [pastK, pastV] = [`past_key_values.${i}.key`, `past_key_values.${i}.value`];
    const attn = g.fresh('attn');
    ms(
      'GroupQueryAttention',
      [q, k, v, pastK, pastV, seqlensK, totalLen, ...(rotaryOp ? [] : [cosCache, sinCache])],
      [attn, `present.${i}.key`, `present.${i}.value`],
      { num_heads: heads, kv_num_heads: kvHeads, do_rotary: rotaryOp ? 0 : 1, rotary_interleaved: interleaved, local_window_size: -1 },
    );
    h = g.op('Add', [h, g.op('MatMul', [toFloat(attn), matrix(`${p}.attn.o_proj.weight`, hidden, qDim, l.wo!)])]);
    const y = rms(h, stored(`${p}.post_attention_layernorm.weight`, [hidden], l.mlpNorm!));
    const gate = g.op('MatMul', [y, matrix(`${p}.mlp.gate_proj.weight`, inter, hidden, l.wGate!)]);
    const act = g.op('Mul', [g.op('Mul', [gate, g.op('Sigmoid', [gate])]), g.op('MatMul', [y, matrix(`${p}.mlp.up_proj.weight`, inter, hidden, l.wUp!)])]);
    h = g.op('Add', [h, g.op('MatMul', [act, matrix(`${p}.mlp.down_proj.weight`, hidden, inter, l.wDown!)])]);
  });
  const normed = rms(h, stored('model.norm.weight', [hidden], weights.finalNorm));
  const head = matrix(weights.lmHead ? 'lm_head.weight' : 'lm_head.tied', vocab, hidden, weights.lmHead ?? weights.embed);
  if (fp16) g.op('Cast', [g.op('MatMul', [normed, head])], { to: DataType.FLOAT16 }, 'logits');
  else g.op('MatMul', [normed, head], {}, 'logits');

  return {
    irVersion: 8,
    producerName: 'onnxruntime-genai',
    opsetImport: [
      { domain: '', version: 17 },
      { domain: MS, version: 1 },
    ],
    graph: g.toGraph('genai_llama_decoder', inputs, outputs),
  };
}
