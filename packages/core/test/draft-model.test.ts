/**
 * Speculative decoding with a draft model: stories260K (trained) as the backbone, and the same model re-encoded as
 * Q4_0 as its draft model, given as a GGUF file (converted on load). The backbone keeps what it writes itself, so
 * outputs equal decoding without the draft model (greedy, seeded sampling, grammars, limits, concurrent calls), in
 * fewer steps; bad draft models are refused by name.
 */
import { expect } from 'chai';
import { join } from 'node:path';
import { Engine, type StreamOptions } from '../src/engine.js';
import { DEFAULT_DRAFT, draftModel } from '../src/generate/draft-model.js';
import { DraftBudget, PROBE_EVERY } from '../src/generate/draft-budget.js';
import type { GenerationResult } from '../src/generate/types.js';
import { startServer } from '../src/serve/server.js';
import { cacheDir } from './support/models.js';
import { makeModule, storiesGqaModule, storiesModule } from './support/modules.js';
import { limitContext } from './support/graph-edits.js';
import { STORIES, writeStoriesQ4Draft } from './support/gguf-models.js';
import { rewriteGguf } from './support/gguf-writer.js';
import { useTempCache } from './support/temp-cache.js';
import { repoRoot } from '../../../test/support/paths.js';

const prompt = 'Once upon a time, there was a little girl named Lily. She loved to play with her ball. One day, Lily';
const rows = (r: GenerationResult) => r.rows.map((row) => ({ ids: row.ids, text: row.text, finishReason: row.finishReason }));

