/**
 * fp16 graphs where a global Float16Array exists (Node 24 on): onnxruntime-common then hands fp16 data out as one,
 * which onnxruntime-node 1.31's binding reads as 0 bytes when fed back (microsoft/onnxruntime#32323) and which reads as
 * numbers where the runtime reads fp16 bits. A child process of this Node runs a DecoderSession on the main thread
 * with the global: the real one where there is one; on Node 20 and 22 a stand-in that is no typed array to the binding
 * and whose elements read as numbers, as a Float16Array's do.
 */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { LlamaBuildOptions } from '../src/onnx/llama-builder.js';
import { builtModel, smallConfig } from './support/models.js';
import { float16Scenario } from './support/float16-scenario.js';

/** Installed before onnxruntime-common first looks for a Float16Array (its first tensor). */
const standIn = `if (typeof Float16Array !== 'function') {
  const value = (h) => {
    const sign = h & 0x8000 ? -1 : 1, exp = (h >> 10) & 31, frac = h & 1023;
    return exp === 0 ? sign * frac * 2 ** -24 : exp === 31 ? (frac ? NaN : sign * Infinity) : sign * (1 + frac / 1024) * 2 ** (exp - 15);
  };
  globalThis.Float16Array = class Float16Array {
    static BYTES_PER_ELEMENT = 2;
    static from() { throw new Error('not in this stand-in'); }
    constructor(buffer, byteOffset, length) {
      const bits = new Uint16Array(buffer, byteOffset, length);
      return new Proxy(bits, {
        get: (t, k) => typeof k === 'string' && /^\\d+$/.test(k) ? value(t[k])
          : k === 'subarray' ? (a, b) => { const s = t.subarray(a, b); return new Float16Array(s.buffer, s.byteOffset, s.length); }
          : typeof t[k] === 'function' ? t[k].bind(t) : t[k],
        getPrototypeOf: () => Float16Array.prototype,
      });
    }
  };
}`;

/** The scenario's logits in a child process with a global Float16Array. */
async function withFloat16Array(path: string, rowsAlone: boolean): Promise<number[][]> {
  const scenario = new URL('./support/float16-scenario.ts', import.meta.url).href;
  const script = `${standIn}
const { float16Scenario } = await import(${JSON.stringify(scenario)});
process.stdout.write(JSON.stringify(await float16Scenario(${JSON.stringify(path)}, ${rowsAlone})));`;
  const args = ['--import', 'tsx', '--conditions=@reasonplug/source', '--input-type=module', '-e', script];
  const { stdout } = await promisify(execFile)(process.execPath, args, { maxBuffer: 64 * 2 ** 20 });
  return JSON.parse(stdout) as number[][];
}

describe('fp16 tensors where a global Float16Array exists', function () {
  this.timeout(120_000);

  const fp16: LlamaBuildOptions = { dtype: 'float16', inputsEmbeds: true };
  const cases: [string, LlamaBuildOptions, boolean][] = [
    ['fp16 weights, caches, logits and inputs_embeds', fp16, false],
    ['the same, rows run one at a time and their outputs joined', fp16, true],
    ['an fp16 cache of new keys and values written into room', { kvDtype: 'float16', kvOutput: 'new' }, false],
  ];
  cases.forEach(([label, options, rowsAlone]) => {
    it(`${label}: the same logits as with raw bits`, async () => {
      const path = await builtModel(`float16-array-${options.kvOutput ?? 'joined'}`, smallConfig, options);
      const got = await withFloat16Array(path, rowsAlone);
      const expected = await float16Scenario(path, rowsAlone);
      expect(got).to.deep.equal(expected);
      expect(expected.flat().every(Number.isFinite), 'finite logits').to.equal(true);
    });
  });
});
