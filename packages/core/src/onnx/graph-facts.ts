/**
 * Facts about a decoder graph that decide how the engine runs it, read from the protobuf once when the graph is
 * prepared: which side batches are padded on, whether rows and positions may run together, and how many weight
 * bytes and operators one decode step reads and runs (what the placement cost model weighs).
 */
import type { onnx as O } from 'onnx-proto';
import { DataType, type GraphProto, type NodeProto, type TensorProto } from './proto.js';
import { UnsupportedModelError } from './signature.js';

/** What {@link graphFacts} finds. */
export interface GraphFacts {
  /** `right` when the graph's attention is GroupQueryAttention (positions and valid keys from `seqlens_k`), else `left`. */
  padding: 'left' | 'right';
  /** Bytes of all initializers as stored (inline and external; initializers over one external region count once). */
  weightBytes: number;
  /**
   * Bytes one decode step reads: every initializer a compute node consumes, at the size onnxruntime holds it
   * (an fp16 initializer whose only use is a Cast to float32 is folded to fp32 at load, so it counts twice its
   * stored size; packed 4-bit MatMulNBits weights count as stored), less tables of which a step reads a few
   * rows (embedding Gathers, GatherBlockQuantized, rotary cos/sin caches).
   */
  stepBytes: number;
  /**
   * Operators one decode step runs (every node, subgraphs included, but `Constant`): each costs a kernel
   * launch whatever its size, which is most of a small quantized model's step.
   */
  stepNodes: number;
  /**
   * Set on LongRoPE graphs (Phi-3 128k, Phi-3.5, Phi-4-mini), which rotate a row with the long factors once its
   * length passes this many tokens: a prompt longer than that must be prefilled in one run, or its first chunks
   * would keep the short rotation. Read from the model's metadata ({@link LONG_ROPE_CONTEXT_KEY}).
   */
  longRopeContext?: number;
  /**
   * Set on graphs that quantize activations with one scale and zero point over the whole tensor of a run
   * (DynamicQuantizeLinear, as onnxruntime's `quantize_dynamic` writes the hub's `model_int8` / `model_quantized`
   * exports, and the fused DynamicQuantizeMatMul and DynamicQuantizeLSTM): every row and position run together
   * changes the others' rounding. The engine then runs each row alone and each prompt whole (no chunks, no cached
   * prefix, no padding beside another prompt, no drafted positions), as onnxruntime's own loop and transformers.js
   * run one prompt.
   */
  runWideActivationScale?: boolean;
}

/** Model metadata key under which the builder records LongRoPE's original context (see {@link GraphFacts.longRopeContext}). */
export const LONG_ROPE_CONTEXT_KEY = 'reasonplug.long_rope.original_context';

const ELEM_BYTES: Record<number, number> = { 1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2, 21: 1, 22: 1 };

/** Stored bytes of a tensor: external data by its declared length, else its raw or typed data. */
export function tensorBytes(t: TensorProto): number {
  const length = t.externalData?.find((e) => e.key === 'length')?.value;
  if (length) return Number(length);
  if (t.rawData && t.rawData.length > 0) return t.rawData.length;
  const count = (t.dims ?? []).reduce<number>((n, d) => n * Number(d), 1);
  return count * (ELEM_BYTES[t.dataType ?? 1] ?? 4);
}

function subgraphs(node: NodeProto): GraphProto[] {
  return (node.attribute ?? []).flatMap((a) => [...(a.g ? [a.g] : []), ...(a.graphs ?? [])]);
}

function allNodes(g: GraphProto | null | undefined, out: NodeProto[] = []): NodeProto[] {
  for (const n of g?.node ?? []) {
    out.push(n);
    for (const sg of subgraphs(n)) allNodes(sg, out);
  }
  return out;
}

const isGroupQueryAttention = (n: NodeProto): boolean => n.opType === 'GroupQueryAttention' && n.domain === 'com.microsoft';

/** Inputs of these ops (by index) are tables a step reads a few rows of. */
const ROW_TABLES: Record<string, number[]> = {
  Gather: [0],
  GatherBlockQuantized: [0, 2, 3],
  GroupQueryAttention: [7, 8],
  RotaryEmbedding: [2, 3],
};

/** Weight-quantized operators onnxruntime's CPU EP runs (MatMulNBits and GatherBlockQuantized with 4 and 8 bits). */
const QUANTIZED_OPS = new Set([
  'MatMulNBits', 'MatMulBnb4', 'GatherBlockQuantized', 'MatMulInteger', 'MatMulIntegerToFloat', 'DynamicQuantizeLinear',
  'DynamicQuantizeMatMul', 'QuantizeLinear', 'DequantizeLinear', 'QLinearMatMul', 'QAttention', 'QGemm', 'DynamicQuantizeLSTM', 'QMoE',
]);

