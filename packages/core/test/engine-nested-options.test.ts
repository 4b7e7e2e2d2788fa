/**
 * The engine's options nested in others (a draft model's, prompt lookup's, a reasoner entry's, a thinking budget's, a
 * response format's) refuse names outside theirs by path, as the top-level options do; and an error's cause crosses
 * from the worker to the caller.
 */
import { expect } from 'chai';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Engine, EngineError, OnnxFormatError, validateGenerateOptions } from '../src/index.js';
import { draftModel } from '../src/generate/draft-model.js';
import { promptLookup } from '../src/generate/prompt-lookup.js';
import { decodeModel, encodeModel } from '../src/onnx/proto.js';
import { fromWire, toWire } from '../src/runtime/spawn-worker.js';
import { workerError } from '../src/runtime/worker-errors.js';
import { rejection } from './support/assertions.js';
import { builtModel, cacheDir, testDir } from './support/models.js';

const THINK = { open: '<think>', close: '</think>' };

describe('nested option names', function () {
  this.timeout(60_000);
  let engine: Engine;
  let model: string;
  before(async () => {
    model = await builtModel('nested-options');
    engine = await Engine.load({ model, cacheDir });
  });
  after(() => engine?.dispose());

  it("Engine.load refuses them in draftModel, promptLookup, reasoners' and reasonerTasks' entries, before anything loads", async () => {
    const t0 = performance.now();
    for (const [options, message] of [
      [{ draftModel: { model, draft_tokens: 3 } }, 'unknown Engine.load option "draftModel.draft_tokens" (did you mean draftModel.draftTokens?)'],
      [{ draftModel: { modle: model } }, 'unknown Engine.load option "draftModel.modle" (did you mean draftModel.model?)'],
      [{ promptLookup: { maxNGram: 4 } }, 'unknown Engine.load option "promptLookup.maxNGram" (did you mean promptLookup.maxNgram?)'],
      [{ reasoners: [{ model, weight: 1 }, { model, wieght: 0.5 }] }, 'unknown Engine.load option "reasoners[1].wieght" (did you mean reasoners[1].weight?)'],
      [{ reasoners: [{ modle: model }] }, 'unknown Engine.load option "reasoners[0].modle" (did you mean reasoners[0].model?)'],
      [{ reasonerTasks: [{ task: 'math', weigth: 2 }] }, 'unknown Engine.load option "reasonerTasks[0].weigth" (did you mean reasonerTasks[0].weight?)'],
    ] as const) {
      const err = await rejection(Engine.load({ model, cacheDir, ...options } as never));
      expect(err, JSON.stringify(options)).to.be.instanceOf(TypeError);
      expect(err.message).to.equal(message);
    }
    expect(performance.now() - t0, 'refused before anything loads').to.be.below(2000);
    // the checks' own functions, as the CLI reaches them
    expect(() => draftModel({ model: 'm', min_probability: 0.4 } as never)).to.throw(TypeError, 'unknown Engine.load option "draftModel.min_probability" (did you mean draftModel.minProbability?)');
    expect(() => promptLookup({ draftTokens: 2, ngram: 3 } as never)).to.throw(TypeError, /^unknown Engine\.load option "promptLookup\.ngram"/);
    // every listed name is still taken
    expect(draftModel({ model: 'm', draftTokens: 2, adaptive: false, minProbability: 0.1, dtype: 'q4' })).to.include({ draftTokens: 2 });
    expect(promptLookup({ draftTokens: 2, maxNgram: 4, minNgram: 1 })).to.deep.equal({ draftTokens: 2, maxNgram: 4, minNgram: 1 });
  });

  it("generate, stream and promptLogprobs refuse them in reasoners' entries and thinkingBudget", async () => {
    for (const [options, message] of [
      [{ reasoners: [{ name: 'math', wieght: 2 }] }, 'unknown generation option "reasoners[0].wieght" (did you mean reasoners[0].weight?)'],
      [{ maxTokens: 4, thinkingBudget: { tokens: 2, ...THINK, openned: true } }, 'unknown generation option "thinkingBudget.openned" (did you mean thinkingBudget.opened?)'],
      [{ thinkingBudget: { max_tokens: 2, ...THINK } }, 'unknown generation option "thinkingBudget.max_tokens"'],
    ] as const) {
      expect(() => engine.generate({ promptIds: [1] }, options as never), JSON.stringify(options)).to.throw(TypeError, message);
      expect(() => engine.stream({ promptIds: [1] }, options as never)).to.throw(TypeError, message);
    }
    const logprobs = await rejection(engine.promptLogprobs({ ids: [[1, 2]] }, { reasoners: [{ name: 'math', Weight: 1 }] } as never));
    expect(logprobs).to.be.instanceOf(TypeError);
    expect(logprobs.message).to.equal('unknown promptLogprobs option "reasoners[0].Weight" (did you mean reasoners[0].weight?)');
    // every field of a budget is taken
    expect(() => validateGenerateOptions({ thinkingBudget: { tokens: 1, ...THINK, opened: false } })).to.not.throw();
  });

  it('responseFormat refuses them in a format, its thought and its answer, saying where an OpenAI-style schema goes', () => {
    const schema = { type: 'object', properties: { a: { type: 'integer' } } };
    const tools = [{ name: 'f', parameters: { type: 'object' } }];
    for (const [responseFormat, message] of [
      // (it failed in the worker as "JSON Schema at # must be an object or a boolean")
      [{ type: 'json_schema', json_schema: { name: 'out', schema, strict: true } },
        `unknown generation option "responseFormat.json_schema" (give the schema itself as responseFormat.schema, { type: 'json_schema', schema }: it is not nested in json_schema as in OpenAI's response_format)`],
      // (it admitted any object, the schema unread)
      [{ type: 'json_object', schema }, `unknown generation option "responseFormat.schema" (a json_object format admits any object and takes no schema: give { type: 'json_schema', schema })`],
      [[null, { type: 'regex', patern: 'a+' }], 'unknown generation option "responseFormat[1].patern" (did you mean responseFormat[1].pattern?)'],
      [{ type: 'tool_calls', tools, choice: 'auto', parallel_tool_calls: false }, 'unknown generation option "responseFormat.parallel_tool_calls"'],
      [{ type: 'grammar', grammar: 'root ::= "a"', thought: { ...THINK, opened: false, answr: 'A:' } }, 'unknown generation option "responseFormat.thought.answr" (did you mean responseFormat.thought.answer?)'],
      [{ type: 'tool_calls', tools, choice: 'auto', answer: { type: 'json_schema', schema, thought: { ...THINK, opened: false } } }, 'unknown generation option "responseFormat.answer.thought"'],
    ] as const) {
      expect(() => validateGenerateOptions({ responseFormat } as never), JSON.stringify(responseFormat)).to.throw(TypeError, message);
      expect(() => engine.generate({ promptIds: [1] }, { responseFormat } as never)).to.throw(TypeError, message);
    }
    // every field of every format is taken; formats that are no object, or of no known type, are the worker's to refuse
    for (const responseFormat of [
      { type: 'json_schema', schema, thought: { ...THINK, opened: true, answer: 'A:' } },
      [{ type: 'json_object' }, null, { type: 'grammar', grammar: 'root ::= "a"' }, { type: 'regex', pattern: 'a' }],
      { type: 'tool_calls', tools, choice: { name: 'f' }, parallel: false, syntax: 'hermes', answer: { type: 'regex', pattern: 'a' }, thought: { ...THINK, opened: false } },
      { type: 'xml', xml_schema: 'x' },
      'json',
    ]) {
      expect(() => validateGenerateOptions({ responseFormat } as never), JSON.stringify(responseFormat)).to.not.throw();
    }
  });
});

