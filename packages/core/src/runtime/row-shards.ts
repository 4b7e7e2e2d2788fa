/**
 * Row shards of the backbone: a wide decode step runs as several narrower steps at once, each on a one-thread
 * copy of the backbone in its own worker holding the KV cache of its rows, instead of one step over all rows
 * on the backbone's multi-threaded session. onnxruntime's intra-op threads split every operator of a step
 * (hundreds of sub-millisecond operators, each ending on a barrier), which on the ~125M Q4_0 serving model
 * bought little over one thread at 8 rows (10.4 vs 11.9 ms), and a one-thread step of 4 rows took 6.9 ms. But on
 * this project's 2-vCPU machine two shards running at once slow each other (a 4-row step's thread time 5.5 ms
 * alone, 7.9 side by side) and each step pays ~2 ms of waking the workers and messages: on a quiet machine the
 * one session was faster (docs/benchmarks.md, "Serving"), so shards are off unless asked for (`rowShards: true`).
 * Narrow steps (fewer than `minRows` rows), a lone row's drafted runs and prefills stay on the backbone's own session.
 *
 * The batch sees one cache ({@link RunsCache}): rows keep their order, and rebuilds and steps are forwarded
 * to the shards in order (a worker handles its messages in order, so a rebuild needs no answer). Crossing
 * `minRows` moves the rows' caches between the backbone's cache and the shards once.
 */
import type { Worker } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
import { threadsPerCore } from './cpu-topology.js';
import { rowTensors, type CacheData } from './cache-tensors.js';
import { BatchKv, copyRowCache, type KvCounters, type RowCache, type RunsCache } from './batch-kv.js';
import type { DecoderSession, DecoderSource } from './decoder-session.js';
import { fromWire, spawnWorker } from './spawn-worker.js';
import type { FromShard, ToShard, WireRow } from './shard-worker.js';

/** Raised when a shard worker fails; the batch's rows fail with it. */
export class ShardError extends Error {
  override name = 'ShardError';
}

/** One shard worker and its pending answers. */
class ShardClient {
  private next = 0;
  private readonly pending = new Map<number, { resolve(msg: FromShard): void; reject(err: Error): void }>();
  private dead: Error | undefined;

  private constructor(private readonly worker: Worker) {
    worker.on('message', (msg: FromShard) => {
      if (!('id' in msg)) return;
      const p = this.pending.get(msg.id);
      this.pending.delete(msg.id);
      if (msg.type === 'error') p?.reject(fromWire(msg.error));
      else p?.resolve(msg);
    });
    const fail = (err: Error) => {
      this.dead ??= new ShardError(`a row shard of the backbone stopped: ${err.message}`);
      for (const p of this.pending.values()) p.reject(this.dead);
      this.pending.clear();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`exit code ${code}`)));
  }

  /** Starts a shard worker and waits until its session is open. */
  static async open(source: DecoderSource): Promise<ShardClient> {
    const worker = spawnWorker('shard-worker', { source });
    await new Promise<void>((resolve, reject) => {
      worker.once('error', reject);
      worker.once('message', (msg: FromShard) => {
        worker.off('error', reject);
        if (msg.type === 'ready') resolve();
        else {
          void worker.terminate();
          reject(msg.type === 'failed' ? fromWire(msg.error) : new ShardError(`unexpected first message ${msg.type}`));
        }
      });
    });
    return new ShardClient(worker);
  }

  /** False once the worker has failed or exited. */
  get alive(): boolean {
    return this.dead === undefined;
  }

  /** Ends the worker as a crash would (tests). */
  kill(): Promise<number> {
    return this.worker.terminate();
  }

  send(msg: ToShard, transfer: ArrayBuffer[] = []): void {
    if (!this.dead) this.worker.postMessage(msg, transfer);
  }

  ask(msg: { type: 'step'; tokens: number[] } | { type: 'take'; rows: number[] } | { type: 'release' }): Promise<FromShard> {
    if (this.dead) return Promise.reject(this.dead);
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...msg, id } as ToShard);
    });
  }

  async release(): Promise<void> {
    if (!this.dead) await this.ask({ type: 'release' }).catch(() => {});
    await this.worker.terminate();
  }
}

/** One row of a cache as compact arrays for the wire (see {@link WireRow}): its own copy's data. */
function wireRow(session: DecoderSession, cache: RowCache): WireRow {
  const own = copyRowCache(session, cache, cache.length);
  return { length: cache.length, past: Object.fromEntries(Object.entries(own.past).map(([name, t]) => [name, t.data as CacheData])) };
}

