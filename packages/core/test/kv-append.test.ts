/**
 * Graphs that return only each run's keys and values (`kvOutput: 'new'`, what GGUF conversion writes for the op
 * graph) against the joined graph of the same weights: in a bare onnxruntime loop whose cache keeps room to spare
 * (filled with noise, masked out), and in the engine's batch cache across its growth, rows joining, moving and leaving.
 */
import { expect } from 'chai';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { buildLlamaModel, randomLlamaWeights, type LlamaBuildOptions } from '../src/onnx/llama-builder.js';
import type { LlamaConfig } from '../src/onnx/llama-spec.js';
import { writeModel } from '../src/onnx/proto.js';
import { detectSignature, UnsupportedModelError } from '../src/onnx/signature.js';
import { prepareDecoder } from '../src/onnx/prepared-cache.js';
import { DecoderSession } from '../src/runtime/decoder-session.js';
import { BatchKv, RowPrefill } from '../src/runtime/batch-kv.js';
import { KV_ROOM } from '../src/runtime/cache-tensors.js';
import { builtModel, cacheDir, testDir } from './support/models.js';

const base: LlamaConfig = { vocabSize: 96, hiddenSize: 64, numLayers: 2, numHeads: 4, numKvHeads: 2, intermediateSize: 128 };
const PROMPT = [1, 5, 9, 22, 40, 3, 17, 8, 60, 11];
const STEPS = 10;
/** Slots of room the bare loop keeps after its cache's positions. */
const ROOM = 3;

/**
 * The last position's logits of a prefill of PROMPT and of each greedy step after it, through onnxruntime alone. A
 * joined graph's presents become the next past; a graph of new keys and values writes them into a cache of
 * `ROOM` more slots than it holds, the room filled with noise and masked out (grown by copying when full).
 */
async function run(path: string): Promise<Float32Array[]> {
  const s = await ort.InferenceSession.create(path);
  try {
    const meta = (n: string) => s.inputMetadata.find((m) => m.name === n) as unknown as { shape: number[]; type: string };
    const appends = s.outputNames.some((n) => n.startsWith('new_key_values.'));
    const pastNames = s.inputNames.filter((n) => n.startsWith('past_key_values.'));
    const half = (n: string) => meta(n).type === 'float16';
    const [kvHeads, headDim] = [meta(pastNames[0]!).shape[1]!, meta(pastNames[0]!).shape[3]!];
    let length = 0;
    let slots = appends ? ROOM : 0;
    // (noise of the cache's type: fp16 bit patterns of small numbers, or floats)
    let noise = 1;
    const fresh = (n: string, size: number) => {
      const a = half(n) ? new Uint16Array(size) : new Float32Array(size);
      for (let i = 0; i < size; i++) a[i] = half(n) ? 0x3000 + ((noise = (noise * 48271) % 2147483647) % 0x0c00) : ((noise = (noise * 48271) % 2147483647) % 1000) / 100 - 5;
      return a;
    };
    let cache: Record<string, Uint16Array | Float32Array> = Object.fromEntries(pastNames.map((n) => [n, fresh(n, kvHeads * slots * headDim)]));
    const out: Float32Array[] = [];
    let feed = PROMPT;
    for (let i = 0; i <= STEPS; i++) {
      const S = feed.length;
      if (appends && length + S > slots) {
        const grown = length + S + ROOM;
        cache = Object.fromEntries(
          pastNames.map((n) => {
            const next = fresh(n, kvHeads * grown * headDim);
            for (let h = 0; h < kvHeads; h++) next.set(cache[n]!.subarray(h * slots * headDim, (h * slots + length) * headDim), h * grown * headDim);
            return [n, next];
          }),
        );
        slots = grown;
      }
      const width = appends ? slots : length;
      const mask = BigInt64Array.from({ length: width + S }, (_, j) => (j < length || j >= width ? 1n : 0n));
      const inputs: Record<string, ort.Tensor> = {
        input_ids: new ort.Tensor('int64', BigInt64Array.from(feed, BigInt), [1, S]),
        attention_mask: new ort.Tensor('int64', mask, [1, width + S]),
        position_ids: new ort.Tensor('int64', BigInt64Array.from(feed, (_, j) => BigInt(length + j)), [1, S]),
      };
      for (const n of pastNames) inputs[n] = new ort.Tensor(half(n) ? 'float16' : 'float32', cache[n]!, [1, kvHeads, width, headDim]);
      if (s.inputNames.includes('inputs_embeds')) inputs.inputs_embeds = new ort.Tensor('float32', new Float32Array(0), [1, 0, base.hiddenSize]);
      if (s.inputNames.includes('use_cache_branch')) inputs.use_cache_branch = new ort.Tensor('bool', [length > 0], [1]);
      const r = await s.run(inputs);
      const logits = r.logits!.data as Float32Array;
      const last = logits.slice(logits.length - base.vocabSize);
      out.push(last);
      for (const n of pastNames) {
        if (!appends) {
          cache[n] = r[n.replace('past_key_values.', 'present.')]!.data as Float32Array;
          continue;
        }
        const added = r[n.replace('past_key_values.', 'new_key_values.')]!;
        expect(added.dims).to.deep.equal([1, kvHeads, S, headDim]);
        for (let h = 0; h < kvHeads; h++) cache[n]!.set((added.data as Float32Array).subarray(h * S * headDim, (h + 1) * S * headDim), (h * slots + length) * headDim);
      }
      length += S;
      feed = [last.indexOf(Math.max(...last))];
    }
    return out;
  } finally {
    await s.release();
  }
}

