/**
 * Graph adaptation: turns an exported decoder (see ARCHITECTURE.md, "ONNX decoder conventions accepted") into a
 * "prepared" copy that suits the engine:
 *
 * - `lastLogitsOnly`: `logits` become `[B, N, V]`, the last N positions (N the int64 scalar input
 *   `num_logits_to_keep`, added where the graph lacks it), so `[B, S, V]` never crosses the session boundary on
 *   long prompts. The LM head is found by walking back from `logits` through
 *   shape-preserving ops (Cast, Identity, Tanh, Add/Sub/Mul/Div by a broadcast constant, Reshape to a constant
 *   `[0|-1 ...]` shape) to the MatMul (or com.microsoft FusedMatMul / MatMulNBits / MatMulBnb4) whose other operand is
 *   constant; a Slice on its data input makes the head run on those positions only. Through the `If` of a merged
 *   decoder both branches are adapted. When no head can be found (or the path is shared with other outputs),
 *   the `logits` output itself is sliced instead, which still keeps the boundary small. A graph that takes
 *   `num_logits_to_keep` is left as is. The engine sets it to 1 for most runs, to more where right-padded rows of
 *   prompts run together end before the last position, and where drafted tokens are verified.
 * - `logitsFloat32`: fp16 logits get a final Cast to float32 (the output keeps the name `logits`).
 * - `hiddenState`: the LM head's input (the final post-norm hidden state) becomes an extra output
 *   `last_hidden_state` (`[B, 1, H]` with `lastLogitsOnly`, else `[B, S, H]`). Its type is the head's compute
 *   type, which may be float32 in a graph whose I/O is fp16 (e.g. graphs that compute in fp32 and cast at the end).
 * - `inputsEmbeds`: an extra input `inputs_embeds` `[B, embeds_length, H]` (dtype of the embedding table): the
 *   output of every embedding Gather (`Gather(table [V, H], input_ids)`) is replaced by
 *   `Concat(gathered, inputs_embeds, axis=1)`, so callers pass a 0-length tensor for whichever part they do not use.
 *   Every `Shape` read of `input_ids` (directly or through Cast/Identity) is rewritten to the shape
 *   `[B, ids_length + embeds_length]`, so masks and positions the graph derives from it see the combined length.
 *   `attention_mask` and `position_ids` must then cover the combined length. Any other use of `input_ids`
 *   (values read by something other than the embedding) makes the adaptation refuse with an
 *   {@link UnsupportedModelError}.
 *
 * Initializers are shared with the input model, never copied or loaded: external-data references stay as they
 * are (relative to the source model's directory). Nothing of the input model is modified.
 */
import type { onnx as O } from 'onnx-proto';
import {
  DataType,
  makeNode,
  makeTensor,
  makeValueInfo,
  onnx,
  OnnxFormatError,
  type GraphProto,
  type ModelProto,
  type NodeProto,
  type TensorProto,
  type ValueInfoProto,
} from './proto.js';
import { SIGNATURE_NAMES, UnsupportedModelError, type ValueMetadata } from './signature.js';

/** What to change in a decoder graph; every flag defaults to false. */
export interface AdaptOptions {
  /** Return logits of the last position only (`[B, 1, V]`). */
  lastLogitsOnly?: boolean;
  /** Cast fp16 logits to float32. */
  logitsFloat32?: boolean;
  /** Add the output `last_hidden_state` (the LM head's input). */
  hiddenState?: boolean;
  /** Add the input `inputs_embeds`, concatenated after the embedded `input_ids`. */
  inputsEmbeds?: boolean;
}

/** A prepared model and what was done to it. */
export interface AdaptResult {
  model: ModelProto;
  /** One line per change or fallback, for logs and `reasonplug inspect`. */
  notes: string[];
}

const INT64_MAX = 9223372036854775807n;
const MS = 'com.microsoft';

type Dim = string | number | undefined;

// ---------------------------------------------------------------------------------------------------------------
// small proto helpers

function num(v: unknown): number {
  if (v === null || v === undefined) return 0;
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') return Number(v);
  if (typeof v === 'string') return Number(v);
  return Number((v as { toString(): string }).toString());
}

function attr(node: NodeProto, name: string): O.IAttributeProto | undefined {
  return (node.attribute ?? []).find((a) => a.name === name);
}

function attrInt(node: NodeProto, name: string): number | undefined {
  const a = attr(node, name);
  return a && a.i !== undefined && a.i !== null ? num(a.i) : undefined;
}

function attrInts(node: NodeProto, name: string): number[] | undefined {
  const a = attr(node, name);
  return a ? (a.ints ?? []).map(num) : undefined;
}

function domainOf(node: NodeProto): string {
  const d = node.domain ?? '';
  return d === 'ai.onnx' ? '' : d;
}

function describeNode(node: NodeProto): string {
  const d = domainOf(node);
  return `${d ? `${d}::` : ''}${node.opType} node \`${node.name || node.output?.[0] || '?'}\``;
}

function cloneGraph(g: GraphProto): GraphProto {
  return {
    ...g,
    node: (g.node ?? []).map(cloneNode),
    input: [...(g.input ?? [])],
    output: [...(g.output ?? [])],
    valueInfo: [...(g.valueInfo ?? [])],
    initializer: [...(g.initializer ?? [])],
  };
}

function cloneNode(n: NodeProto): NodeProto {
  return {
    ...n,
    input: [...(n.input ?? [])],
    output: [...(n.output ?? [])],
    attribute: (n.attribute ?? []).map((a) => {
      if (a.g) return { ...a, g: cloneGraph(a.g) };
      if (a.graphs && a.graphs.length > 0) return { ...a, graphs: a.graphs.map(cloneGraph) };
      return a;
    }),
  };
}

