import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { TokenStore } from '../src/auth/tokens.js';
import type { ListeningRegistry } from '../src/server.js';
import type { StorageDriver } from '../src/storage/driver.js';
import { tokenKey } from '../src/storage/layout.js';
import { filesystemDriver, s3Driver } from './support/drivers.js';
import { Client, errorCode, startRegistry } from './support/registry.js';

const bearer = (t: string) => `Bearer ${t}`;
const basic = (user: string, t: string) => `Basic ${Buffer.from(`${user}:${t}`).toString('base64')}`;

describe('authentication and scopes', function () {
  this.timeout(20_000);
  let storage: StorageDriver;
  let tokens: TokenStore;
  let registry: ListeningRegistry | undefined;
  let logLines: Record<string, unknown>[];

  beforeEach(async () => {
    storage = (await filesystemDriver.open()).storage;
    tokens = new TokenStore(storage);
    logLines = [];
  });
  afterEach(() => registry?.close());

  async function start(anonymousPull = true): Promise<Client> {
    const sink = new Writable({
      write(chunk, _enc, done) {
        logLines.push(JSON.parse(chunk.toString()));
        done();
      },
    });
    registry = await startRegistry(storage, { auth: { tokens, anonymousPull }, logger: pino({ level: 'info' }, sink) });
    return new Client(registry.url);
  }

  it('stores tokens hashed and verifies them', async () => {
    const { token, record } = await tokens.create({ scopes: ['push:math/*'], user: 'alice' });
    expect(token).to.match(/^rpr_[0-9a-f]{16}_[0-9a-f]{64}$/);
    const stored = (await storage.get(tokenKey(record.id)))!.toString();
    const secret = token.split('_')[2]!;
    expect(stored).to.not.include(secret);
    expect(JSON.parse(stored).secretHash).to.equal(createHash('sha256').update(secret).digest('hex'));
    expect(await tokens.verify(token)).to.deep.include({ user: 'alice', tokenId: record.id });
    expect(await tokens.verify(token.slice(0, -1) + (token.endsWith('0') ? '1' : '0'))).to.equal(undefined);
    expect(await tokens.verify('rpr_nonsense')).to.equal(undefined);
    expect(await tokens.revoke(record.id)).to.equal(true);
    expect(await tokens.verify(token)).to.equal(undefined);
  });

  it('challenges without credentials and accepts Bearer and Basic user:token', async () => {
    const c = await start();
    const { token } = await tokens.create({ scopes: ['pull:**'] });
    const none = await c.request('GET', '/v2/');
    expect(none.status).to.equal(401);
    expect(none.headers.get('www-authenticate')).to.match(/^Basic realm="reasonplug-registry"/);
    expect(await errorCode(none)).to.equal('UNAUTHORIZED');
    expect((await c.as(bearer(token)).request('GET', '/v2/')).status).to.equal(200);
    expect((await c.as(basic('anyone', token)).request('GET', '/v2/')).status).to.equal(200);
  });

  it('refuses a wrong token with 401 and a token without the scope with 403', async () => {
    const c = await start();
    const pullOnly = (await tokens.create({ scopes: ['pull:**'] })).token;
    const mathPush = (await tokens.create({ scopes: ['push:math/*'] })).token;
    const wrong = await c.as(bearer(mathPush.slice(0, -2) + 'ff')).request('POST', '/v2/math/adder/blobs/uploads/');
    expect(wrong.status).to.equal(401);
    expect(wrong.headers.get('www-authenticate')).to.match(/^Basic /);
    expect((await c.as('Digest abc').request('GET', '/v2/')).status).to.equal(401);

    const denied = await c.as(bearer(pullOnly)).request('POST', '/v2/math/adder/blobs/uploads/');
    expect(denied.status).to.equal(403);
    expect(await errorCode(denied)).to.equal('DENIED');
    for (const repo of ['code/linter', 'math/sub/adder']) {
      expect((await c.as(bearer(mathPush)).request('POST', `/v2/${repo}/blobs/uploads/`)).status, repo).to.equal(403);
    }
    const anonymousPush = await c.request('POST', '/v2/math/adder/blobs/uploads/');
    expect(anonymousPush.status).to.equal(401);
    // An upload session is the pusher's: its status is not for pull-only callers, anonymous ones included.
    const session = (await c.as(bearer(mathPush)).request('POST', '/v2/math/adder/blobs/uploads/')).headers.get('location')!;
    expect((await c.as(bearer(mathPush)).request('GET', session)).status).to.equal(204);
    expect((await c.as(bearer(pullOnly)).request('GET', session)).status).to.equal(403);
    expect((await c.request('GET', session)).status).to.equal(401);

    await c.as(basic('ci', mathPush)).pushModule('math/adder', ['1.0.0']);
    expect((await c.request('GET', '/v2/math/adder/manifests/1.0.0')).status).to.equal(200);
  });

  it('turns anonymous pull off, and then filters search and the catalog by pull scope', async () => {
    const c = await start(false);
    const admin = c.as(bearer((await tokens.create({ scopes: ['push:**'] })).token));
    await admin.pushModule('math/adder', ['1.0.0']);
    await admin.pushModule('secret/thing', ['1.0.0']);

    expect((await c.request('GET', '/v2/math/adder/manifests/1.0.0')).status).to.equal(401);
    expect((await c.request('GET', '/v2/_reasonplug/search')).status).to.equal(401);
    const reader = c.as(bearer((await tokens.create({ scopes: ['pull:math/*'] })).token));
    expect((await reader.request('GET', '/v2/math/adder/manifests/1.0.0')).status).to.equal(200);
    expect((await reader.request('GET', '/v2/secret/thing/manifests/1.0.0')).status).to.equal(403);
    const found = (await (await reader.request('GET', '/v2/_reasonplug/search')).json()) as { results: { name: string }[] };
    expect(found.results.map((r) => r.name)).to.deep.equal(['math/adder']);
    expect((await c.request('GET', '/v2/_catalog')).status).to.equal(401);
    expect(await (await reader.request('GET', '/v2/_catalog')).json()).to.deep.equal({ repositories: ['math/adder'] });
    expect(await (await admin.request('GET', '/v2/_catalog')).json()).to.deep.equal({ repositories: ['math/adder', 'secret/thing'] });
  });

  it('lets a token read at least what anonymous callers read (the union of both grants)', async () => {
    const c = await start(true);
    const admin = c.as(bearer((await tokens.create({ scopes: ['push:**'] })).token));
    const digest = await admin.pushModule('math/adder', ['1.0.0']);
    const elsewhere = c.as(bearer((await tokens.create({ scopes: ['push:code/*'] })).token));
    for (const path of ['/v2/math/adder/manifests/1.0.0', `/v2/math/adder/blobs/${digest}`, '/v2/math/adder/tags/list', '/v2/_reasonplug/resolve?name=math/adder&range=1']) {
      expect((await c.request('GET', path)).status, `anonymous ${path}`).to.equal(200);
      expect((await elsewhere.request('GET', path)).status, `token for code/* ${path}`).to.equal(200);
    }
    const found = (await (await elsewhere.request('GET', '/v2/_reasonplug/search')).json()) as { results: { name: string }[] };
    expect(found.results.map((r) => r.name)).to.deep.equal(['math/adder']);
    // Reading more does not mean writing more.
    const push = await elsewhere.request('POST', '/v2/math/adder/blobs/uploads/');
    expect(push.status).to.equal(403);
  });

  it('mounts only from repositories the caller may pull', async () => {
    const c = await start(false);
    const admin = c.as(bearer((await tokens.create({ scopes: ['push:**'] })).token));
    const digest = await admin.pushBlob('secret/thing', Buffer.from('private bytes'));
    const mathPush = c.as(bearer((await tokens.create({ scopes: ['push:math/*'] })).token));
    const res = await mathPush.request('POST', `/v2/math/adder/blobs/uploads/?mount=${digest}&from=secret/thing`);
    expect(res.status).to.equal(202);
    expect((await mathPush.request('HEAD', `/v2/math/adder/blobs/${digest}`)).status).to.equal(404);
  });

  it("marks a blob served on a token private to shared caches, one served to anyone public (RFC 9111 §3.5)", async () => {
    const c = await start(false);
    const { token } = await tokens.create({ scopes: ['push:math/*', 'pull:math/*'] });
    const digest = await c.as(bearer(token)).pushBlob('math/adder', new TextEncoder().encode('private bytes'));
    const got = await c.as(bearer(token)).request('GET', `/v2/math/adder/blobs/${digest}`);
    expect(got.status).to.equal(200);
    expect(got.headers.get('cache-control')).to.equal('private, max-age=31536000, immutable');
    expect((await c.request('GET', `/v2/math/adder/blobs/${digest}`)).status).to.equal(401);
    await registry!.close();
    const open = await start(true);
    expect((await open.request('GET', `/v2/math/adder/blobs/${digest}`)).headers.get('cache-control')).to.equal('public, max-age=31536000, immutable');
  });

  it('an open registry refuses writes from browser pages of other sites (no preflight guards a text/plain POST); its own and loopback pages, and clients without Origin, write', async () => {
    registry = await startRegistry(storage);
    const c = new Client(registry.url);
    const upload = (origin?: string) =>
      fetch(`${registry!.url}/v2/drive/by/blobs/uploads/`, { method: 'POST', headers: { 'Content-Type': 'text/plain', ...(origin ? { Origin: origin } : {}) } });
    const foreign = await upload('https://evil.example');
    expect(foreign.status).to.equal(403);
    expect(await errorCode(foreign)).to.equal('DENIED');
    expect((await upload('null')).status).to.equal(403);
    for (const origin of [undefined, 'http://localhost:3000', registry.url]) expect((await upload(origin)).status, String(origin)).to.equal(202);
    // reads stay open to any page, as the registry is
    expect((await fetch(`${registry.url}/v2/`, { headers: { Origin: 'https://evil.example' } })).status).to.equal(200);
    await c.pushModule('math/adder', ['1.0.0']);
  });

  it('writes one structured log line per request, naming the caller', async () => {
    const c = await start();
    const { token } = await tokens.create({ scopes: ['pull:**'], user: 'bob' });
    await c.as(bearer(token)).request('GET', '/v2/');
    await c.request('GET', '/v2/nope/tags/list');
    const requests = logLines.filter((l) => l.msg === 'request');
    expect(requests[0]).to.include({ method: 'GET', url: '/v2/', status: 200, user: 'bob', completed: true });
    expect(requests[0]!.ms).to.be.a('number');
    expect(requests[1]).to.include({ url: '/v2/nope/tags/list', status: 404, user: null });
    expect(JSON.stringify(logLines)).to.not.include(token);
  });

  it('logs credentials that do not verify as warnings, with why and the token id, never the secret; no credentials as an ordinary challenge', async () => {
    const c = await start(false);
    const { token, record } = await tokens.create({ scopes: ['pull:**'] });
    const revoked = (await tokens.create({ scopes: ['pull:**'] })).token;
    await tokens.revoke(revoked.split('_')[1]!);
    const wrongSecret = `rpr_${record.id}_${'ab'.repeat(32)}`;
    const tries: [string, string | undefined][] = [
      ['none', undefined],
      ['wrong', bearer(wrongSecret)],
      ['revoked', bearer(revoked)],
      ['guess', basic('mallory', 'rpr_0123456789abcdef_GUESS')],
      ['scheme', 'Token abc'],
      ['right', bearer(token)],
    ];
    for (const [repo, auth] of tries) {
      const res = await (auth ? c.as(auth) : c).request('GET', `/v2/${repo}/x/tags/list`);
      expect(res.status, repo).to.equal(repo === 'right' ? 404 : 401);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
    const lines = logLines.filter((l) => l.msg === 'request');
    expect(lines.map((l) => [(l.url as string).split('/')[2], l.level, l.status, l.token, l.authFailure])).to.deep.equal([
      ['none', 30, 401, null, undefined],
      ['wrong', 40, 401, record.id, 'wrong secret'],
      ['revoked', 40, 401, revoked.split('_')[1], 'unknown or revoked token'],
      ['guess', 40, 401, '0123456789abcdef', 'malformed credentials'],
      ['scheme', 40, 401, null, 'malformed credentials'],
      ['right', 30, 404, record.id, undefined],
    ]);
    const logged = JSON.stringify(logLines);
    for (const secret of [wrongSecret, revoked, token].map((t) => t.split('_')[2]!).concat('GUESS')) expect(logged).to.not.include(secret);
  });

  it('keeps tokens in S3 storage too, shared by replicas', async () => {
    const s3 = await s3Driver.open();
    const { token } = await new TokenStore(s3.storage).create({ scopes: ['pull:**'] });
    expect(await new TokenStore(s3.reopen()).verify(token)).to.not.equal(undefined);
  });
});
