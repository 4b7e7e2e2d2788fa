/**
 * Tool calls for models whose chat template shows no tools (Gemma's here: no tools, no system or tool role, turns that
 * must alternate), through `reasonplug serve` and @langchain/openai's ChatOpenAI: the tools are described in the system
 * message (folded into the first user turn), the reply is one JSON object that the constraint holds to the bound tools'
 * schemas, and the conversation with its calls and results goes back through the template. A scripted model shows the
 * parsing and the streaming of answers; the trained stories260K under the constraint shows the calls are always valid
 * (a JSON Schema validator is the judge).
 */
import { expect } from 'chai';
import { z } from 'zod';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { ChatOpenAI } from '@langchain/openai';
import { Ollama } from 'ollama';
import { AIMessage, AIMessageChunk, HumanMessage, ToolMessage } from '@langchain/core/messages';
import { TextTokenizer } from '../src/tokenizer/tokenizer.js';
import { scriptedChatModule, storiesModule } from './support/modules.js';
import { GEMMA_TEMPLATE } from './support/chat-templates.js';
import { postJson, useServers } from './support/servers.js';

const QUESTION = 'What are two and two, and three and four?';
const ADD = {
  type: 'function' as const,
  function: { name: 'add', description: 'Add two integers', parameters: { type: 'object', properties: { a: { type: 'integer', minimum: 0, maximum: 99 }, b: { type: 'integer', minimum: 0, maximum: 99 } }, required: ['a', 'b'] } },
};
const SAY = {
  type: 'function' as const,
  function: { name: 'say', description: 'Say a short word', parameters: { type: 'object', properties: { word: { type: 'string', maxLength: 6 } }, required: ['word'] } },
};
const CALLS = '{"tool_calls": [{"name": "add", "arguments": {"a": 2, "b": 2}}, {"name": "add", "arguments": {"a": 3, "b": 4}}]}';
const ANSWER = 'Two and two are "four";\nthree and four, 7 ✓';
const ajv = new Ajv2020({ strict: false });

