/**
 * The limits on a schema's size that its compile does not meet in time or at all: properties across the schema
 * (XGrammar's compile grew with the square of them, objects apart or not) and nesting depth, `$ref`s opened where
 * they stand (past about 50 levels XGrammar's compile failed with "memory access out of bounds", or never ended),
 * refused before anything compiles; recursion and 24 levels of pydantic's optional nested models pass.
 */
import { expect } from 'chai';
import { XGrammarFactory, prepareJsonSchema, type JsonSchema, type ResponseFormat } from '../src/constrain/index.js';
import { SCHEMA_LIMITS } from '../src/constrain/json-schema.js';
import { takesWhole } from './support/grammar-accepts.js';
import { storiesGrammarVocabulary } from './support/grammar-walk.js';

/** The ConstraintError's message, or undefined where the call succeeded. */
const refusal = (p: Promise<unknown>) => p.then(() => undefined, (e: Error) => `${e.name}: ${e.message}`);

const format = (schema: object): ResponseFormat => ({ type: 'json_schema', schema: schema as JsonSchema });

/** An object of `n` required integer properties named from `prefix`. */
const required = (n: number, prefix: string) => {
  const names = Array.from({ length: n }, (_, i) => `${prefix}${i}`);
  return { type: 'object', properties: Object.fromEntries(names.map((k) => [k, { type: 'integer' }])), required: names };
};

/** `levels` objects, each the required property `a` of the one around it, `inner` innermost (so it is `levels` deep). */
const nestedObjects = (levels: number, inner: object = { type: 'integer' }) => {
  let s = inner;
  for (let i = 0; i < levels; i++) s = { type: 'object', properties: { a: s }, required: ['a'] };
  return s;
};

/** `links` object definitions, each holding the next through a `$ref` (each link two levels: the property, the target). */
const refChain = (links: number) => {
  const $defs: Record<string, object> = { d0: { type: 'integer' } };
  for (let i = 1; i <= links; i++) $defs[`d${i}`] = { type: 'object', properties: { a: { $ref: `#/$defs/d${i - 1}` } }, required: ['a'] };
  return { $ref: `#/$defs/d${links}`, $defs };
};

const DEEP = `nests more than ${SCHEMA_LIMITS.depth} levels deep (each property, item, combinator branch and $ref target is a level, a branch's own $ref target none), the most one schema may nest`;

/**
 * pydantic's JSON Schema for `models` nested optional models (L0.child: Optional[L1], …): each `child` an anyOf of
 * the next model's `$ref` and null, each model two levels (the property, the branch).
 */
const optionalChain = (models: number) => {
  const model = (i: number): object => ({ properties: { v: { title: 'V', type: 'integer' }, ...(i < models - 1 ? { child: { anyOf: [{ $ref: `#/$defs/L${i + 1}` }, { type: 'null' }], default: null } } : {}) }, required: ['v'], title: `L${i}`, type: 'object' });
  return { ...model(0), $defs: Object.fromEntries(Array.from({ length: models - 1 }, (_, i) => [`L${i + 1}`, model(i + 1)])) };
};

