/**
 * gpt-oss's replies (OpenAI's harmony format) through `reasonplug serve` and ChatOpenAI: the analysis message is
 * reasoning_content, the final one content, a commentary message to `functions.<name>` a tool call; the constraint
 * writes calls and structured answers in the format's messages, after an optional analysis. The backbone has the
 * format's special tokens in a byte-level BPE vocabulary, and is scripted to reply in harmony messages.
 */
import { expect } from 'chai';
import { ChatOpenAI } from '@langchain/openai';
import { AIMessage, AIMessageChunk } from '@langchain/core/messages';
import { HARMONY_TOKENS, HarmonyReplySplitter } from '../src/chat/harmony.js';
import { keptTokens, replyParsing, splitReply, thinkingBudgetFor, thoughtFirst } from '../src/chat/reply.js';
import { Engine } from '../src/engine.js';
import { toolCallSyntaxOf } from '../src/constrain/tool-syntax.js';
import { TextTokenizer } from '../src/tokenizer/tokenizer.js';
import { scriptedChatModule } from './support/modules.js';
import { HARMONY_TEMPLATE } from './support/chat-templates.js';
import { postJson, useServers } from './support/servers.js';

const QUESTION = 'What are two and two?';
const THOUGHT = 'Two and two make four.';
const ANSWER = 'Four.';
const ADD = {
  type: 'function' as const,
  function: { name: 'add', description: 'Add two integers', parameters: { type: 'object', properties: { a: { type: 'integer' }, b: { type: 'integer' } }, required: ['a', 'b'] } },
};
const ANALYSIS = `<|channel|>analysis<|message|>${THOUGHT}<|end|><|start|>assistant`;
const ANSWERED = `${ANALYSIS}<|channel|>final<|message|>${ANSWER}`;
const CALLED = `${ANALYSIS} to=functions.add<|channel|>commentary json<|message|>{"a": 2, "b": 2}`;

/** Every way of cutting `text` into two pieces, and all of its characters one by one, through a fresh splitter each. */
function splitEveryWay(text: string, thought = true): { reasoning: string; content: string; calls: [string | undefined, string][] }[] {
  const cuts = [...Array.from({ length: text.length + 1 }, (_, k) => [text.slice(0, k), text.slice(k)]), [...text]];
  return cuts.map((pieces) => {
    const s = new HarmonyReplySplitter(thought);
    const out = { reasoning: '', content: '', calls: [] as [string | undefined, string][] };
    for (const part of [...pieces.map((p) => s.push(p)), s.end()]) {
      out.reasoning += part.reasoning;
      out.content += part.content;
      out.calls.push(...part.toolCalls.map((c): [string | undefined, string] => [c.name, c.arguments]));
    }
    return out;
  });
}

describe('harmony replies (gpt-oss): the splitter', () => {
  it('reads thought, answer and calls in both header forms, however the text is cut', () => {
    const cases: [string, { reasoning: string; content: string; calls: [string | undefined, string][] }][] = [
      [ANSWERED, { reasoning: THOUGHT, content: ANSWER, calls: [] }],
      [`${ANSWERED}<|return|>`, { reasoning: THOUGHT, content: ANSWER, calls: [] }],
      [CALLED, { reasoning: THOUGHT, content: '', calls: [['add', '{"a": 2, "b": 2}']] }],
      // the format's guide writes the recipient after the channel, and a content type
      [`<|channel|>commentary to=functions.add <|constrain|>json<|message|>{"a": 1, "b": 5}<|call|>`, { reasoning: '', content: '', calls: [['add', '{"a": 1, "b": 5}']] }],
      // words to the user on the commentary channel are content; arguments that are no JSON are kept raw
      [`<|channel|>commentary<|message|>Adding.<|end|><|start|>assistant to=functions.add<|channel|>commentary json<|message|>{"a": 2`, { reasoning: '', content: 'Adding.', calls: [['add', '{"a": 2']] }],
      // a reply with no header is content as written; a cut thought is reasoning
      ['Just text, <|no header.', { reasoning: '', content: 'Just text, <|no header.', calls: [] }],
      [`<|channel|>analysis<|message|>${THOUGHT}`, { reasoning: THOUGHT, content: '', calls: [] }],
    ];
    for (const [text, want] of cases) for (const got of splitEveryWay(text)) expect(got, text).to.deep.equal(want);
    // reasoning_format none: the analysis message is content too, as written (llama.cpp's)
    for (const got of splitEveryWay(ANSWERED, false)) expect(got).to.deep.equal({ reasoning: '', content: `<|channel|>analysis<|message|>${THOUGHT}<|end|>${ANSWER}`, calls: [] });
  });

  it('knows the template, and a thinking budget closes the analysis message', () => {
    expect(toolCallSyntaxOf(HARMONY_TEMPLATE)).to.equal('harmony');
    const parsing = replyParsing({ format: 'auto', chatTemplate: HARMONY_TEMPLATE, prompt: '', constrained: false, tools: undefined });
    expect(thinkingBudgetFor(5, parsing, HARMONY_TEMPLATE, '')).to.deep.equal({ tokens: 5, open: '<|channel|>analysis<|message|>', close: '<|end|><|start|>assistant', opened: false });
  });
});

