import { expect } from 'chai';
import { join } from 'node:path';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { Authenticator, parseChallenges } from '../src/registry/auth.js';
import { InvalidReferenceError, RegistryAuthError } from '../src/registry/errors.js';
import { progressBar } from '../src/registry/progress.js';
import { RegistryClient } from '../src/registry/client.js';
import { HASHING_DIGEST } from '../src/registry/download.js';
import { formatRef, isLoopback, parseRef, registryUrl, tagVersion, versionTag } from '../src/registry/reference.js';
import { exactVersion, pickVersion } from '../src/registry/resolve.js';
import { cacheRoot } from '../src/modules/cache-root.js';
import { settingsFrom } from '../src/registry/settings.js';

const DIGEST = `sha256:${'0a'.repeat(32)}`;

function refusal(text: string, defaultRegistry?: string): string {
  try {
    parseRef(text, defaultRegistry);
  } catch (err) {
    expect(err).to.be.instanceOf(InvalidReferenceError);
    return (err as Error).message;
  }
  throw new Error(`${text} was accepted`);
}

describe('registry references', () => {
  it('parses ranges, tags and digests, with or without a registry', () => {
    expect(parseRef('ghcr.io/acme/math@^1.2')).to.deep.equal({ registry: 'ghcr.io', repository: 'acme/math', selector: { type: 'range', range: '^1.2' } });
    expect(parseRef('127.0.0.1:5000/acme/math:1.0.0')).to.deep.equal({
      registry: '127.0.0.1:5000',
      repository: 'acme/math',
      selector: { type: 'tag', tag: '1.0.0' },
    });
    expect(parseRef(`localhost/acme/math@${DIGEST}`).selector).to.deep.equal({ type: 'digest', digest: DIGEST });
    expect(parseRef('acme/math', 'reg.example:8443')).to.deep.equal({ registry: 'reg.example:8443', repository: 'acme/math', selector: { type: 'tag', tag: 'latest' } });
    expect(parseRef('acme/math@>=1.0.0 <2', 'r.io').selector).to.deep.equal({ type: 'range', range: '>=1.0.0 <2' });
    expect(parseRef('acme/math@beta', 'r.io').selector).to.deep.equal({ type: 'tag', tag: 'beta' });
    expect(parseRef('r.io/org/team/math:latest').repository).to.equal('org/team/math');
    // Docker's pinned form: the digest decides.
    expect(parseRef(`r.io/acme/math:1.0.0@${DIGEST}`).selector).to.deep.equal({ type: 'digest', digest: DIGEST });
    // A registry in the reference wins over the default.
    expect(parseRef('[::1]:5000/acme/math', 'r.io').registry).to.equal('[::1]:5000');
  });

  it('writes "+" in versions as "_" in tags, and reads it back', () => {
    expect(parseRef('r.io/acme/math:1.0.0+build.7').selector).to.deep.equal({ type: 'tag', tag: '1.0.0_build.7' });
    expect(versionTag('1.0.0+build.7')).to.equal('1.0.0_build.7');
    expect(tagVersion('1.0.0_build.7')).to.equal('1.0.0+build.7');
    expect(tagVersion('1.2.3-rc.1')).to.equal('1.2.3-rc.1');
    for (const moving of ['latest', '1', '1.2', 'v1.2.3']) expect(tagVersion(moving)).to.equal(undefined);
  });

  it('formats what it parses', () => {
    for (const text of ['r.io/acme/math:1.0.0', 'r.io/acme/math@^1.2', `r.io/acme/math@${DIGEST}`]) expect(formatRef(parseRef(text))).to.equal(text);
  });

  it('refuses malformed references with a message saying what is wrong', () => {
    expect(refusal('acme/math@^1')).to.match(/no registry given; .*--registry.*REASONPLUG_REGISTRY/);
    expect(refusal('r.io/math:1.0.0')).to.match(/needs a namespace and a name/);
    expect(refusal('r.io/Acme/math')).to.match(/"Acme" is not a valid repository component/);
    expect(refusal('r.io/acme/math@sha256:abc')).to.match(/64 lower-case hex/);
    expect(refusal('r.io/acme/math@sha512:abc')).to.match(/only sha256 digests/);
    expect(refusal('r.io/acme/math:1.0.0@^1')).to.match(/either :tag or @range/);
    expect(refusal('r.io/acme/math@not a range!')).to.match(/neither a semver range, a tag nor a sha256 digest/);
    // (new URL threw a raw TypeError "Invalid URL" for these later)
    expect(refusal('127.0.0.1:99999/acme/x@1')).to.match(/port 99999 of "127\.0\.0\.1:99999" is not a port/);
    expect(refusal('r.io:0/acme/x@1')).to.match(/port 0 .* is not a port/);
  });

  it('uses plain HTTP for loopback registries only, unless told otherwise', () => {
    for (const host of ['localhost:5000', '127.0.0.1:5000', '127.1.2.3', '[::1]:5000']) {
      expect(isLoopback(host), host).to.equal(true);
      expect(registryUrl(host)).to.equal(`http://${host}`);
    }
    expect(registryUrl('ghcr.io')).to.equal('https://ghcr.io');
    expect(registryUrl('10.0.0.5:5000', true)).to.equal('http://10.0.0.5:5000');
    expect(isLoopback('localhost.example.com')).to.equal(false);
  });
});

