/**
 * Walking a graph with its sub-graphs (the bodies of If, Loop and Scan), and pruning what nothing reads after a
 * rewrite. Types only from proto.ts: a model worker that imports this loads no protobuf.
 */
import type { GraphProto, NodeProto } from './proto.js';

/** A node's sub-graphs (its graph-valued attributes). */
export function subgraphs(node: NodeProto): GraphProto[] {
  return (node.attribute ?? []).flatMap((a) => [...(a.g ? [a.g] : []), ...(a.graphs ?? [])]);
}

/** The graph and every sub-graph within it, the graph first. */
export function graphsOf(g: GraphProto, out: GraphProto[] = []): GraphProto[] {
  out.push(g);
  for (const n of g.node ?? []) for (const sg of subgraphs(n)) graphsOf(sg, out);
  return out;
}

/**
 * Drops nodes whose outputs nothing reads, then initializers nothing reads, across the graph and its sub-graphs, with
 * their declarations as graph inputs where old exports (IR < 4) have them (left alone, such an input would need feeding).
 */
export function pruneGraph(main: GraphProto): void {
  for (let changed = true; changed; ) {
    changed = false;
    const all = graphsOf(main);
    const read = new Set<string>();
    for (const g of all) {
      for (const o of g.output ?? []) read.add(o.name ?? '');
      for (const n of g.node ?? []) for (const i of n.input ?? []) read.add(i);
    }
    for (const g of all) {
      const keep = (g.node ?? []).filter((n) => (n.output ?? []).some((o) => o && read.has(o)));
      if (keep.length !== (g.node ?? []).length) {
        g.node = keep;
        changed = true;
      }
    }
    if (!changed) {
      const dropped = new Set((main.initializer ?? []).filter((t) => !read.has(t.name ?? '')).map((t) => t.name ?? ''));
      main.initializer = (main.initializer ?? []).filter((t) => !dropped.has(t.name ?? ''));
      if (main.input) main.input = main.input.filter((i) => !dropped.has(i.name ?? ''));
    }
  }
}
