/**
 * A call refused for its options (invalid settings, an unknown reasoner, tools its template cannot show) fails inside
 * its run, as any other failure does: callbacks see the start and `handleLLMError` (so tracers record it), tracing
 * reports the settings as given, and the caller gets the same typed error.
 */
import { expect } from 'chai';
import { BaseCallbackHandler } from '@langchain/core/callbacks/base';
import { ChatReasoner, ReasonerLLM, ReasonerOptionsError, ToolsNotSupportedError, UnknownReasonerError } from '../src/index.js';
import { PLAIN_TEMPLATE, cacheDir, storiesModule, withChatTemplate } from './support/modules.js';

/** Records a run's start (with its invocation params) and its error. */
class Runs extends BaseCallbackHandler {
  name = 'runs';
  override awaitHandlers = true;
  readonly events: string[] = [];
  params: Record<string, unknown> | undefined;
  error: Error | undefined;

  private started(extra?: Record<string, unknown>): void {
    this.events.push('start');
    this.params = extra?.invocation_params as Record<string, unknown>;
  }

  override handleChatModelStart(_llm: unknown, _messages: unknown, _runId: string, _parent?: string, extra?: Record<string, unknown>): void {
    this.started(extra);
  }

  override handleLLMStart(_llm: unknown, _prompts: unknown, _runId: string, _parent?: string, extra?: Record<string, unknown>): void {
    this.started(extra);
  }

  override handleLLMError(err: Error): void {
    this.events.push('error');
    this.error = err;
  }

  override handleLLMEnd(): void {
    this.events.push('end');
  }
}

async function drain(stream: AsyncIterable<unknown>): Promise<void> {
  for await (const _ of stream);
}

describe('call options refused inside the run', function () {
  this.timeout(60_000);
  let chat: ChatReasoner;
  let llm: ReasonerLLM;
  let plain: ChatReasoner;

  before(async () => {
    const stories = await storiesModule();
    const backbone = await withChatTemplate(stories, 'stories-plain', PLAIN_TEMPLATE);
    [chat, llm, plain] = await Promise.all([
      ChatReasoner.create({ backbone, cacheDir, maxTokens: 4 }),
      ReasonerLLM.create({ backbone: stories, cacheDir, maxTokens: 4 }),
      // a syntax whose markers this template cannot show
      ChatReasoner.create({ backbone, cacheDir, maxTokens: 4, toolCallSyntax: 'hermes' }),
    ]);
  });

  after(() => Promise.all([chat?.dispose(), llm?.dispose(), plain?.dispose()]));

  const tool = { type: 'function', function: { name: 'add', description: 'Add', parameters: { type: 'object', properties: {} } } };
  const cases: [string, (runs: Runs) => Promise<unknown>, new (...args: never[]) => Error, Record<string, unknown>][] = [
    ['chat invoke, temperature -1', (runs) => chat.invoke('x', { callbacks: [runs], temperature: -1 }), ReasonerOptionsError, { temperature: -1 }],
    ['chat invoke, an unknown reasoner', (runs) => chat.invoke('x', { callbacks: [runs], reasoners: [{ name: 'nope' }] }), UnknownReasonerError, { reasoners: [{ name: 'nope' }] }],
    ['chat stream, topP 5', async (runs) => drain(await chat.stream('x', { callbacks: [runs], topP: 5 })), ReasonerOptionsError, { topP: 5 }],
    ['chat invoke, tools the template cannot show', (runs) => plain.invoke('x', { callbacks: [runs], tools: [tool] }), ToolsNotSupportedError, { tools: [tool] }],
    ['llm invoke, topK -1', (runs) => llm.invoke('x', { callbacks: [runs], topK: -1 }), ReasonerOptionsError, { topK: -1 }],
    ['llm stream, an unknown reasoner', async (runs) => drain(await llm.stream('x', { callbacks: [runs], reasoners: [{ name: 'nope' }] })), UnknownReasonerError, { reasoners: [{ name: 'nope' }] }],
  ];

  for (const [how, call, type, traced] of cases) {
    it(`${how}: start, handleLLMError, and the same typed error to the caller`, async () => {
      const runs = new Runs();
      const err = await call(runs).then(
        () => undefined,
        (e: Error) => e,
      );
      expect(err).to.be.instanceOf(type);
      expect(runs.events).to.deep.equal(['start', 'error']);
      expect(runs.error).to.equal(err);
      expect(runs.params).to.deep.include(traced);
    });
  }

  it('valid options are traced as the call runs with them, over the defaults', async () => {
    const runs = new Runs();
    await chat.invoke('x', { callbacks: [runs], temperature: 0.5, seed: 3 });
    expect(runs.events).to.deep.equal(['start', 'end']);
    expect(runs.params).to.deep.equal({ model_name: 'stories-plain', maxTokens: 4, temperature: 0.5, seed: 3, reasoners: [] });
  });
});
