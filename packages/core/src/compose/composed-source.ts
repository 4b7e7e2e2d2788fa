/**
 * A backbone and N reasoners as one logit source: every model keeps its own KV cache and advances on the same
 * tokens; reasoners run in their own threads while the backbone runs here; their logits are fused per step.
 */
import type { LogitSource } from '../generate/decode-loop.js';
import { fuseLogits, type FusionInput, type FusionMode } from './fusion.js';
import { isAlwaysZero, weightAt, type WeightSpec } from './weights.js';

/** A decoder the composer can drive: a local session or a proxy to one in another thread. */
export interface Decoder extends LogitSource {
  release(): Promise<void>;
}

/** A backbone that can take continuous input embeddings and report its final hidden state (LiteReason). */
export interface LatentBackbone extends Decoder {
  stepEmbeds(embeds: Float32Array): Promise<Float32Array>;
  readonly lastHidden: Float32Array;
}

/** Maps hidden states to latent input embeddings. */
export interface Projector {
  project(hidden: Float32Array, rows: number): Promise<Float32Array>;
}

/** A loaded reasoner. */
export interface ReasonerSlot {
  name: string;
  decoder: Decoder;
}

/** Raised when a call names reasoners that cannot be used as asked (not loaded, listed twice). */
export class ReasonerSelectionError extends Error {
  override name = 'ReasonerSelectionError';
}

/** What one generation composes. */
export interface CompositionPlan {
  /** Reasoners taking part, by slot index, with their weights for this request. */
  active: { slot: number; weight: WeightSpec }[];
  mode: FusionMode;
  /** Divide the fused logits by the sum of weights (backbone's 1 included). */
  normalize: boolean;
  /** Candidates per model to record for the trace; 0 disables tracing. */
  traceTop: number;
}

/** One candidate token of a trace. */
export interface TraceCandidate {
  id: number;
  logit: number;
}

/** What each model and the fusion proposed for one generated token. */
export interface TokenTrace {
  models: { name: string; weight: number; top: TraceCandidate[] }[];
  fused: (TraceCandidate & { prob: number })[];
}

/** Fuses a backbone with reasoners according to a plan. */
export class ComposedSource implements LogitSource {
  private generated = 0;
  private rows = 0;
  private fused = new Float32Array(0);
  private traces: TokenTrace[] = [];
  /** The reasoners' latest logits: latent steps fuse with them, since reasoners never see latent inputs. */
  private reasonerLogits: Float32Array[] = [];

  constructor(
    private readonly backbone: Decoder,
    private readonly reasoners: readonly ReasonerSlot[],
    /** The shared vocabulary (the tokenizer's); wider logits are truncated to it. */
    readonly vocabSize: number,
    private readonly plan: CompositionPlan,
    private readonly latent?: { backbone: LatentBackbone; projector: Projector },
  ) {}

  async prefill(prompts: readonly (readonly number[])[]): Promise<Float32Array> {
    this.generated = 0;
    return this.run((d) => d.prefill(prompts), prompts.length);
  }

  async step(tokens: readonly number[]): Promise<Float32Array> {
    this.generated++;
    return this.run((d) => d.step(tokens), tokens.length);
  }

  /** The trace of the latest logits for one row (when tracing is on). */
  trace(row: number): TokenTrace | undefined {
    return this.traces[row];
  }

  /**
   * Runs `steps` LiteReason latent steps on the backbone: `e = P(h)` fed back as an input embedding, each
   * step from the hidden state the previous one produced. Reasoners do not run: their caches hold only
   * discrete tokens, and their latest logits are fused with the backbone's after the last latent step.
   */
  async latentSteps(steps: number): Promise<Float32Array> {
    if (!this.latent) throw new Error('no projector is loaded');
    const { backbone, projector } = this.latent;
    let base!: Float32Array;
    for (let k = 0; k < steps; k++) base = await backbone.stepEmbeds(await projector.project(backbone.lastHidden, this.rows));
    return this.fuse(base, this.reasonerLogits, this.rows);
  }

  private get active() {
    return this.plan.active.filter((a) => !isAlwaysZero(a.weight));
  }

  private async run(call: (d: Decoder) => Promise<Float32Array>, rows: number): Promise<Float32Array> {
    this.rows = rows;
    // Reasoner requests go out first so their threads work while the backbone runs on this one.
    const pending = Promise.all(this.active.map((a) => call(this.reasoners[a.slot]!.decoder)));
    // A reasoner may fail while the backbone runs; its rejection is awaited below, not left unhandled.
    pending.catch(() => {});
    const base = await call(this.backbone);
    this.reasonerLogits = await pending;
    return this.fuse(base, this.reasonerLogits, rows);
  }

  private fuse(base: Float32Array, outputs: readonly Float32Array[], rows: number): Float32Array {
    const inputs: (FusionInput & { name: string })[] = [
      { name: 'backbone', logits: base, stride: this.backbone.vocabSize, weight: 1 },
      ...this.active.map((a, i) => ({
        name: this.reasoners[a.slot]!.name,
        logits: outputs[i]!,
        stride: this.reasoners[a.slot]!.decoder.vocabSize,
        weight: weightAt(a.weight, this.generated),
      })),
    ];
    let logits: Float32Array;
    if (inputs.length === 1 && this.plan.mode === 'logits' && this.backbone.vocabSize === this.vocabSize) {
      logits = base;
    } else {
      if (this.fused.length !== rows * this.vocabSize) this.fused = new Float32Array(rows * this.vocabSize);
      logits = fuseLogits(this.fused, inputs, rows, this.vocabSize, this.plan.mode, this.plan.normalize);
    }
    if (this.plan.traceTop > 0) this.traces = this.collectTraces(inputs, logits, rows);
    return logits;
  }

  private collectTraces(inputs: (FusionInput & { name: string })[], fused: Float32Array, rows: number): TokenTrace[] {
    const k = this.plan.traceTop;
    const V = this.vocabSize;
    return Array.from({ length: rows }, (_, r) => {
      const row = fused.subarray(r * V, (r + 1) * V);
      let max = -Infinity;
      for (let v = 0; v < V; v++) if (row[v]! > max) max = row[v]!;
      let sum = 0;
      for (let v = 0; v < V; v++) sum += Math.exp(row[v]! - max);
      return {
        models: inputs.map((x) => ({
          name: x.name,
          weight: x.weight,
          top: topCandidates(x.logits.subarray(r * x.stride, r * x.stride + V), k),
        })),
        fused: topCandidates(row, k).map((c) => ({ ...c, prob: Math.exp(c.logit - max) / sum })),
      };
    });
  }
}

/** The k largest entries, best first (k is small: insertion into a short sorted list). */
export function topCandidates(z: Float32Array, k: number): TraceCandidate[] {
  const top: TraceCandidate[] = [];
  for (let id = 0; id < z.length; id++) {
    const logit = z[id]!;
    if (top.length === k && logit <= top[k - 1]!.logit) continue;
    let i = top.length < k ? top.length : k - 1;
    while (i > 0 && top[i - 1]!.logit < logit) i--;
    top.splice(i, 0, { id, logit });
    if (top.length > k) top.pop();
  }
  return top;
}
