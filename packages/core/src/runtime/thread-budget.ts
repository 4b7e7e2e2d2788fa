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

/** Cores per reasoner lane: a reasoner is small by design, so a few of them fit in one core's time per step. */
const CORES_PER_LANE = 4;

/** Intra-op threads: the user's choice, else one for small models, else onnxruntime's default (physical cores). */
export function intraOpThreadsFor(options: RuntimeOptions, weightBytes: number | undefined): number | undefined {
  if (options.intraOpThreads) return options.intraOpThreads;
  return weightBytes !== undefined && weightBytes < SINGLE_THREAD_BELOW_BYTES ? 1 : undefined;
}

/** Threads for a backbone and the reasoners beside it. */
export interface ThreadPlan {
  backbone: RuntimeOptions;
  reasoner: RuntimeOptions;
  /** Worker threads hosting the reasoners; each runs its reasoners one after another, on one thread. */
  lanes: number;
  /** Whether every lane has a core of its own (then the backbone spins briefly for a late answer instead of sleeping). */
  dedicatedCores: boolean;
}

/**
 * Splits the cores between a backbone and its reasoners: one lane per {@link CORES_PER_LANE} cores (at
 * least one), one thread per reasoner, and the backbone gets the cores the lanes leave. A user's explicit
 * thread count applies to every model, and then every reasoner gets a lane of its own.
 */
export function partitionThreads(runtime: RuntimeOptions, reasoners: number, cores = availableParallelism()): ThreadPlan {
  if (reasoners === 0) return { backbone: runtime, reasoner: runtime, lanes: 0, dedicatedCores: false };
  if (runtime.intraOpThreads) return { backbone: runtime, reasoner: runtime, lanes: reasoners, dedicatedCores: false };
  const lanes = Math.min(reasoners, Math.max(1, Math.floor(cores / CORES_PER_LANE)));
  return {
    backbone: { ...runtime, intraOpThreads: Math.max(1, cores - lanes) },
    reasoner: { ...runtime, intraOpThreads: 1 },
    lanes,
    dedicatedCores: cores > lanes,
  };
}

/** Deals reasoners to lanes in turn: reasoner i goes to lane i mod lanes. */
export function assignLanes(reasoners: number, lanes: number): number[][] {
  const out = Array.from({ length: lanes }, () => [] as number[]);
  for (let i = 0; i < reasoners; i++) out[i % lanes]!.push(i);
  return out;
}
