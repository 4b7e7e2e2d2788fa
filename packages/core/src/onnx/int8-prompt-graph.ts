/**
 * The prompt graph of a decoder whose matrix products are block-quantized (`com.microsoft::MatMulNBits`, as GGUF
 * conversions, `reasonplug quantize` and hub q4 exports have them): the same graph with each such product but the LM
 * head as an 8-bit integer product (`MatMulIntegerToFloat`), which onnxruntime's CPU provider runs on MLAS's integer GEMM —
 * AMX or VNNI kernels where the CPU has them. At a prompt's width (tens to hundreds of rows) that is 3-5x faster than
 * MatMulNBits' kernels, which are made for steps of a row or a few (`npm run bench:nbits-width -- --rows 1,8,64,512`,
 * its qgemm rows); steps keep the model's own graph.
 *
 * Each product's weights are requantized to int8 with one scale per output, from the values the operator applies (a
 * block's offset included: the augmented input of offset columns is taken apart again), and each token's activations
 * are quantized to 8 bits with one scale of its own, symmetric as MatMulNBits' int8 accuracy level quantizes them per
 * block. A token's values then never depend on the other tokens run with it, so a prompt computes the same alone,
 * batched, in chunks or after a cached prefix. The price: the int8 weights held beside the model's own (about a byte a
 * weight more), and a rounding of its own — one scale over a whole row of a token's activations and of an output's
 * weights, where the model's products use one per block: on stories260K a prompt's next-token distribution lies within
 * KL 5-8e-4 of the model's own on average (8e-3 at worst), its 8- and 4-bit files 7e-2 apart (README, "int8 prompts").
 * Left as they are: products in sub-graphs (merged decoders' If branches), a mixture's experts (QMoE), and products
 * whose tensors are kept otherwise than as raw uint8 codes and zero points and fp32 scales.
 */
import { DataType, makeNode, makeTensor, onnx, type GraphProto, type ModelProto, type NodeProto, type TensorProto } from './proto.js';
import { TensorReader } from './tensor-reader.js';
import { findHeadMatMuls } from './quantize/find-head.js';
import { pruneGraph } from './graph-walk.js';
import { dequantizeRow } from './quantized-matrix.js';
import type { QuantizedMatrix } from './llama-spec.js';

/** A rewritten graph and what was rewritten. */
export interface Int8PromptGraph {
  /** The graph with its products rewritten (the model given, changed in place). */
  model: ModelProto;
  /** Products rewritten. */
  products: number;
}

const MS = 'com.microsoft';

/**
 * Rewrites `model` (in place) as described above; `dataDir` is where its external data lives, `logitsWidth` the width
 * of its logits (where no walk back from `logits` finds the head, a product that wide is taken for it). Undefined when
 * no product qualifies (see {@link int8PromptProducts}).
 */
