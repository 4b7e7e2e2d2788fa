/**
 * What the speculative-decoding benchmarks share: a contender's greedy generation with its step and draft counts,
 * llama.cpp's on a raw sequence (node-llama-cpp, with or without a token predictor), and the agreement of two runs.
 */
import type { LlamaContext, TokenPredictor } from 'node-llama-cpp';
import { median } from './stats.js';

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
function agreed(a: readonly number[], b: readonly number[]): number {
  let n = 0;
  while (n < a.length && n < b.length && a[n] === b[n]) n++;
  return n;
}

/**
 * Every contender in `active` on every prompt, `rounds` times, the contenders' order rotating per round and prompt;
 * each contender's runs, and for those `without` pairs with another (the same engine without drafts), the share of
 * each run's leading tokens equal to that one's in the same round.
 */
export async function interleavedRuns<C extends string>(
  contenders: Partial<Record<C, { generate: Generate }>>,
  active: readonly C[],
  without: Partial<Record<C, C>>,
  prompts: readonly number[][],
  rounds: number,
  tokens: number,
): Promise<Record<C, { runs: Run[]; agreement: number[] }>> {
  const out = Object.fromEntries(active.map((c) => [c, { runs: [] as Run[], agreement: [] as number[] }])) as Record<C, { runs: Run[]; agreement: number[] }>;
  for (let round = 0; round < rounds; round++) {
    for (const [p, prompt] of prompts.entries()) {
      const order = active.map((_, i) => active[(i + round + p) % active.length]!);
      const got = {} as Record<C, Run>;
      for (const c of order) got[c] = await contenders[c]!.generate(prompt, tokens);
      for (const c of active) {
        out[c].runs.push(got[c]);
        const other = without[c];
        if (other) out[c].agreement.push(agreed(got[c].ids, got[other].ids) / got[other].ids.length);
      }
    }
  }
  return out;
}

/**
 * A contender's figures over its runs (medians), its time per token against `baseMs` and, when given, `withoutMs`.
 * The share of drafted tokens kept is pooled instead (all runs' kept over all runs' drafted): a median of per-run
 * shares would weigh a run of two drafts as one of a hundred, and has no value for runs that drafted nothing.
 */
export function speculativeFigures({ runs, agreement }: { runs: Run[]; agreement: number[] }, baseMs: number, withoutMs?: number) {
  const drafted = runs.reduce((n, r) => n + r.drafted, 0);
  const accepted = runs.reduce((n, r) => n + r.accepted, 0);
  const ms = median(runs.map((r) => r.msPerToken));
  return {
    tokens: median(runs.map((r) => r.ids.length)),
    msPerToken: Number(ms.toFixed(3)),
    vsReasonplug: Number((ms / baseMs).toFixed(2)),
    ...(withoutMs !== undefined ? { vsWithout: Number((ms / withoutMs).toFixed(2)) } : {}),
    stepsPerToken: Number(median(runs.map((r) => r.steps / Math.max(1, r.ids.length - 1))).toFixed(2)),
    keptOfDrafted: drafted > 0 ? Number((accepted / drafted).toFixed(2)) : null,
    sameAsWithout: agreement.length > 0 ? Number(median(agreement).toFixed(2)) : null,
  };
}

/** The median time per token of a contender's runs. */
export const medianMs = (runs: readonly Run[]) => median(runs.map((r) => r.msPerToken));
