/**
 * `POST /v1/messages` against what Anthropic's SDK declares: consecutive user or assistant messages combined into one
 * turn and system messages in place; the `adaptive` and `between_tools` thinking types and `display: "omitted"`;
 * the `request-id` header and error bodies' `request_id`; answers and stream events that compile as the SDK's
 * types; refusals that name the field at fault; `model_context_window_exceeded` for a reply the context cut.
 */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import ts from 'typescript';
import Anthropic from '@anthropic-ai/sdk';
import { postJson, useServers } from './support/servers.js';
import { scriptedChatModule, storiesModule } from './support/modules.js';
import { GEMMA_TEMPLATE, THINKING_TEMPLATE, TOOLS_TEMPLATE } from './support/chat-templates.js';

const KEY = 'messages-sdk-key';
/** Greedy decoding (the SDK's types no longer carry `temperature`; the API takes it). */
const GREEDY: object = { temperature: 0 };
const MODEL = 'stories260k';

/** The `data` of each server-sent event of a stream. */
async function events(res: Response): Promise<{ type: string; [key: string]: unknown }[]> {
  return (await res.text())
    .split('\n')
    .filter((line) => line.startsWith('data: '))
    .map((line) => JSON.parse(line.slice('data: '.length)) as { type: string });
}

/**
 * The TypeScript errors of `values` given as the SDK types named (`Anthropic.Message`, …): each is written as a
 * typed constant of a module placed beside the tests (so that the SDK resolves) and compiled, strict, unwritten.
 */
function typeErrors(values: [type: string, value: unknown][]): string[] {
  const file = join(dirname(fileURLToPath(import.meta.url)), 'anthropic-answers.check.ts');
  const source = [
    "import type Anthropic from '@anthropic-ai/sdk';",
    "import type { ErrorResponse } from '@anthropic-ai/sdk/resources/shared';",
    'export type { ErrorResponse };',
    ...values.map(([type, value], i) => `export const v${i}: ${type} = ${JSON.stringify(value)};`),
  ].join('\n');
  const options: ts.CompilerOptions = { strict: true, noEmit: true, skipLibCheck: true, types: [], module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext, target: ts.ScriptTarget.ES2022 };
  const host = ts.createCompilerHost(options);
  const read = host.getSourceFile.bind(host);
  const exists = host.fileExists.bind(host);
  host.getSourceFile = (name, language, ...rest) => (name === file ? ts.createSourceFile(name, source, language) : read(name, language, ...rest));
  host.fileExists = (name) => name === file || exists(name);
  return ts.getPreEmitDiagnostics(ts.createProgram([file], options, host)).map((d) => {
    const line = d.file && d.start !== undefined ? d.file.getLineAndCharacterOfPosition(d.start).line : -1;
    return `${source.split('\n')[line]?.slice(0, 60)}: ${ts.flattenDiagnosticMessageText(d.messageText, ' ')}`;
  });
}

