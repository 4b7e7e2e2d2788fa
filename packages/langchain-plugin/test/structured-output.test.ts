/**
 * Structured output and tool calls of `ChatReasoner`, enforced by core's constraint stage, on the converted
 * stories260K model (which writes stories, never JSON): `withStructuredOutput` with each method, `bindTools`
 * with each tool choice, streamed tool-call chunks, and a LangGraph agent with two tools.
 */
import { expect } from 'chai';
import { AIMessage, AIMessageChunk, HumanMessage, ToolMessage, type BaseMessage } from '@langchain/core/messages';
import { tool } from '@langchain/core/tools';
import { toJsonSchema } from '@langchain/core/utils/json_schema';
import { END, MessagesAnnotation, START, StateGraph } from '@langchain/langgraph';
import { ToolNode, toolsCondition } from '@langchain/langgraph/prebuilt';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { z } from 'zod';
import { ChatReasoner } from '../src/index.js';
import { TOOLS_TEMPLATE, cacheDir, storiesModule, withChatTemplate } from './support/modules.js';
import { Recorder } from './support/recorder.js';

const ajv = new Ajv2020({ strict: false });

/** A little randomness and a penalty against loops: what the tiny model needs to finish its answers. */
const SETTINGS = { temperature: 0.7, seed: 3, repetitionPenalty: 1.3, maxTokens: 120 };

const Weather = z.object({ city: z.enum(['Paris', 'Oslo', 'Lima']), days: z.number().int().min(1).max(7) });
const Sum = z.object({ a: z.number().int().min(0).max(99), b: z.number().int().min(0).max(99) });
const Pet = z.object({ name: z.string().max(12), legs: z.number().int().min(0).max(8), friendly: z.boolean() });

