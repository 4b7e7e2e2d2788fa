/**
 * Converts a llama-architecture GGUF (F32/F16/BF16 tensors, SentencePiece vocabulary) into a reasonplug
 * module directory: `model.onnx` (built by the project's Llama builder), `tokenizer.json`,
 * `tokenizer_config.json` and the `reasonplug.json` manifest (ARCHITECTURE.md, "Module format").
 *
 * Weight layout: GGUF dims list the fastest-varying dimension first, so a matrix with ne = [in, out] is
 * stored exactly as the row-major PyTorch `[out, in]` matrix the builder expects — no transpose. llama.cpp
 * permutes Hugging Face Q/K weights into the "adjacent pairs" rotary order when it writes llama GGUFs,
 * so the converted model uses ropeStyle 'adjacent'.
 */
import { hashFile } from '../modules/file-digest.js';
import { existsSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { basename, extname, join, resolve } from 'node:path';
import type { LlamaConfig, LlamaLayerWeights, LlamaWeights } from '../onnx/llama-spec.js';
import { writeLlamaModel } from '../onnx/llama-builder.js';
import { tokenizerFingerprint } from '../tokenizer/fingerprint.js';
import { GgufError, GgufFile, type GgufTensorInfo } from './reader.js';
import { tokenizerFromGguf } from './tokenizer-from-gguf.js';

export interface ConvertGgufOptions {
  /** Storage type of the ONNX weights and float I/O. Default 'float32'. */
  dtype?: 'float32' | 'float16';
  /** Module name (lower-case kebab case is enforced). Default: `general.name`, else the file name. */
  name?: string;
  /** Write weights to `model.onnx.data`. Default: only when they would not fit one protobuf (> 1.5 GiB). */
  externalData?: boolean;
}

/** One file entry of a module manifest. */
export interface ManifestFile {
  path: string;
  /** Hex SHA-256 of the file. */
  sha256: string;
  size: number;
}

/** The manifest this converter writes (a backbone module). */
export interface ConvertedManifest {
  schemaVersion: 1;
  name: string;
  version: string;
  kind: 'backbone';
  tasks: string[];
  description: string;
  license: string;
  compat: { tokenizer: string; vocabSize: number; hiddenSize: number };
  generation: { bosTokenId?: number; eosTokenIds: number[] };
  files: { model: ManifestFile; modelData?: ManifestFile; tokenizer: ManifestFile; tokenizerConfig: ManifestFile };
  provenance: { convertedFrom: { file: string; sha256: string; format: 'gguf'; architecture: string } };
}

export interface ConvertGgufResult {
  dir: string;
  config: LlamaConfig;
  manifest: ConvertedManifest;
}

const EXTERNAL_DATA_THRESHOLD = 1.5 * 2 ** 30;

/** Lower-case kebab case: "Stories 260K_v2" → "stories-260k-v2". */
export function kebabName(s: string): string {
  return s
    .replace(/([a-z])([A-Z])/g, '$1-$2')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '');
}

