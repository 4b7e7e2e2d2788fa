/**
 * `reasonplug serve` behind a reverse proxy (nginx, haproxy): every stream marked unbuffered for nginx, the Host
 * check's names (IP addresses, the machine's host name, `--allowed-host`) and its advice, keep-alives of a stream whose
 * first token (or scored prompt) waits in the queue (and the API's own error event when it then fails), the request
 * id in the request log.
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { request, type IncomingHttpHeaders } from 'node:http';
import { hostname } from 'node:os';
import { fileURLToPath } from 'node:url';
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { buildProgram } from '../src/cli/main.js';
import { allowedHostOf } from '../src/serve/cors.js';
import { formatRequestRecord, type RequestRecord } from '../src/serve/request-log.js';
import { startServer } from '../src/serve/server.js';
import { fromSources } from '../../../test/support/paths.js';
import { TOOLS_TEMPLATE } from './support/chat-templates.js';
import { storiesModule } from './support/modules.js';
import { postJson, useServers } from './support/servers.js';
import { within } from './support/assertions.js';

const MODEL = 'stories260k';
const MESSAGES = [{ role: 'user', content: 'Tell me a story' }];
/** A response format no token can start: the engine refuses it at the first token (a 400 when nothing was written yet). */
const NO_TOKEN = { type: 'json_schema', name: 'x', schema: { $ref: '#' } };

