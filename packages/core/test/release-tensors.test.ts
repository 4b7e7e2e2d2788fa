/**
 * Dead caches freed at once (runtime/release-tensors.ts): what is released, and that nothing still read is, on a
 * hybrid model whose states (1 MiB a row) are large enough for the sessions and the batch cache to release them.
 */
import { expect } from 'chai';
import * as ort from 'onnxruntime-node';
import { RELEASE_MIN_BYTES, releaseTensors } from '../src/runtime/release-tensors.js';
import { DecoderSession } from '../src/runtime/decoder-session.js';
import { BatchKv } from '../src/runtime/batch-kv.js';
import { prepareDecoder } from '../src/onnx/prepared-cache.js';
import { joinAndLeave } from './support/batch-kv-scenario.js';
import { builtModel, cacheDir, smallConfig } from './support/models.js';
import { makeModule, storiesConfig } from './support/modules.js';
import { Engine } from '../src/engine.js';
import type { LlamaConfig } from '../src/onnx/llama-spec.js';

const maxGap = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);
const tensor = (data: Float32Array) => new ort.Tensor('float32', data, [data.length]);

describe('releasing dead caches', function () {
  this.timeout(120_000);

  it('detaches whole buffers from the threshold on, and leaves views, small caches and detached buffers alone', () => {
    const big = new Float32Array(RELEASE_MIN_BYTES / 4);
    const quarter = () => new Float32Array(RELEASE_MIN_BYTES / 16);
    const [a, b] = [quarter(), quarter()];
    releaseTensors([tensor(a), tensor(a), tensor(b)]); // one buffer twice: counted once, half the threshold
    expect([a.length, b.length]).to.deep.equal([RELEASE_MIN_BYTES / 16, RELEASE_MIN_BYTES / 16]);
    const view = new Float32Array(big.buffer, 4, 16);
    releaseTensors([tensor(view), tensor(new Float32Array(big.buffer, 0, 16))]);
    expect(big.length, 'a view is not the whole of its buffer').to.equal(RELEASE_MIN_BYTES / 4);
    releaseTensors([tensor(big), tensor(a)]);
    expect([big.length, a.length]).to.deep.equal([0, 0]);
    expect(() => releaseTensors([tensor(big), tensor(quarter())], 0)).not.to.throw();
  });

  describe('a DeltaNet hybrid with 1 MiB states', () => {
    // 16 value heads of 128 × 128 keys: a state of 1 MiB a layer and row, a step's presents past the threshold
    const layout = { numLayers: 2, layerTypes: ['delta', 'full'], attentionGate: true, deltaNet: { convKernel: 4, keyHeads: 4, keyDim: 128, valueHeads: 16, valueDim: 128 } } as const;
    const config = { ...smallConfig, ...layout } as LlamaConfig;
    let path: string;
    before(async () => {
      path = (await prepareDecoder(await builtModel('release-delta-1mib', config, {}, 41), { lastLogitsOnly: true, logitsFloat32: true, cacheDir })).preparedPath;
    });

    it("a prompt's cache kept in the prefix cache outlives the steps after it, and the next turn goes on from it", async () => {
      const session = await DecoderSession.create({ path });
      try {
        const prompt = [3, 9, 27, 81, 50, 7, 11, 13, 40, 41, 42, 43, 44, 45, 46, 47, 48];
        const first = [(await session.prefill([prompt])).slice()];
        for (const t of [4, 5, 6]) first.push((await session.step([t])).slice());
        // the next turn: the prompt, then what was fed after it
        const again = [(await session.prefill([[...prompt, 4, 5]])).slice()];
        expect(session.reusedPromptTokens, 'the prompt came from the prefix cache').to.equal(prompt.length);
        again.push((await session.step([6])).slice());
        expect(Math.max(maxGap(again[0]!, first[2]!), maxGap(again[1]!, first[3]!))).to.be.lessThan(1e-4);
      } finally {
        await session.release();
      }
    });

    it('prompts of different lengths, run alone and joined, each give what they give alone (no prefix cache)', async () => {
      const session = await DecoderSession.create({ path }, { prefixCacheBytes: 0 });
      try {
        const prompts = [[3, 9, 27, 81, 50, 7], [5, 25], [7, 49, 40]];
        const alone: Float32Array[][] = [];
        for (const p of prompts) alone.push([(await session.prefill([p])).slice(), (await session.step([4])).slice()]);
        const V = session.vocabSize;
        const batch = [(await session.prefill(prompts)).slice(), await session.step([4, 4, 4])];
        const gap = Math.max(...prompts.flatMap((_, r) => batch.map((l, t) => maxGap(l.subarray(r * V, (r + 1) * V), alone[r]![t]!))));
        expect(gap).to.be.lessThan(1e-4);
      } finally {
        await session.release();
      }
    });

    it('the batch cache gives each row the logits it gets alone as rows join, move and leave', async () => {
      const session = await DecoderSession.create({ path });
      try {
        expect(await joinAndLeave(session, new BatchKv(session))).to.be.lessThan(1e-4);
      } finally {
        await session.release();
      }
    });

    it('through the engine: prompts prefilled in chunks after a cached prefix, which later prompts take again, give what they give alone', async () => {
      const model = await makeModule({ name: 'release-delta-engine', kind: 'backbone', seed: 42, config: storiesConfig(layout as Partial<LlamaConfig>) });
      // chunks of 3 tokens: a prompt's chunks replace one another's caches; the cached prefix is the first chunk's past
      const [on, off] = await Promise.all([Engine.load({ model, cacheDir, prefillChunk: 3 }), Engine.load({ model, cacheDir, prefixCacheBytes: 0, prefillChunk: 3 })]);
      try {
        const head = [1, 5, 9, 30, 41, 7, 100, 300, 12, 60, 61, 62, 63, 64, 65, 66, 67];
        const prompts = [head, [...head, 70, 71, 72, 73], [...head, 80, 81, 82, 83, 84], [...head, 90, 91, 92, 93, 94, 95]];
        const run = async (e: Engine, p: number[]) => (await e.generate({ promptIds: p }, { maxTokens: 6, ignoreEos: true })).rows[0]!.ids;
        const alone = [];
        for (const p of prompts) alone.push(await run(off, p));
        const reused = [];
        for (const p of prompts) reused.push(await run(on, p));
        expect(reused).to.deep.equal(alone);
        expect((await on.stats()).prefixCache.hitTokens, 'the three longer prompts went on from the first').to.equal(3 * head.length);
      } finally {
        await Promise.all([on.dispose(), off.dispose()]);
      }
    });
  });
});
