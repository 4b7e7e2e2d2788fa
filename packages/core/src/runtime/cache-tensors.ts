/**
 * The tensors of a decoder's cache, by past input name: each attention layer's keys and values
 * (`[rows, kvHeads, length, headDim]`, growing by a position per token) and, in a hybrid model, each recurrent
 * layer's state (`[rows, ...shape]`, the same size whatever the length: a short convolution's last inputs, an SSM's
 * state). Everything that makes, copies or ships a row of a cache goes through here, so both kinds move alike.
 */
import * as ort from 'onnxruntime-node';
import { releaseTensors } from './release-tensors.js';
import type { DecoderSignature, FloatType, StateNames } from '../onnx/signature.js';

/** The values of a cache tensor: fp32, or fp16 as raw bits. */
export type CacheData = Float32Array | Uint16Array;

const stateIndex = new WeakMap<DecoderSignature, Map<string, StateNames>>();

/** The recurrent state fed through past input `name`, or undefined for keys and values. */
export function stateOf(sig: DecoderSignature, name: string): StateNames | undefined {
  let index = stateIndex.get(sig);
  if (!index) stateIndex.set(sig, (index = new Map(sig.states.map((s) => [s.past, s]))));
  return index.get(name);
}

/** Every past input: each attention layer's key and value, then the recurrent states. */
export function pastNames(sig: DecoderSignature): string[] {
  return [...sig.kv.flatMap((kv) => [kv.pastKey, kv.pastValue]), ...sig.states.map((s) => s.past)];
}

/** Output name → past input name, for taking a run's presents as the next past. */
export function presentToPast(sig: DecoderSignature): [string, string][] {
  return [...sig.kv.flatMap((kv): [string, string][] => [[kv.presentKey, kv.pastKey], [kv.presentValue, kv.pastValue]]), ...sig.states.map((s): [string, string] => [s.present, s.past])];
}

function typeOf(sig: DecoderSignature, name: string): FloatType {
  return stateOf(sig, name)?.type ?? sig.kvType;
}

/** A run's outputs of keys and values (present or new) and recurrent states, by the past input each feeds. */
export function byPastName(sig: DecoderSignature, out: Record<string, ort.Tensor>): Record<string, ort.Tensor> {
  return Object.fromEntries(presentToPast(sig).map(([name, past]) => [past, out[name]!]));
}

/** Values one row of a past input holds at `length` positions (a state's whole block, whatever the length). */
export function rowElements(sig: DecoderSignature, name: string, length: number): number {
  const state = stateOf(sig, name);
  return state ? state.shape.reduce((a, b) => a * b, 1) : sig.kvHeads * length * sig.headDim;
}

/** Dims of a past input of `rows` rows at `length` positions. */
export function pastDims(sig: DecoderSignature, name: string, rows: number, length: number): number[] {
  const state = stateOf(sig, name);
  return state ? [rows, ...state.shape] : [rows, sig.kvHeads, length, sig.headDim];
}

/** Zeroed values of a past input's type. */
export function allocate(sig: DecoderSignature, name: string, elements: number): CacheData {
  return typeOf(sig, name) === 'float16' ? new Uint16Array(elements) : new Float32Array(elements);
}

/** A tensor of past input `name` over `data`. */
export function pastTensor(sig: DecoderSignature, name: string, data: CacheData, rows: number, length: number): ort.Tensor {
  return tensorOver(typeOf(sig, name), data, pastDims(sig, name, rows, length));
}

/**
 * A float tensor whose `data` is `data` itself, fp16 as raw bits. Where a global Float16Array exists (Node 24 on),
 * onnxruntime-common wraps fp16 data in a Float16Array over the same bytes, which onnxruntime-node 1.31's binding
 * reads as 0 bytes when it is fed ("not enough space: expected N, got 0", microsoft/onnxruntime#32323), and whose
 * elements read as numbers where this code reads bits: the array given, an own `data` over that wrapper, is what both
 * read instead.
 */
function tensorOver(type: FloatType, data: CacheData, dims: readonly number[]): ort.Tensor {
  const t = new ort.Tensor(type, data, dims);
  if (t.data !== data) Object.defineProperty(t, 'data', { value: data });
  return t;
}

/** `t` with fp16 data as raw bits: itself, or (its data a Float16Array) a tensor over a Uint16Array of the same bytes. */
export function withBits(t: ort.Tensor): ort.Tensor {
  if (t.type !== 'float16' || t.data instanceof Uint16Array) return t;
  const { buffer, byteOffset, byteLength } = t.data as ArrayBufferView;
  return tensorOver('float16', new Uint16Array(buffer, byteOffset, byteLength / 2), t.dims);
}

/** `tensors` (feeds or a run's outputs, by name) with fp16 data as raw bits (see {@link withBits}). */
export function allWithBits(tensors: Record<string, ort.Tensor>): Record<string, ort.Tensor> {
  // (without Float16Array, onnxruntime-common keeps float16 data as Uint16Array bits: nothing to convert, every step)
  if (typeof (globalThis as { Float16Array?: unknown }).Float16Array !== 'function') return tensors;
  return Object.fromEntries(Object.entries(tensors).map(([name, t]) => [name, withBits(t)]));
}

