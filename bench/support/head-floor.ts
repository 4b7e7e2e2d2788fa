/**
 * The least any reasoner step can cost beside a backbone on this machine: a graph holding only the reasoners'
 * output projections (`[1, Σ hidden] × [Σ hidden, vocab]`, the heads stacked into one product, which is also
 * their weighted sum when the hidden states are pre-scaled). Every composed step must read these weights, on
 * top of the reasoners' layers; if the backbone with only this costs more than a target, no placement of
 * whole reasoners can meet it here.
 */
import * as ort from 'onnxruntime-node';
import { GraphBuilder, transpose2d } from '../../packages/core/src/onnx/graph-builder.js';
import { DataType, encodeModel, makeValueInfo } from '../../packages/core/src/onnx/proto.js';

/** One reasoner's untied output projection in `nn.Linear` layout `[vocab, hidden]`. */
export interface Head {
  weights: Float32Array;
  hidden: number;
}

/** A one-thread session of the stacked heads; `run()` steps it on a fixed input. */
export async function headsOnly(heads: readonly Head[], vocab: number): Promise<{ run(): Promise<void>; release(): Promise<void> }> {
  const hidden = heads.reduce((s, h) => s + h.hidden, 0);
  const stacked = new Float32Array(hidden * vocab);
  let row = 0;
  for (const h of heads) {
    stacked.set(transpose2d(h.weights, vocab, h.hidden), row * vocab);
    row += h.hidden;
  }
  const g = new GraphBuilder();
  g.op('MatMul', [g.reserve('hidden_states'), g.f32Array('heads.T', [hidden, vocab], stacked)], {}, g.reserve('logits'));
  const graph = g.toGraph(
    'reasoner_heads',
    [makeValueInfo('hidden_states', DataType.FLOAT, [1, hidden])],
    [makeValueInfo('logits', DataType.FLOAT, [1, vocab])],
  );
  const bytes = encodeModel({ irVersion: 8, opsetImport: [{ domain: '', version: 17 }], producerName: 'reasonplug-bench', graph });
  // One thread, as the engine gives small models: a second spinning pool beside the backbone's costs more.
  const session = await ort.InferenceSession.create(bytes, { intraOpNumThreads: 1, graphOptimizationLevel: 'all' });
  const feeds = { hidden_states: new ort.Tensor('float32', new Float32Array(hidden).fill(0.1), [1, hidden]) };
  return {
    run: async () => {
      await session.run(feeds);
    },
    release: () => session.release(),
  };
}