describe("graphs that return new keys and values (kvOutput: 'new')", function () {
  this.timeout(120_000);
  const cases: [string, LlamaConfig, LlamaBuildOptions][] = [
    ['grouped queries, rotary kernel, fused norms (as GGUF conversion writes them)', base, { rotaryKernel: true, fuseResidualNorms: true, maxPositions: 64 }],
    ['a kv head per query head, q/k norms, q/k/v biases', { ...base, numKvHeads: 4, qkNorm: true, qkvBias: true }, {}],
    ['attention sinks and soft-capping', { ...base, attentionSinks: true, attnLogitSoftcap: 2, headDim: 32 }, {}],
    ['fp16 keys and values', base, { kvDtype: 'float16' }],
    ['merged decoder', base, { mergedDecoder: true }],
    ['inputs_embeds and last_hidden_state', base, { inputsEmbeds: true, outputHidden: true }],
  ];
  cases.forEach(([label, config, options], i) => {
    it(`${label}: the joined graph's logits from a cache with masked room`, async () => {
      const dir = testDir(`kv-append-${i}`);
      const weights = randomLlamaWeights(config, 11 + i, 0.5);
      await writeModel(join(dir, 'joined.onnx'), buildLlamaModel(config, weights, options));
      await writeModel(join(dir, 'new.onnx'), buildLlamaModel(config, weights, { ...options, kvOutput: 'new' }));
      const expected = await run(join(dir, 'joined.onnx'));
      const got = await run(join(dir, 'new.onnx'));
      let worst = 0;
      got.forEach((row, s) => row.forEach((v, j) => (worst = Math.max(worst, Math.abs(v - expected[s]![j]!)))));
      expect(worst, 'largest logit difference over the prefill and the steps').to.be.below(1e-4);
      expect(new Set(expected.map((r) => r.indexOf(Math.max(...r)))).size, 'a degenerate model proves little').to.be.greaterThan(3);
    });
  });

  it('is read from the outputs, refused beside joined presents, and refused where it cannot be written', async () => {
    const weights = randomLlamaWeights(base, 1);
    const path = join(testDir('kv-append-signature'), 'new.onnx');
    await writeModel(path, buildLlamaModel(base, weights, { kvOutput: 'new' }));
    const s = await ort.InferenceSession.create(path);
    try {
      const sig = detectSignature(s.inputMetadata, s.outputMetadata, path);
      expect(sig.kvAppends).to.equal(true);
      expect(sig.kv[1]).to.deep.equal({ pastKey: 'past_key_values.1.key', pastValue: 'past_key_values.1.value', presentKey: 'new_key_values.1.key', presentValue: 'new_key_values.1.value' });
      const present = { ...(s.outputMetadata.find((m) => m.name === 'new_key_values.0.key') as object), name: 'present.0.key' } as (typeof s.outputMetadata)[number];
      expect(() => detectSignature(s.inputMetadata, [...s.outputMetadata, present], path)).to.throw(UnsupportedModelError, /both `present.\{i\}` and `new_key_values.\{i\}`/);
    } finally {
      await s.release();
    }
    expect(() => buildLlamaModel(base, weights, { kvOutput: 'new', attention: 'gqa' })).to.throw(/needs attention 'ops'/);
    const sliding: LlamaConfig = { ...base, slidingWindow: 3, layerTypes: ['sliding', 'full'] };
    expect(() => buildLlamaModel(sliding, randomLlamaWeights(sliding, 1), { kvOutput: 'new' })).to.throw(/sliding-window layers/);
  });

  it('in the batch cache: each row the logits it gets alone, over steps that fill and grow its room, rows joining, moving and leaving', async () => {
    const config = { ...base, numLayers: 3 };
    const joinedPath = await builtModel('kv-append-joined', config, {}, 5);
    const newPath = await builtModel('kv-append-new', config, { kvOutput: 'new' }, 5);
    const open = async (path: string) => DecoderSession.create({ path: (await prepareDecoder(path, { lastLogitsOnly: true, logitsFloat32: true, cacheDir })).preparedPath });
    const [joined, appending] = [await open(joinedPath), await open(newPath)];
    try {
      expect([joined.signature.kvAppends, appending.signature.kvAppends]).to.deep.equal([false, true]);
      const V = appending.vocabSize;
      const prompts = [[3, 8, 20, 1, 9, 44, 61], [12], [40, 41, 42, 43]];
      const steps = KV_ROOM + 20;
      const tokenAt = (row: number, k: number) => 3 + ((row * 37 + k * 11) % (V - 3));
      // Each row alone through the session's own cache (joined in JavaScript for this graph) and through the joined graph.
      const alone: Float32Array[][] = [];
      for (let r = 0; r < prompts.length; r++) {
        const own = [await appending.prefill([prompts[r]!])];
        const reference = [await joined.prefill([prompts[r]!])];
        for (let k = 0; k < steps; k++) {
          own.push(await appending.step([tokenAt(r, k)]));
          reference.push(await joined.step([tokenAt(r, k)]));
        }
        own.forEach((l, k) => l.forEach((v, j) => expect(Math.abs(v - reference[k]![j]!)).to.be.below(1e-4)));
        alone.push(reference);
      }
      const kv = new BatchKv(appending);
      const fed = prompts.map(() => 0);
      let live: number[] = [];
      let worst = 0;
      const check = (row: number, logits: Float32Array) => logits.forEach((v, j) => (worst = Math.max(worst, Math.abs(v - alone[row]![fed[row]!]![j]!))));
      const prefilled = async (row: number) => {
        const run = new RowPrefill(appending, prompts[row]!, 3);
        let logits: Float32Array | undefined;
        while (!(logits = await run.next()));
        check(row, logits);
        return run.cache;
      };
      kv.rebuild([], [await prefilled(0)]);
      live.push(0);
      for (let step = 0; fed.some((n) => n < steps) && step < 3 * steps; step++) {
        if (step === 10 || step === 70) {
          const row = step === 10 ? 1 : 2;
          kv.rebuild(live.map((_, i) => i), [await prefilled(row)]);
          live.push(row);
        }
        if (step === 40) {
          const at = live.indexOf(0);
          const taken = kv.takeRow(at);
          kv.rebuild(live.map((_, i) => i).filter((i) => i !== at), [taken]);
          live = [...live.filter((r) => r !== 0), 0];
        }
        const done = live.map((r, i) => (fed[r] === steps ? i : -1)).filter((i) => i >= 0);
        if (done.length) {
          kv.rebuild(live.map((_, i) => i).filter((i) => !done.includes(i)), []);
          live = live.filter((_, i) => !done.includes(i));
          if (live.length === 0) break;
        }
        const longest = Math.max(...live.map((r) => prompts[r]!.length + fed[r]!));
        expect(kv.bytes / live.length / kv.bytesPerPosition - longest, 'slots of room a row has beyond the longest row (the cache counts them)').to.be.within(0, KV_ROOM);
        const logits = await kv.step(live.map((r) => tokenAt(r, fed[r]!)));
        live.forEach((r, i) => {
          fed[r]!++;
          check(r, logits.subarray(i * V, (i + 1) * V));
        });
      }
      expect(fed).to.deep.equal(prompts.map(() => steps));
      expect(worst, 'largest logit difference from each row alone').to.be.below(1e-4);
      kv.rebuild([], []);
      expect(kv.bytes).to.equal(0);
    } finally {
      await joined.release();
      await appending.release();
    }
  });
});
