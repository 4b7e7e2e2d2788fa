/** The batch KV cache scenario the continuous-batching tests share, on any session and padding side. */
import { expect } from 'chai';
import { BatchKv, prefillTogether, RowPrefill } from '../../src/runtime/batch-kv.js';
import type { DecoderSession } from '../../src/runtime/decoder-session.js';
import { ContinuousBatch } from '../../src/generate/continuous-batch.js';

/**
 * Row 0 runs, row 1 joins after one step, row 2 after two; row 0 is taken out and added back after three (as a
 * latent step does), row 1 leaves after four. Returns the largest difference from each row's logits alone.
 */
export async function joinAndLeave(session: DecoderSession, kv: BatchKv): Promise<number> {
  const V = session.vocabSize;
  const prompts = [[3, 8, 20, 1, 9, 44, 61], [12], [40, 41, 42]];
  const tokens = [[5, 6, 7, 8, 9, 10], [50, 51, 52, 53, 54, 55], [70, 71, 72, 73, 74, 75]];
  const aloneLogits: Float32Array[][] = [];
  for (let r = 0; r < prompts.length; r++) {
    const seq = [await session.prefill([prompts[r]!])];
    for (const t of tokens[r]!) seq.push(await session.step([t]));
    aloneLogits.push(seq.map((l) => l.slice(0, V)));
  }
  const fed = [0, 0, 0];
  let live: number[] = [];
  let worst = 0;
  const check = (row: number, logits: Float32Array) => {
    const want = aloneLogits[row]![fed[row]!]!;
    for (let v = 0; v < V; v++) worst = Math.max(worst, Math.abs(logits[v]! - want[v]!));
  };
  const join = async (row: number) => {
    const run = new RowPrefill(session, prompts[row]!, 2);
    let logits: Float32Array | undefined;
    while (!(logits = await run.next()));
    check(row, logits);
    return run.cache;
  };
  kv.rebuild([], [await join(0)]);
  live.push(0);
  for (let step = 0; step < 5; step++) {
    if (step === 1 || step === 2) {
      kv.rebuild(live.map((_, i) => i), [await join(step)]);
      live.push(step);
    }
    if (step === 3) {
      const at = live.indexOf(0);
      const taken = kv.takeRow(at);
      kv.rebuild(live.map((_, i) => i).filter((i) => i !== at), [taken]);
      live = [...live.filter((r) => r !== 0), 0];
    }
    if (step === 4) {
      const leaving = live.indexOf(1);
      kv.rebuild(live.map((_, i) => i).filter((i) => i !== leaving), []);
      live.splice(leaving, 1);
    }
    const logits = await kv.step(live.map((r) => tokens[r]![fed[r]!]!));
    live.forEach((r, i) => {
      fed[r]!++;
      check(r, logits.subarray(i * V, (i + 1) * V));
    });
  }
  expect(fed).to.deep.equal([5, 3, 3]);
  kv.rebuild([], []);
  expect(kv.bytes).to.equal(0);
  return worst;
}

/**
 * The prompts prefilled together, their rows added to a batch cache, then one step with `tokens`: the largest
 * difference from each prompt's logits alone after its prefill and after the step, and the cache's counters.
 */
export async function togetherAsAlone(
  session: DecoderSession,
  prompts: number[][],
  tokens: number[],
): Promise<{ prefill: number; step: number; kv: BatchKv }> {
  const V = session.vocabSize;
  const alone: Float32Array[][] = [];
  for (const [r, prompt] of prompts.entries()) {
    alone.push([(await session.prefill([prompt])).slice(0, V), (await session.step([tokens[r]!])).slice(0, V)]);
  }
  const together = await prefillTogether(session, prompts);
  const kv = new BatchKv(session);
  kv.rebuild([], together.caches);
  const stepped = await kv.step(tokens);
  const worst = [0, 0];
  prompts.forEach((_, r) => {
    [together.logits[r]!, stepped.subarray(r * V, (r + 1) * V)].forEach((l, i) => {
      for (let v = 0; v < V; v++) worst[i] = Math.max(worst[i]!, Math.abs(l[v]! - alone[r]![i]![v]!));
    });
  });
  return { prefill: worst[0]!, step: worst[1]!, kv };
}

/**
 * Three composed requests (backbone + `reasoner` at different weights), each alone, then as a burst: each must
 * give what it gives alone, and the burst's rows must join in one rebuild per model (each prompt's positions
 * copied once per model), which prefilling them together gives.
 */
export async function composedBurstAsAlone(backbone: DecoderSession, reasoner: DecoderSession): Promise<void> {
  const batch = new ContinuousBatch(backbone, backbone.vocabSize, { maxBatch: 8 }, [{ session: reasoner, name: 'r' }]);
  const request = (prompt: number[], weight: number) => ({
    prompts: [prompt],
    options: { maxTokens: 6, ignoreEos: true },
    eosTokenIds: [],
    shouldAbort: () => false,
    onToken: () => {},
    composition: { reasoners: [{ index: 0, weight }], mode: 'logits' as const, normalize: false },
  });
  const calls: [number[], number][] = [[[3, 8, 20, 1, 9], 1], [[12, 13], 2], [[40, 41, 42], -0.5]];
  const alone: number[][] = [];
  for (const [prompt, weight] of calls) alone.push((await batch.submit(request(prompt, weight))).rows[0]!.ids);
  const before = batch.stats().counters.copiedBytes;
  const burst = await Promise.all(calls.map(([prompt, weight]) => batch.submit(request(prompt, weight))));
  expect(burst.map((r) => r.rows[0]!.ids)).to.deep.equal(alone);
  const perPosition = new BatchKv(backbone).bytesPerPosition + new BatchKv(reasoner).bytesPerPosition;
  expect(batch.stats().counters.copiedBytes - before).to.equal((5 + 2 + 3) * perPosition);
}