/** What the shards report in the batch's stats. */
export interface RowShardStats {
  /** Shard workers, each with a one-thread copy of the backbone. */
  workers: number;
  /** Rows from which a step runs on the shards. */
  minRows: number;
  /** Bytes of weights the copies hold (the backbone's weights once per worker). */
  weightBytes: number;
  /** Steps run on the shards, and on the backbone's own session, so far. */
  wideSteps: number;
  narrowSteps: number;
  /** Whether the workers are up and alive. */
  open: boolean;
  /** Why the workers could not be opened, when they could not. */
  error?: string;
}

/** Where a row of a wide batch lives: its shard and its position in that shard's cache. */
interface Place {
  shard: number;
  at: number;
}

/** The backbone's batch cache, split over row shards while the batch is at least `minRows` wide. */
export class RowShards implements RunsCache {
  private readonly local: BatchKv;
  private wide = false;
  /** Wide: each row's shard and position, in batch order. */
  private places: Place[] = [];
  /** Wide: each shard's rows' lengths in its cache order, and its cache width (mirrors of BatchKv's). */
  private shardLengths: number[][];
  private shardWidth: number[];
  /** Work that must finish before the next step (rows coming back from the shards). */
  private pending: Promise<void> = Promise.resolve();
  /** The lengths of the rows coming back, until they are in the backbone's cache. */
  private returning: number[] | undefined;
  private moved = 0;
  private counts = { wideSteps: 0, narrowSteps: 0 };
  /** The workers, once all are open. */
  private shards: ShardClient[] = [];
  private opening: Promise<void> | undefined;
  private openError: Error | undefined;

  /**
   * Shards of `session` (the backbone) over `workers` workers on `source` (its prepared graph); the workers open
   * with {@link start} (until then every step runs on the backbone's session). `weightBytes`: the backbone's
   * weights, for the stats.
   */
  constructor(
    private readonly session: DecoderSession,
    private readonly source: DecoderSource,
    private readonly workers: number,
    readonly minRows: number,
    private readonly weightBytes: number,
  ) {
    this.local = new BatchKv(session);
    this.shardLengths = [];
    this.shardWidth = [];
  }

  /** {@link RowShards} with its workers already open. */
  static async open(session: DecoderSession, source: DecoderSource, workers: number, minRows: number, weightBytes: number): Promise<RowShards> {
    const shards = new RowShards(session, source, workers, minRows, weightBytes);
    await shards.start();
    return shards;
  }

  /** Opens the workers (once); rejects with why they could not be opened, after closing the ones that did. */
  start(): Promise<void> {
    this.opening ??= (async () => {
      const opened = await Promise.allSettled(Array.from({ length: this.workers }, () => ShardClient.open(this.source)));
      const failure = opened.find((o) => o.status === 'rejected');
      const clients = opened.flatMap((o) => (o.status === 'fulfilled' ? [o.value] : []));
      if (failure) {
        await Promise.allSettled(clients.map((c) => c.release()));
        this.openError = (failure as PromiseRejectedResult).reason as Error;
        throw this.openError;
      }
      this.shards = clients;
      this.shardLengths = clients.map(() => []);
      this.shardWidth = clients.map(() => 0);
    })();
    return this.opening;
  }

  /** Whether wide steps can run on the shards: every worker open and alive. */
  private get usable(): boolean {
    return this.shards.length > 0 && this.shards.every((s) => s.alive);
  }

  get rows(): number {
    return this.wide ? this.places.length : (this.returning?.length ?? this.local.rows);
  }

  get bytesPerPosition(): number {
    return this.local.bytesPerPosition;
  }

  get stateBytesPerRow(): number {
    return this.local.stateBytesPerRow;
  }

  get bytes(): number {
    const row = (width: number) => width * this.bytesPerPosition + this.stateBytesPerRow;
    if (this.returning) return this.returning.length * row(Math.max(0, ...this.returning));
    if (!this.wide) return this.local.bytes;
    return this.shardLengths.reduce((n, lengths, s) => n + lengths.length * row(this.shardWidth[s]!), 0);
  }

  get counters(): KvCounters {
    return { copiedBytes: this.local.counters.copiedBytes + this.moved, perRowLayoutBytes: this.local.counters.perRowLayoutBytes };
  }

  get hidden(): Float32Array | undefined {
    return this.wide ? undefined : this.local.hidden;
  }

  lengthOf(row: number): number {
    if (this.returning) return this.returning[row]!;
    if (!this.wide) return this.local.lengthOf(row);
    const p = this.places[row]!;
    return this.shardLengths[p.shard]![p.at]!;
  }

  /** Rows of a wide batch cannot be taken out synchronously; the engine shards no graph with latent steps. */
  takeRow(row: number): RowCache {
    if (this.wide) throw new ShardError('a row of a sharded batch cannot be taken out; row shards are off for graphs with latent steps');
    return this.local.takeRow(row);
  }

