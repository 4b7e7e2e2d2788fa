/**
 * How many threads each onnxruntime session gets, and where reasoners run. Sessions that run at the same time
 * must not oversubscribe the cores: an idle intra-op thread spins, and a spinning thread on a shared core
 * slows the model that needs it (measured: backbone + 3 reasoners on 2 cores, 6.8 ms/token with every
 * session at onnxruntime's default, 5.3 ms/token partitioned).
 */
import { availableParallelism } from 'node:os';
import type { RuntimeOptions } from './decoder-session.js';
import { threadsPerCore } from './cpu-topology.js';

/**
 * Below this many bytes of weights an operator takes microseconds, and handing its halves to other threads
 * costs more than it saves (measured on the overhead-bound test model: ~0.30 vs ~0.41 ms/token).
 */
const SINGLE_THREAD_BELOW_BYTES = 16 * 1024 * 1024;

/**
 * How the bytes-bound part of a decode step's time falls with threads: `t(n) = t(1) / n^THREAD_SCALING`. A
 * step reads every weight once, and memory bandwidth grows more slowly than cores: on this project's 2-vCPU
 * machine the 24M benchmark backbone's step ran 1.24x faster on two threads than on one in fp32 (1.90 → 1.53
 * ms) and 1.17x at 4 bits (0.63 → 0.54 ms), i.e. 2^0.31 and 2^0.23 (2026-12-04, one thread each, quiet).
 */
const THREAD_SCALING = 0.3;

/**
 * A step's fixed cost per operator it runs, in weight bytes read on one thread: a kernel launch and its
 * bookkeeping, whatever the operator's size. Fitted on single-thread steps of the 24M benchmark backbone (1.90
 * ms for 60.7 MB read and 305 operators) and its 1/8 reasoner (0.27 ms, 6.5 MB, 215 operators): 0.029 ms per
 * MB and 0.39 µs per operator, ~13 KB each. It is most of a quantized reasoner's step (the 4-bit reasoner reads
 * 2.6 MB, ~0.08 ms of bytes, but takes 0.25 ms), which is why bytes alone under-priced quantized models.
 */
const NODE_BYTES = 13 * 1024;

/**
 * What a reasoner's step costs relative to the backbone's model of it: a small model's weights are evicted by
 * the backbone's between steps, and its skinny matrices (few inputs per output) run below the kernels' best
 * rate. Measured: the 3M fp32 benchmark reasoner 1.2x its bytes warm and 1.6x beside the backbone; the 4-bit
 * one 1.6x the bytes-and-operators model alone.
 */
const REASONER_COST = 1.5;

/**
 * Threads per CPU a session may ask for at most. More only oversubscribes the cores (a spinning thread slows
 * the one that has work), and a pool of 100000 threads hangs the process that creates it.
 */
const MAX_THREADS_PER_CPU = 4;

/** The most intra-op threads a session may ask for: {@link MAX_THREADS_PER_CPU} per CPU this process may use. */
export function maxIntraOpThreads(cores = availableParallelism()): number {
  return MAX_THREADS_PER_CPU * cores;
}

/** Raised for a thread count that is not a whole number from 1 to {@link maxIntraOpThreads}. */
export class ThreadCountError extends Error {
  override name = 'ThreadCountError';
}

/** Checks a user's `intraOpThreads` (JavaScript callers; the CLI checks `--threads` the same way). */
export function validateIntraOpThreads(value: unknown): number {
  const max = maxIntraOpThreads();
  if (typeof value === 'number' && Number.isInteger(value) && value >= 1 && value <= max) return value;
  throw new ThreadCountError(
    `intraOpThreads must be a whole number from 1 to ${max} (${MAX_THREADS_PER_CPU} per CPU this process may use); got ${String(value)}`,
  );
}

