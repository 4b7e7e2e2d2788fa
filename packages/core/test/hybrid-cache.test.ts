/**
 * Hybrid models (attention layers beside recurrent ones: LFM2's short convolutions, Granite 4.0-H's Mamba2 mixers): their recurrent states
 * ride with the KV cache through every path a row's cache takes (prefill, static batches of different lengths, the
 * continuous batch's joins, moves and leaves, prompts prefilled together, prefix caching), and every request gives
 * what it gives alone.
 */
import { expect } from 'chai';
import { Engine } from '../src/engine.js';
import { DecoderSession } from '../src/runtime/decoder-session.js';
import { BatchKv, prefillTogether } from '../src/runtime/batch-kv.js';
import { prepareDecoder } from '../src/onnx/prepared-cache.js';
import { joinAndLeave, togetherAsAlone } from './support/batch-kv-scenario.js';
import { builtModel, cacheDir, smallConfig } from './support/models.js';
import { makeModule, storiesConfig } from './support/modules.js';
import { unmaskConvolutions } from './support/graph-edits.js';
import type { LlamaConfig } from '../src/onnx/llama-spec.js';
import type { GenerationResult } from '../src/generate/types.js';

const hybrid = (over: Partial<LlamaConfig> = {}): LlamaConfig => ({ numLayers: 4, layerTypes: ['conv', 'full', 'conv', 'full'], convKernel: 3, qkNorm: true, ...over }) as LlamaConfig;
/** Granite 4.0-H's layout: Mamba2 mixers (a convolution state and an SSM state each) in place of the convolutions. */
const MAMBA = { layerTypes: ['mamba', 'full', 'mamba', 'full'], convKernel: undefined, mamba: { convKernel: 4, heads: 4, headDim: 16, stateSize: 8, groups: 2 } } as const;
/** Qwen3.5's layout: gated DeltaNets (a convolution state and a matrix state each), the attention gated. */
const DELTA = { layerTypes: ['delta', 'full', 'delta', 'full'], convKernel: undefined, attentionGate: true, deltaNet: { convKernel: 4, keyHeads: 2, keyDim: 8, valueHeads: 4, valueDim: 8 } } as const;
/** Nemotron-H's layout: single blocks, layers 1 and 3 an MLP alone (no cache), 0 a Mamba2 mixer, 2 attention. */
const SINGLE = { layerTypes: ['mamba', 'mlp', 'full', 'mlp'], convKernel: undefined, singleBlocks: true, mamba: { convKernel: 4, heads: 4, headDim: 16, stateSize: 8, groups: 2 } } as const;
/** Falcon-H1's layout: layers 0 and 2 a Mamba2 mixer beside attention (keys and values, and states). */
const BESIDE = { layerTypes: ['mamba-attention', 'full', 'mamba-attention', 'full'], convKernel: undefined, mamba: { convKernel: 4, heads: 4, headDim: 16, stateSize: 8, groups: 2 } } as const;
/** The states each kind's layers 0 and 2 hold, with their dims after the batch. */
const STATES = {
  conv: [['past_conv.0', [2, 32]], ['past_conv.2', [2, 32]]],
  mamba: [['past_conv.0', [3, 96]], ['past_ssm.0', [4, 16, 8]], ['past_conv.2', [3, 96]], ['past_ssm.2', [4, 16, 8]]],
  delta: [['past_conv.0', [3, 64]], ['past_recurrent.0', [4, 8, 8]], ['past_conv.2', [3, 64]], ['past_recurrent.2', [4, 8, 8]]],
  single: [['past_conv.0', [3, 96]], ['past_ssm.0', [4, 16, 8]]],
  beside: [['past_conv.0', [3, 96]], ['past_ssm.0', [4, 16, 8]], ['past_conv.2', [3, 96]], ['past_ssm.2', [4, 16, 8]]],
};
const maxGap = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);
const ids = (r: GenerationResult) => r.rows.map((row) => row.ids);

