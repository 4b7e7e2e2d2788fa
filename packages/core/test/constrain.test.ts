import { expect } from 'chai';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { Engine } from '../src/engine.js';
import { XGrammarFactory, grammarVocabulary, prepareJsonSchema, type ResponseFormat } from '../src/constrain/index.js';
import { numberRangeEbnf } from '../src/constrain/number-range.js';
import { loadXGrammar } from '../src/constrain/xgrammar-loader.js';
import { storiesModule } from './support/modules.js';
import { SCHEMAS } from './constrain-schemas.js';

const ajv = new Ajv2020({ strict: false, allErrors: true });
(addFormats as unknown as (a: Ajv2020) => void)(ajv);

/** Settings under which the tiny model finishes its answers: a little randomness, a penalty against loops. */
const SAMPLING = { temperature: 0.7, seed: 11, repetitionPenalty: 1.3, maxTokens: 200 };

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
});
