/**
 * Converts a GGUF of a Llama-family architecture ({@link SUPPORTED_ARCHITECTURES}; F32, F16, BF16 and
 * block-quantized tensors; SentencePiece or byte-level BPE vocabulary) into a reasonplug module directory: `model.onnx` (built by the project's Llama builder), `tokenizer.json`,
 * `tokenizer_config.json` and the `reasonplug.json` manifest (ARCHITECTURE.md, "Module format").
 *
 * Weight layout: GGUF dims list the fastest-varying dimension first, so a matrix with ne = [in, out] is
 * stored exactly as the row-major PyTorch `[out, in]` matrix the builder expects — no transpose. llama.cpp
 * permutes Hugging Face Q/K weights into the "adjacent pairs" rotary order when it writes llama GGUFs,
 * so converted llama models use ropeStyle 'adjacent'; the other architectures keep the NeoX ('half') order.
 */
import { hashFile } from '../modules/file-digest.js';
import { ggufDigest } from './digest.js';
import { existsSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, extname, join, resolve } from 'node:path';
import type { DeferredMatrix, LlamaConfig, LlamaLayerWeights, LlamaWeights, MoeWeights, WeightMatrix } from '../onnx/llama-spec.js';
import { isQuantized, pickRows, sliceRows } from '../onnx/quantized-matrix.js';
import { quantizeMatrix } from '../onnx/quantize/quantize-matrix.js';
import { nbitsLayoutOf, toNBits } from './quant/nbits.js';
import { layerAttends, writeLlamaModel, type LlamaBuildOptions } from '../onnx/llama-builder.js';
import { transpose2d } from '../onnx/graph-builder.js';
import { tokenizerFingerprint } from '../tokenizer/fingerprint.js';
import { GgufError, GgufFile, SUPPORTED_TENSOR_TYPES, type GgufTensorInfo } from './reader.js';
import { tokenizerFromGguf } from './tokenizer-from-gguf.js';
import { reportTensorReads } from './read-progress.js';
import { POOLING_FILE, poolingConfig, poolingOfGguf } from '../modules/pooling.js';
import { makeDirectory } from '../modules/make-directory.js';
import { schemaVersionFor, type SchemaVersion } from '../modules/manifest.js';

/** Options of {@link convertGguf}; every one has a default. */
export interface ConvertGgufOptions {
  /** Storage type of the ONNX weights and float I/O. Default 'float32'. */
  dtype?: 'float32' | 'float16';
  /** Module name (lower-case kebab case is enforced). Default: `general.name`, else the file name. */
  name?: string;
  /**
   * Write weights to `model.onnx.data` (tensors of 1 MiB or more on 4 KiB boundaries). Default: for weights of
   * 16 MiB or more: onnxruntime memory-maps that file instead of parsing the weights out of the protobuf and
   * copying them, so a large module loads faster and with less peak memory (README, bench:gguf).
   */
  externalData?: boolean;
  /**
   * Dequantize block-quantized tensors to dense `dtype` matrices instead of mapping them onto MatMulNBits
   * (larger and slower; the reference for the mapping's error). Default false.
   */
  dequantize?: boolean;
  /** `accuracy_level` of the MatMulNBits nodes (see LlamaBuildOptions.quantAccuracyLevel). Default 4. */
  quantAccuracyLevel?: 0 | 4;
  /**
   * How the graph's attention is written (LlamaBuildOptions.attention). Default: `ops`, except for models with
   * sliding-window layers whose query heads each have their own kv head, `gqa` (one GroupQueryAttention kernel per
   * layer; the op graph returns new keys and values only without sliding windows, see `kvOutput`). onnxruntime's CPU
   * kernel converts and packs each kv head's keys and values once per query head of its group every step, where the op
   * graph multiplies all of a group's queries by them in one product: on a Qwen2.5-0.5B shape (7 queries a kv head)
   * after 1024 positions 0.85x the kernel's step time, at a short context the same (docs/benchmarks.md, bench:gguf-attention); and
   * it joins and copies out the whole cache every step. Converted `ops` graphs rotate by one RotaryEmbedding kernel and
   * fuse residual Adds into their norms, as the kernel's do.
   */
  attention?: 'ops' | 'gqa';
  /**
   * Where q and k are rotated (LlamaBuildOptions.gqaRotary, rotaryKernel). Default `inside`: inside
   * GroupQueryAttention, or by the op graph's RotaryEmbedding kernel, from cos/sin caches of
   * `<arch>.context_length` rows, unless those would take more than 64 MiB (long contexts, wide
   * heads): then `ops`, which needs no caches and runs any length.
   */
  gqaRotary?: 'inside' | 'ops';
  /**
   * Storage type of the attention layers' keys and values (LlamaBuildOptions.kvDtype). Default `float16`, llama.cpp's
   * own default cache type: half the bytes of `float32` a long context's step reads and onnxruntime-node copies
   * (docs/benchmarks.md, bench:gguf `--context`), at fp16's rounding of q, k and v; `float32` is exact against llama.cpp's F32 cache.
   */
  kvCache?: 'float32' | 'float16';
  /**
   * What the op graph's attention layers return (LlamaBuildOptions.kvOutput). Default `new` (each run's keys and values,
   * which the engine writes into a cache with room to spare) where no layer has a sliding window, else `joined` (the
   * past with the run's appended, as exports write them; the form any onnxruntime loop runs). GroupQueryAttention graphs
   * are always joined.
   */
  kvOutput?: 'joined' | 'new';
  /** Called after each tensor is read with the bytes of tensor data read so far and in all (a progress bar). */
  onTensorRead?: (bytes: number, total: number) => void;
}

/** One file entry of a module manifest. */
export interface ManifestFile {
  path: string;
  /** Hex SHA-256 of the file. */
  sha256: string;
  size: number;
}

/** The manifest this converter writes (a backbone module): version 2 where its graph returns new keys and values only. */
export interface ConvertedManifest {
  schemaVersion: SchemaVersion;
  name: string;
  version: string;
  kind: 'backbone';
  tasks: string[];
  description: string;
  license: string;
  compat: { tokenizer: string; vocabSize: number; hiddenSize: number };
  generation: { bosTokenId?: number; eosTokenIds: number[] };
  files: { model: ManifestFile; modelData?: ManifestFile; tokenizer: ManifestFile; tokenizerConfig: ManifestFile; pooling?: ManifestFile };
  provenance: { convertedFrom: { file: string; sha256: string; format: 'gguf'; architecture: string } };
}

/** What {@link convertGguf} wrote. */
export interface ConvertGgufResult {
  /** The module directory (`outDir`). */
  dir: string;
  /** The model's shape as read from the GGUF, which the ONNX graph was built from. */
  config: LlamaConfig;
  /** The `reasonplug.json` written into `dir`. */
  manifest: ConvertedManifest;
}

/** Weights from this size on go to `model.onnx.data` (see {@link ConvertGgufOptions.externalData}); tiny models stay one file. */
const EXTERNAL_DATA_THRESHOLD = 16 * 2 ** 20;

/** Lower-case kebab case: "Stories 260K_v2" → "stories-260k-v2". */
export function kebabName(s: string): string {
  return s
    .replace(/([a-z])([A-Z])/g, '$1-$2')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '');
}

/** The longest module name a manifest takes. */
const NAME_MAX = 128;

/**
 * The converted module's name: the caller's, else the file's `general.name`, else its file name, in the manifest's
 * form (lower-case words joined by "-", at most {@link NAME_MAX} characters); a name with no Latin letters or digits
 * (e.g. "故事模型") gives way to the next, and the last resort is the file's digest.
 */
export function moduleName(file: string, generalName: string | undefined, given: string | undefined, sha256: string): string {
  const form = (s: string) => kebabName(s).slice(0, NAME_MAX).replace(/-+$/, '');
  if (given !== undefined) {
    const name = form(given);
    if (!name) throw new RangeError(`the module name "${given}" has no Latin letters or digits to name a module by; give one that has`);
    return name;
  }
  return [generalName, basename(file, extname(file))].map((s) => (s ? form(s) : '')).find((n) => n) ?? `gguf-${sha256.slice(0, 12)}`;
}

/** The file's `general.name`, where it names the model: llama.cpp's llama2.c converter writes "llama", no better than the file name. */
export function generalNameOf(f: GgufFile): string | undefined {
  const name = f.getString('general.name');
  return name && name !== 'llama' ? name : undefined;
}

/** `<arch>.context_length`: a positive whole number of positions, required as llama.cpp requires it. */
function contextLengthOf(f: GgufFile, arch: GgufArchitecture): number {
  const key = `${arch}.context_length`;
  const n = f.getNumber(key);
  if (n === undefined) throw new GgufError(`${basename(f.path)} is missing the metadata "${key}".`, 'missing-metadata');
  if (n !== undefined && (!Number.isSafeInteger(n) || n <= 0)) throw new GgufError(`${basename(f.path)}: "${key}" is ${n}, expected a positive whole number of positions.`, 'corrupt');
  return n;
}

/** The `general.architecture` values the converter reads (llama.cpp's names). */
export const SUPPORTED_ARCHITECTURES = ['llama', 'mistral3', 'granite', 'smollm3', 'ernie4_5', 'exaone', 'exaone4', 'qwen2', 'qwen2vl', 'qwen3', 'qwen3vl', 'qwen2moe', 'qwen3moe', 'qwen3vlmoe', 'bailingmoe2', 'olmo2', 'olmoe', 'granitemoe', 'gpt-oss', 'glm4moe', 'ernie4_5-moe', 'deepseek2', 'gemma', 'gemma2', 'gemma3', 'phi3', 'command-r', 'cohere2', 'glm4', 'starcoder2', 'stablelm', 'arcee', 'seed_oss', 'nemotron', 'minicpm', 'internlm2', 'phi2', 'lfm2', 'lfm2moe', 'granitehybrid', 'qwen35', 'qwen35moe', 'qwen3next', 'nemotron_h', 'falcon-h1'] as const;
/** One of {@link SUPPORTED_ARCHITECTURES}. */
export type GgufArchitecture = (typeof SUPPORTED_ARCHITECTURES)[number];

/**
 * Vision-language architectures read as the text model they are built on (their vision tower is another file, the
 * mmproj): on text, every section of their M-RoPE takes the token's position, which is the text model's rotary.
 */
const TEXT_MODEL_OF: Partial<Record<GgufArchitecture, GgufArchitecture>> = { qwen2vl: 'qwen2', qwen3vl: 'qwen3' };

/**
 * Architectures whose files may have experts, read as the dense block they are built on (`llama` files with experts
 * are Mixtral's), as llama.cpp reads them: whether it renormalizes the chosen experts' weights (its `norm_w`), whether
 * files without experts are theirs too (`dense`), and whether an expert's inner size is `expert_feed_forward_length`
 * (else the feed-forward length over the experts used; `ownExpertSize`) rather than the feed-forward length itself.
 */
const MOE_BLOCK: Partial<Record<GgufArchitecture, { block: GgufArchitecture; normalize: boolean; dense?: true; ownExpertSize?: true }>> = {
  llama: { block: 'llama', normalize: true, dense: true },
  granite: { block: 'granite', normalize: true, dense: true },
  granitemoe: { block: 'granite', normalize: true },
  // Granite 4.0-H: Mamba2 layers beside attention; its MoE builds' experts of the feed-forward length, renormalized.
  granitehybrid: { block: 'granitehybrid', normalize: true, dense: true },
  qwen3moe: { block: 'qwen3', normalize: true, ownExpertSize: true },
  // Qwen3-VL-30B-A3B's text model: Qwen3-MoE's, its M-RoPE on text the text model's rotary (as qwen3vl's).
  qwen3vlmoe: { block: 'qwen3', normalize: true, ownExpertSize: true },
  qwen2moe: { block: 'qwen2', normalize: false, ownExpertSize: true },
  olmoe: { block: 'olmoe', normalize: false },
  // gpt-oss: a softmax over the chosen experts' scores alone (llama.cpp's SOFTMAX_WEIGHT gating), which is renormalizing.
  'gpt-oss': { block: 'gpt-oss', normalize: true, ownExpertSize: true },
  // GLM-4.5: whether it renormalizes is the file's `expert_weights_norm` (see routedExperts).
  glm4moe: { block: 'glm4moe', normalize: false, ownExpertSize: true },
  'ernie4_5-moe': { block: 'ernie4_5', normalize: true, ownExpertSize: true },
  // DeepSeek-V2/V3: whether it renormalizes is the file's `expert_weights_norm` (see routedExperts).
  deepseek2: { block: 'deepseek2', normalize: false, ownExpertSize: true },
  // Ling 2.0: likewise.
  bailingmoe2: { block: 'bailingmoe2', normalize: false, ownExpertSize: true },
  // Qwen3.5's MoE models (35B-A3B, 122B-A10B, 397B-A17B): its hybrid block with experts and a gated shared expert.
  qwen35moe: { block: 'qwen35', normalize: true, ownExpertSize: true },
  // Qwen3-Next-80B-A3B: the same block (before Qwen3.5), always with experts.
  qwen3next: { block: 'qwen35', normalize: true, ownExpertSize: true },
  // LFM2-8B-A1B: llama.cpp's graph renormalizes whatever the file says.
  lfm2moe: { block: 'lfm2', normalize: true, ownExpertSize: true },
};

