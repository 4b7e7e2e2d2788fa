/**
 * What a call's options reach: the repetition window (core's `repetitionWindow`, llama.cpp's `repeat_last_n`) gives
 * the engine's own text, as a model default or per call; a key that is neither LangChain's nor the model's is
 * refused by name rather than dropped, while LangChain's own keys (and a LangGraph node's config) pass.
 */
import { expect } from 'chai';
import { Engine } from '@reasonplug/core';
import { HumanMessage } from '@langchain/core/messages';
import { END, MessagesAnnotation, START, StateGraph } from '@langchain/langgraph';
import { ChatReasoner, ReasonerLLM, ReasonerOptionsError } from '../src/index.js';
import { PLAIN_TEMPLATE, cacheDir, storiesModule, withChatTemplate } from './support/modules.js';

const PROMPT = 'Once upon a time';
/** Sampled with a strong penalty, so that which tokens it looks at shows in the text. */
const SAMPLED = { maxTokens: 25, temperature: 1, seed: 5, minP: 0.3, repetitionPenalty: 1.8 };

describe('call options', function () {
  this.timeout(60_000);
  let engine: Engine;
  let llm: ReasonerLLM;
  let chat: ChatReasoner;

  before(async () => {
    const stories = await storiesModule();
    [engine, llm, chat] = await Promise.all([
      Engine.load({ model: stories, cacheDir }),
      ReasonerLLM.create({ backbone: stories, cacheDir }),
      ChatReasoner.create({ backbone: await withChatTemplate(stories, 'stories-call-options', PLAIN_TEMPLATE), cacheDir, maxTokens: 4 }),
    ]);
  });

  after(() => Promise.all([engine?.dispose(), llm?.dispose(), chat?.dispose()]));

  const engineText = async (window?: number) =>
    (await engine.generate({ prompt: PROMPT }, { ...SAMPLED, ...(window !== undefined ? { repetitionWindow: window } : {}) })).rows[0]!.text;

  it('repetitionWindow per call, in withConfig and as a default gives the engine text of that window', async () => {
    const [all, four, none] = [await engineText(), await engineText(4), await engineText(0)];
    // The window changes this text, so a window dropped on the way would show.
    expect(new Set([all, four, none]).size).to.equal(3);
    expect(await llm.invoke(PROMPT, SAMPLED)).to.equal(all);
    expect(await llm.invoke(PROMPT, { ...SAMPLED, repetitionWindow: 4 })).to.equal(four);
    expect(await llm.withConfig({ ...SAMPLED, repetitionWindow: 0 }).invoke(PROMPT)).to.equal(none);
    const windowed = await ReasonerLLM.create({ backbone: await storiesModule(), cacheDir, ...SAMPLED, repetitionWindow: 4 });
    try {
      expect(await windowed.invoke(PROMPT)).to.equal(four);
      expect(windowed._identifyingParams()).to.include({ repetitionWindow: 4 });
    } finally {
      await windowed.dispose();
    }
    const negative = await llm.invoke(PROMPT, { repetitionWindow: -1 }).catch((e: Error) => e);
    expect((negative as ReasonerOptionsError).issues.map((i) => i.path)).to.deep.equal(['repetitionWindow']);
  });

  it("refuses by name a per-call key that spells an option another way, and takes LangChain's own, a LangGraph node's config and keys it does not know", async () => {
    const llmErr = await llm.invoke(PROMPT, { repeat_last_n: 4, max_tokens: 3, temprature: 0.5 } as never).catch((e: Error) => e);
    expect(llmErr).to.be.instanceOf(ReasonerOptionsError);
    expect((llmErr as ReasonerOptionsError).issues).to.deep.equal([
      { path: 'repeat_last_n', message: 'unknown option (did you mean repetitionWindow?)' },
      { path: 'max_tokens', message: 'unknown option (did you mean maxTokens?)' },
      { path: 'temprature', message: 'unknown option (did you mean temperature?)' },
    ]);
    const chatErr = await chat.withConfig({ numPredict: 3, stopSequences: ['\n'] } as never).invoke('x').catch((e: Error) => e);
    expect((chatErr as ReasonerOptionsError).issues).to.deep.equal([
      { path: 'numPredict', message: 'unknown option (did you mean maxTokens?)' },
      { path: 'stopSequences', message: 'unknown option (did you mean stop?)' },
    ]);
    // A key no release of LangChain or LangGraph sent before (their config grows): passed on, not refused.
    expect(await llm.invoke(PROMPT, { maxTokens: 2, someFutureConfigKey: true, store: {} } as never)).to.be.a('string');
    const langchain = {
      tags: ['t'],
      metadata: { m: 1 },
      runName: 'run',
      configurable: { thread_id: '1' },
      recursionLimit: 5,
      maxConcurrency: 2,
      timeout: 30_000,
      signal: new AbortController().signal,
      stop: ['\n\n'],
      ls_structured_output_format: { kwargs: { method: 'jsonSchema' } },
    };
    expect(await llm.invoke(PROMPT, { ...langchain, maxTokens: 4 })).to.be.a('string');
    const reply = await chat.invoke([new HumanMessage('x')], { ...langchain, tool_choice: 'none', tools: [], parallel_tool_calls: true, outputVersion: 'v0', chatTemplateKwargs: {} });
    expect(reply.response_metadata.finish_reason).to.be.oneOf(['stop', 'length']);
    // generate() adds its promptIndex to each conversation's options.
    expect((await chat.generate([[new HumanMessage('x')], [new HumanMessage('y')]])).generations).to.have.length(2);
    const events: string[] = [];
    for await (const e of chat.streamEvents('x', { version: 'v2' })) events.push(e.event);
    expect(events).to.include('on_chat_model_end');
    // A node that passes its config on to the model, as LangGraph's guides write it: the config carries LangGraph's
    // runtime (writer, interrupt, executionInfo, …).
    const graph = new StateGraph(MessagesAnnotation)
      .addNode('model', async (state, config) => ({ messages: [await chat.invoke(state.messages, config)] }))
      .addEdge(START, 'model')
      .addEdge('model', END)
      .compile();
    const out = await graph.invoke({ messages: [new HumanMessage('x')] }, { configurable: { thread_id: '1' } });
    expect(out.messages).to.have.length(2);
  });
});
