/**
 * The KV cache of a continuous batch: one cache of `[rows, kvHeads, length, headDim]` per past input, so that a
 * step feeds the cache as it is and takes the graph's present output as the next cache: no copy per step. Rows
 * join (prefilled alone, in chunks) and leave between steps; each change rebuilds the cache once, with the
 * columns no row uses any more trimmed. A per-row layout would instead gather every row into a batch tensor and
 * split the present back, two copies of the whole cache on every step; the counters below measure both.
 *
 * A row's positions sit on the side its graph needs. Left padding (most graphs) packs them at the right end and
 * masks the padding out. Right padding suits onnxruntime-genai GroupQueryAttention decoders: GQA reads no
 * per-key mask but each row's valid keys and position from `seqlens_k` (Σ mask − 1), and with past and present in
 * separate buffers its CPU kernel copies each row's first `seqlens_k + 1 − seq` past keys into a present of the
 * mask's width, the new key right after them; so each row's keys are packed from slot 0 and its new token lands
 * at its own next slot.
 */
import * as ort from 'onnxruntime-node';
import type { DecoderSession } from './decoder-session.js';
import { allocate, copyRow, KV_ROOM, pastNames, pastTensor, rowElements, stateBytesPerRow, writeStep, type CacheData } from './cache-tensors.js';
import { releaseTensors } from './release-tensors.js';

/**
 * One row's cache, as its own prefill left it: `[1, kvHeads, length, headDim]` per key and value input and
 * `[1, ...shape]` per recurrent state (see cache-tensors.ts); or one row of prompts prefilled together (see
 * {@link prefillTogether}), its positions on the side opposite its padding.
 */
export interface RowCache {
  past: Record<string, ort.Tensor>;
  length: number;
  /** The row of `past` that holds this cache (default 0). */
  row?: number;
  /** Positions each row of `past` holds (default `length`). */
  width?: number;
  /** The slot of the row's first position (default `width − length`: right-aligned after left padding). */
  start?: number;
}

/** Where a row cache's positions start in its row of `past`. */
export function rowStart(cache: RowCache): number {
  return cache.start ?? (cache.width ?? cache.length) - cache.length;
}

/**
 * A copy of a row cache's first `length` positions as a cache of its own (`[1, kvHeads, length, headDim]` per key and
 * value input, `[1, ...shape]` per state), as a prefill of those positions alone would leave it. A recurrent state
 * holds the row's whole sequence, so a cache with states is copied whole or not at all.
 */
export function copyRowCache(session: DecoderSession, cache: RowCache, length: number): RowCache {
  const sig = session.signature;
  if (length !== cache.length && sig.states.length > 0) throw new Error(`a recurrent state cannot be cut back from ${cache.length} to ${length} positions`);
  const from = { row: cache.row ?? 0, width: cache.width ?? cache.length, first: rowStart(cache), length };
  const past: Record<string, ort.Tensor> = {};
  for (const name of pastNames(sig)) {
    const out = allocate(sig, name, rowElements(sig, name, length));
    copyRow(sig, name, cache.past[name]!.data as CacheData, from, out, { row: 0, width: length, first: 0, length });
    past[name] = pastTensor(sig, name, out, 1, length);
  }
  return { past, length };
}

/** Bytes one position of one row takes across every layer's keys and values. */
export function kvBytesPerPosition(session: DecoderSession): number {
  const sig = session.signature;
  return sig.kv.length * 2 * sig.kvHeads * sig.headDim * (sig.kvType === 'float16' ? 2 : 4);
}

/** Byte counters of the cache. */
export interface KvCounters {
  /** Bytes copied to add and remove rows (and to give an appending cache more room). */
  copiedBytes: number;
  /** Bytes a per-row layout would have copied (gather before and split after every step). */
  perRowLayoutBytes: number;
}

