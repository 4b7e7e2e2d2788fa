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
  readonly accepts: number[] = [];
  /** Tokens whose pick needed no bitmask: the sampler's own pick, which the grammar accepted. */
  unmasked = 0;

  /** A bitmask computed in `us`: ahead of its pick (`overlapped`: prepared while a model step or prefill ran) or on demand. */
  filled(us: number, overlapped: boolean): void {
    this.fills.push(us);
    if (overlapped) this.overlapped++;
  }

  /**
   * A token picked: `waitUs` waiting for its bitmask (0 when none was needed), `pickUs` picking (both picks when a
   * first one was refused), `acceptUs` the grammar's checks and advance; `masked` whether a bitmask was used.
   */
  picked(waitUs: number, pickUs: number, acceptUs: number, masked: boolean): void {
    this.waits.push(waitUs);
    this.picks.push(pickUs);
    this.accepts.push(acceptUs);
    if (!masked) this.unmasked++;
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
    bitmasks: clocks.reduce((n, c) => n + c.fills.length, 0),
    bitmaskUs: figure(all((c) => c.fills)),
    overlapped: clocks.reduce((n, c) => n + c.overlapped, 0),
    waitUs: figure(all((c) => c.waits)),
    pickUs: figure(all((c) => c.picks)),
    acceptUs: figure(all((c) => c.accepts)),
    unmasked: clocks.reduce((n, c) => n + c.unmasked, 0),
  };
}

/** The share of allowed tokens above which the next pick is tried without a bitmask. */
const PICK_FIRST_ABOVE_SHARE = 0.5;

/**
 * The sampler's pick for a constrained row, accepted by its grammar (the grammar has advanced on return). With a
 * bitmask computed ahead, the pick is made among the tokens it allows. Without one, and where that is exact
 * ({@link Sampler.exactWithoutMask}), the sampler first picks from the whole row and the grammar checks that one
 * token (inside a JSON string almost every token is allowed, and the bitmask would cost more than the model's
 * pick); only a refused pick waits for a bitmask and is redone under it. A row whose bitmask is meant to be
 * computed ahead ({@link Constraint.prefetch}) always picks under it, computed ahead or not. Then sets whether the
 * row's next bitmask is computed ahead. Waits, picks and checks are timed.
 */
export async function pickAccepted(constraint: Constraint, sampler: Sampler, logits: Float32Array, ctx: SamplingContext): Promise<number> {
  const shaping = performance.now();
  sampler.shape(logits, ctx);
  // The pick's time includes the sampler's whole-row stages (repetition penalty, temperature).
  let pickUs = (performance.now() - shaping) * 1000;
  let acceptUs = 0;
  // By the row's state (`prefetch`), not by whether a bitmask happens to be under way: a drafted position is picked
  // with none prepared, and must be picked the way the plain step would (a seed draws the same tokens).
  if (!constraint.prefetch && !constraint.prepared && sampler.exactWithoutMask) {
    const t0 = performance.now();
    const first = sampler.pick(logits);
    const t1 = performance.now();
    const kept = constraint.tryAccept(first);
    const t2 = performance.now();
    pickUs += (t1 - t0) * 1000;
    acceptUs = (t2 - t1) * 1000;
    if (kept) {
      constraint.clock.picked(0, pickUs, acceptUs, false);
      constraint.prefetch = false;
      return first;
    }
  }
  const t0 = performance.now();
  const allowed = await constraint.allowed();
  const t1 = performance.now();
  const id = sampler.pick(logits, allowed);
  const t2 = performance.now();
  constraint.accept(id);
  const t3 = performance.now();
  constraint.clock.picked((t1 - t0) * 1000, pickUs + (t2 - t1) * 1000, acceptUs + (t3 - t2) * 1000, true);
  // Where most tokens are allowed (a JSON string), the sampler's own next pick will most likely be: compute no
  // bitmask ahead. In structural states (a few allowed tokens) it will most likely not: compute it meanwhile.
  constraint.prefetch = !sampler.exactWithoutMask || constraint.allowedShare < PICK_FIRST_ABOVE_SHARE;
  return id;
}
