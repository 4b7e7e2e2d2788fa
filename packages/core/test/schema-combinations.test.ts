import { expect } from 'chai';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { XGrammarFactory } from '../src/constrain/index.js';
import { createRng } from '../src/sampling/index.js';
import { randomWalk, storiesGrammarVocabulary } from './support/grammar-walk.js';

const ajv = new Ajv2020({ strict: false, allErrors: true });

/**
 * Keywords beside `anyOf`/`oneOf`/`allOf`, which JSON Schema applies together with the branches (cases of the JSON
 * Schema Test Suite, run through the constraints with ajv as the judge): each schema's grammar, walked at random
 * over stories260K's byte tokens, writes only what ajv accepts, or the schema is refused naming the keyword.
 */
describe('keywords beside anyOf, oneOf and allOf', function () {
  this.timeout(120_000);
  let factory: XGrammarFactory;

  before(async () => {
    factory = new XGrammarFactory(await storiesGrammarVocabulary(), 'combinations');
  });

  /** The texts of `count` random walks through the schema's grammar that ended (each seed its own walk). */
  async function walks(schema: Record<string, unknown>, count: number): Promise<string[]> {
    const texts: string[] = [];
    for (let seed = 1; seed <= count; seed++) {
      const text = await randomWalk(factory, { type: 'json_schema', schema }, createRng(seed));
      if (text !== undefined) texts.push(text);
    }
    return texts;
  }

  /** Expects every walk that ends to be JSON that ajv finds valid against `schema`, and most walks to end. */
  async function expectValidWalks(schema: Record<string, unknown>): Promise<void> {
    const texts = await walks(schema, 12);
    expect(texts.length, JSON.stringify(schema)).to.be.greaterThan(6);
    for (const text of texts) {
      let value: unknown;
      expect(() => (value = JSON.parse(text)), text).not.to.throw();
      expect(ajv.validate(schema, value), `${JSON.stringify(schema)}: ${text} → ${ajv.errorsText()}`).to.equal(true);
    }
  }

  /** The message a schema is refused with, or undefined where it compiles. */
  const refusal = (schema: Record<string, unknown>) =>
    factory.create({ type: 'json_schema', schema }, [2]).then(
      (c) => (c.dispose(), undefined),
      (e: Error) => `${e.name}: ${e.message}`,
    );

  it('value keywords beside anyOf and oneOf hold in every branch (XGrammar compiled the branches alone)', async () => {
    // (it wrote {"c": null} without the required "a", 35.2 for an integer, objects missing "x")
    await expectValidWalks({ type: 'object', properties: { a: { type: 'integer' } }, required: ['a'], anyOf: [{ properties: { b: { type: 'boolean' } }, required: ['b'] }, { properties: { c: { type: 'null' } }, required: ['c'] }] });
    await expectValidWalks({ type: 'integer', anyOf: [{ minimum: 5 }, { maximum: -5 }] });
    await expectValidWalks({ type: 'object', properties: { x: { type: 'integer', minimum: 0, maximum: 3 } }, required: ['x'], oneOf: [{ properties: { k: { const: 'a' } }, required: ['k'] }, { properties: { k: { const: 'b' } }, required: ['k'] }] });
    // a discriminator typed beside the oneOf and given its const in each branch (refused as overlapping before)
    await expectValidWalks({
      type: 'object',
      properties: { kind: { type: 'string' }, x: { type: 'integer', minimum: 0, maximum: 3 } },
      required: ['kind', 'x'],
      additionalProperties: false,
      oneOf: [{ properties: { kind: { const: 'a' } } }, { properties: { kind: { const: 'b' } } }],
    });
    // a false branch is dropped, a true one is the keywords beside it; a type list meets each branch's type
    await expectValidWalks({ anyOf: [false, { type: 'integer' }], minimum: 2 });
    await expectValidWalks({ type: ['integer', 'null'], anyOf: [{ type: 'number', minimum: 3, maximum: 5 }, { type: 'string' }] });
    expect(await refusal({ type: 'integer', anyOf: [false, false] })).to.match(/keyword "anyOf" at #: no branch admits a value/);
  });

  it('an allOf of true branches, or one beside value keywords, keeps those keywords', async () => {
    // (`{"type": "integer", "allOf": [true]}` wrote strings; two true branches were refused as no plain schema)
    await expectValidWalks({ type: 'integer', allOf: [true] });
    await expectValidWalks({ allOf: [true, { type: 'integer' }] });
    expect(await refusal({ allOf: [true, true] })).to.equal(undefined);
    expect(await refusal({ type: 'integer', allOf: [false] })).to.match(/keyword "allOf" at #: no value satisfies all its branches/);
  });

  it('$defs beside enum holds definitions only; items, additionalProperties and unevaluatedProperties beside another part\'s tuple or properties are refused by name', async () => {
    await expectValidWalks({ $defs: { a: { type: 'integer' } }, enum: [1, 'x'] });
    // 2020-12's items skips only its own sibling's prefixItems: merged, item 0 was written a string
    expect(await refusal({ type: 'array', allOf: [{ prefixItems: [{ type: 'string' }] }], items: { type: 'integer' }, minItems: 1 })).to.match(/keyword "allOf" at # cannot be enforced: .*\("items"\)/);
    // additionalProperties: false forbids the other part's pattern properties (merged, they were written)
    expect(await refusal({ allOf: [{ type: 'object', additionalProperties: false }, { patternProperties: { '^x': { type: 'integer' } } }] })).to.match(/keyword "allOf" at # cannot be enforced: .*pattern "\^x" \("additionalProperties"\)/);
    // the same beside an anyOf, whose branch gets the keywords beside it
    expect(await refusal({ type: 'array', items: { type: 'integer' }, anyOf: [{ prefixItems: [{ type: 'string' }] }] })).to.match(/keyword "anyOf" at # cannot be enforced: branch 0 .*\("items"\)/);
    // an allOf branch's unevaluatedProperties does not see the anyOf beside it (merged, "bar" was written)
    expect(await refusal({ allOf: [{ properties: { foo: true }, unevaluatedProperties: false }], anyOf: [{ properties: { bar: true } }] })).to.match(/keyword "allOf" at # cannot be enforced: .*\("unevaluatedProperties"\)/);
    expect(await refusal({ type: 'string', pattern: '^a', anyOf: [{ pattern: 'b$' }] })).to.match(/keyword "anyOf" at # cannot be enforced: branch 0 and the keywords beside it give it different values \("pattern"\)/);
  });

  it('annotations beside a recursive union (pydantic\'s discriminator, OpenAPI\'s nullable, x- extensions) leave its $ref branches alone', async () => {
    // pydantic v2's expression tree: Expr = Annotated[Union[Lit, Add], Field(discriminator='kind')] (copied into each
    // branch, the discriminator made each `$ref` branch an allOf, inlined without end to the depth limit)
    const expr = (title: string) => ({ discriminator: { mapping: { add: '#/$defs/Add', lit: '#/$defs/Lit' }, propertyName: 'kind' }, oneOf: [{ $ref: '#/$defs/Lit' }, { $ref: '#/$defs/Add' }], title });
    const calc = {
      $defs: {
        Add: { properties: { kind: { const: 'add', title: 'Kind', type: 'string' }, left: expr('Left'), right: expr('Right') }, required: ['kind', 'left', 'right'], title: 'Add', type: 'object' },
        Lit: { properties: { kind: { const: 'lit', title: 'Kind', type: 'string' }, value: { title: 'Value', type: 'integer' } }, required: ['kind', 'value'], title: 'Lit', type: 'object' },
      },
      properties: { expr: expr('Expr') },
      required: ['expr'], title: 'Calc', type: 'object',
    };
    const take = async (schema: Record<string, unknown>, text: string) => {
      const c = await factory.create({ type: 'json_schema', schema }, [2]);
      try {
        return [...Buffer.from(text)].every((b) => c.tryAccept(3 + b)) && c.tryAccept(2);
      } finally {
        c.dispose();
      }
    };
    expect(await take(calc, '{"expr": {"kind": "add", "left": {"kind": "lit", "value": 1}, "right": {"kind": "add", "left": {"kind": "lit", "value": 2}, "right": {"kind": "lit", "value": 3}}}}')).to.equal(true);
    expect(await take(calc, '{"expr": {"kind": "add", "left": {"kind": "lit"}, "right": {"kind": "lit", "value": 2}}}')).to.equal(false);
    await expectValidWalks(calc);
    // a recursive Optional (anyOf the node's $ref and null) beside an extension or OpenAPI's nullable, which XGrammar ignores
    for (const extra of [{ 'x-order': 1 }, { nullable: true }]) {
      const node = { $defs: { Node: { type: 'object', properties: { v: { type: 'integer' }, next: { anyOf: [{ $ref: '#/$defs/Node' }, { type: 'null' }], ...extra } }, required: ['v'] } }, $ref: '#/$defs/Node' };
      expect(await take(node, '{"v": 1, "next": {"v": 2, "next": {"v": 3, "next": null}}}'), JSON.stringify(extra)).to.equal(true);
      expect(await take(node, '{"v": 1, "next": {"next": null}}'), JSON.stringify(extra)).to.equal(false);
    }
    // (ajv reads OpenAPI's nullable itself, and refuses it without a type beside it)
    await expectValidWalks({ $defs: { Node: { type: 'object', properties: { v: { type: 'integer' }, next: { anyOf: [{ $ref: '#/$defs/Node' }, { type: 'null' }], 'x-order': 1 } }, required: ['v'] } }, $ref: '#/$defs/Node' });
    // an unknown keyword beside enum is an annotation too
    await expectValidWalks({ enum: ['a', 'b'], 'x-labels': ['A', 'B'] });
  });

  it('a $ref cycle through anyOf branches with keywords beside them is refused, not followed without end', async () => {
    const schema = { $defs: { n: { type: 'object', anyOf: [{ $ref: '#/$defs/n' }, { properties: { a: { type: 'integer' } } }] } }, $ref: '#/$defs/n' };
    // (each round of the cycle nests its branches a level deeper: refused where they nest 32 deep)
    expect(await refusal(schema)).to.match(/^ConstraintError: JSON Schema keyword "anyOf" at #\/\$defs\/n(\/anyOf\/0)+ cannot be enforced: with the keywords beside them written into them, its branches nest more than 32 deep/);
  });
});
