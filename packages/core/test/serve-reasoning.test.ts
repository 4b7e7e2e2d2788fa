/**
 * Reasoning models through `reasonplug serve`: a reply's `<think>` thought comes out as `reasoning_content` (as
 * llama.cpp's server and vLLM's reasoning parsers give it), read by @langchain/openai's ChatOpenAI in invoke and
 * stream, with `reasoning_tokens` in the usage; `reasoning_format: none` leaves it in the content; templates that
 * open the thought in the prompt (DeepSeek-R1's) and `chat_template_kwargs` (Qwen3's `enable_thinking`). The
 * backbones are scripted to write a thought and an answer for one conversation.
 */
import { expect } from 'chai';
import { ChatOpenAI } from '@langchain/openai';
import { AIMessageChunk } from '@langchain/core/messages';
import { Engine } from '../src/engine.js';
import { startServer, type RunningServer } from '../src/serve/server.js';
import { parseChatRequest } from '../src/serve/requests.js';
import { TextTokenizer } from '../src/tokenizer/tokenizer.js';
import { scriptedChatModule, storiesModule } from './support/modules.js';
import { MAGISTRAL_TEMPLATE, OPEN_THOUGHT_TEMPLATE, THINKING_TEMPLATE } from './support/chat-templates.js';

const QUESTION = 'What are two and two?';
const THOUGHT = 'Two and two make four.';
const ANSWER = 'Four.';

