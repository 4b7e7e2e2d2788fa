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
 * weights, where the model's products use one per block: a prompt's next-token distribution within KL ~7e-4 of the
 * model's own on stories260K, a hundredth of what separates its 8- and 4-bit files (README, "int8 prompts").
 */
import { DataType, makeNode, makeTensor, type GraphProto, type ModelProto, type NodeProto, type TensorProto } from './proto.js';
import { TensorReader } from './tensor-reader.js';
import { findHeadMatMuls } from './quantize/find-head.js';

/** A rewritten graph and what was rewritten. */
export interface Int8PromptGraph {
  /** The graph with its products rewritten (the model given, changed in place). */
  model: ModelProto;
  /** Products rewritten. */
  products: number;
  /** Bytes of the int8 weights the graph now holds inline. */
  int8Bytes: number;
}

const MS = 'com.microsoft';

/** Bump when the rewrite changes what it writes: sessions saved of earlier rewrites are then made again. */
export const INT8_PROMPT_FORMAT = 1;

/**
 * Rewrites `model` (in place) as described above; `dataDir` is where its external data lives, `logitsWidth` the width
 * of its logits (a product of that many outputs is the head, left as it is). Undefined when no product qualifies: none
 * block-quantized with fp32 activations, no bias or group index, or a default-domain opset before 11 (Round).
 */
export function int8PromptGraph(model: ModelProto, dataDir: string, logitsWidth: number): Int8PromptGraph | undefined {
  const graph = model.graph!;
  const opset = Number((model.opsetImport ?? []).find((o) => (o.domain ?? '') === '' || o.domain === 'ai.onnx')?.version ?? 0);
  if (opset < 11) return undefined;
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
  let products = 0;
  let int8Bytes = 0;
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
      const op = (type: string, inputs: string[], hint: string, attrs: Parameters<typeof makeNode>[3] = {}, out?: string): string => {
        const output = out ?? fresh(hint);
        nodes.push(makeNode(type, inputs, [output], attrs, fresh(`n_${hint}`)));
        return output;
      };
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
      // (into the operator's [cols, rows] by onnxruntime's constant folding as the session is made, in native code)
      const weightsT = op('Transpose', [weights], 'weight_t', { perm: [1, 0] });
      const product = fresh('product');
      nodes.push(makeNode('MatMulIntegerToFloat', [input.codes, weightsT, c.one, scales, c.zp], [product], {}, fresh('n_product'), MS));
      op('Mul', [product, input.scale], 'out', {}, node.output![0]!);
      products++;
      int8Bytes += matrix.codes.length;
    }
  } finally {
    reader.close();
  }
  if (products === 0) return undefined;
  graph.node = withoutDeadNodes(nodes, new Set((graph.output ?? []).map((o) => o.name!)));
  // (an initializer also declared a graph input, as old exports have them, stays: the input would otherwise need feeding)
  const used = new Set([...graph.node.flatMap(readsOf), ...(graph.input ?? []).map((i) => i.name!)]);
  graph.initializer = (graph.initializer ?? []).filter((t) => used.has(t.name!));
  return { model, products, int8Bytes };
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
  if (!a || !codesT || scalesT?.dataType !== DataType.FLOAT || (zp && !zpT) || rest.some((r) => r !== '') || isHead(node) || (bits !== 4 && bits !== 8)) return undefined;
  return { a, codesT, scalesT, zpT, K, N, bits, block };
}

/** Whether {@link int8PromptGraph} would rewrite any of the graph's products (read from the graph alone, no weights). */
export function hasInt8PromptProducts(model: ModelProto, logitsWidth: number): boolean {
  const graph = model.graph ?? {};
  const inits = new Map((graph.initializer ?? []).map((t) => [t.name!, t as TensorProto]));
  const producers = new Map<string, NodeProto>();
  for (const n of graph.node ?? []) for (const o of n.output ?? []) producers.set(o, n);
  const isHead = headTest(graph, producers, logitsWidth);
  return (graph.node ?? []).some((n) => rewritable(n, inits, isHead) !== undefined);
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
  const codes = reader.raw(codesT)!;
  const scales = reader.floats(scalesT)!;
  const zeroPoints = zpT ? reader.raw(zpT) : undefined;
  const blocks = Math.ceil(K / block);
  const zpRow = bits === 4 ? Math.ceil(blocks / 2) : blocks;
  const mid = bits === 4 ? 8 : 128;
  const out = new Int8Array(N * cols);
  const outScales = new Float32Array(N);
  const row = new Float32Array(K);
  for (let n = 0; n < N; n++) {
    // The row's values as the operator applies them: (code − zero point) · its block's scale.
    for (let blk = 0; blk < blocks; blk++) {
      const scale = scales[n * blocks + blk]!;
      const z = zeroPoints ? (bits === 8 ? zeroPoints[n * zpRow + blk]! : (zeroPoints[n * zpRow + (blk >> 1)]! >> ((blk & 1) * 4)) & 15) : mid;
      const first = blk * block;
      const end = Math.min(block, K - first);
      const base = (n * blocks + blk) * block;
      if (bits === 8) for (let j = 0; j < end; j++) row[first + j] = (codes[base + j]! - z) * scale;
      else {
        // (two codes a byte, low nibble first; a block starts on a byte: its size is even)
        for (let j = 0; j < end; j += 2) {
          const byte = codes[(base + j) >> 1]!;
          row[first + j] = ((byte & 15) - z) * scale;
          if (j + 1 < end) row[first + j + 1] = ((byte >> 4) - z) * scale;
        }
      }
    }
    // Offset columns multiply the sum of a block of the input: each is added to its block's weights instead.
    if (offsets) for (let k = 0; k < cols; k++) row[k]! += row[cols + Math.floor(k / offsets.block)]!;
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
 * as the converter feeds offset columns): `x`, the sums' block size and how many columns they add.
 */
function offsetInput(input: string, K: number, block: number, producers: Map<string, NodeProto>): { input: string; block: number; columns: number } | undefined {
  const concat = producers.get(input);
  if (concat?.opType !== 'Concat' || concat.input?.length !== 2) return undefined;
  const [x, sums] = concat.input as [string, string];
  const reduce = producers.get(sums);
  if (reduce?.opType !== 'ReduceSum' || producers.get(reduce.input?.[0] ?? '')?.input?.[0] !== x) return undefined;
  // K = cols + cols / block
  const cols = (K * block) / (block + 1);
  return Number.isInteger(cols) && cols % block === 0 ? { input: x, block, columns: K - cols } : undefined;
}

/** The values a node reads: its inputs, and those its sub-graphs (If and Loop bodies) read from the outer scope. */
function readsOf(node: NodeProto): string[] {
  const inner = (node.attribute ?? []).flatMap((a) => [...(a.g ? [a.g] : []), ...(a.graphs ?? [])]).flatMap((g) => (g.node ?? []).flatMap(readsOf));
  return [...(node.input ?? []), ...inner];
}

/** The nodes whose outputs something reads (another node or a graph output), in their order. */
function withoutDeadNodes(nodes: NodeProto[], outputs: Set<string>): NodeProto[] {
  let live = nodes;
  for (;;) {
    const read = new Set([...outputs, ...live.flatMap(readsOf)]);
    const next = live.filter((n) => (n.output ?? []).some((o) => read.has(o)));
    if (next.length === live.length) return live;
    live = next;
  }
}
