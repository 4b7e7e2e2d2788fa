/**
 * The Llama ONNX builder against an independent plain-TypeScript forward pass (full recomputation, no KV
 * cache), run through real onnxruntime-node sessions.
 */
import { expect } from 'chai';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import {
  buildLlamaModel,
  llamaParameterCount,
  randomLlamaWeights,
  writeLlamaModel,
  type LlamaBuildOptions,
} from '../src/onnx/llama-builder.js';
import { float32ArrayToFloat16, float32ToFloat16 } from '../src/onnx/graph-builder.js';
import { decodeModel, encodeModel, onnx, type GraphProto, type NodeProto } from '../src/onnx/proto.js';
import type { LlamaConfig, LlamaLayerWeights, LlamaWeights, MoeWeights, QuantizedMatrix, WeightMatrix } from '../src/onnx/llama-spec.js';
import { quantizeMatrix } from '../src/onnx/quantize/quantize-matrix.js';
import { dequantizeMatrix, isQuantized } from '../src/onnx/quantized-matrix.js';

// ---------------------------------------------------------------- reference implementation (float64)

/** binary16 bits → number, written independently of the builder. */
function halfToNumber(h: number): number {
  const s = h >> 15 ? -1 : 1;
  const e = (h >> 10) & 31;
  const m = h & 1023;
  if (e === 0) return s * m * Math.pow(2, -24);
  if (e === 31) return m ? NaN : s * Infinity;
  return s * Math.pow(2, e - 15) * (1 + m / 1024);
}

interface Dims {
  V: number;
  H: number;
  heads: number;
  kv: number;
  D: number;
  I: number;
  theta: number;
  eps: number;
}
function dims(cfg: LlamaConfig): Dims {
  return {
    V: cfg.vocabSize,
    H: cfg.hiddenSize,
    heads: cfg.numHeads,
    // (latent attention's cache: one head of the rotary part and the latent)
    kv: cfg.mla ? 1 : (cfg.numKvHeads ?? cfg.numHeads),
    D: cfg.mla ? cfg.mla.ropeDim + cfg.mla.kvLoraRank : (cfg.headDim ?? cfg.hiddenSize / cfg.numHeads),
    I: cfg.intermediateSize,
    theta: cfg.ropeTheta ?? 10000,
    eps: cfg.rmsNormEps ?? 1e-5,
  };
}

/** y = W x with W in nn.Linear layout [out, in]. */
function linear(W: Float32Array, x: Float64Array, out: number): Float64Array {
  const inp = x.length;
  const y = new Float64Array(out);
  for (let o = 0; o < out; o++) {
    let acc = 0;
    for (let i = 0; i < inp; i++) acc += W[o * inp + i]! * x[i]!;
    y[o] = acc;
  }
  return y;
}

function rmsNorm(x: Float64Array, w: Float32Array, eps: number): Float64Array {
  let ss = 0;
  for (const v of x) ss += v * v;
  const r = 1 / Math.sqrt(ss / x.length + eps);
  return x.map((v, i) => v * r * w[i]!);
}

function rope(x: Float64Array, nHeads: number, D: number, pos: number, theta: number, style: 'half' | 'adjacent'): void {
  for (let h = 0; h < nHeads; h++) {
    for (let j = 0; j < D / 2; j++) {
      const ang = pos * Math.pow(theta, (-2 * j) / D);
      const [a, b] = style === 'half' ? [h * D + j, h * D + j + D / 2] : [h * D + 2 * j, h * D + 2 * j + 1];
      const xa = x[a]!;
      const xb = x[b]!;
      x[a] = xa * Math.cos(ang) - xb * Math.sin(ang);
      x[b] = xb * Math.cos(ang) + xa * Math.sin(ang);
    }
  }
}

/** Causal forward pass over one unpadded sequence of input rows; returns per-position logits and final hidden. */
function reference(cfg: LlamaConfig, w: LlamaWeights, rows: Float64Array[], positions = rows.map((_, i) => i)) {
  const d = dims(cfg);
  const style = cfg.ropeStyle ?? 'half';
  const rep = d.heads / d.kv;
  const S = rows.length;
  let h: Float64Array[] = rows.map((r) => Float64Array.from(r));
  for (const [layer, L] of w.layers.entries()) {
    if (cfg.layerTypes?.[layer] === 'mlp') {
      // a single block of the MLP alone (singleBlocks), under the layer's one norm
      h = h.map((x) => {
        const down = swiglu(L.wGate!, L.wUp!, L.wDown!, rmsNorm(x, L.attnNorm!, d.eps), L.wUp!.length / d.H, d.H);
        return x.map((v, i) => v + down[i]!);
      });
      continue;
    }
    // (a 'mamba-attention' layer: the mixer's outputs added to the attention's)
    const beside = cfg.layerTypes?.[layer] === 'mamba-attention' ? mambaOutputs(cfg, L, h) : undefined;
    if (!beside && (L.shortConv || L.mamba || L.deltaNet)) {
      h = L.shortConv ? shortConv(cfg, L, h) : L.mamba ? mambaMixer(cfg, L, h) : deltaNet(cfg, L, h);
      continue;
    }
    const gates: Float64Array[] = [];
    const qs: Float64Array[] = [];
    const ks: Float64Array[] = [];
    const vs: Float64Array[] = [];
    const latent = cfg.mla ? latentAttention(cfg, L, h.map((x) => rmsNorm(x, L.attnNorm!, d.eps)), positions) : undefined;
    for (let s = 0; !latent && s < S; s++) {
      const x = rmsNorm(h[s]!, L.attnNorm!, d.eps);
      // attentionGate: each head's query, then its gate
      const qFull = linear(L.wq!, x, d.heads * d.D * (cfg.attentionGate ? 2 : 1));
      const q = cfg.attentionGate ? Float64Array.from({ length: d.heads * d.D }, (_, j) => qFull[Math.floor(j / d.D) * 2 * d.D + (j % d.D)]!) : qFull;
      if (cfg.attentionGate) gates.push(Float64Array.from({ length: d.heads * d.D }, (_, j) => 1 / (1 + Math.exp(-qFull[Math.floor(j / d.D) * 2 * d.D + d.D + (j % d.D)]!))));
      const k = linear(L.wk!, x, d.kv * d.D);
      rope(q, d.heads, d.D, positions[s]!, d.theta, style);
      rope(k, d.kv, d.D, positions[s]!, d.theta, style);
      qs.push(q);
      ks.push(k);
      vs.push(linear(L.wv!, x, d.kv * d.D));
    }
    h = h.map((hs, s) => {
      const o = latent?.[s] ?? new Float64Array(d.heads * d.D);
      for (let hh = 0; !latent && hh < d.heads; hh++) {
        const g = Math.floor(hh / rep);
        const sc: number[] = [];
        for (let t = 0; t <= s; t++) {
          let dot = 0;
          for (let e = 0; e < d.D; e++) dot += qs[s]![hh * d.D + e]! * ks[t]![g * d.D + e]!;
          sc.push(dot / Math.sqrt(d.D));
        }
        // A sink logit (attentionSinks) counts in the softmax's normalization and carries no value.
        const sink = L.sinks ? L.sinks[hh]! : -Infinity;
        const m = Math.max(...sc, sink);
        const p = sc.map((v) => Math.exp(v - m));
        const z = p.reduce((a, b) => a + b, 0) + Math.exp(sink - m);
        for (let t = 0; t <= s; t++) for (let e = 0; e < d.D; e++) o[hh * d.D + e]! += (p[t]! / z) * vs[t]![g * d.D + e]!;
      }
      const attn = linear(L.wo!, gates[s] ? o.map((v, j) => v * gates[s]![j]!) : o, d.H).map((v, i) => v + (beside?.[s]![i] ?? 0));
      return mlpBlock(cfg, L, hs.map((v, i) => v + attn[i]!));
    });
  }
  const hidden = h.map((x) => rmsNorm(x, w.finalNorm, d.eps));
  const head = cfg.tieWordEmbeddings ? w.embed : w.lmHead!;
  return { hidden, logits: hidden.map((x) => linear(head, x, d.V)) };
}

/** A norm, then the MLP, added to the residual stream: the second half of every layer (none in a single block's mixer layer). */
function mlpBlock(cfg: LlamaConfig, L: LlamaLayerWeights, h1: Float64Array): Float64Array {
  if (cfg.singleBlocks) return h1;
  const y = rmsNorm(h1, L.mlpNorm!, cfg.rmsNormEps ?? 1e-5);
  const down = L.moe ? experts(cfg, L.moe, y) : swiglu(L.wGate!, L.wUp!, L.wDown!, y, L.wUp!.length / cfg.hiddenSize, cfg.hiddenSize);
  return h1.map((v, i) => v + down[i]!);
}

/**
 * A 'conv' layer as LFM2's reference computes it: b, c, x = in_proj(norm(h)); each channel of b·x convolved causally
 * over the last `convKernel` positions (zeros before the first), times c, through out_proj; then the MLP.
 */