/** Sub-graphs held by a node's attributes (If branches, Loop/Scan bodies). */
function subgraphs(node: NodeProto): GraphProto[] {
  const out: GraphProto[] = [];
  for (const a of node.attribute ?? []) {
    if (a.g) out.push(a.g);
    for (const g of a.graphs ?? []) out.push(g);
  }
  return out;
}

function tensorType(vi: ValueInfoProto | undefined): { elemType?: number; dims?: Dim[] } {
  const t = vi?.type?.tensorType;
  if (!t) return {};
  return {
    elemType: t.elemType ?? undefined,
    dims: t.shape ? (t.shape.dim ?? []).map((d) => (d.dimParam ? d.dimParam : d.dimValue !== undefined && d.dimValue !== null ? num(d.dimValue) : undefined)) : undefined,
  };
}

function valueInfoOf(name: string, elemType: number, dims: Dim[]): ValueInfoProto {
  const vi = makeValueInfo(name, elemType, dims.map((d) => d ?? ''));
  // makeValueInfo writes '' as an empty dim_param; make unknown dims truly unknown.
  vi.type!.tensorType!.shape!.dim = dims.map((d) => (d === undefined ? {} : typeof d === 'string' ? { dimParam: d } : { dimValue: d }));
  return vi;
}

function i64Values(t: TensorProto): bigint[] | undefined {
  if (t.dataType !== DataType.INT64 || t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL) return undefined;
  const raw = t.rawData;
  if (raw && raw.byteLength > 0) {
    if (raw.byteLength % 8 !== 0 || raw.byteLength > 8 * 64) return undefined;
    const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    return Array.from({ length: raw.byteLength / 8 }, (_, i) => view.getBigInt64(i * 8, true));
  }
  return (t.int64Data ?? []).map((v) => BigInt(String(v)));
}

const ELEM_NAMES: Record<number, string> = { 1: 'float32', 10: 'float16', 16: 'bfloat16', 11: 'float64', 7: 'int64', 6: 'int32', 9: 'bool' };

// ---------------------------------------------------------------------------------------------------------------
// scopes: one per graph, with producers, consumers and the outer scope

interface ConstInfo {
  dims?: number[];
  elemType?: number;
  i64?: bigint[];
}

class Scope {
  readonly producers = new Map<string, NodeProto>();
  readonly consumers = new Map<string, NodeProto[]>();
  readonly inits = new Map<string, TensorProto>();
  readonly inputs = new Set<string>();
  readonly outputs = new Set<string>();
  private readonly constMemo = new Map<string, boolean>();

  constructor(
    readonly graph: GraphProto,
    readonly parent: Scope | undefined,
    ctx: Ctx,
  ) {
    for (const i of graph.input ?? []) this.inputs.add(i.name ?? '');
    for (const o of graph.output ?? []) this.outputs.add(o.name ?? '');
    for (const t of graph.initializer ?? []) this.inits.set(t.name ?? '', t);
    for (const n of graph.node ?? []) {
      for (const o of n.output ?? []) if (o) this.producers.set(o, n);
      const used = new Set<string>([...(n.input ?? []), ...subgraphs(n).flatMap((g) => [...ctx.outerNames(g)])]);
      for (const i of used) {
        if (!i) continue;
        const list = this.consumers.get(i) ?? [];
        list.push(n);
        this.consumers.set(i, list);
      }
    }
  }

  /** True when `name` is defined in this graph itself (input, initializer or node output). */
  definesLocally(name: string): boolean {
    return this.producers.has(name) || this.inputs.has(name) || this.inits.has(name);
  }

  /** The scope that defines `name` (this one or an outer one). */
  owner(name: string): Scope | undefined {
    return this.definesLocally(name) ? this : this.parent?.owner(name);
  }

  valueInfo(name: string): ValueInfoProto | undefined {
    const g = this.graph;
    const found = [...(g.valueInfo ?? []), ...(g.input ?? []), ...(g.output ?? [])].find((v) => v.name === name);
    return found ?? (this.definesLocally(name) ? undefined : this.parent?.valueInfo(name));
  }

  /** Whether `name` is computed from initializers and constants only. */
  isConst(name: string): boolean {
    if (!name) return false;
    const owner = this.owner(name);
    if (!owner) return false;
    if (owner !== this) return owner.isConst(name);
    const memo = this.constMemo.get(name);
    if (memo !== undefined) return memo;
    this.constMemo.set(name, false); // cycles (malformed graphs) end here
    let result = false;
    if (this.inputs.has(name)) result = false;
    else if (this.inits.has(name)) result = true;
    else {
      const n = this.producers.get(name)!;
      const op = n.opType ?? '';
      if (domainOf(n) === '' && op === 'Constant') result = true;
      else if (domainOf(n) === '' && CONST_PROPAGATING.has(op) && subgraphs(n).length === 0) {
        result = (n.input ?? []).filter(Boolean).every((i) => this.isConst(i));
      }
    }
    this.constMemo.set(name, result);
    return result;
  }

