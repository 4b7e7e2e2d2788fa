/**
 * Prefix caching: the KV caches of recent prompts of one model, so that a prompt beginning with one of them is
 * prefilled from where the cached one ends: a conversation's next turn (the previous prompt, answer aside),
 * an agent's next step, requests sharing a system prompt or tool list. llama.cpp's server (`cache_prompt`) and
 * vLLM (automatic prefix caching) do the same; here a prompt's cache is kept whole, least recently used first out
 * of a byte budget.
 *
 * A position's keys and values depend only on the tokens up to it, so a cached prompt's first positions are the
 * cache of any prompt that begins with the same tokens. Only positions a prefill computed are kept, and at least
 * two tokens are always run: onnxruntime's CPU kernels compute a single-row product (a decode step) along another
 * path than a multi-row one, and on graphs with int8-quantized activations that changed greedy continuations
 * (a 4-bit 125M model: reusing decode steps' positions changed 7 of 16, running a prompt's last token alone 6 of
 * 16; with the rule none of 56). Nothing is kept or reused on a LongRoPE graph past its original
 * context, whose rotation depends on the whole length.
 *
 * A hybrid model's recurrent state holds a whole sequence and cannot be cut back: its cached prompts are reused
 * only whole, by prompts that begin with all of one (the next turn of a conversation still does).
 */
import { copyRowCache, kvBytesPerPosition, type RowCache } from './batch-kv.js';
import { stateBytesPerRow } from './cache-tensors.js';
import type { DecoderSession } from './decoder-session.js';

/** KV bytes a model keeps for prefix caching unless its session is told otherwise. */
export const DEFAULT_PREFIX_CACHE_BYTES = 128 * 2 ** 20;

interface Entry {
  ids: readonly number[];
  /** A single-row cache (`[1, kvHeads, length, headDim]`) of `ids`. */
  cache: RowCache;
}

/** What a prefix cache holds and has saved. */
export interface PrefixCacheStats {
  /** Bytes of KV cache held. */
  bytes: number;
  /** The budget those bytes stay within. */
  budgetBytes: number;
  /** Sequences held. */
  entries: number;
  /** Prompt tokens looked up. */
  queriedTokens: number;
  /** Prompt tokens found cached (not run). */
  hitTokens: number;
}

/** The cached sequences of one model. */
export class PrefixCache {
  /** Least recently used first. */
  private entries: Entry[] = [];
  private held = 0;
  private queried = 0;
  private hits = 0;
  private off = false;

  /**
   * @param budgetBytes bytes of KV cache kept at most (0: nothing is kept)
   * @param minTokens shortest prefix worth taking (a copy of a few positions saves less than it costs)
   */
  constructor(
    private readonly session: DecoderSession,
    private readonly budgetBytes: number,
    private readonly minTokens = 16,
  ) {}

  /** Bytes a cached sequence of `length` positions holds. */
  private bytesOf(length: number): number {
    return length * kvBytesPerPosition(this.session) + stateBytesPerRow(this.session.signature);
  }

  /** Whether cached caches can only be taken whole (a recurrent state cannot be cut back). */
  private get wholeOnly(): boolean {
    return this.session.signature.states.length > 0;
  }

  /** Whether anything is kept: a budget above 0, and no refusal from the graph. */
  get enabled(): boolean {
    return this.budgetBytes > 0 && !this.off;
  }

  /**
   * A prefix from {@link lookup} the graph refused to go on from (a run after a past): not counted as found,
   * and nothing is kept or looked up any more.
   */
  refused(length: number): void {
    this.hits -= length;
    this.off = true;
    this.entries = [];
    this.held = 0;
  }

  /** Longest positions this model's caches may be kept or reused for. */
  private get maxLength(): number {
    return this.session.longRopeContext ?? Infinity;
  }

  /**
   * The cache of the longest cached prefix of `prompt`, at most all but its last two tokens (see above), or
   * undefined when none of at least `minTokens` tokens is held.
   */
  lookup(prompt: readonly number[]): RowCache | undefined {
    this.queried += prompt.length;
    if (!this.enabled || prompt.length > this.maxLength) return undefined;
    let best: Entry | undefined;
    let bestLength = 0;
    for (const e of this.entries) {
      const n = commonPrefix(e.ids, prompt, prompt.length - 2);
      if (n > bestLength && (!this.wholeOnly || n === e.ids.length)) [best, bestLength] = [e, n];
    }
    if (!best || bestLength < this.minTokens) return undefined;
    this.touch(best);
    this.hits += bestLength;
    return bestLength === best.cache.length ? best.cache : copyRowCache(this.session, best.cache, bestLength);
  }

  /**
   * Keeps the cache of `ids` (its first `ids.length` positions), taken only when needed; `owned`: its tensors are
   * no one else's and are kept as they are, otherwise copied. Sequences it begins with are dropped, and the least
   * recently used beyond the budget.
   */
  store(ids: readonly number[], take: () => RowCache, owned: boolean): void {
    const length = ids.length;
    const bytes = this.bytesOf(length);
    if (!this.enabled || length < this.minTokens || length > this.maxLength || bytes > this.budgetBytes) return;
    // (a longer sequence covers this one, and this one the shorter ones, where caches can be cut back)
    const covers = (longer: readonly number[], shorter: readonly number[]) =>
      (this.wholeOnly ? longer.length === shorter.length : longer.length >= shorter.length) && commonPrefix(longer, shorter, shorter.length) === shorter.length;
    const covering = this.entries.find((e) => covers(e.ids, ids));
    if (covering) return this.touch(covering);
    const cache = take();
    if (this.wholeOnly && cache.length !== length) return;
    this.entries = this.entries.filter((e) => {
      const covered = covers(ids, e.ids);
      if (covered) this.held -= this.bytesOf(e.cache.length);
      return !covered;
    });
    const plain = owned && (cache.row ?? 0) === 0 && (cache.width ?? cache.length) === length && cache.length === length;
    this.entries.push({ ids: [...ids], cache: plain ? cache : copyRowCache(this.session, cache, length) });
    this.held += bytes;
    while (this.held > this.budgetBytes) {
      const old = this.entries.shift()!;
      this.held -= this.bytesOf(old.cache.length);
    }
  }

  /** What the cache holds now, and its lookups so far. */
  stats(): PrefixCacheStats {
    return { bytes: this.held, budgetBytes: this.budgetBytes, entries: this.entries.length, queriedTokens: this.queried, hitTokens: this.hits };
  }

  private touch(e: Entry): void {
    this.entries.splice(this.entries.indexOf(e), 1);
    this.entries.push(e);
  }
}

/** Length of the common prefix of `a` and `b`, at most `limit`. */
function commonPrefix(a: readonly number[], b: readonly number[], limit: number): number {
  const n = Math.min(a.length, b.length, limit);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}
