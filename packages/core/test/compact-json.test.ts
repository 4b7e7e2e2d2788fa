/**
 * JSON written compact (`{"a":2}`) or spaced (`{"a": 2}`) under a constraint: both pass, token for token as the model
 * writes them. Fixed `", "` and `": "` separators pushed a compact writer off its own tokens, and its values changed.
 */
import { expect } from 'chai';
import { Engine } from '../src/engine.js';
import { ToolCallTextSplitter } from '../src/chat/tool-calls.js';
import { scriptedChatModule } from './support/modules.js';
import { LLAMA3_TOOLS_TEMPLATE, THINKING_TEMPLATE } from './support/chat-templates.js';

const QUESTION = [{ role: 'user' as const, content: 'Add 2 and 3, and say where it is sunny' }];
const ADD = { type: 'object', properties: { a: { type: 'integer' }, b: { type: 'integer' } }, required: ['a', 'b'] };
const WHERE = { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] };
const TOOLS = [
  { name: 'add', parameters: ADD },
  { name: 'where', parameters: WHERE },
];
const RENDERED = TOOLS.map((t) => ({ type: 'function', function: { name: t.name, description: t.name, parameters: t.parameters } }));

describe('compact and spaced JSON under a constraint: the model writes its own separators', function () {
  this.timeout(180_000);

  const cases: [string, string, string, 'hermes' | 'json'][] = [
    ['Hermes, compact arguments', THINKING_TEMPLATE, '<tool_call>\n{"name": "add", "arguments": {"a":2,"b":3}}\n</tool_call>', 'hermes'],
    ['Hermes, compact throughout', THINKING_TEMPLATE, '<tool_call>\n{"name":"where","arguments":{"city":"Paris"}}\n</tool_call>', 'hermes'],
    ['Hermes, spaced', THINKING_TEMPLATE, '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>', 'hermes'],
    ['Llama 3, compact arguments', LLAMA3_TOOLS_TEMPLATE, '{"name": "add", "parameters": {"a":2,"b":3}}', 'json'],
  ];
  // Written free (no constraint) or under `auto`: the other forms of Llama 3's call are read as calls too.
  const llamaForms: [string, string, boolean][] = [
    ['compact', '{"name":"add","parameters":{"a":2,"b":3}}', false],
    ['with OpenAI\'s "type" first', '{"type": "function", "name": "add", "parameters": {"a": 2, "b": 3}}', true],
    ['compact, with "type"', '{"type":"function","name":"add","parameters":{"a":2,"b":3}}', false],
  ];
  for (const [what, reply, constrained] of llamaForms) {
    it(`Llama 3, ${what}: read as the call${constrained ? ", and under auto its arguments are held to the tool's schema" : ''}`, async () => {
      const splitter = new ToolCallTextSplitter('json');
      // (streamed a character at a time: an opening is held back until it is known)
      const pieces = [...reply].map((c) => splitter.push(c));
      const calls = [...pieces.flatMap((p) => p.toolCalls), ...splitter.end().toolCalls];
      expect(pieces.map((p) => p.content).join('')).to.equal('');
      expect(calls.map((c) => [c.name, JSON.parse(c.arguments) as unknown])).to.deep.equal([['add', { a: 2, b: 3 }]]);
      if (!constrained) return;
      // (the model would write a string where the schema takes an integer)
      const wrong = reply.replace('"a": 2', '"a": "two"');
      const { dir } = await scriptedChatModule(`llama-typed-${what.length}`, LLAMA3_TOOLS_TEMPLATE, QUESTION, wrong, { tools: RENDERED, bpe: true });
      const engine = await Engine.load({ model: dir });
      try {
        const { rows } = await engine.generate({ messages: QUESTION, tools: RENDERED }, { maxTokens: 120, responseFormat: { type: 'tool_calls', tools: TOOLS, choice: 'auto', syntax: 'json' } });
        expect(rows[0]!.text.startsWith('{"type": "function", "name": "add", "parameters": {"a": '), rows[0]!.text).to.equal(true);
        const splitter = new ToolCallTextSplitter('json');
        const [call] = [...splitter.push(rows[0]!.text).toolCalls, ...splitter.end().toolCalls];
        expect((JSON.parse(call!.arguments) as { a: unknown }).a, rows[0]!.text).to.be.a('number');
      } finally {
        await engine.dispose();
      }
    });
  }
  for (const [what, template, reply, syntax] of cases) {
    it(`${what}: the call as written, under tool_choice auto and required`, async () => {
      const { dir } = await scriptedChatModule(`compact-${syntax}-${what.length}`, template, QUESTION, reply, { tools: RENDERED, bpe: true });
      const engine = await Engine.load({ model: dir });
      try {
        for (const choice of ['auto', 'required'] as const) {
          const { rows } = await engine.generate({ messages: QUESTION, tools: RENDERED }, { maxTokens: 120, responseFormat: { type: 'tool_calls', tools: TOOLS, choice, syntax } });
          expect(rows[0]!.text, choice).to.equal(reply);
          const written = JSON.parse(/\{.*\}/s.exec(reply)![0]) as { arguments?: unknown; parameters?: unknown };
          const splitter = new ToolCallTextSplitter(syntax);
          const calls = [...splitter.push(rows[0]!.text).toolCalls, ...splitter.end().toolCalls];
          expect(calls.map((c) => JSON.parse(c.arguments) as unknown), choice).to.deep.equal([written.arguments ?? written.parameters]);
        }
      } finally {
        await engine.dispose();
      }
    });
  }

  it('a JSON Schema response: compact and spaced objects pass as written; two blanks in a row do not', async () => {
    const schema = { type: 'object', properties: { a: { type: 'integer' }, city: { type: 'string' } }, required: ['a', 'city'] };
    for (const reply of ['{"a":2,"city":"Paris"}', '{"a": 2, "city": "Paris"}', '{ "a" : 2 , "city" : "Paris" }']) {
      const { dir } = await scriptedChatModule(`compact-schema-${reply.length}`, THINKING_TEMPLATE, QUESTION, reply, { bpe: true });
      const engine = await Engine.load({ model: dir });
      try {
        const { rows } = await engine.generate({ messages: QUESTION }, { maxTokens: 60, responseFormat: { type: 'json_schema', schema } });
        expect(rows[0]!.text).to.equal(reply);
        expect(rows[0]!.parsed).to.deep.equal({ a: 2, city: 'Paris' });
      } finally {
        await engine.dispose();
      }
    }
    const padded = '{"a":  2, "city": "Paris"}';
    const { dir } = await scriptedChatModule('compact-schema-padded', THINKING_TEMPLATE, QUESTION, padded, { bpe: true });
    const engine = await Engine.load({ model: dir });
    try {
      const { rows } = await engine.generate({ messages: QUESTION }, { maxTokens: 60, responseFormat: { type: 'json_schema', schema } });
      expect(rows[0]!.text).to.not.equal(padded);
      expect(rows[0]!.text).to.not.include('  ');
    } finally {
      await engine.dispose();
    }
  });
});
