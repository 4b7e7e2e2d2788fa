/**
 * What `reasonplug serve` tells whoever runs it, on loopback with the converted stories260K: the records of requests
 * a shutdown cuts off and how many it cut, records of malformed requests and oversized headers (raw sockets), the
 * model named on the records of requests refused before they ran, on every route; and of the CLI as a child process:
 * stderr all JSON lines with `--request-log json` (its own lines, a fatal error), a ready line that says what loaded,
 * none after a SIGTERM during loading, and `--registry-token` sent to the registry `--model` names (a real registry
 * with tokens).
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { fromSources, models } from '../../../test/support/paths.js';
import { storiesModule } from './support/modules.js';
import { testDir } from './support/models.js';
import { postJson, useServers } from './support/servers.js';
import { within } from './support/assertions.js';
import { rawRequest } from './support/raw-http.js';
import { startOurRegistry } from './support/registries.js';
import { startServer } from '../src/serve/server.js';
import { pushModule } from '../src/registry/push.js';
import { formatRequestRecord, type RequestRecord } from '../src/serve/request-log.js';

const cli = fileURLToPath(new URL('../src/cli/reasonplug.ts', import.meta.url));

/** The head of a JSON POST whose body will be `length` bytes. */
const postHead = (url: string, path: string, length: number) =>
  `POST ${path} HTTP/1.1\r\nHost: ${new URL(url).host}\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\n\r\n`;

/** A raw POST of `body` to `path`. */
const rawPost = (url: string, path: string, body: object) => {
  const text = JSON.stringify(body);
  return rawRequest(url, postHead(url, path, Buffer.byteLength(text)) + text);
};

/** Waits until `ready()` holds, checking every 20 ms, for at most `ms`. */
async function until(ready: () => boolean, ms: number, what: string): Promise<void> {
  for (const t0 = performance.now(); !ready(); await new Promise((r) => setTimeout(r, 20))) {
    if (performance.now() - t0 > ms) throw new Error(`${what}: not within ${ms} ms`);
  }
}

