/**
 * `reasonplug serve` on loopback, with real clients: @langchain/openai's ChatOpenAI (invoke, stream with usage,
 * withStructuredOutput's default method, tool calls), plain fetch (SSE, errors, 401, 404, 405, 413, 429, HEAD,
 * disconnects, SIGTERM on the CLI as a child process) and raw sockets (Connection, absolute-form targets). The model is
 * the converted stories260K; replies are compared with the engine's own greedy output for the same prompt, and
 * structured replies are checked with ajv.
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { connect } from 'node:net';
import { fileURLToPath } from 'node:url';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { ChatOpenAI } from '@langchain/openai';
import { tool } from '@langchain/core/tools';
import { AIMessage, HumanMessage } from '@langchain/core/messages';
import { z } from 'zod';
import { Engine } from '../src/engine.js';
import { TextTokenizer } from '../src/tokenizer/tokenizer.js';
import { startServer, type RunningServer } from '../src/serve/server.js';
import { formatRequestRecord, type RequestRecord } from '../src/serve/request-log.js';
import { makeModule, storiesModule } from './support/modules.js';
import { TOOLS_TEMPLATE } from './support/chat-templates.js';
import { fromSources } from '../../../test/support/paths.js';

/** A chat template that renders tools and tool calls (the Hermes form the tool-call constraint writes). */
const TEMPLATE = TOOLS_TEMPLATE;
const KEY = 'test-key';
/**
 * Settings under which the tiny model finishes structured answers (as in the constrained-decoding tests); ChatOpenAI
 * sends a seed and the extension only from `modelKwargs`.
 */
const FINISHING = { temperature: 0.7, modelKwargs: { seed: 11, repetition_penalty: 1.3 } };

const ajv = new Ajv2020({ strict: false });

/** The `data:` payloads of an SSE body. */
function events(body: string): string[] {
  return body
    .split('\n\n')
    .filter((e) => e.startsWith('data: '))
    .map((e) => e.slice(6));
}

/**
 * Sends raw request bytes on a connection of its own: what came back, and whether the server closed the connection
 * within `ms` (a kept-alive one stays open for 5 s).
 */
async function exchange(url: string, request: string | Buffer, ms = 2500): Promise<{ text: string; closed: boolean }> {
  const { hostname, port } = new URL(url);
  const socket = connect(Number(port), hostname);
  const chunks: Buffer[] = [];
  socket.on('data', (d: Buffer) => chunks.push(d));
  // (a server that answers and closes before the whole body is sent resets the rest of it)
  socket.on('error', () => {});
  socket.write(request);
  const closed = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
  socket.destroy();
  return { text: Buffer.concat(chunks).toString('latin1'), closed };
}

