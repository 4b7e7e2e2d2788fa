/**
 * `ChatReasoner.bindTools` on a Llama 3-style template: the calls are constrained and read in the syntax the
 * template teaches (one JSON object with "parameters"), not as `<tool_call>` blocks; likewise Mistral's and DeepSeek's.
 * The backbone is scripted to answer with a call.
 */
import { expect } from 'chai';
import { AIMessage, AIMessageChunk, HumanMessage, ToolMessage } from '@langchain/core/messages';
import { tool } from '@langchain/core/tools';
import { convertToOpenAITool } from '@langchain/core/utils/function_calling';
import { z } from 'zod';
import { ChatReasoner } from '../src/index.js';
import { cacheDir } from './support/modules.js';
import { scriptedChatModule } from '../../core/test/support/modules.js';
import { DEEPSEEK_TOOLS_TEMPLATE, LLAMA3_TOOLS_TEMPLATE, MISTRAL_TOOLS_TEMPLATE, QWEN3_CODER_TEMPLATE } from '../../core/test/support/chat-templates.js';
import { TextTokenizer } from '@reasonplug/core';

const QUESTION = 'What are two and two?';

describe('ChatReasoner: tool calls in the syntax of the template', function () {
  this.timeout(60_000);
  let model: ChatReasoner;
  let forcedHermes: ChatReasoner;
  const add = tool(async ({ a, b }) => String(a + b), { name: 'add', description: 'Add two integers', schema: z.object({ a: z.number().int(), b: z.number().int() }) });

  before(async () => {
    // Scripted for the prompt with the tool rendered as bindTools renders it.
    const shown = [convertToOpenAITool(add)];
    const { dir } = await scriptedChatModule('llama3ish-plugin', LLAMA3_TOOLS_TEMPLATE, [{ role: 'user', content: QUESTION }], '{"name": "add", "parameters": {"a": 2, "b": 2}}', { tools: shown });
    [model, forcedHermes] = await Promise.all([
      ChatReasoner.create({ backbone: dir, cacheDir, maxTokens: 60 }),
      ChatReasoner.create({ backbone: dir, cacheDir, maxTokens: 60, toolCallSyntax: 'hermes' }),
    ]);
  });
  after(async () => {
    await Promise.all([model?.dispose(), forcedHermes?.dispose()]);
  });

  it('bindTools (auto) gives the JSON call as tool_calls, in invoke and stream', async () => {
    const reply = await model.bindTools([add]).invoke([new HumanMessage(QUESTION)]);
    expect(reply.tool_calls?.map((c) => [c.name, c.args])).to.deep.equal([['add', { a: 2, b: 2 }]]);
    expect(reply.content).to.equal('');
    const chunks: AIMessageChunk[] = [];
    for await (const c of await model.bindTools([add]).stream([new HumanMessage(QUESTION)])) chunks.push(c);
    expect(chunks.reduce((a, b) => a.concat(b)).tool_calls?.map((c) => c.name)).to.deep.equal(['add']);
  });

  it('toolCallSyntax overrides what the template suggests: as hermes, the same JSON is free text, no call', async () => {
    const reply = await forcedHermes.bindTools([add]).invoke([new HumanMessage(QUESTION)]);
    expect(reply.tool_calls).to.deep.equal([]);
    expect(String(reply.content).trim()).to.equal('{"name": "add", "parameters": {"a": 2, "b": 2}}');
  });
});

describe('ChatReasoner: Mistral tool calls after the [TOOL_CALLS] token', function () {
  this.timeout(60_000);
  let model: ChatReasoner;
  const add = tool(async ({ a, b }) => String(a + b), { name: 'add', description: 'Add two integers', schema: z.object({ a: z.number().int(), b: z.number().int() }) });
  const question = 'What are two and two, and three and four?';

  before(async () => {
    // A vocabulary with [TOOL_CALLS] as its special token, scripted for the prompt bindTools renders.
    const reply = '[TOOL_CALLS] [{"name": "add", "arguments": {"a": 2, "b": 2}}, {"name": "add", "arguments": {"a": 3, "b": 4}}]';
    const { dir } = await scriptedChatModule('mistralish-plugin', MISTRAL_TOOLS_TEMPLATE, [{ role: 'user', content: question }], reply, { tools: [convertToOpenAITool(add)], specialTokens: ['[TOOL_CALLS]'] });
    model = await ChatReasoner.create({ backbone: dir, cacheDir, maxTokens: 160 });
  });
  after(async () => {
    await model?.dispose();
  });

  it('bindTools gives both calls with ids the template takes back, and the next turn renders them with their results', async () => {
    const reply = await model.bindTools([add]).invoke([new HumanMessage(question)]);
    expect(reply.tool_calls?.map((c) => [c.name, c.args])).to.deep.equal([['add', { a: 2, b: 2 }], ['add', { a: 3, b: 4 }]]);
    expect(reply.content).to.equal('');
    for (const c of reply.tool_calls!) expect(c.id).to.match(/^[a-zA-Z0-9]{9}$/);
    const chunks: AIMessageChunk[] = [];
    for await (const c of await model.bindTools([add]).stream([new HumanMessage(question)])) chunks.push(c);
    expect(chunks.reduce((a, b) => a.concat(b)).tool_calls?.map((c) => c.args)).to.deep.equal([{ a: 2, b: 2 }, { a: 3, b: 4 }]);
    // The template refuses other ids: the turn after the calls renders only with these.
    const results = await Promise.all(reply.tool_calls!.map(async (c) => new ToolMessage({ content: String(await add.invoke(c.args as { a: number; b: number })), tool_call_id: c.id! })));
    const next = await model.bindTools([add]).invoke([new HumanMessage(question), new AIMessage({ content: '', tool_calls: reply.tool_calls! }), ...results], { maxTokens: 2 });
    expect(next.usage_metadata?.input_tokens).to.be.greaterThan(40);
  });
});