/** The cache of `rows` rows before their first token: no keys or values yet, every state zero. */
export function emptyPast(sig: DecoderSignature, rows: number): Record<string, ort.Tensor> {
  const past: Record<string, ort.Tensor> = {};
  for (const name of pastNames(sig)) past[name] = pastTensor(sig, name, allocate(sig, name, rows * rowElements(sig, name, 0)), rows, 0);
  return past;
}

/** Bytes of the recurrent states of one row (0 for a plain decoder). */
export function stateBytesPerRow(sig: DecoderSignature): number {
  return sig.states.reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1) * (s.type === 'float16' ? 2 : 4), 0);
}

/** Where a row's positions lie in a cache tensor: its row, the tensor's width, the slot of its first position, its length. */
export interface RowPlace {
  row: number;
  width: number;
  first: number;
  length: number;
}

/**
 * Copies one row of past input `name` from `src` (at `from`) into `out` (at `to`, whose `length` must be
 * `from.length`); keys and values position by position for each head, a state as its whole block.
 */
export function copyRow(sig: DecoderSignature, name: string, src: CacheData, from: RowPlace, out: CacheData, to: RowPlace): void {
  if (stateOf(sig, name)) {
    const n = rowElements(sig, name, 0);
    out.set(src.subarray(from.row * n, (from.row + 1) * n), to.row * n);
    return;
  }
  const H = sig.kvHeads;
  const D = sig.headDim;
  for (let h = 0; h < H; h++) {
    const start = ((from.row * H + h) * from.width + from.first) * D;
    out.set(src.subarray(start, start + from.length * D), ((to.row * H + h) * to.width + to.first) * D);
  }
}

/** A single row's cache tensors over compact per-input arrays (as they cross threads). */
export function rowTensors(sig: DecoderSignature, arrays: Record<string, CacheData>, length: number): Record<string, ort.Tensor> {
  const past: Record<string, ort.Tensor> = {};
  for (const [name, data] of Object.entries(arrays)) past[name] = pastTensor(sig, name, data, 1, length);
  return past;
}

/**
 * Past input `name` of `rows` rows at `length` positions with `fresh` (the run's `seq` new positions, `[rows, kvHeads,
 * seq, headDim]`) appended: the present a graph that returns only new keys and values (`kvAppends`) leaves its caller
 * to make, for callers that keep whole caches.
 */
export function appendPositions(sig: DecoderSignature, name: string, past: CacheData, length: number, fresh: CacheData, rows: number, seq: number): ort.Tensor {
  const total = length + seq;
  const out = widened(sig, name, past, rows, length, total);
  for (let row = 0; row < rows; row++) copyRow(sig, name, fresh, { row, width: seq, first: 0, length: seq }, out, { row, width: total, first: length, length: seq });
  return pastTensor(sig, name, out, rows, total);
}

/** Past input `name` of `rows` rows at `length` positions copied into `slots` slots a row, its positions first (a state as it is). */
export function widened(sig: DecoderSignature, name: string, data: CacheData, rows: number, length: number, slots: number): CacheData {
  const out = allocate(sig, name, rows * rowElements(sig, name, slots));
  for (let row = 0; row < rows; row++) copyRow(sig, name, data, { row, width: length, first: 0, length }, out, { row, width: slots, first: 0, length });
  return out;
}

/**
 * The presents of a run by past input name: with a graph that returns only new keys and values, each appended to
 * `past` (`length` positions, no room beyond them); recurrent states and joined presents as the run returned them.
 */
export function presentsOf(sig: DecoderSignature, out: Record<string, ort.Tensor>, past: Record<string, ort.Tensor>, length: number, rows: number): Record<string, ort.Tensor> {
  const present = byPastName(sig, out);
  if (!sig.kvAppends) return present;
  for (const [name, t] of Object.entries(present)) {
    if (!stateOf(sig, name)) present[name] = appendPositions(sig, name, past[name]!.data as CacheData, length, t.data as CacheData, rows, Number(t.dims[2]));
  }
  return present;
}

/**
 * Positions of room a cache keeps past its longest row where the graph returns only new keys and values
 * (`kvAppends`): each step writes its keys and values into the room in place, and the cache is copied into a larger
 * buffer once every this many steps. The room is masked out, but its scores are computed: a few percent of a long
 * context's attention, where joining the cache anew took a copy of all of it every step.
 */
export const KV_ROOM = 64;

/**
 * Writes a run's output into a cache with room (`kvAppends`), `past` by past input name (`[rows, kvHeads, slots,
 * headDim]`, its own): each row's `seq` new keys and values (`fresh`, `[rows, kvHeads, seq, headDim]` by past input
 * name) into slots `at`…; each recurrent state replaced by its new one (the old one freed).
 */
export function writeStep(sig: DecoderSignature, past: Record<string, ort.Tensor>, fresh: Record<string, ort.Tensor>, rows: number, slots: number, at: number, seq = 1): void {
  for (const name of pastNames(sig)) {
    const values = fresh[name]!;
    if (stateOf(sig, name)) {
      releaseTensors([past[name]!]);
      past[name] = values;
      continue;
    }
    const into = past[name]!.data as CacheData;
    for (let row = 0; row < rows; row++) copyRow(sig, name, values.data as CacheData, { row, width: seq, first: 0, length: seq }, into, { row, width: slots, first: at, length: seq });
  }
}
