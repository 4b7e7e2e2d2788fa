import { expect } from 'chai';
import {
  applyBitmask,
  argmax,
  argmaxAllowed,
  CandidateBuffer,
  createRng,
  gatherAllowed,
  gatherFinite,
  NoCandidatesError,
  Sampler,
  type SamplingOptions,
} from '../src/sampling/index.js';

/**
 * Random bitmasks in the shapes grammars give and the fast paths take: runs of empty words (structural states),
 * runs of full words (free text), mixed words; sometimes one word short of the row or one past it.
 */
function randomBitmask(rng: () => number, n: number, trial: number): Int32Array {
  const words = ((n + 31) >>> 5) + (trial % 5 === 1 ? 1 : trial % 5 === 2 ? -1 : 0);
  const mask = new Int32Array(Math.max(0, words));
  const shape = trial % 4; // 0 mixed, 1 nearly empty, 2 nearly full, 3 runs
  let w = 0;
  while (w < mask.length) {
    const run = shape === 3 ? 1 + Math.floor(rng() * 40) : 1;
    const kind = rng();
    const word =
      shape === 0 ? (rng() * 2 ** 32) | 0
      : shape === 1 ? (kind < 0.97 ? 0 : 1 << Math.floor(rng() * 32))
      : shape === 2 ? (kind < 0.97 ? -1 : ~(1 << Math.floor(rng() * 32)))
      : kind < 0.4 ? 0 : kind < 0.8 ? -1 : (rng() * 2 ** 32) | 0;
    for (let k = 0; k < run && w < mask.length; k++) mask[w++] = word;
  }
  return mask;
}

/** Logits with ties, NaN, ±Infinity now and then; often the row's best on a disallowed token (as a model may prefer one). */
function randomLogits(rng: () => number, n: number, trial: number, mask: Int32Array): Float32Array {
  const logits = Float32Array.from({ length: n }, () => (trial % 3 === 0 ? Math.floor(rng() * 8) : rng() * 10 - 5));
  if (trial % 7 === 0) for (let k = 0; k < 5; k++) logits[Math.floor(rng() * n)] = [NaN, -Infinity, Infinity][k % 3]!;
  if (trial % 2 === 0) {
    const disallowed = Array.from({ length: Math.min(n, mask.length * 32) }, (_, i) => i).filter((i) => ((mask[i >> 5]! >>> (i & 31)) & 1) === 0);
    if (disallowed.length) logits[disallowed[Math.floor(rng() * disallowed.length)]!] = 50;
  }
  return logits;
}

/** The sampler's pick from a row with every disallowed token set to −∞ (NoCandidatesError as -1). */
function pickMasked(sampler: Sampler, logits: Float32Array, mask: Int32Array, ctx: { generated: number[] }): number {
  const masked = logits.slice();
  applyBitmask(masked, mask);
  try {
    return sampler.sample(masked, ctx);
  } catch (err) {
    if (err instanceof NoCandidatesError) return -1;
    throw err;
  }
}

function pickAllowed(sampler: Sampler, logits: Float32Array, mask: Int32Array, ctx: { generated: number[] }): number {
  try {
    return sampler.sample(logits.slice(), ctx, mask);
  } catch (err) {
    if (err instanceof NoCandidatesError) return -1;
    throw err;
  }
}

describe('sampling under a grammar bitmask', () => {
  it('argmaxAllowed walks the set bits to exactly the argmax of the masked row (ties, NaN, ±∞, partial last word, short and long bitmasks)', () => {
    const rng = createRng(21);
    for (let trial = 0; trial < 600; trial++) {
      const n = 1 + Math.floor(rng() * 5000);
      const mask = randomBitmask(rng, n, trial);
      const logits = randomLogits(rng, n, trial, mask);
      const masked = logits.slice();
      applyBitmask(masked, mask);
      let expected = argmax(masked);
      if (!(masked[expected]! > -Infinity)) expected = -1;
      const before = logits.slice();
      expect(argmaxAllowed(logits, mask), `trial ${trial} (n ${n}, ${mask.length} words)`).to.equal(expected);
      expect(logits.every((x, i) => Object.is(x, before[i])), 'the logits are not written').to.equal(true);
    }
  });

  it('gatherAllowed lists exactly the candidates gatherFinite lists from the masked row', () => {
    const rng = createRng(22);
    const a = new CandidateBuffer();
    const b = new CandidateBuffer();
    for (let trial = 0; trial < 300; trial++) {
      const n = 1 + Math.floor(rng() * 4000);
      const mask = randomBitmask(rng, n, trial);
      const logits = randomLogits(rng, n, trial, mask);
      const masked = logits.slice();
      applyBitmask(masked, mask);
      const count = gatherFinite(masked, b);
      expect(gatherAllowed(logits, mask, a), `trial ${trial}`).to.equal(count);
      expect(Array.from(a.idx.subarray(0, count))).to.deep.equal(Array.from(b.idx.subarray(0, count)));
      expect(Array.from(a.val.subarray(0, count))).to.deep.equal(Array.from(b.val.subarray(0, count)));
    }
  });

  it('a sampler given the bitmask picks token for token what it picks from the masked row: greedy (walk), penalties, temperature, top-k/p, min-p', () => {
    const settings: SamplingOptions[] = [
      {},
      { topK: 1, temperature: 0.9 },
      { repetitionPenalty: 1.4 },
      { temperature: 0.8, seed: 3 },
      { temperature: 1.2, topP: 0.9, seed: 4 },
      { temperature: 0.7, topK: 40, seed: 5 },
      { temperature: 1, minP: 0.05, repetitionPenalty: 1.2, seed: 6 },
    ];
    for (const options of settings) {
      const rng = createRng(31);
      const [walk, apply] = [new Sampler(options), new Sampler(options)];
      const generated: number[] = [];
      for (let step = 0; step < 120; step++) {
        const n = 3000 + (step % 33);
        const mask = randomBitmask(rng, n, step);
        const logits = randomLogits(rng, n, step, mask);
        const ctx = { generated };
        const id = pickAllowed(walk, logits, mask, ctx);
        expect(id, `${JSON.stringify(options)} step ${step}`).to.equal(pickMasked(apply, logits, mask, ctx));
        if (id >= 0) generated.push(id);
      }
    }
  });

  it('end-of-sequence is picked only where its bit is set, even as the best logit; an empty bitmask has no candidate', () => {
    const eos = 2;
    const n = 70; // the last word is partial
    const logits = Float32Array.from({ length: n }, (_, i) => (i === eos ? 9 : i === 65 ? 20 : i % 5));
    const open = new Int32Array(3).fill(-1);
    open[0] = ~(1 << eos); // the grammar is not complete: EOS masked
    const complete = new Int32Array(3);
    complete[0] = (1 << eos) | (1 << 1); // the grammar may end, or go on with token 1
    for (const options of [{}, { temperature: 0.5, seed: 1, topP: 0.5 }, { temperature: 0.5, seed: 1, topK: 3 }]) {
      expect(new Sampler(options).sample(logits.slice(), { generated: [] }, open)).to.equal(65);
      expect(new Sampler(options).sample(logits.slice(), { generated: [] }, complete)).to.equal(eos);
      expect(() => new Sampler(options).sample(logits.slice(), { generated: [] }, new Int32Array(3))).to.throw(NoCandidatesError);
    }
  });
});
