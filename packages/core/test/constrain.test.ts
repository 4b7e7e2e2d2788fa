import { expect } from 'chai';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { z } from 'zod';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { Engine } from '../src/engine.js';
import { TextTokenizer } from '../src/tokenizer/tokenizer.js';
import { models } from '../../../test/support/paths.js';
import { XGrammarFactory, applyBitmask, grammarVocabulary, prepareJsonSchema, type JsonSchema, type ResponseFormat } from '../src/constrain/index.js';
import { withWritableTokens } from '../src/constrain/vocabulary.js';
import { SUPPORTED_FORMATS } from '../src/constrain/json-schema.js';
import { ToolCallTextSplitter } from '../src/chat/tool-calls.js';
import { GenericReplySplitter } from '../src/chat/generic-reply.js';
import { splitReply } from '../src/chat/reply.js';
import { rewriteRegex } from '../src/constrain/regex-rewrite.js';
import { numberRangeEbnf } from '../src/constrain/number-range.js';
import { unrollBoundedStrings } from '../src/constrain/string-length.js';
import { createRng } from '../src/sampling/index.js';
import { loadXGrammar } from '../src/constrain/xgrammar-loader.js';
import { makeModule, storiesModule, storiesConfig } from './support/modules.js';
import { cacheDir, testDir } from './support/models.js';
import { buildProjectorModel, randomProjectorWeights, writeProjectorModel } from '../src/onnx/projector-builder.js';
import { SCHEMAS } from './constrain-schemas.js';
import { randomWalk, walkGrammar, type WalkVocabulary } from './support/grammar-walk.js';

const ajv = new Ajv2020({ strict: false, allErrors: true });
(addFormats as unknown as (a: Ajv2020) => void)(ajv);

/**
 * Settings under which the tiny model finishes its answers: a little randomness, a penalty against loops. The seed
 * matters for the unbounded "any JSON value" schema, whose strings the model fills with a story: at this temperature
 * its row of the 33-schema batch (row r draws from seed + r) ran past 200 tokens for 8 of the seeds 1-12, and every
 * other answer of those twelve batches was valid (measured 2026-12-04).
 */
const SAMPLING = { temperature: 0.7, seed: 2, repetitionPenalty: 1.3, maxTokens: 200 };

/** More shapes for the random walks: escapes in names and values, disjoint oneOf, open objects, long strings. */
const WALK_SCHEMAS: { name: string; schema: Record<string, unknown> }[] = [
  {
    name: 'property names with a quote, a backslash, a newline (XGrammar writes them unescaped)',
    schema: { type: 'object', properties: { 'a b': { type: 'integer' }, 'u"x': { type: 'boolean' }, 'back\\slash': { type: 'null' }, 'new\nline': { type: 'integer', minimum: 0, maximum: 3 } }, required: ['a b', 'u"x', 'back\\slash', 'new\nline'] },
  },
  { name: 'enum and const strings with escapes', schema: { type: 'object', properties: { e: { enum: ['a"b', 'c\\d', 'e\nf', 'tab\there'] }, c: { const: 'q"\u0001' } }, required: ['e', 'c'] } },
  { name: 'oneOf told apart by type', schema: { oneOf: [{ type: 'string', maxLength: 4 }, { type: 'integer', minimum: 0, maximum: 3 }, { type: 'null' }] } },
  {
    name: 'oneOf by a $ref discriminator (pydantic)',
    schema: {
      $defs: { cat: { type: 'object', properties: { kind: { enum: ['cat'] }, lives: { type: 'integer', minimum: 1, maximum: 9 } }, required: ['kind'] }, dog: { type: 'object', properties: { kind: { const: 'dog' } }, required: ['kind'] } },
      oneOf: [{ $ref: '#/$defs/cat' }, { $ref: '#/$defs/dog' }],
    },
  },
  { name: 'additionalProperties schema', schema: { type: 'object', additionalProperties: { type: 'integer', minimum: 0, maximum: 5 }, maxProperties: 3 } },
  { name: 'a string longer than the unrolled bound', schema: { type: 'string', minLength: 2, maxLength: 300 } },
  { name: 'unbounded numbers', schema: { type: 'array', prefixItems: [{ type: 'number' }, { type: 'integer' }], items: false, minItems: 2 } },
  { name: 'nullable object', schema: { type: ['object', 'null'], properties: { a: { type: 'string', maxLength: 3 } } } },
  // combinations XGrammar accepts and ignores, rewritten before it sees them
  { name: 'required properties that properties leaves out', schema: { type: 'object', properties: { a: { type: 'boolean' } }, required: ['a', 'x'] } },
  { name: 'allOf of two objects (zod intersections)', schema: { allOf: [{ type: 'object', properties: { a: { type: 'integer', minimum: 0, maximum: 9 } }, required: ['a'] }, { $ref: '#/$defs/b' }], $defs: { b: { type: 'object', properties: { b: { type: 'boolean' } }, required: ['b'] } } } },
  { name: 'allOf of bounds', schema: { allOf: [{ type: 'integer', minimum: 0 }, { type: 'integer', maximum: 5 }] } },
  {
    name: '$ref beside value keywords',
    schema: { $defs: { n: { type: 'integer', minimum: 0, maximum: 9 }, o: { type: 'object', properties: { a: { $ref: '#/$defs/n', maximum: 3 } }, required: ['a'] } }, $ref: '#/$defs/o', properties: { b: { type: 'boolean' } }, required: ['b'] },
  },
  { name: 'string and number keywords without a type', schema: { type: 'object', properties: { s: { minLength: 2, maxLength: 3 }, n: { minimum: 0, maximum: 3 } }, required: ['s', 'n'] } },
  { name: 'enum and const with keywords beside them', schema: { type: 'object', properties: { e: { type: 'string', enum: ['a', 'bb', 'ccc'], minLength: 2 }, n: { enum: [1, 5, 10, 'x'], maximum: 6 } }, required: ['e', 'n'] } },
  { name: 'a length folded into a repeated class', schema: { type: 'object', properties: { a: { type: 'string', pattern: '^[a-z]+$', maxLength: 3 }, b: { type: 'string', pattern: '\\d*', minLength: 2, maxLength: 4 } }, required: ['a', 'b'] } },
  // zod's JSON Schema of a top-level enum: "$schema" beside "enum" (refused as a keyword it could not enforce before)
  { name: 'zod top-level enum', schema: z.toJSONSchema(z.enum(['red', 'green', 'blue'])) as Record<string, unknown> },
  // zod writes a format with its own pattern for these (LangChain's withStructuredOutput passes them on)
  ...(['email', 'uuid', 'date', 'datetime', 'ipv4'] as const).map((kind) => {
    const made = { email: z.email(), uuid: z.uuid(), date: z.iso.date(), datetime: z.iso.datetime(), ipv4: z.ipv4() }[kind];
    const { $schema: _, ...schema } = z.toJSONSchema(z.object({ v: made })) as Record<string, unknown>;
    return { name: `zod ${kind} (format and pattern)`, schema };
  }),
];