/** Architectures whose last `nextn_predict_layers` blocks are multi-token-prediction heads, which llama.cpp loads and skips. */
const NEXTN_BLOCKS: ReadonlySet<GgufArchitecture> = new Set(['glm4moe', 'bailingmoe2', 'qwen35', 'qwen35moe', 'qwen3next']);

/** Architectures whose q/k llama.cpp's converter permutes into adjacent rotary pairs ("NORM"); the others keep NeoX's halves. */
const ADJACENT_ROPE: ReadonlySet<GgufArchitecture> = new Set(['deepseek2', 'llama', 'mistral3', 'granite', 'granitehybrid', 'smollm3', 'ernie4_5', 'command-r', 'cohere2', 'glm4', 'arcee', 'minicpm', 'internlm2']);
/** Architectures whose llama.cpp graph rotates only the first `rope.dimension_count` dimensions of each head. */
const PARTIAL_ROTARY: ReadonlySet<GgufArchitecture> = new Set(['phi3', 'glm4', 'glm4moe', 'bailingmoe2', 'qwen35', 'qwen35moe', 'qwen3next', 'stablelm', 'nemotron', 'phi2']);
/** Architectures whose gate and up projections are one `[2 ff, hidden]` matrix, gate first (llama.cpp's SwiGLU halves). */
const FUSED_GATE_UP: ReadonlySet<GgufArchitecture> = new Set(['phi3', 'glm4']);
/** Architectures whose q, k and v projections may carry biases (read when the file has them). */
const OPTIONAL_QKV_BIAS: ReadonlySet<GgufArchitecture> = new Set(['qwen2', 'llama', 'mistral3', 'glm4', 'glm4moe', 'seed_oss', 'starcoder2', 'stablelm', 'nemotron', 'phi2']);
/** Architectures whose norms are LayerNorms with a bias (`attention.layer_norm_epsilon`). */
const BIASED_LAYER_NORMS: ReadonlySet<GgufArchitecture> = new Set(['starcoder2', 'stablelm', 'nemotron', 'phi2']);
/** What llama.cpp adds to a position before dividing it into periods of the attention temperature's length. */
const TEMPERATURE_OFFSET = 0;

/** Cohere's Command R family: LayerNorms, parallel blocks, scaled logits. */
const COHERE: ReadonlySet<GgufArchitecture> = new Set(['command-r', 'cohere2']);

/** Architectures whose llama.cpp graph takes YaRN rope scaling as the converter computes it. */
const YARN_ARCHITECTURES: ReadonlySet<GgufArchitecture> = new Set(['llama', 'mistral3', 'granite', 'qwen2', 'qwen3', 'gpt-oss', 'deepseek2']);

/**
 * The context a long-context model was trained at before its rope was scaled (`rope.scaling.original_context_length`,
 * else `context_length`, as llama.cpp's n_ctx_orig_yarn); `feature` names what needs it.
 */
function originalContextLength(f: GgufFile, arch: GgufArchitecture, feature: string): number {
  const key = `${arch}.rope.scaling.original_context_length`;
  const n = f.getNumber(key) ?? f.getNumber(`${arch}.context_length`);
  const src = basename(f.path);
  if (n === undefined) throw new GgufError(`${src} uses ${feature} but has neither "${key}" nor "${arch}.context_length".`, 'missing-metadata');
  if (!Number.isInteger(n) || n <= 0) throw new GgufError(`${src}: "${key}" is ${n}, expected a positive integer.`, 'corrupt');
  return n;
}

/** The architecture a GGUF declares; refuses, by name, those the converter does not read. */
function ggufArchitecture(f: GgufFile): GgufArchitecture {
  const src = basename(f.path);
  const arch = f.getString('general.architecture');
  if (arch === undefined) throw new GgufError(`${src} has no "general.architecture" metadata.`, 'missing-metadata');
  if (!(SUPPORTED_ARCHITECTURES as readonly string[]).includes(arch)) {
    throw new GgufError(
      `${src} has general.architecture "${arch}"; the converter reads ${SUPPORTED_ARCHITECTURES.map((a) => `"${a}"`).join(', ')} ` +
        '(Llama 1/2/3, Mistral, Mixtral, SmolLM, TinyLlama, Ministral 3 and Devstral Small 2, Granite 3, SmolLM3, ERNIE 4.5, EXAONE 3.5, EXAONE 4.0, Qwen2/2.5, Qwen3, Qwen2-VL/2.5-VL, Qwen3-VL and Qwen3-VL-MoE as text models, Qwen1.5/Qwen2-MoE and Qwen3-MoE, Ling 2.0 and Ring 2.0, OLMoE, Granite 3 MoE, gpt-oss, GLM-4.5 and GLM-4.5-Air, ERNIE 4.5 MoE, DeepSeek-V2/V3 and their kin (latent attention: DeepSeek-V2-Lite, DeepSeek-Coder-V2-Lite, GLM-4.7-Flash), OLMo 2, Gemma, Gemma 2, Gemma 3, Phi-3, Command R and Aya, Command R7B, GLM-4 and GLM-Z1 (0414), StarCoder 2, StableLM 2, Arcee AFM, Seed-OSS, Nemotron-Mini, MiniCPM 1B/2B, InternLM 2/2.5, Phi-2, LFM2 and LFM2-MoE, Granite 4.0-H, Qwen3.5 and Qwen3.5-MoE, Qwen3-Next, Nemotron-H and Nemotron Nano 2, Falcon-H1).',
      'unsupported-model',
    );
  }
  return arch as GgufArchitecture;
}

/**
 * Reads the `LlamaConfig` of a GGUF of a supported architecture, with llama.cpp's defaults and meanings
 * (src/llama-model.cpp and src/models/<arch>.cpp are the reference); refuses, by name, every feature the
 * builder cannot represent rather than converting it wrongly.
 */
