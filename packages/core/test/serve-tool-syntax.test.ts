/**
 * Tool calls in the syntax a model's template teaches, through `reasonplug serve` and @langchain/openai's
 * ChatOpenAI: a Llama 3-style template (calls as one JSON object with "parameters", results in the ipython role)
 * gets its calls constrained and read in that syntax, with `tool_choice` auto (the model may call) and named. The
 * backbone is scripted to answer with a call.
 */
import { expect } from 'chai';
import { ChatOpenAI } from '@langchain/openai';
import { AIMessage, AIMessageChunk, HumanMessage, ToolMessage } from '@langchain/core/messages';
import { startServer, type RunningServer } from '../src/serve/server.js';
import { TextTokenizer } from '../src/tokenizer/tokenizer.js';
import { toolCallSyntaxOf } from '../src/constrain/tool-syntax.js';
import { scriptedChatModule, storiesModule } from './support/modules.js';
import { LLAMA3_TOOLS_TEMPLATE, THINKING_TEMPLATE } from './support/chat-templates.js';

const QUESTION = 'What are two and two?';
const ADD = {
  type: 'function' as const,
  function: { name: 'add', description: 'Add two integers', parameters: { type: 'object', properties: { a: { type: 'integer' }, b: { type: 'integer' } }, required: ['a', 'b'] } },
};

describe('reasonplug serve: tool calls in the syntax of the template', function () {
  this.timeout(120_000);
  let server: RunningServer;
  let forcedHermes: RunningServer;
  let tokenizer: TextTokenizer;
  const chat = (over: Record<string, unknown> = {}) =>
    new ChatOpenAI({ model: 'llama3ish', apiKey: 'none', temperature: 0, maxTokens: 60, configuration: { baseURL: `${server.url}/v1` }, maxRetries: 0, ...over });

  before(async () => {
    tokenizer = await TextTokenizer.fromDirectory(await storiesModule());
    // Scripted for the prompt with the tool rendered in it, as ChatOpenAI sends it.
    const reply = '{"name": "add", "parameters": {"a": 2, "b": 2}}';
    const { dir } = await scriptedChatModule('llama3ish', LLAMA3_TOOLS_TEMPLATE, [{ role: 'user', content: QUESTION }], reply, { tools: [ADD] });
    server = await startServer({ engine: { model: dir }, name: 'llama3ish', port: 0 });
    forcedHermes = await startServer({ engine: { model: dir }, name: 'llama3ish', port: 0, toolCallSyntax: 'hermes' });
    await Promise.all([server.ready, forcedHermes.ready]);
  });
  after(async () => {
    await Promise.all([server?.close(), forcedHermes?.close()]);
  });

  it('reads the syntax from the template: json for Llama 3-style ones, hermes for <tool_call> ones and without a template, generic for unknown forms', () => {
    expect(toolCallSyntaxOf(LLAMA3_TOOLS_TEMPLATE)).to.equal('json');
    expect(toolCallSyntaxOf(THINKING_TEMPLATE)).to.equal('hermes');
    // A template whose calls are in no known form: the generic reply, described in the system message.
    expect(toolCallSyntaxOf('{{ tools }}{% for m in messages %}{{ m.content }}{{ m.tool_calls }}{% endfor %}')).to.equal('generic');
    expect(toolCallSyntaxOf(undefined)).to.equal('hermes');
  });

  it('ChatOpenAI with bound tools (auto, and named) gets the call the model wrote as JSON, in invoke and stream', async () => {
    const auto = await chat().bindTools([ADD]).invoke(QUESTION);
    expect(auto.tool_calls?.map((c) => [c.name, c.args])).to.deep.equal([['add', { a: 2, b: 2 }]]);
    expect(auto.content).to.equal('');
    expect(auto.response_metadata.finish_reason).to.equal('tool_calls');
    const named = await chat().bindTools([ADD], { tool_choice: 'add' }).invoke(QUESTION);
    expect(named.tool_calls?.map((c) => [c.name, c.args])).to.deep.equal([['add', { a: 2, b: 2 }]]);

    const chunks: AIMessageChunk[] = [];
    for await (const c of await chat().bindTools([ADD]).stream(QUESTION)) chunks.push(c);
    const joined = chunks.reduce((a, b) => a.concat(b));
    expect(joined.tool_calls?.map((c) => [c.name, c.args])).to.deep.equal([['add', { a: 2, b: 2 }]]);
    expect(joined.content).to.equal('');

    // toolCallSyntax (--tool-call-syntax) overrides the template's: read as hermes, the JSON is text, no call.
    const hermes = await chat({ configuration: { baseURL: `${forcedHermes.url}/v1` } }).bindTools([ADD]).invoke(QUESTION);
    expect(hermes.tool_calls).to.deep.equal([]);
    expect(String(hermes.content).trim()).to.equal('{"name": "add", "parameters": {"a": 2, "b": 2}}');
  });

  it('the call and its result go back through the template as Llama 3 writes them', async () => {
    const call = { id: 'call_1', name: 'add', args: { a: 2, b: 2 }, type: 'tool_call' as const };
    const turns = [new HumanMessage(QUESTION), new AIMessage({ content: '', tool_calls: [call] }), new ToolMessage({ content: '4', tool_call_id: 'call_1' })];
    // What ChatOpenAI sends for these turns, rendered by /tokenize.
    const body = {
      messages: [
        { role: 'user', content: QUESTION },
        { role: 'assistant', content: '', tool_calls: [{ id: call.id, type: 'function', function: { name: 'add', arguments: JSON.stringify(call.args) } }] },
        { role: 'tool', content: '4', tool_call_id: 'call_1' },
      ],
    };
    const res = await fetch(`${server.url}/tokenize`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
    const text = tokenizer.decode(((await res.json()) as { tokens: number[] }).tokens);
    expect(text).to.include('{"name": "add", "parameters": {"a": 2, "b": 2}}<|eot_id|><|start_header_id|>ipython<|end_header_id|>\n\n4<|eot_id|>');
    // And ChatOpenAI's next turn runs on it.
    const next = await chat({ maxTokens: 4 }).bindTools([ADD]).invoke(turns);
    expect(next.usage_metadata?.input_tokens).to.be.greaterThan(0);
  });
});
