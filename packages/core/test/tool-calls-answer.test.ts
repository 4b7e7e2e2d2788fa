/**
 * `tool_choice: auto` beside a response format of the call's own (OpenAI's tools with `response_format`, the SDK's
 * `parse()`/`runTools()`, LangChain's `createAgent({ responseFormat })`): the reply is either calls or an answer in the
 * format. The grammar of each syntax (stories260K's byte tokens, id 3 + byte, EOS 2), how the reply is read back, and
 * `reasonplug serve` with models scripted to call and to answer.
 */
import { expect } from 'chai';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ConstraintError, XGrammarFactory, grammarVocabulary, type ResponseFormat } from '../src/constrain/index.js';
import type { ToolCallSyntax } from '../src/constrain/tool-syntax.js';
import { ChatReplySplitter, replyFormat, splitReply, toolsRead, type ReplyParsing } from '../src/chat/reply.js';
import { scriptedChatModule, storiesModule } from './support/modules.js';
import { GEMMA_TEMPLATE, TOOLS_TEMPLATE } from './support/chat-templates.js';
import { postJson, useServers } from './support/servers.js';
import { takesWhole } from './support/grammar-accepts.js';

const ADD_PARAMETERS = { type: 'object', properties: { a: { type: 'integer' }, b: { type: 'integer' } }, required: ['a', 'b'] };
const TOOLS = [{ name: 'add', parameters: ADD_PARAMETERS }];
const SUM = { type: 'object', properties: { sum: { type: 'integer' } }, required: ['sum'], additionalProperties: false };
const ANSWER = '{"sum": 4}';

/**
 * One call of `add` (a 1, b 2) as each syntax writes it under `required`, two where it admits several, and one where
 * `parallel` is false if that is written otherwise.
 */
const CALLS: Record<Exclude<ToolCallSyntax, 'harmony'>, { one: string; two?: string; single?: string }> = {
  hermes: { one: '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>', two: '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>\n<tool_call>\n{"name": "add", "arguments": {"a": 3, "b": 4}}\n</tool_call>' },
  json: { one: '{"name": "add", "parameters": {"a": 1, "b": 2}}' },
  mistral: { one: '[TOOL_CALLS] [{"name": "add", "arguments": {"a": 1, "b": 2}}]', two: '[TOOL_CALLS] [{"name": "add", "arguments": {"a": 1, "b": 2}}, {"name": "add", "arguments": {"a": 3, "b": 4}}]' },
  'mistral-args': { one: '[TOOL_CALLS]add[ARGS]{"a": 1, "b": 2}' },
  granite: { one: '<|tool_call|>[{"name": "add", "arguments": {"a": 1, "b": 2}}]' },
  deepseek: { one: '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>add\n```json\n{"a": 1, "b": 2}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>' },
  'command-r': { one: '<|START_ACTION|>[{"tool_call_id": "0", "tool_name": "add", "parameters": {"a": 1, "b": 2}}]<|END_ACTION|>' },
  'command-r-plus': {
    one: 'Action: ```json\n[\n    {\n        "tool_name": "add",\n        "parameters": {\n            "a": 1,\n            "b": 2\n        }\n    }\n]\n```',
    two: 'Action: ```json\n[{"tool_name": "add", "parameters": {"a": 1, "b": 2}}, {"tool_name": "add", "parameters": {"a": 3, "b": 4}}]```',
  },
  generic: {
    one: '{"tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 2}}]}',
    two: '{"tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 2}}, {"name": "add", "arguments": {"a": 3, "b": 4}}]}',
    single: '{"tool_call": {"name": "add", "arguments": {"a": 1, "b": 2}}}',
  },
  'qwen-xml': { one: '<tool_call>\n<function=add>\n<parameter=a>\n1\n</parameter>\n<parameter=b>\n2\n</parameter>\n</function>\n</tool_call>' },
  glm: { one: '<tool_call>add\n<arg_key>a</arg_key>\n<arg_value>1</arg_value>\n<arg_key>b</arg_key>\n<arg_value>2</arg_value>\n</tool_call>' },
};
const HARMONY_CALL = ' to=functions.add<|channel|>commentary json<|message|>{"a": 1, "b": 2}';
const HARMONY_ANSWER = `<|channel|>final<|message|>${ANSWER}`;

