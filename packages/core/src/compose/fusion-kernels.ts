/**
 * The fusion loops in WebAssembly SIMD, four float32 lanes at a time. A JavaScript loop over Float32Arrays widens
 * every element to float64 and back: on a 32k vocabulary it took ~75 µs a row, on the decode step's critical path
 * each token, where these take ~20 µs with the copies in and out of the module's memory. Every operation rounds to
 * float32 (the JavaScript loops rounded once per stored value), so sums may differ from them in the last bit.
 * The bytes are those of `fusion-kernels.wat` beside this file, as wabt assembles it (its test checks that).
 */

export const MODULE_BASE64 =
  'AGFzbQEAAAABEwJgBn9/f399fQBgBn9/f319fwADAwIAAQUDAQABBx8DBm1lbW9yeQIAB2NvbWJpbmUAAAh3ZWlnaHRlZAABCscCApMBAgN/AnsgBP0TIQkgBf0TIQogA0ECdCEIIAhBcHEhBwJAA0AgBiAHTw0BIAAgBmogASAGav0ABAAgCf3lASACIAZq/QAEAP3kASAK/eYB/QsEACAGQRBqIQYMAAsLAkADQCAGIAhPDQEgACAGaiABIAZqKgIAIASTIAIgBmoqAgCSIAWUOAIAIAZBBGohBgwACwsLrwEDA38DewF9IAT9EyEJIAP9EyEKIAJBAnQhCCAIQXBxIQcCQANAIAYgB08NASAKIAEgBmr9AAQAIAn95QH95gEhCyAFBEAgACAGav0ABAAgC/3kASELCyAAIAZqIAv9CwQAIAZBEGohBgwACwsCQANAIAYgCE8NASADIAEgBmoqAgAgBJOUIQwgBQRAIAAgBmoqAgAgDJIhDAsgACAGaiAMOAIAIAZBBGohBgwACwsL';

/** Bytes in one float in the module's memory. */
const F32 = Float32Array.BYTES_PER_ELEMENT;

/** What this file uses of WebAssembly's global (the project compiles without the DOM library that types it). */
interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object) => { exports: unknown };
}
const { WebAssembly: wasm } = globalThis as unknown as { WebAssembly: WasmApi };

interface KernelExports {
  memory: WasmMemory;
  /** out = (a - shift + b) · scale over n floats (byte offsets). */
  combine(out: number, a: number, b: number, n: number, shift: number, scale: number): void;
  /** out = weight · (x - shift), or out += that when add is 1 (byte offsets). */
  weighted(out: number, x: number, n: number, weight: number, shift: number, add: number): void;
}

/** This thread's instance (each worker imports its own) and a view of its memory. */
let kernels: KernelExports | undefined;
let floats = new Float32Array(0);

/** The kernels with room for three arrays of `n` floats: the slots 0, n and 2n. */
function withRoom(n: number): KernelExports {
  kernels ??= new wasm.Instance(new wasm.Module(Buffer.from(MODULE_BASE64, 'base64'))).exports as unknown as KernelExports;
  const missing = 3 * n * F32 - kernels.memory.buffer.byteLength;
  if (missing > 0) kernels.memory.grow(Math.ceil(missing / 65536));
  // (growing detaches the old buffer: the view is made again)
  if (floats.buffer !== kernels.memory.buffer) floats = new Float32Array(kernels.memory.buffer);
  return kernels;
}

/** `out = (a - shift + b) · scale`, element by element over `out.length` floats (`a` and `b` at least as long). */
export function combineInto(out: Float32Array, a: Float32Array, b: Float32Array, shift: number, scale: number): void {
  const n = out.length;
  const k = withRoom(n);
  floats.set(a.subarray(0, n), 0);
  floats.set(b.subarray(0, n), n);
  k.combine(2 * n * F32, 0, n * F32, n, shift, scale);
  out.set(floats.subarray(2 * n, 3 * n));
}

/** `acc = weight · (x - shift)`, or `acc += weight · (x - shift)` with `add`, over `acc.length` floats. */
export function weightedInto(acc: Float32Array, x: Float32Array, weight: number, shift: number, add: boolean): void {
  const n = acc.length;
  const k = withRoom(n);
  floats.set(x.subarray(0, n), 0);
  if (add) floats.set(acc, 2 * n);
  k.weighted(2 * n * F32, 0, n, weight, shift, add ? 1 : 0);
  acc.set(floats.subarray(2 * n, 3 * n));
}
