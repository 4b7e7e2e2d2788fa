/**
 * Command R+'s tool calls (its 04-2024 and 08-2024 tool_use template, `support/command-r-plus-tool-use.jinja`, a copy of
 * the real one): `Action:` and a ```json fence around a JSON list of `{"tool_name": …, "parameters": {…}}` objects, and
 * `directly-answer`, the template's tool for "no tool needed", after which the answer follows as text. Read from the
 * template as the `command-r-plus` syntax (was `generic`, whose reply instructions the model then got beside its
 * template's own), held to it by the constraint, split back out of replies, streamed or whole, and through
 * `reasonplug serve` and @langchain/openai's ChatOpenAI with backbones scripted to call and to answer directly.
 */
import { expect } from 'chai';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ChatOpenAI } from '@langchain/openai';
import type { AIMessageChunk } from '@langchain/core/messages';
import { Engine } from '../src/engine.js';
import { TextTokenizer } from '../src/tokenizer/tokenizer.js';
import { markerTokensOf, toolCallSyntaxOf } from '../src/constrain/tool-syntax.js';
import { XGrammarFactory, grammarVocabulary, type ResponseFormat, type ToolChoice } from '../src/constrain/index.js';
import { ToolCallTextSplitter, type SplitToolText } from '../src/chat/tool-calls.js';
import { scriptedChatModule, storiesModule } from './support/modules.js';
import { COHERE_TOOLS_TEMPLATE } from './support/chat-templates.js';
import { postJson, useServers } from './support/servers.js';
import { takesWhole } from './support/grammar-accepts.js';
import { testDir } from './support/models.js';
import { bpeTokenizerFiles } from './support/bpe-vocab.js';

const TEMPLATE = await readFile(new URL('./support/command-r-plus-tool-use.jinja', import.meta.url), 'utf8');

const QUESTION = 'What are two and two? Then look up order 12345678901234567890.';
const ADD = {
  type: 'function' as const,
  function: { name: 'add', description: 'Add two integers', parameters: { type: 'object', properties: { a: { type: 'integer', description: 'first' }, b: { type: 'integer', description: 'second' } }, required: ['a', 'b'] } },
};
const LOOKUP = {
  type: 'function' as const,
  function: { name: 'lookup', description: 'Look an order up', parameters: { type: 'object', properties: { order_id: { type: 'integer', description: 'the order' }, weight: { type: 'number', description: 'its weight' } }, required: ['order_id'] } },
};
const TOOLS = [ADD, LOOKUP];
const SPECS = TOOLS.map((t) => ({ name: t.function.name, parameters: t.function.parameters }));

/** Arguments as the template lays them out (`tojson(indent=4)|indent(8)`), with numbers a JavaScript value would change. */
const ADD_ARGS = '{\n            "a": 2,\n            "b": 2\n        }';
const LOOKUP_ARGS = '{\n            "order_id": 12345678901234567890,\n            "weight": 1.0\n        }';
/** The list of calls as the template renders an assistant's calls, and as the model writes them. */
const LIST = `[\n    {\n        "tool_name": "add",\n        "parameters": ${ADD_ARGS}\n    },\n    {\n        "tool_name": "lookup",\n        "parameters": ${LOOKUP_ARGS}\n    }\n]`;
/** The reply as Cohere's documentation shows Command R+ writing it. */
const REPLY = `Action: \`\`\`json\n${LIST}\n\`\`\``;
const ANSWER = 'Two and two make four.';
const DIRECT = `Action: \`\`\`json\n[\n    {\n        "tool_name": "directly-answer",\n        "parameters": {}\n    }\n]\n\`\`\`\n${ANSWER}`;

/** What a splitter gives for `text` read whole and in pieces of `size` characters (which must agree). */
function split(text: string, size: number, cut = false): SplitToolText {
  const read = (pieces: string[]) => {
    const splitter = new ToolCallTextSplitter('command-r-plus');
    const parts = [...pieces.map((p) => splitter.push(p)), splitter.end(cut)];
    return { content: parts.map((p) => p.content).join(''), toolCalls: parts.flatMap((p) => p.toolCalls) };
  };
  const whole = read([text]);
  const pieces = read(text.match(new RegExp(`[\\s\\S]{1,${size}}`, 'gu'))!);
  const shown = (s: SplitToolText) => ({ content: s.content, calls: s.toolCalls.map((c) => [c.name, c.arguments, c.partial]) });
  expect(shown(pieces), 'in pieces').to.deep.equal(shown(whole));
  return whole;
}

