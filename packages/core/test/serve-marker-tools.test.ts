/**
 * Tool calls after a special token (Mistral's, Granite's `<|tool_call|>` list, and Qwen's `<tool_call>` blocks whose
 * tags are added tokens last) through `reasonplug serve` and @langchain/openai's ChatOpenAI: `[TOOL_CALLS]` is a special
 * token of the vocabulary, which decoding drops and a grammar over text cannot write; the calls after it are a JSON
 * list; and Mistral's templates refuse call ids but nine letters and digits. The backbone (a Mistral v0.3-style
 * template over a vocabulary with `[TOOL_CALLS]` as its special token 512) is scripted to answer with two calls.
 * DeepSeek's fenced calls between five added tokens, over a byte-level vocabulary as DeepSeek's, likewise; its template
 * joins the arguments into the text as a string, which the tokenizer finds by probing it.
 */
import { expect } from 'chai';
import { ChatOpenAI } from '@langchain/openai';
import { AIMessage, AIMessageChunk, HumanMessage, ToolMessage } from '@langchain/core/messages';
import { Engine } from '../src/engine.js';
import { TextTokenizer } from '../src/tokenizer/tokenizer.js';
import { toolCallSyntaxOf } from '../src/constrain/tool-syntax.js';
import { ToolCallTextSplitter } from '../src/chat/tool-calls.js';
import { scriptedChatModule } from './support/modules.js';
import { COHERE_TOOLS_TEMPLATE, DEEPSEEK_TOOLS_TEMPLATE, GRANITE_TOOLS_TEMPLATE, MISTRAL_ARGS_TOOLS_TEMPLATE, MISTRAL_TOOLS_TEMPLATE, THINKING_TEMPLATE, TOOLS_TEMPLATE } from './support/chat-templates.js';
import { argumentsFormOf } from '../src/tokenizer/tool-call-arguments.js';
import { postJson, useServers } from './support/servers.js';
import { Template } from '@huggingface/jinja';

const QUESTION = 'What are two and two, and three and four?';
const ADD = {
  type: 'function' as const,
  function: { name: 'add', description: 'Add two integers', parameters: { type: 'object', properties: { a: { type: 'integer' }, b: { type: 'integer' } }, required: ['a', 'b'] } },
};
const REPLY = '[TOOL_CALLS] [{"name": "add", "arguments": {"a": 2, "b": 2}}, {"name": "add", "arguments": {"a": 3, "b": 4}}]';
const MARKER = 512;

/** A chat model scripted to answer QUESTION (with ADD shown) with its reply, and where the suite serves it. */
interface Scripted {
  dir: string;
  replyIds: number[];
  tokenizer: TextTokenizer;
  url: string;
}

/**
 * Serves, from the suite's `before`, a chat model made with `template` and `tokens` (scriptedChatModule's) that answers
 * QUESTION with `reply`, under `name`; closed after the suite. The fields are set once `before` has run.
 */
function scripted(name: string, template: string, reply: string, tokens: { specialTokens?: readonly string[]; textTokens?: readonly string[]; bpe?: boolean }): Scripted {
  const { serve } = useServers();
  const served = {} as Scripted;
  before(async () => {
    const { dir, replyIds } = await scriptedChatModule(name, template, [{ role: 'user', content: QUESTION }], reply, { tools: [ADD], ...tokens });
    Object.assign(served, { dir, replyIds, tokenizer: await TextTokenizer.fromDirectory(dir), url: await serve({ engine: { model: dir }, name }) });
  });
  return served;
}

