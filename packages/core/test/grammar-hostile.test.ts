import { expect } from 'chai';
import { XGrammarFactory, type ResponseFormat } from '../src/constrain/index.js';
import { SCHEMA_LIMITS } from '../src/constrain/json-schema.js';
import { takesWhole } from './support/grammar-accepts.js';
import { storiesGrammarVocabulary } from './support/grammar-walk.js';

/** A schema pattern XGrammar refuses while compiling (it aborts its WebAssembly instance), after a warning about `^`. */
/**
 * A schema only XGrammar's compile refuses (a repeat whose bounds are the wrong way round), after a warning it prints
 * first (a `^` not at the pattern's start).
 */
const UNCOMPILABLE: ResponseFormat = { type: 'json_schema', schema: { type: 'string', pattern: '^a^b{2,1}$' } };

const enumOf = (values: unknown[]): ResponseFormat => ({ type: 'json_schema', schema: { enum: values } });

/** The ConstraintError's message, or undefined where the call succeeded. */
const refusal = (p: Promise<unknown>) => p.then(() => undefined, (e: Error) => `${e.name}: ${e.message}`);

describe('grammar compilation under hostile requests', function () {
  this.timeout(120_000);
  let factory: () => Promise<XGrammarFactory>;

  before(async () => {
    const vocabulary = await storiesGrammarVocabulary();
    let n = 0;
    factory = async () => new XGrammarFactory(vocabulary, `hostile-${n++}`);
  });

  it('a compile that fails does not fail the valid ones beside it: each grammar gets its matcher on its own instance', async () => {
    const f = await factory();
    for (let round = 0; round < 4; round++) {
      const values = (k: number) => Array.from({ length: 40 }, (_, i) => `r${round}k${k}v${i}`);
      const valid = Array.from({ length: 6 }, (_, k) => f.create(enumOf(values(k)), [2]));
      const failing = refusal(f.create(UNCOMPILABLE, [2]));
      const made = await Promise.allSettled(valid);
      expect(made.map((m) => (m.status === 'rejected' ? String(m.reason) : 'ok')), `round ${round}`).to.deep.equal(new Array(6).fill('ok'));
      expect(await failing).to.match(/^ConstraintError: .*Lower bound is larger than upper bound/);
      for (const m of made) (m as PromiseFulfilledResult<{ dispose(): void }>).value.dispose();
      // and each takes what its schema admits, the constraints made from the cache too
      expect(await takesWhole(f, enumOf(values(3)), `"r${round}k3v7"`)).to.equal(true);
      expect(await takesWhole(f, enumOf(values(3)), `"r${round}k2v7"`)).to.equal(false);
    }
  });

  it('a failed compile names the library\'s FATAL reason, not a warning printed before it, nor another compile\'s', async () => {
    const f = await factory();
    const [uncompilable, grammar, valid] = await Promise.all([
      refusal(f.create(UNCOMPILABLE, [2])),
      refusal(f.create({ type: 'grammar', grammar: 'root ::= "a" | ' }, [2])),
      refusal(f.create({ type: 'json_schema', schema: { type: 'string', pattern: '^a$' } }, [2])),
    ]);
    expect(uncompilable).to.match(/^ConstraintError: cannot compile the json_schema constraint: EBNF parser error at line \d+, column \d+: Lower bound is larger than upper bound: 2 > 1$/);
    expect(grammar).to.match(/^ConstraintError: cannot compile the grammar constraint: EBNF parser error/);
    expect(valid).to.equal(undefined);
  });

  it(`refuses a schema past its limits before compiling it, naming the limit (${SCHEMA_LIMITS.values} values, ${SCHEMA_LIMITS.valueChars} characters, ${SCHEMA_LIMITS.optionalProperties} optional properties)`, async () => {
    const f = await factory();
    const ints = (n: number) => Array.from({ length: n }, (_, i) => i * 7919);
    expect(await refusal(f.compile(enumOf(ints(30_000)), [2]))).to.equal(
      `ConstraintError: JSON Schema at #: the schema lists more than ${SCHEMA_LIMITS.values} enum/const values (30000 by here), the most one schema may list`,
    );
    // counted across the schema, const included
    const split = { type: 'json_schema' as const, schema: { type: 'array', prefixItems: [{ enum: ints(SCHEMA_LIMITS.values) }, { const: 1 }], items: false } };
    expect(await refusal(f.compile(split, [2]))).to.match(/at #\/prefixItems\/1: the schema lists more than 2000 enum\/const values \(2001 by here\)/);
    const long = Array.from({ length: 400 }, (_, i) => `${i}`.padEnd(100, 'x'));
    expect(await refusal(f.compile(enumOf(long), [2]))).to.match(/enum\/const values run to more than 32768 characters of JSON \(40\d\d\d by here\)/);
    const properties = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`p${i}`, { type: 'integer' }]));
    const optional = { type: 'json_schema' as const, schema: { type: 'object', properties: { a: { type: 'object', properties: properties(101) } } } };
    expect(await refusal(f.compile(optional, [2]))).to.equal(
      'ConstraintError: JSON Schema keyword "properties" at #/properties/a: 101 properties are optional (not in "required"); at most 100 of one object may be',
    );
    expect(f.compiles).to.equal(0);
    // at the limits, compiled
    await f.compile(enumOf(ints(SCHEMA_LIMITS.values)), [2]);
    await f.compile({ type: 'json_schema', schema: { type: 'object', properties: properties(120), required: Object.keys(properties(20)) } }, [2]);
    expect(f.compiles).to.equal(2);
  });
});