function shortConv(cfg: LlamaConfig, L: LlamaLayerWeights, h: Float64Array[]): Float64Array[] {
  const H = cfg.hiddenSize;
  const K = cfg.convKernel!;
  const m = L.shortConv!;
  const bcx = h.map((x) => linear(m.inProj, rmsNorm(x, L.attnNorm!, cfg.rmsNormEps ?? 1e-5), 3 * H));
  const bx = bcx.map((v) => Float64Array.from({ length: H }, (_, ch) => v[ch]! * v[2 * H + ch]!));
  return h.map((hs, s) => {
    const y = new Float64Array(H);
    for (let ch = 0; ch < H; ch++) {
      let acc = 0;
      for (let k = 0; k < K; k++) {
        const t = s - (K - 1) + k;
        if (t >= 0) acc += m.kernel[ch * K + k]! * bx[t]![ch]!;
      }
      y[ch] = bcx[s]![H + ch]! * acc;
    }
    const out = linear(m.outProj, y, H);
    return mlpBlock(cfg, L, hs.map((v, i) => v + out[i]!));
  });
}

/**
 * A 'delta' layer as the gated DeltaNet's recurrent form computes it, token by token: q, k, v = conv(qkv(norm(h)))
 * through SiLU; q and k L2-normalized per key head (q / √Dk), value head j reading key head j mod Hk (grouped heads:
 * ⌊j / (Hv / Hk)⌋); each value head's
 * state S ← e^g S, then S += β (v − S k) kᵀ, output S q; RMS-normalized per head times SiLU(z), through out_proj; the MLP.
 */
function deltaNet(cfg: LlamaConfig, L: LlamaLayerWeights, h: Float64Array[]): Float64Array[] {
  const { keyHeads: Hk, keyDim: Dk, valueHeads: Hv, valueDim: Dv, convKernel: K } = cfg.deltaNet!;
  const H = cfg.hiddenSize;
  const C = 2 * Hk * Dk + Hv * Dv;
  const eps = cfg.rmsNormEps ?? 1e-5;
  const m = L.deltaNet!;
  const silu = (v: number) => v / (1 + Math.exp(-v));
  const xs = h.map((x) => rmsNorm(x, L.attnNorm!, eps));
  const mixed = xs.map((x) => linear(m.qkv, x, C));
  const state = new Float64Array(Hv * Dv * Dk);
  return h.map((hs, s) => {
    const conv = Float64Array.from({ length: C }, (_, ch) => {
      let acc = 0;
      for (let k = 0; k < K; k++) {
        const t = s - (K - 1) + k;
        if (t >= 0) acc += m.convKernel[ch * K + k]! * mixed[t]![ch]!;
      }
      return silu(acc);
    });
    const l2 = (from: number, head: number, scale: number) => {
      const part = conv.subarray(from + head * Dk, from + (head + 1) * Dk);
      const norm = Math.max(Math.sqrt(part.reduce((a, v) => a + v * v, 0)), eps);
      return part.map((v) => (v / norm) * scale);
    };
    const beta = linear(m.beta, xs[s]!, Hv).map((v) => 1 / (1 + Math.exp(-v)));
    const alpha = linear(m.alpha, xs[s]!, Hv);
    const z = linear(m.gate, xs[s]!, Hv * Dv);
    const out = new Float64Array(Hv * Dv);
    for (let j = 0; j < Hv; j++) {
      const keyHead = cfg.deltaNet!.groupedHeads ? Math.floor(j / (Hv / Hk)) : j % Hk;
      const q = l2(0, keyHead, 1 / Math.sqrt(Dk));
      const k = l2(Hk * Dk, keyHead, 1);
      const v = conv.subarray(2 * Hk * Dk + j * Dv, 2 * Hk * Dk + (j + 1) * Dv);
      const raw = alpha[j]! + m.dtBias[j]!;
      const decay = Math.exp(m.a[j]! * (raw > 20 ? raw : Math.log1p(Math.exp(raw))));
      const S = state.subarray(j * Dv * Dk, (j + 1) * Dv * Dk);
      for (let i = 0; i < S.length; i++) S[i]! *= decay;
      const o = new Float64Array(Dv);
      for (let dv = 0; dv < Dv; dv++) {
        let recall = 0;
        for (let dk = 0; dk < Dk; dk++) recall += S[dv * Dk + dk]! * k[dk]!;
        const d = beta[j]! * (v[dv]! - recall);
        for (let dk = 0; dk < Dk; dk++) S[dv * Dk + dk]! += d * k[dk]!;
        for (let dk = 0; dk < Dk; dk++) o[dv]! += S[dv * Dk + dk]! * q[dk]!;
      }
      const normed = rmsNorm(o, m.norm, eps);
      for (let dv = 0; dv < Dv; dv++) out[j * Dv + dv] = normed[dv]! * silu(z[j * Dv + dv]!);
    }
    const y = linear(m.outProj, out, H);
    return mlpBlock(cfg, L, hs.map((v, i) => v + y[i]!));
  });
}

/**
 * A 'mamba' layer as Mamba2's reference computes it, token by token: z, x·B·C and dt = in_proj(norm(h)); x, B and C
 * convolved causally (with the bias) and through SiLU; each head's state h ← e^(dt·A) h + dt · x ⊗ B, y = C · h + D x;
 * y · silu(z) RMS-normalized per group, through out_proj; then the MLP.
 */
function mambaMixer(cfg: LlamaConfig, L: LlamaLayerWeights, h: Float64Array[]): Float64Array[] {
  const outs = mambaOutputs(cfg, L, h);
  return h.map((hs, s) => mlpBlock(cfg, L, hs.map((v, i) => v + outs[s]![i]!)));
}

/** A Mamba2 mixer's outputs per position (before the residual), as mambaMixer describes it. */
function mambaOutputs(cfg: LlamaConfig, L: LlamaLayerWeights, h: Float64Array[]): Float64Array[] {
  const { heads, headDim: P, stateSize: N, groups: G, convKernel: K } = cfg.mamba!;
  const H = cfg.hiddenSize;
  const I = heads * P;
  const channels = I + 2 * G * N;
  const eps = cfg.rmsNormEps ?? 1e-5;
  const m = L.mamba!;
  const silu = (v: number) => v / (1 + Math.exp(-v));
  const proj = h.map((x) => linear(m.inProj, rmsNorm(x, L.attnNorm!, eps), 2 * I + 2 * G * N + heads));
  const conv = proj.map((_, s) =>
    Float64Array.from({ length: channels }, (_, ch) => {
      let acc = m.convBias?.[ch] ?? 0;
      for (let k = 0; k < K; k++) {
        const t = s - (K - 1) + k;
        if (t >= 0) acc += m.convKernel[ch * K + k]! * proj[t]![I + ch]!;
      }
      return silu(acc);
    }),
  );
  const state = new Float64Array(heads * P * N);
  return h.map((_, s) => {
    const xbc = conv[s]!;
    const y = new Float64Array(I);
    for (let hh = 0; hh < heads; hh++) {
      const raw = proj[s]![2 * I + 2 * G * N + hh]! + m.dtBias[hh]!;
      const dt = raw > 20 ? raw : Math.log1p(Math.exp(raw));
      const decay = Math.exp(dt * m.a[hh]!);
      const g = Math.floor(hh / (heads / G));
      for (let p = 0; p < P; p++) {
        const x = xbc[hh * P + p]!;
        let acc = 0;
        for (let n = 0; n < N; n++) {
          const at = (hh * P + p) * N + n;
          state[at] = state[at]! * decay + xbc[I + g * N + n]! * x * dt;
          acc += state[at]! * xbc[I + G * N + g * N + n]!;
        }
        y[hh * P + p] = acc + m.d[hh]! * x;
      }
    }
    const gated = y.map((v, j) => v * silu(proj[s]![j]!));
    const per = I / G;
    const normed = new Float64Array(I);
    for (let g = 0; g < G; g++) {
      const part = gated.subarray(g * per, (g + 1) * per);
      normed.set(m.norm ? rmsNorm(part, m.norm.subarray(g * per, (g + 1) * per), eps) : part, g * per);
    }
    return linear(m.outProj, normed, H);
  });
}

/**
 * Latent attention (LlamaConfig.mla) decompressed, as transformers' DeepSeek-V2 computes it: each head's key is its
 * no-rotary part (kB's transpose times the normalized latent) and the shared rotary part, its value vB times the latent;
 * the outputs per position, before the output projection.
 */