describe('reasonplug serve: Mistral tool calls after the [TOOL_CALLS] token', function () {
  this.timeout(180_000);
  // Scripted for the prompt with the tool rendered in it, as ChatOpenAI sends it.
  const s = scripted('mistralish', MISTRAL_TOOLS_TEMPLATE, REPLY, { specialTokens: ['[TOOL_CALLS]'] });
  /** The reply as decoding that keeps the special token gives it. */
  let written: string;
  const chat = (over: Record<string, unknown> = {}) =>
    new ChatOpenAI({ model: 'mistralish', apiKey: 'none', temperature: 0, maxTokens: 160, configuration: { baseURL: `${s.url}/v1` }, maxRetries: 0, ...over });
  const calls = (m: AIMessage) => m.tool_calls?.map((c) => [c.name, c.args]);

  before(() => {
    written = s.tokenizer.decode(s.replyIds, true, new Set([MARKER]));
  });

  it('reads the syntax from the template, and the reply starts with the special token', () => {
    expect(toolCallSyntaxOf(MISTRAL_TOOLS_TEMPLATE)).to.equal('mistral');
    expect(s.replyIds[0]).to.equal(MARKER);
    expect(s.tokenizer.tokenId('[TOOL_CALLS]')).to.equal(MARKER);
    // Decoding drops it, unless it is kept (this legacy SentencePiece vocabulary writes the blank after it as two pieces).
    expect(s.tokenizer.decode(s.replyIds).trim()).to.equal(REPLY.slice('[TOOL_CALLS] '.length));
    expect(s.tokenizer.decode(s.replyIds, true, new Set([MARKER]))).to.equal(written);
    expect(written).to.equal(REPLY.replace('[TOOL_CALLS] ', '[TOOL_CALLS]  '));
  });

  it('the constraint writes the special token and the list (required, auto, named), and the text keeps the token', async () => {
    const engine = await Engine.load({ model: s.dir });
    try {
      // The messages with the tool, rendered by the engine as the server renders them.
      const prompt = { messages: [{ role: 'user' as const, content: QUESTION }], tools: [ADD] };
      const tools = [{ name: 'add', parameters: ADD.function.parameters }];
      for (const choice of ['required', 'auto'] as const) {
        const { rows } = await engine.generate(prompt, { maxTokens: 160, responseFormat: { type: 'tool_calls', tools, choice, syntax: 'mistral' } });
        expect(rows[0]!.ids.slice(0, -1), choice).to.deep.equal(s.replyIds);
        expect(rows[0]!.text, choice).to.equal(written);
        expect(rows[0]!.finishReason).to.equal('eos');
      }
      // A named tool is called once: the list closes after the first call.
      const named = await engine.generate(prompt, { maxTokens: 160, responseFormat: { type: 'tool_calls', tools, choice: { name: 'add' }, syntax: 'mistral' } });
      expect(named.rows[0]!.text).to.equal(`${written.slice(0, written.indexOf('}}') + 2)}]`);
      // Unconstrained, the special token is dropped from the text as any other.
      const free = await engine.generate(prompt, { maxTokens: 160 });
      expect(free.rows[0]!.ids.slice(0, -1)).to.deep.equal(s.replyIds);
      expect(free.rows[0]!.text).to.equal(written.slice('[TOOL_CALLS]'.length));
    } finally {
      await engine.dispose();
    }
  });

  it('ChatOpenAI with bound tools gets both calls, with ids Mistral\'s template takes, in invoke and stream', async () => {
    for (const toolChoice of [undefined, 'required'] as const) {
      const reply = await chat().bindTools([ADD], toolChoice ? { tool_choice: toolChoice } : {}).invoke(QUESTION);
      expect(calls(reply), toolChoice).to.deep.equal([['add', { a: 2, b: 2 }], ['add', { a: 3, b: 4 }]]);
      expect(reply.content).to.equal('');
      expect(reply.response_metadata.finish_reason).to.equal('tool_calls');
      for (const c of reply.tool_calls!) expect(c.id).to.match(/^[a-zA-Z0-9]{9}$/);
      expect(reply.tool_calls![0]!.id).to.not.equal(reply.tool_calls![1]!.id);
    }
    const chunks: AIMessageChunk[] = [];
    for await (const c of await chat().bindTools([ADD]).stream(QUESTION)) chunks.push(c);
    const joined = chunks.reduce((a, b) => a.concat(b));
    expect(calls(joined)).to.deep.equal([['add', { a: 2, b: 2 }], ['add', { a: 3, b: 4 }]]);
    expect(joined.content).to.equal('');
  });

  it('the calls and their results go back through the template, which takes their ids', async () => {
    const reply = await chat().bindTools([ADD]).invoke(QUESTION);
    const [first, second] = reply.tool_calls!;
    const turns = [
      new HumanMessage(QUESTION),
      new AIMessage({ content: '', tool_calls: reply.tool_calls! }),
      new ToolMessage({ content: '4', tool_call_id: first!.id! }),
      new ToolMessage({ content: '7', tool_call_id: second!.id! }),
    ];
    const body = {
      messages: [
        { role: 'user', content: QUESTION },
        { role: 'assistant', content: '', tool_calls: reply.tool_calls!.map((c) => ({ id: c.id, type: 'function', function: { name: c.name, arguments: JSON.stringify(c.args) } })) },
        { role: 'tool', content: '4', tool_call_id: first!.id },
        { role: 'tool', content: '7', tool_call_id: second!.id },
      ],
    };
    const res = await postJson(s.url, '/tokenize', body);
    expect(res.status).to.equal(200);
    // Blanks squeezed: this (legacy SentencePiece) vocabulary writes a blank after a special token as two pieces.
    const text = s.tokenizer.decode(((await res.json()) as { tokens: number[] }).tokens, false).replace(/ +/g, ' ');
    expect(text).to.include(`[TOOL_CALLS] [{"name": "add", "arguments": {"a": 2, "b": 2}, "id": "${first!.id}"}, {"name": "add", "arguments": {"a": 3, "b": 4}, "id": "${second!.id}"}]</s>`);
    expect(text).to.include(`[TOOL_RESULTS] {"content": "4", "call_id": "${first!.id}"}[/TOOL_RESULTS][TOOL_RESULTS] {"content": "7", "call_id": "${second!.id}"}[/TOOL_RESULTS]`);
    // And ChatOpenAI's next turn runs on it; OpenAI-style ids are the template's to refuse, a 400 that names why.
    const next = await chat({ maxTokens: 4 }).bindTools([ADD]).invoke(turns);
    expect(next.usage_metadata?.input_tokens).to.be.greaterThan(0);
    const foreign = { ...body, messages: body.messages.map((m) => ('tool_call_id' in m ? { ...m, tool_call_id: 'call_1' } : m)) };
    const refused = await postJson(s.url, '/tokenize', foreign);
    expect(refused.status).to.equal(400);
    expect(((await refused.json()) as { error: { message: string } }).error.message).to.include('Tool call IDs should be alphanumeric strings with length 9!');
  });

  it('the splitter reads a list streamed in pieces, keeps a Nemo-written id and gives text that is no list as one raw call', () => {
    const splitter = new ToolCallTextSplitter('mistral');
    const pieces = ['Sure', '. [', 'TOOL', '_CALLS] [{"name": "add", "arguments": {"a": 1, "b": 2}, "id": "abcDEF123"}', ', {"name": "add", "arguments": {}}]'];
    const out = pieces.map((p) => splitter.push(p));
    const end = splitter.end();
    expect(out.map((o) => o.content).join('') + end.content).to.equal('Sure. ');
    expect(out.every((o) => o.toolCalls.length === 0)).to.equal(true);
    expect(end.toolCalls.map((c) => [c.name, c.arguments])).to.deep.equal([['add', '{"a": 1, "b": 2}'], ['add', '{}']]);
    expect(end.toolCalls[0]!.id).to.equal('abcDEF123');
    expect(end.toolCalls[1]!.id).to.match(/^[a-zA-Z0-9]{9}$/);
    const broken = new ToolCallTextSplitter('mistral');
    broken.push('[TOOL_CALLS] [{"name": "add", "argu');
    const raw = broken.end().toolCalls;
    expect(raw.map((c) => [c.name, c.arguments])).to.deep.equal([[undefined, '[{"name": "add", "argu']]);
  });
});

