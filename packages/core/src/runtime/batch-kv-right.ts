/**
 * The continuous batch's KV cache for right-padded graphs (onnxruntime-genai GroupQueryAttention decoders).
 * GQA reads no per-key mask: it takes each row's valid keys and positions from `seqlens_k` (Σ mask − 1), and
 * with past and present in separate buffers its CPU kernel copies each row's first `seqlens_k + 1 − seq` past
 * keys into a present of `total_sequence_length` (the mask's width) slots, the new key right after them, zeros
 * beyond. So here each row's keys are packed from slot 0, unused slots after them; a step feeds the cache as it
 * is and takes the present as the next cache (no copy per step), each row's new token landing at its own next
 * slot. Rows join and leave between steps through one rebuild, as in the left-padded {@link BatchKv}.
 */
import * as ort from 'onnxruntime-node';
import { BatchKv, type KvCounters, type RowCache } from './batch-kv.js';
import type { DecoderSession } from './decoder-session.js';

type KvData = Float32Array | Uint16Array;

/** What the continuous batch needs of a model's batch cache, whichever side its rows are padded on. */
export type BatchCache = Pick<BatchKv, 'counters' | 'bytesPerPosition' | 'rows' | 'bytes' | 'lengthOf' | 'rebuild' | 'takeRow' | 'step' | 'hidden'>;

/** The batch cache that suits the session's graph: right-padded for GroupQueryAttention graphs, else left-padded. */
export function batchKvFor(session: DecoderSession): BatchCache {
  return session.padding === 'right' ? new RightPaddedBatchKv(session) : new BatchKv(session);
}

/** A right-padded batch cache: `[rows, kvHeads, width, headDim]` per past input, each row's keys from slot 0. */
export class RightPaddedBatchKv implements BatchCache {
  private past: Record<string, ort.Tensor> = {};
  /** Valid positions of each row (slots 0 … length − 1). */
  private lengths: number[] = [];
  private width = 0;
  readonly counters: KvCounters = { copiedBytes: 0, perRowLayoutBytes: 0 };
  private readonly bytesPerElement: number;
  /** Each row's last hidden state `[rows × hidden]` after the latest step, when the graph reports it. */
  hidden: Float32Array | undefined;

  constructor(private readonly session: DecoderSession) {
    this.bytesPerElement = session.signature.kvType === 'float16' ? 2 : 4;
  }

  /** Bytes one position of one row takes across every layer's keys and values. */
  get bytesPerPosition(): number {
    const sig = this.session.signature;
    return sig.kv.length * 2 * sig.kvHeads * sig.headDim * this.bytesPerElement;
  }

  /** Rows in the batch. */
  get rows(): number {
    return this.lengths.length;
  }

  /** Bytes the cache holds now (padding included). */
  get bytes(): number {
    return this.rows * this.width * this.bytesPerPosition;
  }

  /** Valid positions of a row. */
  lengthOf(row: number): number {
    return this.lengths[row]!;
  }

  /**
   * Keeps the rows listed in `keep` (in that order), then appends `added` (caches as {@link RowCache} describes
   * them: right-aligned in their `width`); one copy of what stays, packed from slot 0. No rows left: dropped.
   */
  rebuild(keep: readonly number[], added: readonly RowCache[]): void {
    if (keep.length === this.rows && added.length === 0 && keep.every((r, i) => r === i)) return;
    const sig = this.session.signature;
    const parts = [
      ...keep.map((r) => ({ source: this.past, row: r, srcWidth: this.width, first: 0, length: this.lengths[r]! })),
      ...added.map((c) => {
        const srcWidth = c.width ?? c.length;
        return { source: c.past, row: c.row ?? 0, srcWidth, first: srcWidth - c.length, length: c.length };
      }),
    ];
    const lengths = parts.map((p) => p.length);
    const width = Math.max(0, ...lengths);
    const past: Record<string, ort.Tensor> = {};
    if (parts.length > 0) {
      const H = sig.kvHeads;
      const D = sig.headDim;
      for (const kv of sig.kv) {
        for (const name of [kv.pastKey, kv.pastValue]) {
          const out: KvData = sig.kvType === 'float16' ? new Uint16Array(parts.length * H * width * D) : new Float32Array(parts.length * H * width * D);
          parts.forEach((p, i) => {
            const src = p.source[name]!.data as KvData;
            for (let h = 0; h < H; h++) {
              const from = ((p.row * H + h) * p.srcWidth + p.first) * D;
              out.set(src.subarray(from, from + p.length * D), (i * H + h) * width * D);
            }
            this.counters.copiedBytes += H * p.length * D * this.bytesPerElement;
          });
          past[name] = new ort.Tensor(sig.kvType, out, [parts.length, H, width, D]);
        }
      }
    }
    this.past = past;
    this.lengths = lengths;
    this.width = width;
    this.hidden = undefined;
  }

  /** A copy of one row's cache, as its own prefill would leave it (to run it alone, then add it back). */
  takeRow(row: number): RowCache {
    const sig = this.session.signature;
    const H = sig.kvHeads;
    const D = sig.headDim;
    const length = this.lengths[row]!;
    const past: Record<string, ort.Tensor> = {};
    for (const kv of sig.kv) {
      for (const name of [kv.pastKey, kv.pastValue]) {
        const src = this.past[name]!.data as KvData;
        const out: KvData = sig.kvType === 'float16' ? new Uint16Array(H * length * D) : new Float32Array(H * length * D);
        for (let h = 0; h < H; h++) {
          const from = (row * H + h) * this.width * D;
          out.set(src.subarray(from, from + length * D), h * length * D);
        }
        this.counters.copiedBytes += H * length * D * this.bytesPerElement;
        past[name] = new ort.Tensor(sig.kvType, out, [1, H, length, D]);
      }
    }
    return { past, length };
  }

  /** Feeds one token per row; returns `[rows × vocab]` last-position logits. */
  async step(tokens: readonly number[]): Promise<Float32Array> {
    const rows = this.rows;
    const width = this.width;
    // Σ mask − 1 = the row's length: its new key's slot and its position. The width makes the present one slot
    // wider, room for the longest row's new key.
    const mask = new Array<number>(rows * (width + 1));
    for (let r = 0; r < rows; r++) {
      const length = this.lengths[r]!;
      for (let c = 0; c <= width; c++) mask[r * (width + 1) + c] = c <= length ? 1 : 0;
    }
    const { logits, present, hidden } = await this.session.forward(tokens, rows, this.past, width, mask, this.lengths);
    this.hidden = hidden;
    this.counters.perRowLayoutBytes += this.lengths.reduce((n, l) => n + (2 * l + 1), 0) * this.bytesPerPosition;
    this.past = present;
    this.width = width + 1;
    this.lengths = this.lengths.map((l) => l + 1);
    return logits;
  }
}