/** A GET of `path` with the `Host` header given (fetch sets its own), and any other headers. */
function getWithHost(at: string, path: string, host: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string; headers: IncomingHttpHeaders }> {
  const { hostname: address, port } = new URL(at);
  return new Promise((resolve, reject) => {
    const req = request({ host: address.replace(/^\[(.*)\]$/, '$1'), port, path, headers: { ...headers, Host: host } }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode!, body, headers: res.headers }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** A streamed answer's text as it arrives. */
class Arriving {
  text = '';
  private readonly reader: ReadableStreamDefaultReader<Uint8Array>;
  private readonly decoder = new TextDecoder();

  constructor(res: Response) {
    this.reader = res.body!.getReader();
  }

  /** Reads until `done(text)` holds (rejects after `ms`). */
  async until(done: (text: string) => boolean, ms: number, what: string): Promise<string> {
    const reading = (async () => {
      while (!done(this.text)) {
        const { value, done: ended } = await this.reader.read();
        if (ended) throw new Error(`${what}: the stream ended first: ${this.text}`);
        this.text += this.decoder.decode(value, { stream: true });
      }
      return this.text;
    })();
    return within(reading, ms, what);
  }

  /** Reads to the end. */
  async rest(): Promise<string> {
    for (let r = await this.reader.read(); !r.done; r = await this.reader.read()) this.text += this.decoder.decode(r.value, { stream: true });
    return this.text;
  }
}

/** The events of an event stream, as `event` name (or undefined) and parsed `data` (`[DONE]` as is); comments left out. */
function eventsOf(text: string): { event?: string; data: unknown }[] {
  return text
    .split('\n\n')
    .filter((block) => /^(event|data):/m.test(block))
    .map((block) => {
      const event = /^event: (.*)$/m.exec(block)?.[1];
      const data = /^data: (.*)$/m.exec(block)![1]!;
      return { ...(event ? { event } : {}), data: data === '[DONE]' ? data : JSON.parse(data) };
    });
}

/** How many keep-alives (`: keep-alive` comments, or Anthropic's ping events) `text` holds. */
const keepAlives = (text: string) => text.split(': keep-alive\n\n').length - 1 + text.split('event: ping\n').length - 1;

describe('reasonplug serve behind a reverse proxy', function () {
  this.timeout(180_000);
  const { serve } = useServers();
  const records: RequestRecord[] = [];
  let url: string;

  before(async () => {
    // One request at a time, so that a second waits in the queue; keep-alives every 100 ms instead of 15 s.
    url = await serve({
      engine: { model: await storiesModule() },
      chatTemplate: TOOLS_TEMPLATE,
      maxBatch: 1,
      maxQueue: 4,
      keepAliveMs: 100,
      allowedHosts: ['rp', 'LLM.Example.com'],
      onRequest: (r) => records.push(r),
    });
  });

  /**
   * Holds the server's one slot with a long streamed request (its first chunk read, so it runs) while `work` runs;
   * `release` ends it (its client goes away, its rows stop, the queue moves).
   */
  async function whileHeld<T>(work: (release: () => void) => Promise<T>): Promise<T> {
    const controller = new AbortController();
    const held = await fetch(`${url}/v1/completions`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: MODEL, prompt: 'Once upon a time', n: 8, max_tokens: 1900, ignore_eos: true, stream: true }),
      signal: controller.signal,
    });
    await held.body!.getReader().read();
    const release = () => controller.abort();
    try {
      return await work(release);
    } finally {
      release();
    }
  }

  it('marks every streamed answer X-Accel-Buffering: no, so that nginx passes its events on as they come', async () => {
    const streams: [string, object][] = [
      ['/v1/chat/completions', { model: MODEL, messages: MESSAGES, max_tokens: 4, stream: true }],
      ['/v1/completions', { model: MODEL, prompt: 'Once', max_tokens: 4, stream: true }],
      ['/v1/completions', { model: MODEL, prompt: 'Once', max_tokens: 0, echo: true, logprobs: 1, stream: true }],
      ['/v1/responses', { model: MODEL, input: 'Tell me a story', max_output_tokens: 4, stream: true }],
      ['/v1/messages', { model: MODEL, messages: MESSAGES, max_tokens: 4, stream: true }],
      ['/api/chat', { model: MODEL, messages: MESSAGES, options: { num_predict: 4 } }],
      ['/api/generate', { model: MODEL, prompt: 'Once', options: { num_predict: 4 } }],
    ];
    for (const [path, body] of streams) {
      const res = await postJson(url, path, body);
      expect(res.status, path).to.equal(200);
      expect(res.headers.get('x-accel-buffering'), path).to.equal('no');
      await res.text();
    }
  });

  it("serves a loopback server's IP addresses, host name and listed names; refuses other names saying what to do", async () => {
    const machine = hostname();
    for (const host of ['localhost', '127.0.0.1:8000', 'app.localhost:3000', machine, `${machine.toUpperCase()}:8000`, '10.0.0.5', '192.168.1.10:8000', '203.0.113.7', '[2001:db8::1]:443', 'rp', 'rp:8080', 'llm.example.com']) {
      expect((await getWithHost(url, '/health', host)).status, host).to.equal(200);
    }
    // A rebinding page's own name (and one that only begins or ends like a served one) stays refused.
    for (const host of ['attacker.example', 'rp.attacker.example', `${machine}.attacker.example`, 'localhost.attacker.example']) {
      const refused = await getWithHost(url, '/health', host);
      expect(refused.status, host).to.equal(403);
      const { error } = JSON.parse(refused.body) as { error: { code: string; message: string } };
      expect(error.code).to.equal('host_not_allowed');
      expect(error.message).to.include('Host: localhost').and.include(`--allowed-host ${host}`).and.include('--host');
    }
    // A page allowed to call reads the refusal, saying what to do (an attacker's origin is not allowed: it reads none).
    const told = await getWithHost(url, '/health', 'llm.internal', { Origin: 'http://localhost:3000' });
    expect(told.status).to.equal(403);
    expect(told.headers['access-control-allow-origin']).to.equal('http://localhost:3000');
    const opaque = await getWithHost(url, '/health', 'attacker.example', { Origin: 'http://attacker.example' });
    expect(opaque.status).to.equal(403);
    expect(opaque.headers['access-control-allow-origin']).to.equal(undefined);
    // Loopback written another way is loopback: the check stays on.
    for (const host of ['0:0:0:0:0:0:0:1', '::ffff:127.0.0.1']) {
      const spelled = await startServer({ engine: { model: '/nonexistent/model' }, host, port: 0 });
      spelled.ready.catch(() => {});
      try {
        expect((await getWithHost(spelled.url, '/health', 'attacker.example')).status, host).to.equal(403);
      } finally {
        await spelled.close();
      }
    }
    // `*` lets any name in; what the check answers comes before the model's state (this one never loads).
    const any = await startServer({ engine: { model: '/nonexistent/model' }, port: 0, allowedHosts: ['*'] });
    any.ready.catch(() => {});
    try {
      expect((await getWithHost(any.url, '/health', 'attacker.example')).status).to.equal(503);
    } finally {
      await any.close();
    }
  });

  it('takes listed hosts as names alone (lowercased), refusing ports, schemes and paths, in startServer and --allowed-host', async () => {
    expect(allowedHostOf('LLM.Example.com')).to.equal('llm.example.com');
    expect(allowedHostOf('[::1]')).to.equal('[::1]');
    expect(allowedHostOf('*')).to.equal('*');
    for (const entry of ['', ' rp', 'rp:8080', 'http://rp', 'rp/v1', 'user@rp', '*.example.com']) expect(() => allowedHostOf(entry), JSON.stringify(entry)).to.throw(RangeError, /is not a host name/);
    let refused: unknown;
    await startServer({ engine: { model: '/nonexistent/model' }, port: 0, allowedHosts: ['rp:8080'] }).catch((err: unknown) => (refused = err));
    expect(refused).to.be.instanceOf(RangeError);
    const program = buildProgram();
    for (const command of [program, ...program.commands]) command.exitOverride().configureOutput({ writeErr: () => {}, writeOut: () => {} });
    const parsed = await program.parseAsync(['node', 'reasonplug', 'serve', '--model', 'm', '--allowed-host', 'http://rp']).then(() => 'parsed', (err: Error) => err.message);
    expect(parsed).to.match(/--allowed-host: "http:\/\/rp" is not a host name/);
  });

  it('a stream queued behind another opens with keep-alives before its first token, then streams as usual; clients skip them', async () => {
    const alone = (await (await postJson(url, '/v1/chat/completions', { model: MODEL, messages: MESSAGES, max_tokens: 6, temperature: 0 })).json()) as { choices: { message: { content: string } }[] };
    const openai = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'none', maxRetries: 0 });
    const anthropic = new Anthropic({ baseURL: url, apiKey: 'none', maxRetries: 0 });
    await whileHeld(async (release) => {
      const res = await within(postJson(url, '/v1/chat/completions', { model: MODEL, messages: MESSAGES, max_tokens: 6, temperature: 0, stream: true }), 10_000, 'the queued stream opened');
      expect(res.status).to.equal(200);
      expect(res.headers.get('content-type')).to.equal('text/event-stream');
      const body = new Arriving(res);
      await body.until((text) => keepAlives(text) >= 2, 10_000, 'two keep-alives');
      expect(body.text, 'nothing but keep-alives while queued').to.match(/^(: keep-alive\n\n)+$/);
      // The SDKs read streams whose first token waits just as well (comments and pings are skipped).
      const sdkChat = openai.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Tell me a story' }], max_tokens: 6, temperature: 0, stream: true });
      const sdkMessage = anthropic.messages.stream({ model: MODEL, messages: [{ role: 'user', content: 'Tell me a story' }], max_tokens: 6, temperature: 0 } as Anthropic.MessageStreamParams);
      await new Promise((r) => setTimeout(r, 300));
      release();
      const events = eventsOf(await within(body.rest(), 30_000, 'the stream ended'));
      expect(events.at(-1)!.data).to.equal('[DONE]');
      const content = events.slice(0, -1).map((e) => (e.data as { choices: { delta: { content?: string } }[] }).choices[0]?.delta.content ?? '').join('');
      expect(content).to.equal(alone.choices[0]!.message.content);
      let streamed = '';
      for await (const chunk of await sdkChat) streamed += chunk.choices[0]?.delta.content ?? '';
      expect(streamed).to.equal(alone.choices[0]!.message.content);
      const message = await within(sdkMessage.finalMessage(), 30_000, "the SDK's message");
      expect(message.stop_reason).to.equal('max_tokens');
      expect(message.content.map((b) => (b.type === 'text' ? b.text : '')).join('')).to.equal(alone.choices[0]!.message.content);
    });
  });

  it("a queued stream that fails at its first token after keep-alives ends with the API's own error event (and is logged so)", async () => {
    records.length = 0;
    const failing: [string, object][] = [
      ['/v1/chat/completions', { model: MODEL, messages: MESSAGES, max_tokens: 4, stream: true, response_format: { type: 'json_schema', json_schema: NO_TOKEN } }],
      ['/v1/responses', { model: MODEL, input: 'Tell me a story', max_output_tokens: 4, stream: true, text: { format: NO_TOKEN } }],
      ['/v1/messages', { model: MODEL, messages: MESSAGES, max_tokens: 4, stream: true, output_config: { format: { type: 'json_schema', schema: { $ref: '#' } } } }],
    ];
    const texts = await whileHeld(async (release) => {
      const bodies = await Promise.all(failing.map(([path, body]) => within(postJson(url, path, body), 10_000, `${path} opened`).then((res) => new Arriving(res))));
      await Promise.all(bodies.map((b, i) => b.until((text) => keepAlives(text) >= 2, 10_000, `${failing[i]![0]}: two keep-alives`)));
      release();
      return Promise.all(bodies.map((b) => within(b.rest(), 30_000, 'the stream ended')));
    });
    const [chat, responses, messages] = texts.map(eventsOf);
    expect(texts[0]).to.match(/^: keep-alive\n\n/);
    expect(chat).to.have.length(1);
    expect((chat![0]!.data as { error: { message: string } }).error.message).to.match(/ConstraintError/);
    expect(texts[1]).to.match(/^: keep-alive\n\n/);
    expect(responses).to.have.length(1);
    expect(responses![0]).to.deep.include({ event: 'error' });
    expect(responses![0]!.data).to.deep.include({ type: 'error', sequence_number: 0 });
    expect((responses![0]!.data as { message: string }).message).to.match(/ConstraintError/);
    // Anthropic's streams keep alive with its ping event.
    expect(messages!.slice(0, 2)).to.deep.equal([{ event: 'ping', data: { type: 'ping' } }, { event: 'ping', data: { type: 'ping' } }]);
    const error = messages!.at(-1)!;
    expect(error.event).to.equal('error');
    expect(error.data).to.deep.include({ type: 'error' });
    expect((error.data as { error: { type: string; message: string } }).error).to.deep.include({ type: 'invalid_request_error' });
    for (let i = 0; i < 400 && records.filter((r) => r.path !== '/v1/completions').length < 3; i++) await new Promise((r) => setTimeout(r, 25));
    const logged = records.filter((r) => r.path !== '/v1/completions');
    expect(logged.map((r) => [r.path, r.status, r.finishReason])).to.have.deep.members(failing.map(([path]) => [path, 200, 'error']));
    for (const r of logged) expect(r.error, r.path).to.match(/ConstraintError/);
  });

  it('a queued streamed echo with logprobs (lm-evaluation-harness) keeps alive while queued and scored, then answers as alone; a scoring fault ends it with an error event', async () => {
    records.length = 0;
    const scoring = { model: MODEL, prompt: 'Once upon', max_tokens: 3, echo: true, logprobs: 1, temperature: 0 };
    const alone = (await (await postJson(url, '/v1/completions', scoring)).json()) as { choices: { text: string; logprobs: { tokens: string[] } }[] };
    const queued: [string, object][] = [
      ['scored then generated', { ...scoring, stream: true }],
      ['scored alone', { ...scoring, max_tokens: 0, stream: true }],
      ['too long to score', { ...scoring, prompt: 'Once upon a time '.repeat(700), stream: true }],
    ];
    const texts = await whileHeld(async (release) => {
      const bodies = await Promise.all(
        queued.map(async ([what, body]) => {
          const res = await within(postJson(url, '/v1/completions', body), 10_000, `${what}: opened while queued`);
          expect([res.status, res.headers.get('content-type')], what).to.deep.equal([200, 'text/event-stream']);
          return new Arriving(res);
        }),
      );
      await Promise.all(bodies.map((b, i) => b.until((text) => keepAlives(text) >= 2, 10_000, `${queued[i]![0]}: two keep-alives`)));
      for (const [i, b] of bodies.entries()) expect(b.text, `${queued[i]![0]}: nothing but keep-alives while queued`).to.match(/^(: keep-alive\n\n)+$/);
      release();
      return Promise.all(bodies.map((b) => within(b.rest(), 30_000, 'the stream ended')));
    });
    type Chunk = { choices: { text: string; logprobs: { tokens: string[] } | null; finish_reason: string | null }[] };
    const [generated, scored, tooLong] = texts.map(eventsOf);
    // The echo, then the generation admitted again after it (its headers and keep-alives not written twice).
    expect(generated!.at(-1)!.data).to.equal('[DONE]');
    const chunks = generated!.slice(0, -1).map((e) => (e.data as Chunk).choices[0]!);
    expect(chunks.map((c) => c.text).join('')).to.equal(alone.choices[0]!.text);
    expect(chunks.flatMap((c) => c.logprobs?.tokens ?? [])).to.deep.equal(alone.choices[0]!.logprobs.tokens);
    expect(chunks.at(-1)!.finish_reason).to.equal('length');
    expect(scored!.map((e) => (e.data === '[DONE]' ? e.data : (e.data as Chunk).choices[0]!.text))).to.deep.equal(['Once upon', '[DONE]']);
    expect(tooLong).to.have.length(1);
    expect((tooLong![0]!.data as { error: { message: string } }).error.message).to.match(/context length/);
    for (let i = 0; i < 400 && !records.some((r) => r.error); i++) await new Promise((r) => setTimeout(r, 25));
    const faulted = records.filter((r) => r.error);
    expect(faulted.map((r) => r.status)).to.deep.equal([200]);
    expect(faulted[0]!.error).to.match(/context length/);
  });

  it('logs each request with the id its answer carries (a proxy\'s own where it sent one), in both formats', async () => {
    records.length = 0;
    const given = await postJson(url, '/v1/completions', { model: MODEL, prompt: 'Once', max_tokens: 2 }, { 'x-request-id': 'proxy-42' });
    await given.text();
    const own = await postJson(url, '/v1/completions', { model: MODEL, prompt: 'Once', max_tokens: 2 });
    await own.text();
    for (let i = 0; i < 400 && records.length < 2; i++) await new Promise((r) => setTimeout(r, 25));
    expect(records.map((r) => r.requestId)).to.deep.equal(['proxy-42', own.headers.get('x-request-id')]);
    expect(formatRequestRecord(records[0]!, 'text')).to.match(/^POST \/v1\/completions 200 \d+ ms id=proxy-42 model=stories260k /);
    expect(JSON.parse(formatRequestRecord(records[1]!, 'json'))).to.deep.include({ requestId: own.headers.get('x-request-id') });
  });

  it('the CLI takes --allowed-host (a proxy upstream name) and logs request ids', async () => {
    const cli = fileURLToPath(new URL('../src/cli/reasonplug.ts', import.meta.url));
    const child = spawn(process.execPath, [...fromSources, cli, 'serve', '--model', await storiesModule(), '--port', '0', '--allowed-host', 'rp', '--request-log', 'json'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    try {
      await within(
        new Promise<void>((resolve, reject) => {
          child.stderr.on('data', () => stderr.includes('ready;') && resolve());
          child.on('exit', () => reject(new Error(`serve exited: ${stderr}`)));
        }),
        90_000,
        'the CLI server got ready',
      );
      const at = /listening on (http:\/\/\S+)/.exec(stderr)![1]!;
      expect((await getWithHost(at, '/health', 'rp', { 'x-request-id': 'proxy-7' })).status).to.equal(200);
      const refused = await getWithHost(at, '/health', 'other.example');
      expect(refused.status).to.equal(403);
      expect(refused.body).to.include('--allowed-host other.example');
      await within((async () => { while (!stderr.includes('"requestId":"proxy-7"')) await new Promise((r) => setTimeout(r, 25)); })(), 5_000, 'the logged id');
      const line = stderr.split('\n').find((l) => l.includes('proxy-7'))!;
      expect(JSON.parse(line)).to.deep.include({ requestId: 'proxy-7', path: '/health', status: 200 });
    } finally {
      child.kill('SIGKILL');
    }
  });
});