describe('reasonplug serve: Mistral\'s later tool calls, [TOOL_CALLS]name[ARGS]{…} each', function () {
  this.timeout(180_000);
  const reply = '[TOOL_CALLS]add[ARGS]{"a": 2, "b": 2}[TOOL_CALLS]add[ARGS]{"a": 3, "b": 4}';
  const [calls, args] = [512, 513];
  const s = scripted('mistralargs', MISTRAL_ARGS_TOOLS_TEMPLATE, reply, { specialTokens: ['[TOOL_CALLS]', '[ARGS]'] });

  it('the constraint writes both special tokens (required, auto, named), the text keeps them, ChatOpenAI reads both calls', async () => {
    expect(toolCallSyntaxOf(MISTRAL_ARGS_TOOLS_TEMPLATE)).to.equal('mistral-args');
    expect(s.replyIds.filter((id) => id === calls || id === args)).to.deep.equal([calls, args, calls, args]);
    const written = s.tokenizer.decode(s.replyIds, true, new Set([calls, args]));
    const engine = await Engine.load({ model: s.dir });
    try {
      const prompt = { promptIds: [s.tokenizer.encode(s.tokenizer.applyChatTemplate([{ role: 'user', content: QUESTION }], { tools: [ADD] }), false)] };
      const tools = [{ name: 'add', parameters: ADD.function.parameters }];
      for (const choice of ['required', 'auto'] as const) {
        const { rows } = await engine.generate(prompt, { maxTokens: 160, responseFormat: { type: 'tool_calls', tools, choice, syntax: 'mistral-args' } });
        expect(rows[0]!.ids.slice(0, -1), choice).to.deep.equal(s.replyIds);
        expect(rows[0]!.text, choice).to.equal(written);
      }
      const named = await engine.generate(prompt, { maxTokens: 160, responseFormat: { type: 'tool_calls', tools, choice: { name: 'add' }, syntax: 'mistral-args' } });
      expect(named.rows[0]!.text).to.equal(written.slice(0, written.lastIndexOf('[TOOL_CALLS]')));
    } finally {
      await engine.dispose();
    }
    const chat = new ChatOpenAI({ model: 'mistralargs', apiKey: 'none', temperature: 0, maxTokens: 160, configuration: { baseURL: `${s.url}/v1` }, maxRetries: 0 });
    const got = await chat.bindTools([ADD]).invoke(QUESTION);
    expect(got.tool_calls?.map((c) => [c.name, c.args])).to.deep.equal([['add', { a: 2, b: 2 }], ['add', { a: 3, b: 4 }]]);
    expect(got.content).to.equal('');
    const chunks: AIMessageChunk[] = [];
    for await (const c of await chat.bindTools([ADD]).stream(QUESTION)) chunks.push(c);
    expect(chunks.reduce((a, b) => a.concat(b)).tool_calls?.map((c) => c.args)).to.deep.equal([{ a: 2, b: 2 }, { a: 3, b: 4 }]);
  });

  it('the splitter ends each call where the next opens, across pieces, and keeps arguments that are no JSON raw', () => {
    const splitter = new ToolCallTextSplitter('mistral-args');
    const pieces = ['Adding. [TOOL', '_CALLS]add[AR', 'GS]{"a": 1, "b": 2}[TOOL_', 'CALLS] add[ARGS] {"a": 3', ', "b": 4}'];
    const out = pieces.map((p) => splitter.push(p));
    const end = splitter.end();
    expect(out.map((o) => o.content).join('') + end.content).to.equal('Adding. ');
    // The first call is read as soon as the second opens.
    expect(out.map((o) => o.toolCalls.length)).to.deep.equal([0, 0, 0, 1, 0]);
    expect([...out[3]!.toolCalls, ...end.toolCalls].map((c) => [c.name, c.arguments])).to.deep.equal([['add', '{"a": 1, "b": 2}'], ['add', '{"a": 3, "b": 4}']]);
    const broken = new ToolCallTextSplitter('mistral-args');
    broken.push('[TOOL_CALLS]add[ARGS]{"a": ');
    expect(broken.end().toolCalls.map((c) => [c.name, c.arguments])).to.deep.equal([['add', '{"a":']]);
  });
});

