/**
 * How an embedding model pools its tokens' hidden states into one vector, as sentence-transformers records it
 * (`1_Pooling/config.json` beside the model) and llama.cpp reads it from a GGUF (`<arch>.pooling_type`). The engine
 * gives last-token embeddings; a model that declares another pooling is refused by name rather than embedded wrong.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

/** A pooling mode (sentence-transformers' names; `rank` is llama.cpp's reranker scoring). */
export type Pooling = 'last' | 'mean' | 'cls' | 'max' | 'mean_sqrt_len' | 'weightedmean' | 'rank';

/** Where sentence-transformers keeps a model's pooling, relative to the model's directory. */
export const POOLING_FILE = '1_Pooling/config.json';

/** The `pooling_mode_*` flags of sentence-transformers' file, by mode (`rank` has none there: ours). */
const FLAGS: Record<Pooling, string> = {
  last: 'pooling_mode_lasttoken',
  mean: 'pooling_mode_mean_tokens',
  cls: 'pooling_mode_cls_token',
  max: 'pooling_mode_max_tokens',
  mean_sqrt_len: 'pooling_mode_mean_sqrt_len_tokens',
  weightedmean: 'pooling_mode_weightedmean_tokens',
  rank: 'pooling_mode_rank',
};

/** llama.cpp's `llama_pooling_type` values (0: none, the causal default) as modes. */
const GGUF_POOLING: Record<number, Pooling> = { 1: 'mean', 2: 'cls', 3: 'last', 4: 'rank' };

/** The pooling a GGUF's `<arch>.pooling_type` names (undefined for none, or a value llama.cpp does not define). */
export function poolingOfGguf(type: number): Pooling | undefined {
  return GGUF_POOLING[type];
}

/** sentence-transformers' pooling file for `pooling` over vectors of `size`. */
export function poolingConfig(pooling: Pooling, size: number): Record<string, unknown> {
  const flags = Object.fromEntries(Object.entries(FLAGS).filter(([mode]) => mode !== 'rank').map(([mode, flag]) => [flag, mode === pooling]));
  return { word_embedding_dimension: size, ...flags, ...(pooling === 'rank' ? { [FLAGS.rank]: true } : {}) };
}

/** The pooling the model in `dir` declares in {@link POOLING_FILE}; undefined without one (or with no mode set). */
export async function declaredPooling(dir: string): Promise<Pooling | undefined> {
  let text: string;
  try {
    text = await readFile(join(dir, POOLING_FILE), 'utf8');
  } catch {
    return undefined;
  }
  let config: Record<string, unknown>;
  try {
    config = JSON.parse(text) as Record<string, unknown>;
  } catch (err) {
    throw new SyntaxError(`${join(dir, POOLING_FILE)} is not JSON: ${(err as Error).message}`);
  }
  return (Object.keys(FLAGS) as Pooling[]).find((mode) => config?.[FLAGS[mode]] === true);
}
