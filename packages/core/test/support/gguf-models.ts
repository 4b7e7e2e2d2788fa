/**
 * Small random GGUF models of each architecture the converter reads, written with llama.cpp's tensor
 * names and metadata keys, plus the two greedy decoders the tests compare: llama.cpp (node-llama-cpp)
 * on the GGUF, onnxruntime on the converted model.
 */
import * as ort from 'onnxruntime-node';
import { writeFile } from 'node:fs/promises';
import { seededNormals } from '../../src/onnx/random-weights.js';
import { withGguf } from '../../src/gguf/reader.js';
import { makeGguf, metadataToW, encodeTensor, rewriteGguf, type WTensor, type WValue } from './gguf-writer.js';
import { GGML, quantizeGgml } from './ggml-quantize.js';
import { BLOCK_TYPES } from '../../src/gguf/quant/index.js';
import { convertGguf, type ConvertGgufOptions } from '../../src/gguf/convert.js';
import { pastAfter } from './bare-loop.js';

export const STORIES = new URL('../../../../../shared/models/stories260K/stories260K.gguf', import.meta.url).pathname;

/** Re-encodes the GGUF `src` as `dst` with each 2-D tensor stored as `typeOf(name)` where its rows divide into that type's blocks. */
export async function requantizedGguf(src: string, dst: string, typeOf: (name: string) => number): Promise<string> {
  await rewriteGguf(
    src,
    dst,
    (_meta, tensors) => {
      for (const [name, t] of tensors) {
        const type = typeOf(name);
        if (t.dims.length === 2 && t.dims[0]! % (BLOCK_TYPES.get(type)?.blockElems ?? 1) === 0) t.type = type;
      }
    },
    (data, type) => quantizeGgml(data, type),
  );
  return dst;
}

/**
 * Writes stories260K with its matrices as Q4_0 to `path`: a draft model that agrees with the trained model most of the
 * time, as a family's small model does.
 */
export async function writeStoriesQ4Draft(path: string): Promise<void> {
  await requantizedGguf(STORIES, path, () => GGML.Q4_0);
}

