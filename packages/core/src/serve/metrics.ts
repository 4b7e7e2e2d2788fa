/**
 * The server's Prometheus metrics, in the text exposition format (0.0.4). Names follow vLLM's with a
 * `reasonplug:` prefix, so a queue- or KV-aware router (the Gateway API inference extension's endpoint picker,
 * for one) can be pointed at `reasonplug:num_requests_waiting` and `reasonplug:kv_cache_usage_perc`.
 */

import type { PrefixCacheStats } from '../runtime/prefix-cache.js';

/** Latency buckets in seconds (vLLM's time-to-first-token buckets, which also cover inter-token latency). */
const TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80];
const ITL_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5];
const E2E_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 60, 120, 300];

/** A cumulative histogram. */
export class Histogram {
  private readonly counts: number[];
  private sum = 0;
  private count = 0;
  /** @param buckets upper bounds of the buckets, ascending (seconds for the server's) */
  constructor(readonly buckets: readonly number[]) {
    this.counts = buckets.map(() => 0);
  }
  /** Records one value (seconds); `times` records it that many times. */
  observe(value: number, times = 1): void {
    this.sum += value * times;
    this.count += times;
    this.buckets.forEach((b, i) => {
      if (value <= b) this.counts[i]! += times;
    });
  }
  /** The sum and count of what was observed. */
  totals(): { sum: number; count: number } {
    return { sum: this.sum, count: this.count };
  }
  /** The exposition lines of this histogram under `name`, with `labels` (already formatted, may be empty). */
  lines(name: string, labels: string): string[] {
    const join = (extra: string) => `{${[labels, extra].filter(Boolean).join(',')}}`;
    return [
      ...this.buckets.map((b, i) => `${name}_bucket${join(`le="${b}"`)} ${this.counts[i]}`),
      `${name}_bucket${join('le="+Inf"')} ${this.count}`,
      `${name}_sum${labels ? `{${labels}}` : ''} ${this.sum}`,
      `${name}_count${labels ? `{${labels}}` : ''} ${this.count}`,
    ];
  }
}

/** What the server counts. Gauges are read when scraped (see {@link ServerMetrics.render}). */
export class ServerMetrics {
  /** Prompt tokens of every request answered (embedding inputs included). */
  promptTokens = 0;
  /** Tokens generated. */
  generationTokens = 0;
  /** Finished requests by finish reason (`stop`, `length`, `tool_calls`, `abort`, `error`). */
  readonly finished = new Map<string, number>();
  /** Requests refused because the queue was full. */
  rejected = 0;
  /** Time to first token from the request's arrival, seconds. */
  readonly ttft = new Histogram(TTFT_BUCKETS);
  /** Time between a request's tokens after its first, seconds. */
  readonly itl = new Histogram(ITL_BUCKETS);
  /** A request's whole time from arrival to its answer's end, seconds. */
  readonly e2e = new Histogram(E2E_BUCKETS);

  /** Counts one finished request under `reason` (see {@link finished}). */
  countFinished(reason: string): void {
    this.finished.set(reason, (this.finished.get(reason) ?? 0) + 1);
  }

  /** The exposition text; `gauges` are the values of the moment. */
  render(
    modelName: string,
    gauges: {
      running: number;
      waiting: number;
      kvUsage: number;
      kvBytes: number;
      kvCapacityBytes: number;
      prefixCache: PrefixCacheStats | undefined;
      drafts?: { draftedTokens: number; acceptedTokens: number } | undefined;
    },
  ): string {
    const label = `model_name="${modelName.replace(/["\\\n]/g, '_')}"`;
    const out: string[] = [];
    const metric = (name: string, type: string, help: string, lines: string[]) => out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, ...lines);
    const one = (name: string, value: number, extra = '') => `${name}{${[label, extra].filter(Boolean).join(',')}} ${value}`;
    metric('reasonplug:num_requests_running', 'gauge', 'Requests admitted to the engine (generating, or queued inside it).', [one('reasonplug:num_requests_running', gauges.running)]);
    metric('reasonplug:num_requests_waiting', 'gauge', "Requests in the server's queue, not yet admitted.", [one('reasonplug:num_requests_waiting', gauges.waiting)]);
    metric('reasonplug:kv_cache_usage_perc', 'gauge', 'KV cache held by the engine, 0..1 of its capacity.', [one('reasonplug:kv_cache_usage_perc', gauges.kvUsage)]);
    metric('reasonplug:kv_cache_bytes', 'gauge', "Bytes of KV cache the engine's batch holds (running rows and prompts being prefilled).", [one('reasonplug:kv_cache_bytes', gauges.kvBytes)]);
    metric('reasonplug:kv_cache_capacity_bytes', 'gauge', "The engine's KV budget, else max batch rows of full context.", [
      one('reasonplug:kv_cache_capacity_bytes', gauges.kvCapacityBytes),
    ]);
    const prefix = gauges.prefixCache;
    metric('reasonplug:prefix_cache_bytes', 'gauge', 'Bytes of KV cache kept of recent prompts for prefix caching.', [one('reasonplug:prefix_cache_bytes', prefix?.bytes ?? 0)]);
    metric('reasonplug:prefix_cache_queries_total', 'counter', 'Prompt tokens looked up in the prefix cache.', [one('reasonplug:prefix_cache_queries_total', prefix?.queriedTokens ?? 0)]);
    metric('reasonplug:prefix_cache_hits_total', 'counter', 'Prompt tokens found in the prefix cache (not run).', [one('reasonplug:prefix_cache_hits_total', prefix?.hitTokens ?? 0)]);
    const drafts = gauges.drafts;
    if (drafts) {
      metric('reasonplug:spec_decode_num_draft_tokens_total', 'counter', 'Tokens drafted (by prompt lookup, from requests\' predictions, or by the draft model) and run.', [one('reasonplug:spec_decode_num_draft_tokens_total', drafts.draftedTokens)]);
      metric('reasonplug:spec_decode_num_accepted_tokens_total', 'counter', 'Drafted tokens the model wrote itself (kept).', [
        one('reasonplug:spec_decode_num_accepted_tokens_total', drafts.acceptedTokens),
      ]);
    }
    metric('reasonplug:prompt_tokens_total', 'counter', 'Prompt tokens processed.', [one('reasonplug:prompt_tokens_total', this.promptTokens)]);
    metric('reasonplug:generation_tokens_total', 'counter', 'Tokens generated.', [one('reasonplug:generation_tokens_total', this.generationTokens)]);
    metric(
      'reasonplug:request_success_total',
      'counter',
      'Finished requests by finish reason.',
      [...this.finished].map(([reason, n]) => one('reasonplug:request_success_total', n, `finished_reason="${reason}"`)),
    );
    metric('reasonplug:request_rejected_total', 'counter', 'Requests refused with 429 because the queue was full.', [one('reasonplug:request_rejected_total', this.rejected)]);
    metric('reasonplug:time_to_first_token_seconds', 'histogram', 'From arrival to the first generated token.', this.ttft.lines('reasonplug:time_to_first_token_seconds', label));
    metric('reasonplug:inter_token_latency_seconds', 'histogram', 'Between generated tokens of a request.', this.itl.lines('reasonplug:inter_token_latency_seconds', label));
    metric('reasonplug:e2e_request_latency_seconds', 'histogram', 'From arrival to the last token.', this.e2e.lines('reasonplug:e2e_request_latency_seconds', label));
    return `${out.join('\n')}\n`;
  }
}
