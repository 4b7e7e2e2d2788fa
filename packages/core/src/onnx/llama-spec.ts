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
  /** Token ids the embedding and the LM head cover (the logits' width). */
  vocabSize: number;
  /** Width of the residual stream (the embedding size). */
  hiddenSize: number;
  /** Decoder layers. */
  numLayers: number;
  /** Query heads per attention layer. */
  numHeads: number;
  /** Key/value heads (GQA when smaller than numHeads). Defaults to numHeads. */
  numKvHeads?: number;
  /** Defaults to hiddenSize / numHeads. */
  headDim?: number;
  /** The MLP's inner size; with `moe`, each expert's. */
  intermediateSize: number;
  /**
   * A mixture of experts in place of each layer's MLP (Mixtral, Qwen3-MoE, Qwen2-MoE): a router scores the `experts`
   * for each token (a softmax over all of them), the `used` best run, each a SwiGLU MLP of `intermediateSize`, and
   * their outputs are summed weighted by their scores, renormalized to sum to 1 where `normalize`. `sharedSize`: an
   * expert every token also runs, of that inner size, its output scaled by a sigmoid gate of its own (Qwen2-MoE).
   * Weights: each layer's `moe` ({@link LlamaLayerWeights}). Runs as onnxruntime's `com.microsoft.MoE`.
   * `biases`: the router and every expert's projections add biases (gpt-oss; `MoeWeights.biases`). `swiglu`: the
   * experts' gated activation `g · σ(alpha · g) · (u + beta)` with `g = min(gate, limit)` and `u` clamped to
   * `[-limit, limit]` (gpt-oss: alpha 1.702, beta 1, limit 7); default alpha 1, beta 0, no limit (SwiGLU).
   *
   * DeepSeek-V3-style routing (GLM-4.5): `gating: 'sigmoid'` scores each expert by a sigmoid of its own instead of a
   * softmax over all; `selectionBias` adds a bias per expert (`MoeWeights.selectionBias`) to the scores for choosing
   * the experts only, their weights stay the unbiased scores; `scale` multiplies the chosen weights after any
   * renormalization. `sharedGate: false`: the shared expert's output is added as it is (default true: under its
   * sigmoid gate). `denseLayers`: the first `count` layers have a dense gated MLP of `intermediateSize` in place of
   * experts (their weights `wGate`, `wUp`, `wDown`). `groups`: the experts form `count` groups of consecutive experts,
   * each scored by the sum of its best two (biased) scores, and are chosen only within the best `used` groups
   * (DeepSeek-V3's group-limited routing).
   */
  moe?: {
    experts: number;
    used: number;
    normalize: boolean;
    sharedSize?: number;
    sharedGate?: boolean;
    biases?: boolean;
    swiglu?: { alpha: number; beta: number; limit?: number };
    gating?: 'softmax' | 'sigmoid';
    selectionBias?: boolean;
    scale?: number;
    denseLayers?: { count: number; intermediateSize: number };
    groups?: { count: number; used: number };
  };
  /**
   * Multi-head latent attention (DeepSeek-V2/V3, GLM-4.7-Flash; each layer's weights `mla`): a token's keys
   * and values are one latent vector of `kvLoraRank`, RMS-normalized, and a key part of `ropeDim` that every head
   * shares and rotary rotates. A head's query (`headDim` = its no-rotary part and `ropeDim`) has its no-rotary part
   * carried into the latent's space by the head's `kB`, and its output, the attended latent, is carried out to
   * `valueDim` by the head's `vB`, before the output projection (`wo`: `[hidden, numHeads · valueDim]`). Built as
   * llama.cpp runs it ("absorbed"): attention of one key/value head of `ropeDim + kvLoraRank` values, the cache one
   * latent a token. `qLoraRank`: queries through a low-rank projection and its norm (`qA`, `qANorm`, `qB`), else `wq`.
   * `numKvHeads` is not read; the query scale defaults to `1/√headDim`.
   */
  mla?: { kvLoraRank: number; ropeDim: number; valueDim: number; qLoraRank?: number };
  /**
   * Each attention head has a learned sink logit (gpt-oss): one more score in its softmax that no value stands behind,
   * so a head may attend to nothing. Layer weights `sinks` `[numHeads]`.
   */
  attentionSinks?: boolean;
  /** Defaults to 10000. */
  ropeTheta?: number;
  /** Defaults to 1e-5. */
  rmsNormEps?: number;
  /** Defaults to 'half' (the Hugging Face convention). */
  ropeStyle?: RopeStyle;
  /** Use the embedding matrix as the output head. Defaults to false. */
  tieWordEmbeddings?: boolean;

  // ---- Variants of the Llama block (Qwen, Gemma, Phi). Every field is optional; leaving them all out is
  // the plain Llama decoder, graph for graph.

  /**
   * Rotary dimensions of each head, from its start (partial rotary: Phi-4-mini rotates 96 of 128); the others pass
   * through unrotated, and frequencies and factors count these only. Default `headDim`.
   */
  ropeDims?: number;
  /** Linear rope scaling: positions are divided by this factor (`rope_scaling.type = linear`). Default 1. */
  ropeScale?: number;
  /**
   * Per-frequency divisors of the rotary inverse frequencies, `ropeDims / 2` of them: Llama 3.1's rope
   * scaling as llama.cpp stores it (`rope_freqs.weight`), `inv_freq[i] / factors[i]`.
   */
  ropeFreqFactors?: readonly number[];
  /**
   * Phi-3's LongRoPE: two sets of per-frequency divisors (`ropeDims / 2` each), `short` for sequences of up to
   * `originalContext` tokens and `long` beyond. Each row of a run takes the set its own length (past plus new
   * tokens) calls for (transformers chooses by the sequence's length too), so keys written before a sequence
   * outgrew `originalContext` keep their short-factor rotation. Excludes `ropeFreqFactors`.
   */
  longRope?: { short: readonly number[]; long: readonly number[]; originalContext: number };
  /**
   * Multiplies the rotary cos and sin (llama.cpp's rope attention factor, `rope.scaling.attn_factor`; Phi-3's
   * LongRoPE scaling): rotated dimensions of q and k grow by it. Default 1.
   */
  ropeAttentionFactor?: number;
  /**
   * Llama 4's attention temperature (Ministral 3's `llama_4_scaling`): each query grows by
   * `1 + scale · ln(⌊(position + offset) / length⌋ + 1)`, 1 within the first `length` positions.
   */
  queryTemperature?: { scale: number; length: number; offset: number };
  /** q, k and v projections carry biases (Qwen2). The layer weights then hold `bq`, `bk`, `bv`. */
  qkvBias?: boolean;
  /** Per-head RMSNorm of q and k before the rotary embedding (Qwen3, Gemma 3): layer weights `qNorm`, `kNorm` `[headDim]`. */
  qkNorm?: boolean;
  /**
   * With `qkNorm`: `head` (default) normalizes each head; `projection` normalizes the whole q and k projections
   * (OLMo 2: `qNorm` `[numHeads·headDim]`, `kNorm` `[numKvHeads·headDim]`).
   */
  qkNormWidth?: 'head' | 'projection';
  /**
   * RMSNorm of the residual stream before attention and before the MLP (`attnNorm`, `mlpNorm`). Default true;
   * OLMo 2 has none and normalizes the blocks' outputs instead (`postNorms`).
   */
  preNorms?: boolean;
  /**
   * The norms' kind: `rms` (RMSNorm, default) or `layer` (LayerNorm without a bias: mean removed, then scaled, as
   * Cohere's Command R models normalize). Layer norms take no q/k norms.
   */
  normType?: 'rms' | 'layer';
  /**
   * Attention and the MLP both read one norm of the residual stream (`attnNorm`; no `mlpNorm`) and both outputs join
   * it at once (Cohere's Command R models, GPT-J). Default false.
   */
  parallelBlock?: boolean;
  /** RMSNorm after attention and after the MLP, before each residual add (Gemma 2/3): `postAttnNorm`, `postMlpNorm`. */
  postNorms?: boolean;
  /**
   * Added to every RMSNorm weight when the graph is built: 1 for checkpoints that store `w` of a `(1 + w)`
   * norm (Hugging Face Gemma). GGUF files store `1 + w` already. Default 0.
   */
  normWeightOffset?: number;
  /**
   * The MLP's activation: `silu` (SwiGLU, default), `gelu_tanh` (GELU with the tanh approximation: GeGLU for Gemma,
   * plain for StarCoder 2) or `relu2` (ReLU squared, Arcee's).
   */
  hiddenAct?: 'silu' | 'gelu_tanh' | 'relu2';
  /** The MLP gates its up projection with an activated gate projection (default true); false: `down(act(up(x)))`, no `wGate`. */
  gatedMlp?: boolean;
  /** With `normType: 'layer'`: the LayerNorms add a bias (`attnNormBias`, `mlpNormBias`, `finalNormBias`; StarCoder 2, StableLM). */
  normBias?: boolean;
  /** The attention's output projection and the (ungated) MLP's projections add biases (`bo`, `bUp`, `bDown`; StarCoder 2, Phi-2). */
  projectionBias?: boolean;
  /** The output head adds a bias to the logits (`lmHeadBias`; Phi-2). */
  headBias?: boolean;
  /** Multiplies the embedded ids (Gemma: sqrt(hiddenSize)); caller-given `inputs_embeds` are not scaled. Default 1. */
  embeddingScale?: number;
  /** Scale applied to queries before q·k. Default 1/sqrt(headDim); Gemma's `query_pre_attn_scalar` sets it otherwise. */
  queryScale?: number;
  /** Layers (0-based) whose q and k are not rotated at all (SmolLM3's NoPE layers). Default none. */
  noRopeLayers?: readonly number[];
  /** Multiplies each block's output (attention, MLP) before it joins the residual stream (Granite). Default 1. */
  residualScale?: number;
  /** Logits are divided by this (Granite's `logits_scaling`). Default 1. */
  logitScale?: number;
  /** Attention scores become `cap * tanh(scores / cap)` before the mask (Gemma 2). */
  attnLogitSoftcap?: number;
  /** Logits become `cap * tanh(logits / cap)` (Gemma 2). */
  finalLogitSoftcap?: number;
  /** Window of the sliding-window layers: query i sees key j iff `i - j < slidingWindow`. Needs `layerTypes`. */
  slidingWindow?: number;
  /**
   * Kind of each layer (`numLayers` entries). Default: all 'full'. 'conv' (LFM2's hybrid layers): a gated short
   * convolution instead of attention, `out(c · conv(b · x))` with b, c, x from one input projection and a depthwise
   * causal convolution of `convKernel` taps; its recurrent state, the last `convKernel − 1` inputs, is the graph's
   * `past_conv.{i}` `[batch, convKernel − 1, hidden]` (the attention layers keep `past_key_values.{i}`).
   */
  layerTypes?: readonly ('full' | 'sliding' | 'conv' | 'mamba' | 'delta' | 'mlp' | 'mamba-attention')[];
  /**
   * Each layer one block, as Nemotron-H's: its norm, then a mixer (attention, 'mamba', …) without an MLP, or, in an
   * 'mlp' layer, the MLP alone; its output added to the residual stream. Default: each layer a mixer and an MLP.
   */
  singleBlocks?: boolean;
  /** Taps of the 'conv' layers' convolution (LFM2: 3). */
  convKernel?: number;
  /**
   * Sizes of the 'mamba' layers (Mamba2's mixer, as Granite 4.0-H has it between attention layers; a 'mamba-attention'
   * layer runs it beside attention on one normed input, their outputs summed, as Falcon-H1's): `heads` SSM heads
   * of `headDim` channels (inner size I = heads · headDim), a state of `stateSize` per channel, B and C shared by
   * `groups` groups of heads, a causal depthwise convolution of `convKernel` taps over x, B and C. Its recurrent states
   * are the graph's `past_conv.{i}` `[batch, convKernel − 1, I + 2 · groups · stateSize]` and `past_ssm.{i}`
   * `[batch, heads, headDim, stateSize]` (always float32).
   */
  mamba?: { convKernel: number; heads: number; headDim: number; stateSize: number; groups: number };
  /**
   * Sizes of the 'delta' layers (the gated DeltaNet of Qwen3.5 and Qwen3-Next): `keyHeads` heads of queries and keys of
   * `keyDim` shared by `valueHeads` heads of values of `valueDim` (value head j reads key head j mod keyHeads, Qwen3.5's
   * order; with `groupedHeads`, key head ⌊j / (valueHeads / keyHeads)⌋, Qwen3-Next's), a causal depthwise convolution of
   * `convKernel` taps over q, k and v. Each value head keeps a `[valueDim, keyDim]` state: per token it decays by
   * e^g, is corrected toward v along k by β (the delta rule), and is read by q. States: `past_conv.{i}`
   * `[batch, convKernel − 1, 2 · keyHeads · keyDim + valueHeads · valueDim]` and `past_recurrent.{i}`
   * `[batch, valueHeads, valueDim, keyDim]` (always float32).
   */
  deltaNet?: { convKernel: number; keyHeads: number; keyDim: number; valueHeads: number; valueDim: number; groupedHeads?: boolean };
  /**
   * Attention's output gated per channel (Qwen3.5, Qwen3-Next): `wq` has `2 · numHeads · headDim` rows, each head's
   * query then its gate, and the attention's output is multiplied by sigmoid(gate) before `wo`.
   */
  attentionGate?: boolean;
  /** Rope base of the sliding layers (Gemma 3 local layers: 10000). Default `ropeTheta`. */
  ropeThetaLocal?: number;
  /** Linear rope scale of the sliding layers. Default `ropeScale`. */
  ropeScaleLocal?: number;
}

