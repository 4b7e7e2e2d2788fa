/**
 * What an operator relies on: the request log's status and byte counts, the log level and answer of a storage
 * fault (a full disk), and the probes an orchestrator uses (`/healthz`, `/readyz`).
 */
import { expect } from 'chai';
import { randomBytes, randomUUID } from 'node:crypto';
import { createWriteStream, existsSync } from 'node:fs';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { TokenStore } from '../src/auth/tokens.js';
import { FilesystemStorage } from '../src/storage/filesystem.js';
import type { StorageDriver } from '../src/storage/driver.js';
import { s3Endpoint, s3Storage } from './support/drivers.js';
import { rawExchange } from './support/raw.js';
import { Client, digestOf, startRegistry } from './support/registry.js';
import { scratch } from './support/tmp.js';

type Line = Record<string, unknown>;

/** A registry on `storage` whose log lines are collected. */
async function loggedRegistry(storage: StorageDriver, opts: Parameters<typeof startRegistry>[1] = {}) {
  const lines: Line[] = [];
  const sink = new Writable({
    write(c, _enc, done) {
      lines.push(JSON.parse(c.toString()) as Line);
      done();
    },
  });
  const registry = await startRegistry(storage, { ...opts, logger: pino({ level: 'info' }, sink) });
  const requests = (method: string) => lines.filter((l) => l.msg === 'request' && l.method === method);
  return { registry, c: new Client(registry.url), lines, requests };
}

/** A directory whose blob and upload-part writes go to /dev/full: the kernel's own ENOSPC, as on a full disk. */
class FullDisk extends FilesystemStorage {
  override async write(_key: string, source: Readable): Promise<void> {
    await pipeline(source, createWriteStream('/dev/full'));
  }
}

describe('the request log', function () {
  this.timeout(20_000);

  it('counts the body bytes that came and went: a chunked PATCH, a HEAD (none), a range, a whole blob', async () => {
    const { registry, c, requests } = await loggedRegistry(new FilesystemStorage(await scratch('log-bytes')));
    try {
      const blob = randomBytes(300_000);
      const location = (await c.request('POST', '/v2/acme/logs/blobs/uploads/')).headers.get('location')!;
      // An async iterable goes out chunked: no Content-Length to read the size from.
      const chunked = (async function* () {
        yield blob.subarray(0, 100_000);
        yield blob.subarray(100_000);
      })();
      const patched = await c.request('PATCH', location, { body: chunked, headers: { 'content-type': 'application/octet-stream' } });
      expect(patched.status).to.equal(202);
      expect((await c.request('PUT', `${location}?digest=${digestOf(blob)}`)).status).to.equal(201);
      const path = `/v2/acme/logs/blobs/${digestOf(blob)}`;
      expect((await c.request('HEAD', path)).status).to.equal(200);
      expect((await (await c.request('GET', path, { headers: { range: 'bytes=0-99' } })).arrayBuffer()).byteLength).to.equal(100);
      expect((await (await c.request('GET', path)).arrayBuffer()).byteLength).to.equal(blob.length);
      await sleep(50);
      expect(requests('PATCH').map((l) => [l.status, l.bytesIn, l.bytesOut])).to.deep.equal([[202, blob.length, 0]]);
      expect(requests('HEAD').map((l) => [l.status, l.bytesIn, l.bytesOut])).to.deep.equal([[200, 0, 0]]);
      expect(requests('GET').map((l) => [l.status, l.bytesOut, l.completed])).to.deep.equal([
        [206, 100, true],
        [200, blob.length, true],
      ]);
    } finally {
      await registry.close();
    }
  });

  it('logs no status for a PATCH cut off before any answer (the server closing), and the bytes that had come', async () => {
    const { registry, c, requests } = await loggedRegistry(new FilesystemStorage(await scratch('log-cut')));
    const location = (await c.request('POST', '/v2/acme/logs/blobs/uploads/')).headers.get('location')!;
    const head = `PATCH ${location} HTTP/1.1\r\nHost: ${new URL(registry.url).host}\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n`;
    const exchange = rawExchange(registry.url, { send: [head, Buffer.alloc(1000, 'x')], then: 'keep', timeoutMs: 5000 });
    await sleep(300);
    await registry.close(); // as SIGTERM does: stop listening, cut open connections
    expect((await exchange).status).to.equal(undefined);
    await sleep(50);
    expect(requests('PATCH').map((l) => [l.status, l.bytesIn, l.completed])).to.deep.equal([[null, 1000, false]]);
  });
});