export function llamaConfigFromGguf(f: GgufFile): LlamaConfig {
  const src = basename(f.path);
  const arch = ggufArchitecture(f);
  // Metadata keys carry the file's architecture; the block is its text model's, or its experts' dense model's.
  const family = TEXT_MODEL_OF[arch] ?? MOE_BLOCK[arch]?.block ?? arch;
  const key = (k: string) => `${arch}.${k}`;
  const refuse = (what: string): never => {
    throw new GgufError(`${src} (${arch}) uses ${what}, which the converter does not support.`, 'unsupported-model');
  };
  const scalar = (k: string): number | undefined => {
    const v = f.get(key(k));
    if (Array.isArray(v)) refuse(`a per-layer "${key(k)}" (${v.length} values)`);
    return f.getNumber(key(k));
  };
  const required = (k: string): number => {
    const v = scalar(k);
    if (v === undefined) throw new GgufError(`${src} is missing the metadata "${key(k)}".`, 'missing-metadata');
    if (!Number.isInteger(v) || v <= 0) throw new GgufError(`${src}: "${key(k)}" is ${v}, expected a positive integer.`, 'corrupt');
    return v;
  };
  /** A real-valued setting, when present: a finite number above 0 (with `zero`, from 0), below `below`. */
  const checked = (k: string, v: number | undefined, range: { zero?: boolean; below?: number; expected: string }): number | undefined => {
    if (v === undefined) return undefined;
    const low = range.zero ? v >= 0 : v > 0;
    if (!Number.isFinite(v) || !low || (range.below !== undefined && v >= range.below)) throw new GgufError(`${src}: "${key(k)}" is ${v}, expected ${range.expected}.`, 'corrupt');
    return v;
  };
  // llama.cpp reads it for every architecture (embedding models such as LLM2Vec's attend both ways): masks here are causal.
  if (f.get(key('attention.causal')) === false) refuse(`bidirectional attention ("${key('attention.causal')}" = false); only causal decoders are supported`);
  const experts = scalar('expert_count') ?? 0;
  const moe = MOE_BLOCK[arch];
  if (experts > 0 && !moe) refuse(`mixture-of-experts layers ("${key('expert_count')}" = ${experts}; ${Object.keys(MOE_BLOCK).join(', ')} only)`);
  if (experts === 0 && moe && !moe.dense) throw new GgufError(`${src} is missing the metadata "${key('expert_count')}".`, 'missing-metadata');
  // llama.cpp reads expert groups for every architecture and then chooses the experts within the best groups
  // (DeepSeek-V3's group-limited routing; see the config's moe.groups).
  const groups = scalar('expert_group_count') ?? 0;
  const groupsUsed = scalar('expert_group_used_count') ?? 0;
  if (experts > 0 && groups > 1 && !(experts % groups === 0 && groupsUsed >= 1 && groupsUsed < groups)) {
    throw new GgufError(`${src}: ${experts} experts in ${groups} groups, ${groupsUsed} used ("${key('expert_group_count')}", "${key('expert_group_used_count')}"): the groups must divide the experts and 1 to ${groups - 1} be used.`, 'corrupt');
  }
  // llama.cpp scales the chosen experts' weights by this factor where a file gives one (GLM-4.5's and DeepSeek's own
  // files; not the other architectures' files, whose graphs here would not read it).
  const expertScale = scalar('expert_weights_scale') ?? 0;
  if (experts > 0 && expertScale !== 0 && expertScale !== 1 && !['glm4moe', 'deepseek2', 'bailingmoe2'].includes(arch)) refuse(`expert weights scaled by ${expertScale} ("${key('expert_weights_scale')}")`);

  // Rope scaling: llama.cpp reads the type (default "linear") and a factor (0 or absent: none).
  const scaling = f.getString(key('rope.scaling.type')) ?? 'linear';
  const factorKey = f.has(key('rope.scaling.factor')) ? 'rope.scaling.factor' : 'rope.scale_linear';
  const factor = checked(factorKey, scalar(factorKey), { zero: true, expected: 'a positive scale factor (0: none)' }) ?? 0;
  if (scaling !== 'none' && scaling !== 'linear' && scaling !== 'yarn') refuse(`rope scaling "${scaling}" ("${key('rope.scaling.type')}")`);
  if (scaling === 'yarn' && !YARN_ARCHITECTURES.has(arch)) refuse(`rope scaling "yarn" on ${arch}`);
  const ropeScale = scaling === 'linear' && factor !== 0 ? factor : 1;
  // llama.cpp multiplies rope's cos and sin by this factor (Phi-3's LongRoPE files carry one; YaRN adds its own).
  const attnFactor = scalar('rope.scaling.attn_factor') ?? 1;
  if (!(attnFactor > 0 && Number.isFinite(attnFactor))) throw new GgufError(`${src}: "${key('rope.scaling.attn_factor')}" is ${attnFactor}, expected a positive number.`, 'corrupt');

  const hiddenSize = required('embedding_length');
  const numHeads = required('attention.head_count');
  // Hybrids: KV heads per layer, 0 where the layer is recurrent (LFM2's short convolutions, Granite 4.0-H's Mamba2 mixers).
  const kvPerLayer = family === 'lfm2' || family === 'granitehybrid' || arch === 'nemotron_h' ? f.get(key('attention.head_count_kv')) : undefined;
  // Nemotron-H: feed-forward lengths per layer, 0 but in its MLP-only layers.
  const ffPerLayer = arch === 'nemotron_h' ? f.get(key('feed_forward_length')) : undefined;
  const mlpSizes = Array.isArray(ffPerLayer) ? [...new Set(ffPerLayer.map(Number).filter((n) => n !== 0))] : undefined;
  if (mlpSizes && mlpSizes.length > 1) refuse(`MLP layers of different sizes (${mlpSizes.join(', ')}; "${key('feed_forward_length')}")`);
  const convLayers = Array.isArray(kvPerLayer) ? kvPerLayer.map((n) => n === 0) : undefined;
  const attentionKv = Array.isArray(kvPerLayer) ? [...new Set(kvPerLayer.filter((n) => n !== 0))] : undefined;
  if (attentionKv && attentionKv.length !== 1) refuse(`attention layers with ${attentionKv.length ? `different numbers of KV heads (${attentionKv.join(', ')})` : 'no KV heads: no attention layer'} ("${key('attention.head_count_kv')}")`);
  const numKvHeads = attentionKv ? Number(attentionKv[0]) : (scalar('attention.head_count_kv') ?? numHeads);
  if (!Number.isInteger(numKvHeads) || numKvHeads <= 0) throw new GgufError(`${src}: "${key('attention.head_count_kv')}" is ${numKvHeads}, expected a positive integer.`, 'corrupt');
  // DeepSeek-V2's latent attention: a query/key head and a value head of their own sizes (files split for llama.cpp's
  // absorbed form give them as the `_mla` lengths, and the latent's as the plain ones).
  const latent = arch === 'deepseek2';
  const headDim = (latent ? scalar('attention.key_length_mla') : undefined) ?? scalar('attention.key_length') ?? hiddenSize / numHeads;
  const valueDim = (latent ? scalar('attention.value_length_mla') : undefined) ?? scalar('attention.value_length') ?? hiddenSize / numHeads;
  if (valueDim !== headDim && !latent) refuse(`a key length ${headDim} that differs from the value length ${valueDim} ("${key('attention.key_length')}", "${key('attention.value_length')}")`);
  const ropeDims = scalar('rope.dimension_count') ?? headDim;
  if (!Number.isInteger(headDim) || headDim <= 0 || numHeads % numKvHeads !== 0) {
    throw new GgufError(`${src}: ${numHeads} heads, ${numKvHeads} KV heads and head size ${headDim} do not form a valid attention layout.`, 'corrupt');
  }
  if (!Number.isInteger(ropeDims) || ropeDims <= 0 || ropeDims % 2 !== 0 || ropeDims > headDim) {
    throw new GgufError(`${src}: "${key('rope.dimension_count')}" is ${ropeDims}, expected an even number of dimensions within the head size ${headDim}.`, 'corrupt');
  }
  // llama.cpp's graphs of these architectures rotate part of each head (Phi-4-mini, GLM-4, StableLM, …); its others refuse or assert on it.
  if (ropeDims !== headDim && !PARTIAL_ROTARY.has(arch) && !latent) {
    refuse(`rotary embeddings over ${ropeDims} of ${headDim} head dimensions (partial rotary; ${[...PARTIAL_ROTARY].join(', ')} only)`);
  }
  const nextn = NEXTN_BLOCKS.has(arch) ? (scalar('nextn_predict_layers') ?? 0) : 0;
  const blocks = required('block_count');
  // Each block has tensors of its own: more blocks than tensors is damage, and would size the per-layer lists built below.
  if (blocks > f.tensors.length) throw new GgufError(`${src}: "${key('block_count')}" is ${blocks}, more blocks than the file's ${f.tensors.length} tensors.`, 'corrupt');
  const numLayers = blocks - nextn;
  if (!Number.isInteger(nextn) || nextn < 0 || numLayers <= 0) throw new GgufError(`${src}: "${key('nextn_predict_layers')}" is ${nextn}, expected fewer than the ${numLayers + nextn} blocks.`, 'corrupt');
  if (convLayers && convLayers.length !== numLayers) throw new GgufError(`${src}: "${key('attention.head_count_kv')}" lists ${convLayers.length} layers, the file has ${numLayers}.`, 'corrupt');
  const embd = f.tensorInfo('token_embd.weight');
  const tokens = f.get('tokenizer.ggml.tokens');
  const vocabSize = scalar('vocab_size') ?? (embd ? embd.dims[1] : undefined) ?? (Array.isArray(tokens) ? tokens.length : undefined);
  if (vocabSize === undefined) throw new GgufError(`${src} has no vocabulary size (no ${key('vocab_size')}, token_embd.weight or tokens).`, 'missing-metadata');
  const ropeTheta = checked('rope.freq_base', scalar('rope.freq_base'), { expected: 'a positive rope base (such as 10000)' }) ?? 10000;
  const localRopeBase = () => checked('rope.freq_base_swa', scalar('rope.freq_base_swa'), { expected: 'a positive rope base (such as 10000)' });
  // (Nemotron-H's older files name its RMSNorms' epsilon as a LayerNorm's)
  const epsKey =
    COHERE.has(arch) || BIASED_LAYER_NORMS.has(arch) || (arch === 'nemotron_h' && !f.has(key('attention.layer_norm_rms_epsilon')))
      ? 'attention.layer_norm_epsilon'
      : 'attention.layer_norm_rms_epsilon';
  // llama.cpp requires it too: a guessed epsilon would shift every norm (Qwen's is 1e-6, Llama's 1e-5).
  const eps = scalar(epsKey);
  if (eps === undefined) throw new GgufError(`${src} is missing the metadata "${key(epsKey)}".`, 'missing-metadata');
  const rmsNormEps = checked(epsKey, eps, { zero: true, below: 1, expected: 'a small non-negative number (such as 1e-5)' })!;

  const config: LlamaConfig = {
    vocabSize,
    hiddenSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    intermediateSize: experts > 0 && moe?.ownExpertSize ? expertSize(scalar, required) : mlpSizes ? (mlpSizes[0] ?? 1) : required('feed_forward_length'),
    ropeTheta,
    rmsNormEps,
    ropeStyle: ADJACENT_ROPE.has(family) ? 'adjacent' : 'half',
    // Gemma's and Gemma 2's head is always the embedding (llama.cpp never reads an output.weight for them; one left in the file is refused as unused).
    tieWordEmbeddings: arch === 'gemma' || arch === 'gemma2' || !f.tensorInfo('output.weight'),
  };
  if (ropeScale !== 1) config.ropeScale = ropeScale;
  if (experts > 0) {
    const used = required('expert_used_count');
    if (used > experts) throw new GgufError(`${src}: "${key('expert_used_count')}" is ${used}, more than the ${experts} experts.`, 'corrupt');
    config.moe = { experts, used, normalize: moe!.normalize };
    // Qwen2-MoE's shared expert (llama.cpp: expert_shared_feed_forward_length, else feed_forward_length).
    if (arch === 'qwen2moe' || arch === 'qwen35moe' || arch === 'qwen3next') config.moe.sharedSize = scalar('expert_shared_feed_forward_length') ?? required('feed_forward_length');
    // GLM-4.5: sigmoid scores unless the file says otherwise.
    if (arch === 'glm4moe') config.moe = routedExperts(f, config, { scalar, required, refuse, key, scale: expertScale }, 'sigmoid', 'required');
    // Ling 2.0: the gating function is required; its shared experts as wide as `expert_shared_feed_forward_length` each where given.
    if (arch === 'bailingmoe2') {
      required('expert_gating_func');
      config.moe = routedExperts(f, config, { scalar, required, refuse, key, scale: expertScale }, 'softmax', 'optional', scalar('expert_shared_feed_forward_length') || undefined);
    }
    if (arch === 'ernie4_5-moe') config.moe = ernieExperts(f, config, { scalar, required, refuse, key });
    // LFM2-MoE: sigmoid scores by default, a selection bias where the file has one, always renormalized, never scaled.
    if (arch === 'lfm2moe') config.moe = { ...routedExperts(f, config, { scalar, required, refuse, key, scale: 1 }, 'sigmoid', 'optional'), normalize: true };
    if (arch === 'deepseek2') {
      // DeepSeek-V2/V2.5 files name no gating: softmax; GLM-4.7-Flash's may not either, and llama.cpp tells them by 47 or
      // 48 layers and 154,880 tokens: sigmoid.
      const glm47 = (numLayers === 47 || numLayers === 48) && vocabSize === 154880;
      config.moe = routedExperts(f, config, { scalar, required, refuse, key, scale: expertScale }, glm47 ? 'sigmoid' : 'softmax', 'optional');
    }
  }
  if (latent) {
    const kvLoraRank = required('attention.kv_lora_rank');
    const qLoraRank = scalar('attention.q_lora_rank') ?? 0;
    config.mla = { kvLoraRank, ropeDim: ropeDims, valueDim, ...(qLoraRank > 0 ? { qLoraRank } : {}) };
    // Mistral Large 3's attention temperature on the latent form is not built.
    const temperature = scalar('attention.temperature_scale') ?? 0;
    if (temperature !== 0) refuse(`an attention temperature ("${key('attention.temperature_scale')}" = ${temperature}) with latent attention`);
  }
  if (config.moe && groups > 1) config.moe.groups = { count: groups, used: groupsUsed };
  let ropeAttentionFactor = attnFactor;
  if (scaling === 'yarn') {
    const yarn = yarnRope({
      dims: ropeDims,
      base: ropeTheta,
      factor: factor === 0 ? 1 : factor,
      originalContext: originalContextLength(f, arch, 'YaRN rope scaling'),
      betaFast: scalar('rope.scaling.yarn_beta_fast') ?? 32,
      betaSlow: scalar('rope.scaling.yarn_beta_slow') ?? 1,
    });
    config.ropeFreqFactors = yarn.divisors;
    // mistral3's graph cancels YaRN's magnitude factor (Ministral 3's mscale and mscale_all_dims are equal); deepseek2's
    // cancels it in the rotation and scales q·k by the square of its own, `1 + yarn_log_multiplier · ln(factor)` (the file
    // holds DeepSeek's mscale_all_dim times 0.1), times the file's attention factor.
    if (arch === 'deepseek2') {
      const mscale = attnFactor * (1 + (scalar('rope.scaling.yarn_log_multiplier') ?? 0) * Math.log(factor === 0 ? 1 : factor));
      config.queryScale = (mscale * mscale) / Math.sqrt(headDim);
    } else if (arch !== 'mistral3') ropeAttentionFactor *= yarn.mscale;
  }
  // Ministral 3's attention temperature, over periods of the original context unless the file names a length.
  const temperature = arch === 'mistral3' ? scalar('attention.temperature_scale') : undefined;
  if (temperature !== undefined && temperature !== 0) {
    const length = scalar('attention.temperature_length') ?? originalContextLength(f, arch, 'attention temperature scaling');
    config.queryTemperature = { scale: temperature, length, offset: TEMPERATURE_OFFSET };
  }
  // Partial rotary (Phi-4-mini): llama.cpp rotates the first rope.dimension_count dimensions of each head.
  if (ropeDims !== headDim) config.ropeDims = ropeDims;
  if (OPTIONAL_QKV_BIAS.has(family) && (f.tensorInfo('blk.0.attn_q.bias') || f.tensorInfo('blk.0.attn_qkv.bias'))) config.qkvBias = true;
  if (family === 'qwen3' || arch === 'gemma3' || arch === 'bailingmoe2') config.qkNorm = true;
  if (arch === 'exaone4') {
    // EXAONE 4.0: norms after the blocks only (as OLMo 2), per-head q/k norms. llama.cpp gives the 64-layer model
    // (32B) a sliding window on three layers of every four, the fourth attending to all without rotary; the others none.
    Object.assign(config, { preNorms: false, postNorms: true, qkNorm: true });
    if (numLayers === 64) slideThreeOfFour(config, scalar('attention.sliding_window') ?? 4096);
  }
  if (COHERE.has(arch)) {
    // Command R: LayerNorms without a bias, attention and MLP side by side on one norm, logits multiplied (required, as
    // llama.cpp requires it). Command R7B (cohere2) slides its window on three layers of every four, the fourth
    // attending to all without rotary. Command R+'s q/k LayerNorms are refused.
    if (f.tensorInfo('blk.0.attn_q_norm.weight')) refuse('q/k LayerNorms ("blk.0.attn_q_norm.weight", Command R+)');
    const logitScale = scalar('logit_scale');
    if (logitScale === undefined) throw new GgufError(`${src} is missing the metadata "${key('logit_scale')}".`, 'missing-metadata');
    if (!(logitScale > 0 && Number.isFinite(logitScale))) throw new GgufError(`${src}: "${key('logit_scale')}" is ${logitScale}, expected a positive number.`, 'corrupt');
    Object.assign(config, { normType: 'layer', parallelBlock: true, logitScale: 1 / logitScale });
    if (arch === 'cohere2') {
      const window = scalar('attention.sliding_window');
      if (window === undefined) throw new GgufError(`${src} is missing the metadata "${key('attention.sliding_window')}".`, 'missing-metadata');
      slideThreeOfFour(config, window);
    }
  }
  // GLM-4 (0414): Gemma 2's four norms around the blocks. Its vision-language models' text (GLM-4.1V) carries M-RoPE
  // sections, which llama.cpp then rotates in NeoX's halves; on text every section takes the token's position.
  if (arch === 'glm4') {
    config.postNorms = true;
    const sections = f.get(key('rope.dimension_sections'));
    if (Array.isArray(sections) && sections.some((n) => n !== 0)) config.ropeStyle = 'half';
  }
  if (BIASED_LAYER_NORMS.has(arch)) {
    Object.assign(config, { normType: 'layer', normBias: true });
    // StableLM 2 12B's per-head q/k LayerNorms (a weight per head) are refused.
    if (f.tensorInfo('blk.0.attn_q_norm.weight')) refuse('per-head q/k LayerNorms ("blk.0.attn_q_norm.weight", StableLM 2 12B)');
  }
  // StarCoder 2: biased attention output and MLP projections, an ungated GELU MLP (ggml's GELU: the tanh approximation).
  if (arch === 'starcoder2') Object.assign(config, { projectionBias: true, gatedMlp: false, hiddenAct: 'gelu_tanh' });
  // Phi-2: StarCoder 2's MLP beside attention on one norm (a parallel block), and a biased head.
  if (arch === 'phi2') Object.assign(config, { projectionBias: true, gatedMlp: false, hiddenAct: 'gelu_tanh', parallelBlock: true, headBias: true });
  // Nemotron: an ungated ReLU² MLP; its attention-output and MLP biases are optional (Nemotron-Mini has none).
  if (arch === 'nemotron') Object.assign(config, { gatedMlp: false, hiddenAct: 'relu2', ...(f.tensorInfo('blk.0.attn_output.bias') ? { projectionBias: true } : {}) });
  if (arch === 'arcee') {
    // Arcee AFM: the Llama block with an ungated ReLU² MLP, and llama.cpp's optional attention scale.
    Object.assign(config, { gatedMlp: false, hiddenAct: 'relu2' });
    const attentionScale = scalar('attention.scale');
    if (attentionScale !== undefined && attentionScale !== 0) config.queryScale = attentionScale;
  }
  if (arch === 'gpt-oss') {
    // gpt-oss: biased q, k, v and output projections, a sink logit per head, experts with biases and OpenAI's clamped
    // SwiGLU (llama.cpp's swiglu_oai: alpha 1.702, limit 7, up + 1), and a sliding window on all but the last layer of
    // each period (default 2: even layers slide), with its own rope base where the file gives one.
    Object.assign(config, { qkvBias: true, projectionBias: true, attentionSinks: true });
    config.moe = { ...config.moe!, biases: true, swiglu: { alpha: 1.702, beta: 1, limit: 7 } };
    const window = scalar('attention.sliding_window');
    if (window === undefined) throw new GgufError(`${src} is missing the metadata "${key('attention.sliding_window')}".`, 'missing-metadata');
    const period = scalar('attention.sliding_window_pattern') ?? 2;
    config.slidingWindow = window;
    config.layerTypes = slidingLayers(numLayers, period);
    const localTheta = localRopeBase() ?? ropeTheta;
    if (localTheta !== ropeTheta) config.ropeThetaLocal = localTheta;
  }
  // GLM-4.5: per-head q/k norms where the file has them (GLM-4.5 355B; not the Air).
  if (arch === 'glm4moe' && f.tensorInfo('blk.0.attn_q_norm.weight')) config.qkNorm = true;
  // OLMoE: the Llama block's norms, q and k RMS-normalized over their whole projections (as OLMo 2's), experts.
  if (arch === 'olmoe') Object.assign(config, { qkNorm: true, qkNormWidth: 'projection' });
  if (arch === 'olmo2') {
    // OLMo 2: no norm before attention or the MLP, one after each; q and k normalized over their whole projections.
    Object.assign(config, { preNorms: false, postNorms: true, qkNorm: true, qkNormWidth: 'projection' });
    // OLMo 3: a sliding window on all but the last layer of each `attention.sliding_window_pattern` (default 4), whose
    // rotation is not scaled, as llama.cpp's graph runs the file (it rotates them with the global base: a
    // `rope.freq_base_swa` in the file is left alone, as it leaves it).
    const window = scalar('attention.sliding_window') ?? 0;
    if (window > 0) {
      config.slidingWindow = window;
      config.layerTypes = slidingLayers(numLayers, scalar('attention.sliding_window_pattern') ?? 4);
      if (ropeScale !== 1) config.ropeScaleLocal = 1;
    }
  }

  if (family === 'lfm2') {
    // LFM2: per-head q/k norms on the attention layers, the others gated short convolutions of `shortconv.l_cache` taps.
    // A sliding window (llama.cpp's iswa variant) is refused.
    config.qkNorm = true;
    const window = scalar('attention.sliding_window') ?? 0;
    if (window > 0) refuse(`a sliding window ("${key('attention.sliding_window')}" = ${window})`);
    if (convLayers?.some(Boolean)) {
      config.layerTypes = convLayers.map((conv) => (conv ? 'conv' : 'full'));
      config.convKernel = required('shortconv.l_cache');
      if (config.convKernel < 2) throw new GgufError(`${src}: "${key('shortconv.l_cache')}" is ${config.convKernel}, expected 2 or more taps.`, 'corrupt');
    }
  }
  if (family === 'granitehybrid') graniteHybridConfig(f, config, convLayers, { scalar, required, refuse, key });
  // (Falcon-H1's and Nemotron-H's graphs take q·k's scale from the file where it gives one, as Granite's does)
  const attentionScale = scalar('attention.scale') ?? 0;
  if (arch === 'falcon-h1') {
    // Falcon-H1: a Mamba2 mixer beside attention in every layer, on one norm, their outputs summed (llama.cpp's graph; its
    // converter folds Falcon-H1's multipliers into the weights).
    Object.assign(config, { layerTypes: new Array<'mamba-attention'>(numLayers).fill('mamba-attention'), mamba: mambaSizes(f, { required, key }) });
    if (attentionScale !== 0) config.queryScale = attentionScale;
  }
  if (arch === 'nemotron_h') {
    // Nemotron-H: each layer one block under its norm (llama.cpp's graph): a Mamba2 mixer where it has neither KV heads nor an
    // MLP, an MLP alone (ungated, ReLU²) where it has an MLP, attention (no position encoding) where it has KV heads.
    const ff = Array.isArray(ffPerLayer) ? ffPerLayer.map(Number) : new Array<number>(numLayers).fill(required('feed_forward_length'));
    const kinds = (convLayers ?? new Array<boolean>(numLayers).fill(false)).map((noKv, i) => (!noKv ? 'full' : ff[i]! > 0 ? 'mlp' : 'mamba') as 'full' | 'mlp' | 'mamba');
    Object.assign(config, { singleBlocks: true, gatedMlp: false, hiddenAct: 'relu2', layerTypes: kinds, noRopeLayers: Array.from({ length: numLayers }, (_, i) => i) });
    if (kinds.includes('mamba')) config.mamba = mambaSizes(f, { required, key });
    if (attentionScale !== 0) config.queryScale = attentionScale;
  }
  if (family === 'qwen35') deltaNetConfig(f, config, { scalar, required, refuse, key }, arch === 'qwen3next');
  // SmolLM3: every fourth layer uses no rotary embedding (llama.cpp's n_no_rope_layer_step, a constant, not a key).
  if (arch === 'smollm3') config.noRopeLayers = Array.from({ length: numLayers }, (_, i) => i).filter((i) => (i + 1) % 4 === 0);
  if (family === 'granite' || arch === 'minicpm') {
    // Granite's multipliers, which llama.cpp requires: embeddings, each block's output, q·k (in place of
    // 1/sqrt(head size)), and the logits (divided). MiniCPM's are the same but q·k's. (Later llama.cpp builds default
    // MiniCPM's when a file leaves them out; the one the tests run refuses such files, and so does the converter.)
    const multiplier = (k: string): number => {
      const v = scalar(k);
      if (v === undefined) throw new GgufError(`${src} is missing the metadata "${key(k)}".`, 'missing-metadata');
      if (!(v > 0 && Number.isFinite(v))) throw new GgufError(`${src}: "${key(k)}" is ${v}, expected a positive number.`, 'corrupt');
      return v;
    };
    config.embeddingScale = multiplier('embedding_scale');
    config.residualScale = multiplier('residual_scale');
    if (family === 'granite') config.queryScale = multiplier('attention.scale');
    config.logitScale = multiplier('logit_scale');
  }
  if (arch === 'gemma') {
    // Gemma (1): the Gemma 2 block without its post norms, soft-capping or sliding window.
    config.hiddenAct = 'gelu_tanh';
    config.embeddingScale = Math.sqrt(hiddenSize);
  }
  if (arch === 'gemma2' || arch === 'gemma3') {
    // Gemma's (1 + w) norms: convert_hf_to_gguf stores 1 + w already, so llama.cpp multiplies by the weight as is.
    config.postNorms = true;
    config.hiddenAct = 'gelu_tanh';
    config.embeddingScale = Math.sqrt(hiddenSize);
    // llama.cpp derives query_pre_attn_scalar from the model size: hidden / heads for the 27B models, else the head size.
    const is27b = numLayers === (arch === 'gemma2' ? 46 : 62);
    config.queryScale = 1 / Math.sqrt(is27b ? Math.floor(hiddenSize / numHeads) : headDim);
    const window = scalar('attention.sliding_window');
    const swa = arch === 'gemma2' ? true : window !== undefined && window > 0;
    if (arch === 'gemma2') {
      config.attnLogitSoftcap = scalar('attn_logit_softcapping') ?? 50;
      config.finalLogitSoftcap = scalar('final_logit_softcapping') ?? 30;
    } else {
      const cap = scalar('final_logit_softcapping') ?? 0;
      if (cap !== 0) config.finalLogitSoftcap = cap;
    }
    if (swa) {
      const period = scalar('attention.sliding_window_pattern') ?? (arch === 'gemma2' ? 2 : 6);
      config.slidingWindow = window ?? 4096;
      config.layerTypes = slidingLayers(numLayers, period);
      const localTheta = localRopeBase() ?? (arch === 'gemma2' ? ropeTheta : 10000);
      if (localTheta !== ropeTheta) config.ropeThetaLocal = localTheta;
      // Gemma 3's local layers are not rope-scaled; Gemma 2's share the global scale.
      if (arch === 'gemma3' && ropeScale !== 1) config.ropeScaleLocal = 1;
    }
  }
  // phi3: llama.cpp disables Phi-3's sliding window (it reads "phi3.attention.sliding_window" and sets no window), and so do we.
  if (ropeAttentionFactor !== 1) config.ropeAttentionFactor = ropeAttentionFactor;
  return config;
}