  /** Dims, element type and (small int64) values of a constant, as far as they can be read without loading data. */
  constInfo(name: string, depth = 0): ConstInfo {
    const owner = this.owner(name);
    if (!owner || depth > 16) return {};
    if (owner !== this) return owner.constInfo(name, depth + 1);
    const t = this.inits.get(name);
    if (t) return { dims: (t.dims ?? []).map(num), elemType: t.dataType ?? undefined, i64: i64Values(t) };
    const n = this.producers.get(name);
    if (!n || domainOf(n) !== '') return {};
    switch (n.opType) {
      case 'Constant': {
        const v = attr(n, 'value');
        if (v?.t) return { dims: (v.t.dims ?? []).map(num), elemType: v.t.dataType ?? undefined, i64: i64Values(v.t) };
        const vi = attr(n, 'value_int');
        if (vi) return { dims: [], elemType: DataType.INT64, i64: [BigInt(num(vi.i))] };
        const vis = attr(n, 'value_ints');
        if (vis) return { dims: [(vis.ints ?? []).length], elemType: DataType.INT64, i64: (vis.ints ?? []).map((x) => BigInt(num(x))) };
        if (attr(n, 'value_float')) return { dims: [], elemType: DataType.FLOAT };
        const vfs = attr(n, 'value_floats');
        if (vfs) return { dims: [(vfs.floats ?? []).length], elemType: DataType.FLOAT };
        return {};
      }
      case 'Cast': {
        const inner = this.constInfo(n.input![0]!, depth + 1);
        return { dims: inner.dims, elemType: attrInt(n, 'to') };
      }
      case 'Identity':
        return this.constInfo(n.input![0]!, depth + 1);
      case 'Transpose': {
        const inner = this.constInfo(n.input![0]!, depth + 1);
        if (!inner.dims) return { elemType: inner.elemType };
        const perm = attrInts(n, 'perm') ?? inner.dims.map((_, i) => inner.dims!.length - 1 - i);
        return { dims: perm.map((p) => inner.dims![p]!), elemType: inner.elemType };
      }
      case 'DequantizeLinear': {
        const inner = this.constInfo(n.input![0]!, depth + 1);
        const scale = this.constInfo(n.input![1]!, depth + 1);
        return { dims: inner.dims, elemType: scale.elemType };
      }
      default:
        return {};
    }
  }
}

const CONST_PROPAGATING = new Set(['Cast', 'Transpose', 'Identity', 'Reshape', 'Unsqueeze', 'Squeeze', 'DequantizeLinear', 'CastLike']);

/** Model-wide state: scopes, fresh names, shared constants. */
class Ctx {
  private readonly scopes = new Map<GraphProto, Scope>();
  private readonly outerMemo = new Map<GraphProto, Set<string>>();
  private readonly used = new Set<string>();
  private readonly consts = new Map<string, string>();
  main: Scope;

  constructor(readonly mainGraph: GraphProto) {
    const collect = (g: GraphProto): void => {
      for (const v of [...(g.input ?? []), ...(g.output ?? []), ...(g.valueInfo ?? []), ...(g.initializer ?? [])]) this.used.add(v.name ?? '');
      for (const n of g.node ?? []) {
        for (const x of [...(n.input ?? []), ...(n.output ?? [])]) this.used.add(x);
        if (n.name) this.used.add(n.name);
        subgraphs(n).forEach(collect);
      }
    };
    collect(mainGraph);
    this.main = new Scope(mainGraph, undefined, this);
    this.scopes.set(mainGraph, this.main);
  }

  /** Rebuilds the producer/consumer indexes after the graph was rewritten. */
  reindex(): void {
    this.scopes.clear();
    this.outerMemo.clear();
    this.main = new Scope(this.mainGraph, undefined, this);
    this.scopes.set(this.mainGraph, this.main);
  }

  scope(g: GraphProto, parent: Scope): Scope {
    let s = this.scopes.get(g);
    if (!s) {
      s = new Scope(g, parent, this);
      this.scopes.set(g, s);
    }
    return s;
  }

  /** Names a sub-graph reads from its outer scopes (recursively through nested sub-graphs). */
  outerNames(g: GraphProto): Set<string> {
    const memo = this.outerMemo.get(g);
    if (memo) return memo;
    const defined = new Set<string>([...(g.input ?? []), ...(g.initializer ?? [])].map((v) => v.name ?? ''));
    for (const n of g.node ?? []) for (const o of n.output ?? []) defined.add(o);
    const out = new Set<string>();
    for (const n of g.node ?? []) {
      for (const i of n.input ?? []) if (i && !defined.has(i)) out.add(i);
      for (const sg of subgraphs(n)) for (const i of this.outerNames(sg)) if (!defined.has(i)) out.add(i);
    }
    for (const o of g.output ?? []) if (o.name && !defined.has(o.name)) out.add(o.name);
    this.outerMemo.set(g, out);
    return out;
  }

  fresh(hint: string): string {
    const base = `/reasonplug/${hint.replace(/^\/+/, '')}`;
    let name = base;
    for (let i = 1; this.used.has(name); i++) name = `${base}_${i}`;
    this.used.add(name);
    return name;
  }

  /** A shared int64 initializer in the main graph (visible to every sub-graph). */
  i64(values: bigint[], dims: number[] = [values.length]): string {
    const key = `${dims.join('x')}:${values.join(',')}`;
    const hit = this.consts.get(key);
    if (hit) return hit;
    const name = this.fresh(`const_i64_${values.map((v) => (v === INT64_MAX ? 'max' : String(v).replace('-', 'm'))).join('_')}`);
    (this.mainGraph.initializer ??= []).push(makeTensor(name, DataType.INT64, dims, BigInt64Array.from(values)));
    this.consts.set(key, name);
    return name;
  }

  node(opType: string, inputs: string[], outputs: string[], attrs: Parameters<typeof makeNode>[3] = {}): NodeProto {
    return makeNode(opType, inputs, outputs, attrs, this.fresh(`${opType}`));
  }
}

function insertBefore(graph: GraphProto, anchor: NodeProto, nodes: NodeProto[]): void {
  const list = graph.node!;
  const i = list.indexOf(anchor);
  list.splice(i < 0 ? 0 : i, 0, ...nodes);
}

function insertAfter(graph: GraphProto, anchor: NodeProto, nodes: NodeProto[]): void {
  const list = graph.node!;
  const i = list.indexOf(anchor);
  list.splice(i < 0 ? list.length : i + 1, 0, ...nodes);
}

function dropValueInfo(graph: GraphProto, names: Iterable<string>): void {
  const drop = new Set(names);
  graph.valueInfo = (graph.valueInfo ?? []).filter((v) => !drop.has(v.name ?? ''));
}