/** Shape and features of a random model. */
export interface RandomGgufSpec {
  arch: string;
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  /** Written as `<arch>.attention.key_length`/`value_length` when given. */
  headDim?: number;
  ff: number;
  /** Extra `<arch>.*` metadata (keys without the arch prefix) and any other keys (full names, with a dot before the first segment: `.general.x`). */
  meta?: Record<string, WValue>;
  /** q/k/v biases. */
  qkvBias?: boolean;
  /** Per-head q/k norms (`projection`: over the whole q and k projections, OLMo 2). */
  qkNorm?: boolean | 'projection';
  /** No ffn_norm: attention and the MLP read one attn_norm (Command R's parallel block). */
  parallel?: boolean;
  /** No attn_norm/ffn_norm before the blocks (OLMo 2; give postNorms). */
  noPreNorms?: boolean;
  /** Gemma's post-attention and post-FFN norms. */
  postNorms?: boolean;
  /** One attn_qkv matrix instead of three (Phi-3). */
  fusedQkv?: boolean;
  /** One ffn_up matrix of 2 ff rows holding gate then up (Phi-3). */
  fusedGateUp?: boolean;
  /** No ffn_gate: the MLP is `down(act(up(x)))` (StarCoder 2, Arcee). */
  ungated?: boolean;
  /** Biases of the norms (`attn_norm.bias`, `ffn_norm.bias`, `output_norm.bias`: LayerNorms with a bias). */
  normBias?: boolean;
  /** Biases of the attention output and MLP projections (`attn_output.bias`, `ffn_up.bias`, `ffn_down.bias`). */
  projectionBias?: boolean;
  /** A bias of the output head (`output.bias`; with `untied`). */
  headBias?: boolean;
  /** Write output.weight (else the head is tied to the embedding). */
  untied?: boolean;
  /**
   * A mixture of experts in place of each MLP: `count` experts (`ffn_gate_inp`, `ffn_{gate,up,down}_exps`), `used` per
   * token, each of inner size `ff` (written as `expert_feed_forward_length` when given, else the spec's ff); `shared`:
   * a shared expert of that inner size with its sigmoid gate (`ffn_*_shexp`, `ffn_gate_inp_shexp`; Qwen2-MoE);
   * `routerScale`: the router's standard deviation (default 0.08: the chosen experts keep part of the weight);
   * `biases`: the router's and the experts' biases (`ffn_gate_inp.bias`, `ffn_{gate,up,down}_exps.bias`; gpt-oss);
   * `ungatedShared`: the `shared` expert without its gate (ERNIE 4.5).
   * GLM-4.5's: `selectionBias` (`exp_probs_b.bias`); `sharedCount` ungated shared experts of the expert size
   * (`ffn_*_shexp`, `expert_shared_count`); `leadingDense` layers with the spec's dense MLP of `ff` first
   * (`leading_dense_block_count`).
   */
  experts?: {
    count: number;
    used: number;
    ff?: number;
    shared?: number;
    routerScale?: number;
    biases?: boolean;
    selectionBias?: boolean;
    ungatedShared?: boolean;
    sharedCount?: number;
    leadingDense?: number;
  };
  /**
   * Latent attention in place of q/k/v (DeepSeek-V2's, llama.cpp's deepseek2 tensors): the latent of `kvLora`, the
   * rotary part `rope` of each `headDim` query/key head (written as `rope.dimension_count`), values of `value`; queries
   * through `attn_q_a`/`attn_q_b` of rank `qLora`, else `attn_q`; `split`: per-head `attn_k_b`/`attn_v_b` with the `_mla`
   * lengths, as files converted for llama.cpp's absorbed form are, else one `attn_kv_b`.
   */
  latent?: { kvLora: number; rope: number; value: number; qLora?: number; split?: boolean };
  /** Multi-token-prediction blocks after the layers (GLM-4.5's `nextn_predict_layers`: a layer's tensors and `nextn.*`). */
  nextn?: number;
  /** A sink logit per attention head (`attn_sinks.weight`; gpt-oss). */
  sinks?: boolean;
  /**
   * LFM2's hybrid: these layers are gated short convolutions of `kernel` taps (`shortconv.{conv,in_proj,out_proj}`)
   * instead of attention, `head_count_kv` is per layer (0 for them), `shortconv.l_cache` the taps, and the final norm is
   * `token_embd_norm` (LFM2's name for it).
   */
  convLayers?: { kernel: number; layers: number[] };
  /**
   * Granite 4.0-H's hybrid: these layers are Mamba2 mixers (`ssm_in`, `ssm_conv1d` with its bias, `ssm_dt.bias`, `ssm_a`,
   * `ssm_d`, `ssm_norm`, `ssm_out`) of `heads` heads of `headDim`, states of `stateSize`, B and C in `groups` groups,
   * `convKernel` taps; `head_count_kv` is per layer (0 for them) and the `ssm.*` sizes are written.
   */
  mambaLayers?: { layers: number[]; convKernel: number; heads: number; headDim: number; stateSize: number; groups: number };
  /**
   * Qwen3.5's hybrid: all but every `interval`-th layer are gated DeltaNets (the fused `attn_qkv`, `attn_gate`, `ssm_conv1d`,
   * `ssm_dt.bias`, `ssm_a`, `ssm_beta`, `ssm_alpha`, `ssm_norm`, `ssm_out`) of `keyHeads` key heads of `keyDim` and
   * `valueHeads` value heads of `valueDim`, `convKernel` taps; the attention layers' `attn_q` is doubled (each head's
   * query, then its output gate); the `ssm.*` sizes and `full_attention_interval` are written. `interleaved`: Qwen3-Next's
   * `ssm_in` (each key head's q and k, then its run of value heads' v and z) and `ssm_ba` (each run's β, then α) in place
   * of Qwen3.5's separate projections.
   */
  deltaLayers?: { interval: number; convKernel: number; keyHeads: number; keyDim: number; valueHeads: number; valueDim: number; interleaved?: boolean };
  /**
   * Nemotron-H's single blocks, one per layer under its `attn_norm`: 'mamba' (a Mamba2 mixer of `mambaLayers`' sizes),
   * 'full' (attention) or 'mlp' (`ffn_up`, `ffn_down`; give `ungated`); `head_count_kv` and `feed_forward_length` per layer.
   */
  blockKinds?: ('mamba' | 'full' | 'mlp')[];
  /** Falcon-H1's layers: each of `mambaLayers.layers` has its Mamba2 mixer beside attention (both tensors' sets). */
  parallelMamba?: boolean;
  /** Extra tensors by name: [GGUF ne dims, values]. */
  extraTensors?: Record<string, [number[], Float32Array]>;
  /** ggml type of the matrices: 0 (F32, default) or 1 (F16). */
  matrixType?: 0 | 1;
  seed?: number;
  /** Standard deviation of the matrices. Default 0.15 (large enough for decisive greedy choices). */
  scale?: number;
  /** Standard deviation of the embedding. Default `scale`; smaller keeps a tied head from echoing the input token. */
  embedScale?: number;
}

/** A Gemma 2-shaped model: logit soft-capping and a sliding window of 5 on every other layer (short enough for small prompts to cross it). */
export const GEMMA2_SLIDING: RandomGgufSpec = {
  arch: 'gemma2',
  hidden: 64,
  layers: 4,
  heads: 4,
  kvHeads: 2,
  headDim: 16,
  ff: 96,
  postNorms: true,
  scale: 0.3,
  embedScale: 0.03,
  seed: 5,
  meta: { 'attention.sliding_window': { t: 'u32', v: 5 }, attn_logit_softcapping: { t: 'f32', v: 2 }, final_logit_softcapping: { t: 'f32', v: 8 } },
};