/**
 * Query-by-key positions a prefill run's attention may span: its scores, `heads × run × positions` floats, are held
 * once by GroupQueryAttention's kernel and twice (masked, and their softmax) by the op graph. 256-token runs up to
 * about 2000 positions; past that, shorter runs keep them at 2 MiB a head instead of growing with the context. On
 * the Qwen2.5-0.5B-shaped Q4_0 module a 4096-token prompt then peaks at 1050 MB RSS against 1168-1174 with 4 MiB a
 * head, its prefill 12.4 s against 12.1-12.9 (1 MiB a head: 1007 MB, but 12.9-13.5 s).
 */
export const PREFILL_SCORE_SPAN = 128 * 4096;
/** The shortest run {@link prefillRunLength} shortens a chunk to: below it weights are read again for too little work. */
const MIN_PREFILL_RUN = 32;

/** Tokens of the next prefill run after `done` positions: `chunk`, shortened so run × (done + run) stays within {@link PREFILL_SCORE_SPAN}. */
export function prefillRunLength(chunk: number, done: number): number {
  if (!Number.isFinite(chunk)) return chunk;
  const fits = Math.floor((Math.sqrt(done * done + 4 * PREFILL_SCORE_SPAN) - done) / 2);
  return Math.min(chunk, Math.max(fits, MIN_PREFILL_RUN));
}

/**
 * A prompt prefilled alone, `chunk` tokens per run (fewer over a long context, see {@link prefillRunLength}), so
 * that running rows wait at most one chunk. A prompt longer
 * than a LongRoPE graph's original context runs whole: a chunk's rotation follows the length so far, and
 * transformers and llama.cpp rotate all of such a prompt with the long factors. So does every prompt of a graph with a
 * run-wide activation scale (`DecoderSession.runWideActivationScale`): a chunk's scale is its own, not the prompt's.
 */
export class RowPrefill {
  private done = 0;
  private past: Record<string, ort.Tensor> | undefined;
  /** Whether {@link past} is a chunk's present (not a cached prefix it started from): freed when the next chunk replaces it. */
  private ownsPast = false;
  /**
   * Set when the graph refused a chunk after a past (onnxruntime-genai exports reshape their mask for a
   * prompt or one token only): the prompt then ran whole, and later prompts should too.
   */
  chunkRefused = false;
  /** The last position's hidden state once the prompt is in, when the graph reports it (latent steps start from it). */
  hidden: Float32Array | undefined;
  /** Prompt tokens taken from a cached prefix instead of being run. */
  reused = 0;

  /**
   * @param start the cache of the prompt's first positions (a cached prefix, shorter than the prompt): the
   *   prefill goes on from it. Ignored where the prompt must run whole (LongRoPE past its original context).
   * @param onLogits given the logits of every position each run computes (`[positions × vocab]`, from position
   *   `from` on), for scoring a prompt; the graph must take `num_logits_to_keep`.
   */
  constructor(
    private readonly session: DecoderSession,
    readonly prompt: readonly number[],
    private chunk: number,
    start?: RowCache,
    private readonly onLogits?: (from: number, logits: Float32Array) => void,
  ) {
    if (prompt.length > (session.longRopeContext ?? Infinity) || session.runWideActivationScale) this.chunk = Infinity;
    else if (start && start.length < prompt.length) {
      this.past = start.past;
      this.done = start.length;
      this.reused = start.length;
    }
  }

  /** Runs the next chunk; returns the last position's logits (`[vocab]`) once the whole prompt is in. */
  async next(): Promise<Float32Array | undefined> {
    const end = Math.min(this.prompt.length, this.done + prefillRunLength(this.chunk, this.done));
    const ids = this.prompt.slice(this.done, end);
    const mask = new Array<number>(end).fill(1);
    const positions = ids.map((_, i) => this.done + i);
    let out: Awaited<ReturnType<DecoderSession['forward']>>;
    try {
      out = await this.session.forward(ids, 1, this.past, this.done, mask, positions, undefined, undefined, this.onLogits ? ids.length : undefined, true);
    } catch (err) {
      if (this.done === 0) throw err;
      if (this.reused > 0) this.session.prefixCache.refused(this.reused);
      this.chunkRefused = true;
      this.done = 0;
      this.reused = 0;
      this.past = undefined;
      this.ownsPast = false;
      this.chunk = Infinity;
      return this.next();
    }
    const { logits, present } = out;
    this.onLogits?.(this.done, logits);
    if (this.ownsPast) releaseTensors(Object.values(this.past!));
    this.past = present;
    this.ownsPast = true;
    this.done = end;
    this.hidden = out.hidden;
    return end === this.prompt.length ? logits.slice(logits.length - this.session.vocabSize) : undefined;
  }

