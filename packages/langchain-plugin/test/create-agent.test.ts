/**
 * LangChain's own agent, `createAgent` (langchain v1), over a `ChatReasoner` asked for a structured final answer: its
 * provider strategy (a plain schema, picked from the model's profile, or `providerStrategy`) passes OpenAI's
 * `response_format` beside the tools, which the model reads as `responseFormat`. A backbone scripted for both turns of
 * the loop: the tool call at the first prompt, the answer in the schema at the prompt holding the tool's result.
 */
import { dirname } from 'node:path';
import { expect } from 'chai';
import { createAgent, providerStrategy, tool } from 'langchain';
import { AIMessage, HumanMessage, ToolMessage } from '@langchain/core/messages';
import { convertToOpenAITool } from '@langchain/core/utils/function_calling';
import { z } from 'zod';
import { TextTokenizer, type ChatMessage } from '@reasonplug/core';
import { ChatReasoner, ReasonerLLM, ReasonerOptionsError } from '../src/index.js';
import { cacheDir, makeModule, storiesConfig, TOOLS_TEMPLATE } from './support/modules.js';
import { followScript } from '../../core/test/support/graph-edits.js';
import { bpeTokenizerFiles } from '../../core/test/support/bpe-vocab.js';

const QUESTION = 'Weather in Paris?';
const Weather = z.object({ city: z.enum(['Paris', 'Rome']), sunny: z.boolean() });
const called: string[] = [];
const getWeather = tool(
  async ({ city }) => {
    called.push(city);
    return `sunny, 25C in ${city}`;
  },
  { name: 'get_weather', description: 'Weather of a city', schema: z.object({ city: z.enum(['Paris', 'Rome']) }) },
);
const CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>';
const ANSWER = '{"city": "Paris", "sunny": true}';
const EOS = 2;

/**
 * A backbone whose logits favour, position by position, the call at the first turn's prompt and the answer at the
 * second's (the conversation after the call and the tool's result), each followed by EOS.
 */
async function agentBackbone(name: string): Promise<string> {
  const files = bpeTokenizerFiles();
  const vocab = Math.max(...files.tokenizerJson.added_tokens.map((t) => t.id)) + 1;
  const tools = [convertToOpenAITool(getWeather)];
  const first: ChatMessage[] = [{ role: 'user', content: QUESTION }];
  const second: ChatMessage[] = [
    ...first,
    { role: 'assistant', content: '', tool_calls: [{ id: 'c', type: 'function', function: { name: 'get_weather', arguments: { city: 'Paris' } } }] },
    { role: 'tool', content: 'sunny, 25C in Paris', tool_call_id: 'c' },
  ];
  const follow = async (model: string) => {
    const tokenizer = await TextTokenizer.fromDirectory(dirname(model));
    const promptLength = (messages: ChatMessage[]) => tokenizer.encode(tokenizer.applyChatTemplate(messages, { template: TOOLS_TEMPLATE, tools }), false).length;
    const [call, answer] = [tokenizer.encode(CALL, false), tokenizer.encode(ANSWER, false)];
    const p1 = promptLength(first);
    const p2 = promptLength(second);
    // (the logits at position p choose the token at p + 1; between the turns EOS, the second prompt fills those places)
    const script = [...new Array<number>(p1 - 1).fill(0), ...call, ...new Array<number>(p2 - p1 - call.length).fill(EOS), ...answer, ...new Array<number>(201).fill(EOS)];
    await followScript(model, vocab, script);
  };
  return makeModule({ name, kind: 'backbone', seed: 4, chatTemplate: TOOLS_TEMPLATE, config: storiesConfig({ vocabSize: vocab }), edit: follow, tokenizerFiles: files });
}

