/** The error of a file that is not a readable ONNX model (apart from proto.ts, so the model worker can raise it without loading protobuf). */
export class OnnxFormatError extends Error {
  override name = 'OnnxFormatError';
}
