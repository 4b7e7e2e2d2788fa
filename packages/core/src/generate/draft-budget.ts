/**
 * How many tokens a draft model should draft, from what drafting has cost and kept so far. A kept token saves a
 * step, but every drafted token costs a draft-model step and a position more in the backbone's run, and on the CPU
 * a run's cost grows with its positions at very different rates (measured here: an F16 model's 7-position run 1.4x
 * its step, 4-bit ones' 4x; see bench:draft-model). With the share α of drafted tokens kept, a draft of k tokens
 * yields Σ_{i≤k} α^i tokens for `step + k × (position + draft)` ms; the budget takes the k that yields most per ms,
 * and none when no k beats a plain step, so a draft model that does not pay on a model costs it next to nothing.
 */

/** Weight of the newest observation in each running estimate. */
const EWMA = 0.2;
/** Rounds between two drafts while drafting does not pay, to measure again. */
export const PROBE_EVERY = 32;

/** Running estimates of a lone row's costs and of the draft model's hits. */
export class DraftBudget {
  /** A one-token step, ms. */
  private stepMs: number | undefined;
  /** What each position past the first adds to a run, ms. */
  private positionMs: number | undefined;
  /** What each drafted token costs the draft model (catching up included), ms. */
  private draftMs: number | undefined;
  /** Drafted tokens kept, and drafts that ended on a rejected token (the geometric model's successes and failures). */
  private kept = 0;
  private failed = 0;
  /** Rounds since the last draft the budget allowed while drafting did not pay. */
  private idle = 0;

  /** A one-token step of a lone row took `ms`. */
  observeStep(ms: number): void {
    this.stepMs = ewma(this.stepMs, ms);
  }

  /** A run of `positions` (a token and its draft) took `ms`. */
  observeRun(positions: number, ms: number): void {
    if (positions < 2 || this.stepMs === undefined) return;
    this.positionMs = ewma(this.positionMs, Math.max(0, (ms - this.stepMs) / (positions - 1)));
  }

  /** The draft model took `ms` to draft `tokens` tokens. */
  observeDraft(tokens: number, ms: number): void {
    this.draftMs = ewma(this.draftMs, ms / Math.max(1, tokens));
  }

  /** Of `drafted` tokens the row kept `kept` (all of them, or up to the first it did not write). */
  observeVerdict(drafted: number, kept: number): void {
    // Old verdicts fade as the text changes: both counts decay together.
    this.kept = this.kept * (1 - EWMA) + kept;
    this.failed = this.failed * (1 - EWMA) + (kept < drafted ? 1 : 0);
  }

  /** The share of drafted tokens kept, as far as known. */
  get acceptance(): number | undefined {
    return this.kept + this.failed > 0 ? this.kept / (this.kept + this.failed) : undefined;
  }

  /**
   * Tokens to draft now, at most `max`: none until a plain step was measured (what drafts must beat), all of them
   * until the rest is known, then the count that yields most tokens per ms; 0 when none beats a plain step, but
   * `max` again every {@link PROBE_EVERY} rounds to measure anew.
   */
  limit(max: number): number {
    if (this.stepMs === undefined) return 0;
    const alpha = this.acceptance;
    if (this.positionMs === undefined || this.draftMs === undefined || alpha === undefined) return max;
    let best = 0;
    let bestRate = 1 / this.stepMs;
    let yielded = 1;
    for (let k = 1; k <= max; k++) {
      yielded += alpha ** k;
      const rate = yielded / (this.stepMs + k * (this.positionMs + this.draftMs));
      if (rate > bestRate) [best, bestRate] = [k, rate];
    }
    if (best > 0) {
      this.idle = 0;
      return best;
    }
    if (++this.idle < PROBE_EVERY) return 0;
    this.idle = 0;
    return max;
  }
}

const ewma = (old: number | undefined, value: number) => (old === undefined ? value : old + EWMA * (value - old));
