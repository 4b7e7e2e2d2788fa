/**
 * Structured output in the request fields of vLLM (`guided_json`, `guided_regex`, `guided_choice`, `guided_grammar`,
 * `structured_outputs`) and llama.cpp's server (`json_schema`, `grammar` in GBNF), as clients written for those servers
 * send them: @langchain/openai's ChatOpenAI with `modelKwargs`, and plain fetch. The trained stories260K writes the
 * replies, sampled; JavaScript's regular expressions and a JSON Schema validator judge them.
 */
import { expect } from 'chai';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { ChatOpenAI } from '@langchain/openai';
import { storiesModule } from './support/modules.js';
import { TOOLS_TEMPLATE } from './support/chat-templates.js';
import { postJson, useServers } from './support/servers.js';

const SCHEMA = {
  type: 'object',
  properties: { name: { type: 'string', maxLength: 10 }, age: { type: 'integer', minimum: 1, maximum: 99 }, mood: { enum: ['happy', 'sad'] } },
  required: ['name', 'age', 'mood'],
  additionalProperties: false,
};
const ajv = new Ajv2020({ strict: false });
const CHOICES = ['sunny', 'rainy', 'a "cloudy"\nday'];

describe('reasonplug serve: structured output in vLLM\'s and llama.cpp\'s request fields', function () {
  this.timeout(180_000);
  const { serve } = useServers();
  let url: string;
  /** A completion of "Once upon a time" under `fields`, sampled with `seed`: its text and finish reason. */
  const complete = async (fields: Record<string, unknown>, seed = 1) => {
    const res = await postJson(url, '/v1/completions', { model: 'stories', prompt: 'Once upon a time', max_tokens: 60, temperature: 0.9, seed, ...fields });
    expect(res.status, JSON.stringify(fields)).to.equal(200);
    const { text, finish_reason } = ((await res.json()) as { choices: { text: string; finish_reason: string }[] }).choices[0]!;
    return { text, finish: finish_reason };
  };

  before(async () => {
    url = await serve({ engine: { model: await storiesModule() }, name: 'stories', chatTemplate: TOOLS_TEMPLATE });
  });

  it('guided_choice through ChatOpenAI (modelKwargs): the reply is one of the strings, whatever the seed, streamed or not', async () => {
    for (let seed = 1; seed <= 4; seed++) {
      const chat = new ChatOpenAI({ model: 'stories', apiKey: 'none', temperature: 1, maxTokens: 40, configuration: { baseURL: `${url}/v1` }, maxRetries: 0, modelKwargs: { guided_choice: CHOICES, seed } });
      const reply = await chat.invoke('What is the weather like?');
      expect(CHOICES, `seed ${seed}`).to.include(reply.content);
      let streamed = '';
      for await (const chunk of await chat.stream('What is the weather like?')) streamed += chunk.content as string;
      expect(streamed).to.equal(reply.content);
    }
  });

  it('guided_choice among choices sharing a prefix: only the choices (an alternation of them let the grammar engine write "baaaa")', async () => {
    // (quoted, as JSON strings among other choices: 54 of 60 draws were none of them)
    const choices = ['"a"', '"b"', '"ba"'];
    const res = await postJson(url, '/v1/completions', { model: 'stories', prompt: 'Once upon a time', max_tokens: 20, temperature: 1.3, seed: 1, n: 30, guided_choice: choices });
    const texts = ((await res.json()) as { choices: { text: string }[] }).choices.map((c) => c.text);
    expect(texts).to.have.length(30);
    for (const t of texts) expect(choices, JSON.stringify(texts)).to.include(t);
  });

  it('guided_regex and structured_outputs.regex: the whole completion matches', async () => {
    const pattern = '[A-Z][a-z]{2,6} (ran|sat) [0-9]{1,2} times\\.';
    for (const [fields, seed] of [[{ guided_regex: pattern }, 1], [{ structured_outputs: { regex: pattern } }, 2], [{ guided_regex: pattern }, 3]] as const) {
      const { text, finish } = await complete(fields, seed);
      expect(text).to.match(new RegExp(`^(?:${pattern})$`));
      expect(finish).to.equal('stop');
    }
  });

  it('a JSON Schema as guided_json (an object or its text), structured_outputs.json, or llama.cpp\'s json_schema: valid JSON', async () => {
    const asked = [{ guided_json: SCHEMA }, { guided_json: JSON.stringify(SCHEMA) }, { structured_outputs: { json: SCHEMA } }, { json_schema: SCHEMA }];
    for (const [i, fields] of asked.entries()) {
      const { text, finish } = await complete(fields, i + 1);
      expect(finish, text).to.equal('stop');
      expect(ajv.validate(SCHEMA, JSON.parse(text)), `${text}: ${ajv.errorsText()}`).to.equal(true);
    }
    // Any object: the story model fills its strings with stories, so it may run to the token limit inside one.
    const object = await complete({ structured_outputs: { json_object: true } });
    expect(object.text).to.match(/^\{\s*"/);
    if (object.finish === 'stop') expect(JSON.parse(object.text)).to.be.an('object');
  });

  it("a GBNF grammar as llama.cpp's grammar, vLLM's guided_grammar and structured_outputs.grammar", async () => {
    const grammar = 'root ::= answer " because " reason "."\nanswer ::= "yes" | "no" | "maybe"\nreason ::= [a-z]+ (" " [a-z]+)?';
    const language = /^(yes|no|maybe) because [a-z]+( [a-z]+)?\.$/;
    for (const [i, fields] of [{ grammar }, { guided_grammar: grammar }, { structured_outputs: { grammar } }].entries()) {
      const { text } = await complete(fields, i + 1);
      expect(text).to.match(language);
    }
  });

  it('refuses two constraints at once, malformed fields and settings it cannot honour, each by name', async () => {
    const cases: [Record<string, unknown>, string, RegExp][] = [
      [{ guided_choice: ['a'], response_format: { type: 'json_object' } }, 'guided_choice', /response_format and guided_choice/],
      [{ guided_regex: 'a+', grammar: 'root ::= "a"' }, 'grammar', /guided_regex and grammar/],
      [{ structured_outputs: { regex: 'a', choice: ['a'] } }, 'structured_outputs.choice', /one constraint/],
      [{ guided_choice: [] }, 'guided_choice', /non-empty list/],
      [{ guided_choice: ['a', 3] }, 'guided_choice', /non-empty strings/],
      [{ guided_json: '{not json' }, 'guided_json', /not JSON/],
      [{ guided_json: [1] }, 'guided_json', /JSON Schema/],
      [{ guided_regex: '' }, 'guided_regex', /regular expression/],
      [{ grammar: '  ' }, 'grammar', /root rule/],
      [{ guided_json: SCHEMA, guided_whitespace_pattern: '[ ]*' }, 'guided_whitespace_pattern', /one blank or newline, or none, wherever JSON allows whitespace/],
      [{ guided_choice: ['a'], guided_decoding_backend: 'mystery' }, 'guided_decoding_backend', /xgrammar/],
      [{ structured_outputs: { structural_tag: '{}' } }, 'structured_outputs.structural_tag', /not supported/],
      [{ structured_outputs: 'yes' }, 'structured_outputs', /object/],
    ];
    for (const [fields, param, message] of cases) {
      for (const path of ['/v1/completions', '/v1/chat/completions']) {
        const body = path === '/v1/completions' ? { model: 'stories', prompt: 'x', ...fields } : { model: 'stories', messages: [{ role: 'user', content: 'x' }], ...fields };
        const res = await postJson(url, path, body);
        expect(res.status, `${path} ${JSON.stringify(fields)}`).to.equal(400);
        const { error } = (await res.json()) as { error: { message: string; param: string } };
        expect(error.param, JSON.stringify(fields)).to.equal(param);
        expect(error.message).to.match(message);
      }
    }
    // A backend named as vLLM names them is taken: XGrammar enforces the same language.
    const { text } = await complete({ guided_choice: ['yes', 'no'], guided_decoding_backend: 'xgrammar' });
    expect(['yes', 'no']).to.include(text);
  });
});
