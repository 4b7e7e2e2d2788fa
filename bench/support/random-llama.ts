/** The benches' random-weight Llama and Qwen2 GGUFs (bench:gguf and bench:serve measure the same models, so they write them one way). */
import { seededNormals } from '../../packages/core/src/onnx/random-weights.js';
import { bpeTokenizerMeta } from '../../packages/core/test/support/bpe-vocab.js';
import { GGML, quantizeGgml } from '../../packages/core/test/support/ggml-quantize.js';
import { f16Bits, makeGguf, type WTensor, type WValue } from '../../packages/core/test/support/gguf-writer.js';

/** A Llama's dimensions (GQA when kvHeads < heads; untied head), or a Qwen2's. */
export interface LlamaShape {
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  ff: number;
  vocab: number;
  /**
   * `qwen2`: q/k/v biases, a tied head (no output.weight), rope base 1e6 and a byte-level BPE vocabulary
   * (`tokenizer.ggml.pre` qwen2, no BOS) as Qwen2.5's GGUFs have; llama.cpp reads it with NeoX rope. Default `llama`.
   */
  arch?: 'llama' | 'qwen2' | 'qwen3moe' | 'gpt-oss' | 'deepseek2' | 'lfm2' | 'granitehybrid' | 'qwen35';
  /**
   * `qwen3moe`: q/k norms, and in place of each MLP `count` experts of inner size `ff`, `used` per token (the shape of
   * Qwen3-30B-A3B, scaled down), a SentencePiece vocabulary as the llama's. `gpt-oss`: the same experts with biases and
   * a biased router, biased q/k/v/o projections, a sink logit per head, a sliding window of 128 on even layers, rope
   * base 150000 (gpt-oss-20b's block, scaled down). `deepseek2`: latent attention (`latent`), the experts routed by a
   * softmax, two shared experts, the first layer dense (DeepSeek-V2-Lite's block, scaled down).
   */
  experts?: { count: number; used: number };
  /** deepseek2's latent attention: the latent, each head's rotary and no-rotary query/key parts, its value. */
  latent?: { kvLora: number; rope: number; nope: number; value: number };
  /**
   * The hybrids' attention layers (the others recurrent): `lfm2`'s short convolutions of 3 taps (q/k norms on the
   * attention layers, a tied head); `granitehybrid`'s Mamba2 mixers (inner size twice the hidden size in heads of 64, a
   * state of `stateSize`, one group, 4 taps; attention without rotary); `qwen35`'s gated DeltaNets (16 key and 16 value
   * heads of 128, 4 taps; attention with an output gate, q/k norms, heads of `headDim` rotated over a quarter).
   */
  hybrid?: { attention: number[]; stateSize?: number; headDim?: number };
}

/** A SentencePiece vocabulary of `vocab` pieces (specials, 256 byte pieces, then words) that llama.cpp and the converter accept. */
export function llamaTokenizerMeta(vocab: number): Record<string, WValue> {
  const tokens = ['<unk>', '<s>', '</s>'];
  for (let b = 0; b < 256; b++) tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
  while (tokens.length < vocab) tokens.push(`▁w${tokens.length}`);
  return {
    'tokenizer.ggml.model': { t: 'str', v: 'llama' },
    'tokenizer.ggml.tokens': { t: 'arr', item: 8, v: tokens.map((v) => ({ t: 'str', v })) },
    'tokenizer.ggml.scores': { t: 'arr', item: 6, v: tokens.map((_, i) => ({ t: 'f32', v: i < 259 ? 0 : -i })) },
    'tokenizer.ggml.token_type': { t: 'arr', item: 5, v: tokens.map((_, i) => ({ t: 'i32', v: i === 0 ? 2 : i < 3 ? 3 : i < 259 ? 6 : 1 })) },
    'tokenizer.ggml.bos_token_id': { t: 'u32', v: 1 },
    'tokenizer.ggml.eos_token_id': { t: 'u32', v: 2 },
    'tokenizer.ggml.unknown_token_id': { t: 'u32', v: 0 },
  };
}

/** F16 bits of `x` in a loop (Uint16Array.from with a mapper collects a JS array first: out of heap for a 136M-value embedding). */
function f16Bytes(x: Float32Array): Uint8Array {
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = f16Bits(x[i]!);
  return new Uint8Array(out.buffer);
}

