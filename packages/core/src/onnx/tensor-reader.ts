/**
 * Reads an ONNX graph's initializers, external data included, one tensor at a time (for rewriting a graph's
 * weights without holding its data file).
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { DataType, onnx, OnnxFormatError, type TensorProto } from './proto.js';
import { float16ToFloat32 } from './float16.js';

/**
 * Reads tensors' bytes, external data included: each external file is opened once and each tensor read at its
 * offset, so memory holds the tensors being quantized, not the file (which may pass what one Buffer holds, 2 GiB).
 * {@link close} closes the files.
 */
export class TensorReader {
  private readonly files = new Map<string, number>();
  constructor(private readonly baseDir: string) {}

  raw(t: TensorProto): Uint8Array | undefined {
    if (t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL) {
      const entry = (key: string) => t.externalData?.find((e) => e.key === key)?.value;
      const location = entry('location')!;
      const path = join(this.baseDir, location);
      let fd = this.files.get(location);
      if (fd === undefined) {
        fd = openSync(path, 'r');
        this.files.set(location, fd);
      }
      const offset = Number(entry('offset') ?? 0);
      const length = Number(entry('length') ?? fstatSync(fd).size - offset);
      // Its own buffer, not a pooled one: floats() views it in place, which needs a 4-byte aligned start.
      const bytes = new Uint8Array(length);
      for (let at = 0; at < length; ) {
        const n = readSync(fd, bytes, at, length - at, offset + at);
        if (n === 0) throw new OnnxFormatError(`${path} ends before ${t.name ?? 'a tensor'}'s ${length} bytes at offset ${offset}: the file is truncated`);
        at += n;
      }
      return bytes;
    }
    return t.rawData && t.rawData.length > 0 ? t.rawData : undefined;
  }

  /** Closes the external-data files opened so far. */
  close(): void {
    for (const fd of this.files.values()) closeSync(fd);
    this.files.clear();
  }

  floats(t: TensorProto): Float32Array | undefined {
    const raw = this.raw(t);
    // External bytes come in a buffer of their own, viewed as they are; inline ones are copied out of the model's bytes (which need not be aligned).
    const buffer = raw && (raw.byteOffset === 0 && raw.byteLength === raw.buffer.byteLength ? raw.buffer : raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
    if (t.dataType === DataType.FLOAT) {
      if (buffer) return new Float32Array(buffer);
      return Float32Array.from(t.floatData ?? []);
    }
    if (t.dataType === DataType.FLOAT16) {
      const bits = buffer ? new Uint16Array(buffer) : Uint16Array.from(t.int32Data ?? []);
      return Float32Array.from(bits, float16ToFloat32);
    }
    return undefined;
  }

  /** Moves an external tensor's data inline. */
  inline(t: TensorProto): void {
    if (t.dataLocation !== onnx.TensorProto.DataLocation.EXTERNAL) return;
    t.rawData = this.raw(t)!;
    t.externalData = [];
    t.dataLocation = onnx.TensorProto.DataLocation.DEFAULT;
  }
}