/**
 * A weight matrix `[rows, cols]` (PyTorch `[out, in]`) block-quantized along `cols` in the layout of
 * onnxruntime's `com.microsoft.MatMulNBits`: value = (code - zero point) · scale, one scale (and zero point)
 * per block of `blockSize` columns of a row.
 */
export interface QuantizedMatrix {
  kind: 'nbits';
  rows: number;
  cols: number;
  bits: 4 | 8;
  /** Columns per block (a power of two, at least 16); `cols` is a multiple of it. */
  blockSize: number;
  /** Codes, `[rows, cols / blockSize, blockSize · bits / 8]`, 4-bit codes low nibble first. */
  data: Uint8Array;
  /** `[rows · cols / blockSize]` float32 scales. */
  scales: Float32Array;
  /**
   * Zero points per block, packed per row as MatMulNBits takes them (4-bit: two per byte, low nibble first,
   * `ceil(blocks / 2)` bytes a row; 8-bit: one byte each). Absent: the midpoint (8, or 128).
   */
  zeroPoints?: Uint8Array;
  /**
   * Offset columns (types whose blocks carry an offset, e.g. Q4_K): `cols / blockSize` extra codes per row,
   * each multiplying the sum of the input over one block of `blockSize` inputs, so that each block's offset
   * is added to the product. The operator's K is `cols + offsetColumns`; blocks, scales and zero points cover
   * those columns (the last block may be partial, its padding codes unused).
   */
  offsetColumns?: number;
}