  /** Prompt tokens in the cache so far. */
  get length(): number {
    return this.done;
  }

  /** The finished row's cache. */
  get cache(): RowCache {
    return { past: this.past!, length: this.done };
  }
}

/**
 * Prompts prefilled together in one run instead of one per prompt, whose per-operator costs then are paid once.
 * Returns each prompt's last-position logits (`[vocab]`) and its cache, a row of the shared present tensors.
 *
 * Left-padded graphs take the prompts left-padded to the longest, as a static batch is. A right-padded graph
 * (GroupQueryAttention) takes them right-padded, each row's keys from slot 0 and `seqlens_k` from the mask, and
 * returns logits of the last positions that hold every row's own last token (`num_logits_to_keep`; a graph
 * without it refuses prompts of different lengths). Each row then computes what its prompt alone computes:
 * running the last tokens as a separate step instead would not, and with activations quantized to int8 per
 * block such differences change greedy tokens.
 */
export async function prefillTogether(
  session: DecoderSession,
  prompts: readonly (readonly number[])[],
): Promise<{ logits: Float32Array[]; caches: RowCache[] }> {
  const width = Math.max(...prompts.map((p) => p.length));
  // (a left-padded prompt's padding would run through a recurrent state)
  if (session.signature.states.length > 0 && prompts.some((p) => p.length !== width)) throw new Error('prompts of different lengths cannot be prefilled together through recurrent states');
  const right = session.padding === 'right';
  const ids: number[] = [];
  const mask: number[] = [];
  const positions: number[] = [];
  for (const p of prompts) {
    const pad = width - p.length;
    for (let c = 0; c < width; c++) {
      // Left: padding first, its positions never attended to (1, as DecoderSession.prefill pads). Right: padding last.
      const own = right ? c < p.length : c >= pad;
      ids.push(own ? p[right ? c : c - pad]! : 0);
      mask.push(own ? 1 : 0);
      positions.push(right ? c : own ? c - pad : 1);
    }
  }
  const ends = right && prompts.some((p) => p.length !== width) ? prompts.map((p) => p.length - 1) : undefined;
  const { logits, present } = await session.forward(ids, prompts.length, undefined, 0, mask, positions, undefined, ends, undefined, true);
  return {
    logits: rowsOf(logits, prompts.length, session.vocabSize),
    caches: prompts.map((p, r) => ({ past: present, length: p.length, row: r, width, ...(right ? { start: 0 } : {}) })),
  };
}

/** `[rows × vocab]` logits as one array per row. */
function rowsOf(logits: Float32Array, rows: number, vocab: number): Float32Array[] {
  return Array.from({ length: rows }, (_, r) => logits.slice(r * vocab, (r + 1) * vocab));
}

/** What the continuous batch needs of a model's batch cache: {@link BatchKv}, or the backbone's row shards. */
export interface BatchCache {
  readonly rows: number;
  readonly bytes: number;
  readonly bytesPerPosition: number;
  /** Bytes of a row's recurrent states, whatever its length (0 for a plain decoder). */
  readonly stateBytesPerRow: number;
  readonly counters: KvCounters;
  /** Each row's last hidden state after the latest step, when the graph reports it. */
  readonly hidden: Float32Array | undefined;
  lengthOf(row: number): number;
  /** @param reach the positions the rows may reach (their widest reservation): room past it would never be written. */
  rebuild(keep: readonly number[], added: readonly RowCache[], reach?: number): void;
  takeRow(row: number): RowCache;
  step(tokens: readonly number[]): Promise<Float32Array>;
}

