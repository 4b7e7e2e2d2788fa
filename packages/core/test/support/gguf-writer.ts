/**
 * A minimal GGUF writer for tests: files with every metadata value type, any tensor type (the caller
 * supplies the bytes), the failure cases, and copies of existing files with edited metadata and tensors.
 */
import { writeFile } from 'node:fs/promises';
import { GgufValueType, withGguf, type GgufMetadataEntry, type GgufValue } from '../../src/gguf/reader.js';

/** A metadata value as the writer takes it: its GGUF type and value. */
export type WValue =
  | { t: 'u8' | 'i8' | 'u16' | 'i16' | 'u32' | 'i32' | 'f32' | 'f64'; v: number }
  | { t: 'u64' | 'i64'; v: bigint }
  | { t: 'bool'; v: boolean }
  | { t: 'str'; v: string }
  | { t: 'arr'; item: GgufValueType; v: WValue[] };

/** A tensor as the writer takes it: ggml dims (innermost first), ggml type number and the raw bytes. */
export interface WTensor {
  name: string;
  dims: number[];
  type: number;
  data: Uint8Array;
}

/** An append-only byte buffer. */
export class Bytes {
  private parts: Buffer[] = [];
  length = 0;
  push(b: Buffer): void {
    this.parts.push(b);
    this.length += b.length;
  }
  u32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    this.push(b);
  }
  u64(v: number | bigint): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    this.push(b);
  }
  str(s: string): void {
    const b = Buffer.from(s, 'utf8');
    this.u64(b.length);
    this.push(b);
  }
  concat(): Buffer {
    return Buffer.concat(this.parts);
  }
}

const TYPE_OF: Record<string, GgufValueType> = {
  u8: GgufValueType.UINT8,
  i8: GgufValueType.INT8,
  u16: GgufValueType.UINT16,
  i16: GgufValueType.INT16,
  u32: GgufValueType.UINT32,
  i32: GgufValueType.INT32,
  f32: GgufValueType.FLOAT32,
  f64: GgufValueType.FLOAT64,
  u64: GgufValueType.UINT64,
  i64: GgufValueType.INT64,
  bool: GgufValueType.BOOL,
  str: GgufValueType.STRING,
  arr: GgufValueType.ARRAY,
};

/** Appends one metadata value (without its type tag). */
export function writeValue(out: Bytes, w: WValue): void {
  const b = Buffer.alloc(8);
  switch (w.t) {
    case 'u8':
      b.writeUInt8(w.v);
      return out.push(b.subarray(0, 1));
    case 'i8':
      b.writeInt8(w.v);
      return out.push(b.subarray(0, 1));
    case 'u16':
      b.writeUInt16LE(w.v);
      return out.push(b.subarray(0, 2));
    case 'i16':
      b.writeInt16LE(w.v);
      return out.push(b.subarray(0, 2));
    case 'u32':
      b.writeUInt32LE(w.v);
      return out.push(b.subarray(0, 4));
    case 'i32':
      b.writeInt32LE(w.v);
      return out.push(b.subarray(0, 4));
    case 'f32':
      b.writeFloatLE(w.v);
      return out.push(b.subarray(0, 4));
    case 'f64':
      b.writeDoubleLE(w.v);
      return out.push(b);
    case 'u64':
      b.writeBigUInt64LE(w.v);
      return out.push(b);
    case 'i64':
      b.writeBigInt64LE(w.v);
      return out.push(b);
    case 'bool':
      return out.push(Buffer.from([w.v ? 1 : 0]));
    case 'str':
      return out.str(w.v);
    case 'arr':
      out.u32(w.item);
      out.u64(w.v.length);
      for (const x of w.v) writeValue(out, x);
      return;
  }
}

