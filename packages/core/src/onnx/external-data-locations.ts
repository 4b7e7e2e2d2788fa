/**
 * The external-data files an ONNX graph names, found without loading the graph: its protobuf wire format is walked
 * through a small window and every field that is not a header (weights kept inside the file, names, shapes) is
 * skipped unread, so a graph of gigabytes costs a few reads. The tensors looked at are those `forEachTensor`
 * (external-data.ts) visits: initializers and node attribute tensors, in subgraphs too.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';

/** Bytes read at once: the headers of many nodes, yet little wasted when a read lands among a tensor's bytes. */
const WINDOW = 16 * 1024;

/** Protobuf wire types (ONNX has no groups, the other two). */
const VARINT = 0;
const FIXED64 = 1;
const LENGTH = 2;
const FIXED32 = 5;

/** onnx.proto field numbers of the messages that lead to tensors, and of a tensor's external-data fields. */
const MODEL_GRAPH = 7;
const GRAPH_NODE = 1;
const GRAPH_INITIALIZER = 5;
const NODE_ATTRIBUTE = 5;
const ATTRIBUTE_TENSOR = 5;
const ATTRIBUTE_GRAPH = 6;
const ATTRIBUTE_TENSORS = 10;
const ATTRIBUTE_GRAPHS = 11;
const TENSOR_EXTERNAL_DATA = 13;
const TENSOR_DATA_LOCATION = 14;
const ENTRY_KEY = 1;
const ENTRY_VALUE = 2;
/** `TensorProto.DataLocation.EXTERNAL`. */
const EXTERNAL = 1;

/** Wire data that does not parse: the scan ends there. */
class Malformed extends Error {}

/** One field of a message: a varint's value, or where a length-delimited field's bytes are. */
interface Field {
  number: number;
  wire: number;
  value: number;
  start: number;
  end: number;
}

/** A file read as protobuf wire data, through a window that moves to where the reads are. */
class WireFile {
  private window = Buffer.alloc(0);
  private at = 0;

  constructor(private readonly fd: number) {}

  /** Moves the window to hold the `n` bytes at `pos`, unless it does. */
  private hold(pos: number, n: number): void {
    if (pos >= this.at && pos + n <= this.at + this.window.length) return;
    const buf = Buffer.allocUnsafe(Math.max(n, WINDOW));
    this.window = buf.subarray(0, readSync(this.fd, buf, 0, buf.length, pos));
    this.at = pos;
    if (n > this.window.length) throw new Malformed();
  }

  /** The `n` bytes at `pos`. */
  private bytes(pos: number, n: number): Buffer {
    this.hold(pos, n);
    return this.window.subarray(pos - this.at, pos - this.at + n);
  }

  private varint(pos: number, end: number): [value: number, next: number] {
    let value = 0;
    // Ten bytes at most; values past 2^53 lose precision, but those are int64 fields that are skipped. (Read from the
    // window itself: a view made for each byte was a third of the scan, 38 → 27 ms for a 125M llama's graph, cold.)
    for (let i = 0, scale = 1; i < 10 && pos < end; i++, scale *= 128) {
      this.hold(pos, 1);
      const byte = this.window[pos++ - this.at]!;
      value += (byte & 0x7f) * scale;
      if (byte < 0x80) return [value, pos];
    }
    throw new Malformed();
  }

  /** The fields of the message whose bytes are [pos, end). */
  *fields(pos: number, end: number): Generator<Field> {
    while (pos < end) {
      const [tag, next] = this.varint(pos, end);
      const field: Field = { number: Math.floor(tag / 8), wire: tag % 8, value: 0, start: next, end: next };
      if (field.wire === VARINT) [field.value, field.end] = this.varint(next, end);
      else if (field.wire === FIXED64) field.end = next + 8;
      else if (field.wire === FIXED32) field.end = next + 4;
      else if (field.wire === LENGTH) {
        [field.value, field.start] = this.varint(next, end);
        field.end = field.start + field.value;
      } else throw new Malformed();
      if (field.end > end) throw new Malformed();
      yield field;
      pos = field.end;
    }
  }

  /** A short string field's text (longer ones are no external-data key or location). */
  text({ start, end }: Field): string | undefined {
    return end - start <= WINDOW ? this.bytes(start, end - start).toString('utf8') : undefined;
  }
}

/** Adds to `out` the external-data locations of the graph whose bytes are [start, end). */
function scanGraph(file: WireFile, start: number, end: number, out: Set<string>): void {
  for (const f of file.fields(start, end)) {
    if (f.wire !== LENGTH) continue;
    if (f.number === GRAPH_INITIALIZER) scanTensor(file, f, out);
    if (f.number !== GRAPH_NODE) continue;
    for (const a of file.fields(f.start, f.end)) {
      if (a.number !== NODE_ATTRIBUTE || a.wire !== LENGTH) continue;
      for (const v of file.fields(a.start, a.end)) {
        if (v.wire !== LENGTH) continue;
        if (v.number === ATTRIBUTE_TENSOR || v.number === ATTRIBUTE_TENSORS) scanTensor(file, v, out);
        if (v.number === ATTRIBUTE_GRAPH || v.number === ATTRIBUTE_GRAPHS) scanGraph(file, v.start, v.end, out);
      }
    }
  }
}

/** Adds the tensor's location to `out` when its data is external (as `externalDataExtents` takes it). */
function scanTensor(file: WireFile, tensor: Field, out: Set<string>): void {
  let external = false;
  let location: string | undefined;
  for (const f of file.fields(tensor.start, tensor.end)) {
    if (f.number === TENSOR_DATA_LOCATION && f.wire === VARINT) external = f.value === EXTERNAL;
    if (f.number !== TENSOR_EXTERNAL_DATA || f.wire !== LENGTH) continue;
    let key: string | undefined;
    let value: string | undefined;
    for (const e of file.fields(f.start, f.end)) {
      if (e.wire !== LENGTH) continue;
      if (e.number === ENTRY_KEY) key = file.text(e);
      if (e.number === ENTRY_VALUE) value = file.text(e);
    }
    if (key === 'location') location = value;
  }
  if (external && location) out.add(location);
}

/**
 * The external-data locations (relative to the graph's folder, as written) that the ONNX graph at `path` keeps
 * weights in. A graph that does not parse ends the scan with what was found before: opening it explains it better.
 */
export function externalDataLocations(path: string): string[] {
  const fd = openSync(path, 'r');
  try {
    const file = new WireFile(fd);
    const out = new Set<string>();
    try {
      for (const f of file.fields(0, fstatSync(fd).size)) if (f.number === MODEL_GRAPH && f.wire === LENGTH) scanGraph(file, f.start, f.end, out);
    } catch (err) {
      if (!(err instanceof Malformed)) throw err;
    }
    return [...out];
  } finally {
    closeSync(fd);
  }
}
