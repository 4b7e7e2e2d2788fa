/**
 * `/tokenize` of a chat request with tools and a constraint of its own, on a model whose template renders no tools (the
 * generic syntax): the prompt describes the answer in that constraint, so `/tokenize` reads it as the chat route does
 * and gives the ids that request runs (`response_format`, and the other constraint fields chat reads).
 */
import { expect } from 'chai';
import { TextTokenizer, type ChatMessage } from '../src/tokenizer/tokenizer.js';
import { toolsShown } from '../src/tokenizer/tools-in-prompt.js';
import type { ResponseFormat } from '../src/constrain/types.js';
import { makeModule } from './support/modules.js';
import { GEMMA_TEMPLATE } from './support/chat-templates.js';
import { postJson, useServers } from './support/servers.js';
import { ADD_TOOL, SUM_SCHEMA } from './support/sum-tool.js';

const MESSAGES: ChatMessage[] = [{ role: 'user', content: 'What are two and two?' }];

describe('/tokenize of a chat request with tools and a response format (generic syntax)', function () {
  this.timeout(120_000);
  const { serve } = useServers();

  it('counts and gives the ids the chat request runs, its constraint read from response_format or the other fields', async () => {
    const dir = await makeModule({ name: 'gemma-tokenize-format', kind: 'backbone', chatTemplate: GEMMA_TEMPLATE });
    const tokenizer = await TextTokenizer.fromDirectory(dir);
    const url = await serve({ engine: { model: dir }, name: 'gemma-tokenize-format' });
    const body = { model: 'gemma-tokenize-format', messages: MESSAGES, tools: [ADD_TOOL] };
    const idsOf = (answer?: ResponseFormat) =>
      tokenizer.encode(tokenizer.applyChatTemplate(MESSAGES, { template: GEMMA_TEMPLATE, ...toolsShown(true, [ADD_TOOL], { choice: 'auto', parallel: true }, answer) }), false);
    const tokenized = async (fields: object) => {
      const res = await postJson(url, '/tokenize', { ...body, ...fields });
      expect(res.status, JSON.stringify(fields)).to.equal(200);
      return (await res.json()) as { count: number; tokens: number[] };
    };
    const promptTokens = async (fields: object) => {
      const res = await postJson(url, '/v1/chat/completions', { ...body, ...fields, max_tokens: 1 });
      expect(res.status, JSON.stringify(fields)).to.equal(200);
      return ((await res.json()) as { usage: { prompt_tokens: number } }).usage.prompt_tokens;
    };

    const cases: [object, ResponseFormat][] = [
      [{ response_format: { type: 'json_schema', json_schema: { name: 'sum', schema: SUM_SCHEMA, strict: true } } }, { type: 'json_schema', schema: SUM_SCHEMA }],
      [{ structured_outputs: { regex: '[0-9]+' } }, { type: 'regex', pattern: '[0-9]+' }],
    ];
    for (const [fields, format] of cases) {
      const { count, tokens } = await tokenized(fields);
      // The answer's description is in the prompt: it is longer than without the constraint.
      expect(tokens, JSON.stringify(fields)).to.deep.equal(idsOf(format)).and.not.deep.equal(idsOf());
      expect(count).to.equal(await promptTokens(fields));
    }
    expect((await tokenized({})).tokens).to.deep.equal(idsOf());

    // A malformed constraint is the chat route's 400, naming the field.
    const bad = await postJson(url, '/tokenize', { ...body, response_format: { type: 'yaml' } });
    expect(bad.status).to.equal(400);
    expect(((await bad.json()) as { error: { param: string } }).error.param).to.equal('response_format.type');
  });
});