describe('registry version picking', () => {
  const tags = ['1.0.0', '1.1.0', '1.2.0-rc.1', '2.0.0_build.1', 'latest', '1'];

  it('takes the highest version in the range, and latest when it satisfies the range (npm)', () => {
    expect(pickVersion(tags, '^1')).to.deep.equal({ tag: '1.1.0', version: '1.1.0' });
    expect(pickVersion(tags, '*')?.version).to.equal('2.0.0+build.1');
    expect(pickVersion(tags, '*', '1.0.0')).to.deep.equal({ tag: '1.0.0', version: '1.0.0' });
    expect(pickVersion(tags, '^2', '1.0.0')?.tag).to.equal('2.0.0_build.1');
    expect(pickVersion(tags, '^3')).to.equal(undefined);
    expect(pickVersion(tags, '1.2.0-rc.1')?.tag).to.equal('1.2.0-rc.1');
  });

  it('knows exact versions from ranges', () => {
    expect(exactVersion('1.2.3')).to.equal('1.2.3');
    expect(exactVersion('1.2.3+b.1')).to.equal('1.2.3+b.1');
    expect(exactVersion('^1.2.3')).to.equal(undefined);
    expect(exactVersion('1.2')).to.equal(undefined);
  });
});

describe('registry client settings and challenges', () => {
  it('fills options from the environment; explicit options win', () => {
    const env = { REASONPLUG_REGISTRY: 'r.io', REASONPLUG_TOKEN: 't', REASONPLUG_OFFLINE: '1' };
    // (the token is the registry's it came with)
    expect(settingsFrom({ cacheDir: '/c' }, env)).to.deep.equal({ registry: 'r.io', token: 't', tokenFor: 'r.io', cacheDir: '/c', plainHttp: false, offline: true });
    expect(settingsFrom({ token: 'u', tokenFor: 'y.io' }, env)).to.include({ registry: 'r.io', token: 'u', tokenFor: 'y.io' });
    expect(settingsFrom({ registry: 'x.io', offline: false, cacheDir: '/d' }, env)).to.include({ registry: 'x.io', offline: false, cacheDir: '/d' });
    expect(settingsFrom({}, {}).cacheDir, 'the shared cache root').to.equal(cacheRoot());
    expect(settingsFrom({}, { REASONPLUG_OFFLINE: '0' }).offline).to.equal(false);
    // a registry is its host, or its root's URL (http:// asking for plain HTTP), from the option or the environment alike
    const plain = settingsFrom({}, { REASONPLUG_REGISTRY: 'http://registry.local:5000/' });
    expect(plain).to.include({ registry: 'registry.local:5000', plainHttp: false, plainHttpFor: 'registry.local:5000' });
    expect(settingsFrom({ registry: 'http://registry.local:5000' }, {})).to.include({ registry: 'registry.local:5000', plainHttpFor: 'registry.local:5000' });
    expect(settingsFrom({ registry: 'HTTPS://r.io' }, { REASONPLUG_REGISTRY: 'http://x.io' })).to.include({ registry: 'r.io', plainHttp: false }).and.not.have.property('plainHttpFor');
    // plain HTTP is the named registry's own: Ollama's registry and a reference's others stay on HTTPS
    expect(RegistryClient.for('registry.local:5000', plain).transport.baseUrl).to.equal('http://registry.local:5000');
    expect(RegistryClient.for('registry.ollama.ai', plain).transport.baseUrl).to.equal('https://registry.ollama.ai');
    expect(RegistryClient.for('registry.ollama.ai', { ...plain, plainHttp: true }).transport.baseUrl, '--plain-http: every registry').to.equal('http://registry.ollama.ai');
    expect(settingsFrom({ token: 't' }, { REASONPLUG_REGISTRY: 'https://r.io:443' }), "the token is the host's").to.include({ registry: 'r.io:443', tokenFor: 'r.io:443' });
    // ... and not a place in one, nor reached another way
    for (const [given, host, shown] of [['http://localhost:5000/v2/', 'localhost:5000'], ['oci://r.io', 'r.io'], ['https://me:pw@r.io', 'r.io', 'https://…@r.io'], ['http://r.io?ns=acme', 'r.io']]) {
      expect(() => settingsFrom({ registry: given }, {}), given).to.throw(InvalidReferenceError, `registry ${shown ?? given}: give its host (e.g. ${host}), or its root's URL (http://${host} for plain HTTP)`);
    }
    expect(refusal('https://r.io/acme/math:1.0.0')).to.match(/name the registry by its host, without https:\/\/ \(e\.g\. r\.io\/acme\/math:1\.0\.0\)/);
    // a relative cache root is made absolute (what is listed and recorded names it wherever the process goes)
    const before = process.env['REASONPLUG_CACHE'];
    process.env['REASONPLUG_CACHE'] = 'relcache';
    try {
      expect(cacheRoot()).to.equal(join(process.cwd(), 'relcache'));
    } finally {
      if (before === undefined) delete process.env['REASONPLUG_CACHE'];
      else process.env['REASONPLUG_CACHE'] = before;
    }
  });

  it('parses WWW-Authenticate challenges', () => {
    expect(parseChallenges('Bearer realm="https://auth.io/token",service="registry.io",scope="repository:a/b:pull,push"')).to.deep.equal([
      { scheme: 'bearer', params: { realm: 'https://auth.io/token', service: 'registry.io', scope: 'repository:a/b:pull,push' } },
    ]);
    expect(parseChallenges('Basic realm="reasonplug-registry", charset="UTF-8"')).to.deep.equal([
      { scheme: 'basic', params: { realm: 'reasonplug-registry', charset: 'UTF-8' } },
    ]);
    expect(parseChallenges('Negotiate, Basic realm=x')).to.deep.equal([
      { scheme: 'negotiate', params: {} },
      { scheme: 'basic', params: { realm: 'x' } },
    ]);
  });
});

