/**
 * A chat request naming a model the server does not run, on a server whose model has no chat template (the converted
 * stories260K): 404 `model_not_found` listing what is served on every chat endpoint, as a completion gets, not the
 * 400 `no_chat_template` its prompt would get were the model served.
 */
import { expect } from 'chai';
import { storiesModule } from './support/modules.js';
import { postJson, useServers } from './support/servers.js';

describe('serve: an unknown model on a chat endpoint of a model without a chat template', function () {
  this.timeout(120_000);
  const { serve } = useServers();
  let url: string;

  before(async () => {
    url = await serve({ engine: { model: await storiesModule() }, name: 'stories' });
  });

  const messages = [{ role: 'user', content: 'hi' }];

  it('is a 404 model_not_found naming what is served, on chat completions, responses, messages and Ollama chat', async () => {
    const cases: [string, Record<string, unknown>][] = [
      ['/v1/chat/completions', { model: 'nope', messages }],
      ['/v1/responses', { model: 'nope', input: 'hi' }],
      ['/v1/messages', { model: 'nope', max_tokens: 8, messages }],
      ['/api/chat', { model: 'nope', messages, stream: false }],
    ];
    for (const [path, body] of cases) {
      const res = await postJson(url, path, body);
      const text = await res.text();
      expect(res.status, `${path}: ${text}`).to.equal(404);
      expect(text, path).to.include('The model \\"nope\\" does not exist: this server runs stories');
    }
    const chat = await postJson(url, '/v1/chat/completions', { model: 'nope', messages });
    expect(((await chat.json()) as { error: { code: string } }).error.code).to.equal('model_not_found');
  });

  it('the model served still gets the 400 saying it has no chat template', async () => {
    const res = await postJson(url, '/v1/chat/completions', { model: 'stories', messages });
    expect(res.status).to.equal(400);
    expect(((await res.json()) as { error: { code: string } }).error.code).to.equal('no_chat_template');
  });
});
