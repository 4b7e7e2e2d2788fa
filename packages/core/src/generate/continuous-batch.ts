/**
 * Continuous batching over one backbone: requests share the running decode batch. A new request is prefilled
 * alone, one bounded chunk per step (running rows stall by one chunk at most), and its rows join at the next
 * step; a row that finishes or is aborted leaves at once and its cache is dropped. Every row keeps its own
 * sampler, stop strings, constraint and token limit, so its output is what it gives alone. A row's LiteReason
 * latent steps run on its own backbone cache, taken out of the batch between two steps and added back (the
 * running rows wait for them, as for a prefill chunk). A reasoner placed in a lane joins through a copy on this
 * thread (see {@link ContinuousBatch.attachReasoner}). Each model's cache is padded on the side its graph needs
 * (right for GroupQueryAttention graphs, see {@link BatchKv}); a graph that quantizes a run's activations together
 * keeps each row's cache apart and runs each row alone ({@link LoneRowsKv}), its prompts whole and never beside another,
 * and so does one that cannot take rows of different lengths in one run (see {@link rowsShareRuns}).
 * Work that cannot share the batch (traces) runs alone, in arrival order, once the batch has drained.
 */
import { checkLogitBiasIds } from '../sampling/index.js';
import type { DecoderSession } from '../runtime/decoder-session.js';
import { BatchKv, prefillTogether, RowPrefill, type BatchCache, type KvCounters, type RowCache, type RunsCache } from '../runtime/batch-kv.js';
import type { PrefixCacheStats } from '../runtime/prefix-cache.js';
import type { RowShards, RowShardStats } from '../runtime/row-shards.js';
import { LoneRowsKv } from '../runtime/lone-rows-kv.js';
import { rowsShareRuns } from '../onnx/signature.js';
import { checkPrompts, fixedLatentSteps, LatentPolicyError, latentRoom, newRows, pastContext, type RowState, type DecodeLoopInput, type DecodeLoopOutput, type LatentDriver } from './decode-loop.js';
import { rowLatentSteps, type LatentProjector } from '../runtime/row-latent.js';
import { StopStringMatcher } from './stop-strings.js';
import type { TokenLogprobs } from './types.js';
import { DEFAULT_MAX_TOKENS, checkStopTokenIds, validateGenerateOptions } from './options.js';
import { accumulateLogits, combineWithBackbone, fusionScale, type FusionMode } from '../compose/fusion.js';
import { weightAt, type WeightSpec } from '../compose/weights.js';
import { reasonerFailed } from '../compose/reasoner-group.js';
import { DEFAULT_PROMPT_LOOKUP, lookupDraft, lookupPrediction, type PromptLookup } from './prompt-lookup.js';
import { DraftModelError, type DraftModel } from './draft-model.js';

/** Rows decoded together at most, unless {@link BatchLimits.maxBatch} says otherwise. */
export const DEFAULT_MAX_BATCH = 8;

/** Steps a row waits at most before drafting again after drafts it wrote none of. */
const MAX_DRAFT_PAUSE = 16;

/** Prompt tokens prefilled per run while running rows wait, unless `prefillChunk` says otherwise. */
export const DEFAULT_PREFILL_CHUNK = 256;

/** Limits of the running batch. */
export interface BatchLimits {
  /** Rows decoded together at most (default 8); a request with more prompts runs when the batch is empty. */
  maxBatch?: number;
  /**
   * Bytes the KV caches on the batch's thread may reach, each row counted at its prompt plus its token limit on every
   * model it runs on there (default: no limit). A call that runs alone is held to it too.
   */
  kvBudgetBytes?: number;
  /** Prompt tokens prefilled per run while other rows wait (default 256). */
  prefillChunk?: number;
  /** Requests waiting for room at most; one more is refused with a {@link QueueFullError} (default: no limit). */
  maxQueue?: number;
  /**
   * Speculative decoding by prompt lookup (see prompt-lookup.ts): while one row runs, tokens drafted from its own
   * context are run with its next token in one step and kept as far as the row samples them itself, so its output
   * is what it gives without (default off). Rows of graphs that cannot take positions back (recurrent states,
   * right padding), of graphs whose rows run alone, and rows with latent steps decode one token a step.
   */
  promptLookup?: PromptLookup;
  /**
   * Row shards of the backbone for wide steps (see runtime/row-shards.ts): true opens them with the engine, on the
   * CPU, given two or more threads and no projector. Default off: slower than one session on the 2-vCPU machine
   * measured.
   */
  rowShards?: boolean;
}

/** Raised for a request that would wait while `maxQueue` requests already wait. */
export class QueueFullError extends Error {
  override name = 'QueueFullError';
}

/** Raised when a request could never fit the KV memory budget. */
export class KvBudgetError extends Error {
  override name = 'KvBudgetError';
}

/** One request for the batch: what the decode loop takes for a call alone; latent steps need the batch's projector. */
export interface BatchRequest extends Omit<DecodeLoopInput, 'latent'> {
  /** LiteReason latent decoding: the policy, marker and placeholder (the batch runs the steps). */
  latent?: Omit<LatentDriver, 'run'>;
  /**
   * Reasoners fused with the backbone for this request: by reasoner index (the batch's models after the
   * backbone), in the order their logits are summed, each with its T (`mode`, default the backbone's). Each runs only
   * for the rows of requests that use it.
   */
  composition?: { reasoners: { index: number; weight: WeightSpec; mode?: FusionMode }[]; mode: FusionMode; normalize: boolean };
  /** The tokens of `options.prediction`: drafts are looked up in them (see {@link lookupPrediction}). */
  predictionIds?: number[];
}