/**
 * A batch cache that can also feed each row several positions and take them back (a draft and its rejected rest):
 * {@link BatchKv}, and the backbone's row shards while the batch is narrow.
 */
export interface RunsCache extends BatchCache {
  /** Whether {@link run} and {@link dropLast} work on this cache now. */
  readonly takesRuns: boolean;
  run(tokens: readonly number[], seq: number): Promise<Float32Array>;
  dropLast(n: number): void;
}

/**
 * The running batch's cache and the runs that advance it. Its cache is never handed out (rows leave as copies), so
 * the cache a step or a rebuild replaces is freed at once ({@link releaseTensors}).
 *
 * With a graph that returns only each run's keys and values (`kvAppends`) the cache holds {@link KV_ROOM} slots of
 * room after its last position (`slots` ≥ `width`), no more than the rows may still write: a step feeds it as it is,
 * masked past `width`, and writes the new keys and values into slot `width` of each row; nothing is joined or copied
 * out per step.
 */
export class BatchKv implements RunsCache {
  private past: Record<string, ort.Tensor> = {};
  /** Valid positions of each row (on the side given by {@link padding}'s opposite). */
  private lengths: number[] = [];
  private width = 0;
  /** Slots each row of {@link past} has: {@link width}, plus the room an appending graph's steps write into. */
  private slots = 0;
  /** The positions the rows may reach (see {@link rebuild}): an appending graph's room ends there. */
  private reach = Infinity;
  readonly counters: KvCounters = { copiedBytes: 0, perRowLayoutBytes: 0 };
  /** Set once the graph refused a run of several positions. */
  private runRefused = false;
  /** Each row's last hidden state `[rows × hidden]` after the latest step, when the graph reports it. */
  hidden: Float32Array | undefined;

  /** @param padding the side of each row's padding; the session's own by default. */
  constructor(
    private readonly session: DecoderSession,
    readonly padding: 'left' | 'right' = session.padding,
  ) {}

  /** Where a row of `length` positions starts in a cache `width` positions wide. */
  private firstSlot(width: number, length: number): number {
    return this.padding === 'left' ? width - length : 0;
  }

  /** Bytes one position of one row takes across every layer's keys and values. */
  get bytesPerPosition(): number {
    return kvBytesPerPosition(this.session);
  }

  get stateBytesPerRow(): number {
    return stateBytesPerRow(this.session.signature);
  }

  /** Rows in the batch. */
  get rows(): number {
    return this.lengths.length;
  }

  /** Bytes the cache holds now (padding and room included). */
  get bytes(): number {
    return this.rows * (this.slots * this.bytesPerPosition + this.stateBytesPerRow);
  }

  /** Valid positions of a row. */
  lengthOf(row: number): number {
    return this.lengths[row]!;
  }

  /**
   * Slots a cache of `width` positions is given: where the graph appends, room for {@link KV_ROOM} more steps, or as
   * many as the rows may still write. Each row ends at `width` and stays short of its reservation, so the room
   * is never outgrown while the rows stay; rows already past it (latent steps a marker asked for) get the whole room.
   */
  private slotsFor(width: number): number {
    if (!this.session.signature.kvAppends) return width;
    return width + (this.reach > width ? Math.min(KV_ROOM, this.reach - width) : KV_ROOM);
  }

  /**
   * Keeps the rows listed in `keep` (in that order), then appends `added` (right-aligned in their `width`, as
   * {@link RowCache} describes them); one copy of what stays. With no rows left the cache is dropped entirely.
   * `reach`: the positions the rows may reach, their widest reservation (see {@link BatchCache.rebuild}).
   */
  rebuild(keep: readonly number[], added: readonly RowCache[], reach = Infinity): void {
    if (keep.length === this.rows && added.length === 0 && keep.every((r, i) => r === i)) return;
    this.reach = reach;
    this.relayout(keep, added, Math.max(0, ...keep.map((r) => this.lengths[r]!), ...added.map((c) => c.length)));
  }

