/**
 * Large blobs stream: a blob many times larger than the server's memory headroom goes in and out of a
 * `reasonplug-registry serve` process while its peak resident size is watched.
 * REGISTRY_TEST_BLOB_MB sets the size (default 128; the benchmark's case is 1024).
 */
import { expect } from 'chai';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { serveCli } from './support/cli.js';
import { scratch } from './support/tmp.js';

const MB = Number(process.env.REGISTRY_TEST_BLOB_MB ?? 128);
const WARM_UP_MB = 32;
/**
 * Growth allowed between a warm-up transfer and the big one. V8 lets tens of MB of finished request
 * chunks wait for a GC, and the warm-up brings the process to that plateau; a server that held the blob
 * would grow by the blob's size instead.
 */
const HEADROOM_MB = 48;

const residentMb = (pid: number, field: 'VmRSS' | 'VmHWM') =>
  Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;

const SEED = randomBytes(1 << 20);

/** A blob of `mb` MiB produced on the fly, the same on every pass: copies of SEED stamped with their index. */
function* content(mb: number): Generator<Buffer> {
  for (let i = 0; i < mb; i++) {
    const block = Buffer.from(SEED);
    block.writeUInt32BE(i, 0);
    yield block;
  }
}

/** Pushes a blob of `mb` MiB by a streamed PATCH and pulls it back, checking its digest both ways. */
async function roundTrip(url: string, mb: number): Promise<void> {
  const hash = createHash('sha256');
  for (const c of content(mb)) hash.update(c);
  const digest = 'sha256:' + hash.digest('hex');
  const post = await fetch(`${url}/v2/big/blob/blobs/uploads/`, { method: 'POST' });
  const location = url + post.headers.get('location');
  expect(await streamPatch(location, content(mb))).to.equal(202);
  expect((await fetch(`${location}?digest=${digest}`, { method: 'PUT' })).status).to.equal(201);
  const pulled = createHash('sha256');
  const res = await fetch(`${url}/v2/big/blob/blobs/${digest}`);
  for await (const c of res.body!) pulled.update(c);
  expect('sha256:' + pulled.digest('hex')).to.equal(digest);
}

/** PATCHes the generator's output with chunked encoding and backpressure. */
function streamPatch(url: string, chunks: Iterable<Buffer>): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'PATCH', headers: { 'content-type': 'application/octet-stream' } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode!));
    });
    req.on('error', reject);
    const it = chunks[Symbol.iterator]();
    const pump = () => {
      for (;;) {
        const next = it.next();
        if (next.done) return void req.end();
        if (!req.write(next.value)) return void req.once('drain', pump);
      }
    };
    pump();
  });
}

describe(`streaming a ${MB} MiB blob`, function () {
  this.timeout(120_000);

  it('pushes and pulls it with the server staying within a fixed memory headroom', async function () {
    if (process.platform !== 'linux') {
      console.log('      resident size is read from /proc: skipping off Linux');
      this.skip();
    }
    const server = await serveCli('--data', await scratch('big'));
    try {
      const pid = server.child.pid!;
      const idle = residentMb(pid, 'VmRSS');
      await roundTrip(server.url, WARM_UP_MB);
      const warm = residentMb(pid, 'VmHWM');
      await roundTrip(server.url, MB);
      const peak = residentMb(pid, 'VmHWM');
      console.log(`      server resident size: idle ${idle.toFixed(0)} MB, after ${WARM_UP_MB} MiB ${warm.toFixed(0)} MB, peak ${peak.toFixed(0)} MB`);
      expect(peak - warm).to.be.below(HEADROOM_MB);
    } finally {
      await server.stop();
    }
  });
});