/** What the batch reports about itself. */
export interface BatchStats {
  /** Rows decoding or being prefilled, and those of a call running alone. */
  running: number;
  /** Requests waiting for room. */
  waiting: number;
  /**
   * Bytes of KV cache held on the batch's thread: the batch, prompts being prefilled, and a call running alone (its
   * backbone's and inline reasoners' caches, without the room a converted GGUF graph's cache keeps for next steps).
   */
  kvBytes: number;
  /** KV bytes one position of a row takes on the batch's models (the backbone and the reasoners on its thread). */
  bytesPerPosition: number;
  /** Rows decoded together at most. */
  maxBatch: number;
  /** The KV budget, when one was set. */
  kvBudgetBytes?: number;
  counters: KvCounters;
  /** Prefix caching: bytes and entries of every model's cache on the batch's thread (the draft model's too); tokens looked up and found on the backbone's. */
  prefixCache: PrefixCacheStats;
  /** The backbone's row shards, when wide steps run on them. */
  rowShards?: RowShardStats;
  /**
   * Speculative decoding (prompt lookup, requests' predictions, a draft model), once on or used: tokens drafted and
   * run, and those of them the rows wrote.
   */
  drafts?: { draftedTokens: number; acceptedTokens: number };
}

interface Job {
  request: BatchRequest;
  /** The models each row runs on: 0 (the backbone), then its reasoners' model indices. */
  models: number[];
  rows: RowState[];
  /** Positions fed to each row (prompt, then one per token). */
  used: number[];
  reserve: number;
  maxTokens: number;
  /** Latent steps each row runs after its prompt (the fixed policy). */
  fixedSteps: number;
  unfinished: number;
  /** Prompt tokens of its rows taken from the backbone's prefix cache. */
  cachedTokens: number;
  /** With a prediction: its tokens drafted and kept, and drafted and not kept. */
  predicted?: { accepted: number; rejected: number };
  admittedAt: number;
  prefillMs: number;
  firstTokenAt: number;
  steps: number;
  resolve(out: DecodeLoopOutput): void;
  reject(err: Error): void;
}

interface Exclusive {
  run(): Promise<void>;
  /** Fails it unrun (see {@link ContinuousBatch.stop}). */
  fail(err: Error): void;
  /** The rows of a call that runs alone, and the models it runs on this thread (for {@link BatchStats}). */
  held?: { rows: number; models: readonly number[] };
  /** Whether its caller gave up while it waited (see {@link ContinuousBatch.exclusive}). */
  shouldAbort?: () => boolean;
}

/** A call that runs alone instead of in the batch (see {@link ContinuousBatch.exclusive}). */
export interface AloneCall extends Pick<BatchRequest, 'prompts' | 'options' | 'contextLength' | 'latent'> {
  /** The reasoners it runs on the batch's thread (by reasoner index): their caches count against the budget. */
  reasoners: readonly number[];
}

/** Rows of one request, each reserving `reserve` positions on `models`: what the KV budget counts. */
interface Reservation {
  rows: number;
  reserve: number;
  models: readonly number[];
}

/** Whether a queued entry's caller gave up on it. */
const abandoned = (entry: Job | Exclusive): boolean => ('request' in entry ? entry.request.shouldAbort() : entry.shouldAbort?.() === true);

/**
 * How often calls aborted while they wait are looked for during exclusive work (a whole traced generation), when the
 * loop takes no turn.
 */
const ABORT_SWEEP_MS = 10;

/** A row of the running batch: its latest logits from each of its job's models, and its last token. */
interface Live {
  job: Job;
  row: number;
  logits: Float32Array[];
  token: number;
  /**
   * Tokens drafted after `token` and run with it (prompt lookup), and each position's logits from each model:
   * `logits[0]` are those after `token` (the row's `logits`), `logits[i]` those after the i-th drafted token.
   */
  draft?: Draft & { logits: Float32Array[][] };
  /** Drafts in a row none of whose tokens the row kept, and steps left before the next draft (see {@link draftFor}). */
  misses?: number;
  pause?: number;
}

/** Tokens drafted after a row's next token, and where they came from. */
interface Draft {
  tokens: number[];
  source: 'prediction' | 'lookup' | 'model';
}

/** A row being prefilled on each of its models, one chunk per model per turn. */
interface Prefill {
  job: Job;
  row: number;
  runs: RowPrefill[];
  /**
   * Later rows of the job with the same prompt (a request's several choices): prefilled once, they join with
   * this row's cache and copies of its logits.
   */
  twins: number[];
}

/** Positions each row of a request reserves: its longest prompt, its fixed latent steps and its token limit, within the context. */
const reservation = ({ prompts, options, contextLength, latent }: Pick<BatchRequest, 'prompts' | 'options' | 'contextLength' | 'latent'>): number =>
  Math.min(contextLength ?? Infinity, Math.max(...prompts.map((p) => p.length)) + fixedLatentSteps(latent?.policy) + (options.maxTokens ?? DEFAULT_MAX_TOKENS));

/** The positions rows may reach in a model's cache: their widest reservation. */
const reach = (rows: readonly Live[]): number => Math.max(0, ...rows.map((l) => l.job.reserve));

const yieldToMessages = () => new Promise<void>((r) => setImmediate(r));

/**
 * Whether a model's rows each run alone: its graph quantizes a run's activations together, or cannot take rows of
 * different lengths in one run (no attention mask to hide a shorter row's padding, or a batch fixed at one row).
 */
const rowsRunAlone = (session: DecoderSession): boolean => session.runWideActivationScale || !rowsShareRuns(session.signature);

/**
 * Whether a model's batch cache can run a draft and take its rest back now: a {@link BatchKv} of a graph that can, or
 * the backbone's row shards while the batch is narrow (a cache whose rows run alone never runs several positions).
 */
const takesRuns = (kv: BatchCache): kv is RunsCache => 'takesRuns' in kv && kv.takesRuns === true;

/** A model's batch cache: one whose rows each run alone where they must (see {@link rowsRunAlone}). */
const batchCacheOf = (session: DecoderSession): BatchCache => (rowsRunAlone(session) ? new LoneRowsKv(session) : new BatchKv(session));