describe('hybrid models: recurrent states beside the KV cache', function () {
  this.timeout(180_000);

  const layouts = { conv: {}, mamba: MAMBA, delta: DELTA, single: SINGLE, beside: BESIDE };
  const forms = {
    ops: ['attention op by op, left-padded', { attention: 'ops' }],
    new: ['attention op by op returning new keys and values, written into room the caches keep', { attention: 'ops', kvOutput: 'new' }],
    gqa: ['GroupQueryAttention, right-padded', { attention: 'gqa' }],
  } as const;
  const cases = [['conv', 'ops'], ['conv', 'new'], ['conv', 'gqa'], ['mamba', 'ops'], ['mamba', 'new'], ['mamba', 'gqa'], ['delta', 'ops'], ['delta', 'new'], ['delta', 'gqa'], ['single', 'ops'], ['beside', 'gqa'], ['beside', 'new']] as const;
  for (const [kind, form] of cases) {
    it(`${kind} layers: the batch cache gives each row the logits it gets alone as rows join, move and leave, and prompts of one length prefill together (${forms[form][0]})`, async () => {
      const model = await builtModel(`hybrid-kv-${kind}-${form}`, { ...smallConfig, ...hybrid(layouts[kind]) }, forms[form][1], 31);
      const p = await prepareDecoder(model, { lastLogitsOnly: true, logitsFloat32: true, cacheDir });
      const session = await DecoderSession.create({ path: p.preparedPath, padding: p.padding });
      try {
        expect(session.signature.states.map((s) => [s.past, s.shape])).to.deep.equal(STATES[kind]);
        const attentionLayers = { single: [2], beside: [0, 1, 2, 3] }[kind as string] ?? [1, 3];
        expect(session.signature.kv.map((k) => k.pastKey)).to.deep.equal(attentionLayers.map((l) => `past_key_values.${l}.key`));
        expect(await joinAndLeave(session, new BatchKv(session))).to.be.lessThan(1e-4);
        const { prefill, step } = await togetherAsAlone(session, [[3, 9, 27, 81], [5, 25, 60, 2], [7, 49, 40, 11]], [1, 2, 3]);
        expect(Math.max(prefill, step)).to.be.lessThan(1e-4);
        // Left padding would run through the states: refused, not wrong.
        await prefillTogether(session, [[3, 9, 27], [5]]).then(
          () => expect.fail('prefilled prompts of different lengths together'),
          (err: Error) => expect(err.message).to.match(/different lengths .* recurrent states/),
        );
      } finally {
        await session.release();
      }
    });
  }

  for (const kind of ['conv', 'mamba', 'delta'] as const) {
    it(`${kind} layers: a static batch of prompts of different lengths gives each row the logits it gets alone, on a graph that would let padding into its states`, async () => {
      const model = await builtModel(`hybrid-unmasked-${kind}`, { ...smallConfig, ...hybrid(layouts[kind]) }, {}, 32);
      await unmaskConvolutions(model);
      const session = await DecoderSession.create({ path: model });
      try {
        const prompts = [[3, 9, 27, 81, 50, 7], [5, 25], [7, 49, 40]];
        const alone: Float32Array[][] = [];
        for (const p of prompts) alone.push([(await session.prefill([p])).slice(), (await session.step([4])).slice()]);
        const V = session.vocabSize;
        const batch = [await session.prefill(prompts), await session.step([4, 4, 4])];
        const gap = Math.max(...prompts.flatMap((_, r) => batch.map((l, t) => maxGap(l.subarray(r * V, (r + 1) * V), alone[r]![t]!))));
        expect(gap).to.be.lessThan(1e-4);
      } finally {
        await session.release();
      }
    });
  }

  describe('through the engine', () => {
    let on: Engine;
    let off: Engine;
    let model: string;
    before(async () => {
      model = await makeModule({ name: 'hybrid-backbone', kind: 'backbone', seed: 33, config: storiesConfig(hybrid()) });
      // Chunks of 3 prompt tokens: longer prompts join over several runs, their states carried from chunk to chunk.
      [on, off] = await Promise.all([
        Engine.load({ model, cacheDir, maxBatch: 8, prefillChunk: 3 }),
        Engine.load({ model, cacheDir, prefixCacheBytes: 0, maxBatch: 1 }),
      ]);
    });
    after(() => Promise.all([on?.dispose(), off?.dispose()]));

    it('concurrent calls of different lengths, and a request of several prompts, each give what they give alone', async () => {
      const prompts = [[1, 5, 9, 30, 41, 7, 100, 300, 12], [1, 77], [1, 3, 300, 200, 17], [1, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70]];
      const alone = [];
      for (const p of prompts) alone.push(ids(await off.generate({ promptIds: p }, { maxTokens: 12, ignoreEos: true }))[0]);
      expect(new Set(alone.map((a) => a!.join())).size, 'the prompts continue differently').to.equal(prompts.length);
      const together = await Promise.all(prompts.map((p) => on.generate({ promptIds: p }, { maxTokens: 12, ignoreEos: true })));
      expect(together.map((r) => ids(r)[0])).to.deep.equal(alone);
      expect(ids(await off.generate({ promptIds: prompts }, { maxTokens: 12, ignoreEos: true }))).to.deep.equal(alone);
    });

    it("counts the rows' recurrent states in the KV budget", async () => {
      const { bytesPerPosition } = await on.stats();
      const prompt = [1, 5, 9, 30];
      // room for the keys and values of prompt and reply, not for the states beside them
      const budget = (prompt.length + 8) * bytesPerPosition;
      const tight = await Engine.load({ model, cacheDir, kvBudgetBytes: budget });
      try {
        const err = await tight.generate({ promptIds: prompt }, { maxTokens: 8 }).catch((e: unknown) => e);
        expect(err).to.have.property('name', 'KvBudgetError');
        expect((err as Error).message).to.match(/needs \d+ bytes of KV cache \(1 rows × 12 positions and their recurrent states\), more than the budget/);
      } finally {
        await tight.dispose();
      }
    });

    it("a prompt that begins with a whole earlier one goes on from its cached states; one sharing only part of it does not", async () => {
      const first = Array.from({ length: 24 }, (_, i) => 1 + ((i * 37) % 500));
      const turn = { maxTokens: 8, ignoreEos: true };
      await on.generate({ promptIds: first }, turn);
      const next = [...first, 400, 401, 402, 403];
      const reused = await on.generate({ promptIds: next }, turn);
      expect(reused.usage.cachedPromptTokens).to.equal(first.length);
      expect(ids(reused)).to.deep.equal(ids(await off.generate({ promptIds: next }, turn)));
      // Its first 20 tokens are cached positions, but the states hold all 24 (or 28) of them: nothing to reuse.
      const branch = [...first.slice(0, 20), 7, 8, 9, 10];
      const fresh = await on.generate({ promptIds: branch }, turn);
      expect(fresh.usage.cachedPromptTokens).to.equal(undefined);
      expect(ids(fresh)).to.deep.equal(ids(await off.generate({ promptIds: branch }, turn)));
    });
  });
});