/**
 * The GGUF bytes of a random Llama (or Qwen2) of `shape`: each tensor's values seeded by its position in a
 * fixed order, so files of different types hold the same model. Matrices are stored as `matrixType(name)` (F16
 * or a ggml quantized type), norms and biases as F32.
 */
export function randomLlamaGguf(shape: LlamaShape, name: string, matrixType: (tensor: string) => number): Buffer {
  const { hidden: h, layers, heads, kvHeads, ff, vocab } = shape;
  const arch = shape.arch ?? 'llama';
  const qwen = arch === 'qwen2';
  const kv = (h / heads) * kvHeads;
  const tensors: WTensor[] = [];
  let seed = 1;
  const matrix = (tensor: string, rows: number, cols: number, count = 1) => {
    const data = seededNormals(seed++)(rows * cols * count, 0.02);
    const type = matrixType(tensor);
    const bytes = type === GGML.F16 ? f16Bytes(data) : quantizeGgml(data, type);
    tensors.push({ name: tensor, dims: count === 1 ? [cols, rows] : [cols, rows, count], type, data: bytes });
  };
  const oss = arch === 'gpt-oss';
  const mla = arch === 'deepseek2' ? shape.latent : undefined;
  const moe = arch === 'qwen3moe' || oss || mla ? shape.experts : undefined;
  if ((arch === 'qwen3moe' || oss || arch === 'deepseek2') && !moe) throw new Error(`a ${arch} shape needs experts`);
  if (arch === 'deepseek2' && !mla) throw new Error('a deepseek2 shape needs its latent attention');
  const f32 = (tensor: string, dims: number[], data: Float32Array) => tensors.push({ name: tensor, dims, type: GGML.F32, data: new Uint8Array(data.buffer) });
  const lfm2 = arch === 'lfm2';
  const granite = arch === 'granitehybrid';
  const qwen35 = arch === 'qwen35';
  if ((lfm2 || granite || qwen35) && !shape.hybrid) throw new Error(`a ${arch} shape needs its attention layers (hybrid)`);
  const recurrent = (i: number) => (lfm2 || granite || qwen35) && !shape.hybrid!.attention.includes(i);
  const hd = shape.hybrid?.headDim ?? h / heads;
  const dnChannels = 2 * 16 * 128 + 16 * 128;
  const ssmHeads = (2 * h) / 64;
  const ssmState = shape.hybrid?.stateSize ?? 128;
  const vector = (tensor: string, n = h, mean = 1) =>
    tensors.push({ name: tensor, dims: [n], type: GGML.F32, data: new Uint8Array(seededNormals(seed++)(n, 0.05, mean).buffer) });
  matrix('token_embd.weight', vocab, h);
  // (LFM2's final norm under its own name)
  vector(lfm2 ? 'token_embd_norm.weight' : 'output_norm.weight');
  if (!qwen && !lfm2 && !qwen35) matrix('output.weight', vocab, h);
  for (let i = 0; i < layers; i++) {
    const p = `blk.${i}.`;
    vector(`${p}attn_norm.weight`);
    if (recurrent(i) && qwen35) {
      matrix(`${p}attn_qkv.weight`, dnChannels, h);
      matrix(`${p}attn_gate.weight`, 16 * 128, h);
      f32(`${p}ssm_conv1d.weight`, [4, dnChannels], seededNormals(seed++)(4 * dnChannels, 0.5));
      matrix(`${p}ssm_beta.weight`, 16, h);
      matrix(`${p}ssm_alpha.weight`, 16, h);
      f32(`${p}ssm_dt.bias`, [16], seededNormals(seed++)(16, 0.5, -2));
      f32(`${p}ssm_a`, [16], seededNormals(seed++)(16, 0.5, 0.5).map((v) => -Math.exp(v)));
      vector(`${p}ssm_norm.weight`, 128);
      matrix(`${p}ssm_out.weight`, h, 16 * 128);
    } else if (recurrent(i) && lfm2) {
      f32(`${p}shortconv.conv.weight`, [3, h], seededNormals(seed++)(3 * h, 0.5));
      matrix(`${p}shortconv.in_proj.weight`, 3 * h, h);
      matrix(`${p}shortconv.out_proj.weight`, h, h);
    } else if (recurrent(i)) {
      const channels = 2 * h + 2 * ssmState;
      matrix(`${p}ssm_in.weight`, 4 * h + 2 * ssmState + ssmHeads, h);
      f32(`${p}ssm_conv1d.weight`, [4, channels], seededNormals(seed++)(4 * channels, 0.5));
      f32(`${p}ssm_conv1d.bias`, [channels], seededNormals(seed++)(channels, 0.1));
      f32(`${p}ssm_dt.bias`, [ssmHeads], seededNormals(seed++)(ssmHeads, 0.5, -2));
      f32(`${p}ssm_a`, [1, ssmHeads], seededNormals(seed++)(ssmHeads, 0.5, 0.5).map((v) => -Math.exp(v)));
      f32(`${p}ssm_d`, [1, ssmHeads], seededNormals(seed++)(ssmHeads, 0.5, 1));
      f32(`${p}ssm_norm.weight`, [2 * h, 1], seededNormals(seed++)(2 * h, 0.05, 1));
      matrix(`${p}ssm_out.weight`, h, 2 * h);
    } else if (mla) {
      matrix(`${p}attn_q.weight`, heads * (mla.nope + mla.rope), h);
      matrix(`${p}attn_kv_a_mqa.weight`, mla.kvLora + mla.rope, h);
      vector(`${p}attn_kv_a_norm.weight`, mla.kvLora);
      matrix(`${p}attn_kv_b.weight`, heads * (mla.nope + mla.value), mla.kvLora);
    } else if (qwen35) {
      // each head's query, then its output gate
      matrix(`${p}attn_q.weight`, 2 * heads * hd, h);
      matrix(`${p}attn_k.weight`, kvHeads * hd, h);
      matrix(`${p}attn_v.weight`, kvHeads * hd, h);
    } else {
      matrix(`${p}attn_q.weight`, h, h);
      matrix(`${p}attn_k.weight`, kv, h);
      matrix(`${p}attn_v.weight`, kv, h);
    }
    if (qwen || oss) {
      vector(`${p}attn_q.bias`, h, 0);
      vector(`${p}attn_k.bias`, kv, 0);
      vector(`${p}attn_v.bias`, kv, 0);
    }
    if (!recurrent(i)) matrix(`${p}attn_output.weight`, h, mla ? heads * mla.value : qwen35 ? heads * hd : h);
    if ((lfm2 || qwen35) && !recurrent(i)) {
      vector(`${p}attn_q_norm.weight`, hd);
      vector(`${p}attn_k_norm.weight`, hd);
    }
    if (oss) {
      vector(`${p}attn_output.bias`, h, 0);
      vector(`${p}attn_sinks.weight`, heads, 0);
    } else if (moe && !mla) {
      vector(`${p}attn_q_norm.weight`, h / heads);
      vector(`${p}attn_k_norm.weight`, h / heads);
    }
    // (gpt-oss's norm before the experts has llama.cpp's name of a norm after attention)
    vector(oss || qwen35 ? `${p}post_attention_norm.weight` : `${p}ffn_norm.weight`);
    if (moe && !(mla && i === 0)) {
      // The router in F32, as llama-quantize leaves it; scores spread as a trained router's are.
      f32(`${p}ffn_gate_inp.weight`, [h, moe.count], seededNormals(seed++)(moe.count * h, 0.1));
      matrix(`${p}ffn_gate_exps.weight`, ff, h, moe.count);
      matrix(`${p}ffn_up_exps.weight`, ff, h, moe.count);
      matrix(`${p}ffn_down_exps.weight`, h, ff, moe.count);
      if (oss) {
        f32(`${p}ffn_gate_inp.bias`, [moe.count], seededNormals(seed++)(moe.count, 0.1));
        for (const [kind, n] of [['gate', ff], ['up', ff], ['down', h]] as const) f32(`${p}ffn_${kind}_exps.bias`, [n, moe.count], seededNormals(seed++)(n * moe.count, 0.02));
      }
      if (mla) {
        // two shared experts of the experts' size, as one MLP
        matrix(`${p}ffn_gate_shexp.weight`, 2 * ff, h);
        matrix(`${p}ffn_up_shexp.weight`, 2 * ff, h);
        matrix(`${p}ffn_down_shexp.weight`, h, 2 * ff);
      }
    } else if (mla) {
      // DeepSeek-V2-Lite's dense first layer, its MLP as wide as its shared experts
      matrix(`${p}ffn_gate.weight`, 2 * ff, h);
      matrix(`${p}ffn_up.weight`, 2 * ff, h);
      matrix(`${p}ffn_down.weight`, h, 2 * ff);
    } else {
      matrix(`${p}ffn_gate.weight`, ff, h);
      matrix(`${p}ffn_up.weight`, ff, h);
      matrix(`${p}ffn_down.weight`, h, ff);
    }
  }
  const u32 = (v: number): WValue => ({ t: 'u32', v });
  const meta: Record<string, WValue> = {
    'general.architecture': { t: 'str', v: arch },
    'general.name': { t: 'str', v: name },
    [`${arch}.context_length`]: u32(qwen ? 32768 : 2048),
    [`${arch}.embedding_length`]: u32(h),
    [`${arch}.block_count`]: u32(layers),
    [`${arch}.feed_forward_length`]: u32(mla ? 2 * ff : ff),
    [`${arch}.attention.head_count`]: u32(heads),
    ...(qwen35
      ? {
          'qwen35.attention.key_length': u32(hd),
          'qwen35.attention.value_length': u32(hd),
          'qwen35.ssm.conv_kernel': u32(4),
          'qwen35.ssm.inner_size': u32(16 * 128),
          'qwen35.ssm.state_size': u32(128),
          'qwen35.ssm.time_step_rank': u32(16),
          'qwen35.ssm.group_count': u32(16),
          'qwen35.full_attention_interval': u32(4),
          // M-RoPE's sections as Qwen3.5's files have them (llama.cpp requires them)
          'qwen35.rope.dimension_sections': { t: 'arr', item: 5, v: [11, 11, 10, 0].map((v): WValue => ({ t: 'i32', v })) },
        }
      : {}),
    [`${arch}.attention.head_count_kv`]:
      lfm2 || granite ? { t: 'arr', item: 4, v: Array.from({ length: layers }, (_, i) => u32(recurrent(i) ? 0 : kvHeads)) } : u32(kvHeads),
    ...(lfm2 ? { 'lfm2.shortconv.l_cache': u32(3) } : {}),
    ...(granite
      ? {
          'granitehybrid.ssm.conv_kernel': u32(4),
          'granitehybrid.ssm.inner_size': u32(2 * h),
          'granitehybrid.ssm.state_size': u32(ssmState),
          'granitehybrid.ssm.time_step_rank': u32(ssmHeads),
          'granitehybrid.ssm.group_count': u32(1),
          'granitehybrid.rope.scaling.finetuned': { t: 'bool', v: false },
        }
      : {}),
    [`${arch}.attention.layer_norm_rms_epsilon`]: { t: 'f32', v: qwen ? 1e-6 : 1e-5 },
    ...(qwen
      ? { 'qwen2.rope.freq_base': { t: 'f32', v: 1e6 }, ...bpeTokenizerMeta('qwen2', { vocabSize: vocab, addBos: false }) }
      : { [`${arch}.rope.dimension_count`]: u32(qwen35 ? hd / 4 : h / heads), ...llamaTokenizerMeta(vocab) }),
    ...(moe ? { [`${arch}.expert_count`]: u32(moe.count), [`${arch}.expert_used_count`]: u32(moe.used), [`${arch}.expert_feed_forward_length`]: u32(ff) } : {}),
    ...(oss ? { 'gpt-oss.attention.sliding_window': u32(128), 'gpt-oss.rope.freq_base': { t: 'f32', v: 150000 } } : {}),
    ...(mla
      ? {
          'deepseek2.attention.kv_lora_rank': u32(mla.kvLora),
          'deepseek2.attention.q_lora_rank': u32(0),
          'deepseek2.attention.key_length': u32(mla.nope + mla.rope),
          'deepseek2.attention.value_length': u32(mla.value),
          'deepseek2.rope.dimension_count': u32(mla.rope),
          'deepseek2.expert_shared_count': u32(2),
          'deepseek2.leading_dense_block_count': u32(1),
          'deepseek2.expert_weights_scale': { t: 'f32', v: 1 },
        }
      : {}),
  };
  return makeGguf(meta, tensors);
}
