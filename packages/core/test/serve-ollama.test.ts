/**
 * Ollama's API (`/api/*`) through `reasonplug serve`, with Ollama's own clients: @langchain/ollama's ChatOllama (invoke,
 * stream with usage, bound tools, withStructuredOutput, `think`) and OllamaEmbeddings, and the `ollama` client
 * (generate as a chat turn, raw and fill-in-the-middle with `suffix`, the model listings, errors in Ollama's shape):
 * each answer is the OpenAI endpoints' for the same request.
 */
import { expect } from 'chai';
import { join } from 'node:path';
import { ChatOllama, OllamaEmbeddings } from '@langchain/ollama';
import { Ollama } from 'ollama';
import { AIMessageChunk, HumanMessage } from '@langchain/core/messages';
import { tool } from '@langchain/core/tools';
import { z } from 'zod';
import { postJson, useServers } from './support/servers.js';
import { convertGguf } from '../src/gguf/convert.js';
import { scriptedChatModule, storiesModule } from './support/modules.js';
import { THINKING_TEMPLATE, TOOLS_TEMPLATE } from './support/chat-templates.js';
import { coderTokenizerMeta } from './support/bpe-vocab.js';
import { writeRandomGguf } from './support/gguf-models.js';
import { testDir } from './support/models.js';
import { parseOllamaChat } from '../src/serve/ollama-request.js';

const QUESTION = 'Tell me a story';

