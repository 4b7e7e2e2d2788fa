/**
 * The engine's API where a caller gets it wrong: errors from the worker point at the caller's call, option names
 * outside the options are refused by name, and a prompt of the wrong form is described as it is.
 */
import { expect } from 'chai';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Engine, EngineError, KvBudgetError, ModuleIntegrityError, PromptError, validateGenerateOptions } from '../src/index.js';
import { workerError } from '../src/runtime/worker-errors.js';
import { builtModel, cacheDir, smallConfig } from './support/models.js';
import { makeModule } from './support/modules.js';

const thisFile = fileURLToPath(import.meta.url);

/** A rejection's error (fails the test when the promise resolves). */
async function rejection(p: Promise<unknown>): Promise<Error> {
  return p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (e: Error) => e,
  );
}

/** Checks that `err.stack` opens with its own `Name: message` and has frames in this file (the test's own call). */
function expectCallerStack(err: Error): void {
  const [first, ...frames] = err.stack!.split('\n');
  expect(first).to.equal(`${err.name}: ${err.message}`);
  expect(frames.filter((l) => l.trim().startsWith('at ')), err.stack).to.not.be.empty;
  expect(frames.some((l) => l.includes(thisFile)), err.stack).to.equal(true);
}

describe('engine API checks', function () {
  this.timeout(60_000);
  let engine: Engine;
  before(async () => {
    // (a budget a 100-token call cannot fit: the worker refuses it)
    engine = await Engine.load({ model: await builtModel('api-checks'), cacheDir, kvBudgetBytes: 20_000 });
  });
  after(() => engine?.dispose());

  describe("errors from the worker carry the caller's stack", () => {
    it("a PromptError and a KvBudgetError refused in the worker: class, name, message, and this test's frames", async () => {
      const outside = await rejection(engine.generate({ promptIds: [1, smallConfig.vocabSize] }));
      expect(outside).to.be.instanceOf(PromptError);
      expect(outside.name).to.equal('PromptError');
      expect(outside.message).to.include(`token id ${smallConfig.vocabSize}`);
      expectCallerStack(outside);
      const tooBig = await rejection(engine.stream({ promptIds: [1] }, { maxTokens: 100 }).result);
      expect(tooBig).to.be.instanceOf(KvBudgetError);
      expect(tooBig.message).to.include('kvBudgetBytes');
      expectCallerStack(tooBig);
    });

    it('a ModuleIntegrityError of a load keeps its fields', async () => {
      const broken = await makeModule({ name: 'api-checks-broken', seed: 3 });
      const model = join(broken, 'model.onnx');
      const bytes = await readFile(model);
      bytes[bytes.length - 10] ^= 0xff;
      await writeFile(model, bytes);
      const err = await rejection(Engine.load({ model: broken, cacheDir }));
      expect(err).to.be.instanceOf(ModuleIntegrityError);
      expect(err).to.include({ name: 'ModuleIntegrityError', file: 'model', path: model, problem: 'sha256' });
      expectCallerStack(err);
    });

    it("an error the package has no class for is an EngineError with the site's frames; without frames, its first line alone", () => {
      const site = { stack: 'Error\n    at caller (/app/main.js:3:5)' };
      const other = workerError({ name: 'RangeError', message: 'Invalid array length' }, site);
      expect(other).to.be.instanceOf(EngineError);
      expect(other.stack).to.equal('RangeError: Invalid array length\n    at caller (/app/main.js:3:5)');
      // Error.stackTraceLimit = 0 leaves the site no frames
      expect(workerError({ name: 'PromptError', message: 'm' }, { stack: 'Error' }).stack).to.equal('PromptError: m');
    });
  });

  describe('option names outside the options', () => {
    it('generate, stream and validateGenerateOptions refuse them by name, suggesting the camelCase or nearest name', () => {
      for (const [options, message] of [
        [{ max_tokens: 3 }, 'unknown generation option "max_tokens" (did you mean maxTokens?)'],
        [{ maxToken: 3 }, 'unknown generation option "maxToken" (did you mean maxTokens?)'],
        [{ temprature: 0.5 }, 'unknown generation option "temprature" (did you mean temperature?)'],
        [{ response_format: { type: 'json_object' } }, 'unknown generation option "response_format" (did you mean responseFormat?)'],
        [{ maxTokens: 2, beams: 4 }, 'unknown generation option "beams"'],
        // a misspelt option set to undefined is still misspelt
        [{ seeed: undefined }, 'unknown generation option "seeed" (did you mean seed?)'],
      ] as const) {
        expect(() => engine.generate({ promptIds: [1] }, options as never), JSON.stringify(options)).to.throw(TypeError, message);
        expect(() => engine.stream({ promptIds: [1] }, options as never)).to.throw(TypeError, message);
        expect(() => validateGenerateOptions(options as never)).to.throw(TypeError, message);
      }
      expect(() => engine.generate({ promptIds: [1] }, { maxTokens: 2, beams: 4 } as never))
        .to.throw(TypeError)
        .that.satisfies((e: Error) => !/did you mean/.test(e.message));
    });

    it('while every call option is accepted, undefined-valued ones too', async () => {
      expect(() => validateGenerateOptions({ maxToken: 3 } as never)).to.throw(TypeError);
      const options = {
        temperature: 0, topK: undefined, topP: undefined, minP: undefined, repetitionPenalty: undefined, repetitionWindow: undefined,
        frequencyPenalty: undefined, presencePenalty: undefined, logitBias: undefined, seed: 1, maxTokens: 2, stop: undefined,
        eosTokenIds: undefined, ignoreEos: true, keepTokens: undefined, thinkingBudget: undefined, logprobs: undefined,
        prediction: undefined, reasoners: undefined, mode: undefined, normalize: undefined, trace: undefined, latent: undefined,
        latentPlaceholder: undefined, responseFormat: undefined, signal: new AbortController().signal,
      };
      const r = await engine.generate({ promptIds: [1] }, options);
      expect(r.rows[0]!.ids).to.have.length(2);
    });

    it('Engine.load, embed and promptLogprobs refuse them by name', async () => {
      const model = await builtModel('api-checks');
      const t0 = performance.now();
      const load = await rejection(Engine.load({ model, cacheDir, maxBatchh: 3 } as never));
      expect(load).to.be.instanceOf(TypeError);
      expect(load.message).to.equal('unknown Engine.load option "maxBatchh" (did you mean maxBatch?)');
      expect((await rejection(Engine.load({ modle: model } as never))).message).to.equal('unknown Engine.load option "modle" (did you mean model?)');
      expect((await rejection(Engine.load({ model, kv_budget_bytes: 1 } as never))).message).to.include('(did you mean kvBudgetBytes?)');
      expect(performance.now() - t0, 'refused before anything loads').to.be.below(2000);
      expect((await rejection(engine.embed({ texts: ['a'] }, { normalise: false } as never))).message).to.equal('unknown embed option "normalise" (did you mean normalize?)');
      const logprobs = await rejection(engine.promptLogprobs({ ids: [[1, 2]] }, { top_logprobs: 2 } as never));
      expect(logprobs).to.be.instanceOf(TypeError);
      expect(logprobs.message).to.equal('unknown promptLogprobs option "top_logprobs" (did you mean topLogprobs?)');
      const scored = await engine.promptLogprobs({ ids: [[1, 2]] }, { topLogprobs: 1, reasoners: undefined, mode: undefined, normalize: undefined });
      expect(scored).to.be.an('object');
    });
  });

  describe('prompts of the wrong form', () => {
    it('a message without a role, or whose role is not a text, and a prompt that is no list', () => {
      for (const [input, message] of [
        [{ messages: [{ rol: 'user', content: 'x' }] }, 'messages[0] has no role: give { role, content }, the role a text such as "user"'],
        [{ messages: [{ role: 'user', content: 'a' }, { role: 5, content: 'x' }] }, `messages[1]'s role must be a text such as "user"; its role is a number`],
        [{ messages: [null] }, 'messages[0] must be an object { role, content }, not null'],
        [{ messages: ['hi'] }, 'messages[0] must be an object { role, content }, not a text'],
        [{ prompt: 5 }, 'prompt must be a text or a non-empty list of texts, not a number'],
        [{ prompt: { text: 'a' } }, 'prompt must be a text or a non-empty list of texts, not an object'],
        [{ prompt: ['a', 5] }, 'prompt must be a text or a non-empty list of texts; item 1 is a number'],
        [{ prompt: [] }, 'prompt must be a text or a non-empty list of texts; the list is empty'],
      ] as const) {
        expect(() => engine.generate(input as never), JSON.stringify(input))
          .to.throw(PromptError)
          .with.property('message', message);
      }
    });
  });
});