describe("Command R+'s Action calls: the syntax, its grammar and its splitter", function () {
  this.timeout(120_000);
  let factory: XGrammarFactory;

  before(async () => {
    const dir = await storiesModule();
    factory = new XGrammarFactory(grammarVocabulary(JSON.parse(await readFile(join(dir, 'tokenizer.json'), 'utf8')) as object, 512), 'command-r-plus');
  });

  const format = (choice: ToolChoice, parallel = true): ResponseFormat => ({ type: 'tool_calls', tools: SPECS, choice, parallel, syntax: 'command-r-plus' });

  it('is read from the real tool_use template (R7B’s <|START_ACTION|> stays command-r); its markers are text', async () => {
    const dir = testDir('action-probe');
    const { tokenizerJson, tokenizerConfig } = bpeTokenizerFiles();
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(tokenizerJson));
    await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify({ ...tokenizerConfig, chat_template: TEMPLATE }));
    const tokenizer = await TextTokenizer.fromDirectory(dir);
    expect(tokenizer.rendersTools()).to.equal(true);
    expect(toolCallSyntaxOf(TEMPLATE, tokenizer.rendersTools())).to.equal('command-r-plus');
    expect(toolCallSyntaxOf(COHERE_TOOLS_TEMPLATE)).to.equal('command-r');
    expect(markerTokensOf('command-r-plus')).to.deep.equal([]);
  });

  it('the grammar takes the template’s layout and compact JSON, several calls or one, the named tool only', async () => {
    const compact = 'Action:\n```json\n[{"tool_name": "add", "parameters": {"a": 2, "b": 2}}]```';
    const one = `Action: \`\`\`json\n[\n    {\n        "tool_name": "add",\n        "parameters": ${ADD_ARGS}\n    }\n]\n\`\`\``;
    const cases: [ResponseFormat, string, boolean][] = [
      [format('required'), REPLY, true],
      [format('required'), compact, true],
      [format('required'), `Sure. ${compact}`, false],
      [format('required'), compact.replace('"a": 2', '"a": "2"'), false],
      [format('required'), compact.replace('"add"', '"sub"'), false],
      [format('required', false), REPLY, false],
      [format('required', false), one, true],
      [format({ name: 'add' }), one, true],
      [format({ name: 'lookup' }), one, false],
      [format('auto'), REPLY, true],
      [format('auto'), `Let me work it out.\n${REPLY}`, true],
      [format('auto'), ANSWER, true],
      [format('auto'), DIRECT, true],
      [format('auto'), `${REPLY}\nMore words.`, false],
      // (directly-answer is no tool to call where a tool must be called)
      [format('required'), DIRECT, false],
    ];
    for (const [f, text, want] of cases) expect(await takesWhole(factory, f, text), `${JSON.stringify(f.type === 'tool_calls' && f.choice)}: ${JSON.stringify(text)}`).to.equal(want);
  });

  it('the splitter reads the list out of its fence, arguments as written, streamed or whole', () => {
    const got = split(`Let me work it out.\n${REPLY}\n`, 3);
    expect(got.content).to.equal('Let me work it out.\n');
    expect(got.toolCalls.map((c) => [c.name, c.arguments])).to.deep.equal([
      ['add', ADD_ARGS],
      ['lookup', LOOKUP_ARGS],
    ]);
    expect(got.toolCalls[0]!.id).to.match(/^call_/);
  });

  it('directly-answer is no call: the text after it is the answer', () => {
    expect(split(DIRECT, 4)).to.deep.equal({ content: ANSWER, toolCalls: [] });
    expect(split(`${DIRECT.replace('directly-answer', 'add')}`, 5).toolCalls.map((c) => c.name)).to.deep.equal(['add']);
  });

  it('"Action:" in the model’s words, with no fence after it, is text at once', () => {
    const splitter = new ToolCallTextSplitter('command-r-plus');
    expect(splitter.push('Action: none needed, ').content).to.equal('Action: none needed, ');
    expect(splitter.push('the sum is 4.').content).to.equal('the sum is 4.');
    expect(splitter.end()).to.deep.equal({ content: '', toolCalls: [] });
  });

  it('a reply cut off by its token limit gives the calls written, the last partial', () => {
    const got = split(REPLY.slice(0, REPLY.indexOf('"weight"') + 11), 6, true);
    expect(got.content).to.equal('');
    expect(got.toolCalls.map((c) => [c.name, c.arguments, c.partial])).to.deep.equal([
      ['add', ADD_ARGS, undefined],
      ['lookup', '{\n            "order_id": 12345678901234567890,\n            "weight": 1', true],
    ]);
    expect(split('Action: ``', 2, true)).to.deep.equal({ content: '', toolCalls: [] });
  });
});

