/**
 * Tool-call arguments keep the numbers the model wrote, both ways. Read from a reply, `arguments` is the model's own
 * JSON text (a JavaScript value would write `12345678901234567890` as `12345678901234567000` and `1.0` as `1`), in
 * every syntax, streamed or whole. Rendered back into the prompt, a call's numbers are spelled as transformers and vLLM
 * spell them (Python's `json.loads`, then `tojson`): `1.0`, `1e-07`, big integers exact. And Mistral Small 3.2's calls
 * carry their ids, `[TOOL_CALLS]name[CALL_ID]id[ARGS]{…}`, which the constraint lets the model write.
 */
import { expect } from 'chai';
import { Engine } from '../src/engine.js';
import { TextTokenizer } from '../src/tokenizer/tokenizer.js';
import { ToolCallTextSplitter, type ParsedToolCall, type ToolParameters } from '../src/chat/tool-calls.js';
import { markerTokensOf, toolCallSyntaxOf, type ToolCallSyntax } from '../src/constrain/tool-syntax.js';
import { withArgumentsAs } from '../src/tokenizer/tool-call-arguments.js';
import { PythonTemplate } from '../src/tokenizer/jinja-python.js';
import type { ChatMessage } from '../src/tokenizer/tokenizer.js';
import { scriptedChatModule } from './support/modules.js';
import { THINKING_TEMPLATE } from './support/chat-templates.js';
import { postJson, useServers } from './support/servers.js';

/** Arguments whose numbers a round trip through a JavaScript value would change. */
const ARGS = '{"order_id": 12345678901234567890, "weight": 1.0}';

/** The calls `text` holds, read whole and read in pieces of `size` characters (which must agree). */
function callsOf(syntax: ToolCallSyntax, text: string, size: number, parameters?: ToolParameters): ParsedToolCall[] {
  const read = (pieces: string[]) => {
    const splitter = new ToolCallTextSplitter(syntax, parameters);
    return [...pieces.flatMap((p) => splitter.push(p).toolCalls), ...splitter.end().toolCalls];
  };
  const whole = read([text]);
  const pieces = read(text.match(new RegExp(`[\\s\\S]{1,${size}}`, 'gu'))!);
  expect(pieces.map((c) => [c.name, c.arguments]), `${syntax}, in pieces`).to.deep.equal(whole.map((c) => [c.name, c.arguments]));
  return whole;
}

describe('tool-call arguments as the model wrote them', () => {
  const cases: [ToolCallSyntax, string][] = [
    ['hermes', `<tool_call>\n{"name": "lookup", "arguments": ${ARGS}}\n</tool_call>`],
    ['json', `{"name": "lookup", "parameters": ${ARGS}}`],
    ['mistral', `[TOOL_CALLS] [{"name": "lookup", "arguments": ${ARGS}, "id": "abcDEF123"}]`],
    ['mistral-args', `[TOOL_CALLS]lookup[ARGS]${ARGS}`],
    ['granite', `<|tool_call|>[{"name": "lookup", "arguments": ${ARGS}}]`],
    ['command-r', `<|START_ACTION|>[{"tool_call_id": "0", "tool_name": "lookup", "parameters": ${ARGS}}]<|END_ACTION|>`],
    ['deepseek', `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>lookup\n\`\`\`json\n${ARGS}\n\`\`\`<｜tool▁call▁end｜><｜tool▁calls▁end｜>`],
  ];

  it('each JSON syntax gives the arguments text itself, whole and streamed in pieces', () => {
    for (const [syntax, text] of cases) {
      const calls = callsOf(syntax, text, 5);
      expect(calls.map((c) => [c.name, c.arguments]), syntax).to.deep.equal([['lookup', ARGS]]);
    }
  });

  it('a reply cut off by its token limit gives its whole calls as written too', () => {
    const splitter = new ToolCallTextSplitter('hermes');
    const read = splitter.push(`<tool_call>{"name": "lookup", "arguments": ${ARGS}}</tool_call>\n<tool_call>{"name": "lookup", "arguments": {"order_id": 1.50`);
    expect([...read.toolCalls, ...splitter.end(true).toolCalls].map((c) => [c.arguments, c.partial])).to.deep.equal([
      [ARGS, undefined],
      ['{"order_id": 1.50', true],
    ]);
  });

  it("the tagged syntaxes write each value's own text where the schema takes no string", () => {
    const parameters = { lookup: { type: 'object', properties: { order_id: { type: 'integer' }, weight: { type: 'number' }, note: { type: 'string' } } } };
    const qwen = '<tool_call>\n<function=lookup>\n<parameter=order_id>\n12345678901234567890\n</parameter>\n<parameter=weight>\n1.0\n</parameter>\n<parameter=note>\n2.50\n</parameter>\n</function>\n</tool_call>';
    const glm = '<tool_call>lookup\n<arg_key>order_id</arg_key>\n<arg_value>12345678901234567890</arg_value>\n<arg_key>weight</arg_key>\n<arg_value>1.0</arg_value>\n<arg_key>note</arg_key>\n<arg_value>2.50</arg_value>\n</tool_call>';
    for (const [syntax, text] of [['qwen-xml', qwen], ['glm', glm]] as const) {
      const calls = callsOf(syntax, text, 7, parameters);
      expect(calls.map((c) => c.arguments), syntax).to.deep.equal(['{"order_id":12345678901234567890,"weight":1.0,"note":"2.50"}']);
    }
  });
});