/** Reads the `LlamaConfig` of a llama-architecture GGUF; refuses what the builder cannot represent. */
export function llamaConfigFromGguf(f: GgufFile): LlamaConfig {
  const src = basename(f.path);
  const arch = f.getString('general.architecture');
  if (arch === undefined) throw new GgufError(`${src} has no "general.architecture" metadata.`, 'missing-metadata');
  if (arch !== 'llama') {
    throw new GgufError(
      `${src} has general.architecture "${arch}"; only "llama" GGUFs can be converted (Llama, Llama 2, TinyLlama, llama2.c models).`,
      'unsupported-model',
    );
  }
  const required = (key: string): number => {
    const v = f.getNumber(`llama.${key}`);
    if (v === undefined) throw new GgufError(`${src} is missing the metadata "llama.${key}".`, 'missing-metadata');
    if (!Number.isInteger(v) || v <= 0) throw new GgufError(`${src}: "llama.${key}" is ${v}, expected a positive integer.`, 'corrupt');
    return v;
  };
  const numKv = f.get('llama.attention.head_count_kv');
  if (Array.isArray(numKv)) {
    throw new GgufError(`${src} has a per-layer llama.attention.head_count_kv; only one KV head count for all layers is supported.`, 'unsupported-model');
  }
  const experts = f.getNumber('llama.expert_count');
  if (experts !== undefined && experts > 0) {
    throw new GgufError(`${src} is a mixture-of-experts llama (llama.expert_count = ${experts}); only dense llama models are supported.`, 'unsupported-model');
  }
  const scaling = f.getString('llama.rope.scaling.type');
  const factor = f.getNumber('llama.rope.scaling.factor');
  if ((scaling !== undefined && scaling !== 'none') || (scaling === undefined && factor !== undefined && factor !== 1)) {
    throw new GgufError(`${src} uses rope scaling (${scaling ?? 'factor ' + factor}); only unscaled rotary embeddings are supported.`, 'unsupported-model');
  }
  if (f.tensorInfo('rope_freqs.weight')) {
    throw new GgufError(`${src} has a rope_freqs tensor (Llama 3.1-style rope scaling); only unscaled rotary embeddings are supported.`, 'unsupported-model');
  }

  const hiddenSize = required('embedding_length');
  const numHeads = required('attention.head_count');
  const numKvHeads = f.getNumber('llama.attention.head_count_kv') ?? numHeads;
  const headDim = f.getNumber('llama.attention.key_length') ?? hiddenSize / numHeads;
  const valueDim = f.getNumber('llama.attention.value_length') ?? headDim;
  if (valueDim !== headDim) {
    throw new GgufError(`${src}: key length ${headDim} differs from value length ${valueDim}; only equal head sizes are supported.`, 'unsupported-model');
  }
  const ropeDims = f.getNumber('llama.rope.dimension_count') ?? headDim;
  if (ropeDims !== headDim) {
    throw new GgufError(`${src}: rotary embeddings cover ${ropeDims} of ${headDim} head dimensions; only full-head rotary is supported.`, 'unsupported-model');
  }
  const embd = f.tensorInfo('token_embd.weight');
  const tokens = f.get('tokenizer.ggml.tokens');
  const vocabSize =
    f.getNumber('llama.vocab_size') ?? (embd ? embd.dims[1] : undefined) ?? (Array.isArray(tokens) ? tokens.length : undefined);
  if (vocabSize === undefined) throw new GgufError(`${src} has no vocabulary size (no llama.vocab_size, token_embd.weight or tokens).`, 'missing-metadata');

  const config: LlamaConfig = {
    vocabSize,
    hiddenSize,
    numLayers: required('block_count'),
    numHeads,
    numKvHeads,
    headDim,
    intermediateSize: required('feed_forward_length'),
    ropeTheta: f.getNumber('llama.rope.freq_base') ?? 10000,
    rmsNormEps: f.getNumber('llama.attention.layer_norm_rms_epsilon') ?? 1e-5,
    ropeStyle: 'adjacent',
    tieWordEmbeddings: !f.tensorInfo('output.weight'),
  };
  if (!Number.isInteger(headDim) || headDim <= 0 || numHeads % numKvHeads !== 0) {
    throw new GgufError(`${src}: ${numHeads} heads, ${numKvHeads} KV heads and head size ${headDim} do not form a valid attention layout.`, 'corrupt');
  }
  return config;
}

/** Reads all weights of a llama GGUF, checking each tensor's shape against the config. */
export async function llamaWeightsFromGguf(f: GgufFile, config: LlamaConfig): Promise<LlamaWeights> {
  const src = basename(f.path);
  const h = config.hiddenSize;
  const hd = config.headDim ?? h / config.numHeads;
  const qDim = config.numHeads * hd;
  const kvDim = (config.numKvHeads ?? config.numHeads) * hd;
  const ff = config.intermediateSize;
  const read = async (name: string, shape: number[]): Promise<Float32Array> => {
    const t: GgufTensorInfo | undefined = f.tensorInfo(name);
    if (!t) throw new GgufError(`${src} has no tensor "${name}" (expected shape [${shape.join(', ')}]).`, 'missing-tensor');
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new GgufError(
        `${src}: tensor "${name}" has shape [${t.shape.join(', ')}] (GGUF ne [${t.dims.join(', ')}]); the metadata implies [${shape.join(', ')}].`,
        'corrupt',
      );
    }
    return f.readTensor(name);
  };
  const layers: LlamaLayerWeights[] = [];
  for (let i = 0; i < config.numLayers; i++) {
    const p = `blk.${i}.`;
    layers.push({
      attnNorm: await read(`${p}attn_norm.weight`, [h]),
      wq: await read(`${p}attn_q.weight`, [qDim, h]),
      wk: await read(`${p}attn_k.weight`, [kvDim, h]),
      wv: await read(`${p}attn_v.weight`, [kvDim, h]),
      wo: await read(`${p}attn_output.weight`, [h, qDim]),
      mlpNorm: await read(`${p}ffn_norm.weight`, [h]),
      wGate: await read(`${p}ffn_gate.weight`, [ff, h]),
      wUp: await read(`${p}ffn_up.weight`, [ff, h]),
      wDown: await read(`${p}ffn_down.weight`, [h, ff]),
    });
  }
  const weights: LlamaWeights = {
    embed: await read('token_embd.weight', [config.vocabSize, h]),
    layers,
    finalNorm: await read('output_norm.weight', [h]),
  };
  if (!config.tieWordEmbeddings) weights.lmHead = await read('output.weight', [config.vocabSize, h]);
  return weights;
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
 * Converts a llama GGUF into a module directory at `outDir` (created if needed; existing files of the
 * same names are replaced). Returns the directory, the model config and the manifest written.
 */
