import { readdirSync } from 'node:fs';
/**
 * `ReasonerLLM` on the converted stories260K model (greedy, so its known story) composed with builder reasoners:
 * invoke, stream, batch, callbacks, usage, stop, abort, per-call reasoners and a prompt-template chain.
 */
import { expect } from 'chai';
import { ModelAbortError } from '@langchain/core/errors';
import { StringOutputParser } from '@langchain/core/output_parsers';
import { GenerationChunk } from '@langchain/core/outputs';
import { PromptTemplate } from '@langchain/core/prompts';
import { ReasonerLLM, UnknownReasonerError } from '../src/index.js';
import { cacheDir, makeModule, slowBackbone, storiesConfig, storiesModule } from './support/modules.js';
import { Recorder } from './support/recorder.js';

const PROMPT = 'Once upon a time';
/** What stories260K writes greedily after PROMPT, in 20 tokens. */
const STORY = /^, there was a little girl named Lily\. She loved to play/;

async function collect<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of stream) out.push(x);
  return out;
}

describe('ReasonerLLM', function () {
  this.timeout(60_000);
  let llm: ReasonerLLM;
  let alone: string;

  before(async () => {
    const reasoner = await makeModule({ name: 'llm-r', config: storiesConfig({ hiddenSize: 32 }), seed: 21 });
    llm = await ReasonerLLM.create({ backbone: await storiesModule(), reasoners: [{ module: reasoner, weight: 3 }], cacheDir, maxTokens: 20 });
    alone = await llm.invoke(PROMPT, { reasoners: [] });
  });

  after(() => llm?.dispose());

  it('completes text; with no reasoners it is the backbone alone, with them the composition', async () => {
    expect(alone).to.match(STORY);
    const composed = await llm.invoke(PROMPT);
    expect(composed).to.be.a('string').that.is.not.empty;
    expect(composed).to.not.equal(alone);
    const unknown = await llm.invoke(PROMPT, { reasoners: [{ name: 'nope' }] }).catch((e: Error) => e);
    expect(unknown).to.be.instanceOf(UnknownReasonerError);
  });

  it('streams text pieces that join to the completion, and reports each to callbacks', async () => {
    const recorder = new Recorder();
    const pieces = await collect(await llm.withConfig({ reasoners: [] }).stream(PROMPT, { callbacks: [recorder] }));
    expect(pieces.length).to.be.greaterThan(5);
    expect(pieces.join('')).to.equal(alone);
    expect(recorder.tokens.join('')).to.equal(alone);
    for (const f of recorder.fields) expect(f?.chunk).to.be.instanceOf(GenerationChunk);
  });

  it('reports usage and metadata per completion, summed over a generate call', async () => {
    const result = await llm.generate([PROMPT, 'Tim and Lily'], { reasoners: [] });
    const infos = result.generations.map((g) => g[0]!.generationInfo!);
    expect(infos[0]).to.deep.include({ model_provider: 'reasonplug', model_name: 'stories260k', reasoners: [], finish_reason: 'length' });
    expect(infos[0]!.usage_metadata).to.deep.equal({ input_tokens: 5, output_tokens: 20, total_tokens: 25 });
    const sum = (key: 'input_tokens' | 'output_tokens' | 'total_tokens') => infos.reduce((n, i) => n + i.usage_metadata[key], 0);
    expect(result.llmOutput?.tokenUsage).to.deep.equal({ promptTokens: sum('input_tokens'), completionTokens: sum('output_tokens'), totalTokens: sum('total_tokens') });
  });

  it("reports the last chunk, with usage and metadata, to callbacks too, as LangChain's OpenAI models do", async () => {
    for (const run of [(cb: Recorder) => llm.invoke(PROMPT, { callbacks: [cb] }), async (cb: Recorder) => (await collect(await llm.stream(PROMPT, { callbacks: [cb] }))).join('')]) {
      const recorder = new Recorder();
      const text = await run(recorder);
      expect(recorder.tokens.join('')).to.equal(text);
      expect(recorder.tokens.at(-1)).to.equal('');
      const info = recorder.fields.at(-1)!.chunk!.generationInfo!;
      expect(info).to.deep.include({ model_provider: 'reasonplug', finish_reason: 'length', usage_metadata: { input_tokens: 5, output_tokens: 20, total_tokens: 25 } });
    }
  });

  it("reports each prompt's tokens of a generate call with its index, as LangChain's OpenAI does", async () => {
    const recorder = new Recorder();
    const prompts = [PROMPT, 'Tim and Lily', 'The sun'];
    const result = await llm.generate(prompts, { callbacks: [recorder], reasoners: [] });
    prompts.forEach((_, i) => {
      const mine = recorder.tokens.filter((_, k) => recorder.indices[k]!.prompt === i);
      expect(mine.join(''), `prompt ${i}`).to.equal(result.generations[i]![0]!.text);
      expect(mine.at(-1), `prompt ${i}`).to.equal('');
    });
    expect(new Set(recorder.indices.map((idx) => idx.completion))).to.deep.equal(new Set([0]));
  });

  it('batches concurrent calls through the engine queue, each as if alone', async () => {
    const prompts = [PROMPT, 'Tim and Lily', 'The sun'];
    const each: string[] = [];
    for (const p of prompts) each.push(await llm.invoke(p));
    const [a, b] = await Promise.all([llm.batch(prompts), llm.batch([...prompts].reverse())]);
    expect(a).to.deep.equal(each);
    expect(b).to.deep.equal([...each].reverse());
  });

  it('enforces stop sequences', async () => {
    expect(await llm.invoke(PROMPT, { reasoners: [], stop: [' named'] })).to.equal(', there was a little girl');
  });

  it('stops mid-generation on abort, with the partial completion on the error', async () => {
    const slow = await ReasonerLLM.create({ backbone: await slowBackbone(), cacheDir, maxTokens: 1500 });
    try {
      const controller = new AbortController();
      const recorder = new Recorder((r) => r.tokens.length === 3 && controller.abort());
      const err = await slow.invoke(PROMPT, { signal: controller.signal, callbacks: [recorder] }).catch((e: unknown) => e);
      expect(ModelAbortError.isInstance(err), String(err)).to.equal(true);
      const partial = (err as ModelAbortError).partialOutput!;
      expect(partial.response_metadata.finish_reason).to.equal('abort');
      expect(partial.usage_metadata!.output_tokens).to.be.within(3, 750);
      expect(partial.content).to.equal(recorder.tokens.join(''));
    } finally {
      await slow.dispose();
    }
  });

  it('a create that LangChain refuses (maxConcurrency 0) frees the engine it loaded', async () => {
    const threads = () => readdirSync('/proc/self/task').length;
    const before = threads();
    const err = await ReasonerLLM.create({ backbone: await storiesModule(), cacheDir, maxConcurrency: 0 }).catch((e: Error) => e);
    expect(err).to.be.instanceOf(Error);
    // (until they have ended, 10 s at most: a loaded machine may take longer than a fixed pause to reap them)
    for (let i = 0; i < 500 && threads() > before; i++) await new Promise((r) => setTimeout(r, 20));
    expect(threads(), 'threads left by the failed create').to.be.at.most(before);
  });

  it('with promptLookup or a prediction, writes what it writes without (drafts kept as far as the model writes them)', async () => {
    const fast = await ReasonerLLM.create({ backbone: await storiesModule(), cacheDir, maxTokens: 60, promptLookup: { draftTokens: 6 } });
    try {
      const prompt = 'Tom had a big red ball. He liked to play with the ball.';
      expect(await fast.invoke(prompt)).to.equal(await llm.invoke(prompt, { reasoners: [], maxTokens: 60 }));
      // A prediction per call (ChatOpenAI's shape, or a string): the same completion.
      const story = await llm.invoke(PROMPT, { reasoners: [] });
      expect(await llm.invoke(PROMPT, { reasoners: [], prediction: { type: 'content', content: story } })).to.equal(story);
      expect(await llm.invoke(PROMPT, { reasoners: [], prediction: story.slice(10) })).to.equal(story);
      const bad = await llm.invoke(PROMPT, { prediction: { type: 'text', content: story } as never }).then(
        () => undefined,
        (e: Error) => e,
      );
      expect(bad?.message).to.match(/prediction/);
      const err = await ReasonerLLM.create({ backbone: await storiesModule(), cacheDir, promptLookup: { draftTokens: 0 } }).then(
        () => undefined,
        (e: Error) => e,
      );
      expect(err?.message).to.match(/promptLookup/);
    } finally {
      await fast.dispose();
    }
  });

  it('with a draftModel, writes what it writes without it, in fewer steps; a bad draftModel is refused by name', async () => {
    const stories = await storiesModule();
    // (the model as its own draft: every confident drafted token is the model's)
    const fast = await ReasonerLLM.create({ backbone: stories, cacheDir, maxTokens: 60, draftModel: { model: stories, draftTokens: 3, adaptive: false } });
    try {
      const result = await fast.generate([PROMPT]);
      expect(result.generations[0]![0]!.text).to.equal(await llm.invoke(PROMPT, { reasoners: [], maxTokens: 60 }));
      const timing = result.generations[0]![0]!.generationInfo!['timing'] as { decode_steps: number };
      expect(timing.decode_steps, 'steps after the first of 60 tokens').to.be.lessThan(40);
      const err = await ReasonerLLM.create({ backbone: stories, cacheDir, draftModel: { model: stories, minProbability: 2 } }).then(
        () => undefined,
        (e: Error) => e,
      );
      expect(err?.message).to.match(/draftModel/);
    } finally {
      await fast.dispose();
    }
  });

  it('runs in a chain with a prompt template and an output parser', async () => {
    const chain = PromptTemplate.fromTemplate('Once upon a {when}').pipe(llm.withConfig({ reasoners: [] })).pipe(new StringOutputParser());
    expect(await chain.invoke({ when: 'time' })).to.equal(alone);
    expect((await collect(await chain.stream({ when: 'time' }))).join('')).to.equal(alone);
  });
});