describe('schema limits: properties across the schema, nesting depth', function () {
  this.timeout(120_000);
  let factory: () => Promise<XGrammarFactory>;

  before(async () => {
    const vocabulary = await storiesGrammarVocabulary();
    let n = 0;
    factory = async () => new XGrammarFactory(vocabulary, `limits-${n++}`);
  });

  it(`refuses more than ${SCHEMA_LIMITS.properties} properties across the schema's objects, naming the limit and the count`, async () => {
    const f = await factory();
    // four objects of 124 beside each other, and their own four: 500
    const objects = (last: number) => {
      const parts = [124, 124, 124, last].map((n, i) => [`o${i}`, required(n, `p${i}_`)]);
      return { type: 'object', properties: Object.fromEntries(parts), required: parts.map(([k]) => k) };
    };
    expect(await refusal(f.compile(format(objects(125)), [2]))).to.equal(
      `ConstraintError: JSON Schema at #/properties/o3: the schema declares more than ${SCHEMA_LIMITS.properties} object properties (501 by here), the most one schema may declare`,
    );
    expect(await refusal(f.compile(format(required(1600, 'p')), [2]))).to.match(/^ConstraintError: JSON Schema at #: the schema declares more than 500 object properties \(1600 by here\)/);
    // counted in definitions too
    expect(await refusal(f.compile(format({ $ref: '#/$defs/big', $defs: { big: required(501, 'p') } }), [2]))).to.match(/at #\/\$defs\/big: the schema declares more than 500 object properties \(501 by here\)/);
    expect(f.compiles).to.equal(0);
    // at the limit, compiled
    await f.compile(format(objects(124)), [2]);
    expect(f.compiles).to.equal(1);
    // the properties beside an anyOf are written into each branch, and counted once ("520 by here" for these 260)
    const beside = required(258, 'p');
    const either = { ...beside, properties: { ...beside.properties, id: { type: 'string' }, name: { type: 'string' } }, anyOf: [{ required: ['id'] }, { required: ['name'] }] };
    expect(await refusal(f.compile(format(either), [2]))).to.equal(undefined);
  });

  it(`refuses nesting past ${SCHEMA_LIMITS.depth} levels of objects, arrays and combinators before compiling, naming the depth`, async () => {
    const f = await factory();
    const path = (segment: string, n: number) => `#${segment.repeat(n)}`;
    // 54 and 64 levels of objects failed in XGrammar's compile: "memory access out of bounds"
    for (const levels of [49, 54, 64]) {
      expect(await refusal(f.compile(format(nestedObjects(levels)), [2]))).to.equal(`ConstraintError: JSON Schema at ${path('/properties/a', 49)} ${DEEP}`);
    }
    let items: object = { type: 'integer' };
    for (let i = 0; i < 49; i++) items = { type: 'array', items };
    expect(await refusal(f.compile(format(items), [2]))).to.equal(`ConstraintError: JSON Schema at ${path('/items', 49)} ${DEEP}`);
    let branches: object = { type: 'integer' };
    for (let i = 0; i < 49; i++) branches = { anyOf: [branches, { type: 'null' }] };
    expect(await refusal(f.compile(format(branches), [2]))).to.equal(`ConstraintError: JSON Schema at ${path('/anyOf/0', 49)} ${DEEP}`);
    expect(f.compiles).to.equal(0);
    // a schema far deeper is refused the same way (it ran the preparation out of the JavaScript stack: a RangeError)
    expect(() => prepareJsonSchema(nestedObjects(20_000))).to.throw(`JSON Schema at ${path('/properties/a', 49)} ${DEEP}`);
    // at the limit, compiled and enforced
    const deepest = nestedObjects(SCHEMA_LIMITS.depth);
    const reply = '{"a": '.repeat(SCHEMA_LIMITS.depth) + '7' + '}'.repeat(SCHEMA_LIMITS.depth);
    expect(await takesWhole(f, format(deepest), reply)).to.equal(true);
    expect(await takesWhole(f, format(deepest), reply.replace('7', '"7"'))).to.equal(false);
  });

  it('counts the levels inside a $ref target where the $ref stands, a recursive $ref as no deeper: 24 levels of optional pydantic models pass', async () => {
    const f = await factory();
    // 23 links: the integer 47 levels deep; 24: 49 (a chain of 40 failed to compile, one of 45 never ended)
    expect(await refusal(f.compile(format(refChain(24)), [2]))).to.equal(`ConstraintError: JSON Schema at #, its "$ref" "#/$defs/d24" opened there, ${DEEP}`);
    // where a target is opened deeper than where it is defined, there
    const opened = (levels: number) => ({ ...nestedObjects(20, { $ref: '#/$defs/deep' }), $defs: { deep: nestedObjects(levels) } });
    expect(await refusal(f.compile(format(opened(28)), [2]))).to.equal(`ConstraintError: JSON Schema at #${'/properties/a'.repeat(20)}, its "$ref" "#/$defs/deep" opened there, ${DEEP}`);
    // pydantic's optional models, an anyOf branch `$ref` each: 25 models nest 49 levels (28 failed to compile, 27 did)
    expect(await refusal(f.compile(format(optionalChain(25)), [2]))).to.equal(`ConstraintError: JSON Schema at #/properties/child/anyOf/0, its "$ref" "#/$defs/L1" opened there, ${DEEP}`);
    expect(f.compiles).to.equal(0);
    await f.compile(format(refChain(23)), [2]);
    await f.compile(format(opened(27)), [2]);
    const deepest: Record<string, unknown> = { v: 0 };
    let last = deepest;
    for (let i = 1; i < 24; i++) last = (last.child = { v: i }) as Record<string, unknown>;
    expect(await takesWhole(f, format(optionalChain(24)), JSON.stringify(deepest))).to.equal(true);
    last.child = { v: 24 };
    expect(await takesWhole(f, format(optionalChain(24)), JSON.stringify(deepest))).to.equal(false);
    // a tree whose node holds its children 20 levels down: the grammar refers to the node's rule, however deep the tree
    let holder: object = { type: 'array', items: { $ref: '#/$defs/node' } };
    for (let i = 0; i < 19; i++) holder = { type: 'object', properties: { c: holder } };
    const tree = { $ref: '#/$defs/node', $defs: { node: { type: 'object', properties: { v: { type: 'integer' }, c: holder }, required: ['v'] } } };
    expect(await takesWhole(f, format(tree), '{"v": 1, "c": {"c": {}}}')).to.equal(true);
    // ten levels of optional nested models, as pydantic writes them (anyOf a $ref and null): OpenAI's strict mode takes ten
    const $defs: Record<string, object> = { Level0: { type: 'object', properties: { name: { type: 'string', title: 'Name' } }, required: ['name'], title: 'Level0' } };
    for (let i = 1; i < 10; i++) {
      $defs[`Level${i}`] = {
        type: 'object',
        properties: { name: { type: 'string', title: 'Name' }, child: { anyOf: [{ $ref: `#/$defs/Level${i - 1}` }, { type: 'null' }], default: null } },
        required: ['name'],
        title: `Level${i}`,
      };
    }
    const schema = { $defs, type: 'object', properties: { root: { $ref: '#/$defs/Level9' } }, required: ['root'], title: 'Document' };
    expect(await takesWhole(f, format(schema), '{"root": {"name": "a", "child": {"name": "b", "child": null}}}')).to.equal(true);
  });
});
