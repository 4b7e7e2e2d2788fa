/**
 * Finds a decoder's LM head for the quantizer and the int8 prompt graph: the MatMul(s) (or MatMulNBits) whose product becomes the graph output `logits`,
 * walking back through what a head may be followed by (casts, a constant bias or scale, a final soft-cap's Tanh,
 * a [*, 0|-1, *] Reshape) and into both branches of an `If` (merged decoders). The adaptation (onnx/adapt.ts)
 * has its own, stricter walk for slicing the head; this one only has to name it.
 */
import type { GraphProto, NodeProto } from '../proto.js';
import { subgraphs } from '../graph-walk.js';

const PASS_UNARY = new Set(['Cast', 'Identity', 'Tanh', 'Reshape']);
const PASS_BINARY = new Set(['Add', 'Sub', 'Mul', 'Div']);
const MAX_STEPS = 64;

/**
 * The MatMul nodes (default domain), or `com.microsoft` MatMulNBits, computing `logits` in `main` or its sub-graphs. `producers` maps each value
 * to the node computing it (every graph); `isWeight` tells a constant weight matrix the quantizer can read (it may be
 * computed, e.g. a tied head's Transpose of the embedding). Empty when there is no `logits` output or the walk meets
 * anything else.
 */
export function findHeadMatMuls(main: GraphProto, producers: Map<string, NodeProto>, isWeight: (name: string) => boolean): Set<NodeProto> {
  const constants = new Set<string>();
  const collect = (g: GraphProto) => {
    for (const t of g.initializer ?? []) constants.add(t.name ?? '');
    for (const n of g.node ?? []) {
      if ((n.domain ?? '') === '' && n.opType === 'Constant') for (const o of n.output ?? []) constants.add(o);
      for (const sg of subgraphs(n)) collect(sg);
    }
  };
  collect(main);
  const isConst = (name: string) => constants.has(name) || isWeight(name);

  const heads = new Set<NodeProto>();
  const walk = (value: string, steps: number): boolean => {
    if (steps > MAX_STEPS) return false;
    const n = producers.get(value);
    if (!n) return false;
    // (a head already block-quantized: what the int8 prompt graph leaves as it is)
    if (n.opType === 'MatMulNBits' && n.domain === 'com.microsoft') {
      heads.add(n);
      return true;
    }
    if ((n.domain ?? '') !== '') return false;
    const ins = (n.input ?? []).filter(Boolean);
    switch (n.opType) {
      case 'MatMul':
        if (!isConst(ins[1] ?? '') || isConst(ins[0] ?? '')) return false;
        heads.add(n);
        return true;
      case 'If': {
        const k = (n.output ?? []).indexOf(value);
        const branches = subgraphs(n);
        return branches.length === 2 && branches.every((g) => {
          const out = g.output?.[k]?.name;
          return out !== undefined && out !== null && walk(out, steps + 1);
        });
      }
      default:
        if (PASS_UNARY.has(n.opType ?? '')) return walk(ins[0] ?? '', steps + 1);
        if (PASS_BINARY.has(n.opType ?? '') && ins.length === 2) {
          const computed = ins.filter((i) => !isConst(i));
          return computed.length === 1 && walk(computed[0]!, steps + 1);
        }
        return false;
    }
  };
  const logits = (main.output ?? []).find((o) => o.name === 'logits');
  if (!logits || !walk('logits', 0)) heads.clear();
  return heads;
}
