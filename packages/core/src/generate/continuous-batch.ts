/**
 * Continuous batching over one backbone: requests share the running decode batch. A new request is prefilled
 * alone, one bounded chunk per step (running rows stall by one chunk at most), and its rows join at the next
 * step; a row that finishes or is aborted leaves at once and its cache is dropped. Every row keeps its own
 * sampler, stop strings, constraint and token limit, so its output is what it gives alone. Work that cannot
 * share the batch (reasoners, latent steps, traces, right-padded graphs) runs alone, in arrival order, once the
 * batch has drained.
 */
import { Sampler } from '../sampling/index.js';
import type { DecodeFn } from '../tokenizer/stream-decoder.js';
import type { Constraint } from '../constrain/types.js';
import type { DecoderSession } from '../runtime/decoder-session.js';
import { BatchKv, RowPrefill, type KvCounters, type RowCache } from '../runtime/batch-kv.js';
import { checkPrompts, PromptError, RowState, type DecodeLoopOutput } from './decode-loop.js';
import { StopStringMatcher } from './stop-strings.js';
import { validateGenerateOptions } from './options.js';
import type { GenerateOptions, TokenEvent } from './types.js';

/** Limits of the running batch. */
export interface BatchLimits {
  /** Rows decoded together at most (default 8); a request with more prompts runs when the batch is empty. */
  maxBatch?: number;
  /** Bytes the batch's KV cache may reach, each row counted at its prompt plus its token limit (default: no limit). */
  kvBudgetBytes?: number;
  /** Prompt tokens prefilled per run while other rows wait (default 256). */
  prefillChunk?: number;
  /** Requests waiting for room at most; one more is refused with a {@link QueueFullError} (default: no limit). */
  maxQueue?: number;
}

/** Raised for a request that would wait while `maxQueue` requests already wait. */
export class QueueFullError extends Error {
  override name = 'QueueFullError';
}

/** Raised when a request could never fit the KV memory budget. */
export class KvBudgetError extends Error {
  override name = 'KvBudgetError';
}

/** One request for the batch. */
export interface BatchRequest {
  prompts: number[][];
  options: GenerateOptions;
  eosTokenIds: readonly number[];
  decode?: DecodeFn;
  /** Ids at or above this are never sampled (the shared vocabulary). */
  vocabLimit?: number;
  contextLength?: number;
  constraints?: readonly (Constraint | undefined)[];
  shouldAbort(): boolean;
  onToken(event: TokenEvent): void;
}

/** What the batch reports about itself. */
export interface BatchStats {
  /** Rows decoding or being prefilled. */
  running: number;
  /** Requests waiting for room. */
  waiting: number;
  /** Bytes of KV cache held (the batch and prompts being prefilled). */
  kvBytes: number;
  counters: KvCounters;
}

interface Job {
  request: BatchRequest;
  rows: RowState[];
  /** Positions fed to each row (prompt, then one per token). */
  used: number[];
  reserve: number;
  maxTokens: number;
  eos: Set<number>;
  unfinished: number;
  admittedAt: number;
  prefillMs: number;
  firstTokenAt: number;
  steps: number;
  resolve(out: DecodeLoopOutput): void;
  reject(err: Error): void;
}

interface Exclusive {
  run(): Promise<void>;
}

/** A row of the running batch: where its latest logits are, and its last token. */
interface Live {
  job: Job;
  row: number;
  logits: Float32Array;
  token: number;
}

const yieldToMessages = () => new Promise<void>((r) => setImmediate(r));

/** The running batch of one backbone. */
export class ContinuousBatch {
  private readonly queue: (Job | Exclusive)[] = [];
  private readonly kv: BatchKv;
  /** Rows in the batch, in cache order. */
  private live: Live[] = [];
  /** Prompts being prefilled, first one running; each joins once its prefill is done. */
  private prefills: { job: Job; row: number; run: RowPrefill }[] = [];
  private ready: { job: Job; row: number; logits: Float32Array; cache: RowCache }[] = [];
  private running: Promise<void> | undefined;
  private readonly maxBatch: number;
  private chunk: number;

