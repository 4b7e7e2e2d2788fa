/**
 * What the grammar stage costs a row, token by token: a few clock reads per token, only on constrained rows.
 * The generation result reports it per call ({@link GrammarTiming}), so that the stage can be measured where it
 * runs: overlapped with the model's step, inside real decoding.
 */
import type { Sampler, SamplingContext } from '../sampling/index.js';
import type { GrammarTiming, StageFigure } from '../generate/types.js';
import type { Constraint } from './types.js';

/** One row's figures, token by token (µs). */
export class StageClock {
  readonly fills: number[] = [];
  overlapped = 0;
  readonly waits: number[] = [];
  readonly picks: number[] = [];

  /** A bitmask computed in `us`: ahead of its pick (`overlapped`: prepared while a model step or prefill ran) or on demand. */
  filled(us: number, overlapped: boolean): void {
    this.fills.push(us);
    if (overlapped) this.overlapped++;
  }

  /** A token picked under the bitmask: `waitUs` waiting for it, `pickUs` picking. */
  picked(waitUs: number, pickUs: number): void {
    this.waits.push(waitUs);
    this.picks.push(pickUs);
  }
}

function figure(xs: number[]): StageFigure {
  if (xs.length === 0) return { mean: 0, median: 0, max: 0 };
  const sorted = Float64Array.from(xs).sort();
  const m = sorted.length >> 1;
  return {
    mean: xs.reduce((a, b) => a + b, 0) / xs.length,
    median: sorted.length % 2 ? sorted[m]! : (sorted[m - 1]! + sorted[m]!) / 2,
    max: sorted[sorted.length - 1]!,
  };
}

/** The figures over the rows' tokens; undefined when no token was picked under a grammar. */
export function grammarTiming(constraints: readonly (Constraint | undefined)[]): GrammarTiming | undefined {
  const clocks = constraints.flatMap((c) => (c ? [c.clock] : []));
  const all = (f: (c: StageClock) => number[]) => clocks.flatMap(f);
  const tokens = clocks.reduce((n, c) => n + c.picks.length, 0);
  if (tokens === 0) return undefined;
  return {
    tokens,
    bitmaskUs: figure(all((c) => c.fills)),
    overlapped: clocks.reduce((n, c) => n + c.overlapped, 0),
    waitUs: figure(all((c) => c.waits)),
    pickUs: figure(all((c) => c.picks)),
  };
}

/**
 * The sampler's pick for a constrained row, among the tokens its grammar allows (awaits the bitmask, then
 * samples without masking the logits where the sampler can avoid it); the wait and the pick are timed.
 */
export async function pickAllowed(constraint: Constraint, sampler: Sampler, logits: Float32Array, ctx: SamplingContext): Promise<number> {
  const t0 = performance.now();
  const allowed = await constraint.allowed();
  const t1 = performance.now();
  const id = sampler.sample(logits, ctx, allowed);
  constraint.clock.picked((t1 - t0) * 1000, (performance.now() - t1) * 1000);
  return id;
}
