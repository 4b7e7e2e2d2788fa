/**
 * Speculative decoding with a draft model: a smaller model of the backbone's family (one tokenizer) writes the next
 * few tokens greedily, one cheap step each, and the backbone checks them all in one run, keeping what it would have
 * written itself (see ContinuousBatch). This is llama.cpp's `--model-draft` and vLLM's draft-model speculation.
 *
 * The draft model keeps a cache of one row: the row running alone. Before it drafts it catches up with what the row
 * has fed since (the tokens the backbone kept, at most a chunk a step), and gives back the positions of its drafted
 * tokens the backbone did not keep; when another row is alone next, it starts over on that one, from the longest
 * prefix its own prefix cache holds (the row's cache is kept there when it is dropped, so a conversation's next turn
 * is not run again).
 */
import type { PrefixCacheStats } from '../runtime/prefix-cache.js';
import { BatchKv, RowPrefill } from '../runtime/batch-kv.js';
import type { DecoderSession } from '../runtime/decoder-session.js';
import { DraftBudget } from './draft-budget.js';
import { maxIndexIn } from '../sampling/select.js';
import { logSumExp } from '../compose/fusion.js';
import { refuseUnknownOptions } from './options.js';

/** A draft model and how it drafts. */
export interface DraftModelOptions {
  /**
   * The draft model, as any model is given (module or export directory, `.onnx` or `.gguf` file, registry or hub
   * reference): a small model with the backbone's tokenizer, token for token (e.g. Qwen2.5-0.5B for Qwen2.5-7B).
   */
  model: string;
  /** Which graph of a hub export directory (see `EngineOptions.dtype`). */
  dtype?: string;
  /** Tokens drafted at most per step (default 4). */
  draftTokens?: number;
  /**
   * Whether a step drafts as many tokens as the engine measures to pay for themselves, up to `draftTokens`, and none
   * where drafting costs more than it saves (default true; see draft-budget.ts); false drafts `draftTokens` every step.
   */
  adaptive?: boolean;
  /**
   * The draft model's own probability of its next token below which it stops drafting (default 0.5), as
   * llama.cpp's `--draft-p-min`: a token it is unsure of is seldom the backbone's, and costs a run position.
   */
  minProbability?: number;
}

/** {@link DraftModelOptions} by name, for refusing the others (the type makes a new option fail to compile until it is listed). */
const DRAFT_MODEL_OPTION_NAMES = { model: true, dtype: true, draftTokens: true, adaptive: true, minProbability: true } as const satisfies Record<keyof DraftModelOptions, true>;

/** {@link DraftModelOptions} with every default filled in. */
export type DraftModelSettings = Required<Omit<DraftModelOptions, 'dtype'>> & Pick<DraftModelOptions, 'dtype'>;

/**
 * The defaults of {@link DraftModelOptions}, the best of those tried in bench:draft-model on the 2-vCPU machine: a
 * run's cost grows with its positions on the CPU (the F16 target's 7-position run 1.4x a step, the Q8_0 one's 2.7x),
 * so longer drafts lost (8 tokens: 0.61x the time without against 0.48x at 4, on F16), and stopping below 0.75
 * dropped too many good tokens (0.74x against 0.48x at 0.5).
 */
export const DEFAULT_DRAFT = { draftTokens: 4, adaptive: true, minProbability: 0.5 } as const;

/**
 * Checks a user's draft model option (typed errors for the caller's input: a name outside its options is refused as
 * Engine.load's are) and fills in the defaults.
 */
export function draftModel(option: string | DraftModelOptions): DraftModelSettings {
  const o = typeof option === 'string' ? { model: option } : option;
  const shape = 'draftModel must be a model reference, or { model, draftTokens?, minProbability?, dtype? }';
  if (o === null || typeof o !== 'object' || Array.isArray(o)) throw new TypeError(shape);
  // (before the model: `{ modle }` is misspelt, not missing its model)
  refuseUnknownOptions(o, DRAFT_MODEL_OPTION_NAMES, 'Engine.load', 'draftModel');
  if (typeof o.model !== 'string' || o.model.trim() === '') throw new TypeError(shape);
  const { draftTokens = DEFAULT_DRAFT.draftTokens, adaptive = DEFAULT_DRAFT.adaptive, minProbability = DEFAULT_DRAFT.minProbability } = o;
  if (!(Number.isInteger(draftTokens) && draftTokens >= 1)) throw new RangeError(`draftModel.draftTokens must be a whole number >= 1; got ${draftTokens}`);
  if (typeof adaptive !== 'boolean') throw new TypeError(`draftModel.adaptive must be true or false; got ${String(adaptive)}`);
  if (!(typeof minProbability === 'number' && minProbability >= 0 && minProbability <= 1)) {
    throw new RangeError(`draftModel.minProbability must be a number from 0 to 1; got ${minProbability}`);
  }
  return { model: o.model, draftTokens, adaptive, minProbability, ...(o.dtype !== undefined ? { dtype: o.dtype } : {}) };
}

/** Raised at load for a draft model whose graph cannot take positions back. */
export class DraftModelError extends Error {
  override name = 'DraftModelError';
}

/** Drafts for the row running alone, from a draft model's session on the batch's thread. */
export class DraftModel {
  private readonly kv: BatchKv;
  /** The row whose tokens {@link fed} are, and the tokens in the cache. */
  private owner: object | undefined;
  private fed: number[] = [];
  /** The owner's context being prefilled, one chunk a draft, before the cache holds it. */
  private prefill: RowPrefill | undefined;
  /** How many tokens drafting pays for, from what the batch measures of its steps and runs and what rows keep. */
  readonly budget = new DraftBudget();