describe('draft model', () => {
  it('checks its options and fills in the defaults', () => {
    expect(draftModel('m.gguf')).to.deep.equal({ model: 'm.gguf', ...DEFAULT_DRAFT });
    expect(draftModel({ model: 'm', draftTokens: 3, adaptive: false, minProbability: 0, dtype: 'q4' })).to.deep.equal({ model: 'm', draftTokens: 3, adaptive: false, minProbability: 0, dtype: 'q4' });
    expect(() => draftModel({ model: 'm', adaptive: 'no' as never })).to.throw(TypeError, /draftModel.adaptive must be true or false/);
    expect(() => draftModel({ model: '' })).to.throw(TypeError, /draftModel must be a model reference/);
    expect(() => draftModel({ model: 'm', draftTokens: 0 })).to.throw(RangeError, /draftModel.draftTokens must be a whole number >= 1; got 0/);
    expect(() => draftModel({ model: 'm', draftTokens: 2.5 })).to.throw(RangeError, /draftTokens/);
    expect(() => draftModel({ model: 'm', minProbability: 1.5 })).to.throw(RangeError, /draftModel.minProbability must be a number from 0 to 1; got 1.5/);
  });

  describe('its budget', () => {
    /** A budget that has seen `rounds` of a step, a run of 5 positions, 4 drafted tokens and `kept` of them kept. */
    function measured(step: number, run5: number, perDraft: number, kept: number, rounds = 10): DraftBudget {
      const budget = new DraftBudget();
      for (let i = 0; i < rounds; i++) {
        budget.observeStep(step);
        budget.observeRun(5, run5);
        budget.observeDraft(4, 4 * perDraft);
        budget.observeVerdict(4, kept);
      }
      return budget;
    }

    it('takes a plain step first, then drafts all it may until it knows the rest', () => {
      const budget = new DraftBudget();
      expect(budget.limit(6)).to.equal(0);
      budget.observeStep(2);
      expect(budget.limit(6)).to.equal(6);
    });

    it('drafts all it may where runs are cheap and drafts mostly kept (an F16 target)', () => {
      // 7.4 ms a step, 9.2 ms a run of 5, a draft-model step 0.3 ms, 3 of 4 kept
      expect(measured(7.4, 9.2, 0.3, 3).limit(4)).to.equal(4);
    });

    it('drafts fewer where each position costs more, and none where no draft beats a step (a 4-bit target), probing now and then', () => {
      // 2.2 ms a step, 5.2 ms a run of 5 (0.75 a position): with half of the drafts kept a 1-token draft still pays
      const some = measured(2.2, 5.2, 0.3, 2).limit(6);
      expect(some).to.be.within(1, 3);
      // 2.2 ms a step, 8.2 ms a run of 5, a third kept: nothing pays
      const none = measured(2.2, 8.2, 0.3, 1);
      const limits = Array.from({ length: PROBE_EVERY }, () => none.limit(6));
      expect(limits.slice(0, -1).every((l) => l === 0)).to.equal(true);
      expect(limits.at(-1), 'a probe to measure again').to.equal(6);
    });

    it('follows the acceptance: rejected drafts lower it, kept ones raise it back', () => {
      const budget = measured(7.4, 9.2, 0.3, 4);
      expect(budget.acceptance).to.equal(1);
      for (let i = 0; i < 20; i++) budget.observeVerdict(4, 0);
      expect(budget.acceptance).to.be.below(0.2);
      expect(budget.limit(4)).to.equal(0);
      for (let i = 0; i < 20; i++) budget.observeVerdict(4, 4);
      expect(budget.acceptance).to.be.above(0.8);
      expect(budget.limit(4)).to.equal(4);
    });
  });

  describe('the engine', function () {
    this.timeout(180_000);
    const scratch = useTempCache('reasonplug-draft-');
    let stories: string;
    let draftGguf: string;
    let plain: Engine;
    let drafting: Engine;

    before(async () => {
      stories = await storiesModule();
      draftGguf = join(scratch.dir, 'stories260K-q4_0.gguf');
      await writeStoriesQ4Draft(draftGguf);
      // (drafts every step: on a backbone this small they do not pay, and the adaptive engine would draft next to none)
      [plain, drafting] = await Promise.all([Engine.load({ model: stories, cacheDir }), Engine.load({ model: stories, cacheDir, draftModel: { model: draftGguf, adaptive: false } })]);
    });
    after(async () => {
      await Promise.all([plain?.dispose(), drafting?.dispose()]);
    });

    async function same(engine: Engine, options: StreamOptions, input = prompt): Promise<{ steps: number; tokens: number }> {
      const [want, got] = [await plain.generate({ prompt: input }, options), await engine.generate({ prompt: input }, options)];
      expect(rows(got)).to.deep.equal(rows(want));
      return { steps: got.timing.decodeSteps, tokens: got.usage.completionTokens };
    }

    it('loads the draft model (a GGUF file, converted) and reports it', () => {
      expect(drafting.info.draftModel).to.include({ draftTokens: DEFAULT_DRAFT.draftTokens, adaptive: false, minProbability: DEFAULT_DRAFT.minProbability });
      expect(drafting.info.draftModel!.modelPath).to.match(/model\.onnx$/);
      expect(plain.info.draftModel).to.equal(undefined);
    });

    it('writes what the backbone writes without it, in fewer steps, its cache given back after the call', async () => {
      const before = (await drafting.stats()).drafts!;
      const { steps, tokens } = await same(drafting, { maxTokens: 120 });
      const after = await drafting.stats();
      const accepted = after.drafts!.acceptedTokens - before.acceptedTokens;
      expect(after.drafts!.draftedTokens - before.draftedTokens).to.be.at.least(accepted);
      expect(accepted, 'drafted tokens the backbone wrote').to.be.greaterThan(tokens / 3);
      expect(steps).to.be.at.most(tokens - accepted);
      expect(after.kvBytes, 'KV bytes once idle').to.equal(0);
    });

    it('keeps seeded sampling, stop strings, token limits and grammars as they are', async () => {
      for (const seed of [1, 2]) await same(drafting, { maxTokens: 80, temperature: 0.8, seed });
      await same(drafting, { maxTokens: 100, stop: ['Lily was'] });
      for (const maxTokens of [1, 2, 3, 9]) await same(drafting, { maxTokens });
      const schema = { type: 'object', properties: { name: { type: 'string', maxLength: 12 }, ball: { type: 'boolean' } }, required: ['name', 'ball'] };
      await same(drafting, { maxTokens: 60, responseFormat: { type: 'json_schema', schema } });
    });

    it('keeps seeded sampling under a grammar that allows few tokens (drafted positions picked under the bitmask, as plain steps)', async () => {
      // (a structural state: the plain step picks under the bitmask computed ahead; a drafted position had none ready
      // and drew from the whole row first, which spends the seed's draws otherwise)
      const responseFormat = { type: 'regex', pattern: ' (went|were|saw|had|played|and) [a-z ]+\\.' } as const;
      const story = 'Once upon a time there was a little girl. Once upon a time there was a little';
      for (let seed = 0; seed < 30; seed++) await same(drafting, { maxTokens: 8, temperature: 1, seed, responseFormat }, story);
    });

    it('drafts for the call left alone after others finish, catching up with its context a chunk a step', async () => {
      // Prefill chunks of 4: the draft model catches up with the long call's prompt and reply over several steps.
      const chunked = await Engine.load({ model: stories, cacheDir, prefillChunk: 4, draftModel: { model: draftGguf, draftTokens: 3, adaptive: false } });
      try {
        const short = 'Tim and Sam went to the park.';
        const [a, b] = await Promise.all([chunked.generate({ prompt }, { maxTokens: 100 }), chunked.generate({ prompt: short }, { maxTokens: 8 })]);
        expect(rows(a)).to.deep.equal(rows(await plain.generate({ prompt }, { maxTokens: 100 })));
        expect(rows(b)).to.deep.equal(rows(await plain.generate({ prompt: short }, { maxTokens: 8 })));
        expect(a.timing.decodeSteps, 'the long call drafted once alone').to.be.lessThan(a.usage.completionTokens - 1);
        expect((await chunked.stats()).kvBytes).to.equal(0);
      } finally {
        await chunked.dispose();
      }
    });

    it("keeps its cache of a finished call in its prefix cache: the conversation's next turn drafts from its first step", async () => {
      const chunked = await Engine.load({ model: stories, cacheDir, prefillChunk: 4, draftModel: { model: draftGguf, adaptive: false } });
      try {
        const first = await chunked.generate({ prompt }, { maxTokens: 40 });
        // The next turn: the first's prompt and reply, and more. Without the kept cache the draft model would catch up
        // with its ~70 tokens 4 a step before its first draft.
        const next = `${prompt}${first.rows[0]!.text} Then`;
        const [want, got] = [await plain.generate({ prompt: next }, { maxTokens: 20 }), await chunked.generate({ prompt: next }, { maxTokens: 20 })];
        expect(rows(got)).to.deep.equal(rows(want));
        expect(got.timing.decodeSteps, 'steps for 20 tokens').to.be.at.most(10);
      } finally {
        await chunked.dispose();
      }
    });

    it('drafts for a composition running alone with its reasoner in a lane (in the batch, through the copy), as it does for a prediction', async () => {
      const reasoners = [{ model: await makeModule({ name: 'draft-r', seed: 7 }), weight: 0.5 }];
      const [lanes, lanesDrafting] = await Promise.all([
        Engine.load({ model: stories, cacheDir, reasoners, placement: 'lanes' }),
        Engine.load({ model: stories, cacheDir, reasoners, placement: 'lanes', draftModel: { model: draftGguf, adaptive: false } }),
      ]);
      try {
        expect(lanesDrafting.info.placement?.kind).to.equal('lanes');
        const want = await lanes.generate({ prompt }, { maxTokens: 60 });
        const before = (await lanesDrafting.stats()).drafts!.acceptedTokens;
        const got = await lanesDrafting.generate({ prompt }, { maxTokens: 60 });
        expect(rows(got)).to.deep.equal(rows(want));
        expect((await lanesDrafting.stats()).drafts!.acceptedTokens - before).to.be.greaterThan(0);
        expect(got.timing.decodeSteps).to.be.lessThan(want.timing.decodeSteps);
        // A prediction drafts in a lone lane composition too (without a draft model).
        const predicted = await lanes.generate({ prompt }, { maxTokens: 60, prediction: want.rows[0]!.text });
        expect(rows(predicted)).to.deep.equal(rows(want));
        expect(predicted.usage.acceptedPredictionTokens).to.be.greaterThan(30);
      } finally {
        await Promise.all([lanes.dispose(), lanesDrafting.dispose()]);
      }
    });

    it('serves it: completions as the backbone writes them alone, /metrics counting drafted and kept tokens', async () => {
      const server = await startServer({ engine: { model: stories, cacheDir, draftModel: { model: draftGguf, adaptive: false } }, port: 0 });
      try {
        await server.ready;
        const res = await fetch(`${server.url}/v1/completions`, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ model: 'stories260k', prompt, max_tokens: 60, temperature: 0 }),
        });
        const body = (await res.json()) as { choices: { text: string }[] };
        expect(body.choices[0]!.text).to.equal((await plain.generate({ prompt }, { maxTokens: 60 })).rows[0]!.text);
        const metrics = await (await fetch(`${server.url}/metrics`)).text();
        const accepted = Number(/reasonplug:spec_decode_num_accepted_tokens_total\{[^}]*\} (\d+)/.exec(metrics)![1]);
        expect(accepted).to.be.greaterThan(0);
      } finally {
        await server.close();
      }
    });

    it('adapts: where drafts cost more than they save (a draft model whose step costs ~10 backbone steps) it drafts next to none', async () => {
      // stories260K and 75 more layers that add nothing (copies of its own with attn_output and ffn_down zero): it
      // drafts exactly what the backbone writes, every token kept, at 16x the layers. By draft-budget.ts a draft of k
      // tokens beats a plain step s where s·Σ_{i≤k} α^i > k·(position + draft); with α ≤ 1 that needs
      // draft + position < s, a drafted token cheaper than a whole step. Here one costs ~10 steps (a step drafting a
      // token took ~8 ms against a plain step's 0.7 on 2 vCPUs), so the measured step would have to grow ~10-fold
      // against the measured draft to tip it, far past what load makes of one against the other.
      const deep = 80;
      const slow = join(scratch.dir, `stories260K-${deep}-layers.gguf`);
      await rewriteGguf(STORIES, slow, (meta, tensors) => {
        const blocks = meta.get('llama.block_count')!;
        const own = blocks.value as number;
        const layer = [...tensors].filter(([name]) => name.startsWith('blk.'));
        for (let i = own; i < deep; i++) {
          for (const [name, t] of layer) {
            const [, from, part] = /^blk\.(\d+)\.(.+)$/.exec(name)!;
            if (Number(from) !== i % own) continue;
            const inert = part === 'attn_output.weight' || part === 'ffn_down.weight';
            tensors.set(`blk.${i}.${part}`, { ...t, data: inert ? new Float32Array(t.data.length) : t.data });
          }
        }
        meta.set('llama.block_count', { ...blocks, value: deep });
      });
      const adaptive = await Engine.load({ model: stories, cacheDir, draftModel: slow });
      try {
        expect(adaptive.info.draftModel).to.include({ adaptive: true });
        const got = await adaptive.generate({ prompt }, { maxTokens: 120 });
        expect(rows(got)).to.deep.equal(rows(await plain.generate({ prompt }, { maxTokens: 120 })));
        const { draftedTokens } = (await adaptive.stats()).drafts!;
        // Only the drafts that measure: the first, which learns what drafting costs, and a probe every PROBE_EVERY steps.
        expect(draftedTokens, 'tokens drafted over 120').to.be.at.most((1 + Math.floor(120 / PROBE_EVERY)) * DEFAULT_DRAFT.draftTokens);
        expect(got.timing.decodeSteps).to.be.greaterThan(80);
      } finally {
        await adaptive.dispose();
      }
    });

    it('a draft model failing mid-run fails the call with a DraftModelError naming its failure', async () => {
      const backbone = await makeModule({ name: 'df-backbone', kind: 'backbone', seed: 41 });
      // (its graph takes 12 positions: drafting past them fails inside onnxruntime)
      const fragile = await makeModule({ name: 'df-draft', kind: 'backbone', seed: 41, edit: (p) => limitContext(p, 12) });
      const engine = await Engine.load({ model: backbone, cacheDir, draftModel: { model: fragile, adaptive: false } });
      try {
        const err = await engine.generate({ promptIds: [1, 5, 9] }, { maxTokens: 30, ignoreEos: true }).catch((e: Error) => e);
        expect(err).to.have.property('name', 'DraftModelError');
        expect((err as Error).message).to.match(/^the draft model failed: ModelRunError: .*df-draft.*position 12/s);
      } finally {
        await engine.dispose();
      }
    });

    it('refuses a draft model with another tokenizer, and one whose graph cannot take positions back, by name', async () => {
      const toy = join(repoRoot, 'examples', 'modules', 'toy-backbone-s');
      const other = await Engine.load({ model: stories, cacheDir, draftModel: toy }).then(
        (e) => e.dispose().then(() => undefined),
        (err: Error) => err,
      );
      expect(other?.message).to.match(/the draft model \(.*\) uses another tokenizer than backbone .*A draft model must share the backbone tokenizer/s);
      const gqa = await storiesGqaModule();
      const right = await Engine.load({ model: stories, cacheDir, draftModel: gqa }).then(
        (e) => e.dispose().then(() => undefined),
        (err: Error) => err,
      );
      expect(right?.message).to.match(/^draft model .*: its graph cannot take drafted positions back/s);
      expect(right?.name).to.equal('DraftModelError');
      expect(other?.name).to.equal('VocabularyMismatchError');
    });
  });
});