/**
 * A DeepSeek-V2-Lite-shaped model as convert_hf_to_gguf writes it: latent attention (heads of 24, 16 without rotary and
 * 8 with, a latent of 32, values of 16; queries by attn_q, one attn_kv_b), softmax routing of 8 experts, 2 used, two
 * shared experts, a dense first layer.
 */
export const DEEPSEEK2: RandomGgufSpec = {
  arch: 'deepseek2',
  hidden: 64,
  layers: 3,
  heads: 4,
  kvHeads: 4,
  headDim: 24,
  ff: 96,
  untied: true,
  latent: { kvLora: 32, rope: 8, value: 16 },
  experts: { count: 8, used: 2, ff: 32, sharedCount: 2, leadingDense: 1 },
  meta: { expert_weights_scale: { t: 'f32', v: 1 } },
};

/** The tokenizer.* metadata of stories260K (a 512-piece SentencePiece vocabulary). */
export async function storiesTokenizerMeta(): Promise<Record<string, WValue>> {
  return withGguf(STORIES, async (f) => {
    const meta = new Map([...f.metadata].filter(([k]) => k.startsWith('tokenizer.')));
    return metadataToW(meta);
  });
}

/** Writes a random model of `spec` to `path`, with the given tokenizer metadata (vocabulary size = its token count). */
export async function writeRandomGguf(path: string, spec: RandomGgufSpec, tokenizer: Record<string, WValue>): Promise<void> {
  const { arch, hidden: h, layers, heads, kvHeads, ff } = spec;
  const hd = spec.headDim ?? h / heads;
  const tokens = tokenizer['tokenizer.ggml.tokens'];
  const vocab = tokens && tokens.t === 'arr' ? tokens.v.length : 0;
  const normal = seededNormals(spec.seed ?? 1);
  const scale = spec.scale ?? 0.15;
  const tensors: WTensor[] = [];
  const mtype = spec.matrixType ?? 0;
  // GGUF ne lists the fastest dimension first: a [rows, cols] matrix is ne [cols, rows].
  const matrix = (name: string, rows: number, cols: number, std = scale, count = 1) => {
    const dims = count === 1 ? [cols, rows] : [cols, rows, count];
    tensors.push({ name, dims, type: mtype, data: encodeTensor(name, { dims, data: normal(rows * cols * count, std), type: mtype }) });
  };
  /** A float32 vector, or `count` of them (ne [n, count]: one per expert). */
  const vector = (name: string, n: number, std: number, mean: number, count = 1) => {
    const data = normal(n * count, std, mean);
    tensors.push({ name, dims: count === 1 ? [n] : [n, count], type: 0, data: new Uint8Array(data.buffer) });
  };
  matrix('token_embd.weight', vocab, h, spec.embedScale ?? scale);
  vector(spec.convLayers ? 'token_embd_norm.weight' : 'output_norm.weight', h, 0.1, 1);
  if (spec.normBias) vector('output_norm.bias', h, 0.1, 0);
  if (spec.untied) matrix('output.weight', vocab, h);
  if (spec.headBias) vector('output.bias', vocab, 0.5, 0);
  const q = heads * hd;
  const kv = kvHeads * hd;
  const blocks = layers + (spec.nextn ?? 0);
  for (let i = 0; i < blocks; i++) {
    const p = `blk.${i}.`;
    if (!spec.noPreNorms) vector(`${p}attn_norm.weight`, h, 0.1, 1);
    if (!spec.noPreNorms && spec.normBias) vector(`${p}attn_norm.bias`, h, 0.1, 0);
    if (spec.blockKinds?.[i] === 'mlp') {
      matrix(`${p}ffn_up.weight`, ff, h);
      matrix(`${p}ffn_down.weight`, h, ff);
      continue;
    }
    const mla = spec.latent;
    const conv = spec.convLayers?.layers.includes(i) ? spec.convLayers.kernel : 0;
    const ssm = spec.mambaLayers?.layers.includes(i) ? spec.mambaLayers : undefined;
    const writeMamba = (ssm: NonNullable<RandomGgufSpec['mambaLayers']>) => {
      const inner = ssm.heads * ssm.headDim;
      const channels = inner + 2 * ssm.groups * ssm.stateSize;
      const raw = (name: string, dims: number[], data: Float32Array) => tensors.push({ name, dims, type: 0, data: new Uint8Array(data.buffer) });
      matrix(`${p}ssm_in.weight`, 2 * inner + 2 * ssm.groups * ssm.stateSize + ssm.heads, h);
      raw(`${p}ssm_conv1d.weight`, [ssm.convKernel, channels], normal(channels * ssm.convKernel, 0.5));
      vector(`${p}ssm_conv1d.bias`, channels, 0.1, 0);
      // dt = softplus(… − 2) ≈ 0.13, A = −e^(0.5 ± 0.5) (stored as llama.cpp's converter stores it: −exp(A_log))
      vector(`${p}ssm_dt.bias`, ssm.heads, 0.5, -2);
      raw(`${p}ssm_a`, [1, ssm.heads], normal(ssm.heads, 0.5, 0.5).map((v) => -Math.exp(v)));
      raw(`${p}ssm_d`, [1, ssm.heads], normal(ssm.heads, 0.5, 1));
      raw(`${p}ssm_norm.weight`, [inner / ssm.groups, ssm.groups], normal(inner, 0.1, 1));
      matrix(`${p}ssm_out.weight`, h, inner);
    };
    if (ssm && spec.parallelMamba) writeMamba(ssm);
    const dn = spec.deltaLayers && i < layers && (i + 1) % spec.deltaLayers.interval !== 0 ? spec.deltaLayers : undefined;
    if (dn) {
      const channels = 2 * dn.keyHeads * dn.keyDim + dn.valueHeads * dn.valueDim;
      const raw = (name: string, dims: number[], data: Float32Array) => tensors.push({ name, dims, type: 0, data: new Uint8Array(data.buffer) });
      if (dn.interleaved) {
        matrix(`${p}ssm_in.weight`, channels + dn.valueHeads * dn.valueDim, h);
        matrix(`${p}ssm_ba.weight`, 2 * dn.valueHeads, h);
      } else {
        matrix(`${p}attn_qkv.weight`, channels, h);
        matrix(`${p}attn_gate.weight`, dn.valueHeads * dn.valueDim, h);
        matrix(`${p}ssm_beta.weight`, dn.valueHeads, h);
        matrix(`${p}ssm_alpha.weight`, dn.valueHeads, h);
      }
      raw(`${p}ssm_conv1d.weight`, [dn.convKernel, channels], normal(channels * dn.convKernel, 0.5));
      vector(`${p}ssm_dt.bias`, dn.valueHeads, 0.5, -2);
      raw(`${p}ssm_a`, [dn.valueHeads], normal(dn.valueHeads, 0.5, 0.5).map((v) => -Math.exp(v)));
      vector(`${p}ssm_norm.weight`, dn.valueDim, 0.1, 1);
      matrix(`${p}ssm_out.weight`, h, dn.valueHeads * dn.valueDim);
    } else if (ssm && !spec.parallelMamba) {
      writeMamba(ssm);
    } else if (conv) {
      // ne {taps, hidden}: each channel's taps, oldest input first (taps of the size trained ones have)
      const taps = normal(h * conv, 0.5);
      tensors.push({ name: `${p}shortconv.conv.weight`, dims: [conv, h], type: 0, data: new Uint8Array(taps.buffer) });
      matrix(`${p}shortconv.in_proj.weight`, 3 * h, h);
      matrix(`${p}shortconv.out_proj.weight`, h, h);
    } else if (mla) {
      if (mla.qLora) {
        matrix(`${p}attn_q_a.weight`, mla.qLora, h);
        vector(`${p}attn_q_a_norm.weight`, mla.qLora, 0.1, 1);
        matrix(`${p}attn_q_b.weight`, q, mla.qLora);
      } else matrix(`${p}attn_q.weight`, q, h);
      matrix(`${p}attn_kv_a_mqa.weight`, mla.kvLora + mla.rope, h);
      vector(`${p}attn_kv_a_norm.weight`, mla.kvLora, 0.1, 1);
      const nope = hd - mla.rope;
      if (mla.split) {
        // ne: k_b {nope, kvLora, heads}, v_b {kvLora, value, heads}
        const kb = normal(heads * mla.kvLora * nope, scale);
        const vb = normal(heads * mla.value * mla.kvLora, scale);
        tensors.push({ name: `${p}attn_k_b.weight`, dims: [nope, mla.kvLora, heads], type: 0, data: new Uint8Array(kb.buffer) });
        tensors.push({ name: `${p}attn_v_b.weight`, dims: [mla.kvLora, mla.value, heads], type: 0, data: new Uint8Array(vb.buffer) });
      } else matrix(`${p}attn_kv_b.weight`, heads * (nope + mla.value), mla.kvLora);
    } else if (spec.fusedQkv) matrix(`${p}attn_qkv.weight`, q + 2 * kv, h);
    else {
      // (Qwen3.5's attention: each head's query, then its output gate)
      matrix(`${p}attn_q.weight`, spec.deltaLayers ? 2 * q : q, h);
      matrix(`${p}attn_k.weight`, kv, h);
      matrix(`${p}attn_v.weight`, kv, h);
    }
    if (spec.qkvBias && spec.fusedQkv) vector(`${p}attn_qkv.bias`, q + 2 * kv, 0.2, 0);
    else if (spec.qkvBias) {
      vector(`${p}attn_q.bias`, q, 0.2, 0);
      vector(`${p}attn_k.bias`, kv, 0.2, 0);
      vector(`${p}attn_v.bias`, kv, 0.2, 0);
    }
    const mixerOnly = (ssm && !spec.parallelMamba) || conv || dn;
    if (spec.qkNorm && !mixerOnly) {
      vector(`${p}attn_q_norm.weight`, spec.qkNorm === 'projection' ? q : hd, 0.1, 1);
      vector(`${p}attn_k_norm.weight`, spec.qkNorm === 'projection' ? kv : hd, 0.1, 1);
    }
    if (!mixerOnly) matrix(`${p}attn_output.weight`, h, mla ? heads * mla.value : q);
    if (spec.projectionBias) vector(`${p}attn_output.bias`, h, 0.2, 0);
    if (spec.sinks) vector(`${p}attn_sinks.weight`, heads, 1, 0);
    if (spec.postNorms) vector(`${p}post_attention_norm.weight`, h, 0.1, 1);
    // (gpt-oss's, GLM-4.5's and Seed-OSS's norm before the MLP has llama.cpp's name of a norm after attention)
    const mlpNorm = ['gpt-oss', 'glm4moe', 'seed_oss', 'qwen35', 'qwen35moe', 'qwen3next'].includes(arch) ? 'post_attention_norm' : 'ffn_norm';
    // (a single block's mixer has no MLP)
    if (spec.blockKinds) continue;
    // (Falcon-H1's has no ".weight" suffix: llama.cpp loads it so)
    if (!spec.noPreNorms && !spec.parallel) vector(arch === 'falcon-h1' ? `${p}ffn_norm` : `${p}${mlpNorm}.weight`, h, 0.1, 1);
    if (!spec.noPreNorms && !spec.parallel && spec.normBias) vector(`${p}ffn_norm.bias`, h, 0.1, 0);
    const moe = spec.experts && i >= (spec.experts.leadingDense ?? 0) ? spec.experts : undefined;
    if (moe) {
      const ffe = moe.ff ?? ff;
      // Scores spread enough that the experts' order is no near tie, not so far that the chosen ones take all the weight
      // (renormalizing them would then change nothing a test could see).
      matrix(`${p}ffn_gate_inp.weight`, moe.count, h, moe.routerScale ?? 0.08);
      matrix(`${p}ffn_gate_exps.weight`, ffe, h, scale, moe.count);
      matrix(`${p}ffn_up_exps.weight`, ffe, h, scale, moe.count);
      matrix(`${p}ffn_down_exps.weight`, h, ffe, scale, moe.count);
      if (moe.biases) {
        vector(`${p}ffn_gate_inp.bias`, moe.count, moe.routerScale ?? 0.08, 0);
        vector(`${p}ffn_gate_exps.bias`, ffe, 0.2, 0, moe.count);
        vector(`${p}ffn_up_exps.bias`, ffe, 0.2, 0, moe.count);
        vector(`${p}ffn_down_exps.bias`, h, 0.2, 0, moe.count);
      }
      // (sigmoid scores lie in (0, 1): a bias of this size changes some tokens' choice)
      if (moe.selectionBias) vector(`${p}exp_probs_b.bias`, moe.count, 0.1, 0);
      if (moe.shared && !moe.ungatedShared) vector(`${p}ffn_gate_inp_shexp.weight`, h, 1, 0);
      const shared = moe.shared ?? (moe.sharedCount ?? 0) * ffe;
      if (shared) {
        matrix(`${p}ffn_gate_shexp.weight`, shared, h);
        matrix(`${p}ffn_up_shexp.weight`, shared, h);
        matrix(`${p}ffn_down_shexp.weight`, h, shared);
      }
    } else if (spec.fusedGateUp) matrix(`${p}ffn_up.weight`, 2 * ff, h);
    else {
      if (!spec.ungated) matrix(`${p}ffn_gate.weight`, ff, h);
      matrix(`${p}ffn_up.weight`, ff, h);
    }
    if (!moe) matrix(`${p}ffn_down.weight`, h, ff);
    if (spec.projectionBias && !moe) {
      vector(`${p}ffn_up.bias`, ff, 0.2, 0);
      vector(`${p}ffn_down.bias`, h, 0.2, 0);
    }
    if (spec.postNorms) vector(`${p}post_ffw_norm.weight`, h, 0.1, 1);
    if (i >= layers) {
      matrix(`${p}nextn.eh_proj.weight`, h, 2 * h);
      vector(`${p}nextn.enorm.weight`, h, 0.1, 1);
      vector(`${p}nextn.hnorm.weight`, h, 0.1, 1);
      vector(`${p}nextn.shared_head_norm.weight`, h, 0.1, 1);
      // (Ling 2.0's MTP blocks have one more norm, which llama.cpp requires there)
      if (arch === 'bailingmoe2') vector(`${p}layer_output_norm.weight`, h, 0.1, 1);
    }
  }
  for (const [name, [dims, data]] of Object.entries(spec.extraTensors ?? {})) {
    tensors.push({ name, dims, type: 0, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) });
  }
  const u32 = (v: number): WValue => ({ t: 'u32', v });
  const recurrent = spec.blockKinds ? spec.blockKinds.flatMap((k, i) => (k === 'full' ? [] : [i])) : spec.parallelMamba ? undefined : (spec.convLayers?.layers ?? spec.mambaLayers?.layers);
  /** llama.cpp's `ssm.*` sizes (Mamba2's and the gated DeltaNet's share the keys). */
  const ssmSizes = (z: { convKernel: number; inner: number; state: number; heads: number; groups: number }): Record<string, WValue> => ({
    [`${arch}.ssm.conv_kernel`]: u32(z.convKernel),
    [`${arch}.ssm.inner_size`]: u32(z.inner),
    [`${arch}.ssm.state_size`]: u32(z.state),
    [`${arch}.ssm.time_step_rank`]: u32(z.heads),
    [`${arch}.ssm.group_count`]: u32(z.groups),
  });
  const kvMeta: Record<string, WValue> = {
    'general.architecture': { t: 'str', v: arch },
    // (not the architecture's name: llama.cpp gives vocabularies of models named "phi3" special-token attributes)
    'general.name': { t: 'str', v: 'tiny random model' },
    [`${arch}.context_length`]: u32(256),
    [`${arch}.embedding_length`]: u32(h),
    [`${arch}.block_count`]: u32(blocks),
    ...(spec.nextn ? { [`${arch}.nextn_predict_layers`]: u32(spec.nextn) } : {}),
    [`${arch}.feed_forward_length`]: spec.blockKinds ? { t: 'arr', item: 4, v: spec.blockKinds.map((k) => u32(k === 'mlp' ? ff : 0)) } : u32(ff),
    [`${arch}.attention.head_count`]: u32(heads),
    [`${arch}.attention.head_count_kv`]: recurrent
      ? { t: 'arr', item: 4, v: Array.from({ length: blocks }, (_, i) => u32(recurrent.includes(i) ? 0 : kvHeads)) }
      : u32(kvHeads),
    ...(spec.convLayers ? { [`${arch}.shortconv.l_cache`]: u32(spec.convLayers.kernel) } : {}),
    ...(spec.deltaLayers
      ? {
          ...ssmSizes({ convKernel: spec.deltaLayers.convKernel, inner: spec.deltaLayers.valueHeads * spec.deltaLayers.valueDim, state: spec.deltaLayers.keyDim, heads: spec.deltaLayers.valueHeads, groups: spec.deltaLayers.keyHeads }),
          [`${arch}.full_attention_interval`]: u32(spec.deltaLayers.interval),
        }
      : {}),
    ...(spec.mambaLayers
      ? ssmSizes({ convKernel: spec.mambaLayers.convKernel, inner: spec.mambaLayers.heads * spec.mambaLayers.headDim, state: spec.mambaLayers.stateSize, heads: spec.mambaLayers.heads, groups: spec.mambaLayers.groups })
      : {}),
    [`${arch}.attention.layer_norm_rms_epsilon`]: { t: 'f32', v: 1e-6 },
    ...(spec.headDim !== undefined && !spec.latent
      ? { [`${arch}.attention.key_length`]: u32(spec.headDim), [`${arch}.attention.value_length`]: u32(spec.headDim) }
      : {}),
    ...(spec.latent
      ? {
          [`${arch}.attention.kv_lora_rank`]: u32(spec.latent.kvLora),
          [`${arch}.attention.q_lora_rank`]: u32(spec.latent.qLora ?? 0),
          [`${arch}.rope.dimension_count`]: u32(spec.latent.rope),
          ...(spec.latent.split
            ? {
                [`${arch}.attention.key_length`]: u32(spec.latent.kvLora + spec.latent.rope),
                [`${arch}.attention.value_length`]: u32(spec.latent.kvLora),
                [`${arch}.attention.key_length_mla`]: u32(hd),
                [`${arch}.attention.value_length_mla`]: u32(spec.latent.value),
              }
            : { [`${arch}.attention.key_length`]: u32(hd), [`${arch}.attention.value_length`]: u32(spec.latent.value) }),
        }
      : {}),
    ...(spec.experts
      ? {
          [`${arch}.expert_count`]: u32(spec.experts.count),
          [`${arch}.expert_used_count`]: u32(spec.experts.used),
          ...(spec.experts.ff !== undefined ? { [`${arch}.expert_feed_forward_length`]: u32(spec.experts.ff) } : {}),
          ...(spec.experts.shared !== undefined ? { [`${arch}.expert_shared_feed_forward_length`]: u32(spec.experts.shared) } : {}),
          ...(spec.experts.sharedCount !== undefined ? { [`${arch}.expert_shared_count`]: u32(spec.experts.sharedCount) } : {}),
          ...(spec.experts.leadingDense !== undefined ? { [`${arch}.leading_dense_block_count`]: u32(spec.experts.leadingDense) } : {}),
        }
      : {}),
  };
  for (const [k, v] of Object.entries(spec.meta ?? {})) kvMeta[k.startsWith('.') ? k.slice(1) : `${arch}.${k}`] = v;
  await writeFile(path, makeGguf({ ...kvMeta, ...tokenizer }, tensors));
}

