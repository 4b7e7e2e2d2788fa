/**
 * Each architecture the GGUF converter reads, on a small random model written with llama.cpp's names:
 * the converted ONNX model (attention as GroupQueryAttention) gives llama.cpp's greedy tokens on the same file; features the converter
 * does not handle are refused by name.
 */
import { expect } from 'chai';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Engine } from '../src/engine.js';
import { GgufError } from '../src/gguf/reader.js';
import { graphFacts } from '../src/onnx/graph-facts.js';
import { readModel } from '../src/onnx/proto.js';
import { rewriteGguf, type WValue } from './support/gguf-writer.js';
import { GgufValueType } from '../src/gguf/reader.js';
import { convertExact, DEEPSEEK2, GEMMA2_SLIDING, llamaCppGreedy, llamaCppNextProbabilities, ortGreedy, storiesTokenizerMeta, writeRandomGguf, type RandomGgufSpec } from './support/gguf-models.js';

const u32 = (v: number): WValue => ({ t: 'u32', v });
const f32 = (v: number): WValue => ({ t: 'f32', v });
const str = (v: string): WValue => ({ t: 'str', v });

const YARN: Record<string, WValue> = {
  'rope.freq_base': f32(10000),
  'rope.scaling.type': str('yarn'),
  'rope.scaling.factor': f32(4),
  'rope.scaling.original_context_length': u32(4096),
};

/** The shape most models below share: 4 heads of 16 over 2 KV heads, 2 layers. */
const SMALL = { hidden: 64, layers: 2, heads: 4, kvHeads: 2, ff: 96 } as const;

/** GLM-4 as convert_hf_to_gguf writes it: biased q/k/v, one gate_up matrix, four norms, half of each head rotated. */
const GLM4: RandomGgufSpec = { arch: 'glm4', ...SMALL, untied: true, qkvBias: true, postNorms: true, fusedGateUp: true, meta: { 'rope.dimension_count': u32(8) } };

/** GLM-4.5-Air as convert_hf_to_gguf writes it (see MODELS). */
const GLM4MOE: RandomGgufSpec = {
  arch: 'glm4moe',
  hidden: 64,
  layers: 3,
  heads: 4,
  kvHeads: 2,
  headDim: 16,
  ff: 96,
  qkvBias: true,
  untied: true,
  nextn: 1,
  experts: { count: 8, used: 2, ff: 32, selectionBias: true, sharedCount: 1, leadingDense: 1 },
  meta: { 'rope.dimension_count': u32(8), expert_weights_norm: { t: 'bool', v: true }, expert_gating_func: u32(2) },
};

/** A Granite 4.0-H-micro as convert_hf_to_gguf writes it (see MODELS). */
const GRANITE_HYBRID: RandomGgufSpec = {
  arch: 'granitehybrid',
  hidden: 64,
  layers: 4,
  heads: 4,
  kvHeads: 2,
  ff: 96,
  untied: true,
  mambaLayers: { layers: [0, 1, 3], convKernel: 4, heads: 8, headDim: 16, stateSize: 16, groups: 1 },
  meta: {
    embedding_scale: f32(2),
    residual_scale: f32(0.5),
    'attention.scale': f32(0.2),
    logit_scale: f32(2),
    'rope.scaling.finetuned': { t: 'bool', v: false },
  },
};

/** A Qwen3.5 as convert_hf_to_gguf writes it (see MODELS). */
const QWEN35: RandomGgufSpec = {
  arch: 'qwen35',
  hidden: 64,
  layers: 4,
  heads: 4,
  kvHeads: 2,
  headDim: 32,
  ff: 96,
  qkNorm: true,
  deltaLayers: { interval: 4, convKernel: 4, keyHeads: 2, keyDim: 16, valueHeads: 4, valueDim: 16 },
  meta: { 'rope.dimension_count': u32(8), 'rope.dimension_sections': sections([2, 1, 1, 0]) },
};

/** An LFM2 as convert_hf_to_gguf writes it (see MODELS). */
const LFM2: RandomGgufSpec = { arch: 'lfm2', hidden: 64, layers: 4, heads: 4, kvHeads: 2, ff: 96, qkNorm: true, convLayers: { kernel: 3, layers: [0, 1, 3] } };

/** ERNIE-4.5-21B-A3B as convert_hf_to_gguf writes it (see MODELS). */
const ERNIE_MOE: RandomGgufSpec = {
  arch: 'ernie4_5-moe',
  ...SMALL,
  layers: 3,
  untied: true,
  experts: { count: 8, used: 2, ff: 32, selectionBias: true, shared: 48, ungatedShared: true, leadingDense: 1 },
  meta: { interleave_moe_layer_step: u32(1) },
};

/** Granite 3 with its four multipliers. */
const GRANITE: RandomGgufSpec = {
  arch: 'granite',
  ...SMALL,
  untied: true,
  scale: 0.3,
  embedScale: 0.05,
  meta: { embedding_scale: f32(12), residual_scale: f32(0.22), 'attention.scale': f32(0.1), logit_scale: f32(8) },
};

