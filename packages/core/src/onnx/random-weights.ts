/** Deterministic random weights for the builders: the same seed gives the same weights on every machine. */

/** mulberry32: a tiny, fast, seedable 32-bit PRNG returning uniforms in [0, 1). */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Returns a generator of `n` normals N(mean, std²) per call (Box–Muller over one seeded stream). */
export function seededNormals(seed: number): (n: number, std: number, mean?: number) => Float32Array {
  const rand = mulberry32(seed);
  return (n, std, mean = 0) => {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i += 2) {
      const r = Math.sqrt(-2 * Math.log(1 - rand())) * std;
      const t = 2 * Math.PI * rand();
      out[i] = mean + r * Math.cos(t);
      if (i + 1 < n) out[i + 1] = mean + r * Math.sin(t);
    }
    return out;
  };
}