/** A projection or embedding matrix: dense float32, or block-quantized. */
export type WeightMatrix = Float32Array | QuantizedMatrix;

/**
 * A dense matrix `[rows, cols]` whose values are read only when the builder comes to it: a converter's weights are
 * then read, converted, written and let go one at a time instead of all being held before the build starts.
 */
export interface DeferredMatrix {
  kind: 'deferred';
  rows: number;
  cols: number;
  /** Reads the float32 values, row-major (anew each call: the builder calls it once). */
  load(): Float32Array;
}

/** A matrix as the builder takes it: a {@link WeightMatrix}, or one read on demand. */
export type SourceMatrix = WeightMatrix | DeferredMatrix;

/**
 * Weights of one decoder layer. Projection matrices use the PyTorch `nn.Linear` layout
 * `[out_features, in_features]`, row-major, as GGUF and safetensors store them. `M` is the matrix type:
 * dense by default; the builder also takes {@link QuantizedMatrix} and {@link DeferredMatrix} (`LlamaLayerWeights<SourceMatrix>`).
 */
export interface LlamaLayerWeights<M extends SourceMatrix = Float32Array> {
  /** Absent when `preNorms` is false. */
  attnNorm?: Float32Array; // [hidden]
  /** Absent with `mla.qLoraRank` (its `mla.qA`, `mla.qB`). */
  wq?: M; // [numHeads*headDim, hidden]
  /** Absent with `mla`. */
  wk?: M; // [numKvHeads*headDim, hidden]
  wv?: M; // [numKvHeads*headDim, hidden]
  /** Absent in 'conv' layers, as are the other attention weights. */
  wo?: M; // [hidden, numHeads*headDim]
  /** In 'conv' layers (see `LlamaConfig.layerTypes`). */
  shortConv?: ShortConvWeights<M>;
  /** In 'mamba' layers (see `LlamaConfig.mamba`). */
  mamba?: MambaWeights<M>;
  /** In 'delta' layers (see `LlamaConfig.deltaNet`). */
  deltaNet?: DeltaNetWeights<M>;
  mlpNorm?: Float32Array; // [hidden]
  /** Absent when `gatedMlp` is false, or in a mixture of experts' layers (but its `moe.denseLayers`). */
  wGate?: M; // [intermediate, hidden]
  /** Absent in a mixture of experts' layers (the config's `moe`; but its `moe.denseLayers`). */
  wUp?: M; // [intermediate, hidden]
  wDown?: M; // [hidden, intermediate]
  /** With the config's `mla`: the latent attention's projections (see {@link MlaWeights}). */
  mla?: MlaWeights<M>;
  /** With the config's `moe` (past its `denseLayers`): the router and the experts' projections, expert after expert. */
  moe?: MoeWeights<M | QuantizedMatrix>;
  /** With `qkvBias`. */
  bq?: Float32Array; // [numHeads*headDim]
  bk?: Float32Array; // [numKvHeads*headDim]
  bv?: Float32Array; // [numKvHeads*headDim]
  /** With `qkNorm` (`qkNormWidth: 'projection'`: `[numHeads*headDim]` and `[numKvHeads*headDim]`). */
  qNorm?: Float32Array; // [headDim]
  kNorm?: Float32Array; // [headDim]
  /** With `postNorms`. */
  postAttnNorm?: Float32Array; // [hidden]
  postMlpNorm?: Float32Array; // [hidden]
  /** With `normBias` (beside the norms the config has). */
  attnNormBias?: Float32Array; // [hidden]
  mlpNormBias?: Float32Array; // [hidden]
  /** With `projectionBias`. */
  bo?: Float32Array; // [hidden]
  bUp?: Float32Array; // [intermediate]
  bDown?: Float32Array; // [hidden]
  /** With `attentionSinks`. */
  sinks?: Float32Array; // [numHeads]
}

