/**
 * A counting semaphore shared by worker threads: at most N reasoners run a step at once. More single-threaded
 * sessions than free cores would time-slice with the backbone and slow the step everyone waits for; a reasoner
 * waiting for a lane sleeps in `Atomics.wait` and costs no CPU.
 */
export class Lanes {
  private readonly count: Int32Array;

  private constructor(readonly buffer: SharedArrayBuffer) {
    this.count = new Int32Array(buffer);
  }

  /** New lanes, all free. */
  static create(lanes: number): Lanes {
    if (!Number.isInteger(lanes) || lanes < 1) throw new RangeError(`lanes must be a positive integer, got ${lanes}`);
    const lanesOf = new Lanes(new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT));
    Atomics.store(lanesOf.count, 0, lanes);
    return lanesOf;
  }

  /** The same lanes, seen from another thread. */
  static attach(buffer: SharedArrayBuffer): Lanes {
    return new Lanes(buffer);
  }

  /** Runs `work` once a lane is free; blocks this thread until then (call it from worker threads only). */
  async run<T>(work: () => Promise<T>): Promise<T> {
    this.acquire();
    try {
      return await work();
    } finally {
      Atomics.add(this.count, 0, 1);
      Atomics.notify(this.count, 0, 1);
    }
  }

  private acquire(): void {
    for (;;) {
      const free = Atomics.load(this.count, 0);
      if (free > 0) {
        if (Atomics.compareExchange(this.count, 0, free, free - 1) === free) return;
      } else {
        Atomics.wait(this.count, 0, free);
      }
    }
  }
}
