/**
 * What `reasonplug serve` answers before a route does its work: `/api/show` and the chat routes on a bare graph (no
 * tokenizer.json) started with a chat template, and an echo of token ids there; the token routes (`/tokenize`, `/detokenize`, Anthropic's
 * `count_tokens`) while it shuts down, as every API route (the caller authorized first, then 503); and a body size
 * limit that is no whole number, refused before it listens. Raw sockets on loopback, the converted stories260K.
 */
import { expect } from 'chai';
import { builtModel } from './support/models.js';
import { storiesModule } from './support/modules.js';
import { postJson, useServers } from './support/servers.js';
import { within } from './support/assertions.js';
import { rawRequest } from './support/raw-http.js';
import { TOOLS_TEMPLATE } from './support/chat-templates.js';
import { startServer } from '../src/serve/server.js';

const TOOLS = [{ type: 'function', function: { name: 'add', parameters: { type: 'object', properties: { a: { type: 'number' } } } } }];
const NO_TOKENIZER = 'this model has no tokenizer.json beside it, so it cannot take chat messages';

describe("reasonplug serve: the routes' guards", function () {
  this.timeout(180_000);
  const { serve } = useServers();

  it('a bare graph started with a chat template: /api/show lists no tools, whatever the tool syntax; chats with tools get the 400 of no tokenizer', async () => {
    const model = await builtModel('guards-bare');
    for (const syntax of [undefined, 'hermes', 'generic'] as const) {
      const at = await serve({ engine: { model }, name: 'bare', chatTemplate: TOOLS_TEMPLATE, ...(syntax ? { toolCallSyntax: syntax } : {}) });
      const shown = await postJson(at, '/api/show', { model: 'bare' });
      expect(shown.status, `${syntax}: ${await shown.clone().text()}`).to.equal(200);
      const { capabilities, template } = (await shown.json()) as { capabilities: string[]; template: string };
      expect(capabilities, String(syntax)).to.deep.equal(['completion']);
      expect(template).to.equal(TOOLS_TEMPLATE);
      const messages = [{ role: 'user', content: 'Hi' }];
      const chat = await postJson(at, '/v1/chat/completions', { model: 'bare', messages, tools: TOOLS, max_tokens: 2 });
      expect(chat.status, String(syntax)).to.equal(400);
      expect(((await chat.json()) as { error: { message: string } }).error.message).to.equal(NO_TOKENIZER);
      const ollama = await postJson(at, '/api/chat', { model: 'bare', messages, tools: TOOLS, stream: false });
      expect([ollama.status, ((await ollama.json()) as { error: string }).error], String(syntax)).to.deep.equal([400, NO_TOKENIZER]);
    }
  });

  it('a bare graph: echo of token ids, which needs the tokenizer to write them as text, is a 400 before anything runs, streamed or not', async () => {
    const at = await serve({ engine: { model: await builtModel('guards-bare') }, name: 'bare' });
    for (const stream of [false, true]) {
      const res = await postJson(at, '/v1/completions', { model: 'bare', prompt: [1, 2, 3], max_tokens: 3, echo: true, stream });
      const { error } = (await res.json()) as { error: { message: string; param: string } };
      expect([res.status, error.message, error.param], `stream: ${stream}`).to.deep.equal([400, 'echo of token ids needs the model tokenizer', 'echo']);
    }
    // (without echo, ids run as ever)
    expect((await postJson(at, '/v1/completions', { model: 'bare', prompt: [1, 2, 3], max_tokens: 3 })).status).to.equal(200);
  });

  it('the token routes answer 503 once it shuts down (401 first to a caller without a key), and a body still arriving then is refused', async () => {
    const server = await startServer({ engine: { model: await storiesModule() }, port: 0, apiKeys: ['k'], shutdownTimeoutMs: 3_000 });
    try {
      await server.ready;
      const { host } = new URL(server.url);
      const bodies: Record<string, string> = {
        '/tokenize': JSON.stringify({ prompt: 'Once upon a time' }),
        '/detokenize': JSON.stringify({ tokens: [403, 407] }),
        '/v1/messages/count_tokens': JSON.stringify({ model: 'stories260k', messages: [{ role: 'user', content: 'Hi' }] }),
      };
      const head = (path: string, key: boolean) => `Host: ${host}\r\n${key ? 'Authorization: Bearer k\r\n' : ''}Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(bodies[path]!)}\r\n\r\n`;
      // Requests whose first line is in before the shutdown, the rest after it (a connection mid-request is not idle);
      // HTTP/1.0, so that each connection closes after its answer.
      const late = Object.keys(bodies).flatMap((path) => [true, false].map((key) => ({ path, key, raw: rawRequest(server.url, `POST ${path} HTTP/1.0\r\n`) })));
      // Requests whose bodies are still arriving at the shutdown.
      const trickled = Object.keys(bodies).map((path) => ({ path, raw: rawRequest(server.url, `POST ${path} HTTP/1.1\r\n${head(path, true)}${bodies[path]!.slice(0, 5)}`) }));
      // A stream that holds the shutdown for its deadline: 64 choices to the end of the context.
      const long = JSON.stringify({ model: 'stories260k', prompt: 'Once', n: 64, max_tokens: 2040, ignore_eos: true, stream: true });
      const running = rawRequest(server.url, `POST /v1/completions HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer k\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(long)}\r\n\r\n${long}`);
      for (const t0 = performance.now(); !running.received().includes('data: ') && performance.now() - t0 < 30_000; ) await new Promise((r) => setTimeout(r, 20));
      const closed = server.close();
      for (const { path, key, raw } of late) raw.socket.write(head(path, key) + bodies[path]);
      for (const { path, key, raw } of late) {
        await within(raw.closed, 2_000, `${path} (key: ${key}): the answer`);
        const answer = raw.received();
        if (key) expect(answer, path).to.match(/^HTTP\/1\.1 503 [^]*\r\nConnection: close[^]*"the server is shutting down"/i);
        else expect(answer, `${path} without a key`).to.match(/^HTTP\/1\.1 401 [^]*"Missing API key/);
      }
      for (const { path, raw } of trickled) {
        await within(raw.closed, 2_000, `${path} (trickled): the answer`);
        expect(raw.received(), `${path} (trickled)`).to.match(/^HTTP\/1\.1 503 [^]*"the server is shutting down"/);
      }
      expect(running.received(), 'the stream ran on meanwhile').to.not.include('[DONE]');
      await within(closed, 10_000, 'close()');
    } finally {
      await server.close();
    }
  });

  it('refuses a body size limit that is no whole number >= 1 before it listens', async () => {
    const model = await builtModel('guards-bare');
    for (const maxBodyBytes of [Number.NaN, -1, 0, 1.5, Infinity]) {
      const refused = await startServer({ engine: { model }, port: 0, maxBodyBytes }).then(
        async (server) => void (await server.close()),
        (err: Error) => err,
      );
      expect(refused, String(maxBodyBytes)).to.be.instanceOf(RangeError);
      expect((refused as Error).message).to.equal(`maxBodyBytes must be a whole number >= 1 (got ${maxBodyBytes})`);
    }
    // A whole number is the limit.
    const at = await serve({ engine: { model: await storiesModule() }, maxBodyBytes: 40 });
    expect((await postJson(at, '/tokenize', { prompt: 'Once' })).status).to.equal(200);
    const large = await postJson(at, '/tokenize', { prompt: 'Once upon a time, there was a little girl' });
    expect([large.status, ((await large.json()) as { error: { code: string } }).error.code]).to.deep.equal([413, 'body_too_large']);
  });
});