/** One model per architecture and feature; small enough that each conversion and run takes well under a second. */
const MODELS: Record<string, RandomGgufSpec> = {
  'llama (GQA, untied head)': { arch: 'llama', ...SMALL, untied: true },
  'llama 3 (rope_freqs frequency factors)': {
    arch: 'llama',
    hidden: 64,
    layers: 2,
    heads: 4,
    kvHeads: 1,
    ff: 96,
    meta: { 'rope.freq_base': f32(500000) },
    extraTensors: { 'rope_freqs.weight': [[8], Float32Array.from({ length: 8 }, (_, i) => 1 + i * 1.5)] },
  },
  'llama (linear rope scaling, F16 matrices)': {
    arch: 'llama',
    hidden: 64,
    layers: 2,
    heads: 4,
    kvHeads: 4,
    ff: 96,
    untied: true,
    matrixType: 1,
    meta: { 'rope.scaling.type': str('linear'), 'rope.scaling.factor': f32(4) },
  },
  'qwen2 (q/k/v biases, tied head)': { arch: 'qwen2', ...SMALL, qkvBias: true, meta: { 'rope.freq_base': f32(1e6) } },
  'qwen3 (q/k norms, key_length ≠ hidden/heads)': { arch: 'qwen3', hidden: 64, layers: 2, heads: 4, kvHeads: 2, headDim: 32, ff: 96, qkNorm: true, untied: true },
  // The text models of vision-language GGUFs: M-RoPE sections (llama.cpp requires them) over text positions.
  'qwen2vl (Qwen2.5-VL as a text model: M-RoPE on text, q/k/v biases)': { arch: 'qwen2vl', ...SMALL, qkvBias: true, meta: { 'rope.freq_base': f32(1e6), 'rope.dimension_sections': sections([2, 3, 3, 0]) } },
  'qwen3vl (Qwen3-VL as a text model: interleaved M-RoPE on text, q/k norms)': {
    arch: 'qwen3vl',
    hidden: 64,
    layers: 2,
    heads: 4,
    kvHeads: 2,
    headDim: 32,
    ff: 96,
    qkNorm: true,
    untied: true,
    seed: 9,
    meta: { 'rope.dimension_sections': sections([6, 5, 5, 0]) },
  },
  'gemma2 (soft-capping, sliding window every other layer)': GEMMA2_SLIDING,
  'gemma3 (q/k norms, sliding layers with their own rope base, linear scaling of the global layers)': {
    arch: 'gemma3',
    hidden: 64,
    layers: 4,
    heads: 4,
    kvHeads: 1,
    headDim: 32,
    ff: 96,
    postNorms: true,
    qkNorm: true,
    scale: 0.3,
    embedScale: 0.03,
    seed: 5,
    meta: {
      'attention.sliding_window': u32(4),
      'attention.sliding_window_pattern': u32(2),
      'rope.freq_base': f32(1e6),
      'rope.scaling.type': str('linear'),
      'rope.scaling.factor': f32(8),
    },
  },
  'phi3 (fused qkv and gate_up)': { arch: 'phi3', hidden: 64, layers: 2, heads: 4, kvHeads: 4, ff: 96, fusedQkv: true, fusedGateUp: true, untied: true },
  // llama.cpp takes the long factors when its context (256) exceeds the original one, the converted graph when the
  // sequence does: a 7-token prompt past an original context of 4 puts both on the long factors from the start.
  'phi3 LongRoPE past the original context (long factors, attention factor)': longRopePhi3(4),
  'phi3 LongRoPE within the original context (short factors, attention factor)': longRopePhi3(1024),
  'phi3 partial rotary with LongRoPE, GQA and a tied head (Phi-4-mini)': {
    ...longRopePhi3(4, 12),
    kvHeads: 2,
    untied: false,
    meta: { ...longRopePhi3(4, 12).meta, 'rope.dimension_count': u32(12) },
  },
  'llama with heads of 12 (GroupQueryAttention takes multiples of 8: attention by ops)': { arch: 'llama', hidden: 48, layers: 2, heads: 4, kvHeads: 2, ff: 96, untied: true },
  // the correction dimensions of 4096 original positions at base 10000 put the ramp over frequencies 2 to 6 of 8
  'qwen2 YaRN (factor 4, interpolation ramp, attention scaling)': { arch: 'qwen2', ...SMALL, qkvBias: true, meta: YARN },
  'granite (embedding, residual, attention and logit multipliers)': GRANITE,
  'smollm3 (no rotary on every fourth layer)': { arch: 'smollm3', hidden: 64, layers: 4, heads: 4, kvHeads: 2, ff: 96, untied: true },
  'olmo2 (norms after the blocks only, q/k norms over whole projections)': {
    arch: 'olmo2',
    ...SMALL,
    untied: true,
    noPreNorms: true,
    postNorms: true,
    qkNorm: 'projection',
  },
  'ernie4_5 (the Llama block, adjacent rotary pairs, tied head)': { arch: 'ernie4_5', ...SMALL, scale: 0.3, embedScale: 0.05 },
  'exaone (the Llama block, NeoX rotary)': { arch: 'exaone', ...SMALL, untied: true },
  'exaone4 (norms after the blocks, per-head q/k norms)': { arch: 'exaone4', ...SMALL, untied: true, noPreNorms: true, postNorms: true, qkNorm: true },
  // llama.cpp slides the window of the 64-layer model (EXAONE 4.0 32B) only: three layers of every four, the fourth without rotary.
  'exaone4 with 64 layers (sliding windows, global layers without rotary)': {
    arch: 'exaone4',
    hidden: 32,
    layers: 64,
    heads: 2,
    kvHeads: 1,
    ff: 48,
    untied: true,
    noPreNorms: true,
    postNorms: true,
    qkNorm: true,
    scale: 0.3,
    meta: { 'attention.sliding_window': u32(3) },
  },
  'command-r (Command R, Aya: LayerNorms, attention and MLP in parallel, scaled logits, tied head)': {
    arch: 'command-r',
    ...SMALL,
    parallel: true,
    meta: { 'attention.layer_norm_epsilon': f32(1e-5), logit_scale: f32(0.25) },
  },
  'cohere2 (Command R7B: sliding windows on three layers of four, the fourth global without rotary)': {
    arch: 'cohere2',
    hidden: 64,
    layers: 4,
    heads: 4,
    kvHeads: 2,
    ff: 96,
    parallel: true,
    seed: 3,
    meta: { 'attention.layer_norm_epsilon': f32(1e-5), logit_scale: f32(0.25), 'attention.sliding_window': u32(3) },
  },
  'gemma (embeddings × √hidden, GeGLU, multi-query attention, tied head)': { arch: 'gemma', hidden: 64, layers: 2, heads: 4, kvHeads: 1, headDim: 32, ff: 96, scale: 0.3, embedScale: 0.03 },
  'mistral3 (the Llama block, adjacent rotary pairs)': { arch: 'mistral3', ...SMALL, untied: true },
  'mistral3 YaRN (Ministral 3: the magnitude scaling cancelled, no attention factor)': {
    arch: 'mistral3',
    ...SMALL,
    untied: true,
    meta: { ...YARN, 'rope.scaling.yarn_log_multiplier': f32(1), 'rope.scaling.attn_factor': f32(1.2) },
  },
  // An original context of 2 puts the 7-token prompt's positions over several periods of the temperature.
  'mistral3 attention temperature (Llama 4 scaling past the original context)': {
    arch: 'mistral3',
    ...SMALL,
    untied: true,
    meta: { 'rope.scaling.original_context_length': u32(2), 'attention.temperature_scale': f32(0.5) },
  },
  // GLM-4 (0414) and GLM-Z1: adjacent pairs over half of each head, four norms, biased q/k/v, one gate_up matrix.
  'glm4 (partial rotary in adjacent pairs, norms before and after the blocks, q/k/v biases, fused gate_up)': GLM4,
  'glm4 with fused q/k/v and their biases, tied head': { ...GLM4, untied: false, fusedQkv: true, seed: 4 },
  // GLM-4.1V's text model: M-RoPE sections, which llama.cpp rotates in NeoX's halves.
  'glm4 with M-RoPE sections (GLM-4.1V as a text model)': { ...GLM4, seed: 6, meta: { ...GLM4.meta, 'rope.dimension_sections': sections([2, 1, 1, 0]) } },
  'starcoder2 (LayerNorms with biases, biased projections, an ungated GELU MLP, tied head)': {
    arch: 'starcoder2',
    ...SMALL,
    qkvBias: true,
    normBias: true,
    projectionBias: true,
    ungated: true,
    meta: { 'attention.layer_norm_epsilon': f32(1e-5), 'rope.freq_base': f32(1e5) },
  },
  'stablelm (LayerNorms with biases, q/k/v biases, a quarter of each head rotated)': {
    arch: 'stablelm',
    ...SMALL,
    untied: true,
    qkvBias: true,
    normBias: true,
    meta: { 'attention.layer_norm_epsilon': f32(1e-5), 'rope.dimension_count': u32(4) },
  },
  'arcee (the Llama block with an ungated ReLU² MLP)': { arch: 'arcee', ...SMALL, untied: true, ungated: true, meta: { 'attention.layer_norm_rms_epsilon': f32(1e-5) } },
  'nemotron (LayerNorms with biases, an ungated ReLU² MLP, half of each head rotated)': {
    arch: 'nemotron',
    ...SMALL,
    untied: true,
    normBias: true,
    ungated: true,
    meta: { 'attention.layer_norm_epsilon': f32(1e-5), 'rope.dimension_count': u32(8) },
  },
  'nemotron with attention-output and MLP biases': {
    arch: 'nemotron',
    ...SMALL,
    untied: true,
    normBias: true,
    ungated: true,
    projectionBias: true,
    seed: 7,
    meta: { 'attention.layer_norm_epsilon': f32(1e-5), 'rope.dimension_count': u32(8) },
  },
  'minicpm (embedding, residual and logit multipliers)': {
    arch: 'minicpm',
    ...SMALL,
    untied: true,
    scale: 0.3,
    embedScale: 0.05,
    meta: { embedding_scale: f32(12), residual_scale: f32(0.22), logit_scale: f32(0.25) },
  },
  'internlm2 (the Llama block, adjacent rotary pairs)': { arch: 'internlm2', ...SMALL, untied: true },
  'phi2 (LayerNorms with biases, attention and an ungated GELU MLP in parallel, fused biased qkv, partial rotary, a biased head)': {
    arch: 'phi2',
    ...SMALL,
    kvHeads: 4,
    untied: true,
    fusedQkv: true,
    qkvBias: true,
    normBias: true,
    projectionBias: true,
    parallel: true,
    ungated: true,
    headBias: true,
    meta: { 'attention.layer_norm_epsilon': f32(1e-5), 'rope.dimension_count': u32(8) },
  },
  'llama YaRN with an attention factor (adjacent pairs)': { arch: 'llama', ...SMALL, untied: true, meta: { ...YARN, 'rope.scaling.attn_factor': f32(1.2) } },
  // Mixtures of experts: onnxruntime's MoE operator routes each token as llama.cpp does. (Each model's seed is its place
  // in this list: new models go last, so that the others keep theirs.)
  'llama with experts (Mixtral: 4 experts, 2 used, renormalized)': { arch: 'llama', ...SMALL, untied: true, experts: { count: 4, used: 2 } },
  'qwen3moe (q/k norms, 8 experts of their own size, 2 used, renormalized)': { arch: 'qwen3moe', ...SMALL, qkNorm: true, untied: true, experts: { count: 8, used: 2, ff: 32 } },
  'qwen2moe (q/k/v biases, 4 experts, 2 used, not renormalized, a gated shared expert)': { arch: 'qwen2moe', ...SMALL, qkvBias: true, untied: true, experts: { count: 4, used: 2, ff: 32, shared: 48 } },
  'olmoe (q/k norms over the projections, 8 experts, 2 used, not renormalized)': { arch: 'olmoe', hidden: 64, layers: 2, heads: 4, kvHeads: 4, ff: 48, qkNorm: 'projection', untied: true, experts: { count: 8, used: 2 } },
  'granitemoe (the multipliers, 4 experts, 2 used, renormalized)': { ...GRANITE, arch: 'granitemoe', experts: { count: 4, used: 2 } },
  'granite with experts (llama.cpp reads them in its granite graph too)': { ...GRANITE, experts: { count: 4, used: 2 } },
  // Matrices large enough that the experts' SwiGLU clamps (at 7) some of its gate and up values.
  'gpt-oss (attention sinks, a sliding window on even layers, biases, experts with biases and the clamped SwiGLU, YaRN)': {
    arch: 'gpt-oss',
    hidden: 64,
    layers: 4,
    heads: 4,
    kvHeads: 2,
    headDim: 16,
    ff: 32,
    qkvBias: true,
    projectionBias: true,
    sinks: true,
    untied: true,
    scale: 0.6,
    embedScale: 0.15,
    experts: { count: 4, used: 2, ff: 32, biases: true, routerScale: 0.15 },
    meta: { ...YARN, 'rope.freq_base': f32(150000), 'attention.sliding_window': u32(4) },
  },
  // GLM-4.5-Air's layout: sigmoid scores, a selection bias, renormalized, an ungated shared expert, a dense first layer,
  // a multi-token-prediction block that llama.cpp skips; NeoX rotary over half of each head, q/k/v biases.
  'glm4moe (GLM-4.5-Air: sigmoid routing with a selection bias, renormalized, a shared expert, a dense first layer, an MTP block)': GLM4MOE,
  // GLM-4.5's: q/k norms, two shared experts, the chosen weights scaled by 2.5 and not renormalized.
  'glm4moe (GLM-4.5: q/k norms, two shared experts, weights scaled, not renormalized)': {
    ...GLM4MOE,
    qkNorm: true,
    experts: { ...GLM4MOE.experts!, sharedCount: 2 },
    meta: { 'rope.dimension_count': u32(8), expert_weights_scale: f32(2.5) },
  },
  // ERNIE-4.5-21B-A3B's layout: a dense first layer, softmax routing with a selection bias, renormalized, an ungated shared expert.
  'ernie4_5-moe (ERNIE 4.5 MoE: softmax routing with a selection bias, an ungated shared expert, a dense first layer, adjacent rotary pairs)': ERNIE_MOE,
  // DeepSeek-V2-Lite's layout: latent attention with queries by attn_q and one attn_kv_b, softmax routing, not renormalized.
  'deepseek2 (DeepSeek-V2-Lite: latent attention from attn_kv_b, softmax routing, two shared experts, a dense first layer)': DEEPSEEK2,
  // DeepSeek-V3's and GLM-4.7-Flash's, as converted for llama.cpp's absorbed form: low-rank queries, attn_k_b/attn_v_b.
  'deepseek2 (DeepSeek-V3 / GLM-4.7-Flash: low-rank queries, split attn_k_b/attn_v_b, sigmoid routing with a selection bias, renormalized and scaled)': {
    ...DEEPSEEK2,
    kvHeads: 1,
    latent: { ...DEEPSEEK2.latent!, qLora: 16, split: true },
    experts: { ...DEEPSEEK2.experts!, selectionBias: true, sharedCount: 1 },
    meta: { expert_gating_func: u32(2), expert_weights_norm: { t: 'bool', v: true }, expert_weights_scale: f32(1.8) },
  },
  // DeepSeek-V2-Lite's and Coder-V2-Lite's YaRN: the rotation's magnitude cancelled, q·k scaled by the square of DeepSeek's own.
  'deepseek2 YaRN (DeepSeek-V2-Lite: the rotation unscaled, q·k by its yarn_log_multiplier)': {
    ...DEEPSEEK2,
    meta: { ...DEEPSEEK2.meta, ...YARN, 'rope.scaling.yarn_log_multiplier': f32(0.0707) },
  },
  // (llama.cpp's seed_oss graph takes no attention.scale from the file: one written here is left alone, as it leaves it)
  'seed_oss (Seed-OSS: q/k/v biases, NeoX rotary, the norm before the MLP named post_attention_norm)': { arch: 'seed_oss', ...SMALL, untied: true, qkvBias: true, meta: { 'attention.scale': f32(0.2) } },
  // OLMo 3: OLMo 2's block with a sliding window on three layers of four, their rotation unscaled. (llama.cpp's graph
  // rotates them with the global base: the rope.freq_base_swa written here is left alone, as it leaves it.)
  'olmo2 with a sliding window (OLMo 3: three layers of four, unscaled rotation there, the global layers linearly scaled)': {
    arch: 'olmo2',
    hidden: 64,
    layers: 4,
    heads: 4,
    kvHeads: 2,
    ff: 96,
    untied: true,
    noPreNorms: true,
    postNorms: true,
    qkNorm: 'projection',
    meta: { 'attention.sliding_window': u32(3), 'rope.freq_base': f32(500000), 'rope.freq_base_swa': f32(10000), 'rope.scaling.type': str('linear'), 'rope.scaling.factor': f32(4) },
  },
  'qwen3vlmoe (Qwen3-VL-30B-A3B as a text model: interleaved M-RoPE on text, q/k norms, 8 experts, 2 used)': {
    arch: 'qwen3vlmoe',
    ...SMALL,
    qkNorm: true,
    untied: true,
    experts: { count: 8, used: 2, ff: 32 },
    meta: { 'rope.dimension_sections': sections([3, 3, 2, 0]) },
  },
  // DeepSeek-V3's group-limited routing (llama.cpp routes any architecture's experts by groups where the file has them).
  'deepseek2 with expert groups (DeepSeek-V3: the experts of the best 2 of 4 groups chosen from)': {
    ...DEEPSEEK2,
    experts: { ...DEEPSEEK2.experts!, selectionBias: true },
    meta: { expert_gating_func: u32(2), expert_weights_norm: { t: 'bool', v: true }, expert_weights_scale: f32(2.5), expert_group_count: u32(4), expert_group_used_count: u32(2) },
  },
  'glm4moe with expert groups (4 groups, 1 used)': { ...GLM4MOE, meta: { ...GLM4MOE.meta, expert_group_count: u32(4), expert_group_used_count: u32(1) } },
  // Ling 2.0 (Ling-mini-2.0, Ring-mini-2.0): fused q/k/v, per-head q/k norms, NeoX rotary over half of each head, sigmoid
  // routing with a selection bias within the best 2 of 4 expert groups, a shared expert, a dense first layer, an MTP block.
  'bailingmoe2 (Ling 2.0: fused q/k/v, q/k norms, partial NeoX rotary, grouped sigmoid routing, a shared expert, an MTP block)': {
    arch: 'bailingmoe2',
    hidden: 64,
    layers: 3,
    heads: 4,
    kvHeads: 2,
    ff: 96,
    untied: true,
    fusedQkv: true,
    qkNorm: true,
    nextn: 1,
    experts: { count: 8, used: 2, ff: 32, selectionBias: true, sharedCount: 1, leadingDense: 1 },
    meta: {
      'rope.dimension_count': u32(8),
      expert_gating_func: u32(2),
      expert_weights_norm: { t: 'bool', v: true },
      expert_weights_scale: f32(2.5),
      expert_group_count: u32(4),
      expert_group_used_count: u32(2),
    },
  },
  // LFM2 (LFM2-350M … 2.6B): gated short convolutions of 3 taps in most layers, attention with per-head q/k norms in the
  // others (NeoX rotary), a tied head, the final norm named token_embd_norm.
  'lfm2 (LFM2: gated short convolutions around attention layers with q/k norms, a tied head)': LFM2,
  // LFM2-8B-A1B: LFM2's layers, two dense MLPs first, then experts with sigmoid scores and a selection bias, renormalized.
  'lfm2moe (LFM2-MoE: short convolutions, sigmoid routing with a selection bias, dense first layers)': {
    arch: 'lfm2moe',
    hidden: 64,
    layers: 4,
    heads: 4,
    kvHeads: 2,
    ff: 96,
    qkNorm: true,
    convLayers: { kernel: 3, layers: [0, 2, 3] },
    experts: { count: 8, used: 2, ff: 32, selectionBias: true, leadingDense: 2 },
    meta: { expert_gating_func: u32(2), expert_weights_norm: { t: 'bool', v: true } },
  },
  // Granite 4.0-H-micro: Mamba2 layers (inner size twice the hidden size, one group, 4 taps) around attention layers
  // without position encoding, Granite's multipliers, a dense MLP.
  'granitehybrid (Granite 4.0-H: Mamba2 mixers around attention without rotary, multipliers)': GRANITE_HYBRID,
  // Granite 4.0-H-tiny/small: the same with experts, renormalized, and an ungated shared expert; rotary where the file asks.
  'granitehybrid MoE (Granite 4.0-H-tiny: experts and a shared expert; two groups; rotary on)': {
    ...GRANITE_HYBRID,
    mambaLayers: { ...GRANITE_HYBRID.mambaLayers!, groups: 2 },
    experts: { count: 6, used: 2, shared: 48, ungatedShared: true },
    meta: { ...GRANITE_HYBRID.meta, 'rope.scaling.finetuned': { t: 'bool', v: true } },
  },
  // Qwen3.5 (0.8B … 9B): three gated DeltaNet layers (2 key heads tiled to 4 value heads) to one attention layer with an
  // output gate, per-head q/k norms and NeoX rotary over a quarter of each head (its M-RoPE sections), a tied head.
  'qwen35 (Qwen3.5: gated DeltaNet layers, gated attention with q/k norms and partial rotary)': QWEN35,
  // Qwen3.5-35B-A3B: the same hybrid block with experts of their own size and a shared expert under its sigmoid gate.
  'qwen35moe (Qwen3.5-MoE: gated DeltaNet layers, experts and a gated shared expert)': { ...QWEN35, arch: 'qwen35moe', experts: { count: 6, used: 2, ff: 32, shared: 48 } },
  // Qwen3-Next-80B-A3B: the same block before Qwen3.5, its DeltaNet projections fused per key head (`ssm_in`: q, k, v and z
  // of each key head's group of value heads; `ssm_ba`: their β and α), NeoX rotary over part of each head, always experts.
  'qwen3next (Qwen3-Next: gated DeltaNet layers with fused per-key-head projections, experts and a gated shared expert)': {
    ...QWEN35,
    arch: 'qwen3next',
    deltaLayers: { ...QWEN35.deltaLayers!, interleaved: true },
    experts: { count: 6, used: 2, ff: 32, shared: 48 },
    meta: { 'rope.dimension_count': u32(8) },
  },
  // Nemotron-H and Nemotron Nano 2: each layer one block under its norm, a Mamba2 mixer (two groups), an ungated ReLU² MLP
  // or attention without position encoding.
  'nemotron_h (Nemotron-H: single blocks of Mamba2, MLP or attention)': {
    arch: 'nemotron_h',
    hidden: 64,
    layers: 5,
    heads: 4,
    kvHeads: 2,
    ff: 96,
    untied: true,
    ungated: true,
    blockKinds: ['mamba', 'mlp', 'full', 'mamba', 'mlp'],
    mambaLayers: { layers: [0, 3], convKernel: 4, heads: 8, headDim: 16, stateSize: 16, groups: 2 },
    // (convert_hf_to_gguf's older files name the RMSNorms' epsilon as a LayerNorm's, which llama.cpp's loader then requires)
    meta: { 'attention.layer_norm_epsilon': f32(1e-6) },
  },
  // Falcon-H1 (0.5B … 34B): in every layer a Mamba2 mixer beside attention (NeoX rotary) on one norm, outputs summed.
  'falcon-h1 (Falcon-H1: a Mamba2 mixer beside attention in every layer)': {
    arch: 'falcon-h1',
    hidden: 64,
    layers: 3,
    heads: 4,
    kvHeads: 2,
    ff: 96,
    untied: true,
    parallelMamba: true,
    mambaLayers: { layers: [0, 1, 2], convKernel: 4, heads: 8, headDim: 16, stateSize: 16, groups: 1 },
  },
};