/**
 * A layer's latent attention (see `LlamaConfig.mla`; H heads, latent L = kvLoraRank, rotary part R, no-rotary part
 * N = headDim − R, value V = valueDim, hidden D).
 */
export interface MlaWeights<M extends SourceMatrix = Float32Array> {
  /** With `qLoraRank` (Q): the query's low-rank projection, its RMSNorm, and its expansion to every head. */
  qA?: M; // [Q, D]
  qANorm?: Float32Array; // [Q]
  qB?: M; // [H·headDim, Q]
  /** The latent and the shared rotary key part, and the latent's RMSNorm. */
  kvA: M; // [L + R, D]
  kvANorm: Float32Array; // [L]
  /** Per head: the no-rotary query part into the latent's space (`latent = kB[h] · q_nope`), and the value out of it. */
  kB: Float32Array; // [H, L, N]
  vB: Float32Array; // [H, V, L]
}

/** A 'conv' layer's gated short convolution (see `LlamaConfig.layerTypes`; hidden H, `convKernel` K taps). */
export interface ShortConvWeights<M extends SourceMatrix = Float32Array> {
  /** b, c and x, stacked in that order. */
  inProj: M; // [3H, H]
  /** Each channel's taps, oldest input first. */
  kernel: Float32Array; // [H, K]
  outProj: M; // [H, H]
}