describe("reasonplug serve: Ollama's API (/api/*)", function () {
  this.timeout(180_000);
  let url: string;
  const { serve } = useServers();
  /** The chat endpoint's greedy answer. */
  const viaChat = async (at: string, body: Record<string, unknown>) =>
    (await (await postJson(at, '/v1/chat/completions', { model: 'stories260k', temperature: 0, ...body })).json()) as {
      choices: { message: { content: string; reasoning_content?: string } }[];
      usage: { prompt_tokens: number; completion_tokens: number };
    };

  before(async () => {
    url = await serve({ engine: { model: await storiesModule(), embeddings: true }, chatTemplate: TOOLS_TEMPLATE });
  });

  it('ChatOllama answers as the chat endpoint does, in invoke and stream, with usage', async () => {
    const chat = await viaChat(url, { messages: [{ role: 'user', content: QUESTION }], max_tokens: 12 });
    const model = new ChatOllama({ model: 'stories260k', baseUrl: url, temperature: 0, numPredict: 12 });
    const reply = await model.invoke([new HumanMessage(QUESTION)]);
    expect(reply.content).to.equal(chat.choices[0]!.message.content);
    expect(reply.usage_metadata).to.include({ input_tokens: chat.usage.prompt_tokens, output_tokens: 12 });
    expect(reply.response_metadata).to.include({ done_reason: 'length', model: 'stories260k' });
    const chunks: AIMessageChunk[] = [];
    for await (const c of await model.stream([new HumanMessage(QUESTION)])) chunks.push(c);
    expect(chunks.length).to.be.greaterThan(3);
    const joined = chunks.reduce((a, b) => a.concat(b));
    expect(joined.content).to.equal(chat.choices[0]!.message.content);
    expect(joined.usage_metadata).to.include({ input_tokens: chat.usage.prompt_tokens, output_tokens: 12 });
    // `:latest` names the model itself, as Ollama's clients write it
    const latest = await new ChatOllama({ model: 'stories260k:latest', baseUrl: url, temperature: 0, numPredict: 12 }).invoke(QUESTION);
    expect(latest.content).to.equal(chat.choices[0]!.message.content);
  });

  it('the stream is JSON lines, the last done with its counts; stream: false answers in one object', async () => {
    const body = { model: 'stories260k', messages: [{ role: 'user', content: QUESTION }], options: { temperature: 0, num_predict: 8 } };
    const res = await postJson(url, '/api/chat', body);
    expect(res.headers.get('content-type')).to.equal('application/x-ndjson');
    const lines = (await res.text()).trim().split('\n').map((l) => JSON.parse(l) as { message: { role: string; content: string }; done: boolean; done_reason?: string; eval_count?: number });
    expect(lines.slice(0, -1).every((l) => !l.done && l.message.role === 'assistant')).to.equal(true);
    expect(lines.at(-1)).to.include({ done: true, done_reason: 'length', eval_count: 8 });
    const whole = (await (await postJson(url, '/api/chat', { ...body, stream: false })).json()) as { message: { content: string }; done: boolean; prompt_eval_count: number };
    expect(whole.done).to.equal(true);
    expect(whole.message.content).to.equal(lines.map((l) => l.message.content).join(''));
    const chat = await viaChat(url, { messages: body.messages, max_tokens: 8 });
    expect(whole.message.content).to.equal(chat.choices[0]!.message.content);
    expect(whole.prompt_eval_count).to.equal(chat.usage.prompt_tokens);
    // more stop strings than OpenAI's 4, as Ollama takes them
    const stops = ['zq1', 'zq2', 'zq3', 'zq4', 'zq5'];
    const stopped = await postJson(url, '/api/chat', { ...body, stream: false, options: { ...body.options, stop: stops } });
    expect(stopped.status).to.equal(200);
    expect(((await stopped.json()) as { message: { content: string } }).message.content).to.equal(whole.message.content);
  });

  it('bound tools come back as tool_calls with object arguments, and withStructuredOutput (format: schema) parses', async () => {
    const add = tool(async ({ a, b }) => String(a + b), { name: 'add', description: 'Add two integers', schema: z.object({ a: z.number().int(), b: z.number().int() }) });
    const reply = '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 2}}\n</tool_call>\n<tool_call>\n{"name": "add", "arguments": {"a": 3, "b": 4}}\n</tool_call>';
    const { convertToOpenAITool } = await import('@langchain/core/utils/function_calling');
    const { dir } = await scriptedChatModule('ollama-tools', THINKING_TEMPLATE, [{ role: 'user', content: 'What are two and two?' }], reply, {
      tools: [convertToOpenAITool(add)],
      textTokens: ['<tool_call>', '</tool_call>'],
    });
    const at = await serve({ engine: { model: dir }, name: 'tools' });
    const model = new ChatOllama({ model: 'tools', baseUrl: at, temperature: 0, numPredict: 100 }).bindTools([add]);
    const called = await model.invoke('What are two and two?');
    expect(called.tool_calls?.map((c) => [c.name, c.args])).to.deep.equal([['add', { a: 2, b: 2 }], ['add', { a: 3, b: 4 }]]);
    let joined: AIMessageChunk | undefined;
    for await (const c of await model.stream('What are two and two?')) joined = joined ? joined.concat(c) : c;
    expect(joined!.tool_calls?.map((c) => c.args)).to.deep.equal([{ a: 2, b: 2 }, { a: 3, b: 4 }]);
    // the structure asked for, as the tiny model finishes it under these settings (as in the chat endpoint's tests)
    const schema = z.object({ name: z.string().max(12), age: z.number().int().min(0).max(120) });
    const structured = await new ChatOllama({ model: 'stories260k', baseUrl: url, temperature: 0.7, seed: 11, repeatPenalty: 1.3, numPredict: 80 })
      .withStructuredOutput(schema)
      .invoke('Make a person.');
    expect(schema.parse(structured)).to.deep.equal(structured);
  });

  it('think: the thought comes as the message\'s thinking (ChatOllama: reasoning_content); think: false leaves it out of the template', async () => {
    const question = 'What are two and two?';
    const { dir } = await scriptedChatModule('ollama-thinker', THINKING_TEMPLATE, [{ role: 'user', content: question }], '<think>\nTwo and two make four.\n</think>\n\nFour.');
    const at = await serve({ engine: { model: dir }, name: 'thinker' });
    const thought = await new ChatOllama({ model: 'thinker', baseUrl: at, temperature: 0, numPredict: 60, think: true }).invoke(question);
    expect(thought.content).to.equal('Four.');
    expect(thought.additional_kwargs.reasoning_content).to.equal('Two and two make four.');
    const client = new Ollama({ host: at });
    const generated = await client.generate({ model: 'thinker', prompt: question, think: true, options: { temperature: 0, num_predict: 60 } });
    expect(generated).to.include({ response: 'Four.', thinking: 'Two and two make four.' });
    // think: false renders the template with enable_thinking false (its empty thought), as /tokenize shows
    const off = await client.chat({ model: 'thinker', messages: [{ role: 'user', content: question }], think: false, options: { num_predict: 1 } });
    const tokenized = (await (await postJson(at, '/tokenize', { model: 'thinker', messages: [{ role: 'user', content: question }], chat_template_kwargs: { enable_thinking: false } })).json()) as { count: number };
    expect(off.prompt_eval_count).to.equal(tokenized.count);
  });

  it('think asked of a model whose template writes no thought is Ollama\'s 400, which its clients read to ask again without it', async () => {
    const messages = [{ role: 'user', content: QUESTION }];
    for (const [path, think] of [['/api/chat', true], ['/api/chat', 'high'], ['/api/generate', true]] as const) {
      const body = path === '/api/chat' ? { model: 'stories260k', messages, think } : { model: 'stories260k', prompt: QUESTION, think };
      const res = await postJson(url, path, { ...body, stream: false, options: { num_predict: 2 } });
      expect(res.status, `${path} think ${think}`).to.equal(400);
      expect(await res.json()).to.deep.equal({ error: '"stories260k" does not support thinking' });
    }
    // think: false is no thought, which every model gives; an unknown model is still the 404
    expect((await postJson(url, '/api/chat', { model: 'stories260k', messages, think: false, stream: false, options: { num_predict: 2 } })).status).to.equal(200);
    expect((await postJson(url, '/api/chat', { model: 'nope', messages, think: true, stream: false })).status).to.equal(404);
  });

  it("options left out take Ollama's defaults (temperature 0.8, top_k 40, top_p 0.9, repeat_last_n 64); seed -1 is no seed", async () => {
    const turn = (options?: object) => parseOllamaChat({ model: 'stories260k', messages: [{ role: 'user', content: QUESTION }], ...(options ? { options } : {}) }).options;
    expect(turn()).to.include({ temperature: 0.8, topK: 40, topP: 0.9, repetitionWindow: 64 });
    expect(turn()).to.not.have.any.keys('seed', 'minP', 'repetitionPenalty', 'maxTokens');
    // what a request gives wins, -1 (the whole context) included
    expect(turn({ temperature: 0, top_k: 0, top_p: 1, repeat_last_n: -1 })).to.include({ temperature: 0, topK: 0, topP: 1 }).and.not.have.property('repetitionWindow');
    expect(turn({ seed: -1, temperature: 1.5 })).to.not.have.property('seed');
    expect(turn({ seed: 7 })).to.include({ seed: 7 });

    const generate = async (options: object) =>
      ((await (await postJson(url, '/api/generate', { model: 'stories260k', prompt: 'Once upon a time', raw: true, stream: false, options })).json()) as { response: string }).response;
    // a request sending nothing but a seed samples as one sending Ollama's defaults
    const explicit = { temperature: 0.8, top_k: 40, top_p: 0.9, repeat_penalty: 1, repeat_last_n: 64 };
    expect(await generate({ seed: 3, num_predict: 40 })).to.equal(await generate({ seed: 3, num_predict: 40, ...explicit }));
    // repeat_penalty alone looks at the last 64 tokens, not the whole context
    const penalized = { temperature: 0, num_predict: 120, repeat_penalty: 1.5 };
    const alone = await generate(penalized);
    expect(alone).to.equal(await generate({ ...penalized, repeat_last_n: 64 }));
    expect(alone).to.not.equal(await generate({ ...penalized, repeat_last_n: -1 }));
    // seed -1 draws afresh each time, as Ollama's
    const drawn = await Promise.all([1, 2, 3].map(() => generate({ temperature: 1.5, seed: -1, num_predict: 20 })));
    expect(new Set(drawn).size).to.be.greaterThan(1);
  });

  it('OllamaEmbeddings and /api/embed give the /v1/embeddings vectors, /api/embeddings the hidden state unscaled (as Ollama); nothing to embed answers empty', async () => {
    const texts = ['Once upon a time', 'a little girl'];
    const openai = (await (await postJson(url, '/v1/embeddings', { model: 'stories260k', input: texts })).json()) as { data: { embedding: number[] }[] };
    const vectors = await new OllamaEmbeddings({ model: 'stories260k', baseUrl: url }).embedDocuments(texts);
    expect(vectors).to.deep.equal(openai.data.map((d) => d.embedding));
    const legacy = (await (await postJson(url, '/api/embeddings', { model: 'stories260k', prompt: texts[0] })).json()) as { embedding: number[] };
    const norm = Math.hypot(...legacy.embedding);
    expect(norm).to.not.be.closeTo(1, 1e-3);
    legacy.embedding.forEach((x, i) => expect(x / norm).to.be.closeTo(openai.data[0]!.embedding[i]!, 1e-6));
    // Ollama's clients warm a model with nothing to embed: an empty answer, not an error (an unknown model still 404s)
    for (const input of [undefined, '', []]) {
      const res = await postJson(url, '/api/embed', { model: 'stories260k', ...(input !== undefined ? { input } : {}) });
      expect([res.status, ((await res.json()) as { embeddings: unknown[] }).embeddings], JSON.stringify(input)).to.deep.equal([200, []]);
    }
    expect(await (await postJson(url, '/api/embeddings', { model: 'stories260k', prompt: '' })).json()).to.deep.equal({ embedding: [] });
    expect((await postJson(url, '/api/embed', { model: 'nope' })).status).to.equal(404);
    const notText = await postJson(url, '/api/embeddings', { model: 'stories260k', prompt: 7 });
    expect([notText.status, await notText.json()]).to.deep.equal([400, { error: 'prompt must be a string' }]);
  });

  it('generate: a chat turn, raw text, and fill-in-the-middle with suffix, each the OpenAI endpoints\' answer; an empty prompt says the model is loaded', async () => {
    const client = new Ollama({ host: url });
    const options = { temperature: 0, num_predict: 10 };
    const turn = await client.generate({ model: 'stories260k', prompt: QUESTION, options });
    expect(turn.response).to.equal((await viaChat(url, { messages: [{ role: 'user', content: QUESTION }], max_tokens: 10 })).choices[0]!.message.content);
    const completion = (await (await postJson(url, '/v1/completions', { model: 'stories260k', prompt: 'Once upon a time', max_tokens: 10, temperature: 0 })).json()) as { choices: { text: string }[] };
    const raw = await client.generate({ model: 'stories260k', prompt: 'Once upon a time', raw: true, options });
    expect(raw).to.include({ response: completion.choices[0]!.text, done: true, done_reason: 'length', eval_count: 10 });
    let streamed = '';
    for await (const part of await client.generate({ model: 'stories260k', prompt: 'Once upon a time', raw: true, options, stream: true })) streamed += part.response;
    expect(streamed).to.equal(raw.response);
    expect(await client.generate({ model: 'stories260k', prompt: '' })).to.include({ done: true, done_reason: 'load', response: '' });
    // Ollama's documented load requests: no prompt, no messages or an empty list (its clients send them to warm a model)
    for (const [path, body] of [['/api/generate', {}], ['/api/chat', {}], ['/api/chat', { messages: [] }]] as const) {
      const res = await fetch(`${url}${path}`, { method: 'POST', body: JSON.stringify({ model: 'stories260k', stream: false, ...body }) });
      expect(res.status, path).to.equal(200);
      expect(await res.json(), `${path} ${JSON.stringify(body)}`).to.include({ done: true, done_reason: 'load' });
    }

    // fill-in-the-middle on a code model
    const dir = testDir('ollama-coder');
    const gguf = join(dir, 'coder.gguf');
    await writeRandomGguf(gguf, { arch: 'qwen2', hidden: 64, layers: 2, heads: 4, kvHeads: 2, ff: 96, qkvBias: true, untied: true, seed: 12 }, coderTokenizerMeta());
    const { dir: module } = await convertGguf(gguf, join(dir, 'coder'));
    const at = await serve({ engine: { model: module }, name: 'coder' });
    const [prefix, suffix] = ['def add(a, b):\n    ', '\n\nprint(add(2, 3))\n'];
    const openai = (await (await postJson(at, '/v1/completions', { model: 'coder', prompt: prefix, suffix, max_tokens: 12, temperature: 0 })).json()) as { choices: { text: string }[] };
    const fim = await new Ollama({ host: at }).generate({ model: 'coder', prompt: prefix, suffix, options: { temperature: 0, num_predict: 12 } });
    expect(fim.response).to.equal(openai.choices[0]!.text);
    const show = await new Ollama({ host: at }).show({ model: 'coder' });
    expect(show.capabilities).to.include('insert');
  });

  it('lists the models and what they can do; errors come in Ollama\'s shape, which its client throws', async () => {
    const client = new Ollama({ host: url });
    // (with Ollama's default tag, as Ollama lists an untagged name; requests take it with or without)
    expect((await client.list()).models.map((m) => [m.name, m.model])).to.deep.equal([['stories260k:latest', 'stories260k:latest']]);
    const [running] = (await client.ps()).models;
    expect(running!.name).to.equal('stories260k:latest');
    // (ollama-js declares both always present: a loaded model's unload time, its GPU bytes)
    expect(new Date(running!.expires_at).getTime()).to.be.greaterThan(Date.now());
    expect(running!.size_vram).to.equal(0);
    const show = await client.show({ model: 'stories260k' });
    expect(show.capabilities).to.include.members(['completion', 'tools', 'embedding']).and.not.include('insert');
    // the family the converted GGUF declared, and the context length under the keys Ollama's clients read
    expect(show.details.family).to.equal('llama');
    expect(show.model_info).to.deep.equal({ 'general.architecture': 'llama', 'general.context_length': 2048, 'llama.context_length': 2048, 'llama.embedding_length': 64 });
    expect(show.template).to.equal(TOOLS_TEMPLATE);
    // the Ollama API it speaks, not the package's 0.x (editors' providers refuse servers below their minimum)
    const version = (await (await fetch(`${url}/api/version`)).json()) as { version: string; reasonplug: string };
    expect(version.version).to.equal('0.9.0');
    expect(version.reasonplug).to.match(/^\d+\.\d+\.\d+/);
    const root = await fetch(`${url}/`);
    expect([root.status, await root.text()]).to.deep.equal([200, 'reasonplug is running (OpenAI, Anthropic and Ollama APIs)']);
    expect((await fetch(`${url}/`, { method: 'HEAD' })).status).to.equal(200);
    const missing = await client.chat({ model: 'nope', messages: [{ role: 'user', content: 'Hi' }] }).catch((e: Error & { status_code?: number }) => e);
    expect(missing).to.be.instanceOf(Error).and.have.property('status_code', 404);
    expect((missing as Error).message).to.match(/The model "nope" does not exist/);
    for (const [body, message] of [
      [{ model: 'stories260k', messages: [{ role: 'user', content: 'Hi' }], options: { mirostat: 2 } }, /options\.mirostat 2 is not supported/],
      [{ model: 'stories260k', messages: [{ role: 'user', content: 'Hi', images: ['aGk='] }] }, /text only/],
      [{ model: 'stories260k', messages: [{ role: 'user', content: 'Hi' }], format: 'yaml' }, /format must be "json" or a JSON schema/],
      // the reasonplug extension passes through as on /v1 (this server loads no reasoner named so)
      [{ model: 'stories260k', messages: [{ role: 'user', content: 'Hi' }], reasonplug: { reasoners: [{ name: 'math' }] } }, /math/],
    ] as const) {
      const res = await postJson(url, '/api/chat', body);
      expect(res.status).to.equal(400);
      expect(((await res.json()) as { error: string }).error).to.match(message);
    }
    expect((await postJson(url, '/api/generate', { model: 'stories260k', prompt: 'x', suffix: 'y' })).status).to.equal(400);
    expect((await postJson(url, '/api/pull', { model: 'x' })).status).to.equal(404);
    // API keys hold on /api/* too (Ollama's clients send them as headers); the refusal in Ollama's shape
    const keyed = await serve({ engine: { model: await storiesModule() }, apiKeys: ['ollama-key'] });
    const refused = await postJson(keyed, '/api/chat', { model: 'stories260k', messages: [{ role: 'user', content: 'Hi' }] });
    expect(refused.status).to.equal(401);
    expect(((await refused.json()) as { error: string }).error).to.match(/Missing API key/);
    expect((await new Ollama({ host: keyed, headers: { Authorization: 'Bearer ollama-key' } }).list()).models).to.have.length(1);
  });
});