describe('registry progress bar', () => {
  const sink = (isTTY: boolean) => {
    const out: string[] = [];
    const stream = Object.assign(new Writable({ write: (c, _e, cb) => (out.push(String(c)), cb()) }), { isTTY, columns: 200 });
    return { stream, out };
  };
  const big = 64 * 1024 * 1024;

  it('draws on a terminal for large files and ends its line', () => {
    const { stream, out } = sink(true);
    const bar = progressBar('pull acme/math', stream, {})!;
    bar.update({ file: 'model.onnx', digest: DIGEST, size: big, bytes: big / 2, resumedFrom: 0, done: false });
    bar.update({ file: 'model.onnx', digest: DIGEST, size: big, bytes: big, resumedFrom: 0, done: true });
    bar.finish();
    const text = out.join('');
    expect(text).to.match(/pull acme\/math \[#+-*\]\s+\d+% /);
    expect(text).to.match(/100% 64\.0\/64\.0 MiB/);
    expect(text.endsWith('\n')).to.equal(true);
  });

  it("shows a GGUF's hashing, then its conversion, each against the file's size (not their sum)", () => {
    const { stream, out } = sink(true);
    const big = 64 * 1024 * 1024;
    const bar = progressBar('convert x.gguf', stream, {})!;
    const draw = (digest: string, bytes: number) => {
      bar.update({ file: 'x.gguf', digest, size: big, bytes, resumedFrom: 0, done: false });
      return new Promise((r) => setTimeout(r, 110));
    };
    return (async () => {
      await draw(HASHING_DIGEST, big / 2);
      await draw(HASHING_DIGEST, big);
      await draw(DIGEST, big / 4);
      bar.finish();
      const lines = out.join('').split('\r').filter(Boolean);
      expect(lines[0]).to.match(/ 50% 32\.0\/64\.0 MiB .* hashing x\.gguf/);
      expect(lines[2]).to.match(/ 25% 16\.0\/64\.0 MiB .* x\.gguf/);
      expect(lines.every((l) => !l.includes('128.0'))).to.equal(true);
    })();
  });

  it('stays quiet off a terminal, in CI, and for small files', () => {
    expect(progressBar('x', sink(false).stream, {})).to.equal(undefined);
    expect(progressBar('x', sink(true).stream, { CI: 'true' })).to.equal(undefined);
    const { stream, out } = sink(true);
    const bar = progressBar('x', stream, {})!;
    bar.update({ file: 'a', digest: DIGEST, size: 1000, bytes: 1000, resumedFrom: 0, done: true });
    bar.finish();
    expect(out).to.deep.equal([]);
  });
});

describe('registry token flow (Bearer realm)', () => {
  it('trades the credential for a token per scope at the realm, and says when the token service refuses', async () => {
    const requests: string[] = [];
    // A token service on loopback: it knows one user, and names each token after its scope.
    const service = createServer((req, res) => {
      requests.push(`${req.url} ${req.headers.authorization ?? 'anonymous'}`);
      if (req.headers.authorization !== `Basic ${Buffer.from('ci:secret').toString('base64')}`) {
        res.writeHead(401).end();
        return;
      }
      const scope = new URL(req.url!, 'http://x').searchParams.get('scope');
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ access_token: `token-for-${scope}` }));
    });
    await new Promise<void>((r) => service.listen(0, '127.0.0.1', r));
    const realm = `http://127.0.0.1:${(service.address() as AddressInfo).port}/token`;
    const challenge = `Bearer realm="${realm}",service="r.io",scope="repository:a/b:pull"`;
    const scope = 'repository:a/b:pull';
    const tokenFetch = (url: URL, headers: Record<string, string>) => fetch(url, { headers });
    try {
      const auth = new Authenticator('r.io', 'ci:secret', tokenFetch);
      expect(await auth.answer(challenge, scope)).to.equal(`Bearer token-for-${scope}`);
      expect(auth.header(scope)).to.equal(`Bearer token-for-${scope}`);
      expect(auth.header('repository:c/d:pull'), 'tokens are per scope').to.equal(undefined);
      expect(requests[0]).to.equal(`/token?service=r.io&scope=repository%3Aa%2Fb%3Apull Basic ${Buffer.from('ci:secret').toString('base64')}`);

      const wrong = await new Authenticator('r.io', 'ci:guess', tokenFetch).answer(challenge, scope).catch((e: unknown) => e);
      expect(wrong).to.be.instanceOf(RegistryAuthError);
      expect(wrong).to.deep.include({ registry: 'r.io', scope, reason: 'rejected' });
      expect((wrong as Error).message).to.include(`(token service http://127.0.0.1:`);

      const anonymous = await new Authenticator('r.io', undefined, tokenFetch).answer(challenge, scope).catch((e: unknown) => e);
      expect(anonymous).to.deep.include({ reason: 'missing' });
      expect(requests.at(-1)).to.match(/ anonymous$/);
    } finally {
      service.close();
    }
  });
});
