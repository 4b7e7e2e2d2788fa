/**
 * The benchmarks' builder models, written once under `.cache/bench` and written again when what the builders
 * would write for them changes: a file left from an older builder would measure an older graph. The same recipes
 * for the benches' GGUF files and converted modules: what the GGUF writer and the converter write for a miniature.
 */
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import type { ConvertGgufOptions } from '../../packages/core/src/gguf/convert.js';
import { buildLlamaModel, randomLlamaWeights, writeLlamaModel } from '../../packages/core/src/onnx/llama-builder.js';
import { buildProjectorModel, randomProjectorWeights, writeProjectorModel } from '../../packages/core/src/onnx/projector-builder.js';
import type { LlamaConfig } from '../../packages/core/src/onnx/llama-spec.js';
import { encodeModel } from '../../packages/core/src/onnx/proto.js';
import { quantizeModel } from '../../packages/core/src/modules/quantize-module.js';
import { quantizeGraph, type QuantizeOptions } from '../../packages/core/src/onnx/quantize/quantize-graph.js';
import { repoRoot } from '../../test/support/paths.js';
import { GGML } from '../../packages/core/test/support/ggml-quantize.js';
import { randomLlamaGguf, type LlamaShape } from './random-llama.js';

/** The ~24M-parameter backbone of the benchmarks: dim 288, 6 layers, 6 heads, ffn 768, vocab 32000. */
export const LLAMA_24M: LlamaConfig = { vocabSize: 32000, hiddenSize: 288, numLayers: 6, numHeads: 6, intermediateSize: 768 };

/** The prompt every benchmark decodes from (Llama-tokenizer ids of a short greeting). */
export const PROMPT = [1, 15043, 3186, 29892, 920, 526, 366, 29973];

/** The serving benchmarks' model: a random-weight ~125M-parameter Llama (dim 768, 12 layers, GQA 12/4, ffn 2048, vocab 32000). */
export const SERVING_SHAPE: LlamaShape = { hidden: 768, layers: 12, heads: 12, kvHeads: 4, ff: 2048, vocab: 32000 };

const sha256 = (bytes: Uint8Array | string) => createHash('sha256').update(bytes).digest('hex');

/** `path`, written by `write` unless the recipe stamped beside it is `recipe`. */
export async function cached(path: string, recipe: string, write: () => Promise<void>): Promise<string> {
  const stamp = `${path}.recipe`;
  if (existsSync(path) && (await readFile(stamp, 'utf8').catch(() => '')) === recipe) return path;
  await mkdir(dirname(path), { recursive: true });
  await write();
  await writeFile(stamp, recipe);
  return path;
}

/**
 * A random-weight Llama model `.cache/bench/<name>/model.onnx`. The recipe holds the graph the builder writes
 * for a one-layer miniature of the same shape, so that a builder change rebuilds the model without building
 * the full one to compare.
 */
export function benchLlama(name: string, config: LlamaConfig, seed: number): Promise<string> {
  const mini: LlamaConfig = {
    ...config,
    vocabSize: 16,
    hiddenSize: 4 * config.numHeads,
    intermediateSize: 8,
    numLayers: 1,
    ...(config.headDim ? { headDim: 4 } : {}),
  };
  const graph = sha256(encodeModel(buildLlamaModel(mini, randomLlamaWeights(mini, seed))));
  const path = join(repoRoot, '.cache', 'bench', name, 'model.onnx');
  return cached(path, JSON.stringify({ config, seed, graph }), () => writeLlamaModel(path, config, randomLlamaWeights(config, seed)));
}

/** `reasonplug quantize` of a bench model, `.cache/bench/<name>-q<bits>/model.onnx`, remade when its source is. */
export async function benchQuantized(source: string, options: QuantizeOptions & { bits: 4 | 8 }): Promise<string> {
  const path = join(dirname(dirname(source)), `${dirname(source).split('/').pop()}-q${options.bits}`, 'model.onnx');
  // What the quantizer writes for a miniature with an awkward width (not a multiple of the block), so that a
  // quantizer change remakes the file as a builder change does.
  const mini: LlamaConfig = { vocabSize: 40, hiddenSize: 44, numLayers: 1, numHeads: 2, intermediateSize: 88 };
  const quantizer = sha256(encodeModel(quantizeGraph(buildLlamaModel(mini, randomLlamaWeights(mini, 1)), 'mini', dirname(source), options).model));
  const recipe = JSON.stringify({ source: await readFile(`${source}.recipe`, 'utf8'), options, quantizer });
  return cached(path, recipe, async () => {
    await rm(path, { force: true });
    await quantizeModel(source, path, options);
  });
}

