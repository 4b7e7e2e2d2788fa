/**
 * Blob uploads in chunks (POST, PATCH per chunk, PUT `?digest=`), so that pushing a large file holds one chunk in
 * memory rather than the whole file; and the single PUT where a registry refuses chunks. A recording proxy in front
 * of a real registry shows what went over the wire, and refuses or challenges requests where a test asks it to.
 */
import { expect } from 'chai';
import { once } from 'node:events';
import { readdir, readFile } from 'node:fs/promises';
import { createServer, request, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { loadModuleDir } from '../src/modules/module-dir.js';
import { sha256Digest, type Descriptor } from '../src/registry/artifact.js';
import { RegistryClient } from '../src/registry/client.js';
import type { TransferProgress } from '../src/registry/download.js';
import { RegistryResponseError } from '../src/registry/errors.js';
import { pullModule } from '../src/registry/pull.js';
import { pushModule } from '../src/registry/push.js';
import { testDir } from './support/models.js';
import { rejection } from './support/assertions.js';
import {
  bytesOf,
  distributionMissing,
  makeRegistryModule,
  startDistribution,
  startOurRegistry,
  type OurRegistry,
  type RunningRegistry,
} from './support/registries.js';

const MiB = 1 << 20;

/** A request the proxy saw: method, path, the upload headers, and the status it was answered with. */
interface Seen {
  method: string;
  path: string;
  /** The query's `_state` (distribution's upload state, new in every `Location`). */
  state?: string;
  range?: string;
  length?: string;
  status?: number;
}

/** What the proxy answers instead of forwarding, for the `n`th request of a method (0-based); undefined forwards it. */
type Answer = (req: IncomingMessage, n: number) => { status: number; headers?: Record<string, string>; body?: string } | undefined;

interface Proxy {
  host: string;
  seen: Seen[];
  close(): Promise<void>;
}

/** An HTTP proxy on loopback in front of `target` (`host:port`) that records every request. */
async function startProxy(target: string, answer: Answer = () => undefined): Promise<Proxy> {
  const [hostname, port] = target.split(':') as [string, string];
  const seen: Seen[] = [];
  const counts = new Map<string, number>();
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const method = req.method!;
    const n = counts.get(method) ?? 0;
    counts.set(method, n + 1);
    const url = new URL(req.url!, 'http://proxy');
    const state = url.searchParams.get('_state');
    const entry: Seen = {
      method,
      path: url.pathname,
      ...(state ? { state } : {}),
      ...(req.headers['content-range'] ? { range: req.headers['content-range'] } : {}),
      ...(req.headers['content-length'] ? { length: req.headers['content-length'] } : {}),
    };
    seen.push(entry);
    const canned = answer(req, n);
    if (canned) {
      entry.status = canned.status;
      req.resume();
      req.on('end', () => res.writeHead(canned.status, canned.headers).end(canned.body ?? ''));
      return;
    }
    const upstream = request({ hostname, port, method, path: req.url, headers: req.headers }, (up) => {
      entry.status = up.statusCode!;
      res.writeHead(up.statusCode!, up.headers);
      up.pipe(res);
    });
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    host: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/** Uploads `bytes` as a blob of acme/chunks through `host` with 1 MiB chunks; reads it back and returns its digest. */
async function roundTrip(host: string, bytes: Buffer, credential?: string): Promise<{ descriptor: Descriptor; read: string }> {
  const client = new RegistryClient({ registry: host, uploadChunkBytes: MiB, ...(credential ? { credential } : {}) });
  const descriptor = { mediaType: 'application/octet-stream', digest: sha256Digest(bytes), size: bytes.length };
  // Pieces of 300 KiB, as a file stream would give them: chunks are cut across their bounds.
  await client.uploadBlob('acme/chunks', descriptor, async function* () {
    for (let at = 0; at < bytes.length; at += 300 * 1024) yield bytes.subarray(at, at + 300 * 1024);
  });
  expect(await client.hasBlob('acme/chunks', descriptor.digest)).to.equal(true);
  const { body } = await client.openBlob('acme/chunks', descriptor.digest, 0);
  return { descriptor, read: sha256Digest(Buffer.from(await new Response(body).arrayBuffer())) };
}

/** The PATCH ranges of 1 MiB chunks of `size` bytes. */
const chunkRanges = (size: number) =>
  Array.from({ length: Math.ceil(size / MiB) }, (_, i) => `${i * MiB}-${Math.min((i + 1) * MiB, size) - 1}`);

/** The upload requests the proxy saw, less those answered with an auth challenge. */
const uploads = (seen: Seen[]) => seen.filter((s) => s.path.includes('/blobs/uploads/') && s.status !== 401);

function expectChunked(seen: Seen[], size: number): void {
  const sent = uploads(seen);
  expect(sent.map((s) => s.method)).to.deep.equal(['POST', ...chunkRanges(size).map(() => 'PATCH'), 'PUT']);
  const patches = sent.filter((s) => s.method === 'PATCH');
  expect(patches.map((s) => s.range)).to.deep.equal(chunkRanges(size));
  expect(patches.every((s) => Number(s.length) <= MiB)).to.equal(true);
  expect(sent.at(-1)!.length ?? '0', 'the commit carries no bytes').to.equal('0');
}

/** The proxies of the running test, closed after it (`afterEach(closeProxies)`). */
let proxies: Proxy[] = [];
async function closeProxies(): Promise<void> {
  await Promise.all(proxies.map((p) => p.close()));
  proxies = [];
}
const proxied = async (target: string, answer?: Answer) => {
  const p = await startProxy(target, answer);
  proxies.push(p);
  return p;
};

describe('chunked blob upload (reasonplug-registry)', function () {
  this.timeout(60_000);
  let registry: OurRegistry;
  before(async () => (registry = await startOurRegistry({ auth: true })));
  after(() => registry?.close());
  afterEach(closeProxies);

  it('sends a blob larger than a chunk as PATCHes of one chunk each, following Location, and commits it with PUT ?digest=', async () => {
    const { token } = await registry.tokens.create({ scopes: ['push:acme/*', 'pull:acme/*'] });
    // The registry's credentials are asked for again halfway (an expired token): the chunk goes again.
    const proxy = await proxied(registry.host, (req, n) =>
      req.method === 'PATCH' && n === 2 ? { status: 401, headers: { 'www-authenticate': 'Basic realm="reasonplug"' } } : undefined,
    );
    const bytes = bytesOf(3 * MiB + 12_345, 7);
    const { descriptor, read } = await roundTrip(proxy.host, bytes, token);
    expect(read).to.equal(descriptor.digest);
    expectChunked(proxy.seen, bytes.length);
    const challenged = proxy.seen.filter((s) => s.method === 'PATCH' && s.status === 401);
    expect(challenged.map((s) => s.range), 'the challenged chunk went again').to.deep.equal([chunkRanges(bytes.length)[2]]);
  });

  it('pushes a module with a file over the default chunk size (32 MiB) in chunks, reporting progress, and pulls it back', async () => {
    const { token } = await registry.tokens.create({ scopes: ['push:acme/*', 'pull:acme/*'] });
    const proxy = await proxied(registry.host);
    const dir = await makeRegistryModule({ name: 'large', files: { 'weights.bin': 40 * MiB + 3 } });
    const progress: TransferProgress[] = [];
    await pushModule(dir, `${proxy.host}/acme/large:1.0.0`, { registry: proxy.host, token, onProgress: (p) => progress.push(p) });
    const ranges = uploads(proxy.seen).filter((s) => s.method === 'PATCH').map((s) => s.range);
    expect(ranges).to.deep.equal([`0-${32 * MiB - 1}`, `${32 * MiB}-${40 * MiB + 2}`]);
    const weights = progress.filter((p) => p.file === 'weights.bin');
    expect(weights.at(-1)).to.deep.include({ bytes: 40 * MiB + 3, done: true });
    expect(weights.some((p) => !p.done && p.bytes < 32 * MiB), 'progress while reading').to.equal(true);

    const pulled = await pullModule(`${registry.host}/acme/large:1.0.0`, { registry: registry.host, token, cacheDir: testDir('chunked-pull') });
    const loaded = await loadModuleDir(pulled.dir);
    expect((await readFile(loaded.files['weights_bin']!)).equals(await readFile(join(dir, 'weights.bin')))).to.equal(true);
  });

  it('falls back to one PUT where the registry answers the first PATCH with 405', async () => {
    const { token } = await registry.tokens.create({ scopes: ['push:acme/*', 'pull:acme/*'] });
    const proxy = await proxied(registry.host, (req) => (req.method === 'PATCH' ? { status: 405, body: 'method not allowed' } : undefined));
    const bytes = bytesOf(2 * MiB + 1, 8);
    const { descriptor, read } = await roundTrip(proxy.host, bytes, token);
    expect(read).to.equal(descriptor.digest);
    const sent = uploads(proxy.seen);
    // (the refused session is cancelled: the client never comes back to it)
    expect(sent.map((s) => s.method)).to.deep.equal(['POST', 'PATCH', 'DELETE', 'POST', 'PUT']);
    expect(sent.at(-1)!.length).to.equal(String(bytes.length));
  });

  it('falls back to one PUT where the registry says UNSUPPORTED, and fails on a chunk refused after the first', async () => {
    const { token } = await registry.tokens.create({ scopes: ['push:acme/*', 'pull:acme/*'] });
    const unsupported = JSON.stringify({ errors: [{ code: 'UNSUPPORTED', message: 'chunked uploads are not supported' }] });
    const refusing = await proxied(registry.host, (req) => (req.method === 'PATCH' ? { status: 400, headers: { 'content-type': 'application/json' }, body: unsupported } : undefined));
    const { descriptor, read } = await roundTrip(refusing.host, bytesOf(2 * MiB + 1, 9), token);
    expect(read).to.equal(descriptor.digest);
    expect(uploads(refusing.seen).map((s) => s.method)).to.deep.equal(['POST', 'PATCH', 'DELETE', 'POST', 'PUT']);

    const late = await proxied(registry.host, (req, n) => (req.method === 'PATCH' && n === 1 ? { status: 405 } : undefined));
    const err = await rejection(roundTrip(late.host, bytesOf(2 * MiB + 1, 10), token));
    expect(err).to.be.instanceOf(RegistryResponseError);
    expect((err as RegistryResponseError).status).to.equal(405);
    // The session holding the first chunk is cancelled, not left to the registry's purge.
    expect(uploads(late.seen).map((s) => [s.method, s.status])).to.deep.equal([['POST', 202], ['PATCH', 202], ['PATCH', 405], ['DELETE', 204]]);
    expect(await readdir(join(registry.root, 'repositories', 'acme', 'chunks', '_uploads'))).to.deep.equal([]);
  });
});

describe('chunked blob upload (CNCF distribution)', function () {
  this.timeout(60_000);
  let dist: RunningRegistry | undefined;
  before(async function () {
    const missing = distributionMissing();
    if (missing) {
      console.log(`      skipping the CNCF distribution chunked upload tests: ${missing}`);
      this.skip();
    }
    dist = await startDistribution();
  });
  after(() => dist?.close());
  afterEach(closeProxies);

  it('sends a blob larger than a chunk as PATCHes following each Location (with its _state), and reads it back', async () => {
    const proxy = await proxied(dist!.host);
    const bytes = bytesOf(4 * MiB + 777, 11);
    const { descriptor, read } = await roundTrip(proxy.host, bytes);
    expect(read).to.equal(descriptor.digest);
    expectChunked(proxy.seen, bytes.length);
    const states = uploads(proxy.seen).slice(1).map((s) => s.state);
    expect(new Set(states).size, 'each request follows the Location before it').to.equal(states.length);
    expect(states.every((state) => state !== undefined)).to.equal(true);
  });

  it('falls back to one PUT where PATCH is refused', async () => {
    const proxy = await proxied(dist!.host, (req) => (req.method === 'PATCH' ? { status: 405 } : undefined));
    const { descriptor, read } = await roundTrip(proxy.host, bytesOf(2 * MiB + 5, 12));
    expect(read).to.equal(descriptor.digest);
    // The refused session is cancelled at its Location (distribution wants its _state).
    expect(uploads(proxy.seen).map((s) => [s.method, s.status])).to.deep.equal([['POST', 202], ['PATCH', 405], ['DELETE', 204], ['POST', 202], ['PUT', 201]]);
  });
});
