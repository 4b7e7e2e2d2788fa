/**
 * `POST /v1/messages` (Anthropic's Messages API) through `reasonplug serve`, with Anthropic's own SDK: a message
 * and its stream answer as the chat endpoint does, a stop sequence named where it ends one; a forced tool's `tool_use` and the `tool_result` of the next
 * turn; `count_tokens` against `/tokenize`; a reasoning model's `thinking` block and `thinking.budget_tokens` as
 * the thinking budget; a last assistant message continued (Anthropic's prefill); `x-api-key`; errors in
 * Anthropic's shape.
 */
import { expect } from 'chai';
import Anthropic from '@anthropic-ai/sdk';
import { postJson, useServers } from './support/servers.js';
import { TextTokenizer } from '../src/tokenizer/tokenizer.js';
import { scriptedChatModule, storiesModule } from './support/modules.js';
import { THINKING_TEMPLATE, TOOLS_TEMPLATE } from './support/chat-templates.js';

const KEY = 'messages-key';
/**
 * Greedy decoding: the SDK's types no longer carry `temperature` (its default, as Anthropic's and this server's, is
 * 1), but the API takes it and older clients send it; spread in untyped.
 */
const GREEDY: object = { temperature: 0 };

describe('reasonplug serve: /v1/messages (Anthropic SDK)', function () {
  this.timeout(120_000);
  let url: string;
  let client: Anthropic;
  const { serve } = useServers();
  const post = (at: string, path: string, body: unknown) => postJson(at, path, body, { 'x-api-key': KEY });
  /** The chat endpoint's greedy reply to the same conversation. */
  const viaChat = async (messages: unknown[], maxTokens: number, extra: Record<string, unknown> = {}) => {
    const res = await fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${KEY}` },
      body: JSON.stringify({ model: 'stories260k', messages, max_tokens: maxTokens, temperature: 0, ...extra }),
    });
    return ((await res.json()) as { choices: { message: { content: string } }[]; usage: { prompt_tokens: number } });
  };

  before(async () => {
    url = await serve({ engine: { model: await storiesModule() }, chatTemplate: TOOLS_TEMPLATE, apiKeys: [KEY] });
    client = new Anthropic({ baseURL: url, apiKey: KEY, maxRetries: 0 });
  });

  it('messages.create and the stream helper answer as the chat endpoint does; usage and stop reason', async () => {
    const question = [{ role: 'user' as const, content: 'Tell me a story' }];
    const chat = await viaChat(question, 12);
    const message = await client.messages.create({ model: 'stories260k', max_tokens: 12, ...GREEDY, messages: question });
    expect(message.id).to.match(/^msg_/);
    expect(message.content.map((b) => b.type)).to.deep.equal(['text']);
    expect((message.content[0] as Anthropic.TextBlock).text).to.equal(chat.choices[0]!.message.content);
    expect(message.stop_reason).to.equal('max_tokens');
    expect(message.usage.output_tokens).to.equal(12);
    // Anthropic counts what the cache held apart (the chat call just ran this prompt): together they are the prompt.
    expect(message.usage.cache_read_input_tokens).to.be.greaterThan(0);
    expect(message.usage.input_tokens + message.usage.cache_read_input_tokens!).to.equal(chat.usage.prompt_tokens);
    const stream = client.messages.stream({ model: 'stories260k', max_tokens: 12, ...GREEDY, messages: question });
    let deltas = '';
    stream.on('text', (text) => (deltas += text));
    const starts: Anthropic.MessageStartEvent[] = [];
    // (copied as it comes: the helper builds its final message on the same object)
    stream.on('streamEvent', (e) => void (e.type === 'message_start' && starts.push(structuredClone(e))));
    const final = await stream.finalMessage();
    expect(deltas).to.equal(chat.choices[0]!.message.content);
    // message_start already splits the prompt between input and cache reads as the end does (the cache held it)
    expect(final.usage.cache_read_input_tokens).to.be.greaterThan(0);
    expect(starts[0]!.message.usage).to.include({ input_tokens: final.usage.input_tokens, cache_read_input_tokens: final.usage.cache_read_input_tokens, output_tokens: 0 });
    expect((final.content[0] as Anthropic.TextBlock).text).to.equal(deltas);
    expect(final.stop_reason).to.equal('max_tokens');
    // A stop sequence ends the message, which names it (whole and streamed): one of two, cut from the text as the chat endpoint cuts it.
    const text = chat.choices[0]!.message.content;
    const cut = text.slice(4, 7);
    // (more than OpenAI's 4: Anthropic sets no such limit)
    const stops = ['never in this story', 'nor this', 'nor that', 'nor here', cut];
    const stopped = await client.messages.create({ model: 'stories260k', max_tokens: 12, ...GREEDY, messages: question, stop_sequences: stops });
    expect(stopped).to.deep.include({ stop_reason: 'stop_sequence', stop_sequence: cut });
    expect((stopped.content[0] as Anthropic.TextBlock).text).to.equal(text.slice(0, text.indexOf(cut)));
    const streamedStop = await client.messages.stream({ model: 'stories260k', max_tokens: 12, ...GREEDY, messages: question, stop_sequences: stops }).finalMessage();
    expect(streamedStop).to.deep.include({ stop_reason: 'stop_sequence', stop_sequence: cut });
    expect(message.stop_sequence).to.equal(null);
    // The system prompt and count_tokens: the prompt the chat endpoint renders for the same messages.
    const system = 'You tell stories.';
    const counted = await client.messages.countTokens({ model: 'stories260k', system, messages: question });
    expect(counted.input_tokens).to.equal((await viaChat([{ role: 'system', content: system }, ...question], 1)).usage.prompt_tokens);
  });

  it("a forced tool comes back as tool_use with its input; its tool_result is the next turn's tool message", async () => {
    const tools = [{ name: 'add', description: 'Add two integers', input_schema: { type: 'object' as const, properties: { a: { enum: [2] }, b: { enum: [3] } }, required: ['a', 'b'] } }];
    const question = { role: 'user' as const, content: 'Add 2 and 3' };
    const called = await client.messages.create({ model: 'stories260k', max_tokens: 80, ...GREEDY, tools, tool_choice: { type: 'tool', name: 'add' }, messages: [question] });
    const use = called.content.find((b): b is Anthropic.ToolUseBlock => b.type === 'tool_use')!;
    expect([use.name, use.input]).to.deep.equal(['add', { a: 2, b: 3 }]);
    expect(called.stop_reason).to.equal('tool_use');
    const next = [question, { role: 'assistant' as const, content: called.content }, { role: 'user' as const, content: [{ type: 'tool_result' as const, tool_use_id: use.id, content: '5' }] }];
    const counted = await client.messages.countTokens({ model: 'stories260k', tools, messages: next });
    // The same turn through the chat endpoint: the call as tool_calls, the result as a tool message.
    const chatTurn = [
      { role: 'user', content: 'Add 2 and 3' },
      { role: 'assistant', content: '', tool_calls: [{ id: use.id, type: 'function', function: { name: 'add', arguments: JSON.stringify(use.input) } }] },
      { role: 'tool', tool_call_id: use.id, content: '5' },
    ];
    const chatTools = [{ type: 'function', function: { name: 'add', description: 'Add two integers', parameters: tools[0]!.input_schema } }];
    expect(counted.input_tokens).to.equal((await viaChat(chatTurn, 1, { tools: chatTools, tool_choice: 'none' })).usage.prompt_tokens);
    const answer = await client.messages.create({ model: 'stories260k', max_tokens: 4, ...GREEDY, tools, messages: next });
    expect(answer.usage.input_tokens + answer.usage.cache_read_input_tokens!).to.equal(counted.input_tokens);
  });

  it('a last assistant message is continued (the prefill), not answered anew', async () => {
    const whole = await client.messages.create({ model: 'stories260k', max_tokens: 24, ...GREEDY, messages: [{ role: 'user', content: 'Tell me a story' }] });
    const text = (whole.content[0] as Anthropic.TextBlock).text;
    const prefill = text.split(' ').slice(0, 4).join(' ');
    const continued = await client.messages.create({
      model: 'stories260k',
      max_tokens: 8,
      ...GREEDY,
      messages: [{ role: 'user', content: 'Tell me a story' }, { role: 'assistant', content: prefill }],
    });
    expect(`${prefill}${(continued.content[0] as Anthropic.TextBlock).text}`.startsWith(text.slice(0, prefill.length + 8))).to.equal(true);
  });

  it("a reasoning model's thought is a thinking block; thinking.budget_tokens caps it", async () => {
    const question = 'What are two and two?';
    const reply = '<think>\nTwo and two make four.\n</think>\n\nFour.';
    const { dir, replyIds } = await scriptedChatModule('messages-thinker', THINKING_TEMPLATE, [{ role: 'user', content: question }], reply);
    const at = await serve({ engine: { model: dir }, name: 'thinker' });
    const thinker = new Anthropic({ baseURL: at, apiKey: 'none', maxRetries: 0 });
    const ask = { model: 'thinker', max_tokens: 60, ...GREEDY, messages: [{ role: 'user' as const, content: question }] };
    const whole = await thinker.messages.create(ask);
    expect(whole.content.map((b) => (b.type === 'thinking' ? ['thinking', b.thinking] : b.type === 'text' ? ['text', b.text] : [b.type]))).to.deep.equal([
      ['thinking', 'Two and two make four.'],
      ['text', 'Four.'],
    ]);
    expect(whole.stop_reason).to.equal('end_turn');
    const stream = thinker.messages.stream(ask);
    let thought = '';
    stream.on('thinking', (delta) => (thought += delta));
    await stream.finalMessage();
    expect(thought).to.equal('Two and two make four.');
    const tokenizer = await TextTokenizer.fromDirectory(dir);
    const opened = replyIds.findIndex((_, k) => tokenizer.decode(replyIds.slice(0, k + 1)).trimStart().startsWith('<think>')) + 1;
    const written = tokenizer.decode(replyIds.slice(0, opened + 3));
    const capped = await thinker.messages.create({ ...ask, thinking: { type: 'enabled', budget_tokens: 3 } });
    expect((capped.content[0] as Anthropic.ThinkingBlock).thinking).to.equal(written.slice(written.indexOf('<think>') + '<think>'.length).trim());
    // thinking disabled asks the template for no thought (Qwen3's enable_thinking: false writes an empty one).
    const { model: _, max_tokens: __, ...prompt } = ask;
    const count = async (extra: object) => (await thinker.messages.countTokens({ model: 'thinker', ...prompt, ...extra })).input_tokens;
    const off = tokenizer.encode(tokenizer.applyChatTemplate([{ role: 'user', content: question }], { template: THINKING_TEMPLATE, extra: { enable_thinking: false } }), false).length;
    expect(await count({ thinking: { type: 'disabled' } })).to.equal(off);
    expect(await count({})).to.be.lessThan(off);
  });

  it("takes the chat's sampling extensions and output_config.format (output_format, its beta name) as the chat endpoint does; response_format is refused by name", async () => {
    const question = [{ role: 'user', content: 'Tell me a story' }];
    const text = async (body: object) => {
      const res = await post(url, '/v1/messages', { model: 'stories260k', messages: question, ...body });
      const message = (await res.json()) as { content: { text: string }[]; stop_reason: string };
      expect(res.status, JSON.stringify(message)).to.equal(200);
      return message.content[0]!.text;
    };
    const sampled = { temperature: 0.7, seed: 11 };
    const extensions = { min_p: 0.1, repetition_penalty: 1.3, repeat_last_n: 8, frequency_penalty: 0.5, presence_penalty: 0.5, logit_bias: { '300': 2 }, ignore_eos: true };
    const chat = (await viaChat(question, 30, { ...sampled, ...extensions })).choices[0]!.message.content;
    // (the extensions change this reply: a route dropping them answers otherwise)
    expect(chat).to.not.equal((await viaChat(question, 30, sampled)).choices[0]!.message.content);
    expect(await text({ max_tokens: 30, ...sampled, ...extensions })).to.equal(chat);

    const schema = { type: 'object', properties: { name: { type: 'string', maxLength: 12 }, age: { type: 'integer', minimum: 0, maximum: 120 } }, required: ['name', 'age'], additionalProperties: false };
    // settings under which the tiny model finishes the structure (as in the chat endpoint's tests)
    const finishing = { temperature: 0.7, seed: 11, repetition_penalty: 1.3 };
    const person = [{ role: 'user', content: 'Make a person.' }];
    const structured = (await viaChat(person, 80, { ...finishing, response_format: { type: 'json_schema', json_schema: { name: 'person', schema } } })).choices[0]!.message.content;
    expect(JSON.parse(structured)).to.have.keys('name', 'age');
    for (const format of [{ output_config: { format: { type: 'json_schema', schema } } }, { output_format: { type: 'json_schema', schema } }]) {
      expect(await text({ messages: person, max_tokens: 80, ...finishing, ...format }), JSON.stringify(format)).to.equal(structured);
    }
    for (const [extra, param] of [
      [{ response_format: { type: 'json_object' } }, 'response_format'],
      [{ guided_json: schema }, 'guided_json'],
      [{ output_config: { format: { type: 'json_object' } } }, 'output_config.format'],
      [{ output_config: { format: { type: 'json_schema', schema } }, output_format: { type: 'json_schema', schema } }, 'output_format'],
      [{ output_config: { verbosity: 'low' } }, 'output_config.verbosity'],
    ] as const) {
      const res = await post(url, '/v1/messages', { model: 'stories260k', max_tokens: 4, messages: question, ...extra });
      const { error } = (await res.json()) as { error: { type: string; message: string } };
      expect([res.status, error.type], param).to.deep.equal([400, 'invalid_request_error']);
      expect(error.message, param).to.include(param);
    }
  });

  it("refuses what it cannot take, in Anthropic's error shape; the key goes as x-api-key", async () => {
    for (const [body, status, type, match] of [
      [{ model: 'stories260k', messages: [{ role: 'user', content: 'Hi' }] }, 400, 'invalid_request_error', /^max_tokens is required/],
      [{ model: 'stories260k', max_tokens: 4, messages: [{ role: 'user', content: [{ type: 'image', source: { type: 'url', url: 'https://x/y.png' } }] }] }, 400, 'invalid_request_error', /"image" block/],
      [{ model: 'stories260k', max_tokens: 4, tools: [{ type: 'web_search_20250305', name: 'web_search' }], messages: [{ role: 'user', content: 'Hi' }] }, 400, 'invalid_request_error', /web_search_20250305/],
      // a tool as chat completions writes it, or without its name: the error spells Anthropic's shape
      [{ model: 'stories260k', max_tokens: 4, tools: [{ type: 'function', function: { name: 'f', parameters: {} } }], messages: [{ role: 'user', content: 'Hi' }] }, 400, 'invalid_request_error', /tools\[0\] is a chat completions tool .*"input_schema"/],
      [{ model: 'stories260k', max_tokens: 4, tools: [{ input_schema: { type: 'object' } }], messages: [{ role: 'user', content: 'Hi' }] }, 400, 'invalid_request_error', /tools\[0\]\.name must be the tool's name: tools are \{"name"/],
      [{ model: 'nope', max_tokens: 4, messages: [{ role: 'user', content: 'Hi' }] }, 404, 'not_found_error', /nope/],
    ] as const) {
      const res = await post(url, '/v1/messages', body);
      expect(res.status).to.equal(status);
      const err = (await res.json()) as { type: string; error: { type: string; message: string } };
      expect(err.type).to.equal('error');
      expect(err.error.type).to.equal(type);
      expect(err.error.message).to.match(match);
    }
    const wrong = await new Anthropic({ baseURL: url, apiKey: 'wrong', maxRetries: 0 }).messages.create({ model: 'stories260k', max_tokens: 2, messages: [{ role: 'user', content: 'Hi' }] }).catch((e: unknown) => e);
    expect(wrong).to.be.instanceOf(Anthropic.AuthenticationError);
  });
});