  /**
   * @param vocab ids the draft may propose (the backbone's shared vocabulary)
   * @param contextLength positions the draft model holds, when it declares them
   * @param chunk tokens it runs at most per step to catch up with a row (the batch's prefill chunk)
   */
  constructor(
    private readonly session: DecoderSession,
    private readonly settings: Pick<DraftModelSettings, 'draftTokens' | 'adaptive' | 'minProbability'>,
    private readonly vocab: number,
    private readonly contextLength: number,
    private readonly chunk: number,
  ) {
    this.kv = new BatchKv(session);
    if (!this.kv.takesRuns) {
      throw new DraftModelError(
        "its graph cannot take drafted positions back (recurrent states, right padding, or logits of the last position only); use a plain decoder of the backbone's family",
      );
    }
  }

  /** Bytes of KV cache it holds. */
  get bytes(): number {
    return this.kv.bytes + (this.prefill ? this.prefill.length * this.kv.bytesPerPosition : 0);
  }

  /** Bytes of KV cache a position of its one row takes. */
  get bytesPerPosition(): number {
    return this.kv.bytesPerPosition;
  }

  /** Its prefix cache: bytes and entries kept. */
  get prefixCache(): PrefixCacheStats {
    return this.session.prefixCache.stats();
  }

  /**
   * Up to `limit` tokens (at most `draftTokens`; when adaptive, as many as the {@link budget} finds worth it) after
   * `context` (the row's prompt and reply, its last token not yet run) for the row `owner`: the draft model's greedy
   * tokens while it is at least `minProbability` sure of them. Empty while it is still catching up with a long
   * context, or where its context ends.
   */
  async draft(owner: object, context: readonly number[], limit: number, reach?: number): Promise<number[]> {
    const max = Math.min(limit, this.settings.draftTokens, this.contextLength - context.length);
    if (max <= 0) return [];
    const allowed = this.settings.adaptive ? this.budget.limit(max) : max;
    if (allowed === 0) return [];
    const started = performance.now();
    const out = await this.drafted(owner, context, allowed, reach);
    // (a call that only caught up with a long context says nothing of what a drafted token costs)
    if (out.length > 0) this.budget.observeDraft(out.length, performance.now() - started);
    return out;
  }

  /** {@link draft}'s tokens, `limit` > 0. */
  private async drafted(owner: object, context: readonly number[], limit: number, reach: number | undefined): Promise<number[]> {
    if (owner !== this.owner) {
      this.release();
      this.owner = owner;
    }
    let logits = await this.catchUp(context, reach);
    const out: number[] = [];
    while (logits) {
      const { id, probability } = greedy(logits, this.vocab);
      if (probability < this.settings.minProbability) break;
      out.push(id);
      if (out.length === limit) break;
      logits = await this.kv.step([id]);
      this.fed.push(id);
    }
    return out;
  }

  /**
   * Brings the cache to `context` (taking back what it ran past the tokens the row kept) and returns the logits
   * after its last token; undefined while a long catch-up is still under way.
   */
  private async catchUp(context: readonly number[], reach: number | undefined): Promise<Float32Array | undefined> {
    if (this.prefill || this.kv.rows === 0) return this.prefillStep(context, reach);
    let same = 0;
    while (same < this.fed.length && same < context.length && this.fed[same] === context[same]) same++;
    // The last token is run again when the cache already holds it all: its logits are what drafting starts from.
    same = Math.min(same, context.length - 1);
    if (same === 0) {
      this.release();
      return this.prefillStep(context, reach);
    }
    this.kv.dropLast(this.fed.length - same);
    this.fed.length = same;
    const lag = context.slice(same, same + this.chunk);
    const logits = await this.kv.run(lag, lag.length);
    this.fed.push(...lag);
    if (this.fed.length < context.length) return undefined;
    return logits.subarray((lag.length - 1) * this.session.vocabSize, lag.length * this.session.vocabSize);
  }

  /**
   * One chunk of the owner's context into a cache of its own; once all of it is in, the cache is the draft model's,
   * with no room past `reach` (the positions the owner may reach: see BatchKv.rebuild).
   */
  private async prefillStep(context: readonly number[], reach: number | undefined): Promise<Float32Array | undefined> {
    this.prefill ??= new RowPrefill(this.session, context.slice(), this.chunk, this.session.prefixCache.lookup(context));
    const logits = await this.prefill.next();
    if (!logits) return undefined;
    const cache = this.prefill.cache;
    this.session.prefixCache.store(this.prefill.prompt, () => cache, true);
    this.kv.rebuild([], [cache], reach);
    this.fed = [...this.prefill.prompt];
    this.prefill = undefined;
    // The context may have grown while it was prefilled: the next draft catches up with the rest.
    return this.fed.length === context.length ? logits : undefined;
  }

  /** Drops the cache unless its row is among `rows` (the batch's rows once it changed). */
  keepFor(rows: readonly object[]): void {
    if (this.owner && !rows.includes(this.owner)) this.release();
  }

  /** Drops the cache and its row, keeping the row's positions in the prefix cache. */
  release(): void {
    // (a draft's positions need not be what a one-token step gives: the backbone checks every drafted token)
    if (this.kv.rows > 0) this.session.prefixCache.store(this.fed, () => this.kv.takeRow(0), true);
    this.kv.rebuild([], []);
    this.prefill = undefined;
    this.fed = [];
    this.owner = undefined;
  }
}

/** The most likely of the first `vocab` ids, and its probability. */
function greedy(logits: Float32Array, vocab: number): { id: number; probability: number } {
  const z = logits.subarray(0, vocab);
  const id = maxIndexIn(z, 0, vocab);
  return { id, probability: Math.exp(z[id]! - logSumExp(z)) };
}
