/**
 * The shape and weights of a Llama-architecture decoder, as the ONNX builder consumes them.
 * Converters (GGUF, training exports) produce these; the builder turns them into an ONNX graph.
 */

/** How rotary embeddings pair the dimensions of each head. */
export type RopeStyle =
  /** dims (0,1), (2,3), ... rotate together: llama2.c / GGUF "NORM" order / Meta's original code. */
  | 'adjacent'
  /** dims (i, i + headDim/2) rotate together: Hugging Face `rotate_half` / GGUF "NEOX" order. */
  | 'half';

/** Architecture hyper-parameters of a Llama-style decoder. */
export interface LlamaConfig {
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  /** Key/value heads (GQA when smaller than numHeads). Defaults to numHeads. */
  numKvHeads?: number;
  /** Defaults to hiddenSize / numHeads. */
  headDim?: number;
  intermediateSize: number;
  /** Defaults to 10000. */
  ropeTheta?: number;
  /** Defaults to 1e-5. */
  rmsNormEps?: number;
  /** Defaults to 'half' (the Hugging Face convention). */
  ropeStyle?: RopeStyle;
  /** Use the embedding matrix as the output head. Defaults to false. */
  tieWordEmbeddings?: boolean;
}

/**
 * Weights of one decoder layer. Projection matrices use the PyTorch `nn.Linear` layout
 * `[out_features, in_features]`, row-major, as GGUF and safetensors store them.
 */
export interface LlamaLayerWeights {
  attnNorm: Float32Array; // [hidden]
  wq: Float32Array; // [numHeads*headDim, hidden]
  wk: Float32Array; // [numKvHeads*headDim, hidden]
  wv: Float32Array; // [numKvHeads*headDim, hidden]
  wo: Float32Array; // [hidden, numHeads*headDim]
  mlpNorm: Float32Array; // [hidden]
  wGate: Float32Array; // [intermediate, hidden]
  wUp: Float32Array; // [intermediate, hidden]
  wDown: Float32Array; // [hidden, intermediate]
}

/** All weights of a Llama decoder. */
export interface LlamaWeights {
  embed: Float32Array; // [vocab, hidden]
  layers: LlamaLayerWeights[];
  finalNorm: Float32Array; // [hidden]
  /** [vocab, hidden]; omitted when the config ties embeddings. */
  lmHead?: Float32Array;
}
