/**
 * Weight-only quantization of a decoder graph, in the graph itself: every MatMul whose weight is a constant
 * matrix (an initializer, possibly through Cast, Transpose, Identity or a Concat of such, as the builder's
 * q/k/v product and tied heads read theirs) becomes a `com.microsoft::MatMulNBits` over 4- or 8-bit blocks;
 * with `embeddings`, every embedding Gather of a constant table becomes `com.microsoft::GatherBlockQuantized`.
 * The LM head (found by walking back from `logits`) may keep more bits than the rest (`headBits`).
 * Nodes and initializers nothing reads any more are dropped; what stays external is inlined, so the result is
 * one self-contained file.
 */
import type { onnx as O } from 'onnx-proto';
import { DataType, makeTensor, onnx, type GraphProto, type ModelProto, type NodeProto, type TensorProto } from '../proto.js';
import { float32ArrayToFloat16, transpose2d } from '../graph-builder.js';
import { quantizeMatrix, type BlockSearch } from './quantize-matrix.js';
import { TensorReader } from '../tensor-reader.js';
import { graphsOf, pruneGraph } from '../graph-walk.js';
import { findHeadMatMuls } from './find-head.js';

const MS = 'com.microsoft';
/** Protobuf cannot hold a model of 2 GiB or more. */
const MAX_INLINE_BYTES = 2 ** 31 - 64 * 1024 * 1024;

/** How to quantize. */
export interface QuantizeOptions {
  /** Bits per weight: 4 (default) or 8. */
  bits?: 4 | 8;
  /** Weights per block sharing one scale and zero point: a power of two, at least 16. Default 32. */
  blockSize?: number;
  /** MatMulNBits' `accuracy_level`: `int8` (default, level 4: activations quantized to int8 per block) or `fp32` (level 1). */
  accuracy?: 'int8' | 'fp32';
  /** Also quantize embedding tables (Gather → GatherBlockQuantized). Default false. */
  embeddings?: boolean;
  /**
   * Bits for the LM head (the MatMul whose product becomes `logits`). Default: 8 when `bits` is 4 (as llama.cpp's
   * Q4_K_M keeps `output.weight` at Q6_K: the head's error goes straight into every logit), else `bits`.
   */
  headBits?: 4 | 8;
  /** How each block's scale and zero point are chosen (see {@link BlockSearch}). Default `range`. */
  search?: BlockSearch;
  /**
   * `quantizeModel` only, for a module source: the copy's version (semver). Default: the original's with a `q<bits>`
   * prerelease identifier (`1.0.0-q4`); required for a prerelease original, whose derived version would rank above it.
   */
  version?: string;
  /** `quantizeModel` only, for a hub export directory: the graph to quantize, as `locateModel` takes it (hub-variants.ts). */
  dtype?: string;
}

/** The LM head's bits that {@link quantizeGraph} uses for these options. */
export function headBitsOf(opts: QuantizeOptions): 4 | 8 {
  return opts.headBits ?? ((opts.bits ?? 4) === 4 ? 8 : (opts.bits ?? 4));
}

/** Raised for a graph that cannot be quantized (already quantized, nothing to quantize, too large), naming it. */
export class QuantizeError extends Error {
  override name = 'QuantizeError';
}

/** Operators that mean a graph's weights are already quantized. */
const QUANTIZED_OPS = new Set(['MatMulNBits', 'MatMulInteger', 'DynamicQuantizeLinear', 'MatMulBnb4', 'GatherBlockQuantized', 'QLinearMatMul', 'MatMulIntegerToFloat', 'DynamicQuantizeMatMul', 'QAttention', 'QMoE']);
/** Operators a weight passes through on its way to what reads it (those `resolve` walks back through). */
const WEIGHT_PASSES = new Set(['Identity', 'Cast', 'Transpose', 'Concat']);

/**
 * The nodes that make a graph already quantized: those of {@link QUANTIZED_OPS}, and the DequantizeLinear of each
 * constant that reaches a MatMul or Gemm operand or a Gather's table, as onnxruntime's QDQ format stores weights (one
 * that dequantizes activations, or a bias, leaves the weights float).
 */
