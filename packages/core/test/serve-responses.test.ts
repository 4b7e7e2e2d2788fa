/**
 * `POST /v1/responses` (OpenAI's Responses API) through `reasonplug serve`: the OpenAI SDK (`responses.create`, its
 * stream helper, a function call) and @langchain/openai's ChatOpenAI in its Responses mode (invoke, stream, tool calls and their results, withStructuredOutput) answers as the chat endpoint
 * does; plain fetch reads the event stream (types, order, sequence numbers, deltas against the finished response),
 * a reasoning model's thought as a `reasoning` item, the answer's log-probabilities, a cut reply as `incomplete`, and the refusals of what a
 * stateless server cannot do.
 */
import { expect } from 'chai';
import OpenAI from 'openai';
import { ChatOpenAI } from '@langchain/openai';
import { tool } from '@langchain/core/tools';
import { HumanMessage, ToolMessage } from '@langchain/core/messages';
import { z } from 'zod';
import { postJson, useServers } from './support/servers.js';
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { scriptedChatModule, storiesModule } from './support/modules.js';
import { testDir } from './support/models.js';
import { models } from '../../../test/support/paths.js';
import { THINKING_TEMPLATE, TOOLS_TEMPLATE } from './support/chat-templates.js';

/** Settings under which the tiny model finishes structured answers (as in the chat endpoint's tests). */
const FINISHING = { temperature: 0.7, modelKwargs: { seed: 11, repetition_penalty: 1.3 } };

interface StreamEvent {
  type: string;
  sequence_number: number;
  [key: string]: unknown;
}

/** The events of a Responses SSE body, checking that each `event:` line names its data's type. */
function responseEvents(body: string): StreamEvent[] {
  return body
    .split('\n\n')
    .filter((block) => block.trim())
    .map((block) => {
      const [eventLine, dataLine] = block.split('\n');
      const event = JSON.parse(dataLine!.slice('data: '.length)) as StreamEvent;
      expect(eventLine).to.equal(`event: ${event.type}`);
      return event;
    });
}