/** A history call with `args`, rendered by `template` as the tokenizer hands calls to it. */
function rendered(template: string, args: string): string {
  const messages: ChatMessage[] = [{ role: 'assistant', content: '', tool_calls: [{ id: 'abcDEF123', type: 'function', function: { name: 'f', arguments: args } }] }];
  return new PythonTemplate(template).render({ messages: withArgumentsAs(messages, 'object') });
}

describe('history calls rendered with the numbers spelled as Python spells them', () => {
  const TOJSON = '{% for m in messages %}{% for c in m.tool_calls %}{{ c.function.arguments | tojson }}{% endfor %}{% endfor %}';
  // Gemma 4's and DeepSeek V3.2's way: each value by its type, strings quoted.
  const TYPED =
    '{% for m in messages %}{% for c in m.tool_calls %}{% for k, v in c.function.arguments.items() %}' +
    '{{ k }}={% if v is string %}"{{ v }}"{% elif v is integer %}int:{{ v }}{% elif v is number %}float:{{ v }}{% else %}{{ v | tojson }}{% endif %};' +
    '{% endfor %}{% endfor %}{% endfor %}';

  it('tojson writes 1.0, 1e-07, 1e+16 and big integers as Python does, and leaves strings and round numbers be', () => {
    const args = '{"value": 1.0, "id": 12345678901234567890, "ratio": 1e-7, "big": 1e16, "neg": -0.0, "e": 1E5, "n": 3, "x": 2.5, "s": "1.0 and 12345678901234567890", "list": [1.0, {"k": -12345678901234567890}]}';
    // (json.loads, then json.dumps, in Python)
    expect(rendered(TOJSON, args)).to.equal(
      '{"value": 1.0, "id": 12345678901234567890, "ratio": 1e-07, "big": 1e+16, "neg": -0.0, "e": 100000.0, "n": 3, "x": 2.5, "s": "1.0 and 12345678901234567890", "list": [1.0, {"k": -12345678901234567890}]}',
    );
  });

  it('a template that tests a value’s type sees a number of the kind Python’s is', () => {
    expect(rendered(TYPED, '{"value": 1.0, "id": 12345678901234567890, "ratio": 1e-7, "s": "1.0"}')).to.equal('value=float:1.0;id=int:12345678901234567890;ratio=float:1e-07;s="1.0";');
  });
});

const QUESTION = 'Look up order 12345678901234567890.';
const LOOKUP = {
  type: 'function' as const,
  function: { name: 'lookup', description: 'Look an order up', parameters: { type: 'object', properties: { order_id: { type: 'integer' }, weight: { type: 'number' } }, required: ['order_id'] } },
};

/** The tool calls of a streamed chat completion's events, each call's arguments joined from its deltas. */
function streamedCalls(events: string): { name: string; arguments: string }[] {
  const calls: { name: string; arguments: string }[] = [];
  for (const line of events.split('\n')) {
    if (!line.startsWith('data: {')) continue;
    const deltas = (JSON.parse(line.slice('data: '.length)) as { choices: { delta: { tool_calls?: { index: number; function: { name?: string; arguments?: string } }[] } }[] }).choices[0]?.delta.tool_calls ?? [];
    for (const d of deltas) {
      const call = (calls[d.index] ??= { name: '', arguments: '' });
      call.name += d.function.name ?? '';
      call.arguments += d.function.arguments ?? '';
    }
  }
  return calls;
}

