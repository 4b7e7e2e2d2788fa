/**
 * The server's own admission of requests into the engine: at most `maxBatch` of them running at once and `maxQueue`
 * more waiting their turn in order; beyond that a 429 with `Retry-After`.
 */
import { HttpError } from './errors.js';
import type { ServerMetrics } from './metrics.js';

/** One admitted or waiting request. */
export interface Slot {
  admit?: () => void;
  /** The engine rows its call runs (its prompts × choices). */
  rows: number;
}

/** The slots of the requests in the engine and of those waiting for one. */
export class Admission {
  private readonly running = new Set<Slot>();
  private readonly waiting: Slot[] = [];

  constructor(
    private readonly maxBatch: number,
    private readonly maxQueue: number,
    private readonly metrics: ServerMetrics,
  ) {}

  /** Requests in the engine. */
  get runningCount(): number {
    return this.running.size;
  }

  /** Requests waiting for a slot. */
  get waitingCount(): number {
    return this.waiting.length;
  }

  /** The engine rows the running requests' calls hold. */
  heldRows(): number {
    return [...this.running].reduce((n, slot) => n + slot.rows, 0);
  }

  /** Lets `slot` into the engine now, or once a slot frees (its wait ends if `signal` aborts); a full queue is a 429. */
  admit(slot: Slot, signal: AbortSignal): Promise<void> {
    if (this.running.size < this.maxBatch) {
      this.running.add(slot);
      return Promise.resolve();
    }
    if (this.waiting.length >= this.maxQueue) {
      this.metrics.rejected++;
      throw new HttpError(429, `the server is full: ${this.running.size} requests running and ${this.waiting.length} waiting (max_queue ${this.maxQueue}); retry later`, 'rate_limit_error', 'queue_full', {
        'Retry-After': String(this.retryAfter()),
      });
    }
    return new Promise<void>((resolve, reject) => {
      slot.admit = resolve;
      this.waiting.push(slot);
      signal.addEventListener('abort', () => {
        const at = this.waiting.indexOf(slot);
        if (at >= 0) {
          this.waiting.splice(at, 1);
          reject(new Error('client went away while queued'));
        }
      }, { once: true });
    });
  }

  /** Frees `slot`'s place, letting the first waiting request in. */
  release(slot: Slot): void {
    if (!this.running.delete(slot)) return;
    const next = this.waiting.shift();
    if (next) {
      this.running.add(next);
      next.admit!();
    }
  }

  /** Seconds until a slot is likely free: the mean request time so far × the queue's depth in batches. */
  private retryAfter(): number {
    const { sum, count } = this.metrics.e2e.totals();
    const mean = count ? sum / count : 1;
    return Math.max(1, Math.ceil((mean * (this.waiting.length + 1)) / this.maxBatch));
  }
}
