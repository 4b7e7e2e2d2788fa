/** Compares a run's per-token log-probabilities with another run's (e.g. the same call alone). */
import { expect } from 'chai';
import type { TokenLogprob, TokenLogprobs } from '../../src/generate/types.js';

/** Asserts the same alternatives at every token, and returns the largest log-probability difference. */
export function logprobGap(got: readonly TokenLogprobs[], want: readonly TokenLogprobs[]): number {
  let worst = 0;
  got.forEach((e, t) => {
    const w = want[t]!;
    expect(e.top.map((a) => a.id), `alternatives at token ${t}`).to.deep.equal(w.top.map((a) => a.id));
    for (const [a, b] of [[e, w], ...e.top.map((x, k) => [x, w.top[k]!])] as [TokenLogprob, TokenLogprob][]) worst = Math.max(worst, Math.abs(a.logprob - b.logprob));
  });
  return worst;
}