/** A random-weight reasoning projector `.cache/bench/<name>.onnx` (small: its recipe is its own bytes). */
export async function benchProjector(name: string, hiddenSize: number, seed: number): Promise<string> {
  const model = buildProjectorModel({ hiddenSize }, randomProjectorWeights({ hiddenSize }, seed));
  const path = join(repoRoot, '.cache', 'bench', `${name}.onnx`);
  return cached(path, sha256(encodeModel(model)), () => writeProjectorModel(path, model));
}

/** {@link SERVING_SHAPE} as a Q4_0 GGUF, `.cache/bench/serve/llama-125m-q4_0.gguf`. */
export function servingGguf(): Promise<string> {
  const path = join(repoRoot, '.cache', 'bench', 'serve', 'llama-125m-q4_0.gguf');
  const q4 = () => GGML.Q4_0;
  return cached(path, JSON.stringify({ SHAPE: SERVING_SHAPE, writer: ggufWriterStamp(SERVING_SHAPE, q4) }), () => writeFile(path, randomLlamaGguf(SERVING_SHAPE, 'bench-serve-125m', q4)));
}

/** The sha256 of the file `write` writes to a scratch path: the recipe of a writer whose files are too large to write only to compare. */
export async function writtenStamp(write: (path: string) => Promise<void>): Promise<string> {
  const scratch = await mkdtemp(join(tmpdir(), 'reasonplug-bench-stamp-'));
  try {
    const path = join(scratch, 'file');
    await write(path);
    return sha256(await readFile(path));
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

/** A tensor's ggml type in a GGUF of `layers` layers (llama-quantize's mixes choose by layer). */
export type TensorType = (tensor: string, layers: number) => number;

/**
 * A miniature of `shape` that the GGUF writer and the converter take the same paths for: the same architecture,
 * latent attention and kinds of layer (a hybrid's layers up to its first attention layer; two layers of the others,
 * so that deepseek2 keeps its dense first layer), query heads sharing kv heads or each its own, as many experts used,
 * of twice as many, rows of 256 (one K-quant block), and a vocabulary of 8,192 so that the embedding and the head
 * reach the converter's 1 MiB for external data.
 */
function miniShape(shape: LlamaShape): LlamaShape {
  const attention = shape.hybrid?.attention[0];
  return {
    ...shape,
    hidden: 256,
    layers: attention !== undefined ? attention + 1 : 2,
    heads: 4,
    kvHeads: shape.kvHeads < shape.heads ? 2 : 4,
    ff: 256,
    vocab: 8192,
    ...(shape.experts ? { experts: { count: 2 * shape.experts.used, used: shape.experts.used } } : {}),
    ...(attention !== undefined ? { hybrid: { ...shape.hybrid, attention: [attention] } } : {}),
  };
}

/** The GGUF part of a recipe: the sha256 of what `randomLlamaGguf` writes for the miniature of `shape`, its tensors as `type`. */
export function ggufWriterStamp(shape: LlamaShape, type: TensorType): string {
  const mini = miniShape(shape);
  return sha256(randomLlamaGguf(mini, 'bench mini', (t) => type(t, mini.layers)));
}

/**
 * The converter part of a recipe: the sha256 of every file `convertGguf` writes with `options` for the miniature of
 * `shape`, its tensors as `type`, so that a change anywhere in the converter (the graph builder, the quantized
 * layouts, the tokenizer) converts the bench's modules again. (Imported here, not at the top: the benches that
 * load this module and convert nothing do not load the converter.)
 */
export async function converterStamp(shape: LlamaShape, type: TensorType, options: ConvertGgufOptions): Promise<string> {
  const { convertGguf } = await import('../../packages/core/src/gguf/convert.js');
  const mini = miniShape(shape);
  const scratch = await mkdtemp(join(tmpdir(), 'reasonplug-bench-converter-'));
  try {
    const gguf = join(scratch, 'mini.gguf');
    await writeFile(gguf, randomLlamaGguf(mini, 'bench mini', (t) => type(t, mini.layers)));
    const module = join(scratch, 'module');
    await convertGguf(gguf, module, options);
    const hash = createHash('sha256');
    const files = (await readdir(module, { recursive: true, withFileTypes: true })).filter((e) => e.isFile()).map((e) => relative(module, join(e.parentPath, e.name)));
    for (const f of files.sort()) hash.update(`${f}\0`).update(await readFile(join(module, f)));
    return hash.digest('hex');
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}
