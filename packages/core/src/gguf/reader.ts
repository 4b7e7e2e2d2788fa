/**
 * A reader for GGUF files (llama.cpp's model container), versions 2 and 3, little-endian.
 *
 * Only the header (metadata and tensor infos) is parsed up front; tensor data is read on demand (a whole
 * tensor, or a run of its rows, synchronously), straight from the file into the returned `Float32Array` (F32)
 * or through one staging buffer per read (F16, BF16, the block-quantized types of `quant/`), or as raw bytes.
 * The whole file is never held in memory.
 *
 * Layout (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md):
 *   magic "GGUF" · u32 version · u64 tensor_count · u64 kv_count
 *   kv_count × (string key · u32 value_type · value)
 *   tensor_count × (string name · u32 n_dims · n_dims × u64 ne · u32 ggml_type · u64 offset)
 *   padding to `general.alignment` (default 32) · tensor data (offsets relative to here)
 * Strings are u64 length + UTF-8 bytes; arrays are u32 item type + u64 count + items.
 */
import { existsSync, readSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { basename } from 'node:path';
import { BLOCK_TYPES, dequantize } from './quant/index.js';
import { halfTable } from './quant/half.js';

/** Raised for a file this reader cannot use; the message says what was found and what is supported. */
export class GgufError extends Error {
  override name = 'GgufError';
  constructor(
    message: string,
    /** A machine-readable reason. */
    readonly code:
      | 'bad-magic'
      | 'unsupported-version'
      | 'big-endian'
      | 'truncated'
      | 'corrupt'
      | 'unsupported-tensor-type'
      | 'missing-tensor'
      | 'missing-metadata'
      | 'missing-shard'
      | 'unsupported-model',
  ) {
    super(message);
  }
}

/** GGUF metadata value types. */
export enum GgufValueType {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
}

/** ggml tensor element types (the numbering of ggml.h; gaps are removed types). */
export const GGML_TYPE_NAMES: Readonly<Record<number, string>> = {
  0: 'F32',
  1: 'F16',
  2: 'Q4_0',
  3: 'Q4_1',
  6: 'Q5_0',
  7: 'Q5_1',
  8: 'Q8_0',
  9: 'Q8_1',
  10: 'Q2_K',
  11: 'Q3_K',
  12: 'Q4_K',
  13: 'Q5_K',
  14: 'Q6_K',
  15: 'Q8_K',
  16: 'IQ2_XXS',
  17: 'IQ2_XS',
  18: 'IQ3_XXS',
  19: 'IQ1_S',
  20: 'IQ4_NL',
  21: 'IQ3_S',
  22: 'IQ2_S',
  23: 'IQ4_XS',
  24: 'I8',
  25: 'I16',
  26: 'I32',
  27: 'I64',
  28: 'F64',
  29: 'IQ1_M',
  30: 'BF16',
  31: 'Q4_0_4_4',
  32: 'Q4_0_4_8',
  33: 'Q4_0_8_8',
  34: 'TQ1_0',
  35: 'TQ2_0',
  36: 'IQ4_NL_4_4',
  37: 'IQ4_NL_4_8',
  38: 'IQ4_NL_8_8',
  39: 'MXFP4',
};

export const GGML_TYPE_F32 = 0;
export const GGML_TYPE_F16 = 1;
export const GGML_TYPE_BF16 = 30;

/** Element types whose tensors `readTensor` converts to float32 (and the converter takes). */
export const SUPPORTED_TENSOR_TYPES: readonly string[] = ['F32', 'F16', 'BF16', ...[...BLOCK_TYPES.values()].map((t) => t.name)];

/** Bytes per element of the readable types. */
const ELEMENT_SIZE: Readonly<Record<number, number>> = { [GGML_TYPE_F32]: 4, [GGML_TYPE_F16]: 2, [GGML_TYPE_BF16]: 2 };

/** A decoded metadata value. 64-bit integers are numbers when they are safe integers, bigints otherwise. */
export type GgufValue = number | bigint | boolean | string | GgufValue[];

/** One metadata entry with its declared type (and item type for arrays). */
export interface GgufMetadataEntry {
  type: GgufValueType;
  /** For arrays: the type of the items (nested arrays report ARRAY). */
  itemType?: GgufValueType;
  value: GgufValue;
}

/** Where one tensor lives and what it holds. */
export interface GgufTensorInfo {
  name: string;
  /** ggml `ne`: dims[0] is the fastest-varying (innermost) dimension. */
  dims: number[];
  /** Row-major shape (the reverse of `dims`): a tensor with dims [in, out] has shape [out, in]. */
  shape: number[];
  /** ggml type number. */
  type: number;
  /** ggml type name, e.g. "F32", "Q4_K", or "type 99" for unknown ones. */
  typeName: string;
  /** Offset relative to the start of the data section. */
  offset: number;
  /** Absolute offset in the file. */
  fileOffset: number;
  /** Which file of a split GGUF holds the data (0: the first; see {@link GgufFile.shardPaths}). */
  shard?: number;
  /** Number of elements (product of dims). */
  elementCount: number;
  /** Data size in bytes when the type is readable; undefined for other types. */
  byteLength?: number;
  /** True for block-quantized types (`byteLength` counts whole blocks). */
  quantized?: boolean;
}

/** The parsed header of a GGUF file. */
export interface GgufHeader {
  version: number;
  metadata: Map<string, GgufMetadataEntry>;
  tensors: GgufTensorInfo[];
  alignment: number;
  /** Absolute offset of the tensor data section. */
  dataOffset: number;
}

const MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
const SUPPORTED_VERSIONS = [2, 3];
const DEFAULT_ALIGNMENT = 32;

/** Thrown internally when the parser needs more bytes than the current window holds. */
class NeedMore extends Error {}

/** A cursor over one window of the file (starting at file offset 0). */
class Cursor {
  pos = 0;
  private readonly view: DataView;
  private readonly decoder = new TextDecoder('utf-8', { fatal: true });
  constructor(
    private readonly bytes: Uint8Array,
    /** The true size of the file: reading past the window but within this asks for a larger window. */
    private readonly fileSize: number,
    readonly source: string,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  need(n: number, what: string): void {
    if (this.pos + n <= this.bytes.length) return;
    if (this.pos + n <= this.fileSize && this.bytes.length < this.fileSize) throw new NeedMore();
    throw new GgufError(
      `${this.source} is truncated: reading ${what} needs ${n} bytes at offset ${this.pos}, ` +
        `but the file ends at ${this.fileSize} bytes. Re-download or re-export the GGUF file.`,
      'truncated',
    );
  }
  u8(what: string): number {
    this.need(1, what);
    return this.view.getUint8(this.pos++);
  }
  i8(what: string): number {
    this.need(1, what);
    return this.view.getInt8(this.pos++);
  }
  u16(what: string): number {
    this.need(2, what);
    const v = this.view.getUint16(this.pos, true);
    this.pos += 2;
    return v;
  }
  i16(what: string): number {
    this.need(2, what);
    const v = this.view.getInt16(this.pos, true);
    this.pos += 2;
    return v;
  }
  u32(what: string): number {
    this.need(4, what);
    const v = this.view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }
  i32(what: string): number {
    this.need(4, what);
    const v = this.view.getInt32(this.pos, true);
    this.pos += 4;
    return v;
  }
  f32(what: string): number {
    this.need(4, what);
    const v = this.view.getFloat32(this.pos, true);
    this.pos += 4;
    return v;
  }
  f64(what: string): number {
    this.need(8, what);
    const v = this.view.getFloat64(this.pos, true);
    this.pos += 8;
    return v;
  }
  u64(what: string): number | bigint {
    this.need(8, what);
    const v = this.view.getBigUint64(this.pos, true);
    this.pos += 8;
    return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  }
  i64(what: string): number | bigint {
    this.need(8, what);
    const v = this.view.getBigInt64(this.pos, true);
    this.pos += 8;
    return v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(v) : v;
  }
  /**
   * A u64 count of items of at least `minItemBytes` each (string bytes, array items, header entries):
   * absurd values are corruption; values the rest of the file cannot hold mean truncation.
   */
  count(what: string, minItemBytes: number): number {
    const at = this.pos;
    const v = this.u64(what);
    if (typeof v === 'bigint' || v > 2 ** 40) {
      throw new GgufError(`${this.source} is corrupt: ${what} is ${v} at offset ${at}, implausibly large.`, 'corrupt');
    }
    const left = this.fileSize - this.pos;
    if (v * minItemBytes > left) {
      throw new GgufError(
        `${this.source} is truncated or corrupt: ${what} is ${v} at offset ${at} (at least ${v * minItemBytes} bytes), ` +
          `but only ${left} bytes of the file's ${this.fileSize} remain.`,
        'truncated',
      );
    }
    return v;
  }
  /** A u64 offset or dimension. */
  size(what: string, limit: number): number {
    const at = this.pos;
    const v = this.u64(what);
    if (typeof v === 'bigint' || v > limit) {
      throw new GgufError(`${this.source} is corrupt: ${what} is ${v} at offset ${at}, larger than ${limit}.`, 'corrupt');
    }
    return v;
  }
  string(what: string): string {
    const len = this.count(`the length of ${what}`, 1);
    this.need(len, what);
    const start = this.pos;
    this.pos += len;
    try {
      return this.decoder.decode(this.bytes.subarray(start, start + len));
    } catch {
      throw new GgufError(`${this.source} is corrupt: ${what} at offset ${start} is not valid UTF-8.`, 'corrupt');
    }
  }
}

/** Smallest encoding of one value of each type (strings: the u64 length; arrays: item type + count). */
const MIN_VALUE_BYTES: Readonly<Record<number, number>> = {
  [GgufValueType.UINT8]: 1,
  [GgufValueType.INT8]: 1,
  [GgufValueType.UINT16]: 2,
  [GgufValueType.INT16]: 2,
  [GgufValueType.UINT32]: 4,
  [GgufValueType.INT32]: 4,
  [GgufValueType.FLOAT32]: 4,
  [GgufValueType.BOOL]: 1,
  [GgufValueType.STRING]: 8,
  [GgufValueType.ARRAY]: 12,
  [GgufValueType.UINT64]: 8,
  [GgufValueType.INT64]: 8,
  [GgufValueType.FLOAT64]: 8,
};

function readValue(c: Cursor, type: number, what: string, depth = 0): GgufValue {
  switch (type) {
    case GgufValueType.UINT8:
      return c.u8(what);
    case GgufValueType.INT8:
      return c.i8(what);
    case GgufValueType.UINT16:
      return c.u16(what);
    case GgufValueType.INT16:
      return c.i16(what);
    case GgufValueType.UINT32:
      return c.u32(what);
    case GgufValueType.INT32:
      return c.i32(what);
    case GgufValueType.FLOAT32:
      return c.f32(what);
    case GgufValueType.BOOL: {
      const b = c.u8(what);
      if (b > 1) throw new GgufError(`${c.source} is corrupt: ${what} is a bool with byte value ${b} (expected 0 or 1).`, 'corrupt');
      return b === 1;
    }
    case GgufValueType.STRING:
      return c.string(what);
    case GgufValueType.UINT64:
      return c.u64(what);
    case GgufValueType.INT64:
      return c.i64(what);
    case GgufValueType.FLOAT64:
      return c.f64(what);
    case GgufValueType.ARRAY: {
      if (depth > 8) throw new GgufError(`${c.source} is corrupt: ${what} nests arrays more than 8 deep.`, 'corrupt');
      const itemType = c.u32(`the item type of ${what}`);
      const count = c.count(`the length of ${what}`, MIN_VALUE_BYTES[itemType] ?? 1);
      const out: GgufValue[] = [];
      for (let i = 0; i < count; i++) out.push(readValue(c, itemType, `${what}[${i}]`, depth + 1));
      return out;
    }
    default:
      throw new GgufError(
        `${c.source}: ${what} has value type ${type}; GGUF value types are 0..12 (uint8 … float64). The file is corrupt or from a newer GGUF revision.`,
        'corrupt',
      );
  }
}

/** Reads a header's magic, version and counts (refusing what is no GGUF file of a version read here). */
function readPreamble(c: Cursor, bytes: Uint8Array, fileSize: number, source: string): { version: number; tensorCount: number; kvCount: number } {
  if (fileSize < 4) {
    throw new GgufError(`${source} is ${fileSize} bytes long: too short to be a GGUF file (expected the magic "GGUF").`, 'truncated');
  }
  const magic = c.u32('the magic');
  if (magic !== MAGIC) {
    const found = Array.from(bytes.subarray(0, 4), (b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, '0')}`)).join('');
    throw new GgufError(`${source} is not a GGUF file: its first bytes are "${found}", expected the magic "GGUF".`, 'bad-magic');
  }
  const version = c.u32('the version');
  if (!SUPPORTED_VERSIONS.includes(version)) {
    const swapped = ((version & 0xff) << 24) | ((version & 0xff00) << 8) | ((version >>> 8) & 0xff00) | (version >>> 24);
    if (SUPPORTED_VERSIONS.includes(swapped >>> 0)) {
      throw new GgufError(`${source} is a big-endian GGUF (version ${swapped >>> 0}); only little-endian GGUF files are supported.`, 'big-endian');
    }
    throw new GgufError(
      `${source} is GGUF version ${version}; supported versions are ${SUPPORTED_VERSIONS.join(' and ')}` +
        (version === 1 ? ' (version 1 is obsolete: re-convert the model with a current llama.cpp).' : '.'),
      'unsupported-version',
    );
  }
  const tensorCount = c.count('the tensor count', 32); // name length, n_dims, one dim, type, offset
  const kvCount = c.count('the metadata count', 13); // key length, value type, one byte
  return { version, tensorCount, kvCount };
}

/**
 * The value of metadata `key` read from the first bytes of a file of `fileSize` bytes, without the rest of its
 * header (a folder's files are told apart without reading megabytes of vocabulary each); undefined where `bytes` end
 * before the key, or the header has none.
 */
export function metadataAtStart(bytes: Uint8Array, key: string, source: string, fileSize: number): GgufValue | undefined {
  const c = new Cursor(bytes, fileSize, source);
  try {
    const { kvCount } = readPreamble(c, bytes, fileSize, source);
    for (let i = 0; i < kvCount; i++) {
      const name = c.string(`metadata key #${i}`);
      const value = readValue(c, c.u32(`the value type of "${name}"`), `metadata "${name}"`);
      if (name === key) return value;
    }
    return undefined;
  } catch (err) {
    if (err instanceof NeedMore) return undefined;
    throw err;
  }
}

/** Parses the header from the first bytes of a file; throws NeedMore when the window is too short. */
function parseHeaderWindow(bytes: Uint8Array, fileSize: number, source: string): GgufHeader {
  const c = new Cursor(bytes, fileSize, source);
  const { version, tensorCount, kvCount } = readPreamble(c, bytes, fileSize, source);

  const metadata = new Map<string, GgufMetadataEntry>();
  for (let i = 0; i < kvCount; i++) {
    const key = c.string(`metadata key #${i}`);
    const type = c.u32(`the value type of "${key}"`);
    let itemType: GgufValueType | undefined;
    if (type === GgufValueType.ARRAY) {
      c.need(4, `the item type of "${key}"`);
      itemType = new DataView(bytes.buffer, bytes.byteOffset + c.pos, 4).getUint32(0, true);
    }
    const value = readValue(c, type, `metadata "${key}"`);
    // (which of two values would count is the writer's bug, not a choice to make here: llama.cpp refuses it too)
    if (metadata.has(key)) throw new GgufError(`${source} is corrupt: metadata key "${key}" appears twice.`, 'corrupt');
    metadata.set(key, itemType === undefined ? { type, value } : { type, itemType, value });
  }

  let alignment = DEFAULT_ALIGNMENT;
  const alignEntry = metadata.get('general.alignment');
  if (alignEntry) {
    const a = alignEntry.value;
    if (typeof a !== 'number' || !Number.isInteger(a) || a <= 0 || (a & (a - 1)) !== 0) {
      throw new GgufError(`${source} has general.alignment = ${String(a)}; it must be a positive power of two.`, 'corrupt');
    }
    alignment = a;
  }

  const tensors: GgufTensorInfo[] = [];
  const seen = new Set<string>();
  for (let i = 0; i < tensorCount; i++) {
    const name = c.string(`the name of tensor #${i}`);
    if (seen.has(name)) throw new GgufError(`${source} is corrupt: tensor "${name}" appears twice.`, 'corrupt');
    seen.add(name);
    const nDims = c.u32(`the dimension count of tensor "${name}"`);
    if (nDims < 1 || nDims > 4) {
      throw new GgufError(`${source} is corrupt: tensor "${name}" has ${nDims} dimensions (GGUF allows 1 to 4).`, 'corrupt');
    }
    const dims: number[] = [];
    let elementCount = 1;
    for (let d = 0; d < nDims; d++) {
      const ne = c.size(`dimension ${d} of tensor "${name}"`, Number.MAX_SAFE_INTEGER);
      dims.push(ne);
      elementCount *= ne;
    }
    if (!Number.isSafeInteger(elementCount)) {
      throw new GgufError(`${source} is corrupt: tensor "${name}" has dims [${dims.join(', ')}].`, 'corrupt');
    }
    const type = c.u32(`the type of tensor "${name}"`);
    const offset = c.size(`the data offset of tensor "${name}"`, Number.MAX_SAFE_INTEGER);
    if (offset % alignment !== 0) {
      throw new GgufError(
        `${source} is corrupt: tensor "${name}" starts at data offset ${offset}, not a multiple of the alignment ${alignment}.`,
        'corrupt',
      );
    }
    const elSize = ELEMENT_SIZE[type];
    const block = BLOCK_TYPES.get(type);
    if (block && dims[0]! % block.blockElems !== 0) {
      throw new GgufError(
        `${source} is corrupt: tensor "${name}" is ${block.name} with rows of ${dims[0]} elements, not a multiple of its block size ${block.blockElems}.`,
        'corrupt',
      );
    }
    tensors.push({
      name,
      dims,
      shape: [...dims].reverse(),
      type,
      typeName: GGML_TYPE_NAMES[type] ?? `type ${type}`,
      offset,
      fileOffset: 0, // set below once the data offset is known
      elementCount,
      ...(elSize !== undefined ? { byteLength: elementCount * elSize } : {}),
      ...(block ? { byteLength: (elementCount / block.blockElems) * block.blockBytes, quantized: true } : {}),
    });
  }
  checkContiguous(tensors, alignment, source);
  const dataOffset = Math.ceil(c.pos / alignment) * alignment;
  for (const t of tensors) t.fileOffset = dataOffset + t.offset;
  return { version, metadata, tensors, alignment, dataOffset };
}

/**
 * Checks that the tensors' data lie one after another in the order of their infos, each padded to the alignment, as
 * GGUF writers lay them out and llama.cpp requires ("tensor … has offset …, expected …"). Offsets that overlap, alias
 * one tensor's data for another or leave gaps mean a corrupt or hand-edited file; read as given, they convert into a
 * model that writes nonsense, and a small file whose tensors all alias one slot would be read many times over.
 * Tensors after one of a type without a known size are not checked (that type is refused by name when read).
 */
function checkContiguous(tensors: readonly GgufTensorInfo[], alignment: number, source: string): void {
  let expected = 0;
  let previous: GgufTensorInfo | undefined;
  for (const t of tensors) {
    if (t.offset !== expected) {
      // A wrong shape or type shows as the next tensor's offset: name both, with the bytes the earlier one needs.
      const after = previous
        ? ` "${previous.name}" (${previous.typeName} [${previous.dims.join(', ')}]) needs ${previous.byteLength} bytes from offset ${previous.offset}, ` +
          `but the next tensor's data starts ${t.offset - previous.offset} bytes after it: its type or shape disagrees with the data written, or the offsets are damaged.`
        : " The first tensor's data starts the data section.";
      throw new GgufError(`${source} is corrupt: tensor "${t.name}" has data offset ${t.offset}, expected ${expected}.${after}`, 'corrupt');
    }
    if (t.byteLength === undefined) return;
    expected += Math.ceil(t.byteLength / alignment) * alignment;
    previous = t;
  }
}

/** Checks that every readable tensor's data lies inside the file. */
function checkTensorBounds(h: GgufHeader, fileSize: number, source: string): void {
  if (h.tensors.length > 0 && h.dataOffset > fileSize) {
    throw new GgufError(
      `${source} is truncated: its tensor data should start at byte ${h.dataOffset}, but the file is ${fileSize} bytes long.`,
      'truncated',
    );
  }
  for (const t of h.tensors) {
    if (t.byteLength !== undefined && t.fileOffset + t.byteLength > fileSize) {
      throw new GgufError(
        `${source} is truncated: tensor "${t.name}" (${t.typeName} [${t.dims.join(', ')}]) ends at byte ` +
          `${t.fileOffset + t.byteLength}, but the file is ${fileSize} bytes long. Re-download or re-export the GGUF file.`,
        'truncated',
      );
    }
  }
}

/** Parses a GGUF header held in memory (the bytes may hold the whole file or just its start). */
export function parseGgufHeader(bytes: Uint8Array, source = '<bytes>', fileSize = bytes.length): GgufHeader {
  try {
    const h = parseHeaderWindow(bytes, fileSize, source);
    checkTensorBounds(h, fileSize, source);
    return h;
  } catch (err) {
    if (err instanceof NeedMore) {
      throw new GgufError(`${source}: the header extends past the ${bytes.length} bytes given.`, 'truncated');
    }
    throw err;
  }
}

/** Converts raw little-endian tensor bytes of a readable type (F32, F16, BF16, block types) to float32. */
export function tensorBytesToFloat32(bytes: Uint8Array, type: number, elementCount: number): Float32Array {
  const block = BLOCK_TYPES.get(type);
  if (block) {
    const need = (elementCount / block.blockElems) * block.blockBytes;
    if (!Number.isInteger(need)) throw new GgufError(`${elementCount} ${block.name} elements are not whole blocks of ${block.blockElems}.`, 'corrupt');
    if (bytes.length < need) throw new GgufError(`${elementCount} ${block.name} elements need ${need} bytes, got ${bytes.length}.`, 'truncated');
    return dequantize(block, bytes, elementCount);
  }
  const size = ELEMENT_SIZE[type];
  if (size === undefined) {
    throw new GgufError(`tensor type ${GGML_TYPE_NAMES[type] ?? type} cannot be converted; supported: ${SUPPORTED_TENSOR_TYPES.join(', ')}.`, 'unsupported-tensor-type');
  }
  if (bytes.length < elementCount * size) {
    throw new GgufError(`${elementCount} ${GGML_TYPE_NAMES[type]} elements need ${elementCount * size} bytes, got ${bytes.length}.`, 'truncated');
  }
  if (type === GGML_TYPE_F32) {
    const out = new Float32Array(elementCount);
    new Uint8Array(out.buffer).set(bytes.subarray(0, elementCount * 4));
    return out;
  }
  const src = new Uint16Array(elementCount);
  new Uint8Array(src.buffer).set(bytes.subarray(0, elementCount * 2));
  return halfBitsToFloat32(src, type);
}

function halfBitsToFloat32(src: Uint16Array, type: number): Float32Array {
  const out = new Float32Array(src.length);
  if (type === GGML_TYPE_F16) {
    const table = halfTable();
    for (let i = 0; i < src.length; i++) out[i] = table[src[i]!]!;
  } else {
    // bfloat16: the top half of a float32
    const u32 = new Uint32Array(out.buffer);
    for (let i = 0; i < src.length; i++) u32[i] = src[i]! << 16;
  }
  return out;
}

function unsupportedType(t: GgufTensorInfo, source: string): GgufError {
  return new GgufError(
    `${source}: tensor "${t.name}" has type ${t.typeName}, which this reader does not decode; supported types: ` +
      `${SUPPORTED_TENSOR_TYPES.join(', ')}. Re-quantize the model with llama-quantize to one of these (e.g. Q4_K_M).`,
    'unsupported-tensor-type',
  );
}

if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  throw new Error('The GGUF reader assumes a little-endian host.');
}

