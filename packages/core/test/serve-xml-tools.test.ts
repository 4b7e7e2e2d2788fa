/**
 * Tool calls in tags, whose values are written without their JSON type, through `reasonplug serve` and
 * @langchain/openai's ChatOpenAI: Qwen3-Coder's `<function=name>` with `<parameter=key>` blocks and GLM-4.5's
 * `<tool_call>name` with `<arg_key>`/`<arg_value>` pairs (whose tags are added tokens of its vocabulary). A string is
 * written as it is (here a body of two lines holding `<b>`), any other value as JSON; the constraint holds each call to
 * its tool's schema (required keys, their order, the values' types) and the splitter reads the values back typed by
 * it. Backbones with templates of those forms are scripted to answer with two calls.
 */
import { expect } from 'chai';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { ChatOpenAI } from '@langchain/openai';
import { AIMessageChunk, HumanMessage, ToolMessage } from '@langchain/core/messages';
import { Engine } from '../src/engine.js';
import { TextTokenizer } from '../src/tokenizer/tokenizer.js';
import { toolCallSyntaxOf, TOOL_CALL_SYNTAX } from '../src/constrain/tool-syntax.js';
import { XGrammarFactory, grammarVocabulary, type ResponseFormat } from '../src/constrain/index.js';
import { mergeGrammars } from '../src/constrain/xml-calls.js';
import { ToolCallTextSplitter } from '../src/chat/tool-calls.js';
import { createRng } from '../src/sampling/index.js';
import { scriptedChatModule, storiesModule } from './support/modules.js';
import { GLM45_TEMPLATE, QWEN3_CODER_TEMPLATE, THINKING_TEMPLATE } from './support/chat-templates.js';
import { postJson, useServers } from './support/servers.js';
import { takesWhole } from './support/grammar-accepts.js';

const QUESTION = 'What are two and two? Note the sum.';
const ADD = {
  type: 'function' as const,
  function: { name: 'add', description: 'Add two integers', parameters: { type: 'object', properties: { a: { type: 'integer' }, b: { type: 'integer' } }, required: ['a', 'b'] } },
};
const NOTE = {
  type: 'function' as const,
  function: {
    name: 'note',
    description: 'Write a note',
    parameters: {
      type: 'object',
      properties: { title: { type: 'string' }, body: { type: 'string' }, tags: { type: 'array', items: { type: 'string' } }, urgent: { type: 'boolean' } },
      required: ['title', 'body'],
    },
  },
};
const TOOLS = [ADD, NOTE];
const SPECS = TOOLS.map((t) => ({ name: t.function.name, parameters: t.function.parameters }));
const BODY = '2 + 2 = 4\n<b>four</b>';
const CALLS = [
  ['add', { a: 2, b: 2 }],
  ['note', { title: 'Sum', body: BODY, urgent: true }],
];

/** A call as each syntax's template writes it. */
const written = {
  'qwen-xml': (name: string, args: [string, string][]) =>
    `<tool_call>\n<function=${name}>\n${args.map(([k, v]) => `<parameter=${k}>\n${v}\n</parameter>\n`).join('')}</function>\n</tool_call>`,
  glm: (name: string, args: [string, string][]) => `<tool_call>${name}\n${args.map(([k, v]) => `<arg_key>${k}</arg_key>\n<arg_value>${v}</arg_value>\n`).join('')}</tool_call>`,
};

const SUITES = [
  { syntax: 'qwen-xml', model: 'qwen-coderish', template: QWEN3_CODER_TEMPLATE, textTokens: ['<tool_call>', '</tool_call>'] },
  { syntax: 'glm', model: 'glmish', template: GLM45_TEMPLATE, textTokens: ['<tool_call>', '</tool_call>', '<arg_key>', '</arg_key>', '<arg_value>', '</arg_value>'] },
] as const;