describe('a full disk', function () {
  this.timeout(20_000);
  before(function () {
    if (!existsSync('/dev/full')) this.skip();
  });

  it('is logged as an error, not a client gone, and the client is told the storage is full', async () => {
    const { registry, c, lines } = await loggedRegistry(new FullDisk(await scratch('full')));
    try {
      const blob = randomBytes(1_000_000);
      const pushed = await c.request('POST', `/v2/acme/big/blobs/uploads/?digest=${digestOf(blob)}`, {
        body: blob,
        headers: { 'content-type': 'application/octet-stream' },
      });
      const location = (await c.request('POST', '/v2/acme/big/blobs/uploads/')).headers.get('location')!;
      const patched = await c.request('PATCH', location, { body: blob, headers: { 'content-type': 'application/octet-stream' } });
      for (const res of [pushed, patched]) {
        expect(res.status).to.equal(500);
        expect(await res.json()).to.deep.equal({ errors: [{ code: 'UNKNOWN', message: "the registry's storage is full", detail: { code: 'ENOSPC' } }] });
      }
      await sleep(50);
      const faults = lines.filter((l) => (l.level as number) >= 40 && l.msg !== 'no --auth: anyone who can reach this address can push');
      expect(faults.map((l) => [l.level, l.msg, l.method, (l.err as { code?: string }).code])).to.deep.equal([
        [50, 'request failed', 'POST', 'ENOSPC'],
        [50, 'request failed', 'PATCH', 'ENOSPC'],
      ]);
    } finally {
      await registry.close();
    }
  });
});

describe('health and readiness probes', function () {
  this.timeout(20_000);

  it('answer without a token where every other path needs one, to GET and HEAD', async () => {
    const storage = new FilesystemStorage(await scratch('probes'));
    const { registry, c } = await loggedRegistry(storage, { auth: { tokens: new TokenStore(storage), anonymousPull: false } });
    try {
      expect((await c.request('GET', '/v2/')).status).to.equal(401);
      for (const path of ['/healthz', '/readyz']) {
        const res = await c.request('GET', path);
        expect([res.status, await res.json()], path).to.deep.equal([200, { status: 'ok' }]);
        expect((await c.request('HEAD', path)).status, `HEAD ${path}`).to.equal(200);
      }
    } finally {
      await registry.close();
    }
  });

  it('say not ready, with the reason, while the storage fails (a missing bucket), and ready once it answers', async () => {
    const endpoint = await s3Endpoint();
    const missing = await loggedRegistry(s3Storage(endpoint, '', 'no-such-bucket'));
    try {
      expect((await missing.c.request('GET', '/healthz')).status).to.equal(200);
      const res = await missing.c.request('GET', '/readyz');
      expect([res.status, await res.json()]).to.deep.equal([503, { status: 'unavailable', reason: 'storage: NoSuchBucket' }]);
      expect((await missing.c.request('HEAD', '/readyz')).status).to.equal(503);
    } finally {
      await missing.registry.close();
    }
    const present = await loggedRegistry(s3Storage(endpoint, `t-${randomUUID()}/`));
    try {
      expect((await present.c.request('GET', '/readyz')).status).to.equal(200);
    } finally {
      await present.registry.close();
    }
  });
});