type Llama = Awaited<ReturnType<typeof import('node-llama-cpp').getLlama>>;
/** node-llama-cpp's branded token id (a number at run time). */
type Token = import('node-llama-cpp').Token;
let llamaPromise: Promise<Llama> | undefined;

/** One llama.cpp instance per process (CPU only, prebuilt binaries, no downloads). */
export function llamaCpp(): Promise<Llama> {
  llamaPromise ??= import('node-llama-cpp').then(({ getLlama, LlamaLogLevel }) =>
    getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error }),
  );
  return llamaPromise;
}

type LlamaSequence = import('node-llama-cpp').LlamaContextSequence;

/** Runs `use` on a sequence of the GGUF at `path` (F32 KV cache, no flash attention: llama.cpp's plainest path), then frees it. */
async function withLlamaCppSequence<T>(path: string, use: (sequence: LlamaSequence) => Promise<T>): Promise<T> {
  const llama = await llamaCpp();
  const model = await llama.loadModel({ modelPath: path });
  try {
    const ctx = await model.createContext({
      contextSize: 256,
      threads: 1,
      flashAttention: false,
      experimentalKvCacheKeyType: 'F32',
      experimentalKvCacheValueType: 'F32',
    });
    try {
      return await use(ctx.getSequence());
    } finally {
      await ctx.dispose();
    }
  } finally {
    await model.dispose();
  }
}

