/**
 * Frees the memory of cache tensors that nothing reads any more at once, instead of at V8's next full collection.
 *
 * onnxruntime-node copies every output of a run into a fresh ArrayBuffer, so a decode step allocates its whole
 * present cache anew: a hybrid model's recurrent states (Qwen3.5's: 1 MiB a DeltaNet layer) or a long context's keys
 * and values, megabytes a step. V8 counts those bytes as external memory and, every 64 MiB of it, starts a full
 * mark-compact; on the model worker, whose heap holds the tokenizer, each took 2–6 ms of pause plus concurrent marking
 * threads that take the CPUs onnxruntime's pool runs on (measured on the Qwen3.5-shaped Q4_0 module of bench:gguf,
 * 2 threads: 64 mark-compacts in 300 steps and 16–24 ms a step; releasing the dead caches: 2 and 15–18 ms). Without
 * the tokenizer's heap the same churn cost nothing, V8 leaving small heaps unmarked: a bare session loop never showed it.
 *
 * A buffer transferred through a message port whose peer is closed is detached (V8 stops counting it) and dropped.
 */
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import type * as ort from 'onnxruntime-node';

/** Below this many bytes a step's dead cache is left to the garbage collector: a transfer costs more than it saves. */
export const RELEASE_MIN_BYTES = 1 << 20;

let sink: MessagePort | undefined;

/** A port whose peer is closed: what is posted to it is dropped. */
function closedPort(): MessagePort {
  if (!sink) {
    const { port1, port2 } = new MessageChannel();
    port2.close();
    port1.unref(); // (a referenced port would keep its thread's event loop alive)
    sink = port1;
  }
  return sink;
}

/**
 * Detaches and frees the buffers of `tensors`, which the caller owns alone (no other tensor, view or cache may read
 * them afterwards: their data reads as empty). Tensors that are views into a larger buffer are left alone.
 */
export function releaseTensors(tensors: Iterable<ort.Tensor>, minBytes = RELEASE_MIN_BYTES): void {
  const buffers = new Set<ArrayBuffer>();
  let bytes = 0;
  for (const t of tensors) {
    const data = t.data as ArrayBufferView;
    const buffer = data.buffer;
    if (!(buffer instanceof ArrayBuffer) || buffer.byteLength === 0 || data.byteOffset !== 0 || data.byteLength !== buffer.byteLength) continue;
    if (!buffers.has(buffer)) bytes += buffer.byteLength;
    buffers.add(buffer);
  }
  if (bytes < minBytes) return;
  closedPort().postMessage(null, [...buffers]);
}