for (const { syntax, model, template, textTokens } of SUITES) {
  const call = written[syntax];
  const first = call('add', [['a', '2'], ['b', '2']]);
  const reply = `${first}\n${call('note', [['title', 'Sum'], ['body', BODY], ['urgent', 'true']])}`;

  describe(`reasonplug serve: ${syntax} tool calls in tags (${model})`, function () {
    this.timeout(180_000);
    const { serve } = useServers();
    let dir: string;
    let replyIds: number[];
    let tokenizer: TextTokenizer;
    let url: string;
    const chat = () => new ChatOpenAI({ model, apiKey: 'none', temperature: 0, maxTokens: 300, configuration: { baseURL: `${url}/v1` }, maxRetries: 0 });

    before(async () => {
      ({ dir, replyIds } = await scriptedChatModule(model, template, [{ role: 'user', content: QUESTION }], reply, { tools: TOOLS, textTokens, bpe: true }));
      tokenizer = await TextTokenizer.fromDirectory(dir);
      url = await serve({ engine: { model: dir }, name: model });
    });

    it('reads the syntax from the template; the constraint writes the calls, tags as their tokens (required, auto, named)', async () => {
      expect(toolCallSyntaxOf(template)).to.equal(syntax);
      const markers = textTokens.map((t) => tokenizer.tokenId(t));
      expect(replyIds.filter((id) => markers.includes(id)).length).to.be.greaterThan(3);
      expect(tokenizer.decode(replyIds)).to.equal(reply);
      const engine = await Engine.load({ model: dir });
      try {
        const prompt = { messages: [{ role: 'user' as const, content: QUESTION }], tools: TOOLS };
        for (const choice of ['required', 'auto'] as const) {
          const { rows } = await engine.generate(prompt, { maxTokens: 300, responseFormat: { type: 'tool_calls', tools: SPECS, choice, syntax } });
          expect(rows[0]!.ids.slice(0, -1), choice).to.deep.equal(replyIds);
          expect(rows[0]!.text, choice).to.equal(reply);
        }
        // A named tool is called once.
        const named = await engine.generate(prompt, { maxTokens: 300, responseFormat: { type: 'tool_calls', tools: SPECS, choice: { name: 'add' }, syntax } });
        expect(named.rows[0]!.text).to.equal(first);
      } finally {
        await engine.dispose();
      }
    });

    it('ChatOpenAI gets both calls with typed arguments in invoke and stream, and they go back through the template as written', async () => {
      for (const toolChoice of ['auto', 'required'] as const) {
        const got = await chat().bindTools(TOOLS, { tool_choice: toolChoice }).invoke(QUESTION);
        expect(got.tool_calls?.map((c) => [c.name, c.args]), toolChoice).to.deep.equal(CALLS);
        expect(got.content).to.equal('');
        expect(got.response_metadata.finish_reason).to.equal('tool_calls');
      }
      const chunks: AIMessageChunk[] = [];
      for await (const c of await chat().bindTools(TOOLS).stream(QUESTION)) chunks.push(c);
      const joined = chunks.reduce((a, b) => a.concat(b));
      expect(joined.tool_calls?.map((c) => [c.name, c.args])).to.deep.equal(CALLS);
      expect(joined.content).to.equal('');

      const got = await chat().bindTools(TOOLS).invoke(QUESTION);
      const body = {
        messages: [
          { role: 'user', content: QUESTION },
          { role: 'assistant', content: '', tool_calls: got.tool_calls!.map((c) => ({ id: c.id, type: 'function', function: { name: c.name, arguments: JSON.stringify(c.args) } })) },
          { role: 'tool', content: '4', tool_call_id: got.tool_calls![0]!.id },
        ],
      };
      const res = await postJson(url, '/tokenize', body);
      expect(res.status).to.equal(200);
      // (Qwen3-Coder's template writes a value that is no string with `|string`: Python's `True`, as transformers renders it)
      const rendered = syntax === 'qwen-xml' ? reply.replace('\ntrue\n', '\nTrue\n') : reply;
      expect(tokenizer.decode(((await res.json()) as { tokens: number[] }).tokens, false)).to.include(rendered);
      const next = await chat().bindTools(TOOLS).invoke([new HumanMessage(QUESTION), got, new ToolMessage({ content: '4', tool_call_id: got.tool_calls![0]!.id! })]);
      expect(next.usage_metadata?.input_tokens).to.be.greaterThan(100);
    });
  });
}

