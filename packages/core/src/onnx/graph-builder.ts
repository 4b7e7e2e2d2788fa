/**
 * A small imperative helper for writing ONNX graphs in code: unique value names, shared constant
 * initializers, one-line ops, and the numeric conversions (fp32→fp16, transposes) that weight
 * writers need. Nothing here knows about language models.
 */
import { DataType, makeNode, makeTensor, type GraphProto, type NodeProto, type TensorProto, type ValueInfoProto } from './proto.js';

/** Attribute values accepted by {@link makeNode}. */
export type Attrs = Parameters<typeof makeNode>[3];

/**
 * Collects the nodes of one graph. Sub-graph builders (If/Loop bodies) are made with {@link GraphBuilder.child}:
 * they emit their own nodes under their own name prefix but put constants and initializers into the root
 * graph, which sub-graphs may reference from the outer scope.
 */
export class GraphBuilder {
  /** Nodes of this graph, in topological (emission) order. */
  readonly nodes: NodeProto[] = [];
  /** Initializers; only the root builder holds any. */
  readonly initializers: TensorProto[] = [];
  private readonly root: GraphBuilder;
  private readonly used: Set<string>;
  private readonly counters: Map<string, number>;
  private readonly constCache = new Map<string, string>();

  /**
   * @param prefix prepended to every value and node name this builder makes (keeps sub-graphs' names apart).
   * @param onInitializer called with each initializer as the root graph takes it (a writer that moves its bytes to
   * external data there and then, so that a large model's weights are not all held until the graph is done).
   */
  constructor(
    readonly prefix = '',
    parent?: GraphBuilder,
    private readonly onInitializer?: (tensor: TensorProto) => void,
  ) {
    this.root = parent ? parent.root : this;
    this.used = parent ? parent.used : new Set();
    this.counters = parent ? parent.counters : new Map();
  }

  /** A builder for a sub-graph (e.g. an If branch) whose names start with `prefix`; constants go to the root graph. */
  child(prefix: string): GraphBuilder {
    return new GraphBuilder(prefix, this);
  }

  /** A fresh value name derived from `hint` (and this builder's prefix), unique across the root graph and its sub-graphs. */
  fresh(hint: string): string {
    const base = `${this.prefix}${hint}`;
    let n = this.counters.get(base) ?? 0;
    let name = n === 0 ? base : `${base}_${n}`;
    while (this.used.has(name)) name = `${base}_${++n}`;
    this.counters.set(base, n + 1);
    this.used.add(name);
    return name;
  }

  /** Reserves an exact name (graph inputs, outputs, initializers) so that {@link fresh} never returns it. */
  reserve(name: string): string {
    if (this.used.has(name)) throw new Error(`graph value name already used: ${name}`);
    this.used.add(name);
    return name;
  }

  /**
   * Emits one node with a single output and returns the output's name. `out` names the output exactly
   * (the caller made it with {@link fresh} or {@link reserve}); otherwise a fresh name is derived from the op type.
   */
  op(opType: string, inputs: string[], attrs: Attrs = {}, out?: string): string {
    const output = out ?? this.fresh(opType.toLowerCase());
    this.nodes.push(makeNode(opType, inputs, [output], attrs, this.fresh(`n_${opType}`)));
    return output;
  }

  /** Emits one node with several outputs named from `hints`, and returns their names. */
  opN(opType: string, inputs: string[], hints: string[], attrs: Attrs = {}): string[] {
    const outputs = hints.map((h) => this.fresh(h));
    this.nodes.push(makeNode(opType, inputs, outputs, attrs, this.fresh(`n_${opType}`)));
    return outputs;
  }

  /** Adds an initializer to the root graph under an exact name. */
  initializer(tensor: TensorProto): string {
    this.root.reserve(tensor.name!);
    this.root.take(tensor);
    return tensor.name!;
  }

  /** A shared int64 constant initializer (1-D unless `dims` says otherwise, `[]` for a scalar). */
  i64(values: number[], dims: number[] = [values.length]): string {
    return this.constant('i64', DataType.INT64, dims, values, () => BigInt64Array.from(values, (v) => BigInt(v)));
  }

  /** A shared float32 constant initializer (1-D unless `dims` says otherwise, `[]` for a scalar). */
  f32(values: number[], dims: number[] = [values.length]): string {
    return this.constant('f32', DataType.FLOAT, dims, values, () => Float32Array.from(values));
  }

  /** A shared float32 constant from an existing array (not cached by value; named from `hint`). */
  f32Array(hint: string, dims: number[], data: Float32Array): string {
    const tensor = makeTensor(this.root.fresh(hint), DataType.FLOAT, dims, data);
    this.root.take(tensor);
    return tensor.name!;
  }

  /** Adds an initializer to this (root) graph. */
  private take(tensor: TensorProto): void {
    this.initializers.push(tensor);
    this.onInitializer?.(tensor);
  }

  private constant(
    kind: string,
    dataType: number,
    dims: number[],
    values: number[],
    make: () => Float32Array | BigInt64Array,
  ): string {
    const key = `${kind}:${dims.join('x')}:${values.join(',')}`;
    const root = this.root;
    const hit = root.constCache.get(key);
    if (hit) return hit;
    const hint = values.length <= 4 ? `const_${kind}_${values.join('_').replace(/[^0-9a-zA-Z_]/g, (c) => (c === '-' ? 'm' : 'p'))}` : `const_${kind}`;
    const name = root.fresh(hint);
    root.take(makeTensor(name, dataType, dims, make()));
    root.constCache.set(key, name);
    return name;
  }

  /** Packs this builder's nodes into a graph (sub-graphs pass no initializers). */
  toGraph(name: string, inputs: ValueInfoProto[], outputs: ValueInfoProto[]): GraphProto {
    return {
      name,
      node: this.nodes,
      initializer: this === this.root ? this.initializers : [],
      input: inputs,
      output: outputs,
    };
  }
}

// Kept apart (no protobuf needed); exported from here as before.
export { float16ToFloat32, float32ArrayToFloat16, float32ToFloat16 } from './float16.js';

/** Transposes a row-major `[rows, cols]` matrix into a new row-major `[cols, rows]` one (cache-blocked). */
export function transpose2d(src: Float32Array, rows: number, cols: number): Float32Array {
  if (src.length !== rows * cols) throw new Error(`transpose2d: expected ${rows}×${cols}=${rows * cols} values, got ${src.length}`);
  const out = new Float32Array(src.length);
  const B = 64;
  for (let r0 = 0; r0 < rows; r0 += B) {
    const r1 = Math.min(rows, r0 + B);
    for (let c0 = 0; c0 < cols; c0 += B) {
      const c1 = Math.min(cols, c0 + B);
      for (let r = r0; r < r1; r++) {
        const base = r * cols;
        for (let c = c0; c < c1; c++) out[c * rows + r] = src[base + c]!;
      }
    }
  }
  return out;
}
