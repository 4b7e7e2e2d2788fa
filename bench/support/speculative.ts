/**
 * What the speculative-decoding benchmarks share: a contender's greedy generation with its step and draft counts,
 * llama.cpp's on a raw sequence (node-llama-cpp, with or without a token predictor), and the agreement of two runs.
 */
import type { LlamaContext, TokenPredictor } from 'node-llama-cpp';

/** One greedy generation of a contender. */
export interface Run {
  ids: number[];
  /** Decode ms per token after the first. */
  msPerToken: number;
  /** Model steps after the first token (fewer than tokens where drafts were kept). */
  steps: number;
  drafted: number;
  accepted: number;
}

/** A contender: generates up to `tokens` tokens after `promptIds`. */
export type Generate = (promptIds: number[], tokens: number) => Promise<Run>;

/**
 * Greedy generation on a fresh sequence of llama.cpp's `ctx`, with `predictor` drafting when given (its counts are
 * this call's); stops at `eos` unless it is null or undefined.
 */
export async function llamaCppRun(ctx: LlamaContext, promptIds: number[], tokens: number, eos: number | null | undefined, predictor?: TokenPredictor): Promise<Run> {
  const seq = ctx.getSequence(predictor ? { tokenPredictor: predictor } : {});
  try {
    const ids: number[] = [];
    let first = 0;
    for await (const id of seq.evaluate(promptIds as never[], { temperature: 0 })) {
      if (ids.length === 0) first = performance.now();
      ids.push(id as number);
      if (ids.length >= tokens || (eos != null && id === eos)) break;
    }
    const msPerToken = ids.length > 1 ? (performance.now() - first) / (ids.length - 1) : 0;
    const p = seq.tokenPredictions;
    return { ids, msPerToken, steps: ids.length - 1 - p.used, drafted: p.validated + p.refuted, accepted: p.validated };
  } finally {
    seq.dispose();
  }
}

/** Leading ids two runs share. */
export function agreed(a: readonly number[], b: readonly number[]): number {
  let n = 0;
  while (n < a.length && n < b.length && a[n] === b[n]) n++;
  return n;
}