/** The tool calls of a streamed chat completion's events, each call's arguments joined from its deltas. */
function streamedCalls(events: string): [string, string][] {
  const calls: [string, string][] = [];
  for (const line of events.split('\n')) {
    if (!line.startsWith('data: {')) continue;
    const deltas = (JSON.parse(line.slice('data: '.length)) as { choices: { delta: { tool_calls?: { index: number; function: { name?: string; arguments?: string } }[] } }[] }).choices[0]?.delta.tool_calls ?? [];
    for (const d of deltas) {
      const call = (calls[d.index] ??= ['', '']);
      call[0] += d.function.name ?? '';
      call[1] += d.function.arguments ?? '';
    }
  }
  return calls;
}

describe('reasonplug serve: Command R+ calls tools (command-r-plus, its real template)', function () {
  this.timeout(240_000);
  const { serve } = useServers();
  let dir: string;
  let replyIds: number[];
  let tokenizer: TextTokenizer;
  let url: string;
  const chat = () => new ChatOpenAI({ model: 'command-r-plusish', apiKey: 'none', temperature: 0, maxTokens: 300, configuration: { baseURL: `${url}/v1` }, maxRetries: 0 });
  const ARGS = [
    { a: 2, b: 2 },
    { order_id: 12345678901234567890, weight: 1 },
  ];

  before(async () => {
    ({ dir, replyIds } = await scriptedChatModule('command-r-plusish', TEMPLATE, [{ role: 'user', content: QUESTION }], REPLY, { tools: TOOLS, bpe: true }));
    tokenizer = await TextTokenizer.fromDirectory(dir);
    url = await serve({ engine: { model: dir }, name: 'command-r-plusish' });
  });

  it('the constraint lets the model write its calls as it would (required, auto); a named tool is called once', async () => {
    expect(tokenizer.decode(replyIds)).to.equal(REPLY);
    const engine = await Engine.load({ model: dir });
    try {
      const prompt = { messages: [{ role: 'user' as const, content: QUESTION }], tools: TOOLS };
      for (const choice of ['required', 'auto'] as const) {
        const { rows } = await engine.generate(prompt, { maxTokens: 300, responseFormat: { type: 'tool_calls', tools: SPECS, choice, syntax: 'command-r-plus' } });
        expect(rows[0]!.ids.slice(0, -1), choice).to.deep.equal(replyIds);
      }
      const named = await engine.generate(prompt, { maxTokens: 300, responseFormat: { type: 'tool_calls', tools: SPECS, choice: { name: 'add' }, syntax: 'command-r-plus' } });
      const calls = split(named.rows[0]!.text, 7).toolCalls;
      expect(calls.map((c) => [c.name, JSON.parse(c.arguments)])).to.deep.equal([['add', ARGS[0]]]);
    } finally {
      await engine.dispose();
    }
  });

  it('ChatOpenAI gets both calls in invoke and stream (auto, required, named); the arguments are the text the model wrote', async () => {
    for (const toolChoice of ['auto', 'required'] as const) {
      const got = await chat().bindTools(TOOLS, { tool_choice: toolChoice }).invoke(QUESTION);
      expect(got.tool_calls?.map((c) => [c.name, c.args]), toolChoice).to.deep.equal([
        ['add', ARGS[0]],
        ['lookup', ARGS[1]],
      ]);
      expect(got.content, toolChoice).to.equal('');
      expect(got.response_metadata.finish_reason, toolChoice).to.equal('tool_calls');
    }
    const named = await chat().bindTools(TOOLS, { tool_choice: 'add' }).invoke(QUESTION);
    expect(named.tool_calls?.map((c) => [c.name, c.args])).to.deep.equal([['add', ARGS[0]]]);
    const chunks: AIMessageChunk[] = [];
    for await (const c of await chat().bindTools(TOOLS).stream(QUESTION)) chunks.push(c);
    const joined = chunks.reduce((a, b) => a.concat(b));
    expect(joined.tool_calls?.map((c) => c.name)).to.deep.equal(['add', 'lookup']);
    expect(joined.content).to.equal('');

    const body = { model: 'command-r-plusish', messages: [{ role: 'user', content: QUESTION }], tools: TOOLS, max_tokens: 300, temperature: 0 };
    const whole = (await (await postJson(url, '/v1/chat/completions', body)).json()) as { choices: { message: { tool_calls: { function: { name: string; arguments: string } }[] } }[] };
    const written = [
      ['add', ADD_ARGS],
      ['lookup', LOOKUP_ARGS],
    ];
    expect(whole.choices[0]!.message.tool_calls.map((c) => [c.function.name, c.function.arguments])).to.deep.equal(written);
    expect(streamedCalls(await (await postJson(url, '/v1/chat/completions', { ...body, stream: true })).text())).to.deep.equal(written);
  });

  it('the calls and their results render back through the template as the model wrote them', async () => {
    const res = await postJson(url, '/v1/chat/completions', { model: 'command-r-plusish', messages: [{ role: 'user', content: QUESTION }], tools: TOOLS, max_tokens: 300, temperature: 0 });
    const calls = ((await res.json()) as { choices: { message: { tool_calls: { id: string; type: string; function: { name: string; arguments: string } }[] } }[] }).choices[0]!.message.tool_calls;
    const messages = [
      { role: 'user', content: QUESTION },
      { role: 'assistant', content: null, tool_calls: calls },
      { role: 'tool', content: '4', tool_call_id: calls[0]!.id },
      { role: 'tool', content: 'shipped', tool_call_id: calls[1]!.id },
    ];
    const tokens = await postJson(url, '/tokenize', { model: 'command-r-plusish', messages, tools: TOOLS });
    expect(tokens.status).to.equal(200);
    const prompt = tokenizer.decode(((await tokens.json()) as { tokens: number[] }).tokens, false);
    expect(prompt).to.include(`<|CHATBOT_TOKEN|>\nAction:\n\`\`\`json\n${LIST}\`\`\`\n<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|><results>\n4</results>`);
    // The template's own instructions, and none of the generic reply's.
    expect(prompt).to.include("Write 'Action:' followed by a json-formatted list of actions").and.not.include('tool_calls');
  });
});