/** Replaces uses of `from` by `to` in the nodes of `graph` and of its sub-graphs (outer-scope reads). */
function renameUses(graph: GraphProto, from: string, to: string, skip?: NodeProto): void {
  for (const n of graph.node ?? []) {
    if (n === skip) continue;
    n.input = (n.input ?? []).map((i) => (i === from ? to : i));
    for (const g of subgraphs(n)) {
      const shadowed = [...(g.input ?? []), ...(g.initializer ?? [])].some((v) => v.name === from) || (g.node ?? []).some((m) => (m.output ?? []).includes(from));
      if (!shadowed) {
        renameUses(g, from, to);
        g.output = (g.output ?? []).map((o) => (o.name === from ? { ...o, name: to } : o));
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// locating the LM head

type HeadLoc =
  | {
      kind: 'head';
      scope: Scope;
      head: NodeProto;
      hidden: string;
      hiddenType?: number;
      hiddenSize?: number;
      /** Values between the head's output and the located value (inclusive). */
      pathValues: string[];
      /** False when a value on the path is read elsewhere: slicing the head would change other results. */
      safe: boolean;
      why?: string;
    }
  | {
      kind: 'if';
      scope: Scope;
      node: NodeProto;
      index: number;
      branches: HeadLoc[];
      branchScopes: Scope[];
      safe: boolean;
      why?: string;
    };

const UNARY_PASS = new Set(['Cast', 'Identity', 'Tanh']);
const BINARY_PASS = new Set(['Add', 'Sub', 'Mul', 'Div']);

/** Walks back from `value` (an output of `scope`'s graph) to the LM head; returns a reason string when it cannot. */
function locateHead(ctx: Ctx, scope: Scope, value: string): HeadLoc | string {
  let cur = value;
  let safe = true;
  let why: string | undefined;
  const pathValues: string[] = [];
  const readers = (name: string): number => (scope.consumers.get(name) ?? []).length;
  if (readers(value) > 0) {
    safe = false;
    why = `\`${value}\` is also read by ${describeNode(scope.consumers.get(value)![0]!)}`;
  }
  for (let steps = 0; steps < 64; steps++) {
    const n = scope.producers.get(cur);
    if (!n) return `\`${cur}\` is not computed by a node of its graph`;
    pathValues.push(cur);
    if (cur !== value && (readers(cur) !== 1 || scope.outputs.has(cur))) {
      safe = false;
      why ??= `\`${cur}\` on the path to the logits is read elsewhere too`;
    }
    const op = n.opType ?? '';
    const dom = domainOf(n);
    const ins = (n.input ?? []).filter(Boolean);

    if (dom === '' && op === 'If') {
      const k = (n.output ?? []).indexOf(cur);
      const thenG = attr(n, 'then_branch')?.g;
      const elseG = attr(n, 'else_branch')?.g;
      if (!thenG || !elseG) return `${describeNode(n)} has no branches`;
      const branchScopes = [ctx.scope(thenG, scope), ctx.scope(elseG, scope)];
      const branches: HeadLoc[] = [];
      for (const bs of branchScopes) {
        const out = bs.graph.output?.[k]?.name;
        if (!out) return `${describeNode(n)} has no output ${k} in a branch`;
        const loc = locateHead(ctx, bs, out);
        if (typeof loc === 'string') return `in a branch of ${describeNode(n)}: ${loc}`;
        branches.push(loc);
      }
      const inner = branches.find((b) => !b.safe);
      return { kind: 'if', scope, node: n, index: k, branches, branchScopes, safe: safe && !inner, why: why ?? inner?.why };
    }

    const isHead =
      (dom === '' && op === 'MatMul') ||
      (dom === MS && op === 'FusedMatMul' && !attrInt(n, 'transA') && !attrInt(n, 'transBatchA')) ||
      (dom === MS && (op === 'MatMulNBits' || op === 'MatMulBnb4'));
    if (isHead) {
      const [a, b] = [n.input?.[0] ?? '', n.input?.[1] ?? ''];
      if (!scope.isConst(b) || scope.isConst(a)) {
        return `${describeNode(n)} before the logits does not multiply the hidden state by a constant weight`;
      }
      let hiddenType: number | undefined;
      let hiddenSize: number | undefined;
      if (op === 'MatMulNBits' || op === 'MatMulBnb4') {
        // Both keep K as an attribute and their scales (absmax for bnb4) as input 2, typed like the activations.
        hiddenSize = attrInt(n, 'K');
        hiddenType = scope.constInfo(n.input?.[2] ?? '').elemType;
      } else {
        const w = scope.constInfo(b);
        hiddenType = w.elemType;
        if (w.dims?.length === 2) hiddenSize = op === 'FusedMatMul' && attrInt(n, 'transB') ? w.dims[1] : w.dims[0];
      }
      const vi = tensorType(scope.valueInfo(a));
      hiddenType ??= vi.elemType;
      if (hiddenSize === undefined && vi.dims?.length === 3 && typeof vi.dims[2] === 'number') hiddenSize = vi.dims[2];
      return { kind: 'head', scope, head: n, hidden: a, hiddenType, hiddenSize, pathValues, safe, why };
    }

    if (dom === '' && UNARY_PASS.has(op) && ins.length === 1) {
      cur = ins[0]!;
      continue;
    }
    if (dom === '' && BINARY_PASS.has(op) && ins.length === 2) {
      const consts = ins.filter((i) => scope.isConst(i));
      if (consts.length === 0) {
        // e.g. a position-dependent bias added to the head's output: the head (and so the hidden state) is
        // still found, but slicing it alone would no longer give last-position logits.
        const found = ins.map((i) => locateHead(ctx, scope, i)).filter((l): l is HeadLoc => typeof l === 'object');
        if (found.length !== 1) return `${describeNode(n)} combines the logits with a non-constant value`;
        return { ...found[0]!, safe: false, why: `${describeNode(n)} adds a computed value to the head's output` };
      }
      if (consts.length !== 1) return `${describeNode(n)} combines the logits with a non-constant value`;
      const dims = scope.constInfo(consts[0]!).dims;
      const broadcastSafe = dims !== undefined && (dims.length <= 1 || (dims.length <= 3 && dims[dims.length - 2] === 1));
      if (!broadcastSafe) return `${describeNode(n)} applies a constant of unknown or per-position shape`;
      cur = ins.find((i) => i !== consts[0])!;
      continue;
    }
    if (dom === '' && op === 'Reshape' && ins.length === 2 && !attrInt(n, 'allowzero')) {
      const shape = scope.constInfo(ins[1]!).i64;
      if (shape && shape.length === 3 && (shape[1] === 0n || shape[1] === -1n) && shape.filter((v) => v === -1n).length <= 1) {
        cur = ins[0]!;
        continue;
      }
      return `${describeNode(n)} reshapes to a shape that is not a constant [*, 0|-1, *]`;
    }
    return `reached ${describeNode(n)}, which is not a shape-preserving op or a MatMul with a constant weight`;
  }
  return 'the path from the logits back to the LM head is too long';
}

function describeHead(loc: HeadLoc): string {
  if (loc.kind === 'head') return `${describeNode(loc.head)} (input \`${loc.hidden}\`)`;
  return `both branches of ${describeNode(loc.node)}: ${loc.branches.map(describeHead).join('; ')}`;
}

function headHiddenInfo(loc: HeadLoc): { type?: number; size?: number } {
  if (loc.kind === 'head') return { type: loc.hiddenType, size: loc.hiddenSize };
  const infos = loc.branches.map(headHiddenInfo);
  return { type: infos.find((i) => i.type)?.type, size: infos.find((i) => i.size)?.size };
}

// ---------------------------------------------------------------------------------------------------------------
// the adaptation

/**
 * Returns a prepared copy of a decoder model (see the module comment for each option). Throws
 * {@link UnsupportedModelError} when an option cannot be applied to this graph.
 * @param source names the model in messages.
 */
export function adaptDecoder(model: ModelProto | O.IModelProto, opts: AdaptOptions, source = '<model>'): AdaptResult {
  const notes: string[] = [];
  if (!model.graph) throw new UnsupportedModelError(`${source}: the model holds no graph`);
  const defaultOpset = (model.opsetImport ?? []).find((o) => (o.domain ?? '') === '' || o.domain === 'ai.onnx');
  if (!defaultOpset) {
    // Every ONNX model declares it, after its graph: a file cut at the graph's end decodes without it.
    const others = (model.opsetImport ?? []).map((o) => o.domain).join(', ');
    throw new OnnxFormatError(
      others
        ? `${source}: opset_import names no default-domain opset (only ${others}), which a graph of standard operators needs; export the model again`
        : `${source}: no opset_import: the file may be truncated; download or export it again`,
    );
  }
  const opset = num(defaultOpset.version);
  if (opset < 10 && (opts.lastLogitsOnly || opts.hiddenState || opts.inputsEmbeds || opts.logitsFloat32)) {
    throw new UnsupportedModelError(`${source}: default-domain opset ${opset} is too old to adapt (needs opset 10 or newer, for Slice with inputs)`);
  }
  const graph = cloneGraph(model.graph);
  const ctx = new Ctx(graph);
  const N = SIGNATURE_NAMES;

  const logitsIndex = (graph.output ?? []).findIndex((o) => o.name === N.logits);
  if (logitsIndex < 0) {
    throw new UnsupportedModelError(
      `${source}: has no \`logits\` output (outputs: ${(graph.output ?? []).map((o) => o.name).join(', ') || 'none'}); expected a causal-LM decoder with a \`logits\` [batch, seq, vocab] output`,
    );
  }
  const logitsInfo = tensorType(graph.output![logitsIndex]);
  const batchDim: Dim = logitsInfo.dims?.[0] ?? 'batch_size';
  const seqDim: Dim = logitsInfo.dims?.[1] ?? 'sequence_length';

  if (opts.inputsEmbeds) {
    adaptInputsEmbeds(ctx, source, notes);
    ctx.reindex();
  }

  // The head is needed for lastLogitsOnly (preferred form) and for hiddenState.
  let loc: HeadLoc | string | undefined;
  if (opts.lastLogitsOnly || opts.hiddenState) loc = locateHead(ctx, ctx.main, N.logits);

  // A graph that takes num_logits_to_keep already runs its head on the positions asked for: the engine asks for
  // the last one, and for more where right-padded rows end before it (prompts prefilled together) or where drafted
  // tokens are verified (speculative decoding).
  const keepsLogits = (graph.input ?? []).some((i) => i.name === N.numLogitsToKeep);
  if (opts.lastLogitsOnly && keepsLogits) {
    notes.push('lastLogitsOnly: the graph takes `num_logits_to_keep`, which the engine sets to the positions it needs; left as is');
  } else if (opts.lastLogitsOnly) {
    // Every graph gets a `num_logits_to_keep` input (the last N positions) instead of a slice to the last one: a
    // right-padded graph's shorter rows end before its last position, and drafted tokens need a logit each.
    const start = addKeepInput(ctx);
    const what = 'the last `num_logits_to_keep` positions (an input added)';
    if (typeof loc === 'object' && loc.safe) {
      sliceHead(ctx, loc, start);
      notes.push(`lastLogitsOnly: the LM head now runs on ${what} only: ${describeHead(loc)}`);
    } else {
      const reason = typeof loc === 'string' ? loc : (loc?.why ?? 'unknown');
      appendAtOutput(ctx, N.logits, (src) => [ctx.node('Slice', [src, start, ctx.i64([INT64_MAX]), ctx.i64([1n])], [N.logits])], 'full');
      notes.push(`lastLogitsOnly: sliced the \`logits\` output to ${what} (the head still computes every position; ${reason})`);
    }
    setOutputDims(graph, N.logits, (d) => [d[0], KEPT_DIM, d[2]]);
  }

  if (opts.hiddenState) {
    if ((graph.output ?? []).some((o) => o.name === N.hiddenState)) {
      notes.push(`hiddenState: the graph already has a \`${N.hiddenState}\` output; left as is`);
    } else {
      if (typeof loc !== 'object') {
        throw new UnsupportedModelError(
          `${source}: cannot expose the final hidden state: the LM head feeding \`logits\` was not found (${loc ?? 'not searched'})`,
        );
      }
      const info = headHiddenInfo(loc);
      if (info.type === undefined || info.size === undefined) {
        throw new UnsupportedModelError(`${source}: cannot expose the final hidden state: its element type or size is unknown at ${describeHead(loc)}`);
      }
      const last = opts.lastLogitsOnly ?? false;
      const dims: Dim[] = [batchDim, last ? 1 : seqDim, info.size];
      const inner = exposeHidden(ctx, loc, { wantLast: last, type: info.type, dims });
      graph.node!.push(ctx.node('Identity', [inner], [N.hiddenState]));
      graph.output!.push(valueInfoOf(N.hiddenState, info.type, dims));
      notes.push(`hiddenState: added output \`${N.hiddenState}\` ${ELEM_NAMES[info.type] ?? info.type}[${dims.join(', ')}] (the LM head's input)`);
    }
  }

  if (opts.logitsFloat32) {
    const type = tensorType(graph.output!.find((o) => o.name === N.logits)).elemType;
    if (type === DataType.FLOAT16 || type === DataType.BFLOAT16) {
      appendAtOutput(ctx, N.logits, (src) => [ctx.node('Cast', [src], [N.logits], { to: DataType.FLOAT })], 'fp16');
      setOutputType(graph, N.logits, DataType.FLOAT);
      notes.push(`logitsFloat32: \`logits\` cast from ${ELEM_NAMES[type]} to float32`);
    } else {
      notes.push(`logitsFloat32: \`logits\` are already ${ELEM_NAMES[type ?? 0] ?? `type ${type}`}; nothing to do`);
    }
  }

  const out = onnx.ModelProto.create({ ...(model as O.IModelProto), graph });
  return { model: out, notes };
}

function setOutputDims(graph: GraphProto, name: string, f: (dims: Dim[]) => Dim[]): void {
  graph.output = (graph.output ?? []).map((o) => {
    if (o.name !== name) return o;
    const t = tensorType(o);
    if (t.elemType === undefined) return o;
    const dims = t.dims && t.dims.length === 3 ? f(t.dims) : f([undefined, undefined, undefined]);
    return valueInfoOf(name, t.elemType, dims);
  });
}

function setOutputType(graph: GraphProto, name: string, elemType: number): void {
  graph.output = (graph.output ?? []).map((o) => {
    if (o.name !== name) return o;
    const t = tensorType(o);
    return t.dims ? valueInfoOf(name, elemType, t.dims) : { ...o, type: { tensorType: { elemType } } };
  });
}

/**
 * Renames the producer's output `name` (of the main graph) to a fresh value and lets `make` compute `name` from it,
 * appending its nodes at the end of the main graph.
 */
function appendAtOutput(ctx: Ctx, name: string, make: (src: string) => NodeProto[], hint: string): void {
  const graph = ctx.mainGraph;
  const producer = (graph.node ?? []).find((n) => (n.output ?? []).includes(name));
  if (!producer) throw new UnsupportedModelError(`output \`${name}\` is not computed by a node of the main graph`);
  const renamed = ctx.fresh(`${name}_${hint}`);
  producer.output = producer.output!.map((o) => (o === name ? renamed : o));
  renameUses(graph, name, renamed, producer);
  graph.node!.push(...make(renamed));
}

/**
 * Inserts a Slice in front of the head (in each branch of an If) from position `start`, a value of the main graph:
 * −num_logits_to_keep.
 */
function sliceHead(ctx: Ctx, loc: HeadLoc, start: string): void {
  if (loc.kind === 'head') {
    const sliced = ctx.fresh(`${loc.hidden}_last`);
    insertBefore(loc.scope.graph, loc.head, [ctx.node('Slice', [loc.hidden, start, ctx.i64([INT64_MAX]), ctx.i64([1n])], [sliced])]);
    loc.head.input![0] = sliced;
    dropValueInfo(loc.scope.graph, loc.pathValues);
    return;
  }
  loc.branches.forEach((b, i) => {
    sliceHead(ctx, b, start);
    const g = loc.branchScopes[i]!.graph;
    const out = g.output![loc.index]!;
    const t = tensorType(out);
    if (t.elemType !== undefined && t.dims?.length === 3) g.output![loc.index] = valueInfoOf(out.name!, t.elemType, [t.dims[0], KEPT_DIM, t.dims[2]]);
  });
  dropValueInfo(loc.scope.graph, [loc.node.output![loc.index]!]);
}

/** The logits' position dimension of a graph given `num_logits_to_keep`. */
const KEPT_DIM = 'kept_positions';

/**
 * Adds the int64 scalar input `num_logits_to_keep` (the last N positions get logits; 0 keeps all, as in
 * transformers) and returns the Slice start it makes, −N, computed at the top of the main graph.
 */
function addKeepInput(ctx: Ctx): string {
  const graph = ctx.mainGraph;
  const name = SIGNATURE_NAMES.numLogitsToKeep;
  (graph.input ??= []).push(valueInfoOf(name, DataType.INT64, []));
  const one = ctx.fresh('num_logits_to_keep_1d');
  const start = ctx.fresh('num_logits_to_keep_start');
  graph.node!.unshift(ctx.node('Reshape', [name, ctx.i64([1n])], [one]), ctx.node('Neg', [one], [start]));
  return start;
}

/** Makes the head's input available as a value of `loc.scope`'s graph (an extra If output for merged decoders). */
function exposeHidden(ctx: Ctx, loc: HeadLoc, o: { wantLast: boolean; type: number; dims: Dim[] }): string {
  if (loc.kind === 'head') {
    if (o.wantLast) {
      const name = ctx.fresh(`${loc.hidden}_last`);
      insertBefore(loc.scope.graph, loc.head, [ctx.node('Slice', [loc.hidden, ctx.i64([-1n]), ctx.i64([INT64_MAX]), ctx.i64([1n])], [name])]);
      return name;
    }
    return loc.hidden;
  }
  const ifOut = ctx.fresh('last_hidden_state');
  loc.branches.forEach((b, i) => {
    const g = loc.branchScopes[i]!.graph;
    const inner = exposeHidden(ctx, b, o);
    const outName = ctx.fresh(`branch_${i}/last_hidden_state`);
    g.node!.push(ctx.node('Identity', [inner], [outName]));
    g.output!.push(valueInfoOf(outName, o.type, o.dims));
  });
  loc.node.output!.push(ifOut);
  return ifOut;
}

// ---------------------------------------------------------------------------------------------------------------
// inputs_embeds

interface GraphNode {
  node: NodeProto;
  scope: Scope;
}

function allNodes(ctx: Ctx, scope: Scope, out: GraphNode[] = []): GraphNode[] {
  for (const n of scope.graph.node ?? []) {
    out.push({ node: n, scope });
    for (const g of subgraphs(n)) allNodes(ctx, ctx.scope(g, scope), out);
  }
  return out;
}

function adaptInputsEmbeds(ctx: Ctx, source: string, notes: string[]): void {
  const N = SIGNATURE_NAMES;
  const graph = ctx.mainGraph;
  const refuse = (why: string): never => {
    throw new UnsupportedModelError(`${source}: inputs_embeds adaptation is not possible for this graph: ${why}`);
  };
  const idsIndex = (graph.input ?? []).findIndex((i) => i.name === N.inputIds);
  if (idsIndex < 0) refuse('it has no `input_ids` input');
  if ((graph.input ?? []).some((i) => i.name === N.inputsEmbeds)) {
    notes.push('inputsEmbeds: the graph already has an `inputs_embeds` input; left as is');
    return;
  }

  // Values that carry input_ids (through Cast/Identity), across the main graph and its sub-graphs.
  const nodes = allNodes(ctx, ctx.main);
  const derived = new Set<string>([N.inputIds]);
  for (let changed = true; changed; ) {
    changed = false;
    for (const { node } of nodes) {
      if (domainOf(node) === '' && (node.opType === 'Cast' || node.opType === 'Identity') && derived.has(node.input?.[0] ?? '')) {
        for (const o of node.output ?? []) if (o && !derived.has(o)) derived.add(o), (changed = true);
      }
    }
  }
  const shapes: NodeProto[] = [];
  const gathers: { node: NodeProto; scope: Scope; dims: number[]; type: number }[] = [];
  const bad: string[] = [];
  for (const { node, scope } of nodes) {
    const usesIds = (node.input ?? []).some((i) => derived.has(i)) || subgraphs(node).some((g) => [...ctx.outerNames(g)].some((n) => derived.has(n)));
    if (!usesIds) continue;
    const op = node.opType ?? '';
    const dom = domainOf(node);
    if (dom === '' && (op === 'Cast' || op === 'Identity')) continue;
    if (dom === '' && op === 'Shape') {
      shapes.push(node);
      continue;
    }
    if (subgraphs(node).length > 0 && !(node.input ?? []).some((i) => derived.has(i))) continue; // reads inside are visited on their own
    if (dom === '' && op === 'Gather' && (attrInt(node, 'axis') ?? 0) === 0 && derived.has(node.input?.[1] ?? '') && !derived.has(node.input?.[0] ?? '')) {
      const table = node.input![0]!;
      const info = scope.constInfo(table);
      if (scope.isConst(table) && info.dims?.length === 2 && info.elemType !== undefined) {
        gathers.push({ node, scope, dims: info.dims, type: info.elemType });
        continue;
      }
    }
    // A quantized table: rows come out in the scales' type, `scales` columns × block_size wide.
    if (dom === MS && op === 'GatherBlockQuantized' && (attrInt(node, 'gather_axis') ?? 0) === 0 && derived.has(node.input?.[1] ?? '')) {
      const [data, , scales] = node.input ?? [];
      const info = scales ? scope.constInfo(scales) : {};
      const block = attrInt(node, 'block_size') ?? 128;
      if (data && scales && scope.isConst(data) && scope.isConst(scales) && info.dims?.length === 2 && info.elemType !== undefined) {
        gathers.push({ node, scope, dims: [info.dims[0]!, info.dims[1]! * block], type: info.elemType });
        continue;
      }
    }
    bad.push(describeNode(node));
  }
  for (const g of [...(graph.output ?? [])]) if (derived.has(g.name ?? '')) bad.push(`the graph output \`${g.name}\``);
  if (bad.length > 0) {
    refuse(
      `\`input_ids\` is read by ${bad.slice(0, 4).join(', ')}${bad.length > 4 ? ` and ${bad.length - 4} more` : ''}; ` +
        'only the embedding Gather(table [vocab, hidden], input_ids) (or GatherBlockQuantized) and Shape(input_ids) reads can be rewritten',
    );
  }
  if (gathers.length === 0) refuse('no embedding Gather(table [vocab, hidden], input_ids) with a constant table was found');
  const { dims, type } = gathers[0]!;
  if (gathers.some((g) => g.dims[1] !== dims[1] || g.type !== type)) refuse('its embedding Gathers use tables of different widths or types');
  if (type !== DataType.FLOAT && type !== DataType.FLOAT16) refuse(`the embedding table is ${ELEM_NAMES[type] ?? `type ${type}`}, expected float32 or float16`);
  const hidden = dims[1]!;

  // Shape(input_ids) → [B, ids_length + embeds_length], computed once at the top of the main graph.
  const idsShape = ctx.fresh('input_ids_shape');
  const embShape = ctx.fresh('inputs_embeds_shape');
  const b = ctx.fresh('batch');
  const sIds = ctx.fresh('ids_length');
  const sEmb = ctx.fresh('embeds_length');
  const sAll = ctx.fresh('combined_length');
  const combinedShape = ctx.fresh('combined_ids_shape');
  const zero = ctx.i64([0n]);
  const one = ctx.i64([1n]);
  const two = ctx.i64([2n]);
  for (const s of shapes) {
    const start = attrInt(s, 'start');
    const end = attrInt(s, 'end');
    if (start === undefined && end === undefined) {
      s.opType = 'Identity';
      s.input = [combinedShape];
      s.attribute = [];
    } else {
      s.opType = 'Slice';
      s.input = [combinedShape, ctx.i64([BigInt(start ?? 0)]), ctx.i64([end === undefined ? INT64_MAX : BigInt(end)]), zero];
      s.attribute = [];
    }
  }
  graph.node!.unshift(
    ctx.node('Shape', [N.inputIds], [idsShape]),
    ctx.node('Shape', [N.inputsEmbeds], [embShape]),
    ctx.node('Slice', [idsShape, zero, one, zero], [b]),
    ctx.node('Slice', [idsShape, one, two, zero], [sIds]),
    ctx.node('Slice', [embShape, one, two, zero], [sEmb]),
    ctx.node('Add', [sIds, sEmb], [sAll]),
    ctx.node('Concat', [b, sAll], [combinedShape], { axis: 0 }),
  );

  // Every embedding Gather's output becomes Concat(gathered rows, inputs_embeds) under the same name.
  for (const g of gathers) {
    const orig = g.node.output![0]!;
    const part = ctx.fresh(`${orig}_ids`);
    g.node.output![0] = part;
    insertAfter(g.scope.graph, g.node, [ctx.node('Concat', [part, N.inputsEmbeds], [orig], { axis: 1 })]);
  }

  // Graph inputs: input_ids' length gets its own name; inputs_embeds follows input_ids.
  const ids = tensorType(graph.input![idsIndex]);
  const idsDims: Dim[] = ids.dims ?? ['batch_size', 'ids_length'];
  graph.input![idsIndex] = valueInfoOf(N.inputIds, ids.elemType ?? DataType.INT64, [idsDims[0], typeof idsDims[1] === 'number' ? idsDims[1] : 'ids_length']);
  graph.input!.splice(idsIndex + 1, 0, valueInfoOf(N.inputsEmbeds, type, [idsDims[0] ?? 'batch_size', 'embeds_length', hidden]));
  notes.push(
    `inputsEmbeds: added input \`${N.inputsEmbeds}\` ${ELEM_NAMES[type]}[batch, embeds_length, ${hidden}] after the embedding of \`input_ids\` ` +
      `(${gathers.length} Gather${gathers.length > 1 ? 's' : ''}, ${shapes.length} Shape read${shapes.length === 1 ? '' : 's'} rewritten); ` +
      'attention_mask and position_ids cover ids_length + embeds_length',
  );
}

/** Whether any initializer of the model (or a Constant's tensor) keeps its data in an external file. */
export function usesExternalData(model: ModelProto | O.IModelProto): boolean {
  const EXTERNAL = onnx.TensorProto.DataLocation.EXTERNAL;
  const visit = (g: GraphProto | null | undefined): boolean => {
    if (!g) return false;
    if ((g.initializer ?? []).some((t) => t.dataLocation === EXTERNAL)) return true;
    for (const n of g.node ?? []) {
      for (const a of n.attribute ?? []) {
        if (a.t?.dataLocation === EXTERNAL) return true;
        if ((a.tensors ?? []).some((t) => t.dataLocation === EXTERNAL)) return true;
      }
      if (subgraphs(n).some(visit)) return true;
    }
    return false;
  };
  return visit(model.graph);
}

const ORT_TYPES: Record<number, string> = {
  1: 'float32', 2: 'uint8', 3: 'int8', 4: 'uint16', 5: 'int16', 6: 'int32', 7: 'int64', 8: 'string', 9: 'bool',
  10: 'float16', 11: 'float64', 12: 'uint32', 13: 'uint64', 16: 'bfloat16',
};

/**
 * The graph's inputs and outputs in the form onnxruntime reports them (`session.inputMetadata` /
 * `outputMetadata`), read from the protobuf without creating a session: initializers listed as inputs are left
 * out (as onnxruntime does), unknown dimensions become the symbolic name `?`. Feed it to `detectSignature` to
 * check a graph before adapting it.
 */
export function modelValueMetadata(model: ModelProto | O.IModelProto): { inputs: ValueMetadata[]; outputs: ValueMetadata[] } {
  const graph = model.graph ?? {};
  const inits = new Set((graph.initializer ?? []).map((t) => t.name ?? ''));
  const meta = (v: ValueInfoProto): ValueMetadata => {
    const t = v.type?.tensorType;
    if (!t) return { name: v.name ?? '', isTensor: false };
    const dims = tensorType(v).dims ?? [];
    return {
      name: v.name ?? '',
      isTensor: true,
      type: ORT_TYPES[t.elemType ?? 0] ?? `type${t.elemType ?? 0}`,
      shape: dims.map((d) => (d === undefined ? '?' : d)),
    };
  };
  return {
    inputs: (graph.input ?? []).filter((i) => !inits.has(i.name ?? '')).map(meta),
    outputs: (graph.output ?? []).map(meta),
  };
}