export async function convertGguf(ggufPath: string, outDir: string, opts: ConvertGgufOptions = {}): Promise<ConvertGgufResult> {
  const dtype = opts.dtype ?? 'float32';
  if (dtype !== 'float32' && dtype !== 'float16') throw new Error(`dtype must be 'float32' or 'float16', got ${String(dtype)}`);
  const dir = resolve(outDir);
  const file = basename(ggufPath);
  const f = await GgufFile.open(ggufPath);
  let config: LlamaConfig;
  let manifest: ConvertedManifest;
  try {
    config = llamaConfigFromGguf(f);
    const unreadable = f.tensors.filter((t) => t.byteLength === undefined);
    if (unreadable.length > 0) {
      const types = [...new Set(unreadable.map((t) => t.typeName))].join(', ');
      throw new GgufError(
        `${file} has ${unreadable.length} of ${f.tensors.length} tensors in ${types} (e.g. "${unreadable[0]!.name}"); ` +
          'only F32, F16 and BF16 GGUFs can be converted. Use an unquantized GGUF (e.g. `convert_hf_to_gguf.py --outtype f16`).',
        'unsupported-tensor-type',
      );
    }
    const contextLength = f.getNumber('llama.context_length');
    const tok = tokenizerFromGguf(f, contextLength !== undefined ? { modelMaxLength: contextLength } : {});
    const nTokens = (f.get('tokenizer.ggml.tokens') as unknown[]).length;
    if (nTokens > config.vocabSize) {
      throw new GgufError(`${file}: the tokenizer has ${nTokens} tokens but the model's vocabulary is ${config.vocabSize}.`, 'corrupt');
    }

    const weights = await llamaWeightsFromGguf(f, config);
    // llama2.c-style files store the output head separately even when it equals the embedding: tie them.
    if (weights.lmHead && sameFloats(weights.lmHead, weights.embed)) {
      delete weights.lmHead;
      config.tieWordEmbeddings = true;
    }

    const params =
      weights.embed.length +
      weights.finalNorm.length +
      (weights.lmHead?.length ?? 0) +
      weights.layers.reduce((n, l) => n + Object.values(l).reduce((m, a: Float32Array) => m + a.length, 0), 0);
    const externalData = opts.externalData ?? params * (dtype === 'float16' ? 2 : 4) > EXTERNAL_DATA_THRESHOLD;

    await mkdir(dir, { recursive: true });
    // The manifest is written last: a directory left by a failed conversion is not a module.
    await rm(join(dir, 'reasonplug.json'), { force: true });
    await rm(join(dir, 'model.onnx.data'), { force: true });
    await writeLlamaModel(join(dir, 'model.onnx'), config, weights, { dtype, externalData });
    await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(tok.tokenizerJson, null, 2) + '\n');
    await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify(tok.tokenizerConfig, null, 2) + '\n');

    const generalName = f.getString('general.name');
    // llama.cpp's llama2.c converter writes general.name = "llama": no better than the file name.
    const rawName = opts.name ?? (generalName && generalName !== 'llama' ? generalName : basename(file, extname(file)));
    const name = kebabName(rawName);
    if (!name) throw new Error(`cannot derive a module name from "${rawName}"; pass { name }`);
    const ggufHash = await hashFile(ggufPath);
    const files: ConvertedManifest['files'] = {
      model: await fileEntry(dir, 'model.onnx'),
      ...(externalData && existsSync(join(dir, 'model.onnx.data')) ? { modelData: await fileEntry(dir, 'model.onnx.data') } : {}),
      tokenizer: await fileEntry(dir, 'tokenizer.json'),
      tokenizerConfig: await fileEntry(dir, 'tokenizer_config.json'),
    };
    const description =
      f.getString('general.description') ??
      `${generalName && generalName !== 'llama' ? generalName : basename(file, extname(file))}: Llama decoder ` +
        `(${config.numLayers} layers, hidden ${config.hiddenSize}, vocab ${config.vocabSize}) converted from ${file}.`;
    manifest = {
      schemaVersion: 1,
      name,
      version: '0.1.0',
      kind: 'backbone',
      tasks: [],
      description,
      license: f.getString('general.license') ?? 'unknown',
      compat: {
        tokenizer: tokenizerFingerprint(tok.tokenizerJson),
        vocabSize: config.vocabSize,
        hiddenSize: config.hiddenSize,
      },
      generation: {
        ...(tok.special.bos !== undefined ? { bosTokenId: tok.special.bos } : {}),
        eosTokenIds: tok.special.eos !== undefined ? [tok.special.eos] : [],
      },
      files,
      provenance: { convertedFrom: { file, sha256: ggufHash.sha256, format: 'gguf', architecture: 'llama' } },
    };
    await writeFile(join(dir, 'reasonplug.json'), JSON.stringify(manifest, null, 2) + '\n');
  } finally {
    await f.close();
  }
  return { dir, config, manifest };
}