function latentAttention(cfg: LlamaConfig, L: LlamaLayerWeights, xs: Float64Array[], positions: number[]): Float64Array[] {
  const { kvLoraRank: Lr, ropeDim: R, valueDim: V, qLoraRank } = cfg.mla!;
  const heads = cfg.numHeads;
  const qHead = cfg.headDim ?? cfg.hiddenSize / heads;
  const N = qHead - R;
  const eps = cfg.rmsNormEps ?? 1e-5;
  const [theta, style] = [cfg.ropeTheta ?? 10000, cfg.ropeStyle ?? 'half'];
  const m = L.mla!;
  const rows = xs.map((x, s) => {
    const q = qLoraRank ? linear(m.qB!, rmsNorm(linear(m.qA!, x, qLoraRank), m.qANorm!, eps), heads * qHead) : linear(L.wq!, x, heads * qHead);
    const qNope = new Float64Array(heads * N);
    const qPe = new Float64Array(heads * R);
    for (let h = 0; h < heads; h++) {
      qNope.set(q.subarray(h * qHead, h * qHead + N), h * N);
      qPe.set(q.subarray(h * qHead + N, (h + 1) * qHead), h * R);
    }
    rope(qPe, heads, R, positions[s]!, theta, style);
    const kv = linear(m.kvA, x, Lr + R);
    const c = rmsNorm(kv.slice(0, Lr), m.kvANorm, eps);
    const kPe = kv.slice(Lr);
    rope(kPe, 1, R, positions[s]!, theta, style);
    const kNope = new Float64Array(heads * N);
    const v = new Float64Array(heads * V);
    for (let h = 0; h < heads; h++) {
      for (let l = 0; l < Lr; l++) {
        for (let n = 0; n < N; n++) kNope[h * N + n]! += m.kB[(h * Lr + l) * N + n]! * c[l]!;
        for (let j = 0; j < V; j++) v[h * V + j]! += m.vB[(h * V + j) * Lr + l]! * c[l]!;
      }
    }
    return { qNope, qPe, kNope, kPe, v };
  });
  const scale = cfg.queryScale ?? 1 / Math.sqrt(qHead);
  return rows.map((r, s) => {
    const o = new Float64Array(heads * V);
    for (let h = 0; h < heads; h++) {
      const sc = rows.slice(0, s + 1).map((t) => {
        let dot = 0;
        for (let n = 0; n < N; n++) dot += r.qNope[h * N + n]! * t.kNope[h * N + n]!;
        for (let j = 0; j < R; j++) dot += r.qPe[h * R + j]! * t.kPe[j]!;
        return dot * scale;
      });
      const top = Math.max(...sc);
      const p = sc.map((x) => Math.exp(x - top));
      const z = p.reduce((a, b) => a + b, 0);
      p.forEach((pt, t) => {
        for (let j = 0; j < V; j++) o[h * V + j]! += (pt / z) * rows[t]!.v[h * V + j]!;
      });
    }
    return o;
  });
}

/**
 * A SiLU-gated MLP of inner size `I`; with `act`, gpt-oss's variant `g · σ(alpha · g) · (u + beta)`, g and u clamped by
 * `limit` (as its reference code: the gate from above, up both ways), and with `bias`, biases on the three projections.
 */
function swiglu(
  wGate: Float32Array,
  wUp: Float32Array,
  wDown: Float32Array,
  y: Float64Array,
  I: number,
  H: number,
  act: { alpha: number; beta: number; limit?: number } = { alpha: 1, beta: 0 },
  bias?: { gate: Float32Array; up: Float32Array; down: Float32Array },
  int8Block?: number,
): Float64Array {
  const lim = act.limit ?? Infinity;
  const x = int8Block ? int8Blocks(y, int8Block) : y;
  const gate = linear(wGate, x, I).map((v, i) => Math.min(v + (bias?.gate[i] ?? 0), lim));
  const up = linear(wUp, x, I).map((v, i) => Math.max(-lim, Math.min(lim, v + (bias?.up[i] ?? 0))));
  const activated = gate.map((gv, i) => (gv / (1 + Math.exp(-act.alpha * gv))) * (up[i]! + act.beta));
  const out = linear(wDown, int8Block ? int8Blocks(activated, int8Block) : activated, H);
  return bias ? out.map((v, i) => v + bias.down[i]!) : out;
}

/**
 * `x` as int8 codes per block of `block` values (scale: the block's largest magnitude over 127), as onnxruntime's
 * quantized kernels take their input with int8 activations (QMoE's 8-bit experts, MatMulNBits at accuracy level 4).
 */
function int8Blocks(x: Float64Array, block: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let b = 0; b < x.length; b += block) {
    let amax = 0;
    for (let i = b; i < Math.min(x.length, b + block); i++) amax = Math.max(amax, Math.abs(x[i]!));
    const scale = Math.fround(amax / 127);
    for (let i = b; i < Math.min(x.length, b + block); i++) out[i] = scale === 0 ? 0 : Math.round(x[i]! / scale) * scale;
  }
  return out;
}

/**
 * A mixture of experts as transformers' Mixtral, Qwen2-MoE and DeepSeek-V3 blocks compute it (softmax or sigmoid
 * scores, top k by the scores plus any selection bias, optional renormalization, a scale, a shared expert).
 */
function experts(cfg: LlamaConfig, m: MoeWeights, y: Float64Array): Float64Array {
  const { experts: E, used, normalize, sharedSize, swiglu: act, gating, scale, groups } = cfg.moe!;
  const H = cfg.hiddenSize;
  const I = cfg.intermediateSize;
  const scores = linear(m.router, y, E).map((v, e) => v + (m.biases?.router[e] ?? 0));
  const top = Math.max(...scores);
  const z = scores.reduce((a, v) => a + Math.exp(v - top), 0);
  const p = scores.map((v) => (gating === 'sigmoid' ? 1 / (1 + Math.exp(-v)) : Math.exp(v - top) / z));
  const choice = p.map((v, e) => v + (m.selectionBias?.[e] ?? 0));
  if (groups) {
    // DeepSeek-V3's group-limited choice: groups scored by their best two, experts outside the best groups left out
    const per = E / groups.count;
    const score = (g: number) => choice.slice(g * per, (g + 1) * per).sort((a, b) => b - a).slice(0, 2).reduce((a, b) => a + b, 0);
    const best = [...Array(groups.count).keys()].sort((a, b) => score(b) - score(a)).slice(0, groups.used);
    choice.forEach((_, e) => !best.includes(Math.floor(e / per)) && (choice[e] = -Infinity));
  }
  const chosen = [...p.keys()].sort((a, b) => choice[b]! - choice[a]!).slice(0, used);
  const total = chosen.reduce((a, e) => a + p[e]!, 0);
  const out = new Float64Array(H);
  for (const e of chosen) {
    const weight = (p[e]! / (normalize ? Math.max(total, 6.103515625e-5) : 1)) * (scale ?? 1);
    const at = (a: Float32Array | QuantizedMatrix, n: number) => (isQuantized(a) ? dequantizeMatrix(a) : a).subarray(e * n, (e + 1) * n);
    const b = m.biases;
    const bias = b && { gate: b.gate.subarray(e * I, (e + 1) * I), up: b.up.subarray(e * I, (e + 1) * I), down: b.down.subarray(e * H, (e + 1) * H) };
    // onnxruntime runs quantized experts with int8 activations (8-bit ones always; 4-bit ones at accuracy level 4, the builder's default)
    const int8Block = isQuantized(m.gate) ? m.gate.blockSize : undefined;
    swiglu(at(m.gate, I * H), at(m.up, I * H), at(m.down, H * I), y, I, H, act, bias, int8Block).forEach((v, i) => (out[i]! += weight * v));
  }
  if (m.shared && sharedSize) {
    const gate = m.shared.router ? 1 / (1 + Math.exp(-linear(m.shared.router, y, 1)[0]!)) : 1;
    swiglu(m.shared.gate, m.shared.up, m.shared.down, y, sharedSize, H).forEach((v, i) => (out[i]! += gate * v));
  }
  return out;
}

function embedRows(cfg: LlamaConfig, w: LlamaWeights, ids: number[]): Float64Array[] {
  const H = cfg.hiddenSize;
  return ids.map((id) => Float64Array.from(w.embed.subarray(id * H, (id + 1) * H)));
}

/** Every array in `o` (and in the objects it holds) through `r`. */
function roundAll(o: object, r: (a: Float32Array) => Float32Array): object {
  return Object.fromEntries(Object.entries(o).map(([k, v]) => [k, v instanceof Float32Array ? r(v) : roundAll(v as object, r)]));
}

/** The weights as the fp16 model stores them (each value rounded to binary16). */
function roundWeights(w: LlamaWeights): LlamaWeights {
  const r = (a: Float32Array) => Float32Array.from(float32ArrayToFloat16(a), halfToNumber);
  return {
    embed: r(w.embed),
    finalNorm: r(w.finalNorm),
    ...(w.lmHead ? { lmHead: r(w.lmHead) } : {}),
    layers: w.layers.map((l) => roundAll(l, r) as typeof l),
  };
}

// ---------------------------------------------------------------- driving the ONNX model

interface Runner {
  session: ort.InferenceSession;
  cfg: LlamaConfig;
  opts: LlamaBuildOptions;
}

async function runner(cfg: LlamaConfig, w: LlamaWeights<WeightMatrix>, opts: LlamaBuildOptions = {}): Promise<Runner> {
  const session = await ort.InferenceSession.create(encodeModel(buildLlamaModel(cfg, w, opts)));
  return { session, cfg, opts };
}

function floatTensor(opts: LlamaBuildOptions, data: Float32Array, shape: number[]): ort.Tensor {
  return opts.dtype === 'float16' ? new ort.Tensor('float16', float32ArrayToFloat16(data), shape) : new ort.Tensor('float32', data, shape);
}

