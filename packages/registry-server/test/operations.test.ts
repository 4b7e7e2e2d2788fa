/**
 * What an operator relies on: the request log's status and byte counts, the log level and answer of a storage
 * fault (a full disk), secrets kept out of the log, a shutdown that drains, and the probes an orchestrator uses
 * (`/healthz`, `/readyz`).
 */
import { expect } from 'chai';
import { randomBytes, randomUUID } from 'node:crypto';
import { createWriteStream, existsSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
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
    // (the request in, then time for its 1000 bytes: a loaded machine may take longer than a fixed pause to take it)
    for (let i = 0; i < 500 && registry.openRequests !== 1; i++) await sleep(20);
    await sleep(300);
    await registry.close(); // as SIGTERM does: stop listening, cut open connections
    expect((await exchange).status).to.equal(undefined);
    await sleep(50);
    expect(requests('PATCH').map((l) => [l.status, l.bytesIn, l.completed])).to.deep.equal([[null, 1000, false]]);
  });

  it("redacts query parameters other than the protocol's (a token sent as ?access_token=)", async () => {
    const { registry, c, requests } = await loggedRegistry(new FilesystemStorage(await scratch('log-query')));
    try {
      await c.request('GET', '/v2/acme/logs/tags/list?access_token=SECRET-1&n=5&last=a%2Fb');
      await c.request('GET', '/v2/_reasonplug/search?task=math&kind=logit-reasoner&rpr_0123456789abcdef_SECRET-2');
      await c.request('GET', '/v2/_reasonplug/resolve?name=acme/logs&range=%5E1&sig=SECRET-3');
      await sleep(50);
      expect(requests('GET').map((l) => l.url)).to.deep.equal([
        '/v2/acme/logs/tags/list?access_token=[REDACTED]&n=5&last=a%2Fb',
        '/v2/_reasonplug/search?task=math&kind=logit-reasoner&[REDACTED]',
        '/v2/_reasonplug/resolve?name=acme/logs&range=%5E1&sig=[REDACTED]',
      ]);
    } finally {
      await registry.close();
    }
  });
});

describe('a shutdown', function () {
  this.timeout(20_000);

  /** A chunked body of `pieces` 1000-byte chunks, one every `everyMs`. */
  async function* slowBody(pieces: number, everyMs: number) {
    for (let i = 0; i < pieces; i++) {
      if (i > 0) await sleep(everyMs);
      yield Buffer.alloc(1000, 'x');
    }
  }

  async function untilOpen(registry: { openRequests: number }, n: number) {
    while (registry.openRequests !== n) await sleep(10);
  }

  it('lets a request in flight finish within the grace period, not held by an idle kept-alive connection', async () => {
    const { registry, c, requests } = await loggedRegistry(new FilesystemStorage(await scratch('drain')));
    const location = (await c.request('POST', '/v2/acme/drain/blobs/uploads/')).headers.get('location')!;
    // A connection kept alive after its answer, idle when the shutdown starts.
    const idle = rawExchange(registry.url, { send: [`GET /healthz HTTP/1.1\r\nHost: ${new URL(registry.url).host}\r\n\r\n`], then: 'keep', timeoutMs: 10_000 });
    const patched = c.request('PATCH', location, { body: slowBody(5, 200), headers: { 'content-type': 'application/octet-stream' } });
    await untilOpen(registry, 1);
    await sleep(100); // the idle connection's answer is out
    const started = Date.now();
    await registry.close({ graceMs: 8000 });
    expect(Date.now() - started).to.be.below(4000);
    expect((await patched).status).to.equal(202);
    expect((await idle).status).to.equal(200);
    await sleep(50);
    expect(requests('PATCH').map((l) => [l.status, l.bytesIn, l.completed])).to.deep.equal([[202, 5000, true]]);
  });

  it('cuts what still runs after the grace period, saying so, and does not blame the client', async () => {
    const { registry, c, lines, requests } = await loggedRegistry(new FilesystemStorage(await scratch('drain-cut')));
    const location = (await c.request('POST', '/v2/acme/drain/blobs/uploads/')).headers.get('location')!;
    const head = `PATCH ${location} HTTP/1.1\r\nHost: ${new URL(registry.url).host}\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n`;
    const exchange = rawExchange(registry.url, { send: [head, Buffer.alloc(1000, 'x')], then: 'keep', timeoutMs: 10_000 });
    await untilOpen(registry, 1);
    const started = Date.now();
    await registry.close({ graceMs: 500 });
    expect(Date.now() - started).to.be.at.least(490);
    expect((await exchange).status).to.equal(undefined);
    await sleep(50);
    const warnings = lines.filter((l) => (l.level as number) >= 40);
    expect(warnings.map((l) => [l.level, l.msg, l.requests])).to.deep.equal([
      [40, 'shutdown: cutting 1 requests still running after the grace period', [`PATCH ${location}`]],
    ]);
    expect(requests('PATCH').map((l) => [l.status, l.bytesIn, l.completed])).to.deep.equal([[null, 1000, false]]);
  });
});

describe('errors in the log', function () {
  this.timeout(20_000);

  it("keep an S3 error's name, message, code and request id, not the signing details S3 echoes back", async () => {
    // An S3 endpoint refusing every request as real S3 does a wrong secret key: its error names the key id and
    // echoes the signature, the string to sign and the canonical request.
    const s3 = createServer((req, res) => {
      const body =
        '<?xml version="1.0" encoding="UTF-8"?><Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match the signature you provided.</Message>' +
        `<AWSAccessKeyId>AKIAFAKEKEYID0000000</AWSAccessKeyId><StringToSign>AWS4-HMAC-SHA256 x</StringToSign><SignatureProvided>${'ab'.repeat(32)}</SignatureProvided>` +
        `<CanonicalRequest>GET / ${req.headers.authorization}</CanonicalRequest><RequestId>REQ-1</RequestId></Error>`;
      res.writeHead(403, { 'content-type': 'application/xml', 'x-amz-request-id': 'REQ-1' }).end(body);
    });
    await new Promise<void>((done) => s3.listen(0, '127.0.0.1', done));
    const endpoint = `http://127.0.0.1:${(s3.address() as AddressInfo).port}`;
    const { registry, c, lines } = await loggedRegistry(s3Storage(endpoint, 'p/'));
    try {
      expect((await c.request('GET', '/readyz')).status).to.equal(503);
      expect((await c.request('GET', '/v2/acme/x/manifests/latest')).status).to.equal(500);
      await sleep(50);
      const failed = lines.filter((l) => ['maintenance failed', 'not ready: storage failed', 'request failed'].includes(l.msg as string));
      expect(failed.map((l) => l.msg).sort()).to.deep.equal(['maintenance failed', 'not ready: storage failed', 'request failed']);
      for (const l of failed) {
        const { stack, ...err } = l.err as Record<string, unknown>;
        expect(stack, l.msg as string).to.match(/^SignatureDoesNotMatch: /);
        expect(err, l.msg as string).to.deep.equal({
          type: 'SignatureDoesNotMatch',
          message: 'The request signature we calculated does not match the signature you provided.',
          $metadata: { requestId: 'REQ-1', httpStatusCode: 403 },
        });
      }
      const logged = JSON.stringify(lines);
      for (const secret of ['AKIAFAKEKEYID0000000', 'ab'.repeat(32), 'StringToSign', 'CanonicalRequest', 'Credential=']) expect(logged).to.not.include(secret);
    } finally {
      await registry.close();
      s3.close();
    }
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
