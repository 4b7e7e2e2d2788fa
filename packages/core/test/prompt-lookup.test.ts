/**
 * Speculative decoding by prompt lookup: drafts looked up in the row's own tokens, run with its next token in one
 * step and kept as far as the row samples them itself. Outputs equal decoding without it (greedy, seeded sampling,
 * grammars, stop strings, limits, composition), on graphs that take positions back for free (new keys and values
 * out: converted GGUFs) and by a copy (joined presents: builder graphs and hub exports).
 */
import { expect } from 'chai';
import { Engine, type StreamOptions } from '../src/engine.js';
import { lookupDraft, lookupPrediction, promptLookup } from '../src/generate/prompt-lookup.js';
import { DecoderSession } from '../src/runtime/decoder-session.js';
import { BatchKv, RowPrefill } from '../src/runtime/batch-kv.js';
import { prepareDecoder } from '../src/onnx/prepared-cache.js';
import type { GenerationResult } from '../src/generate/types.js';
import { builtModel, cacheDir } from './support/models.js';
import { makeModule, storiesConfig, storiesGqaModule, storiesModule } from './support/modules.js';
import { logprobGap } from './support/logprob-compare.js';
import { startServer } from '../src/serve/server.js';
import { refuseChunksAfterPast } from './support/graph-edits.js';
import { TOOLS_TEMPLATE } from './support/chat-templates.js';
import { ChatOpenAI } from '@langchain/openai';

const defaults = promptLookup(true);