function quantizedNodes(all: readonly GraphProto[], nodes: readonly NodeProto[]): NodeProto[] {
  const constants = new Set(all.flatMap((g) => (g.initializer ?? []).map((t) => t.name ?? '')));
  for (const n of nodes) if (n.opType === 'Constant') for (const o of n.output ?? []) constants.add(o);
  const readers = new Map<string, NodeProto[]>();
  for (const n of nodes) {
    for (const i of n.input ?? []) {
      if (!readers.has(i)) readers.set(i, []);
      readers.get(i)!.push(n);
    }
  }
  const readsWeight = (value: string, depth = 0): boolean =>
    depth <= 16 &&
    (readers.get(value) ?? []).some((n) => {
      if ((n.domain ?? '') !== '') return false;
      if (n.opType === 'MatMul' || n.opType === 'Gemm') return n.input?.[0] === value || n.input?.[1] === value;
      if (n.opType === 'Gather') return n.input?.[0] === value;
      return WEIGHT_PASSES.has(n.opType ?? '') && (n.output ?? []).some((o) => readsWeight(o, depth + 1));
    });
  return nodes.filter(
    (n) =>
      QUANTIZED_OPS.has(n.opType ?? '') ||
      (n.opType === 'DequantizeLinear' && ((n.domain ?? '') === '' || n.domain === MS) && constants.has(n.input?.[0] ?? '') && readsWeight(n.output?.[0] ?? '')),
  );
}

/**
 * Throws {@link QuantizeError} where `model` is already quantized, naming `source` and what quantizes it: what
 * {@link quantizeGraph} checks first, for callers with refusals of their own to make after it (quantize-module.ts).
 */
export function checkNotQuantized(model: ModelProto | O.IModelProto, source: string): void {
  const all = graphsOf((model.graph ?? {}) as GraphProto);
  const found = quantizedNodes(all, all.flatMap((g) => g.node ?? []));
  if (found.length === 0) return;
  const ops = [...new Set(found.map((n) => `${n.domain ? `${n.domain}::` : ''}${n.opType}`))].join(', ');
  throw new QuantizeError(`${source} is already quantized (${found.length} ${ops} node${found.length > 1 ? 's' : ''}); quantize the original float model instead`);
}

/** A constant matrix reaching a MatMul or Gather, as float32 values, and the float type the consumer sees. */
interface Resolved {
  values: Float32Array;
  rows: number;
  cols: number;
  fp16: boolean;
}

/** What {@link quantizeGraph} did. */
export interface QuantizeReport {
  /** MatMuls now MatMulNBits. */
  matmuls: number;
  /** The LM head's weights (their value names) and the bits they got; no names when no head feeds `logits`. */
  head: { names: string[]; bits: 4 | 8 };
  /** Gathers now GatherBlockQuantized. */
  gathers: number;
  /** Constant weights left dense, with why (embedding tables whose width is not a multiple of the block size). */
  skipped: string[];
  /** Initializer bytes before and after. */
  bytesBefore: number;
  bytesAfter: number;
}

function attrInt(node: NodeProto, name: string): number | undefined {
  const a = (node.attribute ?? []).find((x) => x.name === name);
  return a?.i !== undefined && a.i !== null ? Number(a.i) : undefined;
}

function attrInts(node: NodeProto, name: string): number[] | undefined {
  const a = (node.attribute ?? []).find((x) => x.name === name);
  return a ? (a.ints ?? []).map(Number) : undefined;
}

function tensorBytes(t: TensorProto): number {
  const length = t.externalData?.find((e) => e.key === 'length')?.value;
  if (length) return Number(length);
  return (t.rawData?.length ?? 0) + (t.floatData?.length ?? 0) * 4 + (t.int32Data?.length ?? 0) * 4 + (t.int64Data?.length ?? 0) * 8;
}

/**
 * Quantizes `model` in place of a copy and returns the copy with a report. `baseDir` is where its external data
 * lives; `source` names it in errors. Throws {@link QuantizeError} for a graph that is already quantized, that
 * has no constant MatMul weight to quantize, or whose result would not fit in one file.
 */