describe('tool calls or an answer in the format (tool_choice auto beside a response format)', function () {
  this.timeout(180_000);
  let factory: XGrammarFactory;

  before(async () => {
    const dir = await storiesModule();
    factory = new XGrammarFactory(grammarVocabulary(JSON.parse(await readFile(join(dir, 'tokenizer.json'), 'utf8')) as object, 512), 'calls-or-answer');
  });

  /** Whether the constraint of `format` takes `text` whole and then ends. */
  const accepts = (format: ResponseFormat, text: string) => takesWhole(factory, format, text);

  const answered = (syntax: ToolCallSyntax, parallel = true): ResponseFormat => ({ type: 'tool_calls', tools: TOOLS, choice: 'auto', parallel, syntax, answer: { type: 'json_schema', schema: SUM } });

  for (const [syntax, { one, two, single }] of Object.entries(CALLS) as [Exclude<ToolCallSyntax, 'harmony'>, { one: string; two?: string; single?: string }][]) {
    it(`${syntax}: the grammar admits a call or the answer, and neither free text, nor text before a call, nor an answer off the schema`, async () => {
      const format = answered(syntax);
      const cases: [string, boolean][] = [
        [one, true],
        [ANSWER, true],
        ['{"sum":4}', true],
        ['The sum is 4.', false],
        [`Sure. ${one}`, false],
        ['{"sum": "four"}', false],
        ['{"sum": 4, "more": 1}', false],
        [`${ANSWER} ${one}`, false],
        ['{"response": "4"}', false],
        ['{"name": "add", "parameters": {"a": 1}}', false],
      ];
      for (const [text, want] of cases) expect(await accepts(format, text), `${syntax}: ${JSON.stringify(text)}`).to.equal(want);
      if (two) {
        expect(await accepts(format, two), `${syntax} parallel`).to.equal(true);
        expect(await accepts(answered(syntax, false), two), `${syntax} one call`).to.equal(false);
        expect(await accepts(answered(syntax, false), single ?? one), `${syntax} one call`).to.equal(true);
        expect(await accepts(answered(syntax, false), ANSWER), `${syntax} one call`).to.equal(true);
      }
    });
  }

  it('harmony: a call on the commentary channel, or the answer on the final channel with its header', async () => {
    const format = answered('harmony');
    const cases: [string, boolean][] = [
      [HARMONY_CALL, true],
      [HARMONY_ANSWER, true],
      [`<|channel|>analysis<|message|>Add them.<|end|><|start|>assistant${HARMONY_CALL}`, false], // the thought is thoughtFirst's, not this format's
      [ANSWER, false],
      ['<|channel|>final<|message|>The sum is 4.', false],
      ['<|channel|>final<|message|>{"sum": "four"}', false],
    ];
    for (const [text, want] of cases) expect(await accepts(format, text), JSON.stringify(text)).to.equal(want);
    // after the analysis message, as the reply's thought comes first
    const thinking: ResponseFormat = { ...format, thought: { open: '<|channel|>analysis<|message|>', close: '<|end|><|start|>assistant', opened: false } };
    expect(await accepts(thinking, `<|channel|>analysis<|message|>Add them.<|end|><|start|>assistant${HARMONY_CALL}`)).to.equal(true);
    expect(await accepts(thinking, `<|channel|>analysis<|message|>Sum it.<|end|><|start|>assistant${HARMONY_ANSWER}`)).to.equal(true);
  });

  it('harmony: beside an answer, under required and a named tool, a call may name its recipient in the channel and follow commentary preambles', async () => {
    const args = '{"a": 1, "b": 2}';
    const guide = (header: string, name = 'add') => `<|channel|>commentary to=functions.${name}${header}<|message|>${args}`;
    const preamble = (words: string) => `<|channel|>commentary<|message|>${words}<|end|><|start|>assistant`;
    const twoTools = [...TOOLS, { name: 'sub', parameters: ADD_PARAMETERS }];
    const formats: [string, ResponseFormat][] = [
      ['answer', answered('harmony')],
      ['required', { type: 'tool_calls', tools: twoTools, choice: 'required', syntax: 'harmony' }],
      ['named', { type: 'tool_calls', tools: twoTools, choice: { name: 'add' }, syntax: 'harmony' }],
    ];
    const cases: [string, boolean][] = [
      // the harmony guide's example, and the other headers the splitter reads after the recipient
      [guide(' <|constrain|>json'), true],
      [guide('<|constrain|>json'), true],
      [guide(' json'), true],
      [guide(''), true],
      [guide('<|channel|>commentary json'), false],
      [`${preamble('Adding them.')}${HARMONY_CALL}`, true],
      [`${preamble('A <b> and <|en.')}${preamble('Then:')}${guide(' <|constrain|>json')}`, true],
      [preamble('Adding them.'), false], // a preamble goes before a call
      [`<|channel|>commentary<|message|>Adding.<|end|>then${HARMONY_CALL}`, false],
      [`${preamble('Adding them.')}${HARMONY_ANSWER}`, false],
    ];
    for (const [label, format] of formats) {
      for (const [text, want] of cases) expect(await accepts(format, text), `${label}: ${JSON.stringify(text)}`).to.equal(want);
    }
    expect(await accepts(formats[1]![1], guide(' <|constrain|>json', 'sub'))).to.equal(true);
    expect(await accepts(formats[2]![1], guide(' <|constrain|>json', 'sub'))).to.equal(false);
    // after the thought too
    const thinking: ResponseFormat = { ...answered('harmony'), thought: { open: '<|channel|>analysis<|message|>', close: '<|end|><|start|>assistant', opened: false } };
    expect(await accepts(thinking, `<|channel|>analysis<|message|>Add them.<|end|><|start|>assistant${preamble('Adding.')}${guide(' <|constrain|>json')}`)).to.equal(true);
  });

  it('an answer of each non-tool kind (json_object, grammar, regex), and none beside required or a named tool', async () => {
    const hermes = (answer: ResponseFormat & { type: 'json_object' | 'grammar' | 'regex' }): ResponseFormat => ({ type: 'tool_calls', tools: TOOLS, choice: 'auto', answer });
    expect(await accepts(hermes({ type: 'json_object' }), '{"x": [1]}')).to.equal(true);
    expect(await accepts(hermes({ type: 'json_object' }), '[1]')).to.equal(false);
    expect(await accepts(hermes({ type: 'regex', pattern: '(yes|no)' }), 'yes')).to.equal(true);
    expect(await accepts(hermes({ type: 'regex', pattern: '(yes|no)' }), 'maybe')).to.equal(false);
    expect(await accepts(hermes({ type: 'grammar', grammar: 'root ::= "ok" [0-9]' }), 'ok7')).to.equal(true);
    expect(await accepts(hermes({ type: 'grammar', grammar: 'root ::= "ok" [0-9]' }), 'ok')).to.equal(false);
    for (const over of [{ type: 'regex', pattern: '(yes|no)' }, { type: 'json_object' }] as const) expect(await accepts(hermes(over), CALLS.hermes.one)).to.equal(true);
    for (const choice of ['required', { name: 'add' }] as const) {
      const err = await factory.create({ type: 'tool_calls', tools: TOOLS, choice, answer: { type: 'json_object' } }, [2]).catch((e: Error) => e);
      expect(err).to.be.instanceOf(ConstraintError);
      expect((err as Error).message).to.match(/answer goes with tool_choice auto only/);
    }
    const nested = await factory.create({ type: 'tool_calls', tools: TOOLS, choice: 'auto', answer: { type: 'tool_calls', tools: TOOLS, choice: 'auto' } as never }, [2]).catch((e: Error) => e);
    expect(nested).to.be.instanceOf(ConstraintError);
  });

  it('the reply format: forced calls win, auto takes the own format as its answer, either alone is itself', () => {
    const own: ResponseFormat = { type: 'json_schema', schema: SUM };
    const calls = (choice: 'auto' | 'required' | { name: string }): ResponseFormat => ({ type: 'tool_calls', tools: TOOLS, choice, syntax: 'hermes' });
    expect(replyFormat(own, calls('auto'))).to.deep.equal({ ...calls('auto'), answer: own });
    expect(replyFormat(own, calls('required'))).to.deep.equal(calls('required'));
    expect(replyFormat(own, calls({ name: 'add' }))).to.deep.equal(calls({ name: 'add' }));
    expect(replyFormat(own, undefined)).to.equal(own);
    expect(replyFormat(undefined, calls('auto'))).to.deep.equal(calls('auto'));
  });

  it('each syntax reads a reply that is calls as calls, and one that is the answer as content, whatever keys it has', () => {
    const parsing = (syntax: ToolCallSyntax): ReplyParsing => ({
      ...toolsRead(syntax, replyFormat({ type: 'json_object' }, { type: 'tool_calls', tools: TOOLS, choice: 'auto', syntax })),
      toolParameters: { add: ADD_PARAMETERS },
    });
    // Answers that the syntax's calls would otherwise claim: a generic response key, Llama 3's opening, a marker in a string.
    const answers = ['{"sum": 4}', '{"response": "four", "sum": 4}', '{"name": "Bob", "parameters": {"a": 1}}', '{"note": "<tool_call>{\\"name\\": \\"add\\"} [TOOL_CALLS]"}'];
    for (const [syntax, { one, two }] of Object.entries(CALLS) as [ToolCallSyntax, { one: string; two?: string }][]) {
      for (const text of [one, ...(two ? [two] : [])]) {
        const split = splitReply(parsing(syntax), text);
        expect(split.content, `${syntax}: ${text}`).to.equal('');
        expect(split.toolCalls.map((c) => [c.name, JSON.parse(c.arguments) as unknown]), `${syntax}: ${text}`).to.deep.equal(
          [{ a: 1, b: 2 }, { a: 3, b: 4 }].slice(0, text === two ? 2 : 1).map((args) => ['add', args]),
        );
      }
      for (const text of answers) {
        // whole, and streamed a character at a time
        for (const pieces of [[text], Array.from(text)]) {
          const splitter = new ChatReplySplitter(parsing(syntax));
          const parts = [...pieces.map((piece) => splitter.push(piece)), splitter.end()];
          expect([parts.map((p) => p.content).join(''), parts.flatMap((p) => p.toolCalls)], `${syntax}: ${text}`).to.deep.equal([text, []]);
        }
      }
    }
  });
});

