/**
 * A reasoner lane seen from the generation worker: a worker thread hosting some of the reasoners, driven
 * through the shared-memory channel as a {@link ReasonerGroup}. Requests go out before the backbone runs; by
 * the time the backbone is done the lane has usually answered, and reading its sum costs nothing more.
 */
import type { Worker } from 'node:worker_threads';
import { ReasonerError, labelLoadFailure, reasonerFailed, type GroupCall, type GroupOutput, type ReasonerGroup } from '../compose/reasoner-group.js';
import { ChannelClient, RequestKind, SPIN_MS, createChannelBuffer } from './lane-channel.js';
import type { FromLaneWorker, LaneBuffers, LaneStart, LaneWorkerConfig } from './lane-worker.js';
import type { PreparedModel, ReasonerInfo } from './open-decoder.js';
import type { RuntimeOptions } from './decoder-session.js';
import { fromWire, spawnWorker } from './spawn-worker.js';

/** How a lane is started. */
export interface LaneOptions {
  runtime: RuntimeOptions;
  /** The lane has a core of its own, so the generation worker may spin briefly for its answers. */
  dedicatedCore: boolean;
}

/** Milliseconds between checks that the lane is still alive while waiting for a slow answer. */
const WAIT_SLICE_MS = 2;

/** A lane worker hosting some reasoners, driven as one {@link ReasonerGroup}. */
export class ReasonerLane implements ReasonerGroup {
  private readonly channel: ChannelClient;
  private buffers: LaneBuffers = { tokens: new SharedArrayBuffer(0), weights: new SharedArrayBuffer(0), sum: new SharedArrayBuffer(0), logits: [] };
  private views: { tokens: Int32Array; weights: Float64Array; out: GroupOutput } | undefined;
  private rows = 0;
  private broken: ReasonerError | undefined;
  private released = false;

  private constructor(
    private readonly worker: Worker,
    channel: SharedArrayBuffer,
    spinMs: number,
    /** What the lane learned about each member. */
    readonly members: readonly ReasonerInfo[],
    /** Each member's name, for messages; settled once manifests are known. */
    readonly names: string[],
  ) {
    this.channel = new ChannelClient(channel, spinMs);
    worker.on('error', (err) => this.fail(`its worker failed: ${err.message}`));
    worker.on('exit', (code) => {
      if (!this.released) this.fail(`its worker exited (code ${code})`);
    });
  }

  /** Starts a worker and opens the prepared models in it; `names` label them in errors. */
  static async open(models: readonly PreparedModel[], names: readonly string[], options: LaneOptions): Promise<ReasonerLane> {
    const channel = createChannelBuffer();
    const config: LaneWorkerConfig = { models: [...models], runtime: options.runtime, channel, dedicatedCore: options.dedicatedCore };
    const worker = spawnWorker('lane-worker', config);
    const members = await new Promise<ReasonerInfo[]>((resolve, reject) => {
      const onExit = (code: number) => reject(new ReasonerError(`reasoner ${names.join(', ')}: the worker exited during load (code ${code})`));
      worker.once('exit', onExit);
      worker.once('error', reject);
      worker.once('message', (msg: FromLaneWorker) => {
        worker.off('exit', onExit);
        worker.off('error', reject);
        if (msg.type === 'ready') return resolve(msg.members);
        reject(labelLoadFailure(fromWire(msg.error), names[msg.member]!));
      });
    }).catch(async (err) => {
      await worker.terminate();
      throw err;
    });
    return new ReasonerLane(worker, channel, options.dedicatedCore ? SPIN_MS : 0, members, [...names]);
  }

  get vocabSizes(): number[] {
    return this.members.map((m) => m.vocabSize);
  }

  async prefill(call: GroupCall, prompts: readonly (readonly number[])[], weights: readonly number[]): Promise<void> {
    await this.idle();
    this.rows = prompts.length;
    this.fit(call, this.rows);
    this.views!.weights.set(weights);
    const start: LaneStart = { call, prompts: prompts.map((p) => [...p]), buffers: this.buffers };
    this.worker.postMessage(start);
    this.channel.request(RequestKind.Start, this.rows);
  }

  async step(tokens: readonly number[], weights: readonly number[]): Promise<void> {
    await this.idle();
    if (!this.views || tokens.length !== this.rows) throw new ReasonerError(`reasoner ${this.names.join(', ')}: step without a matching prefill`);
    this.views.tokens.set(tokens);
    this.views.weights.set(weights);
    this.channel.request(RequestKind.Step, this.rows);
  }

  /**
   * Waits for the lane's answer: a short spin (the lane has usually answered by the time the backbone is
   * done), then sleeps in slices, yielding so that a dead worker is noticed.
   */
  async result(): Promise<GroupOutput> {
    await this.arrival();
    const failure = this.channel.failure();
    if (failure) throw this.fail(failure.message, this.names[failure.member]);
    return this.views!.out;
  }

  /** Stops the worker (its sessions go with it). */
  async release(): Promise<void> {
    this.released = true;
    await this.worker.terminate();
  }

  /** Makes the shared buffers big enough for this call, keeping the ones that already are. */
  private fit(call: GroupCall, rows: number): void {
    const size = rows * call.vocab;
    const floats = size * Float32Array.BYTES_PER_ELEMENT;
    const b = this.buffers;
    const grow = (buffer: SharedArrayBuffer, bytes: number) => (buffer.byteLength >= bytes ? buffer : new SharedArrayBuffer(bytes));
    const logitsNeeded = call.keepLogits ? call.members.length : 0;
    this.buffers = {
      tokens: grow(b.tokens, rows * Int32Array.BYTES_PER_ELEMENT),
      weights: grow(b.weights, call.members.length * Float64Array.BYTES_PER_ELEMENT),
      sum: grow(b.sum, floats),
      logits: Array.from({ length: Math.max(logitsNeeded, b.logits.length) }, (_, i) => grow(b.logits[i] ?? new SharedArrayBuffer(0), floats)),
    };
    this.views = {
      tokens: new Int32Array(this.buffers.tokens, 0, rows),
      weights: new Float64Array(this.buffers.weights, 0, call.members.length),
      out: {
        sum: new Float32Array(this.buffers.sum, 0, size),
        ...(call.keepLogits ? { logits: this.buffers.logits.slice(0, logitsNeeded).map((s) => new Float32Array(s, 0, size)) } : {}),
      },
    };
  }

  /** Resolves once the latest request is answered. */
  private async arrival(): Promise<void> {
    this.check();
    if (this.channel.spinForAnswer()) return;
    while (!this.channel.waitSlice(WAIT_SLICE_MS)) {
      await new Promise((resolve) => setImmediate(resolve));
      this.check();
    }
  }

  /** Before a new request: the previous one, if nobody collected it (the backbone failed meanwhile), must be done. */
  private async idle(): Promise<void> {
    this.check();
    if (!this.channel.answered) await this.arrival();
  }

  private check(): void {
    if (this.broken) throw this.broken;
  }

  /** A lane that failed once stays failed: its KV caches no longer match the token stream. */
  private fail(why: string, who = this.names.join(', ')): ReasonerError {
    this.broken ??= reasonerFailed(who, why);
    return this.broken;
  }
}