/**
 * A Mamba2 mixer's sizes (llama.cpp's `ssm.*` keys): `ssm.conv_kernel` taps, `ssm.inner_size` channels in
 * `ssm.time_step_rank` heads, a state of `ssm.state_size`, B and C in `ssm.group_count` groups.
 */
function mambaSizes(f: GgufFile, p: { required: (k: string) => number; key: (k: string) => string }): NonNullable<LlamaConfig['mamba']> {
  const heads = p.required('ssm.time_step_rank');
  const inner = p.required('ssm.inner_size');
  const groups = p.required('ssm.group_count');
  if (inner % heads !== 0 || heads % groups !== 0) throw new GgufError(`${basename(f.path)}: ${inner} SSM channels in ${heads} heads of ${groups} groups ("${p.key('ssm.inner_size')}", "${p.key('ssm.time_step_rank')}", "${p.key('ssm.group_count')}") do not divide evenly.`, 'corrupt');
  return { convKernel: p.required('ssm.conv_kernel'), heads, headDim: inner / heads, stateSize: p.required('ssm.state_size'), groups };
}

/**
 * Granite 4.0-H as llama.cpp's granitehybrid graph reads it: the layers whose KV heads are 0 Mamba2 mixers (see
 * mambaSizes), the others attention, rotated only where `rope.scaling.finetuned` (default true; Granite 4.0-H's files say
 * false: no position encoding); Granite's multipliers where the file gives them; a shared expert of
 * `expert_shared_feed_forward_length` added ungated.
 */
