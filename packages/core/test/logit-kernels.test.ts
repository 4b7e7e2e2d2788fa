/**
 * The WebAssembly kernels over logits: their bytes are the .wat beside them as wabt assembles it; the fusion computes
 * what float32 arithmetic (each operation rounded) gives, and the argmax what a plain loop finds, at every length
 * (the SIMD loops and their tails) and for the values logits take (-Infinity under a mask, NaN, ties).
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import wabtInit from 'wabt';
import { combineInto, maxIndexOf, MODULE_BASE64, weightedInto } from '../src/sampling/logit-kernels.js';
import { maxIndexIn } from '../src/sampling/select.js';
import { accumulateLogits, combineWithBackbone } from '../src/compose/fusion.js';

const f = Math.fround;

/** Deterministic values in [-8, 8) with a -Infinity and a NaN placed in longer arrays. */
function values(n: number, seed: number): Float32Array {
  let s = seed;
  const out = Float32Array.from({ length: n }, () => ((s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 16 - 8);
  if (n > 7) [out[3], out[n - 2]] = [-Infinity, NaN];
  return out;
}

/** Equal element by element, NaN equal to NaN. */
function expectSame(actual: Float32Array, expected: ArrayLike<number>): void {
  expect(actual.length).to.equal(expected.length);
  for (let i = 0; i < actual.length; i++) if (!Object.is(actual[i], expected[i])) expect.fail(`element ${i}: ${actual[i]} where ${expected[i]} was expected`);
}

describe('logit kernels (WebAssembly SIMD)', () => {
  it('are the bytes wabt assembles from logit-kernels.wat', async () => {
    const wabt = await wabtInit();
    const text = readFileSync(fileURLToPath(new URL('../src/sampling/logit-kernels.wat', import.meta.url)), 'utf8');
    const assembled = wabt.parseWat('logit-kernels.wat', text, { simd: true }).toBinary({}).buffer;
    expect(Buffer.from(assembled).toString('base64')).to.equal(MODULE_BASE64);
  });

  for (const n of [0, 1, 3, 4, 5, 31, 32000, 151_936]) {
    it(`combine and weight ${n} values as float32 arithmetic does`, () => {
      const [a, b, acc] = [values(n, 1), values(n, 2), values(n, 3)];
      const out = new Float32Array(n);
      combineInto(out, a, b, 0.75, 0.5);
      expectSame(out, Array.from(a, (x, i) => f(f(f(x - 0.75) + b[i]!) * 0.5)));
      const first = new Float32Array(n);
      weightedInto(first, a, 0.3, 1.25, false);
      expectSame(first, Array.from(a, (x) => f(f(0.3) * f(x - 1.25))));
      const added = acc.slice();
      weightedInto(added, b, -2, 0, true);
      expectSame(added, Array.from(acc, (x, i) => f(x + f(-2 * b[i]!))));
    });
  }

  it('refuses inputs shorter than the output (the module would read an earlier call\'s values as theirs)', () => {
    expect(() => combineInto(new Float32Array(8), values(4, 1), values(8, 2), 0, 1)).to.throw(RangeError);
    expect(() => combineInto(new Float32Array(8), values(8, 1), values(7, 2), 0, 1)).to.throw(RangeError);
    expect(() => weightedInto(new Float32Array(8), values(4, 1), 1, 0, false)).to.throw(RangeError);
  });

  it('reads only the first out.length values of longer inputs, and writes nothing past out', () => {
    const [a, b] = [values(64, 4), values(64, 5)];
    const backing = new Float32Array(12).fill(7);
    combineInto(backing.subarray(2, 10), a, b, 0, 1);
    expectSame(backing.subarray(2, 10), Array.from(a.subarray(0, 8), (x, i) => f(x + b[i]!)));
    expectSame(backing.subarray(0, 2), [7, 7]);
    expectSame(backing.subarray(10), [7, 7]);
  });

  it('fuse rows of padded logits with one part, several parts (summed first) and a scale, each operation rounded to float32', () => {
    const [rows, vocab, stride] = [2, 37, 40];
    const base = values(rows * stride, 6);
    const parts = [values(rows * vocab, 7), values(rows * vocab, 8)];
    // (several parts are summed first, then joined to the backbone's term as one part is)
    const expected = (r: number, v: number, ps: Float32Array[], scale: number) => {
      const z = base[r * stride + v]!;
      if (ps.length === 0) return f(z * scale);
      const sum = ps.slice(1).reduce((acc, p) => f(acc + p[r * vocab + v]!), ps[0]![r * vocab + v]!);
      return f(f(z + sum) * scale);
    };
    for (const [ps, scale] of [[parts.slice(0, 1), 1], [parts, 1], [parts, 0.25], [[], 0.5]] as const) {
      const out = combineWithBackbone(new Float32Array(rows * vocab), { logits: base, stride }, ps, rows, vocab, 'logits', scale);
      expectSame(out, Array.from({ length: rows * vocab }, (_, i) => expected(Math.floor(i / vocab), i % vocab, [...ps], scale)));
    }
    // (a row's weighted logits: the first written, the next added, a zero weight clearing a first row)
    const acc = new Float32Array(rows * vocab).fill(9);
    accumulateLogits(acc, { logits: base, stride, weight: 0 }, rows, vocab, 'logits', true);
    expectSame(acc, new Float32Array(rows * vocab));
    accumulateLogits(acc, { logits: base, stride, weight: 0.5 }, rows, vocab, 'logits', true);
    accumulateLogits(acc, { logits: base, stride, weight: 2 }, rows, vocab, 'logits', false);
    expectSame(acc, Array.from({ length: rows * vocab }, (_, i) => {
      const z = base[Math.floor(i / vocab) * stride + (i % vocab)]!;
      return f(f(0.5 * z) + f(2 * z));
    }));
  });

  /** The first index of the largest value, NaN never chosen, -1 when nothing is above -Infinity. */
  const plainArgmax = (x: Float32Array) => {
    let [best, index] = [-Infinity, -1];
    for (let i = 0; i < x.length; i++) if (x[i]! > best) [best, index] = [x[i]!, i];
    return index;
  };

  for (const n of [0, 1, 15, 16, 17, 1023, 1024, 32000, 151_937]) {
    it(`finds the first largest of ${n} values, ties and NaN and -Infinity among them`, () => {
      const x = values(n, 9);
      expect(maxIndexOf(x)).to.equal(plainArgmax(x));
      if (n < 2) return;
      // a tie of the largest in another lane and later: the first one wins; then a NaN in its place is passed over
      const top = plainArgmax(x);
      x[n - 1] = x[top]!;
      if (top > 0) x[top - 1] = x[top]!;
      expect(maxIndexOf(x)).to.equal(plainArgmax(x));
      x[plainArgmax(x)] = NaN;
      expect(maxIndexOf(x)).to.equal(plainArgmax(x));
      expect(maxIndexIn(x, 1, n)).to.equal(plainArgmax(x.subarray(1)) + 1);
    });
  }

  it('answers -1 for a row that is all -Infinity and NaN, as maxIndexIn does', () => {
    const x = new Float32Array(2048).fill(-Infinity);
    x[100] = NaN;
    expect(maxIndexOf(x)).to.equal(-1);
    expect(maxIndexIn(x, 0, x.length)).to.equal(-1);
    x[2047] = -1e30;
    expect(maxIndexOf(x)).to.equal(2047);
  });
});
