/**
 * Keeps the process from ending while an engine's worker threads are inside onnxruntime's `session.run`: Node
 * terminates worker threads after the process's 'exit' listeners, and a thread terminated mid-run aborts the whole
 * process (onnxruntime's native code throws into it: `terminate called after throwing an instance of 'Napi::Error'`,
 * exit code 134), so a script's `process.exit(3)` or uncaught throw during a generation would not end with its code.
 *
 * Each engine shares an Int32Array of two cells with its worker, and that worker's lane and shard workers:
 * `[STOP]`, set as the process exits, and `[RUNS]`, the runs in flight. A run counts itself, then checks STOP; the
 * exit listener sets STOP, then waits for RUNS to reach 0. Either the listener sees the run counted, or the run sees
 * STOP and never starts (both sides use sequentially consistent Atomics).
 */
import { getEnvironmentData, setEnvironmentData } from 'node:worker_threads';

const STOP = 0;
const RUNS = 1;
/** Longest the process's exit waits for runs to end: a step, or a prefill chunk of a large model on the CPU. */
const EXIT_WAIT_MS = 10_000;
/** The key of the worker threads' environment data that carries the guard (new workers inherit it). */
const KEY = 'reasonplug.runGuard';

/** An engine's shared `[stop, runs in flight]`. */
export type RunGuard = Int32Array;

/** A fresh guard for an engine. */
export function newRunGuard(): RunGuard {
  return new Int32Array(new SharedArrayBuffer(8));
}

/**
 * Runs `spawn` (which creates a worker) with `guard` in this thread's environment data, which the new worker and
 * every worker it creates inherit, so that the sessions of all of them count their runs in it.
 */
export function withRunGuard<T>(guard: RunGuard, spawn: () => T): T {
  const before = getEnvironmentData(KEY);
  setEnvironmentData(KEY, guard);
  try {
    return spawn();
  } finally {
    setEnvironmentData(KEY, before);
  }
}

/** This thread's guard: its engine's, in the engine's workers; none elsewhere (a session used directly). */
const own = getEnvironmentData(KEY) as RunGuard | undefined;

/**
 * Runs `run` (one `session.run`) counted in this thread's guard; once the process is exiting, never starts it (the
 * returned promise stays pending: the thread ends with the process).
 */
export async function guardedRun<T>(run: () => Promise<T>): Promise<T> {
  if (!own) return run();
  Atomics.add(own, RUNS, 1);
  if (Atomics.load(own, STOP) !== 0) {
    leave(own);
    return new Promise<never>(() => {});
  }
  try {
    return await run();
  } finally {
    leave(own);
  }
}

function leave(guard: RunGuard): void {
  if (Atomics.sub(guard, RUNS, 1) === 1 && Atomics.load(guard, STOP) !== 0) Atomics.notify(guard, RUNS);
}

const held = new Set<RunGuard>();

/** On exit: stops every held guard's runs from starting, then waits (blocking, as 'exit' listeners must) for them to end. */
function waitForRuns(): void {
  for (const guard of held) Atomics.store(guard, STOP, 1);
  const deadline = Date.now() + EXIT_WAIT_MS;
  for (const guard of held) {
    for (let runs; (runs = Atomics.load(guard, RUNS)) !== 0 && Date.now() < deadline; ) Atomics.wait(guard, RUNS, runs, deadline - Date.now());
  }
}

/**
 * Makes the process's exit wait for `guard`'s runs, until the returned function is called (the engine's dispose).
 * One 'exit' listener serves every engine (a listener each would warn past ten engines).
 */
export function holdExitForRuns(guard: RunGuard): () => void {
  if (held.size === 0) process.on('exit', waitForRuns);
  held.add(guard);
  return () => {
    if (held.delete(guard) && held.size === 0) process.off('exit', waitForRuns);
  };
}
