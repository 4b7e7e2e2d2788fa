/**
 * Worker-thread entry for one extra model (a reasoner): holds its session and KV cache and answers
 * prefill/step requests from the generation worker with last-position logits.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { openDecoder } from './open-decoder.js';
import { toWire } from './spawn-worker.js';
import type { RuntimeOptions } from './decoder-session.js';
import { tokenizerFingerprintOf } from '../modules/locate.js';
import type { ModuleManifest } from '../modules/manifest.js';
import { Lanes } from './lanes.js';

/** Requests from the generation worker. */
export type ToModelWorker =
  | { type: 'prefill'; prompts: number[][] }
  | { type: 'step'; tokens: number[] };

/** Replies to it. */
export type FromModelWorker =
  | {
      type: 'ready';
      vocabSize: number;
      modelPath: string;
      manifest?: ModuleManifest;
      tokenizerFingerprint?: string;
      notes: string[];
    }
  | { type: 'failed'; error: { name: string; message: string } }
  | { type: 'logits'; logits: Float32Array }
  | { type: 'error'; error: { name: string; message: string } };

/** What the worker is started with. */
export interface ModelWorkerConfig {
  model: string;
  runtime: RuntimeOptions;
  cacheDir?: string;
  /** Shared with the other reasoners: how many may run a step at once (see {@link Lanes}). */
  lanes?: SharedArrayBuffer;
}

const port = parentPort!;
const config = workerData as ModelWorkerConfig;
const post = (msg: FromModelWorker) => port.postMessage(msg);
const lanes = config.lanes ? Lanes.attach(config.lanes) : undefined;

async function start() {
  const opened = await openDecoder(config.model, config.runtime, config.cacheDir);
  const fingerprint = await tokenizerFingerprintOf(opened.location);
  return { ...opened, fingerprint };
}

start().then(
  ({ location, session, notes, fingerprint }) => {
    post({
      type: 'ready',
      vocabSize: session.vocabSize,
      modelPath: location.modelPath,
      ...(location.manifest ? { manifest: location.manifest } : {}),
      ...(fingerprint ? { tokenizerFingerprint: fingerprint } : {}),
      notes,
    });
    port.on('message', async (msg: ToModelWorker) => {
      try {
        const run = () => (msg.type === 'prefill' ? session.prefill(msg.prompts) : session.step(msg.tokens));
        const logits = lanes ? await lanes.run(run) : await run();
        // The logits buffer is this step's alone (the session reads only its KV tensors again): move it, not copy it.
        port.postMessage({ type: 'logits', logits } satisfies FromModelWorker, [logits.buffer as ArrayBuffer]);
      } catch (err) {
        post({ type: 'error', error: toWire(err) });
      }
    });
  },
  (err) => post({ type: 'failed', error: toWire(err) }),
);
