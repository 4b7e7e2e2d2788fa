/** Reference arithmetic over logits, in float64, for tests that check fused or transformed logits by hand. */
import { expect } from 'chai';

/** log-softmax of the first `n` logits of `z`. */
export function logSoftmax64(z: ArrayLike<number>, n: number): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < n; i++) max = Math.max(max, z[i]!);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += Math.exp(z[i]! - max);
  const lse = max + Math.log(sum);
  return Float64Array.from({ length: n }, (_, i) => z[i]! - lse);
}

/** The index of the largest value (the first, on a tie). */
export function argmax(z: ArrayLike<number>): number {
  let b = 0;
  for (let i = 1; i < z.length; i++) if (z[i]! > z[b]!) b = i;
  return b;
}

/** What {@link expectGreedySteps} steps: a composed source, or a model's own decoder session. */
interface Stepper {
  prefill(prompts: number[][]): Promise<Float32Array>;
  step(tokens: number[]): Promise<Float32Array>;
}

/**
 * Steps `source` greedily from `prompt` for `steps` tokens beside each model's own session in `refs`, checking every
 * step's first `vocab` logits against `expected(zs)` (float64, from the models' own logits, to 1e-4 relative) and
 * calling `each` with the step's models' logits for further checks.
 */
export async function expectGreedySteps(
  source: Stepper,
  refs: Stepper[],
  prompt: number[],
  steps: number,
  vocab: number,
  expected: (zs: Float32Array[]) => ArrayLike<number>,
  label: string,
  each?: (zs: Float32Array[]) => void,
): Promise<void> {
  let fused = await source.prefill([prompt]);
  let zs = await Promise.all(refs.map((r) => r.prefill([prompt])));
  for (let step = 0; step < steps; step++) {
    const want = expected(zs);
    for (let v = 0; v < vocab; v++) expect(fused[v]!, `${label}, step ${step}, id ${v}`).to.be.closeTo(want[v]!, 1e-4 * Math.max(1, Math.abs(want[v]!)));
    each?.(zs);
    const next = argmax(fused);
    fused = await source.step([next]);
    zs = await Promise.all(refs.map((r) => r.step([next])));
  }
}