  constructor(
    private readonly session: DecoderSession,
    /** Width of the logits the sampler sees (the shared vocabulary; wider logits are cut). */
    private readonly vocab: number,
    private readonly limits: BatchLimits = {},
  ) {
    this.kv = new BatchKv(session);
    this.maxBatch = limits.maxBatch ?? 8;
    this.chunk = limits.prefillChunk ?? 256;
  }

  /** Queues a request; resolves once all its rows have finished. */
  submit(request: BatchRequest): Promise<DecodeLoopOutput> {
    return new Promise((resolve, reject) => this.enqueue(request, resolve, reject));
  }

  /** Checks a request and queues it (throws, rejecting the submission, for one that can never run). */
  private enqueue(request: BatchRequest, resolve: (out: DecodeLoopOutput) => void, reject: (err: Error) => void): void {
    validateGenerateOptions(request.options);
    checkPrompts(request.prompts, this.vocab);
    const { options } = request;
    const maxTokens = options.maxTokens ?? 256;
    const context = request.contextLength ?? Infinity;
    request.prompts.forEach((p, r) => {
      if (p.length > context) {
        throw new PromptError(`prompt ${r} has ${p.length} tokens, more than the model's context of ${context} positions; shorten the prompt`);
      }
    });
    const reserve = Math.min(context, Math.max(...request.prompts.map((p) => p.length)) + maxTokens);
    const budget = this.limits.kvBudgetBytes;
    const needs = request.prompts.length * reserve * this.kv.bytesPerPosition;
    if (budget !== undefined && needs > budget) {
      throw new KvBudgetError(`this request needs ${needs} bytes of KV cache (${request.prompts.length} rows × ${reserve} positions), more than the budget of ${budget} bytes; lower maxTokens or raise kvBudgetBytes`);
    }
    this.refuseWhenFull(this.queue.length === 0 && this.hasRoom(request.prompts.length, reserve));
    const stops = options.stop?.length && request.decode ? new StopStringMatcher(options.stop) : undefined;
    const job: Job = {
      request,
      rows: request.prompts.map((p, r) => new RowState(p, new Sampler(options), request.decode, stops, undefined, request.constraints?.[r])),
      used: request.prompts.map((p) => p.length),
      reserve,
      maxTokens,
      eos: new Set(options.ignoreEos ? [] : (options.eosTokenIds ?? request.eosTokenIds)),
      unfinished: request.prompts.length,
      admittedAt: 0,
      prefillMs: 0,
      firstTokenAt: 0,
      steps: 0,
      resolve,
      reject,
    };
    this.queue.push(job);
    // Admitted at once when there is room, so that it never counts as waiting.
    this.admitRequests();
    this.kick();
  }

  /** Runs `work` alone: after what is queued before it, with the batch empty, and before anything after it. */
  exclusive<T>(work: () => Promise<T>): Promise<T> {
    return new Promise((resolve, reject) => {
      this.refuseWhenFull(false);
      this.queue.push({ run: () => work().then(resolve, reject) });
      this.kick();
    });
  }

  /** Rows running, requests waiting, KV bytes. */
  stats(): BatchStats {
    const prefilling = this.prefills.reduce((n, p) => n + p.run.length, 0);
    const readyBytes = this.ready.reduce((n, r) => n + r.cache.length, 0);
    return {
      running: this.live.length + this.ready.length + this.prefills.length,
      waiting: this.queue.length,
      kvBytes: this.kv.bytes + (prefilling + readyBytes) * this.kv.bytesPerPosition,
      counters: { ...this.kv.counters },
    };
  }

  private kick(): void {
    this.running ??= this.loop().finally(() => {
      this.running = undefined;
      if (this.queue.length > 0) this.kick();
    });
  }

  private get rowsInUse(): number {
    return this.live.length + this.ready.length + this.prefills.length;
  }

