/**
 * ONNX builder for LiteReason reasoning projectors: a stack of SwiGLU MLPs, each `down(silu(gate(x)) * up(x))`
 * with no residual and no norm, mapping a final hidden state `[B, hidden]` to a latent input embedding
 * `[B, hidden]`. Also the identity projector (Coconut's continuous thought).
 */
import { writeFile } from 'node:fs/promises';
import { GraphBuilder, transpose2d } from './graph-builder.js';
import { DataType, encodeModel, makeValueInfo, type ModelProto } from './proto.js';
import { seededNormals } from './random-weights.js';

/** One SwiGLU layer, matrices in `nn.Linear` layout `[out, in]`, row-major. */
export interface SwiGluWeights {
  gate: Float32Array; // [inner, hidden]
  up: Float32Array; // [inner, hidden]
  down: Float32Array; // [hidden, inner]
}

/** Shape of a projector. */
export interface ProjectorConfig {
  hiddenSize: number;
  /** Width of each MLP (default 2 × hidden). */
  innerSize?: number;
  /** Number of SwiGLU layers (default 3, as LiteReason). */
  layers?: number;
}

const OPSET = 17;

/** Deterministic random projector weights (same seed, same weights). */
export function randomProjectorWeights(config: ProjectorConfig, seed: number, scale = 0.05): SwiGluWeights[] {
  const inner = config.innerSize ?? 2 * config.hiddenSize;
  const normal = seededNormals(seed);
  return Array.from({ length: config.layers ?? 3 }, () => ({
    gate: normal(inner * config.hiddenSize, scale),
    up: normal(inner * config.hiddenSize, scale),
    down: normal(config.hiddenSize * inner, scale),
  }));
}

/** Builds the projector graph: input `hidden_state` `[batch, hidden]` → output `latent_embedding` `[batch, hidden]`. */
export function buildProjectorModel(config: ProjectorConfig, weights: readonly SwiGluWeights[]): ModelProto {
  const H = config.hiddenSize;
  const inner = config.innerSize ?? 2 * H;
  if (weights.length === 0) throw new RangeError('a projector needs at least one SwiGLU layer');
  const g = new GraphBuilder();
  let x = g.reserve('hidden_state');
  weights.forEach((w, i) => {
    for (const [key, size] of [['gate', inner * H], ['up', inner * H], ['down', H * inner]] as const) {
      if (w[key].length !== size) throw new RangeError(`projector layer ${i}: ${key} has ${w[key].length} values, expected ${size}`);
    }
    const gate = g.op('MatMul', [x, g.f32Array(`layers.${i}.gate.T`, [H, inner], transpose2d(w.gate, inner, H))]);
    const up = g.op('MatMul', [x, g.f32Array(`layers.${i}.up.T`, [H, inner], transpose2d(w.up, inner, H))]);
    const silu = g.op('Mul', [gate, g.op('Sigmoid', [gate])]);
    const last = i === weights.length - 1;
    const down = g.f32Array(`layers.${i}.down.T`, [inner, H], transpose2d(w.down, H, inner));
    x = g.op('MatMul', [g.op('Mul', [silu, up]), down], {}, last ? g.reserve('latent_embedding') : undefined);
  });
  return wrap(g, H);
}

/** The identity projector: feeds the hidden state back unchanged (Coconut's continuous thought). */
export function buildIdentityProjector(hiddenSize: number): ModelProto {
  const g = new GraphBuilder();
  g.op('Identity', [g.reserve('hidden_state')], {}, g.reserve('latent_embedding'));
  return wrap(g, hiddenSize);
}

function wrap(g: GraphBuilder, H: number): ModelProto {
  const graph = g.toGraph(
    'reasoning_projector',
    [makeValueInfo('hidden_state', DataType.FLOAT, ['batch_size', H])],
    [makeValueInfo('latent_embedding', DataType.FLOAT, ['batch_size', H])],
  );
  return { irVersion: 8, opsetImport: [{ domain: '', version: OPSET }], producerName: 'reasonplug', graph } as ModelProto;
}

/** Writes a projector model file. */
export async function writeProjectorModel(path: string, model: ModelProto): Promise<void> {
  await writeFile(path, encodeModel(model));
}
