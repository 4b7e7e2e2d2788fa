/**
 * `ChatReasoner` with reasoning models: a reply's `<think>` thought comes as `additional_kwargs.reasoning_content`
 * (where ChatOpenAI puts vLLM's and llama.cpp's, and LangChain's DeepSeek and Ollama models theirs), in invoke and
 * stream, with `output_token_details.reasoning`; `reasoningFormat: 'none'`; `chatTemplateKwargs` at creation and
 * per call; a thought sent back with an earlier turn. The backbone is scripted to write a thought and an answer.
 */
import { expect } from 'chai';
import { AIMessage, AIMessageChunk, HumanMessage } from '@langchain/core/messages';
import { HARMONY_TOKENS, TextTokenizer } from '@reasonplug/core';
import { ChatReasoner, ReasonerOptionsError } from '../src/index.js';
import { cacheDir, storiesModule } from './support/modules.js';
import { scriptedChatModule } from '../../core/test/support/modules.js';
import { HARMONY_TEMPLATE, MAGISTRAL_TEMPLATE, OPEN_THOUGHT_TEMPLATE, THINKING_TEMPLATE } from '../../core/test/support/chat-templates.js';

const QUESTION = 'What are two and two?';
const THOUGHT = 'Two and two make four.';
const ANSWER = 'Four.';