/** The running batch of one backbone (and the reasoners on its thread). */
export class ContinuousBatch {
  private readonly queue: (Job | Exclusive)[] = [];
  /** One batch cache per model: the backbone's, then each reasoner's. */
  private readonly kvs: BatchCache[];
  /** Rows in the batch. */
  private live: Live[] = [];
  /** Per model, the rows in its cache, in cache order. */
  private order: Live[][];
  /** Prompts being prefilled, first one running; each joins once its prefill is done. */
  private prefills: Prefill[] = [];
  private ready: { job: Job; row: number; logits: Float32Array[]; caches: RowCache[] }[] = [];
  private running: Promise<void> | undefined;
  private readonly maxBatch: number;
  private chunk: number;
  /** By model index: the backbone, then reasoners by index (a hole for one not on this thread). */
  private readonly models: DecoderSession[];
  private readonly names: string[];
  /** Scratch of {@link fused} (the reasoners' sum and the fused logits), made on the first composed row. */
  private fuseScratch: [Float32Array, Float32Array] | undefined;
  /** Whether waiting prompts may be prefilled together (off once a graph refused it). */
  private together = true;
  private readonly draftCounts = { draftedTokens: 0, acceptedTokens: 0 };
  /** The draft model, when one is loaded (see {@link useDraftModel}). */
  private drafter: DraftModel | undefined;
  /** What stopped the batch for good (see {@link stop}). */
  private stopped: Error | undefined;

  constructor(
    backbone: DecoderSession,
    /** Width of the logits the sampler sees (the shared vocabulary; wider logits are cut). */
    private readonly vocab: number,
    private readonly limits: BatchLimits = {},
    /** Reasoner sessions on this thread that requests may compose (see {@link BatchRequest.composition}). */
    reasoners: readonly { session: DecoderSession; name: string }[] = [],
    /** The projector latent steps feed the backbone through, when one is loaded. */
    private readonly projector?: LatentProjector,
    /** The backbone's row shards (its batch cache then), for wide steps. */
    private readonly shards?: RowShards,
  ) {
    this.models = [backbone, ...reasoners.map((r) => r.session)];
    this.names = ['backbone', ...reasoners.map((r) => r.name)];
    this.kvs = this.models.map((m, i) => (i === 0 && shards ? shards : batchCacheOf(m)));
    this.order = this.models.map(() => []);
    this.maxBatch = limits.maxBatch ?? DEFAULT_MAX_BATCH;
    this.chunk = limits.prefillChunk ?? DEFAULT_PREFILL_CHUNK;
  }

  /**
   * Adds a reasoner session on this thread at reasoner index `index`, for requests that compose it (a reasoner
   * placed in a lane gets a copy here: its lane's cache cannot join this batch). Safe at any time: no row runs
   * on it before a request that composes it is submitted.
   */
  attachReasoner(index: number, session: DecoderSession, name: string): void {
    const m = 1 + index;
    if (this.models[m]) throw new Error(`reasoner ${index} (${this.names[m]}) is already on the batch's thread`);
    this.models[m] = session;
    this.names[m] = name;
    this.kvs[m] = batchCacheOf(session);
    this.order[m] = [];
  }

  /** Drafts for a row running alone come from `drafter` where the request's prediction and prompt lookup find none. */
  useDraftModel(drafter: DraftModel): void {
    this.drafter = drafter;
  }

  private get kv(): BatchCache {
    return this.kvs[0]!;
  }

  /** Queues a request; resolves once all its rows have finished. */
  submit(request: BatchRequest): Promise<DecodeLoopOutput> {
    return new Promise((resolve, reject) => this.enqueue(request, resolve, reject));
  }

