/**
 * A bounded fuzz of the registry's HTTP surface, on loopback, with a fixed seed and a fixed number of
 * cases: random methods, paths and headers; chunked, fixed-length, truncated and lying bodies; bad
 * ranges; oversized headers and manifests; raw garbage; aborted, half-closed and pipelined connections;
 * and real upload, push and pull flows mixed in so that the storage paths are exercised. Cases run in
 * concurrent bursts against an open server and an authenticating one on the same storage.
 *
 * The server must answer `GET /v2/` after every burst; nothing may fail with a 5xx or an error-level log
 * line, no promise may be left rejected, every blob pulled must be the bytes pushed, and afterwards the
 * storage must verify (see support/verify.ts) with no temp file left behind.
 * FUZZ_SEED and FUZZ_CASES explore further; a failure names the seed and the case.
 */
import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { TokenStore } from '../src/auth/tokens.js';
import type { ListeningRegistry } from '../src/server.js';
import type { StorageDriver } from '../src/storage/driver.js';
import { FilesystemStorage } from '../src/storage/filesystem.js';
import { s3Driver } from './support/drivers.js';
import { chunk, rawExchange, type RawOptions } from './support/raw.js';
import { Client, moduleArtifact, OCI_INDEX, OCI_MANIFEST, startRegistry } from './support/registry.js';
import { scratch } from './support/tmp.js';
import { verifyStorage } from './support/verify.js';

const SEED = Number(process.env.FUZZ_SEED ?? 0x5eed14);
const CASES = Number(process.env.FUZZ_CASES ?? 360);
/** s3rver answers slowly (XML, a file per object): fewer cases there, enough to verify the driver's paths. */
const S3_CASES = Math.ceil(CASES / 8);
const BURST = 16;
const MAX_MANIFEST = 16 * 1024;

/** mulberry32: small, seedable, good enough to pick test inputs. */
class Rng {
  constructor(private state: number) {}
  next(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) | 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }
}

const sha = (b: Uint8Array) => 'sha256:' + createHash('sha256').update(b).digest('hex');
const uuid = (r: Rng) => r.bytes(16).toString('hex').replace(/^(.{8})(.{4})(.{4})(.{4})(.{12})$/, '$1-$2-$3-$4-$5');

const REPOS = ['fz/a', 'fz/b', 'fz/deep/c', 'solo'];
const BAD_NAMES = ['..', 'fz/..', 'FZ/a', 'fz//a', '_x/y', '%2e%2e/x', 'a'.repeat(300), 'fz/a%00', 'fz/%C3%A4', 'fz/a/_uploads'];
const TAGS = ['latest', '1.0.0', '1.0.1', '2.0.0-rc.1', '1.0.0_b.1', 'v1', '-bad', 'a'.repeat(200), '..', '%2F'];
const BAD_DIGESTS = ['sha256:xyz', `sha512:${'a'.repeat(128)}`, 'md5:abc', '', `sha256:${'A'.repeat(64)}`, `sha256:${'0'.repeat(63)}`];
const METHODS = ['GET', 'HEAD', 'PUT', 'POST', 'PATCH', 'DELETE', 'OPTIONS', 'TRACE', 'CONNECT', 'get', 'FOO', 'G ET'];
const CONTENT_TYPES = [OCI_MANIFEST, OCI_INDEX, 'application/vnd.docker.distribution.manifest.v2+json', 'application/json', 'text/plain', `${OCI_MANIFEST}; charset=utf-8`, '\u00ff/\u00fe'];
const RANGES = ['bytes=0-0', 'bytes=0-', 'bytes=-1', 'bytes=-0', 'bytes=5-1', 'bytes=a-b', 'bytes=0-1,2-3', 'bytes=99999999999999999999-', 'items=0-1', 'bytes= 1-2', ''];
const CONTENT_RANGES = ['0-0', '0-99', 'bytes 0-9/10', '5-1', '0-', '-1', 'bytes=0-18446744073709551615', 'x', '0-0/*'];

/** What the cases share: blobs known to be in a repository (for pulls and manifests), upload ids seen. */
interface World {
  open: string;
  authed: string;
  pushToken: string;
  blobs: Map<string, { repo: string; bytes: Buffer }>;
  uploads: { repo: string; id: string }[];
  statuses: Map<number | string, number>;
  violations: string[];
}

function count(w: World, status: number | string): void {
  w.statuses.set(status, (w.statuses.get(status) ?? 0) + 1);
}