describe('reasonplug serve: tools with tool_choice auto beside response_format (calls or the answer in the format)', function () {
  this.timeout(240_000);
  const { serve } = useServers();
  const QUESTION = 'What are two and two?';
  const ADD = { type: 'function' as const, function: { name: 'add', description: 'Add two integers', parameters: ADD_PARAMETERS } };
  // (a response key, which a generic reply's answer object has too: here it is the format's)
  const SCHEMA = { type: 'object', properties: { response: { type: 'string', maxLength: 12 }, sum: { type: 'integer' } }, required: ['response', 'sum'], additionalProperties: false };
  const ANSWERED = '{"response": "four", "sum": 4}';
  const urls: Record<string, string> = {};

  before(async () => {
    // Scripted, for QUESTION with ADD shown, to call it and to answer in SCHEMA's JSON: tools in the template (hermes), and
    // described in the system message (generic, which describes the answer as SCHEMA's JSON).
    const messages = [{ role: 'user' as const, content: QUESTION }];
    const generic = { toolsPrompt: { tools: [ADD], choice: 'auto' as const, parallel: false, answer: { type: 'json_schema' as const, schema: SCHEMA } } };
    const made = [
      ['hermes-caller', TOOLS_TEMPLATE, '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 2}}\n</tool_call>', { tools: [ADD], bpe: true }],
      ['hermes-answerer', TOOLS_TEMPLATE, ANSWERED, { tools: [ADD], bpe: true }],
      ['generic-caller', GEMMA_TEMPLATE, '{"tool_call": {"name": "add", "arguments": {"a": 2, "b": 2}}}', generic],
      ['generic-answerer', GEMMA_TEMPLATE, ANSWERED, generic],
    ] as [string, string, string, Parameters<typeof scriptedChatModule>[4]][];
    for (const [name, template, reply, render] of made) {
      const { dir } = await scriptedChatModule(name, template, messages, reply, render);
      urls[name] = await serve({ engine: { model: dir }, name });
    }
  });

  type Reply = { choices: { message: { content: string | null; tool_calls?: { function: { name: string; arguments: string } }[] }; finish_reason: string }[] };
  /** The OpenAI SDK's request of `parse()` with tools: tools, tool_choice auto and a json_schema response_format. */
  const ask = async (name: string) => {
    const body = {
      model: name,
      messages: [{ role: 'user', content: QUESTION }],
      tools: [ADD],
      tool_choice: 'auto',
      parallel_tool_calls: false,
      response_format: { type: 'json_schema', json_schema: { name: 'sum', schema: SCHEMA, strict: true } },
      max_tokens: 80,
      temperature: 0,
    };
    const res = await postJson(urls[name]!, '/v1/chat/completions', body);
    expect(res.status).to.equal(200);
    return ((await res.json()) as Reply).choices[0]!;
  };

  for (const syntax of ['hermes', 'generic']) {
    it(`${syntax}: a model that calls gets its call as tool_calls, one that answers its JSON as content`, async () => {
      const called = await ask(`${syntax}-caller`);
      expect(called.finish_reason).to.equal('tool_calls');
      expect(called.message.tool_calls!.map((c) => [c.function.name, JSON.parse(c.function.arguments) as unknown])).to.deep.equal([['add', { a: 2, b: 2 }]]);
      expect(called.message.content ?? '').to.equal('');
      // (the generic reply's JSON may open with the blank a SentencePiece vocabulary writes, as its calls' object may)
      const answered = await ask(`${syntax}-answerer`);
      expect([answered.finish_reason, answered.message.tool_calls ?? [], JSON.parse(answered.message.content!) as unknown]).to.deep.equal(['stop', [], JSON.parse(ANSWERED)]);
    });
  }
});
