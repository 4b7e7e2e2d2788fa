import { expect } from 'chai';
import {
  argmax,
  CandidateBuffer,
  checkLogitBiasIds,
  FrequencyPresencePenaltyProcessor,
  LogitBiasProcessor,
  createRng,
  drawFromLogits,
  expNeg,
  gatherFinite,
  maskToCandidates,
  heapKthLargest,
  MinPProcessor,
  NoCandidatesError,
  quickselectKthLargest,
  RepetitionPenaltyProcessor,
  Sampler,
  samplingForRow,
  SamplingOptionsError,
  TopKProcessor,
  TopPProcessor,
  validateSamplingOptions,
  type SamplingOptions,
} from '../src/sampling/index.js';

const CTX = { generated: [] as number[] };

/** Logits whose softmax is exactly the given probabilities (up to float32 rounding). */
function logitsOf(probs: number[]): Float32Array {
  return Float32Array.from(probs, (p) => (p > 0 ? Math.log(p) : -Infinity));
}

function counts(opts: SamplingOptions, base: Float32Array, draws: number, ctx = CTX): number[] {
  const s = new Sampler(opts);
  const c = new Array<number>(base.length).fill(0);
  const buf = new Float32Array(base.length);
  for (let i = 0; i < draws; i++) {
    buf.set(base);
    c[s.sample(buf, ctx)]!++;
  }
  return c;
}

/** Pearson chi-square statistic of observed counts against expected probabilities (over p > 0). */
function chiSquare(observed: number[], probs: number[]): number {
  const n = observed.reduce((a, b) => a + b, 0);
  let x = 0;
  probs.forEach((p, i) => {
    if (p > 0) {
      const e = n * p;
      x += (observed[i]! - e) ** 2 / e;
    } else if (observed[i]! > 0) x = Infinity;
  });
  return x;
}

function normalize(w: number[]): number[] {
  const s = w.reduce((a, b) => a + b, 0);
  return w.map((x) => x / s);
}

/** Reference: indices of the finite logits, most likely first, ties by lower index. */
function sortedIndices(logits: Float32Array): number[] {
  const ids: number[] = [];
  logits.forEach((v, i) => {
    if (v > -Infinity) ids.push(i);
  });
  return ids.sort((a, b) => logits[b]! - logits[a]! || a - b);
}

function keptSet(logits: Float32Array): number[] {
  const out: number[] = [];
  logits.forEach((v, i) => {
    if (v > -Infinity) out.push(i);
  });
  return out;
}

/** Reference nucleus by full sort (float64 softmax). */
function referenceTopP(logits: Float32Array, p: number): number[] {
  const order = sortedIndices(logits);
  const m = logits[order[0]!]!;
  const w = order.map((i) => Math.exp(logits[i]! - m));
  const total = w.reduce((a, b) => a + b, 0);
  const keep: number[] = [];
  let acc = 0;
  for (let j = 0; j < order.length; j++) {
    keep.push(order[j]!);
    acc += w[j]!;
    if (acc >= p * total) break;
  }
  return keep.sort((a, b) => a - b);
}

function randomLogits(n: number, seed: number, scale = 3, quantum = 0): Float32Array {
  const rng = createRng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    // roughly gaussian via sum of uniforms
    let v = (rng() + rng() + rng() + rng() - 2) * scale;
    if (quantum > 0) v = Math.round(v / quantum) * quantum;
    out[i] = v;
  }
  return out;
}