  /** Moves queued requests into prefill while rows and KV budget allow; runs an exclusive one when idle. */
  private async admit(): Promise<void> {
    for (;;) {
      this.admitRequests();
      const head = this.queue[0];
      if (!head || 'request' in head || this.rowsInUse > 0) return;
      this.queue.shift();
      await head.run();
    }
  }

  /** Moves requests at the head of the queue into prefill while rows and KV budget allow. */
  private admitRequests(): void {
    for (;;) {
      const head = this.queue[0];
      if (!head || !('request' in head) || !this.hasRoom(head.rows.length, head.reserve)) return;
      this.queue.shift();
      if (head.request.shouldAbort()) {
        // Aborted while it waited: nothing is run.
        for (const row of head.rows) row.end('abort');
        this.finish(head);
        continue;
      }
      head.admittedAt = performance.now();
      head.rows.forEach((row, r) => this.prefills.push({ job: head, row: r, run: new RowPrefill(this.session, row.prompt, this.chunk) }));
    }
  }

  /** Whether `rows` rows reserving `reserve` positions each can join now (always, into an empty batch). */
  private hasRoom(rows: number, reserve: number): boolean {
    const busy = this.rowsInUse;
    if (busy === 0) return true;
    if (busy + rows > this.maxBatch) return false;
    const budget = this.limits.kvBudgetBytes;
    if (budget === undefined) return true;
    // The batch's projected footprint: every row padded to the longest reservation.
    const jobs = new Set([...this.live.map((l) => l.job), ...this.ready.map((r) => r.job), ...this.prefills.map((p) => p.job)]);
    const widest = Math.max(reserve, ...[...jobs].map((j) => j.reserve));
    return (busy + rows) * widest * this.kv.bytesPerPosition <= budget;
  }

  /** Throws a {@link QueueFullError} when a request that cannot start now would exceed `maxQueue` waiting. */
  private refuseWhenFull(startsNow: boolean): void {
    const max = this.limits.maxQueue;
    if (max === undefined || startsNow || this.queue.length < max) return;
    throw new QueueFullError(`${this.queue.length} requests are already waiting for this engine (maxQueue ${max}); retry later`);
  }

  private async loop(): Promise<void> {
    for (;;) {
      // New requests arrive as messages: let them in between steps.
      await yieldToMessages();
      await this.admit();
      if (this.rowsInUse === 0) {
        if (this.queue.length === 0) return;
        continue;
      }
      try {
        await this.prefillChunk();
        await this.sampleAndStep();
      } catch (err) {
        this.failAll(err as Error);
      }
    }
  }

  /** One chunk of the first prompt being prefilled; a finished prompt is ready to join. */
  private async prefillChunk(): Promise<void> {
    const first = this.prefills[0];
    if (!first) return;
    if (first.job.request.shouldAbort()) {
      // Its rows already in the batch leave at the next sampling, where they are seen finished.
      this.ready = this.ready.filter((r) => r.job !== first.job);
      this.endAborted(first.job);
      return;
    }
    const logits = await first.run.next();
    if (first.run.chunkRefused) this.chunk = Infinity;
    if (!logits) return;
    this.prefills.shift();
    if (first.job.prefillMs === 0) first.job.prefillMs = performance.now() - first.job.admittedAt;
    this.ready.push({ job: first.job, row: first.row, logits, cache: first.run.cache });
  }