function graniteHybridConfig(
  f: GgufFile,
  config: LlamaConfig,
  recurrent: boolean[] | undefined,
  p: { scalar: (k: string) => number | undefined; required: (k: string) => number; refuse: (what: string) => never; key: (k: string) => string },
): void {
  if (recurrent?.some(Boolean)) {
    config.layerTypes = recurrent.map((r) => (r ? 'mamba' : 'full'));
    config.mamba = mambaSizes(f, p);
  }
  for (const [k, field] of [['embedding_scale', 'embeddingScale'], ['residual_scale', 'residualScale'], ['attention.scale', 'queryScale'], ['logit_scale', 'logitScale']] as const) {
    const v = p.scalar(k) ?? 0;
    if (v !== 0) config[field] = v;
  }
  if (f.get(p.key('rope.scaling.finetuned')) === false) config.noRopeLayers = Array.from({ length: config.numLayers }, (_, i) => i);
  const shared = p.scalar('expert_shared_feed_forward_length') ?? 0;
  if (config.moe && shared > 0) config.moe = { ...config.moe, sharedSize: shared, sharedGate: false };
}

/**
 * Qwen3.5 as llama.cpp's qwen35 graph reads it: gated DeltaNet layers (`attention.recurrent_layers`, else all but every
 * `full_attention_interval`-th, default 4) of `ssm.group_count` key heads of `ssm.state_size`, `ssm.time_step_rank` value
 * heads sharing `ssm.inner_size`, a convolution of `ssm.conv_kernel` taps; the others attention with a doubled query
 * projection whose second half gates the output, per-head q/k norms and NeoX rotary over `rope.dimension_count` (its
 * M-RoPE sections all take a text token's position). Qwen3-Next's value heads come in runs per key head (`groupedHeads`:
 * llama.cpp repeats each key head for its run), Qwen3.5's tile the key heads.
 */
function deltaNetConfig(
  f: GgufFile,
  config: LlamaConfig,
  p: { scalar: (k: string) => number | undefined; required: (k: string) => number; refuse: (what: string) => never; key: (k: string) => string },
  groupedHeads: boolean,
): void {
  const listed = f.get(p.key('attention.recurrent_layers'));
  const interval = p.scalar('full_attention_interval') ?? 4;
  const recurrent = Array.isArray(listed)
    ? Array.from({ length: config.numLayers }, (_, i) => Boolean(listed[i]))
    : Array.from({ length: config.numLayers }, (_, i) => (i + 1) % interval !== 0);
  const valueHeads = p.required('ssm.time_step_rank');
  const keyHeads = p.required('ssm.group_count');
  const inner = p.required('ssm.inner_size');
  if (inner % valueHeads !== 0 || valueHeads % keyHeads !== 0) throw new GgufError(`${basename(f.path)}: ${inner} value channels in ${valueHeads} heads over ${keyHeads} key heads ("${p.key('ssm.inner_size')}", "${p.key('ssm.time_step_rank')}", "${p.key('ssm.group_count')}") do not divide evenly.`, 'corrupt');
  if (!recurrent.some((r) => !r)) p.refuse('no attention layer among its layers');
  Object.assign(config, {
    qkNorm: true,
    attentionGate: true,
    layerTypes: recurrent.map((r) => (r ? 'delta' : 'full')),
    deltaNet: { convKernel: p.required('ssm.conv_kernel'), keyHeads, keyDim: p.required('ssm.state_size'), valueHeads, valueDim: inner / valueHeads, ...(groupedHeads ? { groupedHeads } : {}) },
  });
}

/**
 * Experts as DeepSeek-V3 routes them, as llama.cpp's glm4moe and deepseek2 graphs read their files: a softmax or sigmoid
 * score per expert (`expert_gating_func`; `defaultGating` where it is 0 or absent), the best by score plus a selection
 * bias (`exp_probs_b`: required for GLM-4.5, as llama.cpp requires it; where the file has it for DeepSeek), renormalized where `expert_weights_norm`, scaled by `expert_weights_scale`;
 * `expert_shared_count` shared experts of `sharedExpertSize` each (default the expert size; one MLP) added ungated; the first
 * `leading_dense_block_count` layers dense MLPs of `feed_forward_length`.
 */
function routedExperts(
  f: GgufFile,
  config: LlamaConfig,
  p: { scalar: (k: string) => number | undefined; required: (k: string) => number; refuse: (what: string) => never; key: (k: string) => string; scale: number },
  defaultGating: 'softmax' | 'sigmoid',
  selectionBias: 'required' | 'optional',
  sharedExpertSize = config.intermediateSize,
): NonNullable<LlamaConfig['moe']> {
  const stated = p.scalar('expert_gating_func') ?? 0;
  // llama.cpp's llama_expert_gating_func_type: 0 none, 1 softmax, 2 sigmoid
  if (stated !== 0 && stated !== 1 && stated !== 2) p.refuse(`expert gating function ${stated} ("${p.key('expert_gating_func')}"; softmax and sigmoid only)`);
  const dense = p.scalar('leading_dense_block_count') ?? 0;
  const shared = p.scalar('expert_shared_count') ?? 0;
  return {
    ...config.moe!,
    normalize: f.get(p.key('expert_weights_norm')) === true,
    gating: stated === 0 ? defaultGating : stated === 1 ? 'softmax' : 'sigmoid',
    ...(selectionBias === 'required' || f.tensorInfo(`blk.${dense}.exp_probs_b.bias`) ? { selectionBias: true } : {}),
    ...(p.scale !== 0 && p.scale !== 1 ? { scale: p.scale } : {}),
    ...(shared > 0 ? { sharedSize: shared * sharedExpertSize, sharedGate: false } : {}),
    ...(dense > 0 ? { denseLayers: { count: dense, intermediateSize: p.required('feed_forward_length') } } : {}),
  };
}

/**
 * ERNIE 4.5's experts as llama.cpp's graph routes them: a softmax over all, the best by score plus a selection bias
 * (`exp_probs_b`, where the file has it), renormalized; a shared expert of `expert_shared_feed_forward_length` added
 * ungated; the first `leading_dense_block_count` layers dense MLPs of `feed_forward_length`. llama.cpp's graph puts
 * experts in every `interleave_moe_layer_step`-th layer past those; ERNIE 4.5's models have every one (step 1), others
 * are refused.
 */
function ernieExperts(
  f: GgufFile,
  config: LlamaConfig,
  p: { scalar: (k: string) => number | undefined; required: (k: string) => number; refuse: (what: string) => never; key: (k: string) => string },
): NonNullable<LlamaConfig['moe']> {
  const step = p.required('interleave_moe_layer_step');
  if (step !== 1) p.refuse(`experts in one layer of every ${step} ("${p.key('interleave_moe_layer_step')}" = ${step}; 1 only)`);
  const dense = p.scalar('leading_dense_block_count') ?? 0;
  const shared = p.scalar('expert_shared_feed_forward_length') ?? 0;
  return {
    ...config.moe!,
    ...(f.tensorInfo(`blk.${dense}.exp_probs_b.bias`) ? { selectionBias: true } : {}),
    ...(shared > 0 ? { sharedSize: shared, sharedGate: false } : {}),
    ...(dense > 0 ? { denseLayers: { count: dense, intermediateSize: p.required('feed_forward_length') } } : {}),
  };
}

/**
 * An expert's inner size where the architecture gives its own (Qwen's MoE models): `expert_feed_forward_length`, else
 * the feed-forward length divided among the experts a token uses, as llama.cpp reads it.
 */
function expertSize(scalar: (k: string) => number | undefined, required: (k: string) => number): number {
  const own = scalar('expert_feed_forward_length');
  if (own !== undefined && own > 0) return own;
  return Math.floor(required('feed_forward_length') / required('expert_used_count'));
}

/** llama.cpp's set_swa_pattern: in each period of layers all but the last slide (a period of 0: all of them). */
function slidingLayers(numLayers: number, period: number): ('full' | 'sliding')[] {
  return Array.from({ length: numLayers }, (_, i) => (period === 0 || i % period < period - 1 ? 'sliding' : 'full'));
}

/**
 * llama.cpp's sliding window on three layers of every four (its `set_swa_pattern(4)`), the fourth attending to all
 * without rotary (EXAONE 4.0 32B, Command R7B).
 */
function slideThreeOfFour(config: LlamaConfig, window: number): void {
  config.slidingWindow = window;
  config.layerTypes = slidingLayers(config.numLayers, 4);
  config.noRopeLayers = config.layerTypes.flatMap((t, i) => (t === 'full' ? [i] : []));
}

/**
 * YaRN as ggml's rope computes it with llama.cpp's defaults (extrapolation factor 1 for "yarn" files): each
 * frequency's angle mixes the interpolated (`1/factor`) and the original one by a ramp over the frequencies between
 * the correction dimensions of `betaFast` and `betaSlow` rotations in `originalContext` positions, which does not
 * depend on the position, so it is one divisor per frequency; cos and sin grow by `1 + 0.1 ln(factor)`.
 */
function yarnRope(p: { dims: number; base: number; factor: number; originalContext: number; betaFast: number; betaSlow: number }): {
  divisors: number[];
  mscale: number;
} {
  const freqScale = 1 / p.factor;
  const corrDim = (rotations: number) => (p.dims * Math.log(p.originalContext / (rotations * 2 * Math.PI))) / (2 * Math.log(p.base));
  const low = Math.max(0, Math.floor(corrDim(p.betaFast)));
  const high = Math.min(p.dims - 1, Math.ceil(corrDim(p.betaSlow)));
  const divisors = Array.from({ length: p.dims / 2 }, (_, j) => {
    const ramp = 1 - Math.min(1, Math.max(0, (j - low) / Math.max(0.001, high - low)));
    return 1 / (freqScale * (1 - ramp) + ramp);
  });
  return { divisors, mscale: 1 + 0.1 * Math.log(1 / freqScale) };
}

/** A dense matrix of runs of rows (each `[from, n]`) of one GGUF tensor, read from the file when the builder loads it. */
interface TensorRows extends DeferredMatrix {
  tensor: string;
  runs: readonly (readonly [number, number])[];
}

/** A matrix as {@link llamaWeightsFromGguf} gives it: block-quantized (read), or dense rows of a tensor (deferred). */
export type GgufMatrix = WeightMatrix | TensorRows;

function tensorRows(f: GgufFile, tensor: string, cols: number, runs: readonly (readonly [number, number])[]): TensorRows {
  const rows = runs.reduce((n, [, k]) => n + k, 0);
  const load = (): Float32Array => {
    if (runs.length === 1) return f.readRowsSync(tensor, runs[0]![0], runs[0]![1]);
    const out = new Float32Array(rows * cols);
    let at = 0;
    for (const [from, n] of runs) {
      out.set(f.readRowsSync(tensor, from, n), at);
      at += n * cols;
    }
    return out;
  };
  return { kind: 'deferred', rows, cols, tensor, runs, load };
}

function isTensorRows(m: GgufMatrix): m is TensorRows {
  return !(m instanceof Float32Array) && m.kind === 'deferred';
}

/**
 * Checks all weights of a GGUF of a supported architecture against the config: block-quantized tensors are read (and
 * repacked for MatMulNBits); dense and dequantized ones are left in the file as {@link DeferredMatrix}es, read when the
 * builder comes to them, so that a conversion holds about one tensor's floats at a time rather than the whole model's.
 * The file must stay open until the model is built.
 */
