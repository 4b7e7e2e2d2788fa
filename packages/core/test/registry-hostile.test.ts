/**
 * The registry client against a registry that lies: small `node:http` registries on loopback answer what a hostile
 * or broken one could (path-like tags, other versions than asked for, challenges meant to harvest tokens, `Link`s to
 * other origins, control characters), and the real client code must not write outside its cache, take another
 * version, send credentials where they were not configured, crash, or let the registry's text drive a terminal.
 */
import { expect } from 'chai';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { basename, join } from 'node:path';
import { packModule } from '../src/registry/artifact.js';
import { ModuleCache } from '../src/registry/cache.js';
import { InvalidArtifactError, InvalidReferenceError, ModuleNotFoundError, RegistryAuthError, RegistryResponseError } from '../src/registry/errors.js';
import { reasonerForTask, resolveModule, searchModules } from '../src/registry/lookup.js';
import { printable } from '../src/registry/printable.js';
import { pullModule } from '../src/registry/pull.js';
import { rejection } from './support/assertions.js';
import { runReasonplug } from './support/cli.js';
import { testDir } from './support/models.js';
import { makeRegistryModule } from './support/registries.js';

/** A module as a registry serves it: manifest bytes, digest, blobs by digest. */
interface Artifact {
  manifest: Buffer;
  digest: string;
  blobs: Map<string, Buffer>;
  /** Digest of its model.onnx layer. */
  model: string;
}

async function artifact(name: string, version: string): Promise<Artifact> {
  const packed = await packModule(await makeRegistryModule({ name, version }));
  const blobs = new Map([[packed.config.descriptor.digest, packed.config.bytes]]);
  for (const f of packed.files) blobs.set(f.descriptor.digest, await readFile(f.path));
  return { manifest: packed.bytes, digest: packed.digest, blobs, model: packed.files.find((f) => f.title === 'model.onnx')!.descriptor.digest };
}

interface Answer {
  status?: number;
  headers?: Record<string, string>;
  body?: string | Buffer | object;
}

/** What a route answers for a request, or undefined to pass it on (404 when no route takes it). */
type Route = (url: URL, req: IncomingMessage) => Answer | undefined;

interface Hostile {
  host: string;
  origin: string;
  /** Every request: path with query, and its Authorization header. */
  seen: { path: string; authorization?: string }[];
  close(): Promise<void>;
}

