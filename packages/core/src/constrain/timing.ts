/**
 * What the grammar stage costs a row, token by token: a few clock reads per token, only on constrained rows.
 * The generation result reports it per call ({@link GrammarTiming}), so that the stage can be measured where it
 * runs: overlapped with the model's step, inside real decoding.
 */
import type { Sampler, SamplingContext } from '../sampling/index.js';
import type { GrammarTiming } from '../generate/types.js';
import type { Constraint } from './types.js';

/** Sums over one row's tokens (µs). */
export class StageClock {
  fills = 0;
  fillUs = 0;
  fillMaxUs = 0;
  overlapped = 0;
  picks = 0;
  waitUs = 0;
  pickUs = 0;

  /** A bitmask computed in `us`, while a model ran (`overlapped`) or not. */
  filled(us: number, overlapped: boolean): void {
    this.fills++;
    this.fillUs += us;
    if (us > this.fillMaxUs) this.fillMaxUs = us;
    if (overlapped) this.overlapped++;
  }

  /** A token picked under the bitmask: `waitUs` waiting for it, `pickUs` picking. */
  picked(waitUs: number, pickUs: number): void {
    this.picks++;
    this.waitUs += waitUs;
    this.pickUs += pickUs;
  }
}

/** Per-token means over the rows' clocks; undefined when no token was picked under a grammar. */
export function grammarTiming(constraints: readonly (Constraint | undefined)[]): GrammarTiming | undefined {
  const clocks = constraints.flatMap((c) => (c ? [c.clock] : []));
  const sum = (f: (c: StageClock) => number) => clocks.reduce((n, c) => n + f(c), 0);
  const tokens = sum((c) => c.picks);
  if (tokens === 0) return undefined;
  const fills = sum((c) => c.fills);
  return {
    tokens,
    bitmaskUs: fills ? sum((c) => c.fillUs) / fills : 0,
    bitmaskMaxUs: Math.max(...clocks.map((c) => c.fillMaxUs)),
    overlapped: sum((c) => c.overlapped),
    waitUs: sum((c) => c.waitUs) / tokens,
    pickUs: sum((c) => c.pickUs) / tokens,
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
