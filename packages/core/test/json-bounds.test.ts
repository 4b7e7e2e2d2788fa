import { expect } from 'chai';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { XGrammarFactory, type JsonSchema, type ResponseFormat } from '../src/constrain/index.js';
import { createRng } from '../src/sampling/index.js';
import { takesWhole } from './support/grammar-accepts.js';
import { STORIES_BYTES, storiesGrammarVocabulary, walkGrammar } from './support/grammar-walk.js';

const schema = (s: JsonSchema): ResponseFormat => ({ type: 'json_schema', schema: s });

/** The stories260K byte tokens whose bytes the grammar's vocabulary keeps (UTF-8 uses them). */
const utf8Bytes = Array.from({ length: 256 }, (_, b) => b).filter((b) => b !== 0xc0 && b !== 0xc1 && b < 0xf5);

/** How many `unit`s in a row the grammar takes after `prefix` (at most 100). */
async function run(factory: XGrammarFactory, format: ResponseFormat, prefix: string, unit: string): Promise<number> {
  const c = await factory.create(format, [2]);
  try {
    for (const b of Buffer.from(prefix)) if (!c.tryAccept(3 + b)) throw new Error(`the prefix ${prefix} was refused`);
    let n = 0;
    while (n < 100 && [...Buffer.from(unit)].every((b) => c.tryAccept(3 + b))) n++;
    return n;
  } finally {
    c.dispose();
  }
}

