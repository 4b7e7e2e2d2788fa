/** Timing a request's tokens for the server's latency histograms. */
import type { ServerMetrics } from './metrics.js';

/**
 * Times a request's tokens for the histograms: time to the first token (once a request), and the gaps between the
 * tokens of each of its rows (a choice's sequence, as vLLM times each of `n` samples). A row's tokens that arrive
 * together (the worker sends tokens in small batches when they come faster than its flush interval; drafted tokens
 * are kept at once) share the gap before them evenly, so a batch does not read as one slow token and several instant
 * ones.
 */
export class TokenClock {
  /** Per row: when its last token came, and the gap and tokens not yet observed. */
  private readonly rows = new Map<number, { last: number; gap: number; tokens: number }>();
  private started = false;

  constructor(
    private readonly arrival: number,
    private readonly metrics: ServerMetrics,
  ) {}

  tick(row: number): void {
    const now = performance.now();
    if (!this.started) {
      this.metrics.ttft.observe((now - this.arrival) / 1000);
      this.started = true;
    }
    const seen = this.rows.get(row);
    if (!seen) return void this.rows.set(row, { last: now, gap: 0, tokens: 0 });
    const gap = now - seen.last;
    // Tokens of one worker message arrive within microseconds of each other.
    if (gap < 0.05) {
      seen.tokens++;
      return;
    }
    this.flush(seen);
    seen.gap = gap;
    seen.tokens = 1;
    seen.last = now;
  }

  end(): void {
    for (const seen of this.rows.values()) this.flush(seen);
  }

  private flush(seen: { gap: number; tokens: number }): void {
    if (seen.tokens > 0) this.metrics.itl.observe(seen.gap / 1000 / seen.tokens, seen.tokens);
    seen.tokens = 0;
  }
}