/** Intra-op threads: the user's choice, else one for small models, else onnxruntime's default (physical cores). */
export function intraOpThreadsFor(options: RuntimeOptions, weightBytes: number | undefined): number | undefined {
  if (options.intraOpThreads !== undefined) return validateIntraOpThreads(options.intraOpThreads);
  return weightBytes !== undefined && weightBytes < SINGLE_THREAD_BELOW_BYTES ? 1 : undefined;
}

/**
 * Where reasoners run: `lanes` — in lane workers, concurrently with the backbone, on cores the backbone
 * gives up; `inline` — on the backbone's thread, one after another after it, while the backbone keeps every
 * core.
 */
export type Placement = 'lanes' | 'inline';

/** The placements a user may ask for; `auto` takes the one the cost model below predicts to be faster. */
export const PLACEMENTS = ['auto', 'lanes', 'inline'] as const;

/** A user's choice of placement. */
export type PlacementChoice = (typeof PLACEMENTS)[number];

/** Raised for a placement that is not one of {@link PLACEMENTS}. */
export class PlacementError extends Error {
  override name = 'PlacementError';
}

/** Checks a placement given by a user (JavaScript callers). */
export function validatePlacement(value: string): PlacementChoice {
  if ((PLACEMENTS as readonly string[]).includes(value)) return value as PlacementChoice;
  throw new PlacementError(`placement must be one of ${PLACEMENTS.join(', ')}; got "${value}"`);
}

/** Threads for a backbone and the reasoners beside it. */
export interface ThreadPlan {
  placement: Placement;
  backbone: RuntimeOptions;
  reasoner: RuntimeOptions;
  /** Reasoner indices hosted by each lane worker, which runs them one after another on one thread; empty inline. */
  lanes: number[][];
  /** Whether every lane has a core of its own (then the backbone spins briefly for a late answer instead of sleeping). */
  dedicatedCores: boolean;
}

/** What one decode step of a model reads and runs (from `GraphFacts`: `stepBytes`, `stepNodes`). */
export interface StepFacts {
  /** Weight bytes a step reads, as onnxruntime holds them (quantized weights packed). */
  bytes: number;
  /** Operators a step runs. */
  nodes: number;
}

/** What a plan is made from. */
export interface PlanInput {
  runtime: RuntimeOptions;
  placement?: PlacementChoice;
  /** What a step of the backbone and of each reasoner reads and runs. */
  backbone: StepFacts;
  reasoners: readonly StepFacts[];
  /** Logical CPUs this process may use (default: all it may). */
  cores?: number;
  /** Hardware threads per physical core (default: read from the system). */
  threadsPerCore?: number;
}

/**
 * A step's predicted time on `threads` threads, in units of one weight byte read on one thread: its bytes,
 * which more threads read faster, and its operators' fixed costs, which they do not.
 */
const stepCost = (model: StepFacts, threads: number) => model.bytes / threads ** THREAD_SCALING + NODE_BYTES * model.nodes;

/** A reasoner step's predicted time, in the same units. */
const reasonerCost = (model: StepFacts, threads: number) => REASONER_COST * stepCost(model, threads);

/** Threads a session gets on its own: one for small models, else one per physical core. */
const allCores = (bytes: number, cores: number) => (bytes < SINGLE_THREAD_BELOW_BYTES ? 1 : cores);

/** Reasoners dealt to lanes, heaviest first, each to the lightest lane so far; with each lane's load. */
function deal(costs: readonly number[], lanes: number): { members: number[]; load: number }[] {
  const out = Array.from({ length: lanes }, () => ({ members: [] as number[], load: 0 }));
  const order = costs.map((b, i) => ({ b, i })).sort((x, y) => y.b - x.b || x.i - y.i);
  for (const { b, i } of order) {
    const lightest = out.reduce((best, lane) => (lane.load < best.load ? lane : best));
    lightest.members.push(i);
    lightest.load += b;
  }
  for (const lane of out) lane.members.sort((x, y) => x - y);
  return out;
}