/** A split GGUF's shard names, as llama.cpp's gguf-split writes them: `<prefix>-00001-of-00003.gguf`. */
const SHARD_NAME = /^(.*)-(\d{5})-of-(\d{5})\.gguf$/i;

/** The path of shard `index` (0-based) of `count` beside the first shard `first`. */
function shardPath(first: string, index: number, count: number): string {
  const m = SHARD_NAME.exec(first)!;
  const n = (x: number) => String(x).padStart(5, '0');
  return `${m[1]}-${n(index + 1)}-of-${n(count)}.gguf`;
}

/**
 * The files a GGUF given by `path` is read from, by name alone (no header read): a split GGUF's first shard and all its
 * siblings where they are there, else `path` itself. `GgufFile.open` checks them against the headers.
 */
export function ggufFiles(path: string): string[] {
  const m = SHARD_NAME.exec(path);
  const count = m ? Number(m[3]) : 1;
  if (!m || Number(m[2]) !== 1 || count <= 1) return [path];
  const paths = Array.from({ length: count }, (_, i) => (i === 0 ? path : shardPath(path, i, count)));
  return paths.every((p) => existsSync(p)) ? paths : [path];
}

/** One file's handle and parsed header, the handle closed again if the header is refused. */
async function openOne(path: string): Promise<{ fh: FileHandle; fileSize: number; header: GgufHeader }> {
  const source = basename(path);
  const fh = await open(path, 'r');
  try {
    const fileSize = (await fh.stat()).size;
    let window = Math.min(fileSize, 1 << 20);
    for (;;) {
      const bytes = new Uint8Array(window);
      const { bytesRead } = await fh.read(bytes, 0, window, 0);
      if (bytesRead !== window) throw new GgufError(`${source}: short read (${bytesRead} of ${window} bytes).`, 'truncated');
      try {
        const header = parseHeaderWindow(bytes, fileSize, source);
        checkTensorBounds(header, fileSize, source);
        return { fh, fileSize, header };
      } catch (err) {
        if (!(err instanceof NeedMore)) throw err;
        window = Math.min(fileSize, window * 4);
      }
    }
  } catch (err) {
    await fh.close();
    throw err;
  }
}