describe('JSON grammars: only valid JSON, bounded runs', function () {
  this.timeout(300_000);
  let factory: XGrammarFactory;

  before(async () => {
    factory = new XGrammarFactory(await storiesGrammarVocabulary(), 'json-bounds');
  });

  it('a pattern\'s control escapes (\\cX) are written as JSON escapes of the character they name', async () => {
    const cC = schema({ type: 'string', pattern: '^\\cC$' });
    expect(await takesWhole(factory, cC, '"\\u0003"')).to.equal(true);
    expect(await takesWhole(factory, cC, '"\u0003"')).to.equal(false);
    const newline = schema({ type: 'string', pattern: '^a\\cJb$' });
    expect(await takesWhole(factory, newline, '"a\\nb"')).to.equal(true);
    expect(await takesWhole(factory, newline, '"a\nb"')).to.equal(false);
    expect(await takesWhole(factory, newline, '"acJb"')).to.equal(false);
    // in a class, as \x01-\x1a: left out inside a JSON string, where the rest of the class stays
    const lettered = schema({ type: 'string', pattern: '^[a\\cA-\\cZ]$' });
    expect(await takesWhole(factory, lettered, '"a"')).to.equal(true);
    expect(await takesWhole(factory, lettered, '"-"')).to.equal(false);
    const only = await factory.create(schema({ type: 'string', pattern: '^[\\cA-\\cZ]$' }), [2]).then(() => 'compiled', (e: Error) => `${e.name}: ${e.message}`);
    expect(only).to.match(/^ConstraintError: .*the character class \[\\cA-\\cZ\] holds only characters a JSON string escapes/);
    // outside a JSON string (a regex format) it is the raw character
    const raw = { type: 'regex', pattern: 'a\\cJb[\\cA-\\cC]' } as const;
    expect(await takesWhole(factory, raw, 'a\nb\u0002')).to.equal(true);
    expect(await takesWhole(factory, raw, 'a\nb-')).to.equal(false);
  });

  it('takes one blank or newline at most wherever JSON allows whitespace, values of any type included', async () => {
    const cases: [ResponseFormat, string][] = [
      [schema({ type: 'object' }), '{"a":1'],
      [schema({ type: 'array' }), '[1'],
      [schema(true), '[1'],
      [schema({ properties: { a: {} } }), '{"a":[1'],
      [schema({ properties: { a: {} } }), '{"a":{"b":{"c":2'],
      [schema({ type: 'object', properties: { a: { type: 'integer' } } }), '{"a":1'],
      [{ type: 'json_object' }, '{"a":[1,{"b":2'],
    ];
    for (const [format, prefix] of cases) {
      for (const unit of ['\n', ' ', '\t']) expect(await run(factory, format, prefix, unit), `${JSON.stringify(format)} after ${prefix}: ${JSON.stringify(unit)}`).to.equal(1);
    }
    // one at each place: after the comma, and before the next key's colon
    expect(await run(factory, schema({ type: 'object' }), '{"a":1,', '\n')).to.equal(1);
    expect(await run(factory, schema({ type: 'object' }), '{"a":1, "b"', ' ')).to.equal(1);
    expect(await takesWhole(factory, schema({ type: 'object' }), '{\n"a": [1, 2],\n"b": {"c": null}\n}')).to.equal(true);
  });

  it('bounds the digits of numbers XGrammar leaves unbounded (32 integer, 32 fraction, 3 exponent), not exact ranges', async () => {
    const number = schema({ type: 'number' });
    expect(await run(factory, number, '-3.', '0')).to.equal(32);
    expect(await run(factory, number, '-', '9')).to.equal(32);
    expect(await run(factory, number, '1e+', '0')).to.equal(3);
    expect(await takesWhole(factory, number, `-${'1234567890123456'.repeat(2)}.${'1234567890123456'.repeat(2)}E-308`)).to.equal(true);
    expect(await takesWhole(factory, number, '12345678901234567890')).to.equal(true);
    expect(await takesWhole(factory, number, `1${'0'.repeat(32)}`)).to.equal(false);
    expect(await run(factory, schema({ type: 'integer' }), '', '7')).to.equal(32);
    // nested under any value, an object's property, an array's items
    expect(await run(factory, schema(true), '{"a":[0.', '5')).to.equal(32);
    expect(await run(factory, schema({ type: 'object', properties: { n: { type: 'number' } } }), '{"n":', '5')).to.equal(32);
    expect(await run(factory, schema({ type: 'array', items: { type: 'integer' } }), '[1,', '5')).to.equal(32);
    // exact ranges keep their own rules
    const ranged = schema({ type: 'integer', minimum: -5, maximum: 120 });
    expect(await takesWhole(factory, ranged, '120')).to.equal(true);
    expect(await takesWhole(factory, ranged, '121')).to.equal(false);
    expect(await takesWhole(factory, schema({ type: 'number', minimum: 0, maximum: 3 }), '2.5')).to.equal(true);
    expect(await takesWhole(factory, schema({ type: 'number', minimum: 0, maximum: 3 }), '3.5')).to.equal(false);
    // a range open on one side (pydantic's NonNegativeInt, zod's .positive()) is bounded there alike (it took 400 digits)
    expect(await run(factory, schema({ type: 'integer', minimum: 0 }), '', '7')).to.equal(32);
    expect(await run(factory, schema({ type: 'number', exclusiveMinimum: 0 }), '', '7')).to.equal(32);
    expect(await run(factory, schema({ type: 'number', exclusiveMinimum: 0 }), '1.', '0')).to.equal(5);
    expect(await run(factory, schema({ type: 'integer', maximum: 100 }), '-', '7')).to.equal(32);
    expect(await run(factory, schema({ type: 'number', maximum: -5 }), '-', '7')).to.equal(32);
    expect(await takesWhole(factory, schema({ type: 'integer', minimum: 10 }), '9'.repeat(32))).to.equal(true);
    expect(await takesWhole(factory, schema({ type: 'number', maximum: -5 }), `-${'9'.repeat(32)}.5`)).to.equal(true);
  });

  it('takes valid UTF-8 alone inside strings: no surrogate, overlong form, nor anything past U+10FFFF', async () => {
    // Each schema, and the text that opens a string under it.
    const schemas: [JsonSchema, string][] = [
      [{ type: 'string' }, '"'],
      [{ type: 'string', maxLength: 2 }, '"'],
      [{ type: 'string', maxLength: 300 }, '"'],
      [{ type: 'string', pattern: '^.{1,300}$' }, '"'],
      [{ type: 'string', pattern: '^[^,]+$' }, '"'],
      [{ type: 'object' }, '{"'],
    ];
    const bytes = (hex: string) => Buffer.from(hex.replace(/ /g, ''), 'hex').toString('latin1');
    for (const [s, open] of schemas) {
      const format = schema(s);
      const takes = async (hex: string) => {
        const c = await factory.create(format, [2]);
        try {
          return [...Buffer.from(open), ...Buffer.from(bytes(hex), 'latin1')].every((b) => c.tryAccept(3 + b));
        } finally {
          c.dispose();
        }
      };
      const what = JSON.stringify(format);
      // é, 한 (ED 95 9C), 😀, U+10FFFF, U+E000
      for (const ok of ['c3 a9', 'ed 95 9c', 'f0 9f 98 80', 'f4 8f bf bf', 'ee 80 80', '7f']) expect(await takes(ok), `${what}: ${ok}`).to.equal(true);
      // past U+10FFFF (the audit's F4 9E 9D 9E), surrogates, overlong forms, a lone continuation byte, a cut character
      for (const bad of ['f4 9e', 'f4 90', 'ed a0', 'ed bf', 'e0 80', 'e0 9f', 'f0 80', 'f0 8f', '80', 'c2 22']) expect(await takes(bad), `${what}: ${bad}`).to.equal(false);
    }
    // random walks over every byte the vocabulary keeps: each ends in UTF-8 that decodes, and JSON that validates
    const ajv = new Ajv2020({ strict: false });
    const decoder = new TextDecoder('utf-8', { fatal: true });
    const rng = createRng(34);
    const vocabulary = { ...STORIES_BYTES, candidates: utf8Bytes.map((b) => 3 + b), decode: (ids: number[]) => decoder.decode(Buffer.from(ids.map((id) => id - 3))) };
    let ended = 0;
    for (const s of [{ type: 'string', maxLength: 8 }, { type: 'array', items: { type: 'string' }, maxItems: 3 }, { type: 'string', pattern: '^.{2,6}$' }] as JsonSchema[]) {
      for (let walk = 0; walk < 40; walk++) {
        const text = await walkGrammar(factory, schema(s), rng, vocabulary);
        if (text === undefined) continue;
        ended++;
        expect(text, JSON.stringify(s)).to.not.include('\ufffd');
        expect(ajv.validate(s, JSON.parse(text)), `${JSON.stringify(s)}: ${text}`).to.equal(true);
      }
    }
    expect(ended).to.be.greaterThan(60);
  });
});