/** `reasonplug serve …args` as a child process: its stderr so far, its exit code, and a wait for a line of it. */
function serveCli(args: string[], env: Record<string, string>) {
  const child = spawn(process.execPath, [...fromSources, cli, 'serve', '--port', '0', ...args], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  return {
    child,
    exited,
    stderr: () => stderr,
    /** Waits for stderr to match `pattern` (the CLI exiting first fails it). */
    waitFor: (pattern: RegExp, ms = 60_000) =>
      within(
        new Promise<RegExpExecArray>((resolve, reject) => {
          const check = () => {
            const found = pattern.exec(stderr);
            if (found) resolve(found);
          };
          child.stderr.on('data', check);
          check();
          void exited.then(() => reject(new Error(`serve exited: ${stderr}`)));
        }),
        ms,
        `serve's stderr matching ${pattern}`,
      ),
  };
}

describe('serve: what the operator is told', function () {
  this.timeout(180_000);
  const { serve } = useServers();
  const records: RequestRecord[] = [];
  let dir: string;
  let url: string;
  let context: number;

  /** The record of the answer `res`, once it is written. */
  async function recordOf(res: Response): Promise<RequestRecord> {
    await res.arrayBuffer();
    const id = res.headers.get('x-request-id');
    await until(() => records.some((r) => r.requestId === id), 30_000, `the record of ${id}`);
    return records.find((r) => r.requestId === id)!;
  }

  before(async () => {
    dir = await storiesModule();
    // (no chat template: the model has none, so a chat with it is refused with a 400)
    url = await serve({ engine: { model: dir }, onRequest: (r) => records.push(r) });
    context = ((await (await postJson(url, '/tokenize', { prompt: 'x' })).json()) as { max_model_len: number }).max_model_len;
  });

  it('records the requests a shutdown cuts off as cut (a stream 200, a whole answer 503), not as clients gone, and says how many it cut', async () => {
    const cut: RequestRecord[] = [];
    const server = await startServer({ engine: { model: dir }, port: 0, maxBatch: 64, shutdownTimeoutMs: 500, onRequest: (r) => cut.push(r) });
    try {
      await server.ready;
      // Two requests that run for seconds, longer than the deadline: 16 choices each to the end of the context.
      const long = (stream: boolean) => ({ model: 'stories260k', prompt: 'Once', n: 16, max_tokens: context - 8, ignore_eos: true, stream });
      const whole = rawPost(server.url, '/v1/completions', long(false));
      const streamed = rawPost(server.url, '/v1/completions', long(true));
      await until(() => streamed.received().includes('data: '), 30_000, 'the stream began');
      // (and the whole answer's request admitted too: sent first, it may still arrive after on a loaded machine)
      for (let i = 0; i < 1500 && !/^reasonplug:num_requests_running\{[^}]*\} 2$/m.test(await (await fetch(`${server.url}/metrics`)).text()); i++) await new Promise((r) => setTimeout(r, 20));
      expect(await within(server.close(), 5_000, 'close()')).to.deep.equal({ cutOff: 2 });
      await Promise.all([whole.closed, streamed.closed]);
      // Written before close() settled.
      const written = cut.filter((r) => r.path === '/v1/completions');
      expect(written.map((r) => ({ status: r.status, aborted: r.aborted, cutOff: r.cutOff, finish: r.finishReason, model: r.model, error: r.error }))).to.have.deep.members([
        { status: 503, aborted: true, cutOff: true, finish: 'abort', model: 'stories260k', error: undefined },
        { status: 200, aborted: true, cutOff: true, finish: 'abort', model: 'stories260k', error: undefined },
      ]);
      expect(written.map((r) => formatRequestRecord(r, 'text'))).to.satisfy((lines: string[]) => lines.every((l) => l.includes('cut off by shutdown') && !l.includes('client went away')));
    } finally {
      await server.close();
    }
  });

  it('records malformed requests and oversized headers with who sent them, answered as Node answers them, and writes no refusal into a stream under way', async () => {
    const garbage = rawRequest(url, 'GARBAGE\r\n\r\n');
    await within(garbage.closed, 5_000, 'the malformed request was answered');
    expect(garbage.received()).to.equal('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
    expect(records.at(-1)).to.deep.include({ method: '-', path: '-', status: 400, aborted: false });
    expect(records.at(-1)!.error).to.match(/HPE_INVALID_METHOD\), from (::ffff:)?127\.0\.0\.1$/);

    const big = rawRequest(url, `GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
    await within(big.closed, 5_000, 'the oversized headers were answered');
    expect(big.received()).to.match(/^HTTP\/1\.1 431 Request Header Fields Too Large\r\n/);
    expect(records.at(-1)).to.deep.include({ method: '-', path: '-', status: 431 });
    expect(records.at(-1)!.error).to.match(/HPE_HEADER_OVERFLOW\), from (::ffff:)?127\.0\.0\.1$/);

    // A malformed request pipelined after a stream that has begun: the stream is cut, nothing written into it.
    const refusals = () => records.filter((r) => r.path === '-').length;
    const before = refusals();
    const streamed = rawPost(url, '/v1/completions', { model: 'stories260k', prompt: 'Once', max_tokens: context - 8, ignore_eos: true, stream: true });
    await until(() => streamed.received().includes('data: '), 30_000, 'the stream began');
    streamed.socket.write('GARBAGE\r\n\r\n');
    await within(streamed.closed, 5_000, 'the connection closed');
    expect(streamed.received()).to.match(/^HTTP\/1\.1 200 /);
    expect(streamed.received()).to.not.include('HTTP/1.1 400');
    expect(refusals()).to.equal(before + 1);
  });

  it('notes the model a request named on its record before anything refuses it, on every route', async () => {
    const chat = { model: 'no-such-model', messages: [{ role: 'user', content: 'x' }], max_tokens: 1 };
    const refused: [string, object][] = [
      ['/v1/chat/completions', chat],
      ['/api/chat', chat],
      ['/v1/messages', chat],
      ['/v1/responses', { model: 'no-such-model', input: 'x' }],
      ['/v1/completions', { model: 'no-such-model', prompt: 'x' }],
      ['/api/generate', { model: 'no-such-model', prompt: 'x' }],
    ];
    for (const [path, body] of refused) {
      const record = await recordOf(await postJson(url, path, body));
      expect(record, path).to.deep.include({ status: 404, model: 'no-such-model' });
    }
    // A served model refused before it runs: no chat template, a field wrong.
    const noTemplate = await recordOf(await postJson(url, '/v1/chat/completions', { ...chat, model: 'stories260k' }));
    expect(noTemplate).to.deep.include({ status: 400, model: 'stories260k' });
    expect(noTemplate.error).to.match(/no chat template/);
    const badField = await recordOf(await postJson(url, '/v1/completions', { model: 'stories260k', prompt: 'x', temperature: 'hot' }));
    expect(badField).to.deep.include({ status: 400, model: 'stories260k' });
  });

  it('the CLI with --request-log json writes only JSON lines: its own, the records, a cut-off request and the count cut', async () => {
    const cache = testDir('json-log-cache');
    const server = serveCli(['--model', dir, '--request-log', 'json', '--shutdown-timeout', '1'], { REASONPLUG_CACHE: cache });
    try {
      await server.waitFor(/"msg":"ready;/);
      const lines = () => server.stderr().trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
      const ready = lines().find((l) => String(l.msg).startsWith('ready;'))!;
      const at = String(ready.url).replace(/\/v1$/, '');
      // What loaded, where: the model ids served, the context length, the cache.
      expect(ready).to.deep.include({ level: 'info', models: ['stories260k'], contextLength: context, cacheDir: cache, apiKey: false });
      expect(ready.msg).to.equal(`ready; ${at}/v1 (no API key); serving stories260k; context length ${context}; cache ${cache}`);
      await within(rawRequest(at, 'GARBAGE\r\n\r\n').closed, 5_000, 'the malformed request was answered');
      const res = await postJson(at, '/v1/completions', { model: 'stories260k', prompt: 'Once', n: 16, max_tokens: context - 8, ignore_eos: true, stream: true });
      await res.body!.getReader().read();
      server.child.kill('SIGTERM');
      expect(await within(server.exited, 15_000, 'the server exited')).to.equal(0);
      const all = lines();
      expect(all.map((l) => l.msg).filter((m) => m !== undefined)).to.deep.equal([
        `listening on ${at} (loading ${dir})`,
        ready.msg,
        'SIGTERM: finishing running requests, then exiting',
        'cut off 1 request after --shutdown-timeout (1 s)',
      ]);
      expect(all.find((l) => l.msg === 'cut off 1 request after --shutdown-timeout (1 s)')).to.deep.include({ level: 'warn', cutOff: 1 });
      expect(all.find((l) => l.path === '/v1/completions')).to.deep.include({ status: 200, aborted: true, finishReason: 'abort' });
      expect(all.find((l) => l.path === '-')).to.deep.include({ status: 400 });
      for (const l of all) expect(l.time, JSON.stringify(l)).to.match(/^\d{4}-\d\d-\d\dT/);
    } finally {
      server.child.kill('SIGKILL');
    }
  });

  it('the CLI says no ready after a SIGTERM that came while the model loaded', async () => {
    // A GGUF file converted on first use into an empty cache: the load takes a while, and ends during the shutdown.
    const cache = testDir('loading-cache');
    const server = serveCli(['--model', models.stories260K], { REASONPLUG_CACHE: cache });
    try {
      await server.waitFor(/listening on/);
      server.child.kill('SIGTERM');
      expect(await within(server.exited, 60_000, 'the server exited')).to.equal(0);
      expect(server.stderr()).to.include('SIGTERM: finishing running requests, then exiting');
      expect(server.stderr()).to.not.include('ready');
    } finally {
      server.child.kill('SIGKILL');
    }
  });

  it('the CLI sends --registry-token to the registry --model names, says what the reference resolved to, and refuses a token two registries would need', async () => {
    const registry = await startOurRegistry({ auth: true });
    try {
      const { token: pusher } = await registry.tokens.create({ scopes: ['push:team/*'], user: 'ci' });
      const { token: reader } = await registry.tokens.create({ scopes: ['pull:team/*'], user: 'reader' });
      const pushed = await pushModule(dir, `${registry.host}/team/stories260k`, { registry: registry.host, token: pusher });
      const { version, digest } = pushed;
      const ref = `${registry.host}/team/stories260k@^${version}`;
      const env = () => ({ REASONPLUG_CACHE: testDir('token-cache') });

      // Without a token: the hint names serve's flag, and (JSON asked for) the fatal error is a JSON line too.
      const refused = serveCli(['--model', ref, '--request-log', 'json'], env());
      expect(await within(refused.exited, 60_000, 'the refused server exited')).to.equal(1);
      const last = JSON.parse(refused.stderr().trim().split('\n').at(-1)!) as { level: string; msg: string };
      expect(last.level).to.equal('error');
      expect(last.msg).to.match(/^RegistryAuthError: registry \S+ requires authentication .*pass --registry-token TOKEN/);
      expect(last.msg).to.not.match(/--token\b/);

      const served = serveCli(['--model', ref, '--registry-token', reader], env());
      try {
        const [line] = await served.waitFor(/ready;.*\n/);
        expect(line).to.include(`serving stories260k; model from ${registry.host}/team/stories260k@${digest} (version ${version}); context length ${context}; cache `);
        served.child.kill('SIGTERM');
        expect(await within(served.exited, 15_000, 'the server exited')).to.equal(0);
      } finally {
        served.child.kill('SIGKILL');
      }

      const twoRegistries = serveCli(['--model', ref, '--reasoner', 'math=other.example:5000/team/math@^1', '--registry-token', reader], env());
      expect(await within(twoRegistries.exited, 60_000, 'the refused server exited')).to.equal(1);
      expect(twoRegistries.stderr()).to.include(`--registry-token goes to one registry, but --model names ${registry.host} and --reasoner math names other.example:5000`);
    } finally {
      await registry.close();
    }
  });
});