describe('reasonplug serve: a call with such numbers, out to the client and back into the prompt', function () {
  this.timeout(180_000);
  const { serve } = useServers();
  const reply = `<tool_call>\n{"name": "lookup", "arguments": ${ARGS}}\n</tool_call>`;
  let url: string;
  let tokenizer: TextTokenizer;
  before(async () => {
    const { dir } = await scriptedChatModule('literal-caller', THINKING_TEMPLATE, [{ role: 'user', content: QUESTION }], reply, { tools: [LOOKUP] });
    tokenizer = await TextTokenizer.fromDirectory(dir);
    url = await serve({ engine: { model: dir }, name: 'literal-caller' });
  });

  it('chat completions, streamed or not, and the Responses API give the arguments as written', async () => {
    const body = { model: 'literal-caller', messages: [{ role: 'user', content: QUESTION }], tools: [LOOKUP], max_tokens: 120, temperature: 0 };
    const whole = (await (await postJson(url, '/v1/chat/completions', body)).json()) as { choices: { message: { tool_calls: { function: { name: string; arguments: string } }[] } }[] };
    expect(whole.choices[0]!.message.tool_calls.map((c) => [c.function.name, c.function.arguments])).to.deep.equal([['lookup', ARGS]]);
    const streamed = await (await postJson(url, '/v1/chat/completions', { ...body, stream: true })).text();
    expect(streamedCalls(streamed)).to.deep.equal([{ name: 'lookup', arguments: ARGS }]);
    const responses = { model: 'literal-caller', input: QUESTION, tools: [{ type: 'function', ...LOOKUP.function }], max_output_tokens: 120, temperature: 0 };
    const response = (await (await postJson(url, '/v1/responses', responses)).json()) as { output: { type: string; arguments?: string }[] };
    expect(response.output.filter((o) => o.type === 'function_call').map((o) => o.arguments)).to.deep.equal([ARGS]);
  });

  it('the call sent back renders into the prompt with its numbers as written', async () => {
    const messages = [
      { role: 'user', content: QUESTION },
      { role: 'assistant', content: '', tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'lookup', arguments: '{"order_id": 12345678901234567890, "weight": 1.0, "ratio": 1e-7}' } }] },
      { role: 'tool', content: 'shipped', tool_call_id: 'call_1' },
    ];
    const res = await postJson(url, '/tokenize', { model: 'literal-caller', messages, tools: [LOOKUP] });
    expect(res.status).to.equal(200);
    const text = tokenizer.decode(((await res.json()) as { tokens: number[] }).tokens, false);
    expect(text).to.include('<tool_call>\n{"name": "lookup", "arguments": {"order_id": 12345678901234567890, "weight": 1.0, "ratio": 1e-07}}\n</tool_call>');
  });
});

/** Mistral Small 3.2's way with calls, in short: each rendered `[TOOL_CALLS]name[CALL_ID]id[ARGS]` and its arguments. */
const CALL_ID_TEMPLATE =
  '{{ bos_token }}{% if tools %}[AVAILABLE_TOOLS]{{ tools | tojson }}[/AVAILABLE_TOOLS]{% endif %}' +
  '{%- for m in messages %}' +
  "{%- if m.role == 'user' %}[INST]{{ m.content }}[/INST]" +
  "{%- elif m.tool_calls %}{% for c in m.tool_calls %}[TOOL_CALLS]{{ c.function.name }}[CALL_ID]{{ c.id }}[ARGS]{{ c.function.arguments | tojson }}{% endfor %}{{ eos_token }}" +
  "{%- elif m.role == 'tool' %}[TOOL_RESULTS]{{ m.tool_call_id }}[TOOL_CONTENT]{{ m.content }}[/TOOL_RESULTS]" +
  '{%- else %}{{ m.content }}{{ eos_token }}{% endif %}' +
  '{%- endfor %}';

