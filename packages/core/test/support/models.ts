/** Builder-made models shared by the core tests (written once per process into a temp directory). */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomLlamaWeights, writeLlamaModel, type LlamaBuildOptions } from '../../src/onnx/llama-builder.js';
import type { LlamaConfig } from '../../src/onnx/llama-spec.js';

const root = mkdtempSync(join(tmpdir(), 'reasonplug-test-'));
process.once('exit', () => rmSync(root, { recursive: true, force: true }));

/** A small GQA Llama (vocab 96) good for exact-comparison tests. */
export const smallConfig: LlamaConfig = {
  vocabSize: 96,
  hiddenSize: 32,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  intermediateSize: 64,
  ropeStyle: 'half',
};

const built = new Map<string, Promise<string>>();

/** Writes (once) a builder model and returns its .onnx path. */
export function builtModel(
  name: string,
  config: LlamaConfig = smallConfig,
  options: LlamaBuildOptions & { externalData?: boolean } = {},
  seed = 7,
): Promise<string> {
  if (!built.has(name)) {
    const path = join(root, `${name}.onnx`);
    built.set(
      name,
      writeLlamaModel(path, config, randomLlamaWeights(config, seed, 0.08), options).then(() => path),
    );
  }
  return built.get(name)!;
}

/** A fresh directory under the test root. */
export function testDir(name: string): string {
  return mkdtempSync(join(root, `${name}-`));
}

/** Prepared-graph cache used by all tests of this process. */
export const cacheDir = join(root, 'cache');