describe('reasonplug serve', function () {
  this.timeout(120_000);
  let server: RunningServer;
  let reference: Engine;
  let tokenizer: TextTokenizer;
  let dir: string;
  let healthWhileLoading: number;
  let chatWhileLoading: { status: number; retryAfter: string | null };
  const records: RequestRecord[] = [];
  const post = (path: string, body: unknown, init: RequestInit = {}) =>
    fetch(`${server.url}${path}`, { method: 'POST', headers: { Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json' }, body: JSON.stringify(body), ...init });
  /** The Host and Authorization lines of a raw request. */
  const rawAuth = () => `Host: ${new URL(server.url).host}\r\nAuthorization: Bearer ${KEY}\r\n`;
  const chat = (over: Record<string, unknown> = {}) =>
    new ChatOpenAI({ model: 'stories260k', apiKey: KEY, temperature: 0, maxTokens: 16, configuration: { baseURL: `${server.url}/v1` }, maxRetries: 0, ...over });
  /** The engine's greedy reply to a chat, rendered with the same template. */
  const greedy = async (content: string, maxTokens: number, reasoners: { name: string; weight?: number }[] = []) => {
    const promptIds = tokenizer.encode(tokenizer.applyChatTemplate([{ role: 'user', content }], { template: TEMPLATE }), false);
    return (await reference.generate({ promptIds }, { maxTokens, reasoners })).rows[0]!;
  };

  before(async () => {
    dir = await storiesModule();
    const reasoner = await makeModule({ name: 'serve-r', seed: 5 });
    server = await startServer({
      engine: { model: dir, reasoners: [{ name: 'r', model: reasoner, weight: 1 }] },
      aliases: { storyteller: 'stories260k+r' },
      apiKeys: [KEY],
      port: 0,
      maxBatch: 1,
      maxQueue: 1,
      chatTemplate: TEMPLATE,
      onRequest: (record) => records.push(record),
    });
    healthWhileLoading = (await fetch(`${server.url}/health`)).status;
    const early = await post('/v1/chat/completions', { model: 'stories260k', messages: [{ role: 'user', content: 'Hi' }] });
    chatWhileLoading = { status: early.status, retryAfter: early.headers.get('retry-after') };
    [reference, tokenizer] = await Promise.all([
      Engine.load({ model: dir, reasoners: [{ name: 'r', model: reasoner, weight: 1 }] }),
      TextTokenizer.fromDirectory(dir),
      server.ready,
    ]);
  });
  after(async () => {
    await server?.close();
    await reference?.dispose();
  });

  it('answers /health with 503 while the model loads, then 200; lists the backbone, compositions and aliases with parent', async () => {
    expect(healthWhileLoading).to.equal(503);
    // (the OpenAI SDKs wait as long as Retry-After says: their own backoff gave up within 2 s of a minutes-long load)
    expect(chatWhileLoading).to.deep.equal({ status: 503, retryAfter: '5' });
    expect((await fetch(`${server.url}/health`)).status).to.equal(200);
    const res = await fetch(`${server.url}/v1/models`, { headers: { Authorization: `Bearer ${KEY}` } });
    const { data } = (await res.json()) as { data: { id: string; parent: string | null; reasoners: string[]; max_model_len: number }[] };
    expect(data.map((m) => m.max_model_len)).to.deep.equal(data.map(() => reference.info.contextLength));
    expect(data.map(({ id, parent, reasoners }) => ({ id, parent, reasoners }))).to.deep.equal([
      { id: 'stories260k', parent: null, reasoners: [] },
      { id: 'stories260k+r', parent: 'stories260k', reasoners: ['r'] },
      { id: 'storyteller', parent: 'stories260k', reasoners: ['r'] },
    ]);
    const one = async (id: string) => fetch(`${server.url}/v1/models/${encodeURIComponent(id)}`, { headers: { Authorization: `Bearer ${KEY}` } });
    expect(((await (await one('stories260k+r')).json()) as { parent: string }).parent).to.equal('stories260k');
    expect((await one('stories260k+other')).status).to.equal(404);
  });

  it("ChatOpenAI invoke and stream (with usage) reply as the engine does greedily; the backbone runs alone, a composition with its reasoner", async () => {
    const alone = await greedy('Tell me a story', 16);
    const composed = await greedy('Tell me a story', 16, [{ name: 'r' }]);
    expect(alone.text).to.not.equal(composed.text);
    const reply = await chat().invoke('Tell me a story');
    expect(reply.content).to.equal(alone.text);
    expect(reply.usage_metadata?.output_tokens).to.equal(alone.ids.length);
    for (const model of ['stories260k+r', 'storyteller']) expect((await chat({ model }).invoke('Tell me a story')).content, model).to.equal(composed.text);
    // The extension's weight 0 takes the reasoner out again.
    const zero = await chat({ model: 'stories260k+r', modelKwargs: { reasonplug: { reasoners: [{ name: 'r', weight: 0 }] } } }).invoke('Tell me a story');
    expect(zero.content).to.equal(alone.text);

    const chunks = [];
    for await (const c of await chat({ streamUsage: true }).stream('Tell me a story')) chunks.push(c);
    expect(chunks.length).to.be.greaterThan(2);
    const joined = chunks.reduce((a, b) => a.concat(b));
    expect(joined.content).to.equal(alone.text);
    expect(joined.usage_metadata?.output_tokens).to.equal(alone.ids.length);
    expect(joined.usage_metadata?.input_tokens).to.equal(reply.usage_metadata?.input_tokens);
  });

  it('withStructuredOutput (its default method, json_schema) and tool calls answer in valid structure', async () => {
    const Pet = z.object({ name: z.string().max(12), age: z.number().int().min(0).max(30) });
    const pet = await chat({ maxTokens: 120, ...FINISHING }).withStructuredOutput(Pet, { name: 'pet' }).invoke('Describe a pet');
    expect(Pet.safeParse(pet).success, JSON.stringify(pet)).to.equal(true);

    const add = tool(async ({ a, b }) => String(a + b), { name: 'add', description: 'Add two integers', schema: z.object({ a: z.number().int(), b: z.number().int() }) });
    const model = chat({ maxTokens: 120, ...FINISHING }).bindTools([add], { tool_choice: 'add' });
    const reply = await model.invoke('Add 2 and 3');
    expect(reply.tool_calls?.map((c) => c.name)).to.deep.equal(['add']);
    const schema = { type: 'object', properties: { a: { type: 'integer' }, b: { type: 'integer' } }, required: ['a', 'b'] };
    expect(ajv.validate(schema, reply.tool_calls![0]!.args), ajv.errorsText()).to.equal(true);
    expect(reply.response_metadata.finish_reason).to.equal('tool_calls');

    // Parallel calls (OpenAI's default), one per line; with the end token pushed down, the model writes a second
    // where it may, and only the end where parallel_tool_calls is false.
    const weather = { type: 'object', properties: { city: { enum: ['Paris', 'Oslo'] }, days: { enum: [1, 2, 3] } }, required: ['city', 'days'], additionalProperties: false };
    const tools = [{ type: 'function', function: { name: 'weather', parameters: weather } }];
    const body = { model: 'stories260k', messages: [{ role: 'user', content: 'Weather in Paris and Oslo?' }], tools, tool_choice: 'required', max_tokens: 200, temperature: 0.7, seed: 11, logit_bias: { 2: -100 } };
    type Calls = { choices: { message: { tool_calls: { function: { name: string; arguments: string } }[] }; finish_reason: string }[] };
    const calls = async (parallel: boolean) => ((await (await post('/v1/chat/completions', { ...body, parallel_tool_calls: parallel })).json()) as Calls).choices[0]!;
    const [several, single] = [await calls(true), await calls(false)];
    expect(several.message.tool_calls.length).to.be.at.least(2);
    // (the end never wins over the next call's line, so the reply runs to max_tokens: a cut reply says so)
    expect(several.finish_reason).to.equal('length');
    expect(single.message.tool_calls.length).to.equal(1);
    expect(single.finish_reason).to.equal('tool_calls');
    // beside a response format (the SDK's parse() and runTools send both), a required call is still a call: the
    // format shapes an answer, and this reply is none
    const shaped = ((await (await post('/v1/chat/completions', { ...body, parallel_tool_calls: false, response_format: { type: 'json_schema', json_schema: { name: 'sum', schema: { type: 'object', properties: { sum: { type: 'integer' } }, required: ['sum'] } } } })).json()) as Calls).choices[0]!;
    expect([shaped.finish_reason, shaped.message.tool_calls.length]).to.deep.equal(['tool_calls', 1]);
    for (const c of [...several.message.tool_calls, ...single.message.tool_calls]) expect(ajv.validate(weather, JSON.parse(c.function.arguments)), c.function.arguments).to.equal(true);
    // streamed, each call a delta of its own index, the same calls
    const streamed = events(await (await post('/v1/chat/completions', { ...body, stream: true })).text())
      .filter((e) => e !== '[DONE]')
      .flatMap((e) => (JSON.parse(e) as { choices: { delta: { tool_calls?: { index: number; function: { arguments: string } }[] } }[] }).choices[0]?.delta.tool_calls ?? []);
    expect(streamed.map((c) => c.index)).to.deep.equal(several.message.tool_calls.map((_, i) => i));
    expect(streamed.map((c) => c.function.arguments)).to.deep.equal(several.message.tool_calls.map((c) => c.function.arguments));
    const bad = await post('/v1/chat/completions', { ...body, parallel_tool_calls: 'yes' });
    expect(bad.status).to.equal(400);
    expect(((await bad.json()) as { error: { param: string } }).error.param).to.equal('parallel_tool_calls');
  });

  it("a conversation's next turn is prefilled from the cached prompt: ChatOpenAI reads the cached tokens, /metrics counts them, the reply is the engine's", async () => {
    const first = 'Once upon a time there was a little girl named Lily. She loved to play in the park with her friends.';
    const one = await chat({ maxTokens: 8 }).invoke(first);
    const messages = [new HumanMessage(first), new AIMessage(one.content as string), new HumanMessage('What happened next?')];
    const two = await chat({ maxTokens: 8 }).invoke(messages);
    const rendered = tokenizer.applyChatTemplate(
      [
        { role: 'user', content: first },
        { role: 'assistant', content: one.content as string },
        { role: 'user', content: 'What happened next?' },
      ],
      { template: TEMPLATE },
    );
    const promptIds = tokenizer.encode(rendered, false);
    expect(two.content).to.equal((await reference.generate({ promptIds }, { maxTokens: 8, reasoners: [] })).rows[0]!.text);
    // the first turn's prompt, rendered alone, is where the second begins
    const firstIds = tokenizer.encode(tokenizer.applyChatTemplate([{ role: 'user', content: first }], { template: TEMPLATE }), false);
    let common = 0;
    while (firstIds[common] === promptIds[common]) common++;
    expect(common).to.be.greaterThan(16);
    expect(two.usage_metadata?.input_token_details?.cache_read).to.equal(common);
    const text = await (await fetch(`${server.url}/metrics`)).text();
    const hits = Number(/^reasonplug:prefix_cache_hits_total\{[^}]*\} (\d+)$/m.exec(text)?.[1]);
    expect(hits).to.be.at.least(common);
  });

  it('a chat reply without max_tokens may run to the end of the context (not the engine default of 256)', async () => {
    const res = await post('/v1/chat/completions', { model: 'stories260k', messages: [{ role: 'user', content: 'Tell me a story' }], temperature: 0, ignore_eos: true });
    const { usage, choices } = (await res.json()) as { usage: { prompt_tokens: number; completion_tokens: number }; choices: { finish_reason: string }[] };
    const context = reference.info.contextLength!;
    expect(context - usage.prompt_tokens).to.be.greaterThan(256);
    // every position of the context fed, and the last token sampled from the last logits (it needs no position)
    expect(usage.completion_tokens).to.equal(context - usage.prompt_tokens + 1);
    expect(choices[0]!.finish_reason).to.equal('length');
  });

  it('/tokenize gives the ids a completion or chat request runs (its usage counts them), /detokenize their text; bad input by name', async () => {
    type Tokenized = { count: number; max_model_len: number; tokens: number[] };
    const messages = [{ role: 'user', content: 'Tell me a story' }];
    const chatIds = (await (await post('/tokenize', { model: 'stories260k+r', messages })).json()) as Tokenized;
    const chatUsage = ((await (await post('/v1/chat/completions', { model: 'stories260k', messages, max_tokens: 1 })).json()) as { usage: { prompt_tokens: number } }).usage;
    expect(chatIds.count).to.equal(chatUsage.prompt_tokens);
    expect(chatIds.tokens).to.deep.equal(tokenizer.encode(tokenizer.applyChatTemplate(messages, { template: TEMPLATE }), false));
    expect(chatIds.max_model_len).to.equal(reference.info.contextLength);
    const textIds = (await (await post('/tokenize', { prompt: 'Once upon a time' })).json()) as Tokenized;
    const textUsage = ((await (await post('/v1/completions', { model: 'stories260k', prompt: 'Once upon a time', max_tokens: 1 })).json()) as { usage: { prompt_tokens: number } }).usage;
    expect(textIds.count).to.equal(textUsage.prompt_tokens);
    expect(textIds.tokens[0]).to.equal(1); // BOS, as the completion adds it
    const bare = (await (await post('/tokenize', { prompt: 'Once upon a time', add_special_tokens: false })).json()) as Tokenized;
    expect(bare.tokens).to.deep.equal(textIds.tokens.slice(1));
    const detokenize = async (tokens: number[]) => ((await (await post('/detokenize', { tokens })).json()) as { prompt: string }).prompt;
    expect(await detokenize(bare.tokens)).to.equal('Once upon a time');
    expect(await detokenize(chatIds.tokens)).to.match(/^<s>.*<\|user\|>Tell me a story<\|end\|><\|assistant\|>$/); // special tokens kept
    const errors: [string, unknown, number, string][] = [
      ['/tokenize', { prompt: 'x', messages }, 400, 'prompt'],
      ['/tokenize', { prompt: 'x', add_special_tokens: 'yes' }, 400, 'add_special_tokens'],
      ['/detokenize', { tokens: [1, 512] }, 400, 'tokens'],
      ['/detokenize', { tokens: 'abc' }, 400, 'tokens'],
      ['/tokenize', { model: 'nope', prompt: 'x' }, 404, 'model_not_found'],
    ];
    for (const [path, body, status, what] of errors) {
      const res = await post(path, body);
      expect(res.status, JSON.stringify(body)).to.equal(status);
      const { error } = (await res.json()) as { error: { code: string; param: string | null } };
      expect([error.code, error.param]).to.include(what);
    }
    expect((await fetch(`${server.url}/tokenize`, { method: 'POST', body: '{"prompt":"x"}' })).status).to.equal(401);
  });

  it("continue_final_message (vLLM's): the reply continues the last assistant message, as the engine continues the template cut after it", async () => {
    const messages = [
      { role: 'user', content: 'Tell me a story' },
      { role: 'assistant', content: 'Once upon a time, there was a' },
    ];
    const rendered = tokenizer.applyChatTemplate(messages, { template: TEMPLATE, addGenerationPrompt: false });
    expect(rendered.endsWith('there was a<|end|>')).to.equal(true);
    const promptIds = tokenizer.encode(rendered.slice(0, -'<|end|>'.length), false);
    const tokenized = (await (await post('/tokenize', { messages, continue_final_message: true })).json()) as { tokens: number[] };
    expect(tokenized.tokens).to.deep.equal(promptIds);
    const body = { model: 'stories260k', messages, max_tokens: 8, temperature: 0, continue_final_message: true, add_generation_prompt: false };
    const res = (await (await post('/v1/chat/completions', body)).json()) as { choices: { message: { content: string } }[] };
    const want = (await reference.generate({ promptIds }, { maxTokens: 8, reasoners: [] })).rows[0]!;
    expect(res.choices[0]!.message.content).to.equal(want.text);
    const errors: [Record<string, unknown>, string][] = [
      [{ continue_final_message: true, add_generation_prompt: true }, 'continue_final_message'],
      [{ continue_final_message: true, messages: [messages[0]] }, 'continue_final_message'],
      [{ continue_final_message: 'yes' }, 'continue_final_message'],
      [{ add_generation_prompt: 1 }, 'add_generation_prompt'],
    ];
    for (const [over, param] of errors) {
      const bad = await post('/v1/chat/completions', { ...body, add_generation_prompt: undefined, ...over });
      expect(bad.status, JSON.stringify(over)).to.equal(400);
      expect(((await bad.json()) as { error: { param: string } }).error.param).to.equal(param);
    }
  });

  it('streams /v1/completions as SSE ending in [DONE], with a usage chunk, the same text as without streaming; stop strings cut', async () => {
    const body = { model: 'stories260k', prompt: 'Once upon a time', max_tokens: 24, temperature: 0 };
    const whole = (await (await post('/v1/completions', body)).json()) as { choices: { text: string; finish_reason: string }[]; usage: { completion_tokens: number } };
    const res = await post('/v1/completions', { ...body, stream: true, stream_options: { include_usage: true } });
    expect(res.headers.get('content-type')).to.match(/^text\/event-stream/);
    const data = events(await res.text());
    expect(data.at(-1)).to.equal('[DONE]');
    const chunks = data.slice(0, -1).map((d) => JSON.parse(d) as { choices: { text: string; finish_reason: string | null }[]; usage: unknown });
    expect(chunks.map((c) => c.choices.map((x) => x.text).join('')).join('')).to.equal(whole.choices[0]!.text);
    expect(chunks.at(-2)!.choices[0]!.finish_reason).to.equal('length');
    expect(chunks.at(-1)!.choices).to.deep.equal([]);
    expect(chunks.at(-1)!.usage).to.deep.include({ completion_tokens: 24 });
    // A list of prompts is one batch, one choice each; echo writes the prompt first.
    const two = (await (await post('/v1/completions', { ...body, prompt: ['Once upon a time', 'Lily had a dog'], max_tokens: 6, echo: true })).json()) as typeof whole;
    expect(two.choices.map((c) => [c.finish_reason, c.text.startsWith(['Once upon a time', 'Lily had a dog'][two.choices.indexOf(c)]!)])).to.deep.equal([
      ['length', true],
      ['length', true],
    ]);
    expect(two.usage.completion_tokens).to.equal(12);
    // A stop string taken from the greedy text ends the reply just before it.
    const words = whole.choices[0]!.text.trim().split(' ');
    const stop = ` ${words[2]}`;
    const cut = (await (await post('/v1/completions', { ...body, stop })).json()) as typeof whole;
    expect(cut.choices[0]!.finish_reason).to.equal('stop');
    expect(whole.choices[0]!.text.startsWith(cut.choices[0]!.text + stop)).to.equal(true);
  });

  it('n choices (ChatOpenAI, streamed chat, completions of several prompts), logit_bias and OpenAI penalties, as the engine computes them', async () => {
    const content = 'Tell me a story';
    const promptIds = tokenizer.encode(tokenizer.applyChatTemplate([{ role: 'user', content }], { template: TEMPLATE }), false);
    // n sampled choices are rows of one call, row j drawing from seed + j: reproducible, not all alike, choice 0 the n = 1 answer.
    // (ChatOpenAI takes a seed per call, not as a field.)
    const sampled = { temperature: 1, maxTokens: 16, modelKwargs: { seed: 7 } };
    const choices = async () => (await chat({ ...sampled, n: 3 }).generate([[new HumanMessage(content)]])).generations[0]!.map((g) => g.text);
    const texts = await choices();
    expect(texts).to.have.length(3);
    expect(new Set(texts).size, texts.join(' | ')).to.be.greaterThan(1);
    expect(await choices()).to.deep.equal(texts);
    expect((await chat(sampled).invoke(content)).content).to.equal(texts[0]);
    const rows = await reference.generate({ promptIds: [promptIds, promptIds, promptIds] }, { temperature: 1, seed: 7, maxTokens: 16, reasoners: [] });
    expect(rows.rows.map((r) => r.text)).to.deep.equal(texts);

    // Streamed greedy choices: deltas by index, each the greedy reply; the prompt counted once in the usage.
    const alone = await greedy(content, 16);
    const res = await post('/v1/chat/completions', { model: 'stories260k', messages: [{ role: 'user', content }], max_tokens: 16, temperature: 0, n: 2, stream: true, stream_options: { include_usage: true } });
    const chunks = events(await res.text())
      .slice(0, -1)
      .map((d) => JSON.parse(d) as { choices: { index: number; delta: { content?: string }; finish_reason: string | null }[]; usage: { prompt_tokens: number; completion_tokens: number } | null });
    const streamed = [0, 1].map((i) => chunks.flatMap((c) => c.choices.filter((x) => x.index === i).map((x) => x.delta.content ?? '')).join(''));
    expect(streamed).to.deep.equal([alone.text, alone.text]);
    expect(chunks.flatMap((c) => c.choices.filter((x) => x.finish_reason).map((x) => [x.index, x.finish_reason]))).to.deep.equal([
      [0, 'length'],
      [1, 'length'],
    ]);
    expect(chunks.at(-1)!.usage).to.deep.include({ prompt_tokens: promptIds.length, completion_tokens: 2 * alone.ids.length });
    // Completions of two prompts, two choices each: choice i·n + j is prompt i's.
    const two = (await (await post('/v1/completions', { model: 'stories260k', prompt: ['Once upon a time', 'Lily had a dog'], max_tokens: 6, temperature: 0, n: 2 })).json()) as {
      choices: { index: number; text: string }[];
    };
    const own = async (prompt: string) => ((await (await post('/v1/completions', { model: 'stories260k', prompt, max_tokens: 6, temperature: 0 })).json()) as typeof two).choices[0]!.text;
    const [a, b] = [await own('Once upon a time'), await own('Lily had a dog')];
    expect(two.choices.map((c) => [c.index, c.text])).to.deep.equal([
      [0, a],
      [1, a],
      [2, b],
      [3, b],
    ]);

    // logit_bias: -100 takes the greedy first token out, +100 on a token makes it every token; penalties as the engine's.
    const [first, other] = [alone.ids[0]!, alone.ids.find((id) => id !== alone.ids[0])!];
    const biased = async (settings: Record<string, unknown>, engineSettings: Record<string, unknown>, maxTokens = 16) => {
      const reply = await chat({ ...settings, maxTokens }).invoke(content);
      const ref = (await reference.generate({ promptIds }, { maxTokens, reasoners: [], ...engineSettings })).rows[0]!;
      expect(reply.content, JSON.stringify(settings)).to.equal(ref.text);
      return ref;
    };
    expect((await biased({ logitBias: { [first]: -100 } }, { logitBias: { [first]: -100 } })).ids[0]).to.not.equal(first);
    expect(new Set((await biased({ logitBias: { [other]: 100 } }, { logitBias: { [other]: 100 } })).ids)).to.deep.equal(new Set([other]));
    // over 48 tokens the greedy reply repeats tokens, which the penalties then avoid
    const long = await greedy(content, 48);
    expect(new Set(long.ids).size).to.be.lessThan(long.ids.length);
    const penalized = await biased({ frequencyPenalty: 2, presencePenalty: 0.5 }, { frequencyPenalty: 2, presencePenalty: 0.5 }, 48);
    expect(penalized.text).to.not.equal(long.text);
  });

  it('logprobs: ChatOpenAI gets response_metadata.logprobs (greedy: the chosen token the most likely), completions the legacy lists, streamed the same', async () => {
    const content = 'Tell me a story';
    const promptIds = tokenizer.encode(tokenizer.applyChatTemplate([{ role: 'user', content }], { template: TEMPLATE }), false);
    const want = (await reference.generate({ promptIds }, { maxTokens: 8, logprobs: 3, reasoners: [] })).rows[0]!;
    const reply = await chat({ maxTokens: 8, logprobs: true, topLogprobs: 3 }).invoke(content);
    type Entry = { token: string; logprob: number; bytes: number[]; top_logprobs: { token: string; logprob: number; bytes: number[] }[] };
    const entries = (reply.response_metadata.logprobs as { content: Entry[] }).content;
    expect(entries.map((e) => e.token)).to.deep.equal(want.logprobs!.map((e) => e.token));
    entries.forEach((e, t) => {
      expect(e.logprob).to.be.closeTo(want.logprobs![t]!.logprob, 1e-6);
      expect(e.top_logprobs).to.have.length(3);
      expect(e.logprob).to.equal(Math.max(...e.top_logprobs.map((a) => a.logprob)));
      expect(Buffer.from(e.bytes).toString('utf8')).to.equal(e.token);
    });
    expect(entries.map((e) => e.token).join('')).to.equal(reply.content);
    // Streamed chunks carry the same entries, each with the text it completes (or the last chunk).
    const streamed = await post('/v1/chat/completions', { model: 'stories260k', messages: [{ role: 'user', content }], max_tokens: 8, temperature: 0, logprobs: true, top_logprobs: 3, stream: true });
    const chunks = events(await streamed.text()).slice(0, -1).map((d) => JSON.parse(d) as { choices: { logprobs: { content: Entry[] } | null }[] });
    expect(chunks.flatMap((c) => c.choices[0]!.logprobs?.content ?? [])).to.deep.equal(entries);
    // Characters the vocabulary spells in byte tokens (<0xF0> <0x9F> …): each entry's bytes are its byte, not
    // U+FFFD's, so that the entries' bytes joined are the reply's text
    const emoji = await post('/v1/chat/completions', { model: 'stories260k', messages: [{ role: 'user', content }], max_tokens: 12, temperature: 0, logprobs: true, guided_regex: '😀 日' });
    const answer = ((await emoji.json()) as { choices: { message: { content: string }; logprobs: { content: Entry[] } }[] }).choices[0]!;
    expect(answer.message.content).to.equal('😀 日');
    expect(answer.logprobs.content.length).to.be.greaterThan(2);
    // (the end-of-sequence token shows nothing in the reply: no entry of its own)
    expect(answer.logprobs.content.map((e) => e.token)).to.not.include('</s>');
    const written = answer.logprobs.content;
    expect(Buffer.from(written.flatMap((e) => e.bytes)).toString('utf8')).to.equal('😀 日');
    expect(written.filter((e) => e.bytes.length === 1 && e.bytes[0]! >= 0x80)).to.have.length.greaterThan(1);
    // ... and each is named by the text it adds, as a stream writes it: nothing until the piece completing a character
    expect(written.map((e) => e.token).join('')).to.equal('😀 日');
    expect(written.filter((e) => e.token === '')).to.have.length.greaterThan(1);

    // Legacy completions with echo: the prompt's own tokens open the lists (the first with null: nothing before it
    // scores it), each scored after those before it; then the completion's, their offsets past the echoed prompt.
    type Legacy = { tokens: string[]; token_logprobs: (number | null)[]; top_logprobs: (Record<string, number> | null)[]; text_offset: number[] };
    const text = 'Once upon a time';
    const body = { model: 'stories260k', prompt: text, max_tokens: 6, temperature: 0, logprobs: 2, echo: true };
    const whole = (await (await post('/v1/completions', body)).json()) as { choices: { text: string; logprobs: Legacy }[]; usage: { prompt_tokens: number } };
    const lp = whole.choices[0]!.logprobs;
    const alone = (await reference.generate({ prompt: text }, { maxTokens: 6, logprobs: 2, reasoners: [] })).rows[0]!;
    const scored = (await reference.promptLogprobs({ texts: [text] }, { topLogprobs: 2, reasoners: [] })).prompts[0]!;
    const n = scored.ids.length;
    expect(n).to.equal(whole.usage.prompt_tokens);
    expect(lp.tokens).to.have.length(n + 6);
    expect([lp.token_logprobs[0], lp.top_logprobs[0], lp.text_offset[0]]).to.deep.equal([null, null, 0]);
    scored.logprobs.forEach((e, t) => expect(lp.token_logprobs[t + 1]).to.be.closeTo(e.logprob, 1e-6));
    lp.token_logprobs.slice(n).forEach((x, t) => expect(x).to.be.closeTo(alone.logprobs![t]!.logprob, 1e-6));
    // offsets index the echoed text: BOS writes none of it, the prompt's tokens all of it
    expect(lp.text_offset.slice(0, n + 1)).to.satisfy((o: number[]) => o.every((x, t) => t === 0 || x >= o[t - 1]!));
    expect(lp.text_offset[n]).to.equal(text.length);
    expect(text.slice(lp.text_offset[n - 1])).to.equal(lp.tokens[n - 1]);
    lp.tokens.forEach((tok, t) => {
      if (t === 0) return;
      expect(lp.top_logprobs[t]![tok]).to.equal(lp.token_logprobs[t]);
      expect(Object.keys(lp.top_logprobs[t]!).length).to.be.within(1, 3);
      if (t > n) expect(lp.text_offset[t]).to.equal(lp.text_offset[t - 1]! + lp.tokens[t - 1]!.length);
    });
    const sse = events(await (await post('/v1/completions', { ...body, stream: true })).text()).slice(0, -1);
    const parts = sse.map((d) => (JSON.parse(d) as { choices: { logprobs: Legacy | null }[] }).choices[0]!.logprobs).filter((x): x is Legacy => x !== null);
    const merged = { tokens: parts.flatMap((p) => p.tokens), token_logprobs: parts.flatMap((p) => p.token_logprobs), top_logprobs: parts.flatMap((p) => p.top_logprobs), text_offset: parts.flatMap((p) => p.text_offset) };
    expect(merged).to.deep.equal(lp);
    // max_tokens 0 (OpenAI's legacy scoring of text), token ids as lm-evaluation-harness sends them: the prompt alone
    const scoreOnly = (await (await post('/v1/completions', { model: 'stories260k', prompt: [scored.ids], max_tokens: 0, logprobs: 1, echo: true })).json()) as { choices: { text: string; logprobs: Legacy; finish_reason: string }[]; usage: object };
    const [only] = scoreOnly.choices;
    expect(only!.text).to.equal(text);
    expect(only!.finish_reason).to.equal('length');
    expect(scoreOnly.usage).to.deep.equal({ prompt_tokens: n, completion_tokens: 0, total_tokens: n, prompt_tokens_details: { cached_tokens: 0 } });
    expect(only!.logprobs.token_logprobs.slice(1)).to.deep.equal(lp.token_logprobs.slice(1, n));
    expect((await post('/v1/completions', { model: 'stories260k', prompt: text, max_tokens: 0 })).status).to.equal(400);
    // a composition scores its prompt as it generates: fused at every position
    const composed = (await (await post('/v1/completions', { ...body, model: 'stories260k+r', max_tokens: 0 })).json()) as { choices: { logprobs: Legacy }[] };
    const fused = (await reference.promptLogprobs({ texts: [text] }, { topLogprobs: 2, reasoners: [{ name: 'r' }] })).prompts[0]!;
    composed.choices[0]!.logprobs.token_logprobs.slice(1).forEach((x, t) => expect(x).to.be.closeTo(fused.logprobs[t]!.logprob, 1e-6));
    expect(fused.logprobs.some((e, t) => Math.abs(e.logprob - scored.logprobs[t]!.logprob) > 1e-3), 'the reasoner moves the scores').to.equal(true);
  });

  it("completions' text_offset points into the text past characters spelt in byte tokens and special tokens written mid-reply", async () => {
    type Legacy = { tokens: string[]; text_offset: number[] };
    // BOS forced at every step: the text leaves it out, and tokens that end a reply showing nothing are not its
    // tokens (OpenAI lists the content's): the lists hold the echoed prompt's alone (where the engine places them
    // mid-reply, see logprob-offsets.test.ts)
    const bos = tokenizer.bosTokenId!;
    const body = { model: 'stories260k', prompt: 'A ☃ is', max_tokens: 3, temperature: 0, logprobs: 1, echo: true, logit_bias: { [bos]: 100 } };
    const answer = (await (await post('/v1/completions', body)).json()) as { choices: { text: string; logprobs: Legacy }[]; usage: { prompt_tokens: number; completion_tokens: number } };
    const { text, logprobs } = answer.choices[0]!;
    expect(text).to.equal('A ☃ is');
    expect(answer.usage.completion_tokens).to.equal(3);
    expect(logprobs.tokens).to.have.length(answer.usage.prompt_tokens);
    // (the first word's space is the tokenizer's, not the text's: SentencePiece drops it when decoding)
    expect(logprobs.tokens.slice(1).join('').trimStart()).to.equal(text);
    logprobs.tokens.slice(2).forEach((token, t) => expect(text.slice(logprobs.text_offset[t + 2]).startsWith(token), `token ${t + 2} ${JSON.stringify(token)}`).to.equal(true));
    const streamed = events(await (await post('/v1/completions', { ...body, stream: true })).text()).slice(0, -1);
    const offsets = streamed.flatMap((d) => (JSON.parse(d) as { choices: { logprobs: Legacy | null }[] }).choices[0]!.logprobs?.text_offset ?? []);
    expect(offsets).to.deep.equal(logprobs.text_offset);
    // a stop string's tokens, cut from the text, are not listed either: the tokens joined are the text, streamed or not
    const stopped = { model: 'stories260k', prompt: 'Once upon a time', max_tokens: 40, temperature: 0, logprobs: 0, stop: [' girl'] };
    const cut = ((await (await post('/v1/completions', stopped)).json()) as { choices: { text: string; logprobs: Legacy; finish_reason: string }[] }).choices[0]!;
    expect(cut.finish_reason).to.equal('stop');
    expect(cut.logprobs.tokens.join('')).to.equal(cut.text);
    const pieces = events(await (await post('/v1/completions', { ...stopped, stream: true })).text()).slice(0, -1);
    expect(pieces.flatMap((d) => (JSON.parse(d) as { choices: { logprobs: Legacy | null }[] }).choices[0]!.logprobs?.tokens ?? []).join('')).to.equal(cut.text);
  });

  it("repeat_last_n (llama.cpp's field, Ollama's option) bounds the repetition penalty's window as the engine's repetitionWindow", async () => {
    const prompt = 'Once upon a time';
    const windowed = (await reference.generate({ prompt }, { maxTokens: 24, repetitionPenalty: 3, repetitionWindow: 2, reasoners: [] })).rows[0]!.text;
    const whole = (await reference.generate({ prompt }, { maxTokens: 24, repetitionPenalty: 3, reasoners: [] })).rows[0]!.text;
    expect(windowed).to.not.equal(whole);
    const body = { model: 'stories260k', prompt, max_tokens: 24, temperature: 0, repetition_penalty: 3 };
    const text = async (extra: object) => ((await (await post('/v1/completions', { ...body, ...extra })).json()) as { choices: { text: string }[] }).choices[0]!.text;
    expect(await text({ repeat_last_n: 2 })).to.equal(windowed);
    expect(await text({ repeat_last_n: -1 })).to.equal(whole);
    const ollama = await post('/api/generate', { model: 'stories260k', prompt, raw: true, stream: false, options: { temperature: 0, repeat_penalty: 3, repeat_last_n: 2, num_predict: 24 } });
    expect(((await ollama.json()) as { response: string }).response).to.equal(windowed);
  });

  it('answers errors in OpenAI shape: 401, 404 (unknown model, route), 400 naming the parameter (n, logprobs, temperature, bad JSON, bad schema)', async () => {
    const bad = await fetch(`${server.url}/v1/models`, { headers: { Authorization: 'Bearer wrong' } });
    expect(bad.status).to.equal(401);
    expect(((await bad.json()) as { error: { code: string } }).error.code).to.equal('invalid_api_key');
    expect((await fetch(`${server.url}/v1/models`)).status).to.equal(401);
    const cases: [unknown, number, string][] = [
      [{ model: 'stories260k+nope', prompt: 'x' }, 404, 'model_not_found'],
      [{ model: 'nope', prompt: 'x', reasonplug: { reasoners: [{ name: 'r' }] } }, 404, 'model_not_found'],
      [{ model: 'stories260k', prompt: 'x', reasonplug: { reasoners: [{ name: 'missing' }] } }, 400, 'reasonplug.reasoners[0].name'],
      [{ model: 'stories260k', prompt: 'x', reasonplug: { reasoners: [{ name: 'r', weight: 'x' }] } }, 400, 'WeightScheduleError'],
      [{ model: 'stories260k', prompt: 'x', n: 65 }, 400, 'n'],
      [{ model: 'stories260k', prompt: 'x', n: 2, best_of: 3 }, 400, 'best_of'],
      // (200,000 rows took 3 GB before a 500; refused before anything is tokenized)
      [{ model: 'stories260k', prompt: Array.from({ length: 3125 }, () => 'Once'), n: 64, max_tokens: 1 }, 400, 'prompt'],
      [{ model: 'stories260k', prompt: Array.from({ length: 2049 }, () => [1]), max_tokens: 1 }, 400, 'prompt'],
      [{ model: 'stories260k', prompt: 'x', frequency_penalty: 2.5 }, 400, 'frequency_penalty'],
      [{ model: 'stories260k', prompt: 'x', logit_bias: { a: 1 } }, 400, 'logit_bias'],
      [{ model: 'stories260k', prompt: 'x', logit_bias: { 5: 101 } }, 400, 'logit_bias'],
      [{ model: 'stories260k', prompt: 'x', logit_bias: { 512: 1 } }, 400, 'SamplingOptionsError'],
      [{ model: 'stories260k', prompt: 'x', top_k: -2 }, 400, 'top_k'],
      [{ model: 'stories260k', prompt: 'x', repeat_last_n: -2 }, 400, 'repeat_last_n'],
      [{ model: 'stories260k', messages: [{ role: 'user', content: 'x' }], modalities: ['text', 'audio'] }, 400, 'modalities'],
      [{ model: 'stories260k', messages: [{ role: 'user', content: 'x' }], audio: { voice: 'alloy', format: 'wav' } }, 400, 'audio'],
      [{ model: 'stories260k', messages: [{ role: 'user', content: 'x' }], web_search_options: {} }, 400, 'web_search_options'],
      [{ model: 'stories260k', prompt: 'x', logprobs: 21 }, 400, 'logprobs'],
      [{ model: 'stories260k', prompt: 'x', top_logprobs: 2 }, 400, 'top_logprobs'],
      [{ model: 'stories260k', prompt: 'x', temperature: 'hot' }, 400, 'temperature'],
      [{ model: 'stories260k', prompt: 'x', response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object', properties: { a: { type: 'string', pattern: '(?<=a)b' } } } } } }, 400, 'ConstraintError'],
    ];
    for (const [body, status, what] of cases) {
      const res = await post('messages' in (body as object) ? '/v1/chat/completions' : '/v1/completions', body);
      const { error } = (await res.json()) as { error: { message: string; type: string; code: string; param: string | null } };
      expect(res.status, JSON.stringify(body)).to.equal(status);
      expect([error.code, error.param], error.message).to.include(what);
      expect(error.type).to.be.a('string');
    }
    // an id past the vocabulary, found by the engine, still names the request's field
    const pastVocab = await post('/v1/completions', { model: 'stories260k', prompt: 'x', logit_bias: { 512: 1 } });
    expect(((await pastVocab.json()) as { error: { param: string } }).error.param).to.equal('logit_bias');
    // vLLM's top_k -1 is top-k off
    expect((await post('/v1/completions', { model: 'stories260k', prompt: 'x', max_tokens: 2, top_k: -1 })).status).to.equal(200);
    // OpenAI's every reasoning effort goes to the template; the message has OpenAI's refusal and annotations; each
    // answer its request id (a proxy's own where it sent one)
    const answered = await post('/v1/chat/completions', { model: 'stories260k', messages: [{ role: 'user', content: 'x' }], max_tokens: 2, reasoning_effort: 'none' });
    expect(answered.status).to.equal(200);
    expect(answered.headers.get('x-request-id')).to.match(/^req_[0-9a-f]{32}$/);
    expect(((await answered.json()) as { choices: { message: object }[] }).choices[0]!.message).to.deep.include({ refusal: null, annotations: [] });
    expect((await post('/v1/completions', { model: 'stories260k', prompt: 'x', max_tokens: 1 }, { headers: { Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json', 'x-request-id': 'trace-7' } })).headers.get('x-request-id')).to.equal('trace-7');
    const weight = await post('/v1/completions', { model: 'stories260k', prompt: 'x', reasonplug: { reasoners: [{ name: 'r', weight: 'x' }] } });
    expect(((await weight.json()) as { error: { message: string } }).error.message).to.match(/r: weight must be a number or a schedule \(\[\{ until\?, weight \}\]\), got "x"/);
    const legacy = await post('/v1/chat/completions', { model: 'stories260k', messages: [{ role: 'user', content: 'x' }], functions: [{ name: 'f', parameters: {} }] });
    expect(legacy.status).to.equal(400);
    expect(((await legacy.json()) as { error: { param: string; message: string } }).error).to.deep.include({ param: 'functions' });
    // stop strings past OpenAI's 4, as vLLM and llama.cpp take them (lm-evaluation-harness adds end-of-text to a task's own)
    const stops = Array.from({ length: 6 }, (_, i) => `zq${i}`);
    expect((await post('/v1/completions', { model: 'stories260k', prompt: 'x', max_tokens: 2, stop: stops })).status).to.equal(200);
    const tooMany = await post('/v1/completions', { model: 'stories260k', prompt: 'x', stop: Array.from({ length: 65 }, (_, i) => `s${i}`) });
    expect(((await tooMany.json()) as { error: object }).error).to.deep.include({ param: 'stop', message: 'stop must be a non-empty string or a list of at most 64 non-empty strings' });
    const noContent = await post('/v1/chat/completions', { model: 'stories260k', messages: [{ role: 'user' }] });
    expect(noContent.status).to.equal(400);
    expect(((await noContent.json()) as { error: object }).error).to.deep.include({ param: 'messages[0].content', message: 'messages[0].content is required for a user message' });
    const notJson = await post('/v1/chat/completions', undefined, { body: '{"model":' });
    expect(notJson.status).to.equal(400);
    expect((await post('/v1/nothing', {})).status).to.equal(404);
  });

  it('refuses what fuzzing found answered 500 or held the server: bad id escapes, deep bodies, formats no text completes, prompts far past the context', async () => {
    const get = (path: string) => fetch(`${server.url}${path}`, { headers: { Authorization: `Bearer ${KEY}` } });
    const escape = await get('/v1/models/%E0%A4%A');
    expect(escape.status).to.equal(404);
    expect(((await escape.json()) as { error: { code: string } }).error.code).to.equal('model_not_found');
    let deep: unknown = 1;
    for (let i = 0; i < 3000; i++) deep = { a: deep };
    const nested = await post('/v1/chat/completions', { model: 'stories260k', messages: [{ role: 'user', content: 'x' }], tools: [{ type: 'function', function: { name: 'f', parameters: deep } }] });
    expect(nested.status).to.equal(400);
    expect(((await nested.json()) as { error: { message: string } }).error.message).to.match(/more than 64 levels deep/);
    const unnamed = await post('/v1/chat/completions', { model: 'stories260k', messages: [{ role: 'user', content: 'x' }], tools: [{ type: 'function', function: { name: ' ', parameters: {} } }] });
    expect(unnamed.status).to.equal(400);
    expect(((await unnamed.json()) as { error: { param: string } }).error.param).to.equal('tools[0].function.name');
    // a schema whose only way out is itself: no token can ever be written
    for (const body of [
      { response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { $ref: '#' } } } },
      { guided_grammar: 'root ::= root', stream: true },
    ]) {
      const res = await post('/v1/chat/completions', { model: 'stories260k', messages: [{ role: 'user', content: 'x' }], max_tokens: 8, ...body });
      expect(res.status, JSON.stringify(body)).to.equal(400);
      expect(((await res.json()) as { error: { message: string } }).error.message).to.match(/ConstraintError: the response format allows no token here/);
    }
    // ~8 MB of text against a 2048-token context: refused by its beginning, and the server answers meanwhile
    const t0 = performance.now();
    const health = fetch(`${server.url}/health`).then((r) => [r.status, performance.now() - t0]);
    const long = await post('/v1/completions', { model: 'stories260k', max_tokens: 4, prompt: 'Once upon a time '.repeat(480_000) });
    expect(long.status).to.equal(400);
    const overflow = ((await long.json()) as { error: { message: string; code: string; param: string } }).error;
    expect(overflow.message).to.match(/TokenizerError: the text is longer than the context length of \d+ tokens/);
    // OpenAI's code for it, which clients (LiteLLM's fallbacks) act on, naming the input's field
    expect(overflow).to.deep.include({ code: 'context_length_exceeded', param: 'prompt' });
    const longChat = await post('/v1/chat/completions', { model: 'stories260k', max_tokens: 4, messages: [{ role: 'user', content: 'Once upon a time '.repeat(1000) }] });
    expect(longChat.status).to.equal(400);
    expect(((await longChat.json()) as { error: object }).error).to.deep.include({ code: 'context_length_exceeded', param: 'messages' });
    const [status, ms] = await health;
    expect(status).to.equal(200);
    expect(ms, 'the health check waited for the prompt').to.be.below(5000);
    const chatLong = await post('/v1/chat/completions', { model: 'stories260k', max_tokens: 4, messages: [{ role: 'user', content: 'a '.repeat(3_000_000) }] });
    expect(chatLong.status).to.equal(400);
  });

  it('queues past max_batch, refuses past max_queue with 429 and Retry-After, and a disconnected stream stops its row', async () => {
    const long = { model: 'stories260k', prompt: 'Once upon a time', max_tokens: 1500, temperature: 0, stream: true };
    const generatedBy = (text: string) => Number(/^reasonplug:generation_tokens_total\{[^}]*\} (\d+)/m.exec(text)![1]);
    const generatedBefore = generatedBy(await (await fetch(`${server.url}/metrics`)).text());
    const first = new AbortController();
    const second = new AbortController();
    const a = await post('/v1/completions', long, { signal: first.signal });
    const reader = a.body!.getReader();
    await reader.read(); // the first request is running
    const b = post('/v1/completions', long, { signal: second.signal }).catch(() => undefined);
    // (until the second request is in: on a loaded machine it may take longer than a fixed pause to arrive)
    let metrics = '';
    for (const t0 = performance.now(); performance.now() - t0 < 30_000; await new Promise((r) => setTimeout(r, 20))) {
      metrics = await (await fetch(`${server.url}/metrics`)).text();
      if (!/^reasonplug:num_requests_waiting\{[^}]*\} 0$/m.test(metrics)) break;
    }
    expect(metrics).to.match(/^reasonplug:num_requests_running\{[^}]*\} 1$/m);
    expect(metrics).to.match(/^reasonplug:num_requests_waiting\{[^}]*\} 1$/m);
    // KV use is the engine's own byte count of the running row's cache, against its capacity.
    const gauge = (text: string, name: string) => Number(new RegExp(`^reasonplug:${name}\\{[^}]*\\} (\\S+)$`, 'm').exec(text)![1]);
    const [held, capacity] = [gauge(metrics, 'kv_cache_bytes'), gauge(metrics, 'kv_cache_capacity_bytes')];
    expect(held).to.be.greaterThan(0);
    expect(gauge(metrics, 'kv_cache_usage_perc')).to.equal(held / capacity);
    const full = await post('/v1/completions', long);
    expect(full.status).to.equal(429);
    expect(Number(full.headers.get('retry-after'))).to.be.at.least(1);
    expect(((await full.json()) as { error: { code: string } }).error.code).to.equal('queue_full');
    // Both clients go away: the waiting one leaves the queue, the running one's row stops.
    second.abort();
    first.abort();
    await b;
    // The server sees both go: nothing runs or waits well before 1500 tokens could have been written.
    let after = '';
    for (const t0 = performance.now(); performance.now() - t0 < 5_000; await new Promise((r) => setTimeout(r, 20))) {
      after = await (await fetch(`${server.url}/metrics`)).text();
      if (/^reasonplug:num_requests_running\{[^}]*\} 0$/m.test(after) && /^reasonplug:num_requests_waiting\{[^}]*\} 0$/m.test(after)) break;
    }
    expect(after).to.match(/^reasonplug:num_requests_running\{[^}]*\} 0$/m);
    expect(after).to.match(/^reasonplug:num_requests_waiting\{[^}]*\} 0$/m);
    expect(gauge(after, 'kv_cache_bytes')).to.equal(0);
    const next = (await (await post('/v1/completions', { ...long, stream: false, max_tokens: 4 })).json()) as { usage: { completion_tokens: number } };
    expect(next.usage.completion_tokens).to.equal(4);
    expect(after).to.match(/^reasonplug:request_success_total\{[^}]*finished_reason="abort"\} [1-9]/m);
    expect(after).to.match(/^reasonplug:request_rejected_total\{[^}]*\} 1$/m);
    expect(generatedBy(after) - generatedBefore).to.be.below(1500);
    expect(after).to.match(/^reasonplug:time_to_first_token_seconds_count\{[^}]*\} [1-9]/m);
  });

  it('records each request as its answer ends: status, time, model, tokens, finish reason, the error; a client gone mid-stream', async () => {
    records.length = 0;
    const ok = (await (await post('/v1/completions', { model: 'stories260k', prompt: 'Once upon a time', max_tokens: 5, temperature: 0 })).json()) as { usage: { prompt_tokens: number } };
    await (await post('/v1/completions', { model: 'stories260k+nope', prompt: 'x' })).text();
    await (await post('/v1/chat/completions', { model: 'stories260k', messages: 'hello' })).text();
    const controller = new AbortController();
    const streaming = await post('/v1/completions', { model: 'stories260k+r', prompt: 'Once upon a time', max_tokens: 400, stream: true }, { signal: controller.signal });
    await streaming.body!.getReader().read();
    controller.abort();
    for (const t0 = performance.now(); records.length < 4 && performance.now() - t0 < 5_000; ) await new Promise((r) => setTimeout(r, 20));
    const [done, missing, bad, gone] = records;
    expect(done).to.deep.include({ method: 'POST', path: '/v1/completions', status: 200, aborted: false, model: 'stories260k', promptTokens: ok.usage.prompt_tokens, completionTokens: 5, finishReason: 'length' });
    expect(done!.ms).to.be.greaterThan(0);
    expect(done!.error).to.equal(undefined);
    expect(missing).to.deep.include({ status: 404, aborted: false });
    expect(missing!.error).to.match(/stories260k\+nope/);
    expect(bad).to.deep.include({ path: '/v1/chat/completions', status: 400 });
    expect(bad!.error).to.match(/messages/);
    expect(gone).to.deep.include({ status: 200, aborted: true, model: 'stories260k+r', finishReason: 'abort' });
    expect(formatRequestRecord(done!, 'text')).to.match(new RegExp(`^POST /v1/completions 200 \\d+ ms id=req_[0-9a-f]{32} model=stories260k prompt=${ok.usage.prompt_tokens} completion=5 finish=length$`));
    expect(formatRequestRecord(missing!, 'text')).to.match(/^POST \/v1\/completions 404 \d+ ms id=req_[0-9a-f]{32} model=stories260k\+nope error=".*nope.*"$/);
    expect(formatRequestRecord(gone!, 'text')).to.match(/ finish=abort client went away$/);
    expect(JSON.parse(formatRequestRecord(done!, 'json'))).to.deep.include({ status: 200, time: done!.time.toISOString(), completionTokens: 5 });
    // A client's model name cannot write a line of its own.
    expect(formatRequestRecord({ ...missing!, model: 'x\nPOST /v1/completions 200 1 ms', error: 'e' }, 'text')).to.match(/^POST \/v1\/completions 404 \d+ ms id=req_[0-9a-f]{32} model="x\\nPOST \/v1\/completions 200 1 ms" error="e"$/);
  });

  it('closes the connection of a 413 (its body left unread), so that a pooled client\'s next request is answered at once', async () => {
    // A body over the limit is left unread: the 413 says Connection: close and the server closes, so that a pooled
    // client's next request goes on a new connection instead of waiting on this one until it is reset.
    const big = Buffer.alloc(9 * 2 ** 20, 'x');
    const tooLarge = await exchange(server.url, Buffer.concat([Buffer.from(`POST /v1/chat/completions HTTP/1.1\r\n${rawAuth()}Content-Length: ${big.length}\r\n\r\n`), big]));
    expect(tooLarge.text).to.match(/^HTTP\/1\.1 413 /);
    expect(tooLarge.text).to.match(/\r\nConnection: close\r\n/i);
    expect(tooLarge.closed, 'the connection after the 413 closed').to.equal(true);
    const t0 = performance.now();
    expect((await post('/v1/chat/completions', { model: 'stories260k', messages: [{ role: 'user', content: 'x'.repeat(big.length) }] })).status).to.equal(413);
    expect((await fetch(`${server.url}/health`)).status).to.equal(200);
    expect(performance.now() - t0, 'the request after the 413 waited').to.be.below(3000);
  });

  it('leaves a stream\'s Connection header to Node: a client\'s Connection: close and HTTP/1.0 get their connection closed', async () => {
    const streamed = (path: string, version: string, close: string) => {
      const body = JSON.stringify({ model: 'stories260k', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2, stream: true });
      return exchange(server.url, `POST ${path} HTTP/${version}\r\n${rawAuth()}${close}Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    };
    for (const [path, version, close] of [['/v1/chat/completions', '1.1', 'Connection: close\r\n'], ['/v1/messages', '1.1', 'Connection: close\r\n'], ['/v1/chat/completions', '1.0', '']] as const) {
      const { text, closed } = await streamed(path, version, close);
      expect(text, `${path} HTTP/${version}`).to.match(/^HTTP\/1\.1 200 [^]*\r\nConnection: close\r\n/i);
      expect(text).to.not.match(/\r\nConnection: keep-alive/i);
      expect(closed, `${path} HTTP/${version}: the connection closed after the stream`).to.equal(true);
    }
    const kept = await streamed('/v1/chat/completions', '1.1', '');
    expect(kept.text).to.match(/\r\nConnection: keep-alive\r\n/i);
  });

  it('answers HEAD wherever GET is routed, and a known path\'s other methods with 405 and Allow', async () => {
    // HEAD wherever GET is routed: GET's status and headers, no body.
    for (const path of ['/health', '/v1/models', '/v1/models/stories260k', '/metrics', '/api/tags', '/api/version']) {
      const res = await fetch(`${server.url}${path}`, { method: 'HEAD', headers: { Authorization: `Bearer ${KEY}` } });
      expect(res.status, `HEAD ${path}`).to.equal(200);
      expect(await res.text()).to.equal('');
    }
    // A known path with another method: 405 with Allow, in the error shape of the path's API; unknown paths stay 404.
    const refused = async (method: string, path: string) => {
      const res = await fetch(`${server.url}${path}`, { method, headers: { Authorization: `Bearer ${KEY}` } });
      return { status: res.status, allow: res.headers.get('allow'), body: (await res.json()) as object };
    };
    const get = await refused('GET', '/v1/chat/completions');
    expect(get).to.deep.include({ status: 405, allow: 'POST' });
    expect(get.body).to.have.nested.property('error.code', 'method_not_allowed');
    expect(await refused('POST', '/health')).to.deep.include({ status: 405, allow: 'GET, HEAD' });
    expect(await refused('DELETE', '/v1/models/stories260k')).to.deep.include({ status: 405, allow: 'GET, HEAD' });
    const ollama = await refused('GET', '/api/chat');
    expect(ollama).to.deep.include({ status: 405, allow: 'POST' });
    expect(ollama.body).to.have.property('error').that.is.a('string');
    expect((await refused('GET', '/v1/nothing')).status).to.equal(404);
    expect((await refused('POST', '/nothing')).status).to.equal(404);
  });

  it("routes llama.cpp's un-prefixed OpenAI paths and absolute-form targets, and reads a body after a byte order mark", async () => {
    // llama.cpp's routes without /v1, for clients whose base URL leaves it out; /v1/messages has no such twin.
    const chatReply = await post('/chat/completions', { model: 'stories260k', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2 });
    expect(chatReply.status).to.equal(200);
    expect(await chatReply.json()).to.have.property('object', 'chat.completion');
    const listed = await fetch(`${server.url}/models`, { headers: { Authorization: `Bearer ${KEY}` } });
    expect(((await listed.json()) as { data: { id: string }[] }).data[0]!.id).to.equal('stories260k');
    expect((await post('/completions', { model: 'stories260k', prompt: 'Once', max_tokens: 1 })).status).to.equal(200);
    expect((await post('/messages', { model: 'stories260k', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2 })).status).to.equal(404);
    // An absolute-form target (RFC 9112 §3.2.2, as proxies send it) routes by its path.
    const absolute = await exchange(server.url, `GET ${server.url}/v1/models?x=1 HTTP/1.1\r\n${rawAuth()}Connection: close\r\n\r\n`);
    expect(absolute.text).to.match(/^HTTP\/1\.1 200 /);
    expect(absolute.text).to.include('"id":"stories260k"');
    // A body that opens with a byte order mark is JSON still (RFC 8259 §8.1).
    const bom = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(JSON.stringify({ model: 'stories260k', prompt: 'Once', max_tokens: 1 }))]);
    expect((await post('/v1/completions', undefined, { body: bom })).status).to.equal(200);
  });

  it('the CLI on SIGTERM stops accepting, finishes the running request, then exits 0', async () => {
    const cli = fileURLToPath(new URL('../src/cli/reasonplug.ts', import.meta.url));
    const child = spawn(process.execPath, [...fromSources, cli, 'serve', '--model', dir, '--port', '0'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    try {
      await new Promise<void>((resolve, reject) => {
        child.stderr.on('data', () => stderr.includes('ready;') && resolve());
        child.on('exit', () => reject(new Error(`serve exited: ${stderr}`)));
      });
      const url = /listening on (http:\/\/\S+)/.exec(stderr)![1]!;
      const res = await fetch(`${url}/v1/completions`, {
        method: 'POST',
        body: JSON.stringify({ model: 'stories260k', prompt: 'Once upon a time', max_tokens: 600, temperature: 0, stream: true }),
      });
      const reader = res.body!.getReader();
      let text = new TextDecoder().decode((await reader.read()).value);
      child.kill('SIGTERM');
      let ended = false;
      const rest = (async () => {
        for (let r = await reader.read(); !r.done; r = await reader.read()) text += new TextDecoder().decode(r.value);
        ended = true;
      })();
      // Asked until it refuses, while the request still runs (a loaded machine may take longer than a fixed pause to
      // deliver the signal): a server that took requests until its last one ended would answer 200 to the end.
      let refused: number | string = 200;
      while (refused === 200 && !ended) {
        refused = await fetch(`${url}/health`).then((r) => r.status, () => 'refused');
        if (refused === 200) await new Promise((r) => setTimeout(r, 20));
      }
      expect(refused, 'refused while the request ran').to.be.oneOf([503, 'refused']);
      await rest;
      const data = events(text);
      expect(data.at(-1)).to.equal('[DONE]');
      // All 600 tokens came (the request was mid-way at SIGTERM, ~1 ms a token): it ran to its end.
      expect(data.filter((d) => d !== '[DONE]' && JSON.parse(d).choices[0].text).length).to.be.within(550, 600);
      expect(JSON.parse(data.at(-2)!).choices[0].finish_reason).to.equal('length');
      expect(await exited).to.equal(0);
      // The request log: a line for each request answered, on stderr.
      expect(stderr).to.match(/^POST \/v1\/completions 200 \d+ ms id=req_[0-9a-f]{32} model=stories260k prompt=\d+ completion=\d+ finish=length$/m);
    } finally {
      child.kill('SIGKILL');
    }
  });
});