describe('reasonplug serve: harmony replies (gpt-oss)', function () {
  this.timeout(180_000);
  const { serve } = useServers();
  const served: Record<string, { url: string; dir: string; replyIds: number[]; tokenizer: TextTokenizer }> = {};
  const chat = (name: string, over: Record<string, unknown> = {}) =>
    new ChatOpenAI({ model: name, apiKey: 'none', temperature: 0, maxTokens: 120, configuration: { baseURL: `${served[name]!.url}/v1` }, maxRetries: 0, ...over });

  before(async () => {
    // One backbone per prompt (with and without the tool shown), each scripted to its reply.
    for (const [name, reply, tools] of [['answers', ANSWERED, undefined], ['calls', CALLED, [ADD]]] as const) {
      const { dir, replyIds } = await scriptedChatModule(name, HARMONY_TEMPLATE, [{ role: 'user', content: QUESTION }], reply, { specialTokens: HARMONY_TOKENS, bpe: true, ...(tools ? { tools: [...tools] } : {}) });
      served[name] = { url: await serve({ engine: { model: dir }, name }), dir, replyIds, tokenizer: await TextTokenizer.fromDirectory(dir) };
    }
  });

  it('the analysis is reasoning_content and the final message content, in invoke and stream, with reasoning tokens', async () => {
    const reply = await chat('answers').invoke(QUESTION);
    expect(reply.content).to.equal(ANSWER);
    expect(reply.additional_kwargs.reasoning_content).to.equal(THOUGHT);
    // the thought's tokens: through the <|end|> that closes it
    const { replyIds, tokenizer } = served.answers!;
    const closing = replyIds.indexOf(tokenizer.tokenId('<|end|>')!) + 1;
    expect(reply.usage_metadata?.output_token_details?.reasoning).to.equal(closing);
    const chunks: AIMessageChunk[] = [];
    for await (const c of await chat('answers', { streamUsage: true }).stream(QUESTION)) chunks.push(c);
    expect(chunks.filter((c) => c.additional_kwargs.reasoning_content).length, 'the thought streams').to.be.greaterThan(2);
    const joined = chunks.reduce((a, b) => a.concat(b));
    expect([joined.content, joined.additional_kwargs.reasoning_content]).to.deep.equal([ANSWER, THOUGHT]);
  });

  it('a structured answer is the final message after the thought (withStructuredOutput)', async () => {
    const schema = { type: 'object', properties: { answer: { enum: [4] } }, required: ['answer'], additionalProperties: false };
    const structured = await chat('answers').withStructuredOutput(schema, { name: 'sum', includeRaw: true }).invoke(QUESTION);
    expect(structured.parsed).to.deep.equal({ answer: 4 });
    expect(structured.raw.additional_kwargs.reasoning_content).to.equal(THOUGHT);
    // (the grammar leaves the blanks to the model)
    expect(JSON.parse(structured.raw.content as string)).to.deep.equal({ answer: 4 });
  });

  it('a commentary message to functions.add is a tool call, with tool_choice auto, required and named, in invoke and stream', async () => {
    const calls = (m: AIMessage) => m.tool_calls?.map((c) => [c.name, c.args]);
    for (const toolChoice of [undefined, 'required', 'add'] as const) {
      const reply = await chat('calls').bindTools([ADD], toolChoice ? { tool_choice: toolChoice } : {}).invoke(QUESTION);
      expect(calls(reply), toolChoice).to.deep.equal([['add', { a: 2, b: 2 }]]);
      expect(reply.additional_kwargs.reasoning_content, toolChoice).to.equal(THOUGHT);
      expect(reply.content, toolChoice).to.equal('');
      expect(reply.response_metadata.finish_reason, toolChoice).to.equal('tool_calls');
    }
    const chunks: AIMessageChunk[] = [];
    for await (const c of await chat('calls').bindTools([ADD]).stream(QUESTION)) chunks.push(c);
    expect(calls(chunks.reduce((a, b) => a.concat(b)))).to.deep.equal([['add', { a: 2, b: 2 }]]);
    // the call goes back through the template as gpt-oss's writes it
    const res = await postJson(served.calls!.url, '/tokenize', {
      messages: [
        { role: 'user', content: QUESTION },
        { role: 'assistant', content: '', reasoning_content: THOUGHT, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'add', arguments: '{"a": 2, "b": 2}' } }] },
        { role: 'tool', content: '4', tool_call_id: 'call_1' },
      ],
    });
    expect(res.status).to.equal(200);
    const text = served.calls!.tokenizer.decode(((await res.json()) as { tokens: number[] }).tokens, false);
    // OpenAI's reasoning_effort (and the Responses API's reasoning.effort) reach the template as its variable
    const effort = async (body: Record<string, unknown>) =>
      served.calls!.tokenizer.decode(((await (await postJson(served.calls!.url, '/tokenize', { messages: [{ role: 'user', content: QUESTION }], ...body })).json()) as { tokens: number[] }).tokens, false);
    expect(await effort({})).to.include('Reasoning: medium');
    expect(await effort({ reasoning_effort: 'high' })).to.include('Reasoning: high');
    expect(await effort({ reasoning_effort: 'high', chat_template_kwargs: { reasoning_effort: 'low' } })).to.include('Reasoning: low');
    expect((await postJson(served.calls!.url, '/tokenize', { messages: [{ role: 'user', content: QUESTION }], reasoning_effort: 'extreme' })).status).to.equal(400);
    const tokens = async (body: Record<string, unknown>) => ((await (await postJson(served.answers!.url, '/tokenize', { messages: [{ role: 'user', content: QUESTION }], ...body })).json()) as { tokens: number[] }).tokens.length;
    const inputTokens = async (body: Record<string, unknown>) =>
      ((await (await postJson(served.answers!.url, '/v1/responses', { model: 'answers', input: QUESTION, max_output_tokens: 1, ...body })).json()) as { usage: { input_tokens: number } }).usage.input_tokens;
    expect(await tokens({ reasoning_effort: 'low' })).to.not.equal(await tokens({}));
    expect(await inputTokens({ reasoning: { effort: 'low' } })).to.equal(await tokens({ reasoning_effort: 'low' }));
    // ... and the response repeats it, as OpenAI's does
    const answered = (await (await postJson(served.answers!.url, '/v1/responses', { model: 'answers', input: QUESTION, max_output_tokens: 1, reasoning: { effort: 'high' } })).json()) as { reasoning: object };
    expect(answered.reasoning).to.deep.equal({ effort: 'high', summary: null });
    // Ollama's think levels are gpt-oss's effort, and its /api/show says the model thinks
    const ollamaPrompt = async (think: unknown) =>
      ((await (await postJson(served.answers!.url, '/api/chat', { model: 'answers', messages: [{ role: 'user', content: QUESTION }], think, stream: false, options: { num_predict: 1 } })).json()) as { prompt_eval_count: number }).prompt_eval_count;
    expect(await ollamaPrompt('low')).to.equal(await tokens({ reasoning_effort: 'low' }));
    expect(await ollamaPrompt('high')).to.equal(await tokens({ reasoning_effort: 'high' }));
    const shown = (await (await postJson(served.answers!.url, '/api/show', { model: 'answers' })).json()) as { capabilities: string[] };
    expect(shown.capabilities).to.include('thinking');
    // (with its thought, which the server takes as reasoning_content and the template reads as thinking)
    expect(text).to.include(`<|start|>assistant<|channel|>analysis<|message|>${THOUGHT}<|end|><|start|>assistant to=functions.add<|channel|>commentary json<|message|>{"a": 2, "b": 2}<|call|>`);
  });

  it('the constraint holds a model that would answer to a call (required), after its thought', async () => {
    // The engine with the prompt the answering model is scripted for, and the call constraint as the server builds it.
    const engine = await Engine.load({ model: served.answers!.dir });
    try {
      const messages = [{ role: 'user' as const, content: QUESTION }];
      const parsing = replyParsing({ format: 'auto', chatTemplate: HARMONY_TEMPLATE, prompt: '', constrained: true, tools: 'harmony' });
      // (digits bounded: a random model would write an integer to its token limit)
      const digit = { type: 'integer', minimum: 0, maximum: 9 };
      const parameters = { type: 'object', properties: { a: digit, b: digit }, required: ['a', 'b'], additionalProperties: false };
      const format = thoughtFirst({ type: 'tool_calls', tools: [{ name: 'add', parameters }], choice: 'required', syntax: 'harmony' }, parsing);
      const { rows } = await engine.generate({ messages }, { maxTokens: 120, responseFormat: format, keepTokens: keptTokens(parsing) });
      const reply = splitReply(parsing, rows[0]!.text);
      expect(reply.reasoning).to.equal(THOUGHT);
      expect(reply.toolCalls.map((c) => c.name)).to.deep.equal(['add']);
      const args = JSON.parse(reply.toolCalls[0]!.arguments) as Record<string, unknown>;
      expect(Object.keys(args).sort()).to.deep.equal(['a', 'b']);
      expect([args.a, args.b].every((v) => Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 9)).to.equal(true);
      expect(rows[0]!.finishReason).to.equal('eos');
      // unconstrained, it answers
      const free = splitReply(parsing, (await engine.generate({ messages }, { maxTokens: 120, keepTokens: keptTokens(parsing) })).rows[0]!.text);
      expect([free.content, free.toolCalls]).to.deep.equal([ANSWER, []]);
    } finally {
      await engine.dispose();
    }
  });

  it('a call in the guide form, or after a commentary preamble, is kept beside a response_format, and under required and named', async () => {
    const scripts = {
      'guide-caller': [`${ANALYSIS}<|channel|>commentary to=functions.add <|constrain|>json<|message|>{"a": 2, "b": 2}`, ''],
      'preamble-caller': [`${ANALYSIS}<|channel|>commentary<|message|>Adding them.<|end|><|start|>assistant to=functions.add<|channel|>commentary json<|message|>{"a": 2, "b": 2}`, 'Adding them.'],
    } as const;
    const sum = { type: 'object', properties: { sum: { type: 'integer' } }, required: ['sum'], additionalProperties: false };
    type Reply = { choices: { message: { content: string | null; reasoning_content?: string; tool_calls?: { function: { name: string; arguments: string } }[] }; finish_reason: string }[] };
    for (const [name, [reply, words]] of Object.entries(scripts)) {
      const { dir } = await scriptedChatModule(name, HARMONY_TEMPLATE, [{ role: 'user', content: QUESTION }], reply, { specialTokens: HARMONY_TOKENS, bpe: true, tools: [ADD] });
      const url = await serve({ engine: { model: dir }, name });
      for (const over of [
        { tool_choice: 'auto', response_format: { type: 'json_schema', json_schema: { name: 'sum', schema: sum, strict: true } } },
        { tool_choice: 'required' },
        { tool_choice: { type: 'function', function: { name: 'add' } } },
      ]) {
        const res = await postJson(url, '/v1/chat/completions', { model: name, messages: [{ role: 'user', content: QUESTION }], tools: [ADD], max_tokens: 120, temperature: 0, ...over });
        expect(res.status).to.equal(200);
        const choice = ((await res.json()) as Reply).choices[0]!;
        const seen = [choice.finish_reason, choice.message.tool_calls?.map((c) => [c.function.name, JSON.parse(c.function.arguments) as unknown]), choice.message.content ?? '', choice.message.reasoning_content];
        expect(seen, `${name} ${JSON.stringify(over)}`).to.deep.equal(['tool_calls', [['add', { a: 2, b: 2 }]], words, THOUGHT]);
      }
    }
  });

  it("a call with its recipient in the channel, as the harmony guide writes it, passes the auto constraint as written", async () => {
    const guide = `${ANALYSIS}<|channel|>commentary to=functions.add <|constrain|>json<|message|>{"a": 2, "b": 2}`;
    const { dir } = await scriptedChatModule('guide-call', HARMONY_TEMPLATE, [{ role: 'user', content: QUESTION }], guide, { specialTokens: HARMONY_TOKENS, bpe: true, tools: [ADD] });
    const engine = await Engine.load({ model: dir });
    try {
      const tools = [{ name: 'add', parameters: ADD.function.parameters }];
      const { rows } = await engine.generate({ messages: [{ role: 'user', content: QUESTION }], tools: [ADD] }, { maxTokens: 120, responseFormat: { type: 'tool_calls', tools, choice: 'auto', syntax: 'harmony' } });
      expect(rows[0]!.text.startsWith(guide), rows[0]!.text).to.equal(true);
      const split = splitReply(replyParsing({ format: 'auto', chatTemplate: HARMONY_TEMPLATE, prompt: '', constrained: true, tools: 'harmony' }), rows[0]!.text);
      expect(split.toolCalls.map((c) => [c.name, JSON.parse(c.arguments) as unknown])).to.deep.equal([['add', { a: 2, b: 2 }]]);
    } finally {
      await engine.dispose();
    }
  });
});
