/** Per-token log-probabilities: log-softmax of a row of logits and its most likely ids, read before sampling. */
import { expNeg } from './math.js';

/** Alternatives per token at most (OpenAI's `top_logprobs` limit). */
export const MAX_TOP_LOGPROBS = 20;

/** One id and its log-probability. */
export interface IdLogprob {
  id: number;
  logprob: number;
}

/**
 * The log-softmax of one row of logits, measured before anything (a grammar mask, the sampler's penalty and
 * temperature) writes over the row: a copy of the row is kept so the chosen id's value can be read after.
 * Sums run in float64 with the max subtracted. -Infinity and NaN entries get -Infinity and are never listed.
 */
export class LogprobPass {
  /** The `k` most likely ids, most likely first (ties: the lower id first, as argmax picks). */
  readonly top: IdLogprob[];
  private readonly raw: Float32Array;
  private readonly logZ: number;
  /** Number of +Infinity entries (they then share all the mass). */
  private readonly infinite: number = 0;

  constructor(logits: Float32Array, k: number) {
    this.raw = logits.slice();
    const n = logits.length;
    // Max and the k best in one pass: a small sorted list, entered only by values above its last.
    const ids: number[] = [];
    const vals: number[] = [];
    let max = -Infinity;
    for (let i = 0; i < n; i++) {
      const x = logits[i]!;
      if (!(x > -Infinity)) continue;
      if (x > max) max = x;
      if (k === 0 || (ids.length === k && !(x > vals[k - 1]!))) continue;
      let at = ids.length;
      while (at > 0 && x > vals[at - 1]!) at--;
      ids.splice(at, 0, i);
      vals.splice(at, 0, x);
      if (ids.length > k) {
        ids.pop();
        vals.pop();
      }
    }
    let sum = 0;
    if (max === Infinity) {
      // All the mass on the +Infinity entries (as the sampler treats them).
      for (let i = 0; i < n; i++) if (logits[i] === Infinity) sum++;
      this.logZ = Infinity;
      this.infinite = sum;
    } else {
      for (let i = 0; i < n; i++) {
        const x = logits[i]!;
        if (x > -Infinity) sum += expNeg(x - max);
      }
      this.logZ = max + Math.log(sum);
    }
    this.top = ids.map((id) => ({ id, logprob: this.logprobOf(id) }));
  }

  /** The log-probability of `id` in the row as it was measured. */
  logprobOf(id: number): number {
    const x = this.raw[id]!;
    if (!(x > -Infinity)) return -Infinity;
    if (this.logZ === Infinity) return x === Infinity ? -Math.log(this.infinite) : -Infinity;
    return x - this.logZ;
  }
}