  rebuild(keep: readonly number[], added: readonly RowCache[], reach?: number): void {
    const coming = this.returning;
    if (coming) {
      // Rows are still coming back from the shards: this rebuild runs once they are in.
      this.returning = [...keep.map((r) => coming[r]!), ...added.map((c) => c.length)];
      this.pending = this.pending.catch(() => {}).then(() => {
        this.returning = undefined;
        this.rebuild(keep, added, reach);
      });
      return;
    }
    const total = keep.length + added.length;
    // Until the workers are up, and once one has failed (its rows failed with it), steps run on the backbone's session.
    if (!this.wide && (total < this.minRows || !this.usable)) return this.local.rebuild(keep, added, reach);
    if (!this.wide) {
      // Widening: the kept rows' caches leave the backbone's cache for the shards.
      const caches = [...keep.map((r) => this.local.takeRow(r)), ...added];
      this.local.rebuild([], []);
      this.wide = true;
      this.places = [];
      this.shardLengths = this.shards.map(() => []);
      this.shardWidth = this.shards.map(() => 0);
      this.spread([], caches, reach);
      return;
    }
    if (total >= this.minRows) return this.spread(keep, added, reach);
    // Narrowing: the kept rows come back from the shards (before the next step), the shards are emptied.
    const takes = this.shards.map((shard, s) => {
      const rows = keep.flatMap((r) => (this.places[r]!.shard === s ? [this.places[r]!.at] : []));
      const answer = rows.length > 0 ? shard.ask({ type: 'take', rows }) : Promise.resolve(undefined);
      shard.send({ type: 'rebuild', keep: [], added: [] });
      return answer;
    });
    const from = keep.map((r) => this.places[r]!);
    const returning = [...from.map((p) => this.shardLengths[p.shard]![p.at]!), ...added.map((c) => c.length)];
    this.returning = returning;
    this.wide = false;
    this.places = [];
    this.shardLengths = this.shards.map(() => []);
    this.shardWidth = this.shards.map(() => 0);
    this.pending = this.pending.catch(() => {}).then(async () => {
      // A shard that failed leaves its rows lost: the step that waits for them fails, and the batch with it.
      const done = () => {
        if (this.returning === returning) this.returning = undefined;
      };
      const answers = await Promise.all(takes).catch((err: unknown) => {
        done();
        throw err;
      });
      const next = this.shards.map(() => 0);
      const back = from.map((p) => {
        const rows = (answers[p.shard] as Extract<FromShard, { type: 'rows' }>).rows;
        const row = rows[next[p.shard]!++]!;
        this.moved += this.bytesPerPosition * row.length + this.stateBytesPerRow;
        return { past: rowTensors(this.session.signature, row.past, row.length), length: row.length };
      });
      done();
      this.local.rebuild([], [...back, ...added], reach);
    });
  }

  /**
   * Wide to wide: kept rows stay on their shards (in batch order), each added row goes to the shard with the
   * fewest rows; every shard's cache is rebuilt as BatchKv would (kept, then added; columns trimmed).
   */
  private spread(keep: readonly number[], added: readonly RowCache[], reach?: number): void {
    const keptOn: number[][] = this.shards.map(() => []);
    const addedOn: RowCache[][] = this.shards.map(() => []);
    const placed: { shard: number; kept?: number; added?: number }[] = [];
    for (const r of keep) {
      const p = this.places[r]!;
      placed.push({ shard: p.shard, kept: keptOn[p.shard]!.push(p.at) - 1 });
    }
    for (const cache of added) {
      const sizes = this.shards.map((_, s) => keptOn[s]!.length + addedOn[s]!.length);
      const shard = sizes.indexOf(Math.min(...sizes));
      placed.push({ shard, added: addedOn[shard]!.push(cache) - 1 });
    }
    this.shards.forEach((shard, s) => {
      const same = addedOn[s]!.length === 0 && keptOn[s]!.length === this.shardLengths[s]!.length && keptOn[s]!.every((at, i) => at === i);
      if (same) return;
      const rows = addedOn[s]!.map((c) => wireRow(this.session, c));
      for (const row of rows) this.moved += this.bytesPerPosition * row.length + this.stateBytesPerRow;
      shard.send({ type: 'rebuild', keep: keptOn[s]!, added: rows, ...(reach !== undefined ? { reach } : {}) }, rows.flatMap((r) => Object.values(r.past).map((a) => a.buffer as ArrayBuffer)));
      const lengths = [...keptOn[s]!.map((at) => this.shardLengths[s]![at]!), ...addedOn[s]!.map((c) => c.length)];
      this.shardLengths[s] = lengths;
      this.shardWidth[s] = Math.max(0, ...lengths);
    });
    this.places = placed.map((p) => ({ shard: p.shard, at: p.kept ?? keptOn[p.shard]!.length + p.added! }));
  }