describe("Mistral Small 3.2's calls, [TOOL_CALLS]name[CALL_ID]id[ARGS]{…}", function () {
  this.timeout(180_000);

  it('the splitter reads the name and the id apart, and keeps the id where Mistral takes it', () => {
    expect(toolCallSyntaxOf(CALL_ID_TEMPLATE)).to.equal('mistral-args');
    expect(markerTokensOf('mistral-args')).to.include('[CALL_ID]');
    const calls = callsOf('mistral-args', 'Sure. [TOOL_CALLS]special_function[CALL_ID]123456789[ARGS]{"arg1": 1}[TOOL_CALLS]add[CALL_ID]not-an-id[ARGS]{"a": 1}', 4);
    expect(calls.map((c) => [c.name, c.arguments])).to.deep.equal([
      ['special_function', '{"arg1": 1}'],
      ['add', '{"a": 1}'],
    ]);
    expect(calls[0]!.id).to.equal('123456789');
    // (an id Mistral's templates refuse: a fresh one, which they take)
    expect(calls[1]!.id).to.match(/^[a-zA-Z0-9]{9}$/).and.not.equal('not-an-id');
  });

  it('the constraint lets the model write the id where the vocabulary holds [CALL_ID]; the call goes out and back with it', async () => {
    const reply = '[TOOL_CALLS]add[CALL_ID]abcDEF123[ARGS]{"a": 2, "b": 2}';
    const ADD = { type: 'function' as const, function: { name: 'add', description: 'Add', parameters: { type: 'object', properties: { a: { type: 'integer' }, b: { type: 'integer' } } } } };
    const { dir, replyIds } = await scriptedChatModule('mistral-call-id', CALL_ID_TEMPLATE, [{ role: 'user', content: 'Two and two?' }], reply, { tools: [ADD], specialTokens: ['[TOOL_CALLS]', '[ARGS]', '[CALL_ID]'] });
    const tokenizer = await TextTokenizer.fromDirectory(dir);
    const written = tokenizer.decode(replyIds, true, new Set([512, 513, 514]));
    const engine = await Engine.load({ model: dir });
    try {
      const prompt = { messages: [{ role: 'user' as const, content: 'Two and two?' }], tools: [ADD] };
      for (const choice of ['required', 'auto'] as const) {
        const { rows } = await engine.generate(prompt, { maxTokens: 80, responseFormat: { type: 'tool_calls', tools: [{ name: 'add', parameters: ADD.function.parameters }], choice, syntax: 'mistral-args' } });
        expect(rows[0]!.ids.slice(0, -1), choice).to.deep.equal(replyIds);
        expect(rows[0]!.text, choice).to.equal(written);
      }
    } finally {
      await engine.dispose();
    }
    const url = await serveOnce(dir);
    const body = { model: 'mistral-call-id', messages: [{ role: 'user', content: 'Two and two?' }], tools: [ADD], max_tokens: 80, temperature: 0 };
    const got = (await (await postJson(url, '/v1/chat/completions', body)).json()) as { choices: { message: { tool_calls: { id: string; function: { name: string; arguments: string } }[] } }[] };
    const calls = got.choices[0]!.message.tool_calls;
    expect(calls.map((c) => [c.id, c.function.name, c.function.arguments])).to.deep.equal([['abcDEF123', 'add', '{"a": 2, "b": 2}']]);
    const back = [...body.messages, { role: 'assistant', content: '', tool_calls: calls.map((c) => ({ ...c, type: 'function' })) }, { role: 'tool', content: '4', tool_call_id: 'abcDEF123' }];
    const tokens = ((await (await postJson(url, '/tokenize', { model: 'mistral-call-id', messages: back })).json()) as { tokens: number[] }).tokens;
    // (this legacy SentencePiece vocabulary writes a blank after each special token)
    const prompt = tokenizer.decode(tokens, false).replace(/([\]>]) /g, '$1');
    expect(prompt).to.include('[TOOL_CALLS]add[CALL_ID]abcDEF123[ARGS]{"a": 2, "b": 2}</s>[TOOL_RESULTS]abcDEF123[TOOL_CONTENT]4');
  });

  const { serve } = useServers();
  const serveOnce = (dir: string) => serve({ engine: { model: dir }, name: 'mistral-call-id' });
});