/** Statuses of every response in a raw exchange (pipelined requests get several). */
function rawStatuses(text: string): number[] {
  return [...text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
}

function randomPath(r: Rng, w: World): string {
  const repo = r.chance(0.8) ? r.pick(REPOS) : r.pick(BAD_NAMES);
  const known = [...w.blobs.keys()];
  const digest = r.chance(0.4) && known.length > 0 ? r.pick(known) : r.chance(0.5) ? sha(r.bytes(8)) : r.pick(BAD_DIGESTS);
  const upload = r.chance(0.5) && w.uploads.length > 0 ? r.pick(w.uploads).id : r.chance(0.7) ? uuid(r) : 'not-a-uuid';
  const ref = r.chance(0.5) ? r.pick(TAGS) : digest;
  const query = () => r.pick(['', '?n=2', '?n=abc', '?n=99999999999', '?n=-1&last=zz', `?digest=${digest}`, `?mount=${digest}&from=${r.pick(REPOS)}`, '?last=%ff', '?a[b]=c&a[d]=e']);
  return r.pick([
    () => '/v2/',
    () => '/v2',
    () => '/',
    () => `/v2/${repo}/manifests/${ref}`,
    () => `/v2/${repo}/blobs/${digest}`,
    () => `/v2/${repo}/blobs/uploads/${query()}`,
    () => `/v2/${repo}/blobs/uploads/${upload}${query()}`,
    () => `/v2/${repo}/tags/list${query()}`,
    () => `/v2/_reasonplug/search?task=${r.pick(['math', '', '%00', 'x'.repeat(500)])}&kind=${r.pick(['backbone', '&', ''])}${r.pick(['', '&n=0', '&n=x', '&last=fz/a'])}`,
    () => `/v2/_reasonplug/resolve?name=${repo}&range=${encodeURIComponent(r.pick(['^1', '>=1 <2', 'latest', '', '>>>', '1.0.0 || 2', 'x'.repeat(300)]))}`,
    () => '/v2/_oci/ext/discover',
    () => `/v2/../../etc/passwd`,
    () => '*',
    () => 'http://elsewhere.example/v2/',
    () => `/v2/${repo}/blobs/uploads/%ZZ`,
    () => `/v2/${repo}/${r.bytes(6).toString('hex')}`,
  ])();
}

function randomHeaders(r: Rng, w: World): string[] {
  const h: string[] = [];
  if (r.chance(0.9)) h.push('Host: 127.0.0.1');
  if (r.chance(0.5)) h.push(`Content-Type: ${r.pick(CONTENT_TYPES)}`);
  if (r.chance(0.3)) h.push(`Range: ${r.pick(RANGES)}`);
  if (r.chance(0.3)) h.push(`Content-Range: ${r.pick(CONTENT_RANGES)}`);
  if (r.chance(0.2)) h.push(`Accept: ${r.pick(['*/*', OCI_MANIFEST, 'text/html', ', ,', 'application/*;q=0'])}`);
  if (r.chance(0.2)) {
    const secret = r.chance(0.3) ? w.pushToken : `rpr_${'0'.repeat(16)}_${'f'.repeat(64)}`;
    h.push(`Authorization: ${r.pick([`Bearer ${secret}`, `Basic ${Buffer.from(`u:${secret}`).toString('base64')}`, 'Basic !!!', 'Digest x', 'Bearer', 'Basic Og=='])}`);
  }
  if (r.chance(0.05)) h.push('Expect: 100-continue');
  if (r.chance(0.04)) h.push(`X-Huge: ${'h'.repeat(20_000)}`);
  if (r.chance(0.03)) for (let i = 0; i < 150; i++) h.push(`X-Many-${i}: ${i}`);
  if (r.chance(0.03)) h.push('X-Bad: a\u0001b');
  if (r.chance(0.03)) h.push('Connection: keep-alive');
  return h;
}

function randomBody(r: Rng, w: World): Buffer {
  const repo = r.pick(REPOS);
  const inRepo = [...w.blobs].filter(([, b]) => b.repo === repo);
  return r.pick([
    () => Buffer.alloc(0),
    () => r.bytes(r.int(64)),
    () => r.bytes(r.int(200_000)),
    () => Buffer.alloc(MAX_MANIFEST + 1 + r.int(50_000), '{'),
    () => Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: 'x', digest: inRepo[0]?.[0] ?? sha(r.bytes(4)), size: r.int(100) }, layers: [] })),
    () => Buffer.from('{"schemaVersion":2,"manifests":[{"digest":"sha256:zz","size":-1}]}'),
    () => Buffer.from('\u0000\u00ff not json'),
  ])();
}

