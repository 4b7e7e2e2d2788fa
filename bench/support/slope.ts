/**
 * Per-token time as the slope between a short and a long generation, `(long's ms − short's ms) / (long − short)`:
 * load and prefill cancel out. On a busy machine a pause in the short run can outweigh the long run's extra
 * tokens, and the slope comes out ≤ 0: a negative time per token that flips every ratio taken against it. Such a
 * round is run again, a bounded number of times, and counted, so a table can say how many were.
 */

/** How many times one round is run again before the benchmark gives up on the machine. */
export const MAX_RERUNS = 3;

// Lets the previous run's onnxruntime threads stop spinning before the next is timed: on a small machine they
// would otherwise take the cores the next run's first step needs.
const settle = () => new Promise((r) => setTimeout(r, 25));

/** The rounds of one slope benchmark: each a short and a long run, and the count of rounds run again. */
export class SlopeRounds {
  /** Rounds run again so far because their slope came out ≤ 0. */
  reruns = 0;

  constructor(
    readonly short: number,
    readonly long: number,
  ) {
    if (!(Number.isInteger(short) && Number.isInteger(long) && short >= 1 && long > short)) {
      throw new Error(`the long run must be longer than the short one (whole numbers from 1); got --short ${short} --long ${long}`);
    }
  }

  /**
   * One round of `what`: `run(short)`, then `run(long)`, each after a pause, and the slope between the times `ms`
   * reads from their results; both results come back too. A round whose slope is ≤ 0 is run again, up to
   * {@link MAX_RERUNS} times; after that the machine is too busy for these settings, and this throws.
   */
  async take<T>(what: string, run: (n: number) => Promise<T>, ms: (result: T) => number): Promise<{ msPerToken: number; runs: [T, T] }> {
    for (let attempt = 0; ; attempt++) {
      await settle();
      const a = await run(this.short);
      await settle();
      const b = await run(this.long);
      const msPerToken = (ms(b) - ms(a)) / (this.long - this.short);
      if (msPerToken > 0) return { msPerToken, runs: [a, b] };
      if (attempt === MAX_RERUNS) {
        throw new Error(
          `${what}: the run of ${this.long} was no slower than the run of ${this.short} in ${MAX_RERUNS + 1} tries; ` +
            'the machine is too busy for these settings (a larger --long spreads a pause over more tokens)',
        );
      }
      this.reruns++;
    }
  }

  /** A table title's note of the rounds run again; empty when none were. */
  note(): string {
    return this.reruns ? `; ${this.reruns} round${this.reruns > 1 ? 's' : ''} run again (slope ≤ 0)` : '';
  }
}