/** A whole GGUF file in memory: header, metadata, tensor infos, aligned tensor data. */
export function makeGguf(kv: Record<string, WValue>, tensors: WTensor[] = [], { version = 3, alignment = 32 } = {}): Buffer {
  const out = new Bytes();
  out.push(Buffer.from('GGUF', 'ascii'));
  out.u32(version);
  out.u64(tensors.length);
  out.u64(Object.keys(kv).length);
  for (const [k, v] of Object.entries(kv)) {
    out.str(k);
    out.u32(TYPE_OF[v.t]!);
    writeValue(out, v);
  }
  let offset = 0;
  const offsets: number[] = [];
  for (const t of tensors) {
    out.str(t.name);
    out.u32(t.dims.length);
    for (const d of t.dims) out.u64(d);
    out.u32(t.type);
    out.u64(offset);
    offsets.push(offset);
    offset = Math.ceil((offset + t.data.length) / alignment) * alignment;
  }
  out.push(Buffer.alloc((alignment - (out.length % alignment)) % alignment));
  const dataStart = out.length;
  tensors.forEach((t, i) => {
    out.push(Buffer.alloc(offsets[i]! - (out.length - dataStart)));
    out.push(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  });
  return out.concat();
}

/** float32 → float16 bits, round to nearest (ties may differ from IEEE; fine for tests). */
export function f16Bits(x: number): number {
  if (x === 0) return Object.is(x, -0) ? 0x8000 : 0;
  if (x === Infinity) return 0x7c00;
  if (x === -Infinity) return 0xfc00;
  const sign = x < 0 ? 0x8000 : 0;
  const a = Math.abs(x);
  const e = Math.floor(Math.log2(a));
  if (e < -14) return sign | Math.round(a / 2 ** -24); // subnormal
  const frac = Math.round((a / 2 ** e - 1) * 1024);
  return sign | (((e + 15) << 10) + frac); // a rounded-up mantissa carries into the exponent
}

/** Re-encodes a parsed metadata entry for the writer. */
export function toW(type: GgufValueType, value: GgufValue, itemType?: GgufValueType): WValue {
  const names: Record<number, WValue['t']> = {
    [GgufValueType.UINT8]: 'u8',
    [GgufValueType.INT8]: 'i8',
    [GgufValueType.UINT16]: 'u16',
    [GgufValueType.INT16]: 'i16',
    [GgufValueType.UINT32]: 'u32',
    [GgufValueType.INT32]: 'i32',
    [GgufValueType.FLOAT32]: 'f32',
    [GgufValueType.FLOAT64]: 'f64',
    [GgufValueType.UINT64]: 'u64',
    [GgufValueType.INT64]: 'i64',
    [GgufValueType.BOOL]: 'bool',
    [GgufValueType.STRING]: 'str',
  };
  if (type === GgufValueType.ARRAY) {
    return { t: 'arr', item: itemType!, v: (value as GgufValue[]).map((x) => toW(itemType!, x)) };
  }
  const t = names[type]!;
  if (t === 'u64' || t === 'i64') return { t, v: BigInt(value as number | bigint) };
  return { t, v: value } as WValue;
}

/** A tensor of {@link rewriteGguf}: float32 values plus the ggml type to store them as. */
export interface EditableTensor {
  dims: number[];
  data: Float32Array;
  /** ggml type number: 0 (F32) and 1 (F16) are encoded here, others by the `encode` hook. */
  type: number;
}

/** Encodes float32 values (row-major, rows of `dims[0]`) as one ggml type; undefined when it does not know the type. */
export type TensorEncoder = (data: Float32Array, type: number, dims: number[], name: string) => Uint8Array | undefined;

/** Metadata entries as `makeGguf` takes them. */
export function metadataToW(meta: Map<string, GgufMetadataEntry>): Record<string, WValue> {
  const kv: Record<string, WValue> = {};
  for (const [k, e] of meta) kv[k] = toW(e.type, e.value, e.itemType);
  return kv;
}

/** Encodes F32 and F16 tensors; other types go through `encode`. */
export function encodeTensor(name: string, t: EditableTensor, encode?: TensorEncoder): Uint8Array {
  if (t.type === 0) return new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  if (t.type === 1) return new Uint8Array(Uint16Array.from(t.data, f16Bits).buffer);
  const bytes = encode?.(t.data, t.type, t.dims, name);
  if (!bytes) throw new Error(`gguf-writer: no encoder for tensor type ${t.type} (tensor "${name}")`);
  return bytes;
}

/**
 * Writes a copy of a GGUF with edited metadata and tensors (each tensor read as float32, stored as
 * `type`; quantized types need `encode`).
 */
export async function rewriteGguf(
  src: string,
  dst: string,
  edit: (meta: Map<string, GgufMetadataEntry>, tensors: Map<string, EditableTensor>) => void,
  encode?: TensorEncoder,
): Promise<void> {
  await withGguf(src, async (f) => {
    const meta = new Map(f.metadata);
    const tensors = new Map<string, EditableTensor>();
    for (const t of f.tensors) tensors.set(t.name, { dims: t.dims, data: await f.readTensor(t.name), type: 0 });
    edit(meta, tensors);
    const out: WTensor[] = [...tensors].map(([name, t]) => ({ name, dims: t.dims, type: t.type, data: encodeTensor(name, t, encode) }));
    await writeFile(dst, makeGguf(metadataToW(meta), out));
  });
}

/**
 * Splits a GGUF into `count` shards as llama.cpp's gguf-split writes them: `<prefix>-00001-of-0000N.gguf` and on, the
 * tensors in order spread over them (their bytes as stored), all metadata in the first with `split.no`,
 * `split.count` and `split.tensors.count`, the others with their `split.*` keys only. Returns the shards' paths.
 */
export async function splitGguf(src: string, prefix: string, count: number): Promise<string[]> {
  return withGguf(src, async (f) => {
    const paths = Array.from({ length: count }, (_, i) => `${prefix}-${String(i + 1).padStart(5, '0')}-of-${String(count).padStart(5, '0')}.gguf`);
    const per = Math.ceil(f.tensors.length / count);
    const split = (i: number): Record<string, WValue> => ({
      'split.no': { t: 'u16', v: i },
      'split.count': { t: 'u16', v: count },
      'split.tensors.count': { t: 'i32', v: f.tensors.length },
    });
    for (let i = 0; i < count; i++) {
      const tensors: WTensor[] = [];
      for (const t of f.tensors.slice(i * per, (i + 1) * per)) tensors.push({ name: t.name, dims: t.dims, type: t.type, data: await f.readTensorBytes(t.name) });
      await writeFile(paths[i]!, makeGguf(i === 0 ? { ...metadataToW(f.metadata), ...split(0) } : split(i), tensors));
    }
    return paths;
  });
}