/** A request with a random framing of its body, and what the client does with the connection. */
function randomRaw(r: Rng, w: World): RawOptions {
  const method = r.pick(METHODS);
  const head = `${method} ${randomPath(r, w)} HTTP/1.1\r\n${randomHeaders(r, w).join('\r\n')}\r\n`;
  const body = randomBody(r, w);
  const pieces = (b: Buffer) => {
    const out: Buffer[] = [];
    for (let at = 0; at < b.length; ) {
      const n = 1 + r.int(Math.max(1, Math.min(b.length - at, 70_000)));
      out.push(b.subarray(at, at + n));
      at += n;
    }
    return out;
  };
  const send: (string | Buffer)[] = r.pick([
    () => [head + '\r\n'],
    () => [head + `Content-Length: ${body.length}\r\n\r\n`, body],
    () => [head + `Content-Length: ${body.length + 1 + r.int(1000)}\r\n\r\n`, body],
    () => [head + `Content-Length: ${Math.max(0, body.length - 5)}\r\n\r\n`, body],
    () => [head + 'Transfer-Encoding: chunked\r\n\r\n', ...pieces(body).map(chunk), '0\r\n\r\n'],
    () => [head + 'Transfer-Encoding: chunked\r\n\r\n', ...pieces(body).map(chunk)],
    () => [head + 'Transfer-Encoding: chunked\r\n\r\n', 'zz\r\nabc\r\n'],
    () => [head + `Transfer-Encoding: chunked\r\nContent-Length: ${body.length}\r\n\r\n`, chunk(body), '0\r\n\r\n'],
    () => [head + 'Content-Length: 5\r\nContent-Length: 7\r\n\r\n', 'hello'],
    () => [head + `Content-Length: ${r.pick(['-1', '99999999999999999999', '1e3', ' '])}\r\n\r\n`, body],
  ])();
  const then = r.pick(['end', 'end', 'end', 'destroy', 'keep'] as const);
  return { send, then, timeoutMs: then === 'keep' ? 150 + r.int(250) : 3000 };
}