/**
 * Reasoners dealt to `lanes` lanes by their step costs so that the heaviest lane is as light as possible
 * (largest first, each to the lightest lane so far); lanes keep their reasoners in the order given.
 */
export function dealLanes(costs: readonly number[], lanes: number): number[][] {
  return deal(costs, lanes).map((l) => l.members);
}

/** Threads the backbone gets beside `lanes` lanes: the CPUs they leave, at most one per physical core. */
const backboneThreads = (cores: number, physical: number, lanes: number) => Math.max(1, Math.min(physical, cores - lanes));

/** The lanes plan with the lane count that minimises the predicted step: the backbone or the heaviest lane. */
function bestLanes(input: PlanInput, cores: number, physical: number): { lanes: number[][]; cost: number } {
  // A lane runs its reasoners one after another on one thread: its load is the sum of their step costs.
  const costs = input.reasoners.map((r) => reasonerCost(r, 1));
  let best = { lanes: dealLanes(costs, 1), cost: Infinity };
  for (let l = 1; l <= Math.min(costs.length, cores - 1); l++) {
    const lanes = deal(costs, l);
    const heaviest = Math.max(...lanes.map((lane) => lane.load));
    const cost = Math.max(stepCost(input.backbone, backboneThreads(cores, physical, l)), heaviest);
    if (cost < best.cost) best = { lanes: lanes.map((lane) => lane.members), cost };
  }
  return best;
}

/**
 * Plans threads and placement. Lanes: each reasoner gets one thread, the backbone the CPUs the lanes leave
 * (at most one thread per physical core, like onnxruntime's default; with SMT the lanes then take the cores'
 * second threads), and the lane count balances the backbone's step against the heaviest lane's. Inline: the
 * backbone and then each reasoner run with onnxruntime's default pool (one thread for small models). `auto`
 * compares the two predicted steps, `max(backbone beside l lanes, heaviest lane)` against `backbone +
 * Σ reasoners`, each step priced by the bytes it reads and the operators it runs (see {@link NODE_BYTES});
 * on one core it is always inline, since a lane could only time-slice with the backbone. A
 * user's explicit thread count applies to every model, and then every reasoner gets a lane of its own unless
 * `inline` is asked for; so does a device other than the CPU, where the model is about the device, not the
 * cores.
 */
export function planThreads(input: PlanInput): ThreadPlan {
  const { runtime, reasoners } = input;
  const cores = input.cores ?? availableParallelism();
  // onnxruntime's default pool, which the backbone alone and inline models get: one thread per physical core.
  const physical = Math.max(1, Math.floor(cores / (input.threadsPerCore ?? threadsPerCore())));
  const n = reasoners.length;
  const inline: ThreadPlan = { placement: 'inline', backbone: runtime, reasoner: runtime, lanes: [], dedicatedCores: false };
  const choice = input.placement ?? 'auto';
  if (n === 0 || choice === 'inline') return inline;
  // On an accelerator the cores only launch kernels, and concurrent sessions overlap on the device.
  const accelerated = runtime.device !== undefined && runtime.device !== 'cpu';
  if (runtime.intraOpThreads || accelerated) {
    return { placement: 'lanes', backbone: runtime, reasoner: runtime, lanes: reasoners.map((_, i) => [i]), dedicatedCores: false };
  }
  const { lanes, cost } = bestLanes(input, cores, physical);
  const lanesPlan: ThreadPlan = {
    placement: 'lanes',
    backbone: { ...runtime, intraOpThreads: backboneThreads(cores, physical, lanes.length) },
    reasoner: { ...runtime, intraOpThreads: 1 },
    lanes,
    dedicatedCores: cores > lanes.length,
  };
  if (choice === 'lanes') return lanesPlan;
  const inlineCost =
    stepCost(input.backbone, allCores(input.backbone.bytes, physical)) + reasoners.reduce((s, r) => s + reasonerCost(r, allCores(r.bytes, physical)), 0);
  return cost < inlineCost ? lanesPlan : inline;
}
