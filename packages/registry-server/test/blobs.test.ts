import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { connect } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import type { ListeningRegistry } from '../src/server.js';
import { blobKey } from '../src/storage/layout.js';
import { drivers, type OpenedStorage } from './support/drivers.js';
import { Client, digestOf, errorCode, startRegistry } from './support/registry.js';

/** Sends a PATCH that declares `declared` bytes, sends fewer, and hangs up. */
async function truncatedPatch(url: string, path: string, declared: number, sent: Buffer): Promise<void> {
  const { hostname, port } = new URL(url);
  const socket = connect(Number(port), hostname);
  await once(socket, 'connect');
  socket.write(`PATCH ${path} HTTP/1.1\r\nHost: ${hostname}:${port}\r\nContent-Type: application/octet-stream\r\nContent-Length: ${declared}\r\n\r\n`);
  socket.write(sent);
  await delay(50);
  socket.destroy();
  // Let the server notice the hang-up and discard the half-written part.
  await delay(200);
}

/** A body sent with chunked transfer encoding and no Content-Length, as skopeo sends its PATCH. */
function chunked(...parts: Buffer[]): AsyncIterable<Uint8Array> {
  return (async function* () {
    for (const p of parts) yield p;
  })();
}

for (const driver of drivers) {
  describe(`blobs and uploads: ${driver.name}`, function () {
    this.timeout(20_000);
    let opened: OpenedStorage;
    let registry: ListeningRegistry;
    let c: Client;

    beforeEach(async () => {
      opened = await driver.open();
      registry = await startRegistry(opened.storage);
      c = new Client(registry.url);
    });
    afterEach(() => registry.close());

    it('answers GET /v2/ with the distribution API version header', async () => {
      const res = await c.request('GET', '/v2/');
      expect(res.status).to.equal(200);
      expect(res.headers.get('docker-distribution-api-version')).to.equal('registry/2.0');
    });

    it('pushes in one POST ?digest= and serves the blob with HEAD, GET and Range', async () => {
      const data = randomBytes(1000);
      const digest = await c.pushBlob('ns/one', data);

      const head = await c.request('HEAD', `/v2/ns/one/blobs/${digest}`);
      expect(head.status).to.equal(200);
      expect(head.headers.get('content-length')).to.equal('1000');
      expect(head.headers.get('docker-content-digest')).to.equal(digest);
      expect(head.headers.get('accept-ranges')).to.equal('bytes');

      const get = await c.request('GET', `/v2/ns/one/blobs/${digest}`);
      expect(Buffer.from(await get.arrayBuffer()).equals(data)).to.equal(true);

      const mid = await c.request('GET', `/v2/ns/one/blobs/${digest}`, { headers: { range: 'bytes=10-19' } });
      expect(mid.status).to.equal(206);
      expect(mid.headers.get('content-range')).to.equal('bytes 10-19/1000');
      expect(Buffer.from(await mid.arrayBuffer()).equals(data.subarray(10, 20))).to.equal(true);

      const open = await c.request('GET', `/v2/ns/one/blobs/${digest}`, { headers: { range: 'bytes=990-' } });
      expect(Buffer.from(await open.arrayBuffer()).equals(data.subarray(990))).to.equal(true);

      const suffix = await c.request('GET', `/v2/ns/one/blobs/${digest}`, { headers: { range: 'bytes=-5' } });
      expect(suffix.headers.get('content-range')).to.equal('bytes 995-999/1000');
      expect(Buffer.from(await suffix.arrayBuffer()).equals(data.subarray(995))).to.equal(true);

      const beyond = await c.request('GET', `/v2/ns/one/blobs/${digest}`, { headers: { range: 'bytes=1000-' } });
      expect(beyond.status).to.equal(416);
      expect(beyond.headers.get('content-range')).to.equal('bytes */1000');
    });

    it('uploads in chunks with Content-Range, reports status, and answers an out-of-order chunk with 416', async () => {
      const data = randomBytes(300);
      const post = await c.request('POST', '/v2/ns/one/blobs/uploads/');
      expect(post.status).to.equal(202);
      expect(post.headers.get('range')).to.equal('0-0');
      const location = post.headers.get('location')!;
      expect(location).to.match(/^\/v2\/ns\/one\/blobs\/uploads\/[0-9a-f-]{36}$/);

      const first = await c.request('PATCH', location, { body: data.subarray(0, 100), headers: { 'content-range': '0-99' } });
      expect(first.status).to.equal(202);
      expect(first.headers.get('range')).to.equal('0-99');

      const gap = await c.request('PATCH', location, { body: data.subarray(150, 200), headers: { 'content-range': '150-199' } });
      expect(gap.status).to.equal(416);
      expect(gap.headers.get('range')).to.equal('0-99');
      expect(gap.headers.get('location')).to.equal(location);

      await c.request('PATCH', location, { body: data.subarray(100, 200), headers: { 'content-range': '100-199' } });
      const status = await c.request('GET', location);
      expect(status.status).to.equal(204);
      expect(status.headers.get('range')).to.equal('0-199');

      // The last chunk rides on the PUT.
      const put = await c.request('PUT', `${location}?digest=${digestOf(data)}`, {
        body: data.subarray(200),
        headers: { 'content-range': '200-299' },
      });
      expect(put.status).to.equal(201);
      expect(put.headers.get('location')).to.equal(`/v2/ns/one/blobs/${digestOf(data)}`);
      const get = await c.request('GET', `/v2/ns/one/blobs/${digestOf(data)}`);
      expect(Buffer.from(await get.arrayBuffer()).equals(data)).to.equal(true);
      expect((await c.request('GET', location)).status).to.equal(404);
    });

    it('takes a PATCH without Content-Range or Content-Length (chunked, as skopeo sends it)', async () => {
      // Larger than the s3 driver's part size, so that path streams a real multipart upload.
      const a = randomBytes(6 * 1024 * 1024);
      const b = randomBytes(1024 * 1024 + 7);
      const location = (await c.request('POST', '/v2/ns/one/blobs/uploads/')).headers.get('location')!;
      const patch = await c.request('PATCH', location, { body: chunked(a, b) });
      expect(patch.status).to.equal(202);
      expect(patch.headers.get('range')).to.equal(`0-${a.length + b.length - 1}`);
      const digest = digestOf(Buffer.concat([a, b]));
      expect((await c.request('PUT', `${location}?digest=${digest}`)).status).to.equal(201);
      const head = await c.request('HEAD', `/v2/ns/one/blobs/${digest}`);
      expect(head.headers.get('content-length')).to.equal(String(a.length + b.length));
    });

    it('refuses a digest mismatch and keeps nothing of it, single-part or multi-part', async () => {
      const data = randomBytes(64);
      const wrong = digestOf(Buffer.from('something else'));
      const single = await c.request('POST', `/v2/ns/one/blobs/uploads/?digest=${wrong}`, { body: data });
      expect(single.status).to.equal(400);
      expect(await errorCode(single)).to.equal('DIGEST_INVALID');

      const location = (await c.request('POST', '/v2/ns/one/blobs/uploads/')).headers.get('location')!;
      await c.request('PATCH', location, { body: data.subarray(0, 32), headers: { 'content-range': '0-31' } });
      await c.request('PATCH', location, { body: data.subarray(32), headers: { 'content-range': '32-63' } });
      const put = await c.request('PUT', `${location}?digest=${wrong}`);
      expect(put.status).to.equal(400);
      expect(await errorCode(put)).to.equal('DIGEST_INVALID');

      for (const d of [wrong, digestOf(data)]) {
        expect((await c.request('HEAD', `/v2/ns/one/blobs/${d}`)).status).to.equal(404);
        expect(await opened.storage.stat(blobKey(d.slice(7)))).to.equal(undefined);
      }
      expect((await c.request('GET', location)).status).to.equal(404);
    });

    it('survives a truncated chunk: no part, no change of offset, and the upload carries on', async () => {
      const data = randomBytes(4000);
      const location = (await c.request('POST', '/v2/ns/one/blobs/uploads/')).headers.get('location')!;
      await c.request('PATCH', location, { body: data.subarray(0, 1000) });
      await truncatedPatch(registry.url, location, 3000, data.subarray(1000, 2500));
      expect((await c.request('GET', location)).headers.get('range')).to.equal('0-999');

      await c.request('PATCH', location, { body: data.subarray(1000), headers: { 'content-range': '1000-3999' } });
      expect((await c.request('PUT', `${location}?digest=${digestOf(data)}`)).status).to.equal(201);
      const get = await c.request('GET', `/v2/ns/one/blobs/${digestOf(data)}`);
      expect(Buffer.from(await get.arrayBuffer()).equals(data)).to.equal(true);
    });

    it('never stores bytes under another digest when two chunks race for one offset', async () => {
      const a = randomBytes(50_000);
      const b = randomBytes(50_000);
      const location = (await c.request('POST', '/v2/ns/one/blobs/uploads/')).headers.get('location')!;
      await Promise.all([a, b].map((body) => c.request('PATCH', location, { body, headers: { 'content-range': '0-49999' } })));
      const put = await c.request('PUT', `${location}?digest=${digestOf(a)}`);
      if (put.status === 201) {
        const get = await c.request('GET', `/v2/ns/one/blobs/${digestOf(a)}`);
        expect(Buffer.from(await get.arrayBuffer()).equals(a)).to.equal(true);
      } else {
        expect(put.status).to.equal(400);
        expect((await c.request('HEAD', `/v2/ns/one/blobs/${digestOf(a)}`)).status).to.equal(404);
      }
    });

    it('completes an upload finished several times at once exactly once; an empty chunk adds nothing; a refused digest leaves no session', async () => {
      const data = randomBytes(4096);
      const digest = digestOf(data);
      const location = (await c.request('POST', '/v2/ns/twice/blobs/uploads/')).headers.get('location')!;
      await c.request('PATCH', location, { body: data });
      // (a client retrying a PUT it thought lost)
      const puts = await Promise.all(Array.from({ length: 6 }, () => c.request('PUT', `${location}?digest=${digest}`)));
      const statuses = puts.map((r) => r.status).sort();
      expect(statuses).to.deep.equal([201, 404, 404, 404, 404, 404]);
      for (const r of puts.filter((p) => p.status === 404)) expect(await errorCode(r)).to.equal('BLOB_UPLOAD_UNKNOWN');
      expect(Buffer.from(await (await c.request('GET', `/v2/ns/twice/blobs/${digest}`)).arrayBuffer()).equals(data)).to.equal(true);

      // an empty chunked PATCH, then the bytes: the parts stay in order every time
      for (let round = 0; round < 5; round++) {
        const body = randomBytes(100);
        const at = (await c.request('POST', '/v2/ns/empty/blobs/uploads/')).headers.get('location')!;
        const empty = await c.request('PATCH', at, { body: chunked() });
        expect(empty.headers.get('range')).to.equal('0-0');
        expect((await c.request('PATCH', at, { body })).headers.get('range')).to.equal('0-99');
        expect((await c.request('PUT', `${at}?digest=${digestOf(body)}`)).status, `round ${round}`).to.equal(201);
      }

      const refused = await c.request('POST', '/v2/ns/orphan/blobs/uploads/?digest=sha256:1234', { body: data });
      expect(refused.status).to.equal(400);
      expect(await errorCode(refused)).to.equal('DIGEST_INVALID');
      const left: string[] = [];
      for await (const o of opened.storage.list('repositories/ns/orphan')) left.push(o.key);
      expect(left).to.deep.equal([]);
    });

    it('refuses a chunk whose Content-Length disagrees with its Content-Range', async () => {
      const location = (await c.request('POST', '/v2/ns/one/blobs/uploads/')).headers.get('location')!;
      const res = await c.request('PATCH', location, { body: randomBytes(10), headers: { 'content-range': '0-19' } });
      expect(res.status).to.equal(400);
      expect(await errorCode(res)).to.equal('SIZE_INVALID');
      expect((await c.request('GET', location)).headers.get('range')).to.equal('0-0');
    });

    it('continues an upload on a restarted server and on another replica', async () => {
      const data = randomBytes(3000);
      const location = (await c.request('POST', '/v2/ns/one/blobs/uploads/')).headers.get('location')!;
      await c.request('PATCH', location, { body: data.subarray(0, 1000) });
      await registry.close();

      registry = await startRegistry(opened.reopen());
      c = new Client(registry.url);
      expect((await c.request('GET', location)).headers.get('range')).to.equal('0-999');
      await c.request('PATCH', location, { body: data.subarray(1000, 2000) });

      const replica = await startRegistry(opened.reopen());
      try {
        const other = new Client(replica.url);
        await other.request('PATCH', location, { body: data.subarray(2000) });
        expect((await other.request('PUT', `${location}?digest=${digestOf(data)}`)).status).to.equal(201);
      } finally {
        await replica.close();
      }
      const get = await c.request('GET', `/v2/ns/one/blobs/${digestOf(data)}`);
      expect(Buffer.from(await get.arrayBuffer()).equals(data)).to.equal(true);
    });

    it('keeps blobs per repository until mounted, and mounts only from a repository that has them', async () => {
      const digest = await c.pushBlob('ns/one', randomBytes(100));
      expect((await c.request('HEAD', `/v2/ns/two/blobs/${digest}`)).status).to.equal(404);
      expect(await errorCode(await c.request('GET', `/v2/ns/two/blobs/${digest}`))).to.equal('BLOB_UNKNOWN');

      const fallback = await c.request('POST', `/v2/ns/two/blobs/uploads/?mount=${digest}&from=ns/three`);
      expect(fallback.status).to.equal(202);
      expect(fallback.headers.get('location')).to.match(/\/blobs\/uploads\//);

      const mount = await c.request('POST', `/v2/ns/two/blobs/uploads/?mount=${digest}&from=ns/one`);
      expect(mount.status).to.equal(201);
      expect(mount.headers.get('location')).to.equal(`/v2/ns/two/blobs/${digest}`);
      expect((await c.request('HEAD', `/v2/ns/two/blobs/${digest}`)).status).to.equal(200);

      expect((await c.request('DELETE', `/v2/ns/two/blobs/${digest}`)).status).to.equal(202);
      expect((await c.request('HEAD', `/v2/ns/two/blobs/${digest}`)).status).to.equal(404);
      expect((await c.request('HEAD', `/v2/ns/one/blobs/${digest}`)).status).to.equal(200);
    });

    it('cancels an upload with DELETE', async () => {
      const location = (await c.request('POST', '/v2/ns/one/blobs/uploads/')).headers.get('location')!;
      await c.request('PATCH', location, { body: randomBytes(10) });
      expect((await c.request('DELETE', location)).status).to.equal(204);
      const status = await c.request('GET', location);
      expect(status.status).to.equal(404);
      expect(await errorCode(status)).to.equal('BLOB_UPLOAD_UNKNOWN');
    });

    it('pushes the empty blob', async () => {
      const location = (await c.request('POST', '/v2/ns/one/blobs/uploads/')).headers.get('location')!;
      const empty = digestOf(Buffer.alloc(0));
      expect((await c.request('PUT', `${location}?digest=${empty}`)).status).to.equal(201);
      const head = await c.request('HEAD', `/v2/ns/one/blobs/${empty}`);
      expect(head.headers.get('content-length')).to.equal('0');
    });
  });
}