export function int8PromptGraph(model: ModelProto, dataDir: string, logitsWidth: number): Int8PromptGraph | undefined {
  if (int8PromptProducts(model, logitsWidth) === 0) return undefined;
  const graph = model.graph!;
  const opset = defaultOpset(model);
  const inits = new Map((graph.initializer ?? []).map((t) => [t.name!, t as TensorProto]));
  const producers = new Map<string, NodeProto>();
  for (const n of graph.node ?? []) for (const o of n.output ?? []) producers.set(o, n);
  const isHead = headTest(graph, producers, logitsWidth);
  const names = new Set([...producers.keys(), ...inits.keys(), ...(graph.input ?? []).map((i) => i.name!)]);
  const fresh = (hint: string): string => {
    let name = `int8_prompt/${hint}`;
    for (let i = 1; names.has(name); i++) name = `int8_prompt/${hint}_${i}`;
    names.add(name);
    return name;
  };
  const constant = (hint: string, type: number, data: Float32Array | Uint8Array | BigInt64Array, dims: number[] = []): string => {
    const name = fresh(hint);
    graph.initializer!.push(makeTensor(name, type, dims, data));
    return name;
  };
  let shared: { tiny: string; c127: string; c128: string; one: string; zp: string; axes?: string } | undefined;
  const quantizedInputs = new Map<string, { codes: string; scale: string }>();
  const reader = new TensorReader(dataDir);
  const nodes: NodeProto[] = [];
  const op = (type: string, inputs: string[], hint: string, attrs: Parameters<typeof makeNode>[3] = {}, out?: string): string => {
    const output = out ?? fresh(hint);
    nodes.push(makeNode(type, inputs, [output], attrs, fresh(`n_${hint}`)));
    return output;
  };
  let products = 0;
  try {
    for (const node of graph.node ?? []) {
      const matrix = matrixOf(node, inits, reader, producers, isHead);
      if (!matrix) {
        nodes.push(node);
        continue;
      }
      shared ??= {
        tiny: constant('tiny', DataType.FLOAT, Float32Array.of(1e-30)),
        c127: constant('c127', DataType.FLOAT, Float32Array.of(127)),
        c128: constant('c128', DataType.FLOAT, Float32Array.of(128)),
        // (MatMulIntegerToFloat takes one scale for all of A's rows: 1, each token's applied after)
        one: constant('one', DataType.FLOAT, Float32Array.of(1)),
        zp: constant('zero_point', DataType.UINT8, Uint8Array.of(128)),
        // (ReduceMax takes its axes as an input from opset 18, as an attribute before)
        ...(opset >= 18 ? { axes: constant('axes', DataType.INT64, BigInt64Array.of(-1n), [1]) } : {}),
      };
      const c = shared;
      // Each token's activations to 8 bits, symmetric around 128 (MatMulInteger takes one zero point for all rows).
      let input = quantizedInputs.get(matrix.input);
      if (!input) {
        const amax = c.axes ? op('ReduceMax', [op('Abs', [matrix.input], 'abs'), c.axes], 'amax', { keepdims: 1 }) : op('ReduceMax', [op('Abs', [matrix.input], 'abs')], 'amax', { keepdims: 1, axes: [-1] });
        const scale = op('Div', [op('Max', [amax, c.tiny], 'amax_nonzero'), c.c127], 'token_scale');
        const codes = op('Cast', [op('Add', [op('Round', [op('Div', [matrix.input, scale], 'scaled')], 'rounded'), c.c128], 'shifted')], 'codes', { to: DataType.UINT8 });
        input = { codes, scale };
        quantizedInputs.set(matrix.input, input);
      }
      const weights = fresh('weight');
      const scales = fresh('weight_scale');
      graph.initializer!.push(makeTensor(weights, DataType.INT8, [matrix.rows, matrix.cols], matrix.codes), makeTensor(scales, DataType.FLOAT, [matrix.rows], matrix.scales));
      // (written row by row as dequantized; onnxruntime's constant folding turns it into the operator's [cols, rows])
      const weightsT = op('Transpose', [weights], 'weight_t', { perm: [1, 0] });
      const product = fresh('product');
      nodes.push(makeNode('MatMulIntegerToFloat', [input.codes, weightsT, c.one, scales, c.zp], [product], {}, fresh('n_product'), MS));
      op('Mul', [product, input.scale], 'out', {}, node.output![0]!);
      products++;
    }
  } finally {
    reader.close();
  }
  if (products === 0) return undefined;
  graph.node = nodes;
  pruneGraph(graph);
  return { model, products };
}

/** A product's weights requantized: `codes` `[rows, cols]` int8 (MatMulInteger's B transposed), one scale per row (output). */
interface Int8Matrix {
  /** The activations it multiplies (the input before offset columns were added to it). */
  input: string;
  rows: number;
  cols: number;
  codes: Uint8Array;
  scales: Float32Array;
}

/** A MatMulNBits node's operands and shape, or undefined for one left as it is (the head, fp16, a bias or group index). */
function rewritable(node: NodeProto, inits: Map<string, TensorProto>, isHead: (n: NodeProto) => boolean) {
  if (node.opType !== 'MatMulNBits' || node.domain !== MS) return undefined;
  const attr = (name: string) => Number(node.attribute?.find((a) => a.name === name)?.i ?? 0);
  const [a, b, s, zp, ...rest] = node.input ?? [];
  const codesT = inits.get(b ?? '');
  const scalesT = inits.get(s ?? '');
  const zpT = zp ? inits.get(zp) : undefined;
  const [K, N, bits, block] = [attr('K'), attr('N'), attr('bits'), attr('block_size')];
  // (zero points as uint8 codes only: float ones, as HQQ writes them, are values of another kind; codes and zero points
  // as raw bytes, inline or external, as TensorReader.raw reads them, not in int32_data)
  const bytes = (t: TensorProto | undefined): t is TensorProto => t?.dataType === DataType.UINT8 && (t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL || (t.rawData?.length ?? 0) > 0);
  if (!a || !bytes(codesT) || scalesT?.dataType !== DataType.FLOAT || (zp && !bytes(zpT)) || rest.some((r) => r !== '') || isHead(node) || (bits !== 4 && bits !== 8)) return undefined;
  return { a, codesT, scalesT, zpT, K, N, bits, block };
}

