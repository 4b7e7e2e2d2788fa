/**
 * What LangChain asks of a model besides generating: `getNumTokens` (which `trimMessages` counts with) in the
 * backbone's own vocabulary, offline, instead of LangChain's fallback (a GPT-2 tiktoken table fetched from the
 * network, else length / 4 with a warning); and `profile` (which LangChain's agents read): context, tools,
 * structured output, reasoning output.
 */
import { expect } from 'chai';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AIMessage, HumanMessage, SystemMessage, trimMessages } from '@langchain/core/messages';
import { TextTokenizer } from '@reasonplug/core';
import { ChatReasoner, ReasonerLLM } from '../src/index.js';
import { models as shared } from '../../../test/support/paths.js';
import { PLAIN_TEMPLATE, TOOLS_TEMPLATE, cacheDir, storiesModule, withChatTemplate } from './support/modules.js';
import { HARMONY_TEMPLATE, THINKING_TEMPLATE } from '../../core/test/support/chat-templates.js';

const TEXTS = ['Once upon a time, there was a little dog named Max.', 'He liked to play in the park with his ball.', '', 'Ünïcödé and 12345 digits!'];

describe('token counts and model profiles', function () {
  this.timeout(60_000);
  let tokenizer: TextTokenizer;
  const models: { dispose(): Promise<void> }[] = [];
  const track = <M extends { dispose(): Promise<void> }>(m: M) => (models.push(m), m);
  let warnings: unknown[][];
  const warn = console.warn;

  before(async () => {
    tokenizer = await TextTokenizer.fromDirectory(await storiesModule());
  });
  beforeEach(() => {
    warnings = [];
    console.warn = (...args: unknown[]) => void warnings.push(args);
  });
  afterEach(() => {
    console.warn = warn;
  });
  after(async () => {
    await Promise.all(models.map((m) => m.dispose()));
  });

  it("getNumTokens counts in the backbone's vocabulary, with no warning (LangChain's fallback warns offline)", async () => {
    const llm = track(await ReasonerLLM.create({ backbone: await storiesModule(), cacheDir }));
    const chat = track(await ChatReasoner.create({ backbone: await withChatTemplate(await storiesModule(), 'count-chat', PLAIN_TEMPLATE), cacheDir }));
    for (const text of TEXTS) {
      const want = tokenizer.encode(text, false).length;
      expect(await llm.getNumTokens(text), text).to.equal(want);
      expect(await chat.getNumTokens(text), text).to.equal(want);
    }
    // Text blocks count by their text.
    expect(await chat.getNumTokens([{ type: 'text', text: TEXTS[0]! }, { type: 'text', text: TEXTS[1]! }])).to.equal(tokenizer.encode(TEXTS[0]! + TEXTS[1]!, false).length);
    expect(warnings).to.deep.equal([]);
  });

  it('trimMessages with the model as token counter keeps the last messages that fit, counted exactly', async () => {
    const chat = track(await ChatReasoner.create({ backbone: await withChatTemplate(await storiesModule(), 'trim-chat', PLAIN_TEMPLATE), cacheDir }));
    const history = [new SystemMessage('You tell stories.'), new HumanMessage(TEXTS[0]!), new AIMessage(TEXTS[1]!), new HumanMessage(TEXTS[3]!)];
    const counts = history.map((m) => tokenizer.encode(m.text, false).length);
    // Room for the system message and the last two, not one token more.
    const maxTokens = counts[0]! + counts[2]! + counts[3]!;
    const kept = await trimMessages(history, { maxTokens, tokenCounter: chat, strategy: 'last', includeSystem: true });
    expect(kept.map((m) => m.text)).to.deep.equal([history[0]!.text, history[2]!.text, history[3]!.text]);
    const fewer = await trimMessages(history, { maxTokens: maxTokens - 1, tokenCounter: chat, strategy: 'last', includeSystem: true });
    expect(fewer.map((m) => m.text)).to.deep.equal([history[0]!.text, history[3]!.text]);
    expect(warnings).to.deep.equal([]);
  });

  it('profile: the context as maxInputTokens, tool calling (in the generic syntax where the template renders no tools), reasoning output where it names thought tags or is harmony', async () => {
    const llm = track(await ReasonerLLM.create({ backbone: await storiesModule(), cacheDir }));
    const context = llm.profile.maxInputTokens;
    expect(context).to.be.a('number').that.is.greaterThan(0);
    expect(llm.profile).to.deep.include({ maxOutputTokens: context, structuredOutput: true, imageInputs: false });
    expect(llm.profile).to.not.have.property('toolCalling');
    const profileOf = async (name: string, template: string, toolCallSyntax?: 'hermes') =>
      track(await ChatReasoner.create({ backbone: await withChatTemplate(await storiesModule(), name, template), cacheDir, ...(toolCallSyntax ? { toolCallSyntax } : {}) })).profile;
    expect(await profileOf('profile-tools', TOOLS_TEMPLATE)).to.deep.include({ maxInputTokens: context, toolCalling: true, toolChoice: true, structuredOutput: true, reasoningOutput: false });
    expect(await profileOf('profile-plain', PLAIN_TEMPLATE)).to.deep.include({ toolCalling: true, toolChoice: true, reasoningOutput: false });
    // A marker syntax asked for where the template cannot show tools: no tool calling.
    expect(await profileOf('profile-plain-hermes', PLAIN_TEMPLATE, 'hermes')).to.deep.include({ toolCalling: false, toolChoice: false });
    expect(await profileOf('profile-thinking', THINKING_TEMPLATE)).to.deep.include({ toolCalling: true, reasoningOutput: true });
    // gpt-oss's harmony format thinks in its analysis channel, with no tags to name
    expect(await profileOf('profile-harmony', HARMONY_TEMPLATE)).to.deep.include({ reasoningOutput: true });
    // contextLength lowers the backbone's context, for the engine and the agents reading the profile.
    const short = track(await ReasonerLLM.create({ backbone: await storiesModule(), cacheDir, contextLength: 16 }));
    expect(short.profile).to.deep.include({ maxInputTokens: 16, maxOutputTokens: 16 });
    const { tokenUsage } = (await short.generate(['Once upon a time'], { maxTokens: 100 })).llmOutput as { tokenUsage: { promptTokens: number; completionTokens: number } };
    // (a story this short might end earlier; it does not here)
    expect(tokenUsage.promptTokens + tokenUsage.completionTokens).to.equal(16 + 1);
  });

  it('a .gguf backbone (keys and values in fp16, as llama.cpp keeps them) writes what its conversion with ggufKvCache float32 writes', async () => {
    const [half, full] = [
      track(await ReasonerLLM.create({ backbone: shared.stories260K, cacheDir, maxTokens: 24 })),
      track(await ReasonerLLM.create({ backbone: shared.stories260K, cacheDir, ggufKvCache: 'float32', maxTokens: 24 })),
    ];
    const [a, b] = await Promise.all([half, full].map((llm) => llm.invoke('Once upon a time')));
    expect(a).to.equal(b);
    expect(a!.length).to.be.greaterThan(40);
  });

  it("reports a .gguf backbone's conversion on first use through onProgress, file by file, to its end", async () => {
    const events: { file: string; bytes: number; size: number; done: boolean }[] = [];
    const fresh = await mkdtemp(join(tmpdir(), 'reasonplug-progress-'));
    try {
      track(await ReasonerLLM.create({ backbone: shared.stories260K, cacheDir, registry: { cacheDir: fresh }, onProgress: (p) => events.push(p), maxTokens: 4 }));
      const size = (await stat(shared.stories260K)).size;
      expect(events.map((e) => e.file)).to.include('stories260K.gguf');
      expect(events.at(-1)).to.deep.include({ file: 'stories260K.gguf', bytes: size, size, done: true });
      const refused = await ReasonerLLM.create({ backbone: shared.stories260K, onProgress: 'every tenth' as never }).then(
        () => undefined,
        (err: unknown) => err as Error,
      );
      expect(refused?.message).to.match(/onProgress.*expected a function/);
    } finally {
      await rm(fresh, { recursive: true, force: true });
    }
  });
});
