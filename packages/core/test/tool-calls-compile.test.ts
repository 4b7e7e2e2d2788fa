/**
 * Tool-call constraints over many tools. Every tool's arguments go into one grammar, JSON's own rules once and each
 * tool's rules renamed apart (mergeGrammars): XGrammar's compile time grows with the square of a grammar's size, and
 * each tool's grammar of its own repeated JSON's rules for any value (100 tools took 14–27 s to compile over 32,000
 * tokens while every other stream waited, 400 ran the library out of memory). A format whose tools' grammar is still
 * too large is refused by name before it is compiled.
 */
import { expect } from 'chai';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ConstraintError, XGrammarFactory, grammarVocabulary, type JsonSchema, type ResponseFormat, type ToolSpec } from '../src/constrain/index.js';
import { MAX_TOOL_GRAMMAR } from '../src/constrain/xgrammar-factory.js';
import { mergeGrammars } from '../src/constrain/xml-calls.js';
import type { ToolCallSyntax } from '../src/constrain/tool-syntax.js';
import { storiesModule } from './support/modules.js';
import { takesWhole } from './support/grammar-accepts.js';

/** A call of `name` with `args` (JSON text) as each syntax checked here writes it. */
const written: Partial<Record<ToolCallSyntax, (name: string, args: string) => string>> = {
  hermes: (name, args) => `<tool_call>\n{"name": ${JSON.stringify(name)}, "arguments": ${args}}\n</tool_call>`,
  json: (name, args) => `{"name": ${JSON.stringify(name)}, "parameters": ${args}}`,
  'qwen-xml': (name, args) =>
    `<tool_call>\n<function=${name}>\n${Object.entries(JSON.parse(args) as Record<string, unknown>)
      .map(([k, v]) => `<parameter=${k}>\n${typeof v === 'string' ? v : JSON.stringify(v)}\n</parameter>\n`)
      .join('')}</function>\n</tool_call>`,
};

/** Tool i of a set whose schemas differ in their property names, bounds and nesting. */
function tool(i: number): ToolSpec {
  const parameters: JsonSchema = {
    type: 'object',
    properties: {
      [`q${i}`]: { type: 'string' },
      limit: { type: 'integer', minimum: i % 7, maximum: 50 + i },
      mode: { enum: ['fast', `m${i}`] },
      opts: { type: 'object', properties: { deep: { type: 'boolean' }, [`k${i}`]: { type: 'number' } }, required: ['deep'] },
    },
    required: [`q${i}`, 'mode'],
  };
  return { name: `tool_${i}`, parameters };
}