describe("an error's cause across the worker", function () {
  this.timeout(60_000);

  it("an OnnxFormatError of a load that onnxruntime refused keeps onnxruntime's error as its cause", async () => {
    const graph = decodeModel(await readFile(await builtModel('nested-options')), 'model.onnx');
    graph.graph!.node!.find((n) => n.opType === 'Mul')!.opType = 'NoSuchOp';
    const path = join(testDir('cause-across'), 'model.onnx');
    await writeFile(path, encodeModel(graph));
    const err = await rejection(Engine.load({ model: path, cacheDir }));
    expect(err).to.be.instanceOf(OnnxFormatError);
    expect(err.message).to.include('onnxruntime could not load');
    const cause = err.cause as Error;
    expect(cause, 'cause').to.be.instanceOf(Error);
    expect(cause.name).to.equal('Error');
    expect(cause.message).to.include('NoSuchOp');
    expect(err.message).to.include(cause.message);
    // the stack where onnxruntime raised it, in the worker
    expect(cause.stack).to.match(/^Error: .*NoSuchOp/).and.to.include('onnxruntime');
  });

  it('a chain of causes (bounded where it loops), rebuilt the same way for the engine and for the lanes and shards', () => {
    const root = Object.assign(new RangeError('too far'), { code: 'E_FAR' });
    const middle = new TypeError('bad step', { cause: root });
    const top = new Error('load failed', { cause: middle });
    top.name = 'SomeOtherError';
    const fromEngine = workerError(toWire(top), { stack: 'Error\n    at caller (/app/main.js:3:5)' });
    expect(fromEngine).to.be.instanceOf(EngineError);
    expect(fromEngine.stack).to.equal('SomeOtherError: load failed\n    at caller (/app/main.js:3:5)');
    for (const e of [fromEngine, fromWire(toWire(top))]) {
      const m = e.cause as Error;
      expect(m).to.be.instanceOf(Error);
      expect(m).to.include({ name: 'TypeError', message: 'bad step', stack: middle.stack });
      const r = m.cause as Error & { code?: string };
      expect(r).to.include({ name: 'RangeError', message: 'too far', code: 'E_FAR', stack: root.stack });
      expect(r.cause).to.equal(undefined);
    }
    // a cause that is no Error: its text
    expect((fromWire(toWire(new Error('x', { cause: 'disk full' }))).cause as Error).message).to.equal('disk full');
    const loop = new Error('loops');
    loop.cause = loop;
    let depth = 0;
    for (let e: unknown = workerError(toWire(loop), {}); e instanceof Error; e = e.cause) depth++;
    expect(depth).to.equal(5);
    expect(fromWire(toWire(new Error('plain'))).cause).to.equal(undefined);
  });
});