describe('reasonplug serve: Command R+ answers directly (directly-answer, then the answer)', function () {
  this.timeout(240_000);
  const { serve } = useServers();
  let url: string;

  before(async () => {
    const { dir } = await scriptedChatModule('command-r-plus-answers', TEMPLATE, [{ role: 'user', content: QUESTION }], DIRECT, { tools: TOOLS, bpe: true });
    url = await serve({ engine: { model: dir }, name: 'command-r-plus-answers' });
  });

  it('ChatOpenAI under auto gets the answer as content and no calls, in invoke and stream', async () => {
    const chat = new ChatOpenAI({ model: 'command-r-plus-answers', apiKey: 'none', temperature: 0, maxTokens: 300, configuration: { baseURL: `${url}/v1` }, maxRetries: 0 }).bindTools(TOOLS);
    const got = await chat.invoke(QUESTION);
    expect(got.content).to.equal(ANSWER);
    expect(got.tool_calls).to.deep.equal([]);
    expect(got.response_metadata.finish_reason).to.equal('stop');
    const chunks: AIMessageChunk[] = [];
    for await (const c of await chat.stream(QUESTION)) chunks.push(c);
    const joined = chunks.reduce((a, b) => a.concat(b));
    expect(joined.content).to.equal(ANSWER);
    expect(joined.tool_calls ?? []).to.deep.equal([]);
  });
});