/**
 * A 'mamba' layer's Mamba2 mixer (see `LlamaConfig.mamba`; hidden H, I = heads · headDim, G groups, N = stateSize,
 * C = I + 2GN convolved channels, K taps).
 */
export interface MambaWeights<M extends SourceMatrix = Float32Array> {
  /** z (the gate), x, B, C and each head's dt, stacked in that order. */
  inProj: M; // [2I + 2GN + heads, H]
  /** Each channel's taps over x, B and C, oldest input first, and their bias. */
  convKernel: Float32Array; // [C, K]
  convBias?: Float32Array; // [C]
  /** Added to dt before its softplus. */
  dtBias: Float32Array; // [heads]
  /** Each head's decay rate A (negative: the state decays by exp(dt · A) a token). */
  a: Float32Array; // [heads]
  /** Each head's skip: y += D · x. */
  d: Float32Array; // [heads]
  /** The RMSNorm over each group's channels of y · silu(z) (Falcon-H1's files may have none). */
  norm?: Float32Array; // [I]
  outProj: M; // [H, I]
}

/**
 * A 'delta' layer's gated DeltaNet (see `LlamaConfig.deltaNet`; hidden H, Hk key heads of Dk, Hv value heads of Dv,
 * C = 2·Hk·Dk + Hv·Dv convolved channels, K taps).
 */