/** A split GGUF's `split.*` key as a whole number, or undefined. */
function splitKey(h: GgufHeader, key: string): number | undefined {
  const v = h.metadata.get(key)?.value;
  return typeof v === 'number' || typeof v === 'bigint' ? Number(v) : undefined;
}

/**
 * An open GGUF file: the parsed header plus on-demand tensor reads. Close it when done. A split GGUF (llama.cpp's
 * gguf-split: `split.count` shards named `…-00001-of-0000N.gguf`, the metadata in the first) opens from its first
 * shard as one file whose tensors come from all of them.
 */
export class GgufFile implements GgufHeader {
  readonly version: number;
  readonly metadata: Map<string, GgufMetadataEntry>;
  readonly tensors: GgufTensorInfo[];
  readonly alignment: number;
  readonly dataOffset: number;
  private readonly byName: Map<string, GgufTensorInfo>;

  private constructor(
    private handles: FileHandle[] | undefined,
    readonly path: string,
    /** The bytes of all its files. */
    readonly fileSize: number,
    header: GgufHeader,
    /** The files it reads: `path` alone, or each shard of a split GGUF in order. */
    readonly shardPaths: readonly string[],
  ) {
    this.version = header.version;
    this.metadata = header.metadata;
    this.tensors = header.tensors;
    this.alignment = header.alignment;
    this.dataOffset = header.dataOffset;
    this.byName = new Map(header.tensors.map((t) => [t.name, t]));
  }