describe('reasonplug serve: /v1/responses', function () {
  this.timeout(120_000);
  let url: string;
  const { serve } = useServers();
  const model = (over: Record<string, unknown> = {}, at = url) =>
    new ChatOpenAI({ model: 'stories260k', apiKey: 'none', temperature: 0, maxTokens: 16, configuration: { baseURL: `${at}/v1` }, maxRetries: 0, ...over });

  before(async () => {
    url = await serve({ engine: { model: await storiesModule() }, chatTemplate: TOOLS_TEMPLATE });
  });

  it("answers carry the fields OpenAI's schema requires: a tool's parameters and strict, the text part's logprobs, usage's cache_write_tokens, chat logprobs' refusal", async () => {
    const tools = [{ type: 'function', name: 'ping' }];
    const whole = (await (await postJson(url, '/v1/responses', { model: 'stories260k', input: 'Hi', max_output_tokens: 4, tools, tool_choice: 'none' })).json()) as Record<string, any>;
    expect(whole.tools).to.deep.equal([{ type: 'function', name: 'ping', parameters: null, strict: true }]);
    expect(whole.usage.input_tokens_details).to.have.property('cache_write_tokens', 0);
    const events = responseEvents(await (await postJson(url, '/v1/responses', { model: 'stories260k', input: 'Hi', max_output_tokens: 4, stream: true })).text());
    const added = events.find((e) => e.type === 'response.content_part.added')!;
    expect(added.part).to.deep.equal({ type: 'output_text', text: '', annotations: [], logprobs: [] });
    const chat = (await (await postJson(url, '/v1/chat/completions', { model: 'stories260k', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2, logprobs: true })).json()) as Record<string, any>;
    expect(chat.choices[0].logprobs).to.have.property('refusal', null);
  });

  it('ChatOpenAI in Responses mode answers as the chat endpoint does, in invoke and stream, with usage', async () => {
    const chat = await model().invoke('Tell me a story');
    const reply = await model({ useResponsesApi: true }).invoke('Tell me a story');
    expect(reply.text).to.equal(chat.text);
    expect(reply.text.length).to.be.greaterThan(0);
    expect(reply.usage_metadata?.input_tokens).to.equal(chat.usage_metadata?.input_tokens);
    expect(reply.usage_metadata?.output_tokens).to.equal(chat.usage_metadata?.output_tokens);
    const chunks = [];
    for await (const c of await model({ useResponsesApi: true, streaming: true }).stream('Tell me a story')) chunks.push(c);
    expect(chunks.length).to.be.greaterThan(2);
    const joined = chunks.reduce((a, b) => a.concat(b));
    expect(joined.text).to.equal(chat.text);
    expect(joined.usage_metadata?.output_tokens).to.equal(chat.usage_metadata?.output_tokens);
  });

  it("the OpenAI SDK's responses.create and its stream helper read the same answer; a function call comes back parsed", async () => {
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'none', maxRetries: 0 });
    const chat = await model({ maxTokens: 12 }).invoke('Tell me a story');
    const created = await client.responses.create({ model: 'stories260k', input: 'Tell me a story', max_output_tokens: 12, temperature: 0 });
    expect(created.output_text).to.equal(chat.text);
    expect(created.usage?.output_tokens).to.equal(12);
    // The helper rebuilds the response from the events and checks that each belongs to an item it has seen.
    const stream = client.responses.stream({ model: 'stories260k', input: 'Tell me a story', max_output_tokens: 12, temperature: 0 });
    let deltas = '';
    stream.on('response.output_text.delta', (e) => (deltas += e.delta));
    const final = await stream.finalResponse();
    expect(deltas).to.equal(chat.text);
    expect(final.output_text).to.equal(chat.text);
    expect(final.status).to.equal('incomplete');
    const parameters = { type: 'object', properties: { a: { enum: [2] }, b: { enum: [3] } }, required: ['a', 'b'], additionalProperties: false };
    const called = await client.responses.create({
      model: 'stories260k',
      input: 'Add 2 and 3',
      tools: [{ type: 'function', name: 'add', description: 'Add two integers', parameters, strict: true }],
      tool_choice: { type: 'function', name: 'add' },
      max_output_tokens: 80,
      temperature: 0,
    });
    const calls = called.output.filter((o) => o.type === 'function_call');
    expect(calls.map((c) => [c.name, JSON.parse(c.arguments)])).to.deep.equal([['add', { a: 2, b: 3 }]]);
    expect(calls[0]!.call_id).to.be.a('string').and.not.equal('');
  });

  it('streams typed, numbered events whose deltas make the finished response; a cut reply is incomplete', async () => {
    const body = { model: 'stories260k', input: 'Tell me a story', max_output_tokens: 12, temperature: 0, stream: true, metadata: { run: 'a' } };
    const res = await postJson(url, '/v1/responses', body);
    expect(res.headers.get('content-type')).to.match(/text\/event-stream/);
    const events = responseEvents(await res.text());
    expect(events.map((e) => e.sequence_number)).to.deep.equal(events.map((_, i) => i));
    const types = events.map((e) => e.type);
    expect(types.slice(0, 4)).to.deep.equal(['response.created', 'response.in_progress', 'response.output_item.added', 'response.content_part.added']);
    expect(types.slice(-4)).to.deep.equal(['response.output_text.done', 'response.content_part.done', 'response.output_item.done', 'response.incomplete']);
    const deltas = events.filter((e) => e.type === 'response.output_text.delta').map((e) => e.delta as string);
    expect(deltas.length).to.be.greaterThan(2);
    const done = events.at(-1)!.response as { status: string; incomplete_details: { reason: string }; output: { type: string; content: { text: string }[] }[]; metadata: unknown; usage: { output_tokens: number } };
    expect(done.status).to.equal('incomplete');
    expect(done.incomplete_details.reason).to.equal('max_output_tokens');
    expect(done.metadata).to.deep.equal({ run: 'a' });
    expect(done.usage.output_tokens).to.equal(12);
    expect(done.output.map((o) => o.type)).to.deep.equal(['message']);
    // the message max_output_tokens cut is incomplete too, in the stream's item and the response's
    expect((events.at(-2)!.item as { status: string }).status).to.equal('incomplete');
    expect((done.output[0] as unknown as { status: string }).status).to.equal('incomplete');
    expect(deltas.join('')).to.equal(done.output[0]!.content[0]!.text);
    // The same request answered whole.
    const whole = (await (await postJson(url, '/v1/responses', { ...body, stream: false })).json()) as typeof done & { object: string; id: string };
    expect(whole.object).to.equal('response');
    expect(whole.id).to.match(/^resp_/);
    expect(whole.output[0]!.content[0]!.text).to.equal(deltas.join(''));
  });

  it('tool calls come back as function_call items; their outputs go back as function_call_output; text.format constrains the reply', async () => {
    const add = tool(async ({ a, b }) => String(a + b), { name: 'add', description: 'Add two integers', schema: z.object({ a: z.number().int(), b: z.number().int() }) });
    const bound = model({ useResponsesApi: true, maxTokens: 120, ...FINISHING }).bindTools([add], { tool_choice: 'add' });
    const question = new HumanMessage('Add 2 and 3');
    const reply = await bound.invoke([question]);
    expect(reply.tool_calls?.map((c) => c.name)).to.deep.equal(['add']);
    const args = reply.tool_calls![0]!.args as { a: number; b: number };
    expect(Number.isInteger(args.a) && Number.isInteger(args.b)).to.equal(true);
    // The call and its result as the next turn's input (LangChain writes function_call and function_call_output items).
    const result = new ToolMessage({ content: String(args.a + args.b), tool_call_id: reply.tool_calls![0]!.id! });
    const next = await model({ useResponsesApi: true, maxTokens: 4 }).bindTools([add]).invoke([question, reply, result]);
    expect(next.usage_metadata!.input_tokens).to.be.greaterThan(reply.usage_metadata!.input_tokens);
    // The chat endpoint renders the same conversation: the same prompt, the same greedy answer.
    const viaChat = await model({ maxTokens: 4 }).bindTools([add]).invoke([question, reply, result]);
    expect(next.usage_metadata!.input_tokens).to.equal(viaChat.usage_metadata!.input_tokens);
    expect(next.text).to.equal(viaChat.text);

    const Pet = z.object({ name: z.string().max(12), age: z.number().int().min(0).max(30) });
    const pet = await model({ useResponsesApi: true, maxTokens: 120, ...FINISHING }).withStructuredOutput(Pet, { name: 'pet' }).invoke('Describe a pet');
    expect(Pet.safeParse(pet).success, JSON.stringify(pet)).to.equal(true);
  });

  it("a reasoning model's thought is a reasoning item before the message, streamed as reasoning_text deltas in a part of its own (the SDK's stream helper reads it)", async () => {
    const question = 'What are two and two?';
    const { dir } = await scriptedChatModule('responses-thinker', THINKING_TEMPLATE, [{ role: 'user', content: question }], '<think>\nTwo and two make four.\n</think>\n\nFour.');
    const at = await serve({ engine: { model: dir }, name: 'thinker' });
    const body = { model: 'thinker', input: [{ role: 'user', content: [{ type: 'input_text', text: question }] }], max_output_tokens: 60 };
    type Whole = { status: string; output: { type: string; content: { type: string; text: string }[] }[]; usage: { output_tokens_details: { reasoning_tokens: number } } };
    const whole = (await (await postJson(at, '/v1/responses', body)).json()) as Whole;
    expect(whole.status).to.equal('completed');
    expect(whole.output.map((o) => [o.type, o.content[0]!.type, o.content[0]!.text])).to.deep.equal([
      ['reasoning', 'reasoning_text', 'Two and two make four.'],
      ['message', 'output_text', 'Four.'],
    ]);
    expect(whole.usage.output_tokens_details.reasoning_tokens).to.be.greaterThan(0);
    const events = responseEvents(await (await postJson(at, '/v1/responses', { ...body, stream: true })).text());
    expect(events.filter((e) => e.type === 'response.reasoning_text.delta').map((e) => e.delta).join('')).to.equal('Two and two make four.');
    expect(events.filter((e) => e.type === 'response.output_text.delta').map((e) => e.delta).join('')).to.equal('Four.');
    expect(events.at(-1)!.type).to.equal('response.completed');
    // The reasoning item's part opens before its deltas and closes before the item, as OpenAI's and vLLM's do.
    const reasoning = events.filter((e) => e.output_index === 0 && !e.type.endsWith('.delta')).map((e) => e.type);
    expect(reasoning).to.deep.equal(['response.output_item.added', 'response.content_part.added', 'response.reasoning_text.done', 'response.content_part.done', 'response.output_item.done']);
    expect(events.find((e) => e.type === 'response.content_part.added')!.part).to.deep.equal({ type: 'reasoning_text', text: '' });
    // The OpenAI SDK's stream helper, which adds each delta to a part it has seen open, rebuilds both items.
    const client = new OpenAI({ baseURL: `${at}/v1`, apiKey: 'none', maxRetries: 0 });
    const final = await client.responses.stream({ model: 'thinker', input: question, max_output_tokens: 60 }).finalResponse();
    expect(final.output.map((o) => (o.type === 'reasoning' ? o.content?.map((c) => c.text) : o.type === 'message' ? o.content.map((c) => c.type === 'output_text' && c.text) : o.type))).to.deep.equal([
      ['Two and two make four.'],
      ['Four.'],
    ]);
    expect(final.output_text).to.equal('Four.');
  });

  it("include's output_text.logprobs: the answer's tokens with top_logprobs alternatives, as the chat endpoint gives them, whole and streamed", async () => {
    type Entry = { token: string; logprob: number; top_logprobs: { token: string }[] };
    const chat = (await (
      await postJson(url, '/v1/chat/completions', { model: 'stories260k', messages: [{ role: 'user', content: 'Tell me a story' }], max_tokens: 8, temperature: 0, logprobs: true, top_logprobs: 2 })
    ).json()) as { choices: { logprobs: { content: Entry[] } }[] };
    const expected = chat.choices[0]!.logprobs.content;
    expect(expected).to.have.length.greaterThan(4);
    expect(expected.every((e) => e.top_logprobs.length === 2)).to.equal(true);
    const body = { model: 'stories260k', input: 'Tell me a story', max_output_tokens: 8, temperature: 0, include: ['message.output_text.logprobs'], top_logprobs: 2 };
    const whole = (await (await postJson(url, '/v1/responses', body)).json()) as { output: { content: { logprobs: Entry[] }[] }[]; top_logprobs: number };
    expect(whole.output[0]!.content[0]!.logprobs).to.deep.equal(expected);
    expect(whole.top_logprobs).to.equal(2);
    const events = responseEvents(await (await postJson(url, '/v1/responses', { ...body, stream: true })).text());
    expect(events.filter((e) => e.type === 'response.output_text.delta').flatMap((e) => e.logprobs as Entry[])).to.deep.equal(expected);
    expect(events.find((e) => e.type === 'response.output_text.done')!.logprobs).to.deep.equal(expected);
    // not asked for: none
    const plain = (await (await postJson(url, '/v1/responses', { ...body, include: [], top_logprobs: undefined })).json()) as { output: { content: { logprobs: Entry[] }[] }[] };
    expect(plain.output[0]!.content[0]!.logprobs).to.deep.equal([]);
    // a thought's tokens are not the answer's
    const question = 'What are two and two?';
    const { dir } = await scriptedChatModule('responses-thinker-logprobs', THINKING_TEMPLATE, [{ role: 'user', content: question }], '<think>\nTwo and two make four.\n</think>\n\nFour.');
    const at = await serve({ engine: { model: dir }, name: 'thinker' });
    const thought = (await (await postJson(at, '/v1/responses', { model: 'thinker', input: question, max_output_tokens: 60, include: ['message.output_text.logprobs'] })).json()) as {
      output: { type: string; content: { logprobs?: Entry[] }[] }[];
    };
    const answer = thought.output.find((o) => o.type === 'message')!.content[0]!.logprobs!;
    expect(answer.map((e) => e.token).join('')).to.include('Four').and.not.include('two');
  });

  it('a model failing mid-stream ends the event stream with an error event, after every delta it wrote', async () => {
    // A model that declares no context fails at its graph's 2048 positions (as in the engine's validation tests).
    const dir = testDir('responses-undeclared');
    for (const file of ['model.onnx', 'model.onnx.data', 'tokenizer.json']) await copyFile(join(models.llamaFp16, file), join(dir, file));
    const { model_max_length: _, ...config } = JSON.parse(await readFile(join(models.llamaFp16, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
    await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify(config));
    const at = await serve({ engine: { model: join(dir, 'model.onnx') }, name: 'undeclared', chatTemplate: TOOLS_TEMPLATE });
    const body = { model: 'undeclared', input: 'Hi', max_output_tokens: 5000, temperature: 0, ignore_eos: true, stream: true };
    const events = responseEvents(await (await postJson(at, '/v1/responses', body)).text());
    const last = events.at(-1)!;
    expect(last.type).to.equal('error');
    expect(last.message).to.match(/position 2048/);
    expect(events.filter((e) => e.type === 'response.output_text.delta').length).to.be.greaterThan(100);
    expect(events.some((e) => e.type === 'response.completed')).to.equal(false);
    // The server goes on answering.
    expect((await postJson(url, '/v1/responses', { model: 'stories260k', input: 'Hi', max_output_tokens: 2 })).status).to.equal(200);
  });

  it("repeat_last_n and the chat's other sampling extensions read as the chat endpoint reads them", async () => {
    const reply = async (path: string, body: object) => (await (await postJson(url, path, { model: 'stories260k', ...body })).json()) as Record<string, unknown>;
    const chatText = async (extra: object) =>
      ((await reply('/v1/chat/completions', { messages: [{ role: 'user', content: 'Tell me a story' }], max_tokens: 60, ...extra })) as { choices: { message: { content: string } }[] }).choices[0]!.message.content;
    const penalized = { temperature: 0, repetition_penalty: 1.5 };
    const windowed = await chatText({ ...penalized, repeat_last_n: 4 });
    // (the window changes this reply: a route dropping it answers otherwise)
    expect(windowed).to.not.equal(await chatText(penalized));
    const response = (await reply('/v1/responses', { input: 'Tell me a story', max_output_tokens: 60, ...penalized, repeat_last_n: 4 })) as { output: { content: { text: string }[] }[] };
    expect(response.output[0]!.content[0]!.text).to.equal(windowed);
    const extensions = { temperature: 0.7, seed: 11, min_p: 0.1, repetition_penalty: 1.3, repeat_last_n: 8, frequency_penalty: 0.5, presence_penalty: 0.5, logit_bias: { '300': 2 }, ignore_eos: true };
    const sampled = (await reply('/v1/responses', { input: 'Tell me a story', max_output_tokens: 60, ...extensions })) as typeof response;
    expect(sampled.output[0]!.content[0]!.text).to.equal(await chatText(extensions));
  });

  it('refuses by name what a stateless text server cannot do', async () => {
    for (const [extra, param] of [
      [{ top_logprobs: 21 }, 'top_logprobs'],
      [{ include: 'logprobs' }, 'include'],
      [{ previous_response_id: 'resp_1' }, 'previous_response_id'],
      [{ background: true }, 'background'],
      [{ tools: [{ type: 'web_search' }] }, 'tools[0]'],
      [{ input: [{ role: 'user', content: [{ type: 'input_image', image_url: 'https://x/y.png' }] }] }, 'input[0].content[0]'],
      [{ max_output_tokens: 0 }, 'max_output_tokens'],
      [{ text: { format: { type: 'yaml' } } }, 'text.format.type'],
      [{ input: [{ type: 'computer_call_output' }] }, 'input[0]'],
      // chat completions' constraint fields: the Responses API's is text.format
      [{ response_format: { type: 'json_object' } }, 'response_format'],
      [{ guided_json: { type: 'object' } }, 'guided_json'],
    ] as const) {
      const res = await postJson(url, '/v1/responses', { model: 'stories260k', input: 'Hi', ...extra });
      expect(res.status, param).to.equal(400);
      expect(((await res.json()) as { error: { param: string } }).error.param, param).to.equal(param);
    }
    expect((await postJson(url, '/v1/responses', { model: 'nope', input: 'Hi' })).status).to.equal(404);
    // a tool written as chat completions writes it, or without its name: the error spells the Responses shape
    for (const [tool, param, message] of [
      [{ type: 'function', function: { name: 'f', parameters: {} } }, 'tools[0]', /is a chat completions tool .*this API's tools are \{"type": "function", "name"/],
      [{ type: 'function', parameters: {} }, 'tools[0].name', /tools are \{"type": "function", "name"/],
    ] as const) {
      const res = await postJson(url, '/v1/responses', { model: 'stories260k', input: 'Hi', tools: [tool] });
      const { error } = (await res.json()) as { error: { param: string; message: string } };
      expect([res.status, error.param]).to.deep.equal([400, param]);
      expect(error.message).to.match(message);
    }
  });
});