/** A case: one of the kinds below, with its own generator so that its inputs do not depend on timing. */
async function runCase(r: Rng, w: World): Promise<string> {
  const kind = r.pick(['raw', 'raw', 'raw', 'raw', 'raw', 'blob', 'blob', 'manifest', 'pull', 'pull', 'garbage', 'pipelined', 'delete', 'aborted-upload']);
  const target = r.chance(0.25) ? w.authed : w.open;
  const c = new Client(target, target === w.authed ? `Bearer ${w.pushToken}` : undefined);
  switch (kind) {
    case 'raw': {
      const opts = randomRaw(r, w);
      const res = await rawExchange(target, opts);
      for (const s of rawStatuses(res.text)) count(w, s);
      if (res.status === undefined) count(w, `no answer (${opts.then})`);
      return `raw ${JSON.stringify(String(opts.send[0]).slice(0, 120))} then ${opts.then}`;
    }
    case 'garbage': {
      const res = await rawExchange(target, { send: [r.bytes(1 + r.int(3000))], then: r.pick(['end', 'destroy'] as const) });
      for (const s of rawStatuses(res.text)) count(w, s);
      return 'garbage bytes';
    }
    case 'pipelined': {
      const a = `GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n`;
      const b = `PUT /v2/${r.pick(REPOS)}/manifests/latest HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n${chunk(Buffer.alloc(MAX_MANIFEST + 10, 'x')).toString('latin1')}0\r\n\r\n`;
      const res = await rawExchange(target, { send: [a, b, a], then: r.pick(['end', 'destroy'] as const) });
      for (const s of rawStatuses(res.text)) count(w, s);
      return 'pipelined';
    }
    case 'blob': {
      const repo = r.pick(REPOS);
      const bytes = r.bytes(r.int(r.chance(0.2) ? 300_000 : 3000));
      const digest = sha(bytes);
      const wrong = r.chance(0.2);
      let status: number;
      if (r.chance(0.5)) {
        status = (await c.request('POST', `/v2/${repo}/blobs/uploads/?digest=${wrong ? sha(r.bytes(3)) : digest}`, { body: bytes })).status;
      } else {
        const post = await c.request('POST', `/v2/${repo}/blobs/uploads/`);
        count(w, post.status);
        const location = post.headers.get('location')!;
        const cut = r.int(bytes.length + 1);
        const patch = await c.request('PATCH', location, { body: bytes.subarray(0, cut), headers: cut > 0 && r.chance(0.5) ? { 'content-range': `0-${cut - 1}` } : {} });
        count(w, patch.status);
        // Only sessions no flow is still using are offered to the other cases (to poke at, or delete).
        const session = { repo, id: post.headers.get('docker-upload-uuid')! };
        if (r.chance(0.15)) {
          w.uploads.push(session);
          if (patch.status !== 202) w.violations.push(`PATCH of ${cut} bytes to ${repo}: ${patch.status}`);
          return `abandoned upload ${repo} after ${cut} bytes`;
        }
        status = (await c.request('PUT', `${location}?digest=${wrong ? sha(r.bytes(3)) : digest}`, { body: bytes.subarray(cut) })).status;
        w.uploads.push(session);
      }
      count(w, status);
      const expected = wrong ? 400 : 201;
      if (status !== expected) w.violations.push(`blob push to ${repo} (${wrong ? 'wrong' : 'right'} digest): ${status}, expected ${expected}`);
      if (status === 201) w.blobs.set(digest, { repo, bytes });
      return `blob push ${repo} ${bytes.length} bytes`;
    }
    case 'manifest': {
      const repo = r.pick(REPOS);
      const a = moduleArtifact({ version: r.pick(['1.0.0', '1.0.1', '2.0.0']), files: { 'model.onnx': r.bytes(r.int(100)).toString('hex') } });
      for (const b of a.blobs) {
        await c.pushBlob(repo, b);
        w.blobs.set(sha(b), { repo, bytes: b });
      }
      const bytes = r.chance(0.2) ? Buffer.concat([a.manifest.subarray(0, r.int(a.manifest.length)), r.bytes(3)]) : a.manifest;
      const res = await c.putManifest(repo, r.pick(['latest', '1.0.0', '1.0.1', sha(bytes)]), bytes);
      count(w, res.status);
      const text = await res.text();
      // 403: another case set this exact version first; MANIFEST_BLOB_UNKNOWN: another case unlinked a blob.
      if (bytes === a.manifest && res.status !== 201 && res.status !== 403 && !text.includes('MANIFEST_BLOB_UNKNOWN')) {
        w.violations.push(`manifest push to ${repo}: ${res.status} ${text}`);
      }
      return `manifest push ${repo}`;
    }
    case 'pull': {
      const known = [...w.blobs];
      if (known.length === 0) return 'pull (nothing yet)';
      const [digest, { repo, bytes }] = r.pick(known);
      const range = r.chance(0.6) ? r.pick([...RANGES, `bytes=${r.int(bytes.length + 2)}-${r.int(bytes.length + 2)}`, `bytes=-${r.int(bytes.length + 2)}`]) : undefined;
      const res = await c.request('GET', `/v2/${repo}/blobs/${digest}`, range !== undefined ? { headers: { range } } : {});
      count(w, res.status);
      const body = Buffer.from(await res.arrayBuffer());
      if (res.status === 200 && !body.equals(bytes)) w.violations.push(`GET ${digest} (range ${range}): 200 with other bytes`);
      if (res.status === 206) {
        const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(res.headers.get('content-range') ?? '');
        if (!m || Number(m[3]) !== bytes.length || !body.equals(bytes.subarray(Number(m[1]), Number(m[2]) + 1))) {
          w.violations.push(`GET ${digest} range ${range}: 206 ${res.headers.get('content-range')} with other bytes`);
        }
      }
      return `pull ${repo} range ${range}`;
    }
    case 'delete': {
      const repo = r.pick(REPOS);
      const path = r.pick([`/v2/${repo}/manifests/${r.pick(TAGS)}`, `/v2/${repo}/blobs/${r.pick([...w.blobs.keys(), sha(r.bytes(2))])}`, `/v2/${repo}/blobs/uploads/${w.uploads.length > 0 ? r.pick(w.uploads).id : uuid(r)}`]);
      count(w, (await c.request('DELETE', path)).status);
      return `DELETE ${path}`;
    }
    default: {
      // An upload whose PATCH is cut off mid-body: the session's offset must not move.
      const repo = r.pick(REPOS);
      const post = await c.request('POST', `/v2/${repo}/blobs/uploads/`);
      const id = post.headers.get('docker-upload-uuid')!;
      const declared = 10_000 + r.int(100_000);
      const head = `PATCH /v2/${repo}/blobs/uploads/${id} HTTP/1.1\r\nHost: x\r\n${target === w.authed ? `Authorization: Bearer ${w.pushToken}\r\n` : ''}`;
      const framing = r.chance(0.5) ? `Content-Length: ${declared}\r\n\r\n` : 'Transfer-Encoding: chunked\r\n\r\n';
      const sent = r.bytes(r.int(declared));
      await rawExchange(target, { send: [head + framing, framing.startsWith('Content') ? sent : chunk(sent)], then: r.pick(['destroy', 'end'] as const) });
      const status = await c.request('GET', `/v2/${repo}/blobs/uploads/${id}`);
      count(w, status.status);
      if (status.status !== 204 || status.headers.get('range') !== '0-0') {
        w.violations.push(`upload ${id} after a cut-off PATCH: ${status.status} Range ${status.headers.get('range')}, expected 204 0-0`);
      }
      return `aborted PATCH of ${sent.length}/${declared} bytes`;
    }
  }
}

