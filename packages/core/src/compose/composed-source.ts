/**
 * A backbone and N reasoners as one logit source: every model keeps its own KV cache and advances on the same
 * tokens; reasoners run in groups (lanes on their own threads while the backbone runs on this one, or inline on
 * this thread after it), each group summing its members' weighted logits as they finish, and the backbone's
 * logits join that sum last.
 */
import type { LogitSource } from '../generate/decode-loop.js';
import { combineWithBackbone, fusionScale, type FusionMode } from './fusion.js';
import { LocalReasonerGroup, type Decoder, type GroupOutput, type ReasonerGroup } from './reasoner-group.js';
import { isAlwaysZero, weightAt, type WeightSpec } from './weights.js';

/** A backbone that can take continuous input embeddings and report its final hidden state (LiteReason). */
export interface LatentBackbone extends Decoder {
  stepEmbeds(embeds: Float32Array): Promise<Float32Array>;
  readonly lastHidden: Float32Array;
}

/** Maps hidden states to latent input embeddings. */
export interface Projector {
  project(hidden: Float32Array, rows: number): Promise<Float32Array>;
}

/** A loaded reasoner: member `member` of `group`. */
export interface ReasonerSlot {
  name: string;
  group: ReasonerGroup;
  member: number;
}

/** Reasoner slots over decoders on this thread, run one after another after the backbone (inline placement). */
export function localReasoners(reasoners: readonly { name: string; decoder: Decoder }[]): ReasonerSlot[] {
  const group = new LocalReasonerGroup(
    reasoners.map((r) => r.decoder),
    reasoners.map((r) => r.name),
  );
  return reasoners.map((r, member) => ({ name: r.name, group, member }));
}

/** Raised when a call names reasoners that cannot be used as asked (not loaded, listed twice). */
export class ReasonerSelectionError extends Error {
  override name = 'ReasonerSelectionError';
}

/** What one generation composes. */
export interface CompositionPlan {
  /** Reasoners taking part, by slot index, with their weights for this request and their T (default: `mode`). */
  active: { slot: number; weight: WeightSpec; mode?: FusionMode }[];
  /** The backbone's T, and each reasoner's that gives none. */
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

/** The active reasoners of one group, in plan order. */
interface GroupPart {
  group: ReasonerGroup;
  /** Indices into the plan's non-zero active list. */
  active: number[];
}

/** Fuses a backbone with reasoners according to a plan. */
export class ComposedSource implements LogitSource {
  private generated = 0;
  private rows = 0;
  private fused = new Float32Array(0);
  private traces: TokenTrace[] = [];
  /** Reasoners whose weight is not zero for the whole call (the others never run). */
  private readonly active: { slot: ReasonerSlot; weight: WeightSpec; mode: FusionMode }[];
  private readonly parts: GroupPart[] = [];
  /** The groups' latest answers: latent steps fuse with them, since reasoners never see latent inputs. */
  private outputs: GroupOutput[] = [];

  constructor(
    private readonly backbone: Decoder,
    reasoners: readonly ReasonerSlot[],
    /** The shared vocabulary (the tokenizer's); wider logits are truncated to it. */
    readonly vocabSize: number,
    private readonly plan: CompositionPlan,
    private readonly latent?: { backbone: LatentBackbone; projector: Projector },
  ) {
    this.active = plan.active.filter((a) => !isAlwaysZero(a.weight)).map((a) => ({ slot: reasoners[a.slot]!, weight: a.weight, mode: a.mode ?? plan.mode }));
    this.active.forEach(({ slot }, i) => {
      let part = this.parts.find((p) => p.group === slot.group);
      if (!part) this.parts.push((part = { group: slot.group, active: [] }));
      part.active.push(i);
    });
  }

  /** The backbone's (reasoners keep caches of their own prompts too, in their lanes). */
  get reusedPromptTokens(): number | undefined {
    return this.backbone.reusedPromptTokens;
  }

  async prefill(prompts: readonly (readonly number[])[]): Promise<Float32Array> {
    this.generated = 0;
    this.rows = prompts.length;
    const weights = this.weights();
    const keepLogits = this.plan.traceTop > 0;
    return this.run(
      (part) =>
        part.group.prefill(
          { members: part.active.map((i) => this.active[i]!.slot.member), modes: part.active.map((i) => this.active[i]!.mode), vocab: this.vocabSize, keepLogits },
          prompts,
          part.active.map((i) => weights[i]!),
        ),
      (d) => d.prefill(prompts),
      weights,
    );
  }

  async step(tokens: readonly number[]): Promise<Float32Array> {
    this.generated++;
    const weights = this.weights();
    return this.run(
      (part) => part.group.step(tokens, part.active.map((i) => weights[i]!)),
      (d) => d.step(tokens),
      weights,
    );
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
    return this.fuse(base, this.weights());
  }

  /** This step's weight of each active reasoner. */
  private weights(): number[] {
    return this.active.map((a) => weightAt(a.weight, this.generated));
  }

  private async run(
    send: (part: GroupPart) => Promise<void>,
    callBackbone: (d: Decoder) => Promise<Float32Array>,
    weights: number[],
  ): Promise<Float32Array> {
    // Reasoner requests go out first so their threads work while the backbone runs on this one.
    const sent = Promise.all(this.parts.map(send));
    // A reasoner may fail while the backbone runs; its rejection is awaited below, not left unhandled.
    sent.catch(() => {});
    const base = await callBackbone(this.backbone);
    await sent;
    this.outputs = await Promise.all(this.parts.map((part) => part.group.result()));
    return this.fuse(base, weights);
  }

  private fuse(base: Float32Array, weights: number[]): Float32Array {
    const { rows, vocabSize: V } = this;
    let logits: Float32Array;
    if (this.active.length === 0 && this.plan.mode === 'logits' && this.backbone.vocabSize === V) {
      logits = base;
    } else {
      if (this.fused.length !== rows * V) this.fused = new Float32Array(rows * V);
      const scale = fusionScale([1, ...weights], this.plan.normalize);
      const sums = this.outputs.map((o) => o.sum);
      logits = combineWithBackbone(this.fused, { logits: base, stride: this.backbone.vocabSize }, sums, rows, V, this.plan.mode, scale);
    }
    if (this.plan.traceTop > 0) this.traces = this.collectTraces(base, weights, logits);
    return logits;
  }

  private collectTraces(base: Float32Array, weights: number[], fused: Float32Array): TokenTrace[] {
    const k = this.plan.traceTop;
    const V = this.vocabSize;
    const B = this.backbone.vocabSize;
    // Each active reasoner's own logits, from its group's answer.
    const own: Float32Array[] = [];
    this.parts.forEach((part, p) => part.active.forEach((i, j) => (own[i] = this.outputs[p]!.logits![j]!)));
    return Array.from({ length: this.rows }, (_, r) => {
      const row = fused.subarray(r * V, (r + 1) * V);
      let max = -Infinity;
      for (let v = 0; v < V; v++) if (row[v]! > max) max = row[v]!;
      let sum = 0;
      for (let v = 0; v < V; v++) sum += Math.exp(row[v]! - max);
      return {
        models: [
          { name: 'backbone', weight: 1, top: topCandidates(base.subarray(r * B, r * B + V), k) },
          ...this.active.map((a, i) => ({ name: a.slot.name, weight: weights[i]!, top: topCandidates(own[i]!.subarray(r * V, (r + 1) * V), k) })),
        ],
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