describe('ChatReasoner: reasoning models', function () {
  this.timeout(60_000);
  let tokenizer: TextTokenizer;
  let thinker: { dir: string; replyIds: number[] };
  const models: ChatReasoner[] = [];
  const create = async (options: Parameters<typeof ChatReasoner.create>[0]) => {
    const model = await ChatReasoner.create({ cacheDir, ...options });
    models.push(model);
    return model;
  };
  /** Tokens up to the one that completes `</think>`, by scanning every prefix of the reply. */
  const thoughtTokens = (ids: number[]) => ids.findIndex((_, k) => tokenizer.decode(ids.slice(0, k + 1)).includes('</think>')) + 1;

  before(async () => {
    tokenizer = await TextTokenizer.fromDirectory(await storiesModule());
    thinker = await scriptedChatModule('plugin-thinker', THINKING_TEMPLATE, [{ role: 'user', content: QUESTION }], `<think>\n${THOUGHT}\n</think>\n\n${ANSWER}`);
  });
  after(async () => {
    await Promise.all(models.map((m) => m.dispose()));
  });

  it('gives the thought as reasoning_content and the answer as content, in invoke and stream, with reasoning tokens', async () => {
    const model = await create({ backbone: thinker.dir });
    const reply = await model.invoke([new HumanMessage(QUESTION)]);
    expect(reply.content).to.equal(ANSWER);
    expect(reply.additional_kwargs.reasoning_content).to.equal(THOUGHT);
    expect(reply.usage_metadata?.output_token_details?.reasoning).to.equal(thoughtTokens(thinker.replyIds));

    const chunks: AIMessageChunk[] = [];
    for await (const c of await model.stream([new HumanMessage(QUESTION)])) chunks.push(c);
    expect(chunks.filter((c) => c.additional_kwargs.reasoning_content).length).to.be.greaterThan(2);
    const joined = chunks.reduce((a, b) => a.concat(b));
    expect(joined.content).to.equal(ANSWER);
    expect(joined.additional_kwargs.reasoning_content).to.equal(THOUGHT);

    // reasoningFormat none, per call: the thought stays in the content, as the model wrote it.
    const raw = await model.withConfig({ reasoningFormat: 'none' }).invoke([new HumanMessage(QUESTION)]);
    expect(raw.content).to.equal(` ${tokenizer.decode(thinker.replyIds)}`);
    expect(raw.additional_kwargs).to.not.have.property('reasoning_content');
    expect(raw.usage_metadata?.output_token_details?.reasoning).to.equal(undefined);
  });

  it('withStructuredOutput on a reasoning template thinks first, then answers in the structure', async () => {
    const model = await create({ backbone: thinker.dir, maxTokens: 80 });
    // One way to write the answer, so the scripted model (which would write "Four.") finishes it.
    const schema = { type: 'object', properties: { answer: { enum: [4] } }, required: ['answer'], additionalProperties: false };
    const { raw, parsed } = await model.withStructuredOutput(schema, { includeRaw: true }).invoke([new HumanMessage(QUESTION)]);
    expect(parsed).to.deep.equal({ answer: 4 });
    expect(raw.additional_kwargs.reasoning_content).to.equal(THOUGHT);
    // (the grammar leaves the blanks to the model)
    expect(JSON.parse(raw.content as string)).to.deep.equal({ answer: 4 });
  });

  it("Magistral's thought between the special tokens [THINK] and [/THINK] is reasoning_content", async () => {
    const magistral = await scriptedChatModule('magistralish-plugin', MAGISTRAL_TEMPLATE, [{ role: 'user', content: QUESTION }], `[THINK]${THOUGHT}[/THINK]${ANSWER}`, { specialTokens: ['[THINK]', '[/THINK]'] });
    const reply = await (await create({ backbone: magistral.dir, maxTokens: 60 })).invoke([new HumanMessage(QUESTION)]);
    expect(reply.additional_kwargs.reasoning_content).to.equal(THOUGHT);
    expect(reply.content).to.equal(ANSWER);
  });

  it('a template that opens the thought in the prompt: the reply starts inside it', async () => {
    const opener = await scriptedChatModule('plugin-opener', OPEN_THOUGHT_TEMPLATE, [{ role: 'user', content: QUESTION }], `${THOUGHT}\n</think>\n\n${ANSWER}`);
    const reply = await (await create({ backbone: opener.dir })).invoke([new HumanMessage(QUESTION)]);
    expect(reply.content).to.equal(ANSWER);
    expect(reply.additional_kwargs.reasoning_content).to.equal(THOUGHT);
    expect(reply.usage_metadata?.output_token_details?.reasoning).to.equal(thoughtTokens(opener.replyIds));
  });

  it('chatTemplateKwargs reach the template, at creation and per call (a call overrides the model by key)', async () => {
    // Scripted for the prompt enable_thinking: false renders: the answer alone after the empty thought.
    const direct = await scriptedChatModule('plugin-direct', THINKING_TEMPLATE, [{ role: 'user', content: QUESTION }], ANSWER, { templateKwargs: { enable_thinking: false } });
    const off = await create({ backbone: direct.dir, chatTemplateKwargs: { enable_thinking: false } });
    const reply = await off.invoke([new HumanMessage(QUESTION)]);
    expect(reply.content).to.equal(` ${ANSWER}`); // SentencePiece's space before a continuation's first piece
    expect(reply.additional_kwargs).to.not.have.property('reasoning_content');
    expect(reply.usage_metadata?.input_tokens).to.equal(
      tokenizer.encode(tokenizer.applyChatTemplate([{ role: 'user', content: QUESTION }], { template: THINKING_TEMPLATE, extra: { enable_thinking: false } }), false).length,
    );
    // Per call, enable_thinking: true renders the plain generation prompt, which this backbone was not scripted for.
    const on = await off.withConfig({ chatTemplateKwargs: { enable_thinking: true } }).invoke([new HumanMessage(QUESTION)], { maxTokens: 2 });
    expect(on.usage_metadata?.input_tokens).to.be.lessThan(reply.usage_metadata!.input_tokens);
    expect(on.content).to.not.equal(` ${ANSWER}`);

    try {
      await off.invoke([new HumanMessage(QUESTION)], { reasoningFormat: 'hidden' as never });
      expect.fail('an unknown reasoning format was taken');
    } catch (err) {
      expect(err).to.be.instanceOf(ReasonerOptionsError);
      expect((err as Error).message).to.match(/reasoningFormat/);
    }
  });

  it('thinkingBudget cuts the thought after that many tokens, at creation and per call; invalid budgets are refused', async () => {
    const model = await create({ backbone: thinker.dir, thinkingBudget: 2, maxTokens: 40 });
    const ids = thinker.replyIds;
    const opened = ids.findIndex((_, k) => tokenizer.decode(ids.slice(0, k + 1)).trimStart().startsWith('<think>')) + 1;
    const thoughtOf = (budget: number) => {
      const written = tokenizer.decode(ids.slice(0, opened + budget));
      return written.slice(written.indexOf('<think>') + '<think>'.length).trim();
    };
    const close = tokenizer.encode('</think>', false).length;
    const cut = await model.invoke([new HumanMessage(QUESTION)]);
    expect(cut.additional_kwargs.reasoning_content).to.equal(thoughtOf(2));
    expect(cut.usage_metadata?.output_token_details?.reasoning).to.equal(opened + 2 + close);
    const longer = await model.withConfig({ thinkingBudget: 6 }).invoke([new HumanMessage(QUESTION)]);
    expect(longer.additional_kwargs.reasoning_content).to.equal(thoughtOf(6));
    const chunks: AIMessageChunk[] = [];
    for await (const c of await model.stream([new HumanMessage(QUESTION)], { thinkingBudget: 1000 })) chunks.push(c);
    expect(chunks.reduce((a, b) => a.concat(b)).additional_kwargs.reasoning_content).to.equal(THOUGHT);
    for (const bad of [-1, 1.5]) {
      const err = await model.invoke([new HumanMessage(QUESTION)], { thinkingBudget: bad }).catch((e: unknown) => e);
      expect(err, String(bad)).to.be.instanceOf(ReasonerOptionsError);
      expect((err as Error).message).to.match(/thinkingBudget/);
    }
  });

  it('an earlier thought goes back to the template as reasoning_content', async () => {
    const model = await create({ backbone: thinker.dir, chatTemplate: '{% for m in messages %}[{{ m.role }}|{{ m.reasoning_content }}|{{ m.content }}]{% endfor %}' });
    const history = [new HumanMessage(QUESTION), new AIMessage({ content: ANSWER, additional_kwargs: { reasoning_content: THOUGHT } }), new HumanMessage('And three?')];
    const reply = await model.invoke(history, { maxTokens: 1 });
    const rendered = `[user||${QUESTION}][assistant|${THOUGHT}|${ANSWER}][user||And three?]`;
    expect(reply.usage_metadata?.input_tokens).to.equal(tokenizer.encode(rendered, false).length);
  });
});

