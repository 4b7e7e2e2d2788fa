/** A small seeded PRNG: xoshiro128** seeded through splitmix32. No dependency. */

import { randomFillSync } from 'node:crypto';

const TWO_32 = 4294967296;
const TWO_53 = 9007199254740992;

/** splitmix32 step over a mutable 1-word state; used only to expand a seed into xoshiro state. */
function splitmix32(state: Int32Array): number {
  state[0] = (state[0]! + 0x9e3779b9) | 0;
  let z = state[0]!;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) | 0;
}

/**
 * A seeded PRNG returning uniform doubles in [0, 1) with 53 bits of resolution (xoshiro128**,
 * two 32-bit outputs per call). The same seed always yields the same stream.
 * @param seed any safe integer (negative allowed; all 53 bits are used).
 */
export function createRng(seed: number): () => number {
  if (!Number.isSafeInteger(seed)) throw new RangeError(`createRng: seed must be a safe integer (got ${seed})`);
  const lo = seed | 0; // low 32 bits (two's complement for negatives)
  const hi = Math.floor(seed / TWO_32) | 0;
  const sm = new Int32Array([lo]);
  let s0 = splitmix32(sm);
  let s1 = splitmix32(sm);
  let s2 = splitmix32(sm);
  let s3 = splitmix32(sm);
  sm[0] = hi ^ 0x6a09e667;
  s0 ^= splitmix32(sm);
  s1 ^= splitmix32(sm);
  s2 ^= splitmix32(sm);
  s3 ^= splitmix32(sm);
  if ((s0 | s1 | s2 | s3) === 0) s0 = 1; // the all-zero state is a fixed point

  const next32 = (): number => {
    const x = Math.imul(s1, 5);
    const result = Math.imul((x << 7) | (x >>> 25), 9) >>> 0;
    const t = s1 << 9;
    s2 ^= s0;
    s3 ^= s1;
    s1 ^= s2;
    s0 ^= s3;
    s2 ^= t;
    s3 = (s3 << 11) | (s3 >>> 21);
    return result;
  };
  return () => {
    const a = next32() >>> 5; // 27 bits
    const b = next32() >>> 6; // 26 bits
    return (a * 67108864 + b) / TWO_53;
  };
}

/** A fresh random seed (a non-negative safe integer) from the OS CSPRNG. */
export function randomSeed(): number {
  const w = randomFillSync(new Uint32Array(2));
  return (w[0]! & 0x1fffff) * TWO_32 + w[1]!;
}