/** Runs `cases` generated cases in bursts against two servers on `storage` and checks everything above. */
async function fuzz(storage: StorageDriver, cases: number): Promise<void> {
  const logLines: { level: number; msg: string; err?: unknown }[] = [];
  const sink = new Writable({
    write(line, _enc, done) {
      logLines.push(JSON.parse(line.toString()));
      done();
    },
  });
  const logger = pino({ level: 'warn' }, sink);
  const tokens = new TokenStore(storage);
  const pushToken = (await tokens.create({ scopes: ['push:**'], user: 'fuzz' })).token;
  const servers: ListeningRegistry[] = [
    await startRegistry(storage, { maxManifestBytes: MAX_MANIFEST, logger }),
    await startRegistry(storage, { maxManifestBytes: MAX_MANIFEST, logger, auth: { tokens, anonymousPull: true } }),
  ];
  const rejections: unknown[] = [];
  const onRejection = (err: unknown) => rejections.push(err);
  process.on('unhandledRejection', onRejection);

  const w: World = { open: servers[0]!.url, authed: servers[1]!.url, pushToken, blobs: new Map(), uploads: [], statuses: new Map(), violations: [] };
  const master = new Rng(SEED);
  const started = Date.now();
  try {
    for (let done = 0; done < cases; done += BURST) {
      const seeds = Array.from({ length: Math.min(BURST, cases - done) }, () => master.int(2 ** 32));
      const described = await Promise.all(
        seeds.map((seed, i) =>
          runCase(new Rng(seed), w).catch((err: Error) => {
            // Raw exchanges never throw; the flows that do send valid requests, which must not fail.
            w.violations.push(`case ${done + i} (seed ${seed}) failed: ${err.message} ${String(err.cause ?? '')}`);
            return `case ${done + i} failed`;
          }),
        ),
      );
      for (const s of servers) {
        const alive = await fetch(`${s.url}/v2/`, { signal: AbortSignal.timeout(5000) }).then((res) => res.status, (err: Error) => err.message);
        expect([200, 401], `after burst at case ${done} (seed ${SEED}): ${described.join('; ')}`).to.include(alive);
      }
    }
  } finally {
    process.off('unhandledRejection', onRejection);
    for (const s of servers) await s.close();
  }
  const seconds = (Date.now() - started) / 1000;

  const table = [...w.statuses].sort((a, b) => String(a[0]).localeCompare(String(b[0])));
  console.log(`      ${cases} cases in ${seconds.toFixed(1)} s (seed ${SEED}); outcomes:`);
  console.log(table.map(([s, n]) => `        ${String(s).padEnd(40)} ${n}`).join('\n'));
  const report = await verifyStorage(storage);
  console.log(`      storage: ${report.blobs} blobs, ${report.manifests} manifests, ${report.tags} tags, ${report.uploadParts} upload parts`);

  expect(rejections.map(String), 'unhandled rejections').to.deep.equal([]);
  expect(w.violations, 'protocol violations').to.deep.equal([]);
  expect(table.filter(([s]) => typeof s === 'number' && s >= 500), '5xx answers').to.deep.equal([]);
  expect(logLines.filter((l) => l.level >= 50).map((l) => `${l.msg}: ${JSON.stringify(l.err)}`), 'error logs').to.deep.equal([]);
  expect(report.problems).to.deep.equal([]);
  expect(report.blobs).to.be.greaterThan(cases / 50);
}

describe('fuzzing the HTTP surface', function () {
  this.timeout(120_000);

  it(`survives ${CASES} generated requests (seed ${SEED}) and its storage verifies: filesystem`, async () => {
    const root = await scratch('fuzz');
    await fuzz(new FilesystemStorage(root), CASES);
    expect(await readdir(join(root, '.tmp')), 'temp files left behind').to.deep.equal([]);
  });

  it(`survives ${S3_CASES} generated requests (seed ${SEED}) and its storage verifies: ${s3Driver.name}`, async () => {
    await fuzz((await s3Driver.open()).storage, S3_CASES);
  });
});