describe('tool calls in tags: the grammar and the splitter', function () {
  this.timeout(120_000);
  let factory: XGrammarFactory;
  const ajv = new Ajv2020({ strict: false });

  before(async () => {
    const dir = await storiesModule();
    factory = new XGrammarFactory(grammarVocabulary(JSON.parse(await readFile(join(dir, 'tokenizer.json'), 'utf8')) as object, 512), 'xml-calls');
  });

  /** Whether the constraint of `format` takes `text` whole and then ends. */
  const accepts = (format: ResponseFormat, text: string) => takesWhole(factory, format, text);

  for (const syntax of ['qwen-xml', 'glm'] as const) {
    const call = written[syntax];
    it(`${syntax}: required keys in order, values of their types, free text for strings; bound tools only`, async () => {
      const tools = [...SPECS, { name: 'ping', parameters: { type: 'object', properties: {} } }, { name: 'pick', parameters: { type: 'object', properties: { kind: { enum: ['a "b"', 'c\\d'] } } } }];
      const format: ResponseFormat = { type: 'tool_calls', tools, choice: 'required', syntax };
      const cases: [string, boolean][] = [
        [call('add', [['a', '2'], ['b', '-3']]), true],
        [call('add', [['a', '2']]), false], // b is required
        [call('add', [['b', '3'], ['a', '2']]), false], // the schema's order
        [call('add', [['a', 'two'], ['b', '3']]), false],
        [call('add', [['a', '2'], ['b', '3'], ['c', '4']]), false], // no such key
        [call('note', [['title', 'Hi'], ['body', 'line 1\n<b>two</b> & "q" </arg_key> </parameter>']]), true],
        [call('note', [['title', 'Hi'], ['body', 'x'], ['tags', '["a", "b"]'], ['urgent', 'false']]), true],
        [call('note', [['title', 'Hi'], ['body', 'x'], ['tags', 'a, b']]), false],
        [call('ping', []), true],
        [call('pick', [['kind', 'a "b"']]), true],
        [call('pick', [['kind', 'c\\d']]), true],
        [call('pick', [['kind', 'e']]), false],
        [`${call('add', [['a', '1'], ['b', '2']])}\n${call('ping', [])}`, true],
        [call('nope', []), false],
      ];
      for (const [text, want] of cases) expect(await accepts(format, text), JSON.stringify(text)).to.equal(want);
      expect(await accepts({ ...format, choice: { name: 'ping' } }, call('add', [['a', '1'], ['b', '2']]))).to.equal(false);
      expect(await accepts({ ...format, parallel: false }, `${call('ping', [])}\n${call('ping', [])}`)).to.equal(false);
    });

    it(`${syntax}: random walks through typed arguments give calls the splitter reads back valid by an independent validator`, async () => {
      // No free-text strings here: a walk would not spell a closing tag by chance.
      const parameters = {
        type: 'object',
        properties: {
          n: { type: 'integer', minimum: -5, maximum: 40 },
          mode: { enum: ['fast', 'slow'] },
          flags: { type: 'array', items: { type: 'boolean' }, maxItems: 3 },
          point: { type: 'object', properties: { x: { type: 'number' } }, required: ['x'], additionalProperties: false },
        },
        required: ['n'],
        additionalProperties: false,
      };
      const format: ResponseFormat = { type: 'tool_calls', tools: [{ name: 'go', parameters }], choice: 'required', parallel: false, syntax };
      const closers = ['\n', '<', '/', '>', ']', '}', '0', '1', 'e'].map((ch) => 3 + ch.charCodeAt(0));
      const rng = createRng(11);
      let read = 0;
      for (let walk = 0; walk < 30; walk++) {
        const c = await factory.create(format, [2]);
        const bytes: number[] = [];
        try {
          for (let step = 0; step < 500; step++) {
            const mask = await c.allowed();
            const ok = (id: number) => ((mask[id >> 5]! >>> (id & 31)) & 1) === 1;
            const next = Array.from({ length: 128 }, (_, b) => 3 + b).filter(ok);
            if (ok(2) && (next.length === 0 || rng() < 0.5)) break;
            const closing = bytes.length > 60 ? next.filter((id) => closers.includes(id)) : [];
            const pool = closing.length > 0 && rng() < 0.8 ? closing : next;
            const id = pool[Math.floor(rng() * pool.length)]!;
            c.accept(id);
            bytes.push(id - 3);
          }
        } finally {
          c.dispose();
        }
        const text = Buffer.from(bytes).toString('utf8');
        if (!text.endsWith(TOOL_CALL_SYNTAX[syntax].end)) continue;
        const splitter = new ToolCallTextSplitter(syntax, { go: parameters });
        const calls = [...splitter.push(text.slice(0, 9)).toolCalls, ...splitter.push(text.slice(9)).toolCalls, ...splitter.end().toolCalls];
        expect(calls.map((c) => c.name), text).to.deep.equal(['go']);
        expect(ajv.validate(parameters, JSON.parse(calls[0]!.arguments)), `${text} → ${ajv.errorsText()}`).to.equal(true);
        read++;
      }
      expect(read).to.be.greaterThan(15);
    });

    it(`${syntax}: the splitter reads calls streamed in pieces, types values by the schema (else as JSON, else text), and keeps a nameless block raw`, () => {
      const text = `Noting. ${call('note', [['title', '42'], ['body', BODY], ['urgent', 'True']])}\n${call('add', [['a', '2'], ['b', '3']])}`;
      const splitter = new ToolCallTextSplitter(syntax, Object.fromEntries(SPECS.map((s) => [s.name, s.parameters])));
      const out = [...text].map((ch) => splitter.push(ch));
      const end = splitter.end();
      expect(out.map((o) => o.content).join('') + end.content).to.equal('Noting. ');
      // (Python's True, as Qwen3-Coder's template renders a boolean; a string that looks like a number stays a string)
      expect([...out.flatMap((o) => o.toolCalls), ...end.toolCalls].map((c) => [c.name, JSON.parse(c.arguments)])).to.deep.equal([
        ['note', { title: '42', body: BODY, urgent: true }],
        ['add', { a: 2, b: 3 }],
      ]);
      // without schemas: JSON where the text is JSON, else the text
      const bare = new ToolCallTextSplitter(syntax);
      const calls = [...bare.push(call('note', [['title', '42'], ['body', BODY]])).toolCalls, ...bare.end().toolCalls];
      expect(calls.map((c) => JSON.parse(c.arguments))).to.deep.equal([{ title: 42, body: BODY }]);
      const nameless = new ToolCallTextSplitter(syntax);
      const raw = [...nameless.push(`${TOOL_CALL_SYNTAX[syntax].begin}\n\n${TOOL_CALL_SYNTAX[syntax].end}`).toolCalls, ...nameless.end().toolCalls];
      expect(raw.map((c) => [c.name, c.arguments])).to.deep.equal([[undefined, '']]);
    });
  }

  it('Hermes-form templates stay hermes, Seed-OSS-form ones (<seed:tool_call>) get the generic reply; mergeGrammars renames rules but not text in literals or classes', () => {
    expect(toolCallSyntaxOf(THINKING_TEMPLATE)).to.equal('hermes');
    expect(toolCallSyntaxOf(QWEN3_CODER_TEMPLATE.replaceAll('<tool_call>', '<seed:tool_call>').replaceAll('</tool_call>', '</seed:tool_call>'))).to.equal('generic');
    const ebnf = 'root ::= "root" item [root] ("a" | item)\nitem ::= "\\"item" root';
    expect(mergeGrammars([ebnf]).rules).to.equal('g0_root ::= "root" g0_item [root] ("a" | g0_item)\ng0_item ::= "\\"item" g0_root');
  });
});
