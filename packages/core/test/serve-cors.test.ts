/**
 * Browser pages calling `reasonplug serve` from other origins (CORS): the protocol's headers read with fetch, and a
 * real browser (Debian's chromium driven by puppeteer-core; skipped, saying why, where none is installed) running
 * OpenAI's JS SDK in pages of a listed origin, a loopback origin and an origin not listed.
 */
import { expect } from 'chai';
import { createServer, type Server } from 'node:http';
import { existsSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { build } from 'esbuild';
import { launch, type Browser } from 'puppeteer-core';
import { startServer, type RunningServer } from '../src/serve/server.js';
import { CorsPolicy, corsOriginOf } from '../src/serve/cors.js';
import { makeModule } from './support/modules.js';
import { repoRoot } from '../../../test/support/paths.js';

const KEY = 'cors-key';
const COMPLETION = { model: 'cors-model', prompt: 'Once upon a time', max_tokens: 8, temperature: 0 };

/** A browser to drive: $CHROME_PATH, else the usual install paths. */
function chromium(): string | undefined {
  return [process.env.CHROME_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'].find((p): p is string => !!p && existsSync(p));
}

describe('CORS: browser pages calling reasonplug serve', function () {
  this.timeout(120_000);
  let server: RunningServer;
  /** Serves the pages: any host name that reaches it is its own origin. */
  let pages: Server;
  let pagePort: number;
  const allowed = () => `http://allowed.test:${pagePort}`;

  before(async () => {
    pages = createServer();
    await new Promise<void>((r) => pages.listen(0, '127.0.0.1', r));
    pagePort = (pages.address() as AddressInfo).port;
    const dir = await makeModule({ name: 'cors-model', seed: 3 });
    server = await startServer({ engine: { model: dir }, name: 'cors-model', apiKeys: [KEY], port: 0, corsOrigins: [allowed()] });
    await server.ready;
  });
  after(async () => {
    await server?.close();
    pages?.close();
  });

  const call = (path: string, init: RequestInit & { headers?: Record<string, string> } = {}) => fetch(`${server.url}${path}`, init);
  const completion = (origin: string | undefined, key = KEY) =>
    call('/v1/completions', {
      method: 'POST',
      headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json', ...(origin ? { Origin: origin } : {}) },
      body: JSON.stringify(COMPLETION),
    });

  it('allows loopback pages and the listed origins, as browsers write them; refuses entries that are not origins', () => {
    const policy = new CorsPolicy(['https://App.Example.com:443/', 'http://10.0.0.5:3000']);
    for (const origin of ['http://localhost:5173', 'http://127.0.0.1', 'https://127.8.0.1:8443', 'http://[::1]:3000', 'http://app.localhost:8080', 'https://app.example.com', 'http://10.0.0.5:3000']) {
      expect(policy.allows(origin), origin).to.equal(true);
    }
    for (const origin of ['http://example.com', 'https://app.example.com:8443', 'http://app.example.com', 'http://localhost.example.com', 'http://127.0.0.1.nip.io', 'null', 'file://', 'http://10.0.0.5']) {
      expect(policy.allows(origin), origin).to.equal(false);
    }
    expect(new CorsPolicy(['*']).allows('null')).to.equal(true);
    expect(corsOriginOf('HTTPS://[::1]:443')).to.equal('https://[::1]');
    for (const entry of ['', 'app.example.com', 'https://app.example.com/chat', 'https://app.example.com?x=1', 'https://user@app.example.com', 'ws://app.example.com']) {
      expect(() => corsOriginOf(entry), JSON.stringify(entry)).to.throw(RangeError);
    }
  });

  it('answers a preflight from an allowed origin without a key, with the headers and methods asked for', async () => {
    const res = await call('/v1/chat/completions', {
      method: 'OPTIONS',
      headers: { Origin: allowed(), 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'authorization,content-type,x-stainless-os', 'Access-Control-Request-Private-Network': 'true' },
    });
    expect(res.status).to.equal(204);
    expect(res.headers.get('access-control-allow-origin')).to.equal(allowed());
    expect(res.headers.get('access-control-allow-methods')).to.match(/\bPOST\b/);
    expect(res.headers.get('access-control-allow-headers')).to.equal('authorization,content-type,x-stainless-os');
    expect(res.headers.get('access-control-allow-private-network')).to.equal('true');
    expect(res.headers.get('vary')).to.match(/\bOrigin\b/);
    expect(Number(res.headers.get('access-control-max-age'))).to.be.greaterThan(0);
  });

  it("lets an allowed page read every answer, errors included; leaves requests without an Origin as they were", async () => {
    const ok = await completion(allowed());
    expect(ok.status).to.equal(200);
    expect(ok.headers.get('access-control-allow-origin')).to.equal(allowed());
    expect(ok.headers.get('access-control-expose-headers')).to.match(/\bRetry-After\b/i).and.match(/\bx-request-id\b/i).and.match(/\bx-should-retry\b/i);
    const text = ((await ok.json()) as { choices: { text: string }[] }).choices[0]!.text;
    const plain = await completion(undefined);
    expect(plain.headers.get('access-control-allow-origin')).to.equal(null);
    expect(((await plain.json()) as { choices: { text: string }[] }).choices[0]!.text).to.equal(text);
    const unauthorized = await completion('http://localhost:5173', 'wrong');
    expect(unauthorized.status).to.equal(401);
    expect(unauthorized.headers.get('access-control-allow-origin')).to.equal('http://localhost:5173');
  });

  it("refuses a request for another machine's host name on a loopback server (a DNS-rebinding page's GET has no Origin)", async () => {
    const { request } = await import('node:http');
    const { port } = new URL(server.url);
    const get = (host: string) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = request({ host: '127.0.0.1', port, path: '/health', headers: { Host: host } }, (res) => {
          let body = '';
          res.on('data', (d: Buffer) => (body += d.toString()));
          res.on('end', () => resolve({ status: res.statusCode!, body }));
        });
        req.on('error', reject);
        req.end();
      });
    const rebound = await get(`attacker.example:${port}`);
    expect(rebound.status).to.equal(403);
    expect(rebound.body).to.include('host_not_allowed');
    for (const host of [`localhost:${port}`, `127.0.0.1:${port}`, `app.localhost:${port}`, '[::1]']) expect((await get(host)).status, host).to.equal(200);
  });

  it('refuses a page of an origin not listed with 403 before anything runs, a simple text/plain POST included', async () => {
    const before = server.metrics.generationTokens;
    const preflight = await call('/v1/completions', { method: 'OPTIONS', headers: { Origin: 'https://evil.example', 'Access-Control-Request-Method': 'POST' } });
    expect(preflight.status).to.equal(403);
    expect(preflight.headers.get('access-control-allow-origin')).to.equal(null);
    // What a page may send without asking first: the server must not run it.
    const simple = await call('/v1/completions', { method: 'POST', headers: { Origin: 'https://evil.example', 'Content-Type': 'text/plain' }, body: JSON.stringify(COMPLETION) });
    expect(simple.status).to.equal(403);
    const { error } = (await simple.json()) as { error: { code: string; message: string } };
    expect(error.code).to.equal('origin_not_allowed');
    expect(error.message).to.contain('--cors-origin https://evil.example');
    const anthropic = await call('/v1/messages', { method: 'POST', headers: { Origin: 'https://evil.example', 'x-api-key': KEY }, body: '{}' });
    expect(((await anthropic.json()) as { error: { type: string } }).error.type).to.equal('permission_error');
    const fromFile = await call('/v1/models', { headers: { Origin: 'null', Authorization: `Bearer ${KEY}` } });
    expect(fromFile.status).to.equal(403);
    expect(((await fromFile.json()) as { error: { message: string } }).error.message).to.contain(`--cors-origin '*' (any origin; "null" cannot be listed)`);
    expect(server.metrics.generationTokens).to.equal(before);
    const err = await startServer({ engine: { model: 'never-loaded' }, port: 0, corsOrigins: ['app.example.com'] }).then(
      () => undefined,
      (e: Error) => e,
    );
    expect(err).to.be.instanceOf(RangeError);
  });

  describe('in a real browser, with OpenAI\'s JS SDK', function () {
    let browser: Browser | undefined;
    before(async function () {
      const executablePath = chromium();
      if (!executablePath) {
        console.log('      no chromium (apt-get install -y chromium, or set CHROME_PATH): skipping the browser tests');
        return this.skip();
      }
      // The SDK as a web app would ship it, bundled for the browser.
      const bundle = await build({
        stdin: { contents: "import OpenAI from 'openai'; globalThis.OpenAI = OpenAI;", resolveDir: repoRoot },
        bundle: true,
        format: 'iife',
        platform: 'browser',
        write: false,
      });
      const script = bundle.outputFiles[0]!.text;
      pages.on('request', (req, res) => {
        if (req.url === '/sdk.js') return void res.writeHead(200, { 'Content-Type': 'text/javascript' }).end(script);
        res.writeHead(200, { 'Content-Type': 'text/html' }).end('<!doctype html><script src="/sdk.js"></script>');
      });
      browser = await launch({
        executablePath,
        headless: true,
        // Page host names of their own that reach the page server (each is its own origin); root in CI needs no sandbox.
        args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--host-resolver-rules=MAP *.test 127.0.0.1'],
      });
    });
    after(async () => browser?.close());

    /** Streams the completion from a page of `origin` through the SDK; the text, or the SDK's error. */
    async function fromPage(origin: string, key = KEY): Promise<{ text?: string; error?: string; status?: number }> {
      const page = await browser!.newPage();
      try {
        await page.goto(`${origin}/`);
        return await page.evaluate(
          async (baseURL, apiKey, body) => {
            const OpenAI = (globalThis as unknown as { OpenAI: new (o: object) => { completions: { create(b: object): Promise<AsyncIterable<{ choices: { text: string }[] }>> } } }).OpenAI;
            const client = new OpenAI({ baseURL, apiKey, dangerouslyAllowBrowser: true, maxRetries: 0 });
            try {
              let text = '';
              for await (const chunk of await client.completions.create({ ...body, stream: true })) text += chunk.choices[0]?.text ?? '';
              return { text };
            } catch (err) {
              return { error: `${(err as Error).constructor.name}: ${(err as Error).message}`, status: (err as { status?: number }).status };
            }
          },
          `${server.url}/v1`,
          key,
          COMPLETION,
        );
      } finally {
        await page.close();
      }
    }

    it('streams to a page of a listed origin and of a loopback origin what it gives without a browser', async () => {
      const expected = ((await (await completion(undefined)).json()) as { choices: { text: string }[] }).choices[0]!.text;
      expect(expected).to.not.equal('');
      expect(await fromPage(allowed())).to.deep.equal({ text: expected });
      expect(await fromPage(`http://localhost:${pagePort}`)).to.deep.equal({ text: expected });
      // An error's body reaches the page too: the SDK reports the server's 401, not a failed connection.
      const denied = await fromPage(allowed(), 'wrong');
      expect(denied.status).to.equal(401);
      expect(denied.error).to.contain('Incorrect API key');
    });

    it('keeps a page of an origin not listed from calling: the browser reports a failed connection', async () => {
      const before = server.metrics.generationTokens;
      const refused = await fromPage(`http://other.test:${pagePort}`);
      expect(refused.text).to.equal(undefined);
      expect(refused.error).to.match(/^APIConnectionError: Connection error/);
      expect(server.metrics.generationTokens).to.equal(before);
    });
  });
});