describe('createAgent (langchain v1) with a structured answer', function () {
  this.timeout(180_000);
  let model: ChatReasoner;

  before(async () => {
    model = await ChatReasoner.create({ backbone: await agentBackbone('plugin-create-agent'), cacheDir, maxTokens: 80 });
  });
  after(async () => {
    await model?.dispose();
  });

  // (createAgent's overloads type each kind of responseFormat apart: the state is read the same for both)
  const run = async (responseFormat: unknown, mode: 'invoke' | 'stream') => {
    called.length = 0;
    const agent = createAgent({ model, tools: [getWeather], responseFormat: responseFormat as typeof Weather });
    const input = { messages: [new HumanMessage(QUESTION)] };
    let state: Awaited<ReturnType<typeof agent.invoke>> | undefined;
    if (mode === 'invoke') state = await agent.invoke(input);
    else for await (const values of await agent.stream(input, { streamMode: 'values' })) state = values as typeof state;
    expect(called).to.deep.equal(['Paris']);
    expect(state!.messages.map((m) => [m.type, m.content])).to.deep.equal([
      ['human', QUESTION],
      ['ai', ''],
      ['tool', 'sunny, 25C in Paris'],
      ['ai', ANSWER],
    ]);
    expect((state!.messages[1] as AIMessage).tool_calls!.map((c) => [c.name, c.args])).to.deep.equal([['get_weather', { city: 'Paris' }]]);
    expect(ToolMessage.isInstance(state!.messages[2])).to.equal(true);
    expect(state!.structuredResponse).to.deep.equal({ city: 'Paris', sunny: true });
  };

  it('a plain schema (the provider strategy, as the profile says structured output): the tool is called, then the answer is the structured response', async () => {
    expect(model.profile.structuredOutput).to.equal(true);
    await run(Weather, 'invoke');
    await run(Weather, 'stream');
  });

  it('providerStrategy: the tool is called, then the answer is the structured response', async () => {
    await run(providerStrategy(Weather), 'invoke');
    await run(providerStrategy(Weather), 'stream');
  });

  it("reads OpenAI's response_format as responseFormat, refuses another shape or both by name; ReasonerLLM takes none", async () => {
    const schema = { type: 'object', properties: { sum: { type: 'integer' } } };
    const traced = (response_format: unknown) => model.invocationParams({ response_format } as never).responseFormat;
    expect(traced({ type: 'json_schema', json_schema: { name: 'sum', schema, strict: true } })).to.deep.equal({ type: 'json_schema', schema });
    expect(traced({ type: 'json_schema', json_schema: { name: 'any' } })).to.deep.equal({ type: 'json_schema', schema: true });
    expect(traced({ type: 'json_object' })).to.deep.equal({ type: 'json_object' });
    expect(traced({ type: 'text' })).to.equal(undefined);

    const refused = async (options: object) => {
      const err = await model.invoke([new HumanMessage(QUESTION)], options as never).catch((e: Error) => e);
      expect(err).to.be.instanceOf(ReasonerOptionsError);
      return (err as ReasonerOptionsError).issues;
    };
    expect(await refused({ response_format: { type: 'regex', pattern: 'a' } })).to.deep.equal([
      { path: 'response_format.type', message: 'expected OpenAI\'s { type: "json_schema", json_schema: { schema } }, { type: "json_object" } or { type: "text" }' },
    ]);
    expect((await refused({ response_format: { type: 'json_schema', json_schema: { schema: 'x' } } })).map((i) => i.path)).to.deep.equal(['response_format.json_schema.schema']);
    expect(await refused({ response_format: { type: 'json_object' }, responseFormat: { type: 'json_object' } })).to.deep.equal([
      { path: 'response_format', message: "is OpenAI's spelling of responseFormat, which is given too: give one of them" },
    ]);

    // A text model's calls have no response_format (LangChain's LLMs take none): still refused as a misspelt option.
    const llm = await ReasonerLLM.create({ backbone: model._identifyingParams().backbone as string, cacheDir });
    try {
      const err = await llm.invoke('x', { response_format: { type: 'json_object' } } as never).catch((e: Error) => e);
      expect((err as ReasonerOptionsError).issues).to.deep.equal([{ path: 'response_format', message: 'unknown option (did you mean responseFormat?)' }]);
    } finally {
      await llm.dispose();
    }
  });
});