export function quantizeGraph(model: ModelProto | O.IModelProto, source: string, baseDir: string, opts: QuantizeOptions = {}): { model: ModelProto; report: QuantizeReport } {
  const reader = new TensorReader(baseDir);
  try {
    return quantizeWith(reader, model, source, opts);
  } finally {
    reader.close();
  }
}

function quantizeWith(reader: TensorReader, model: ModelProto | O.IModelProto, source: string, opts: QuantizeOptions): { model: ModelProto; report: QuantizeReport } {
  const bits = opts.bits ?? 4;
  const blockSize = opts.blockSize ?? 32;
  const headBits = headBitsOf(opts);
  const search = opts.search ?? 'range';
  if (bits !== 4 && bits !== 8) throw new QuantizeError(`bits must be 4 or 8; got ${String(bits)}`);
  if (headBits !== 4 && headBits !== 8) throw new QuantizeError(`head bits must be 4 or 8; got ${String(headBits)}`);
  if (search !== 'weighted' && search !== 'range') throw new QuantizeError(`the block search must be weighted or range; got ${String(search)}`);
  // (onnxruntime's MatMulNBits takes blocks of 16 to 256: a module of larger ones would not load)
  if (!Number.isInteger(blockSize) || blockSize < 16 || blockSize > 256 || (blockSize & (blockSize - 1)) !== 0) {
    throw new QuantizeError(`the block size must be a power of two from 16 to 256; got ${String(blockSize)}`);
  }
  const accuracyLevel = (opts.accuracy ?? 'int8') === 'int8' ? 4 : 1;
  // (before the copy, which would copy every weight of a graph that is refused)
  checkNotQuantized(model, source);
  const copy = onnx.ModelProto.decode(onnx.ModelProto.encode(model as O.IModelProto).finish());
  const main = copy.graph as GraphProto;
  const all = graphsOf(main);
  const nodes = all.flatMap((g) => g.node ?? []);

  const inits = new Map((main.initializer ?? []).map((t) => [t.name ?? '', t as TensorProto]));
  const producers = new Map<string, NodeProto>();
  for (const n of nodes) for (const o of n.output ?? []) if (o) producers.set(o, n);
  const bytesBefore = [...inits.values()].reduce((s, t) => s + tensorBytes(t), 0);
  const used = new Set<string>([...all.flatMap((g) => [...(g.initializer ?? []), ...(g.input ?? []), ...(g.output ?? [])].map((v) => v.name ?? '')), ...nodes.flatMap((n) => [...(n.input ?? []), ...(n.output ?? [])])]);
  const fresh = (hint: string) => {
    let name = hint;
    for (let i = 1; used.has(name); i++) name = `${hint}_${i}`;
    used.add(name);
    return name;
  };

  const memo = new Map<string, Resolved | undefined>();
  const resolve = (name: string, depth = 0): Resolved | undefined => {
    if (memo.has(name)) return memo.get(name);
    let r: Resolved | undefined;
    const t = inits.get(name);
    const n = producers.get(name);
    if (depth > 16) r = undefined;
    else if (t) {
      const dims = (t.dims ?? []).map(Number);
      const values = dims.length === 2 ? reader.floats(t) : undefined;
      r = values ? { values, rows: dims[0]!, cols: dims[1]!, fp16: t.dataType === DataType.FLOAT16 } : undefined;
    } else if (n && (n.domain ?? '') === '') {
      const inner = () => resolve(n.input![0]!, depth + 1);
      switch (n.opType) {
        case 'Identity':
          r = inner();
          break;
        case 'Cast': {
          const to = attrInt(n, 'to');
          const x = to === DataType.FLOAT || to === DataType.FLOAT16 ? inner() : undefined;
          r = x && { ...x, fp16: to === DataType.FLOAT16 };
          break;
        }
        case 'Transpose': {
          const perm = attrInts(n, 'perm');
          const x = !perm || (perm[0] === 1 && perm[1] === 0) ? inner() : undefined;
          r = x && { values: transpose2d(x.values, x.rows, x.cols), rows: x.cols, cols: x.rows, fp16: x.fp16 };
          break;
        }
        case 'Concat': {
          const axis = attrInt(n, 'axis');
          const parts = axis === 1 || axis === -1 ? (n.input ?? []).map((i) => resolve(i, depth + 1)) : [];
          const [a] = parts;
          if (a && parts.every((p) => p && p.rows === a.rows && p.fp16 === a.fp16)) {
            const cols = parts.reduce((s, p) => s + p!.cols, 0);
            const values = new Float32Array(a.rows * cols);
            let at = 0;
            for (const p of parts as Resolved[]) {
              for (let row = 0; row < a.rows; row++) values.set(p.values.subarray(row * p.cols, (row + 1) * p.cols), row * cols + at);
              at += p.cols;
            }
            r = { values, rows: a.rows, cols, fp16: a.fp16 };
          }
          break;
        }
      }
    }
    memo.set(name, r);
    return r;
  };
  // A weight's floats are kept only while it is quantized (the memo serves one resolution and the head search):
  // kept for the whole graph, they would hold all of the model's weights in memory at once.
  const take = (name: string): Resolved | undefined => {
    const r = resolve(name);
    memo.clear();
    return r;
  };

  const added: TensorProto[] = [];
  const addInit = (hint: string, dataType: number, dims: number[], data: Uint8Array | Float32Array | Uint16Array): string => {
    const t = makeTensor(fresh(hint), dataType, dims, data);
    added.push(t);
    return t.name!;
  };
  const scaleTensor = (hint: string, dims: number[], scales: Float32Array, fp16: boolean) =>
    addInit(hint, fp16 ? DataType.FLOAT16 : DataType.FLOAT, dims, fp16 ? float32ArrayToFloat16(scales) : scales);

  const heads = findHeadMatMuls(main, producers, (name) => resolve(name) !== undefined);
  const report: QuantizeReport = { matmuls: 0, gathers: 0, head: { names: [], bits: headBits }, skipped: [], bytesBefore, bytesAfter: 0 };
  // One quantized copy per weight value, shared by every node that reads it (both branches of a merged decoder).
  const nbitsOf = new Map<string, { inputs: string[]; K: number; N: number }>();
  // A mixture of experts' router scores choose the experts: kept float, as llama-quantize keeps `ffn_gate_inp` (a
  // 4-bit router reorders near-tied experts, which changes the whole expert output, not a rounding of it).
  const routers = new Set(nodes.filter((n) => n.domain === MS && (n.opType === 'MoE' || n.opType === 'QMoE')).map((n) => n.input?.[1] ?? ''));
  for (const node of nodes) {
    if ((node.domain ?? '') !== '' || node.opType !== 'MatMul') continue;
    const b = node.input?.[1] ?? '';
    if (routers.has(node.output?.[0] ?? '')) {
      if (take(b)) report.skipped.push(`router ${b}: a mixture of experts' scores stay float`);
      continue;
    }
    const isHead = heads.has(node);
    const nodeBits = isHead ? headBits : bits;
    const key = `${b}@${nodeBits}`;
    let q = nbitsOf.get(key);
    if (!q) {
      const w = take(b);
      if (!w) continue;
      const [K, N] = [w.rows, w.cols];
      // MatMulNBits keeps ceil(K / block_size) blocks a column: a last partial block is stored padded with zeros,
      // which its zero point represents exactly, so they change neither its search nor the product.
      const blocks = Math.ceil(K / blockSize);
      const m = quantizeMatrix(padColumns(transpose2d(w.values, K, N), N, K, blocks * blockSize), N, blocks * blockSize, nodeBits, blockSize, search);
      const base = b.replace(/[^A-Za-z0-9_.]/g, '_').replace(/\.T$/, '');
      q = {
        K,
        N,
        inputs: [
          addInit(`${base}.qweight`, DataType.UINT8, [N, blocks, (blockSize * nodeBits) / 8], m.data),
          scaleTensor(`${base}.scales`, [N * blocks], m.scales, w.fp16),
          addInit(`${base}.qzeros`, DataType.UINT8, [m.zeroPoints!.length], m.zeroPoints!),
        ],
      };
      nbitsOf.set(key, q);
    }
    if (isHead && !report.head.names.includes(b)) report.head.names.push(b);
    node.opType = 'MatMulNBits';
    node.domain = MS;
    node.input = [node.input![0]!, ...q.inputs];
    node.attribute = [
      { name: 'K', type: onnx.AttributeProto.AttributeType.INT, i: q.K },
      { name: 'N', type: onnx.AttributeProto.AttributeType.INT, i: q.N },
      { name: 'bits', type: onnx.AttributeProto.AttributeType.INT, i: nodeBits },
      { name: 'block_size', type: onnx.AttributeProto.AttributeType.INT, i: blockSize },
      { name: 'accuracy_level', type: onnx.AttributeProto.AttributeType.INT, i: accuracyLevel },
    ];
    report.matmuls++;
  }
  if (report.matmuls === 0) {
    throw new QuantizeError(
      `${source} has no MatMul with a constant weight matrix to quantize`,
    );
  }

  if (opts.embeddings) {
    for (const node of nodes) {
      if ((node.domain ?? '') !== '' || node.opType !== 'Gather' || (attrInt(node, 'axis') ?? 0) !== 0) continue;
      const table = node.input?.[0] ?? '';
      const w = inits.has(table) ? take(table) : undefined;
      if (!w) continue;
      if (w.cols % blockSize !== 0) {
        // GatherBlockQuantized needs whole blocks along the quantized axis.
        report.skipped.push(`embedding ${table}: its ${w.cols} columns are not a multiple of the block size ${blockSize}`);
        continue;
      }
      const m = quantizeMatrix(w.values, w.rows, w.cols, bits, blockSize, search);
      const base = table.replace(/[^A-Za-z0-9_.]/g, '_').replace(/\.weight$/, '');
      const blocks = w.cols / blockSize;
      node.opType = 'GatherBlockQuantized';
      node.domain = MS;
      node.input = [
        addInit(`${base}.qweight`, DataType.UINT8, [w.rows, (w.cols * bits) / 8], m.data),
        node.input![1]!,
        scaleTensor(`${base}.scales`, [w.rows, blocks], m.scales, w.fp16),
        addInit(`${base}.qzeros`, DataType.UINT8, [w.rows, m.zeroPoints!.length / w.rows], m.zeroPoints!),
      ];
      node.attribute = [
        { name: 'gather_axis', type: onnx.AttributeProto.AttributeType.INT, i: 0 },
        { name: 'quantize_axis', type: onnx.AttributeProto.AttributeType.INT, i: 1 },
        { name: 'block_size', type: onnx.AttributeProto.AttributeType.INT, i: blockSize },
        { name: 'bits', type: onnx.AttributeProto.AttributeType.INT, i: bits },
      ];
      report.gathers++;
    }
  }

  main.initializer = [...(main.initializer ?? []), ...added];
  pruneGraph(main);
  for (const t of main.initializer ?? []) reader.inline(t as TensorProto);
  report.bytesAfter = (main.initializer ?? []).reduce((s, t) => s + tensorBytes(t as TensorProto), 0);
  if (report.bytesAfter > MAX_INLINE_BYTES) {
    throw new QuantizeError(`${source}: the quantized weights take ${(report.bytesAfter / 2 ** 30).toFixed(2)} GiB, more than one ONNX file holds (2 GiB); external data output is not supported yet`);
  }
  const opsets = copy.opsetImport ?? [];
  if (!opsets.some((o) => o.domain === MS)) copy.opsetImport = [...opsets, { domain: MS, version: 1 }];
  return { model: copy, report };
}

/** A row-major `[rows, cols]` matrix widened to `width` columns with zeros. */
function padColumns(values: Float32Array, rows: number, cols: number, width: number): Float32Array {
  if (width === cols) return values;
  const out = new Float32Array(rows * width);
  for (let r = 0; r < rows; r++) out.set(values.subarray(r * cols, (r + 1) * cols), r * width);
  return out;
}

