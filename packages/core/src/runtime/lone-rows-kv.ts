/**
 * The batch cache of a graph whose rows must each run alone: one that quantizes a run's activations with one scale
 * (`DecoderSession.runWideActivationScale`), where rows run together change each other's rounding. Each row keeps a
 * {@link BatchKv} of its own, holding its positions only, and a step runs each row's token in a run of its own. No
 * row is padded beside a longer one, nor rebuilt when others join or leave: its cache is laid out, step after step,
 * as it is when the row runs alone, so it computes to the bit what it computes alone (a row's run over a wider,
 * masked cache differs in the last bits, which the next quantization can round apart). No run holds several
 * positions of a row either: drafts are not run on it (see `ContinuousBatch`).
 */
import { BatchKv, kvBytesPerPosition, type BatchCache, type KvCounters, type RowCache } from './batch-kv.js';
import { stateBytesPerRow } from './cache-tensors.js';
import type { DecoderSession } from './decoder-session.js';

/** A batch cache of one-row caches, stepped one row at a time. */
export class LoneRowsKv implements BatchCache {
  private kvs: BatchKv[] = [];
  /** The counters of the rows that have left. */
  private readonly gone: KvCounters = { copiedBytes: 0, perRowLayoutBytes: 0 };

  constructor(private readonly session: DecoderSession) {}

  get rows(): number {
    return this.kvs.length;
  }

  get bytes(): number {
    return this.kvs.reduce((n, kv) => n + kv.bytes, 0);
  }

  get bytesPerPosition(): number {
    return kvBytesPerPosition(this.session);
  }

  get stateBytesPerRow(): number {
    return stateBytesPerRow(this.session.signature);
  }

  get counters(): KvCounters {
    return {
      copiedBytes: this.kvs.reduce((n, kv) => n + kv.counters.copiedBytes, this.gone.copiedBytes),
      perRowLayoutBytes: this.kvs.reduce((n, kv) => n + kv.counters.perRowLayoutBytes, this.gone.perRowLayoutBytes),
    };
  }

  /** Each row's last hidden state after the latest step (`[rows × hidden]`), when the graph reports it. */
  get hidden(): Float32Array | undefined {
    const each = this.kvs.map((kv) => kv.hidden);
    if (each.length === 0 || each.some((h) => h === undefined)) return undefined;
    const width = each[0]!.length;
    const out = new Float32Array(each.length * width);
    each.forEach((h, r) => out.set(h!, r * width));
    return out;
  }

  lengthOf(row: number): number {
    return this.kvs[row]!.lengthOf(0);
  }

  rebuild(keep: readonly number[], added: readonly RowCache[], reach?: number): void {
    const kept = new Set(keep);
    this.kvs.forEach((kv, r) => {
      if (kept.has(r)) return;
      this.gone.copiedBytes += kv.counters.copiedBytes;
      this.gone.perRowLayoutBytes += kv.counters.perRowLayoutBytes;
      // (frees its cache)
      kv.rebuild([], []);
    });
    const joining = added.map((cache) => {
      const kv = new BatchKv(this.session);
      kv.rebuild([], [cache], reach);
      return kv;
    });
    this.kvs = [...keep.map((r) => this.kvs[r]!), ...joining];
  }

  takeRow(row: number): RowCache {
    return this.kvs[row]!.takeRow(0);
  }

  /** Feeds one token per row, each row in a run of its own; returns `[rows × vocab]` last-position logits. */
  async step(tokens: readonly number[]): Promise<Float32Array> {
    const vocab = this.session.vocabSize;
    const logits = new Float32Array(tokens.length * vocab);
    for (const [r, kv] of this.kvs.entries()) logits.set(await kv.step([tokens[r]!]), r * vocab);
    return logits;
  }
}