describe('constrained decoding', function () {
  this.timeout(120_000);
  let engine: Engine;
  let dir: string;

  before(async () => {
    dir = await storiesModule();
    engine = await Engine.load({ model: dir });
  });
  after(() => engine?.dispose());

  it(`makes stories260K answer ${SCHEMAS.length} JSON Schemas in one batch, every answer valid (ajv)`, async () => {
    const result = await engine.generate(
      { prompt: SCHEMAS.map(() => 'Once upon a time') },
      { ...SAMPLING, responseFormat: SCHEMAS.map(({ schema }) => ({ type: 'json_schema', schema })) },
    );
    const failures: string[] = [];
    result.rows.forEach((row, i) => {
      const { name, schema } = SCHEMAS[i]!;
      if (row.finishReason !== 'eos') return failures.push(`${name}: ${row.finishReason} after ${row.ids.length} tokens: ${row.text}`);
      let value: unknown;
      try {
        value = JSON.parse(row.text);
      } catch {
        return failures.push(`${name}: not JSON: ${row.text}`);
      }
      expect(row.parsed, name).to.deep.equal(value);
      if (!ajv.validate(schema, value)) failures.push(`${name}: ${row.text} → ${ajv.errorsText()}`);
    });
    expect(failures).to.deep.equal([]);
  });

  it('follows EBNF grammars and regular expressions, with Unicode in the text', async () => {
    const cases: { format: ResponseFormat; check: (text: string) => boolean }[] = [
      { format: { type: 'grammar', grammar: 'root ::= "The " animal " is " ("happy" | "sad") "."\nanimal ::= "cat" | "dog" | "bird"' }, check: (t) => /^The (cat|dog|bird) is (happy|sad)\.$/.test(t) },
      { format: { type: 'grammar', grammar: 'root ::= item ("," item){2}\nitem ::= [0-9]{1,3}' }, check: (t) => /^[0-9]{1,3}(,[0-9]{1,3}){2}$/.test(t) },
      { format: { type: 'regex', pattern: '[A-Z][a-z]{2,8} (loves|hates) [a-z]{3,8}\\.' }, check: (t) => /^[A-Z][a-z]{2,8} (loves|hates) [a-z]{3,8}\.$/.test(t) },
      { format: { type: 'regex', pattern: '(café|naïve|日本|🎉)( (café|naïve|日本|🎉)){1,3}' }, check: (t) => /^(café|naïve|日本|🎉)( (café|naïve|日本|🎉)){1,3}$/u.test(t) },
    ];
    for (const { format, check } of cases) {
      const r = await engine.generate({ prompt: 'Once upon a time' }, { ...SAMPLING, responseFormat: format });
      const row = r.rows[0]!;
      expect(row.finishReason, JSON.stringify(format)).to.equal('eos');
      expect(check(row.text), `${JSON.stringify(format)} gave ${JSON.stringify(row.text)}`).to.equal(true);
      expect(row.parsed).to.equal(undefined);
    }
  });

  it('gives each row of a batch its own constraint, or none', async () => {
    const schema = { type: 'object', properties: { n: { type: 'integer', minimum: 1, maximum: 3 } }, required: ['n'] };
    const r = await engine.generate(
      { prompt: ['Once upon a time', 'Once upon a time', 'Once upon a time'] },
      { ...SAMPLING, maxTokens: 40, responseFormat: [{ type: 'json_schema', schema }, null, { type: 'regex', pattern: '(yes|no)!' }] },
    );
    expect(r.rows[0]!.parsed).to.satisfy((v: unknown) => ajv.validate(schema, v));
    expect(r.rows[2]!.text).to.match(/^(yes|no)!$/);
    // the free row is the model's own story, untouched by the others' grammars
    const free = await engine.generate({ prompt: 'Once upon a time' }, { ...SAMPLING, seed: SAMPLING.seed + 1, maxTokens: 40 });
    expect(r.rows[1]!.text).to.equal(free.rows[0]!.text);
    expect(r.rows[1]!.text).to.match(/[a-z]+ [a-z]+/);
  });

  it('reports the grammar stage per token in decoding: bitmasks (the first computed during the prefill), picks made without one, the wait, the pick and the check', async () => {
    const schema = { type: 'object', properties: { name: { type: 'string', maxLength: 12 }, n: { type: 'integer' } }, required: ['name', 'n'] };
    // Greedy (the pick walks the allowed tokens) and sampled, a constrained row beside a free one.
    for (const options of [{ maxTokens: 30 }, { ...SAMPLING, maxTokens: 30 }]) {
      const r = await engine.generate({ prompt: ['Once upon a time', 'Once upon a time'] }, { ...options, responseFormat: [{ type: 'json_schema', schema }, null] });
      const g = r.timing.grammar!;
      expect(g.tokens, JSON.stringify(options)).to.equal(r.rows[0]!.ids.length);
      // Each token either needed a bitmask or was the sampler's own pick, accepted: both happen here (the forced
      // `{"name": "` needs bitmasks; inside the name the model's own words are allowed).
      expect(g.bitmasks + g.unmasked).to.equal(g.tokens);
      expect(g.unmasked).to.be.greaterThan(0);
      expect(g.bitmasks).to.be.greaterThan(0);
      expect(g.overlapped).to.be.at.least(1).and.at.most(g.bitmasks);
      for (const f of [g.bitmaskUs, g.pickUs, g.acceptUs]) {
        expect(f.median).to.be.greaterThan(0);
        expect(f.max).to.be.at.least(f.median).and.at.least(f.mean);
      }
      expect(g.waitUs.mean).to.be.at.least(0);
      if (r.rows[0]!.finishReason === 'eos') expect(r.rows[0]!.parsed).to.satisfy((v: unknown) => ajv.validate(schema, v));
    }
    expect((await engine.generate({ prompt: 'Once upon a time' }, { maxTokens: 3 })).timing.grammar).to.equal(undefined);
  });

  it('ends with finishReason length and no parsed value when maxTokens is too few; refuses what it cannot enforce before generating', async () => {
    const schema = { type: 'object', properties: { story: { type: 'string', minLength: 50 } }, required: ['story'] };
    const r = await engine.generate({ prompt: 'Once upon a time' }, { ...SAMPLING, maxTokens: 5, responseFormat: { type: 'json_schema', schema } });
    expect(r.rows[0]!.finishReason).to.equal('length');
    expect(r.rows[0]!.parsed).to.equal(undefined);
    const text = r.rows[0]!.text;
    // (a blank or none after each separator: the opening squeezed of blanks)
    const opening = text.replace(/\s/g, '').slice(0, '{"story":"'.length);
    expect('{"story":"'.startsWith(opening), text).to.equal(true);
    const refused: [ResponseFormat, RegExp][] = [
      [{ type: 'json_schema', schema: { type: 'object', not: { required: ['a'] } } }, /keyword "not" at #/],
      [{ type: 'json_schema', schema: { type: 'array', items: { type: 'integer' }, uniqueItems: true } }, /keyword "uniqueItems"/],
      [{ type: 'json_schema', schema: { type: 'object', properties: { a: { if: { const: 1 }, then: {} } } } }, /keyword "if" at #\/properties\/a/],
      [{ type: 'json_schema', schema: { type: 'string', format: 'iri' } }, /keyword "format".*"iri"/],
      [{ type: 'json_schema', schema: { type: 'number', multipleOf: 0.5 } }, /multipleOf/],
      [{ type: 'json_schema', schema: { type: 'string', pattern: '^[α-ω]+$' } }, /keyword "pattern"/],
      // oneOf branches a value may match both of: a grammar can offer the branches, not exclude the overlap
      [{ type: 'json_schema', schema: { oneOf: [{ type: 'integer' }, { type: 'number' }] } }, /keyword "oneOf" at #.*branch 0 and branch 1/],
      // XGrammar ignores a length beside a pattern; it is folded in only where the pattern is one repeated atom
      [{ type: 'json_schema', schema: { type: 'string', pattern: '^(ab)+$', maxLength: 4 } }, /keywords "pattern" and "maxLength" at #/],
      [{ type: 'json_schema', schema: { allOf: [{ properties: { a: { type: 'integer' } } }, { properties: { a: { type: 'string' } } }] } }, /"allOf" at #.*property "a"/],
      [{ type: 'json_schema', schema: { allOf: [{ properties: { a: {} }, additionalProperties: false }, { properties: { b: {} } }] } }, /"allOf" at #.*closed/],
      [{ type: 'json_schema', schema: { type: 'object', properties: { a: { const: 'abc', maxLength: 2 } } } }, /at #\/properties\/a: no value of its "const"/],
      [{ type: 'json_schema', schema: { type: 'object', properties: { p: { oneOf: [{ type: 'object', properties: { a: { type: 'integer' } } }, { $ref: '#/$defs/b' }] } }, $defs: { b: { type: 'object' } } } }, /keyword "oneOf" at #\/properties\/p/],
      [{ type: 'grammar', grammar: 'root ::= missing' }, /Rule "missing" is not defined/],
      // values JSON Schema forbids or that admit nothing (the compiler wrote any string for the first, failed in its parser on the second)
      [{ type: 'json_schema', schema: { type: 'string', maxLength: -1 } }, /"maxLength" at # must be a non-negative whole number, not -1/],
      [{ type: 'json_schema', schema: { type: 'object', properties: { a: { enum: [] } } } }, /"enum" at #\/properties\/a must list at least one value/],
      [{ type: 'json_schema', schema: { anyOf: [] } }, /"anyOf" at # must list at least one schema/],
      [{ type: 'json_schema', schema: { type: 'array', minItems: 3, maxItems: 2 } }, /"minItems" 3 and "maxItems" 2 at # admit no value/],
      // formats no text completes: found at the first token, before any is written
      [{ type: 'json_schema', schema: { $ref: '#' } }, /allows no token here/],
      [{ type: 'grammar', grammar: 'root ::= root' }, /allows no token here/],
      [{ type: 'regex', pattern: '(?=a)b' }, /lookaround assertions \(\(\?=…\) cannot be enforced/],
      // a negated class of a negated shorthand: XGrammar took [^\s\S], which matches nothing, for almost anything
      [{ type: 'regex', pattern: '[^\\s\\S]' }, /\\S inside a negated character class/],
      [{ type: 'regex', pattern: 'a[b-' }, /the character class opened at 1 is never closed/],
    ];
    for (const [format, message] of refused) {
      const stream = engine.stream({ prompt: 'Once upon a time' }, { maxTokens: 10, responseFormat: format });
      const tokens: unknown[] = [];
      const err = await (async () => {
        for await (const t of stream) tokens.push(t);
      })().catch((e: Error) => e);
      expect(err, JSON.stringify(format)).to.be.instanceOf(Error).with.property('name', 'ConstraintError');
      expect((err as Error).message).to.match(message);
      expect(tokens).to.deep.equal([]);
    }
    // the engine (and its grammar engine, rebuilt after a failed compile) still works
    const ok = await engine.generate({ prompt: 'Once upon a time' }, { ...SAMPLING, responseFormat: { type: 'json_schema', schema: { type: 'object', properties: { ok: { type: 'boolean' } }, required: ['ok'] } } });
    expect(ok.rows[0]!.parsed).to.be.an('object');
  });

  it('compiles schema after schema in bounded memory: past its cache, nothing of a grammar is kept (a server whose clients send their own)', async () => {
    const factory = new XGrammarFactory(grammarVocabulary(JSON.parse(await readFile(join(dir, 'tokenizer.json'), 'utf8')) as object, 512), 'many');
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const compile = async (from: number, to: number) => {
      for (let i = from; i < to; i++) {
        const key = `k${i}`;
        await factory.compile({ type: 'json_schema', schema: { type: 'object', properties: { [key]: { type: 'integer' } }, required: [key] } }, [2]);
      }
      gc();
      return process.memoryUsage().rss;
    };
    // (past the factory's cache of compiled grammars first; then ~15 KB a schema was kept for good: 30 MB here)
    const warm = await compile(0, 600);
    const after = await compile(600, 2600);
    expect((after - warm) / 2 ** 20, 'MiB more after 2000 more schemas').to.be.below(12);
  });

  it('format ipv4: octets as validators read them, without leading zeros (XGrammar\'s own rule admits 08)', async () => {
    const factory = new XGrammarFactory(grammarVocabulary(JSON.parse(await readFile(join(dir, 'tokenizer.json'), 'utf8')) as object, 512), 'ipv4');
    const byte = (ch: string) => 3 + ch.charCodeAt(0); // byte tokens of the stories260K vocabulary
    const after = async (text: string) => {
      const c = await factory.create({ type: 'json_schema', schema: { type: 'string', format: 'ipv4' } }, [2]);
      for (const ch of text) expect(c.tryAccept(byte(ch)), `${text} at ${ch}`).to.equal(true);
      return c;
    };
    expect((await after('"15.0')).tryAccept(byte('8'))).to.equal(false);
    expect((await after('"15.0')).tryAccept(byte('.'))).to.equal(true);
    expect((await after('"25')).tryAccept(byte('6'))).to.equal(false);
    const done = await after('"255.0.10.199"');
    expect(done.tryAccept(2)).to.equal(true);
    expect(ajv.validate({ type: 'string', format: 'ipv4' }, '255.0.10.199')).to.equal(true);
    expect(ajv.validate({ type: 'string', format: 'ipv4' }, '15.08.40.55')).to.equal(false);
  });

  it("format uri: what the constraint writes passes ajv-formats (XGrammar's own rule ends a URI at its scheme's colon)", async () => {
    const factory = new XGrammarFactory(grammarVocabulary(JSON.parse(await readFile(join(dir, 'tokenizer.json'), 'utf8')) as object, 512), 'uri');
    const byte = (ch: string) => 3 + ch.charCodeAt(0); // byte tokens of the stories260K vocabulary
    /** Whether the constraint takes the whole JSON string `text` and may end there. */
    const takes = async (text: string) => {
      const c = await factory.create({ type: 'json_schema', schema: { type: 'string', format: 'uri' } }, [2]);
      for (const ch of JSON.stringify(text)) if (!c.tryAccept(byte(ch))) return false;
      return c.tryAccept(2);
    };
    for (const uri of ['tom:', 'Tom.ryise:', 'a b:c', '1a:b']) {
      expect(ajv.validate({ type: 'string', format: 'uri' }, uri), uri).to.equal(false);
      expect(await takes(uri), uri).to.equal(false);
    }
    for (const uri of ['tom:x', 'https://example.org:8080/a/b?q=1&r=2#top', 'urn:isbn:0451450523', 'mailto:lily@example.com', 'http://x/']) {
      expect(ajv.validate({ type: 'string', format: 'uri' }, uri), uri).to.equal(true);
      expect(await takes(uri), uri).to.equal(true);
    }
  });

  it('every string format, and every test schema, writes only what ajv accepts: random walks through the grammars', async () => {
    const factory = new XGrammarFactory(grammarVocabulary(JSON.parse(await readFile(join(dir, 'tokenizer.json'), 'utf8')) as object, 512), 'walks');
    const rng = createRng(5);
    const refused: string[] = [];
    const walks = async (schema: JsonSchema, name: string, count: number) => {
      let finished = 0;
      for (let walk = 0; walk < count; walk++) {
        const text = await randomWalk(factory, { type: 'json_schema', schema }, rng);
        if (text === undefined) continue;
        finished++;
        let value: unknown;
        try {
          value = JSON.parse(text);
        } catch {
          refused.push(`${name}: not JSON: ${JSON.stringify(text)}`);
          continue;
        }
        if (!ajv.validate(schema, value)) refused.push(`${name}: ${text} → ${ajv.errorsText()}`);
      }
      return finished;
    };
    for (const format of SUPPORTED_FORMATS) expect(await walks({ type: 'string', format }, format, 150), format).to.be.greaterThan(50);
    // (walks take ASCII bytes, control characters included: the Unicode schemas' walks end nowhere)
    let ended = 0;
    for (const { name, schema } of [...SCHEMAS, ...WALK_SCHEMAS]) ended += await walks(schema, name, 30);
    expect(ended).to.be.greaterThan((SCHEMAS.length + WALK_SCHEMAS.length) * 15);
    expect(refused).to.deep.equal([]);
  });

  it('compiles a format once per vocabulary; added and special tokens are never allowed inside a constrained reply', async () => {
    const json = JSON.parse(await readFile(join(dir, 'tokenizer.json'), 'utf8')) as object;
    const vocab = grammarVocabulary(json, 512);
    expect(vocab.kind).to.equal('byte_fallback');
    expect(vocab.tokens.slice(0, 3)).to.deep.equal(['', '', '']);
    const factory = new XGrammarFactory(vocab, 'stories');
    const format: ResponseFormat = { type: 'json_schema', schema: { type: 'object', properties: { a: { type: 'string' } } } };
    const a = await factory.create(format, [2]);
    const b = await factory.create({ type: 'json_schema', schema: { properties: { a: { type: 'string' } }, type: 'object' } }, [2]);
    expect(factory.compiles).to.equal(1);
    await factory.create({ type: 'regex', pattern: '.*' }, [2]);
    expect(factory.compiles).to.equal(2);
    // inside a free string: every byte and piece but <unk>, <s>, </s> (EOS only once the grammar is complete)
    for (const id of [126, 37, 100, 37, 61, 35, 37]) a.accept(id); // {"a": " (byte tokens: id = 3 + byte)
    const logits = new Float32Array(512);
    await a.mask(logits);
    expect([0, 1, 2].map((id) => logits[id])).to.deep.equal([-Infinity, -Infinity, -Infinity]);
    expect(logits.filter((x) => x === 0).length).to.be.greaterThan(300);
    a.dispose();
    b.dispose();
  });

  it('constrains a composition (backbone + reasoner) and latent decoding; markers inside a constrained reply stay text', async () => {
    const H = 48;
    const [backbone, reasoner] = await Promise.all([
      makeModule({ name: 'constrained-backbone', kind: 'backbone', config: storiesConfig({ hiddenSize: H }), seed: 31 }),
      makeModule({ name: 'constrained-r', config: storiesConfig({ hiddenSize: 32 }), seed: 32 }),
    ]);
    const projector = join(testDir('constrained-projector'), 'projector.onnx');
    await writeProjectorModel(projector, buildProjectorModel({ hiddenSize: H }, randomProjectorWeights({ hiddenSize: H }, 5, 0.2)));
    const composed = await Engine.load({ model: backbone, reasoners: [{ model: reasoner, weight: 0.7 }], projector, cacheDir });
    try {
      const schema = SCHEMAS.find((s) => s.name === 'oneOf (discriminated)')!.schema;
      const r = await composed.generate({ prompt: 'Once upon a time' }, { ...SAMPLING, latent: 'never', responseFormat: { type: 'json_schema', schema } });
      expect(r.rows[0]!.finishReason).to.equal('eos');
      expect(ajv.validate(schema, r.rows[0]!.parsed), r.rows[0]!.text).to.equal(true);

      // fixed:K thinks K latent steps after the prompt, then the grammar decides every discrete token
      const fixed = await composed.generate({ prompt: 'Once upon a time' }, { ...SAMPLING, latent: 'fixed:3', responseFormat: { type: 'json_schema', schema } });
      expect(fixed.usage.latentSteps).to.equal(3);
      expect(ajv.validate(schema, fixed.rows[0]!.parsed), fixed.rows[0]!.text).to.equal(true);

      // a marker the grammar itself writes opens no latent span: it is text of the reply
      const grammar = 'root ::= "Tom " ("ran" | "sat") " <implicit_thought>2</implicit_thought> home."';
      const marked = await composed.generate({ prompt: 'Once upon a time' }, { ...SAMPLING, latent: 'marker', responseFormat: { type: 'grammar', grammar } });
      expect(marked.rows[0]!.text).to.match(/^Tom (ran|sat) <implicit_thought>2<\/implicit_thought> home\.$/);
      expect(marked.usage.latentSteps ?? 0).to.equal(0);
    } finally {
      await composed.dispose();
    }
  });

  it('tool calls by random walks: auto may end in free text or make calls, required makes one or more, named one; parallel false admits one; every call valid', async () => {
    const factory = new XGrammarFactory(grammarVocabulary(JSON.parse(await readFile(join(dir, 'tokenizer.json'), 'utf8')) as object, 512), 'tool-walks');
    const tools = [
      { name: 'add', parameters: { type: 'object', properties: { a: { type: 'integer', minimum: 0, maximum: 9 }, b: { type: 'integer' } }, required: ['a', 'b'] } },
      { name: 'say', parameters: { type: 'object', properties: { text: { type: 'string', maxLength: 8 } }, required: ['text'] } },
    ];
    const first = '<tool_call>\n{"name": "say", "arguments": {"text": "hi"}}\n</tool_call>';
    const rng = createRng(4);
    for (const parallel of [true, false]) {
      for (const choice of ['auto', 'required', { name: 'say' }] as const) {
        const label = `${JSON.stringify(choice)}, parallel ${parallel}`;
        const format: ResponseFormat = { type: 'tool_calls', tools, choice, parallel };
        let ended = 0;
        let called = 0;
        let several = 0;
        for (let walk = 0; walk < 60; walk++) {
          // auto: some free text first (no '<'), and on a third of the walks the opening tag, on another third a
          // whole call and the opening of the next; required and named: a call and the next line on half of them
          const free = choice === 'auto' ? Array.from({ length: Math.floor(rng() * 12) }, () => String.fromCharCode(32 + Math.floor(rng() * 28))).join('') : '';
          const pick = rng();
          const prefix = choice === 'auto' ? (pick < 1 / 3 ? free : pick < 2 / 3 ? `${free}<tool_call>` : `${free}${first}\n<tool_call>`) : pick < 0.5 ? '' : `${first}\n`;
          const text = await randomWalk(factory, format, rng, prefix);
          const second = prefix.includes('</tool_call>');
          if (second && (!parallel || typeof choice === 'object')) {
            // one call at most: nothing but the end may follow it
            expect(text, `${label}: ${prefix}`).to.equal(undefined);
            continue;
          }
          if (text === undefined) continue;
          ended++;
          const splitter = new ToolCallTextSplitter();
          const calls = [...splitter.push(text).toolCalls, ...splitter.end().toolCalls];
          if (!parallel || typeof choice === 'object') expect(calls.length, text).to.equal(choice === 'auto' && !prefix.endsWith('<tool_call>') ? 0 : 1);
          else expect(calls.length, text).to.be.at.least(choice === 'auto' ? (prefix.endsWith('<tool_call>') ? (second ? 2 : 1) : 0) : second ? 2 : 1);
          if (calls.length > 1) several++;
          for (const call of calls) {
            called++;
            const tool = tools.find((t) => t.name === call.name);
            expect(tool, text).to.not.equal(undefined);
            if (typeof choice === 'object') expect(call.name).to.equal(choice.name);
            expect(ajv.validate(tool!.parameters, JSON.parse(call.arguments)), `${text} → ${ajv.errorsText()}`).to.equal(true);
          }
        }
        // auto ends after free text too (its dispatch stops at EOS only if the compiler knows the stop tokens)
        expect(ended, label).to.be.greaterThan(parallel && typeof choice !== 'object' ? 35 : 20);
        expect(called, label).to.be.greaterThan(choice === 'auto' ? 15 : 25);
        if (parallel && typeof choice !== 'object') expect(several, label).to.be.greaterThan(10);
      }
    }
  });

  it("Llama 3's tool calls (json syntax) by random walks: auto ends in free text or one call as its last words, required and named one call; every call valid", async () => {
    const factory = new XGrammarFactory(grammarVocabulary(JSON.parse(await readFile(join(dir, 'tokenizer.json'), 'utf8')) as object, 512), 'json-tool-walks');
    const tools = [
      { name: 'add', parameters: { type: 'object', properties: { a: { type: 'integer', minimum: 0, maximum: 9 }, b: { type: 'integer' } }, required: ['a', 'b'] } },
      { name: 'say', parameters: { type: 'object', properties: { text: { type: 'string', maxLength: 8 } }, required: ['text'] } },
    ];
    const rng = createRng(8);
    for (const choice of ['auto', 'required', { name: 'say' }] as const) {
      const label = JSON.stringify(choice);
      const format: ResponseFormat = { type: 'tool_calls', tools, choice, syntax: 'json' };
      let ended = 0;
      let called = 0;
      for (let walk = 0; walk < 60; walk++) {
        // auto: some free text first (no '{'), then on half the walks the opening of a call
        const free = choice === 'auto' ? Array.from({ length: Math.floor(rng() * 12) }, () => String.fromCharCode(32 + Math.floor(rng() * 28))).join('') : '';
        const prefix = choice === 'auto' && rng() < 0.5 ? `${free}{"name": ` : free;
        const text = await randomWalk(factory, format, rng, prefix);
        if (text === undefined) continue;
        ended++;
        const splitter = new ToolCallTextSplitter('json');
        const calls = [...splitter.push(text).toolCalls, ...splitter.end().toolCalls];
        expect(calls.length, text).to.equal(choice === 'auto' && !prefix.includes('{') ? 0 : 1);
        for (const call of calls) {
          called++;
          expect(text.endsWith('}'), text).to.equal(true); // the call is the reply's last words
          const tool = tools.find((t) => t.name === call.name);
          expect(tool, text).to.not.equal(undefined);
          if (typeof choice === 'object') expect(call.name).to.equal(choice.name);
          expect(JSON.parse(text.slice(text.indexOf('{"name": '))), text).to.have.all.keys('name', 'parameters');
          expect(ajv.validate(tool!.parameters, JSON.parse(call.arguments)), `${text} → ${ajv.errorsText()}`).to.equal(true);
        }
      }
      expect(ended, label).to.be.greaterThan(20);
      expect(called, label).to.be.greaterThan(choice === 'auto' ? 10 : 20);
    }
  });

  it('generic tool calls (templates without tools) by random walks: one reply object, calls of bound tools or (auto) an answer, as an independent schema says; the splitter reads it back', async () => {
    const factory = new XGrammarFactory(grammarVocabulary(JSON.parse(await readFile(join(dir, 'tokenizer.json'), 'utf8')) as object, 512), 'generic-walks');
    const tools = [
      { name: 'add', parameters: { type: 'object', properties: { a: { type: 'integer', minimum: 0, maximum: 9 }, b: { type: 'integer' } }, required: ['a', 'b'] } },
      { name: 'say', parameters: { type: 'object', properties: { text: { type: 'string', maxLength: 8 } }, required: ['text'] } },
    ];
    const callOf = (t: (typeof tools)[number]) => ({ type: 'object', properties: { name: { const: t.name }, arguments: t.parameters }, required: ['name', 'arguments'], additionalProperties: false });
    const only = (key: string, value: object) => ({ type: 'object', properties: { [key]: value }, required: [key], additionalProperties: false });
    const rng = createRng(9);
    for (const parallel of [true, false]) {
      for (const choice of ['auto', 'required', { name: 'say' }] as const) {
        const label = `${JSON.stringify(choice)}, parallel ${parallel}`;
        const call = { anyOf: tools.filter((t) => typeof choice !== 'object' || t.name === choice.name).map(callOf) };
        const calling = parallel && typeof choice !== 'object' ? only('tool_calls', { type: 'array', items: call, minItems: 1 }) : only('tool_call', call);
        const schema = choice === 'auto' ? { anyOf: [calling, only('response', { type: 'string' })] } : calling;
        const format: ResponseFormat = { type: 'tool_calls', tools, choice, parallel, syntax: 'generic' };
        let ended = 0;
        let answered = 0;
        let called = 0;
        for (let walk = 0; walk < 40; walk++) {
          // auto: on half the walks the opening of an answer; the grammar refuses it elsewhere
          const prefix = rng() < 0.5 ? '{"response": "' : '';
          const text = await randomWalk(factory, format, rng, prefix);
          if (prefix && choice !== 'auto') expect(text, label).to.equal(undefined);
          if (text === undefined) continue;
          ended++;
          const value = JSON.parse(text) as { response?: string; tool_calls?: { name: string; arguments: unknown }[]; tool_call?: { name: string; arguments: unknown } };
          expect(ajv.validate(schema, value), `${label}: ${text} → ${ajv.errorsText()}`).to.equal(true);
          const splitter = new GenericReplySplitter();
          const pieces = [splitter.push(text.slice(0, 7)), splitter.push(text.slice(7)), splitter.end()];
          const calls = pieces.flatMap((p) => p.toolCalls).map((c) => ({ name: c.name, arguments: JSON.parse(c.arguments) as unknown }));
          expect(pieces.map((p) => p.content).join(''), text).to.equal(value.response ?? '');
          expect(calls, text).to.deep.equal(value.tool_calls ?? (value.tool_call ? [value.tool_call] : []));
          if (value.response !== undefined) answered++;
          called += calls.length;
        }
        expect(ended, label).to.be.greaterThan(15);
        expect(called, label).to.be.greaterThan(choice === 'auto' ? 5 : 10);
        if (choice === 'auto') expect(answered, label).to.be.greaterThan(5);
      }
    }
  });

  it('a thought first (reasoning models): free text to its closing tag, then the structure; or the structure alone unless the prompt opened the thought', async () => {
    const factory = new XGrammarFactory(grammarVocabulary(JSON.parse(await readFile(join(dir, 'tokenizer.json'), 'utf8')) as object, 512), 'thought-walks');
    const schema = { type: 'object', properties: { n: { type: 'integer', minimum: 0, maximum: 9 } }, required: ['n'], additionalProperties: false };
    const tags = { open: '<think>', close: '</think>' };
    const tools = [{ name: 'add', parameters: { type: 'object', properties: { a: { type: 'integer', minimum: 0, maximum: 9 } }, required: ['a'] } }];
    const rng = createRng(6);
    for (const opened of [false, true]) {
      for (const inner of [{ type: 'json_schema', schema }, { type: 'tool_calls', tools, choice: 'required', parallel: false }] as const) {
        const format: ResponseFormat = { ...inner, thought: { ...tags, opened } };
        const label = `${inner.type}, ${opened ? 'opened' : 'not opened'}`;
        let thought = 0;
        let direct = 0;
        for (let walk = 0; walk < 40; walk++) {
          // free text with the structure's own characters in it, on most walks closed, then whitespace
          const free = Array.from({ length: Math.floor(rng() * 12) }, () => ' ab{}"<>/t'[Math.floor(rng() * 10)]).join('');
          const pick = rng();
          const start = opened ? '' : '<think>';
          // (the structure's first characters start it straight away, or, in an opened thought, are text of the thought)
          const direct0 = inner.type === 'json_schema' ? '{' : '<tool_call>';
          const prefix = pick < 0.15 ? '' : pick < 0.3 ? direct0 : pick < 0.6 ? `${start}${free}` : `${start}${free}</think>\n\n`;
          const text = await randomWalk(factory, format, rng, prefix);
          if (text === undefined) continue;
          const split = splitReply({ reasoning: { tags, open: opened }, ...(inner.type === 'tool_calls' ? { tools: 'hermes' as const } : {}) }, text);
          if (split.reasoning || text.includes('</think>')) thought++;
          else direct++;
          // Opened, the reply must close the thought before the structure.
          if (opened) expect(text, label).to.include('</think>');
          const answer = inner.type === 'json_schema' ? JSON.parse(split.content) : JSON.parse(split.toolCalls[0]!.arguments);
          expect(ajv.validate(inner.type === 'json_schema' ? schema : tools[0]!.parameters, answer), `${label}: ${text} → ${ajv.errorsText()}`).to.equal(true);
          if (inner.type === 'tool_calls') expect(split.toolCalls.map((c) => c.name), text).to.deep.equal(['add']);
          if (prefix.includes('</think>')) expect(split.reasoning, text).to.equal(free.trim());
        }
        expect(thought, label).to.be.greaterThan(10);
        if (!opened) expect(direct, label).to.be.greaterThan(3);
      }
    }
  });

  it('forces well-formed tool calls: required, a named tool, and auto', async () => {
    const tools = [
      { name: 'get_weather', parameters: { type: 'object', properties: { city: { enum: ['Paris', 'Oslo'] }, days: { type: 'integer', minimum: 1, maximum: 7 } }, required: ['city', 'days'] } },
      { name: 'add', parameters: { type: 'object', properties: { a: { type: 'integer', minimum: 0, maximum: 99 }, b: { type: 'integer', minimum: 0, maximum: 99 } }, required: ['a', 'b'] } },
    ];
    const call = (text: string) => {
      // Either layout templates use (a newline inside the tags, or none), after the blank this SentencePiece vocabulary may write.
      const m = /^<tool_call> ?(\n(.*)\n|([^\n].*[^\n]))<\/tool_call>$/s.exec(text);
      expect(m, text).to.not.equal(null);
      const body = JSON.parse(m![2] ?? m![3]!) as { name: string; arguments: unknown };
      const tool = tools.find((t) => t.name === body.name)!;
      expect(ajv.validate(tool.parameters, body.arguments), text).to.equal(true);
      return body.name;
    };
    const required = await engine.generate({ prompt: 'Once upon a time' }, { ...SAMPLING, responseFormat: { type: 'tool_calls', tools, choice: 'required', parallel: false } });
    call(required.rows[0]!.text);
    // parallel calls (the default): one per line, each well-formed (the last may be cut by maxTokens)
    const several = (await engine.generate({ prompt: 'Once upon a time' }, { ...SAMPLING, responseFormat: { type: 'tool_calls', tools, choice: 'required' } })).rows[0]!;
    const blocks = several.text.split(/(?<=<\/tool_call>)\n/);
    expect(blocks.length, several.text).to.be.greaterThan(1);
    for (const block of several.finishReason === 'length' ? blocks.slice(0, -1) : blocks) call(block);
    const named = await engine.generate({ prompt: 'Once upon a time' }, { ...SAMPLING, responseFormat: { type: 'tool_calls', tools, choice: { name: 'add' } } });
    expect(call(named.rows[0]!.text)).to.equal('add');
    // auto: the model may write free text; where it starts a call, the call is well-formed
    const auto = await engine.generate({ prompt: 'Once upon a time' }, { ...SAMPLING, maxTokens: 60, responseFormat: { type: 'tool_calls', tools, choice: 'auto' } });
    const at = auto.rows[0]!.text.indexOf('<tool_call>');
    if (at !== -1 && auto.rows[0]!.finishReason === 'eos') call(auto.rows[0]!.text.slice(at));
    // auto ends a reply that calls no tool where the model ends it, exactly as without tools (its end token was
    // masked in free text before). The bias makes stories260K end its story; sampled with top-k, so that the bitmask
    // is applied before the pick (a plain pick is only checked after, where the matcher took the end token).
    const options = { maxTokens: 60, logitBias: { 2: 20 }, temperature: 0.5, topK: 3, seed: 3 };
    const plain = (await engine.generate({ prompt: 'Once upon a time' }, options)).rows[0]!;
    expect(plain.finishReason).to.equal('eos');
    const withTools = (await engine.generate({ prompt: 'Once upon a time' }, { ...options, responseFormat: { type: 'tool_calls', tools, choice: 'auto' } })).rows[0]!;
    expect({ text: withTools.text, finishReason: withTools.finishReason }).to.deep.equal({ text: plain.text, finishReason: 'eos' });
    const err = await engine.generate({ prompt: 'x' }, { responseFormat: { type: 'tool_calls', tools, choice: { name: 'nope' } } }).catch((e: Error) => e);
    expect((err as Error).message).to.match(/names "nope", which is not among the bound tools/);
  });

  it('regexes count characters, not bytes, on a byte-level vocabulary: `.` and `\\s` as JavaScript reads them (random walks over GPT-2 tokens)', async () => {
    const json = JSON.parse(await readFile(join(models.gpt2Legacy, 'tokenizer.json'), 'utf8')) as object;
    const tokenizer = await TextTokenizer.fromDirectory(models.gpt2Legacy);
    const factory = new XGrammarFactory(grammarVocabulary(json, tokenizer.vocabSize), 'gpt2-regex');
    const eos = 50256;
    const rng = createRng(2);
    const mismatches: string[] = [];
    const cases: [ResponseFormat, (text: string) => boolean][] = [
      ...['.{3}', 'a.c', '\\s+x', '[\\s\\d]{2,5}', '(.|,){1,4}!'].map((pattern): [ResponseFormat, (t: string) => boolean] => [{ type: 'regex', pattern }, (t) => new RegExp(`^(?:${pattern})$`, 'u').test(t)]),
      // inside a JSON string: quotes, backslashes and control characters are never written raw
      ...['^.{2,4}$', '^[^,]+$', '^\\W{1,3}$', 'a"b\\\\', '^[ -~]{1,5}$'].map((pattern): [ResponseFormat, (t: string) => boolean] => [
        { type: 'json_schema', schema: { type: 'string', pattern } },
        (t) => {
          try {
            return ajv.validate({ type: 'string', pattern }, JSON.parse(t));
          } catch {
            return false;
          }
        },
      ]),
    ];
    // Past 40 tokens a walk mostly closes a JSON string with a quote, if it may: otherwise a walk ending there depends on
    // picking one of its few closing tokens by chance (blanking the tokens of bytes UTF-8 never uses shifted the
    // draws, and `^[^,]+$` then ended no walk of 20).
    const gpt2: WalkVocabulary = { candidates: Array.from({ length: eos }, (_, id) => id), eos, decode: (ids) => tokenizer.decode(ids), steps: 60, closers: tokenizer.encode('"', false) };
    for (const [format, valid] of cases) {
      let ended = 0;
      for (let walk = 0; walk < 20; walk++) {
        const text = await walkGrammar(factory, format, rng, gpt2);
        if (text === undefined) continue;
        ended++;
        // XGrammar takes a lead byte past U+10FFFF (F4 BF.., F5..) as the start of a character: such rare
        // invalid sequences decode to U+FFFD and are not the rewrite's to judge.
        if (!text.includes('\ufffd') && !valid(text)) mismatches.push(`${JSON.stringify(format)}: ${JSON.stringify(text)}`);
      }
      expect(ended, JSON.stringify(format)).to.be.greaterThan(3);
    }
    expect(mismatches).to.deep.equal([]);
    // Exactly: `.{3}` ends after three characters, not after three bytes ("¨b" is two characters, three bytes),
    // and takes no carriage return; a JSON pattern's class does not take a quote (it would end the string).
    const takes = async (format: ResponseFormat, text: string) => {
      const c = await factory.create(format, [eos]);
      try {
        return tokenizer.encode(text, false).every((id) => c.tryAccept(id)) && c.tryAccept(eos);
      } finally {
        c.dispose();
      }
    };
    expect(await takes({ type: 'regex', pattern: '.{3}' }, '¨b')).to.equal(false);
    expect(await takes({ type: 'regex', pattern: '.{3}' }, '¨bc')).to.equal(true);
    expect(await takes({ type: 'regex', pattern: '.{3}' }, 'a\rb')).to.equal(false);
    expect(await takes({ type: 'json_schema', schema: { type: 'string', pattern: '^[^,]+$' } }, '"a"b"')).to.equal(false);
    expect(await takes({ type: 'json_schema', schema: { type: 'string', pattern: '^[^,]+$' } }, '"a\\"b"')).to.equal(false);
    expect(await takes({ type: 'json_schema', schema: { type: 'string', pattern: 'a"b' } }, '"a\\"b"')).to.equal(true);
    // the rewrite itself: escapes it does not read stay as written; inside JSON a named quote, backslash or
    // newline becomes its JSON escape, and classes lose exactly the characters JSON escapes
    expect(rewriteRegex('\\p{L}+[a-z\\-]\\.')).to.equal('\\p{L}+[a-z\\-]\\.');
    // what XGrammar's regular expressions lack is refused here, naming it (its compile would fail the whole request)
    expect(() => rewriteRegex('(a)\\1', false, 'here')).to.throw(/here: back-references \(\\1…\) cannot be enforced/);
    expect(() => rewriteRegex('a(?!b)', false, 'here')).to.throw(/here: lookaround assertions \(\(\?!…\) cannot be enforced/);
    for (const pattern of ['^a[\\1]$', '[^\\1]']) expect(() => rewriteRegex(pattern, true, 'here')).to.throw(/here: \\1 inside a character class cannot be enforced/);
    expect(rewriteRegex('\\\\1(?:a)')).to.equal('\\\\1(?:a)');
    expect(rewriteRegex('a"b\\n\\\\c', true)).to.equal('a\\\\"b\\\\n\\\\\\\\c');
    expect(rewriteRegex('^[ -~]+$', true)).to.equal('^[ -!#-\\[\\]-~]+$');
    expect(() => rewriteRegex('[\\W]', true, 'here')).to.throw(/here: \\W inside a character class/);
  });

  it('constrains a byte-level BPE vocabulary (GPT-2): decoded by the real tokenizer, every path is valid, Unicode split across tokens included', async () => {
    const json = JSON.parse(await readFile(join(models.gpt2Legacy, 'tokenizer.json'), 'utf8')) as object;
    const tokenizer = await TextTokenizer.fromDirectory(models.gpt2Legacy);
    const vocab = grammarVocabulary(json, tokenizer.vocabSize);
    expect(vocab.kind).to.equal('byte_level');
    const eos = 50256;
    expect(vocab.tokens[eos]).to.equal(''); // <|endoftext|> is an added token: never text inside a reply
    const factory = new XGrammarFactory(vocab, 'gpt2');
    const schema = SCHEMAS.find((x) => x.name === 'unicode enum')!.schema;
    const rng = createRng(5);
    const logits = new Float32Array(vocab.tokens.length);
    const seen = new Set<string>();
    for (let path = 0; path < 6; path++) {
      const constraint = await factory.create({ type: 'json_schema', schema }, [eos]);
      const ids: number[] = [];
      while (!constraint.isComplete() && ids.length < 100) {
        for (let i = 0; i < logits.length; i++) logits[i] = rng();
        await constraint.mask(logits);
        let best = 0;
        for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
        constraint.accept(best);
        if (best !== eos) ids.push(best);
      }
      constraint.dispose();
      const text = tokenizer.decode(ids);
      expect(ajv.validate(schema, JSON.parse(text)), text).to.equal(true);
      seen.add(text);
    }
    expect(seen.size).to.be.greaterThan(1); // random paths reach different words
  });

  it('makes added tokens writable as their text in the encoded form of the vocabulary (byte-level: the tokenizer\'s own characters)', async () => {
    const json = JSON.parse(await readFile(join(models.gpt2Legacy, 'tokenizer.json'), 'utf8')) as object;
    const tokenizer = await TextTokenizer.fromDirectory(models.gpt2Legacy);
    const vocab = grammarVocabulary(json, tokenizer.vocabSize);
    const [space, tab] = [tokenizer.encode(' ', false), tokenizer.encode('\t', false)];
    expect([space.length, tab.length]).to.deep.equal([1, 1]);
    const [twoSpaces, twoTabs] = [tokenizer.tokenId('  ')!, tokenizer.tokenId('\t\t')!];
    expect([vocab.tokens[twoSpaces], vocab.tokens[twoTabs]]).to.deep.equal(['', '']); // added: not text by default
    const writable = withWritableTokens(vocab, ['  ', '\t\t', 'not an added token']);
    expect(writable.tokens[twoSpaces]).to.equal(vocab.tokens[space[0]!]!.repeat(2));
    expect(writable.tokens[twoTabs]).to.equal(vocab.tokens[tab[0]!]!.repeat(2));
    expect(writable.tokens.filter((t, id) => t !== vocab.tokens[id])).to.have.length(2);
    // And a grammar over it takes the added token for its text.
    const constraint = await new XGrammarFactory(writable, 'gpt2-writable').create({ type: 'grammar', grammar: 'root ::= "a" "  " "b"' }, [50256]);
    constraint.accept(tokenizer.encode('a', false)[0]!);
    expect(constraint.tryAccept(twoSpaces)).to.equal(true);
    constraint.dispose();
  });

  it('reads the bitmask straight out of XGrammar\'s memory: the same words as its getNextTokenBitmask along random paths', async () => {
    const vocabulary = grammarVocabulary(JSON.parse(await readFile(join(dir, 'tokenizer.json'), 'utf8')) as object, 512);
    const grammar = 'root ::= "{\\"n\\": " [0-9]+ ", \\"s\\": \\"" [a-z ]* "\\"}"';
    const eos = 2;
    // The reference: the library's own method, on a copy of the library of its own.
    const reference = loadXGrammar();
    const info = await reference.xg.TokenizerInfo.createTokenizerInfo(vocabulary.tokens, vocabulary.kind, vocabulary.prependSpace, 512);
    const compiled = await (await reference.xg.GrammarCompiler.createGrammarCompiler(info)).compileGrammar(grammar);
    // This bundle version lets its module out: the in-place read is what runs (an upgrade that stops it fails here).
    expect(reference.binding()?.vecIntToView).to.be.a('function');
    const factory = new XGrammarFactory(vocabulary, 'in-place');
    const rng = createRng(12);
    for (let path = 0; path < 4; path++) {
      const [constraint, matcher] = [await factory.create({ type: 'grammar', grammar }, [eos]), await reference.xg.GrammarMatcher.createGrammarMatcher(compiled, [eos])];
      for (let k = 0; k < 60 && !constraint.isComplete(); k++) {
        if (k % 2) constraint.prepare!(); // computed ahead (as while a model step runs) and on demand
        const words = Array.from(await constraint.allowed());
        expect(words, `path ${path} step ${k}`).to.deep.equal(Array.from(await matcher.getNextTokenBitmask()));
        const allowed = words.flatMap((word, w) => Array.from({ length: 32 }, (_, b) => (((word >>> b) & 1) === 1 ? [w * 32 + b] : [])).flat());
        const token = allowed[Math.floor(rng() * allowed.length)]!;
        constraint.accept(token);
        expect(matcher.acceptToken(token)).to.equal(true);
      }
      constraint.dispose();
      matcher.dispose();
    }
  });

  it('applies a bitmask word-wise exactly as bit by bit: −∞ on the tokens whose bit is 0, the others untouched', () => {
    const rng = createRng(9);
    for (let trial = 0; trial < 200; trial++) {
      const n = 1 + Math.floor(rng() * 3000); // widths that end inside a word, and bitmasks wider than the logits
      const mask = new Int32Array(((n + 31) >>> 5) + (trial % 2));
      // Random words, or runs of all-allowed / all-masked words between them (the shapes the fast paths take).
      for (let w = 0; w < mask.length; w++) mask[w] = trial % 3 === 0 || rng() < 0.3 ? (rng() * 2 ** 32) | 0 : rng() < 0.5 ? 0 : -1;
      const logits = Float32Array.from({ length: n }, () => rng());
      const before = logits.slice();
      applyBitmask(logits, mask);
      for (let i = 0; i < n; i++) {
        const allowed = ((mask[i >> 5]! >>> (i & 31)) & 1) === 1;
        if (logits[i] !== (allowed ? before[i] : -Infinity)) expect.fail(`trial ${trial}: token ${i} is ${logits[i]} (allowed: ${allowed})`);
      }
    }
  });

  it('writes length-bounded strings one rule per count: the same language and masks as XGrammar\'s counted repetition without control characters', async () => {
    const { xg } = loadXGrammar();
    // `ends`: random paths finish within the steps (with only a minimum length they rarely do).
    const cases = [
      { ends: true, schema: { type: 'string', minLength: 2, maxLength: 5 } },
      { ends: true, schema: { type: 'object', properties: { a: { type: 'string', maxLength: 3 }, b: { type: 'array', items: { type: 'string', minLength: 1, maxLength: 2 } } }, required: ['a'] } },
      { ends: false, schema: { type: 'object', properties: { c: { type: 'string', minLength: 3 } }, required: ['c'] } },
    ];
    const vocabulary = grammarVocabulary(JSON.parse(await readFile(join(models.gpt2Legacy, 'tokenizer.json'), 'utf8')) as object, 50257);
    const factory = new XGrammarFactory(vocabulary, 'unroll-test');
    const eos = 50256;
    const rng = createRng(5);
    for (const { schema, ends } of cases) {
      const xgrammars = await xg.Testings._jsonSchemaToEBNF(JSON.stringify(schema), false, -1, undefined, true);
      // XGrammar's class admits a raw tab or U+0001 inside the string, which JSON forbids: the reference is its
      // counted repetition over the class without control characters.
      if (schema.type === 'string') expect(await xg.Testings.isGrammarAcceptString(await xg.Grammar.fromEBNF(xgrammars), '"a\tb"')).to.equal(true);
      const raw = xgrammars.replaceAll('[^"\\\\\\r\\n]', '[^"\\\\\\x00-\\x1f]');
      expect(raw).to.not.equal(xgrammars);
      const unrolled = unrollBoundedStrings(xgrammars);
      expect(unrolled, JSON.stringify(schema)).to.not.match(/\{\d+,\d*\}/); // every bounded string was rewritten
      // Counts are of characters, not bytes: "é" and "日" are one each.
      for (const text of ['""', '"a"', '"ab"', '"abcde"', '"abcdef"', '"éé"', '"日本語"', '"a\\"b"', '"a\tb"', '"a\u0001"']) {
        const expected = xg.Testings.isGrammarAcceptString(await xg.Grammar.fromEBNF(raw), text);
        expect(await xg.Testings.isGrammarAcceptString(await xg.Grammar.fromEBNF(unrolled), text), `${JSON.stringify(schema)} ${text}`).to.equal(await expected);
      }
      // Along random paths (uniform among the allowed tokens) both grammars allow the same tokens at every step.
      const pair = async () => Promise.all([raw, unrolled].map((grammar) => factory.create({ type: 'grammar', grammar }, [eos])));
      let [a, b] = await pair();
      let completed = 0;
      for (let k = 0; k < 80; k++) {
        const [ma, mb] = [new Float32Array(vocabulary.tokens.length), new Float32Array(vocabulary.tokens.length)];
        await a!.mask(ma);
        await b!.mask(mb);
        const allowed: number[] = [];
        for (let i = 0; i < ma.length; i++) {
          if (ma[i] !== mb[i]) expect.fail(`${JSON.stringify(schema)}: token ${i} ${ma[i]} vs ${mb[i]} at step ${k}`);
          if (ma[i] === 0) allowed.push(i);
        }
        const token = allowed[Math.floor(rng() * allowed.length)]!;
        a!.accept(token);
        b!.accept(token);
        expect(b!.isComplete()).to.equal(a!.isComplete());
        if (a!.isComplete()) {
          completed++;
          a!.dispose(), b!.dispose();
          [a, b] = await pair();
        }
      }
      a!.dispose(), b!.dispose();
      if (ends) expect(completed, JSON.stringify(schema)).to.be.greaterThan(0);
    }
  });

  it('writes bounded numbers exactly (XGrammar alone admits 121..129 for [-5, 120])', async () => {
    const { xg } = loadXGrammar();
    const accepts = async (ebnf: string, text: string) => xg.Testings.isGrammarAcceptString(await xg.Grammar.fromEBNF(`root ::= ${ebnf}`), text);
    const ranges = [
      { integer: true, minimum: -5, maximum: 120 },
      { integer: true, exclusiveMinimum: -13, exclusiveMaximum: 7 },
      { integer: true, minimum: 95 },
      { integer: true, maximum: -3 },
      { integer: false, minimum: 0, maximum: 3 },
      { integer: false, exclusiveMinimum: -2, exclusiveMaximum: 1 },
      { integer: false, minimum: -40.5, maximum: 45.5 },
    ];
    const samples = ['0', '-0.5', '3', '3.5', '2.999', '-2', '-1.5', '-13', '-12', '-5', '-6', '7', '6', '6.01', '95', '94', '1000', '120', '121', '129', '-3', '-4', '45', '45.2', '-40', '-40.7', '100.5'];
    for (const b of ranges) {
      const ebnf = numberRangeEbnf(b, '#');
      for (const text of samples) {
        const v = Number(text);
        const valid =
          (!b.integer || Number.isInteger(v)) &&
          (b.minimum === undefined || v >= b.minimum) && (b.maximum === undefined || v <= b.maximum) &&
          (b.exclusiveMinimum === undefined || v > b.exclusiveMinimum) && (b.exclusiveMaximum === undefined || v < b.exclusiveMaximum);
        const accepted = await accepts(ebnf, text);
        // every integer in range is written; nothing out of range ever is
        if (accepted) expect(valid, `${JSON.stringify(b)} accepted ${text}`).to.equal(true);
        if (valid && Number.isInteger(v)) expect(accepted, `${JSON.stringify(b)} refused ${text}`).to.equal(true);
      }
    }
    // Random integer ranges (up to the safe-integer bounds zod writes): accepted exactly when in range.
    // (XGrammar's grammar engine admitted 100000000 for [17, 99999999] before same-length runs were merged.)
    const rng = createRng(7);
    const randInt = () => {
      let digits = String(1 + Math.floor(rng() * 9));
      for (let len = 1 + Math.floor(rng() * 16); digits.length < len; ) digits += Math.floor(rng() * 10);
      const v = Math.min(Number(digits), Number.MAX_SAFE_INTEGER);
      return rng() < 0.4 ? -v : v;
    };
    const intRanges = [{ minimum: -Number.MAX_SAFE_INTEGER, maximum: Number.MAX_SAFE_INTEGER }, { minimum: 17, maximum: 99_999_999 }];
    for (let i = 0; i < 12; i++) {
      const [x, y] = [randInt(), randInt()];
      intRanges.push({ minimum: Math.min(x, y), maximum: Math.max(x, y) });
    }
    for (const b of intRanges) {
      const grammar = await xg.Grammar.fromEBNF(`root ::= ${numberRangeEbnf({ integer: true, ...b }, '#')}`);
      const probes = ['-50000000000000000000', '0', ...[b.minimum, b.maximum].flatMap((v) => [v - 1, v, v + 1].map(String))];
      for (let i = 0; i < 40; i++) probes.push(String(randInt()));
      for (const text of probes) {
        const valid = Number(text) >= b.minimum && Number(text) <= b.maximum;
        expect(await xg.Testings.isGrammarAcceptString(grammar, text), `${JSON.stringify(b)}: ${text}`).to.equal(valid);
      }
    }
    expect(prepareJsonSchema({ type: 'integer', minimum: 0, maximum: 9 }).rules.size).to.equal(1);
  });
});
