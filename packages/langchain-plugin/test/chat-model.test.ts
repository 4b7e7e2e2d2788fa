/**
 * Conformance of `ChatReasoner`, after LangChain's standard chat-model tests (which are not published on npm):
 * invoke, stream, batch, streamEvents, callbacks, usage, stop, abort and timeout, per-call options, chains,
 * identifying params, chat templates and tools. Real engine, real ONNX models: the converted stories260K model
 * as backbone (it writes real, deterministic stories) and random-weight builder reasoners over its tokenizer.
 */
import { expect } from 'chai';
import { ModelAbortError } from '@langchain/core/errors';
import { AIMessage, AIMessageChunk, HumanMessage, SystemMessage, ToolMessage, type BaseMessageChunk } from '@langchain/core/messages';
import { StringOutputParser } from '@langchain/core/output_parsers';
import { ChatGenerationChunk, type ChatGeneration } from '@langchain/core/outputs';
import { ChatPromptTemplate } from '@langchain/core/prompts';
import { toJsonSchema } from '@langchain/core/utils/json_schema';
import { z } from 'zod';
import { END, MessagesAnnotation, START, StateGraph } from '@langchain/langgraph';
import { Engine, TextTokenizer } from '@reasonplug/core';
import {
  ChatReasoner,
  ChatTemplateError,
  ReasonerLLM,
  ReasonerOptionsError,
  ToolsNotSupportedError,
  UnknownReasonerError,
} from '../src/index.js';
import {
  GEMMA_TEMPLATE,
  PLAIN_TEMPLATE,
  TOOLS_TEMPLATE,
  cacheDir,
  makeModule,
  scriptedReasoner,
  slowBackbone,
  storiesConfig,
  storiesModule,
  withChatTemplate,
} from './support/modules.js';
import { Recorder } from './support/recorder.js';

const STORY = 'Tell me a story';
const MAX = 24;

const AddSchema = z.object({ a: z.number().int(), b: z.number().int() }).describe('Add two integers');
/** The tool as `withStructuredOutput(AddSchema, { name: 'add' })` renders it, so both render the same prompt. */
const ADD_TOOL = { type: 'function', function: { name: 'add', description: 'Add two integers', parameters: toJsonSchema(AddSchema) } };

function joined(chunks: BaseMessageChunk[]): AIMessageChunk {
  return chunks.reduce((a, b) => a.concat(b)) as AIMessageChunk;
}

async function collect<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of stream) out.push(x);
  return out;
}

function usageOf(m: { usage_metadata?: { input_tokens: number; output_tokens: number; total_tokens: number } }) {
  const { input_tokens, output_tokens, total_tokens } = m.usage_metadata!;
  return { input_tokens, output_tokens, total_tokens };
}