  /** Checks a request and queues it (throws, rejecting the submission, for one that can never run). */
  private enqueue(request: BatchRequest, resolve: (out: DecodeLoopOutput) => void, reject: (err: Error) => void): void {
    if (this.stopped) throw this.stopped;
    validateGenerateOptions(request.options);
    checkPrompts(request.prompts, this.vocab);
    checkLogitBiasIds(request.options.logitBias, this.vocab);
    const { options } = request;
    checkStopTokenIds(options.stopTokenIds, Math.min(request.vocabLimit ?? this.vocab, this.vocab));
    const maxTokens = options.maxTokens ?? DEFAULT_MAX_TOKENS;
    const context = request.contextLength ?? Infinity;
    const latent = request.latent;
    if (latent && !this.projector) throw new LatentPolicyError('latent decoding needs a projector: load the engine with one');
    const fixedSteps = fixedLatentSteps(latent?.policy);
    request.prompts.forEach((p, r) => {
      if (p.length + fixedSteps > context) throw pastContext(r, p.length, fixedSteps, context);
    });
    // (each row thinks at its own markers on its own cache, see think: a request may have several prompts)
    const markerPolicy = latent?.policy === 'marker' && request.decode !== undefined;
    const reserve = reservation(request);
    const models = [0, ...(request.composition?.reasoners ?? []).map((r) => 1 + r.index)];
    const rows = { rows: request.prompts.length, reserve, models };
    this.checkBudget(rows);
    this.settleAbandoned();
    this.refuseWhenFull(!this.alone && this.queue.length === 0 && this.hasRoom(rows));
    const stops = options.stop?.length && request.decode ? new StopStringMatcher(options.stop) : undefined;
    const job: Job = {
      request,
      models,
      rows: newRows(request, stops, markerPolicy ? latent : undefined),
      used: request.prompts.map((p) => p.length),
      reserve,
      maxTokens,
      fixedSteps,
      unfinished: request.prompts.length,
      cachedTokens: 0,
      ...(request.predictionIds ? { predicted: { accepted: 0, rejected: 0 } } : {}),
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

  /**
   * Runs `work` alone: after what is queued before it, with the batch empty, and before anything after it.
   * `limited: false` exempts it from `maxQueue` (releasing the models must always get its turn). Once `shouldAbort`
   * is true while it waits, `work` runs at once, out of turn, and must then run nothing on the models (as the decode
   * loop, which returns its rows aborted), so that the call settles and leaves the queue. A `call` that generates is
   * held to `kvBudgetBytes` as a request in the batch is (a {@link KvBudgetError} for one that can never fit), and its
   * rows and its sessions' caches on this thread are counted in {@link stats} while it runs.
   */
  exclusive<T>(work: () => Promise<T>, limited = true, shouldAbort?: () => boolean, call?: AloneCall): Promise<T> {
    return new Promise((resolve, reject) => {
      if (this.stopped) throw this.stopped;
      const held = call && this.aloneHeld(call);
      this.settleAbandoned();
      // Work that starts at once never waits.
      if (limited) this.refuseWhenFull(!this.alone && this.queue.length === 0 && this.rowsInUse === 0);
      this.queue.push({ run: () => work().then(resolve, reject), fail: reject, ...(shouldAbort ? { shouldAbort } : {}), ...(held ? { held } : {}) });
      this.kick();
    });
  }

  /** A call that runs alone, checked against the budget: its rows, and the models it runs on this thread. */
  private aloneHeld(call: AloneCall): NonNullable<Exclusive['held']> {
    validateGenerateOptions(call.options);
    const held = { rows: call.prompts.length, models: [0, ...call.reasoners.map((r) => 1 + r)] };
    this.checkBudget({ ...held, reserve: reservation(call) });
    return held;
  }

  /** Settles the queued calls whose callers aborted, at once (not at their turn), freeing their places in the queue. */
  private settleAbandoned(): void {
    if (!this.queue.some(abandoned)) return;
    // (each entry asked once: its caller's flag can be set meanwhile)
    const left: (Job | Exclusive)[] = [];
    const kept = this.queue.filter((entry) => !abandoned(entry) || !left.push(entry));
    this.queue.splice(0, this.queue.length, ...kept);
    for (const entry of left) {
      if ('request' in entry) {
        // Nothing was run for it.
        for (const row of entry.rows) row.end('abort');
        this.finish(entry);
      } else void entry.run();
    }
  }

  /**
   * Stops the batch for good, for models that must not run again (a reasoner failed, the engine closes): queued calls
   * fail with `err` now, running rows once the run in flight has ended, and later calls are refused with it. Resolves
   * once nothing runs on the models, so that they can be released.
   */
  stop(err: Error): Promise<void> {
    this.stopped ??= err;
    for (const entry of this.queue.splice(0)) {
      if ('request' in entry) this.failJob(entry, this.stopped);
      else entry.fail(this.stopped);
    }
    return this.running ?? Promise.resolve();
  }

  /** Whether nothing runs or waits: no rows, no queued request, no exclusive work. */
  get idle(): boolean {
    return this.running === undefined && this.queue.length === 0;
  }

  /** Rows running (a call running alone's too), requests waiting, KV bytes (every model's on this thread). */
  stats(): BatchStats {
    const models = (job: Job) => job.models.map((m) => this.kvs[m]!.bytesPerPosition);
    let pending = 0;
    for (const p of this.prefills) models(p.job).forEach((b, i) => (pending += b * p.runs[i]!.length * (1 + p.twins.length)));
    for (const r of this.ready) models(r.job).forEach((b, i) => (pending += b * r.caches[i]!.length));
    const sum = (f: (kv: BatchCache) => number) => this.kvs.reduce((n, kv) => n + f(kv), 0);
    // A call running alone holds its caches in its sessions, its prompts padded to one length (their room aside).
    const held = this.held;
    const alone = held ? held.models.reduce((n, m) => n + held.rows * (this.models[m]!.cachedLength * this.kvs[m]!.bytesPerPosition + this.kvs[m]!.stateBytesPerRow), 0) : 0;
    return {
      running: this.rowsInUse + (held?.rows ?? 0),
      waiting: this.queue.length,
      kvBytes: sum((kv) => kv.bytes) + pending + (this.drafter?.bytes ?? 0) + alone,
      bytesPerPosition: sum((kv) => kv.bytesPerPosition),
      maxBatch: this.maxBatch,
      ...(this.limits.kvBudgetBytes !== undefined ? { kvBudgetBytes: this.limits.kvBudgetBytes } : {}),
      counters: { copiedBytes: sum((kv) => kv.counters.copiedBytes), perRowLayoutBytes: sum((kv) => kv.counters.perRowLayoutBytes) },
      prefixCache: this.prefixStats(),
      ...(this.shards ? { rowShards: this.shards.stats() } : {}),
      ...(this.limits.promptLookup || this.drafter || this.draftCounts.draftedTokens > 0 ? { drafts: { ...this.draftCounts } } : {}),
    };
  }

  /** The backbone's prefix cache, with the bytes and entries of every model's on this thread. */
  private prefixStats(): PrefixCacheStats {
    const each = [...this.models.filter(Boolean).map((m) => m.prefixCache.stats()), ...(this.drafter ? [this.drafter.prefixCache] : [])];
    return { ...each[0]!, bytes: each.reduce((n, p) => n + p.bytes, 0), entries: each.reduce((n, p) => n + p.entries, 0) };
  }

  private kick(): void {
    this.running ??= this.loop().finally(() => {
      this.running = undefined;
      if (this.queue.length > 0) this.kick();
    });
  }

  /** Whether exclusive work (a call running alone) holds the models: requests then wait in the queue. */
  private alone = false;
  /** The rows and models of the call running alone, when it generates. */
  private held: Exclusive['held'];

  private get rowsInUse(): number {
    return this.live.length + this.ready.length + this.prefills.reduce((n, p) => n + 1 + p.twins.length, 0);
  }

  /**
   * Moves queued requests into prefill while rows and KV budget allow; runs an exclusive one when idle. The loop
   * yields after exclusive work before it admits more: a failure the work reported may stop the batch meanwhile.
   */
  private async admit(): Promise<void> {
    this.admitRequests();
    const head = this.queue[0];
    if (!head || 'request' in head || this.rowsInUse > 0) return;
    this.queue.shift();
    // The loop takes no turn until the work is done: calls behind it wait in the queue (none is admitted beside
    // it), and those aborted meanwhile settle.
    const sweep = setInterval(() => this.settleAbandoned(), ABORT_SWEEP_MS);
    this.alone = true;
    this.held = head.held;
    try {
      await head.run();
    } finally {
      this.alone = false;
      this.held = undefined;
      clearInterval(sweep);
    }
  }

  /** Moves requests at the head of the queue into prefill while rows and KV budget allow (settling aborted ones first). */
  private admitRequests(): void {
    this.settleAbandoned();
    if (this.alone) return;
    for (;;) {
      const head = this.queue[0];
      if (!head || !('request' in head) || !this.hasRoom({ rows: head.rows.length, reserve: head.reserve, models: head.models })) return;
      this.queue.shift();
      head.admittedAt = performance.now();
      // The first bitmask is computed while the prompt is prefilled.
      for (const row of head.rows) row.constraint?.prepare?.();
      const byPrompt = new Map<string, Prefill>();
      head.rows.forEach((row, r) => {
        const key = row.prompt.join(',');
        const first = byPrompt.get(key);
        if (first) return void first.twins.push(r);
        // A graph that refused chunks runs whole prompts: no prefill goes on from a cached prefix there.
        const start = (m: number) => (Number.isFinite(this.chunk) ? this.models[m]!.prefixCache.lookup(row.prompt) : undefined);
        const prefill: Prefill = { job: head, row: r, runs: head.models.map((m) => new RowPrefill(this.models[m]!, row.prompt, this.chunk, start(m))), twins: [] };
        byPrompt.set(key, prefill);
        this.prefills.push(prefill);
      });
    }
  }

  /** Whether `joining` can join now (always, into an empty batch). */
  private hasRoom(joining: Reservation): boolean {
    const busy = this.rowsInUse;
    if (busy === 0) return true;
    if (busy + joining.rows > this.maxBatch) return false;
    const budget = this.limits.kvBudgetBytes;
    if (budget === undefined) return true;
    // The batch's projected footprint: on each model, the rows that use it padded to the longest reservation there.
    const rows = new Map<Job, number>();
    const add = (job: Job, n: number) => rows.set(job, (rows.get(job) ?? 0) + n);
    for (const l of this.live) add(l.job, 1);
    for (const r of this.ready) add(r.job, 1);
    for (const p of this.prefills) add(p.job, 1 + p.twins.length);
    const all = [joining, ...[...rows].map(([job, n]) => ({ rows: n, reserve: job.reserve, models: job.models }))];
    const projected = this.kvs.reduce((bytes, kv, m) => {
      const on = all.filter((r) => r.models.includes(m));
      if (on.length === 0) return bytes;
      const widest = Math.max(...on.map((r) => r.reserve));
      return bytes + on.reduce((n, r) => n + r.rows, 0) * (widest * kv.bytesPerPosition + kv.stateBytesPerRow);
    }, 0);
    return projected + this.draftRowBytes(Math.max(...all.map((r) => r.reserve))) <= budget;
  }

  /** Cache bytes of a row of `positions` positions on `models`: their keys and values, and their recurrent states. */
  private rowBytes(models: readonly number[], positions: number): number {
    return models.reduce((n, m) => n + positions * this.kvs[m]!.bytesPerPosition + this.kvs[m]!.stateBytesPerRow, 0);
  }

  /** The draft model's one row (kept for a lone row while it stays in the batch), at `reserve` positions. */
  private draftRowBytes(reserve: number): number {
    return this.drafter ? reserve * this.drafter.bytesPerPosition : 0;
  }

  /** Throws a {@link KvBudgetError} when `r` reserves more than the whole budget (it could never fit). */
  private checkBudget(r: Reservation): void {
    const needs = r.rows * this.rowBytes(r.models, r.reserve) + this.draftRowBytes(r.reserve);
    const budget = this.limits.kvBudgetBytes;
    if (budget !== undefined && needs > budget) {
      const on = r.models.length > 1 ? ` on ${r.models.map((m) => this.names[m]).join(' + ')}` : '';
      const states = r.models.some((m) => this.kvs[m]!.stateBytesPerRow > 0) ? ' and their recurrent states' : '';
      const draft = this.drafter ? ", and the draft model's row" : '';
      throw new KvBudgetError(`this request needs ${needs} bytes of KV cache (${r.rows} rows × ${r.reserve} positions${on}${states}${draft}), more than the budget of ${budget} bytes; lower maxTokens or raise kvBudgetBytes`);
    }
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
      if (this.stopped) return this.failAll(this.stopped);
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
    if (await this.prefillGroup()) return;
    const logits: (Float32Array | undefined)[] = [];
    for (const [i, run] of first.runs.entries()) {
      logits.push(await this.onModel(first.job.models[i]!, () => run.next()));
      if (run.chunkRefused) this.chunk = Infinity;
    }
    if (logits.some((l) => !l)) return;
    const { job, row } = first;
    const caches = first.runs.map((r) => r.cache);
    // Kept before latent steps extend the backbone's cache past the prompt's tokens.
    first.runs.forEach((run, i) => this.models[job.models[i]!]!.prefixCache.store(run.prompt, () => caches[i]!, true));
    job.cachedTokens += first.runs[0]!.reused * (1 + first.twins.length);
    const rows = [row, ...first.twins];
    if (job.fixedSteps > 0) {
      // Coconut-style: K continuous thoughts right after the prompt, on the backbone alone.
      const out = await rowLatentSteps(this.models[0]!, this.projector!, caches[0]!, first.runs[0]!.hidden!, job.fixedSteps);
      logits[0] = out.logits;
      caches[0] = out.cache;
      for (const r of rows) {
        job.rows[r]!.latentSteps += job.fixedSteps;
        job.used[r]! += job.fixedSteps;
      }
    }
    if (job.prefillMs === 0) job.prefillMs = performance.now() - job.admittedAt;
    // Listed as prefilling until it is ready: a failed latent step fails its request too (see failAll).
    this.prefills.shift();
    this.joinReady(first, logits as Float32Array[], caches);
  }

  /**
   * Prompts at the head of the prefill queue that are yet to start, on the same models, prefilled together in
   * one run while their padded tokens fit in a chunk (running rows still wait one chunk at most). A burst of
   * requests then costs one run, not one per prompt, and its rows join, and later leave, at the same step
   * instead of one step apart, so the batch runs full for longer. False when fewer than two such prompts wait.
   */
  private async prefillGroup(): Promise<boolean> {
    // A graph that refused chunks takes whole prompts: padding several long ones together is no bounded stall.
    if (!this.together || !Number.isFinite(this.chunk)) return false;
    const models = this.prefills[0]!.job.models;
    // A right-padded graph's last position is a shorter prompt's padding: it must return earlier positions too.
    if (models.some((m) => this.models[m]!.padding === 'right' && !this.models[m]!.keepsLogits)) return false;
    // (a run-wide activation scale would take in the other prompts' tokens and the padding; a graph without a mask
    // would attend to the padding; one of a fixed batch takes one row)
    if (models.some((m) => rowsRunAlone(this.models[m]!))) return false;
    const stateful = models.some((m) => this.models[m]!.signature.states.length > 0);
    const group: Prefill[] = [];
    let longest = 0;
    for (const p of this.prefills) {
      const length = p.runs[0]!.prompt.length;
      const fits =
        p.runs.every((r) => r.length === 0) &&
        // Latent steps start from the prefill's own cache and hidden state: those prompts run alone.
        p.job.request.latent === undefined &&
        !p.job.request.shouldAbort() &&
        p.job.models.length === models.length &&
        p.job.models.every((m, i) => m === models[i]) &&
        // (a left-padded prompt's padding would run through a recurrent state)
        (!stateful || group.length === 0 || length === longest) &&
        Math.max(longest, length) * (group.length + 1) <= this.chunk;
      if (!fits) break;
      group.push(p);
      longest = Math.max(longest, length);
    }
    if (group.length < 2) return false;
    const prompts = group.map((p) => p.runs[0]!.prompt);
    const runs: Awaited<ReturnType<typeof prefillTogether>>[] = [];
    try {
      for (const m of models) runs.push(await this.onModel(m, () => prefillTogether(this.models[m]!, prompts)));
    } catch {
      // A graph that takes prompts only one at a time: they run so from now on (a real failure shows there).
      this.together = false;
      return false;
    }
    this.prefills.splice(0, group.length);
    // (each prompt's cache is a row of the group's tensors: kept as a copy)
    models.forEach((m, i) => prompts.forEach((p, g) => this.models[m]!.prefixCache.store(p, () => runs[i]!.caches[g]!, false)));
    const now = performance.now();
    group.forEach((p, g) => {
      if (p.job.prefillMs === 0) p.job.prefillMs = now - p.job.admittedAt;
      this.joinReady(
        p,
        runs.map((r) => r.logits[g]!),
        runs.map((r) => r.caches[g]!),
      );
    });
    return true;
  }

  /**
   * A prefilled row is ready to join, and its twins with it: over the same cache (the batch copies it in), each
   * with its own copy of the logits, which sampling writes over.
   */
  private joinReady({ job, row, twins }: Prefill, logits: Float32Array[], caches: RowCache[]): void {
    this.ready.push({ job, row, logits, caches });
    for (const twin of twins) this.ready.push({ job, row: twin, logits: logits.map((l) => l.slice()), caches });
  }

  /**
   * The logits a row samples from: the backbone's, or fused with its reasoners' as the composed source fuses
   * them (same operations, same order), with each weight at the row's own token count.
   */
  private fused(l: Live): Float32Array {
    const comp = l.job.request.composition;
    const base = l.logits[0]!;
    const B = this.models[0]!.vocabSize;
    const V = this.vocab;
    if (!comp || (comp.reasoners.length === 0 && comp.mode === 'logits' && B === V)) return base;
    const generated = l.job.rows[l.row]!.ids.length;
    const weights = comp.reasoners.map((r) => weightAt(r.weight, generated));
    // A row's fused logits are sampled before the next row's are fused: two buffers serve every row, every step.
    const [sum, out] = (this.fuseScratch ??= [new Float32Array(V), new Float32Array(V)]);
    const parts: Float32Array[] = [];
    if (weights.length > 0) {
      weights.forEach((weight, i) => {
        const z = l.logits[1 + i]!;
        const mode = comp.reasoners[i]!.mode ?? comp.mode;
        accumulateLogits(sum, { logits: z, stride: this.models[l.job.models[1 + i]!]!.vocabSize, weight }, 1, V, mode, i === 0);
      });
      parts.push(sum);
    }
    return combineWithBackbone(out, { logits: base, stride: B }, parts, 1, V, comp.mode, fusionScale([1, ...weights], comp.normalize));
  }

  /**
   * Samples every row that has logits (the batch and the rows just prefilled), drops finished rows, lets the
   * ready rows join, and feeds the sampled tokens in one step (a lone row's with a draft, see {@link draftFor}).
   */
  private async sampleAndStep(): Promise<void> {
    const stay: Live[] = [];
    const joining: { live: Live; caches: RowCache[] }[] = [];
    const candidates = [
      ...this.live.map((live) => ({ live, caches: undefined as RowCache[] | undefined })),
      ...this.ready.map((r) => ({ live: { job: r.job, row: r.row, logits: r.logits, token: 0 }, caches: r.caches })),
    ];
    // The ready rows stay listed while they are sampled: a throw then fails their requests too (see failAll).
    for (const c of candidates) {
      const { job, row: r } = c.live;
      const row = job.rows[r]!;
      if (row.finish) continue;
      if (job.request.shouldAbort()) {
        this.endAborted(job);
        continue;
      }
      const id = await this.sampleRow(c.live);
      if (id === undefined) continue;
      if (row.finish) {
        if (--job.unfinished === 0) this.finish(job);
        continue;
      }
      c.live.token = id;
      if (c.caches) joining.push({ live: c.live, caches: c.caches });
      else stay.push(c.live);
    }
    // Rows of aborted jobs may have been kept before their job was seen to abort.
    const alive = (l: Live) => !l.job.rows[l.row]!.finish;
    const joined = joining.filter((j) => alive(j.live));
    this.ready = [];
    this.live = [...stay.filter(alive), ...joined.map((j) => j.live)];
    // Each model keeps the rows that use it, then takes the joining ones: one rebuild each (none left: dropped).
    this.kvs.forEach((kv, m) => {
      const kept = this.order[m]!.flatMap((l, i) => (alive(l) ? [i] : []));
      const adding = joined.filter((j) => j.live.job.models.includes(m));
      const rows = [...this.order[m]!.filter(alive), ...adding.map((j) => j.live)];
      kv.rebuild(kept, adding.map((j) => j.caches[j.live.job.models.indexOf(m)]!), reach(rows));
      this.order[m] = rows;
    });
    this.drafter?.keepFor(this.live);
    if (this.live.length === 0) return;
    const draft = this.live.length === 1 ? await this.draftFor(this.live[0]!) : undefined;
    const started = performance.now();
    if (draft && (await this.runDraft(this.live[0]!, draft))) this.drafter?.budget.observeRun(1 + draft.tokens.length, performance.now() - started);
    else {
      await this.stepRows();
      // (what a lone row's step costs is what a draft must beat)
      if (this.live.length === 1) this.drafter?.budget.observeStep(performance.now() - started);
    }
    const steppedJobs = new Set<Job>();
    for (const l of this.live) {
      l.job.used[l.row]!++;
      steppedJobs.add(l.job);
    }
    for (const job of steppedJobs) job.steps++;
    await this.think();
  }

  /** Feeds every row its token, on each model in one step, and keeps the logits. */
  private async stepRows(): Promise<void> {
    let prepared = false;
    for (let m = 0; m < this.models.length; m++) {
      const rows = this.order[m];
      if (!rows?.length) continue;
      const stepping = this.onModel(m, () => this.kvs[m]!.step(rows.map((l) => l.token)));
      // The model runs off this thread: the grammar's next masks are computed meanwhile (as in the decode loop).
      if (!prepared) for (const l of this.live) l.job.rows[l.row]!.constraint?.prepare?.();
      prepared = true;
      const logits = await stepping;
      const width = this.models[m]!.vocabSize;
      rows.forEach((l, i) => (l.logits[l.job.models.indexOf(m)] = logits.subarray(i * width, (i + 1) * width)));
    }
  }

  /**
   * Feeds a lone row its token and `draft` after it, on each of its models in one run, and keeps every position's
   * logits for {@link sampleRow}. False, with nothing fed, when a model refused the run (it decodes one token a step
   * from then on): the models that ran it take it back.
   */
  private async runDraft(l: Live, { tokens: draft, source }: Draft): Promise<boolean> {
    const seq = 1 + draft.length;
    const positions = Array.from({ length: seq }, () => [] as Float32Array[]);
    const ran: RunsCache[] = [];
    for (const [at, m] of l.job.models.entries()) {
      const kv = this.kvs[m] as RunsCache;
      let logits: Float32Array;
      try {
        const running = this.onModel(m, () => kv.run([l.token, ...draft], seq));
        // (the grammar's mask after the token is computed while the model runs, as for a step)
        if (at === 0) l.job.rows[l.row]!.constraint?.prepare?.();
        logits = await running;
      } catch {
        // (a failure that is not a refusal shows again in the one-token step that follows)
        for (const done of ran) done.dropLast(seq);
        return false;
      }
      ran.push(kv);
      const width = this.models[m]!.vocabSize;
      positions.forEach((p, i) => (p[at] = logits.subarray(i * width, (i + 1) * width)));
    }
    l.logits = positions[0]!;
    l.draft = { tokens: draft, logits: positions, source };
    this.draftCounts.draftedTokens += draft.length;
    return true;
  }

  /**
   * The draft a lone row runs with its next token: what its request's prediction has after the reply so far, else
   * what prompt lookup finds in its prompt and reply (when on), else the draft model's tokens (when loaded), as
   * much as its token limit and context leave room for. None where none finds one, the row has latent steps (they
   * run from a one-position step's hidden state), or one of its models cannot take positions back.
   */
  private async draftFor(l: Live): Promise<Draft | undefined> {
    const { job, row: r } = l;
    const prediction = job.request.predictionIds;
    const lookup = this.limits.promptLookup;
    if ((!lookup && !prediction && !this.drafter) || job.request.latent) return undefined;
    if (!job.models.every((m) => takesRuns(this.kvs[m]!))) return undefined;
    const row = job.rows[r]!;
    // The token and the draft are fed; the draft's tokens and the one after it may be written.
    const room = Math.min(job.maxTokens - row.ids.length, (job.request.contextLength ?? Infinity) - job.used[r]!) - 1;
    if (room <= 0) return undefined;
    // After drafts the row wrote none of, it drafts less often: a run of several positions costs more than a step,
    // and on a graph of joined caches a rejected draft is a copy of the row's cache.
    if (l.pause) {
      l.pause--;
      return undefined;
    }
    const settings = lookup ?? DEFAULT_PROMPT_LOOKUP;
    const limit = Math.min(room, settings.draftTokens);
    const predicted = prediction ? lookupPrediction(prediction, row.ids, settings, limit) : [];
    if (predicted.length > 0) return { tokens: predicted, source: 'prediction' };
    const context = [...row.prompt, ...row.ids];
    const found = lookup ? lookupDraft(context, lookup, limit) : [];
    if (found.length > 0) return { tokens: found, source: 'lookup' };
    if (!this.drafter) return undefined;
    const drafted = await this.drafter.draft(l, context, room, l.job.reserve).catch((err: Error) => {
      throw new DraftModelError(`the draft model failed: ${err.name}: ${err.message}`, { cause: err });
    });
    return drafted.length > 0 ? { tokens: drafted, source: 'model' } : undefined;
  }

  /**
   * Samples a row's next token, and reports it; after a drafted run, each drafted token the row samples itself is
   * kept and the next position sampled, so that what it writes is what it writes without drafts. The positions of
   * the rejected rest are taken back. Returns the last token sampled (undefined when the row's request failed).
   */
  private async sampleRow(l: Live): Promise<number | undefined> {
    const { job, row: r, draft } = l;
    const row = job.rows[r]!;
    for (let at = 0; ; at++) {
      const id = await this.sampleOne(l);
      if (id === undefined || !draft) return id;
      if (!row.finish && at < draft.tokens.length && id === draft.tokens[at]) {
        // (already run: its position is the row's)
        job.used[r]!++;
        l.logits = draft.logits[at + 1]!;
        continue;
      }
      const kept = at + (at < draft.tokens.length && id === draft.tokens[at] ? 1 : 0);
      this.draftCounts.acceptedTokens += kept;
      // Each draft in a row wholly rejected doubles the steps before the next one (up to MAX_DRAFT_PAUSE).
      l.misses = kept > 0 ? 0 : (l.misses ?? 0) + 1;
      l.pause = kept > 0 ? 0 : Math.min(2 ** (l.misses - 1), MAX_DRAFT_PAUSE);
      if (draft.source === 'model') this.drafter?.budget.observeVerdict(draft.tokens.length, kept);
      if (draft.source === 'prediction' && job.predicted) {
        job.predicted.accepted += kept;
        job.predicted.rejected += draft.tokens.length - kept;
      }
      l.draft = undefined;
      // A finished row leaves, its cache with it.
      if (!row.finish) for (const m of job.models) (this.kvs[m] as RunsCache).dropLast(draft.tokens.length - at);
      return id;
    }
  }

  /** Samples one token of a row from its logits and reports it (undefined when the row's request failed). */
  private async sampleOne(l: Live): Promise<number | undefined> {
    const { job, row: r } = l;
    const row = job.rows[r]!;
    const limit = Math.min(job.request.vocabLimit ?? this.vocab, this.vocab);
    let id: number;
    let text: string;
    let logprobs: TokenLogprobs | undefined;
    try {
      // (normalised weights that sum to zero or below fail their own request, as a grammar's refusal does)
      const logits = this.fused(l).subarray(0, limit);
      // Read before the grammar mask and the sampler write over the logits.
      const pass = row.measure(logits);
      id = await row.pick(logits);
      logprobs = row.record(pass, id);
      text = row.accept(id, latentRoom(row, job.maxTokens, (job.request.contextLength ?? Infinity) - job.used[r]! - 1));
    } catch (err) {
      this.failJob(job, err as Error);
      return undefined;
    }
    // A token is sampled from logits already computed; only feeding it needs a free position.
    const lastFit = job.used[r]! >= (job.request.contextLength ?? Infinity);
    if (!row.finish && (row.ids.length >= job.maxTokens || lastFit)) text += row.end('length');
    const event = row.event(r, id, text, logprobs);
    if (job.firstTokenAt === 0) {
      job.firstTokenAt = performance.now();
      if (job.cachedTokens > 0) event.cachedPromptTokens = job.cachedTokens;
    }
    job.request.onToken(event);
    return id;
  }

  /**
   * Rows that have just fed a latent marker think its steps (as many as fit in the context) on their own
   * backbone cache, taken out of the batch, then go back into it; their next token is sampled from the
   * logits after the last step, fused with their reasoners' latest (reasoners never see latent inputs).
   */
  private async think(): Promise<void> {
    const rows = this.order[0]!;
    const thinking: { at: number; steps: number }[] = [];
    rows.forEach((l, at) => {
      const row = l.job.rows[l.row]!;
      if (row.pendingLatent === 0) return;
      const steps = Math.min(row.pendingLatent, (l.job.request.contextLength ?? Infinity) - l.job.used[l.row]!);
      row.pendingLatent = 0;
      if (steps > 0) thinking.push({ at, steps });
    });
    if (thinking.length === 0) return;
    const kv = this.kv;
    const width = kv.hidden!.length / rows.length;
    const caches: RowCache[] = [];
    for (const { at, steps } of thinking) {
      const l = rows[at]!;
      const out = await rowLatentSteps(this.models[0]!, this.projector!, kv.takeRow(at), kv.hidden!.slice(at * width, (at + 1) * width), steps);
      l.logits[0] = out.logits;
      l.job.rows[l.row]!.latentSteps += steps;
      l.job.used[l.row]! += steps;
      caches.push(out.cache);
    }
    const moved = new Set(thinking.map((t) => t.at));
    const kept = rows.flatMap((_, i) => (moved.has(i) ? [] : [i]));
    kv.rebuild(kept, caches, reach(rows));
    this.order[0] = [...kept.map((i) => rows[i]!), ...thinking.map((t) => rows[t.at]!)];
  }

  /** Runs work on model `m`; a reasoner's failure is reported as the reasoner's, as a composition alone reports it. */
  private async onModel<T>(m: number, work: () => Promise<T>): Promise<T> {
    if (m === 0) return work();
    try {
      return await work();
    } catch (err) {
      throw reasonerFailed(this.names[m]!, `${(err as Error).name}: ${(err as Error).message}`);
    }
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
    const latent = job.request.latent;
    const latentSteps = job.rows.reduce((n, r) => n + r.latentSteps, 0);
    const perStep = latent?.marker.tokensPerStep;
    job.resolve({
      rows: job.rows.map((r) => r.result(latent !== undefined)),
      usage: {
        promptTokens,
        completionTokens,
        ...(job.cachedTokens > 0 ? { cachedPromptTokens: job.cachedTokens } : {}),
        ...(latent ? { latentSteps, ...(perStep ? { reasoningTokensSaved: Math.round(latentSteps * perStep) } : {}) } : {}),
        ...(job.predicted ? { acceptedPredictionTokens: job.predicted.accepted, rejectedPredictionTokens: job.predicted.rejected } : {}),
      },
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
    this.drafter?.release();
    this.kvs.forEach((kv, m) => {
      kv.rebuild([], []);
      this.order[m] = [];
    });
    for (const job of jobs) job.reject(err);
  }
}