  /** Opens a file (a split GGUF's first shard opens all of them) and parses its header, reading only as many bytes as the header needs. */
  static async open(path: string): Promise<GgufFile> {
    const first = await openOne(path);
    const count = splitKey(first.header, 'split.count') ?? 1;
    if (count <= 1) return new GgufFile([first.fh], path, first.fileSize, first.header, [path]);
    const handles = [first.fh];
    try {
      const source = basename(path);
      const no = splitKey(first.header, 'split.no') ?? 0;
      if (no !== 0 || !SHARD_NAME.test(path)) {
        throw new GgufError(
          `${source} is shard ${no + 1} of a GGUF split into ${count} files; open its first shard, named "<name>-00001-of-${String(count).padStart(5, '0')}.gguf".`,
          'missing-shard',
        );
      }
      const paths = Array.from({ length: count }, (_, i) => (i === 0 ? path : shardPath(path, i, count)));
      const tensors = first.header.tensors.map((t) => ({ ...t, shard: 0 }));
      let size = first.fileSize;
      for (let i = 1; i < count; i++) {
        const at = paths[i]!;
        if (!existsSync(at)) throw new GgufError(`${source} is shard 1 of ${count}, but shard ${i + 1} (${basename(at)}) is missing beside it.`, 'missing-shard');
        const shard = await openOne(at);
        handles.push(shard.fh);
        if (splitKey(shard.header, 'split.no') !== i || splitKey(shard.header, 'split.count') !== count) {
          throw new GgufError(`${basename(at)} is not shard ${i + 1} of ${count} (its split.no / split.count say otherwise).`, 'corrupt');
        }
        tensors.push(...shard.header.tensors.map((t) => ({ ...t, shard: i })));
        size += shard.fileSize;
      }
      const declared = splitKey(first.header, 'split.tensors.count');
      if (declared !== undefined && declared !== tensors.length) {
        throw new GgufError(`${source}: the ${count} shards hold ${tensors.length} tensors, split.tensors.count says ${declared}.`, 'corrupt');
      }
      const names = new Set<string>();
      for (const t of tensors) {
        if (names.has(t.name)) throw new GgufError(`${source}: tensor "${t.name}" is in more than one shard.`, 'corrupt');
        names.add(t.name);
      }
      return new GgufFile(handles, path, size, { ...first.header, tensors }, paths);
    } catch (err) {
      await Promise.all(handles.map((h) => h.close()));
      throw err;
    }
  }