/** llama.cpp's greedy continuation of `prompt`. */
export function llamaCppGreedy(path: string, prompt: number[], steps: number): Promise<number[]> {
  return withLlamaCppSequence(path, async (sequence) => {
    const out: number[] = [];
    for await (const t of sequence.evaluate(prompt as unknown as Token[], { temperature: 0 })) {
      out.push(t as unknown as number);
      if (out.length >= steps) break;
    }
    return out;
  });
}

/**
 * node-llama-cpp's greedy infill (fill-in-the-middle) between `prefix` and `suffix`: its text, and the tokens its
 * sequence then holds, the prompt it built followed by the tokens it wrote (all but the last, which it did not
 * evaluate; its text leaves out a trailing incomplete UTF-8 sequence, the tokens do not).
 */
export function llamaCppInfill(path: string, prefix: string, suffix: string, maxTokens: number): Promise<{ context: number[]; text: string }> {
  return withLlamaCppSequence(path, async (sequence) => {
    const { LlamaCompletion } = await import('node-llama-cpp');
    const text = await new LlamaCompletion({ contextSequence: sequence }).generateInfillCompletion(prefix, suffix, { maxTokens, temperature: 0 });
    return { context: sequence.contextTokens.map((t) => t as unknown as number), text };
  });
}

/**
 * llama.cpp's distribution of the token after `prompt` (softmax of its logits: temperature 1, no truncation),
 * the `top` most likely tokens with their probabilities, most likely first.
 */
