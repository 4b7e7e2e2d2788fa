/**
 * Worker-thread entry for one row shard of the backbone (see row-shards.ts): a one-thread copy of the backbone
 * session holding the KV cache of the batch rows placed on it. Messages are handled in order: rebuilds (rows
 * joining, as compact caches, and leaving), steps (one token per row, answered with the rows' logits) and takes
 * (rows' caches sent back, when the batch narrows again).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { DecoderSession, type DecoderSource } from './decoder-session.js';
import { BatchKv, type RowCache } from './batch-kv.js';
import { rowTensors } from './cache-tensors.js';
import { toWire, type WireError } from './spawn-worker.js';

/** What a shard is started with. */
export interface ShardWorkerConfig {
  source: DecoderSource;
}

/** One row's cache as it crosses threads: its values per past input name (`[1, kvHeads, length, headDim]`, a state `[1, ...shape]`). */
export interface WireRow {
  length: number;
  past: Record<string, Float32Array | Uint16Array>;
}

/** Requests to a shard. */
export type ToShard =
  | { type: 'rebuild'; keep: number[]; added: WireRow[]; reach?: number }
  | { type: 'step'; id: number; tokens: number[] }
  | { type: 'take'; id: number; rows: number[] }
  | { type: 'release'; id: number };

/** Answers of a shard. */
export type FromShard =
  | { type: 'ready' }
  | { type: 'failed'; error: WireError }
  | { type: 'logits'; id: number; logits: Float32Array }
  | { type: 'rows'; id: number; rows: WireRow[] }
  | { type: 'released'; id: number }
  | { type: 'error'; id: number; error: WireError };

const port = parentPort!;
const { source } = workerData as ShardWorkerConfig;

/** A taken row of the batch cache, for the wire. */
function toWireRow(cache: RowCache): WireRow {
  const past: WireRow['past'] = {};
  for (const [name, t] of Object.entries(cache.past)) past[name] = t.data as Float32Array | Uint16Array;
  return { length: cache.length, past };
}

DecoderSession.create(source, { intraOpThreads: 1 }).then(
  (session) => {
    const kv = new BatchKv(session);
    // A failed rebuild leaves the cache unknown: the next request that answers reports it.
    let broken: unknown;
    // Steps run one at a time, in arrival order (a step's run is awaited before the next message is handled).
    let queue = Promise.resolve();
    port.on('message', (msg: ToShard) => {
      queue = queue.then(async () => {
        if (msg.type === 'rebuild') {
          try {
            if (!broken) kv.rebuild(msg.keep, msg.added.map((r) => ({ past: rowTensors(session.signature, r.past, r.length), length: r.length })), msg.reach);
          } catch (err) {
            broken = err;
          }
          return;
        }
        try {
          if (msg.type === 'release') {
            await session.release();
            port.postMessage({ type: 'released', id: msg.id } satisfies FromShard);
            port.close();
            return;
          }
          if (broken) throw broken;
          if (msg.type === 'step') {
            const logits = (await kv.step(msg.tokens)).slice();
            port.postMessage({ type: 'logits', id: msg.id, logits } satisfies FromShard, [logits.buffer]);
          } else {
            const rows = msg.rows.map((r) => toWireRow(kv.takeRow(r)));
            port.postMessage({ type: 'rows', id: msg.id, rows } satisfies FromShard, rows.flatMap((r) => Object.values(r.past).map((a) => a.buffer as ArrayBuffer)));
          }
        } catch (err) {
          port.postMessage({ type: 'error', id: msg.id, error: toWire(err) } satisfies FromShard);
        }
      });
    });
    port.postMessage({ type: 'ready' } satisfies FromShard);
  },
  (err) => port.postMessage({ type: 'failed', error: toWire(err) } satisfies FromShard),
);
