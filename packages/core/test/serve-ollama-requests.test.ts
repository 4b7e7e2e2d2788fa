/**
 * Ollama's requests read as Ollama reads them (its server/routes.go and api/types.go): model names as written and
 * echoed, matched with or without `:latest` and ignoring case; `logprobs` on raw text; `think: "max"`; the options it
 * skips; a tool message's `tool_call_id`; roles in any case; raw mode's refusal of `system`.
 */
import { expect } from 'chai';
import { postJson, useServers } from './support/servers.js';
import { storiesModule } from './support/modules.js';
import { TOOLS_TEMPLATE } from './support/chat-templates.js';
import { parseOllamaChat } from '../src/serve/ollama-request.js';
import { ServedModels, ollamaServedName } from '../src/serve/models.js';

type Generated = { model: string; response: string; eval_count: number; logprobs?: { token: string; logprob: number; top_logprobs?: unknown[] }[] };

describe("reasonplug serve: Ollama's requests as Ollama reads them", function () {
  this.timeout(180_000);
  let url: string;
  const { serve } = useServers();
  const generate = (at: string, body: Record<string, unknown>) => postJson(at, '/api/generate', { stream: false, prompt: 'Once upon a time', raw: true, ...body, options: { temperature: 0, num_predict: 4, ...(body.options as object) } });

  before(async () => {
    url = await serve({ engine: { model: await storiesModule() }, chatTemplate: TOOLS_TEMPLATE });
  });

  it('answers name the model as the request wrote it; a name served with :latest answers to it, with or without; case does not matter', async () => {
    const latest = await generate(url, { model: 'stories260k:latest' });
    expect(latest.status).to.equal(200);
    expect(((await latest.json()) as Generated).model).to.equal('stories260k:latest');
    const cased = await generate(url, { model: 'Stories260K' });
    expect(cased.status).to.equal(200);
    expect(((await cased.json()) as Generated).model).to.equal('Stories260K');
    expect((await postJson(url, '/v1/completions', { model: 'STORIES260K:Latest', prompt: 'Once', max_tokens: 1 })).status).to.equal(200);
    // /api/show too, its details the backbone's (no parent)
    const shown = (await (await postJson(url, '/api/show', { model: 'STORIES260K:latest' })).json()) as { details: { parent_model: string } };
    expect(shown.details.parent_model).to.equal('');
    const tagged = await serve({ engine: { model: await storiesModule() }, name: 'toy:latest' });
    for (const model of ['toy:latest', 'toy', 'Toy']) {
      const res = await generate(tagged, { model });
      expect(res.status, model).to.equal(200);
      expect(((await res.json()) as Generated).model).to.equal(model);
    }
    expect(ollamaServedName('qwen2.5:latest')).to.equal('qwen2.5');
    expect(ollamaServedName('stories:260k')).to.equal('stories:260k');
  });

  it('a name matching exactly wins over one matching ignoring case', () => {
    const models = new ServedModels('m', ['Math', 'math'], { Fast: 'm+Math' });
    expect(models.resolve('m+math')).to.deep.equal(['math']);
    expect(models.resolve('m+Math')).to.deep.equal(['Math']);
    expect(models.resolve('M+MATH:latest')).to.deep.equal(['Math']);
    expect(models.resolve('fast')).to.deep.equal(['Math']);
    expect(() => models.resolve('m+physics')).to.throw(/The model "m\+physics" does not exist/);
  });

  it('logprobs on raw text come as the completion\'s, with top_logprobs alternatives', async () => {
    const res = await generate(url, { model: 'stories260k', logprobs: true, top_logprobs: 2, stream: true });
    expect(res.status).to.equal(200);
    const lines = (await res.text()).trim().split('\n').map((l) => JSON.parse(l) as Generated);
    const logprobs = lines.flatMap((l) => l.logprobs ?? []);
    expect(logprobs).to.have.length(4);
    expect(logprobs.every((e) => e.top_logprobs?.length === 2)).to.equal(true);
    expect((await generate(url, { model: 'stories260k', logprobs: true })).status).to.equal(200);
  });

  it('think "max" is the highest reasoning effort; options Ollama skips are skipped, mirostat other than 0 still refused', async () => {
    const chat = parseOllamaChat({ model: 'm', messages: [{ role: 'user', content: 'Hi' }], think: 'max' });
    expect(chat.templateKwargs).to.deep.equal({ reasoning_effort: 'high' });
    const plain = (await (await generate(url, { model: 'stories260k' })).json()) as Generated;
    const skipped = await generate(url, { model: 'stories260k', options: { mirostat: 0, mirostat_tau: 5, mirostat_eta: 0.1, draft_num_predict: 4, penalize_newline: true, no_such_option: 1 } });
    expect(skipped.status).to.equal(200);
    expect(((await skipped.json()) as Generated).response).to.equal(plain.response);
    const mirostat = await generate(url, { model: 'stories260k', options: { mirostat: 2 } });
    expect([mirostat.status, ((await mirostat.json()) as { error: string }).error]).to.deep.equal([400, 'options.mirostat 2 is not supported (only 0)']);
  });

  it("a tool message keeps its tool_call_id; roles are read in any case", () => {
    const chat = parseOllamaChat({
      model: 'm',
      messages: [
        { role: 'User', content: 'What are two and two?' },
        { role: 'ASSISTANT', content: '', tool_calls: [{ id: 'call_7', function: { name: 'add', arguments: { a: 2, b: 2 } } }] },
        { role: 'Tool', content: '4', tool_name: 'add', tool_call_id: 'call_7' },
      ],
    });
    expect(chat.messages.map((m) => m.role)).to.deep.equal(['user', 'assistant', 'tool']);
    expect(chat.messages[2]).to.include({ tool_call_id: 'call_7', name: 'add', content: '4' });
  });

  it('raw mode refuses a system message, a template or a context, in Ollama\'s words', async () => {
    for (const extra of [{ system: 'Be brief' }, { template: '{{ .Prompt }}' }, { context: [1, 2] }]) {
      const res = await generate(url, { model: 'stories260k', ...extra });
      expect([res.status, ((await res.json()) as { error: string }).error], JSON.stringify(extra)).to.deep.equal([400, 'raw mode does not support template, system, or context']);
    }
  });
});