/** M-RoPE's `rope.dimension_sections`: rotary pairs per position kind (time, height, width, extra). */
function sections(counts: number[]): WValue {
  return { t: 'arr', item: GgufValueType.INT32, v: counts.map((v) => ({ t: 'i32', v }) as WValue) };
}

/** A Phi-3 with LongRoPE as convert_hf_to_gguf writes it (Phi-3-mini-128k, Phi-3.5): short and long divisors, an attention factor. */
function longRopePhi3(originalContext: number, ropeDims = 16): RandomGgufSpec {
  const divisors = (step: number) => Float32Array.from({ length: ropeDims / 2 }, (_, j) => 1 + j * step);
  return {
    arch: 'phi3',
    hidden: 64,
    layers: 2,
    heads: 4,
    kvHeads: 4,
    ff: 96,
    fusedQkv: true,
    fusedGateUp: true,
    untied: true,
    meta: { 'rope.scaling.original_context_length': u32(originalContext), 'rope.scaling.attn_factor': f32(1.4) },
    extraTensors: { 'rope_factors_short.weight': [[ropeDims / 2], divisors(0.5)], 'rope_factors_long.weight': [[ropeDims / 2], divisors(6)] },
  };
}

/** "Once upon a time" in the stories vocabulary, after BOS: a prompt longer than the sliding windows. */
const PROMPT = [1, 403, 407, 261, 378, 432, 383];
const STEPS = 24;