export function llamaCppNextProbabilities(path: string, prompt: number[], top: number): Promise<[number, number][]> {
  return withLlamaCppSequence(path, async (sequence) => {
    // The distribution is read at the first sampled token; a fixed seed keeps that draw from being an end token
    // on some runs (llama.cpp then yields nothing), as its default seed, the clock, did.
    const options = { temperature: 1, topK: 0, topP: 1, minP: 0, seed: 1 };
    for await (const out of sequence.evaluateWithMetadata(prompt as unknown as Token[], { probabilities: true }, options)) {
      return [...out.probabilities].slice(0, top).map(([t, p]): [number, number] => [t as unknown as number, p]);
    }
    throw new Error('llama.cpp evaluated nothing');
  });
}

/**
 * llama.cpp's embedding of each text (node-llama-cpp's embedding context: BOS prepended, and for a causal model
 * without a pooling type the last token's normed hidden state), unnormalized.
 */
export async function llamaCppEmbeddings(path: string, texts: readonly string[]): Promise<number[][]> {
  const model = await (await llamaCpp()).loadModel({ modelPath: path });
  try {
    const context = await model.createEmbeddingContext({ contextSize: 256, threads: 1 });
    try {
      const vectors: number[][] = [];
      for (const t of texts) vectors.push([...(await context.getEmbeddingFor(t)).vector]);
      return vectors;
    } finally {
      await context.dispose();
    }
  } finally {
    await model.dispose();
  }
}

