/** A decoder session living in its own worker thread, driven as if it were local. */
import type { Worker } from 'node:worker_threads';
import type { Decoder } from '../compose/composed-source.js';
import { spawnWorker, fromWire } from './spawn-worker.js';
import type { FromModelWorker, ModelWorkerConfig, ToModelWorker } from './model-worker.js';

/** Raised when a reasoner fails to load or fails during a run; names the reasoner. */
export class ReasonerError extends Error {
  override name = 'ReasonerError';
}

/** What the worker reported once its model was loaded. */
export type RemoteDecoderInfo = Extract<FromModelWorker, { type: 'ready' }>;

/** Proxy to a model worker; one request at a time. */
export class RemoteDecoder implements Decoder {
  private pending: { resolve(l: Float32Array): void; reject(e: Error): void } | undefined;
  private failure: Error | undefined;
  private released = false;

  private constructor(
    private readonly worker: Worker,
    /** Reasoner name, for messages; settled once its manifest is known. */
    public name: string,
    readonly info: RemoteDecoderInfo,
  ) {
    worker.on('message', (msg: FromModelWorker) => {
      const p = this.pending;
      this.pending = undefined;
      if (msg.type === 'logits') p?.resolve(msg.logits);
      else if (msg.type === 'error') p?.reject(this.fail(`${msg.error.name}: ${msg.error.message}`));
    });
    worker.on('error', (err) => this.pending?.reject(this.fail(err.message)));
    worker.on('exit', (code) => {
      if (!this.released) this.pending?.reject(this.fail(`its worker exited (code ${code})`));
    });
  }

  /** Starts a worker and loads the model in it. */
  static async open(name: string, config: ModelWorkerConfig): Promise<RemoteDecoder> {
    const worker = spawnWorker('model-worker', config);
    const info = await new Promise<RemoteDecoderInfo>((resolve, reject) => {
      const onExit = (code: number) => reject(new ReasonerError(`reasoner ${name}: its worker exited during load (code ${code})`));
      worker.once('exit', onExit);
      worker.once('error', reject);
      worker.once('message', (msg: FromModelWorker) => {
        worker.off('exit', onExit);
        worker.off('error', reject);
        if (msg.type === 'ready') resolve(msg);
        else if (msg.type === 'failed') {
          const e = fromWire(msg.error);
          e.message = `reasoner ${name}: ${e.message}`;
          reject(e);
        } else reject(new ReasonerError(`reasoner ${name}: unexpected first message ${msg.type}`));
      });
    }).catch(async (err) => {
      await worker.terminate();
      throw err;
    });
    return new RemoteDecoder(worker, name, info);
  }

  get vocabSize(): number {
    return this.info.vocabSize;
  }

  prefill(prompts: readonly (readonly number[])[]): Promise<Float32Array> {
    return this.request({ type: 'prefill', prompts: prompts as number[][] });
  }

  step(tokens: readonly number[]): Promise<Float32Array> {
    return this.request({ type: 'step', tokens: tokens as number[] });
  }

  /** Stops the worker (its session goes with it). */
  async release(): Promise<void> {
    this.released = true;
    await this.worker.terminate();
  }

  private request(msg: ToModelWorker): Promise<Float32Array> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.pending = { resolve, reject };
      this.worker.postMessage(msg);
    });
  }

  /** A reasoner that failed once stays failed: its KV cache no longer matches the token stream. */
  private fail(why: string): Error {
    this.failure ??= new ReasonerError(`reasoner ${this.name} failed: ${why}`);
    return this.failure;
  }
}
