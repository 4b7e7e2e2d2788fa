/**
 * The WebAssembly fusion kernels: their bytes are the .wat beside them as wabt assembles it, and they compute what
 * float32 arithmetic (each operation rounded) gives, at every length (the four-lane loop and its tail) and for the
 * values logits take (-Infinity under a mask, NaN).
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import wabtInit from 'wabt';
import { combineInto, MODULE_BASE64, weightedInto } from '../src/compose/fusion-kernels.js';
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

describe('fusion kernels (WebAssembly SIMD)', () => {
  it('are the bytes wabt assembles from fusion-kernels.wat', async () => {
    const wabt = await wabtInit();
    const text = readFileSync(fileURLToPath(new URL('../src/compose/fusion-kernels.wat', import.meta.url)), 'utf8');
    const assembled = wabt.parseWat('fusion-kernels.wat', text, { simd: true }).toBinary({}).buffer;
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

  it('reads only the first out.length values of longer inputs, and writes nothing past out', () => {
    const [a, b] = [values(64, 4), values(64, 5)];
    const backing = new Float32Array(12).fill(7);
    combineInto(backing.subarray(2, 10), a, b, 0, 1);
    expectSame(backing.subarray(2, 10), Array.from(a.subarray(0, 8), (x, i) => f(x + b[i]!)));
    expectSame(backing.subarray(0, 2), [7, 7]);
    expectSame(backing.subarray(10), [7, 7]);
  });

  it('fuse rows of padded logits with one part, several parts and a scale, as each pass rounded to float32', () => {
    const [rows, vocab, stride] = [2, 37, 40];
    const base = values(rows * stride, 6);
    const parts = [values(rows * vocab, 7), values(rows * vocab, 8)];
    const expected = (r: number, v: number, ps: Float32Array[], scale: number) => {
      let z = base[r * stride + v]!;
      if (ps.length === 1) return f(f(z + ps[0]![r * vocab + v]!) * scale);
      for (const p of ps) z = f(z + p[r * vocab + v]!);
      return scale === 1 ? z : f(z * scale);
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
});