  /** True when the metadata has the key. */
  has(key: string): boolean {
    return this.metadata.has(key);
  }

  /** The value of a metadata key, or undefined. */
  get(key: string): GgufValue | undefined {
    return this.metadata.get(key)?.value;
  }

  /** A numeric metadata value (any integer or float type); throws a GgufError when present with another type. */
  getNumber(key: string): number | undefined {
    const v = this.get(key);
    if (v === undefined) return undefined;
    if (typeof v === 'number') return v;
    if (typeof v === 'bigint') return Number(v);
    throw new GgufError(`${basename(this.path)}: metadata "${key}" is ${describe(v)}, expected a number.`, 'corrupt');
  }

  /** A string metadata value; throws a GgufError when present with another type. */
  getString(key: string): string | undefined {
    const v = this.get(key);
    if (v === undefined || typeof v === 'string') return v;
    throw new GgufError(`${basename(this.path)}: metadata "${key}" is ${describe(v)}, expected a string.`, 'corrupt');
  }

  /** A bool metadata value; throws a GgufError when present with another type. */
  getBool(key: string): boolean | undefined {
    const v = this.get(key);
    if (v === undefined || typeof v === 'boolean') return v;
    throw new GgufError(`${basename(this.path)}: metadata "${key}" is ${describe(v)}, expected a bool.`, 'corrupt');
  }

