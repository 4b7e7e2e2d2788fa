/**
 * JSON Schemas as zod writes them (z.toJSONSchema's draft-07, as the AI SDK sends them, and its 2020-12; zod 3 with
 * zod-to-json-schema, as LangChain sends them, written out here): records, tuples, recursion and loose objects are
 * enforced, each grammar's random walks judged by ajv of the schema's own draft; what cannot be enforced is refused by
 * name, and on the server a tool's refused schema is a 400 naming the tool and the field that holds it.
 */
import { expect } from 'chai';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { Ajv } from 'ajv';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { ConstraintError, XGrammarFactory, grammarVocabulary, prepareJsonSchema, type JsonSchema } from '../src/constrain/index.js';
import { createRng } from '../src/sampling/index.js';
import { storiesModule } from './support/modules.js';
import { TOOLS_TEMPLATE } from './support/chat-templates.js';
import { postJson, useServers } from './support/servers.js';
import { randomWalk } from './support/grammar-walk.js';

const ajv7 = new Ajv({ strict: false, allErrors: true });
const ajv2020 = new Ajv2020({ strict: false, allErrors: true });
/** ajv of the schema's draft (its `$schema`; draft-07 where none is named). */
const validator = (schema: JsonSchema) => (String((schema as { $schema?: unknown }).$schema).includes('2020-12') ? ajv2020 : ajv7).compile(schema as object);

const Node: z.ZodType = z.object({ v: z.number().int().min(0).max(9), get next() { return Node.optional(); } });
const ZOD_TYPES = {
  record: z.record(z.string(), z.number().int().min(0).max(9)),
  'record of enum keys': z.record(z.enum(['x', 'y']), z.boolean()),
  'partial record': z.partialRecord(z.enum(['x', 'y']), z.boolean()),
  'record of pattern keys': z.record(z.string().regex(/^[a-z]{1,4}$/), z.boolean()),
  tuple: z.tuple([z.string().max(5), z.number().int().min(0).max(9)]),
  'tuple with rest': z.tuple([z.boolean()], z.number().int().min(0).max(9)),
  recursive: Node,
  'loose object': z.looseObject({ a: z.boolean() }),
};

/** Each zod type as the property `v` of an object, in both drafts z.toJSONSchema writes. */
const ZOD_SCHEMAS = Object.entries(ZOD_TYPES).flatMap(([name, t]) =>
  (['draft-7', 'draft-2020-12'] as const).map((target) => ({ name: `${name} (${target})`, schema: z.toJSONSchema(z.object({ v: t }), { target, io: 'input' }) as JsonSchema })),
);

/** zod 3's through @langchain/core's zod-to-json-schema (its output, as LangChain sends it). */
const ZOD3_SCHEMAS: { name: string; schema: JsonSchema }[] = [
  { name: 'zod 3 tuple', schema: { type: 'object', properties: { v: { type: 'array', minItems: 2, maxItems: 2, items: [{ type: 'string' }, { type: 'boolean' }] } }, required: ['v'], additionalProperties: false, $schema: 'http://json-schema.org/draft-07/schema#' } },
  { name: 'zod 3 map', schema: { type: 'object', properties: { v: { type: 'array', maxItems: 3, items: { type: 'array', items: [{ type: 'string', maxLength: 3 }, { type: 'boolean' }], minItems: 2, maxItems: 2 } } }, required: ['v'], additionalProperties: false, $schema: 'http://json-schema.org/draft-07/schema#' } },
  { name: 'zod 3 record of enum keys', schema: { type: 'object', properties: { v: { type: 'object', additionalProperties: { type: 'boolean' }, propertyNames: { enum: ['x', 'y'] } } }, required: ['v'], additionalProperties: false, $schema: 'http://json-schema.org/draft-07/schema#' } },
];