describe('prompt lookup', () => {
  describe('drafts', () => {
    it('proposes what followed the latest earlier occurrence of the longest matching run of last tokens', () => {
      // ... 7 8 9 | 1 2 3 4 5 ... 1 2 3 → 4 5 (the longest run, 3 tokens, at its latest occurrence)
      expect(lookupDraft([1, 2, 3, 4, 5, 6, 1, 2, 3, 9, 9, 1, 2, 3], defaults)).to.deep.equal([9, 9, 1, 2]);
      expect(lookupDraft([1, 2, 3, 4, 5, 6, 7, 2, 3], defaults)).to.deep.equal([4, 5, 6, 7]);
      // Shorter runs only when no longer one matched; none below minNgram.
      expect(lookupDraft([5, 2, 3, 4, 8, 3, 4], defaults)).to.deep.equal([8, 3, 4]);
      expect(lookupDraft([1, 2, 3, 4, 3], defaults)).to.deep.equal([]);
      expect(lookupDraft([1, 2, 3, 4, 3], promptLookup({ minNgram: 1 }))).to.deep.equal([4, 3]);
      // As many tokens as asked, never past the end.
      expect(lookupDraft([1, 2, 3, 4, 5, 6, 1, 2], defaults, 2)).to.deep.equal([3, 4]);
      expect(lookupDraft([1, 2, 1, 2], defaults)).to.deep.equal([1, 2]);
      expect(lookupDraft([1, 2], defaults)).to.deep.equal([]);
      expect(lookupDraft([1, 2, 3, 1, 2], defaults, 0)).to.deep.equal([]);
    });

    it("looks up a prediction of the reply: its continuation while the reply follows it, else after the match nearest the reply's length", () => {
      const prediction = [10, 11, 12, 13, 14, 15, 11, 12, 16, 17];
      expect(lookupPrediction(prediction, [], defaults)).to.deep.equal([10, 11, 12, 13]);
      expect(lookupPrediction(prediction, [10, 11], defaults, 3)).to.deep.equal([12, 13, 14]);
      // An edit: the reply left the prediction (99), then rejoined it (11 12): the occurrence nearest position 8.
      expect(lookupPrediction(prediction, [10, 11, 12, 13, 99, 15, 11, 12], defaults)).to.deep.equal([16, 17]);
      expect(lookupPrediction(prediction, [99, 11, 12], defaults)).to.deep.equal([13, 14, 15, 11]);
      expect(lookupPrediction(prediction, [99, 98], defaults)).to.deep.equal([]);
      // The prediction's end: nothing follows it.
      expect(lookupPrediction(prediction, [5, 16, 17], defaults)).to.deep.equal([]);
    });

    it('checks its options', () => {
      expect(promptLookup(true)).to.deep.equal({ draftTokens: 4, maxNgram: 3, minNgram: 2 });
      expect(promptLookup({ draftTokens: 8, minNgram: 4 })).to.deep.equal({ draftTokens: 8, maxNgram: 4, minNgram: 4 });
      expect(() => promptLookup({ draftTokens: 0 })).to.throw(RangeError, /draftTokens must be a whole number >= 1/);
      expect(() => promptLookup({ maxNgram: 1.5 })).to.throw(RangeError, /maxNgram/);
      expect(() => promptLookup({ minNgram: 3, maxNgram: 2 })).to.throw(RangeError, /minNgram \(3\) is more than maxNgram \(2\)/);
      // (a number, as the CLI's --prompt-lookup N, or a string, from a config file, once drafted 4 tokens silently)
      for (const wrong of [8, 'no', null, [4]]) {
        expect(() => promptLookup(wrong as never), String(wrong)).to.throw(TypeError, /promptLookup must be true, false or \{ draftTokens\?, minNgram\?, maxNgram\? \}/);
      }
    });
  });

  describe('the batch cache', () => {
    /**
     * Feeds a prompt's cache `tokens` one step at a time, and as one run of all of them with the last `back`
     * taken back and the next token fed after; the logits of each position must agree.
     */
    async function runAgainstSteps(kvOutput: 'new' | 'joined'): Promise<number> {
      const path = await builtModel(`lookup-${kvOutput}`, storiesConfig({ numLayers: 2 }), { kvOutput }, 5);
      const p = await prepareDecoder(path, { lastLogitsOnly: true, logitsFloat32: true, cacheDir });
      const session = await DecoderSession.create({ path: p.preparedPath });
      try {
        const prompt = [1, 40, 41, 42, 43, 44, 45, 46];
        const fed = [100, 101, 102, 103, 104];
        const next = 200;
        const fresh = async () => {
          const prefill = new RowPrefill(session, prompt, Infinity);
          await prefill.next();
          const kv = new BatchKv(session);
          kv.rebuild([], [prefill.cache]);
          return kv;
        };
        const width = session.vocabSize;
        const stepped = await fresh();
        const one: Float32Array[] = [];
        for (const t of fed) one.push((await stepped.step([t])).slice());
        const reference = await fresh();
        for (const t of fed.slice(0, 2)) await reference.step([t]);
        const after = (await reference.step([next])).slice();

        const run = await fresh();
        expect(run.takesRuns).to.equal(true);
        const all = await run.run(fed, fed.length);
        let worst = 0;
        const diff = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);
        fed.forEach((_, i) => (worst = Math.max(worst, diff(all.subarray(i * width, (i + 1) * width), one[i]!))));
        expect(run.lengthOf(0)).to.equal(prompt.length + fed.length);
        run.dropLast(3);
        expect(run.lengthOf(0)).to.equal(prompt.length + 2);
        worst = Math.max(worst, diff(await run.step([next]), after));
        // Runs go on after a rollback, and past the room the cache kept.
        for (let i = 0; i < 30; i++) {
          await run.run([5, 6, 7], 3);
          run.dropLast(2);
        }
        expect(run.lengthOf(0)).to.equal(prompt.length + 3 + 30);
        return worst;
      } finally {
        await session.release();
      }
    }

    it('runs several positions and takes the last back, where the graph returns new keys and values', async () => {
      expect(await runAgainstSteps('new')).to.be.lessThan(1e-4);
    });

    it('runs several positions and takes the last back, where the graph returns joined caches', async () => {
      expect(await runAgainstSteps('joined')).to.be.lessThan(1e-4);
    });
  });

  describe('the engine', function () {
    this.timeout(120_000);
    let plain: Engine;
    let lookup: Engine;
    let stories: string;
    const prompt = 'Once upon a time, there was a little girl named Lily. She loved to play with her ball. One day, Lily';

    before(async () => {
      stories = await storiesModule();
      [plain, lookup] = await Promise.all([Engine.load({ model: stories, cacheDir }), Engine.load({ model: stories, cacheDir, promptLookup: true })]);
    });
    after(async () => {
      await Promise.all([plain?.dispose(), lookup?.dispose()]);
    });

    const rows = (r: GenerationResult) => r.rows.map((row) => ({ ids: row.ids, text: row.text, finishReason: row.finishReason }));

    async function same(options: StreamOptions, input: string = prompt): Promise<{ steps: number; tokens: number }> {
      const [want, got] = [await plain.generate({ prompt: input }, options), await lookup.generate({ prompt: input }, options)];
      expect(rows(got)).to.deep.equal(rows(want));
      // (a run of several positions computes them in another order: equal to rounding)
      if (options.logprobs !== undefined) expect(logprobGap(got.rows[0]!.logprobs!, want.rows[0]!.logprobs!)).to.be.lessThan(1e-4);
      return { steps: got.timing.decodeSteps, tokens: got.usage.completionTokens };
    }

    it('writes what the model writes without it, in fewer steps, on a trained model (stories260K)', async () => {
      const before = (await lookup.stats()).drafts!;
      const { steps, tokens } = await same({ maxTokens: 120 });
      const after = (await lookup.stats()).drafts!;
      const accepted = after.acceptedTokens - before.acceptedTokens;
      expect(after.draftedTokens - before.draftedTokens).to.be.greaterThan(accepted);
      expect(accepted, 'drafted tokens the model wrote').to.be.greaterThan(10);
      expect(steps).to.be.at.most(tokens - accepted);
    });

    it('keeps seeded sampling, log-probabilities, stop strings and token limits as they are', async () => {
      for (const seed of [1, 2, 3]) await same({ maxTokens: 80, temperature: 0.7, topP: 0.9, seed });
      await same({ maxTokens: 60, logprobs: 3 });
      await same({ maxTokens: 100, stop: ['Lily was'] });
      for (const maxTokens of [1, 2, 3, 5, 17]) await same({ maxTokens });
    });

    it('ends at the context where it ends without drafts', async () => {
      // (a reply that repeats itself, so that drafts run up to the context's end)
      const looping = 'Tom had a big red ball. He liked to play with the ball.';
      const load = (on: boolean) => Engine.load({ model: stories, cacheDir, contextLength: 90, ...(on ? { promptLookup: { draftTokens: 8, minNgram: 1 } } : {}) });
      const [off, on] = await Promise.all([load(false), load(true)]);
      try {
        const [want, got] = [await off.generate({ prompt: looping }, { maxTokens: 200 }), await on.generate({ prompt: looping }, { maxTokens: 200 })];
        expect(rows(got)).to.deep.equal(rows(want));
        expect(got.rows[0]!.finishReason).to.equal('length');
        expect(got.usage.promptTokens + got.usage.completionTokens).to.equal(90 + 1);
        expect(got.timing.decodeSteps).to.be.lessThan(want.timing.decodeSteps);
      } finally {
        await Promise.all([off.dispose(), on.dispose()]);
      }
    });

    it('decodes one token a step, as it does without, where the graph cannot take positions back (right-padded GroupQueryAttention)', async () => {
      const gqa = await storiesGqaModule();
      const [off, on] = await Promise.all([Engine.load({ model: gqa, cacheDir }), Engine.load({ model: gqa, cacheDir, promptLookup: true })]);
      try {
        const [want, got] = [await off.generate({ prompt }, { maxTokens: 60 }), await on.generate({ prompt }, { maxTokens: 60 })];
        expect(rows(got)).to.deep.equal(rows(want));
        expect((await on.stats()).drafts).to.deep.equal({ draftedTokens: 0, acceptedTokens: 0 });
      } finally {
        await Promise.all([off.dispose(), on.dispose()]);
      }
    });

    it('keeps a grammar: constrained output as it is without drafts', async () => {
      const schema = { type: 'object', properties: { name: { type: 'string', maxLength: 12 }, ball: { type: 'boolean' } }, required: ['name', 'ball'] };
      await same({ maxTokens: 60, responseFormat: { type: 'json_schema', schema } });
    });

    it('drafts nothing while other calls share the batch, and each call is as it is alone', async () => {
      const before = (await lookup.stats()).drafts!;
      const [a, b] = await Promise.all([lookup.generate({ prompt }, { maxTokens: 40 }), lookup.generate({ prompt: 'Tim and Sam went to the park.' }, { maxTokens: 40 })]);
      expect(rows(a)).to.deep.equal(rows(await plain.generate({ prompt }, { maxTokens: 40 })));
      expect(rows(b)).to.deep.equal(rows(await plain.generate({ prompt: 'Tim and Sam went to the park.' }, { maxTokens: 40 })));
      const after = (await lookup.stats()).drafts!;
      // (a call may draft while it runs alone: before the other joins, or after it has finished)
      expect(after.draftedTokens - before.draftedTokens).to.be.lessThan(80);
    });

    it('composes reasoners on joined-cache graphs: every model runs the draft and takes back the rest', async () => {
      const backbone = await makeModule({ name: 'lookup-backbone', kind: 'backbone', config: storiesConfig({ hiddenSize: 64, numLayers: 3 }), seed: 11 });
      const reasoner = await makeModule({ name: 'lookup-reasoner', config: storiesConfig({ hiddenSize: 32 }), seed: 12 });
      const load = (on: boolean) => Engine.load({ model: backbone, reasoners: [{ model: reasoner, weight: 0.7 }], placement: 'inline', cacheDir, ...(on ? { promptLookup: { draftTokens: 6, minNgram: 1 } } : {}) });
      const [off, on] = await Promise.all([load(false), load(true)]);
      try {
        // A random model's greedy reply falls into loops, which lookup drafts.
        const input = 'the cat sat on the mat and the cat sat on the';
        const [want, got] = [await off.generate({ prompt: input }, { maxTokens: 64 }), await on.generate({ prompt: input }, { maxTokens: 64 })];
        expect(rows(got)).to.deep.equal(rows(want));
        const counts = (await on.stats()).drafts!;
        expect(counts.acceptedTokens).to.be.greaterThan(0);
      } finally {
        await Promise.all([off.dispose(), on.dispose()]);
      }
    });

    it('falls back to one token a step for a model that refuses a run of several positions after a past, the others taking the draft back', async () => {
      const backbone = await makeModule({ name: 'lookup-backbone-2', kind: 'backbone', config: storiesConfig({ hiddenSize: 64, numLayers: 3 }), seed: 13 });
      const refusing = await makeModule({ name: 'lookup-refusing', config: storiesConfig({ hiddenSize: 32 }), seed: 14, edit: refuseChunksAfterPast });
      const input = 'the cat sat on the mat and the cat sat on the';
      for (const [model, reasoners] of [
        [refusing, []],
        [backbone, [{ model: refusing, weight: 0.7 }]],
      ] as const) {
        const load = (on: boolean) => Engine.load({ model, reasoners: [...reasoners], placement: 'inline', cacheDir, ...(on ? { promptLookup: { minNgram: 1 } } : {}) });
        const [off, on] = await Promise.all([load(false), load(true)]);
        try {
          const [want, got] = [await off.generate({ prompt: input }, { maxTokens: 48 }), await on.generate({ prompt: input }, { maxTokens: 48 })];
          expect(rows(got)).to.deep.equal(rows(want));
          expect((await on.stats()).drafts).to.deep.equal({ draftedTokens: 0, acceptedTokens: 0 });
          expect(got.timing.decodeSteps).to.equal(want.timing.decodeSteps);
        } finally {
          await Promise.all([off.dispose(), on.dispose()]);
        }
      }
    });

    it("drafts from a request's prediction (OpenAI's Predicted Outputs), with or without prompt lookup, and writes what it writes without", async () => {
      const input = 'Once upon a time, there was a dog named Max.';
      const want = await plain.generate({ prompt: input }, { maxTokens: 60 });
      const text = want.rows[0]!.text;
      const edited = text.replace(/\bplay\b/, 'run');
      expect(edited).to.not.equal(text);
      for (const engine of [plain, lookup]) {
        for (const prediction of [text, edited, 'Nothing like the story at all.']) {
          const got = await engine.generate({ prompt: input }, { maxTokens: 60, prediction });
          expect(rows(got)).to.deep.equal(rows(want));
          const { acceptedPredictionTokens: accepted, rejectedPredictionTokens: rejected } = got.usage;
          expect(accepted).to.be.a('number');
          expect(rejected).to.be.a('number');
          // Each step writes one token and the drafted ones kept (without prompt lookup, all from the prediction).
          if (engine === plain) expect(accepted! + got.timing.decodeSteps).to.equal(got.rows[0]!.ids.length - 1);
          if (prediction === text) {
            expect(rejected).to.equal(0);
            expect(got.timing.decodeSteps).to.be.lessThan(16);
          }
          if (prediction === edited) expect(accepted).to.be.greaterThan(30);
        }
      }
      expect(() => plain.generate({ prompt: input }, { prediction: 42 as never })).to.throw(/generation option prediction must be a string/);
    });

    it('serves it: a completion as the engine writes it without drafts, /metrics counting drafted and kept tokens', async () => {
      const server = await startServer({ engine: { model: stories, cacheDir, promptLookup: true }, port: 0 });
      try {
        await server.ready;
        const res = await fetch(`${server.url}/v1/completions`, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ model: 'stories260k', prompt, max_tokens: 80, temperature: 0 }),
        });
        const body = (await res.json()) as { choices: { text: string }[] };
        expect(body.choices[0]!.text).to.equal((await plain.generate({ prompt }, { maxTokens: 80 })).rows[0]!.text);
        const metrics = await (await fetch(`${server.url}/metrics`)).text();
        const count = (name: string) => Number(new RegExp(`^reasonplug:${name}\\{[^}]*\\} (\\d+)$`, 'm').exec(metrics)?.[1]);
        expect(count('spec_decode_num_draft_tokens_total')).to.be.greaterThan(count('spec_decode_num_accepted_tokens_total'));
        expect(count('spec_decode_num_accepted_tokens_total')).to.be.greaterThan(0);
      } finally {
        await server.close();
      }
    });

    it("serves predictions: ChatOpenAI's prediction drafts, the reply is the same, usage counts accepted and rejected prediction tokens", async () => {
      const server = await startServer({ engine: { model: stories, cacheDir }, port: 0, chatTemplate: TOOLS_TEMPLATE });
      try {
        await server.ready;
        const chat = new ChatOpenAI({ model: 'stories260k', apiKey: 'none', temperature: 0, maxTokens: 48, configuration: { baseURL: `${server.url}/v1` }, maxRetries: 0 });
        const message = 'Tell me a story about a dog named Max.';
        const reply = (await chat.invoke(message)).content as string;
        expect(reply.length).to.be.greaterThan(40);
        const predicted = await chat.invoke(message, { prediction: { type: 'content', content: reply } });
        expect(predicted.content).to.equal(reply);
        const post = (body: Record<string, unknown>) =>
          fetch(`${server.url}/v1/chat/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ model: 'stories260k', messages: [{ role: 'user', content: message }], temperature: 0, max_tokens: 48, ...body }) });
        const parts = [{ type: 'text', text: reply.slice(0, 20) }, { type: 'text', text: reply.slice(20) }];
        const body = (await (await post({ prediction: { type: 'content', content: parts } })).json()) as { choices: { message: { content: string } }[]; usage: { completion_tokens: number; completion_tokens_details: Record<string, number> } };
        expect(body.choices[0]!.message.content).to.equal(reply);
        const details = body.usage.completion_tokens_details;
        expect(details.accepted_prediction_tokens).to.be.greaterThan(body.usage.completion_tokens / 2);
        expect(details).to.have.property('rejected_prediction_tokens');
        expect(details).to.have.property('reasoning_tokens', 0);
        // Without --prompt-lookup, /metrics counts drafts once predictions made some.
        const metrics = await (await fetch(`${server.url}/metrics`)).text();
        expect(Number(/^reasonplug:spec_decode_num_accepted_tokens_total\{[^}]*\} (\d+)$/m.exec(metrics)?.[1])).to.be.at.least(details.accepted_prediction_tokens!);
        for (const [bad, param] of [
          [{ type: 'text', content: reply }, 'prediction'],
          ['text', 'prediction'],
          [{ type: 'content' }, 'prediction.content'],
          [{ type: 'content', content: 42 }, 'prediction.content'],
          [{ type: 'content', content: [{ type: 'text', text: 'a' }, { type: 'image_url' }] }, 'prediction.content[1]'],
        ] as const) {
          const res = await post({ prediction: bad });
          expect(res.status).to.equal(400);
          expect(((await res.json()) as { error: { param: string } }).error.param).to.equal(param);
        }
      } finally {
        await server.close();
      }
    });

    it('refuses bad options by name', async () => {
      let err: Error | undefined;
      await Engine.load({ model: stories, cacheDir, promptLookup: { draftTokens: -1 } }).catch((e: Error) => (err = e));
      expect(err?.message).to.match(/promptLookup\.draftTokens must be a whole number >= 1; got -1/);
    });
  });
});