describe('reasonplug serve: tool calls for templates without tools (generic syntax)', function () {
  this.timeout(240_000);
  const { serve } = useServers();
  /** Scripted to call ADD twice, and to answer, for QUESTION with ADD described (tool_choice auto). */
  let caller: string;
  let answerer: string;
  let stories: string;
  let tokenizer: TextTokenizer;
  const chat = (url: string, model: string, over: Record<string, unknown> = {}) =>
    new ChatOpenAI({ model, apiKey: 'none', temperature: 0, maxTokens: 160, configuration: { baseURL: `${url}/v1` }, maxRetries: 0, ...over });
  const calls = (m: AIMessage) => m.tool_calls?.map((c) => [c.name, c.args]);

  before(async () => {
    const script = (name: string, reply: string) =>
      scriptedChatModule(name, GEMMA_TEMPLATE, [{ role: 'user', content: QUESTION }], reply, { toolsPrompt: { tools: [ADD], choice: 'auto', parallel: true } });
    const called = await script('gemma-caller', CALLS);
    const answered = await script('gemma-answerer', `{"response": ${JSON.stringify(ANSWER)}}`);
    tokenizer = await TextTokenizer.fromDirectory(called.dir);
    [caller, answerer, stories] = await Promise.all([
      serve({ engine: { model: called.dir }, name: 'gemma-caller' }),
      serve({ engine: { model: answered.dir }, name: 'gemma-answerer' }),
      serve({ engine: { model: await storiesModule() }, name: 'stories', chatTemplate: GEMMA_TEMPLATE }),
    ]);
  });

  it('ChatOpenAI with bound tools gets both calls, in invoke and stream', async () => {
    const reply = await chat(caller, 'gemma-caller').bindTools([ADD]).invoke(QUESTION);
    expect(calls(reply)).to.deep.equal([['add', { a: 2, b: 2 }], ['add', { a: 3, b: 4 }]]);
    expect(reply.content).to.equal('');
    expect(reply.response_metadata.finish_reason).to.equal('tool_calls');
    expect(reply.tool_calls![0]!.id).to.match(/^call_/).and.not.equal(reply.tool_calls![1]!.id);
    const chunks: AIMessageChunk[] = [];
    for await (const c of await chat(caller, 'gemma-caller').bindTools([ADD]).stream(QUESTION)) chunks.push(c);
    const joined = chunks.reduce((a, b) => a.concat(b));
    expect(calls(joined)).to.deep.equal([['add', { a: 2, b: 2 }], ['add', { a: 3, b: 4 }]]);
    expect(joined.content).to.equal('');
  });

  it("Ollama's client gets the calls with their arguments as objects, and the model shows the tools capability", async () => {
    const client = new Ollama({ host: caller });
    const reply = await client.chat({ model: 'gemma-caller', messages: [{ role: 'user', content: QUESTION }], tools: [ADD], options: { temperature: 0 } });
    expect(reply.message.tool_calls!.map((c) => [c.function.name, c.function.arguments])).to.deep.equal([['add', { a: 2, b: 2 }], ['add', { a: 3, b: 4 }]]);
    expect((await new Ollama({ host: stories }).show({ model: 'stories' })).capabilities).to.include('tools');
  });

  it('an answer comes back as content, streamed piece by piece as the model writes it', async () => {
    const reply = await chat(answerer, 'gemma-answerer').bindTools([ADD]).invoke(QUESTION);
    expect(reply.content).to.equal(ANSWER);
    expect(reply.tool_calls).to.deep.equal([]);
    expect(reply.response_metadata.finish_reason).to.equal('stop');
    const pieces: string[] = [];
    for await (const c of await chat(answerer, 'gemma-answerer').bindTools([ADD]).stream(QUESTION)) if (c.content) pieces.push(c.content as string);
    expect(pieces.join('')).to.equal(ANSWER);
    expect(pieces.length).to.be.greaterThan(5);
  });

  it('the calls and their results go back through the template as the reply object and user turns', async () => {
    const reply = await chat(caller, 'gemma-caller').bindTools([ADD]).invoke(QUESTION);
    const [first, second] = reply.tool_calls!;
    const body = {
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: QUESTION },
        { role: 'assistant', content: null, tool_calls: reply.tool_calls!.map((c) => ({ id: c.id, type: 'function', function: { name: c.name, arguments: JSON.stringify(c.args) } })) },
        { role: 'tool', content: '4', tool_call_id: first!.id },
        { role: 'tool', content: '7', tool_call_id: second!.id },
      ],
      tools: [ADD],
    };
    const res = await postJson(caller, '/tokenize', body);
    expect(res.status).to.equal(200);
    const text = tokenizer.decode(((await res.json()) as { tokens: number[] }).tokens, false);
    // BOS, and the system message and the tools' description opening the first user turn.
    expect(text).to.match(/^<s> ?<start_of_turn>user\nBe brief\.\n\nYou can call these tools/);
    expect(text).to.include(`<start_of_turn>model\n${CALLS}<end_of_turn>`);
    expect(text).to.include(
      `<start_of_turn>user\n{"tool_response": {"name": "add", "tool_call_id": "${first!.id}", "content": "4"}}\n{"tool_response": {"name": "add", "tool_call_id": "${second!.id}", "content": "7"}}<end_of_turn>\n<start_of_turn>model\n`,
    );
    // ChatOpenAI's next turn runs on it (the trained model's: the scripted one's script is as long as its first turn):
    // its reply, calls or an answer, is one the constraint admits.
    const next = await chat(stories, 'stories').bindTools([ADD]).invoke([new HumanMessage(QUESTION), new AIMessage({ content: '', tool_calls: reply.tool_calls! }), new ToolMessage({ content: '4', tool_call_id: first!.id! }), new ToolMessage({ content: '7', tool_call_id: second!.id! })]);
    for (const c of next.tool_calls ?? []) expect(ajv.validate(ADD.function.parameters, c.args)).to.equal(true);
    // With tool_choice none the tools are not described, and the reply is free text.
    const none = await postJson(caller, '/tokenize', { ...body, tool_choice: 'none' });
    expect(tokenizer.decode(((await none.json()) as { tokens: number[] }).tokens, false)).to.not.include('You can call these tools');
  });

  it('a trained model under the constraint: required and named calls are valid calls of the bound tools', async () => {
    // One call each (a story model asked for several goes on listing them to its token limit).
    const model = chat(stories, 'stories', { maxTokens: 120, temperature: 0.8 });
    for (let seed = 1; seed <= 3; seed++) {
      const required = await model.bindTools([ADD, SAY], { tool_choice: 'required', parallel_tool_calls: false }).invoke(QUESTION, { seed } as never);
      expect(required.tool_calls, `seed ${seed}`).to.have.length(1);
      const [c] = required.tool_calls!;
      const tool = [ADD, SAY].find((t) => t.function.name === c!.name)!;
      expect(ajv.validate(tool.function.parameters, c!.args), `${c!.name} ${JSON.stringify(c!.args)}`).to.equal(true);
    }
    const named = await model.bindTools([ADD, SAY], { tool_choice: { type: 'function', function: { name: 'say' } } }).invoke(QUESTION);
    expect(named.tool_calls!.map((c) => c.name)).to.deep.equal(['say']);
    expect(ajv.validate(SAY.function.parameters, named.tool_calls![0]!.args)).to.equal(true);
    // withStructuredOutput's default method for ChatOpenAI (a forced call of the schema as a tool, or JSON schema) parses.
    const Sum = z.object({ a: z.number().int().min(0).max(99), b: z.number().int().min(0).max(99) });
    const parsed = await model.withStructuredOutput(Sum, { name: 'add', method: 'functionCalling' }).invoke(QUESTION);
    expect(Sum.parse(parsed)).to.deep.equal(parsed);
  });

  it("beside the tools (auto), an answer in the request's own response format is the content, even one with a response key", async () => {
    const schema = { type: 'object', properties: { response: { type: 'string', maxLength: 12 } }, required: ['response'], additionalProperties: false };
    const body = { model: 'stories', messages: [{ role: 'user', content: QUESTION }], tools: [ADD], response_format: { type: 'json_schema', json_schema: { name: 'r', schema, strict: true } }, max_tokens: 60, temperature: 0 };
    const res = await postJson(stories, '/v1/chat/completions', body);
    expect(res.status).to.equal(200);
    const { message, finish_reason } = ((await res.json()) as { choices: { message: { content: string; tool_calls?: unknown[] }; finish_reason: string }[] }).choices[0]!;
    expect(finish_reason).to.equal('stop');
    expect(message.tool_calls ?? []).to.deep.equal([]);
    expect(ajv.validate(schema, JSON.parse(message.content)), message.content).to.equal(true);
  });

  it('a template that shows tools but writes calls in a form of its own gets the generic reply too, the tools described once', async () => {
    // Functionary's form: `>>>name` and the arguments on the next line, which no syntax here reads.
    const own =
      "{% if tools %}<|tools|>{{ tools | tojson }}<|end|>{% endif %}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}" +
      "{% for c in m.tool_calls or [] %}>>>{{ c.function.name }}\n{{ c.function.arguments | tojson }}{% endfor %}<|end|>{% endfor %}" +
      '{% if add_generation_prompt %}<|assistant|>{% endif %}';
    const url = await serve({ engine: { model: await storiesModule() }, name: 'stories-own', chatTemplate: own });
    const res = await postJson(url, '/tokenize', { model: 'stories-own', messages: [{ role: 'user', content: QUESTION }], tools: [ADD] });
    const text = tokenizer.decode(((await res.json()) as { tokens: number[] }).tokens, false);
    expect(text).to.include('<|system|>You can call these tools').and.not.include('<|tools|>');
    const reply = await chat(url, 'stories-own', { maxTokens: 120 }).bindTools([ADD], { tool_choice: 'required', parallel_tool_calls: false }).invoke(QUESTION);
    expect(reply.tool_calls!.map((c) => c.name)).to.deep.equal(['add']);
    expect(ajv.validate(ADD.function.parameters, reply.tool_calls![0]!.args)).to.equal(true);
  });

  it('a server told to use a marker syntax refuses tools the template cannot show, with a 400 that says how', async () => {
    const url = await serve({ engine: { model: await storiesModule() }, name: 'stories-hermes', chatTemplate: GEMMA_TEMPLATE, toolCallSyntax: 'hermes' });
    const res = await postJson(url, '/v1/chat/completions', { model: 'stories-hermes', messages: [{ role: 'user', content: QUESTION }], tools: [ADD] });
    expect(res.status).to.equal(400);
    const { error } = (await res.json()) as { error: { message: string; code: string; param: string } };
    expect(error.code).to.equal('tools_not_supported');
    expect(error.param).to.equal('tools');
    expect(error.message).to.include('hermes').and.include('generic');
  });
});