export async function llamaWeightsFromGguf(
  f: GgufFile,
  config: LlamaConfig,
  opts: { dequantize?: boolean } = {},
): Promise<LlamaWeights<GgufMatrix>> {
  const src = basename(f.path);
  const arch = ggufArchitecture(f);
  const h = config.hiddenSize;
  const hd = config.headDim ?? h / config.numHeads;
  const qDim = config.numHeads * hd;
  const kvDim = (config.numKvHeads ?? config.numHeads) * hd;
  const ff = config.intermediateSize;
  const used = new Set<string>();
  const read = async (name: string, shape: number[]): Promise<Float32Array> => f.readTensor(check(name, shape).name);
  /** Whether `name` is of a block the file has no tensor of (a block count larger than the file's). */
  const blockMissing = (name: string) => {
    const block = blockOf(name);
    return block !== undefined && !f.tensors.some((t) => blockOf(t.name) === block);
  };
  /** The tensor's info once its shape matches `shape`; marks it used. */
  const check = (name: string, shape: number[]): GgufTensorInfo => {
    const t: GgufTensorInfo | undefined = f.tensorInfo(name);
    if (!t) throw new GgufError(`${src} has no tensor "${name}" (expected shape [${shape.join(', ')}]${blockMissing(name) ? `; no tensor of its block, of the ${config.numLayers} that "${arch}.block_count" says` : ''}).`, 'missing-tensor');
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new GgufError(
        `${src}: tensor "${name}" has shape [${t.shape.join(', ')}] (GGUF ne [${t.dims.join(', ')}]); the metadata implies [${shape.join(', ')}].`,
        'corrupt',
      );
    }
    used.add(name);
    return t;
  };
  /** A projection or embedding matrix: block-quantized tensors are repacked for MatMulNBits (see quant/nbits.ts), others deferred. */
  const readMatrix = async (name: string, shape: [number, number]): Promise<GgufMatrix> => {
    const t = check(name, shape);
    if (!t.quantized || opts.dequantize) return tensorRows(f, name, shape[1], [[0, shape[0]]]);
    // the embedding is read by GatherBlockQuantized, which takes no offset columns
    return toNBits(t.type, await f.readTensorBytes(name), shape[0], shape[1], { offsetColumns: name !== 'token_embd.weight' });
  };
  /**
   * The rows of `runs` (each `[from, n]`) of a matrix readMatrix gave, in that order: a deferred one's are read alone
   * when it is loaded (readMatrix defers whole tensors: their rows are the tensor's).
   */
  const pick = (m: GgufMatrix, runs: readonly (readonly [number, number])[], cols: number): GgufMatrix =>
    isTensorRows(m) ? tensorRows(f, m.tensor, cols, runs) : pickRows(m, runs, cols);
  /**
   * A layer's experts: quantized for onnxruntime's QMoE where all three tensors are block-quantized (each repacked as
   * the MatMulNBits mapping repacks it, types with offsets requantized to 8 bits; where the three would then differ in
   * bits or block size, as Q4_K_M's Q4_K and Q6_K do, all three requantized from their values to 8 bits, block 32, with
   * zero points), else dense float32 for its MoE (and with `dequantize`), deferred.
   */
  const readExperts = async (p: string, e: number): Promise<Pick<MoeWeights<GgufMatrix>, 'gate' | 'up' | 'down'>> => {
    const tensors = [
      { name: `${p}ffn_gate_exps.weight`, rows: ff, cols: h },
      { name: `${p}ffn_up_exps.weight`, rows: ff, cols: h },
      { name: `${p}ffn_down_exps.weight`, rows: h, cols: ff },
    ].map((t) => ({ ...t, info: check(t.name, [e, t.rows, t.cols]) }));
    const deferred = (t: (typeof tensors)[number]) => tensorRows(f, t.name, t.cols, [[0, e * t.rows]]);
    if (opts.dequantize || !tensors.every((t) => t.info.quantized)) {
      const [gate, up, down] = tensors.map(deferred);
      return { gate: gate!, up: up!, down: down! };
    }
    const layouts = tensors.map((t) => nbitsLayoutOf(t.info.type));
    const [first] = layouts;
    const alike = layouts.every((l, i) => l.bits === first!.bits && l.blockSize === first!.blockSize && (!l.zeroPoints || tensors[i]!.cols >= 2 * l.blockSize));
    const experts: GgufMatrix[] = [];
    for (const t of tensors) {
      if (alike) {
        experts.push(toNBits(t.info.type, await f.readTensorBytes(t.name), e * t.rows, t.cols, { offsetColumns: false }));
      } else if (tensors.every((u) => u.cols % EXPERT_BLOCK === 0 && u.cols >= 2 * EXPERT_BLOCK)) {
        // One tensor's floats at a time: a layer's experts are a large part of a big model.
        experts.push(quantizeMatrix(await f.readTensor(t.name), e * t.rows, t.cols, 8, EXPERT_BLOCK));
      } else {
        // (the operator misreads zero points of one block a row: such experts stay float)
        experts.push(deferred(t));
      }
    }
    return { gate: experts[0]!, up: experts[1]!, down: experts[2]! };
  };
  /**
   * A layer's latent attention (llama.cpp's deepseek2 tensors): the query's projection (`attn_q`, or `attn_q_a`, its norm
   * and `attn_q_b`), the latent's (`attn_kv_a_mqa`) and its norm, and per head kB and vB, from `attn_k_b`/`attn_v_b` as
   * files split for the absorbed form hold them, or cut out of the older `attn_kv_b` (each head's no-rotary key rows,
   * then its value rows), as floats.
   */
  const readLatentAttention = async (p: string): Promise<Pick<LlamaLayerWeights<GgufMatrix>, 'wq' | 'mla'>> => {
    const { kvLoraRank: L, ropeDim: R, valueDim: V, qLoraRank: Q } = config.mla!;
    const H = config.numHeads;
    const N = hd - R;
    const query = Q
      ? { qA: await readMatrix(`${p}attn_q_a.weight`, [Q, h]), qANorm: await read(`${p}attn_q_a_norm.weight`, [Q]), qB: await readMatrix(`${p}attn_q_b.weight`, [H * hd, Q]) }
      : undefined;
    let kB: Float32Array;
    let vB: Float32Array;
    if (f.tensorInfo(`${p}attn_k_b.weight`)) {
      kB = await read(`${p}attn_k_b.weight`, [H, L, N]);
      vB = await read(`${p}attn_v_b.weight`, [H, V, L]);
    } else {
      const kv = await read(`${p}attn_kv_b.weight`, [H * (N + V), L]);
      kB = new Float32Array(H * L * N);
      vB = new Float32Array(H * V * L);
      for (let head = 0; head < H; head++) {
        const rowsOf = (from: number, n: number) => kv.subarray((head * (N + V) + from) * L, (head * (N + V) + from + n) * L);
        kB.set(transpose2d(rowsOf(0, N), N, L), head * L * N);
        vB.set(rowsOf(N, V), head * V * L);
      }
    }
    return {
      ...(Q ? {} : { wq: await readMatrix(`${p}attn_q.weight`, [H * hd, h]) }),
      mla: { ...query, kvA: await readMatrix(`${p}attn_kv_a_mqa.weight`, [L + R, h]), kvANorm: await read(`${p}attn_kv_a_norm.weight`, [L]), kB, vB },
    };
  };
  /** A layer's Mamba2 mixer (llama.cpp's ssm_* tensors; `ssm_a` and `ssm_d` have no `.weight` suffix). */
  const readMamba = async (p: string): Promise<NonNullable<LlamaLayerWeights<GgufMatrix>['mamba']>> => {
    const { heads, headDim, stateSize, groups, convKernel } = config.mamba!;
    const inner = heads * headDim;
    const channels = inner + 2 * groups * stateSize;
    return {
      inProj: await readMatrix(`${p}ssm_in.weight`, [2 * inner + 2 * groups * stateSize + heads, h]),
      convKernel: await read(`${p}ssm_conv1d.weight`, [channels, convKernel]),
      ...(f.tensorInfo(`${p}ssm_conv1d.bias`) ? { convBias: await read(`${p}ssm_conv1d.bias`, [channels]) } : {}),
      dtBias: await read(`${p}ssm_dt.bias`, [heads]),
      a: await read(`${p}ssm_a`, [heads, 1]),
      d: await read(`${p}ssm_d`, [heads, 1]),
      // (Falcon-H1's files may have no grouped norm)
      ...(f.tensorInfo(`${p}ssm_norm.weight`) ? { norm: await read(`${p}ssm_norm.weight`, [groups, inner / groups]) } : {}),
      outProj: await readMatrix(`${p}ssm_out.weight`, [h, inner]),
    };
  };
  /**
   * A layer's gated DeltaNet (llama.cpp's qwen35 tensors: the fused `attn_qkv`, `attn_gate` (z), `ssm_beta`, `ssm_alpha`,
   * `ssm_*`; `ssm_a` has no suffix), or Qwen3-Next's projections fused per key head: `ssm_in` (llama.cpp's older files)
   * holds each key head's q, k, then the v and z of its run of value heads, `ssm_ba` each run's β then α rows; taken
   * apart here into the same matrices (rows only: a row of a quantized matrix moves as it is).
   */
  const readDeltaNet = async (p: string): Promise<NonNullable<LlamaLayerWeights<GgufMatrix>['deltaNet']>> => {
    const { keyHeads, keyDim, valueHeads, valueDim, convKernel } = config.deltaNet!;
    const channels = 2 * keyHeads * keyDim + valueHeads * valueDim;
    const r = valueHeads / keyHeads;
    /** Rows [g · per + offset, n) of each key head g's run. */
    const perKeyHead = (offset: number, n: number, per: number) => Array.from({ length: keyHeads }, (_, g) => [g * per + offset, n] as const);
    let projections: { qkv: GgufMatrix; gate: GgufMatrix };
    if (f.tensorInfo(`${p}ssm_in.weight`)) {
      const run = r * valueDim;
      const stride = 2 * keyDim + 2 * run;
      const fused = await readMatrix(`${p}ssm_in.weight`, [keyHeads * stride, h]);
      projections = {
        qkv: pick(fused, [...perKeyHead(0, keyDim, stride), ...perKeyHead(keyDim, keyDim, stride), ...perKeyHead(2 * keyDim, run, stride)], h),
        gate: pick(fused, perKeyHead(2 * keyDim + run, run, stride), h),
      };
    } else projections = { qkv: await readMatrix(`${p}attn_qkv.weight`, [channels, h]), gate: await readMatrix(`${p}attn_gate.weight`, [valueHeads * valueDim, h]) };
    let rates: { beta: GgufMatrix; alpha: GgufMatrix };
    if (f.tensorInfo(`${p}ssm_ba.weight`)) {
      const ba = await readMatrix(`${p}ssm_ba.weight`, [2 * valueHeads, h]);
      rates = { beta: pick(ba, perKeyHead(0, r, 2 * r), h), alpha: pick(ba, perKeyHead(r, r, 2 * r), h) };
    } else rates = { beta: await readMatrix(`${p}ssm_beta.weight`, [valueHeads, h]), alpha: await readMatrix(`${p}ssm_alpha.weight`, [valueHeads, h]) };
    return {
      ...projections,
      ...rates,
      convKernel: await read(`${p}ssm_conv1d.weight`, [channels, convKernel]),
      dtBias: await read(`${p}ssm_dt.bias`, [valueHeads]),
      a: await read(`${p}ssm_a`, [valueHeads]),
      norm: await read(`${p}ssm_norm.weight`, [valueDim]),
      outProj: await readMatrix(`${p}ssm_out.weight`, [h, valueHeads * valueDim]),
    };
  };
  /** Rows [from, from + n) of a matrix readMatrix gave (`cols` columns): a deferred one's are read alone when it is loaded. */
  const rows = (m: GgufMatrix, from: number, n: number, cols: number): GgufMatrix =>
    isTensorRows(m) ? tensorRows(f, m.tensor, cols, [[from, n]]) : sliceRows(m, from, n, cols);
  const layers: LlamaLayerWeights<GgufMatrix>[] = [];
  const preNorms = config.preNorms ?? true;
  for (let i = 0; i < config.numLayers; i++) {
    const p = `blk.${i}.`;
    const layer: Partial<LlamaLayerWeights<GgufMatrix>> = preNorms ? { attnNorm: await read(`${p}attn_norm.weight`, [h]) } : {};
    const kind = config.layerTypes?.[i];
    // (no attention in these layers)
    const conv = !layerAttends(kind ?? 'full');
    // (single blocks: an MLP in the 'mlp' layers alone, under the layer's one norm)
    const hasMlp = !config.singleBlocks || kind === 'mlp';
    // The layer's mixer: a Mamba2 mixer (alone, or beside attention: Falcon-H1), a gated DeltaNet, a short convolution, none
    // (Nemotron-H's MLP-only blocks), or attention: q, k and v apart, fused as one [q + 2 kv, hidden] matrix (Phi-3, some
    // llama files), or latent attention's.
    if (kind === 'mamba' || kind === 'mamba-attention') layer.mamba = await readMamba(p);
    if (kind === 'delta') layer.deltaNet = await readDeltaNet(p);
    else if (kind === 'conv') {
      layer.shortConv = {
        inProj: await readMatrix(`${p}shortconv.in_proj.weight`, [3 * h, h]),
        kernel: await read(`${p}shortconv.conv.weight`, [h, config.convKernel!]),
        outProj: await readMatrix(`${p}shortconv.out_proj.weight`, [h, h]),
      };
    } else if (conv) {
      // (a Mamba2 mixer alone, read above, or no mixer)
    } else if (config.mla) Object.assign(layer, await readLatentAttention(p));
    else if (f.tensorInfo(`${p}attn_qkv.weight`)) {
      const qkv = await readMatrix(`${p}attn_qkv.weight`, [qDim + 2 * kvDim, h]);
      Object.assign(layer, { wq: rows(qkv, 0, qDim, h), wk: rows(qkv, qDim, kvDim, h), wv: rows(qkv, qDim + kvDim, kvDim, h) });
      if (config.qkvBias) {
        const b = await read(`${p}attn_qkv.bias`, [qDim + 2 * kvDim]);
        Object.assign(layer, { bq: b.slice(0, qDim), bk: b.slice(qDim, qDim + kvDim), bv: b.slice(qDim + kvDim) });
      }
    } else {
      layer.wq = await readMatrix(`${p}attn_q.weight`, [config.attentionGate ? 2 * qDim : qDim, h]);
      layer.wk = await readMatrix(`${p}attn_k.weight`, [kvDim, h]);
      layer.wv = await readMatrix(`${p}attn_v.weight`, [kvDim, h]);
      if (config.qkvBias) {
        layer.bq = await read(`${p}attn_q.bias`, [qDim]);
        layer.bk = await read(`${p}attn_k.bias`, [kvDim]);
        layer.bv = await read(`${p}attn_v.bias`, [kvDim]);
      }
    }
    if (config.qkNorm && !conv) {
      const projection = config.qkNormWidth === 'projection';
      layer.qNorm = await read(`${p}attn_q_norm.weight`, [projection ? qDim : hd]);
      layer.kNorm = await read(`${p}attn_k_norm.weight`, [projection ? kvDim : hd]);
    }
    if (!conv) layer.wo = await readMatrix(`${p}attn_output.weight`, [h, config.mla ? config.numHeads * config.mla.valueDim : qDim]);
    if (config.postNorms) layer.postAttnNorm = await read(`${p}post_attention_norm.weight`, [h]);
    // (gpt-oss's, GLM-4.5's, Seed-OSS's and Qwen3.5's norm before the MLP is llama.cpp's "post_attention_norm", Gemma's name for a norm after attention)
    const mlpNormName = ['gpt-oss', 'glm4moe', 'seed_oss', 'qwen35', 'qwen35moe', 'qwen3next'].includes(arch) ? 'post_attention_norm' : 'ffn_norm';
    // (Falcon-H1's, as llama.cpp loads it, has no ".weight" suffix)
    const mlpNormTensor = arch === 'falcon-h1' && f.tensorInfo(`${p}ffn_norm`) ? `${p}ffn_norm` : `${p}${mlpNormName}.weight`;
    if (preNorms && !config.parallelBlock && !config.singleBlocks) layer.mlpNorm = await read(mlpNormTensor, [h]);
    if (config.normBias) {
      layer.attnNormBias = await read(`${p}attn_norm.bias`, [h]);
      if (layer.mlpNorm) layer.mlpNormBias = await read(`${p}ffn_norm.bias`, [h]);
    }
    if (config.projectionBias) layer.bo = await read(`${p}attn_output.bias`, [h]);
    if (config.attentionSinks) layer.sinks = await read(`${p}attn_sinks.weight`, [config.numHeads]);
    const denseLayers = config.moe?.denseLayers;
    const dense = denseLayers && i < denseLayers.count;
    if (config.moe && !dense) {
      const e = config.moe.experts;
      layer.moe = { router: await read(`${p}ffn_gate_inp.weight`, [e, h]), ...(await readExperts(p, e)) };
      if (config.moe.selectionBias) layer.moe.selectionBias = await read(`${p}exp_probs_b.bias`, [e]);
      if (config.moe.biases) {
        layer.moe.biases = {
          router: await read(`${p}ffn_gate_inp.bias`, [e]),
          gate: await read(`${p}ffn_gate_exps.bias`, [e, ff]),
          up: await read(`${p}ffn_up_exps.bias`, [e, ff]),
          down: await read(`${p}ffn_down_exps.bias`, [e, h]),
        };
      }
      const shared = config.moe.sharedSize;
      if (shared !== undefined) {
        layer.moe.shared = {
          gate: await read(`${p}ffn_gate_shexp.weight`, [shared, h]),
          up: await read(`${p}ffn_up_shexp.weight`, [shared, h]),
          down: await read(`${p}ffn_down_shexp.weight`, [h, shared]),
          ...(config.moe.sharedGate !== false ? { router: await read(`${p}ffn_gate_inp_shexp.weight`, [h]) } : {}),
        };
      }
    } else if (hasMlp) {
      // a dense MLP: the model's, or a leading dense layer's of a mixture of experts
      const mff = dense ? denseLayers.intermediateSize : ff;
      if (FUSED_GATE_UP.has(arch)) {
        const gateUp = await readMatrix(`${p}ffn_up.weight`, [2 * mff, h]);
        layer.wGate = rows(gateUp, 0, mff, h);
        layer.wUp = rows(gateUp, mff, mff, h);
      } else {
        if (config.gatedMlp ?? true) layer.wGate = await readMatrix(`${p}ffn_gate.weight`, [mff, h]);
        layer.wUp = await readMatrix(`${p}ffn_up.weight`, [mff, h]);
      }
      layer.wDown = await readMatrix(`${p}ffn_down.weight`, [h, mff]);
    }
    if (config.projectionBias && !config.moe) {
      layer.bUp = await read(`${p}ffn_up.bias`, [ff]);
      layer.bDown = await read(`${p}ffn_down.bias`, [h]);
    }
    if (config.postNorms) layer.postMlpNorm = await read(`${p}post_ffw_norm.weight`, [h]);
    layers.push(layer as LlamaLayerWeights<GgufMatrix>);
  }
  const weights: LlamaWeights<GgufMatrix> = {
    embed: await readMatrix('token_embd.weight', [config.vocabSize, h]),
    layers,
    // (LFM2's final norm is named as an embedding norm, `token_embd_norm`, which llama.cpp reads as the output norm)
    finalNorm: await read(f.tensorInfo('token_embd_norm.weight') && (arch === 'lfm2' || arch === 'lfm2moe') ? 'token_embd_norm.weight' : 'output_norm.weight', [h]),
    ...(config.normBias ? { finalNormBias: await read('output_norm.bias', [h]) } : {}),
  };
  if (!config.tieWordEmbeddings) weights.lmHead = await readMatrix('output.weight', [config.vocabSize, h]);
  if (config.headBias) weights.lmHeadBias = await read('output.bias', [config.vocabSize]);
  // Llama 3.1-style rope scaling: one set of frequency divisors (llama.cpp reads it for the llama architecture).
  const rotHalf = (config.ropeDims ?? hd) / 2;
  if ((arch === 'llama' || arch === 'arcee') && f.tensorInfo('rope_freqs.weight')) {
    // ggml divides by these before YaRN's interpolation, whose divisors the config may hold already.
    const freqs = await read('rope_freqs.weight', [rotHalf]);
    config.ropeFreqFactors = Array.from(freqs, (v, j) => v * (config.ropeFreqFactors?.[j] ?? 1));
  }
  // Phi-3's LongRoPE (the 128k models, Phi-3.5): short and long frequency divisors. llama.cpp picks one set for the
  // whole context from its size; the builder picks per row from the sequence's length, as transformers does (see
  // LlamaConfig.longRope), so both agree while llama.cpp's context and the sequence are on the same side of the original.
  if (arch === 'phi3' && (f.tensorInfo('rope_factors_long.weight') || f.tensorInfo('rope_factors_short.weight'))) {
    const factors = async (name: string) => (f.tensorInfo(name) ? Array.from(await read(name, [rotHalf])) : new Array<number>(rotHalf).fill(1));
    config.longRope = {
      short: await factors('rope_factors_short.weight'),
      long: await factors('rope_factors_long.weight'),
      originalContext: originalContextLength(f, arch, 'long-rope factors'),
    };
  }
  // Multi-token-prediction blocks past the model's layers (GLM-4.5's, Ling 2.0's): llama.cpp loads them and never runs them.
  const skipped = (n: string) => NEXTN_BLOCKS.has(arch) && (blockOf(n) ?? -1) >= config.numLayers;
  // Whatever is left is something this converter would drop: refuse it by name (llama.cpp refuses unused tensors too).
  const unused = f.tensors.map((t) => t.name).filter((n) => !used.has(n) && !skipped(n));
  if (unused.length > 0) {
    const pastBlocks = unused.some((n) => (blockOf(n) ?? -1) >= config.numLayers);
    throw new GgufError(
      `${src} (${arch}) has tensors the converter does not use: ${unused.slice(0, 5).map((n) => `"${n}"`).join(', ')}${unused.length > 5 ? ` and ${unused.length - 5} more` : ''}${pastBlocks ? ` (blocks past the ${config.numLayers} that "${arch}.block_count" says)` : ''}.`,
      'unsupported-model',
    );
  }
  return weights;
}