export interface DeltaNetWeights<M extends SourceMatrix = Float32Array> {
  /** q, k and v, stacked in that order. */
  qkv: M; // [C, H]
  /** z, the output gate. */
  gate: M; // [Hv·Dv, H]
  /** Each channel's taps over q, k and v, oldest input first. */
  convKernel: Float32Array; // [C, K]
  /** β's projection (β = sigmoid) and the decay's (g = A · softplus(α + dtBias)). */
  beta: M; // [Hv, H]
  alpha: M; // [Hv, H]
  dtBias: Float32Array; // [Hv]
  /** Each value head's A (negative). */
  a: Float32Array; // [Hv]
  /** The RMSNorm over each head's output, before the SiLU gate. */
  norm: Float32Array; // [Dv]
  outProj: M; // [H, Hv·Dv]
}

/**
 * A mixture of experts' weights (see `LlamaConfig.moe`): `E` experts of inner size `I` over hidden size `H`. The experts'
 * matrices are dense, or all three block-quantized alike (a {@link QuantizedMatrix} of `E · rows` rows, expert after
 * expert; same bits and block size, no offset columns, zero points only at 8 bits), run by onnxruntime's QMoE.
 * `M`: the experts' matrix type (the builder also takes {@link DeferredMatrix} dense experts).
 */
export interface MoeWeights<M extends SourceMatrix = Float32Array | QuantizedMatrix> {
  router: Float32Array; // [E, H]
  gate: M; // [E, I, H]
  up: M; // [E, I, H]
  down: M; // [E, H, I]
  /** With `moe.sharedSize` (S): the shared expert's MLP and its gate's weights (none with `moe.sharedGate: false`). */
  shared?: { gate: Float32Array; up: Float32Array; down: Float32Array; router?: Float32Array }; // [S, H], [S, H], [H, S], [H]
  /** With `moe.selectionBias`: added to the gating scores for choosing experts only. */
  selectionBias?: Float32Array; // [E]
  /** With `moe.biases`: the router's and each expert's projections' biases, expert after expert. */
  biases?: { router: Float32Array; gate: Float32Array; up: Float32Array; down: Float32Array }; // [E], [E, I], [E, I], [E, H]
}

/** All weights of a Llama decoder (`M`: see {@link LlamaLayerWeights}). */
export interface LlamaWeights<M extends SourceMatrix = Float32Array> {
  embed: M; // [vocab, hidden]
  layers: LlamaLayerWeights<M>[];
  finalNorm: Float32Array; // [hidden]
  /** With `normBias`. */
  finalNormBias?: Float32Array; // [hidden]
  /** With `headBias`. */
  lmHeadBias?: Float32Array; // [vocab]
  /** [vocab, hidden]; omitted when the config ties embeddings. */
  lmHead?: M;
}
