/**
 * Reasoners that advance together on one thread and hand back their share of the fused logits,
 * `Σ w_i · T(z_i)`, already summed: a lane worker (see runtime/reasoner-lane.ts) or, for the reference loop
 * and tests, sessions on the caller's own thread.
 */
import type { LogitSource } from '../generate/decode-loop.js';
import { accumulateLogits, type FusionMode } from './fusion.js';

/** Raised when a reasoner fails to load or fails during a run; names the reasoner. */
export class ReasonerError extends Error {
  override name = 'ReasonerError';
}

/** A reasoner's failure during a run, in the one wording every placement uses. */
export function reasonerFailed(who: string, why: string): ReasonerError {
  return new ReasonerError(`reasoner ${who} failed: ${why}`);
}

/** Prefixes a reasoner's load failure with its label, keeping the error's kind; returns the error. */
export function labelLoadFailure<E extends Error>(err: E, label: string): E {
  err.message = `reasoner ${label}: ${err.message}`;
  return err;
}

/** A decoder the composer can drive: a local session or a proxy to one in another thread. */
export interface Decoder extends LogitSource {
  release(): Promise<void>;
}

/** What one call asks of a group. */
export interface GroupCall {
  /** The group's members taking part, by index, in the call's order. */
  members: readonly number[];
  /** Each member's T, in the call's order (reasoners may declare different ones). */
  modes: readonly FusionMode[];
  /** The shared vocabulary: each member's logits are truncated to it. */
  vocab: number;
  /** Also hand back each member's own (truncated) logits, for the trace. */
  keepLogits: boolean;
}

/** A group's answer for one step. */
export interface GroupOutput {
  /** `Σ w_i · T(z_i)` over the call's members, `[rows × vocab]`; valid until the group's next step. */
  sum: Float32Array;
  /** Each member's logits `[rows × vocab]`, in the call's order, when `keepLogits` was asked for. */
  logits?: Float32Array[];
}

/**
 * Reasoners stepped together. A request is sent first and answered later, so that the caller can run the
 * backbone in between; one request is in flight at a time.
 */
export interface ReasonerGroup {
  /** Each member's logits width. */
  readonly vocabSizes: readonly number[];
  /** Each member's name, for errors; the loader may rename members once their manifests are read. */
  readonly names: string[];
  /** Starts a call: the prompts go to the call's members (replacing their caches), weighted by `weights`. */
  prefill(call: GroupCall, prompts: readonly (readonly number[])[], weights: readonly number[]): Promise<void>;
  /** Sends one token per row to the call's members; `weights` are this step's, in the call's order. */
  step(tokens: readonly number[], weights: readonly number[]): Promise<void>;
  /** The answer to the latest request. */
  result(): Promise<GroupOutput>;
  release(): Promise<void>;
}

/**
 * Adds each member's weighted, transformed logits into `sum` as the member finishes; copies them into
 * `logits` when those are given (the trace).
 */
export function addMemberLogits(
  out: { sum: Float32Array; logits?: Float32Array[] },
  index: number,
  z: Float32Array,
  stride: number,
  rows: number,
  call: GroupCall,
  weight: number,
): void {
  accumulateLogits(out.sum, { logits: z, stride, weight }, rows, call.vocab, call.modes[index]!, index === 0);
  const keep = out.logits?.[index];
  if (keep) for (let r = 0; r < rows; r++) keep.set(z.subarray(r * stride, r * stride + call.vocab), r * call.vocab);
}

/**
 * Decoders on the caller's thread, run one after another when the answer is asked for: the engine's inline
 * placement, the reference loop, tests.
 */
export class LocalReasonerGroup implements ReasonerGroup {
  private call: GroupCall | undefined;
  private rows = 0;
  private out: { sum: Float32Array; logits?: Float32Array[] } = { sum: new Float32Array(0) };
  private pending: { advance: (d: Decoder) => Promise<Float32Array>; weights: readonly number[] } | undefined;

  constructor(
    private readonly decoders: readonly Decoder[],
    readonly names: string[],
  ) {}

  get vocabSizes(): number[] {
    return this.decoders.map((d) => d.vocabSize);
  }

  async prefill(call: GroupCall, prompts: readonly (readonly number[])[], weights: readonly number[]): Promise<void> {
    this.call = call;
    this.rows = prompts.length;
    const size = this.rows * call.vocab;
    this.out = {
      sum: new Float32Array(size),
      ...(call.keepLogits ? { logits: call.members.map(() => new Float32Array(size)) } : {}),
    };
    this.pending = { advance: (d) => d.prefill(prompts), weights };
  }

  async step(tokens: readonly number[], weights: readonly number[]): Promise<void> {
    this.pending = { advance: (d) => d.step(tokens), weights };
  }

  async result(): Promise<GroupOutput> {
    const call = this.call!;
    const { advance, weights } = this.pending!;
    this.pending = undefined;
    for (let i = 0; i < call.members.length; i++) {
      const member = call.members[i]!;
      const decoder = this.decoders[member]!;
      let z: Float32Array;
      try {
        z = await advance(decoder);
      } catch (err) {
        throw reasonerFailed(this.names[member]!, `${(err as Error).name}: ${(err as Error).message}`);
      }
      addMemberLogits(this.out, i, z, decoder.vocabSize, this.rows, call, weights[i]!);
    }
    return this.out;
  }

  async release(): Promise<void> {
    await Promise.all(this.decoders.map((d) => d.release()));
  }
}