describe("reasonplug serve: Granite's tool calls, a list after the <|tool_call|> token", function () {
  this.timeout(180_000);
  const reply = '<|tool_call|>[{"name": "add", "arguments": {"a": 2, "b": 2}}, {"name": "add", "arguments": {"a": 3, "b": 4}}]';
  const s = scripted('graniteish', GRANITE_TOOLS_TEMPLATE, reply, { specialTokens: ['<|tool_call|>'] });

  it('ChatOpenAI gets both calls (required and auto), and they go back through the template', async () => {
    expect(s.replyIds[0]).to.equal(512);
    expect(toolCallSyntaxOf(GRANITE_TOOLS_TEMPLATE)).to.equal('granite');
    const chat = new ChatOpenAI({ model: 'graniteish', apiKey: 'none', temperature: 0, maxTokens: 160, configuration: { baseURL: `${s.url}/v1` }, maxRetries: 0 });
    for (const toolChoice of ['auto', 'required'] as const) {
      const got = await chat.bindTools([ADD], { tool_choice: toolChoice }).invoke(QUESTION);
      expect(got.tool_calls?.map((c) => [c.name, c.args]), toolChoice).to.deep.equal([['add', { a: 2, b: 2 }], ['add', { a: 3, b: 4 }]]);
      expect(got.content).to.equal('');
      expect(got.response_metadata.finish_reason).to.equal('tool_calls');
    }
    const got = await chat.bindTools([ADD]).invoke(QUESTION);
    const next = await chat.bindTools([ADD]).invoke([new HumanMessage(QUESTION), got, ...got.tool_calls!.map((c, i) => new ToolMessage({ content: String(i ? 7 : 4), tool_call_id: c.id! }))]);
    expect(next.usage_metadata?.input_tokens).to.be.greaterThan(100);
  });
});