describe('reasonplug serve: /v1/messages as the Anthropic SDK declares it', function () {
  this.timeout(180_000);
  let url: string;
  let gemma: string;
  let thinker: string;
  let client: Anthropic;
  const question = 'What are two and two?';
  const reply = '<think>\nTwo and two make four.\n</think>\n\nFour.';
  const { serve } = useServers();
  const post = (at: string, path: string, body: unknown, headers: Record<string, string> = {}) => postJson(at, path, body, { 'x-api-key': KEY, ...headers });
  const count = async (at: string, messages: unknown[]) => {
    const res = await post(at, '/v1/messages/count_tokens', { model: MODEL, messages });
    const body = (await res.json()) as { input_tokens: number };
    expect(res.status, JSON.stringify(body)).to.equal(200);
    return body.input_tokens;
  };
  /** The tokens of the prompt the chat endpoint renders for `messages`. */
  const chatCount = async (messages: unknown[]) => ((await (await post(url, '/tokenize', { model: MODEL, messages })).json()) as { count: number }).count;

  before(async () => {
    const model = await storiesModule();
    url = await serve({ engine: { model }, chatTemplate: TOOLS_TEMPLATE, apiKeys: [KEY] });
    gemma = await serve({ engine: { model }, chatTemplate: GEMMA_TEMPLATE, apiKeys: [KEY] });
    const { dir } = await scriptedChatModule('messages-sdk-thinker', THINKING_TEMPLATE, [{ role: 'user', content: question }], reply);
    thinker = await serve({ engine: { model: dir }, name: MODEL, apiKeys: [KEY] });
    client = new Anthropic({ baseURL: url, apiKey: KEY, maxRetries: 0 });
  });

  it('consecutive user or assistant messages are one turn (a template that wants roles to alternate answers them)', async () => {
    const runs = [
      [{ role: 'user', content: 'Hi' }, { role: 'user', content: 'Tell me a story' }],
      [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello.' }, { role: 'assistant', content: 'Hi again.' }, { role: 'user', content: 'Go on' }],
    ];
    const merged = [
      [{ role: 'user', content: [{ type: 'text', text: 'Hi' }, { type: 'text', text: 'Tell me a story' }] }],
      [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: [{ type: 'text', text: 'Hello.' }, { type: 'text', text: 'Hi again.' }] }, { role: 'user', content: 'Go on' }],
    ];
    for (const [i, messages] of runs.entries()) {
      const res = await post(gemma, '/v1/messages', { model: MODEL, max_tokens: 4, ...GREEDY, messages });
      expect(res.status, JSON.stringify(await res.clone().json())).to.equal(200);
      expect(await count(gemma, messages)).to.equal(await count(gemma, merged[i]!));
    }
    // An assistant run's calls are collected; a user run's tool results stay tool messages, in order, before its text.
    const call = (id: string, a: number) => ({ type: 'tool_use', id, name: 'add', input: { a, b: 1 } });
    const calls = [
      { role: 'user', content: 'Add' },
      { role: 'assistant', content: [{ type: 'text', text: 'Adding.' }, call('t1', 1)] },
      { role: 'assistant', content: [call('t2', 2)] },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: 't1', content: '2' }] },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: 't2', content: '3' }, { type: 'text', text: 'and?' }] },
    ];
    const chatCall = (id: string, a: number) => ({ id, type: 'function', function: { name: 'add', arguments: JSON.stringify({ a, b: 1 }) } });
    const chat = [
      { role: 'user', content: 'Add' },
      { role: 'assistant', content: 'Adding.', tool_calls: [chatCall('t1', 1), chatCall('t2', 2)] },
      { role: 'tool', tool_call_id: 't1', content: '2' },
      { role: 'tool', tool_call_id: 't2', content: '3' },
      { role: 'user', content: 'and?' },
    ];
    expect(await count(url, calls)).to.equal(await chatCount(chat));
    // A final assistant run is the prefill, continued as the one message it makes.
    const story = { role: 'user' as const, content: 'Tell me a story' };
    const split = [story, { role: 'assistant' as const, content: 'Once upon' }, { role: 'assistant' as const, content: ' a time' }];
    const whole = [story, { role: 'assistant' as const, content: 'Once upon a time' }];
    expect(await count(url, split)).to.equal(await count(url, whole));
    const text = async (messages: Anthropic.MessageParam[]) => (await client.messages.create({ model: MODEL, max_tokens: 6, ...GREEDY, messages })).content.map((b) => (b as Anthropic.TextBlock).text).join('');
    expect(await text(split)).to.equal(await text(whole));
  });

  it('a system message among the messages is a system message in place', async () => {
    const messages: Anthropic.MessageParam[] = [{ role: 'user', content: 'Hi' }, { role: 'system', content: [{ type: 'text', text: 'Answer briefly.' }] }, { role: 'user', content: 'Go on' }];
    const counted = await client.messages.countTokens({ model: MODEL, messages });
    expect(counted.input_tokens).to.equal(await chatCount([{ role: 'user', content: 'Hi' }, { role: 'system', content: 'Answer briefly.' }, { role: 'user', content: 'Go on' }]));
    const answer = await client.messages.create({ model: MODEL, max_tokens: 2, ...GREEDY, messages });
    expect(answer.usage.input_tokens + answer.usage.cache_read_input_tokens!).to.equal(counted.input_tokens);
  });

  it('thinking adaptive and between_tools leave the thought to the template; display "omitted" gives thinking blocks without their text', async () => {
    const sdk = new Anthropic({ baseURL: thinker, apiKey: KEY, maxRetries: 0 });
    const ask = { model: MODEL, max_tokens: 60, ...GREEDY, messages: [{ role: 'user' as const, content: question }] };
    const blocks = (m: Anthropic.Message) => m.content.map((b) => (b.type === 'thinking' ? ['thinking', b.thinking, b.signature] : b.type === 'text' ? ['text', b.text] : [b.type]));
    const shown = [['thinking', 'Two and two make four.', ''], ['text', 'Four.']];
    for (const thinking of [{ type: 'adaptive' }, { type: 'adaptive', display: 'summarized' }, { type: 'between_tools' }] as const) {
      expect(blocks(await sdk.messages.create({ ...ask, thinking })), JSON.stringify(thinking)).to.deep.equal(shown);
    }
    const omitted = [['thinking', '', ''], ['text', 'Four.']];
    for (const thinking of [{ type: 'adaptive', display: 'omitted' }, { type: 'enabled', budget_tokens: 40, display: 'omitted' }] as const) {
      expect(blocks(await sdk.messages.create({ ...ask, thinking })), JSON.stringify(thinking)).to.deep.equal(omitted);
      const stream = await post(thinker, '/v1/messages', { ...ask, thinking, stream: true });
      const deltas = (await events(stream)).filter((e) => e.type === 'content_block_delta').map((e) => (e.delta as { type: string }).type);
      expect(deltas, JSON.stringify(thinking)).to.include('signature_delta').and.include('text_delta').and.not.include('thinking_delta');
    }
    let thought = '';
    const streamed = sdk.messages.stream({ ...ask, thinking: { type: 'adaptive', display: 'omitted' } });
    streamed.on('thinking', (delta) => (thought += delta));
    expect(blocks(await streamed.finalMessage())).to.deep.equal(omitted);
    expect(thought).to.equal('');
    const bad = await post(thinker, '/v1/messages', { ...ask, thinking: { type: 'adaptive', display: 'hidden' } });
    expect(bad.status).to.equal(400);
    expect(((await bad.json()) as { error: { message: string } }).error.message).to.match(/^thinking\.display must be "summarized" or "omitted"/);
  });

  it('the request id is the request-id header and an error body\'s request_id (the SDK\'s request_id and requestID); CORS exposes it', async () => {
    const { response, request_id } = await client.messages.create({ model: MODEL, max_tokens: 2, messages: [{ role: 'user', content: 'Hi' }] }).withResponse();
    expect(request_id).to.match(/^req_[0-9a-f]{32}$/).and.equal(response.headers.get('x-request-id'));
    const failed = (await client.messages.create({ model: 'nope', max_tokens: 2, messages: [{ role: 'user', content: 'Hi' }] }).catch((e: unknown) => e)) as InstanceType<typeof Anthropic.APIError>;
    expect(failed).to.be.instanceOf(Anthropic.NotFoundError);
    expect(failed.requestID).to.match(/^req_/);
    expect(failed.error).to.deep.include({ type: 'error', request_id: failed.requestID });
    // A proxy's id is kept, in both headers and the body.
    const traced = await post(url, '/v1/messages', { model: MODEL, messages: [] }, { 'x-request-id': 'trace-32' });
    expect([traced.status, traced.headers.get('request-id')]).to.deep.equal([400, 'trace-32']);
    expect(((await traced.json()) as { request_id: string }).request_id).to.equal('trace-32');
    const page = await post(url, '/v1/messages/count_tokens', { model: MODEL, messages: [{ role: 'user', content: 'Hi' }] }, { Origin: 'http://localhost:5173' });
    expect(page.headers.get('access-control-expose-headers')?.split(/,\s*/)).to.include('request-id');
  });

  it('messages, their stream events, counts and errors compile as the SDK types; always-present fields are there', async () => {
    const ask = { model: MODEL, max_tokens: 4, ...GREEDY, messages: [{ role: 'user', content: 'Hi' }] };
    const message = (await (await post(url, '/v1/messages', ask)).json()) as Anthropic.Message;
    expect(message).to.deep.include({ container: null, stop_details: null, diagnostics: null });
    expect(message.content[0]).to.deep.include({ type: 'text', citations: null });
    expect(message.usage).to.deep.include({ cache_creation: { ephemeral_5m_input_tokens: 0, ephemeral_1h_input_tokens: 0 }, server_tool_use: null, service_tier: 'standard', output_tokens_details: { thinking_tokens: 0 } });
    const stream = await events(await post(url, '/v1/messages', { ...ask, stream: true }));
    const tools = [{ name: 'add', description: 'Add two integers', input_schema: { type: 'object', properties: { a: { enum: [2] }, b: { enum: [3] } }, required: ['a', 'b'] } }];
    const called = { ...ask, max_tokens: 80, tools, tool_choice: { type: 'tool', name: 'add' }, messages: [{ role: 'user', content: 'Add 2 and 3' }] };
    const toolMessage = (await (await post(url, '/v1/messages', called)).json()) as Anthropic.Message;
    expect(toolMessage.content.find((b) => b.type === 'tool_use')).to.deep.include({ name: 'add', caller: { type: 'direct' } });
    const toolStream = await events(await post(url, '/v1/messages', { ...called, stream: true }));
    const thought = { model: MODEL, max_tokens: 60, ...GREEDY, messages: [{ role: 'user', content: question }] };
    const thinking = (await (await post(thinker, '/v1/messages', thought)).json()) as Anthropic.Message;
    expect(thinking.usage.output_tokens_details!.thinking_tokens).to.be.greaterThan(0).and.lessThan(thinking.usage.output_tokens);
    const thinkingStream = await events(await post(thinker, '/v1/messages', { ...thought, stream: true }));
    const counted = await (await post(url, '/v1/messages/count_tokens', { model: MODEL, messages: ask.messages })).json();
    const error = await (await post(url, '/v1/messages', { ...ask, model: 'nope' })).json();
    const streamed = [...stream, ...toolStream, ...thinkingStream];
    expect(streamed.map((e) => e.type)).to.include.members(['message_start', 'content_block_start', 'content_block_delta', 'content_block_stop', 'message_delta', 'message_stop']);
    const errors = typeErrors([
      ...[message, toolMessage, thinking].map((m): [string, unknown] => ['Anthropic.Message', m]),
      ...streamed.map((e): [string, unknown] => ['Anthropic.RawMessageStreamEvent', e]),
      ['Anthropic.MessageTokensCount', counted],
      ['ErrorResponse', error],
    ]);
    expect(errors).to.deep.equal([]);
  });

  it('a known block in the wrong role or without its fields is refused by its real fault', async () => {
    const user = (content: unknown) => [{ role: 'user', content }];
    for (const [messages, fault] of [
      [user([{ type: 'tool_result', content: '5' }]), 'messages[0].content[0].tool_use_id must be a string'],
      [user([{ type: 'tool_result', tool_use_id: 7, content: '5' }]), 'messages[0].content[0].tool_use_id must be a string'],
      [[{ role: 'user', content: 'Hi' }, { role: 'assistant', content: [{ type: 'tool_result', tool_use_id: 'x', content: '5' }] }], 'messages[1].content[0]: tool_result blocks go in user messages, not assistant ones'],
      [user([{ type: 'tool_use', id: 'x', name: 'f', input: {} }]), 'messages[0].content[0]: tool_use blocks go in assistant messages, not user ones'],
      [user([{ type: 'thinking', thinking: 'Hmm', signature: '' }]), 'messages[0].content[0]: thinking blocks go in assistant messages, not user ones'],
      [user([{ type: 'text' }]), 'messages[0].content[0].text must be a string'],
      [[{ role: 'user', content: 'Hi' }, { role: 'assistant', content: [{ type: 'tool_use', id: 'x', input: {} }] }], 'messages[1].content[0].name must be a string'],
      [[{ role: 'user', content: 'Hi' }, { role: 'assistant', content: [{ type: 'thinking', signature: '' }] }], 'messages[1].content[0].thinking must be a string'],
      [user([{ type: 'tool_result', tool_use_id: 'x', content: [{ type: 'tool_use', id: 'y', name: 'f', input: {} }] }]), 'messages[0].content[0].content[0] is a "tool_use" block: messages[0].content[0].content takes text blocks only'],
      [user([{ text: 'Hi' }]), 'messages[0].content[0] must be a content block, an object with its "type"'],
      [[{ role: 'tool', content: 'Hi' }], 'messages[0] must be a message whose role is "user", "assistant" or "system"'],
    ] as const) {
      const res = await post(url, '/v1/messages', { model: MODEL, max_tokens: 4, messages });
      const body = (await res.json()) as { error: { type: string; message: string } };
      expect([res.status, body.error.type, body.error.message]).to.deep.equal([400, 'invalid_request_error', fault]);
    }
    // An unknown type is still refused by name.
    const image = await post(url, '/v1/messages', { model: MODEL, max_tokens: 4, messages: user([{ type: 'image', source: { type: 'url', url: 'https://x/y.png' } }]) });
    expect(((await image.json()) as { error: { message: string } }).error.message).to.match(/"image" block: this server's models read text/);
  });

  it('a reply the end of the context cut before max_tokens stops with model_context_window_exceeded, whole and streamed', async () => {
    const context = ((await (await fetch(`${url}/v1/models`, { headers: { 'x-api-key': KEY } })).json()) as { data: { max_model_len: number }[] }).data[0]!.max_model_len;
    // A prompt that leaves some 40 positions of the context (ignore_eos: the reply runs on to its limit).
    const story = (n: number) => [{ role: 'user' as const, content: 'Once upon a time there was a dog. '.repeat(n) }];
    const [ten, eleven] = [await count(url, story(10)), await count(url, story(11))];
    const messages = story(10 + Math.floor((context - 40 - ten) / (eleven - ten)));
    const ask = { model: MODEL, messages, ...GREEDY, ...({ ignore_eos: true } as object) };
    const cut = await client.messages.create({ ...ask, max_tokens: 100 });
    expect(cut.usage.output_tokens).to.be.within(20, 99);
    expect(cut.stop_reason).to.equal('model_context_window_exceeded');
    const streamed = await client.messages.stream({ ...ask, max_tokens: 100 }).finalMessage();
    expect(streamed.stop_reason).to.equal('model_context_window_exceeded');
    const limited = await client.messages.create({ ...ask, max_tokens: 5 });
    expect([limited.stop_reason, limited.usage.output_tokens]).to.deep.equal(['max_tokens', 5]);
  });
});
