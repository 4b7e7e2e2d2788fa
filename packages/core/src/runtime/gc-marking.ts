/**
 * Where V8 marks its heap while onnxruntime computes. onnxruntime-node copies every output of a run into a fresh
 * ArrayBuffer, which V8 counts as external memory, so a decode step allocates its whole present cache: over a long
 * context, tens of megabytes a step (48 MiB on the Qwen2.5-0.5B shape after 4096 positions), and every 64 MiB of
 * it V8 starts a major collection for "external memory pressure" (`--trace-gc`: one every two steps there; freeing
 * the dead caches at once, releaseTensors, does not stop them). By default V8 marks on helper threads, concurrently
 * with the JavaScript thread. Where onnxruntime's threads take every CPU, those helpers preempt its threads, which
 * spin between operators and wait for each other at every one, so a step waits for the preempted thread. With
 * concurrent marking off, V8 marks in steps on the JavaScript thread, between runs (a run blocks that thread).
 * Measured on the 2-vCPU machine of the README (Qwen2.5-0.5B shape, Q4_0, 2 threads, decode after 4096 positions,
 * median inter-token latency of 80 tokens, alternating processes): 52.8–56.8 ms with it, 44.8–49.0 ms without; after
 * 16 positions 19.2–19.6 against 19.1–19.2.
 *
 * The flag is V8's, for the whole process: the host's own isolate marks on its thread too from then on.
 */
import { availableParallelism } from 'node:os';
import { setFlagsFromString } from 'node:v8';
import { threadsPerCore } from './cpu-topology.js';

/**
 * Whether the engine's compute threads leave no CPU idle: the backbone's intra-op threads (undefined: onnxruntime's
 * default pool, one per physical core) and one per reasoner lane, against the CPUs this process may use.
 */
export function computeFillsCpus(backboneThreads: number | undefined, laneThreads: number, cpus = availableParallelism(), perCore = threadsPerCore()): boolean {
  const backbone = backboneThreads ?? Math.max(1, Math.floor(cpus / perCore));
  return backbone + laneThreads >= cpus;
}

let markingOnJsThread = false;

/**
 * Turns V8's concurrent marking off for this process when {@link computeFillsCpus} (once; it stays off). Returns
 * whether V8 now marks on the JavaScript thread.
 */
export function keepMarkingOffComputeCpus(backboneThreads: number | undefined, laneThreads: number): boolean {
  if (!markingOnJsThread && computeFillsCpus(backboneThreads, laneThreads)) {
    setFlagsFromString('--no-concurrent-marking');
    markingOnJsThread = true;
  }
  return markingOnJsThread;
}
