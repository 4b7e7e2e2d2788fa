/** eval/gains.ts: the quantized results table's rows from two runs' rows. */
import { expect } from 'chai';
import { gainsKept } from '../eval/gains.js';
import type { Row } from '../eval/run.js';

const row = (setting: string, task: string, accuracy: number, meanReasoningTokens = 0): Row => ({ setting, task, accuracy, meanReasoningTokens, n: 200 });

describe('eval gains kept', () => {
  it('puts each fp32 gain beside the other run\'s share of it, and the latent token cut', () => {
    const ref = [row('S', 'math', 0.15), row('S+math', 'math', 0.835), row('S', 'cipher', 0.975), row('S+cipher', 'cipher', 0.995), row('cot', 'math', 1, 23.3), row('latent', 'math', 1, 8.9)];
    const other = [row('S', 'math', 0.175), row('S+math', 'math', 0.85), row('S', 'cipher', 0.98), row('S+cipher', 'cipher', 0.995), row('cot', 'math', 1, 23.3), row('latent', 'math', 0.975, 12.1)];
    const lines = gainsKept(ref, other, '4-bit').split('\n');
    expect(lines[0]).to.equal('| setting | fp32 | 4-bit |');
    expect(lines).to.include('| S / S+math on math | 15.0 / 83.5% | 17.5 / 85.0% |');
    expect(lines).to.include('| gain kept (S+math, math) | 68.5 pts | 99% |');
    expect(lines).to.include('| gain kept (S+cipher, cipher) | 2.0 pts | 75% |');
    expect(lines).to.include('| latent accuracy | 100.0% | 97.5% |');
    // (23.3 − 12.1) / (23.3 − 8.9) = 78%
    expect(lines).to.include('| reasoning tokens, cot → latent | 23.3 → 8.9 | 23.3 → 12.1 (78%) |');
    // L rows are absent from both runs, so they are left out rather than guessed.
    expect(lines.some((l) => l.includes('L+math'))).to.equal(false);
  });
});
