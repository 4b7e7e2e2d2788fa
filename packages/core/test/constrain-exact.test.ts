import { expect } from 'chai';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ConstraintError, XGrammarFactory, grammarVocabulary, prepareJsonSchema, type Constraint, type ResponseFormat } from '../src/constrain/index.js';
import { attachParsed } from '../src/constrain/rows.js';
import type { RowResult } from '../src/generate/types.js';
import { storiesModule } from './support/modules.js';
import { takesWhole } from './support/grammar-accepts.js';

/**
 * Exactness of the constraints against hand-written expectations: texts fed byte by byte to a row's constraint
 * (stories260K's byte tokens, id = 3 + byte; EOS 2), accepted whole or not.
 */
describe('constraints accept exactly what the format admits', function () {
  this.timeout(120_000);
  let factory: XGrammarFactory;
  let tokenizerJson: object;

  before(async () => {
    const dir = await storiesModule();
    tokenizerJson = JSON.parse(await readFile(join(dir, 'tokenizer.json'), 'utf8')) as object;
    factory = new XGrammarFactory(grammarVocabulary(tokenizerJson, 512), 'exact');
  });

  /** Whether the constraint of `format` takes `text` whole and then ends. */
  const accepts = (format: ResponseFormat, text: string) => takesWhole(factory, format, text);

  /** Expects each text's acceptance under a schema: `[text, admitted]`. */
  async function expectSchema(schema: Record<string, unknown>, cases: [string, boolean][]): Promise<void> {
    for (const [text, admitted] of cases) {
      expect(await accepts({ type: 'json_schema', schema }, text), `${JSON.stringify(schema)} on ${text}`).to.equal(admitted);
    }
  }

  it('enum, const and multipleOf admit their values only (XGrammar mis-accepts literal alternatives sharing a prefix)', async () => {
    await expectSchema({ enum: ['a', 'b', 'ba'] }, [['"a"', true], ['"b"', true], ['"ba"', true], ['"baa"', false], ['"baaaaaaaaa"', false], ['"bb"', false]]);
    await expectSchema({ type: 'string', enum: ['a', 'b', 'ba', 3] }, [['"ba"', true], ['3', false]]);
    await expectSchema({ enum: [-20, -15, -10, -5, 0, 5, 10, 15, 20] }, [['-20', true], ['-25', false], ['-5', true], ['-55', false], ['0', true], ['200', false]]);
    await expectSchema({ type: 'integer', minimum: -20, maximum: 20, multipleOf: 5 }, [['-20', true], ['-25', false], ['15', true], ['155', false], ['20', true], ['205', false]]);
    await expectSchema({ enum: [{ x: 1 }, [1, 2], 'q', null] }, [['{"x":1}', true], ['[1,2]', true], ['"q"', true], ['null', true], ['[1]', false]]);
    await expectSchema({ type: 'object', properties: { k: { const: 'ab' } }, required: ['k'] }, [['{"k": "ab"}', true], ['{"k": "abb"}', false]]);
  });

  it('a pattern with a top-level alternation stays inside the string; a completed row that does not parse fails no other row', async () => {
    await expectSchema({ type: 'string', pattern: '^[0-9]{5}$|^[0-9]{5}-[0-9]{4}$' }, [['"12345"', true], ['"12345-1234"', true], ['"12345', false], ['"1234"', false]]);
    await expectSchema({ type: 'string', pattern: 'cat|dog' }, [['"cat"', true], ['"dog"', true], ['"cat', false]]);
    // XGrammar's grammar once ended such a reply without its closing quote: the row is left without `parsed`.
    const format: ResponseFormat = { type: 'json_schema', schema: { type: 'string', pattern: 'cat|dog' } };
    const constraints: Constraint[] = [];
    for (const text of ['"cat"', '"dog"']) {
      const c = await factory.create(format, [2]);
      for (const b of Buffer.from(text)) c.accept(3 + b);
      c.accept(2);
      constraints.push(c);
    }
    const rows: RowResult[] = [{ ids: [], text: '"cat"', finishReason: 'eos' }, { ids: [], text: '"dog', finishReason: 'eos' }];
    attachParsed(rows, format, constraints);
    for (const c of constraints) c.dispose();
    expect(rows.map((r) => r.parsed)).to.deep.equal(['cat', undefined]);
  });

  it('refuses by name what it would write wrongly: patternProperties beside properties, additional properties under declared names, non-ASCII classes, unresolvable $refs', async () => {
    const refusals: [unknown, RegExp][] = [
      [{ type: 'object', properties: { a: { type: 'boolean' } }, patternProperties: { '^z': { type: 'null' } }, required: ['a'] }, /"patternProperties" at # .*beside "properties"/],
      [{ type: 'object', patternProperties: { '^z': { type: 'null' } }, required: ['z1'] }, /"patternProperties" at # .*beside "required"/],
      [{ type: 'object', properties: { age: { type: 'integer' } }, additionalProperties: { type: 'string' } }, /"additionalProperties" at # .*property "age"/],
      [{ type: 'string', pattern: '^[\\u03b1-\\u03c9]+$' }, /"pattern" at #: character classes with non-ASCII/],
      [{ $defs: { a: { $anchor: 'x', type: 'integer' } }, $ref: '#x' }, /"\$ref" at #: "#x" cannot be resolved/],
      [{ type: 'array', items: { $ref: 'item.json' } }, /"\$ref" at #\/items: "item.json" cannot be resolved/],
      [{ type: 'array', items: { $ref: '#/$defs/missing' } }, /"#\/\$defs\/missing" cannot be resolved/],
      [{ type: 'object', properties: { a: false }, required: ['a'] }, /"a", whose schema is false/],
    ];
    for (const [schema, message] of refusals) expect(() => prepareJsonSchema(schema), JSON.stringify(schema)).to.throw(ConstraintError, message);
    // the regex format's classes too, written or escaped
    for (const pattern of ['[α-ω]{2}', '[\\u03b1-\\u03c9]{2}']) {
      let refused: unknown;
      await factory.create({ type: 'regex', pattern }, [2]).catch((err: unknown) => (refused = err));
      expect(refused, pattern).to.be.instanceOf(ConstraintError);
    }
    // an additional property whose schema is the declared one's is no conflict
    await expectSchema({ type: 'object', properties: { n: { type: 'integer' } }, additionalProperties: { type: 'integer' } }, [['{"n": 1, "m": 2}', true], ['{"n": 1, "m": "x"}', false]]);
    // open (`true`) beside declared properties: the declared ones only, each valid (a subset of what it admits)
    await expectSchema({ type: 'object', properties: { age: { type: 'integer' } }, additionalProperties: true }, [['{"age": 5}', true], ['{"age": "five"}', false], ['{"age": 5, "x": 1}', false]]);
  });

  it('format hostname: labels of at most 63 characters, names of at most 253', async () => {
    const label = (n: number) => 'a'.repeat(n);
    await expectSchema({ type: 'string', format: 'hostname' }, [
      ['"example.com"', true],
      [`"${label(62)}.com"`, true],
      [`"${label(64)}.com"`, false],
      [`"${[1, 2, 3, 4, 5].map(() => label(60)).join('.')}"`, false],
      ['"-a.com"', false],
    ]);
  });

  it('never writes a byte that UTF-8 does not use (C0, C1, F5–FF)', async () => {
    const tokens = grammarVocabulary(tokenizerJson, 512).tokens;
    for (const b of [0xc0, 0xc1, 0xf5, 0xff]) expect(tokens[3 + b], `byte ${b.toString(16)}`).to.equal('');
    expect(tokens[3 + 0xc2]).to.equal('<0xC2>');
    const c = await factory.create({ type: 'regex', pattern: '[^\\n]{2}' }, [2]);
    try {
      expect(c.tryAccept(3 + 0xf5)).to.equal(false);
      expect(c.tryAccept(3 + 0xc3)).to.equal(true);
    } finally {
      c.dispose();
    }
  });

  it('false subschemas that leave a value are dropped; $ref pointers with escapes are followed', async () => {
    await expectSchema({ type: 'object', properties: { a: false, b: { type: 'integer' } } }, [['{"b": 1}', true], ['{}', true], ['{"a": 1}', false]]);
    await expectSchema({ anyOf: [false, { type: 'integer' }] }, [['5', true], ['"x"', false]]);
    await expectSchema(
      { $defs: { 'a/b': { type: 'integer' }, 'c d': { type: 'null' }, 'e~f': { type: 'boolean' } }, type: 'array', prefixItems: [{ $ref: '#/$defs/a~1b' }, { $ref: '#/$defs/c%20d' }, { $ref: '#/$defs/e~0f' }], items: false },
      [['[1, null, true]', true], ['[1, 1, true]', false]],
    );
  });
});
