/**
 * The slope benchmarks' rounds (bench/support/slope.ts): a round whose long run comes out no slower than its short
 * one (a pause on a busy machine) is run again and counted, never reported as a negative time per token.
 */
import { expect } from 'chai';
import { MAX_RERUNS, SlopeRounds } from '../bench/support/slope.js';

/** A run whose times are `times`, one per call in order, with the token counts it was called with. */
function scripted(times: number[]) {
  const calls: number[] = [];
  return { calls, run: async (n: number) => (calls.push(n), times[calls.length - 1]!) };
}

describe('bench slope rounds', function () {
  it('runs a round again when its slope is ≤ 0, and counts it', async function () {
    const rounds = new SlopeRounds(8, 24);
    // the first round's short run was slowed past its long one; the second round is sound
    const { calls, run } = scripted([50, 40, 10, 26]);
    const { msPerToken, runs } = await rounds.take('model', run, (ms) => ms);
    expect(msPerToken).to.equal(1);
    expect(runs).to.deep.equal([10, 26]);
    expect(calls).to.deep.equal([8, 24, 8, 24]);
    expect(rounds.reruns).to.equal(1);
    expect(rounds.note()).to.equal('; 1 round run again (slope ≤ 0)');
  });

  it('keeps a sound round as it is', async function () {
    const rounds = new SlopeRounds(16, 144);
    const { msPerToken } = await rounds.take('model', scripted([20, 276]).run, (ms) => ms);
    expect(msPerToken).to.equal(2);
    expect(rounds.reruns).to.equal(0);
    expect(rounds.note()).to.equal('');
  });

  it('gives up, naming the setting, after a bounded number of reruns', async function () {
    const rounds = new SlopeRounds(8, 24);
    const { calls, run } = scripted(Array(2 * (MAX_RERUNS + 2)).fill(30));
    let error: unknown;
    await rounds.take('4-bit backbone alone', run, (ms) => ms).catch((e: unknown) => (error = e));
    expect(error).to.be.instanceOf(Error);
    expect((error as Error).message).to.match(/^4-bit backbone alone: the run of 24 was no slower than the run of 8 in 4 tries/);
    expect(calls).to.have.length(2 * (MAX_RERUNS + 1));
    expect(rounds.reruns).to.equal(MAX_RERUNS);
  });

  it('refuses a long run no longer than the short one', function () {
    expect(() => new SlopeRounds(24, 24)).to.throw(/--short 24 --long 24/);
    expect(() => new SlopeRounds(0, 8)).to.throw(/--short 0 --long 8/);
  });
});
