/**
 * Tool calls in a reply that the token limit cut off, through `reasonplug serve`: OpenAI's chat completions give the
 * calls written whole and the one being written with its `arguments` so far (partial JSON), finish reason `length`,
 * and no protocol text as content; @langchain/openai's ChatOpenAI then gives the whole calls as `tool_calls` and the
 * cut one as an `invalid_tool_calls` entry. Anthropic's Messages API keeps only the whole calls. A scripted model
 * writes the calls (generic syntax: Gemma's template shows no tools), cut where a test's `max_tokens` says; the
 * splitter itself is checked on each syntax it reads.
 */
import { expect } from 'chai';
import { ChatOpenAI } from '@langchain/openai';
import type { AIMessageChunk } from '@langchain/core/messages';
import { splitReply } from '../src/chat/reply.js';
import type { ToolCallSyntax } from '../src/constrain/tool-syntax.js';
import { TextTokenizer } from '../src/tokenizer/tokenizer.js';
import { scriptedChatModule } from './support/modules.js';
import { GEMMA_TEMPLATE } from './support/chat-templates.js';
import { postJson, useServers } from './support/servers.js';

const QUESTION = 'What are two and two, three and four, five and six?';
const ADD = {
  type: 'function' as const,
  function: { name: 'add', description: 'Add two integers', parameters: { type: 'object', properties: { a: { type: 'integer' }, b: { type: 'integer' } }, required: ['a', 'b'] } },
};
const CALLS =
  '{"tool_calls": [{"name": "add", "arguments": {"a": 2, "b": 2}}, {"name": "add", "arguments": {"a": 3, "b": 4}}, {"name": "add", "arguments": {"a": 5, "b": 6}}]}';

type Completion = { choices: { message: { content: string | null; tool_calls?: { id: string; function: { name: string; arguments: string } }[] }; finish_reason: string }[] };

