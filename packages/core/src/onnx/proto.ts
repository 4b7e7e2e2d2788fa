/**
 * Thin typed access to the ONNX protobuf schema (onnx-proto), plus the few helpers every graph
 * writer needs. Nothing here knows about language models.
 */
// onnx-proto's declarations name protobufjs's global `Long` without importing it: this keeps them checking in a
// consumer whose tsconfig lists its `types` (or, as TypeScript 7 does by default, none).
/// <reference types="long" preserve="true" />
import onnxProto from 'onnx-proto';
import type { onnx as O } from 'onnx-proto';
import { readFile, writeFile } from 'node:fs/promises';
import { OnnxFormatError } from './format-error.js';

export const onnx = onnxProto.onnx;
/** An ONNX model in memory (onnx-proto's generated class), as the graph builders return it and quantizeGraph takes it. */
export type ModelProto = O.ModelProto;
export type GraphProto = O.IGraphProto;
export type NodeProto = O.INodeProto;
/** An ONNX tensor (an initializer's name, dims, type and data). */
export type TensorProto = O.ITensorProto;
export type ValueInfoProto = O.IValueInfoProto;
export const DataType = onnxProto.onnx.TensorProto.DataType;

export { OnnxFormatError };

/** GGUF's magic, "GGUF": no ONNX protobuf starts with it (0x47 would open field 8 with wire type 7, which does not exist). */
const GGUF_MAGIC = [0x47, 0x47, 0x55, 0x46];

/** Decodes an ONNX model from bytes, naming the file in the error when the protobuf is corrupt. */
export function decodeModel(bytes: Uint8Array, source = '<bytes>'): ModelProto {
  if (GGUF_MAGIC.every((b, i) => bytes[i] === b)) {
    throw new OnnxFormatError(
      `${source} is a GGUF file, not an ONNX model: give the file itself as the model (a GGUF is read by its path, whatever its name), or convert it into a module with \`reasonplug convert gguf\``,
    );
  }
  let model: ModelProto;
  try {
    model = onnx.ModelProto.decode(bytes);
  } catch (err) {
    throw new OnnxFormatError(
      `${source} is not a valid ONNX model (protobuf decoding failed: ${(err as Error).message}). ` +
        'Re-export the model or check that the download is complete.',
    );
  }
  if (!model.graph || (model.graph.node ?? []).length === 0) {
    throw new OnnxFormatError(`${source} decoded as protobuf but holds no ONNX graph; is it really an .onnx file?`);
  }
  return model;
}

/** Reads and decodes an ONNX model file. */
export async function readModel(path: string): Promise<ModelProto> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new OnnxFormatError(
      code === 'ENOENT' ? `model file not found: ${path}` : `cannot read model file ${path}: ${(err as Error).message}`,
    );
  }
  return decodeModel(bytes, path);
}

/** Serialises a model to bytes. */
export function encodeModel(model: ModelProto | O.IModelProto): Uint8Array {
  return onnx.ModelProto.encode(model as O.IModelProto).finish();
}

/** Writes a model to a file. */
export async function writeModel(path: string, model: ModelProto | O.IModelProto): Promise<void> {
  await writeFile(path, encodeModel(model));
}

/** Makes a node; attribute values are typed from their JS type (number→int unless `floats` says otherwise). */
export function makeNode(
  opType: string,
  inputs: string[],
  outputs: string[],
  attrs: Record<string, number | number[] | string | GraphProto | { float: number } | { floats: number[] }> = {},
  name?: string,
  domain?: string,
): NodeProto {
  const A = onnx.AttributeProto.AttributeType;
  const attribute = Object.entries(attrs).map(([key, v]) => {
    if (typeof v === 'string') return { name: key, type: A.STRING, s: new TextEncoder().encode(v) };
    if (typeof v === 'number') return { name: key, type: A.INT, i: v };
    if (Array.isArray(v)) return { name: key, type: A.INTS, ints: v };
    if ('float' in v) return { name: key, type: A.FLOAT, f: v.float };
    if ('floats' in v) return { name: key, type: A.FLOATS, floats: v.floats };
    return { name: key, type: A.GRAPH, g: v };
  });
  return { opType, input: inputs, output: outputs, attribute, name: name ?? outputs[0], ...(domain ? { domain } : {}) };
}

/** A tensor-typed value info with symbolic (string) or fixed (number) dimensions. */
export function makeValueInfo(name: string, elemType: number, shape: (string | number)[]): ValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType,
        shape: { dim: shape.map((d) => (typeof d === 'string' ? { dimParam: d } : { dimValue: d })) },
      },
    },
  };
}

/** An initializer from typed data (raw little-endian bytes). */
export function makeTensor(
  name: string,
  dataType: number,
  dims: number[],
  data: Float32Array | Uint16Array | BigInt64Array | Int32Array | Uint8Array,
): TensorProto {
  return { name, dataType, dims, rawData: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
}