describe('ChatReasoner', function () {
  this.timeout(60_000);
  let storiesChat: string;
  let mathR: string;
  let cipherR: string;
  let tokenizer: TextTokenizer;
  let model: ChatReasoner;
  let alone: ChatReasoner;
  let reference: AIMessageChunk;

  before(async () => {
    storiesChat = await withChatTemplate(await storiesModule(), 'stories-chat', TOOLS_TEMPLATE);
    [mathR, cipherR] = await Promise.all([
      makeModule({ name: 'math-r', config: storiesConfig({ hiddenSize: 32 }), seed: 2 }),
      makeModule({ name: 'cipher-r', config: storiesConfig({ hiddenSize: 32, numHeads: 2, numKvHeads: 1 }), seed: 3 }),
    ]);
    tokenizer = await TextTokenizer.fromDirectory(storiesChat);
    [model, alone] = await Promise.all([
      ChatReasoner.create({ backbone: storiesChat, reasoners: [{ module: mathR, weight: 0.5 }, { module: cipherR, weight: 0.3 }], cacheDir, maxTokens: MAX }),
      ChatReasoner.create({ backbone: storiesChat, cacheDir, maxTokens: MAX }),
    ]);
    reference = await model.invoke(STORY);
  });

  after(async () => {
    await Promise.all([model?.dispose(), alone?.dispose()]);
  });

  describe('invoke, stream, batch', () => {
    it('invoke returns an AIMessage (as ChatOpenAI and ChatOllama) with text, usage and response metadata naming backbone and reasoners', () => {
      expect(reference.constructor).to.equal(AIMessage);
      expect(reference.text).to.be.a('string').that.is.not.empty;
      const prompt = tokenizer.encode(`<s><|user|>${STORY}<|end|><|assistant|>`, false);
      expect(usageOf(reference)).to.deep.equal({ input_tokens: prompt.length, output_tokens: MAX, total_tokens: prompt.length + MAX });
      expect(reference.response_metadata).to.deep.include({
        model_provider: 'reasonplug',
        model_name: 'stories-chat',
        model: 'stories-chat',
        backbone: { name: 'stories-chat', version: '0.1.0', path: storiesChat },
        reasoners: [{ name: 'math-r', weight: 0.5, mode: 'logits' }, { name: 'cipher-r', weight: 0.3, mode: 'logits' }],
        mode: 'logits',
        finish_reason: 'length',
      });
    });

    it('stream yields AIMessageChunks that add up to the invoked reply, usage and metadata in the last one only', async () => {
      const chunks = await collect(await model.stream(STORY));
      expect(chunks.length).to.be.greaterThan(2);
      for (const c of chunks) expect(c.constructor).to.equal(AIMessageChunk);
      expect(chunks.slice(0, -1).every((c) => c.usage_metadata === undefined && c.response_metadata.model_name === undefined)).to.equal(true);
      const whole = joined(chunks);
      expect(whole.content).to.equal(reference.content);
      expect(usageOf(whole)).to.deep.equal(usageOf(reference));
      expect(whole.response_metadata).to.deep.include({ finish_reason: 'length', reasoners: reference.response_metadata.reasoners });
    });

    it('concurrent batches and streams queue in the engine: every reply is the one it gets alone', async () => {
      const inputs = [STORY, 'Hello', 'Once upon a time'];
      const alone: string[] = [];
      for (const input of inputs) alone.push((await model.invoke(input)).text);
      const [forward, backward, streamed] = await Promise.all([
        model.batch(inputs),
        model.batch([...inputs].reverse()),
        Promise.all(inputs.map(async (input) => joined(await collect(await model.stream(input))).text)),
      ]);
      expect(forward.map((m) => m.text)).to.deep.equal(alone);
      expect(backward.map((m) => m.text)).to.deep.equal([...alone].reverse());
      expect(streamed).to.deep.equal(alone);
    });

    it('generate sums the token usage of its conversations', async () => {
      const result = await model.generate([[new HumanMessage('Hello')], [new HumanMessage(STORY)]]);
      const usages = result.generations.map((g) => usageOf((g[0] as ChatGeneration).message as AIMessageChunk));
      expect(result.llmOutput?.tokenUsage).to.deep.equal({
        promptTokens: usages[0]!.input_tokens + usages[1]!.input_tokens,
        completionTokens: usages[0]!.output_tokens + usages[1]!.output_tokens,
        totalTokens: usages[0]!.total_tokens + usages[1]!.total_tokens,
      });
    });
  });

  describe('events and callbacks', () => {
    it('streamEvents (v2) reports start, each chunk and the end, whose output is the chunks joined', async () => {
      const events = await collect(model.streamEvents(STORY, { version: 'v2' }));
      expect(events[0]!.event).to.equal('on_chat_model_start');
      expect(events.at(-1)!.event).to.equal('on_chat_model_end');
      const streamed = events.filter((e) => e.event === 'on_chat_model_stream').map((e) => e.data.chunk as AIMessageChunk);
      expect(streamed.length).to.be.greaterThan(2);
      const output = events.at(-1)!.data.output as AIMessageChunk;
      expect(joined(streamed).content).to.equal(output.content);
      expect(output.content).to.equal(reference.content);
      expect(usageOf(output)).to.deep.equal(usageOf(reference));
    });

    it('a conversation that ends with an AI message is continued from where its text ends (a prefilled answer)', async () => {
      // A model of its own: the shared one's prefix cache is another test's subject.
      const own = await ChatReasoner.create({ backbone: storiesChat, cacheDir, maxTokens: MAX, prefixCacheBytes: 0 });
      try {
        await prefilled(own);
      } finally {
        await own.dispose();
      }
    });

    async function prefilled(fresh: ChatReasoner): Promise<void> {
      const turn = `<s><|user|>${STORY}<|end|><|assistant|>`;
      const whole = await fresh.invoke([new HumanMessage(STORY)], { maxTokens: 2 * MAX });
      // The answer's first words as the prefill; the greedy continuation is then the rest of the same answer.
      const prefill = whole.text.split(' ').slice(0, 4).join(' ');
      expect(tokenizer.encode(`${turn}${whole.text}`, false).slice(0, tokenizer.encode(`${turn}${prefill}`, false).length)).to.deep.equal(tokenizer.encode(`${turn}${prefill}`, false));
      const continued = await fresh.invoke([new HumanMessage(STORY), new AIMessage(prefill)]);
      // The prompt ends with the prefill: no end of turn, no new assistant turn.
      expect(continued.usage_metadata!.input_tokens).to.equal(tokenizer.encode(`${turn}${prefill}`, false).length);
      expect(`${prefill}${continued.text}`.startsWith(whole.text) || whole.text.startsWith(`${prefill}${continued.text}`), `${prefill} | ${continued.text} | ${whole.text}`).to.equal(true);
      expect(continued.text.length).to.be.greaterThan(0);
      // An AI message with tool calls, or an empty one, is a finished turn: a new one opens after it.
      const after = await fresh.invoke([new HumanMessage(STORY), new AIMessage('')], { maxTokens: 2 });
      expect(after.usage_metadata!.input_tokens).to.equal(tokenizer.encode(`${turn}<|end|><|assistant|>`, false).length);
    }

    it("a conversation's next turn reports the prompt tokens taken from the prefix cache (cache_read), and answers as without it", async () => {
      const first = [new HumanMessage(`${STORY} Tell it in a few words, please.`)];
      const one = await alone.invoke(first);
      expect(one.usage_metadata!.input_token_details?.cache_read).to.equal(undefined);
      const next = [...first, new AIMessage(one.text), new HumanMessage('And then?')];
      const two = await alone.invoke(next);
      const firstIds = tokenizer.encode(`<s><|user|>${STORY} Tell it in a few words, please.<|end|><|assistant|>`, false);
      const nextIds = tokenizer.encode(`<s><|user|>${STORY} Tell it in a few words, please.<|end|><|assistant|>${one.text}<|end|><|user|>And then?<|end|><|assistant|>`, false);
      let common = 0;
      while (firstIds[common] === nextIds[common]) common++;
      expect(two.usage_metadata!.input_token_details?.cache_read).to.equal(Math.min(common, firstIds.length));
      const off = await ChatReasoner.create({ backbone: storiesChat, cacheDir, maxTokens: MAX, prefixCacheBytes: 0 });
      try {
        const fresh = await off.invoke(next);
        expect(fresh.text).to.equal(two.text);
        expect(fresh.usage_metadata!.input_token_details?.cache_read).to.equal(undefined);
      } finally {
        await off.dispose();
      }
    });

    it('without maxTokens a reply may run to the end of the context (the end token pushed down), not to the engine default of 256', async () => {
      const open = await ChatReasoner.create({ backbone: storiesChat, cacheDir });
      try {
        const reply = await open.invoke(STORY, { logitBias: { 2: -100 } });
        const { input_tokens, output_tokens } = reply.usage_metadata!;
        const probe = await Engine.load({ model: storiesChat, cacheDir });
        const context = probe.info.contextLength!;
        await probe.dispose();
        expect(context - input_tokens).to.be.greaterThan(256);
        // every position of the context fed, and the last token sampled from the last logits (it needs no position)
        expect(output_tokens).to.equal(context - input_tokens + 1);
        expect(reply.response_metadata.finish_reason).to.equal('length');
      } finally {
        await open.dispose();
      }
    });

    it('streamEvents (content blocks) gives the text and the usage', async () => {
      const stream = model.streamEvents(STORY);
      expect(await stream.text).to.equal(reference.content);
      expect(await stream.usage).to.deep.include(usageOf(reference));
    });

    it('callbacks receive every token with its chunk, when invoking and when streaming', async () => {
      const runs = {
        invoke: (cb: Recorder) => model.invoke(STORY, { callbacks: [cb] }),
        stream: async (cb: Recorder) => joined(await collect(await model.stream(STORY, { callbacks: [cb] }))),
      };
      for (const [how, run] of Object.entries(runs)) {
        const recorder = new Recorder();
        const reply = await run(recorder);
        expect(recorder.tokens.length, how).to.be.greaterThan(2);
        expect(recorder.tokens.join(''), how).to.equal(reply.content);
        recorder.fields.forEach((f, i) => {
          expect(f?.chunk, how).to.be.instanceOf(ChatGenerationChunk);
          expect(f!.chunk!.text, how).to.equal(recorder.tokens[i]);
        });
        expect(recorder.end?.llmOutput?.tokenUsage, how).to.deep.equal({ promptTokens: reply.usage_metadata!.input_tokens, completionTokens: MAX, totalTokens: reply.usage_metadata!.total_tokens });
      }
    });

    it("the last chunk, with usage and finish reason, reaches callbacks too (as ChatOpenAI's): a chain's stream events and LangGraph's messages mode see it", async () => {
      for (const run of [(cb: Recorder) => model.invoke(STORY, { callbacks: [cb] }), async (cb: Recorder) => joined(await collect(await model.stream(STORY, { callbacks: [cb] })))]) {
        const recorder = new Recorder();
        const reply = await run(recorder);
        const last = (recorder.fields.at(-1)!.chunk as ChatGenerationChunk).message as AIMessageChunk;
        expect(recorder.tokens.at(-1)).to.equal('');
        expect(usageOf(last)).to.deep.equal(usageOf(reply));
        expect(last.response_metadata.finish_reason).to.equal('length');
      }
      // Inside a chain the model's stream events come from its callbacks.
      const chain = ChatPromptTemplate.fromMessages([['human', '{text}']]).pipe(model);
      const events = await collect(chain.streamEvents({ text: STORY }, { version: 'v2' }));
      const usage = events.filter((e) => e.event === 'on_chat_model_stream' && (e.data.chunk as AIMessageChunk).usage_metadata);
      expect(usage.map((e) => usageOf(e.data.chunk as AIMessageChunk))).to.deep.equal([usageOf(reference)]);
      const graph = new StateGraph(MessagesAnnotation)
        .addNode('model', async (state) => ({ messages: [await model.invoke(state.messages)] }))
        .addEdge(START, 'model')
        .addEdge('model', END)
        .compile();
      const messages: AIMessageChunk[] = [];
      for await (const [chunk] of await graph.stream({ messages: [new HumanMessage(STORY)] }, { streamMode: 'messages' })) messages.push(chunk as AIMessageChunk);
      expect(messages.filter((m) => m.usage_metadata).map(usageOf)).to.deep.equal([usageOf(reference)]);
    });
  });

  describe('stop, abort and timeout', () => {
    let slow: ChatReasoner;
    const LONG = 1500;

    /** A call queued behind an abandoned generation would wait seconds; a free engine answers at once. */
    async function expectEngineFree(): Promise<void> {
      const t0 = performance.now();
      const reply = await slow.invoke('Hi', { maxTokens: 3 });
      expect(reply.usage_metadata?.output_tokens).to.equal(3);
      expect(performance.now() - t0).to.be.below(1500);
    }

    let slowChat: string;

    before(async () => {
      slowChat = await withChatTemplate(await slowBackbone(), 'slow-chat', PLAIN_TEMPLATE);
      slow = await ChatReasoner.create({ backbone: slowChat, cacheDir, maxTokens: LONG });
    });

    after(() => slow?.dispose());

    it('enforces stop sequences in the engine, cutting the text before them', async () => {
      const text = reference.text;
      const stop = text.slice(12, 15);
      const expected = text.slice(0, text.indexOf(stop));
      const cut = await model.invoke(STORY, { stop: [stop] });
      expect(cut.content).to.equal(expected);
      expect(cut.response_metadata.finish_reason).to.equal('stop');
      expect(cut.usage_metadata!.output_tokens).to.be.below(MAX);
      const streamed = joined(await collect(await model.withConfig({ stop: ['no such text', stop] }).stream(STORY)));
      expect(streamed.content).to.equal(expected);
    });

    it('an AbortSignal stops a non-streaming call mid-generation, with the partial reply on the error', async () => {
      const controller = new AbortController();
      const recorder = new Recorder((r) => r.tokens.length === 5 && controller.abort());
      const err = await slow.invoke('Hello', { signal: controller.signal, callbacks: [recorder] }).catch((e: unknown) => e);
      expect(ModelAbortError.isInstance(err), String(err)).to.equal(true);
      const partial = (err as ModelAbortError).partialOutput!;
      expect(partial.response_metadata.finish_reason).to.equal('abort');
      expect(partial.usage_metadata!.output_tokens).to.be.within(5, LONG / 2);
      expect(partial.content).to.equal(recorder.tokens.join(''));
      await expectEngineFree();
      // a signal aborted before the call: not a token written
      for (let i = 0; i < 5; i++) {
        const before = await model.invoke('Hello', { signal: AbortSignal.abort() }).catch((e: unknown) => e);
        expect(ModelAbortError.isInstance(before), String(before)).to.equal(true);
        expect((before as ModelAbortError).partialOutput!.usage_metadata!.output_tokens).to.equal(0);
      }
      await expectEngineFree();
    });

    it('an AbortSignal stops a stream mid-generation, and so does leaving the stream early', async () => {
      const controller = new AbortController();
      let seen = 0;
      const err = await (async () => {
        for await (const _ of await slow.stream('Hello', { signal: controller.signal })) if (++seen === 5) controller.abort();
      })().catch((e: Error) => e);
      expect(err).to.be.instanceOf(Error);
      expect((err as Error).name).to.be.oneOf(['AbortError', 'ModelAbortError']);
      await expectEngineFree();
      seen = 0;
      for await (const _ of await slow.stream('Hello')) if (++seen === 3) break;
      await expectEngineFree();
    });

    it('a timeout stops a call mid-generation, streaming or not', async () => {
      let t0 = performance.now();
      const err = await slow.invoke('Hello', { timeout: 300 }).catch((e: unknown) => e);
      expect(performance.now() - t0).to.be.below(1500);
      expect(ModelAbortError.isInstance(err), String(err)).to.equal(true);
      expect((err as Error).message).to.match(/timed out/);
      expect((err as ModelAbortError).partialOutput!.usage_metadata!.output_tokens).to.be.within(1, LONG - 1);
      await expectEngineFree();

      t0 = performance.now();
      let seen = 0;
      const streamErr = await (async () => {
        for await (const _ of await slow.stream('Hello', { timeout: 300 })) seen++;
      })().catch((e: Error) => e);
      expect(performance.now() - t0).to.be.below(1500);
      expect(streamErr).to.be.instanceOf(Error);
      expect(seen).to.be.within(1, LONG - 1);
      await expectEngineFree();
    });

    it("a timeout given at creation (ChatOpenAI's parameter) stops every call, beside a call's own; streaming is taken", async () => {
      const limited = await ChatReasoner.create({ backbone: slowChat, cacheDir, maxTokens: LONG, timeout: 300, streaming: true });
      const llm = await ReasonerLLM.create({ backbone: await slowBackbone(), cacheDir, maxTokens: LONG, timeout: 300, streaming: false });
      try {
        // (taken and of no effect: not among the defaults, nor what tells models apart)
        expect(limited._identifyingParams()).to.not.have.property('streaming');
        const notFlag = await ChatReasoner.create({ backbone: 'never-loaded', streaming: 'yes' } as never).catch((e: unknown) => e);
        expect((notFlag as ReasonerOptionsError).issues?.map((i) => i.path)).to.deep.equal(['streaming']);
        // A call's own longer timeout does not lift the model's: the shorter one stops it.
        for (const call of [() => limited.invoke('Hello'), () => limited.withConfig({ timeout: 60_000 }).invoke('Hello'), () => llm.invoke('Hello', { timeout: 60_000 })]) {
          const t0 = performance.now();
          const err = await call().catch((e: unknown) => e);
          expect(performance.now() - t0).to.be.below(1500);
          expect(ModelAbortError.isInstance(err), String(err)).to.equal(true);
          expect((err as Error).message).to.match(/timed out/);
          expect((err as ModelAbortError).partialOutput!.usage_metadata!.output_tokens).to.be.within(1, LONG - 1);
        }
        let seen = 0;
        const streamErr = await (async () => {
          for await (const _ of await limited.stream('Hello')) seen++;
        })().catch((e: Error) => e);
        expect((streamErr as Error).name).to.be.oneOf(['TimeoutError', 'ModelAbortError']);
        expect(seen).to.be.within(1, LONG - 1);
        // A shorter call's own wins over the model's.
        const quick = await limited.invoke('Hello', { timeout: 1 }).catch((e: unknown) => e);
        expect((quick as ModelAbortError).partialOutput!.usage_metadata!.output_tokens).to.be.below(50);
      } finally {
        await Promise.all([limited.dispose(), llm.dispose()]);
      }
    });
  });

  describe('per-call options', () => {
    it('withConfig chooses reasoners and weights per call among the loaded ones', async () => {
      const base = await alone.invoke(STORY);
      const none = await model.withConfig({ reasoners: [] }).invoke(STORY);
      expect(none.content).to.equal(base.content);
      expect(none.response_metadata.reasoners).to.deep.equal([]);
      const zero = await model.withConfig({ reasoners: [{ name: 'math-r', weight: 0 }, { name: 'cipher-r', weight: 0 }] }).invoke(STORY);
      expect(zero.content).to.equal(base.content);
      const strong = await model.withConfig({ reasoners: [{ name: 'math-r', weight: 4 }] }).invoke(STORY);
      expect(strong.content).to.not.equal(base.content);
      expect(strong.response_metadata.reasoners).to.deep.equal([{ name: 'math-r', weight: 4, mode: 'logits' }]);
      const defaults = await model.withConfig({ reasoners: [{ name: 'cipher-r' }, { name: 'math-r' }] }).invoke(STORY);
      expect(defaults.content).to.equal(reference.content);
      expect(defaults.response_metadata.reasoners).to.deep.equal([{ name: 'cipher-r', weight: 0.3, mode: 'logits' }, { name: 'math-r', weight: 0.5, mode: 'logits' }]);
      const schedule = [{ until: 4, weight: 4 }, { weight: 0 }];
      const scheduled = await model.withConfig({ reasoners: [{ name: 'math-r', weight: schedule }] }).invoke(STORY);
      expect(scheduled.response_metadata.reasoners).to.deep.equal([{ name: 'math-r', weight: schedule, mode: 'logits' }]);
    });

    it('carries sampling settings: a seed reproduces a sampled reply, maxTokens bounds it', async () => {
      const sampled = { temperature: 1.2, topK: 40, topP: 0.95, minP: 0.01, repetitionPenalty: 1.1, maxTokens: 12 };
      const a = await model.withConfig({ ...sampled, seed: 7 }).invoke(STORY);
      const b = await model.withConfig({ ...sampled, seed: 7 }).invoke(STORY);
      const c = await model.withConfig({ ...sampled, seed: 8 }).invoke(STORY);
      expect(a.content).to.equal(b.content);
      expect(a.content).to.not.equal(c.content);
      expect(a.usage_metadata!.output_tokens).to.be.at.most(12);
    });

    it("carries OpenAI's logit bias and penalties: +100 on one token makes every token it, a bad token id is refused", async () => {
      const plain = await model.withConfig({ maxTokens: 8 }).invoke(STORY);
      const forced = await model.withConfig({ maxTokens: 8, logitBias: { '300': 100 } }).invoke(STORY);
      const again = await model.withConfig({ maxTokens: 8, logitBias: { '301': 100 } }).invoke(STORY);
      expect(forced.content).to.not.equal(plain.content);
      expect(again.content).to.not.equal(forced.content);
      expect(forced.usage_metadata!.output_tokens).to.equal(8);
      const penalized = await model.withConfig({ maxTokens: 40, frequencyPenalty: 2, presencePenalty: 1 }).invoke(STORY);
      expect(penalized.content).to.not.equal((await model.withConfig({ maxTokens: 40 }).invoke(STORY)).content);
      const bad = await model.invoke(STORY, { logitBias: { x: 1 } }).catch((e: Error) => e);
      expect(bad).to.be.instanceOf(ReasonerOptionsError);
      const outside = await model.invoke(STORY, { logitBias: { '99999': 1 } }).catch((e: Error) => e);
      expect((outside as Error).message).to.match(/logitBias names token 99999, outside the model's vocabulary/);
    });

    it('refuses unknown reasoners and invalid settings clearly, before a token is generated', async () => {
      const unknown = await model.withConfig({ reasoners: [{ name: 'poetry-r' }] }).invoke(STORY).catch((e: Error) => e);
      expect(unknown).to.be.instanceOf(UnknownReasonerError);
      expect((unknown as Error).message).to.match(/"poetry-r".*loaded: math-r, cipher-r/);
      const invalid = await model.invoke(STORY, { temperature: -1, topP: 2 }).catch((e: Error) => e);
      expect(invalid).to.be.instanceOf(ReasonerOptionsError);
      expect((invalid as ReasonerOptionsError).issues.map((i) => i.path)).to.deep.equal(['temperature', 'topP']);
      const twice = await model.invoke(STORY, { reasoners: [{ name: 'math-r' }, { name: 'math-r', weight: 2 }] }).catch((e: Error) => e);
      expect((twice as Error).message).to.match(/reasoners\[1\]\.name: "math-r" is named twice/);
      const badSchedule = await model.invoke(STORY, { reasoners: [{ name: 'math-r', weight: [{ until: 5, weight: 1 }] }] }).catch((e: Error) => e);
      expect((badSchedule as Error).message).to.match(/reasoners\[0\]\.weight\[0\]\.until: the last segment/);
    });

    it('validates its creation options, every problem at once', async () => {
      const err = await ChatReasoner.create({
        backbone: '',
        dtype: 'fp8' as 'fp32',
        reasoners: [{ module: mathR, weight: Number.NaN, dtype: 'q3' as 'q4' }],
        placement: 'lane' as 'lanes',
        maxTokens: 0,
        cacheDir,
      }).catch((e: Error) => e);
      expect(err).to.be.instanceOf(ReasonerOptionsError);
      expect((err as ReasonerOptionsError).issues.map((i) => i.path)).to.deep.equal([
        'backbone',
        'dtype',
        'reasoners[0].weight',
        'reasoners[0].dtype',
        'placement',
        'maxTokens',
      ]);
      expect((err as Error).message).to.match(/^ChatReasoner\.create: backbone: /);
    });

    it("refuses options that are neither its own nor LangChain's, naming a snake_case spelling's own", async () => {
      // (from JavaScript no type check catches these; LangChain would drop them, and max_tokens left replies unbounded)
      const err = await ChatReasoner.create({ backbone: 'never-loaded', cacheDir, max_tokens: 5, model: 'x', verbose: false, tags: ['t'], stopSequences: ['x'], temprature: 1, timeout: -1 } as never).catch((e: Error) => e);
      expect(err).to.be.instanceOf(ReasonerOptionsError);
      expect((err as ReasonerOptionsError).issues).to.deep.equal([
        { path: 'timeout', message: 'Too small: expected number to be >0' },
        { path: 'max_tokens', message: 'unknown option (did you mean maxTokens?)' },
        { path: 'model', message: 'unknown option' },
        { path: 'stopSequences', message: 'unknown option (did you mean stop?)' },
        { path: 'temprature', message: 'unknown option (did you mean temperature?)' },
      ]);
      const llm = await ReasonerLLM.create({ backbone: 'never-loaded', cacheDir, top_p: 0.5 } as never).catch((e: Error) => e);
      expect((llm as ReasonerOptionsError).issues).to.deep.equal([{ path: 'top_p', message: 'unknown option (did you mean topP?)' }]);
    });
  });

  describe('chains and identity', () => {
    it('runs in an LCEL chain: prompt template, model, output parser, streamed', async () => {
      const prompt = ChatPromptTemplate.fromMessages([
        ['system', 'You tell stories.'],
        ['human', 'Tell me about {hero}'],
      ]);
      const chain = prompt.pipe(model).pipe(new StringOutputParser());
      const text = await chain.invoke({ hero: 'a cat' });
      const direct = await model.invoke([new SystemMessage('You tell stories.'), new HumanMessage('Tell me about a cat')]);
      expect(text).to.equal(direct.content);
      const pieces = await collect(await chain.stream({ hero: 'a cat' }));
      expect(pieces.length).to.be.greaterThan(2);
      expect(pieces.join('')).to.equal(text);
    });

    it('serialises its identifying params and reports per-call settings to tracers', async () => {
      expect(JSON.parse(JSON.stringify(model.serialize()))).to.deep.equal({
        model_name: 'stories-chat',
        backbone: storiesChat,
        reasoners: [
          // (each by the graph loaded)
          { name: 'math-r', module: `${mathR}/model.onnx`, weight: 0.5 },
          { name: 'cipher-r', module: `${cipherR}/model.onnx`, weight: 0.3 },
        ],
        mode: 'logits',
        device: 'cpu',
        maxTokens: MAX,
        _type: 'reasonplug',
        _model: 'base_chat_model',
      });
      const recorder = new Recorder();
      await model.withConfig({ reasoners: [{ name: 'cipher-r', weight: 2 }] }).invoke('Hi', { callbacks: [recorder], maxTokens: 2, stop: ['\n'] });
      expect(recorder.start?.extraParams?.invocation_params).to.deep.equal({
        model_name: 'stories-chat',
        maxTokens: 2,
        stop: ['\n'],
        reasoners: [{ name: 'cipher-r', weight: 2 }],
      });
      expect(recorder.start?.metadata).to.deep.include({
        ls_provider: 'reasonplug',
        ls_model_name: 'stories-chat',
        ls_model_type: 'chat',
        ls_temperature: 0,
        ls_max_tokens: 2,
        ls_stop: ['\n'],
      });
      // No stop set: the key is still there, as BaseChatModel's own getLsParams gives it.
      const unstopped = model.getLsParams({} as never);
      expect(unstopped).to.have.property('ls_stop', undefined);
      expect(unstopped).to.include({ ls_provider: 'reasonplug', ls_max_tokens: MAX });
    });
  });

  describe('chat templates and tools', () => {
    it('says clearly when the backbone has no chat template, and takes one given at creation', async () => {
      const bare = await storiesModule();
      const err = await ChatReasoner.create({ backbone: bare, cacheDir }).catch((e: Error) => e);
      expect(err).to.be.instanceOf(ChatTemplateError);
      expect((err as Error).message).to.match(/stories260k has no chat template.*create\(\{ chatTemplate \}\)/);
      const given = await ChatReasoner.create({
        backbone: bare,
        cacheDir,
        maxTokens: 20,
        chatTemplate: '{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}',
      });
      try {
        // The real TinyStories model continues its prompt with the story it is known for.
        expect((await given.invoke('Once upon a time')).content).to.match(/^, there was a little girl named Lily\./);
      } finally {
        await given.dispose();
      }
      // A template that does not write an AI message as given cannot have it continued.
      const shouting = await ChatReasoner.create({ backbone: bare, cacheDir, chatTemplate: '{% for m in messages %}{{ m.content | upper }}{% endfor %}' });
      try {
        const refused = await shouting.invoke([new HumanMessage('Once upon a time'), new AIMessage('there was')]).catch((e: Error) => e);
        expect(refused).to.be.instanceOf(ChatTemplateError);
        expect((refused as Error).message).to.match(/does not write the last AI message as given/);
      } finally {
        await shouting.dispose();
      }
    });

    it('renders a conversation with tool calls and tool results through the template', async () => {
      const history = [
        new HumanMessage('Add 2 and 3'),
        new AIMessage({ content: '', tool_calls: [{ id: 'c1', name: 'add', args: { a: 2, b: 3 } }] }),
        new ToolMessage({ content: '5', tool_call_id: 'c1' }),
      ];
      const reply = await model.invoke(history, { maxTokens: 1 });
      const rendered =
        '<s><|user|>Add 2 and 3<|end|><|assistant|><tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call><|end|>' +
        '<|tool|>5<|end|><|assistant|>';
      expect(reply.usage_metadata!.input_tokens).to.equal(tokenizer.encode(rendered, false).length);
    });

    it("bindTools renders tools into the template, and the model's tool calls come back parsed, streamed or not", async () => {
      const question = [new HumanMessage('Add 2 and 3')];
      const withTools = await alone.bindTools([ADD_TOOL]).invoke(question, { maxTokens: 1 });
      const rendered = tokenizer.applyChatTemplate([{ role: 'user', content: 'Add 2 and 3' }], { tools: [ADD_TOOL] });
      expect(rendered).to.match(/^<s><\|tools\|>\[\{"type": "function", "function": \{"name": "add"/);
      const promptLength = withTools.usage_metadata!.input_tokens;
      expect(promptLength).to.equal(tokenizer.encode(rendered, false).length);

      // A reasoner that writes two tool calls at exactly this prompt length: what the model writes is parsed.
      const call = (a: number, b: number) => `<tool_call>{"name": "add", "arguments": {"a": ${a}, "b": ${b}}}</tool_call>`;
      const script = tokenizer.encode(` Sure.${call(2, 3)}\n${call(4, 5)}`, false);
      const scripted = await ChatReasoner.create({
        backbone: storiesChat,
        reasoners: [{ module: await scriptedReasoner('add-script-r', script, promptLength) }],
        cacheDir,
        maxTokens: 250,
      });
      try {
        const reply = await scripted.bindTools([ADD_TOOL]).invoke(question);
        expect(reply.text.trim()).to.equal('Sure.');
        const both = [{ name: 'add', args: { a: 2, b: 3 } }, { name: 'add', args: { a: 4, b: 5 } }];
        expect(reply.tool_calls!.map(({ name, args }) => ({ name, args }))).to.deep.equal(both);
        expect(reply.response_metadata.finish_reason).to.equal('tool_calls');
        // a plain reply that ends at end-of-sequence: 'stop', in OpenAI's words (the engine's 'eos')
        const plainLength = (await alone.invoke(question, { maxTokens: 1 })).usage_metadata!.input_tokens;
        const plainModel = await ChatReasoner.create({ backbone: storiesChat, reasoners: [{ module: await scriptedReasoner('plain-script-r', tokenizer.encode(' Sure.', false), plainLength) }], cacheDir, maxTokens: 50 });
        try {
          const text = await plainModel.invoke(question);
          expect(text.text.trim()).to.equal('Sure.');
          expect(text.response_metadata.finish_reason).to.equal('stop');
        } finally {
          await plainModel.dispose();
        }
        const chunks = await collect(await scripted.bindTools([ADD_TOOL]).stream(question));
        expect(chunks.some((c) => c.tool_call_chunks?.length)).to.equal(true);
        expect(joined(chunks).tool_calls!.map((c) => c.args)).to.deep.equal(both.map((c) => c.args));
        // Without parallel calls the reply ends after the first (the second is masked), as OpenAI's option says.
        const one = await scripted.bindTools([ADD_TOOL], { parallel_tool_calls: false }).invoke(question);
        expect(one.tool_calls!.map(({ name, args }) => ({ name, args }))).to.deep.equal(both.slice(0, 1));
        expect(one.response_metadata.finish_reason).to.equal('tool_calls');
        // The functionCalling pipeline forces a call of "add" (the script's free text is masked) and parses it.
        const sum = await scripted.withStructuredOutput(AddSchema, { name: 'add', method: 'functionCalling' }).invoke(question);
        expect(AddSchema.parse(sum)).to.deep.equal(sum);
      } finally {
        await scripted.dispose();
      }
    });

    it("tool_choice none shows the tools (as OpenAI's and the server's) and forbids calls: the reply is free text, not read for calls", async () => {
      const question = [new HumanMessage('Add 2 and 3')];
      const prompt = async (choice: string) => (await alone.bindTools([ADD_TOOL], { tool_choice: choice }).invoke(question, { maxTokens: 1 })).usage_metadata!.input_tokens;
      const promptLength = await prompt('auto');
      expect(await prompt('none')).to.equal(promptLength);
      expect(promptLength).to.be.greaterThan((await alone.invoke(question, { maxTokens: 1 })).usage_metadata!.input_tokens);
      expect(alone.invocationParams({ tools: [ADD_TOOL], tool_choice: 'none' } as never)).to.have.property('tools').with.length(1);
      // A reasoner that writes a call at the prompt length with the tools shown: under none it stays text.
      const call = '<tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call>';
      const scripted = await ChatReasoner.create({
        backbone: storiesChat,
        reasoners: [{ module: await scriptedReasoner('none-script-r', tokenizer.encode(` Sure.${call}`, false), promptLength) }],
        cacheDir,
        maxTokens: 100,
      });
      try {
        const reply = await scripted.bindTools([ADD_TOOL], { tool_choice: 'none' }).invoke(question);
        expect(reply.text).to.contain(call);
        expect(reply.tool_calls).to.deep.equal([]);
        expect(reply.response_metadata.finish_reason).to.equal('stop');
      } finally {
        await scripted.dispose();
      }
    });

    it("tools where the template renders none (Gemma's): described in the system message, the calls a JSON reply held to the tools' schemas", async () => {
      const gemma = await ChatReasoner.create({ backbone: await withChatTemplate(storiesChat, 'stories-gemma', GEMMA_TEMPLATE), cacheDir, maxTokens: 120 });
      try {
        const Small = z.object({ a: z.number().int().min(0).max(99), b: z.number().int().min(0).max(99) });
        const small = { type: 'function', function: { name: 'add', description: 'Add two integers', parameters: toJsonSchema(Small) } };
        const first = await gemma.bindTools([small], { tool_choice: 'any', parallel_tool_calls: false }).invoke([new SystemMessage('Use the tools.'), new HumanMessage('What is 2 + 2?')]);
        expect(first.tool_calls!.map((c) => c.name)).to.deep.equal(['add']);
        expect(Small.parse(first.tool_calls![0]!.args)).to.deep.equal(first.tool_calls![0]!.args);
        // The call and its result go back through the template, which takes neither a system message nor tool turns.
        const turns = [new SystemMessage('Use the tools.'), new HumanMessage('What is 2 + 2?'), new AIMessage({ content: '', tool_calls: first.tool_calls! }), new ToolMessage({ content: '4', tool_call_id: first.tool_calls![0]!.id! })];
        const next = await gemma.bindTools([small], { tool_choice: { type: 'function', function: { name: 'add' } } }).invoke(turns);
        expect(next.tool_calls!.map((c) => Small.parse(c.args) && c.name)).to.deep.equal(['add']);
        const named = await gemma.withStructuredOutput(Small, { name: 'add', method: 'functionCalling' }).invoke('What is 2 + 2?');
        expect(Small.parse(named)).to.deep.equal(named);
      } finally {
        await gemma.dispose();
      }
      // A marker syntax asked for is refused where the template cannot show tools.
      const plain = await ChatReasoner.create({ backbone: await withChatTemplate(storiesChat, 'stories-plain', PLAIN_TEMPLATE), cacheDir, toolCallSyntax: 'hermes' });
      try {
        expect(() => plain.bindTools([ADD_TOOL])).to.throw(ToolsNotSupportedError, /does not render tools.*generic/);
      } finally {
        await plain.dispose();
      }
    });

    it("invoke's reply lists its tool calls in contentBlocks, and as the content of outputVersion 'v1'", async () => {
      const forced = model.bindTools([ADD_TOOL], { tool_choice: 'add', parallel_tool_calls: false });
      const reply = await forced.invoke('x', { maxTokens: 120 });
      const [call] = reply.tool_calls!;
      expect(call?.name).to.equal('add');
      const toolCall = { type: 'tool_call', id: call!.id, name: 'add', args: call!.args };
      expect(reply.contentBlocks.filter((b) => b.type === 'tool_call')).to.deep.equal([toolCall]);
      const v1 = await forced.invoke('x', { maxTokens: 120, outputVersion: 'v1' });
      expect((v1.content as { type: string }[]).filter((b) => b.type === 'tool_call')).to.deep.equal([{ ...toolCall, id: v1.tool_calls![0]!.id }]);
      expect(v1.response_metadata.output_version).to.equal('v1');
    });

    it("takes its own outputVersion 'v1' reply with a tool call back in the next turn, the call rendered from tool_calls", async () => {
      const question = new HumanMessage('Add 2 and 3');
      const v1 = await alone.bindTools([ADD_TOOL], { tool_choice: 'add', parallel_tool_calls: false }).invoke([question], { maxTokens: 120, outputVersion: 'v1' });
      expect((v1.content as { type: string }[]).map((b) => b.type)).to.include('tool_call');
      const [call] = v1.tool_calls!;
      const result = new ToolMessage({ content: '5', tool_call_id: call!.id! });
      const next = await alone.bindTools([ADD_TOOL]).invoke([question, v1, result], { maxTokens: 1 });
      const rendered = tokenizer.applyChatTemplate(
        [
          { role: 'user', content: 'Add 2 and 3' },
          { role: 'assistant', content: v1.text, tool_calls: [{ id: call!.id, type: 'function', function: { name: 'add', arguments: call!.args } }] },
          { role: 'tool', content: '5', tool_call_id: call!.id },
        ],
        { tools: [ADD_TOOL] },
      );
      expect(rendered).to.include(`<|assistant|>${v1.text}<tool_call>{"name": "add", "arguments": `);
      expect(next.usage_metadata!.input_tokens).to.equal(tokenizer.encode(rendered, false).length);
    });

    it("renders an Anthropic-shaped history: tool_use blocks give the calls where tool_calls is empty, thinking blocks the thought", async () => {
      const THOUGHT_TEMPLATE =
        '{{ bos_token }}{% if tools %}<|tools|>{{ tools | tojson }}<|end|>{% endif %}{% for m in messages %}<|{{ m.role }}|>{% if m.reasoning_content %}[{{ m.reasoning_content }}]{% endif %}{{ m.content }}' +
        '{% for c in m.tool_calls or [] %}<tool_call>{{ c.function | tojson }}</tool_call>{% endfor %}<|end|>{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}';
      const thoughtful = await ChatReasoner.create({ backbone: await withChatTemplate(storiesChat, 'stories-thought', THOUGHT_TEMPLATE), cacheDir, maxTokens: 1 });
      try {
        const anthropic = new AIMessage({
          content: [
            { type: 'thinking', thinking: 'Two and three.', signature: 'sig' },
            { type: 'text', text: 'Let me add.' },
            { type: 'tool_use', id: 'toolu_1', name: 'add', input: { a: 2, b: 3 } },
          ],
        });
        const history = [new HumanMessage('Add 2 and 3'), anthropic, new ToolMessage({ content: '5', tool_call_id: 'toolu_1' })];
        const reply = await thoughtful.invoke(history);
        const rendered =
          '<s><|user|>Add 2 and 3<|end|><|assistant|>[Two and three.]Let me add.<tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call><|end|>' +
          '<|tool|>5<|end|><|assistant|>';
        expect(reply.usage_metadata!.input_tokens).to.equal(tokenizer.encode(rendered, false).length);
      } finally {
        await thoughtful.dispose();
      }
    });

    it('refuses tool choices it does not understand', async () => {
      const forced = await model.bindTools([ADD_TOOL], { tool_choice: 'any' }).invoke('x', { maxTokens: 120 });
      expect(forced.tool_calls!.map((c) => c.name)).to.deep.equal(['add']);
      const odd = await model.bindTools([ADD_TOOL], { tool_choice: { kind: 'odd' } as never }).invoke('x').catch((e: Error) => e);
      expect(odd).to.be.instanceOf(ToolsNotSupportedError);
      // A name that is no bound tool's, as a string or OpenAI's function object, is refused naming the bound tools.
      for (const choice of ['bogus', { type: 'function', function: { name: 'bogus' } }]) {
        const unbound = await model.bindTools([ADD_TOOL], { tool_choice: choice }).invoke('x', { maxTokens: 3 }).catch((e: Error) => e);
        expect(unbound, JSON.stringify(choice)).to.be.instanceOf(ToolsNotSupportedError);
        expect((unbound as Error).message).to.equal('tool_choice names "bogus", which is not a bound tool: name one of add, or use auto, required, any or none');
      }
    });
  });
});