describe('gguf architectures (llama.cpp is the reference)', function () {
  this.timeout(120_000);
  let tmp: string;
  let tokenizer: Record<string, WValue>;
  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'reasonplug-gguf-arch-'));
    tokenizer = await storiesTokenizerMeta();
  });
  after(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  Object.entries(MODELS).forEach(([label, spec], index) => {
    it(`${label}: greedy tokens equal llama.cpp's, with attention in one kernel and op by op`, async () => {
      const path = join(tmp, `m${index}.gguf`);
      await writeRandomGguf(path, { seed: 100 + index, ...spec }, tokenizer);
      const { dir, manifest, config } = await convertExact(path, join(tmp, `m${index}`));
      expect(manifest.provenance.convertedFrom.architecture).to.equal(spec.arch);
      // attention is one GroupQueryAttention kernel per layer (its graphs are run right-padded) where the kernel takes the
      // head size, each query head has its own kv head and layers have sliding windows (whose op graph must join its
      // presents); elsewhere the op graph (left-padded), which returns new keys and values
      const headSize = spec.headDim ?? spec.hidden / spec.heads;
      const kernel = headSize % 8 === 0 && spec.kvHeads === spec.heads && (config.layerTypes?.includes('sliding') ?? false);
      expect(graphFacts(await readModel(join(dir, 'model.onnx'))).padding).to.equal(kernel ? 'right' : 'left');
      let first: Float32Array = new Float32Array(0);
      const ours = await ortGreedy(join(dir, 'model.onnx'), PROMPT, STEPS, (l) => (first = l));
      const theirs = await llamaCppGreedy(path, PROMPT, STEPS);
      // the distribution itself, not only its argmax (a scaled or capped logit moves the one, not the other)
      const max = Math.max(...first);
      const z = first.reduce((sum, l) => sum + Math.exp(l - max), 0);
      for (const [token, p] of await llamaCppNextProbabilities(path, PROMPT, 5)) {
        expect(Math.exp(first[token]! - max) / z, `probability of ${token}`).to.be.closeTo(p, 2e-3);
      }
      // llama.cpp's evaluation ends before an end-of-generation token ("</s>" = 2); ours runs on.
      if (theirs.length < STEPS) expect(ours[theirs.length], `ours ${ours}`).to.equal(2);
      // a degenerate model repeating one token would prove little
      expect(new Set(theirs).size, `llama.cpp's tokens ${theirs}`).to.be.greaterThan(3);
      expect(ours.slice(0, theirs.length)).to.deep.equal(theirs);
      // the same model in the other attention form gives the same tokens: op by op (attention, rotary and masks as
      // standard operators), or the kernel where the op graph is the default and the kernel takes the head size
      const other = kernel ? 'ops' : headSize % 8 === 0 ? 'gqa' : undefined;
      if (other) {
        const alt = await convertExact(path, join(tmp, `m${index}-${other}`), { attention: other });
        expect(graphFacts(await readModel(join(alt.dir, 'model.onnx'))).padding).to.equal(other === 'gqa' ? 'right' : 'left');
        expect((await ortGreedy(join(alt.dir, 'model.onnx'), PROMPT, STEPS)).slice(0, theirs.length)).to.deep.equal(theirs);
      }
    });
  });

  it("qwen3next in llama.cpp's newer layout (q, k, v apart from z as Qwen3.5's; β and α still fused per key head) converts to the same model as its older one", async () => {
    const spec = MODELS['qwen3next (Qwen3-Next: gated DeltaNet layers with fused per-key-head projections, experts and a gated shared expert)']!;
    const older = join(tmp, 'qwen3next-ssm-in.gguf');
    await writeRandomGguf(older, { seed: 61, ...spec }, tokenizer);
    const { keyHeads, keyDim, valueHeads, valueDim } = spec.deltaLayers!;
    const run = (valueHeads / keyHeads) * valueDim;
    const newer = join(tmp, 'qwen3next-qkv.gguf');
    // each key head's rows of ssm_in: q, k, its run of v, its run of z (written apart from the converter's reading)
    await rewriteGguf(older, newer, (_meta, tensors) => {
      for (const [name, t] of [...tensors]) {
        const m = /^(blk\.\d+\.)ssm_in\.weight$/.exec(name);
        if (!m) continue;
        const [cols] = t.dims as [number, number];
        const row = (g: number, at: number, n: number) => t.data.subarray((g * (2 * keyDim + 2 * run) + at) * cols, (g * (2 * keyDim + 2 * run) + at + n) * cols);
        const heads = (at: number, n: number) => Array.from({ length: keyHeads }, (_, g) => row(g, at, n));
        const stack = (parts: Float32Array[]) => Float32Array.from(parts.flatMap((part) => [...part]));
        const qkv = stack([...heads(0, keyDim), ...heads(keyDim, keyDim), ...heads(2 * keyDim, run)]);
        tensors.delete(name);
        tensors.set(`${m[1]}attn_qkv.weight`, { dims: [cols, qkv.length / cols], data: qkv, type: 0 });
        const z = stack(heads(2 * keyDim + run, run));
        tensors.set(`${m[1]}attn_gate.weight`, { dims: [cols, z.length / cols], data: z, type: 0 });
      }
    });
    const tokens: { ids: number[]; first: Float32Array }[] = [];
    for (const [path, name] of [[older, 'older'], [newer, 'newer']] as const) {
      let first: Float32Array = new Float32Array(0);
      const { dir } = await convertExact(path, join(tmp, `qwen3next-${name}`));
      tokens.push({ ids: await ortGreedy(join(dir, 'model.onnx'), PROMPT, STEPS, (l) => (first = l)), first });
    }
    expect(tokens[1]!.ids).to.deep.equal(tokens[0]!.ids);
    expect(Math.max(...tokens[1]!.first.map((v, i) => Math.abs(v - tokens[0]!.first[i]!)))).to.be.lessThan(1e-4);
    const theirs = await llamaCppGreedy(older, PROMPT, STEPS);
    expect(tokens[0]!.ids.slice(0, theirs.length), 'what llama.cpp gives the older file').to.deep.equal(theirs);
  });

  it('phi3 LongRoPE: a prompt longer than the original context, which the engine would prefill in shorter chunks, gives llama.cpp\'s tokens', async () => {
    // Chunks of 2 against an original context of 4: chunked, the prompt's first 4 keys would keep the short rotation.
    const path = join(tmp, 'long-prompt.gguf');
    await writeRandomGguf(path, { seed: 150, ...longRopePhi3(4) }, tokenizer);
    const theirs = await llamaCppGreedy(path, PROMPT, STEPS);
    expect(new Set(theirs).size, `llama.cpp's tokens ${theirs}`).to.be.greaterThan(3);
    for (const attention of ['gqa', 'ops'] as const) {
      const { dir } = await convertExact(path, join(tmp, `long-prompt-${attention}`), { attention });
      expect(graphFacts(await readModel(join(dir, 'model.onnx'))).longRopeContext).to.equal(4);
      const engine = await Engine.load({ model: dir, prefillChunk: 2 });
      try {
        const { rows } = await engine.generate({ promptIds: PROMPT }, { maxTokens: STEPS });
        expect(rows[0]!.ids.slice(0, theirs.length), attention).to.deep.equal(theirs);
      } finally {
        await engine.dispose();
      }
    }
  });

  it('phi3 LongRoPE: a prompt past the original context is not prefilled from a cached shorter one (its keys rotated with the short factors)', async () => {
    const path = join(tmp, 'long-prefix.gguf');
    await writeRandomGguf(path, { seed: 151, ...longRopePhi3(18) }, tokenizer);
    const short = [...PROMPT, ...PROMPT, 400, 401, 402]; // 17 tokens, within the original context: kept
    const long = [...short, ...PROMPT]; // 24, past it: runs whole, on the long factors
    const theirs = await llamaCppGreedy(path, long, STEPS);
    expect(new Set(theirs).size, `llama.cpp's tokens ${theirs}`).to.be.greaterThan(3);
    for (const attention of ['gqa', 'ops'] as const) {
      const { dir } = await convertExact(path, join(tmp, `long-prefix-${attention}`), { attention });
      const engine = await Engine.load({ model: dir });
      try {
        await engine.generate({ promptIds: short }, { maxTokens: 1 });
        expect((await engine.stats()).prefixCache.entries).to.equal(1);
        const { rows } = await engine.generate({ promptIds: long }, { maxTokens: STEPS });
        expect(rows[0]!.ids.slice(0, theirs.length), attention).to.deep.equal(theirs);
        expect((await engine.stats()).prefixCache.hitTokens).to.equal(0);
      } finally {
        await engine.dispose();
      }
    }
  });

  describe('refusals name the feature', () => {
    const cases: [string, Partial<RandomGgufSpec>, RegExp][] = [
      ['an unknown architecture', { arch: 'mamba' }, /"mamba".*"llama", "mistral3", "granite", "smollm3", "ernie4_5", "exaone", "exaone4", "qwen2", "qwen2vl"/],
      ['mixture of experts outside the MoE architectures read', { arch: 'qwen2', meta: { expert_count: u32(8), expert_used_count: u32(2) } }, /mixture-of-experts.*qwen2\.expert_count.*llama, granite, granitemoe, granitehybrid, qwen3moe, qwen3vlmoe, qwen2moe, olmoe, gpt-oss, glm4moe, ernie4_5-moe, deepseek2, bailingmoe2, qwen35moe, qwen3next, lfm2moe only/],
      ['expert weights scaled', { experts: { count: 4, used: 2 }, meta: { expert_weights_scale: f32(2.5) } }, /expert weights scaled by 2\.5/],
      ['an expert gating function other than softmax and sigmoid', { ...GLM4MOE, meta: { ...GLM4MOE.meta, expert_gating_func: u32(3) } }, /expert gating function 3 \("glm4moe\.expert_gating_func"; softmax and sigmoid only\)/],
      ['experts in every other layer (ERNIE 4.5)', { ...ERNIE_MOE, meta: { interleave_moe_layer_step: u32(2) } }, /experts in one layer of every 2 \("ernie4_5-moe\.interleave_moe_layer_step" = 2; 1 only\)/],
      ['expert groups that do not divide the experts', { ...DEEPSEEK2, meta: { ...DEEPSEEK2.meta, expert_group_count: u32(3), expert_group_used_count: u32(2) } }, /8 experts in 3 groups, 2 used.*must divide the experts/],
      ['an attention temperature with latent attention (Mistral Large 3)', { ...DEEPSEEK2, meta: { ...DEEPSEEK2.meta, 'attention.temperature_scale': f32(0.1) } }, /attention temperature.*with latent attention/],
      ["a GLM-4.5 file without its experts' selection bias (llama.cpp requires it)", { ...GLM4MOE, experts: { ...GLM4MOE.experts!, selectionBias: false } }, /no tensor "blk\.1\.exp_probs_b\.bias"/],
      ['as many multi-token-prediction blocks as blocks', { ...GLM4MOE, meta: { ...GLM4MOE.meta, nextn_predict_layers: u32(4) } }, /"glm4moe\.nextn_predict_layers" is 4, expected fewer than the 4 blocks/],
      ['more experts used than there are', { experts: { count: 4, used: 6 } }, /expert_used_count" is 6, more than the 4 experts/],
      ['an unknown rope scaling', { meta: { 'rope.scaling.type': str('dynamic'), 'rope.scaling.factor': f32(4) } }, /rope scaling "dynamic"/],
      ['yarn outside llama and qwen', { arch: 'gemma2', postNorms: true, meta: { 'rope.scaling.type': str('yarn'), 'rope.scaling.factor': f32(4) } }, /rope scaling "yarn" on gemma2/],
      ['long-rope factors outside phi3', { extraTensors: { 'rope_factors_long.weight': [[8], new Float32Array(8).fill(1)] } }, /does not use.*rope_factors_long\.weight/],
      ['partial rotary', { meta: { 'rope.dimension_count': u32(8) } }, /partial rotary; phi3, glm4, glm4moe, bailingmoe2, qwen35, qwen35moe, qwen3next, stablelm, nemotron, phi2 only/],
      ["Command R+'s q/k LayerNorms", { arch: 'command-r', parallel: true, qkNorm: true, meta: { 'attention.layer_norm_epsilon': f32(1e-5), logit_scale: f32(0.25) } }, /q\/k LayerNorms.*attn_q_norm/],
      ['a tensor it would drop', { extraTensors: { 'blk.0.attn_output.bias': [[64], new Float32Array(64)] } }, /blk\.0\.attn_output\.bias/],
      ['an output head on gemma2 (llama.cpp ties it)', { arch: 'gemma2', postNorms: true, untied: true }, /gemma2.*"output\.weight"/],
      ["LFM2's sliding window", { ...LFM2, meta: { 'attention.sliding_window': u32(16) } }, /lfm2.*a sliding window \("lfm2\.attention\.sliding_window" = 16\)/],
      [
        'LFM2 attention layers with different numbers of KV heads',
        { ...LFM2, meta: { 'attention.head_count_kv': { t: 'arr', item: GgufValueType.UINT32, v: [0, 2, 0, 4].map(u32) } } },
        /attention layers with different numbers of KV heads \(2, 4\)/,
      ],
      [
        'Qwen3.5 value heads that are no multiple of its key heads',
        { ...QWEN35, deltaLayers: { ...QWEN35.deltaLayers!, valueHeads: 3 } },
        /48 value channels in 3 heads over 2 key heads .* do not divide evenly/,
      ],
      ['an LFM2 without attention layers', { ...LFM2, meta: { 'attention.head_count_kv': { t: 'arr', item: GgufValueType.UINT32, v: [0, 0, 0, 0].map(u32) } } }, /attention layers with no KV heads: no attention layer/],
    ];
    for (const [what, edit, message] of cases) {
      it(`refuses ${what}`, async () => {
        const name = what.replace(/\W+/g, '-');
        const path = join(tmp, `${name}.gguf`);
        await writeRandomGguf(path, { arch: 'llama', hidden: 64, layers: 1, heads: 4, kvHeads: 4, ff: 32, ...edit }, tokenizer);
        const err = await convertExact(path, join(tmp, name)).catch((e: unknown) => e);
        expect(err).to.be.instanceOf(GgufError);
        expect((err as Error).message).to.match(message);
        expect(existsSync(join(tmp, name, 'reasonplug.json'))).to.equal(false);
      });
    }
  });
});