describe('tool_calls constraints over many tools', function () {
  this.timeout(180_000);
  let factory: XGrammarFactory;

  before(async () => {
    const dir = await storiesModule();
    factory = new XGrammarFactory(grammarVocabulary(JSON.parse(await readFile(join(dir, 'tokenizer.json'), 'utf8')) as object, 512), 'many-tools');
  });

  it('100 tools compile in seconds, JSON rules once, and each call is held to its own tool', async () => {
    const tools = Array.from({ length: 100 }, (_, i) => tool(i));
    const format: ResponseFormat = { type: 'tool_calls', tools, choice: 'required' };
    const t0 = performance.now();
    (await factory.create(format, [2])).dispose();
    const seconds = (performance.now() - t0) / 1000;
    // (~5 s on a busy machine; their grammars side by side took 90 s on this vocabulary)
    expect(seconds).to.be.below(20);
    const call = (i: number, args: object) => written.hermes!(`tool_${i}`, JSON.stringify(args));
    expect(await takesWhole(factory, format, call(99, { q99: 'hi', limit: 149, mode: 'm99', opts: { deep: true, k99: 2.5 } }))).to.equal(true);
    expect(await takesWhole(factory, format, call(0, { q0: 'hi', mode: 'fast' }))).to.equal(true);
    // another tool's property, value or bound
    expect(await takesWhole(factory, format, call(0, { q1: 'hi', mode: 'fast' }))).to.equal(false);
    expect(await takesWhole(factory, format, call(0, { q0: 'hi', mode: 'm1' }))).to.equal(false);
    expect(await takesWhole(factory, format, call(3, { q3: 'hi', limit: 54, mode: 'fast' }))).to.equal(false);
    expect(await takesWhole(factory, format, call(3, { q3: 'hi', limit: 53, mode: 'fast' }))).to.equal(true);
  });

  it('tools whose grammars name rules alike but define them apart keep their own, in each syntax', async () => {
    const number: ToolSpec = { name: 'count', parameters: { type: 'object', properties: { a: { type: 'string' }, b: { type: 'integer' } }, required: ['a', 'b'] } };
    const flag: ToolSpec = { name: 'flag', parameters: { type: 'object', properties: { a: { type: 'string' }, b: { type: 'boolean' } }, required: ['a', 'b'] } };
    // (XGrammar names a definition's rules after it, `-` and `.` kept)
    const defined: ToolSpec = {
      name: 'defined',
      parameters: { type: 'object', properties: { a: { type: 'string' }, b: { $ref: '#/$defs/my-b.v' } }, required: ['a', 'b'], $defs: { 'my-b.v': { enum: [1, 2] } } },
    };
    const tools = [number, flag, number, defined].map((t, i) => ({ ...t, name: `${t.name}${i}` }));
    for (const syntax of ['hermes', 'json', 'qwen-xml'] as const) {
      const format: ResponseFormat = { type: 'tool_calls', tools, choice: 'required', parallel: false, syntax };
      const takes = (name: string, args: string) => takesWhole(factory, format, written[syntax]!(name, args));
      for (const name of ['count0', 'count2']) {
        expect(await takes(name, '{"a": "x", "b": 7}'), `${syntax} ${name}`).to.equal(true);
        expect(await takes(name, '{"a": "x", "b": true}'), `${syntax} ${name}`).to.equal(false);
      }
      expect(await takes('flag1', '{"a": "x", "b": true}'), syntax).to.equal(true);
      expect(await takes('flag1', '{"a": "x", "b": 7}'), syntax).to.equal(false);
      expect(await takes('defined3', '{"a": "x", "b": 2}'), syntax).to.equal(true);
      expect(await takes('defined3', '{"a": "x", "b": 7}'), syntax).to.equal(false);
    }
  });

  it('mergeGrammars writes the rules grammars share once, and renames apart those they define otherwise', () => {
    const a = ['root ::= "{" item "}" [root]', 'item ::= basic_x "\\"item"', 'basic_x ::= "x" basic_y', 'basic_y ::= [y]', 'defs_my-t.v ::= "t"'].join('\n');
    // basic_y differs: basic_x, which reaches it, is this grammar's own too; defs_my-t.v is the same
    const b = ['root ::= item defs_my-t.v', 'item ::= basic_x "\\"item"', 'basic_x ::= "x" basic_y', 'basic_y ::= [z]', 'defs_my-t.v ::= "t"'].join('\n');
    const { rules, roots } = mergeGrammars([a, a, b]);
    expect(roots).to.deep.equal(['g0_root', 'g1_root', 'g2_root']);
    expect(rules.split('\n')).to.deep.equal([
      'g0_root ::= "{" shared_item "}" [root]',
      'shared_item ::= shared_basic_x "\\"item"',
      'shared_basic_x ::= "x" shared_basic_y',
      'shared_basic_y ::= [y]',
      'shared_defs_my-t.v ::= "t"',
      'g1_root ::= "{" shared_item "}" [root]',
      'g2_root ::= g2_item shared_defs_my-t.v',
      'g2_item ::= g2_basic_x "\\"item"',
      'g2_basic_x ::= "x" g2_basic_y',
      'g2_basic_y ::= [z]',
    ]);
  });

  it(`refuses tools whose arguments' grammar exceeds MAX_TOOL_GRAMMAR (${MAX_TOOL_GRAMMAR} characters) by name, before compiling it`, async () => {
    const wide = (i: number): ToolSpec => ({
      name: `wide_${i}`,
      parameters: { type: 'object', properties: Object.fromEntries(Array.from({ length: 20 }, (_, k) => [`p${i}_${k}`, { type: k % 2 ? 'integer' : 'string' }])) },
    });
    const format: ResponseFormat = { type: 'tool_calls', tools: Array.from({ length: 100 }, (_, i) => wide(i)), choice: 'auto' };
    const t0 = performance.now();
    const err = await factory.create(format, [2]).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(ConstraintError);
    expect((err as Error).message).to.match(/^tool_calls: the grammar of the 100 tools' arguments holds \d+ characters, over the limit of 200000 \(MAX_TOOL_GRAMMAR/);
    expect((performance.now() - t0) / 1000).to.be.below(20);
    // a share of them still compiles
    (await factory.create({ ...format, tools: format.tools.slice(0, 20) }, [2])).dispose();
  });
});
