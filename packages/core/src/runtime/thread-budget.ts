/**
 * How many threads each onnxruntime session gets. Sessions that run at the same time must not
 * oversubscribe the cores: an idle intra-op thread spins, and a spinning thread on a shared core slows the
 * model that needs it (measured: backbone + 3 reasoners on 2 cores, 6.8 ms/token with every session at
 * onnxruntime's default, 5.3 ms/token partitioned).
 */
import { availableParallelism } from 'node:os';
import type { RuntimeOptions } from './decoder-session.js';

/**
 * Below this many bytes of weights an operator takes microseconds, and handing its halves to other threads
 * costs more than it saves (measured on the overhead-bound test model: ~0.30 vs ~0.41 ms/token).
 */
const SINGLE_THREAD_BELOW_BYTES = 16 * 1024 * 1024;

/** Intra-op threads: the user's choice, else one for small models, else onnxruntime's default (physical cores). */
export function intraOpThreadsFor(options: RuntimeOptions, weightBytes: number | undefined): number | undefined {
  if (options.intraOpThreads) return options.intraOpThreads;
  return weightBytes !== undefined && weightBytes < SINGLE_THREAD_BELOW_BYTES ? 1 : undefined;
}

/**
 * Splits the cores between a backbone and the reasoners that run beside it: one thread per reasoner (they
 * are small by design), the rest to the backbone. A user's explicit thread count applies to every model.
 */
export function partitionThreads(runtime: RuntimeOptions, reasoners: number): { backbone: RuntimeOptions; reasoner: RuntimeOptions } {
  if (reasoners === 0 || runtime.intraOpThreads) return { backbone: runtime, reasoner: runtime };
  return {
    backbone: { ...runtime, intraOpThreads: Math.max(1, availableParallelism() - reasoners) },
    reasoner: { ...runtime, intraOpThreads: 1 },
  };
}