/**
 * How many of the graph's products {@link int8PromptGraph} rewrites (read from the graph alone, no weights, so that a
 * prompt session loaded from its saved form can say so too): MatMulNBits of 4 or 8 bits with fp32 scales, uint8 codes
 * and zero points, no bias or group index, not the head, in a graph of default-domain opset 11 or later (Round).
 */
export function int8PromptProducts(model: ModelProto, logitsWidth: number): number {
  // (Round, which the activations' quantization needs, is from opset 11)
  if (defaultOpset(model) < 11) return 0;
  const graph = model.graph ?? {};
  const inits = new Map((graph.initializer ?? []).map((t) => [t.name!, t as TensorProto]));
  const producers = new Map<string, NodeProto>();
  for (const n of graph.node ?? []) for (const o of n.output ?? []) producers.set(o, n);
  const isHead = headTest(graph, producers, logitsWidth);
  return (graph.node ?? []).filter((n) => rewritable(n, inits, isHead) !== undefined).length;
}

/** The graph's default-domain opset version (0 where it names none). */
function defaultOpset(model: ModelProto): number {
  return Number((model.opsetImport ?? []).find((o) => (o.domain ?? '') === '' || o.domain === 'ai.onnx')?.version ?? 0);
}

/**
 * Which products are the head: those whose product becomes `logits` (a walk back from it, find-head.ts), or where the
 * walk finds none, those as wide as the logits.
 */
function headTest(graph: GraphProto, producers: Map<string, NodeProto>, logitsWidth: number): (n: NodeProto) => boolean {
  const heads = findHeadMatMuls(graph, producers, () => false);
  return heads.size > 0 ? (n) => heads.has(n) : (n) => Number(n.attribute?.find((a) => a.name === 'N')?.i ?? 0) === logitsWidth;
}

/** The int8 form of one MatMulNBits node, or undefined for one left as it is (see {@link rewritable}). */
function matrixOf(node: NodeProto, inits: Map<string, TensorProto>, reader: TensorReader, producers: Map<string, NodeProto>, isHead: (n: NodeProto) => boolean): Int8Matrix | undefined {
  const product = rewritable(node, inits, isHead);
  if (!product) return undefined;
  const { a, codesT, scalesT, zpT, K, N, bits, block } = product;
  const offsets = offsetInput(a, K, block, producers);
  const cols = offsets ? K - offsets.columns : K;
  const data = reader.raw(codesT);
  const scales = reader.floats(scalesT);
  const zeroPoints = zpT ? reader.raw(zpT) : undefined;
  // (what rewritable checked; a tensor read as nothing leaves the product as it is all the same)
  if (!data || !scales || (zpT && !zeroPoints)) return undefined;
  const m: QuantizedMatrix = { kind: 'nbits', rows: N, cols, bits: bits as 4 | 8, blockSize: block, data, scales, ...(zeroPoints ? { zeroPoints } : {}), ...(offsets ? { offsetColumns: offsets.columns } : {}) };
  const out = new Int8Array(N * cols);
  const outScales = new Float32Array(N);
  const values = new Float32Array(K);
  for (let n = 0; n < N; n++) {
    const row = dequantizeRow(m, n, values);
    let amax = 0;
    for (let k = 0; k < cols; k++) {
      const v = Math.abs(row[k]!);
      if (v > amax) amax = v;
    }
    const scale = amax > 0 ? amax / 127 : 1;
    outScales[n] = scale;
    const inverse = 1 / scale;
    // Rounded half up as Math.round, without its branches (3x faster here): |x| ≤ 127, so x + 128.5 > 0 truncates as floor.
    for (let k = 0; k < cols; k++) out[n * cols + k] = ((row[k]! * inverse + 128.5) | 0) - 128;
  }
  return { input: offsets ? offsets.input : a, rows: N, cols, codes: new Uint8Array(out.buffer), scales: outScales };
}

/**
 * Where a product's input is its activations extended by their sums over blocks (`Concat(x, ReduceSum(Reshape(x)))`,
 * as the converter feeds offset columns, one per block of the product's own block size): `x`, and how many columns
 * the sums add.
 */
function offsetInput(input: string, K: number, block: number, producers: Map<string, NodeProto>): { input: string; columns: number } | undefined {
  const concat = producers.get(input);
  if (concat?.opType !== 'Concat' || concat.input?.length !== 2) return undefined;
  const [x, sums] = concat.input as [string, string];
  const reduce = producers.get(sums);
  if (reduce?.opType !== 'ReduceSum' || producers.get(reduce.input?.[0] ?? '')?.input?.[0] !== x) return undefined;
  // K = cols + cols / block
  const cols = (K * block) / (block + 1);
  return Number.isInteger(cols) && cols % block === 0 ? { input: x, columns: K - cols } : undefined;
}