describe("reasonplug serve: Qwen's <tool_call> blocks, whose tags are added tokens of its vocabulary", function () {
  this.timeout(180_000);
  const reply = '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 2}}\n</tool_call>';
  // As in Qwen 2.5's and 3's vocabularies: added tokens that decode as text (not special).
  const s = scripted('qwenish-tools', THINKING_TEMPLATE, reply, { textTokens: ['<tool_call>', '</tool_call>'] });

  it('ChatOpenAI (tool_choice auto, the default, and required) gets the call the model opens and closes with those tokens', async () => {
    expect(s.replyIds.filter((id) => id >= 512)).to.deep.equal([512, 513]);
    const chat = new ChatOpenAI({ model: 'qwenish-tools', apiKey: 'none', temperature: 0, maxTokens: 160, configuration: { baseURL: `${s.url}/v1` }, maxRetries: 0 });
    for (const options of [{}, { tool_choice: 'required' }] as const) {
      const got = await chat.bindTools([ADD], options).invoke(QUESTION);
      expect(got.tool_calls?.map((c) => [c.name, c.args]), JSON.stringify(options)).to.deep.equal([['add', { a: 2, b: 2 }]]);
      expect(got.content).to.equal('');
      expect(got.response_metadata.finish_reason).to.equal('tool_calls');
    }
  });
});