/** Block size of experts requantized for QMoE. */
const EXPERT_BLOCK = 32;

/** Rotary cos/sin caches larger than this are not written: q and k are rotated by ops instead (ConvertGgufOptions.gqaRotary). */
const MAX_ROTARY_CACHE_BYTES = 64 * 2 ** 20;

/** The builder's attention options for a converted model (see ConvertGgufOptions.attention and gqaRotary). */
function attentionOptions(config: LlamaConfig, opts: ConvertGgufOptions, maxPositions: number): LlamaBuildOptions {
  const headDim = config.headDim ?? config.hiddenSize / config.numHeads;
  const queriesPerKv = config.numHeads / (config.numKvHeads ?? config.numHeads);
  // onnxruntime's GroupQueryAttention kernel takes heads whose size is a multiple of 8 only; where query heads share
  // a kv head, the op graph's one product per kv head beats the kernel's one per query head over a long context; and
  // the op graph returns new keys and values (below), where the kernel joins and copies out the whole cache every
  // step (a kv head per query head, the 125M llama after 1024 positions: 7.5-8.3 ms a step against 19-22). Sliding
  // windows keep joined presents, so there the kernel stays where each query head has its own kv head.
  const sliding = config.layerTypes?.includes('sliding') ?? false;
  const attention = opts.attention ?? (headDim % 8 !== 0 || queriesPerKv >= 2 || !sliding ? 'ops' : 'gqa');
  const kv: LlamaBuildOptions = (opts.kvCache ?? 'float16') === 'float16' ? { kvDtype: 'float16' } : {};
  const tables = config.ropeThetaLocal !== undefined || config.ropeScaleLocal !== undefined ? 2 : 1;
  const cacheBytes = tables * 2 * maxPositions * (headDim / 2) * 4;
  const rotary = opts.gqaRotary ?? (cacheBytes > MAX_ROTARY_CACHE_BYTES ? 'ops' : 'inside');
  // The op graph returns each run's keys and values alone, which the engine writes into a cache with room to spare
  // (no per-step join of the whole cache); sliding-window layers count their window in slots and keep the joined form.
  const kvOutput = sliding ? 'joined' : (opts.kvOutput ?? 'new');
  if (attention === 'ops') return { attention, rotaryKernel: rotary === 'inside', fuseResidualNorms: true, maxPositions, kvOutput, ...kv };
  return { attention, gqaRotary: rotary, maxPositions, ...kv };
}

/** About how many dense values are read at a time to tell whether a head repeats the embedding. */
const COMPARE_VALUES = 2 ** 20;

/**
 * Bitwise equality of two matrices the converter read (dense values, or codes, scales and zero points); deferred ones
 * are read and compared a band of rows at a time, so the check holds neither whole.
 */
