/**
 * `ChatReasoner` replies whose tool calls the token limit (`maxTokens`) cut off, as ChatOpenAI gives them: the calls
 * written whole as `tool_calls`, the one being written as an `invalid_tool_calls` entry with its arguments so far, no
 * protocol text (the generic reply's JSON, `<tool_call>` tags) as content, finish reason `length`; and
 * `withStructuredOutput`'s forced call, cut, fails to parse as a cut JSON answer does. A scripted backbone writes
 * Hermes calls cut where a test says; the trained stories260K writes generic calls until its limit.
 */
import { expect } from 'chai';
import type { AIMessageChunk } from '@langchain/core/messages';
import { OutputParserException } from '@langchain/core/output_parsers';
import { tool } from '@langchain/core/tools';
import { convertToOpenAITool } from '@langchain/core/utils/function_calling';
import { z } from 'zod';
import { ChatReasoner } from '../src/index.js';
import { cacheDir, storiesModule, TOOLS_TEMPLATE, withChatTemplate } from './support/modules.js';
import { scriptedChatModule } from '../../core/test/support/modules.js';
import { TextTokenizer } from '@reasonplug/core';

const QUESTION = 'What are two and two, and three and four?';
const add = tool(async ({ a, b }) => String(a + b), { name: 'add', description: 'Add two integers', schema: z.object({ a: z.number().int(), b: z.number().int() }) });
const CALLS = '<tool_call>{"name": "add", "arguments": {"a": 2, "b": 2}}</tool_call>\n<tool_call>{"name": "add", "arguments": {"a": 3, "b": 4}}</tool_call>';

describe('ChatReasoner: tool calls cut off by the token limit', function () {
  this.timeout(120_000);
  let dir: string;
  /** maxTokens that stops the reply: inside the second call's arguments; right after the first call and `\n<`. */
  let inArguments: number;
  let afterCall: number;
  const models: ChatReasoner[] = [];
  const create = async (options: Parameters<typeof ChatReasoner.create>[0]) => {
    const model = await ChatReasoner.create(options);
    models.push(model);
    return model;
  };

  before(async () => {
    const scripted = await scriptedChatModule('hermes-cut-plugin', TOOLS_TEMPLATE, [{ role: 'user', content: QUESTION }], CALLS, { tools: [convertToOpenAITool(add)] });
    dir = scripted.dir;
    const tokenizer = await TextTokenizer.fromDirectory(dir);
    const upTo = (k: number) => tokenizer.decode(scripted.replyIds.slice(0, k));
    inArguments = scripted.replyIds.findIndex((_, k) => upTo(k).includes('"a": 3'));
    afterCall = scripted.replyIds.findIndex((_, k) => upTo(k).endsWith('</tool_call>\n<'));
    expect(inArguments).to.be.greaterThan(0);
    expect(afterCall).to.be.greaterThan(0);
  });
  after(async () => {
    await Promise.all(models.map((m) => m.dispose()));
  });

  it('gives the whole calls as tool_calls and the cut one as an invalid call with its partial arguments, in invoke and stream', async () => {
    const model = await create({ backbone: dir, cacheDir, maxTokens: inArguments });
    const reply = await model.bindTools([add]).invoke(QUESTION);
    expect(reply.response_metadata.finish_reason).to.equal('length');
    expect(reply.content).to.equal('');
    expect(reply.tool_calls!.map((c) => [c.name, c.args])).to.deep.equal([['add', { a: 2, b: 2 }]]);
    expect(reply.invalid_tool_calls!.map((c) => [c.name, c.args])).to.deep.equal([['add', '{"a": 3']]);
    expect(reply.invalid_tool_calls![0]!.error).to.be.a('string');

    const chunks: AIMessageChunk[] = [];
    for await (const c of await model.bindTools([add]).stream(QUESTION)) chunks.push(c);
    const joined = chunks.reduce((a, b) => a.concat(b));
    expect(joined.content).to.equal('');
    expect(joined.tool_calls!.map((c) => c.args)).to.deep.equal([{ a: 2, b: 2 }]);
    expect(joined.invalid_tool_calls!.map((c) => c.args)).to.deep.equal(['{"a": 3']);
  });

  it('a cut in the opening of the next call leaves no tag in the content', async () => {
    const model = await create({ backbone: dir, cacheDir, maxTokens: afterCall });
    const reply = await model.bindTools([add]).invoke(QUESTION);
    expect(reply.content).to.equal('');
    expect(reply.tool_calls!.map((c) => c.args)).to.deep.equal([{ a: 2, b: 2 }]);
    expect(reply.invalid_tool_calls).to.deep.equal([]);
  });

  it('a reply that ends by itself gives all its calls, as before', async () => {
    const model = await create({ backbone: dir, cacheDir, maxTokens: 200 });
    const reply = await model.bindTools([add]).invoke(QUESTION);
    expect(reply.response_metadata.finish_reason).to.equal('tool_calls');
    expect(reply.tool_calls!.map((c) => c.args)).to.deep.equal([
      { a: 2, b: 2 },
      { a: 3, b: 4 },
    ]);
  });

  it('a trained model in the generic syntax: its whole calls, the cut one invalid, none of the reply object as content', async () => {
    const generic = await withChatTemplate(await storiesModule(), 'stories-cut-generic', '{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}');
    const model = await create({ backbone: generic, cacheDir, temperature: 0, maxTokens: 150 });
    const weather = tool(async ({ city }) => `sunny in ${city}`, { name: 'get_weather', description: 'weather of a city', schema: z.object({ city: z.string().max(12) }) });
    const reply = await model.bindTools([weather], { tool_choice: 'required' }).invoke('What is the weather in Paris?');
    expect(reply.response_metadata.finish_reason).to.equal('length');
    expect(reply.content).to.equal('');
    expect(reply.tool_calls!.length).to.be.greaterThan(0);
    expect(reply.tool_calls!.map((c) => [c.name, typeof c.args.city])).to.deep.equal(reply.tool_calls!.map(() => ['get_weather', 'string']));
    expect(reply.invalid_tool_calls!.map((c) => c.name)).to.deep.equal(['get_weather']);

    // withStructuredOutput's forced call, cut: a parse error (as a cut JSON answer gives), not undefined.
    const Pet = z.object({ name: z.string(), age: z.number().int() });
    const short = await create({ backbone: generic, cacheDir, temperature: 0, maxTokens: 40 });
    const raw = await short.withStructuredOutput(Pet, { method: 'functionCalling', includeRaw: true }).invoke('A dog');
    expect(raw.parsed).to.equal(null);
    expect((raw.raw.response_metadata as { finish_reason?: string }).finish_reason).to.equal('length');
    let error: unknown;
    await short
      .withStructuredOutput(Pet, { method: 'functionCalling' })
      .invoke('A dog')
      .catch((e: unknown) => (error = e));
    expect(error).to.be.instanceOf(OutputParserException);
  });
});