/** Operators that quantize their input with one scale over the whole tensor, computed from it (see {@link GraphFacts.runWideActivationScale}). */
const RUN_WIDE_QUANTIZERS = new Set(['DynamicQuantizeLinear', 'DynamicQuantizeMatMul', 'DynamicQuantizeLSTM']);

/** Inputs of the mixture-of-experts operators that hold the experts: MoE's fc1 and fc2; QMoE's, their scales and zero points. */
const EXPERT_INPUTS: Record<string, number[]> = { MoE: [2, 4], QMoE: [2, 3, 5, 6, 11, 12] };
const isExperts = ({ node, index }: { node: NodeProto; index: number }): boolean =>
  node.domain === 'com.microsoft' && (EXPERT_INPUTS[node.opType ?? '']?.includes(index) ?? false);
/** The share of its experts a mixture-of-experts node runs for one token (`k` of the experts in `t`, its first dimension). */
function expertShare(node: NodeProto, t: TensorProto): number {
  const k = Number((node.attribute ?? []).find((a) => a.name === 'k')?.i ?? 1);
  const experts = Number(t.dims?.[0] ?? 1);
  return experts > 0 ? Math.min(1, k / experts) : 1;
}
/** Names that read as weight quantization (so an operator with such a name that is not above is refused by name). */
const looksQuantized = (op: string) => /quant|nbits|bnb|integer|fpq\d|\dbits/i.test(op) || /^Q[A-Z]/.test(op);

/** Reads {@link GraphFacts} from a model (external data is not loaded); refuses quantized operators that do not run. */
export function graphFacts(model: O.IModelProto): GraphFacts {
  const nodes = allNodes(model.graph);
  const unknown = nodes.filter((n) => looksQuantized(n.opType ?? '') && !QUANTIZED_OPS.has(n.opType ?? ''));
  if (unknown.length > 0) {
    const n = unknown[0]!;
    throw new UnsupportedModelError(
      `the graph uses ${n.domain ? `${n.domain}::` : ''}${n.opType} (node \`${n.name ?? n.output?.[0]}\`${unknown.length > 1 ? ` and ${unknown.length - 1} more` : ''}), ` +
        `a quantized operator onnxruntime does not run; quantized operators that run: ${[...QUANTIZED_OPS].join(', ')}. ` +
        'Export with one of them, or quantize the float model with `reasonplug quantize`.',
    );
  }
  const padding = nodes.some(isGroupQueryAttention) ? 'right' : 'left';
  const uses = new Map<string, { node: NodeProto; index: number }[]>();
  for (const node of nodes) {
    (node.input ?? []).forEach((name, index) => {
      if (!name) return;
      const list = uses.get(name) ?? [];
      list.push({ node, index });
      uses.set(name, list);
    });
  }
  let weightBytes = 0;
  let stepBytes = 0;
  const regions = new Set<string>();
  for (const t of model.graph?.initializer ?? []) {
    const stored = tensorBytes(t);
    const entry = (key: string) => t.externalData?.find((e) => e.key === key)?.value;
    // A tied head's codes are an initializer over the embedding's bytes: one region of the file.
    const region = entry('location') === undefined ? undefined : `${entry('location')}:${entry('offset') ?? 0}:${stored}`;
    if (region === undefined || !regions.has(region)) weightBytes += stored;
    if (region !== undefined) regions.add(region);
    const consumers = uses.get(t.name ?? '') ?? [];
    const computed = consumers.filter(({ node, index }) => !(ROW_TABLES[node.opType ?? '']?.includes(index) ?? false));
    if (computed.length === 0) continue;
    const castUp = computed.every(({ node }) => node.opType === 'Cast' && (node.attribute ?? []).some((a) => a.name === 'to' && Number(a.i) === DataType.FLOAT));
    const held = castUp ? (stored / (ELEM_BYTES[t.dataType ?? 1] ?? 4)) * 4 : stored;
    // A token's step reads only the experts it is routed to.
    stepBytes += computed.every(isExperts) ? held * expertShare(computed[0]!.node, t) : held;
  }
  const stepNodes = nodes.filter((n) => n.opType !== 'Constant').length;
  const longRopeContext = longRopeContextOf(model);
  const runWide = nodes.some((n) => RUN_WIDE_QUANTIZERS.has(n.opType ?? ''));
  return {
    padding,
    weightBytes,
    stepBytes,
    stepNodes,
    ...(longRopeContext !== undefined ? { longRopeContext } : {}),
    ...(runWide ? { runWideActivationScale: true } : {}),
  };
}

function longRopeContextOf(model: O.IModelProto): number | undefined {
  const value = model.metadataProps?.find((p) => p.key === LONG_ROPE_CONTEXT_KEY)?.value;
  if (value === undefined || value === null) return undefined;
  const context = Number(value);
  if (!Number.isInteger(context) || context <= 0) throw new UnsupportedModelError(`the graph's metadata ${LONG_ROPE_CONTEXT_KEY} must be a positive integer, got "${value}"`);
  return context;
}