function sameMatrix(f: GgufFile, a: GgufMatrix, b: GgufMatrix): boolean {
  if (isTensorRows(a) || isTensorRows(b)) {
    if (!isTensorRows(a) || !isTensorRows(b) || a.rows !== b.rows || a.cols !== b.cols) return false;
    if (a.runs.length !== 1 || b.runs.length !== 1) return sameFloats(a.load(), b.load());
    const [[fromA], [fromB]] = [a.runs[0]!, b.runs[0]!];
    const band = Math.max(1, Math.floor(COMPARE_VALUES / a.cols));
    for (let r = 0; r < a.rows; r += band) {
      const n = Math.min(band, a.rows - r);
      if (!sameFloats(f.readRowsSync(a.tensor, fromA + r, n), f.readRowsSync(b.tensor, fromB + r, n))) return false;
    }
    return true;
  }
  if (isQuantized(a) || isQuantized(b)) {
    if (!isQuantized(a) || !isQuantized(b) || a.bits !== b.bits || a.blockSize !== b.blockSize) return false;
    const eq = (x?: ArrayBufferView, y?: ArrayBufferView) =>
      x === undefined || y === undefined ? x === y : Buffer.from(x.buffer, x.byteOffset, x.byteLength).equals(Buffer.from(y.buffer, y.byteOffset, y.byteLength));
    return eq(a.data, b.data) && eq(a.scales, b.scales) && eq(a.zeroPoints, b.zeroPoints);
  }
  return sameFloats(a, b);
}

function sameFloats(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < ua.length; i++) if (ua[i] !== ub[i]) return false;
  return true;
}

/** Hex SHA-256 and size of a file, streamed. */
async function fileEntry(dir: string, path: string): Promise<ManifestFile> {
  const { sha256, size } = await hashFile(join(dir, path));
  return { path, sha256, size };
}

/**
 * Raised when a converted module cannot be written (a full disk, a file-size limit, no permission), naming the GGUF
 * file and where the module was going; `cause` is the system's error, which names neither.
 */
export class ConversionError extends Error {
  override name = 'ConversionError';
}

/**
 * `err` as the {@link ConversionError} of writing the module converted from `source` into `destination` when it is the
 * system's (an errno error, or a ConversionError naming another destination), else `err` itself (its type says more).
 */
export function conversionFailure(err: unknown, source: string, destination: string): unknown {
  const cause = err instanceof ConversionError ? err.cause : err;
  if (typeof (cause as NodeJS.ErrnoException | undefined)?.syscall !== 'string') return err;
  return new ConversionError(`cannot write the module converted from ${source} into ${destination}: ${(cause as Error).message}`, { cause });
}

/** Refuses an option value the converter does not know (a RangeError naming it), before the file is read. */
function checkOptions(opts: ConvertGgufOptions): void {
  const { dtype, kvCache, kvOutput, attention, gqaRotary } = opts;
  if (dtype !== undefined && dtype !== 'float32' && dtype !== 'float16') throw new RangeError(`dtype must be 'float32' or 'float16', got ${String(dtype)}`);
  if (kvCache !== undefined && kvCache !== 'float32' && kvCache !== 'float16') throw new RangeError(`unknown kvCache ${String(kvCache)}; float32 or float16`);
  if (kvOutput !== undefined && kvOutput !== 'joined' && kvOutput !== 'new') throw new RangeError(`unknown kvOutput ${String(kvOutput)}; joined or new`);
  if (attention !== undefined && attention !== 'ops' && attention !== 'gqa') throw new RangeError(`unknown attention ${String(attention)}; ops or gqa`);
  if (gqaRotary !== undefined && gqaRotary !== 'inside' && gqaRotary !== 'ops') throw new RangeError(`unknown gqaRotary ${String(gqaRotary)}; inside or ops`);
}

/**
 * Converts a GGUF into a module directory at `outDir` (created if needed; existing files of the
 * same names are replaced). Returns the directory, the model config and the manifest written. An option value it does
 * not know is a RangeError, refused before the file is read.
 */
export async function convertGguf(ggufPath: string, outDir: string, opts: ConvertGgufOptions = {}): Promise<ConvertGgufResult> {
  checkOptions(opts);
  const dtype = opts.dtype ?? 'float32';
  const dir = resolve(outDir);
  const file = basename(ggufPath);
  const f = await GgufFile.open(ggufPath);
  if (opts.onTensorRead) reportTensorReads(f, opts.onTensorRead);
  let config: LlamaConfig;
  let manifest: ConvertedManifest;
  try {
    config = llamaConfigFromGguf(f);
    const unreadable = f.tensors.filter((t) => t.byteLength === undefined);
    if (unreadable.length > 0) {
      const types = [...new Set(unreadable.map((t) => t.typeName))].join(', ');
      throw new GgufError(
        `${file} has ${unreadable.length} of ${f.tensors.length} tensors in ${types} (e.g. "${unreadable[0]!.name}"); ` +
          `the converter takes ${SUPPORTED_TENSOR_TYPES.join(', ')}. Re-quantize the model with llama-quantize to one of these (e.g. Q4_K_M).`,
        'unsupported-tensor-type',
      );
    }
    const arch = ggufArchitecture(f);
    const contextLength = contextLengthOf(f, arch);
    const tok = withFileName(file, () => tokenizerFromGguf(f, { modelMaxLength: contextLength }));
    const nTokens = (f.get('tokenizer.ggml.tokens') as unknown[]).length;
    if (nTokens > config.vocabSize) {
      throw new GgufError(`${file}: the tokenizer has ${nTokens} tokens but the model's vocabulary is ${config.vocabSize}.`, 'corrupt');
    }
    // llama.cpp sizes the embedding by the token list and refuses a table of another height: fewer tokens than rows
    // would leave ids the model can write that no text stands for.
    const embd = f.tensorInfo('token_embd.weight');
    if (embd && embd.dims[1] !== nTokens) {
      throw new GgufError(`${file}: the tokenizer has ${nTokens} tokens but token_embd.weight has ${embd.dims[1]} rows; each token needs its row (llama.cpp refuses this file too).`, 'corrupt');
    }
    // Every piece of metadata the module records is read before anything is written.
    const named = generalNameOf(f);
    const generalDescription = f.getString('general.description');
    const license = f.getString('general.license') ?? 'unknown';
    const poolingType = f.getNumber(`${arch}.pooling_type`);
    // An embedding model's pooling, where the GGUF names one, as sentence-transformers keeps it beside a model.
    const pooling = poolingType !== undefined ? poolingOfGguf(poolingType) : undefined;
    // A stat record: ggufModuleDir has usually just hashed this file (it is not read a second time).
    const ggufHash = await ggufDigest(f.shardPaths);
    const name = moduleName(file, named, opts.name, ggufHash.sha256);

    const weights = await llamaWeightsFromGguf(f, config, { dequantize: opts.dequantize ?? false });
    // llama2.c-style files store the output head separately even when it equals the embedding: tie them.
    if (weights.lmHead && sameMatrix(f, weights.lmHead, weights.embed)) {
      delete weights.lmHead;
      config.tieWordEmbeddings = true;
    }

    // Bytes the initializers will take: dense values in `dtype`, quantized codes and scales as they are.
    const bytesOf = (m: GgufMatrix | undefined): number => {
      if (m === undefined) return 0;
      if (!(m instanceof Float32Array) && m.kind === 'nbits') return m.data.length + m.scales.byteLength + (m.zeroPoints?.length ?? 0);
      return (m instanceof Float32Array ? m.length : m.rows * m.cols) * (dtype === 'float16' ? 2 : 4);
    };
    // A layer's matrices and vectors, its experts' included.
    const bytesIn = (o: object): number =>
      Object.values(o).reduce((n: number, v: unknown) => n + (v instanceof Float32Array || ['nbits', 'deferred'].includes((v as { kind?: string }).kind!) ? bytesOf(v as GgufMatrix) : bytesIn(v as object)), 0);
    const weightBytes = bytesOf(weights.embed) + bytesOf(weights.finalNorm) + bytesOf(weights.lmHead) + weights.layers.reduce((n, l) => n + bytesIn(l), 0);
    const externalData = opts.externalData ?? weightBytes > EXTERNAL_DATA_THRESHOLD;

    // The manifest is written last, and a failure removes what was written, and the folders made for it: nothing a
    // later load would take for a model, and no empty destination that a second try would refuse as not new.
    const written = ['reasonplug.json', 'model.onnx', 'model.onnx.data', 'tokenizer.json', 'tokenizer_config.json', dirname(POOLING_FILE)];
    const removeWritten = () => Promise.all(written.map((w) => rm(join(dir, w), { recursive: true, force: true })));
    let created: string | undefined;
    try {
      created = await makeDirectory(dir);
      await removeWritten();
      const attentionBuild = attentionOptions(config, opts, contextLength);
      await writeLlamaModel(join(dir, 'model.onnx'), config, weights, {
        dtype,
        externalData,
        // the engine asks for the last position's logits only: a 512-token prefill skips 511 rows of the head
        numLogitsToKeep: true,
        ...(opts.quantAccuracyLevel !== undefined ? { quantAccuracyLevel: opts.quantAccuracyLevel } : {}),
        ...attentionBuild,
      });
      // Compact: a 151,936-token vocabulary is 4 MB instead of 10 indented, which every load parses (~0.1 s less).
      await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(tok.tokenizerJson) + '\n');
      await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify(tok.tokenizerConfig, null, 2) + '\n');
      if (pooling) {
        await mkdir(join(dir, dirname(POOLING_FILE)), { recursive: true });
        await writeFile(join(dir, POOLING_FILE), JSON.stringify(poolingConfig(pooling, config.hiddenSize), null, 2) + '\n');
      }

      const files: ConvertedManifest['files'] = {
        model: await fileEntry(dir, 'model.onnx'),
        ...(externalData && existsSync(join(dir, 'model.onnx.data')) ? { modelData: await fileEntry(dir, 'model.onnx.data') } : {}),
        tokenizer: await fileEntry(dir, 'tokenizer.json'),
        tokenizerConfig: await fileEntry(dir, 'tokenizer_config.json'),
        ...(pooling ? { pooling: await fileEntry(dir, POOLING_FILE) } : {}),
      };
      const description =
        generalDescription ?? `${named ?? basename(file, extname(file))}: ${arch} decoder (${config.numLayers} layers, hidden ${config.hiddenSize}, vocab ${config.vocabSize}) converted from ${file}.`;
      manifest = {
        // Read from what the graph was built with: a reader of version 1 expects `present.{i}` outputs.
        schemaVersion: schemaVersionFor(attentionBuild.kvOutput),
        name,
        version: '0.1.0',
        kind: 'backbone',
        tasks: [],
        description,
        license,
        compat: {
          tokenizer: tokenizerFingerprint(tok.tokenizerJson),
          vocabSize: config.vocabSize,
          hiddenSize: config.hiddenSize,
        },
        generation: {
          ...(tok.special.bos !== undefined ? { bosTokenId: tok.special.bos } : {}),
          // llama.cpp's end-of-generation set: a chat model stops at its end-of-turn piece, not only at EOS.
          eosTokenIds: tok.endOfGeneration,
        },
        files,
        provenance: { convertedFrom: { file, sha256: ggufHash.sha256, format: 'gguf', architecture: arch } },
      };
      await writeFile(join(dir, 'reasonplug.json'), JSON.stringify(manifest, null, 2) + '\n');
    } catch (err) {
      await removeWritten();
      if (created !== undefined) await rm(created, { recursive: true, force: true });
      throw conversionFailure(err, ggufPath, dir);
    }
  } finally {
    await f.close();
  }
  return { dir, config, manifest };
}

/** The block a tensor name is of (`blk.<n>.…`), if any. */
function blockOf(name: string): number | undefined {
  const block = /^blk\.(\d+)\./.exec(name);
  return block ? Number(block[1]) : undefined;
}

/** Runs `read`, naming `file` in a {@link GgufError} it throws (the tokenizer's refusals speak of metadata, not files). */
function withFileName<T>(file: string, read: () => T): T {
  try {
    return read();
  } catch (err) {
    if (err instanceof GgufError && !err.message.includes(file)) throw new GgufError(`${file}: ${err.message}`, err.code);
    throw err;
  }
}