  /** Metadata as a plain object (arrays included), e.g. for tokenizer conversion. */
  metadataObject(): Record<string, GgufValue> {
    return Object.fromEntries([...this.metadata].map(([k, e]) => [k, e.value]));
  }

  /** The info of a tensor, or undefined. */
  tensorInfo(name: string): GgufTensorInfo | undefined {
    return this.byName.get(name);
  }

  /** Reads one tensor as float32 (F32 as stored, others converted or dequantized), row-major with shape `info.shape`. */
  async readTensor(name: string): Promise<Float32Array> {
    const { t, fh, source } = this.readable(name);
    if (t.quantized) return dequantize(BLOCK_TYPES.get(t.type)!, await this.readTensorBytes(name), t.elementCount);
    const out = new Float32Array(t.elementCount);
    if (t.type === GGML_TYPE_F32) {
      await readFully(fh, new Uint8Array(out.buffer), t.fileOffset, source, t.name);
      return out;
    }
    const half = new Uint16Array(t.elementCount);
    await readFully(fh, new Uint8Array(half.buffer), t.fileOffset, source, t.name);
    return halfBitsToFloat32(half, t.type);
  }

  /**
   * Rows [from, from + count) of one tensor (a row: its `dims[0]` values; all rows from `from` by default) as float32,
   * converted as {@link readTensor} converts them, read synchronously: a build that writes each weight as it makes it
   * reads the weight there and then, and a fused tensor's parts are read one at a time.
   */
  readRowsSync(name: string, from = 0, count?: number): Float32Array {
    const { t, fh, source } = this.readable(name);
    const rows = t.dims.slice(1).reduce((n, d) => n * d, 1);
    const n = count ?? rows - from;
    if (!Number.isSafeInteger(from) || !Number.isSafeInteger(n) || from < 0 || n < 0 || from + n > rows) {
      throw new RangeError(`${source}: rows ${from} to ${from + n} of tensor "${name}", which has ${rows}`);
    }
    const elements = n * t.dims[0]!;
    // (whole rows are whole blocks: the header's rows are multiples of a block type's block)
    const at = t.fileOffset + (rows === 0 ? 0 : from * (t.byteLength / rows));
    if (t.quantized) {
      const bytes = new Uint8Array(rows === 0 ? 0 : n * (t.byteLength / rows));
      readFullySync(fh, bytes, at, source, t.name);
      return dequantize(BLOCK_TYPES.get(t.type)!, bytes, elements);
    }
    const out = new Float32Array(elements);
    if (t.type === GGML_TYPE_F32) {
      readFullySync(fh, new Uint8Array(out.buffer), at, source, t.name);
      return out;
    }
    const half = new Uint16Array(elements);
    readFullySync(fh, new Uint8Array(half.buffer), at, source, t.name);
    return halfBitsToFloat32(half, t.type);
  }

