/**
 * Loops over whole rows of logits in WebAssembly SIMD, four float32 lanes at a time: UniR's fusion and the greedy
 * argmax, both on the decode step's critical path every token. A JavaScript loop over Float32Arrays widens every
 * element to float64 and back: on a 32k vocabulary fusing took ~75 µs a row and the argmax ~28 µs, where these take
 * ~20 and ~11 µs with the copies into the module's memory. The fusion rounds every operation to float32 (the
 * JavaScript loops rounded once per stored value), so sums may differ from them in the last bit.
 * The bytes are those of `logit-kernels.wat` beside this file, as wabt assembles it (its test checks that).
 */

export const MODULE_BASE64 =
  'AGFzbQEAAAABGQNgBn9/f399fQBgBn9/f319fwBgA39/fwADBAMAAQIFAwEAAQcpBAZtZW1vcnkCAAdjb21iaW5lAAAId2VpZ2h0ZWQAAQdsYW5lbWF4AAIKnwUDkwECA38CeyAE/RMhCSAF/RMhCiADQQJ0IQggCEFwcSEHAkADQCAGIAdPDQEgACAGaiABIAZq/QAEACAJ/eUBIAIgBmr9AAQA/eQBIAr95gH9CwQAIAZBEGohBgwACwsCQANAIAYgCE8NASAAIAZqIAEgBmoqAgAgBJMgAiAGaioCAJIgBZQ4AgAgBkEEaiEGDAALCwuvAQMDfwN7AX0gBP0TIQkgA/0TIQogAkECdCEIIAhBcHEhBwJAA0AgBiAHTw0BIAogASAGav0ABAAgCf3lAf3mASELIAUEQCAAIAZq/QAEACAL/eQBIQsLIAAgBmogC/0LBAAgBkEQaiEGDAALCwJAA0AgBiAITw0BIAMgASAGaioCACAEk5QhDCAFBEAgACAGaioCACAMkiEMCyAAIAZqIAw4AgAgBkEEaiEGDAALCwvWAgIDfwt7QwAAgP/9EyEGIAYhByAGIQggBiEJQX/9ESEKIAohCyAKIQwgCiEN/QwAAAAAAQAAAAIAAAADAAAAIQ4gAkEGdCEEAkADQCADIARPDQEgASADaiEFIAX9AAQAIQ8gDyAG/UQhECAPIAYgEP1SIQYgDiAKIBD9UiEKIAX9AAQQIQ8gDyAH/UQhECAPIAcgEP1SIQcgDkEE/RH9rgEgCyAQ/VIhCyAF/QAEICEPIA8gCP1EIRAgDyAIIBD9UiEIIA5BCP0R/a4BIAwgEP1SIQwgBf0ABDAhDyAPIAn9RCEQIA8gCSAQ/VIhCSAOQQz9Ef2uASANIBD9UiENIA5BEP0R/a4BIQ4gA0HAAGohAwwACwsgACAG/QsEACAAIAf9CwQQIAAgCP0LBCAgACAJ/QsEMCAAIAr9CwRAIAAgC/0LBFAgACAM/QsEYCAAIA39CwRwCw==';

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
  /** Each of 16 lanes' largest value of x[0 .. 16 · blocks) and its first index, 16 f32 then 16 i32 at out. */
  lanemax(out: number, x: number, blocks: number): void;
}

/** This thread's instance (each worker imports its own) and a view of its memory. */
let kernels: KernelExports | undefined;
let floats = new Float32Array(0);
let ints = new Int32Array(0);

/** The kernels with room for three arrays of `n` floats (the slots 0, n and 2n) or `n` + 32 floats. */
function withRoom(n: number): KernelExports {
  kernels ??= new wasm.Instance(new wasm.Module(Buffer.from(MODULE_BASE64, 'base64'))).exports as unknown as KernelExports;
  const missing = Math.max(3 * n, n + 32) * F32 - kernels.memory.buffer.byteLength;
  if (missing > 0) kernels.memory.grow(Math.ceil(missing / 65536));
  // (growing detaches the old buffer: the view is made again)
  if (floats.buffer !== kernels.memory.buffer) [floats, ints] = [new Float32Array(kernels.memory.buffer), new Int32Array(kernels.memory.buffer)];
  return kernels;
}

/** `out = (a - shift + b) · scale`, element by element over `out.length` floats (`a` and `b` at least as long). */
export function combineInto(out: Float32Array, a: Float32Array, b: Float32Array, shift: number, scale: number): void {
  const n = out.length;
  // (a shorter input would leave an earlier call's values in the module's memory to be read as its own)
  if (a.length < n || b.length < n) throw new RangeError(`combineInto: inputs of ${a.length} and ${b.length} values for ${n} outputs`);
  const k = withRoom(n);
  floats.set(a.subarray(0, n), 0);
  floats.set(b.subarray(0, n), n);
  k.combine(2 * n * F32, 0, n * F32, n, shift, scale);
  out.set(floats.subarray(2 * n, 3 * n));
}

/** `acc = weight · (x - shift)`, or `acc += weight · (x - shift)` with `add`, over `acc.length` floats. */
export function weightedInto(acc: Float32Array, x: Float32Array, weight: number, shift: number, add: boolean): void {
  const n = acc.length;
  if (x.length < n) throw new RangeError(`weightedInto: ${x.length} values for ${n} outputs`);
  const k = withRoom(n);
  floats.set(x.subarray(0, n), 0);
  if (add) floats.set(acc, 2 * n);
  k.weighted(2 * n * F32, 0, n, weight, shift, add ? 1 : 0);
  acc.set(floats.subarray(2 * n, 3 * n));
}

/**
 * Index of the largest of `x`, the first one on ties, NaN never chosen; -1 when none is above -Infinity (as
 * `maxIndexIn` over the whole array).
 */
export function maxIndexOf(x: Float32Array): number {
  const n = x.length;
  const blocks = n >> 4;
  const k = withRoom(n);
  // (the lanes' answers in floats 0-31, the values from float 32 on)
  floats.set(x.subarray(0, blocks << 4), 32);
  k.lanemax(0, 32 * F32, blocks);
  let best = -Infinity;
  let index = -1;
  for (let lane = 0; lane < 16; lane++) {
    const [value, at] = [floats[lane]!, ints[16 + lane]!];
    if (at >= 0 && (value > best || (value === best && at < index))) [best, index] = [value, at];
  }
  // (the tail's indices come after every lane's: only a larger value takes over)
  for (let i = blocks << 4; i < n; i++) if (x[i]! > best) [best, index] = [x[i]!, i];
  return index;
}
