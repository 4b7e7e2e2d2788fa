/**
 * External-data files of an ONNX graph checked before onnxruntime opens them. A truncated `model.onnx.data`
 * otherwise surfaces as onnxruntime's coloured log line and an "out of bounds" error that names neither the
 * file nor the sizes.
 */
import { open, stat } from 'node:fs/promises';
import { basename, isAbsolute, join, relative, sep } from 'node:path';
import type { onnx as O } from 'onnx-proto';
import { OnnxFormatError, onnx, type GraphProto, type ModelProto, type TensorProto } from './proto.js';

/**
 * Bytes per element of ONNX tensor types; the 4-bit ones (UINT4, INT4, FLOAT4E2M1) pack two per byte. Types
 * not listed (strings, newer ones) are only checked when the tensor states its `length`.
 */
const ELEMENT_BYTES: Record<number, number> = {
  1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 14: 8, 15: 16, 16: 2,
  17: 1, 18: 1, 19: 1, 20: 1,
};
const FOUR_BIT = new Set([21, 22, 23]);

/** The bytes a tensor's data take, from its type and dims; undefined for types without a fixed size (strings). */
function tensorBytes(t: TensorProto): number | undefined {
  const count = (t.dims ?? []).reduce<number>((n, d) => n * Number(d), 1);
  if (FOUR_BIT.has(t.dataType ?? 0)) return Math.ceil(count / 2);
  const size = ELEMENT_BYTES[t.dataType ?? 0];
  return size === undefined ? undefined : count * size;
}

/** Calls `fn` with every tensor a model holds: its graph's initializers, Constant and other attribute tensors, and its subgraphs'. */
export function forEachTensor(model: ModelProto | O.IModelProto, fn: (t: TensorProto) => void): void {
  const graph = (g: GraphProto | O.IGraphProto | null | undefined) => {
    if (!g) return;
    for (const t of g.initializer ?? []) fn(t as TensorProto);
    for (const n of g.node ?? []) {
      for (const a of n.attribute ?? []) {
        if (a.t) fn(a.t as TensorProto);
        for (const t of a.tensors ?? []) fn(t as TensorProto);
        graph(a.g);
        for (const sub of a.graphs ?? []) graph(sub);
      }
    }
  };
  graph(model.graph);
}

/**
 * For each external-data file a graph refers to (its `location`, relative to the graph's directory), the
 * size it must have at least: the furthest `offset + length` of any tensor kept in it (initializers,
 * Constant tensors, subgraphs). A tensor without `length` takes the size its type and dims give.
 */
export function externalDataExtents(model: ModelProto | O.IModelProto): Record<string, number> {
  const EXTERNAL = onnx.TensorProto.DataLocation.EXTERNAL;
  const extents: Record<string, number> = {};
  const tensor = (t: TensorProto | null | undefined) => {
    if (!t || t.dataLocation !== EXTERNAL) return;
    const entry = (key: string) => t.externalData?.find((e) => e.key === key)?.value ?? undefined;
    const location = entry('location');
    if (!location) return;
    const length = entry('length') !== undefined ? Number(entry('length')) : tensorBytes(t);
    if (length === undefined || !Number.isFinite(length)) return;
    const end = Number(entry('offset') ?? 0) + length;
    extents[location] = Math.max(extents[location] ?? 0, end);
  };
  forEachTensor(model, tensor);
  return extents;
}

/**
 * Throws `OnnxFormatError` (one line: the file, the size it needs and the size it has) when an external-data
 * file of `modelPath` is named by an absolute path or one leading out of `dir`, is missing, is not a file, cannot be
 * read, or is shorter than `extents` says. `dir` is where locations resolve (the source graph's directory).
 */
export async function checkExternalData(modelPath: string, dir: string, extents: Record<string, number>): Promise<void> {
  for (const [location, needed] of Object.entries(extents)) {
    if (isAbsolute(location)) {
      // ONNX names external data relative to the model; joined to `dir`, an absolute location would be refused as
      // missing under a path that is neither the one written nor a real one.
      throw new OnnxFormatError(
        `${modelPath} keeps weights in ${location}, an absolute path: ONNX requires external data to be named relative to the model's folder; export the model again`,
      );
    }
    const path = join(dir, location);
    // onnxruntime refuses these too, but only after opening the graph, in a line that names the initializer, not the
    // file; stat()ing first would call a file outside the folder (even /etc/passwd) "truncated" or "missing".
    const inside = relative(dir, path);
    if (inside === '..' || inside.startsWith(`..${sep}`)) {
      throw new OnnxFormatError(
        `${modelPath} keeps weights in ${location}, outside the model's folder: ONNX requires external data to be a file in that folder or below it; export the model again`,
      );
    }
    const info = await stat(path).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return undefined;
      throw err;
    });
    if (!info) {
      throw new OnnxFormatError(`${path} is missing: ${basename(modelPath)} keeps weights in it (${needed} bytes expected); copy it beside the model`);
    }
    if (!info.isFile()) {
      throw new OnnxFormatError(`${path} is ${info.isDirectory() ? 'a directory' : 'not a regular file'}: ${basename(modelPath)} keeps weights in it (${needed} bytes expected); it must be the data file saved with the model`);
    }
    // onnxruntime reports an unreadable file as "SystemError : 13" deep in its session setup. Opened rather than
    // access()ed: access() answers for the real user, onnxruntime opens it as the effective one.
    const readable = await open(path, 'r').then(
      (handle) => handle.close().then(() => true),
      (err: NodeJS.ErrnoException) => {
        if (err.code === 'EACCES' || err.code === 'EPERM') return false;
        throw err;
      },
    );
    if (!readable) {
      throw new OnnxFormatError(`${path} is not readable (permission denied): ${basename(modelPath)} keeps weights in it; give this user read access to it`);
    }
    if (info.size < needed) {
      throw new OnnxFormatError(
        `${path} is truncated: ${basename(modelPath)} expects at least ${needed} bytes of external data in it, the file has ${info.size}; is the download or copy complete?`,
      );
    }
  }
}