describe("ChatReasoner: DeepSeek's fenced tool calls", function () {
  this.timeout(60_000);
  let model: ChatReasoner;
  let dir: string;
  const add = tool(async ({ a, b }) => String(a + b), { name: 'add', description: 'Add two integers', schema: z.object({ a: z.number().int(), b: z.number().int() }) });
  const [CALLS, CALLS_END, CALL, SEP, CALL_END] = ['<｜tool▁calls▁begin｜>', '<｜tool▁calls▁end｜>', '<｜tool▁call▁begin｜>', '<｜tool▁sep｜>', '<｜tool▁call▁end｜>'];

  before(async () => {
    const reply = `${CALLS}${CALL}function${SEP}add\n\`\`\`json\n{"a": 2, "b": 2}\n\`\`\`${CALL_END}${CALLS_END}`;
    ({ dir } = await scriptedChatModule('deepseekish-plugin', DEEPSEEK_TOOLS_TEMPLATE, [{ role: 'user', content: QUESTION }], reply, {
      tools: [convertToOpenAITool(add)],
      textTokens: [CALLS, CALLS_END, CALL, SEP, CALL_END],
      bpe: true,
    }));
    model = await ChatReasoner.create({ backbone: dir, cacheDir, maxTokens: 160 });
  });
  after(async () => {
    await model?.dispose();
  });

  it('bindTools gives the call, and the next turn renders its arguments as the text the template joins', async () => {
    const reply = await model.bindTools([add]).invoke([new HumanMessage(QUESTION)]);
    expect(reply.tool_calls?.map((c) => [c.name, c.args])).to.deep.equal([['add', { a: 2, b: 2 }]]);
    expect(reply.content).to.equal('');
    const result = new ToolMessage({ content: '4', tool_call_id: reply.tool_calls![0]!.id! });
    const next = await model.bindTools([add]).invoke([new HumanMessage(QUESTION), new AIMessage({ content: '', tool_calls: reply.tool_calls! }), result], { maxTokens: 2 });
    // the prompt the template gives with the arguments as JSON text, not an object printed as "[object Map]"
    const tokenizer = await TextTokenizer.fromDirectory(dir);
    const call = { id: reply.tool_calls![0]!.id, type: 'function', function: { name: 'add', arguments: '{"a":2,"b":2}' } };
    const messages = [{ role: 'user', content: QUESTION }, { role: 'assistant', content: '', tool_calls: [call] }, { role: 'tool', content: '4', tool_call_id: call.id }];
    const prompt = tokenizer.applyChatTemplate(messages, { tools: [convertToOpenAITool(add)] });
    expect(prompt).to.include('```json\n{"a":2,"b":2}\n```');
    expect(next.usage_metadata?.input_tokens).to.equal(tokenizer.encode(prompt, false).length);
  });
});

describe("ChatReasoner: Qwen3-Coder's calls in tags, values typed by the bound tool's schema", function () {
  this.timeout(60_000);
  let model: ChatReasoner;
  const save = tool(async ({ path }) => `saved ${path}`, { name: 'save', description: 'Save a file', schema: z.object({ path: z.string(), content: z.string(), mode: z.number().int() }) });
  const question = 'Save the answer.';
  const content = '2 + 2 = 4\n<b>four</b>';

  before(async () => {
    // A path that reads as a number: only the schema says it is a string.
    const reply = `<tool_call>\n<function=save>\n<parameter=path>\n42\n</parameter>\n<parameter=content>\n${content}\n</parameter>\n<parameter=mode>\n644\n</parameter>\n</function>\n</tool_call>`;
    const { dir } = await scriptedChatModule('qwen-coderish-plugin', QWEN3_CODER_TEMPLATE, [{ role: 'user', content: question }], reply, { tools: [convertToOpenAITool(save)], textTokens: ['<tool_call>', '</tool_call>'], bpe: true });
    model = await ChatReasoner.create({ backbone: dir, cacheDir, maxTokens: 160 });
  });
  after(async () => {
    await model?.dispose();
  });

  it('bindTools gives the call with a string path, the content as written and an integer mode, in invoke and stream', async () => {
    const expected = [['save', { path: '42', content, mode: 644 }]];
    const reply = await model.bindTools([save]).invoke([new HumanMessage(question)]);
    expect(reply.tool_calls?.map((c) => [c.name, c.args])).to.deep.equal(expected);
    expect(reply.content).to.equal('');
    const chunks: AIMessageChunk[] = [];
    for await (const c of await model.bindTools([save]).stream([new HumanMessage(question)])) chunks.push(c);
    expect(chunks.reduce((a, b) => a.concat(b)).tool_calls?.map((c) => [c.name, c.args])).to.deep.equal(expected);
  });
});