describe('reasonplug serve: tool calls cut off by the token limit', function () {
  this.timeout(240_000);
  const { serve } = useServers();
  let url: string;
  /** max_tokens that stops the reply inside the third call's arguments, and the text written by then. */
  let cut: number;
  let written: string;
  const chat = (maxTokens: number) => new ChatOpenAI({ model: 'gemma-caller', apiKey: 'none', temperature: 0, maxTokens, configuration: { baseURL: `${url}/v1` }, maxRetries: 0 });

  before(async () => {
    const { dir, replyIds } = await scriptedChatModule('gemma-cut-caller', GEMMA_TEMPLATE, [{ role: 'user', content: QUESTION }], CALLS, {
      toolsPrompt: { tools: [ADD], choice: 'auto', parallel: true },
    });
    const tokenizer = await TextTokenizer.fromDirectory(dir);
    cut = replyIds.findIndex((_, k) => tokenizer.decode(replyIds.slice(0, k)).includes('"arguments": {"a": 5'));
    written = tokenizer.decode(replyIds.slice(0, cut));
    url = await serve({ engine: { model: dir }, name: 'gemma-caller' });
  });

  it('chat completions: the whole calls, then the cut one with its partial arguments, finish reason length', async () => {
    const res = await postJson(url, '/v1/chat/completions', { model: 'gemma-caller', messages: [{ role: 'user', content: QUESTION }], tools: [ADD], max_tokens: cut, temperature: 0 });
    const [choice] = ((await res.json()) as Completion).choices;
    expect(choice!.finish_reason).to.equal('length');
    expect(choice!.message.content).to.equal(null);
    const calls = choice!.message.tool_calls!.map((c) => [c.function.name, c.function.arguments]);
    expect(calls.slice(0, 2)).to.deep.equal([
      ['add', '{"a": 2, "b": 2}'],
      ['add', '{"a": 3, "b": 4}'],
    ]);
    const partial = written.slice(written.lastIndexOf('"arguments": ') + '"arguments": '.length);
    expect(calls[2]).to.deep.equal(['add', partial]);
    expect(partial).to.match(/^\{"a": 5/);
  });

  it('ChatOpenAI: the whole calls as tool_calls, the cut one as invalid_tool_calls; streamed, the same calls as chunks', async () => {
    const reply = await chat(cut).bindTools([ADD]).invoke(QUESTION);
    expect(reply.response_metadata.finish_reason).to.equal('length');
    expect(reply.content).to.equal('');
    expect(reply.tool_calls!.map((c) => [c.name, c.args])).to.deep.equal([
      ['add', { a: 2, b: 2 }],
      ['add', { a: 3, b: 4 }],
    ]);
    expect(reply.invalid_tool_calls!.map((c) => [c.name, c.args])).to.have.length(1);
    expect(reply.invalid_tool_calls![0]!.name).to.equal('add');
    expect(reply.invalid_tool_calls![0]!.args).to.match(/^\{"a": 5/);
    expect(reply.invalid_tool_calls![0]!.error).to.be.a('string');

    const chunks: AIMessageChunk[] = [];
    for await (const c of await chat(cut).bindTools([ADD]).stream(QUESTION)) chunks.push(c);
    const joined = chunks.reduce((a, b) => a.concat(b));
    expect(joined.content).to.equal('');
    expect(joined.response_metadata.finish_reason).to.equal('length');
    expect(joined.tool_call_chunks!.map((c) => [c.name, c.args])).to.deep.equal([
      ['add', '{"a": 2, "b": 2}'],
      ['add', '{"a": 3, "b": 4}'],
      ['add', reply.invalid_tool_calls![0]!.args],
    ]);
  });

  it('a reply that ends by itself is read as before: all its calls, finish reason tool_calls', async () => {
    const reply = await chat(400).bindTools([ADD]).invoke(QUESTION);
    expect(reply.response_metadata.finish_reason).to.equal('tool_calls');
    expect(reply.tool_calls!.map((c) => c.args)).to.deep.equal([
      { a: 2, b: 2 },
      { a: 3, b: 4 },
      { a: 5, b: 6 },
    ]);
    expect(reply.invalid_tool_calls).to.deep.equal([]);
  });

  it("Anthropic's Messages API: the whole calls as tool_use blocks, no text of the cut one", async () => {
    const body = { model: 'gemma-caller', max_tokens: cut, messages: [{ role: 'user', content: QUESTION }], tools: [{ name: 'add', description: ADD.function.description, input_schema: ADD.function.parameters }] };
    const message = (await (await postJson(url, '/v1/messages', body)).json()) as { content: { type: string; input?: unknown }[]; stop_reason: string };
    expect(message.stop_reason).to.equal('max_tokens');
    expect(message.content).to.deep.equal(message.content.filter((b) => b.type === 'tool_use'));
    expect(message.content.map((b) => b.input)).to.deep.equal([
      { a: 2, b: 2 },
      { a: 3, b: 4 },
    ]);
  });
});

describe('chat replies cut off by the token limit, in each tool-call syntax', () => {
  const PARAMETERS = { add: { type: 'object', properties: { a: { type: 'integer' }, s: { type: 'string' } } } };
  const read = (tools: ToolCallSyntax, text: string, cut: boolean) => {
    const split = splitReply({ tools, toolParameters: PARAMETERS }, text, cut);
    return { content: split.content, calls: split.toolCalls.map(({ name, arguments: args, partial }) => [name, args, partial ?? false]) };
  };
  // (the arguments as the model wrote them; the tagged syntaxes' as JSON written from their values)
  const whole = (a: number) => ['add', `{"a": ${a}}`, false];
  const tagged = (a: number) => ['add', `{"a":${a}}`, false];
  const cases: [ToolCallSyntax, string, { content: string; calls: unknown[] }][] = [
    ['generic', '{"tool_calls": [{"name": "add", "arguments": {"a": 1}}, {"name": "add", "arguments": {"a": 2, "s": "Pa', { content: '', calls: [whole(1), ['add', '{"a": 2, "s": "Pa', true]] }],
    ['generic', '{"tool_call": {"name": "add", "argu', { content: '', calls: [['add', '', true]] }],
    // A call whose name was cut off names no tool: dropped, and its text is no content.
    ['generic', '{"tool_calls": [{"name": "add", "arguments": {"a": 1}}, {"name": "ad', { content: '', calls: [whole(1)] }],
    ['generic', '{"tool_', { content: '', calls: [] }],
    ['hermes', 'Sure. <tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call>\n<', { content: 'Sure. ', calls: [whole(1)] }],
    ['hermes', '<tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call>\n<tool_call>{"name": "add", "arguments": {"a": 2', { content: '', calls: [whole(1), ['add', '{"a": 2', true]] }],
    // Whole arguments whose closing tag the cut stopped in: a whole call.
    ['hermes', '<tool_call>{"name": "add", "arguments": {"a": 1}}</tool_ca', { content: '', calls: [whole(1)] }],
    ['hermes', '<tool_call>{"na', { content: '', calls: [] }],
    ['json', 'So: {"name": "add", "parameters": {"a": 2', { content: 'So: ', calls: [['add', '{"a": 2', true]] }],
    ['mistral', '[TOOL_CALLS][{"name": "add", "arguments": {"a": 1}}, {"name": "add", "arguments": {"a": 2', { content: '', calls: [whole(1), ['add', '{"a": 2', true]] }],
    ['mistral', '[TOOL_CALLS][{"name": "add", "arguments": {"a": 1}, "id": "abc', { content: '', calls: [whole(1)] }],
    ['granite', '<|tool_call|>[{"name": "add", "arguments": {"a": 1}}, {"na', { content: '', calls: [whole(1)] }],
    ['command-r', '<|START_ACTION|>[{"tool_call_id": "0", "tool_name": "add", "parameters": {"a": 1}}, {"tool_call_id": "1", "tool_name": "add", "parameters": {"a"', { content: '', calls: [whole(1), ['add', '{"a"', true]] }],
    ['mistral-args', '[TOOL_CALLS]add[ARGS]{"a": 1}[TOOL_CALLS]add[ARGS]{"a": 2', { content: '', calls: [whole(1), ['add', '{"a": 2', true]] }],
    ['mistral-args', '[TOOL_CALLS]add[ARGS]{"a": 1}[TOOL_CALLS]ad', { content: '', calls: [whole(1)] }],
    [
      'deepseek',
      '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>add\n```json\n{"a": 1}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>add\n```json\n{"a": 2',
      { content: '', calls: [whole(1), ['add', '{"a": 2', true]] },
    ],
    ['deepseek', '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>add\n```json\n{"a": 1}\n``', { content: '', calls: [whole(1)] }],
    ['qwen-xml', '<tool_call>\n<function=add>\n<parameter=a>\n1\n</parameter>\n<parameter=s>\nPa', { content: '', calls: [['add', '{"a":1,"s":"Pa', true]] }],
    ['qwen-xml', '<tool_call>\n<function=add>\n<parameter=a>\n1\n</parameter>\n</function>\n</tool', { content: '', calls: [tagged(1)] }],
    ['qwen-xml', '<tool_call>\n<function=ad', { content: '', calls: [] }],
    ['glm', '<tool_call>add\n<arg_key>a</arg_key>\n<arg_value>1</arg_value>\n<arg_key>s</arg_key>\n<arg_value>Pa', { content: '', calls: [['add', '{"a":1,"s":"Pa', true]] }],
  ];

  it('gives the whole calls, then the cut one with the arguments written so far, and no protocol text as content', () => {
    for (const [tools, text, expected] of cases) expect(read(tools, text, true), `${tools}: ${text}`).to.deep.equal(expected);
  });

  it("harmony: a call cut in its body is partial; one cut in the closer's start is whole", () => {
    const call = '<|channel|>analysis<|message|>hm<|end|><|start|>assistant to=functions.add<|channel|>commentary json<|message|>';
    const partial = splitReply({ harmony: { thought: true } }, `${call}{"a": 2`, true);
    expect(partial.toolCalls.map((c) => [c.name, c.arguments, c.partial])).to.deep.equal([['add', '{"a": 2', true]]);
    const closing = splitReply({ harmony: { thought: true } }, `${call}{"a": 2}<|ca`, true);
    expect(closing.toolCalls.map((c) => [c.name, c.arguments, c.partial])).to.deep.equal([['add', '{"a": 2}', undefined]]);
  });

  it('a reply that ended by itself is read as before: an unclosed call is text', () => {
    expect(read('hermes', 'x <tool_call>{"name": "add"', false)).to.deep.equal({ content: 'x <tool_call>{"name": "add"', calls: [] });
    expect(read('generic', '{"tool_calls": [{"name": "add", "arguments": {"a": 1', false)).to.deep.equal({ content: '{"tool_calls": [{"name": "add", "arguments": {"a": 1', calls: [] });
  });
});