describe('ChatReasoner structured output and tool calls', function () {
  this.timeout(90_000);
  let model: ChatReasoner;

  before(async () => {
    const backbone = await withChatTemplate(await storiesModule(), 'stories-structured', TOOLS_TEMPLATE);
    model = await ChatReasoner.create({ backbone, cacheDir, ...SETTINGS });
  });
  after(() => model?.dispose());

  it('withStructuredOutput returns typed objects with each method (zod or JSON Schema), and the raw message with includeRaw', async () => {
    const pet = await model.withStructuredOutput(Pet).invoke('Tell me about your pet');
    expect(Pet.parse(pet)).to.deep.equal(pet);
    const viaTool = await model.withStructuredOutput(Pet, { method: 'functionCalling', name: 'describe_pet' }).invoke('Tell me about your pet');
    expect(Pet.parse(viaTool)).to.deep.equal(viaTool);
    // jsonMode constrains the reply to a JSON object (of any shape): this model fills its strings with stories and
    // does not close one within the token limit, so no parsed object is claimed for the cut-off text.
    const json = await model.withStructuredOutput(toJsonSchema(Pet), { method: 'jsonMode', includeRaw: true }).invoke('Tell me about your pet');
    expect((json.raw as AIMessage).text).to.match(/^\{\s*"/);
    expect((json.raw as AIMessage).response_metadata.finish_reason).to.equal('length');
    expect(json.parsed).to.equal(null);
    const schema = toJsonSchema(Weather) as Record<string, unknown>;
    const { raw, parsed } = await model.withStructuredOutput(schema, { includeRaw: true }).invoke('Weather?');
    expect(ajv.validate(schema, parsed)).to.equal(true);
    expect(raw).to.be.instanceOf(AIMessage);
    expect(JSON.parse((raw as AIMessage).text)).to.deep.equal(parsed);
    // zod's string formats carry a pattern beside the format (e-mail, UUID, ISO date): they are enforced, not refused
    // (this model fills the unbounded e-mail with a story, so the reply is checked where it finished)
    const Contact = z.object({ email: z.email(), id: z.uuid(), born: z.iso.date() });
    const contact = await model.withStructuredOutput(Contact, { includeRaw: true }).invoke('Who are you?');
    const text = (contact.raw as AIMessage).text;
    expect(text, text).to.match(/^\{\s?"email"\s?:\s?"/);
    if ((contact.raw as AIMessage).response_metadata.finish_reason !== 'length') expect(Contact.safeParse(contact.parsed).success, text).to.equal(true);
  });

  it('tells tracers the method and JSON schema of each structured call (ls_structured_output_format), as ChatOpenAI does', async () => {
    for (const method of ['jsonSchema', 'jsonMode', 'functionCalling'] as const) {
      const recorder = new Recorder();
      await model.withStructuredOutput(Sum, { name: 'add', method, includeRaw: true }).invoke('What is 2 + 3?', { callbacks: [recorder] });
      const options = recorder.start?.extraParams?.options as Record<string, unknown>;
      expect(options.ls_structured_output_format, method).to.deep.equal({ kwargs: { method }, schema: toJsonSchema(Sum) });
    }
  });

  it('bindTools forces a well-formed call with tool_choice required or a tool name, and streams it as tool_call_chunks', async () => {
    const tools = [
      { type: 'function', function: { name: 'get_weather', description: 'Weather in a city', parameters: toJsonSchema(Weather) } },
      { type: 'function', function: { name: 'add', description: 'Add two integers', parameters: toJsonSchema(Sum) } },
    ];
    const required = await model.bindTools(tools, { tool_choice: 'required' }).invoke('What is the weather?');
    expect(required.tool_calls).to.have.length(1);
    const [call] = required.tool_calls!;
    expect((call!.name === 'add' ? Sum : Weather).safeParse(call!.args).success, JSON.stringify(call)).to.equal(true);

    const chunks: AIMessageChunk[] = [];
    for await (const c of await model.bindTools(tools, { tool_choice: 'add' }).stream('Add two numbers')) chunks.push(c);
    expect(chunks.some((c) => c.tool_call_chunks?.length)).to.equal(true);
    const joined = chunks.reduce((a, b) => a.concat(b));
    expect(joined.tool_calls!.map((c) => c.name)).to.deep.equal(['add']);
    expect(Sum.parse(joined.tool_calls![0]!.args)).to.deep.equal(joined.tool_calls![0]!.args);

    // auto: free text, or a call that is well-formed
    const auto = await model.bindTools(tools).invoke('Hello');
    for (const c of auto.tool_calls ?? []) expect((c.name === 'add' ? Sum : Weather).safeParse(c.args).success).to.equal(true);
    expect(auto.invalid_tool_calls ?? []).to.deep.equal([]);
  });

  it('runs a LangGraph agent with two tools: every call it makes parses and matches its tool, then a typed answer', async () => {
    const calls: { name: string; args: unknown }[] = [];
    const getWeather = tool(async ({ city, days }) => `${city}: sunny for ${days} days`, { name: 'get_weather', description: 'Weather in a city', schema: Weather });
    const add = tool(async ({ a, b }) => String(a + b), { name: 'add', description: 'Add two integers', schema: Sum });
    const tools = [getWeather, add];
    const toolTurns = (messages: BaseMessage[]) => messages.filter((m) => m instanceof ToolMessage).length;
    const graph = new StateGraph(MessagesAnnotation)
      .addNode('agent', async (state) => {
        // The agent must use a tool twice before it may answer in text.
        const choice = toolTurns(state.messages) < 2 ? 'required' : 'none';
        const reply = await model.bindTools(tools, { tool_choice: choice }).invoke(state.messages);
        for (const c of reply.tool_calls ?? []) calls.push({ name: c.name, args: c.args });
        return { messages: [reply] };
      })
      .addNode('tools', new ToolNode(tools))
      .addEdge(START, 'agent')
      .addConditionalEdges('agent', toolsCondition, ['tools', END])
      .addEdge('tools', 'agent')
      .compile();
    const final = await graph.invoke({ messages: [new HumanMessage('What is the weather in Paris, and what is 2 plus 3?')] }, { recursionLimit: 10 });
    expect(calls).to.have.length(2);
    for (const c of calls) expect((c.name === 'add' ? Sum : Weather).safeParse(c.args).success, JSON.stringify(c)).to.equal(true);
    const results = final.messages.filter((m): m is ToolMessage => m instanceof ToolMessage);
    expect(results).to.have.length(2);
    for (const r of results) expect(r.status ?? 'success').to.equal('success');
    const answer = await model.withStructuredOutput(z.object({ summary: z.string().max(40), sure: z.boolean() })).invoke(final.messages);
    expect(answer.summary).to.be.a('string');
    expect(answer.sure).to.be.a('boolean');
  });
});