describe("ChatReasoner: gpt-oss's harmony replies", function () {
  this.timeout(60_000);
  const QUESTION_H = 'What are two and two?';
  const ANALYSIS = '<|channel|>analysis<|message|>Two and two make four.<|end|><|start|>assistant';
  const ADD = { type: 'function' as const, function: { name: 'add', description: 'Add two integers', parameters: { type: 'object', properties: { a: { type: 'integer' }, b: { type: 'integer' } }, required: ['a', 'b'] } } };
  const models: ChatReasoner[] = [];
  after(async () => {
    await Promise.all(models.map((m) => m.dispose()));
  });

  it('the analysis message is reasoning_content, the final one content, a message to functions.add a tool call', async () => {
    const script = (name: string, reply: string, tools?: unknown[]) =>
      scriptedChatModule(name, HARMONY_TEMPLATE, [{ role: 'user', content: QUESTION_H }], reply, { specialTokens: HARMONY_TOKENS, bpe: true, ...(tools ? { tools } : {}) });
    const answers = await ChatReasoner.create({ cacheDir, backbone: (await script('plugin-harmony', `${ANALYSIS}<|channel|>final<|message|>Four.`)).dir });
    models.push(answers);
    const reply = await answers.invoke([new HumanMessage(QUESTION_H)]);
    expect([reply.content, reply.additional_kwargs.reasoning_content]).to.deep.equal(['Four.', 'Two and two make four.']);
    expect(reply.usage_metadata?.output_token_details?.reasoning).to.be.greaterThan(0);
    const calls = await ChatReasoner.create({ cacheDir, backbone: (await script('plugin-harmony-calls', `${ANALYSIS} to=functions.add<|channel|>commentary json<|message|>{"a": 2, "b": 2}`, [ADD])).dir });
    models.push(calls);
    const called = (await calls.bindTools([ADD]).invoke([new HumanMessage(QUESTION_H)])) as AIMessage;
    expect(called.tool_calls?.map((c) => [c.name, c.args])).to.deep.equal([['add', { a: 2, b: 2 }]]);
    expect(called.additional_kwargs.reasoning_content).to.equal('Two and two make four.');
  });
});