describe("reasonplug serve: DeepSeek's tool calls, fenced between <｜tool▁calls▁begin｜> and <｜tool▁calls▁end｜>", function () {
  this.timeout(180_000);
  const [CALLS, CALLS_END, CALL, SEP, CALL_END] = ['<｜tool▁calls▁begin｜>', '<｜tool▁calls▁end｜>', '<｜tool▁call▁begin｜>', '<｜tool▁sep｜>', '<｜tool▁call▁end｜>'];
  const fenced = (args: string) => `${CALL}function${SEP}add\n\`\`\`json\n${args}\n\`\`\`${CALL_END}`;
  const reply = `${CALLS}${fenced('{"a": 2, "b": 2}')}\n${fenced('{"a": 3, "b": 4}')}${CALLS_END}`;
  const s = scripted('deepseekish', DEEPSEEK_TOOLS_TEMPLATE, reply, { textTokens: [CALLS, CALLS_END, CALL, SEP, CALL_END], bpe: true });
  const chat = () => new ChatOpenAI({ model: 'deepseekish', apiKey: 'none', temperature: 0, maxTokens: 200, configuration: { baseURL: `${s.url}/v1` }, maxRetries: 0 });

  it('the constraint writes the markers as their tokens and the fenced calls (required, auto, named)', async () => {
    expect(toolCallSyntaxOf(DEEPSEEK_TOOLS_TEMPLATE)).to.equal('deepseek');
    const markers = [CALLS, CALL, SEP, CALL_END, CALL, SEP, CALL_END, CALLS_END].map((m) => s.tokenizer.tokenId(m));
    expect(s.replyIds.filter((id) => markers.includes(id))).to.deep.equal(markers);
    expect(s.tokenizer.decode(s.replyIds)).to.equal(reply);
    const engine = await Engine.load({ model: s.dir });
    try {
      const prompt = { messages: [{ role: 'user' as const, content: QUESTION }], tools: [ADD] };
      const tools = [{ name: 'add', parameters: ADD.function.parameters }];
      for (const choice of ['required', 'auto'] as const) {
        const { rows } = await engine.generate(prompt, { maxTokens: 200, responseFormat: { type: 'tool_calls', tools, choice, syntax: 'deepseek' } });
        expect(rows[0]!.ids.slice(0, -1), choice).to.deep.equal(s.replyIds);
        expect(rows[0]!.text, choice).to.equal(reply);
      }
      // A named tool is called once: the calls close after the first.
      const named = await engine.generate(prompt, { maxTokens: 200, responseFormat: { type: 'tool_calls', tools, choice: { name: 'add' }, syntax: 'deepseek' } });
      expect(named.rows[0]!.text).to.equal(`${CALLS}${fenced('{"a": 2, "b": 2}')}${CALLS_END}`);
    } finally {
      await engine.dispose();
    }
  });

  it('ChatOpenAI gets both calls in invoke and stream, and they go back through the template as the text it joins', async () => {
    for (const toolChoice of ['auto', 'required'] as const) {
      const got = await chat().bindTools([ADD], { tool_choice: toolChoice }).invoke(QUESTION);
      expect(got.tool_calls?.map((c) => [c.name, c.args]), toolChoice).to.deep.equal([['add', { a: 2, b: 2 }], ['add', { a: 3, b: 4 }]]);
      expect(got.content).to.equal('');
      expect(got.response_metadata.finish_reason).to.equal('tool_calls');
    }
    const chunks: AIMessageChunk[] = [];
    for await (const c of await chat().bindTools([ADD]).stream(QUESTION)) chunks.push(c);
    expect(chunks.reduce((a, b) => a.concat(b)).tool_calls?.map((c) => c.args)).to.deep.equal([{ a: 2, b: 2 }, { a: 3, b: 4 }]);

    const got = await chat().bindTools([ADD]).invoke(QUESTION);
    const body = {
      messages: [
        { role: 'user', content: QUESTION },
        { role: 'assistant', content: '', tool_calls: got.tool_calls!.map((c) => ({ id: c.id, type: 'function', function: { name: c.name, arguments: JSON.stringify(c.args) } })) },
        { role: 'tool', content: '4', tool_call_id: got.tool_calls![0]!.id },
      ],
    };
    const res = await postJson(s.url, '/tokenize', body);
    expect(res.status).to.equal(200);
    const text = s.tokenizer.decode(((await res.json()) as { tokens: number[] }).tokens, false);
    expect(text).to.include(`${CALLS}${fenced('{"a":2,"b":2}')}\n${fenced('{"a":3,"b":4}')}${CALLS_END}`).and.not.include('[object');
    expect(text).to.include('<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>4<');
    const next = await chat().bindTools([ADD]).invoke([new HumanMessage(QUESTION), got, new ToolMessage({ content: '4', tool_call_id: got.tool_calls![0]!.id! })]);
    expect(next.usage_metadata?.input_tokens).to.be.greaterThan(100);
  });

  it('the splitter reads calls streamed in pieces, keeps arguments that are no JSON raw, and leaves an unclosed block as text', () => {
    const splitter = new ToolCallTextSplitter('deepseek');
    const pieces = ['Adding. <｜tool▁calls', `▁begin｜>${CALL}function${SEP}a`, 'dd\n```json\n{"a": 1,', ` "b": 2}\n\`\`\`${CALL_END}\n${CALL}function${SEP}add\n\`\`\`json\n{"a": x}\n\`\`\``, `${CALL_END}${CALLS_END}`];
    const out = pieces.map((p) => splitter.push(p));
    const end = splitter.end();
    expect(out.map((o) => o.content).join('') + end.content).to.equal('Adding. ');
    expect(out.slice(0, -1).every((o) => o.toolCalls.length === 0)).to.equal(true);
    expect(out.at(-1)!.toolCalls.map((c) => [c.name, c.arguments])).to.deep.equal([['add', '{"a": 1, "b": 2}'], ['add', '{"a": x}']]);
    const open = new ToolCallTextSplitter('deepseek');
    open.push(`${CALLS}${CALL}function${SEP}add\n`);
    expect(open.end()).to.deep.equal({ content: `${CALLS}${CALL}function${SEP}add\n`, toolCalls: [] });
  });

  it('a template that joins arguments as text is found by probing it; templates that render them with tojson take objects', () => {
    const formOf = (source: string) => argumentsFormOf((messages) => new Template(source).render({ messages, bos_token: '', eos_token: '' }));
    expect(formOf(DEEPSEEK_TOOLS_TEMPLATE)).to.equal('text');
    for (const source of [MISTRAL_TOOLS_TEMPLATE, MISTRAL_ARGS_TOOLS_TEMPLATE, GRANITE_TOOLS_TEMPLATE, TOOLS_TEMPLATE, THINKING_TEMPLATE]) expect(formOf(source)).to.equal('object');
    // rendered with objects, the DeepSeek template would print a map where the arguments go
    const asObject = new Template(DEEPSEEK_TOOLS_TEMPLATE).render({ messages: [{ role: 'assistant', content: '', tool_calls: [{ type: 'function', function: { name: 'add', arguments: { a: 1 } } }] }] });
    expect(asObject).to.include('[object Map]');
  });
});