  /** The tensor `name`, the open file holding it and that file's name for messages; refuses a missing tensor, an unsupported type and a closed file. */
  private readable(name: string): { t: GgufTensorInfo & { byteLength: number }; fh: FileHandle; source: string } {
    const t = this.byName.get(name);
    if (!t) throw new GgufError(`${basename(this.path)} has no tensor "${name}".`, 'missing-tensor');
    const source = basename(this.shardPaths[t.shard ?? 0]!);
    if (t.byteLength === undefined) throw unsupportedType(t, source);
    const fh = this.handles?.[t.shard ?? 0];
    if (!fh) throw new Error(`${source} is closed.`);
    return { t: t as GgufTensorInfo & { byteLength: number }, fh, source };
  }

  /** Reads one tensor's stored bytes as they are (e.g. quantized blocks, to repack without loss). */
  async readTensorBytes(name: string): Promise<Uint8Array> {
    const { t, fh, source } = this.readable(name);
    const out = new Uint8Array(t.byteLength);
    await readFully(fh, out, t.fileOffset, source, t.name);
    return out;
  }

  async close(): Promise<void> {
    const handles = this.handles;
    this.handles = undefined;
    await Promise.all((handles ?? []).map((h) => h.close()));
  }
}

async function readFully(fh: FileHandle, dst: Uint8Array, position: number, source: string, what: string): Promise<void> {
  let done = 0;
  while (done < dst.length) {
    const { bytesRead } = await fh.read(dst, done, dst.length - done, position + done);
    if (bytesRead === 0) {
      throw new GgufError(`${source} is truncated: tensor "${what}" ends past the end of the file.`, 'truncated');
    }
    done += bytesRead;
  }
}

function readFullySync(fh: FileHandle, dst: Uint8Array, position: number, source: string, what: string): void {
  for (let done = 0; done < dst.length; ) {
    const bytesRead = readSync(fh.fd, dst, done, dst.length - done, position + done);
    if (bytesRead === 0) throw new GgufError(`${source} is truncated: tensor "${what}" ends past the end of the file.`, 'truncated');
    done += bytesRead;
  }
}

function describe(v: GgufValue): string {
  if (Array.isArray(v)) return `an array of ${v.length}`;
  return `${typeof v} ${JSON.stringify(typeof v === 'bigint' ? v.toString() : v)}`;
}

/** Opens a GGUF file, runs `fn`, and closes the file. */
export async function withGguf<T>(path: string, fn: (file: GgufFile) => Promise<T>): Promise<T> {
  const file = await GgufFile.open(path);
  try {
    return await fn(file);
  } finally {
    await file.close();
  }
}
