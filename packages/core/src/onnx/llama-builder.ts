/**
 * Builds ONNX graphs of Llama-architecture decoders from a {@link LlamaConfig} and {@link LlamaWeights},
 * with the I/O layout of optimum's `text-generation-with-past` exports (see ARCHITECTURE.md, "ONNX decoder
 * conventions accepted"), so that converted and randomly initialised models run through the same engine
 * path as exported ones. Only standard ONNX operators (default domain, opset 17) are used; all arithmetic is
 * float32 even when weights and I/O are stored as float16, so graphs run on onnxruntime's CPU EP.
 */
import { seededNormals } from './random-weights.js';
import { closeSync, openSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { onnx as O } from 'onnx-proto';
import { DataType, makeNode, makeTensor, makeValueInfo, onnx, writeModel, type GraphProto, type TensorProto, type ValueInfoProto } from './proto.js';
import { GraphBuilder, float32ArrayToFloat16, transpose2d } from './graph-builder.js';
import type { DeferredMatrix, DeltaNetWeights, LlamaConfig, LlamaWeights, LlamaLayerWeights, MambaWeights, MlaWeights, MoeWeights, QuantizedMatrix, RopeStyle, SourceMatrix, WeightMatrix } from './llama-spec.js';
import { LONG_ROPE_CONTEXT_KEY } from './graph-facts.js';
import { blocksPerRow, concatRows, isQuantized, rowBytes, storedColumns } from './quantized-matrix.js';

/** Default-domain opset the builder writes (ReduceMean still takes `axes` as an attribute here). */
const OPSET = 17;
/** ONNX IR version written into the model. */
const IR_VERSION = 8;
/** Additive bias for disallowed keys: large but finite, so fully masked (padding) rows stay NaN-free. */
const MASK_MIN = -1e9;
/** Tokens a gated DeltaNet's prompt takes at once (see the builder's chunkedDelta): its inverse costs log₂ of it in products. */
const DELTA_CHUNK = 64;
/** Initializers at least this large go to the external data file when `externalData` is set (as onnx does). */
const EXTERNAL_MIN_BYTES = 1024;
/** External tensors of at least 1 MiB start on a 4 KiB boundary (mmap-friendly, like onnx's `align`). */
const ALIGN_LARGE_BYTES = 1 << 20;
const PAGE = 4096;
/** Protobuf cannot hold a model of 2 GiB or more; leave room for the graph itself. */
const MAX_INLINE_BYTES = 2 ** 31 - 64 * 1024 * 1024;

/** Raised for a {@link LlamaConfig} the builder cannot write (a size out of range, an unknown style, options that exclude each other), naming the field. */
export class LlamaConfigError extends RangeError {
  override name = 'LlamaConfigError';
}

/** Raised for {@link LlamaWeights} that do not fit the config (a missing or misshapen matrix, a part the config has no place for), naming the weight. */
export class LlamaWeightsError extends RangeError {
  override name = 'LlamaWeightsError';
}

/** Options of {@link buildLlamaModel}; every flag defaults to the plain optimum `text-generation-with-past` layout. */
export interface LlamaBuildOptions {
  /**
   * Storage type of the weights and of the float I/O (past/present KV, logits, hidden state, inputs_embeds).
   * Default `float32`. With `float16` the initializers are stored fp16 and cast to fp32 right after the
   * initializer, past KV is cast up and outputs are cast down: arithmetic stays fp32 (runs on the CPU EP).
   */
  dtype?: 'float32' | 'float16';
  /**
   * Storage type of the attention layers' keys and values (past and present), where `dtype` leaves it float32. With
   * `float16` (llama.cpp's default cache type) a GroupQueryAttention graph runs the kernel in fp16 on an fp16 cache, as
   * `dtype: 'float16'` graphs do, and an op-by-op graph casts the past up and the present down: half the bytes a long
   * context's step reads and copies. Default `float32`.
   */
  kvDtype?: 'float32' | 'float16';
  /** Element type of `input_ids`, `attention_mask` and `position_ids`. Default `int64`. */
  idsType?: 'int64' | 'int32';
  /**
   * Include a `position_ids` input `[batch_size, sequence_length]`. Default true. When false, positions are
   * derived in the graph from the attention mask: `max(cumsum(mask, axis=1) - 1, 0)`, last `sequence_length` columns.
   */
  positionIds?: boolean;
  /**
   * Optimum's "merged" layout: an extra bool input `use_cache_branch` `[1]`; logits and presents come out of an
   * `If` node whose two branches hold the same decoder body (branches reference the outer graph's initializers).
   * Default false.
   */
  mergedDecoder?: boolean;
  /**
   * Extra int64 scalar input `num_logits_to_keep` (shape `[]`): logits are computed for the last N positions
   * only (N = 0 keeps all, as in transformers). Default false.
   */
  numLogitsToKeep?: boolean;
  /** Extra output `last_hidden_state` `[batch_size, sequence_length, hidden]`: the final RMSNorm output (the LM head's input). */
  outputHidden?: boolean;
  /**
   * Extra input `inputs_embeds` `[batch_size, embeds_length, hidden]`. The sequence fed to the layers is
   * `Concat(embed[input_ids], inputs_embeds, axis=1)`; pass a 0-length tensor for whichever part is unused.
   * `attention_mask` and `position_ids` then cover the concatenated length (input_ids' length is named `ids_length`).
   */
  inputsEmbeds?: boolean;
  /** `producer_name` written into the model. Default `reasonplug`. */
  producer?: string;
  /**
   * `accuracy_level` of the MatMulNBits nodes written for quantized matrices: 4 (default) lets onnxruntime
   * quantize activations to int8 per block for its integer kernels (as llama.cpp does for its quantized
   * types); 0 keeps activations in fp32 (slower, closer to the dequantized product).
   */
  quantAccuracyLevel?: 0 | 1 | 2 | 3 | 4;
  /**
   * How attention is written. `ops` (default): standard operators (MatMul, Softmax, an additive mask, rotary by
   * Mul/Add). `gqa`: one `com.microsoft::GroupQueryAttention` per layer, as onnxruntime-genai writes decoders:
   * rotary inside it from cos/sin caches when the head size is a multiple of 16 (its CPU kernel's rule; else by
   * ops before it), soft-capping and sliding windows as its attributes, valid keys and positions from
   * `seqlens_k` = Σ attention_mask − 1. Such a graph has no `position_ids` input and needs batches RIGHT-padded
   * (every row's tokens from slot 0 of its cache); the engine sees the operator and pads so.
   */
  attention?: 'ops' | 'gqa';
  /**
   * With `attention: 'gqa'`: `inside` (default) rotates q and k in GroupQueryAttention from cos/sin caches of
   * `maxPositions` rows (where the head size allows, see `attention`); `ops` rotates them by ops before it, from
   * positions derived from the mask (no caches, no length limit).
   */
  gqaRotary?: 'inside' | 'ops';
  /**
   * Add each block's output to the residual stream inside the next RMSNorm's kernel
   * (`com.microsoft::SkipSimplifiedLayerNormalization`; onnxruntime fuses a norm's own ops but not the Add before it).
   * Default: with `attention: 'gqa'` (graphs of standard ops stay so).
   */
  fuseResidualNorms?: boolean;
  /**
   * With `attention: 'ops'`: rotate q and k by one `com.microsoft::RotaryEmbedding` kernel per layer from cos/sin
   * caches of `maxPositions` rows (where the head size allows, as for GroupQueryAttention's rotary), instead of eight
   * ops. Default false (graphs of standard ops stay so).
   */
  rotaryKernel?: boolean;
  /** With rotary from caches (GroupQueryAttention's inside, or `rotaryKernel`): their rows, the longest sequence the graph can run. Default 4096. */
  maxPositions?: number;
  /**
   * With `attention: 'ops'`, what each attention layer returns. `joined` (default, as exports do): `present.{i}.key|value`,
   * the past with this run's keys and values appended. `new`: `new_key_values.{i}.key|value`, this run's alone
   * (`[batch, kvHeads, new_sequence_length, headDim]`), for a caller that appends them to a cache it keeps: the past may then
   * be a buffer with room for more positions (the slots past its keys masked out in `attention_mask`): the keys are
   * read in place (the scores over past and new keys computed apart and joined before the softmax), the values joined
   * inside the graph (one product over all positions, so logits do not depend on where a prefill was split), and
   * nothing of the past is copied out. Sliding-window layers are refused (their window is counted in slots).
   */
  kvOutput?: 'joined' | 'new';
}

/** A layer's kind (see `LlamaConfig.layerTypes`). */
export type LayerKind = NonNullable<LlamaConfig['layerTypes']>[number];

/** Whether a layer of this kind attends: it has q, k, v and output weights and keeps keys and values. */
export function layerAttends(kind: LayerKind): boolean {
  return kind === 'full' || kind === 'sliding' || kind === 'mamba-attention';
}

/** Whether a layer of this kind convolves its inputs first, keeping the last ones as a state (`past_conv.{i}`). */
function layerConvolves(kind: LayerKind): boolean {
  return kind === 'conv' || kind === 'mamba' || kind === 'delta' || kind === 'mamba-attention';
}

/** A config with every default filled in. */
interface Resolved {
  vocab: number;
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  ropeDims: number;
  inter: number;
  theta: number;
  eps: number;
  rope: RopeStyle;
  tied: boolean;
  ropeScale: number;
  freqFactors: readonly number[] | undefined;
  longRope: LlamaConfig['longRope'];
  temperature: LlamaConfig['queryTemperature'];
  qkvBias: boolean;
  qkNorm: boolean;
  qkNormWidth: 'head' | 'projection';
  preNorms: boolean;
  postNorms: boolean;
  layerNorm: boolean;
  parallel: boolean;
  normOffset: number;
  act: 'silu' | 'gelu_tanh' | 'relu2';
  gated: boolean;
  normBias: boolean;
  projectionBias: boolean;
  headBias: boolean;
  embedScale: number;
  queryScale: number;
  /** The rope attention factor still to apply to cos and sin (1 when folded into queryScale). */
  ropeMscale: number;
  attnCap: number | undefined;
  residualScale: number;
  logitScale: number;
  noRope: ReadonlySet<number>;
  finalCap: number | undefined;
  window: number | undefined;
  layerTypes: readonly LayerKind[];
  /** LlamaConfig.singleBlocks. */
  single: boolean;
  /** Taps of the 'conv' layers (0 without any). */
  convKernel: number;
  /** The 'mamba' layers' sizes (LlamaConfig.mamba) with their inner size and convolved channels. */
  mamba: (NonNullable<LlamaConfig['mamba']> & { inner: number; channels: number }) | undefined;
  /** The 'delta' layers' sizes (LlamaConfig.deltaNet) with their convolved channels. */
  delta: (NonNullable<LlamaConfig['deltaNet']> & { channels: number }) | undefined;
  /** Whether attention's output is gated (LlamaConfig.attentionGate): q's projection is twice as wide. */
  attnGate: boolean;
  thetaLocal: number;
  ropeScaleLocal: number;
  moe: LlamaConfig['moe'];
  sinks: boolean;
  /** Latent attention's sizes (LlamaConfig.mla): latent, rotary and no-rotary parts, value, query rank and head. */
  mla: { latent: number; rope: number; nope: number; value: number; qRank: number | undefined; qHead: number } | undefined;
}

function resolve(config: LlamaConfig): Resolved {
  const heads = config.numHeads;
  const mla = config.mla;
  // With latent attention, the attention runs one key/value head of the rotary part and the latent (see LlamaConfig.mla).
  const kvHeads = mla ? 1 : (config.numKvHeads ?? heads);
  const qHead = config.headDim ?? config.hiddenSize / heads;
  const headDim = mla ? mla.ropeDim + mla.kvLoraRank : qHead;
  const r: Resolved = {
    vocab: config.vocabSize,
    hidden: config.hiddenSize,
    layers: config.numLayers,
    heads,
    kvHeads,
    headDim,
    ropeDims: mla ? mla.ropeDim : (config.ropeDims ?? headDim),
    inter: config.intermediateSize,
    theta: config.ropeTheta ?? 10000,
    eps: config.rmsNormEps ?? 1e-5,
    rope: config.ropeStyle ?? 'half',
    tied: config.tieWordEmbeddings ?? false,
    ropeScale: config.ropeScale ?? 1,
    freqFactors: config.ropeFreqFactors,
    longRope: config.longRope,
    temperature: config.queryTemperature,
    qkvBias: config.qkvBias ?? false,
    qkNorm: config.qkNorm ?? false,
    qkNormWidth: config.qkNormWidth ?? 'head',
    preNorms: config.preNorms ?? true,
    postNorms: config.postNorms ?? false,
    layerNorm: (config.normType ?? 'rms') === 'layer',
    parallel: config.parallelBlock ?? false,
    normOffset: config.normWeightOffset ?? 0,
    act: config.hiddenAct ?? 'silu',
    gated: config.gatedMlp ?? true,
    normBias: config.normBias ?? false,
    projectionBias: config.projectionBias ?? false,
    headBias: config.headBias ?? false,
    embedScale: config.embeddingScale ?? 1,
    queryScale: config.queryScale ?? 1 / Math.sqrt(qHead),
    ropeMscale: config.ropeAttentionFactor ?? 1,
    attnCap: config.attnLogitSoftcap,
    residualScale: config.residualScale ?? 1,
    noRope: new Set(config.noRopeLayers ?? []),
    logitScale: config.logitScale ?? 1,
    finalCap: config.finalLogitSoftcap,
    window: config.slidingWindow,
    layerTypes: config.layerTypes ?? new Array<'full'>(config.numLayers).fill('full'),
    convKernel: config.convKernel ?? 0,
    single: config.singleBlocks ?? false,
    delta: config.deltaNet && { ...config.deltaNet, channels: 2 * config.deltaNet.keyHeads * config.deltaNet.keyDim + config.deltaNet.valueHeads * config.deltaNet.valueDim },
    attnGate: config.attentionGate ?? false,
    mamba: config.mamba && { ...config.mamba, inner: config.mamba.heads * config.mamba.headDim, channels: config.mamba.heads * config.mamba.headDim + 2 * config.mamba.groups * config.mamba.stateSize },
    thetaLocal: config.ropeThetaLocal ?? config.ropeTheta ?? 10000,
    ropeScaleLocal: config.ropeScaleLocal ?? config.ropeScale ?? 1,
    moe: config.moe,
    sinks: config.attentionSinks ?? false,
    mla: mla && { latent: mla.kvLoraRank, rope: mla.ropeDim, nope: qHead - mla.ropeDim, value: mla.valueDim, qRank: mla.qLoraRank, qHead },
  };
  // (before the sizes derived from it are checked: their errors would not name it)
  if (mla) {
    const { kvLoraRank, ropeDim, valueDim, qLoraRank } = mla;
    const whole = (n: number | undefined) => Number.isInteger(n) && n! > 0;
    if (!whole(kvLoraRank) || !whole(ropeDim) || ropeDim % 2 !== 0 || !(ropeDim < qHead) || !whole(valueDim) || (qLoraRank !== undefined && !whole(qLoraRank))) {
      throw new LlamaConfigError(`invalid Llama config: mla needs positive whole kvLoraRank, valueDim and qLoraRank (or none) and an even ropeDim below headDim (${qHead}), got ${JSON.stringify(mla)}`);
    }
    if (config.ropeDims !== undefined && config.ropeDims !== ropeDim) throw new LlamaConfigError(`invalid Llama config: with mla, ropeDims is mla.ropeDim (${ropeDim}), not ${config.ropeDims}`);
    const other = (['qkvBias', 'qkNorm', 'attentionSinks', 'parallelBlock'] as const).filter((k) => config[k]);
    if (other.length) throw new LlamaConfigError(`invalid Llama config: mla does not take ${other.join(', ')}`);
  }
  for (const key of ['vocab', 'hidden', 'layers', 'heads', 'kvHeads', 'headDim', 'inter'] as const) {
    if (!Number.isInteger(r[key]) || r[key] <= 0) throw new LlamaConfigError(`invalid Llama config: ${key} must be a positive integer, got ${r[key]}`);
  }
  if (heads % kvHeads !== 0) throw new LlamaConfigError(`invalid Llama config: numHeads (${heads}) must be a multiple of numKvHeads (${kvHeads})`);
  if (headDim % 2 !== 0) throw new LlamaConfigError(`invalid Llama config: headDim (${headDim}) must be even for rotary embeddings`);
  const rd = r.ropeDims;
  if (!Number.isInteger(rd) || rd <= 0 || rd % 2 !== 0 || rd > headDim) throw new LlamaConfigError(`invalid Llama config: ropeDims (${rd}) must be even and within headDim (${headDim})`);
  if (r.rope !== 'half' && r.rope !== 'adjacent') throw new LlamaConfigError(`invalid Llama config: unknown ropeStyle ${String(r.rope)}`);
  if (r.act !== 'silu' && r.act !== 'gelu_tanh' && r.act !== 'relu2') throw new LlamaConfigError(`invalid Llama config: unknown hiddenAct ${String(r.act)}`);
  if (r.normBias && !r.layerNorm) throw new LlamaConfigError('invalid Llama config: normBias needs normType layer (RMSNorms have no bias)');
  if (r.projectionBias && r.gated && !r.moe) throw new LlamaConfigError('invalid Llama config: projectionBias takes an ungated MLP (gatedMlp: false), or experts (moe: the output projection\'s bias only)');
  if (r.moe) {
    const { experts, used, normalize, sharedSize, sharedGate, biases, swiglu, gating, selectionBias, scale, denseLayers, groups } = r.moe;
    if (!Number.isInteger(experts) || experts < 2 || !Number.isInteger(used) || used < 1 || used > experts) {
      throw new LlamaConfigError(`invalid Llama config: moe needs a whole number of experts (2 or more) and of used experts (1 to experts), got ${experts} and ${used}`);
    }
    if (typeof normalize !== 'boolean') throw new LlamaConfigError('invalid Llama config: moe.normalize must be true or false');
    if (sharedSize !== undefined && !(Number.isInteger(sharedSize) && sharedSize > 0)) throw new LlamaConfigError(`invalid Llama config: moe.sharedSize must be a positive integer, got ${sharedSize}`);
    for (const [name, flag] of [['biases', biases], ['sharedGate', sharedGate], ['selectionBias', selectionBias]] as const) {
      if (flag !== undefined && typeof flag !== 'boolean') throw new LlamaConfigError(`invalid Llama config: moe.${name} must be true or false`);
    }
    if (sharedGate !== undefined && sharedSize === undefined) throw new LlamaConfigError('invalid Llama config: moe.sharedGate needs a shared expert (moe.sharedSize)');
    if (gating !== undefined && gating !== 'softmax' && gating !== 'sigmoid') throw new LlamaConfigError(`invalid Llama config: moe.gating must be 'softmax' or 'sigmoid', got ${String(gating)}`);
    if (scale !== undefined && !(scale > 0 && Number.isFinite(scale))) throw new LlamaConfigError(`invalid Llama config: moe.scale must be a positive number, got ${scale}`);
    if (groups !== undefined) {
      const { count, used: chosen } = groups;
      if (!(Number.isInteger(count) && count >= 2 && experts % count === 0) || !(Number.isInteger(chosen) && chosen >= 1 && chosen < count) || (experts / count) * chosen < used) {
        throw new LlamaConfigError(`invalid Llama config: moe.groups needs 2 or more groups that divide the experts, 1 to count − 1 of them used, holding the used experts, got ${JSON.stringify(groups)}`);
      }
    }
    if (denseLayers !== undefined) {
      const { count, intermediateSize } = denseLayers;
      if (!(Number.isInteger(count) && count >= 1 && count < r.layers) || !(Number.isInteger(intermediateSize) && intermediateSize > 0)) {
        throw new LlamaConfigError(`invalid Llama config: moe.denseLayers needs 1 to ${r.layers - 1} layers and a positive intermediateSize, got ${JSON.stringify(denseLayers)}`);
      }
    }
    if (swiglu !== undefined) {
      const { alpha, beta, limit } = swiglu;
      if (!(alpha > 0 && Number.isFinite(alpha)) || !Number.isFinite(beta) || (limit !== undefined && !(limit > 0 && Number.isFinite(limit)))) {
        throw new LlamaConfigError(`invalid Llama config: moe.swiglu needs a positive alpha, a finite beta and a positive limit or none, got ${JSON.stringify(swiglu)}`);
      }
    }
    // onnxruntime's CPU MoE kernel runs SwiGLU experts.
    if (!r.gated || r.act !== 'silu') throw new LlamaConfigError('invalid Llama config: moe experts are gated SiLU MLPs (gatedMlp true, hiddenAct silu)');
  }
  if (r.headBias && (r.logitScale !== 1 || r.finalCap !== undefined)) throw new LlamaConfigError('invalid Llama config: headBias with logitScale or finalLogitSoftcap is not supported');
  if (r.qkNormWidth !== 'head' && r.qkNormWidth !== 'projection') throw new LlamaConfigError(`invalid Llama config: unknown qkNormWidth ${String(r.qkNormWidth)}`);
  if (config.normType !== undefined && config.normType !== 'rms' && config.normType !== 'layer') throw new LlamaConfigError(`invalid Llama config: unknown normType ${String(config.normType)}`);
  if (r.layerNorm && r.qkNorm) throw new LlamaConfigError('invalid Llama config: q/k norms are RMSNorms; normType layer takes none');
  if (r.parallel && (!r.preNorms || r.postNorms)) throw new LlamaConfigError('invalid Llama config: a parallel block reads one pre-norm and has no post-norms');
  if (r.freqFactors && r.freqFactors.length !== rd / 2) {
    throw new LlamaConfigError(`invalid Llama config: ropeFreqFactors has ${r.freqFactors.length} entries, ropeDims / 2 is ${rd / 2}`);
  }
  if (r.longRope) {
    const { short, long, originalContext } = r.longRope;
    if (r.freqFactors) throw new LlamaConfigError('invalid Llama config: ropeFreqFactors and longRope exclude each other');
    if (!Number.isInteger(originalContext) || originalContext <= 0) throw new LlamaConfigError(`invalid Llama config: longRope.originalContext must be a positive integer, got ${originalContext}`);
    for (const [name, factors] of [['short', short], ['long', long]] as const) {
      if (factors.length !== rd / 2 || factors.some((f) => !(f > 0 && Number.isFinite(f)))) {
        throw new LlamaConfigError(`invalid Llama config: longRope.${name} must hold ropeDims / 2 = ${rd / 2} positive factors`);
      }
    }
  }
  for (const key of ['ropeScale', 'ropeScaleLocal', 'queryScale', 'embedScale', 'theta', 'thetaLocal', 'ropeMscale', 'residualScale', 'logitScale'] as const) {
    if (!(r[key] > 0) || !Number.isFinite(r[key])) throw new LlamaConfigError(`invalid Llama config: ${key === 'ropeMscale' ? 'ropeAttentionFactor' : key} must be a positive number, got ${r[key]}`);
  }
  // Rotating whole heads, the factor scales q·k by its square: folded into the query scale, it costs nothing and
  // GroupQueryAttention can still rotate inside. A partial rotation scales only the rotated dimensions.
  if (rd === headDim && r.ropeMscale !== 1) {
    r.queryScale *= r.ropeMscale * r.ropeMscale;
    r.ropeMscale = 1;
  }
  if (r.temperature) {
    const { scale, length, offset } = r.temperature;
    if (!Number.isFinite(scale) || !(Number.isInteger(length) && length > 0) || !Number.isFinite(offset)) {
      throw new LlamaConfigError(`invalid Llama config: queryTemperature needs a finite scale and offset and a positive whole length, got ${JSON.stringify(r.temperature)}`);
    }
    // A norm of q after it would undo the factor.
    if (r.qkNorm) throw new LlamaConfigError('invalid Llama config: queryTemperature with qkNorm is not supported');
  }
  for (const key of ['attnCap', 'finalCap'] as const) {
    const v = r[key];
    if (v !== undefined && !(v > 0 && Number.isFinite(v))) throw new LlamaConfigError(`invalid Llama config: ${key === 'attnCap' ? 'attnLogitSoftcap' : 'finalLogitSoftcap'} must be a positive number, got ${v}`);
  }
  if ([...r.noRope].some((l) => !Number.isInteger(l) || l < 0 || l >= r.layers)) {
    throw new LlamaConfigError(`invalid Llama config: noRopeLayers must list layers of 0..${r.layers - 1}`);
  }
  if (r.layerTypes.length !== r.layers || r.layerTypes.some((t) => !['full', 'sliding', 'conv', 'mamba', 'delta', 'mlp', 'mamba-attention'].includes(t))) {
    throw new LlamaConfigError(`invalid Llama config: layerTypes must list 'full', 'sliding', 'conv', 'mamba', 'delta', 'mlp' or 'mamba-attention' for each of the ${r.layers} layers`);
  }
  if (r.layerTypes.includes('mlp') && !r.single) throw new LlamaConfigError("invalid Llama config: 'mlp' layers are single blocks (singleBlocks)");
  if (r.single && (r.moe || r.parallel || r.postNorms || !r.preNorms)) throw new LlamaConfigError('invalid Llama config: singleBlocks take pre-norms, no post-norms, no parallel block and no moe');
  const deltas = r.layerTypes.filter((t) => t === 'delta').length;
  if (deltas > 0) {
    const d = r.delta;
    const whole = (n: number | undefined, least = 1) => Number.isInteger(n) && n! >= least;
    if (!d || !whole(d.convKernel, 2) || !whole(d.keyHeads) || !whole(d.keyDim) || !whole(d.valueHeads) || !whole(d.valueDim) || d.valueHeads % d.keyHeads !== 0) {
      throw new LlamaConfigError(`invalid Llama config: 'delta' layers need deltaNet sizes (whole key and value heads, the value heads a multiple of the key heads, their sizes, convKernel of 2 or more taps), got ${JSON.stringify(config.deltaNet)}`);
    }
  } else if (config.deltaNet !== undefined) throw new LlamaConfigError("invalid Llama config: deltaNet is for 'delta' layers, and layerTypes lists none");
  if (r.attnGate && (r.mla || r.qkvBias)) throw new LlamaConfigError('invalid Llama config: attentionGate does not take mla or qkvBias');
  const convs = r.layerTypes.filter((t) => t === 'conv').length;
  const mambas = r.layerTypes.filter((t) => t === 'mamba' || t === 'mamba-attention').length;
  if (convs > 0 && !(Number.isInteger(r.convKernel) && r.convKernel >= 2)) throw new LlamaConfigError(`invalid Llama config: 'conv' layers need a whole convKernel of 2 or more taps, got ${config.convKernel}`);
  if (convs === 0 && config.convKernel !== undefined) throw new LlamaConfigError("invalid Llama config: convKernel is for 'conv' layers, and layerTypes lists none");
  if (mambas > 0) {
    const m = r.mamba;
    const whole = (n: number | undefined, least = 1) => Number.isInteger(n) && n! >= least;
    if (!m || !whole(m.convKernel, 2) || !whole(m.heads) || !whole(m.headDim) || !whole(m.stateSize) || !whole(m.groups) || m.heads % m.groups !== 0) {
      throw new LlamaConfigError(`invalid Llama config: 'mamba' layers need mamba sizes (whole heads, headDim, stateSize, groups dividing the heads, convKernel of 2 or more taps), got ${JSON.stringify(config.mamba)}`);
    }
  } else if (config.mamba !== undefined) throw new LlamaConfigError("invalid Llama config: mamba is for 'mamba' layers, and layerTypes lists none");
  if (!r.layerTypes.some(layerAttends)) throw new LlamaConfigError("invalid Llama config: no layer is attention ('full' or 'sliding'); a model needs an attention layer");
  if (convs + mambas + deltas > 0 && (r.mla || r.parallel || r.postNorms || !r.preNorms)) throw new LlamaConfigError("invalid Llama config: 'conv', 'mamba' and 'delta' layers take pre-norms, no post-norms, no parallel block and no mla");
  if (r.layerTypes.includes('sliding') && !(Number.isInteger(r.window) && r.window! > 0)) {
    throw new LlamaConfigError(`invalid Llama config: sliding layers need a positive integer slidingWindow, got ${r.window}`);
  }
  return r;
}

/** Rows of `a` and `b` (each `rows` rows of `width` values) alternating: a0, b0, a1, b1, … (the MoE operators' SwiGLU fc1). */
function interleaveRows<T extends Float32Array | Uint8Array>(a: T, b: T, rows: number, width: number): T {
  const out = new (a.constructor as new (n: number) => T)(2 * rows * width);
  for (let r = 0; r < rows; r++) {
    out.set(a.subarray(r * width, (r + 1) * width), 2 * r * width);
    out.set(b.subarray(r * width, (r + 1) * width), (2 * r + 1) * width);
  }
  return out;
}

/** Number of parameters (weights) of a Llama decoder with this config; tied embeddings count once. */
export function llamaParameterCount(config: LlamaConfig): number {
  const c = resolve(config);
  const q = c.heads * c.headDim;
  const kv = c.kvHeads * c.headDim;
  const norms = (c.preNorms ? (c.parallel ? 1 : 2) * c.hidden * (c.normBias ? 2 : 1) : 0) + (c.postNorms ? 2 * c.hidden : 0);
  const attention =
    (c.mla ? mlaParameters(c) : (c.attnGate ? 2 : 1) * c.hidden * q + 2 * c.hidden * kv + q * c.hidden) + (c.qkvBias ? q + 2 * kv : 0) +
    (c.qkNorm ? qkNormSizes(c).reduce((a, b) => a + b) : 0) + (c.projectionBias ? c.hidden : 0) + (c.sinks ? c.heads : 0);
  const mlpBiases = c.projectionBias && !c.moe ? c.hidden + c.inter : 0;
  // A 'conv' layer's convolution stands where attention does: its input and output projections and its taps.
  const mamba = c.mamba ? (2 * c.mamba.inner + 2 * c.mamba.groups * c.mamba.stateSize + c.mamba.heads) * c.hidden + c.mamba.channels * (c.mamba.convKernel + 1) + 3 * c.mamba.heads + c.mamba.inner + c.hidden * c.mamba.inner : 0;
  const dn = c.delta;
  const delta = dn ? dn.channels * (c.hidden + dn.convKernel) + 2 * dn.valueHeads * dn.valueDim * c.hidden + dn.valueHeads * (2 * c.hidden + 2) + dn.valueDim : 0;
  const mixerOf = { conv: 4 * c.hidden * c.hidden + c.hidden * c.convKernel, mamba, delta, mlp: 0, 'mamba-attention': mamba + attention, full: attention, sliding: attention };
  const mixers = c.layerTypes.map((t) => mixerOf[t]).reduce((a, b) => a + b, 0);
  // (single blocks: one norm a layer, an MLP in the 'mlp' layers, a mixer in the others)
  const hasMlp = (i: number) => !c.single || c.layerTypes[i] === 'mlp';
  const mlps = Array.from({ length: c.layers }, (_, i) => (hasMlp(i) ? mlpParameters(c, i) + mlpBiases : 0)).reduce((a, b) => a + b, 0);
  const blockNorms = c.single ? c.layers * c.hidden : c.layers * norms;
  return c.vocab * c.hidden * (c.tied ? 1 : 2) + blockNorms + mixers + mlps + c.hidden * (c.normBias ? 2 : 1) + (c.headBias ? c.vocab : 0);
}

/** A layer's latent-attention parameters: the query's projections, the latent's and its norm, kB, vB and the output. */
function mlaParameters(c: Resolved): number {
  const { latent, rope, nope, value, qRank, qHead } = c.mla!;
  const query = qRank === undefined ? c.heads * qHead * c.hidden : qRank * c.hidden + qRank + c.heads * qHead * qRank;
  return query + (latent + rope) * c.hidden + latent + c.heads * latent * nope + c.heads * value * latent + c.hidden * c.heads * value;
}

/** The inner size of layer `i`'s dense MLP, or undefined where the layer is a mixture of experts. */
function denseInter(c: Resolved, i: number): number | undefined {
  if (!c.moe) return c.inter;
  const dense = c.moe.denseLayers;
  return dense && i < dense.count ? dense.intermediateSize : undefined;
}

/** Layer `i`'s MLP parameters: the dense MLP, or every expert, the router and the shared expert. */
function mlpParameters(c: Resolved, i: number): number {
  const inter = denseInter(c, i);
  if (inter !== undefined) return (c.gated ? 3 : 2) * c.hidden * inter;
  const moe = c.moe!;
  const shared = moe.sharedSize === undefined ? 0 : 3 * c.hidden * moe.sharedSize + (moe.sharedGate === false ? 0 : c.hidden);
  const biases = moe.biases ? 1 + 2 * c.inter + c.hidden : 0;
  return moe.experts * (3 * c.hidden * c.inter + c.hidden + biases + (moe.selectionBias ? 1 : 0)) + shared;
}

/** The lengths of a layer's q and k norm weights (qkNorm). */
function qkNormSizes(c: Resolved): [number, number] {
  return c.qkNormWidth === 'projection' ? [c.heads * c.headDim, c.kvHeads * c.headDim] : [c.headDim, c.headDim];
}

/**
 * Deterministic random weights for a config (same seed, same weights): projection and embedding matrices
 * ~ N(0, scale²), norm weights 1 + N(0, 0.05²). `scale` defaults to 0.02 (the usual Llama init).
 */
export function randomLlamaWeights(config: LlamaConfig, seed: number, scale = 0.02): LlamaWeights {
  const c = resolve(config);
  const normal = seededNormals(seed);
  const norm = () => normal(c.hidden, 0.05, 1);
  const q = c.heads * c.headDim;
  const kv = c.kvHeads * c.headDim;
  const embed = normal(c.vocab * c.hidden, scale);
  const layers: LlamaLayerWeights[] = [];
  for (let i = 0; i < c.layers; i++) {
    layers.push({
      attnNorm: norm(),
      wq: normal(q * c.hidden, scale),
      wk: normal(kv * c.hidden, scale),
      wv: normal(kv * c.hidden, scale),
      wo: normal(c.hidden * q, scale),
      mlpNorm: norm(),
      wGate: normal(c.inter * c.hidden, scale),
      wUp: normal(c.inter * c.hidden, scale),
      wDown: normal(c.hidden * c.inter, scale),
    });
  }
  // Variant weights are drawn after the plain ones, so a plain config keeps its weights.
  for (const [i, l] of layers.entries()) {
    if (c.qkvBias) Object.assign(l, { bq: normal(q, scale), bk: normal(kv, scale), bv: normal(kv, scale) });
    if (c.qkNorm) {
      const [qn, kn] = qkNormSizes(c);
      Object.assign(l, { qNorm: normal(qn, 0.05, 1), kNorm: normal(kn, 0.05, 1) });
    }
    if (c.postNorms) Object.assign(l, { postAttnNorm: norm(), postMlpNorm: norm() });
    if (!c.preNorms) {
      delete l.attnNorm;
      delete l.mlpNorm;
    }
    if (c.parallel) delete l.mlpNorm;
    if (!c.gated) delete l.wGate;
    if (c.normBias) Object.assign(l, l.attnNorm ? { attnNormBias: normal(c.hidden, scale) } : {}, l.mlpNorm ? { mlpNormBias: normal(c.hidden, scale) } : {});
    if (c.projectionBias) Object.assign(l, { bo: normal(c.hidden, scale), bUp: normal(c.inter, scale), bDown: normal(c.hidden, scale) });
    if (c.moe) {
      delete l.bUp;
      delete l.bDown;
      const inter = denseInter(c, i);
      if (inter !== undefined) Object.assign(l, { wGate: normal(inter * c.hidden, scale), wUp: normal(inter * c.hidden, scale), wDown: normal(c.hidden * inter, scale) });
      else {
        const { experts: e, sharedSize } = c.moe;
        delete l.wGate;
        delete l.wUp;
        delete l.wDown;
        // A router of larger weights than the projections', so that the experts' scores differ enough to order them.
        l.moe = { router: normal(e * c.hidden, 1), gate: normal(e * c.inter * c.hidden, scale), up: normal(e * c.inter * c.hidden, scale), down: normal(e * c.hidden * c.inter, scale) };
        if (sharedSize !== undefined) {
          l.moe.shared = { gate: normal(sharedSize * c.hidden, scale), up: normal(sharedSize * c.hidden, scale), down: normal(c.hidden * sharedSize, scale), router: normal(c.hidden, 1) };
          if (c.moe.sharedGate === false) delete l.moe.shared.router;
        }
        if (c.moe.biases) l.moe.biases = { router: normal(e, 1), gate: normal(e * c.inter, scale), up: normal(e * c.inter, scale), down: normal(e * c.hidden, scale) };
        // Of the sigmoid scores' size: enough to change which experts some tokens choose.
        if (c.moe.selectionBias) l.moe.selectionBias = normal(e, 0.3);
      }
    }
    if (c.sinks) l.sinks = normal(c.heads, 1);
    if (c.single) {
      delete l.mlpNorm;
      if (c.layerTypes[i] !== 'mlp') for (const key of ['wGate', 'wUp', 'wDown', 'bUp', 'bDown'] as const) delete l[key];
    }
    if (!layerAttends(c.layerTypes[i]!)) for (const key of ['wq', 'wk', 'wv', 'wo', 'bq', 'bk', 'bv', 'qNorm', 'kNorm', 'sinks', 'bo'] as const) delete l[key];
    // Taps of the size trained ones have, so the convolution matters next to the projections' small values.
    if (c.layerTypes[i] === 'conv') l.shortConv = { inProj: normal(3 * c.hidden * c.hidden, scale), kernel: normal(c.hidden * c.convKernel, 0.5), outProj: normal(c.hidden * c.hidden, scale) };
    if (c.layerTypes[i] === 'delta') {
      const { valueHeads, valueDim, channels, convKernel } = c.delta!;
      // g = A · softplus(α − 2) ≈ −0.2 a token: a state that decays by a fifth a token
      l.deltaNet = {
        qkv: normal(channels * c.hidden, scale),
        gate: normal(valueHeads * valueDim * c.hidden, scale),
        convKernel: normal(channels * convKernel, 0.5),
        beta: normal(valueHeads * c.hidden, scale),
        alpha: normal(valueHeads * c.hidden, scale),
        dtBias: normal(valueHeads, 0.5, -2),
        a: normal(valueHeads, 0.5, 0.5).map((v) => -Math.exp(v)),
        norm: normal(valueDim, 0.05, 1),
        outProj: normal(c.hidden * valueHeads * valueDim, scale),
      };
    }
    if (c.attnGate && l.wq) l.wq = normal(2 * q * c.hidden, scale);
    if (c.layerTypes[i] === 'mamba' || c.layerTypes[i] === 'mamba-attention') {
      const { heads, inner, channels, groups, stateSize, convKernel } = c.mamba!;
      // dt = softplus(… − 2) ≈ 0.13 a token, decay rates A of −e^(0.5 ± 0.5): a state that remembers a few tokens back
      l.mamba = {
        inProj: normal((2 * inner + 2 * groups * stateSize + heads) * c.hidden, scale),
        convKernel: normal(channels * convKernel, 0.5),
        convBias: normal(channels, 0.1),
        dtBias: normal(heads, 0.5, -2),
        a: normal(heads, 0.5, 0.5).map((v) => -Math.exp(v)),
        d: normal(heads, 0.5, 1),
        norm: normal(inner, 0.05, 1),
        outProj: normal(c.hidden * inner, scale),
      };
    }
    if (c.mla) {
      const { latent, rope, nope, value, qRank, qHead } = c.mla;
      delete l.wk;
      delete l.wv;
      l.wq = normal(c.heads * qHead * c.hidden, scale);
      l.wo = normal(c.hidden * c.heads * value, scale);
      l.mla = { kvA: normal((latent + rope) * c.hidden, scale), kvANorm: normal(latent, 0.05, 1), kB: normal(c.heads * latent * nope, scale), vB: normal(c.heads * value * latent, scale) };
      if (qRank !== undefined) {
        delete l.wq;
        Object.assign(l.mla, { qA: normal(qRank * c.hidden, scale), qANorm: normal(qRank, 0.05, 1), qB: normal(c.heads * qHead * qRank, scale) });
      }
    }
  }
  const finalNorm = norm();
  const biases = { ...(c.normBias ? { finalNormBias: normal(c.hidden, scale) } : {}), ...(c.headBias ? { lmHeadBias: normal(c.vocab, scale) } : {}) };
  return c.tied ? { embed, layers, finalNorm, ...biases } : { embed, layers, finalNorm, ...biases, lmHead: normal(c.vocab * c.hidden, scale) };
}

/** True for a matrix the builder reads when it comes to it. */
function isDeferred(m: SourceMatrix): m is DeferredMatrix {
  return !(m instanceof Float32Array) && m.kind === 'deferred';
}

/** A matrix in memory: a deferred one's values, read now. */
function loaded(m: SourceMatrix): WeightMatrix {
  return isDeferred(m) ? m.load() : m;
}

function checkWeights(c: Resolved, w: LlamaWeights<SourceMatrix>): void {
  const q = c.heads * c.headDim;
  const kv = c.kvHeads * c.headDim;
  const expect = (what: string, a: SourceMatrix | undefined, n: number) => {
    // (a deferred matrix's values are read later, by the build: its shape stands for them here)
    if (a && isDeferred(a)) {
      if (a.rows * a.cols !== n) throw new LlamaWeightsError(`Llama weights: ${what} is a ${a.rows}x${a.cols} matrix, the config needs ${n} values`);
      return;
    }
    if (a && !(a instanceof Float32Array)) {
      const { rows, cols, bits, blockSize, data, scales } = a;
      if (rows * cols !== n) throw new LlamaWeightsError(`Llama weights: ${what} is a ${rows}x${cols} quantized matrix, the config needs ${n} values`);
      if (cols % blockSize !== 0 || data.length !== rows * rowBytes(a) || scales.length !== rows * blocksPerRow(a)) {
        throw new LlamaWeightsError(`Llama weights: ${what} is a malformed quantized matrix (${bits}-bit, block ${blockSize}, ${data.length} code bytes, ${scales.length} scales)`);
      }
      return;
    }
    if (!(a instanceof Float32Array)) throw new LlamaWeightsError(`Llama weights: ${what} is missing (expected a Float32Array of ${n} values)`);
    if (a.length !== n) throw new LlamaWeightsError(`Llama weights: ${what} has ${a.length} values, the config needs ${n}`);
  };
  expect('embed', w.embed, c.vocab * c.hidden);
  if (w.layers.length !== c.layers) throw new LlamaWeightsError(`Llama weights: ${w.layers.length} layers given, the config has ${c.layers}`);
  w.layers.forEach((l, i) => {
    if (c.preNorms) {
      expect(`layers[${i}].attnNorm`, l.attnNorm, c.hidden);
      if (!c.parallel && !c.single) expect(`layers[${i}].mlpNorm`, l.mlpNorm, c.hidden);
      else if (l.mlpNorm) throw new LlamaWeightsError(`Llama weights: layers[${i}] has an MLP norm, but the config's ${c.single ? 'single blocks read one norm each' : 'parallel block reads the attention norm'}`);
    } else if (l.attnNorm || l.mlpNorm) {
      throw new LlamaWeightsError(`Llama weights: layers[${i}] has pre-norm weights, but the config has preNorms: false`);
    }
    const kind = c.layerTypes[i]!;
    // (a layer without attention: no attention weights, its mixer's instead, or none)
    const conv = !layerAttends(kind);
    if (conv) {
      const attention = (['wq', 'wk', 'wv', 'wo', 'mla', 'bq', 'bk', 'bv', 'qNorm', 'kNorm', 'sinks', 'bo'] as const).filter((k) => l[k]);
      if (attention.length) throw new LlamaWeightsError(`Llama weights: layers[${i}] is a '${kind}' layer but has attention weights (${attention.join(', ')})`);
    }
    if (kind === 'conv') {
      expect(`layers[${i}].shortConv.inProj`, l.shortConv?.inProj, 3 * c.hidden * c.hidden);
      expect(`layers[${i}].shortConv.kernel`, l.shortConv?.kernel, c.hidden * c.convKernel);
      expect(`layers[${i}].shortConv.outProj`, l.shortConv?.outProj, c.hidden * c.hidden);
    } else if (kind === 'mamba' || kind === 'mamba-attention') checkMamba(c, l, i, expect);
    else if (kind === 'delta') checkDeltaNet(c, l, i, expect);
    if (l.deltaNet && kind !== 'delta') throw new LlamaWeightsError(`Llama weights: layers[${i}] has a gated DeltaNet, but the config's layer ${i} is '${kind}'`);
    if (l.shortConv && kind !== 'conv') throw new LlamaWeightsError(`Llama weights: layers[${i}] has a short convolution, but the config's layer ${i} is '${kind}'`);
    if (l.mamba && kind !== 'mamba' && kind !== 'mamba-attention') throw new LlamaWeightsError(`Llama weights: layers[${i}] has a Mamba mixer, but the config's layer ${i} is '${kind}'`);
    if (c.mla && !conv) checkMla(c, l, i, expect);
    else if (!conv) {
      expect(`layers[${i}].wq${c.attnGate ? ' (query and gate: attentionGate)' : ''}`, l.wq, (c.attnGate ? 2 : 1) * q * c.hidden);
      expect(`layers[${i}].wk`, l.wk, kv * c.hidden);
      expect(`layers[${i}].wv`, l.wv, kv * c.hidden);
      expect(`layers[${i}].wo`, l.wo, c.hidden * q);
    }
    const inter = denseInter(c, i);
    // (single blocks: an MLP in the 'mlp' layers only)
    if (c.single && kind !== 'mlp') {
      if (l.wGate || l.wUp || l.wDown) throw new LlamaWeightsError(`Llama weights: layers[${i}] has MLP projections, but the config's single block ${i} is '${kind}'`);
    } else if (inter === undefined) {
      if (l.wGate || l.wUp || l.wDown) throw new LlamaWeightsError(`Llama weights: layers[${i}] has MLP projections, but the config's layer ${i} is a mixture of experts (moe)`);
      const { experts: e, sharedSize } = c.moe!;
      expect(`layers[${i}].moe.router`, l.moe?.router, e * c.hidden);
      expect(`layers[${i}].moe.gate`, l.moe?.gate, e * c.inter * c.hidden);
      expect(`layers[${i}].moe.up`, l.moe?.up, e * c.inter * c.hidden);
      expect(`layers[${i}].moe.down`, l.moe?.down, e * c.hidden * c.inter);
      const experts = [l.moe!.gate, l.moe!.up, l.moe!.down].filter((m): m is WeightMatrix => !isDeferred(m));
      if (experts.some(isQuantized)) {
        const q = experts.filter(isQuantized);
        const [first] = q;
        if (q.length !== 3 || q.some((m) => m.bits !== first!.bits || m.blockSize !== first!.blockSize || m.offsetColumns)) {
          throw new LlamaWeightsError(`Llama weights: layers[${i}].moe's gate, up and down must be dense, or quantized alike (same bits and block size, no offset columns)`);
        }
        // onnxruntime 1.30's 4-bit QMoE with zero points disagrees with its own dequantization, and it misreads zero points
        // of one block a row (measured); symmetric experts, and 8-bit zero points of several blocks a row, agree.
        if (first!.bits === 4 && q.some((m) => m.zeroPoints)) throw new LlamaWeightsError(`Llama weights: layers[${i}].moe's 4-bit experts must be symmetric (no zero points)`);
        if (q.some((m) => m.zeroPoints && m.cols === m.blockSize)) throw new LlamaWeightsError(`Llama weights: layers[${i}].moe's experts with zero points need two or more blocks a row`);
      }
      if (sharedSize !== undefined) {
        const shared = l.moe?.shared;
        expect(`layers[${i}].moe.shared.gate`, shared?.gate, sharedSize * c.hidden);
        expect(`layers[${i}].moe.shared.up`, shared?.up, sharedSize * c.hidden);
        expect(`layers[${i}].moe.shared.down`, shared?.down, c.hidden * sharedSize);
        if (c.moe!.sharedGate !== false) expect(`layers[${i}].moe.shared.router`, shared?.router, c.hidden);
        else if (shared?.router) throw new LlamaWeightsError(`Llama weights: layers[${i}] has a shared expert's gate, but the config's moe has sharedGate: false`);
      } else if (l.moe?.shared) throw new LlamaWeightsError(`Llama weights: layers[${i}] has a shared expert, but the config's moe has no sharedSize`);
      if (c.moe!.selectionBias) expect(`layers[${i}].moe.selectionBias`, l.moe?.selectionBias, e);
      else if (l.moe?.selectionBias) throw new LlamaWeightsError(`Llama weights: layers[${i}] has an expert selection bias, but the config's moe has no selectionBias`);
      if (c.moe!.biases) {
        const biases = l.moe?.biases;
        expect(`layers[${i}].moe.biases.router`, biases?.router, e);
        expect(`layers[${i}].moe.biases.gate`, biases?.gate, e * c.inter);
        expect(`layers[${i}].moe.biases.up`, biases?.up, e * c.inter);
        expect(`layers[${i}].moe.biases.down`, biases?.down, e * c.hidden);
      } else if (l.moe?.biases) throw new LlamaWeightsError(`Llama weights: layers[${i}] has expert biases, but the config's moe has no biases`);
    } else {
      if (l.moe) throw new LlamaWeightsError(`Llama weights: layers[${i}] has experts, but the config's layer ${i} is dense (${c.moe ? 'moe.denseLayers' : 'no moe'})`);
      if (c.gated) expect(`layers[${i}].wGate`, l.wGate, inter * c.hidden);
      else if (l.wGate) throw new LlamaWeightsError(`Llama weights: layers[${i}] has a gate projection, but the config's MLP is not gated (gatedMlp: false)`);
      expect(`layers[${i}].wUp`, l.wUp, inter * c.hidden);
      expect(`layers[${i}].wDown`, l.wDown, c.hidden * inter);
    }
    if (c.qkvBias && !conv) {
      expect(`layers[${i}].bq (qkvBias)`, l.bq, q);
      expect(`layers[${i}].bk (qkvBias)`, l.bk, kv);
      expect(`layers[${i}].bv (qkvBias)`, l.bv, kv);
    }
    if (c.qkNorm && !conv) {
      const [qn, kn] = qkNormSizes(c);
      expect(`layers[${i}].qNorm (qkNorm)`, l.qNorm, qn);
      expect(`layers[${i}].kNorm (qkNorm)`, l.kNorm, kn);
    }
    if (c.postNorms) {
      expect(`layers[${i}].postAttnNorm (postNorms)`, l.postAttnNorm, c.hidden);
      expect(`layers[${i}].postMlpNorm (postNorms)`, l.postMlpNorm, c.hidden);
    }
    if (c.normBias) {
      if (l.attnNorm) expect(`layers[${i}].attnNormBias (normBias)`, l.attnNormBias, c.hidden);
      if (l.mlpNorm) expect(`layers[${i}].mlpNormBias (normBias)`, l.mlpNormBias, c.hidden);
    }
    if (c.projectionBias) {
      if (!conv) expect(`layers[${i}].bo (projectionBias)`, l.bo, c.hidden);
      if (!c.moe) {
        expect(`layers[${i}].bUp (projectionBias)`, l.bUp, c.inter);
        expect(`layers[${i}].bDown (projectionBias)`, l.bDown, c.hidden);
      }
    }
    if (c.sinks && !conv) expect(`layers[${i}].sinks (attentionSinks)`, l.sinks, c.heads);
    else if (l.sinks) throw new LlamaWeightsError(`Llama weights: layers[${i}] has attention sinks, but the config has no attentionSinks`);
  });
  expect('finalNorm', w.finalNorm, c.hidden);
  if (c.normBias) expect('finalNormBias (normBias)', w.finalNormBias, c.hidden);
  if (c.headBias) expect('lmHeadBias (headBias)', w.lmHeadBias, c.vocab);
  if (!c.tied) expect('lmHead (the config does not tie embeddings)', w.lmHead, c.vocab * c.hidden);
}

/** A 'delta' layer's gated DeltaNet against the config (LlamaConfig.deltaNet). */
function checkDeltaNet(c: Resolved, l: LlamaLayerWeights<SourceMatrix>, i: number, expect: (what: string, a: SourceMatrix | undefined, n: number) => void): void {
  const { valueHeads, valueDim, channels, convKernel } = c.delta!;
  const d = l.deltaNet;
  expect(`layers[${i}].deltaNet.qkv`, d?.qkv, channels * c.hidden);
  expect(`layers[${i}].deltaNet.gate`, d?.gate, valueHeads * valueDim * c.hidden);
  expect(`layers[${i}].deltaNet.convKernel`, d?.convKernel, channels * convKernel);
  for (const key of ['beta', 'alpha'] as const) expect(`layers[${i}].deltaNet.${key}`, d?.[key], valueHeads * c.hidden);
  for (const key of ['dtBias', 'a'] as const) expect(`layers[${i}].deltaNet.${key}`, d?.[key], valueHeads);
  expect(`layers[${i}].deltaNet.norm`, d?.norm, valueDim);
  expect(`layers[${i}].deltaNet.outProj`, d?.outProj, c.hidden * valueHeads * valueDim);
}

/** A 'mamba' layer's mixer against the config (LlamaConfig.mamba). */
function checkMamba(c: Resolved, l: LlamaLayerWeights<SourceMatrix>, i: number, expect: (what: string, a: SourceMatrix | undefined, n: number) => void): void {
  const { heads, inner, channels, groups, stateSize, convKernel } = c.mamba!;
  const m = l.mamba;
  expect(`layers[${i}].mamba.inProj`, m?.inProj, (2 * inner + 2 * groups * stateSize + heads) * c.hidden);
  expect(`layers[${i}].mamba.convKernel`, m?.convKernel, channels * convKernel);
  if (m?.convBias) expect(`layers[${i}].mamba.convBias`, m.convBias, channels);
  for (const key of ['dtBias', 'a', 'd'] as const) expect(`layers[${i}].mamba.${key}`, m?.[key], heads);
  if (m?.norm) expect(`layers[${i}].mamba.norm`, m.norm, inner);
  expect(`layers[${i}].mamba.outProj`, m?.outProj, c.hidden * inner);
}

/** A latent-attention layer's weights against the config (LlamaConfig.mla). */
function checkMla(c: Resolved, l: LlamaLayerWeights<SourceMatrix>, i: number, expect: (what: string, a: SourceMatrix | undefined, n: number) => void): void {
  const { latent, rope, nope, value, qRank, qHead } = c.mla!;
  const m = l.mla;
  if (!m) throw new LlamaWeightsError(`Llama weights: layers[${i}].mla is missing (the config has mla)`);
  if (l.wk || l.wv) throw new LlamaWeightsError(`Llama weights: layers[${i}] has k or v projections, but the config's attention is latent (mla)`);
  if (qRank === undefined) expect(`layers[${i}].wq`, l.wq, c.heads * qHead * c.hidden);
  else {
    if (l.wq) throw new LlamaWeightsError(`Llama weights: layers[${i}] has wq, but the config's queries go through mla.qA and mla.qB (qLoraRank)`);
    expect(`layers[${i}].mla.qA`, m.qA, qRank * c.hidden);
    expect(`layers[${i}].mla.qANorm`, m.qANorm, qRank);
    expect(`layers[${i}].mla.qB`, m.qB, c.heads * qHead * qRank);
  }
  expect(`layers[${i}].mla.kvA`, m.kvA, (latent + rope) * c.hidden);
  expect(`layers[${i}].mla.kvANorm`, m.kvANorm, latent);
  expect(`layers[${i}].mla.kB`, m.kB, c.heads * latent * nope);
  expect(`layers[${i}].mla.vB`, m.vB, c.heads * value * latent);
  expect(`layers[${i}].wo`, l.wo, c.hidden * c.heads * value);
}

/** A projection as the body applies it: a dense `[in, out]` MatMul operand, or MatMulNBits initializers. */
type Linear =
  | { kind: 'dense'; w: string }
  | {
      kind: 'nbits';
      inputs: string[];
      attrs: { K: number; N: number; bits: number; block_size: number };
      /** With offset columns: the input is extended by its sums over blocks of this many columns. */
      offsetBlock?: number;
    };

/** Float-valued weight names (fp32 views) and projections the decoder body reads. */
interface LayerRefs {
  /** Absent without pre-norms (preNorms: false). */
  attnNorm?: string;
  /** q, k and v projections: one product `[hidden, q + 2 kv]` when they share a layout, else three concatenated. */
  wqkv: Linear[];
  /** None in a 'conv' layer. */
  wo?: Linear;
  /** A 'conv' layer's projections and taps `[convKernel, hidden, 1]` (see tapsOf). */
  shortConv?: { inProj: Linear; kernel: string; outProj: Linear };
  /**
   * A 'mamba' layer's mixer: its projections, taps `[K, C, 1]` and bias `[C, 1]`, dt's bias `[heads]`, A `[heads, 1]`, D
   * `[heads, 1, 1]` (shaped to broadcast over each head's positions), and the grouped norm's weight `[groups, I / groups]`.
   */
  mamba?: { inProj: Linear; convKernel: string; convBias?: string; dtBias: string; a: string; d: string; norm?: string; outProj: Linear };
  /** A 'delta' layer's projections, taps `[K, C, 1]`, dt's bias and A `[valueHeads]`, and the output norm `[valueDim]`. */
  deltaNet?: { qkv: Linear; gate: Linear; convKernel: string; beta: Linear; alpha: Linear; dtBias: string; a: string; norm: string; outProj: Linear };
  mlpNorm?: string;
  /** Absent for an ungated MLP, or a mixture of experts. */
  wGate?: Linear;
  /** Absent for a mixture of experts. */
  wUp?: Linear;
  wDown?: Linear;
  /**
   * A mixture of experts: the router, the MoE operator's expert tensors (with `quantized`: QMoE's codes, and their
   * scales, zero points or '', bits and block size), and the shared expert.
   */
  moe?: {
    router: Linear;
    fc1: string;
    fc2: string;
    quantized?: { scales: [string, string]; zeroPoints: [string, string]; bits: number; blockSize: number };
    shared?: { gate: Linear; up: Linear; down: Linear; router?: Linear };
    /** Added to the gating scores for choosing the experts (selectionBias). */
    selectionBias?: string;
    /** The router's bias, and fc1's (gate and up interleaved) and fc2's biases `[E, 2I]`, `[E, H]`. */
    biases?: { router: string; fc1: string; fc2: string };
  };
  /**
   * Latent attention: the query's projection (`wq`, or `qB` after `qA` and its norm), the latent's and its norm, and the
   * per-head `kB` `[H, N, L]` and `vB` `[H, L, V]` as MatMul takes them.
   */
  mla?: { q: Linear; qA?: { a: Linear; norm: string }; kvA: Linear; kvANorm: string; kB: string; vB: string };
  /** The heads' sink logits `[1, heads, 1, 1]` (`[1, kvHeads, rep, 1, 1]` grouped), attentionSinks. */
  sinks?: string;
  /** LayerNorm biases (normBias). */
  attnNormBias?: string;
  mlpNormBias?: string;
  /** Projection biases (projectionBias). */
  bo?: string;
  bUp?: string;
  bDown?: string;
  /** q, k and v biases side by side `[q + 2 kv]` (qkvBias). */
  bqkv?: string;
  /** q's norm weight repeated per q head, then k's per kv head: `[heads + kvHeads, 1, headDim]` (qkNorm). */
  qkNorm?: string;
  /** q's and k's norm weights over their whole projections (qkNormWidth: 'projection'). */
  projectionNorms?: [string, string];
  postAttnNorm?: string;
  postMlpNorm?: string;
}

/**
 * Builds the ONNX model of a Llama decoder (optimum `text-generation-with-past` I/O names; see
 * {@link LlamaBuildOptions} for the optional inputs and outputs). Weights are copied (and transposed to
 * `[in, out]` for MatMul); the inputs are not modified. The result can be passed to `encodeModel`/`writeModel`.
 * `onInitializer` sees each initializer as soon as it is made (see GraphBuilder); a {@link DeferredMatrix} is loaded
 * just before its initializer is made, so a writer that moves each one out there holds one matrix's values at a time.
 */
export function buildLlamaModel(
  config: LlamaConfig,
  weights: LlamaWeights<SourceMatrix>,
  options: LlamaBuildOptions = {},
  onInitializer?: (tensor: TensorProto) => void,
): O.IModelProto {
  const c = resolve(config);
  checkWeights(c, weights);
  const fp16 = options.dtype === 'float16';
  if (options.dtype !== undefined && options.dtype !== 'float32' && !fp16) throw new RangeError(`unknown dtype ${String(options.dtype)}`);
  const ioType = fp16 ? DataType.FLOAT16 : DataType.FLOAT;
  if (options.kvDtype !== undefined && options.kvDtype !== 'float32' && options.kvDtype !== 'float16') throw new RangeError(`unknown kvDtype ${String(options.kvDtype)}`);
  // (keys and values in fp16: the cache's I/O, GroupQueryAttention's inputs and rotary tables)
  const kvFp16 = fp16 || options.kvDtype === 'float16';
  const kvType = kvFp16 ? DataType.FLOAT16 : DataType.FLOAT;
  const idsType = options.idsType === 'int32' ? DataType.INT32 : DataType.INT64;
  const gqa = options.attention === 'gqa';
  if (options.attention !== undefined && options.attention !== 'ops' && !gqa) throw new RangeError(`unknown attention ${String(options.attention)}`);
  if (gqa && options.positionIds) throw new RangeError('GroupQueryAttention graphs take positions from attention_mask (seqlens_k); they have no position_ids input');
  if (gqa && c.headDim % 8 !== 0) throw new RangeError(`onnxruntime's GroupQueryAttention takes heads whose size is a multiple of 8, not ${c.headDim}: build this model with attention 'ops'`);
  const withPositions = options.positionIds ?? !gqa;
  const maxPositions = options.maxPositions ?? 4096;
  if (gqa && !(Number.isInteger(maxPositions) && maxPositions > 0)) throw new RangeError(`maxPositions must be a positive integer, got ${maxPositions}`);
  const merged = options.mergedDecoder ?? false;
  const keepLogits = options.numLogitsToKeep ?? false;
  const withHidden = options.outputHidden ?? false;
  const withEmbeds = options.inputsEmbeds ?? false;
  if (options.kvOutput !== undefined && options.kvOutput !== 'joined' && options.kvOutput !== 'new') throw new RangeError(`unknown kvOutput ${String(options.kvOutput)}`);
  const appendsKv = options.kvOutput === 'new';
  if (appendsKv && gqa) throw new RangeError("kvOutput 'new' needs attention 'ops' (GroupQueryAttention joins the cache itself)");
  if (appendsKv && c.layerTypes.includes('sliding')) throw new RangeError("kvOutput 'new' cannot write sliding-window layers: their window is counted in cache slots, which a cache with room to spare does not keep in step with positions");
  const { hidden, heads, kvHeads, headDim, vocab, inter } = c;
  const qDim = heads * headDim;
  const kvDim = kvHeads * headDim;

  const g = new GraphBuilder('', undefined, onInitializer);

  // ---- graph inputs and outputs (names reserved first so nothing else can take them)
  const seq = 'sequence_length';
  const inputs: ValueInfoProto[] = [];
  const addInput = (name: string, type: number, shape: (string | number)[]) => {
    inputs.push(makeValueInfo(g.reserve(name), type, shape));
    return name;
  };
  const inputIds = addInput('input_ids', idsType, ['batch_size', withEmbeds ? 'ids_length' : seq]);
  const embedsIn = withEmbeds ? addInput('inputs_embeds', ioType, ['batch_size', 'embeds_length', hidden]) : undefined;
  const attentionMask = addInput('attention_mask', idsType, ['batch_size', 'total_sequence_length']);
  const positionIds = withPositions ? addInput('position_ids', idsType, ['batch_size', seq]) : undefined;
  // Each layer's cache: an attention layer's keys and values, a 'conv' layer's last inputs (transformers.js's names).
  const past: ([string, string] | undefined)[] = [];
  const convPast: (string | undefined)[] = [];
  const ssmPast: (string | undefined)[] = [];
  // (time-major: the last inputs one row each, see causalConv)
  const convShape = (i: number) =>
    c.layerTypes[i] === 'conv' ? ['batch_size', c.convKernel - 1, hidden] : c.layerTypes[i] === 'delta' ? ['batch_size', c.delta!.convKernel - 1, c.delta!.channels] : ['batch_size', c.mamba!.convKernel - 1, c.mamba!.channels];
  // A Mamba2 layer's SSM state, or a gated DeltaNet's matrix state (transformers.js names the latter past_recurrent).
  const stateOf = (i: number): { name: string; shape: (string | number)[] } | undefined =>
    c.layerTypes[i] === 'mamba' || c.layerTypes[i] === 'mamba-attention'
      ? { name: 'ssm', shape: ['batch_size', c.mamba!.heads, c.mamba!.headDim, c.mamba!.stateSize] }
      : c.layerTypes[i] === 'delta'
        ? { name: 'recurrent', shape: ['batch_size', c.delta!.valueHeads, c.delta!.valueDim, c.delta!.keyDim] }
        : undefined;
  for (let i = 0; i < c.layers; i++) {
    const shape = ['batch_size', kvHeads, 'past_sequence_length', headDim];
    const kind = c.layerTypes[i]!;
    // (a 'mamba-attention' layer keeps both: keys and values, and its mixer's states; an 'mlp' layer neither)
    convPast.push(layerConvolves(kind) ? addInput(`past_conv.${i}`, ioType, convShape(i)) : undefined);
    // (a state summing a whole sequence is kept in float32 whatever the graph's type)
    const state = stateOf(i);
    ssmPast.push(state ? addInput(`past_${state.name}.${i}`, DataType.FLOAT, state.shape) : undefined);
    past.push(layerAttends(kind) ? [addInput(`past_key_values.${i}.key`, kvType, shape), addInput(`past_key_values.${i}.value`, kvType, shape)] : undefined);
  }
  const useCacheBranch = merged ? addInput('use_cache_branch', DataType.BOOL, [1]) : undefined;
  const numLogits = keepLogits ? addInput('num_logits_to_keep', DataType.INT64, []) : undefined;

  const outputSpecs: { name: string; shape: (string | number)[]; type?: number }[] = [
    { name: 'logits', shape: ['batch_size', keepLogits ? 'logits_length' : seq, vocab] },
  ];
  for (let i = 0; i < c.layers; i++) {
    const kind = c.layerTypes[i]!;
    if (layerConvolves(kind)) outputSpecs.push({ name: `present_conv.${i}`, shape: convShape(i) });
    if (layerAttends(kind)) {
      const [stem, length] = appendsKv ? ['new_key_values', 'new_sequence_length'] : ['present', 'total_sequence_length'];
      const kvShape = ['batch_size', kvHeads, length, headDim];
      outputSpecs.push({ name: `${stem}.${i}.key`, shape: kvShape, type: kvType }, { name: `${stem}.${i}.value`, shape: kvShape, type: kvType });
    }
    const state = stateOf(i);
    if (state) outputSpecs.push({ name: `present_${state.name}.${i}`, shape: state.shape, type: DataType.FLOAT });
  }
  if (withHidden) outputSpecs.push({ name: 'last_hidden_state', shape: ['batch_size', seq, hidden] });
  for (const o of outputSpecs) g.reserve(o.name);
  const outputs = outputSpecs.map((o) => makeValueInfo(o.name, o.type ?? ioType, o.shape));

  // ---- weights: stored as initializers (fp16 or fp32), read through an fp32 view (a Cast for fp16)
  const stored = (name: string, dims: number[], data: Float32Array): string =>
    g.initializer(
      fp16 ? makeTensor(name, DataType.FLOAT16, dims, float32ArrayToFloat16(data)) : makeTensor(name, DataType.FLOAT, dims, data),
    );
  const asFloat = (name: string): string => (fp16 ? g.op('Cast', [name], { to: DataType.FLOAT }, g.fresh(`${name}.f32`)) : name);
  const accuracyLevel = options.quantAccuracyLevel ?? 4;
  let usesContribOps = false;
  /** MatMulNBits initializers of a quantized `[out, in]` matrix (scales fp32: the operator's A is fp32 here). */
  const nbits = (name: string, m: QuantizedMatrix, codes?: string): Linear => {
    usesContribOps = true;
    const blocks = blocksPerRow(m);
    const B = codes ?? g.initializer(makeTensor(`${name}.qweight`, DataType.UINT8, [m.rows, blocks, (m.blockSize * m.bits) / 8], m.data));
    const inputs = [B, g.initializer(makeTensor(`${name}.scales`, DataType.FLOAT, [m.rows * blocks], m.scales))];
    if (m.zeroPoints) inputs.push(g.initializer(makeTensor(`${name}.qzeros`, DataType.UINT8, [m.zeroPoints.length], m.zeroPoints)));
    const attrs = { K: storedColumns(m), N: m.rows, bits: m.bits, block_size: m.blockSize };
    return { kind: 'nbits', inputs, attrs, ...(m.offsetColumns ? { offsetBlock: m.blockSize } : {}) };
  };
  const matrix = (name: string, out: number, inp: number, source: SourceMatrix): Linear => {
    const data = loaded(source);
    return isQuantized(data) ? nbits(name, data) : { kind: 'dense', w: asFloat(stored(`${name}.T`, [inp, out], transpose2d(data, out, inp))) };
  };
  const denseOf = (l: Linear): string => (l.kind === 'dense' ? l.w : '');
  /** q, k and v as one product where their layouts allow (onnxruntime folds a dense Concat at load). */
  const qkvLinears = (p: string, l: LlamaLayerWeights<SourceMatrix>): Linear[] => {
    const all = [l.wq!, l.wk!, l.wv!];
    if (all.every((m) => !isDeferred(m) && isQuantized(m))) {
      const cat = concatRows(all as QuantizedMatrix[]);
      if (cat) return [nbits(`${p}.self_attn.qkv_proj.weight`, cat)];
    }
    const parts = [
      matrix(`${p}.self_attn.q_proj.weight`, c.attnGate ? 2 * qDim : qDim, hidden, l.wq!),
      matrix(`${p}.self_attn.k_proj.weight`, kvDim, hidden, l.wk!),
      matrix(`${p}.self_attn.v_proj.weight`, kvDim, hidden, l.wv!),
    ];
    if (parts.some((x) => x.kind !== 'dense')) return parts;
    // Stored apart under their usual names; onnxruntime folds the Concat into one matrix at load, once for
    // both branches of a merged decoder, so q, k and v come from one product.
    return [{ kind: 'dense', w: g.op('Concat', parts.map(denseOf), { axis: 1 }, g.fresh(`${p}.self_attn.qkv_proj.weight.T`)) }];
  };
  const vector = (name: string, data: Float32Array): string => asFloat(stored(name, [data.length], data));
  const normVector = (name: string, data: Float32Array): string =>
    vector(name, c.normOffset === 0 ? data : data.map((x) => x + c.normOffset));

  /**
   * The q and k norm weights as one table, so one RMSNorm covers q and k: `[heads + kvHeads, 1, headDim]` for heads
   * laid out [B, heads, S, headDim]; `[heads + kvHeads, headDim]` for GroupQueryAttention's [B, S, heads, headDim].
   */
  function qkNormWeight(p: string, qw: Float32Array, kw: Float32Array): string {
    const q = normVector(`${p}.self_attn.q_norm.weight`, qw);
    const k = normVector(`${p}.self_attn.k_norm.weight`, kw);
    const row = gqa ? [1, headDim] : [1, 1, headDim];
    const rows = (w: string, n: number) => g.op('Expand', [g.op('Reshape', [w, g.i64(row)]), g.i64([n, ...row.slice(1)])]);
    return g.op('Concat', [rows(q, heads), rows(k, kvHeads)], { axis: 0 }, g.fresh(`${p}.self_attn.qk_norm.weight`));
  }
  // The embedding stays in its storage type: Gather reads a few rows, which are cast afterwards. A quantized
  // one is read by GatherBlockQuantized from the same codes a tied head's MatMulNBits uses: two initializers
  // (each operator's shape) over one array, which external data writes once. Not a Reshape of the embedding:
  // onnxruntime would fold it into a copy at every session creation (Qwen2.5-0.5B's 136 MB head: +0.7 s).
  const embedQ = !isDeferred(weights.embed) && isQuantized(weights.embed) ? weights.embed : undefined;
  if (embedQ) usesContribOps = true;
  if (embedQ?.offsetColumns) throw new LlamaWeightsError('Llama weights: a quantized embedding cannot have offset columns (GatherBlockQuantized reads plain blocks)');
  const embedStored = embedQ
    ? g.initializer(makeTensor('model.embed_tokens.qweight', DataType.UINT8, [vocab, (hidden * embedQ.bits) / 8], embedQ.data))
    : stored('model.embed_tokens.weight', [vocab, hidden], loaded(weights.embed) as Float32Array);
  const embedQInputs = embedQ
    ? [
        g.initializer(makeTensor('model.embed_tokens.scales', DataType.FLOAT, [vocab, hidden / embedQ.blockSize], embedQ.scales)),
        ...(embedQ.zeroPoints
          ? [g.initializer(makeTensor('model.embed_tokens.qzeros', DataType.UINT8, [vocab, embedQ.zeroPoints.length / vocab], embedQ.zeroPoints))]
          : []),
      ]
    : [];
  const layerRefs: LayerRefs[] = weights.layers.map((l, i) => {
    const p = `model.layers.${i}`;
    return {
      ...(l.attnNorm ? { attnNorm: normVector(`${p}.input_layernorm.weight`, l.attnNorm) } : {}),
      wqkv: l.wq && !l.mla ? qkvLinears(p, l) : [],
      ...(l.mamba ? { mamba: mambaRefs(p, l.mamba) } : {}),
      ...(l.deltaNet ? { deltaNet: deltaNetRefs(p, l.deltaNet) } : {}),
      ...(l.wo ? { wo: matrix(`${p}.self_attn.o_proj.weight`, hidden, c.mla ? heads * c.mla.value : qDim, l.wo) } : {}),
      ...(l.shortConv
        ? {
            shortConv: {
              inProj: matrix(`${p}.conv.in_proj.weight`, 3 * hidden, hidden, l.shortConv.inProj),
              kernel: tapsOf(`${p}.conv.conv.weight`, l.shortConv.kernel, hidden, c.convKernel),
              outProj: matrix(`${p}.conv.out_proj.weight`, hidden, hidden, l.shortConv.outProj),
            },
          }
        : {}),
      ...(l.mla ? { mla: mlaRefs(p, l.mla, l.wq) } : {}),
      // Gemma's names: its "post_attention_layernorm" follows attention, the MLP's input norm is "pre_feedforward".
      ...(l.mlpNorm ? { mlpNorm: normVector(c.postNorms ? `${p}.pre_feedforward_layernorm.weight` : `${p}.post_attention_layernorm.weight`, l.mlpNorm) } : {}),
      ...(l.wGate ? { wGate: matrix(`${p}.mlp.gate_proj.weight`, denseInter(c, i)!, hidden, l.wGate) } : {}),
      ...(l.wUp ? { wUp: matrix(`${p}.mlp.up_proj.weight`, denseInter(c, i)!, hidden, l.wUp) } : {}),
      ...(l.wDown ? { wDown: matrix(`${p}.mlp.down_proj.weight`, hidden, denseInter(c, i)!, l.wDown) } : {}),
      ...(l.moe ? { moe: expertRefs(p, l.moe) } : {}),
      ...(l.sinks ? { sinks: sinkLogits(p, l.sinks) } : {}),
      ...(l.attnNormBias ? { attnNormBias: vector(`${p}.input_layernorm.bias`, l.attnNormBias) } : {}),
      ...(l.mlpNormBias ? { mlpNormBias: vector(`${p}.post_attention_layernorm.bias`, l.mlpNormBias) } : {}),
      ...(l.bo ? { bo: vector(`${p}.self_attn.o_proj.bias`, l.bo) } : {}),
      ...(l.bUp ? { bUp: vector(`${p}.mlp.up_proj.bias`, l.bUp) } : {}),
      ...(l.bDown ? { bDown: vector(`${p}.mlp.down_proj.bias`, l.bDown) } : {}),
      ...(c.qkvBias && l.wq
        ? {
            bqkv: g.op(
              'Concat',
              [vector(`${p}.self_attn.q_proj.bias`, l.bq!), vector(`${p}.self_attn.k_proj.bias`, l.bk!), vector(`${p}.self_attn.v_proj.bias`, l.bv!)],
              { axis: 0 },
              g.fresh(`${p}.self_attn.qkv_proj.bias`),
            ),
          }
        : {}),
      ...(c.qkNorm && c.qkNormWidth === 'head' && l.wq ? { qkNorm: qkNormWeight(p, l.qNorm!, l.kNorm!) } : {}),
      ...(c.qkNorm && c.qkNormWidth === 'projection' && l.wq
        ? { projectionNorms: [normVector(`${p}.self_attn.q_norm.weight`, l.qNorm!), normVector(`${p}.self_attn.k_norm.weight`, l.kNorm!)] as [string, string] }
        : {}),
      ...(c.postNorms
        ? {
            postAttnNorm: normVector(`${p}.post_attention_layernorm.weight`, l.postAttnNorm!),
            postMlpNorm: normVector(`${p}.post_feedforward_layernorm.weight`, l.postMlpNorm!),
          }
        : {}),
    };
  });
  /**
   * A mixture of experts' initializers: the MoE operator's fc1 `[E, 2I, H]` with each expert's gate and up rows
   * interleaved (its SwiGLU layout: gate i, then up i) and fc2 `[E, H, I]`, both `[out, in]` as GGUF stores them.
   */
  function expertRefs(p: string, m: MoeWeights<SourceMatrix>): NonNullable<LayerRefs['moe']> {
    usesContribOps = true;
    const e = c.moe!.experts;
    const shared = m.shared && c.moe!.sharedSize;
    return {
      router: matrix(`${p}.mlp.gate.weight`, e, hidden, m.router),
      ...(!isDeferred(m.gate) && isQuantized(m.gate) ? quantizedExperts(p, m) : denseExperts(p, m)),
      ...(m.shared && shared
        ? {
            shared: {
              gate: matrix(`${p}.mlp.shared_expert.gate_proj.weight`, shared, hidden, m.shared.gate),
              up: matrix(`${p}.mlp.shared_expert.up_proj.weight`, shared, hidden, m.shared.up),
              down: matrix(`${p}.mlp.shared_expert.down_proj.weight`, hidden, shared, m.shared.down),
              ...(m.shared.router ? { router: matrix(`${p}.mlp.shared_expert_gate.weight`, 1, hidden, m.shared.router) } : {}),
            },
          }
        : {}),
      ...(m.selectionBias ? { selectionBias: vector(`${p}.mlp.gate.e_score_correction_bias`, m.selectionBias) } : {}),
      ...(m.biases
        ? {
            biases: {
              router: vector(`${p}.mlp.router.bias`, m.biases.router),
              fc1: asFloat(stored(`${p}.mlp.experts.gate_up_proj.bias`, [e, 2 * inter], interleaveRows(m.biases.gate, m.biases.up, e * inter, 1))),
              fc2: asFloat(stored(`${p}.mlp.experts.down_proj.bias`, [e, hidden], m.biases.down)),
            },
          }
        : {}),
    };
  }
  /** A causal convolution's taps `[channels, taps]` stored tap-major, `[taps, channels]`: each tap a row the graph weighs a shifted window by. */
  function tapsOf(name: string, kernel: Float32Array, channels: number, taps: number): string {
    return asFloat(stored(name, [taps, channels], transpose2d(kernel, channels, taps)));
  }
  /** A 'delta' layer's initializers (see LayerRefs.deltaNet). */
  function deltaNetRefs(p: string, d: DeltaNetWeights<SourceMatrix>): NonNullable<LayerRefs['deltaNet']> {
    const { valueHeads, valueDim, channels, convKernel } = c.delta!;
    return {
      qkv: matrix(`${p}.linear_attn.in_proj_qkv.weight`, channels, hidden, d.qkv),
      gate: matrix(`${p}.linear_attn.in_proj_z.weight`, valueHeads * valueDim, hidden, d.gate),
      convKernel: tapsOf(`${p}.linear_attn.conv1d.weight`, d.convKernel, channels, convKernel),
      beta: matrix(`${p}.linear_attn.in_proj_b.weight`, valueHeads, hidden, d.beta),
      alpha: matrix(`${p}.linear_attn.in_proj_a.weight`, valueHeads, hidden, d.alpha),
      dtBias: vector(`${p}.linear_attn.dt_bias`, d.dtBias),
      a: vector(`${p}.linear_attn.A`, d.a),
      norm: vector(`${p}.linear_attn.norm.weight`, d.norm),
      outProj: matrix(`${p}.linear_attn.out_proj.weight`, hidden, valueHeads * valueDim, d.outProj),
    };
  }
  /** A 'mamba' layer's initializers (see LayerRefs.mamba). */
  function mambaRefs(p: string, m: MambaWeights<SourceMatrix>): NonNullable<LayerRefs['mamba']> {
    const { heads, inner, channels, groups, stateSize, convKernel } = c.mamba!;
    return {
      inProj: matrix(`${p}.mixer.in_proj.weight`, 2 * inner + 2 * groups * stateSize + heads, hidden, m.inProj),
      convKernel: tapsOf(`${p}.mixer.conv1d.weight`, m.convKernel, channels, convKernel),
      ...(m.convBias ? { convBias: vector(`${p}.mixer.conv1d.bias`, m.convBias) } : {}),
      dtBias: vector(`${p}.mixer.dt_bias`, m.dtBias),
      a: asFloat(stored(`${p}.mixer.A`, [heads, 1], m.a)),
      d: asFloat(stored(`${p}.mixer.D`, [heads, 1, 1], m.d)),
      ...(m.norm ? { norm: asFloat(stored(`${p}.mixer.norm.weight`, [groups, inner / groups], m.norm)) } : {}),
      outProj: matrix(`${p}.mixer.out_proj.weight`, hidden, inner, m.outProj),
    };
  }
  /** A latent-attention layer's initializers (see LayerRefs.mla): kB and vB transposed per head, `[in, out]` as MatMul takes them. */
  function mlaRefs(p: string, m: MlaWeights<SourceMatrix>, wq: SourceMatrix | undefined): NonNullable<LayerRefs['mla']> {
    const { latent, rope, nope, value, qRank, qHead } = c.mla!;
    const perHead = (name: string, data: Float32Array, rows: number, cols: number) => {
      const out = new Float32Array(data.length);
      for (let h = 0; h < heads; h++) out.set(transpose2d(data.subarray(h * rows * cols, (h + 1) * rows * cols), rows, cols), h * rows * cols);
      return asFloat(stored(name, [heads, cols, rows], out));
    };
    return {
      q: qRank === undefined ? matrix(`${p}.self_attn.q_proj.weight`, heads * qHead, hidden, wq!) : matrix(`${p}.self_attn.q_b_proj.weight`, heads * qHead, qRank, m.qB!),
      ...(qRank !== undefined ? { qA: { a: matrix(`${p}.self_attn.q_a_proj.weight`, qRank, hidden, m.qA!), norm: normVector(`${p}.self_attn.q_a_layernorm.weight`, m.qANorm!) } } : {}),
      kvA: matrix(`${p}.self_attn.kv_a_proj_with_mqa.weight`, latent + rope, hidden, m.kvA),
      kvANorm: normVector(`${p}.self_attn.kv_a_layernorm.weight`, m.kvANorm),
      kB: perHead(`${p}.self_attn.k_b_proj.weight`, m.kB, latent, nope),
      vB: perHead(`${p}.self_attn.v_b_proj.weight`, m.vB, value, latent),
    };
  }
  /**
   * A layer's sink logits shaped to stand beside the attention scores as one more key: `[1, heads, 1, 1]` or, with
   * queries grouped by kv head, `[1, kvHeads, rep, 1, 1]` (head h is group h / rep, member h % rep: the same order);
   * GroupQueryAttention's `head_sink` `[heads]`, in the type its query has.
   */
  function sinkLogits(p: string, sinks: Float32Array): string {
    const rep = heads / kvHeads;
    if (gqa) return stored(`${p}.self_attn.sinks`, [heads], sinks);
    return asFloat(stored(`${p}.self_attn.sinks`, rep === 1 ? [1, heads, 1, 1] : [1, kvHeads, rep, 1, 1], sinks));
  }
  /** fc1 and fc2 of the MoE operator from dense experts (down read once fc1 is stored). */
  function denseExperts(p: string, m: MoeWeights<SourceMatrix>): { fc1: string; fc2: string } {
    const e = c.moe!.experts;
    const dense = (x: SourceMatrix) => loaded(x) as Float32Array;
    const fc1 = asFloat(stored(`${p}.mlp.experts.gate_up_proj.weight`, [e, 2 * inter, hidden], interleaveRows(dense(m.gate), dense(m.up), e * inter, hidden)));
    return { fc1, fc2: asFloat(stored(`${p}.mlp.experts.down_proj.weight`, [e, hidden, inter], dense(m.down))) };
  }
  /**
   * fc1 and fc2 of the QMoE operator from experts quantized alike: codes `[E, rows, cols · bits / 8]`, float scales and
   * (8-bit) zero points `[E, rows, blocks]`, fc1's gate and up rows interleaved as for dense experts.
   */
  function quantizedExperts(p: string, m: MoeWeights<SourceMatrix>): { fc1: string; fc2: string; quantized: { scales: [string, string]; zeroPoints: [string, string]; bits: number; blockSize: number } } {
    const e = c.moe!.experts;
    const [gate, up, down] = [m.gate, m.up, m.down] as QuantizedMatrix[];
    const { bits, blockSize } = gate!;
    const initializers = (name: string, rows: number, cols: number, q: { data: Uint8Array; scales: Float32Array; zeroPoints?: Uint8Array }) => {
      const blocks = cols / blockSize;
      return [
        g.initializer(makeTensor(`${name}.qweight`, DataType.UINT8, [e, rows, (cols * bits) / 8], q.data)),
        g.initializer(makeTensor(`${name}.scales`, DataType.FLOAT, [e, rows, blocks], q.scales)),
        q.zeroPoints ? g.initializer(makeTensor(`${name}.qzeros`, DataType.UINT8, [e, rows, blocks], q.zeroPoints)) : '',
      ];
    };
    const zeroPointsOf = (m: QuantizedMatrix): Uint8Array => m.zeroPoints ?? new Uint8Array(m.scales.length).fill(1 << (bits - 1));
    // Gate's and up's rows alternate; a row is as wide in codes, scales or zero points as each holds.
    const both = <T extends Uint8Array | Float32Array>(x: T, y: T): T => interleaveRows(x, y, e * inter, x.length / (e * inter));
    const fc1 = initializers(`${p}.mlp.experts.gate_up_proj`, 2 * inter, hidden, {
      data: both(gate!.data, up!.data),
      scales: both(gate!.scales, up!.scales),
      // One of the two without zero points takes the midpoint, which is what its codes mean.
      ...(gate!.zeroPoints || up!.zeroPoints ? { zeroPoints: both(zeroPointsOf(gate!), zeroPointsOf(up!)) } : {}),
    });
    const fc2 = initializers(`${p}.mlp.experts.down_proj`, hidden, inter, down!);
    return { fc1: fc1[0]!, fc2: fc2[0]!, quantized: { scales: [fc1[1]!, fc2[1]!], zeroPoints: [fc1[2]!, fc2[2]!], bits, blockSize } };
  }
  const finalNorm = normVector('model.norm.weight', weights.finalNorm);
  const finalNormBias = weights.finalNormBias ? vector('model.norm.bias', weights.finalNormBias) : undefined;
  const headBias = weights.lmHeadBias ? vector('lm_head.bias', weights.lmHeadBias) : undefined;
  const lmHead: Linear = !c.tied
    ? matrix('lm_head.weight', vocab, hidden, weights.lmHead!)
    : embedQ
      ? nbits('lm_head', embedQ)
      : { kind: 'dense', w: g.op('Transpose', [asFloat(embedStored)], { perm: [1, 0] }, g.fresh('lm_head.weight.T')) };
  // Inverse frequencies with the linear scale and per-frequency factors folded in (llama.cpp's
  // theta = pos * scale * base^(-2j/d) / factor[j], d the rotated dimensions); the sliding layers may have their own base and scale.
  const rotHalf = c.ropeDims / 2;
  const invFreqValues = (theta: number, scale: number, factors = c.longRope?.short ?? c.freqFactors): Float32Array =>
    Float32Array.from({ length: rotHalf }, (_, j) => {
      const f = Math.pow(theta, (-2 * j) / c.ropeDims);
      return (scale === 1 ? f : f / scale) / (factors ? factors[j]! : 1);
    });
  const hasSliding = c.layerTypes.includes('sliding');
  const localRope = hasSliding && (c.thetaLocal !== c.theta || c.ropeScaleLocal !== c.ropeScale);
  // (Granite 4.0-H's attention layers have no position encoding: no tables then)
  const ropeUsed = c.layerTypes.some((t, i) => layerAttends(t) && !c.noRope.has(i));
  // GroupQueryAttention's CPU kernel rotates inside only heads whose size is a multiple of 16; others by ops before it.
  // Its cos/sin caches are one table for the whole batch, so LongRoPE's choice of table per row is made by ops too,
  // and so is a partial rotation.
  // The same bounds hold for the ops graph's RotaryEmbedding kernel, which reads the same caches.
  const rotaryTables = (gqa ? options.gqaRotary !== 'ops' : options.rotaryKernel === true) && headDim % 16 === 0 && !c.longRope && c.ropeDims === headDim;
  const rotaryInside = gqa && rotaryTables;
  const rotaryOp = !gqa && rotaryTables;
  // The fused kernel is an RMSNorm's.
  const fusedNorms = (options.fuseResidualNorms ?? gqa) && !c.layerNorm;
  if (gqa || fusedNorms || rotaryOp) usesContribOps = true;
  /**
   * GroupQueryAttention's rotary tables: cos and sin of position · frequency, `[maxPositions, headDim / 2]`, computed
   * in float32 as the op graph computes its angles (`Cast(position) · inv_freq`), so both graphs rotate alike.
   */
  const rotaryCaches = (name: string, inv: Float32Array): [string, string] => {
    const half = headDim / 2;
    const cos = new Float32Array(maxPositions * half);
    const sin = new Float32Array(maxPositions * half);
    for (let p = 0; p < maxPositions; p++) {
      for (let j = 0; j < half; j++) {
        const angle = Math.fround(p * inv[j]!);
        cos[p * half + j] = Math.cos(angle);
        sin[p * half + j] = Math.sin(angle);
      }
    }
    // (in the attention's type: GroupQueryAttention's is the cache's, the ops graph's float32)
    const table = (kind: string, v: Float32Array) => (kvFp16 && gqa ? g.initializer(makeTensor(`${name}.${kind}`, DataType.FLOAT16, [maxPositions, half], float32ArrayToFloat16(v))) : g.f32Array(`${name}.${kind}`, [maxPositions, half], v));
    return [table('cos_cache', cos), table('sin_cache', sin)];
  };
  const invGlobal = invFreqValues(c.theta, c.ropeScale);
  const invLocal = localRope ? invFreqValues(c.thetaLocal, c.ropeScaleLocal) : invGlobal;
  const cachesGlobal = rotaryTables && ropeUsed ? rotaryCaches('rope', invGlobal) : undefined;
  const cachesLocal = rotaryTables && localRope ? rotaryCaches('rope_local', invLocal) : cachesGlobal;
  const invFreq = rotaryTables || !ropeUsed ? '' : g.f32Array('rope.inv_freq', [rotHalf], invGlobal);
  const invFreqLocal = !rotaryTables && localRope ? g.f32Array('rope.inv_freq_local', [rotHalf], invLocal) : invFreq;
  // LongRoPE's long-sequence frequencies, beside the short ones above.
  const longInv = (name: string, theta: number, scale: number) => (c.longRope ? g.f32Array(name, [rotHalf], invFreqValues(theta, scale, c.longRope.long)) : '');
  const invFreqLong = longInv('rope.inv_freq_long', c.theta, c.ropeScale);
  const invFreqLocalLong = localRope ? longInv('rope.inv_freq_local_long', c.thetaLocal, c.ropeScaleLocal) : invFreqLong;

  // ---- the decoder body, emitted into `b` (the main graph, or each branch of the merged If)
  const body = (b: GraphBuilder, outName: (base: string) => string): void => {
    const one = b.i64([1]);
    // Written as PyTorch exports write it (Pow, not Mul(x, x)): that is the pattern onnxruntime fuses into
    // one SimplifiedLayerNormalization kernel, five kernels fewer per norm.
    const rms = (x: string, w: string, out?: string, bias?: string): string => {
      if (c.layerNorm) return b.op('LayerNormalization', [x, w, ...(bias ? [bias] : [])], { axis: -1, epsilon: { float: c.eps } }, out);
      const ms = b.op('ReduceMean', [b.op('Pow', [x, b.f32([2], [])])], { axes: [-1], keepdims: 1 });
      const denom = b.op('Sqrt', [b.op('Add', [ms, b.f32([c.eps], [])])]);
      return b.op('Mul', [b.op('Div', [x, denom]), w], {}, out);
    };
    const toFloat = (x: string) => (fp16 ? b.op('Cast', [x], { to: DataType.FLOAT }) : x);
    const kvToFloat = (x: string) => (kvFp16 ? b.op('Cast', [x], { to: DataType.FLOAT }) : x);
    /** `x` extended by its sums over blocks of `bs` columns, once per input (q/k/v and gate/up share theirs). */
    const extended = new Map<string, string>();
    const withBlockSums = (x: string, bs: number, k: number): string => {
      const key = `${x}|${bs}`;
      let xe = extended.get(key);
      if (!xe) {
        const sums = b.op('ReduceSum', [b.op('Reshape', [x, b.i64([0, 0, k / bs, bs])]), b.i64([-1])], { keepdims: 0 });
        xe = b.op('Concat', [x, sums], { axis: -1 });
        extended.set(key, xe);
      }
      return xe;
    };
    /** x · Wᵀ for one projection (MatMul, or MatMulNBits for a quantized matrix). */
    const linear = (x: string, l: Linear, out?: string): string => {
      if (l.kind === 'dense') return b.op('MatMul', [x, l.w], {}, out);
      const y = out ?? b.fresh('matmulnbits');
      const a = l.offsetBlock ? withBlockSums(x, l.offsetBlock, l.attrs.K - l.attrs.K / (l.offsetBlock + 1)) : x;
      b.nodes.push(makeNode('MatMulNBits', [a, ...l.inputs], [y], { ...l.attrs, accuracy_level: accuracyLevel }, b.fresh('n_MatMulNBits'), 'com.microsoft'));
      return y;
    };
    /** Writes a float value to a graph output: a Cast for fp16, else the producing op names it directly. */
    const emit = (base: string, make: (out?: string) => string): void => {
      const name = outName(base);
      if (fp16) b.op('Cast', [make()], { to: DataType.FLOAT16 }, name);
      else make(name);
    };

    // Hidden states [B, S, hidden]: embedded ids, then (optionally) the caller's embeddings.
    let h: string;
    if (embedQ) {
      h = b.fresh('embeds');
      const attrs = { gather_axis: 0, quantize_axis: 1, block_size: embedQ.blockSize, bits: embedQ.bits };
      b.nodes.push(makeNode('GatherBlockQuantized', [embedStored, inputIds, ...embedQInputs], [h], attrs, b.fresh('n_GatherBlockQuantized'), 'com.microsoft'));
    } else h = toFloat(b.op('Gather', [embedStored, inputIds], { axis: 0 }));
    if (c.embedScale !== 1) h = b.op('Mul', [h, b.f32([c.embedScale], [])]);
    if (embedsIn) h = b.op('Concat', [h, toFloat(embedsIn)], { axis: 1 });

    // Dynamic sizes: B, S (rows fed), T (total keys), P = T - S (past length); 1-D [1] and scalar forms.
    const hShape = b.op('Shape', [h]);
    const S1 = b.op('Slice', [hShape, one, b.i64([2])]);
    const T1 = b.op('Slice', [b.op('Shape', [attentionMask]), one, b.i64([2])]);
    const P1 = b.op('Sub', [T1, S1]);
    const T0 = b.op('Squeeze', [T1]);
    // [B]: each row's length, past and new tokens (the ones of its mask), made when first asked for.
    let rowLengths: string | undefined;
    const lengths = () => (rowLengths ??= b.op('ReduceSum', [b.op('Cast', [attentionMask], { to: DataType.INT64 }), one], { keepdims: 0 }));

    // Positions [B, S] as float: the given ones, else each row's count of mask ones before the token (the
    // position GroupQueryAttention takes from seqlens_k, whichever side the rows are padded on).
    let positionsF: string | undefined;
    let positionsI: string | undefined;
    /** Each token's position `[B, S]`, int64: `position_ids`, or counted along the mask's ones. */
    const positionsInt = (): string => {
      if (positionsI) return positionsI;
      if (positionIds) return (positionsI = idsType === DataType.INT64 ? positionIds : b.op('Cast', [positionIds], { to: DataType.INT64 }));
      const cs = b.op('CumSum', [b.op('Cast', [attentionMask], { to: DataType.INT64 }), b.i64([1], [])]);
      const clipped = b.op('Max', [b.op('Sub', [cs, b.i64([1], [])]), b.i64([0], [])]);
      return (positionsI = b.op('Slice', [clipped, P1, T1, one]));
    };
    const positions = (): string => (positionsF ??= b.op('Cast', [positionsInt()], { to: DataType.FLOAT }));
    // GroupQueryAttention rotating inside takes its own positions.
    const posF = (positionIds || !rotaryInside) && !rotaryOp && ropeUsed ? positions() : '';
    // Llama 4's attention temperature [B, S, 1]: 1 + scale · ln(⌊(position + offset) / length⌋ + 1).
    const temperatureOf = ({ scale, length, offset }: NonNullable<Resolved['temperature']>): string => {
      const periods = b.op('Floor', [b.op('Div', [b.op('Add', [positions(), b.f32([offset], [])]), b.f32([length], [])])]);
      const factor = b.op('Add', [b.op('Mul', [b.op('Log', [b.op('Add', [periods, b.f32([1], [])])]), b.f32([scale], [])]), b.f32([1], [])]);
      return b.op('Unsqueeze', [factor, b.i64([2])]);
    };
    const temperature = c.temperature ? temperatureOf(c.temperature) : '';

    // Rotary tables cos/sin [B, 1, S, ropeDims/2] for heads laid out [B, heads, S, headDim], [B, S, 1, ropeDims/2]
    // for GroupQueryAttention's [B, S, heads, headDim] (an extra trailing 1 for the adjacent style).
    // LongRoPE: [B, 1, 1], whether each row's length (its mask's ones: past and new tokens) exceeds the original context.
    const longRows = c.longRope ? b.op('Unsqueeze', [b.op('Greater', [lengths(), b.i64([c.longRope.originalContext], [])]), b.i64([1, 2])]) : '';
    const tables = (inv: string, invLong: string): [string, string] => {
      const ropeAxes = b.i64([gqa ? 2 : 1, ...(c.rope === 'adjacent' ? [4] : [])]);
      const rowInv = longRows ? b.op('Where', [longRows, invLong, inv]) : inv;
      const freqs = b.op('Mul', [b.op('Unsqueeze', [posF, b.i64([2])]), rowInv]);
      const scaled = (t: string) => (c.ropeMscale === 1 ? t : b.op('Mul', [t, b.f32([c.ropeMscale], [])]));
      return [b.op('Unsqueeze', [scaled(b.op('Cos', [freqs])), ropeAxes]), b.op('Unsqueeze', [scaled(b.op('Sin', [freqs])), ropeAxes])];
    };
    const globalTables: [string, string] = rotaryTables || !ropeUsed ? ['', ''] : tables(invFreq, invFreqLong);
    const localTables = localRope && !rotaryTables ? tables(invFreqLocal, invFreqLocalLong) : globalTables;
    const rope = (x: string, [cos, sin]: [string, string]): string => {
      // x: [B, heads, S, headDim] (or [B, S, heads, headDim]); cos/sin broadcast over the heads axis. A partial
      // rotation turns the first ropeDims of each head and passes the rest through.
      const partial = c.ropeDims < headDim;
      const [xr, pass] = partial ? b.opN('Split', [x, b.i64([c.ropeDims, headDim - c.ropeDims])], ['rope_rot', 'rope_pass'], { axis: 3 }) : [x, ''];
      let x1: string, x2: string, axis: number;
      if (c.rope === 'half') {
        axis = 3;
        [x1, x2] = b.opN('Split', [xr!, b.i64([rotHalf, rotHalf])], ['rope_x1', 'rope_x2'], { axis });
      } else {
        axis = 4;
        const pairs = b.op('Reshape', [xr!, b.i64([0, 0, 0, rotHalf, 2])]);
        [x1, x2] = b.opN('Split', [pairs, b.i64([1, 1])], ['rope_x1', 'rope_x2'], { axis });
      }
      const o1 = b.op('Sub', [b.op('Mul', [x1, cos]), b.op('Mul', [x2, sin])]);
      const o2 = b.op('Add', [b.op('Mul', [x2, cos]), b.op('Mul', [x1, sin])]);
      const joined = b.op('Concat', [o1, o2], { axis });
      const rotated = c.rope === 'half' ? joined : b.op('Reshape', [joined, b.i64([0, 0, 0, c.ropeDims])]);
      return partial ? b.op('Concat', [rotated, pass!], { axis: 3 }) : rotated;
    };
    const capped = (x: string, cap: number | undefined) =>
      cap === undefined ? x : b.op('Mul', [b.op('Tanh', [b.op('Mul', [x, b.f32([1 / cap], [])])]), b.f32([cap], [])]);
    // GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
    const geluTanh = (x: string) => {
      const inner = b.op('Mul', [b.op('Add', [x, b.op('Mul', [b.op('Pow', [x, b.f32([3], [])]), b.f32([0.044715], [])])]), b.f32([Math.sqrt(2 / Math.PI)], [])]);
      return b.op('Mul', [b.op('Mul', [x, b.f32([0.5], [])]), b.op('Add', [b.op('Tanh', [inner]), b.f32([1], [])])]);
    };
    /** The MLP's activation (`hiddenAct`) of x. */
    const silu = (x: string): string => b.op('Mul', [x, b.op('Sigmoid', [x])]);
    const activated = (x: string): string => {
      if (c.act === 'silu') return silu(x);
      if (c.act === 'gelu_tanh') return geluTanh(x);
      const r = b.op('Relu', [x]);
      return b.op('Mul', [r, r]);
    };
    const biased = (x: string, bias: string | undefined): string => (bias ? b.op('Add', [x, bias]) : x);
    /** An MLP: `down(act(gate(y)) · up(y))`, or `down(act(up(y)))` ungated, with the biases it has. */
    const mlp = (y: string, gate: Linear | undefined, up: Linear, down: Linear, bUp?: string, bDown?: string): string => {
      const u = biased(linear(y, up), bUp);
      return biased(linear(gate ? b.op('Mul', [activated(linear(y, gate)), u]) : activated(u), down), bDown);
    };
    /** A mask of the `k` best of `scores` along their last axis: ScatterElements of ones at TopK's indices. */
    const bestOf = (scores: string, k: number, names: [string, string]): string => {
      const [, best] = b.opN('TopK', [scores, b.i64([k])], names, { axis: -1 });
      const zeros = b.op('Mul', [scores, b.f32([0], [])]);
      const ones = b.op('Add', [b.op('GatherElements', [zeros, best!], { axis: -1 }), b.f32([1], [])]);
      return b.op('Cast', [b.op('ScatterElements', [zeros, best!, ones], { axis: -1 })], { to: DataType.BOOL });
    };
    /**
     * The MoE operator's router input for DeepSeek-V3-style routing (see LlamaConfig.moe), which the operator cannot
     * choose by itself (it takes the best experts of a softmax over its input): the log of each chosen expert's gating
     * score, the others at -1e30, so its softmax renormalizes the chosen scores exactly; and the factor per token
     * `[N, 1]` that turns that renormalized sum into the weights asked for (the chosen scores' sum unless `normalize`,
     * llama.cpp's clamp of that sum at fp16's least normal value where it is, times `scale`). With `groups`, the choice is
     * made within the best groups first.
     */
    const chosenRouting = (scores: string, selectionBias: string | undefined): { routerInput: string; factor: string } => {
      const { experts: e, used, normalize, gating, scale, groups } = c.moe!;
      const probs = gating === 'sigmoid' ? b.op('Sigmoid', [scores]) : b.op('Softmax', [scores], { axis: -1 });
      let choice = selectionBias ? b.op('Add', [probs, selectionBias]) : probs;
      if (groups) {
        // each group scored by its best two scores, the experts of all but the best groups out of the choice
        const grouped = b.op('Reshape', [choice, b.i64([-1, groups.count, e / groups.count])]);
        const [two] = b.opN('TopK', [grouped, b.i64([2])], ['group_top_scores', 'group_top_experts'], { axis: -1 });
        const kept = bestOf(b.op('ReduceSum', [two!, b.i64([-1])], { keepdims: 0 }), groups.used, ['top_group_scores', 'top_groups']);
        const keptExperts = b.op('Reshape', [b.op('Expand', [b.op('Unsqueeze', [kept, b.i64([-1])]), b.op('Shape', [grouped])]), b.op('Shape', [choice])]);
        choice = b.op('Where', [keptExperts, choice, b.f32([-3.4e38], [])]);
      }
      const mask = bestOf(choice, used, ['top_scores', 'top_experts']);
      const routerInput = b.op('Where', [mask, b.op('Log', [probs]), b.f32([-1e30], [])]);
      const sum = b.op('ReduceSum', [b.op('Where', [mask, probs, b.f32([0], [])]), b.i64([-1])], { keepdims: 1 });
      const kept = normalize ? b.op('Div', [sum, b.op('Max', [sum, b.f32([6.103515625e-5], [])])]) : sum;
      return { routerInput, factor: (scale ?? 1) === 1 ? kept : b.op('Mul', [kept, b.f32([scale!], [])]) };
    };
    /**
     * A mixture of experts over the tokens of `y`: the router's scores, onnxruntime's MoE (softmax over all experts,
     * the best `used` run on the tokens routed to them, weighted; or the experts chosen here, see chosenRouting), and
     * the shared expert, under its sigmoid gate where it has one.
     */
    const experts = (y: string, m: NonNullable<LayerRefs['moe']>): string => {
      const flat = b.op('Reshape', [y, b.i64([-1, hidden])]);
      const mixed = b.fresh('moe');
      const { used, swiglu, gating, scale } = c.moe!;
      const chooseHere = gating === 'sigmoid' || m.selectionBias !== undefined || c.moe!.groups !== undefined;
      // (chosen here, the operator's softmax over the chosen experts alone is the renormalization)
      const normalize = chooseHere || c.moe!.normalize;
      const attrs = {
        k: used,
        activation_type: 'swiglu',
        swiglu_fusion: 1,
        normalize_routing_weights: normalize ? 1 : 0,
        ...(swiglu ? { activation_alpha: { float: swiglu.alpha }, activation_beta: { float: swiglu.beta } } : {}),
        ...(swiglu?.limit !== undefined ? { swiglu_limit: { float: swiglu.limit } } : {}),
      };
      const routerScores = biased(linear(flat, m.router), m.biases?.router);
      const routing = chooseHere ? chosenRouting(routerScores, m.selectionBias) : undefined;
      const scores = routing?.routerInput ?? routerScores;
      const [b1, b2] = m.biases ? [m.biases.fc1, m.biases.fc2] : ['', ''];
      const q = m.quantized;
      if (!q) b.nodes.push(makeNode('MoE', [flat, scores, m.fc1, b1, m.fc2, b2], [mixed], attrs, b.fresh('n_MoE'), 'com.microsoft'));
      else {
        // QMoE's inputs: fc1 (codes, scales, bias), fc2 (likewise), fc3 (none), the zero points of fc1, fc2 and fc3, and
        // the routing weights. Without them it weighs the chosen experts by a softmax over their scores alone, i.e.
        // renormalized (measured on onnxruntime 1.30): unnormalized routing passes the softmax over all experts.
        const weightsInput = normalize ? [] : ['', b.op('Softmax', [scores], { axis: -1 })];
        const zeroPoints = q.zeroPoints.some((z) => z !== '') || weightsInput.length ? q.zeroPoints : [];
        const inputs = [flat, scores, m.fc1, q.scales[0], b1, m.fc2, q.scales[1], b2, '', '', '', ...zeroPoints, ...weightsInput];
        // accuracy_level as MatMulNBits takes it: 4 runs 4-bit experts on int8 activations (onnxruntime's fast path; its
        // 8-bit experts always take int8 activations), 0 on float ones.
        const quantAttrs = { ...attrs, expert_weight_bits: q.bits, block_size: q.blockSize, accuracy_level: accuracyLevel };
        b.nodes.push(makeNode('QMoE', inputs, [mixed], quantAttrs, b.fresh('n_QMoE'), 'com.microsoft'));
      }
      const factor = routing?.factor ?? ((scale ?? 1) !== 1 ? b.f32([scale!], []) : undefined);
      const out = b.op('Reshape', [factor ? b.op('Mul', [mixed, factor]) : mixed, b.op('Shape', [y])]);
      if (!m.shared) return out;
      const shared = mlp(y, m.shared.gate, m.shared.up, m.shared.down);
      return b.op('Add', [out, m.shared.router ? b.op('Mul', [shared, b.op('Sigmoid', [linear(y, m.shared.router)])]) : shared]);
    };
    /**
     * Latent attention's q, k and v packed as the attention takes them, one key/value head of `[rotary part, latent]`:
     * each head's query is its rotary part and its no-rotary part carried into the latent's space by its kB; the key is
     * the shared rotary part and the normalized latent; the value is the latent behind zeros where the key is rotary.
     */
    const latentQkv = (x: string, m: NonNullable<LayerRefs['mla']>): string => {
      const { latent, rope, nope, qHead } = c.mla!;
      const q = b.op('Reshape', [linear(m.qA ? rms(linear(x, m.qA.a), m.qA.norm) : x, m.q), b.i64([0, 0, heads, qHead])]);
      const [qNope, qPe] = b.opN('Split', [q, b.i64([nope, rope])], ['q_nope', 'q_pe'], { axis: -1 });
      // [B, S, H, N] → [B, H, S, N] · kB [H, N, L] → [B, H, S, L] → [B, S, H, L]
      const qLatent = b.op('Transpose', [b.op('MatMul', [b.op('Transpose', [qNope!], { perm: [0, 2, 1, 3] }), m.kB])], { perm: [0, 2, 1, 3] });
      const qAll = b.op('Reshape', [b.op('Concat', [qPe!, qLatent], { axis: -1 }), b.i64([0, 0, heads * headDim])]);
      const [kv, kPe] = b.opN('Split', [linear(x, m.kvA), b.i64([latent, rope])], ['kv_latent', 'k_pe'], { axis: -1 });
      const normed = rms(kv!, m.kvANorm);
      const value = b.op('Concat', [b.op('Mul', [kPe!, b.f32([0], [])]), normed], { axis: -1 });
      return b.op('Concat', [qAll, b.op('Concat', [kPe!, normed], { axis: -1 }), value], { axis: -1 });
    };
    /** Latent attention's output: each head's attended latent `[B, S, H·(R + L)]` carried out by its vB, `[B, S, H·V]`. */
    const latentValues = (attended: string, m: NonNullable<LayerRefs['mla']>): string => {
      const { rope, value } = c.mla!;
      const perHead = b.op('Slice', [b.op('Reshape', [attended, b.i64([0, 0, heads, headDim])]), b.i64([rope]), b.i64([headDim]), b.i64([3])]);
      const out = b.op('MatMul', [b.op('Transpose', [perHead], { perm: [0, 2, 1, 3] }), m.vB]);
      return b.op('Reshape', [b.op('Transpose', [out], { perm: [0, 2, 1, 3] }), b.i64([0, 0, heads * value])]);
    };
    const heads4 = () => b.i64([0, 0, heads + 2 * kvHeads, headDim]);
    /** Attention of one layer: `[B, S, q + 2 kv]` projections in, `[B, S, heads · headDim]` out. */
    let attention: (i: number, qkvFlat: string, L: LayerRefs, sliding: boolean) => string;
    if (gqa) {
      // As onnxruntime-genai derives them: seqlens_k = Σ mask − 1 per row (int32), total_sequence_length = mask width.
      const seqlensK = b.op('Cast', [b.op('Sub', [lengths(), b.i64([1], [])])], { to: DataType.INT32 });
      const totalLen = b.op('Cast', [T0], { to: DataType.INT32 });
      attention = (i, qkvFlat, L, sliding) => {
        let packed = qkvFlat;
        const roped = !c.noRope.has(i);
        if (L.qkNorm || (!rotaryInside && roped)) {
          // per-head q/k norm, then rotary (when the kernel cannot rotate these heads), on [B, S, heads, headDim]
          const [qkRaw, v] = b.opN('Split', [b.op('Reshape', [qkvFlat, heads4()]), b.i64([heads + kvHeads, kvHeads])], ['qk', 'v'], { axis: 2 });
          let qk = L.qkNorm ? rms(qkRaw!, L.qkNorm) : qkRaw!;
          if (!rotaryInside && roped) qk = rope(qk, sliding ? localTables : globalTables);
          packed = b.op('Reshape', [b.op('Concat', [qk, v!], { axis: 2 }), b.i64([0, 0, (heads + 2 * kvHeads) * headDim])]);
        }
        // With fp16 I/O the attention runs in fp16 on the fp16 cache, as onnxruntime-genai's fp16 exports do: a Cast
        // of the past to fp32 in front of the kernel breaks onnxruntime's reuse of the past buffer for the present.
        const out = b.fresh('attn');
        const rotates = rotaryInside && roped;
        const caches = rotates ? (sliding ? cachesLocal! : cachesGlobal!) : [];
        const attrs = {
          num_heads: heads,
          kv_num_heads: kvHeads,
          scale: { float: c.queryScale },
          do_rotary: rotates ? 1 : 0,
          rotary_interleaved: c.rope === 'adjacent' ? 1 : 0,
          // onnxruntime's kernel counts the query's own key in the window: query i sees key j iff i - j < local_window_size
          local_window_size: sliding ? c.window! : -1,
          ...(c.attnCap !== undefined ? { softcap: { float: c.attnCap } } : {}),
        };
        const inputs = [kvFp16 ? b.op('Cast', [packed], { to: DataType.FLOAT16 }) : packed, '', '', past[i]![0], past[i]![1], seqlensK, totalLen, ...caches];
        // head_sink is input 11, after the rotary caches, position_ids and attention_bias (stored as the weights are).
        if (L.sinks) inputs.push(...(caches.length ? [] : ['', '']), '', '', kvFp16 && !fp16 ? b.op('Cast', [L.sinks], { to: DataType.FLOAT16 }) : L.sinks);
        const outputs = [out, outName(`present.${i}.key`), outName(`present.${i}.value`)];
        b.nodes.push(makeNode('GroupQueryAttention', inputs, outputs, attrs, b.fresh('n_GroupQueryAttention'), 'com.microsoft'));
        return kvToFloat(out);
      };
    } else {
      const B1 = b.op('Slice', [hShape, b.i64([0]), one]);
      const S0 = b.op('Squeeze', [S1]);
      const P0 = b.op('Squeeze', [P1]);
      // Additive attention bias: key j is visible to query i iff j <= P + i and attention_mask[b, j] == 1.
      const zero = b.i64([0], []);
      const rows = b.op('Unsqueeze', [b.op('Add', [b.op('Range', [zero, S0, b.i64([1], [])]), P0]), one]); // [S, 1]
      const cols = b.op('Range', [zero, T0, b.i64([1], [])]); // [T]
      const causal = b.op('LessOrEqual', [cols, rows]); // [S, T]
      const keyOk = b.op('Unsqueeze', [b.op('Cast', [attentionMask], { to: DataType.BOOL }), one]); // [B, 1, T]
      const allowed = b.op('And', [causal, keyOk]); // [B, S, T]
      const rep = heads / kvHeads;
      const biasAxes = b.i64(rep === 1 ? [1] : [1, 2]);
      const biasOf = (ok: string) => b.op('Unsqueeze', [b.op('Where', [ok, b.f32([0], []), b.f32([MASK_MIN], [])]), biasAxes]);
      const bias = biasOf(allowed);
      // Sliding layers also drop keys that lie `window` or more positions back: j > P + i - window.
      const slidingBias = hasSliding
        ? biasOf(b.op('And', [allowed, b.op('Greater', [cols, b.op('Sub', [rows, b.i64([c.window!], [])])])]))
        : bias;
      // GQA: the queries of a kv head's group are rows of one product with its keys, [B, kvHeads, rep · S, headDim]
      // (head h → kv h / rep, the same order), so each step reads, and onnxruntime packs, every key once per kv
      // head rather than once per query head: what decides a step's time over a long context.
      const groupedShape = b.i64([0, kvHeads, -1, headDim]);
      const scoresShape = rep === 1 ? '' : b.op('Concat', [B1, b.i64([kvHeads, rep]), S1, T1], { axis: 0 });
      const oShape = b.i64([0, heads, -1, headDim]);
      const scale = b.f32([c.queryScale], []);
      const perm0213 = { perm: [0, 2, 1, 3] };
      /** Softmax over the keys; with sink logits, over the keys and the sink as one more, whose column is then dropped. */
      const softmax = (scores: string, sinks: string | undefined): string => {
        if (!sinks) return b.op('Softmax', [scores], { axis: -1 });
        const column = b.op('Concat', [b.op('Slice', [b.op('Shape', [scores]), b.i64([0]), b.i64([-1])]), b.i64([1])], { axis: 0 });
        const withSink = b.op('Softmax', [b.op('Concat', [scores, b.op('Expand', [sinks, column])], { axis: -1 })], { axis: -1 });
        return b.op('Slice', [withSink, b.i64([0]), b.i64([-1]), b.i64([-1])]);
      };
      /** q and k `[B, heads + kvHeads, S, headDim]` rotated by onnxruntime's RotaryEmbedding kernel from the caches. */
      const rotaryKernel = (qk: string, [cos, sin]: [string, string]): string => {
        const out = b.fresh('rotary');
        const attrs = { interleaved: c.rope === 'adjacent' ? 1 : 0, num_heads: heads + kvHeads, rotary_embedding_dim: headDim };
        b.nodes.push(makeNode('RotaryEmbedding', [qk, positionsInt(), cos, sin], [out], attrs, b.fresh('n_RotaryEmbedding'), 'com.microsoft'));
        return out;
      };
      /** The cache of one layer's keys or values extended by this run's: joined in the cache's type, which is the present output. */
      const extend = (pastKv: string, fresh: string, present: string): string => {
        b.nodes.push(makeNode('Concat', [pastKv, kvFp16 ? b.op('Cast', [fresh], { to: DataType.FLOAT16 }) : fresh], [present], { axis: 2 }, b.fresh('n_Concat')));
        return kvToFloat(present);
      };
      /** This run's keys or values in the cache's type, as output `name`. */
      const written = (fresh: string, name: string): string => b.op(kvFp16 ? 'Cast' : 'Identity', [fresh], kvFp16 ? { to: DataType.FLOAT16 } : {}, name);
      attention = (i, qkvFlat, L, sliding) => {
        // One rotary pass over q and k together: a third of the kernels of rotating each apart.
        const qkv = b.op('Transpose', [b.op('Reshape', [qkvFlat, heads4()])], perm0213);
        const [qkRaw, v] = b.opN('Split', [qkv, b.i64([heads + kvHeads, kvHeads])], ['qk', 'v'], { axis: 1 });
        const qk = L.qkNorm ? rms(qkRaw!, L.qkNorm) : qkRaw!;
        const rotated = c.noRope.has(i) ? qk : rotaryOp ? rotaryKernel(qk, sliding ? cachesLocal! : cachesGlobal!) : rope(qk, sliding ? localTables : globalTables);
        const [qRot, k] = b.opN('Split', [rotated, b.i64([heads, kvHeads])], ['q', 'k'], { axis: 1 });
        const q = b.op('Reshape', [b.op('Mul', [qRot!, scale]), groupedShape]);
        const layerBias = sliding ? slidingBias : bias;
        // (onnxruntime fuses the Transpose into the product: no copy of the keys)
        const scores = (keys: string) => b.op('MatMul', [q, b.op('Transpose', [keys], { perm: [0, 1, 3, 2] })]);
        let products: string; // [B, kvHeads, rep · S, T]
        let attend: (probs: string) => string;
        if (appendsKv) {
          // The keys are read where they lie (with any room beyond them masked out): the scores over past and new keys,
          // computed apart, are the joined scores. The values are joined (not a graph output, so never copied out):
          // each output a sum over all positions in one product, which a product per part would round otherwise,
          // changing a prompt's logits with where its prefill was split (a cached prefix, chunks).
          const kNew = kvToFloat(written(k!, outName(`new_key_values.${i}.key`)));
          const vNew = written(v!, outName(`new_key_values.${i}.value`));
          products = b.op('Concat', [scores(kvToFloat(past[i]![0])), scores(kNew)], { axis: -1 });
          attend = (probs) => b.op('MatMul', [probs, kvToFloat(b.op('Concat', [past[i]![1], vNew], { axis: 2 }))]);
        } else {
          const kAll = extend(past[i]![0], k!, outName(`present.${i}.key`)); // [B, kvHeads, T, headDim]
          const vAll = extend(past[i]![1], v!, outName(`present.${i}.value`));
          products = scores(kAll);
          attend = (probs) => b.op('MatMul', [probs, vAll]);
        }
        const grouped = rep === 1 ? products : b.op('Reshape', [products, scoresShape]); // [B, kvHeads, rep, S, T]
        const probs = softmax(b.op('Add', [capped(grouped, c.attnCap), layerBias]), L.sinks);
        const o = attend(rep === 1 ? probs : b.op('Reshape', [probs, b.op('Shape', [products])]));
        return b.op('Reshape', [b.op('Transpose', [rep === 1 ? o : b.op('Reshape', [o, oShape])], perm0213), b.i64([0, 0, qDim])]);
      };
    }

    // [B, S, 1]: 1 for the tokens fed whose mask keeps them, 0 for left padding, which must not enter a convolution's
    // state. (A right-padded graph's last mask columns are not the tokens fed: its rows' padding follows their tokens,
    // and runs of rows of different lengths must not go on from such states, as the engine's never do.)
    let keptTokens: string | undefined;
    const fedMask = () => (keptTokens ??= b.op('Unsqueeze', [b.op('Cast', [b.op('Slice', [attentionMask, P1, T1, one])], { to: DataType.FLOAT }), b.i64([2])]));
    /**
     * A causal depthwise convolution over the state's last inputs and `fed` `[B, S, channels]` (left padding zeroed
     * first): writes the present state (the last `taps − 1` inputs, `[B, taps − 1, channels]`) and returns the
     * convolved `[B, S, channels]`, a sum of the window's `taps` shifted slices, each times its tap's row (`kernel`
     * `[taps, channels]`). Time-major, so each slice is whole rows: onnxruntime's grouped Conv (channel-major) ran one
     * small product per channel, 0.39 ms a step for 6144 channels, and slices along its last axis 0.06 ms each (measured).
     */
    const causalConv = (i: number, fed: string, taps: number, kernel: string, bias: string | undefined): string => {
      const window = b.op('Concat', [toFloat(convPast[i]!), gqa ? fed : b.op('Mul', [fed, fedMask()])], { axis: 1 }); // [B, taps − 1 + S, channels]
      emit(`present_conv.${i}`, (out) => b.op('Slice', [window, b.i64([1 - taps]), b.i64([2 ** 31]), one], {}, out));
      const rows = b.opN('Split', [kernel, b.i64(new Array<number>(taps).fill(1))], Array.from({ length: taps }, (_, k) => `conv_tap${k}`), { axis: 0 });
      let sum = bias;
      rows.forEach((w, k) => {
        const term = b.op('Mul', [b.op('Slice', [window, b.i64([k]), k === 0 ? S1 : b.op('Add', [S1, b.i64([k])]), one]), w]);
        sum = sum ? b.op('Add', [sum, term]) : term;
      });
      return sum!;
    };
    /**
     * A 'mamba' layer (Mamba2's mixer, as llama.cpp's build_mamba2_layer computes it): z, x·B·C and dt from one
     * projection; x, B and C through the causal convolution, its bias and SiLU; then the selective scan over the
     * tokens fed, computed in its dual, attention-like form (SSD) so that a prompt takes matrix products rather than a
     * loop: with a = cumsum(dt · A) per head, y_t = Σ_{s≤t} (C_t · B_s) e^(a_t − a_s) dt_s x_s + e^(a_t) C_t · h₀, the
     * new state h = e^(a_S) h₀ + Σ_s e^(a_S − a_s) dt_s x_s ⊗ B_s (exact, the sequential scan's sums regrouped); then
     * D · x added, gated by SiLU(z), RMS-normalized per group of heads, projected out. Left padding gets dt = 0: no
     * decay, no input.
     */
    const mambaLayer = (i: number, x: string, m: NonNullable<LayerRefs['mamba']>): string => {
      const { heads, headDim, stateSize: N, groups, inner, channels, convKernel } = c.mamba!;
      const [z, xBCin, dtIn] = b.opN('Split', [linear(x, m.inProj), b.i64([inner, channels, heads])], ['ssm_z', 'ssm_xbc', 'ssm_dt'], { axis: -1 });
      const xBC = silu(causalConv(i, xBCin!, convKernel, m.convKernel, m.convBias)); // [B, S, channels]
      const [xs, bs, cs] = b.opN('Split', [xBC, b.i64([inner, groups * N, groups * N])], ['ssm_x', 'ssm_b', 'ssm_c'], { axis: -1 });
      const softplus = b.op('Softplus', [b.op('Add', [dtIn!, m.dtBias])]);
      const dtF = b.op('Transpose', [gqa ? softplus : b.op('Mul', [softplus, fedMask()])], { perm: [0, 2, 1] }); // [B, heads, S]
      const perm0213 = { perm: [0, 2, 1, 3] };
      const X = b.op('Transpose', [b.op('Reshape', [xs!, b.i64([0, 0, heads, headDim])])], perm0213); // [B, heads, S, P]
      // B and C per head: each group's shared by its heads
      const perHead = (t: string) => {
        const g = b.op('Reshape', [t, b.i64([0, 0, groups, 1, N])]);
        const each = b.op('Expand', [g, b.i64([1, 1, groups, heads / groups, N])]);
        return b.op('Transpose', [b.op('Reshape', [each, b.i64([0, 0, heads, N])])], perm0213); // [B, heads, S, N]
      };
      const Bh = perHead(bs!);
      const Ch = perHead(cs!);
      const cum = b.op('CumSum', [b.op('Mul', [dtF, m.a]), b.i64([2], [])]); // [B, heads, S]
      const cumRows = b.op('Unsqueeze', [cum, b.i64([3])]); // [B, heads, S, 1]
      const S = b.op('Squeeze', [S1]);
      const steps = b.op('Range', [b.i64([0], []), S, b.i64([1], [])]);
      const causal = b.op('LessOrEqual', [steps, b.op('Unsqueeze', [steps, one])]); // [S, S]: s ≤ t
      const decay = b.op('Exp', [b.op('Where', [causal, b.op('Sub', [cumRows, b.op('Unsqueeze', [cum, b.i64([2])])]), b.f32([-Infinity], [])])]);
      const Xdt = b.op('Mul', [X, b.op('Unsqueeze', [dtF, b.i64([3])])]); // [B, heads, S, P]
      const scores = b.op('Mul', [b.op('MatMul', [Ch, b.op('Transpose', [Bh], { perm: [0, 1, 3, 2] })]), decay]); // [B, heads, S, S]
      const h0 = ssmPast[i]!;
      const fromState = b.op('Mul', [b.op('MatMul', [Ch, b.op('Transpose', [h0], { perm: [0, 1, 3, 2] })]), b.op('Exp', [cumRows])]);
      const y = b.op('Add', [b.op('Add', [b.op('MatMul', [scores, Xdt]), fromState]), b.op('Mul', [X, m.d])]); // [B, heads, S, P]
      const last = b.op('Slice', [cum, b.i64([-1]), b.i64([2 ** 31]), b.i64([2])]); // [B, heads, 1]
      const carried = b.op('Mul', [Xdt, b.op('Unsqueeze', [b.op('Exp', [b.op('Sub', [last, cum])]), b.i64([3])])]);
      const kept = b.op('Mul', [h0, b.op('Unsqueeze', [b.op('Exp', [last]), b.i64([3])])]);
      b.op('Add', [b.op('MatMul', [b.op('Transpose', [carried], { perm: [0, 1, 3, 2] }), Bh]), kept], {}, outName(`present_ssm.${i}`)); // [B, heads, P, N]
      const gated = b.op('Mul', [b.op('Reshape', [b.op('Transpose', [y], perm0213), b.i64([0, 0, inner])]), silu(z!)]);
      if (!m.norm) return linear(gated, m.outProj);
      const normed = rms(b.op('Reshape', [gated, b.i64([0, 0, groups, inner / groups])]), m.norm);
      return linear(b.op('Reshape', [normed, b.i64([0, 0, inner])]), m.outProj);
    };
    /**
     * A 'delta' layer (the gated DeltaNet of Qwen3.5 and Qwen3-Next, as llama.cpp's qwen35 graph computes it): q, k and
     * v from one projection through the causal convolution and SiLU; q and k L2-normalized per head (q also scaled by
     * 1/√keyDim) and spread over the value heads; β = sigmoid(b), g = A · softplus(α + dtBias). The delta rule on each
     * value head's state S `[valueDim, keyDim]`: S ← e^g S; S ← S + β (v − S k) kᵀ; the output S q; for a decode step's
     * one token by a Scan over the tokens, for a prompt in chunks (chunkedDelta). The outputs are RMS-normalized per head,
     * gated by SiLU(z), projected out. Left padding gets β = 0 and g = 0: the state passes through unchanged.
     */
    const deltaLayer = (i: number, x: string, m: NonNullable<LayerRefs['deltaNet']>): string => {
      const { keyHeads, keyDim, valueHeads, valueDim, convKernel, groupedHeads } = c.delta!;
      const qkv = silu(causalConv(i, linear(x, m.qkv), convKernel, m.convKernel, undefined)); // [B, S, channels]
      const [qf, kf, vf] = b.opN('Split', [qkv, b.i64([keyHeads * keyDim, keyHeads * keyDim, valueHeads * valueDim])], ['delta_q', 'delta_k', 'delta_v'], { axis: -1 });
      // per head x / max(‖x‖, eps), as ggml's l2_norm; the key heads spread over the value heads: tiled (value head j reads key
      // head j mod keyHeads) or grouped (each key head repeated for its run of valueHeads / keyHeads value heads)
      const l2 = (t: string, scale = 1): string => {
        const heads = b.op('Reshape', [t, b.i64([0, 0, keyHeads, keyDim])]);
        const norm = b.op('Max', [b.op('Sqrt', [b.op('ReduceSum', [b.op('Mul', [heads, heads]), b.i64([-1])], { keepdims: 1 })]), b.f32([c.eps], [])]);
        const normed = b.op('Div', [heads, scale === 1 ? norm : b.op('Mul', [norm, b.f32([1 / scale], [])])]);
        if (valueHeads === keyHeads) return normed;
        if (!groupedHeads) return b.op('Tile', [normed, b.i64([1, 1, valueHeads / keyHeads, 1])]);
        const repeated = b.op('Expand', [b.op('Unsqueeze', [normed, b.i64([3])]), b.i64([1, 1, keyHeads, valueHeads / keyHeads, keyDim])]);
        return b.op('Reshape', [repeated, b.i64([0, 0, valueHeads, keyDim])]);
      };
      const q = l2(qf!, 1 / Math.sqrt(keyDim));
      const k = l2(kf!);
      const v = b.op('Reshape', [vf!, b.i64([0, 0, valueHeads, valueDim])]);
      const padded = (t: string) => (gqa ? t : b.op('Mul', [t, fedMask()]));
      const beta = padded(b.op('Sigmoid', [linear(x, m.beta)])); // [B, S, valueHeads]
      const g = padded(b.op('Mul', [b.op('Softplus', [b.op('Add', [linear(x, m.alpha), m.dtBias])]), m.a]));
      // The delta rule on one token, `[B, Hv, …]` slices, emitted into `sb`: the state decays, is corrected toward v
      // along k, and is read by q.
      const step = (sb: GraphBuilder, stateIn: string, qt: string, kt: string, vt: string, gt: string, bt: string): [string, string] => {
        const decayed = sb.op('Mul', [stateIn, sb.op('Unsqueeze', [sb.op('Exp', [gt]), sb.i64([2, 3])])]);
        const recalled = sb.op('MatMul', [decayed, sb.op('Unsqueeze', [kt, sb.i64([3])])]); // [B, Hv, Dv, 1]
        const delta = sb.op('Mul', [sb.op('Sub', [sb.op('Unsqueeze', [vt, sb.i64([3])]), recalled]), sb.op('Unsqueeze', [bt, sb.i64([2, 3])])]);
        const stateOut = sb.op('Add', [decayed, sb.op('MatMul', [delta, sb.op('Unsqueeze', [kt, sb.i64([2])])])], {}, sb.fresh('state_out'));
        return [stateOut, sb.op('Squeeze', [sb.op('MatMul', [stateOut, sb.op('Unsqueeze', [qt, sb.i64([3])])]), sb.i64([3])], {}, sb.fresh('o_t'))];
      };
      const F = DataType.FLOAT;
      const stateShape = ['batch_size', valueHeads, valueDim, keyDim];
      const stateInfo = (name: string) => makeValueInfo(name, F, stateShape);
      const perHead = (name: string, width: number) => makeValueInfo(name, F, ['batch_size', valueHeads, width]);
      const outInfo = (name: string) => makeValueInfo(name, F, ['batch_size', 'sequence_length', valueHeads, valueDim]);
      // One token (a decode step): a Scan over the tokens fed, the state carried from token to token. (A step taken
      // apart from it, without the loop, measured no faster: 14.2 against 14.3 ms a step of Qwen3.5-0.8B's block at 4 bits.)
      const tokenScan = (tb: GraphBuilder): GraphProto => {
        const sb = tb.child(`delta_scan_${i}/`);
        const [stateIn, qt, kt, vt, gt, bt] = ['state_in', 'q_t', 'k_t', 'v_t', 'g_t', 'beta_t'].map((n) => sb.fresh(n)) as [string, string, string, string, string, string];
        const [stateOut, ot] = step(sb, stateIn, qt, kt, vt, gt, bt);
        const body = sb.toGraph(
          `delta_scan_${i}`,
          [stateInfo(stateIn), perHead(qt, keyDim), perHead(kt, keyDim), perHead(vt, valueDim), makeValueInfo(gt, F, ['batch_size', valueHeads]), makeValueInfo(bt, F, ['batch_size', valueHeads])],
          [stateInfo(stateOut), perHead(ot, valueDim)],
        );
        const [present, outputs] = [tb.fresh('delta_state'), tb.fresh('delta_out')];
        const scanAttrs = { body, num_scan_inputs: 5, scan_input_axes: [1, 1, 1, 1, 1], scan_output_axes: [1] };
        tb.nodes.push(makeNode('Scan', [ssmPast[i]!, q, k, v, g, beta], [present, outputs], scanAttrs, tb.fresh('n_Scan')));
        return tb.toGraph(`delta_tokens_${i}`, [], [stateInfo(present), outInfo(outputs)]);
      };
      const seqLength = b.op('Slice', [b.op('Shape', [q]), b.i64([1]), b.i64([2])]); // [1]
      /**
       * A prompt: the same rule in chunks of DELTA_CHUNK tokens, each chunk's tokens at once in matrix products (a
       * Scan over the chunks carries the state). Within a chunk of cumulative decays G (γ = e^G) from state S0, each
       * token's correction u_t = β_t (v_t − e^(g_t) S_(t−1) k_t) unrolls to (I + A) U = diag(β) (V − diag(γ) K S0ᵀ) with
       * A[t, r] = β_t e^(G_t − G_r) k_t·k_r (r < t), strictly lower triangular: (I + A)⁻¹ = (I − A)(I + A²)(I + A⁴)…,
       * exactly, in log₂ C products. Then O = diag(γ) Q S0ᵀ + (e^(G_t − G_s) [s ≤ t] ∘ Q Kᵀ) U and the chunk's last state
       * e^(G_C) S0 + Σ_s e^(G_C − G_s) u_s k_sᵀ. The prompt is padded to whole chunks with β = g = 0 (no change of state).
       */
      const chunkedDelta = (cb: GraphBuilder): GraphProto => {
        const C = DELTA_CHUNK;
        const toHeads = (t: string) => cb.op('Transpose', [t], { perm: [0, 2, 1, 3] }); // [B, S, Hv, D] → [B, Hv, S, D]
        const pad = cb.op('Mod', [cb.op('Sub', [cb.i64([C]), cb.op('Mod', [seqLength, cb.i64([C])])]), cb.i64([C])]);
        const padded = (t: string, rank: number) => cb.op('Pad', [t, cb.op('Concat', [cb.i64(new Array<number>(rank + 2).fill(0)), pad, cb.i64(new Array<number>(rank - 3).fill(0))], { axis: 0 })]);
        const chunks = (t: string, width: number | undefined) => cb.op('Reshape', [t, cb.i64(width === undefined ? [0, 0, -1, C] : [0, 0, -1, C, width])]);
        const Qc = chunks(padded(toHeads(q), 4), keyDim);
        const Kc = chunks(padded(toHeads(k), 4), keyDim);
        const Vc = chunks(padded(toHeads(v), 4), valueDim);
        const gc = chunks(padded(cb.op('Transpose', [g], { perm: [0, 2, 1] }), 3), undefined);
        const bc = chunks(padded(cb.op('Transpose', [beta], { perm: [0, 2, 1] }), 3), undefined);
        // one chunk: state [B, Hv, Dv, Dk]; q, k [B, Hv, C, Dk]; v [B, Hv, C, Dv]; g, β [B, Hv, C]
        const sb = cb.child(`delta_chunk_${i}/`);
        const [state, qi, ki, vi, gi, bi] = ['state_in', 'q_c', 'k_c', 'v_c', 'g_c', 'beta_c'].map((n) => sb.fresh(n)) as [string, string, string, string, string, string];
        const T = (t: string) => sb.op('Transpose', [t], { perm: [0, 1, 3, 2] });
        const at = sb.op('Range', [sb.i64([0], []), sb.i64([C], []), sb.i64([1], [])]);
        const [rows, cols] = [sb.op('Unsqueeze', [at, sb.i64([1])]), sb.op('Unsqueeze', [at, sb.i64([0])])];
        const eye = sb.op('Cast', [sb.op('Equal', [rows, cols])], { to: F });
        const G = sb.op('CumSum', [gi, sb.i64([-1], [])]); // [B, Hv, C]
        const ratio = sb.op('Sub', [sb.op('Unsqueeze', [G, sb.i64([3])]), sb.op('Unsqueeze', [G, sb.i64([2])])]); // [t, s]: G_t − G_s
        const through = sb.op('Exp', [sb.op('Where', [sb.op('LessOrEqual', [cols, rows]), ratio, sb.f32([-Infinity], [])])]); // s ≤ t
        const before = sb.op('Mul', [through, sb.op('Cast', [sb.op('Less', [cols, rows])], { to: F })]); // s < t
        const betaRows = sb.op('Unsqueeze', [bi, sb.i64([3])]);
        const A = sb.op('Mul', [sb.op('Mul', [sb.op('MatMul', [ki, T(ki)]), before]), betaRows]);
        let inverse = sb.op('Sub', [eye, A]);
        let power = A;
        for (let n = 2; n < C; n *= 2) {
          power = sb.op('MatMul', [power, power]);
          inverse = sb.op('MatMul', [inverse, sb.op('Add', [eye, power])]);
        }
        const decay = sb.op('Unsqueeze', [sb.op('Exp', [G]), sb.i64([3])]); // γ [B, Hv, C, 1]
        const S0 = T(state); // [B, Hv, Dk, Dv]
        const U = sb.op('MatMul', [inverse, sb.op('Mul', [betaRows, sb.op('Sub', [vi, sb.op('Mul', [decay, sb.op('MatMul', [ki, S0])])])])]);
        const out = sb.op('Add', [sb.op('Mul', [decay, sb.op('MatMul', [qi, S0])]), sb.op('MatMul', [sb.op('Mul', [through, sb.op('MatMul', [qi, T(ki)])]), U])], {}, sb.fresh('o_c'));
        const last = sb.op('Slice', [G, sb.i64([-1]), sb.i64([2 ** 31]), sb.i64([2])]); // [B, Hv, 1]
        const carried = sb.op('Mul', [U, sb.op('Unsqueeze', [sb.op('Exp', [sb.op('Sub', [last, G])]), sb.i64([3])])]);
        const kept = sb.op('Mul', [state, sb.op('Unsqueeze', [sb.op('Exp', [last]), sb.i64([3])])]);
        const next = sb.op('Add', [kept, sb.op('MatMul', [T(carried), ki])], {}, sb.fresh('state_out'));
        const chunkInfo = (name: string, width?: number) => makeValueInfo(name, F, width === undefined ? ['batch_size', valueHeads, C] : ['batch_size', valueHeads, C, width]);
        const body = sb.toGraph(`delta_chunk_${i}`, [stateInfo(state), chunkInfo(qi, keyDim), chunkInfo(ki, keyDim), chunkInfo(vi, valueDim), chunkInfo(gi), chunkInfo(bi)], [stateInfo(next), chunkInfo(out, valueDim)]);
        const [present, perChunk] = [cb.fresh('delta_state'), cb.fresh('delta_chunks')];
        const scanAttrs = { body, num_scan_inputs: 5, scan_input_axes: [2, 2, 2, 2, 2], scan_output_axes: [2] };
        cb.nodes.push(makeNode('Scan', [ssmPast[i]!, Qc, Kc, Vc, gc, bc], [present, perChunk], scanAttrs, cb.fresh('n_Scan')));
        const whole = cb.op('Slice', [cb.op('Reshape', [perChunk, cb.i64([0, 0, -1, valueDim])]), cb.i64([0]), seqLength, cb.i64([2])]);
        const outputs = toHeads(whole);
        return cb.toGraph(`delta_chunks_${i}`, [], [stateInfo(present), outInfo(outputs)]);
      };
      // A decode step's one token runs the token Scan; a prompt the chunks.
      const outputs = b.fresh('delta_out');
      const single = b.op('Equal', [b.op('Squeeze', [seqLength]), b.i64([1], [])]);
      b.nodes.push(
        makeNode('If', [single], [outName(`present_recurrent.${i}`), outputs], { then_branch: tokenScan(b.child(`delta_tokens_${i}/`)), else_branch: chunkedDelta(b.child(`delta_chunks_${i}/`)) }, b.fresh('n_If')),
      );
      const z = b.op('Reshape', [linear(x, m.gate), b.i64([0, 0, valueHeads, valueDim])]);
      const gated = b.op('Mul', [rms(outputs, m.norm), silu(z)]); // [B, S, valueHeads, valueDim]
      return linear(b.op('Reshape', [gated, b.i64([0, 0, valueHeads * valueDim])]), m.outProj);
    };
    /**
     * A 'conv' layer (LFM2's gated short convolution): b, c and x from one projection, `c · conv(b · x)` projected out,
     * the convolution depthwise and causal over the state's last inputs and the new ones; the present state is the
     * last `convKernel − 1` of those.
     */
    const shortConv = (i: number, x: string, m: NonNullable<LayerRefs['shortConv']>): string => {
      const [bGate, cGate, xIn] = b.opN('Split', [linear(x, m.inProj), b.i64([hidden, hidden, hidden])], ['conv_b', 'conv_c', 'conv_x'], { axis: -1 });
      const conv = causalConv(i, b.op('Mul', [bGate!, xIn!]), c.convKernel, m.kernel, undefined); // [B, S, hidden]
      return linear(b.op('Mul', [cGate!, conv]), m.outProj);
    };

    /** A block's output not yet added to the residual stream `h`: the next norm adds it. */
    let delta: string | undefined;
    /**
     * RMSNorm of the residual stream once `delta` is added to it. Fused graphs do both in one
     * SkipSimplifiedLayerNormalization (onnxruntime fuses the norm's ops, not the Add before it); `last`: the sum is not needed.
     */
    const residualNorm = (w: string, out?: string, last = false, bias?: string): string => {
      if (delta === undefined) return rms(h, w, out, bias);
      const d = delta;
      delta = undefined;
      if (!fusedNorms) {
        h = b.op('Add', [h, d]);
        return rms(h, w, out, bias);
      }
      const normed = out ?? b.fresh('skip_norm');
      const sum = last ? [] : ['', '', b.fresh('residual')];
      b.nodes.push(makeNode('SkipSimplifiedLayerNormalization', [h, d, w], [normed, ...sum], { epsilon: { float: c.eps } }, b.fresh('n_SkipSimplifiedLayerNormalization'), 'com.microsoft'));
      if (!last) h = sum[2]!;
      return normed;
    };

    const residualScaled = (x: string) => (c.residualScale === 1 ? x : b.op('Mul', [x, b.f32([c.residualScale], [])]));
    /** The residual stream once `delta` is added to it, not normalized (blocks without a pre-norm). */
    const residualSum = (): string => {
      if (delta !== undefined) h = b.op('Add', [h, delta]);
      delta = undefined;
      return h;
    };
    for (let i = 0; i < c.layers; i++) {
      const L = layerRefs[i]!;
      const sliding = c.layerTypes[i] === 'sliding';
      const x = L.attnNorm ? residualNorm(L.attnNorm, undefined, false, L.attnNormBias) : residualSum();
      // single blocks: the MLP alone, or the mixer alone, into the residual stream
      if (c.layerTypes[i] === 'mlp') {
        delta = residualScaled(mlp(x, L.wGate, L.wUp!, L.wDown!, L.bUp, L.bDown));
        continue;
      }
      const attnOut = L.shortConv
        ? shortConv(i, x, L.shortConv)
        : L.mamba && L.wqkv.length > 0
          ? b.op('Add', [attentionBlock(i, x, L, sliding), mambaLayer(i, x, L.mamba)])
          : L.mamba ? mambaLayer(i, x, L.mamba) : L.deltaNet ? deltaLayer(i, x, L.deltaNet) : attentionBlock(i, x, L, sliding);
      if (c.single) {
        delta = residualScaled(attnOut);
        continue;
      }
      // A parallel block's MLP reads the attention's input; its output joins the stream with the attention's.
      let y = x;
      let mixed = attnOut;
      if (c.parallel) mixed = residualScaled(attnOut);
      else {
        delta = residualScaled(attnOut);
        y = L.mlpNorm ? residualNorm(L.mlpNorm, undefined, false, L.mlpNormBias) : residualSum();
      }
      let mlpOut = L.moe ? experts(y, L.moe) : mlp(y, L.wGate, L.wUp!, L.wDown!, L.bUp, L.bDown);
      if (L.postMlpNorm) mlpOut = rms(mlpOut, L.postMlpNorm);
      delta = c.parallel ? b.op('Add', [mixed, residualScaled(mlpOut)]) : residualScaled(mlpOut);
    }
    /** An attention block's output, before the residual: q, k and v, the attention, its output projection and post-norm. */
    function attentionBlock(i: number, x: string, L: LayerRefs, sliding: boolean): string {
      // One product for q, k and v: a third of the kernels of projecting each apart.
      let qkvFlat = L.mla ? latentQkv(x, L.mla) : L.wqkv.length === 1 ? linear(x, L.wqkv[0]!) : b.op('Concat', L.wqkv.map((w) => linear(x, w)), { axis: -1 });
      if (L.bqkv) qkvFlat = b.op('Add', [qkvFlat, L.bqkv]);
      // attentionGate: each head's query then its gate; the gate multiplies the attention's output
      let gate: string | undefined;
      if (c.attnGate) {
        const [qg, kvf] = b.opN('Split', [qkvFlat, b.i64([2 * qDim, 2 * kvDim])], ['q_gate_flat', 'kv_flat'], { axis: -1 });
        const [qh, gh] = b.opN('Split', [b.op('Reshape', [qg!, b.i64([0, 0, heads, 2 * headDim])]), b.i64([headDim, headDim])], ['q_heads', 'gate_heads'], { axis: -1 });
        qkvFlat = b.op('Concat', [b.op('Reshape', [qh!, b.i64([0, 0, qDim])]), kvf!], { axis: -1 });
        gate = b.op('Sigmoid', [b.op('Reshape', [gh!, b.i64([0, 0, qDim])])]);
      }
      if (L.projectionNorms) {
        const [qn, kn] = L.projectionNorms;
        const [qf, kf, vf] = b.opN('Split', [qkvFlat, b.i64([qDim, kvDim, kvDim])], ['q_flat', 'k_flat', 'v_flat'], { axis: -1 });
        qkvFlat = b.op('Concat', [rms(qf!, qn), rms(kf!, kn), vf!], { axis: -1 });
      }
      if (temperature) {
        // Scaling q before its rotation is scaling it after: the rotation is linear, the factor one per position.
        const [qf, kvf] = b.opN('Split', [qkvFlat, b.i64([qDim, 2 * kvDim])], ['q_flat', 'kv_flat'], { axis: -1 });
        qkvFlat = b.op('Concat', [b.op('Mul', [qf!, temperature]), kvf!], { axis: -1 });
      }
      const attended = attention(i, qkvFlat, L, sliding);
      const out = biased(linear(L.mla ? latentValues(attended, L.mla) : gate ? b.op('Mul', [attended, gate]) : attended, L.wo!), L.bo);
      return L.postAttnNorm ? rms(out, L.postAttnNorm) : out;
    }

    let normed = '';
    if (withHidden) emit('last_hidden_state', (out) => (normed = residualNorm(finalNorm, out, true, finalNormBias)));
    else normed = residualNorm(finalNorm, undefined, true, finalNormBias);
    let headIn = normed;
    if (numLogits) {
      const start = b.op('Neg', [b.op('Unsqueeze', [numLogits, b.i64([0])])]);
      headIn = b.op('Slice', [normed, start, S1, one]);
    }
    const cap = c.finalCap;
    if (headBias) emit('logits', (out) => b.op('Add', [linear(headIn, lmHead), headBias], {}, out));
    else if (cap === undefined && c.logitScale === 1) emit('logits', (out) => linear(headIn, lmHead, out));
    else if (cap === undefined) emit('logits', (out) => b.op('Mul', [linear(headIn, lmHead), b.f32([1 / c.logitScale], [])], {}, out));
    else {
      emit('logits', (out) =>
        b.op('Mul', [b.op('Tanh', [b.op('Mul', [linear(headIn, lmHead), b.f32([1 / (cap * c.logitScale)], [])])]), b.f32([cap], [])], {}, out),
      );
    }
  };

  // The body's outputs come in `outputSpecs` order: logits, presents (emitted layer by layer), hidden.
  if (!merged) {
    body(g, (base) => base);
  } else {
    const branch = (prefix: string) => {
      const b = g.child(prefix);
      const names = new Map<string, string>();
      body(b, (base) => {
        const n = b.fresh(base);
        names.set(base, n);
        return n;
      });
      const outs = outputSpecs.map((o) => makeValueInfo(names.get(o.name)!, o.type ?? ioType, o.shape));
      return b.toGraph(`${prefix}decoder`, [], outs);
    };
    const withPast = branch('with_past/');
    const noPast = branch('no_past/');
    g.nodes.push(
      makeNode('If', [useCacheBranch!], outputSpecs.map((o) => o.name), { then_branch: withPast, else_branch: noPast }, g.fresh('optimum::if')),
    );
  }

  return {
    irVersion: IR_VERSION,
    producerName: options.producer ?? 'reasonplug',
    opsetImport: [{ domain: '', version: OPSET }, ...(usesContribOps ? [{ domain: 'com.microsoft', version: 1 }] : [])],
    graph: g.toGraph('llama_decoder', inputs, outputs),
    // The engine prefills a prompt longer than this in one run, so that all its positions take the long factors.
    ...(c.longRope ? { metadataProps: [{ key: LONG_ROPE_CONTEXT_KEY, value: String(c.longRope.originalContext) }] } : {}),
  };
}

/** Where {@link writeLlamaModel} puts external data: a file name beside the model, and chunks of at most `chunkBytes`. */
export interface ExternalDataLayout {
  /** File name of the first chunk; default `${basename(path)}.data`. Later chunks are `${location}_1`, `_2`, ... (hub exports). */
  location?: string;
  /** Start a new chunk file before a tensor that would pass this size; default: one file. */
  chunkBytes?: number;
}

/**
 * Writes initializers of at least {@link EXTERNAL_MIN_BYTES} to external-data files as the builder makes them, in the
 * order made, and drops their bytes from the tensors: a converted weight is written and let go before the next one is
 * made, instead of the whole model's being held until the graph is done. Initializers over the same bytes (a tied
 * head's codes and the embedding's) share one region of the file.
 */
class ExternalDataWriter {
  private chunk = 0;
  private location: string;
  private fd: number;
  private offset = 0;
  /** Regions written, by the buffer they were written from (weakly: a buffer let go need not be remembered). */
  private readonly written = new WeakMap<ArrayBufferLike, { byteOffset: number; byteLength: number; entries: NonNullable<TensorProto['externalData']> }[]>();

  constructor(
    private readonly dir: string,
    private readonly first: string,
    private readonly chunkBytes: number | undefined,
  ) {
    this.location = first;
    this.fd = openSync(join(dir, first), 'w');
  }

  /** Moves `t`'s bytes to the file (where it is large enough to go there). */
  add(t: TensorProto): void {
    const raw = t.rawData as Uint8Array;
    if (raw.byteLength < EXTERNAL_MIN_BYTES) return;
    const shared = this.written.get(raw.buffer) ?? [];
    let entries = shared.find((w) => w.byteOffset === raw.byteOffset && w.byteLength === raw.byteLength)?.entries;
    if (!entries) {
      if (this.chunkBytes !== undefined && this.offset > 0 && this.offset + raw.byteLength > this.chunkBytes) {
        closeSync(this.fd);
        this.location = `${this.first}_${++this.chunk}`;
        this.fd = openSync(join(this.dir, this.location), 'w');
        this.offset = 0;
      }
      if (raw.byteLength >= ALIGN_LARGE_BYTES && this.offset % PAGE !== 0) this.write(new Uint8Array(PAGE - (this.offset % PAGE)));
      const offset = this.offset;
      this.write(raw);
      entries = [
        { key: 'location', value: this.location },
        { key: 'offset', value: String(offset) },
        { key: 'length', value: String(raw.byteLength) },
      ];
      this.written.set(raw.buffer, [...shared, { byteOffset: raw.byteOffset, byteLength: raw.byteLength, entries }]);
    }
    t.externalData = entries;
    t.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL;
    delete t.rawData;
  }

  /** Appends `bytes` at the current offset (one write() moves at most about 2 GiB: an fp32 embedding can be more). */
  private write(bytes: Uint8Array): void {
    for (let done = 0; done < bytes.byteLength; ) done += writeSync(this.fd, bytes, done, bytes.byteLength - done, this.offset + done);
    this.offset += bytes.byteLength;
  }

  close(): void {
    closeSync(this.fd);
  }
}

/**
 * Builds the model and writes it to `path`. With `externalData`, every initializer of at least 1 KiB goes to
 * `${basename(path)}.data` (or the layout's file and chunks) beside the model, referenced by ONNX external-data
 * entries (relative `location`, `offset`, `length`), as optimum exports do; large tensors start on 4 KiB boundaries.
 * Each is written as the builder makes it (see ExternalDataWriter): a build that fails part-way leaves the data written.
 */
export async function writeLlamaModel(
  path: string,
  config: LlamaConfig,
  weights: LlamaWeights<SourceMatrix>,
  options: LlamaBuildOptions & { externalData?: boolean | ExternalDataLayout } = {},
): Promise<void> {
  if (!options.externalData) {
    const model = buildLlamaModel(config, weights, options);
    const total = (model.graph!.initializer as TensorProto[]).reduce((n, t) => n + ((t.rawData as Uint8Array | undefined)?.byteLength ?? 0), 0);
    if (total > MAX_INLINE_BYTES) {
      throw new RangeError(
        `the weights take ${(total / 2 ** 30).toFixed(2)} GiB, more than one protobuf file can hold (2 GiB); ` +
          'write the model with { externalData: true }',
      );
    }
    await writeModel(path, model);
    return;
  }
  const layout = options.externalData === true ? {} : options.externalData;
  const data = new ExternalDataWriter(dirname(path), layout.location ?? `${basename(path)}.data`, layout.chunkBytes);
  let model: O.IModelProto;
  try {
    model = buildLlamaModel(config, weights, options, (t) => data.add(t));
  } finally {
    data.close();
  }
  await writeModel(path, model);
}