  /** Copies the kept and added rows into a new cache `width` positions wide (and its room, at least `room` slots). */
  private relayout(keep: readonly number[], added: readonly RowCache[], width: number, room = 0): void {
    this.copyRows(
      [
        ...keep.map((r) => ({ source: this.past, row: r, srcWidth: this.slots, first: this.firstSlot(this.width, this.lengths[r]!), length: this.lengths[r]! })),
        ...added.map((c) => ({ source: c.past, row: c.row ?? 0, srcWidth: c.width ?? c.length, first: rowStart(c), length: c.length })),
      ],
      width,
      room,
    );
  }

  /** Copies `parts` (each `length` positions from slot `first` of a row of `source`) into the rows of a new cache. */
  private copyRows(parts: readonly { source: Record<string, ort.Tensor>; row: number; srcWidth: number; first: number; length: number }[], width: number, room: number): void {
    const sig = this.session.signature;
    const slots = parts.length > 0 ? Math.max(this.slotsFor(width), width + room) : 0;
    const past: Record<string, ort.Tensor> = {};
    if (parts.length > 0) {
      for (const name of pastNames(sig)) {
        const out = allocate(sig, name, parts.length * rowElements(sig, name, slots));
        parts.forEach((p, i) => {
          const from = { row: p.row, width: p.srcWidth, first: p.first, length: p.length };
          copyRow(sig, name, p.source[name]!.data as CacheData, from, out, { row: i, width: slots, first: this.firstSlot(width, p.length), length: p.length });
          this.counters.copiedBytes += rowElements(sig, name, p.length) * out.BYTES_PER_ELEMENT;
        });
        past[name] = pastTensor(sig, name, out, parts.length, slots);
      }
    }
    // (the batch's cache is its own: its steps' presents and the copies made here)
    releaseTensors(Object.values(this.past));
    this.past = past;
    this.lengths = parts.map((p) => p.length);
    this.width = width;
    this.slots = slots;
    this.hidden = undefined;
  }

  /** A copy of one row's cache, as its own prefill would leave it (to run it alone, then add it back). */
  takeRow(row: number): RowCache {
    const length = this.lengths[row]!;
    this.counters.copiedBytes += length * this.bytesPerPosition + this.stateBytesPerRow;
    return copyRowCache(this.session, { past: this.past, length, row, width: this.slots, start: this.firstSlot(this.width, length) }, length);
  }

  /** Feeds one token per row; returns `[rows × vocab]` last-position logits. */
  step(tokens: readonly number[]): Promise<Float32Array> {
    return this.advance(tokens, 1);
  }

  /**
   * Whether {@link run} and {@link dropLast} work on this cache: a graph with no recurrent state (which cannot be
   * taken back), logits of several positions (`num_logits_to_keep`), and either new keys and values out (positions
   * are taken back by no longer counting them) or left padding (they are cut off by a copy).
   */
  get takesRuns(): boolean {
    const sig = this.session.signature;
    return !this.runRefused && sig.states.length === 0 && this.session.keepsLogits && (sig.kvAppends || this.padding === 'left');
  }

  /**
   * Feeds `seq` tokens to each row (`tokens` `[rows × seq]`, e.g. a token and the draft that follows it) and
   * returns the logits of every position (`[rows × seq × vocab]`). Needs {@link takesRuns}. A graph that refuses
   * the run (some exports take a prompt or one token at a time) leaves the cache as it was, and takes no more runs.
   */
  async run(tokens: readonly number[], seq: number): Promise<Float32Array> {
    if (!this.takesRuns) throw new Error('runs of several positions need a graph without recurrent states that returns logits of several positions');
    try {
      return await this.advance(tokens, seq);
    } catch (err) {
      this.runRefused = true;
      throw err;
    }
  }