  /**
   * Samples every row that has logits (the batch and the rows just prefilled), drops finished rows, lets the
   * ready rows join, and feeds the sampled tokens in one step.
   */
  private async sampleAndStep(): Promise<void> {
    const V = this.session.vocabSize;
    const keep: number[] = [];
    const stay: Live[] = [];
    const joining: Live[] = [];
    const caches: RowCache[] = [];
    const candidates = [...this.live.map((l, i) => ({ live: l, index: i as number | undefined, cache: undefined as RowCache | undefined })), ...this.ready.map((r) => ({ live: { job: r.job, row: r.row, logits: r.logits, token: 0 }, index: undefined, cache: r.cache }))];
    this.ready = [];
    for (const c of candidates) {
      const { job, row: r } = c.live;
      const row = job.rows[r]!;
      if (row.finish) continue;
      if (job.request.shouldAbort()) {
        this.endAborted(job);
        continue;
      }
      const limit = Math.min(job.request.vocabLimit ?? this.vocab, this.vocab);
      const logits = c.live.logits.subarray(0, limit);
      let id: number;
      let text: string;
      try {
        if (row.constraint) await row.constraint.mask(logits);
        id = row.sampler.sample(logits, { generated: row.ids, prompt: row.prompt });
        row.constraint?.accept(id);
        // Once the grammar has taken its stop token the reply is complete (even when EOS is otherwise ignored).
        text = row.accept(id, job.eos.has(id) || row.constraint?.isComplete() === true);
      } catch (err) {
        this.failJob(job, err as Error);
        continue;
      }
      // A token is sampled from logits already computed; only feeding it needs a free position.
      const lastFit = job.used[r]! >= (job.request.contextLength ?? Infinity);
      if (!row.finish && (row.ids.length >= job.maxTokens || lastFit)) text += row.end('length');
      if (job.firstTokenAt === 0) job.firstTokenAt = performance.now();
      job.request.onToken({ row: r, id, text });
      if (row.finish) {
        if (--job.unfinished === 0) this.finish(job);
        continue;
      }
      c.live.token = id;
      if (c.index !== undefined) {
        keep.push(c.index);
        stay.push(c.live);
      } else {
        caches.push(c.cache!);
        joining.push(c.live);
      }
    }
    // Rows of aborted jobs may have been kept before their job was seen to abort.
    const kept = keep.filter((_, i) => !stay[i]!.job.rows[stay[i]!.row]!.finish);
    const stayed = stay.filter((l) => !l.job.rows[l.row]!.finish);
    const joined = joining.filter((l) => !l.job.rows[l.row]!.finish);
    this.kv.rebuild(kept, caches.filter((_, i) => !joining[i]!.job.rows[joining[i]!.row]!.finish));
    this.live = [...stayed, ...joined];
    if (this.live.length === 0) return;
    const logits = await this.kv.step(this.live.map((l) => l.token));
    const steppedJobs = new Set<Job>();
    this.live.forEach((l, i) => {
      l.logits = logits.subarray(i * V, (i + 1) * V);
      l.job.used[l.row]!++;
      steppedJobs.add(l.job);
    });
    for (const job of steppedJobs) job.steps++;
  }

  private endAborted(job: Job): void {
    for (const row of job.rows) if (!row.finish) row.end('abort');
    this.prefills = this.prefills.filter((p) => p.job !== job);
    if (job.unfinished > 0) {
      job.unfinished = 0;
      this.finish(job);
    }
  }

  /** A request that failed on its own (e.g. its grammar refused a token) leaves; the others go on. */
  private failJob(job: Job, err: Error): void {
    for (const row of job.rows) if (!row.finish) row.end('abort');
    this.prefills = this.prefills.filter((p) => p.job !== job);
    if (job.unfinished > 0) {
      job.unfinished = 0;
      job.reject(err);
    }
  }

  private finish(job: Job): void {
    const promptTokens = job.request.prompts.reduce((n, p) => n + p.length, 0);
    const completionTokens = job.rows.reduce((n, r) => n + r.ids.length, 0);
    job.resolve({
      rows: job.rows.map((r) => ({ ids: r.ids, text: r.text, finishReason: r.finish ?? 'abort' })),
      usage: { promptTokens, completionTokens },
      prefillMs: job.prefillMs,
      decodeMs: job.firstTokenAt ? performance.now() - job.firstTokenAt : 0,
      decodeSteps: Math.max(0, job.steps),
    });
  }

  /** A failed run leaves the cache unusable: every request in the batch fails with it, the queue goes on. */
  private failAll(err: Error): void {
    const jobs = new Set([...this.live.map((l) => l.job), ...this.ready.map((r) => r.job), ...this.prefills.map((p) => p.job)]);
    this.live = [];
    this.ready = [];
    this.prefills = [];
    this.kv.rebuild([], []);
    for (const job of jobs) job.reject(err);
  }
}