  /** Waits for the rows coming back from the shards (and rebuilds queued behind them); throws where a shard lost them. */
  private async settle(): Promise<void> {
    for (let p = this.pending; ; p = this.pending) {
      try {
        await p;
      } catch (err) {
        this.pending = Promise.resolve();
        throw err;
      }
      if (p === this.pending) return;
    }
  }

  async step(tokens: readonly number[]): Promise<Float32Array> {
    await this.settle();
    if (!this.wide) {
      this.counts.narrowSteps++;
      return this.local.step(tokens);
    }
    this.counts.wideSteps++;
    const byShard: number[][] = this.shards.map((_, s) => new Array<number>(this.shardLengths[s]!.length));
    this.places.forEach((p, r) => (byShard[p.shard]![p.at] = tokens[r]!));
    const answers = await Promise.all(
      this.shards.map((shard, s) => (byShard[s]!.length > 0 ? shard.ask({ type: 'step', tokens: byShard[s]! }) : Promise.resolve(undefined))),
    );
    const V = this.session.vocabSize;
    const logits = new Float32Array(this.places.length * V);
    this.places.forEach((p, r) => {
      const shardLogits = (answers[p.shard] as Extract<FromShard, { type: 'logits' }>).logits;
      logits.set(shardLogits.subarray(p.at * V, (p.at + 1) * V), r * V);
    });
    this.shardLengths = this.shardLengths.map((lengths) => lengths.map((l) => l + 1));
    this.shardWidth = this.shardWidth.map((w, s) => (this.shardLengths[s]!.length > 0 ? w + 1 : 0));
    return logits;
  }

  /**
   * Whether a run of several positions can be fed and taken back (see {@link BatchKv.run}): only while the batch is
   * narrow, its rows in the backbone's cache (no shard takes runs: drafts run for a row alone).
   */
  get takesRuns(): boolean {
    return !this.wide && this.local.takesRuns;
  }

  /** {@link BatchKv.run} on the backbone's cache, once rows coming back from the shards are in; counted as a narrow step. */
  async run(tokens: readonly number[], seq: number): Promise<Float32Array> {
    await this.settle();
    if (this.wide) throw new ShardError('a run of several positions cannot be fed to a sharded batch');
    const logits = await this.local.run(tokens, seq);
    this.counts.narrowSteps++;
    return logits;
  }

  /** {@link BatchKv.dropLast} on the backbone's cache (after a run, before the batch changes). */
  dropLast(n: number): void {
    if (this.wide || this.returning) throw new ShardError("positions can be taken back only from rows in the backbone's cache");
    this.local.dropLast(n);
  }

  stats(): RowShardStats {
    return {
      workers: this.workers,
      minRows: this.minRows,
      weightBytes: this.weightBytes * this.workers,
      ...this.counts,
      open: this.usable,
      ...(this.openError ? { error: this.openError.message } : {}),
    };
  }

  /** Ends shard `i`'s worker as a crash would (tests). */
  killShard(i: number): Promise<number> {
    return this.shards[i]!.kill();
  }

  /** Stops the shard workers (after they finish opening, if they are). */
  async release(): Promise<void> {
    await this.opening?.catch(() => {});
    await Promise.allSettled(this.shards.map((s) => s.release()));
  }
}

/** Rows from which a step runs on the shards: two per shard (a one-thread step of two rows costs about one of one). */
export const SHARD_MIN_ROWS_PER_WORKER = 2;

/**
 * How many row shards the backbone gets: none unless asked for (`choice` true; see the header for why), then one
 * per intra-op thread it was given (two or more), when it runs on the CPU without latent steps (a latent row's
 * cache is taken out between steps) and the batch can be wide enough.
 */
export function rowShardWorkers(opts: {
  choice: boolean | undefined;
  /** The backbone's intra-op threads; undefined: onnxruntime's default, one per physical core. */
  threads: number | undefined;
  device: string | undefined;
  latent: boolean;
  maxBatch: number;
}): number {
  const threads = opts.threads ?? Math.max(1, Math.floor(availableParallelism() / threadsPerCore()));
  if (opts.choice !== true || opts.latent || (opts.device ?? 'cpu') !== 'cpu' || threads < 2) return 0;
  if (opts.maxBatch < SHARD_MIN_ROWS_PER_WORKER * threads) return 0;
  return threads;
}