function idsTensor(opts: LlamaBuildOptions, rows: number[][], width: number): ort.Tensor {
  const flat = rows.flat();
  const shape = [rows.length, width];
  return opts.idsType === 'int32' ? new ort.Tensor('int32', Int32Array.from(flat), shape) : new ort.Tensor('int64', BigInt64Array.from(flat, BigInt), shape);
}

function toNumbers(t: ort.Tensor): Float64Array {
  if (t.type === 'float16') return Float64Array.from(t.data as Uint16Array, halfToNumber);
  return Float64Array.from(t.data as Float32Array);
}

/** [b][s] → vector of the last dimension. */
function unflatten(t: ort.Tensor): Float64Array[][] {
  const [B, S, V] = t.dims as number[];
  const all = toNumbers(t);
  return Array.from({ length: B! }, (_, b) => Array.from({ length: S! }, (_, s) => all.subarray((b * S! + s) * V!, (b * S! + s + 1) * V!)));
}

interface Step {
  ids: number[][];
  mask: number[][];
  /** Explicit position ids; by default cumsum(mask) - 1 clipped at 0, last columns. */
  positions?: number[][];
  /**
   * Per-layer [key, value] ('conv' layers: [state, state]; 'mamba' layers: [convolution state, SSM state];
   * 'mamba-attention' layers: [key, value, convolution state, SSM state]); empty past (zero states) by default.
   */
  past?: ort.Tensor[][];
  /** inputs_embeds rows [B][E] (each of hidden size); empty by default. */
  embeds?: Float32Array[][];
  numLogits?: number;
}