describe('reasonplug serve: reasoning models', function () {
  this.timeout(120_000);
  const servers: RunningServer[] = [];
  let tokenizer: TextTokenizer;

  async function serve(
    name: string,
    template: string,
    reply: string,
    tools?: unknown[],
    added: { textTokens?: readonly string[]; specialTokens?: readonly string[]; templateKwargs?: Record<string, unknown> } = {},
  ): Promise<{ url: string; replyIds: number[]; dir: string }> {
    const { dir, replyIds } = await scriptedChatModule(name, template, [{ role: 'user', content: QUESTION }], reply, { ...(tools ? { tools } : {}), ...added });
    const server = await startServer({ engine: { model: dir }, name, port: 0 });
    servers.push(server);
    await server.ready;
    return { url: server.url, replyIds, dir };
  }
  const chat = (url: string, model: string, over: Record<string, unknown> = {}) =>
    new ChatOpenAI({ model, apiKey: 'none', temperature: 0, configuration: { baseURL: `${url}/v1` }, maxRetries: 0, ...over });
  const post = (url: string, path: string, body: unknown) =>
    fetch(`${url}${path}`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  /** Tokens up to the one that completes `</think>`, by scanning every prefix of the reply. */
  const thoughtTokens = (ids: number[]) => ids.findIndex((_, k) => tokenizer.decode(ids.slice(0, k + 1)).includes('</think>')) + 1;

  before(async () => {
    tokenizer = await TextTokenizer.fromDirectory(await storiesModule());
  });
  after(async () => {
    await Promise.all(servers.map((s) => s.close()));
  });

  it('ChatOpenAI reads the thought as reasoning_content and the answer as content, in invoke and stream, with reasoning tokens', async () => {
    const { url, replyIds } = await serve('thinker', THINKING_TEMPLATE, `<think>\n${THOUGHT}\n</think>\n\n${ANSWER}`);
    const reply = await chat(url, 'thinker').invoke(QUESTION);
    expect(reply.content).to.equal(ANSWER);
    expect(reply.additional_kwargs.reasoning_content).to.equal(THOUGHT);
    expect(reply.usage_metadata?.output_tokens).to.equal(replyIds.length + 1); // and the end token
    expect(reply.usage_metadata?.output_token_details?.reasoning).to.equal(thoughtTokens(replyIds));

    const chunks: AIMessageChunk[] = [];
    for await (const c of await chat(url, 'thinker', { streamUsage: true }).stream(QUESTION)) chunks.push(c);
    // The thought streams as it is written, not in one piece at its end.
    expect(chunks.filter((c) => c.additional_kwargs.reasoning_content).length).to.be.greaterThan(2);
    const joined = chunks.reduce((a, b) => a.concat(b));
    expect(joined.content).to.equal(ANSWER);
    expect(joined.additional_kwargs.reasoning_content).to.equal(THOUGHT);
    expect(joined.usage_metadata?.output_token_details?.reasoning).to.equal(thoughtTokens(replyIds));

    // reasoning_format none (llama.cpp's) leaves the thought in the content, as the model wrote it.
    const raw = (await (await post(url, '/v1/chat/completions', { model: 'thinker', messages: [{ role: 'user', content: QUESTION }], reasoning_format: 'none' })).json()) as {
      choices: { message: { content: string; reasoning_content?: string } }[];
      usage: { completion_tokens_details: { reasoning_tokens: number } };
    };
    // (after the space SentencePiece writes before the first piece of a continuation)
    expect(raw.choices[0]!.message.content).to.equal(` ${tokenizer.decode(replyIds)}`);
    expect(raw.choices[0]!.message.content).to.include(`<think>\n${THOUGHT}\n</think>`);
    expect(raw.choices[0]!.message).to.not.have.property('reasoning_content');
    expect(raw.usage.completion_tokens_details.reasoning_tokens).to.equal(0);
  });

  it("the thought also goes by vLLM's newer name, reasoning (the OpenAI Agents SDK's), whole and streamed, and comes back by it", async () => {
    const { url } = await serve('thinker-named', THINKING_TEMPLATE, `<think>\n${THOUGHT}\n</think>\n\n${ANSWER}`);
    const body = { model: 'thinker-named', messages: [{ role: 'user', content: QUESTION }] };
    const whole = (await (await post(url, '/v1/chat/completions', body)).json()) as { choices: { message: Record<string, unknown> }[] };
    expect(whole.choices[0]!.message).to.include({ reasoning: THOUGHT, reasoning_content: THOUGHT, content: ANSWER });
    const events = (await (await post(url, '/v1/chat/completions', { ...body, stream: true })).text()).split('\n\n').filter((e) => e.startsWith('data: {'));
    const deltas = events.map((e) => (JSON.parse(e.slice(6)) as { choices: { delta: Record<string, string> }[] }).choices[0]?.delta ?? {});
    expect(deltas.map((d) => d.reasoning ?? '').join('')).to.equal(THOUGHT);
    expect(deltas.map((d) => d.reasoning_content ?? '').join('')).to.equal(THOUGHT);
    // An earlier turn's thought sent back as reasoning is the message's reasoning_content, as that name is.
    const turn = (thought: Record<string, string>) => parseChatRequest({ ...body, messages: [...body.messages, { role: 'assistant', content: ANSWER, ...thought }] }).messages[1];
    expect(turn({ reasoning: THOUGHT })).to.deep.equal(turn({ reasoning_content: THOUGHT }));
    expect(turn({ reasoning: THOUGHT })!.reasoning_content).to.equal(THOUGHT);
  });

  it('a template that opens the thought in the prompt: the reply starts inside it', async () => {
    const { url, replyIds } = await serve('opener', OPEN_THOUGHT_TEMPLATE, `${THOUGHT}\n</think>\n\n${ANSWER}`);
    const reply = await chat(url, 'opener').invoke(QUESTION);
    expect(reply.content).to.equal(ANSWER);
    expect(reply.additional_kwargs.reasoning_content).to.equal(THOUGHT);
    expect(reply.usage_metadata?.output_token_details?.reasoning).to.equal(thoughtTokens(replyIds));
    // Cut before the thought closes, the reply is all thought.
    const cut = await chat(url, 'opener', { maxTokens: 3 }).invoke(QUESTION);
    expect(cut.content).to.equal('');
    expect(cut.additional_kwargs.reasoning_content).to.equal(tokenizer.decode(replyIds.slice(0, 3)).trim());
    expect(cut.usage_metadata?.output_token_details?.reasoning).to.equal(3);
  });

  it('on a reasoning template a constrained reply thinks first: withStructuredOutput and a forced tool call answer after the thought', async () => {
    // The schemas leave one way to write the answer, so the scripted model (which would write "Four.") finishes it.
    const schema = { type: 'object', properties: { answer: { enum: [4] } }, required: ['answer'], additionalProperties: false };
    const add = { type: 'function', function: { name: 'add', description: 'Add', parameters: { type: 'object', properties: { a: { enum: [2] }, b: { enum: [2] } }, required: ['a', 'b'], additionalProperties: false } } };
    for (const [name, template, reply] of [
      ['thinker-json', THINKING_TEMPLATE, `<think>\n${THOUGHT}\n</think>\n\n${ANSWER}`],
      ['opener-json', OPEN_THOUGHT_TEMPLATE, `${THOUGHT}\n</think>\n\n${ANSWER}`],
    ] as const) {
      const { url } = await serve(name, template, reply);
      const structured = await chat(url, name, { maxTokens: 80 }).withStructuredOutput(schema, { name: 'sum', includeRaw: true }).invoke(QUESTION);
      expect(structured.parsed, name).to.deep.equal({ answer: 4 });
      expect(structured.raw.additional_kwargs.reasoning_content, name).to.equal(THOUGHT);
      // (the grammar leaves the blanks to the model)
      expect(JSON.parse(structured.raw.content as string), name).to.deep.equal({ answer: 4 });

      // Scripted for the prompt with the tool rendered in it.
      const tools = await serve(`${name}-tools`, template, reply, [add]);
      const called = await chat(tools.url, `${name}-tools`, { maxTokens: 160 }).bindTools([add], { tool_choice: 'add' }).invoke(QUESTION);
      expect(called.tool_calls?.map((c) => [c.name, c.args]), name).to.deep.equal([['add', { a: 2, b: 2 }]]);
      expect(called.additional_kwargs.reasoning_content, name).to.equal(THOUGHT);
      expect(called.response_metadata.finish_reason, name).to.equal('tool_calls');
    }
  });

  it('thinking switched off (the prompt closes an empty thought): a constrained reply is the structure from its first token', async () => {
    const schema = { type: 'object', properties: { answer: { enum: [4] } }, required: ['answer'], additionalProperties: false };
    const add = { type: 'function', function: { name: 'add', description: 'Add', parameters: { type: 'object', properties: { a: { enum: [2] }, b: { enum: [2] } }, required: ['a', 'b'], additionalProperties: false } } };
    // Scripted to think all the same after the prompt's empty thought, as a model may.
    const off = { enable_thinking: false };
    const reply = `<think>\n${THOUGHT}\n</think>\n\n${ANSWER}`;
    const { url } = await serve('thinker-off', THINKING_TEMPLATE, reply, undefined, { templateKwargs: off });
    const messages = [{ role: 'user', content: QUESTION }];
    const completion = (await (
      await post(url, '/v1/chat/completions', { model: 'thinker-off', messages, max_tokens: 80, temperature: 0, chat_template_kwargs: off, response_format: { type: 'json_schema', json_schema: { name: 'sum', schema } } })
    ).json()) as { choices: { message: { content: string; reasoning_content?: string } }[] };
    expect(completion.choices[0]!.message).to.not.have.property('reasoning_content');
    expect(JSON.parse(completion.choices[0]!.message.content)).to.deep.equal({ answer: 4 });
    // Ollama's think: false with format json: content, no thinking
    const ollama = (await (await post(url, '/api/chat', { model: 'thinker-off', messages, stream: false, think: false, format: 'json', options: { num_predict: 80, temperature: 0 } })).json()) as {
      message: { content: string; thinking?: string };
    };
    expect(ollama.message).to.not.have.property('thinking');
    expect(JSON.parse(ollama.message.content)).to.be.an('object');

    // Anthropic's thinking disabled with tool_choice any: the call, no thinking block.
    const tools = await serve('thinker-off-tools', THINKING_TEMPLATE, reply, [add], { templateKwargs: off });
    const anthropic = (await (
      await post(tools.url, '/v1/messages', {
        model: 'thinker-off-tools',
        max_tokens: 160,
        thinking: { type: 'disabled' },
        tool_choice: { type: 'any' },
        tools: [{ name: 'add', description: 'Add', input_schema: add.function.parameters }],
        messages,
      })
    ).json()) as { content: { type: string; name?: string; input?: unknown }[]; stop_reason: string };
    expect(anthropic.content.map((b) => b.type)).to.deep.equal(['tool_use']);
    expect(anthropic.content[0]).to.deep.include({ name: 'add', input: { a: 2, b: 2 } });
    expect(anthropic.stop_reason).to.equal('tool_use');
  });

  it('a thought whose tags are added tokens of the vocabulary (as Qwen3\'s are) is written with them when the reply is constrained', async () => {
    const schema = { type: 'object', properties: { answer: { enum: [4] } }, required: ['answer'], additionalProperties: false };
    const { url, replyIds } = await serve('qwen3ish-json', THINKING_TEMPLATE, `<think>\n${THOUGHT}\n</think>\n\n${ANSWER}`, undefined, { textTokens: ['<think>', '</think>'] });
    // The scripted reply opens and closes its thought with the added tokens, ids 512 and 513.
    expect(replyIds.filter((id) => id >= 512)).to.deep.equal([512, 513]);
    const structured = await chat(url, 'qwen3ish-json', { maxTokens: 80 }).withStructuredOutput(schema, { name: 'sum', includeRaw: true }).invoke(QUESTION);
    expect(structured.parsed).to.deep.equal({ answer: 4 });
    expect(structured.raw.additional_kwargs.reasoning_content).to.equal(THOUGHT);
    expect(JSON.parse(structured.raw.content as string)).to.deep.equal({ answer: 4 });
  });

  it("Magistral's thought between the special tokens [THINK] and [/THINK] is reasoning_content, free and constrained", async () => {
    const { url, replyIds } = await serve('magistralish', MAGISTRAL_TEMPLATE, `[THINK]${THOUGHT}[/THINK]${ANSWER}`, undefined, { specialTokens: ['[THINK]', '[/THINK]'] });
    expect(replyIds.filter((id) => id >= 512)).to.deep.equal([512, 513]);
    const reply = await chat(url, 'magistralish', { maxTokens: 60 }).invoke(QUESTION);
    expect(reply.additional_kwargs.reasoning_content).to.equal(THOUGHT);
    expect(reply.content).to.equal(ANSWER);
    expect(reply.usage_metadata?.output_token_details?.reasoning).to.be.greaterThan(0);
    const schema = { type: 'object', properties: { answer: { enum: [4] } }, required: ['answer'], additionalProperties: false };
    const structured = await chat(url, 'magistralish', { maxTokens: 80 }).withStructuredOutput(schema, { name: 'sum', includeRaw: true }).invoke(QUESTION);
    expect(structured.parsed).to.deep.equal({ answer: 4 });
    expect(structured.raw.additional_kwargs.reasoning_content).to.equal(THOUGHT);
  });

  it("the engine's parsed value of a reply that thought first is its answer", async () => {
    const { dir } = await scriptedChatModule('engine-thinker', OPEN_THOUGHT_TEMPLATE, [{ role: 'user', content: QUESTION }], `${THOUGHT}\n</think>\n\n${ANSWER}`);
    const engine = await Engine.load({ model: dir });
    try {
      const promptIds = tokenizer.encode(tokenizer.applyChatTemplate([{ role: 'user', content: QUESTION }], { template: OPEN_THOUGHT_TEMPLATE }), false);
      const schema = { type: 'object', properties: { answer: { enum: [4] } }, required: ['answer'] };
      const thought = { open: '<think>', close: '</think>', opened: true };
      const row = (await engine.generate({ promptIds }, { maxTokens: 80, responseFormat: { type: 'json_schema', schema, thought } })).rows[0]!;
      expect(row.text).to.match(new RegExp(`^ ?${THOUGHT}\\n</think>\\s*\\{\\s?"answer"\\s?:\\s?4\\s?\\}$`));
      expect(row.parsed).to.deep.equal({ answer: 4 });
    } finally {
      await engine.dispose();
    }
  });

  it('chat_template_kwargs reach the template (enable_thinking: false writes an empty thought); earlier thoughts go back as reasoning_content', async () => {
    const { url } = await serve('thinker-kwargs', THINKING_TEMPLATE, `<think>\n${THOUGHT}\n</think>\n\n${ANSWER}`);
    const tokenize = async (body: Record<string, unknown>) => {
      const res = await post(url, '/tokenize', { messages: [{ role: 'user', content: QUESTION }], ...body });
      return { status: res.status, body: (await res.json()) as { tokens: number[]; error: { message: string; param: string } } };
    };
    const plain = await tokenize({});
    const off = await tokenize({ chat_template_kwargs: { enable_thinking: false } });
    expect(tokenizer.decode(off.body.tokens)).to.equal(`${tokenizer.decode(plain.body.tokens)}<think>\n\n</think>\n\n`);
    // The answer to a prompt whose thought is closed is not read as a thought.
    const body = { model: 'thinker-kwargs', messages: [{ role: 'user', content: QUESTION }], max_tokens: 4, chat_template_kwargs: { enable_thinking: false } };
    const res = await post(url, '/v1/chat/completions', body);
    const { message } = ((await res.json()) as { choices: { message: { content: string } }[] }).choices[0]!;
    expect(message.content).to.have.length.greaterThan(0);
    expect(message).to.not.have.property('reasoning_content');
    // A thought sent back with an earlier turn is accepted (this template drops it).
    const turns = [
      { role: 'user', content: QUESTION },
      { role: 'assistant', content: ANSWER, reasoning_content: THOUGHT },
      { role: 'user', content: 'And three and three?' },
    ];
    const next = await tokenize({ messages: turns });
    expect(next.status).to.equal(200);
    expect(tokenizer.decode(next.body.tokens)).to.not.include(THOUGHT);

    for (const [kwargs, param] of [
      [[1], 'chat_template_kwargs'],
      [{ messages: [] }, 'chat_template_kwargs.messages'],
      [{ add_generation_prompt: false }, 'chat_template_kwargs.add_generation_prompt'],
    ] as const) {
      const bad = await post(url, '/v1/chat/completions', { ...body, chat_template_kwargs: kwargs });
      expect(bad.status).to.equal(400);
      expect(((await bad.json()) as { error: { param: string } }).error.param).to.equal(param);
    }
    const badFormat = await post(url, '/v1/chat/completions', { ...body, reasoning_format: 'hidden' });
    expect(badFormat.status).to.equal(400);
    expect(((await badFormat.json()) as { error: { message: string } }).error.message).to.match(/reasoning_format must be "auto", "deepseek" or "none"/);
  });

  it('thinking_token_budget cuts the thought after that many tokens: the closing tag is written, and it is all the reasoning', async () => {
    const reply = `<think>\n${THOUGHT}\n</think>\n\n${ANSWER}`;
    const budget = 3;
    // Tags written in pieces (the stories vocabulary's) and as added tokens (Qwen3's, ids 512 and 513).
    for (const [name, added] of [
      ['budget-pieces', {}],
      ['budget-added', { textTokens: ['<think>', '</think>'] }],
    ] as const) {
      const { url, replyIds, dir } = await serve(name, THINKING_TEMPLATE, reply, undefined, added);
      const vocab = await TextTokenizer.fromDirectory(dir);
      // The thought's body starts after the token that completes the opening tag.
      const opened = replyIds.findIndex((_, k) => vocab.decode(replyIds.slice(0, k + 1)).trimStart().startsWith('<think>')) + 1;
      expect(opened, name).to.be.greaterThan(0);
      const close = 'textTokens' in added ? [513] : vocab.encode('</think>', false);
      const written = vocab.decode(replyIds.slice(0, opened + budget));
      const thought = written.slice(written.indexOf('<think>') + '<think>'.length).trim();
      const cut = await chat(url, name, { maxTokens: 40, modelKwargs: { thinking_token_budget: budget } }).invoke(QUESTION);
      expect(cut.additional_kwargs.reasoning_content, name).to.equal(thought);
      expect(cut.usage_metadata?.output_token_details?.reasoning, name).to.equal(opened + budget + close.length);
      const whole = await chat(url, name, { maxTokens: 40 }).invoke(QUESTION);
      expect(whole.additional_kwargs.reasoning_content, name).to.equal(THOUGHT);
    }
    // A server-wide budget, and a request's own over it.
    const { dir, replyIds } = await scriptedChatModule('budget-server', THINKING_TEMPLATE, [{ role: 'user', content: QUESTION }], reply);
    const server = await startServer({ engine: { model: dir }, name: 'budget-server', port: 0, thinkingBudget: 0 });
    servers.push(server);
    await server.ready;
    const opened = replyIds.findIndex((_, k) => tokenizer.decode(replyIds.slice(0, k + 1)).trimStart().startsWith('<think>')) + 1;
    const empty = await chat(server.url, 'budget-server', { maxTokens: 40 }).invoke(QUESTION);
    expect(empty.additional_kwargs.reasoning_content ?? '').to.equal('');
    // An empty thought's tags are its reasoning tokens.
    expect(empty.usage_metadata?.output_token_details?.reasoning).to.equal(opened + tokenizer.encode('</think>', false).length);
    const own = await chat(server.url, 'budget-server', { maxTokens: 40, modelKwargs: { thinking_token_budget: 1000 } }).invoke(QUESTION);
    expect(own.additional_kwargs.reasoning_content).to.equal(THOUGHT);
    for (const bad of [-1, 2.5, 'many']) {
      const res = await post(server.url, '/v1/chat/completions', { model: 'budget-server', messages: [{ role: 'user', content: QUESTION }], thinking_token_budget: bad });
      expect(res.status, String(bad)).to.equal(400);
      expect(((await res.json()) as { error: { param: string } }).error.param).to.equal('thinking_token_budget');
    }
  });
});