async function hostile(...routes: Route[]): Promise<Hostile> {
  const seen: Hostile['seen'] = [];
  const server = createServer((req, res) => {
    const url = new URL(req.url!, 'http://x');
    seen.push({ path: req.url!, ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}) });
    const unknown: Answer = { status: 404, body: { errors: [{ code: 'NAME_UNKNOWN', message: 'no' }] } };
    const a = routes.reduce<Answer | undefined>((found, r) => found ?? r(url, req), undefined) ?? unknown;
    const body = a.body === undefined ? Buffer.alloc(0) : Buffer.isBuffer(a.body) ? a.body : Buffer.from(typeof a.body === 'string' ? a.body : JSON.stringify(a.body));
    res.writeHead(a.status ?? 200, { 'content-length': body.length, ...a.headers });
    res.end(req.method === 'HEAD' ? undefined : body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { host, origin: `http://${host}`, seen, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

/** The `_reasonplug` extension, as discovery announces it. */
const extension: Route = (url) => (url.pathname === '/v2/_oci/ext/discover' ? { body: { extensions: [{ name: '_reasonplug' }] } } : undefined);

/** `repository` holding `tags` (each an artifact), its manifests also by digest, and their blobs. */
function repository(repo: string, tags: Record<string, Artifact>): Route {
  return (url) => {
    const m = new RegExp(`^/v2/${repo}/(manifests|blobs)/(.+)$`).exec(url.pathname);
    if (!m) return undefined;
    const all = Object.values(tags);
    if (m[1] === 'manifests') {
      const a = tags[m[2]!] ?? all.find((t) => t.digest === m[2]);
      return a && { headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json', 'docker-content-digest': a.digest }, body: a.manifest };
    }
    const blob = all.map((t) => t.blobs.get(m[2]!)).find((b) => b !== undefined);
    return blob && { body: blob };
  };
}

/** A `_reasonplug/resolve` that answers `answer` for every name and range. */
const resolveAnswer = (answer: object): Route => (url) => (url.pathname === '/v2/_reasonplug/resolve' ? { body: answer } : undefined);

describe('registry client against a hostile registry', function () {
  this.timeout(60_000);
  let good: Artifact;
  let two: Artifact;
  let built: Artifact;
  const open: Hostile[] = [];
  const start = async (...routes: Route[]) => {
    const h = await hostile(...routes);
    open.push(h);
    return h;
  };
  before(async () => {
    good = await artifact('good', '1.0.0');
    two = await artifact('good', '2.0.0');
    built = await artifact('good', '1.0.0+b.1');
  });
  after(() => Promise.all(open.map((h) => h.close())));

  it("never makes a path of a resolve answer's tag: one that is no tag, or not its version's, is refused", async () => {
    const cache = testDir('hostile-tag-cache');
    const outside = testDir('hostile-outside');
    await writeFile(join(outside, 'owned'), 'ORIGINAL\n');
    // From refs/<registry>/evil/good/ up out of the cache, into `outside`.
    const climbing = `../../../../../${basename(outside)}/owned`;
    for (const tag of [climbing, 'latest']) {
      const h = await start(extension, resolveAnswer({ name: 'evil/good', version: '1.0.0', tag, digest: good.digest }), repository('evil/good', { '1.0.0': good }));
      const err = await rejection(pullModule(`${h.host}/evil/good@^1.0`, { cacheDir: cache }));
      expect(err, err.message).to.be.instanceOf(InvalidArtifactError);
    }
    expect(await readFile(join(outside, 'owned'), 'utf8')).to.equal('ORIGINAL\n');
    expect(existsSync(join(cache, 'refs')), 'no ref written').to.equal(false);

    // The cache itself refuses a tag that is none, whoever asks.
    const refs = new ModuleCache(cache);
    const refused = await rejection(refs.writeRef('r.io', 'evil/good', climbing, good.digest));
    expect(refused).to.be.instanceOf(InvalidReferenceError);
    expect(await readFile(join(outside, 'owned'), 'utf8')).to.equal('ORIGINAL\n');
  });

  it('takes only the version asked for: not a resolve answer outside the range, nor another version under a version tag', async () => {
    const cache = testDir('hostile-version-cache');
    const outOfRange = await start(extension, resolveAnswer({ name: 'evil/good', version: '1.0.0', tag: '1.0.0', digest: good.digest }), repository('evil/good', { '1.0.0': good }));
    const err = await rejection(pullModule(`${outOfRange.host}/evil/good@^2.0`, { cacheDir: cache }));
    expect(err).to.be.instanceOf(InvalidArtifactError);
    expect(err.message).to.match(/resolved evil\/good@\^2\.0 to version "1\.0\.0" under tag "1\.0\.0", which is not in the range/);

    // 2.0.0 under the tag 1.0.0: refused from its reasonplug.json, before any of its layers is fetched.
    const mislabelled = await start(repository('evil/good', { '1.0.0': two }));
    const wrong = await rejection(pullModule(`${mislabelled.host}/evil/good@1.0.0`, { cacheDir: cache }));
    expect(wrong).to.be.instanceOf(InvalidArtifactError);
    expect(wrong.message).to.include('is version 2.0.0 by its reasonplug.json, not 1.0.0');
    expect(mislabelled.seen.map((s) => s.path)).to.not.include(`/v2/evil/good/blobs/${two.model}`);
    expect(existsSync(join(cache, 'refs')), 'no ref written').to.equal(false);

    // A registry may name the version without its build metadata, as npm keys versions: the tag says which build.
    const builds = await start(extension, resolveAnswer({ name: 'evil/good', version: '1.0.0', tag: '1.0.0_b.1', digest: built.digest }), repository('evil/good', { '1.0.0_b.1': built }));
    expect((await pullModule(`${builds.host}/evil/good@^1.0`, { cacheDir: cache })).version).to.equal('1.0.0+b.1');
  });

  it('sends a token only to the registry it is configured for, and to no other origin that registry names', async () => {
    const basic = `Basic ${Buffer.from('alice:s3cret').toString('base64')}`;
    const guarded: Route = (url, req) =>
      url.pathname.startsWith('/v2/evil/') && req.headers.authorization !== basic
        ? { status: 401, headers: { 'www-authenticate': 'Basic realm="evil"' }, body: { errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] } }
        : undefined;
    const other = await start((url) => (url.pathname.endsWith('/tags/list') ? { status: 401, headers: { 'www-authenticate': 'Basic realm="other"' } } : undefined));
    const paged: Route = (url) =>
      url.pathname === '/v2/evil/good/tags/list'
        ? { headers: { link: `<${other.origin}/v2/evil/good/tags/list?last=0.9.0>; rel="next"` }, body: { name: 'evil/good', tags: ['0.9.0'] } }
        : undefined;
    const registry = await start(guarded, paged, repository('evil/good', { '1.0.0': good }));
    const ref = `${registry.host}/evil/good:1.0.0`;

    // Configured for another registry: this one never sees it, and says how to give it one.
    const elsewhere = await rejection(pullModule(ref, { registry: 'registry.example', token: 'alice:s3cret', cacheDir: testDir('hostile-token-cache') }));
    expect(elsewhere).to.be.instanceOf(RegistryAuthError).and.include({ reason: 'missing' });
    expect(elsewhere.message).to.include(`--registry ${registry.host}`);
    expect(registry.seen.filter((s) => s.authorization !== undefined)).to.deep.equal([]);

    const own = { registry: registry.host, token: 'alice:s3cret' };
    expect((await pullModule(ref, { ...own, cacheDir: testDir('hostile-token-cache') })).version).to.equal('1.0.0');
    expect(registry.seen.some((s) => s.authorization === basic)).to.equal(true);

    // Its tag list pages on to another origin: asked without the credentials, whose challenge is not answered.
    const paging = await rejection(resolveModule(`${registry.host}/evil/good@^1.0`, own));
    expect(paging).to.be.instanceOf(RegistryResponseError);
    expect(paging.message).to.match(/asks for credentials, and the registry's are not sent to another origin/);
    expect(other.seen.map((s) => s.path)).to.deep.equal(['/v2/evil/good/tags/list?last=0.9.0']);
    expect(other.seen.filter((s) => s.authorization !== undefined)).to.deep.equal([]);
  });

  it("trades the configured registry's credentials at the token realm it names, and no other registry's", async () => {
    const realm = await start((url) => (url.pathname === '/token' ? { body: { token: 'short-lived' } } : undefined));
    const bearer: Route = (url, req) =>
      url.pathname.startsWith('/v2/evil/') && req.headers.authorization !== 'Bearer short-lived'
        ? { status: 401, headers: { 'www-authenticate': `Bearer realm="${realm.origin}/token",service="evil"` } }
        : undefined;
    const registry = await start(bearer, repository('evil/good', { '1.0.0': good }));
    const ref = `${registry.host}/evil/good:1.0.0`;

    await pullModule(ref, { registry: 'registry.example', token: 'alice:s3cret', cacheDir: testDir('hostile-realm-cache') });
    expect(realm.seen.map((s) => s.authorization), 'anonymous token for a registry the token is not for').to.deep.equal([undefined]);

    await pullModule(ref, { registry: registry.host, token: 'alice:s3cret', cacheDir: testDir('hostile-realm-cache') });
    expect(realm.seen.map((s) => s.authorization)[1]).to.equal(`Basic ${Buffer.from('alice:s3cret').toString('base64')}`);
  });

  it('--reasoner-task passes over search hits without versions; hits with names, tags or digests OCI does not allow are refused', async () => {
    let results: unknown[] = [];
    const search: Route = (url) => (url.pathname === '/v2/_reasonplug/search' ? { body: { results } } : undefined);
    const registry = await start(extension, search);
    const fingerprint = `sha256:${'ab'.repeat(32)}`;
    results = [{ name: 'evil/good', versions: [] }];
    const none = await rejection(reasonerForTask('math', fingerprint, { registry: registry.host }));
    expect(none).to.be.instanceOf(ModuleNotFoundError);

    const version = { digest: good.digest, tags: ['1.0.0'], version: '1.0.0', kind: 'logit-reasoner', tasks: ['math'], tokenizer: fingerprint };
    for (const hit of [
      { name: 'evil/\u001b[2Jgood', versions: [version] },
      { name: 'evil/good', versions: [{ ...version, tags: ['1.0.0\u001b[8m'] }] },
      { name: 'evil/good', versions: [{ ...version, digest: 'sha256:0' }] },
      { name: '../good', versions: [version] },
    ]) {
      results = [hit];
      expect(await rejection(searchModules({ task: 'math' }, { registry: registry.host })), JSON.stringify(hit)).to.be.instanceOf(InvalidArtifactError);
    }
    results = [{ name: 'evil/good', versions: [version] }];
    expect(await reasonerForTask('math', fingerprint, { registry: registry.host })).to.deep.equal({ ref: `${registry.host}/evil/good@${good.digest}`, name: 'evil/good', version: '1.0.0' });
  });

  it("escapes control characters in what the CLI prints of a registry's text: search results and error messages", async () => {
    const sneaky = '\u001b]0;pwned\u0007\u001b[2J\u009b31m';
    const search: Route = (url) =>
      url.pathname === '/v2/_reasonplug/search'
        ? { body: { results: [{ name: 'evil/good', versions: [{ digest: good.digest, tags: ['1.0.0'], version: `1.0.0${sneaky}`, kind: 'logit-reasoner', tasks: [`math${sneaky}`] }] }] } }
        : undefined;
    const failing: Route = (url) => (url.pathname.startsWith('/v2/evil/') ? { status: 500, body: { errors: [{ code: 'UNKNOWN', message: `broken${sneaky}` }] } } : undefined);
    const registry = await start(extension, search, failing);
    const env = { REASONPLUG_CACHE: testDir('hostile-cli-cache') };
    const raw = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/;

    const listed = await runReasonplug(['search', '--task', 'math', '--registry', registry.host], env);
    expect(listed.code, listed.stderr).to.equal(0);
    expect(listed.stdout).to.not.match(raw);
    expect(listed.stdout).to.include('evil/good').and.include('1.0.0\\u001b]0;pwned\\u0007\\u001b[2J\\u009b31m');

    const pulled = await runReasonplug(['pull', `${registry.host}/evil/good:1.0.0`], env);
    expect(pulled.code).to.not.equal(0);
    expect(pulled.stderr).to.not.match(raw);
    expect(pulled.stderr).to.include('failed with 500 UNKNOWN: broken\\u001b]0;pwned\\u0007');

    // As JSON writes control characters, so JSON stays JSON.
    expect(JSON.parse(printable(JSON.stringify({ s: sneaky })))).to.deep.equal({ s: sneaky });
  });
});