describe("reasonplug serve: Cohere's tool calls, a list between <|START_ACTION|> and <|END_ACTION|>, after a thought", function () {
  this.timeout(180_000);
  const [THINK, THOUGHT_END, ACTION, ACTION_END] = ['<|START_THINKING|>', '<|END_THINKING|>', '<|START_ACTION|>', '<|END_ACTION|>'];
  const calls = '[{"tool_call_id": "0", "tool_name": "add", "parameters": {"a": 2, "b": 2}}, {"tool_call_id": "1", "tool_name": "add", "parameters": {"a": 3, "b": 4}}]';
  const reply = `${THINK}I add them.${THOUGHT_END}${ACTION}${calls}${ACTION_END}`;
  const s = scripted('cohereish', COHERE_TOOLS_TEMPLATE, reply, { specialTokens: [THINK, THOUGHT_END, ACTION, ACTION_END], bpe: true });

  it('the constraint writes the thought, then the list between the special tokens; the calls and the thought come apart', async () => {
    expect(toolCallSyntaxOf(COHERE_TOOLS_TEMPLATE)).to.equal('command-r');
    const markers = [THINK, THOUGHT_END, ACTION, ACTION_END].map((m) => s.tokenizer.tokenId(m));
    expect(s.replyIds.filter((id) => markers.includes(id))).to.deep.equal(markers);
    for (const toolChoice of ['auto', 'required'] as const) {
      const body = { model: 'cohereish', messages: [{ role: 'user', content: QUESTION }], tools: [ADD], tool_choice: toolChoice, temperature: 0, max_tokens: 200 };
      const answer = (await (await postJson(s.url, '/v1/chat/completions', body)).json()) as {
        choices: { message: { content: string | null; reasoning_content?: string; tool_calls?: { function: { name: string; arguments: string } }[] }; finish_reason: string }[];
      };
      const { message, finish_reason } = answer.choices[0]!;
      expect(message.tool_calls?.map((c) => [c.function.name, JSON.parse(c.function.arguments)]), toolChoice).to.deep.equal([['add', { a: 2, b: 2 }], ['add', { a: 3, b: 4 }]]);
      expect(message.reasoning_content).to.equal('I add them.');
      expect(message.content ?? '').to.equal('');
      expect(finish_reason).to.equal('tool_calls');
    }
    const chat = new ChatOpenAI({ model: 'cohereish', apiKey: 'none', temperature: 0, maxTokens: 200, configuration: { baseURL: `${s.url}/v1` }, maxRetries: 0 });
    const got = await chat.bindTools([ADD]).invoke(QUESTION);
    expect(got.tool_calls?.map((c) => [c.name, c.args])).to.deep.equal([['add', { a: 2, b: 2 }], ['add', { a: 3, b: 4 }]]);
    // and they go back through the template with their results
    const body = {
      messages: [
        { role: 'user', content: QUESTION },
        { role: 'assistant', content: '', tool_calls: got.tool_calls!.map((c) => ({ id: c.id, type: 'function', function: { name: c.name, arguments: JSON.stringify(c.args) } })) },
        { role: 'tool', content: '4', tool_call_id: got.tool_calls![0]!.id },
      ],
    };
    const tokens = ((await (await postJson(s.url, '/tokenize', body)).json()) as { tokens: number[] }).tokens;
    const text = s.tokenizer.decode(tokens, false);
    expect(text).to.include(`${ACTION}[{"tool_call_id": "0", "tool_name": "add", "parameters": {"a": 2, "b": 2}}, {"tool_call_id": "1", "tool_name": "add", "parameters": {"a": 3, "b": 4}}]${ACTION_END}`);
    expect(text).to.include('<|START_TOOL_RESULT|>4<|END_TOOL_RESULT|>');
  });

  it('the splitter reads the list, its tool_name and parameters, streamed in pieces', () => {
    const splitter = new ToolCallTextSplitter('command-r');
    const pieces = ['Adding. <|START_', 'ACTION|>[{"tool_call_id": "0", "tool_name": "add", ', '"parameters": {"a": 1, "b": 2}}]<|END_ACT', 'ION|>'];
    const out = pieces.map((p) => splitter.push(p));
    const end = splitter.end();
    expect(out.map((o) => o.content).join('') + end.content).to.equal('Adding. ');
    expect([...out.flatMap((o) => o.toolCalls), ...end.toolCalls].map((c) => [c.name, c.arguments])).to.deep.equal([['add', '{"a": 1, "b": 2}']]);
  });
});