  /**
   * Takes back the last `n` positions of every row (a draft's rejected tokens): with new keys and values out their
   * slots become room again, which the next run writes over; else the rows are copied without them. Needs
   * {@link takesRuns}.
   */
  dropLast(n: number): void {
    if (n === 0) return;
    if (!this.takesRuns) throw new Error('positions can be taken back only from a graph without recurrent states');
    if (this.lengths.some((l) => l < n)) throw new Error(`cannot take back ${n} positions from a row of ${Math.min(...this.lengths)}`);
    if (this.session.signature.kvAppends) {
      this.width -= n;
      this.lengths = this.lengths.map((l) => l - n);
      this.hidden = undefined;
      return;
    }
    const rows = this.lengths.map((length, row) => ({ source: this.past, row, srcWidth: this.slots, first: this.firstSlot(this.width, length), length: length - n }));
    this.copyRows(rows, this.width - n, 0);
  }

  /** Feeds `seq` tokens a row: written into the cache's room, or joined by the graph. */
  private advance(tokens: readonly number[], seq: number): Promise<Float32Array> {
    // A per-row layout copies every row's cache into the batch tensor, then the present back out.
    this.counters.perRowLayoutBytes += this.lengths.reduce((n, l) => n + (2 * l + seq), 0) * this.bytesPerPosition;
    return this.session.signature.kvAppends ? this.appendRun(tokens, seq) : this.joinedRun(tokens, seq);
  }

  /** {@link advance} for a graph that returns joined caches: the present, `seq` positions wider, is the cache. */
  private async joinedRun(tokens: readonly number[], seq: number): Promise<Float32Array> {
    const { rows, width } = this;
    const span = width + seq;
    // Left: the padding masked out. Right (one token a step): Σ mask − 1 = the row's length, its new key's slot; the
    // present is one slot wider, room for the longest row's new key. Either way a row's next position is its length.
    const mask = new Array<number>(rows * span);
    const positions: number[] = [];
    for (let r = 0; r < rows; r++) {
      const length = this.lengths[r]!;
      for (let c = 0; c < span; c++) mask[r * span + c] = (this.padding === 'left' ? c >= width - length : c < length + seq) ? 1 : 0;
      for (let i = 0; i < seq; i++) positions.push(length + i);
    }
    const { logits, present, hidden } = await this.session.forward(tokens, rows, this.past, width, mask, positions, undefined, undefined, seq);
    this.hidden = hidden;
    releaseTensors(Object.values(this.past));
    this.past = present;
    this.width = this.slots = span;
    this.lengths = this.lengths.map((l) => l + seq);
    return logits;
  }

  /** {@link advance} for a graph that returns new keys and values: written into the cache's room (grown first when it lacks room for them). */
  private async appendRun(tokens: readonly number[], seq: number): Promise<Float32Array> {
    const sig = this.session.signature;
    if (this.width + seq > this.slots) {
      const all = this.lengths.map((_, r) => r);
      this.relayout(all, [], this.width, seq);
    }
    const { rows, width, slots } = this;
    // Each row's positions end at `width` (left padding before them, room after them, both masked); the new tokens are last.
    const span = slots + seq;
    const mask = new Array<number>(rows * span).fill(0);
    const positions: number[] = [];
    for (let r = 0; r < rows; r++) {
      mask.fill(1, r * span + width - this.lengths[r]!, r * span + width);
      mask.fill(1, r * span + slots, (r + 1) * span);
      for (let i = 0; i < seq; i++) positions.push(this.lengths[r]! + i);
    }
    const { logits, fresh, hidden } = await this.session.appendStep(tokens, this.past, slots, mask, positions, seq);
    this.hidden = hidden;
    writeStep(sig, this.past, fresh, rows, slots, width, seq);
    this.width = width + seq;
    this.lengths = this.lengths.map((l) => l + seq);
    return logits;
  }
}
