/**
 * The context length a model declares: how many positions (prompt, generated tokens, latent steps) its
 * sequence may hold. A graph need not enforce it (the builder's rotary embedding has no table), but some do
 * (onnxruntime-genai's `RotaryEmbedding` refuses position 2048 of a 2048-position cache mid-run), and it is
 * what the model was trained for either way; llama.cpp stops a generation there too.
 */
import { basename, dirname, join } from 'node:path';
import { readJsonIfPresent } from '../tokenizer/tokenizer.js';
import type { ModelLocation } from './locate.js';

/** Raised for a context length the models cannot take (more positions than they declare). */
export class ContextLengthError extends RangeError {
  override name = 'ContextLengthError';
}

/** transformers writes `model_max_length = 1e30` for "unset"; anything this large is not a real limit. */
const UNSET_ABOVE = 2 ** 31;

const asLength = (v: unknown): number | undefined =>
  typeof v === 'number' && Number.isSafeInteger(v) && v > 0 && v < UNSET_ABOVE ? v : undefined;

/**
 * Reads the declared context length from the files beside a located model, undefined when none declares it:
 * onnxruntime-genai's `genai_config.json` (`model.context_length`, the size of the graph's rotary cache) and
 * the trained length from `config.json` (`max_position_embeddings`, or GPT-2's `n_positions`), else from
 * `tokenizer_config.json` (`model_max_length`, where GGUF conversion records `llama.context_length`). With
 * both, the smaller wins.
 */
export async function declaredContextLength(location: ModelLocation): Promise<number | undefined> {
  const first = (file: string, read: (json: Record<string, unknown>) => unknown) => firstBeside(location, file, (j) => asLength(read(j)));
  const graph = await first('genai_config.json', (j) => (j.model as Record<string, unknown> | undefined)?.context_length);
  const trained =
    (await first('config.json', (j) => j.max_position_embeddings ?? j.n_positions)) ??
    (await first('tokenizer_config.json', (j) => j.model_max_length));
  const known = [graph, trained].filter((n): n is number => n !== undefined);
  return known.length > 0 ? Math.min(...known) : undefined;
}

/** The first value `read` finds in `file` beside a located model: its tokenizer's folder, its graph's, or (hub exports keep their graphs in onnx/) the one above. */
export async function firstBeside<T>(location: ModelLocation, file: string, read: (json: Record<string, unknown>) => T | undefined): Promise<T | undefined> {
  const graphDir = dirname(location.modelPath);
  const dirs = [...new Set([location.tokenizerDir, graphDir, basename(graphDir) === 'onnx' ? dirname(graphDir) : undefined])].filter(
    (d): d is string => d !== undefined,
  );
  for (const dir of dirs) {
    const json = await readJsonIfPresent(join(dir, file));
    const value = json ? read(json) : undefined;
    if (value !== undefined) return value;
  }
  return undefined;
}