/** llama.cpp's tokenization of `text` with the GGUF's own vocabulary (special tokens parsed when asked). */
export async function llamaCppTokenize(path: string, texts: string[], special = false): Promise<number[][]> {
  const llama = await llamaCpp();
  const model = await llama.loadModel({ modelPath: path, vocabOnly: true });
  try {
    return texts.map((t) => [...model.tokenize(t, special)]);
  } finally {
    await model.dispose();
  }
}

/**
 * Greedy decoding of a converted model in a bare onnxruntime session: the prompt, then one token per step with
 * the KV cache (asking for the last position's logits only where the graph takes `num_logits_to_keep`, as the engine does).
 */
export async function ortGreedy(modelPath: string, prompt: number[], steps: number, onFirstLogits?: (logits: Float32Array) => void): Promise<number[]> {
  const session = await ort.InferenceSession.create(modelPath);
  try {
    const pastShape = (name: string) => {
      const meta = session.inputMetadata.find((m) => m.name === name) as { shape?: (number | string)[] } | undefined;
      const dims = meta?.shape ?? [];
      return [1, Number(dims[1]), 0, Number(dims[3])];
    };
    let past: Record<string, ort.Tensor> = {};
    for (const name of session.inputNames) {
      // (keys and values in the graph's type: fp16 for a `kvCache: 'float16'` conversion)
      const half = (session.inputMetadata.find((m) => m.name === name) as { type?: string } | undefined)?.type === 'float16';
      if (name.startsWith('past_key_values.')) past[name] = half ? new ort.Tensor('float16', new Uint16Array(0), pastShape(name)) : new ort.Tensor('float32', new Float32Array(0), pastShape(name));
      // a hybrid model's recurrent states (past_conv.{i}, past_ssm.{i}): [1, ...fixed dims], zero before the first token
      if (name.startsWith('past_conv.') || name.startsWith('past_ssm.') || name.startsWith('past_recurrent.')) {
        const dims = [1, ...(session.inputMetadata.find((m) => m.name === name) as unknown as { shape: number[] }).shape.slice(1)];
        past[name] = new ort.Tensor('float32', new Float32Array(dims.reduce((a, b) => a * b, 1)), dims);
      }
    }
    const out: number[] = [];
    let feed = prompt;
    let total = 0;
    for (let step = 0; step < steps; step++) {
      const S = feed.length;
      const T = total + S;
      const res = await session.run({
        input_ids: new ort.Tensor('int64', BigInt64Array.from(feed, BigInt), [1, S]),
        attention_mask: new ort.Tensor('int64', new BigInt64Array(T).fill(1n), [1, T]),
        // GroupQueryAttention graphs take positions from the mask (seqlens_k) and have no position_ids input
        ...(session.inputNames.includes('position_ids')
          ? { position_ids: new ort.Tensor('int64', BigInt64Array.from({ length: S }, (_, i) => BigInt(total + i)), [1, S]) }
          : {}),
        ...(session.inputNames.includes('num_logits_to_keep') ? { num_logits_to_keep: new ort.Tensor('int64', BigInt64Array.from([1n]), []) } : {}),
        ...past,
      });
      const logits = res.logits!;
      const V = logits.dims[2]!;
      const last = (logits.dims[1]! - 1) * V;
      const data = logits.data as Float32Array;
      if (step === 0) onFirstLogits?.(data.slice(last, last + V));
      let best = 0;
      for (let v = 1; v < V; v++) if (data[last + v]! > data[last + best]!) best = v;
      out.push(best);
      past = pastAfter(past, res);
      total = T;
      feed = [best];
    }
    return out;
  } finally {
    await session.release();
  }
}

/**
 * `convertGguf` with float32 keys and values: the tests that hold a conversion to llama.cpp's tokens compare it with
 * llama.cpp's F32 cache, its exact reference (the converter's default, float16, is llama.cpp's default cache type).
 */
export function convertExact(path: string, dir: string, opts: ConvertGgufOptions = {}): ReturnType<typeof convertGguf> {
  return convertGguf(path, dir, { kvCache: 'float32', ...opts });
}