describe("zod's JSON Schemas: records, tuples, recursion", function () {
  this.timeout(180_000);
  const { serve } = useServers();
  let factory: XGrammarFactory;
  let url: string;

  before(async () => {
    const dir = await storiesModule();
    factory = new XGrammarFactory(grammarVocabulary(JSON.parse(await readFile(join(dir, 'tokenizer.json'), 'utf8')) as object, 512), 'zod');
    url = await serve({ engine: { model: dir }, name: 'stories', chatTemplate: TOOLS_TEMPLATE });
  });

  /** One random walk over the stories260K byte tokens through a schema's grammar: its text, or undefined if it did not end. */
  const walk = (schema: JsonSchema, rng: () => number) => randomWalk(factory, { type: 'json_schema', schema }, rng);

  it('every record, tuple, recursive and loose schema zod writes compiles, and its grammar writes only what ajv of its draft accepts', async () => {
    const rng = createRng(7);
    const failures: string[] = [];
    let ended = 0;
    for (const { name, schema } of [...ZOD_SCHEMAS, ...ZOD3_SCHEMAS]) {
      const validate = validator(schema);
      for (let i = 0; i < 15; i++) {
        let text: string | undefined;
        try {
          text = await walk(schema, rng);
        } catch (err) {
          failures.push(`${name}: ${(err as Error).message}`);
          break;
        }
        if (text === undefined) continue;
        ended++;
        if (!validate(JSON.parse(text))) failures.push(`${name}: ${text} → ${ajv7.errorsText(validate.errors)}`);
      }
    }
    expect(failures).to.deep.equal([]);
    expect(ended).to.be.greaterThan((ZOD_SCHEMAS.length + ZOD3_SCHEMAS.length) * 8);
  });

  it('a propertyNames that says nothing is dropped; enum and pattern names are read as properties; the rest is refused by name', () => {
    const values = { type: 'integer' };
    expect(prepareJsonSchema({ type: 'object', propertyNames: {}, additionalProperties: values }).schema).to.deep.equal({ type: 'object', additionalProperties: values });
    expect(prepareJsonSchema({ type: 'object', propertyNames: true, additionalProperties: values }).schema).to.deep.equal({ type: 'object', additionalProperties: values });
    expect(prepareJsonSchema({ type: 'object', propertyNames: { type: 'string', enum: ['a'] }, additionalProperties: values }).schema).to.deep.equal({ type: 'object', properties: { a: values }, additionalProperties: false });
    const refused = (schema: unknown) => {
      try {
        prepareJsonSchema(schema);
      } catch (err) {
        expect(err).to.be.instanceOf(ConstraintError);
        return (err as Error).message;
      }
      return 'accepted';
    };
    // (a name's length: z.record(z.string().min(2), …))
    expect(refused({ type: 'object', propertyNames: { type: 'string', minLength: 2 }, additionalProperties: values })).to.match(/keyword "propertyNames" at # cannot be enforced beside an "additionalProperties" schema/);
    expect(refused({ type: 'object', propertyNames: { enum: ['a'] }, additionalProperties: values, required: ['b'] })).to.match(/"required" names "b", which its "propertyNames" does not admit/);
    // under draft 2020-12 a list of items is no schema; draft-07 (or no $schema) reads it as a tuple
    const tuple = { type: 'array', items: [{ type: 'string' }], additionalItems: false };
    expect(refused({ $schema: 'https://json-schema.org/draft/2020-12/schema', ...tuple })).to.match(/keyword "items" at # is a list, which draft 2020-12/);
    expect(prepareJsonSchema(tuple).schema).to.deep.equal({ type: 'array', prefixItems: [{ type: 'string' }], items: false });
    expect(refused({ ...tuple, prefixItems: [{ type: 'string' }] })).to.match(/"items" \(a list\) and "prefixItems" at # both give/);
  });

  it("a tool whose parameters zod wrote as a record and a tuple is called, its arguments valid; a refused tool schema is a 400 naming the tool at the API's own field", async () => {
    // (keys from an enum: the tiny model writes stories into free keys, past any token limit)
    const parameters = z.toJSONSchema(z.object({ scores: ZOD_TYPES['record of enum keys'], pair: ZOD_TYPES.tuple }), { target: 'draft-7', io: 'input' }) as JsonSchema;
    const messages = [{ role: 'user', content: 'Score it' }];
    const res = await postJson(url, '/v1/chat/completions', { model: 'stories', messages, tools: [{ type: 'function', function: { name: 'score', parameters } }], tool_choice: 'required', parallel_tool_calls: false, max_tokens: 150, temperature: 0.7, seed: 3 });
    expect(res.status).to.equal(200);
    const calls = ((await res.json()) as { choices: { message: { tool_calls: { function: { name: string; arguments: string } }[] } }[] }).choices[0]!.message.tool_calls;
    expect(calls.map((c) => c.function.name)).to.deep.equal(['score']);
    const validate = validator(parameters);
    expect(validate(JSON.parse(calls[0]!.function.arguments)), calls[0]!.function.arguments).to.equal(true);

    // (a record whose names have a length bound: XGrammar would ignore its values' schema)
    const refused = { type: 'object', properties: { v: { type: 'object', propertyNames: { minLength: 2 }, additionalProperties: { type: 'number' } } } };
    const fine = { type: 'object', properties: {} };
    const cases = [
      { path: '/v1/chat/completions', body: { messages, tools: [{ type: 'function', function: { name: 'ok', parameters: fine } }, { type: 'function', function: { name: 'rate', parameters: refused } }] }, param: 'tools[1].function.parameters' },
      { path: '/v1/responses', body: { input: 'Score it', tools: [{ type: 'function', name: 'rate', parameters: refused }] }, param: 'tools[0].parameters' },
      { path: '/v1/messages', body: { messages, max_tokens: 20, tools: [{ name: 'rate', input_schema: refused }] }, param: 'tools[0].input_schema' },
    ];
    for (const { path, body, param } of cases) {
      const bad = await postJson(url, path, { model: 'stories', ...body });
      const error = ((await bad.json()) as { error: { message: string; type: string; code: string; param: string } }).error;
      expect([bad.status, error.type], path).to.deep.equal([400, 'invalid_request_error']);
      expect(error.message.startsWith(`${param} of tool "rate": JSON Schema keyword "propertyNames" at #/properties/v cannot be enforced`), error.message).to.equal(true);
      // (Anthropic's error body has no param or code: the message names the field)
      if (path !== '/v1/messages') expect([error.param, error.code], path).to.deep.equal([param, 'invalid_function_parameters']);
      // With tool_choice none nothing enforces the schema (the tools are only shown): no refusal.
      const none = path === '/v1/messages' ? { tool_choice: { type: 'none' } } : { tool_choice: 'none' };
      const shown = await postJson(url, path, { model: 'stories', ...body, ...none, ...(path === '/v1/messages' ? {} : path === '/v1/responses' ? { max_output_tokens: 2 } : { max_tokens: 2 }) });
      expect(shown.status, `${path} with tool_choice none`).to.equal(200);
    }
    // A pattern XGrammar cannot compile (a back-reference) is refused up front as the tool's too, not the whole request's.
    const backref = { type: 'object', properties: { s: { type: 'string', pattern: '(a)\\1' } } };
    const bad = await postJson(url, '/v1/chat/completions', { model: 'stories', messages, tools: [{ type: 'function', function: { name: 'echo', parameters: backref } }] });
    const error = ((await bad.json()) as { error: { message: string; code: string; param: string } }).error;
    expect([bad.status, error.code, error.param]).to.deep.equal([400, 'invalid_function_parameters', 'tools[0].function.parameters']);
    expect(error.message).to.match(/of tool "echo": .*back-references \(\\1…\) cannot be enforced/);
  });
});