describe('sampling', () => {
  describe('argmax', () => {
    it('picks the max, the first one on ties, and honours limit', () => {
      expect(argmax(Float32Array.from([0.1, 3, -2, 2.9]))).to.equal(1);
      expect(argmax(Float32Array.from([1, 5, 5, 2]))).to.equal(1);
      expect(argmax(Float32Array.from([-Infinity, -Infinity, -7]))).to.equal(2);
      expect(argmax(Float32Array.from([NaN, -1, NaN]))).to.equal(1);
      expect(argmax(Float32Array.from([1, 2, 9, 3]), 2)).to.equal(1);
      expect(argmax(new Float32Array(0))).to.equal(-1);
    });

    it('agrees with a one-lane scan on random tie-heavy vectors of every length mod 4', () => {
      const rng = createRng(3);
      for (let trial = 0; trial < 400; trial++) {
        const n = 1 + Math.floor(rng() * 70);
        const a = Float32Array.from({ length: n }, () => (rng() < 0.1 ? -Infinity : Math.floor(rng() * 6)));
        let expected = 0;
        for (let i = 1; i < n; i++) if (a[i]! > a[expected]!) expected = i;
        const limit = trial % 3 === 0 ? Math.max(1, Math.floor(n / 2)) : undefined;
        let expectedLimited = 0;
        for (let i = 1; i < (limit ?? n); i++) if (a[i]! > a[expectedLimited]!) expectedLimited = i;
        expect(argmax(a, limit), `n=${n}`).to.equal(limit === undefined ? expected : expectedLimited);
      }
    });
  });

  describe('selection helpers', () => {
    it('quickselect and the heap agree with a sort on random and heavily tied data', () => {
      for (const [n, quantum] of [
        [1000, 0],
        [5000, 0.5],
        [3000, 2],
      ] as const) {
        const data = randomLogits(n, n + Math.round(quantum * 10), 3, quantum);
        const sorted = Array.from(data).sort((a, b) => b - a);
        for (const k of [1, 2, 17, 100, n - 1, n]) {
          const kth = sorted[k - 1]!;
          expect(quickselectKthLargest(data.slice(), n, k), `quickselect n=${n} k=${k}`).to.equal(kth);
          const r = heapKthLargest(data, n, k, new Float32Array(k));
          expect(r?.value, `heap n=${n} k=${k}`).to.equal(kth);
          expect(r?.greater).to.equal(sorted.filter((v) => v > kth).length);
        }
      }
    });
  });

  describe('expNeg', () => {
    it('matches Math.exp to 1e-11 relative on x <= 0 and underflows to 0', () => {
      const rng = createRng(3);
      let worst = 0;
      for (let i = 0; i < 200000; i++) {
        const x = i < 1000 ? -i * 0.7 : -rng() * (i % 2 ? 50 : 700);
        const e = Math.exp(x);
        if (e > 0) worst = Math.max(worst, Math.abs(expNeg(x) - e) / e);
      }
      expect(worst).to.be.below(1e-11);
      expect(expNeg(0)).to.equal(1);
      expect(expNeg(-0)).to.equal(1);
      expect(expNeg(-800)).to.equal(0);
      expect(expNeg(-Infinity)).to.equal(0);
      expect(expNeg(NaN)).to.equal(0);
    });
  });

  describe('candidate lists', () => {
    it('gatherFinite and maskToCandidates round-trip', () => {
      const logits = Float32Array.from([1, -Infinity, 2, NaN, 3, 4, -Infinity]);
      const buf = new CandidateBuffer();
      const n = gatherFinite(logits, buf);
      expect(Array.from(buf.idx.subarray(0, n))).to.deep.equal([0, 2, 4, 5]);
      expect(Array.from(buf.val.subarray(0, n))).to.deep.equal([1, 2, 3, 4]);
      maskToCandidates(logits, Int32Array.from([2, 5]), 2);
      expect(Array.from(logits)).to.deep.equal([-Infinity, -Infinity, 2, -Infinity, -Infinity, 4, -Infinity]);
    });

    it('Sampler.sample equals running its processors densely and then drawFromLogits', () => {
      const configs: SamplingOptions[] = [
        { temperature: 0.7 },
        { temperature: 0.9, topK: 50 },
        { temperature: 1.2, topP: 0.9 },
        { temperature: 0.8, minP: 0.05 },
        { temperature: 0.8, topK: 40, topP: 0.8, minP: 0.1, repetitionPenalty: 1.3, repetitionWindow: 64 },
        { temperature: 1, topK: 6000, topP: 0.95 },
      ];
      for (const [ci, cfg] of configs.entries()) {
        for (const quantum of [0, 0.5]) {
          const base = randomLogits(20000, 100 + ci, 2, quantum);
          base[5] = -Infinity;
          const s = new Sampler({ ...cfg, seed: 1000 + ci });
          const ref = new Sampler({ ...cfg, seed: 1000 + ci });
          const rng = createRng(1000 + ci);
          const buf = new CandidateBuffer();
          const fast: number[] = [];
          const slow: number[] = [];
          for (let step = 0; step < 60; step++) {
            fast.push(s.sample(base.slice(), { generated: fast }));
            const row = base.slice();
            for (const p of ref.processors) p.apply(row, { generated: slow });
            slow.push(drawFromLogits(row, rng, buf));
          }
          expect(fast, `${JSON.stringify(cfg)} q=${quantum}`).to.deep.equal(slow);
        }
      }
    });
  });

  describe('greedy', () => {
    it('temperature 0 (default) picks the max whatever the seed, with no RNG draw', () => {
      const logits = Float32Array.from([0.5, 2.25, -1, 2.2499, 0]);
      for (const seed of [1, 2, 3]) {
        expect(new Sampler({ seed }).sample(logits.slice(), CTX)).to.equal(1);
        expect(new Sampler({ seed, temperature: 0, topP: 0.5, topK: 3 }).sample(logits.slice(), CTX)).to.equal(1);
      }
      expect(new Sampler({}).processors).to.have.length(0);
      expect(new Sampler({}).greedy).to.equal(true);
    });

    it('topK = 1 is greedy even with a temperature', () => {
      const s = new Sampler({ temperature: 5, topK: 1, seed: 9 });
      expect(s.greedy).to.equal(true);
      const logits = Float32Array.from([0, 0.1, 0.2, 0.15]);
      for (let i = 0; i < 50; i++) expect(s.sample(logits.slice(), CTX)).to.equal(2);
    });

    it('a temperature too small to scale the logits in float32 (below 1e-5, as vLLM) is greedy, not the first overflowed id', () => {
      const logits = Float32Array.from([0.5, 3, -1, 7, 2]);
      for (const temperature of [1e-40, 1e-30, 1e-6]) {
        const s = new Sampler({ temperature, seed: 4 });
        expect(s.greedy, String(temperature)).to.equal(true);
        expect(s.sample(logits.slice(), CTX)).to.equal(3);
      }
      expect(new Sampler({ temperature: 1e-5, seed: 4 }).greedy).to.equal(false);
    });

    it('throws when every token is excluded', () => {
      const dead = Float32Array.from([-Infinity, -Infinity, NaN]);
      expect(() => new Sampler({}).sample(dead.slice(), CTX)).to.throw(NoCandidatesError);
      expect(() => new Sampler({ temperature: 1, seed: 1 }).sample(dead.slice(), CTX)).to.throw(NoCandidatesError);
    });
  });

  describe('repetition penalty', () => {
    it('changes the argmax for a seen positive logit (divided)', () => {
      const logits = Float32Array.from([2.0, 1.8, 0.5, -1]);
      expect(new Sampler({}).sample(logits.slice(), { generated: [2] })).to.equal(0);
      // 2.0 / 1.5 = 1.33 < 1.8
      expect(new Sampler({ repetitionPenalty: 1.5 }).sample(logits.slice(), { generated: [0] })).to.equal(1);
    });

    it('changes the argmax for a seen negative logit (multiplied), via the prompt', () => {
      const logits = Float32Array.from([-5, -1.0, -1.2, -3]);
      expect(new Sampler({}).sample(logits.slice(), { generated: [] })).to.equal(1);
      // -1.0 * 1.5 = -1.5 < -1.2
      expect(new Sampler({ repetitionPenalty: 1.5 }).sample(logits.slice(), { generated: [], prompt: [1] })).to.equal(2);
    });

    it('penalizes each distinct id once, only within the window, and ignores out-of-range ids', () => {
      const p = new RepetitionPenaltyProcessor(2, 3);
      const logits = Float32Array.from([4, -4, 6, 8, 0]);
      // prompt + generated = [3, 0, 0 | 1, 1, 1]; window 3 → ids {1}
      p.apply(logits, { prompt: [3, 0, 0], generated: [1, 1, 1] });
      expect(Array.from(logits)).to.deep.equal([4, -8, 6, 8, 0]);
      const q = new RepetitionPenaltyProcessor(2);
      const l2 = Float32Array.from([4, -4, 6, 8, 0]);
      q.apply(l2, { prompt: [3, 0, 0, 99, -1], generated: [1, 1, 4, 4, 3] });
      expect(Array.from(l2)).to.deep.equal([2, -8, 6, 4, 0]);
      // the window spans the prompt/generated boundary
      const r = new RepetitionPenaltyProcessor(2, 2);
      const l3 = Float32Array.from([4, -4, 6, 8, 0]);
      r.apply(l3, { prompt: [2, 3], generated: [0] });
      expect(Array.from(l3)).to.deep.equal([2, -4, 6, 4, 0]);
    });

    it('is the only processor in greedy mode and is skipped when unset/1/window 0', () => {
      expect(new Sampler({ repetitionPenalty: 1.3, topK: 5, topP: 0.9 }).processors.map((p) => p.name)).to.deep.equal([
        'repetition-penalty',
      ]);
      expect(new Sampler({ repetitionPenalty: 1 }).processors).to.have.length(0);
      expect(new Sampler({ repetitionPenalty: 1.3, repetitionWindow: 0 }).processors).to.have.length(0);
    });
  });

  describe('logit bias and OpenAI penalties', () => {
    it('the bias adds to its ids, skipping ids past the row, and moves the greedy pick both ways', () => {
      const p = new LogitBiasProcessor({ 1: 2.5, 3: -100, 9: 50 });
      const logits = Float32Array.from([1, 1, 1, 1]);
      p.apply(logits);
      expect(Array.from(logits)).to.deep.equal([1, 3.5, 1, -99]);
      const row = Float32Array.from([3, 2, 1]);
      expect(new Sampler({ logitBias: { 0: -100 } }).sample(row.slice(), CTX)).to.equal(1);
      expect(new Sampler({ logitBias: { 2: 100 } }).sample(row.slice(), CTX)).to.equal(2);
      expect(new Sampler({ logitBias: {} }).processors).to.have.length(0);
    });

    it('frequency and presence penalties take c·f + p from each generated token (prompt not counted), on every call', () => {
      const p = new FrequencyPresencePenaltyProcessor(0.5, 0.25);
      const ctx = { prompt: [0, 0, 0], generated: [2, 1, 2, 2, 7, -1] };
      for (let call = 0; call < 2; call++) {
        // the scratch counts are cleared as they are applied: a second call computes the same
        const logits = Float32Array.from([1, 1, 1, 1]);
        p.apply(logits, ctx);
        expect(Array.from(logits)).to.deep.equal([1, 1 - 0.5 - 0.25, 1 - 1.5 - 0.25, 1]);
      }
      // negative values favour what was generated
      const q = Float32Array.from([1, 1.25]);
      new FrequencyPresencePenaltyProcessor(0, -0.5).apply(q, { generated: [0] });
      expect(Array.from(q)).to.deep.equal([1.5, 1.25]);
      // greedy: a repeated favourite gives way
      expect(new Sampler({ frequencyPenalty: 0.3 }).sample(Float32Array.from([2, 1.5]), { generated: [0, 0] })).to.equal(1);
      expect(new Sampler({ presencePenalty: 0.3 }).sample(Float32Array.from([2, 1.5]), { generated: [0, 0] })).to.equal(0);
    });

    it("checks bias ids against the vocabulary, and a prompt's repeats in a call draw from seed + repeat", () => {
      expect(() => checkLogitBiasIds({ 4: 1 }, 5)).to.not.throw();
      expect(() => checkLogitBiasIds({ 5: 1 }, 5)).to.throw(SamplingOptionsError, /token 5, outside the model's vocabulary of 5/);
      expect(samplingForRow({ seed: 9, topK: 3 }, 0)).to.deep.equal({ seed: 9, topK: 3 });
      expect(samplingForRow({ seed: 9, topK: 3 }, 2)).to.deep.equal({ seed: 11, topK: 3 });
      expect(samplingForRow({ seed: Number.MAX_SAFE_INTEGER }, 1).seed).to.equal(Number.MAX_SAFE_INTEGER - 1);
      expect(samplingForRow({ topK: 3 }, 4)).to.deep.equal({ topK: 3 });
    });
  });

  describe('chain', () => {
    it('builds the fixed order and skips unset options', () => {
      const names = (o: SamplingOptions) => new Sampler(o).processors.map((p) => p.name);
      expect(
        names({ repetitionPenalty: 1.1, temperature: 0.7, topK: 40, topP: 0.9, minP: 0.05, seed: 1 }),
      ).to.deep.equal(['repetition-penalty', 'temperature', 'top-k', 'top-p', 'min-p']);
      expect(names({ presencePenalty: 0.5, logitBias: { 1: 2 }, repetitionPenalty: 1.1, temperature: 0.5 })).to.deep.equal([
        'logit-bias',
        'repetition-penalty',
        'frequency-presence-penalty',
        'temperature',
      ]);
      expect(names({ frequencyPenalty: 0, presencePenalty: 0 })).to.deep.equal([]);
      expect(names({ temperature: 0.7, minP: 0.05 })).to.deep.equal(['temperature', 'min-p']);
      expect(names({ temperature: 1 })).to.deep.equal([]);
      expect(names({ temperature: 1, topK: 0, topP: 1, minP: 0 })).to.deep.equal([]);
    });
  });

  describe('temperature', () => {
    const probs = [0.5, 0.3, 0.15, 0.05];
    const base = logitsOf(probs);
    const N = 20000;
    // chi-square critical value, 3 degrees of freedom, p = 0.001
    const CRIT = 16.27;

    it('T = 1 reproduces the softmax distribution', () => {
      const c = counts({ temperature: 1, seed: 11 }, base, N);
      expect(chiSquare(c, probs)).to.be.below(CRIT);
    });

    it('T = 0.5 sharpens to p^2 and T = 2 flattens to sqrt(p)', () => {
      const sharp = normalize(probs.map((p) => p ** 2));
      const flat = normalize(probs.map((p) => Math.sqrt(p)));
      const cs = counts({ temperature: 0.5, seed: 12 }, base, N);
      const cf = counts({ temperature: 2, seed: 13 }, base, N);
      expect(chiSquare(cs, sharp)).to.be.below(CRIT);
      expect(chiSquare(cf, flat)).to.be.below(CRIT);
      // and the test can tell them apart
      expect(chiSquare(cs, probs)).to.be.above(100);
      expect(chiSquare(cf, probs)).to.be.above(100);
      expect(cs[0]!).to.be.above(N * 0.6);
      expect(cf[3]!).to.be.above(N * 0.08);
    });
  });

  describe('top-k', () => {
    it('never returns a token outside the k best, and every one of them appears', () => {
      const base = randomLogits(1000, 5, 0.3);
      const best = new Set(sortedIndices(base).slice(0, 5));
      const c = counts({ temperature: 1, topK: 5, seed: 21 }, base, 5000);
      c.forEach((n, i) => {
        if (n > 0) expect(best.has(i), `token ${i} drawn outside top-5`).to.equal(true);
      });
      for (const i of best) expect(c[i]!).to.be.above(0);
    });

    it('keeps exactly k tokens (ties toward the lower index) on both the heap and quickselect paths', () => {
      for (const [n, k, quantum] of [
        [32000, 40, 0],
        [32000, 40, 1],
        [32000, 6000, 0],
        [32000, 6000, 0.5],
        [10, 3, 0],
      ] as const) {
        const logits = randomLogits(n, n + k + Math.round(quantum * 10), 3, quantum);
        logits[7] = -Infinity;
        const expected = sortedIndices(logits)
          .slice(0, k)
          .sort((a, b) => a - b);
        new TopKProcessor(k).apply(logits);
        expect(keptSet(logits), `n=${n} k=${k} q=${quantum}`).to.deep.equal(expected);
      }
    });

    it('the compact filter and the fused gather keep the same set as the dense pass', () => {
      for (const k of [1, 40, 6000]) {
        const logits = randomLogits(20000, k, 2, 0.5);
        logits[11] = -Infinity;
        const dense = logits.slice();
        const p = new TopKProcessor(k);
        p.apply(dense);
        const expected = keptSet(dense);
        const buf = new CandidateBuffer();
        const n = p.gather(logits, buf);
        expect(Array.from(buf.idx.subarray(0, n)), `gather k=${k}`).to.deep.equal(expected);
        const all = gatherFinite(logits, buf);
        const m = p.filter(buf.idx, buf.val, all);
        expect(Array.from(buf.idx.subarray(0, m)), `filter k=${k}`).to.deep.equal(expected);
        expect(Array.from(buf.val.subarray(0, m))).to.deep.equal(expected.map((i) => logits[i]));
      }
    });

    it('leaves logits alone when at most k tokens are eligible', () => {
      const logits = Float32Array.from([1, -Infinity, 2, -Infinity, 3]);
      new TopKProcessor(3).apply(logits);
      expect(Array.from(logits)).to.deep.equal([1, -Infinity, 2, -Infinity, 3]);
    });
  });

  describe('top-p', () => {
    const probs = [0.05, 0.4, 0.1, 0.3, 0.15];
    const base = logitsOf(probs);

    it('keeps exactly the nucleus on a constructed distribution', () => {
      // sorted: 0.4 (1), 0.3 (3), 0.15 (4), 0.1 (2), 0.05 (0)
      const cases: [number, number[]][] = [
        [0.3, [1]],
        [0.65, [1, 3]],
        [0.8, [1, 3, 4]],
        [0.9, [1, 2, 3, 4]],
        [0.99, [0, 1, 2, 3, 4]],
      ];
      for (const [p, expected] of cases) {
        const l = base.slice();
        new TopPProcessor(p).apply(l);
        expect(keptSet(l), `p=${p}`).to.deep.equal(expected);
      }
    });

    it('draws only from the nucleus, every member appears, in renormalized proportion', () => {
      const N = 20000;
      const c = counts({ temperature: 1, topP: 0.8, seed: 31 }, base, N);
      expect(c[0]).to.equal(0);
      expect(c[2]).to.equal(0);
      for (const i of [1, 3, 4]) expect(c[i]!).to.be.above(0);
      const expected = normalize(probs.map((p, i) => ([1, 3, 4].includes(i) ? p : 0)));
      expect(chiSquare(c, expected)).to.be.below(13.82); // df = 2, p = 0.001
    });

    it('always keeps at least one token', () => {
      const l = logitsOf([0.9, 0.05, 0.05]);
      new TopPProcessor(1e-9).apply(l);
      expect(keptSet(l)).to.deep.equal([0]);
    });

    it('matches a full-sort reference on large vocabularies, ties included', () => {
      for (const [n, scale, quantum] of [
        [50000, 3, 0],
        [50000, 1, 0],
        [32000, 3, 0.25],
        [32000, 0, 0], // all equal
        [2000, 40, 0], // very peaked: tail bucket
      ] as const) {
        for (const p of [0.1, 0.5, 0.9, 0.95]) {
          const logits = randomLogits(n, n + Math.round(p * 100) + scale, scale, quantum);
          logits[3] = -Infinity;
          const expected = referenceTopP(logits, p);
          new TopPProcessor(p).apply(logits);
          expect(keptSet(logits), `n=${n} scale=${scale} q=${quantum} p=${p}`).to.deep.equal(expected);
        }
      }
    });

    it('composes after top-k (sorts only the survivors)', () => {
      const logits = randomLogits(32000, 77, 3);
      const ref = logits.slice();
      new TopKProcessor(50).apply(ref);
      const expected = referenceTopP(ref, 0.7);
      new TopKProcessor(50).apply(logits);
      new TopPProcessor(0.7).apply(logits);
      expect(keptSet(logits)).to.deep.equal(expected);
      expect(expected.length).to.be.within(1, 50);
    });
  });

  describe('min-p', () => {
    it('drops exactly the tokens below minP * maxProb', () => {
      const probs = [0.5, 0.2, 0.05, 0.25];
      const l = logitsOf(probs);
      new MinPProcessor(0.3).apply(l); // cutoff 0.15
      expect(keptSet(l)).to.deep.equal([0, 1, 3]);
      const l2 = logitsOf(probs);
      new MinPProcessor(0.45).apply(l2); // cutoff 0.225
      expect(keptSet(l2)).to.deep.equal([0, 3]);
    });

    it('never draws below the cutoff, and draws all above it', () => {
      const probs = [0.5, 0.2, 0.05, 0.25];
      const c = counts({ temperature: 1, minP: 0.3, seed: 41 }, logitsOf(probs), 5000);
      expect(c[2]).to.equal(0);
      for (const i of [0, 1, 3]) expect(c[i]!).to.be.above(0);
    });
  });

  describe('rng and seeds', () => {
    it('createRng is uniform in [0, 1) and reproducible', () => {
      const a = createRng(123);
      const b = createRng(123);
      let sum = 0;
      const bins = new Array<number>(10).fill(0);
      let mismatches = 0;
      let outOfRange = 0;
      for (let i = 0; i < 100000; i++) {
        const x = a();
        if (x !== b()) mismatches++;
        if (!(x >= 0 && x < 1)) outOfRange++;
        sum += x;
        bins[Math.floor(x * 10)]!++;
      }
      expect(mismatches).to.equal(0);
      expect(outOfRange).to.equal(0);
      expect(sum / 100000).to.be.closeTo(0.5, 0.01);
      expect(chiSquare(bins, new Array(10).fill(0.1))).to.be.below(27.88); // df 9, p = 0.001
      const seq = (s: number) => Array.from({ length: 8 }, createRng(s));
      expect(seq(0)).to.not.deep.equal(seq(1));
      expect(seq(1)).to.not.deep.equal(seq(2 ** 32 + 1)); // high bits matter
      expect(seq(-1)).to.not.deep.equal(seq(1));
      expect(() => createRng(1.5)).to.throw(RangeError);
    });

    it('same seed → same token sequence, different seed → different', () => {
      const base = randomLogits(5000, 3, 1);
      const run = (seed?: number) => {
        const s = new Sampler({ temperature: 1, topK: 100, topP: 0.95, seed });
        const out: number[] = [];
        for (let i = 0; i < 200; i++) out.push(s.sample(base.slice(), { generated: out }));
        return { out, seed: s.seed };
      };
      expect(run(7).out).to.deep.equal(run(7).out);
      expect(run(7).out).to.not.deep.equal(run(8).out);
      // an unseeded sampler exposes its random seed, which replays the run
      const r = run();
      expect(Number.isSafeInteger(r.seed)).to.equal(true);
      expect(run(r.seed).out).to.deep.equal(r.out);
    });
  });

  describe('exclusion', () => {
    it('-Infinity entries are never drawn', () => {
      const base = new Float32Array(1000).fill(-Infinity);
      const live = [3, 500, 999];
      for (const i of live) base[i] = 0;
      base[0] = NaN;
      const c = counts({ temperature: 3, seed: 51 }, base, 6000);
      c.forEach((n, i) => {
        if (!live.includes(i)) expect(n, `token ${i}`).to.equal(0);
      });
      for (const i of live) expect(c[i]!).to.be.above(1500);
    });

    it('drawFromLogits handles the degenerate cases', () => {
      const rng = createRng(1);
      expect(drawFromLogits(Float32Array.from([-Infinity, -Infinity]), rng)).to.equal(-1);
      expect(drawFromLogits(Float32Array.from([-Infinity, 4, -Infinity]), rng)).to.equal(1);
      expect(drawFromLogits(Float32Array.from([1, Infinity, 3, Infinity]), rng)).to.equal(1);
      // a huge spread must not overflow: max is subtracted
      expect(drawFromLogits(Float32Array.from([1e30, -1e30, 1e30 - 1e24]), rng)).to.equal(0);
    });
  });

  describe('validateSamplingOptions', () => {
    const bad: [SamplingOptions | Record<string, unknown>, RegExp][] = [
      [{ temperature: -0.1 }, /temperature/],
      [{ temperature: Infinity }, /temperature/],
      [{ temperature: NaN }, /temperature/],
      [{ topP: 0 }, /topP/],
      [{ topP: 1.01 }, /topP/],
      [{ topP: -0.5 }, /topP/],
      [{ topK: -1 }, /topK/],
      [{ topK: 2.5 }, /topK/],
      [{ minP: 1 }, /minP/],
      [{ minP: -0.01 }, /minP/],
      [{ repetitionPenalty: 0 }, /repetitionPenalty/],
      [{ repetitionPenalty: -1.2 }, /repetitionPenalty/],
      [{ repetitionWindow: -1 }, /repetitionWindow/],
      [{ repetitionWindow: 1.5 }, /repetitionWindow/],
      [{ seed: 0.5 }, /seed/],
      [{ temperature: '0.7' }, /temperature/],
      [{ frequencyPenalty: Infinity }, /frequencyPenalty/],
      [{ presencePenalty: NaN }, /presencePenalty/],
      [{ logitBias: [1, 2] }, /logitBias/],
      [{ logitBias: { '-1': 2 } }, /logitBias/],
      [{ logitBias: { '01': 2 } }, /logitBias/],
      [{ logitBias: { 3: Infinity } }, /logitBias/],
      [{ logitBias: { 3: '2' } }, /logitBias/],
    ];
    for (const [o, re] of bad) {
      it(`rejects ${JSON.stringify(o, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v))}`, () => {
        let err: unknown;
        try {
          validateSamplingOptions(o);
        } catch (e) {
          err = e;
        }
        expect(err).to.be.instanceOf(SamplingOptionsError);
        expect((err as Error).message).to.match(re);
        expect((err as SamplingOptionsError).option).to.equal(re.source);
        expect(() => new Sampler(o as SamplingOptions)).to.throw(SamplingOptionsError, re);
      });
    }

    it('accepts valid options, the boundaries included, and drops unknown keys', () => {
      const o = { temperature: 0, topK: 0, topP: 1, minP: 0, repetitionPenalty: 1, repetitionWindow: 0, frequencyPenalty: -2, presencePenalty: 0, logitBias: { '7': -100 }, seed: -5, maxTokens: 9 };
      expect(validateSamplingOptions(o)).to.deep.equal({
        logitBias: { 7: -100 },
        frequencyPenalty: -2,
        presencePenalty: 0,
        temperature: 0,
        topK: 0,
        topP: 1,
        minP: 0,
        repetitionPenalty: 1,
        repetitionWindow: 0,
        seed: -5,
      });
      expect(validateSamplingOptions(undefined)).to.deep.equal({});
      expect(validateSamplingOptions({ topP: undefined })).to.deep.equal({});
      expect(() => validateSamplingOptions(42)).to.throw(SamplingOptionsError);
    });
  });
});
