import { expect } from 'chai';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { XGrammarFactory, type ResponseFormat } from '../src/constrain/index.js';
import { createRng } from '../src/sampling/index.js';
import { TOOLS_TEMPLATE } from './support/chat-templates.js';
import { takesWhole } from './support/grammar-accepts.js';
import { randomWalk, storiesGrammarVocabulary } from './support/grammar-walk.js';
import { storiesModule } from './support/modules.js';
import { postJson, useServers } from './support/servers.js';

const ajv = new Ajv2020({ strict: false, allErrors: true });

/**
 * Keywords the JSON Schema Test Suite found the grammar engine ignoring (`unevaluatedProperties`, `unevaluatedItems`)
 * or failing on with its own internal wording (an array without `items`, a `$ref` through a list, `false` at the root
 * or in a tuple): each schema's grammar writes only what ajv accepts (random walks over stories260K's byte tokens,
 * and texts fed whole), or the schema is refused naming the keyword and where it is; on the server, naming the field.
 */
describe('JSON Schema keywords the grammar engine ignored or failed on', function () {
  this.timeout(120_000);
  let factory: XGrammarFactory;

  before(async () => {
    factory = new XGrammarFactory(await storiesGrammarVocabulary(), 'suite-keywords');
  });

  const format = (schema: unknown): ResponseFormat => ({ type: 'json_schema', schema: schema as Record<string, unknown> });

  /** Expects every random walk that ends to be JSON ajv finds valid against `schema`, and most walks to end. */
  async function expectValidWalks(schema: Record<string, unknown>): Promise<void> {
    const texts: string[] = [];
    for (let seed = 1; seed <= 12; seed++) {
      const text = await randomWalk(factory, format(schema), createRng(seed));
      if (text !== undefined) texts.push(text);
    }
    expect(texts.length, JSON.stringify(schema)).to.be.greaterThan(6);
    for (const text of texts) {
      let value: unknown;
      expect(() => (value = JSON.parse(text)), text).not.to.throw();
      expect(ajv.validate(schema, value), `${JSON.stringify(schema)}: ${text} → ${ajv.errorsText()}`).to.equal(true);
    }
  }

  /** Expects each text's acceptance under a schema (`[text, admitted]`), each admitted one valid to ajv as well. */
  async function expectTexts(schema: Record<string, unknown>, cases: [string, boolean][]): Promise<void> {
    for (const [text, admitted] of cases) {
      expect(await takesWhole(factory, format(schema), text), `${JSON.stringify(schema)} on ${text}`).to.equal(admitted);
      if (admitted) expect(ajv.validate(schema, JSON.parse(text)), text).to.equal(true);
    }
  }

  /** The message a schema is refused with (`name: message`), or undefined where it compiles. */
  const refusal = (schema: unknown) =>
    factory.create(format(schema), [2]).then(
      (c) => (c.dispose(), undefined),
      (e: Error) => `${e.name}: ${e.message}`,
    );

  it('unevaluatedProperties and unevaluatedItems alone, or beside an allOf or $ref merged, are additionalProperties and items; beside another applicator they are refused by name', async () => {
    await expectTexts({ type: 'array', prefixItems: [{ type: 'integer' }], unevaluatedItems: false }, [['[1]', true], ['[1, 2]', false]]);
    await expectTexts({ type: 'array', unevaluatedItems: { type: 'integer' } }, [['[1, 2]', true], ['["x"]', false]]);
    await expectTexts({ type: 'object', unevaluatedProperties: { type: 'number' } }, [['{"a": 1}', true], ['{"a": "x"}', false]]);
    await expectTexts({ type: 'object', properties: { a: { type: 'integer' } }, required: ['a'], unevaluatedProperties: false }, [['{"a": 1}', true], ['{"a": 1, "b": 2}', false]]);
    await expectValidWalks({ type: 'array', unevaluatedItems: { type: 'integer' } });
    await expectValidWalks({ type: 'object', properties: { a: { type: 'integer' } }, required: ['a'], unevaluatedProperties: false });
    // (read as additionalProperties by XGrammar, whose additional key may take the declared name: {"a": 5} was written)
    expect(await refusal({ type: 'object', properties: { a: { type: 'string' } }, unevaluatedProperties: { type: 'number' } })).to.match(/at # cannot be enforced beside property "a" with another schema/);
    // (it wrote [false]: the second branch's own schema evaluates no item, so only [] is valid); refused naming the
    // keyword, or the combination it sits in
    const refusedNaming = async (schema: Record<string, unknown>, keyword: string, path: string) => {
      const message = await refusal(schema);
      expect(message, JSON.stringify(schema)).to.match(new RegExp(`^ConstraintError: JSON Schema keyword "\\w+" at ${path} cannot be enforced`));
      expect(message).to.include(keyword);
    };
    await refusedNaming({ allOf: [{ prefixItems: [true] }, { unevaluatedItems: false }] }, 'unevaluatedItems', '#');
    // inside a branch, it evaluates that branch's properties alone: merged into the schema beside, it is refused
    await refusedNaming({ allOf: [{ type: 'object', properties: { a: { type: 'integer' } }, unevaluatedProperties: false }], properties: { b: { type: 'boolean' } } }, 'unevaluatedProperties', '#');
    // beside anyOf or oneOf it sees what each matching branch evaluates (each branch's own saw less: {"a": "x", "b": 1} was refused)
    const either = { type: 'object', anyOf: [{ properties: { a: { type: 'string' } }, required: ['a'] }, { properties: { b: { type: 'integer' } }, required: ['b'] }] };
    await refusedNaming({ ...either, unevaluatedProperties: false }, 'unevaluatedProperties', '#');
    await refusedNaming({ type: 'array', oneOf: [{ prefixItems: [{ type: 'integer' }] }, { prefixItems: [{ type: 'string' }] }], unevaluatedItems: false }, 'unevaluatedItems', '#');
    // beside an allOf or a $ref, merged into one schema, it sees the merged properties: what zod-to-json-schema writes
    // for `a.strict().and(b.strict())` with target jsonSchema2019-09
    const closed = [['{"a": "x", "b": 1}', true], ['{"a": "x", "b": 1, "c": 2}', false], ['{"a": "x"}', false]] as [string, boolean][];
    await expectTexts({ allOf: [{ type: 'object', properties: { a: { type: 'string' } }, required: ['a'] }, { type: 'object', properties: { b: { type: 'number' } }, required: ['b'] }], unevaluatedProperties: false }, closed);
    const $defs = { A: { type: 'object', properties: { a: { type: 'string' } }, required: ['a'] }, B: { type: 'object', properties: { b: { type: 'number' } }, required: ['b'] } };
    await expectTexts({ $defs, allOf: [{ $ref: '#/$defs/A' }, { $ref: '#/$defs/B' }], unevaluatedProperties: false }, closed);
    // (the properties beside the $ref come first)
    await expectTexts({ $defs, $ref: '#/$defs/A', properties: { b: { type: 'number' } }, required: ['b'], unevaluatedProperties: false }, [['{"b": 1, "a": "x"}', true], ['{"b": 1, "a": "x", "c": 2}', false], ['{"b": 1}', false]]);
    await expectTexts({ allOf: [{ type: 'array', prefixItems: [{ type: 'integer' }] }], minItems: 1, unevaluatedItems: false }, [['[1]', true], ['[1, 2]', false]]);
    await expectValidWalks({ $defs, allOf: [{ $ref: '#/$defs/A' }, { $ref: '#/$defs/B' }], unevaluatedProperties: false });
    // a branch's own beside nothing else it could see: what it evaluates is the merged schema's
    await expectTexts({ allOf: [{ type: 'object', properties: { a: { type: 'integer' } }, unevaluatedProperties: false }] }, [['{"a": 1}', true], ['{"a": 1, "b": 2}', false]]);
    // beside an applicator `true` constrains nothing
    await expectValidWalks({ type: 'object', allOf: [{ properties: { a: { type: 'integer' } }, required: ['a'] }], unevaluatedProperties: true });
  });

  it('an array without items takes any items within its counts; a tuple shorter than minItems takes more; items false short of minItems is refused', async () => {
    // (XGrammar's strict mode refused the first, "minItems is greater than the number of prefixItems", and wrote only [] for the second)
    await expectTexts({ type: 'array', minItems: 1 }, [['[1, "a"]', true], ['[]', false]]);
    await expectTexts({ type: 'array', maxItems: 3 }, [['[1, 2, 3]', true], ['[null]', true], ['[1, 2, 3, 4]', false]]);
    await expectTexts({ type: ['array', 'null'], minItems: 1 }, [['[true]', true], ['null', true], ['[]', false]]);
    await expectTexts({ type: 'array', prefixItems: [{ type: 'integer' }], minItems: 3 }, [['[1, "x", null]', true], ['[1]', false], ['["x", 1, 2]', false]]);
    await expectValidWalks({ type: 'array', minItems: 1 });
    await expectValidWalks({ type: 'array', minItems: 0, maxItems: 3 });
    expect(await refusal({ type: 'array', prefixItems: [{ type: 'integer' }], items: false, minItems: 2 })).to.match(
      /^ConstraintError: JSON Schema keyword "items" at # is false, so an array holds at most 1 items \(its "prefixItems"\), fewer than its "minItems" 2/,
    );
  });

  it('a $ref pointer through a list or a property, escaped or not, is followed', async () => {
    // (XGrammar: "Check failed: … Cannot find field 0 in [...]")
    await expectTexts({ prefixItems: [{ type: 'integer' }, { $ref: '#/prefixItems/0' }] }, [['[1, 2]', true], ['[1, "x"]', false]]);
    await expectTexts({ $defs: { pair: { type: 'array', prefixItems: [{ type: 'boolean' }, { $ref: '#/$defs/pair/prefixItems/0' }], items: false } }, $ref: '#/$defs/pair' }, [['[true, false]', true], ['[true, 1]', false]]);
    await expectTexts({ type: 'object', properties: { 'a/b': { type: 'integer' }, c: { $ref: '#/properties/a~1b' } }, required: ['c'] }, [['{"c": 3}', true], ['{"c": "x"}', false]]);
    await expectValidWalks({ prefixItems: [{ type: 'integer' }, { $ref: '#/prefixItems/0' }] });
  });

  it('false at the root or behind a $ref is refused by name; false in a tuple ends the array before it', async () => {
    expect(await refusal(false)).to.equal('ConstraintError: JSON Schema at # is false: it admits no value');
    expect(await refusal({ type: 'object', properties: { a: { $ref: '#/$defs/never' } }, $defs: { never: false } })).to.match(/keyword "\$ref" at #\/properties\/a: "#\/\$defs\/never" points at a false schema/);
    // (XGrammar: "prefixItems contains false")
    await expectTexts({ prefixItems: [true, false] }, [['[1]', true], ['[1, 2]', false]]);
    await expectTexts({ type: 'array', prefixItems: [false], items: { type: 'integer' } }, [['[]', true], ['[1]', false]]);
    await expectValidWalks({ prefixItems: [true, false] });
    expect(await refusal({ prefixItems: [true, false], minItems: 2 })).to.match(/keyword "prefixItems" at #: item 1 is false, so an array holds at most 1 items, fewer than its "minItems" 2/);
  });

  describe('on the server', () => {
    const { serve } = useServers();
    let url: string;
    before(async () => {
      url = await serve({ engine: { model: await storiesModule() }, name: 'stories', chatTemplate: TOOLS_TEMPLATE });
    });

    it('a tool or response format whose schema the grammar cannot compile is a 400 naming the field that holds it; an open array is written', async () => {
      const messages = [{ role: 'user', content: 'x' }];
      const error = async (body: Record<string, unknown>) => {
        const res = await postJson(url, '/v1/chat/completions', { model: 'stories', messages, max_tokens: 30, ...body });
        expect(res.status, JSON.stringify(body)).to.equal(400);
        return ((await res.json()) as { error: { message: string; code: string; param: string } }).error;
      };
      const uncompilable = { type: 'object', properties: { pair: { type: 'array', prefixItems: [true, false], minItems: 2 } } };
      // (a ConstraintError naming no field before: the grammar compile failed as the request ran)
      const tool = await error({ tools: [{ type: 'function', function: { name: 'f', parameters: uncompilable } }], tool_choice: 'required' });
      expect([tool.code, tool.param]).to.deep.equal(['invalid_function_parameters', 'tools[0].function.parameters']);
      expect(tool.message).to.match(/^tools\[0\]\.function\.parameters of tool "f": JSON Schema keyword "prefixItems" at #\/properties\/pair: item 1 is false/);
      const formats: [Record<string, unknown>, string][] = [
        [{ response_format: { type: 'json_schema', json_schema: { name: 'x', schema: uncompilable } } }, 'response_format.json_schema.schema'],
        [{ response_format: { type: 'json_schema', json_schema: { name: 'x', schema: false } } }, 'response_format.json_schema.schema'],
        [{ guided_json: uncompilable }, 'guided_json'],
        [{ structured_outputs: { json: uncompilable } }, 'structured_outputs.json'],
      ];
      for (const [body, param] of formats) {
        const e = await error(body);
        expect([e.code, e.param], e.message).to.deep.equal(['ConstraintError', param]);
        expect(e.message.startsWith(`${param}: JSON Schema`), e.message).to.equal(true);
      }
      // The other APIs name their own fields (translated into chat's response_format, they named chat's).
      const doors: [string, Record<string, unknown>, string][] = [
        ['/v1/responses', { input: 'x', text: { format: { type: 'json_schema', name: 'x', schema: uncompilable } } }, 'text.format.schema'],
        ['/v1/messages', { messages, max_tokens: 30, output_config: { format: { type: 'json_schema', schema: uncompilable } } }, 'output_config.format.schema'],
        ['/v1/messages', { messages, max_tokens: 30, output_format: { type: 'json_schema', schema: uncompilable } }, 'output_format.schema'],
      ];
      for (const [path, body, param] of doors) {
        const res = await postJson(url, path, { model: 'stories', ...body });
        // (Anthropic's error shape has no param: the message opens with the field)
        const { error: e } = (await res.json()) as { error: { param?: string; message: string } };
        expect([res.status, e.param ?? e.message.split(':')[0]], path).to.deep.equal([400, param]);
      }
      const ollama = await postJson(url, '/api/chat', { model: 'stories', messages, stream: false, format: uncompilable });
      expect(ollama.status).to.equal(400);
      expect(((await ollama.json()) as { error: string }).error).to.match(/^format: JSON Schema keyword "prefixItems"/);
      // an array with a minItems and no items, which failed to compile, is written (its items any JSON)
      const res = await postJson(url, '/v1/chat/completions', { model: 'stories', messages, max_tokens: 60, temperature: 0, response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'array', minItems: 1 } } } });
      expect(res.status).to.equal(200);
      const { content } = ((await res.json()) as { choices: { message: { content: string } }[] }).choices[0]!.message;
      expect(content.startsWith('['), content).to.equal(true);
    });
  });
});