async function run(r: Runner, step: Step) {
  const { cfg, opts } = r;
  const d = dims(cfg);
  const B = step.mask.length;
  const idsLen = step.ids[0]!.length;
  const E = step.embeds?.[0]?.length ?? 0;
  const S = idsLen + E;
  const feeds: Record<string, ort.Tensor> = {
    input_ids: idsTensor(opts, step.ids, idsLen),
    attention_mask: idsTensor(opts, step.mask, step.mask[0]!.length),
  };
  if (opts.positionIds !== false) {
    const positions =
      step.positions ??
      step.mask.map((m) => {
        let c = 0;
        return m.map((v) => Math.max((c += v) - 1, 0)).slice(m.length - S);
      });
    feeds.position_ids = idsTensor(opts, positions, S);
  }
  const K = cfg.convKernel ?? 0;
  for (let i = 0; i < cfg.numLayers; i++) {
    if (cfg.layerTypes?.[i] === 'mlp') continue;
    if (cfg.layerTypes?.[i] === 'conv') {
      feeds[`past_conv.${i}`] = step.past?.[i]?.[0] ?? floatTensor(opts, new Float32Array(B * d.H * (K - 1)), [B, K - 1, d.H]);
      continue;
    }
    if (cfg.layerTypes?.[i] === 'delta') {
      const { keyHeads, keyDim, valueHeads, valueDim, convKernel } = cfg.deltaNet!;
      const channels = 2 * keyHeads * keyDim + valueHeads * valueDim;
      feeds[`past_conv.${i}`] = step.past?.[i]?.[0] ?? floatTensor(opts, new Float32Array(B * channels * (convKernel - 1)), [B, convKernel - 1, channels]);
      feeds[`past_recurrent.${i}`] = step.past?.[i]?.[1] ?? new ort.Tensor('float32', new Float32Array(B * valueHeads * valueDim * keyDim), [B, valueHeads, valueDim, keyDim]);
      continue;
    }
    const beside = cfg.layerTypes?.[i] === 'mamba-attention';
    if (cfg.layerTypes?.[i] === 'mamba' || beside) {
      const { heads, headDim, stateSize, groups, convKernel } = cfg.mamba!;
      const channels = heads * headDim + 2 * groups * stateSize;
      const at = beside ? 2 : 0;
      feeds[`past_conv.${i}`] = step.past?.[i]?.[at] ?? floatTensor(opts, new Float32Array(B * channels * (convKernel - 1)), [B, convKernel - 1, channels]);
      feeds[`past_ssm.${i}`] = step.past?.[i]?.[at + 1] ?? new ort.Tensor('float32', new Float32Array(B * heads * headDim * stateSize), [B, heads, headDim, stateSize]);
      if (!beside) continue;
    }
    const empty = () => floatTensor(opts.kvDtype === 'float16' ? { dtype: 'float16' } : opts, new Float32Array(0), [B, d.kv, 0, d.D]);
    feeds[`past_key_values.${i}.key`] = step.past?.[i]?.[0] ?? empty();
    feeds[`past_key_values.${i}.value`] = step.past?.[i]?.[1] ?? empty();
  }
  if (opts.mergedDecoder) feeds.use_cache_branch = new ort.Tensor('bool', Uint8Array.from([step.past ? 1 : 0]), [1]);
  if (opts.numLogitsToKeep) feeds.num_logits_to_keep = new ort.Tensor('int64', BigInt64Array.from([BigInt(step.numLogits ?? 0)]), []);
  if (opts.inputsEmbeds) {
    const flat = new Float32Array(B * E * d.H);
    step.embeds?.forEach((row, b) => row.forEach((v, e) => flat.set(v, (b * E + e) * d.H)));
    feeds.inputs_embeds = floatTensor(opts, flat, [B, E, d.H]);
  }
  const out = await r.session.run(feeds);
  const present: ort.Tensor[][] = [];
  for (let i = 0; i < cfg.numLayers; i++) {
    // (an 'mlp' layer keeps no cache)
    if (cfg.layerTypes?.[i] === 'mlp') {
      present.push(undefined as never);
      continue;
    }
    const conv = out[`present_conv.${i}`];
    if (cfg.layerTypes?.[i] === 'mamba-attention') present.push([out[`present.${i}.key`]!, out[`present.${i}.value`]!, conv!, out[`present_ssm.${i}`]!]);
    else present.push(conv ? [conv, out[`present_ssm.${i}`] ?? out[`present_recurrent.${i}`] ?? conv] : [out[`present.${i}.key`]!, out[`present.${i}.value`]!]);
  }
  return {
    out,
    logits: unflatten(out.logits!),
    present,
    hidden: out.last_hidden_state ? unflatten(out.last_hidden_state) : undefined,
  };
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).to.equal(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

function expectClose(a: ArrayLike<number>, b: ArrayLike<number>, tol: number, what: string): void {
  const diff = maxAbsDiff(a, b);
  expect(diff, `${what}: max |diff| = ${diff}`).to.be.at.most(tol);
}

// ---------------------------------------------------------------- tests

const base: LlamaConfig = { vocabSize: 64, hiddenSize: 16, numLayers: 2, numHeads: 4, intermediateSize: 40 };
const SCALE = 0.25; // larger than the 0.02 default so attention and logits are far from uniform
/** Tolerance of the one comparison of a quantized-experts case that an int8 rounding tie may put off (see the test). */
const TIE_TOLERANCE = 0.1;

/** Experts quantized for QMoE: `bits`, `blockSize`, and zero points (else symmetric; `gate`: the gate's only). */
type ExpertQuantization = { bits: 4 | 8; blockSize: number; zeroPoints: boolean | 'gate' };

/** The weights with each layer's experts quantized as `q` (the reference dequantizes them). */
function withQuantizedExperts(cfg: LlamaConfig, w: LlamaWeights, q: ExpertQuantization): LlamaWeights<WeightMatrix> {
  const quantize = (m: Float32Array | QuantizedMatrix, cols: number, zeroPoints: boolean): QuantizedMatrix => {
    const x = quantizeMatrix(m as Float32Array, (m as Float32Array).length / cols, cols, q.bits, q.blockSize);
    return zeroPoints ? x : { ...x, zeroPoints: undefined };
  };
  const { hiddenSize: h, intermediateSize: inter } = cfg;
  const all = q.zeroPoints === true;
  return {
    ...w,
    layers: w.layers.map((l) =>
      l.moe ? { ...l, moe: { ...l.moe, gate: quantize(l.moe.gate, h, q.zeroPoints !== false), up: quantize(l.moe.up, h, all), down: quantize(l.moe.down, inter, all) } } : l,
    ),
  };
}

/** A builder case: the config, build options, tolerance, quantized experts, and an edit of the random weights. */
const cases: { title: string; cfg: LlamaConfig; opts: LlamaBuildOptions; tol: number; experts?: ExpertQuantization; edit?: (w: LlamaWeights) => void }[] = [
  { title: 'fp32, half rope, MHA, separate head', cfg: { ...base }, opts: {}, tol: 1e-4 },
  {
    title: 'fp32, adjacent rope, GQA 4/2, tied head',
    cfg: { ...base, numKvHeads: 2, ropeStyle: 'adjacent', tieWordEmbeddings: true, hiddenSize: 32, headDim: 6 },
    opts: {},
    tol: 1e-4,
  },
  {
    title: 'fp32, MQA 4/1, int32 ids, no position_ids, theta 500000',
    cfg: { ...base, numKvHeads: 1, ropeTheta: 500000, rmsNormEps: 1e-6 },
    opts: { idsType: 'int32', positionIds: false },
    tol: 1e-4,
  },
  {
    title: 'fp16, adjacent rope, GQA 4/2, separate head',
    cfg: { ...base, numKvHeads: 2, ropeStyle: 'adjacent' },
    opts: { dtype: 'float16' },
    tol: 1e-2,
  },
  {
    title: 'fp16, half rope, tied head, merged decoder',
    cfg: { ...base, tieWordEmbeddings: true },
    opts: { dtype: 'float16', mergedDecoder: true },
    tol: 1e-2,
  },
  {
    title: 'fp32 merged decoder, GQA, int32 ids',
    cfg: { ...base, numKvHeads: 2 },
    opts: { mergedDecoder: true, idsType: 'int32' },
    tol: 1e-4,
  },
  {
    title: 'fp32, mixture of 6 experts, 2 used, renormalized (Mixtral, Qwen3-MoE)',
    cfg: { ...base, numKvHeads: 2, intermediateSize: 24, moe: { experts: 6, used: 2, normalize: true } },
    opts: {},
    tol: 1e-4,
  },
  {
    title: 'fp32, 8-bit experts with zero points, block 32 (QMoE)',
    cfg: { ...base, numKvHeads: 2, hiddenSize: 64, intermediateSize: 96, moe: { experts: 4, used: 2, normalize: true } },
    opts: {},
    tol: 1e-3,
    experts: { bits: 8, blockSize: 32, zeroPoints: true },
  },
  {
    title: "fp32, 8-bit experts, the gate's with zero points, up's and down's symmetric (QMoE)",
    cfg: { ...base, hiddenSize: 64, intermediateSize: 64, moe: { experts: 4, used: 2, normalize: true } },
    opts: {},
    tol: 1e-3,
    experts: { bits: 8, blockSize: 32, zeroPoints: 'gate' },
  },
  {
    title: 'fp32, symmetric 4-bit experts, block 16, a shared expert (QMoE)',
    cfg: { ...base, hiddenSize: 32, intermediateSize: 32, moe: { experts: 4, used: 2, normalize: false, sharedSize: 16 } },
    opts: {},
    tol: 1e-3,
    experts: { bits: 4, blockSize: 16, zeroPoints: false },
  },
  {
    title: "fp32, gpt-oss's block: attention sinks, experts with biases and its clamped SwiGLU, GQA",
    cfg: { ...base, numKvHeads: 2, intermediateSize: 24, attentionSinks: true, moe: { experts: 4, used: 2, normalize: true, biases: true, swiglu: { alpha: 1.702, beta: 1, limit: 1 } } },
    opts: {},
    tol: 1e-4,
  },
  {
    title: "fp32, gpt-oss's block with 8-bit experts (QMoE), heads without grouping",
    cfg: { ...base, hiddenSize: 64, intermediateSize: 64, attentionSinks: true, moe: { experts: 4, used: 2, normalize: true, biases: true, swiglu: { alpha: 1.702, beta: 1, limit: 1 } } },
    opts: {},
    tol: 1e-3,
    experts: { bits: 8, blockSize: 32, zeroPoints: true },
  },
  {
    title: "fp32, GLM-4.5's routing: sigmoid scores, a selection bias, renormalized and scaled, an ungated shared expert, a leading dense layer",
    cfg: {
      ...base,
      numLayers: 3,
      numKvHeads: 2,
      intermediateSize: 24,
      moe: { experts: 6, used: 2, normalize: true, gating: 'sigmoid', selectionBias: true, scale: 2.5, sharedSize: 16, sharedGate: false, denseLayers: { count: 1, intermediateSize: 40 } },
    },
    opts: {},
    tol: 1e-4,
  },
  {
    title: 'fp32, 8-bit experts (QMoE) with sigmoid scores and a selection bias, not renormalized',
    cfg: { ...base, hiddenSize: 64, intermediateSize: 64, moe: { experts: 4, used: 2, normalize: false, gating: 'sigmoid', selectionBias: true } },
    opts: {},
    tol: 1e-3,
    experts: { bits: 8, blockSize: 32, zeroPoints: true },
  },
  {
    title: "fp32, DeepSeek-V3's group-limited routing: 8 experts in 4 groups, the best 2 groups' experts chosen from, sigmoid with a selection bias",
    cfg: { ...base, intermediateSize: 24, moe: { experts: 8, used: 2, normalize: true, gating: 'sigmoid', selectionBias: true, scale: 2.5, groups: { count: 4, used: 2 } } },
    opts: {},
    tol: 1e-4,
  },
  {
    title: "fp32, softmax scores scaled (DeepSeek-V2's routed_scaling_factor), 8-bit experts (QMoE)",
    cfg: { ...base, hiddenSize: 64, intermediateSize: 64, moe: { experts: 4, used: 2, normalize: false, scale: 2 } },
    opts: {},
    tol: 1e-3,
    experts: { bits: 8, blockSize: 32, zeroPoints: true },
  },
  {
    title: 'fp32, softmax scores with a selection bias, not renormalized, scaled',
    cfg: { ...base, intermediateSize: 24, moe: { experts: 6, used: 3, normalize: false, selectionBias: true, scale: 1.5 } },
    opts: {},
    tol: 1e-4,
  },
  {
    title: 'fp32, latent attention (DeepSeek-V2-Lite: queries by wq), adjacent rotary pairs over its rotary part',
    cfg: { ...base, hiddenSize: 32, headDim: 12, intermediateSize: 24, ropeStyle: 'adjacent', mla: { kvLoraRank: 16, ropeDim: 4, valueDim: 6 } },
    opts: {},
    tol: 1e-4,
  },
  {
    title: "fp32, latent attention with low-rank queries (DeepSeek-V3's), NeoX halves, GLM-4.5's experts",
    cfg: {
      ...base,
      numLayers: 3,
      hiddenSize: 32,
      headDim: 12,
      intermediateSize: 24,
      mla: { kvLoraRank: 20, ropeDim: 4, valueDim: 8, qLoraRank: 10 },
      moe: { experts: 4, used: 2, normalize: true, gating: 'sigmoid', selectionBias: true, sharedSize: 8, sharedGate: false, denseLayers: { count: 1, intermediateSize: 40 } },
    },
    opts: {},
    tol: 1e-4,
  },
  {
    title: 'fp16, latent attention, merged decoder',
    cfg: { ...base, hiddenSize: 32, headDim: 12, intermediateSize: 24, mla: { kvLoraRank: 16, ropeDim: 4, valueDim: 6, qLoraRank: 8 } },
    opts: { dtype: 'float16', mergedDecoder: true },
    tol: 1e-2,
  },
  {
    title: "fp32, LFM2's hybrid: gated short convolutions of 3 taps around an attention layer",
    cfg: { ...base, numLayers: 3, numKvHeads: 2, layerTypes: ['conv', 'full', 'conv'], convKernel: 3 },
    opts: {},
    tol: 1e-4,
  },
  {
    title: 'fp16, short convolutions of 4 taps, tied head, merged decoder',
    cfg: { ...base, numLayers: 3, tieWordEmbeddings: true, layerTypes: ['conv', 'conv', 'full'], convKernel: 4 },
    opts: { dtype: 'float16', mergedDecoder: true },
    tol: 1e-2,
  },
  {
    title: "fp32, Granite 4.0-H's hybrid: Mamba2 mixers (4 heads in 2 groups, 4 taps) around an attention layer",
    cfg: { ...base, numLayers: 3, numKvHeads: 2, layerTypes: ['mamba', 'full', 'mamba'], mamba: { convKernel: 4, heads: 4, headDim: 8, stateSize: 6, groups: 2 } },
    opts: {},
    tol: 1e-4,
  },
  {
    title: "fp32, Qwen3.5's hybrid: gated DeltaNet layers (2 key heads tiled to 4 value heads, 4 taps) around a gated attention layer",
    cfg: { ...base, numLayers: 3, numKvHeads: 2, attentionGate: true, layerTypes: ['delta', 'delta', 'full'], deltaNet: { convKernel: 4, keyHeads: 2, keyDim: 8, valueHeads: 4, valueDim: 6 } },
    opts: {},
    tol: 1e-4,
  },
  {
    title: "fp32 weights, fp16 keys and values (kvDtype: llama.cpp's cache type), attention op by op: past cast up, present down",
    cfg: { ...base, numKvHeads: 2 },
    opts: { kvDtype: 'float16' },
    tol: 1e-2,
  },
  {
    title: "fp32, Qwen3-Next's order: each of 2 key heads read by a run of 3 value heads",
    cfg: { ...base, numLayers: 2, numKvHeads: 2, attentionGate: true, layerTypes: ['delta', 'full'], deltaNet: { convKernel: 4, keyHeads: 2, keyDim: 8, valueHeads: 6, valueDim: 4, groupedHeads: true } },
    opts: {},
    tol: 1e-4,
  },
  {
    title: 'fp16, gated DeltaNet layers, merged decoder',
    cfg: { ...base, numLayers: 2, attentionGate: true, layerTypes: ['delta', 'full'], deltaNet: { convKernel: 3, keyHeads: 2, keyDim: 8, valueHeads: 2, valueDim: 8 } },
    opts: { dtype: 'float16', mergedDecoder: true },
    tol: 1e-2,
  },
  {
    title: "fp32, Nemotron-H's single blocks: Mamba2 mixers, an MLP alone, attention alone, each under one norm",
    cfg: { ...base, numLayers: 4, numKvHeads: 2, singleBlocks: true, layerTypes: ['mamba', 'mlp', 'full', 'mlp'], mamba: { convKernel: 4, heads: 4, headDim: 8, stateSize: 6, groups: 2 } },
    opts: {},
    tol: 1e-4,
  },
  {
    title: "fp32, Falcon-H1's layers: Mamba2 beside attention on one norm, outputs summed, then the MLP; one mixer without its norm",
    cfg: { ...base, numLayers: 2, numKvHeads: 2, layerTypes: ['mamba-attention', 'mamba-attention'], mamba: { convKernel: 4, heads: 4, headDim: 8, stateSize: 6, groups: 2 } },
    opts: {},
    tol: 1e-4,
    edit: (w) => delete w.layers[1]!.mamba!.norm,
  },
  {
    title: 'fp16, Mamba2 mixers of one group, merged decoder',
    cfg: { ...base, numLayers: 3, tieWordEmbeddings: true, layerTypes: ['mamba', 'mamba', 'full'], mamba: { convKernel: 3, heads: 2, headDim: 16, stateSize: 4, groups: 1 } },
    opts: { dtype: 'float16', mergedDecoder: true },
    tol: 1e-2,
  },
  {
    title: 'fp16, mixture of 4 experts, 3 used, not renormalized, a gated shared expert (Qwen2-MoE), merged decoder',
    cfg: { ...base, intermediateSize: 24, moe: { experts: 4, used: 3, normalize: false, sharedSize: 32 } },
    opts: { dtype: 'float16', mergedDecoder: true },
    tol: 1e-2,
  },
];

describe('Llama ONNX builder', function () {
  this.timeout(30000);

  for (const [n, tc] of cases.entries()) {
    it(`prefill and cached steps match the reference (${tc.title})`, async () => {
      const dense = randomLlamaWeights(tc.cfg, 100 + n, SCALE);
      tc.edit?.(dense);
      const w = tc.experts ? withQuantizedExperts(tc.cfg, dense, tc.experts) : dense;
      const refW = tc.opts.dtype === 'float16' ? roundWeights(dense) : (w as LlamaWeights); // the reference dequantizes quantized experts
      const r = await runner(tc.cfg, w, tc.opts);
      const d = dims(tc.cfg);
      const tokens = [3, 17, 42, 5, 60, 9, 33, 1];
      const prompt = tokens.slice(0, 5);

      // Quantized experts take int8 activations, whose codes onnxruntime rounds from its own fp32 sums and per
      // instruction set (AVX2 and AVX-512 VNNI builds differ): a code at a near tie with the float64 reference may come
      // out one off, moving that position's logits by up to a few hundredths. One comparison of a case may be off so,
      // within TIE_TOLERANCE; a layout error moves every position's logits by O(1).
      const offByTie: string[] = [];
      const compare = (got: ArrayLike<number>, want: ArrayLike<number>, what: string) => {
        if (tc.experts && maxAbsDiff(got, want) > tc.tol) {
          offByTie.push(what);
          expectClose(got, want, TIE_TOLERANCE, `${what} (an int8 code off at a rounding tie)`);
        } else expectClose(got, want, tc.tol, what);
      };
      const pre = await run(r, { ids: [prompt], mask: [prompt.map(() => 1)] });
      const ref = reference(tc.cfg, refW, embedRows(tc.cfg, refW, prompt));
      expect(pre.out.logits!.dims).to.deep.equal([1, 5, d.V]);
      expect(pre.out.logits!.type).to.equal(tc.opts.dtype ?? 'float32');
      for (let s = 0; s < prompt.length; s++) compare(pre.logits[0]![s]!, ref.logits[s]!, `prefill logits at ${s}`);
      const attnLayer = tc.cfg.layerTypes?.findIndex((t) => t === 'full' || t === 'mamba-attention') ?? 0;
      expect(pre.present[attnLayer]![0].dims).to.deep.equal([1, d.kv, 5, d.D]);

      let past = pre.present;
      for (let t = prompt.length; t < tokens.length; t++) {
        const step = await run(r, { ids: [[tokens[t]!]], mask: [Array(t + 1).fill(1)], past, positions: [[t]] });
        const full = reference(tc.cfg, refW, embedRows(tc.cfg, refW, tokens.slice(0, t + 1)));
        expect(step.out.logits!.dims).to.deep.equal([1, 1, d.V]);
        compare(step.logits[0]![0]!, full.logits[t]!, `step ${t} logits`);
        expect(step.present[attnLayer]![1].dims).to.deep.equal([1, d.kv, t + 1, d.D]);
        past = step.present;
      }
      expect(offByTie, 'comparisons beyond the case tolerance').to.have.length.at.most(1);
    });
  }

  const hybrid: LlamaConfig = { ...base, numLayers: 3, numKvHeads: 2, layerTypes: ['conv', 'full', 'conv'], convKernel: 3 };
  for (const [label, groupedHeads] of [['', false], [", Qwen3-Next's head order", true]] as const) {
    it(`a gated DeltaNet prompt over several chunks (its tokens 64 at a time in matrix products) matches the token-by-token reference, and steps on from it${label}`, async () => {
      const cfg: LlamaConfig = { ...base, numLayers: 2, numKvHeads: 2, attentionGate: true, layerTypes: ['delta', 'full'], deltaNet: { convKernel: 4, keyHeads: 2, keyDim: 8, valueHeads: 4, valueDim: 6, groupedHeads } };
      const w = randomLlamaWeights(cfg, 77, SCALE);
      const r = await runner(cfg, w);
      // 150 tokens: two whole chunks and a padded third
      const tokens = Array.from({ length: 151 }, (_, t) => (t * 37 + 5) % cfg.vocabSize);
      const prompt = tokens.slice(0, 150);
      const pre = await run(r, { ids: [prompt], mask: [prompt.map(() => 1)] });
      const ref = reference(cfg, w, embedRows(cfg, w, tokens));
      for (const s of [0, 1, 62, 63, 64, 65, 100, 127, 128, 149]) expectClose(pre.logits[0]![s]!, ref.logits[s]!, 1e-4, `prefill logits at ${s}`);
      const step = await run(r, { ids: [[tokens[150]!]], mask: [tokens.map(() => 1)], past: pre.present, positions: [[150]] });
      expectClose(step.logits[0]![0]!, ref.logits[150]!, 1e-4, 'the step after the prompt');
    });
  }

  for (const [opts, cfg] of [
    [{}, { ...base, numKvHeads: 2 }],
    [{ positionIds: false }, { ...base, numKvHeads: 2 }],
    [{ dtype: 'float16' as const, positionIds: false, idsType: 'int32' as const }, { ...base, numKvHeads: 2 }],
    // (the padding must not enter the convolutions' or the SSMs' states)
    [{}, hybrid],
    [{}, { ...hybrid, layerTypes: ['mamba', 'full', 'mamba'], convKernel: undefined, mamba: { convKernel: 4, heads: 4, headDim: 8, stateSize: 6, groups: 2 } }],
    [{}, { ...hybrid, layerTypes: ['delta', 'full', 'delta'], convKernel: undefined, attentionGate: true, deltaNet: { convKernel: 4, keyHeads: 2, keyDim: 8, valueHeads: 4, valueDim: 6 } }],
  ] as [LlamaBuildOptions, LlamaConfig][]) {
    it(`a left-padded batch matches each prompt alone (${JSON.stringify(opts)}${cfg.layerTypes ? `, ${cfg.layerTypes[0]} layers` : ''})`, async () => {
      const w = randomLlamaWeights(cfg, 7, SCALE);
      const refW = opts.dtype === 'float16' ? roundWeights(w) : w;
      const tol = opts.dtype === 'float16' ? 1e-2 : 1e-4;
      const r = await runner(cfg, w, opts);
      const a = [4, 8, 15, 16, 23, 42];
      const b = [7, 11, 13];
      const pad = a.length - b.length;
      const ids = [a, [...Array(pad).fill(0), ...b]];
      const mask = [a.map(() => 1), [...Array(pad).fill(0), ...b.map(() => 1)]];
      const pre = await run(r, { ids, mask });
      const refA = reference(cfg, refW, embedRows(cfg, refW, a));
      const refB = reference(cfg, refW, embedRows(cfg, refW, b));
      expectClose(pre.logits[0]![a.length - 1]!, refA.logits[a.length - 1]!, tol, 'row 0 last logits');
      expectClose(pre.logits[1]![a.length - 1]!, refB.logits[b.length - 1]!, tol, 'row 1 (padded) last logits');
      expect(pre.logits.flat().every((v) => v.every(Number.isFinite))).to.equal(true);

      // One cached step for the whole batch.
      const next = [[31], [2]];
      const stepMask = mask.map((m) => [...m, 1]);
      const step = await run(r, { ids: next, mask: stepMask, past: pre.present });
      const fullA = reference(cfg, refW, embedRows(cfg, refW, [...a, 31]));
      const fullB = reference(cfg, refW, embedRows(cfg, refW, [...b, 2]));
      expectClose(step.logits[0]![0]!, fullA.logits[a.length]!, tol, 'row 0 step logits');
      expectClose(step.logits[1]![0]!, fullB.logits[b.length]!, tol, 'row 1 step logits');
    });
  }

  it('num_logits_to_keep restricts logits to the last N positions (0 keeps all)', async () => {
    const cfg: LlamaConfig = { ...base, numKvHeads: 2 };
    const w = randomLlamaWeights(cfg, 11, SCALE);
    const r = await runner(cfg, w, { numLogitsToKeep: true, mergedDecoder: true });
    const prompt = [1, 2, 3, 4, 5];
    const ref = reference(cfg, w, embedRows(cfg, w, prompt));
    const mask = [prompt.map(() => 1)];
    const last = await run(r, { ids: [prompt], mask, numLogits: 1 });
    expect(last.out.logits!.dims).to.deep.equal([1, 1, cfg.vocabSize]);
    expectClose(last.logits[0]![0]!, ref.logits[4]!, 1e-4, 'last logits');
    const two = await run(r, { ids: [prompt], mask, numLogits: 2 });
    expect(two.out.logits!.dims).to.deep.equal([1, 2, cfg.vocabSize]);
    expectClose(two.logits[0]![0]!, ref.logits[3]!, 1e-4, 'second-to-last logits');
    const all = await run(r, { ids: [prompt], mask, numLogits: 0 });
    expect(all.out.logits!.dims).to.deep.equal([1, 5, cfg.vocabSize]);
    // Presents still cover the whole prompt.
    expect(last.present[0]![0].dims).to.deep.equal([1, 2, 5, 4]);
  });

  for (const dtype of ['float32', 'float16'] as const) {
    it(`last_hidden_state is the final RMSNorm output (${dtype})`, async () => {
      const cfg: LlamaConfig = { ...base, tieWordEmbeddings: true };
      const w = randomLlamaWeights(cfg, 12, SCALE);
      const refW = dtype === 'float16' ? roundWeights(w) : w;
      const tol = dtype === 'float16' ? 1e-2 : 1e-4;
      const r = await runner(cfg, w, { outputHidden: true, numLogitsToKeep: true, dtype });
      const prompt = [9, 8, 7];
      const ref = reference(cfg, refW, embedRows(cfg, refW, prompt));
      const res = await run(r, { ids: [prompt], mask: [[1, 1, 1]], numLogits: 1 });
      expect(res.out.last_hidden_state!.dims).to.deep.equal([1, 3, cfg.hiddenSize]);
      expect(res.out.last_hidden_state!.type).to.equal(dtype);
      for (let s = 0; s < 3; s++) expectClose(res.hidden![0]![s]!, ref.hidden[s]!, tol, `hidden ${s}`);
      expectClose(res.logits[0]![0]!, ref.logits[2]!, tol, 'logits');
    });
  }

  it('inputs_embeds equal to embedding rows gives the same logits as the ids', async () => {
    const cfg: LlamaConfig = { ...base, numKvHeads: 2, ropeStyle: 'adjacent' };
    const w = randomLlamaWeights(cfg, 13, SCALE);
    const r = await runner(cfg, w, { inputsEmbeds: true, outputHidden: true });
    const H = cfg.hiddenSize;
    const row = (id: number) => w.embed.slice(id * H, (id + 1) * H);
    const prompt = [5, 6, 7, 8];
    const mask = [[1, 1, 1, 1]];
    const viaIds = await run(r, { ids: [prompt], mask });
    const viaEmbeds = await run(r, { ids: [[]], embeds: [prompt.map(row)], mask });
    const mixed = await run(r, { ids: [prompt.slice(0, 2)], embeds: [prompt.slice(2).map(row)], mask });
    const ref = reference(cfg, w, embedRows(cfg, w, prompt));
    for (let s = 0; s < 4; s++) {
      expectClose(viaIds.logits[0]![s]!, ref.logits[s]!, 1e-4, `ids ${s}`);
      expectClose(viaEmbeds.logits[0]![s]!, viaIds.logits[0]![s]!, 1e-5, `embeds ${s}`);
      expectClose(mixed.logits[0]![s]!, viaIds.logits[0]![s]!, 1e-5, `mixed ${s}`);
    }
    // A continuous (non-vocabulary) embedding, then a cached id step.
    const soft = Float32Array.from({ length: H }, (_, i) => Math.sin(i) * 0.5);
    const pre = await run(r, { ids: [[]], embeds: [[row(5), soft]], mask: [[1, 1]] });
    const refSoft = reference(cfg, w, [...embedRows(cfg, w, [5]), Float64Array.from(soft), ...embedRows(cfg, w, [9])]);
    expectClose(pre.logits[0]![1]!, refSoft.logits[1]!, 1e-4, 'soft prefill');
    const step = await run(r, { ids: [[9]], mask: [[1, 1, 1]], past: pre.present });
    expectClose(step.logits[0]![0]!, refSoft.logits[2]!, 1e-4, 'step after soft prefill');
  });

  it('writes a loadable model inline and with external data', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'reasonplug-builder-'));
    try {
      const cfg: LlamaConfig = { ...base, numKvHeads: 2, numLayers: 1 };
      const w = randomLlamaWeights(cfg, 14, SCALE);
      const prompt = [10, 20, 30];
      const ref = reference(cfg, w, embedRows(cfg, w, prompt));
      let inlineSize = 0;
      for (const externalData of [false, true]) {
        const path = join(dir, externalData ? 'external.onnx' : 'inline.onnx');
        await writeLlamaModel(path, cfg, w, { externalData, producer: 'builder-test' });
        const model = decodeModel(await readFile(path), path);
        expect(model.producerName).to.equal('builder-test');
        const ext = model.graph!.initializer!.filter((t) => t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL);
        if (externalData) {
          const dataSize = (await stat(`${path}.data`)).size;
          expect(ext.length).to.be.greaterThan(5);
          for (const t of ext) {
            const kv = Object.fromEntries(t.externalData!.map((e) => [e.key, e.value]));
            expect(kv.location).to.equal('external.onnx.data');
            expect(Number(kv.offset) + Number(kv.length)).to.be.at.most(dataSize);
            expect(t.rawData?.length ?? 0).to.equal(0);
          }
          expect((await stat(path)).size).to.be.lessThan(inlineSize / 2);
        } else {
          expect(ext).to.have.length(0);
          inlineSize = (await stat(path)).size;
        }
        const session = await ort.InferenceSession.create(path);
        const res = await run({ session, cfg, opts: {} }, { ids: [prompt], mask: [[1, 1, 1]] });
        for (let s = 0; s < 3; s++) expectClose(res.logits[0]![s]!, ref.logits[s]!, 1e-4, `${path} logits ${s}`);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  for (const opts of [{}, { dtype: 'float16' as const, mergedDecoder: true }]) {
    it(`writes RMSNorm and the q/k/v projection in the forms onnxruntime fuses (${JSON.stringify(opts)})`, async () => {
      const dir = await mkdtemp(join(tmpdir(), 'reasonplug-builder-'));
      try {
        const cfg: LlamaConfig = { ...base, numLayers: 3 };
        const path = join(dir, 'model.onnx');
        const optimized = join(dir, 'optimized.onnx');
        await writeLlamaModel(path, cfg, randomLlamaWeights(cfg, 15, SCALE), opts);
        const session = await ort.InferenceSession.create(path, { graphOptimizationLevel: 'extended', optimizedModelFilePath: optimized });
        await session.release();
        const graph = decodeModel(await readFile(optimized), optimized).graph!;
        const nodesOf = (g: GraphProto): NodeProto[] =>
          g.node!.flatMap((n) => [n, ...(n.attribute ?? []).flatMap((a) => (a.g ? nodesOf(a.g) : []))]);
        const nodes = nodesOf(graph);
        const branches = opts.mergedDecoder ? 2 : 1;
        // Two norms per layer and the final one, each one kernel; no loose ReduceMean/Sqrt/Div left.
        expect(nodes.filter((n) => n.opType === 'SimplifiedLayerNormalization')).to.have.length((2 * cfg.numLayers + 1) * branches);
        expect(nodes.map((n) => n.opType)).to.not.include('ReduceMean');
        // q, k and v folded into one matrix per layer, shared by both branches of a merged decoder.
        const width = (cfg.numHeads + 2 * (cfg.numKvHeads ?? cfg.numHeads)) * (cfg.hiddenSize / cfg.numHeads);
        const qkv = graph.initializer!.filter((t) => t.dims!.length === 2 && Number(t.dims![1]) === width);
        expect(qkv).to.have.length(cfg.numLayers);
        const weights = new Set(graph.initializer!.map((t) => t.name));
        expect(nodes.filter((n) => n.opType === 'Concat' && n.input!.every((i) => weights.has(i)))).to.have.length(0);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
  }

  it('converts float32 to float16 with round-to-nearest-even', () => {
    const cases: [number, number][] = [
      [0, 0x0000],
      [-0, 0x8000],
      [1, 0x3c00],
      [-2, 0xc000],
      [0.1, 0x2e66],
      [65504, 0x7bff],
      [65519, 0x7bff],
      [65520, 0x7c00],
      [1e6, 0x7c00],
      [-Infinity, 0xfc00],
      [2 ** -14, 0x0400],
      [2 ** -24, 0x0001],
      [2 ** -25, 0x0000], // tie → even (0)
      [2 ** -25 * 1.0001, 0x0001],
      [3 * 2 ** -25, 0x0002], // 1.5 units → 2 (even)
      [5 * 2 ** -25, 0x0002], // 2.5 units → 2 (even)
      [1 + 2 ** -11, 0x3c00], // tie → even
      [1 + 3 * 2 ** -11, 0x3c02], // tie → even (up)
      [1 + 2 ** -11 + 2 ** -20, 0x3c01],
      [2 ** -15 + 2 ** -16, 0x0300],
    ];
    for (const [x, bits] of cases) expect(float32ToFloat16(x), `f16(${x})`).to.equal(bits);
    expect(float32ToFloat16(NaN) & 0x7c00).to.equal(0x7c00);
    expect(float32ToFloat16(NaN) & 0x3ff).to.not.equal(0);
    const arr = Float32Array.from(cases.map(([x]) => x));
    expect(Array.from(float32ArrayToFloat16(arr))).to.deep.equal(cases.map(([, b]) => b));
    // Every half value round-trips.
    const all = Float32Array.from({ length: 0x10000 }, (_, h) => halfToNumber(h));
    const back = float32ArrayToFloat16(all);
    for (let h = 0; h < 0x10000; h++) {
      if (Number.isNaN(all[h])) continue;
      if (back[h] !== h) expect.fail(`half 0x${h.toString(16)} → 0x${back[h]!.toString(16)}`);
    }
  });

  it('random weights are deterministic and the parameter count matches them', () => {
    const valuesIn = (o: object): number => Object.values(o).reduce((t: number, v: unknown) => t + (v instanceof Float32Array ? v.length : valuesIn(v as object)), 0);
    const moe = { ...base, moe: { experts: 4, used: 2, normalize: true, sharedSize: 8 } };
    const glm = { ...base, numLayers: 3, moe: { experts: 4, used: 2, normalize: true, sharedSize: 8, sharedGate: false, selectionBias: true, denseLayers: { count: 1, intermediateSize: 12 } } };
    const mla = { ...base, hiddenSize: 32, headDim: 12, mla: { kvLoraRank: 16, ropeDim: 4, valueDim: 6, qLoraRank: 8 } };
    const lfm2 = { ...base, numLayers: 3, numKvHeads: 2, qkNorm: true, layerTypes: ['conv', 'full', 'conv'], convKernel: 3 };
    const granite = { ...moe, numLayers: 3, layerTypes: ['mamba', 'full', 'mamba'], mamba: { convKernel: 4, heads: 4, headDim: 8, stateSize: 6, groups: 2 } };
    const qwen35 = { ...base, numLayers: 3, attentionGate: true, layerTypes: ['delta', 'delta', 'full'], deltaNet: { convKernel: 4, keyHeads: 2, keyDim: 8, valueHeads: 4, valueDim: 6 } };
    const nemotronH = { ...base, numLayers: 4, singleBlocks: true, gatedMlp: false, hiddenAct: 'relu2', layerTypes: ['mamba', 'mlp', 'full', 'mlp'], mamba: { convKernel: 4, heads: 4, headDim: 8, stateSize: 6, groups: 2 } };
    for (const cfg of [base, { ...base, numKvHeads: 2, tieWordEmbeddings: true, headDim: 8 }, moe, glm, mla, { ...mla, mla: { ...mla.mla, qLoraRank: undefined } }, lfm2, granite, qwen35, nemotronH] as LlamaConfig[]) {
      const a = randomLlamaWeights(cfg, 1);
      const b = randomLlamaWeights(cfg, 1);
      const c = randomLlamaWeights(cfg, 2);
      const attention = a.layers.findIndex((l) => l.wo);
      expect(Array.from(a.layers[attention]!.wo!)).to.deep.equal(Array.from(b.layers[attention]!.wo!));
      expect(Array.from(a.embed)).to.not.deep.equal(Array.from(c.embed));
      const n =
        a.embed.length +
        a.finalNorm.length +
        (a.lmHead?.length ?? 0) +
        a.layers.reduce((s, l) => s + valuesIn(l), 0);
      expect(llamaParameterCount(cfg)).to.equal(n);
      expect(a.lmHead === undefined).to.equal(!!cfg.tieWordEmbeddings);
      let sq = 0;
      for (const v of a.embed) sq += v * v;
      expect(Math.sqrt(sq / a.embed.length)).to.be.within(0.015, 0.025);
    }
  });

  it('refuses weights that do not fit the config', () => {
    const w = randomLlamaWeights(base, 1);
    const moe = { ...base, moe: { experts: 4, used: 2, normalize: true } };
    expect(() => buildLlamaModel(moe, w)).to.throw(/layers\[0\] has MLP projections, but the config's layer 0 is a mixture of experts/);
    expect(() => buildLlamaModel(base, randomLlamaWeights(moe, 1))).to.throw(/layers\[0\] has experts, but the config's layer 0 is dense \(no moe\)/);
    const leading = { ...moe, moe: { ...moe.moe, denseLayers: { count: 1, intermediateSize: 8 } } };
    expect(() => buildLlamaModel(leading, randomLlamaWeights(moe, 1))).to.throw(/layers\[0\] has experts, but the config's layer 0 is dense \(moe\.denseLayers\)/);
    expect(() => buildLlamaModel({ ...moe, moe: { ...moe.moe, denseLayers: { count: 2, intermediateSize: 8 } } }, w)).to.throw(/denseLayers needs 1 to 1 layers/);
    expect(() => buildLlamaModel({ ...moe, moe: { ...moe.moe, gating: 'relu' as 'sigmoid' } }, w)).to.throw(/moe\.gating must be 'softmax' or 'sigmoid'/);
    expect(() => buildLlamaModel({ ...moe, moe: { ...moe.moe, scale: 0 } }, w)).to.throw(/moe\.scale must be a positive number/);
    expect(() => buildLlamaModel({ ...moe, moe: { ...moe.moe, sharedGate: false } }, w)).to.throw(/sharedGate needs a shared expert/);
    expect(() => buildLlamaModel({ ...moe, moe: { ...moe.moe, selectionBias: true } }, randomLlamaWeights(moe, 1))).to.throw(/layers\[0\]\.moe\.selectionBias is missing/);
    const latent: LlamaConfig = { ...base, hiddenSize: 32, headDim: 12, mla: { kvLoraRank: 16, ropeDim: 4, valueDim: 6 } };
    expect(() => buildLlamaModel({ ...latent, mla: { ...latent.mla!, ropeDim: 12 } }, w)).to.throw(/even ropeDim below headDim \(12\)/);
    expect(() => buildLlamaModel({ ...latent, qkNorm: true }, w)).to.throw(/mla does not take qkNorm/);
    expect(() => buildLlamaModel(latent, randomLlamaWeights({ ...latent, mla: undefined }, 1))).to.throw(/layers\[0\]\.mla is missing/);
    expect(() => buildLlamaModel({ ...latent, mla: { ...latent.mla!, qLoraRank: 8 } }, randomLlamaWeights(latent, 1))).to.throw(/layers\[0\] has wq, but the config's queries go through mla\.qA/);
    expect(() => buildLlamaModel({ ...moe, moe: { ...moe.moe, used: 5 } }, w)).to.throw(/used experts \(1 to experts\)/);
    expect(() => buildLlamaModel({ ...moe, hiddenAct: 'gelu_tanh' }, randomLlamaWeights(moe, 1))).to.throw(/gated SiLU MLPs/);
    const dense = randomLlamaWeights(moe, 1);
    const q8 = withQuantizedExperts(moe, dense, { bits: 8, blockSize: 8, zeroPoints: true });
    const mixed = { ...q8, layers: q8.layers.map((l) => ({ ...l, moe: { ...l.moe!, down: dense.layers[0]!.moe!.down } })) };
    expect(() => buildLlamaModel(moe, mixed)).to.throw(/gate, up and down must be dense, or quantized alike/);
    expect(() => buildLlamaModel(moe, withQuantizedExperts(moe, dense, { bits: 4, blockSize: 8, zeroPoints: true }))).to.throw(/4-bit experts must be symmetric/);
    expect(() => buildLlamaModel({ ...base, hiddenSize: 32 }, w)).to.throw(/embed has 1024 values, the config needs 2048/);
    expect(() => buildLlamaModel({ ...base, numKvHeads: 3 }, w)).to.throw(/multiple of numKvHeads/);
    expect(() => buildLlamaModel(base, { ...w, lmHead: undefined })).to.throw(/lmHead/);
  });
});
