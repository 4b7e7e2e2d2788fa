import { expect } from 'chai';
import { randomBytes, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { text } from 'node:stream/consumers';
import { InvalidKeyError, type StorageDriver } from '../src/storage/driver.js';
import { FilesystemStorage } from '../src/storage/filesystem.js';
import { S3Storage } from '../src/storage/s3.js';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { BUCKET, drivers, s3Endpoint, s3Storage } from './support/drivers.js';

async function keys(storage: StorageDriver, dir: string, namePrefix?: string): Promise<string[]> {
  const out: string[] = [];
  for await (const o of storage.list(dir, namePrefix)) out.push(`${o.key}:${o.size}`);
  return out.sort();
}

for (const driver of drivers) {
  describe(`storage driver contract: ${driver.name}`, function () {
    this.timeout(20_000);
    let storage: StorageDriver;
    beforeEach(async () => {
      storage = (await driver.open()).storage;
    });

    it('puts, gets, stats, and creates only if absent', async () => {
      expect(await storage.get('a/b')).to.equal(undefined);
      expect(await storage.put('a/b', Buffer.from('one'))).to.equal(true);
      expect((await storage.get('a/b'))!.toString()).to.equal('one');
      expect(await storage.stat('a/b')).to.equal(3);
      expect(await storage.put('a/b', Buffer.from('two'))).to.equal(true);
      expect((await storage.get('a/b'))!.toString()).to.equal('two');
      expect(await storage.put('a/new', Buffer.from('x'), { ifAbsent: true })).to.equal(true);
      expect(await storage.stat('a/missing')).to.equal(undefined);
    });

    it('streams writes in, reads ranges out, and leaves nothing when the source fails', async () => {
      const data = randomBytes(200_000);
      await storage.write('w/ok', Readable.from([data.subarray(0, 100_000), data.subarray(100_000)]));
      expect(await storage.stat('w/ok')).to.equal(data.length);
      const part = await storage.read('w/ok', { start: 10, end: 19 });
      const chunks: Buffer[] = [];
      for await (const c of part!) chunks.push(c as Buffer);
      expect(Buffer.concat(chunks).equals(data.subarray(10, 20))).to.equal(true);
      expect(await storage.read('w/none')).to.equal(undefined);

      const failing = Readable.from(
        (async function* () {
          yield data.subarray(0, 1000);
          throw new Error('client went away');
        })(),
      );
      let error: unknown;
      await storage.write('w/partial', failing).catch((e) => (error = e));
      expect((error as Error).message).to.equal('client went away');
      expect(await storage.stat('w/partial')).to.equal(undefined);
      expect(await keys(storage, 'w')).to.deep.equal([`w/ok:${data.length}`]);
    });

    it('leaves nothing behind when the source fails before its first byte', async () => {
      for (let i = 0; i < 20; i++) {
        const source = new PassThrough();
        source.on('error', () => {});
        const writing = storage.write('w/early', source);
        source.destroy(new Error('client went away'));
        await writing.then(() => expect.fail('the write succeeded'), () => {});
      }
      // The filesystem once created a temp file after this point, behind its own cleanup.
      await sleep(100);
      expect(await storage.stat('w/early')).to.equal(undefined);
      if (storage instanceof FilesystemStorage) expect(await readdir(join(storage.root, '.tmp'))).to.deep.equal([]);
    });

    it('lets writes and a delete of their directory race without failing either', async () => {
      // A chunk arriving while its session is cancelled, a tag set while it is deleted: any order is fine,
      // an error (once ENOENT from the rename, ENOTEMPTY from the delete) is not.
      // (Buckets have no directories to race on: a few rounds check the contract there.)
      const rounds = storage instanceof FilesystemStorage ? 40 : 4;
      for (let i = 0; i < rounds; i++) {
        await Promise.all([
          storage.put('r/s/put/k', Buffer.from('x')),
          storage.write('r/s/write/k', Readable.from([Buffer.from('y')])),
          storage.delete('r/s'),
        ]);
      }
    });

    it('lists recursively, moves, and deletes trees', async () => {
      await storage.put('t/x/1', Buffer.from('a'));
      await storage.put('t/x/y/2', Buffer.from('bb'));
      await storage.put('t2/3', Buffer.from('c'));
      expect(await keys(storage, 't')).to.deep.equal(['t/x/1:1', 't/x/y/2:2']);
      await storage.move('t/x/1', 't/z/1');
      expect(await text((await storage.read('t/z/1'))!)).to.equal('a');
      await storage.delete('t/x');
      expect(await keys(storage, 't')).to.deep.equal(['t/z/1:1']);
      expect(await keys(storage, 't2')).to.deep.equal(['t2/3:1']);
      await storage.delete('does/not/exist');
    });

    it('lists only the entries of a directory whose name starts with a prefix, at any depth below them', async () => {
      for (const key of ['t/1.2.3/current/link', 't/1.2.3_b/release/link', 't/1.2.30/current/link', 't/1.2.4/current/link', 't/x1.2.3/link']) {
        await storage.put(key, Buffer.from('a'));
      }
      expect(await keys(storage, 't', '1.2.3')).to.deep.equal(['t/1.2.3/current/link:1', 't/1.2.30/current/link:1', 't/1.2.3_b/release/link:1']);
      expect(await keys(storage, 't', '9')).to.deep.equal([]);
      expect(await keys(storage, 'missing', '1')).to.deep.equal([]);
      for (const namePrefix of ['a/b', '..', '']) {
        let error: unknown;
        await keys(storage, 't', namePrefix).catch((e) => (error = e));
        expect(error, namePrefix).to.be.instanceOf(InvalidKeyError);
      }
    });

    it('lists when each object was last written (to the second at least: S3 keeps no finer)', async () => {
      const before = Date.now();
      await storage.put('m/a', Buffer.from('a'));
      const listed: number[] = [];
      for await (const o of storage.list('m')) listed.push(o.modified);
      expect(listed).to.have.length(1);
      expect(listed[0]).to.be.within(Math.floor(before / 1000) * 1000 - 1000, Date.now() + 1000);
    });

    it('refuses keys that could escape the root', async () => {
      for (const key of ['../x', 'a/../../x', '/abs', 'a//b', 'a/.hidden', 'a\\b', '', 'a/b/']) {
        let error: unknown;
        await storage.put(key, Buffer.from('x')).catch((e) => (error = e));
        expect(error, key).to.be.instanceOf(InvalidKeyError);
      }
    });
  });
}

describe('S3Storage over a connection that cuts bodies off', function () {
  this.timeout(20_000);

  /** A loopback S3 endpoint whose GETs send the first `cut` answers' headers and half their body, then hang up. */
  async function cuttingEndpoint(body: Buffer, cut: number): Promise<{ storage: S3Storage; gets: () => number; close: () => Promise<void> }> {
    let gets = 0;
    const server = createServer((req, res) => {
      if (req.method !== 'GET') return void res.writeHead(501).end();
      gets++;
      res.writeHead(200, { 'Content-Length': String(body.length), 'Content-Type': 'application/octet-stream' });
      if (gets > cut) return void res.end(body);
      res.write(body.subarray(0, body.length >> 1), () => res.socket?.destroy());
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as AddressInfo;
    const storage = new S3Storage({
      bucket: 'b',
      client: { endpoint: `http://127.0.0.1:${port}`, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'k', secretAccessKey: 's' }, maxAttempts: 1 },
    });
    return { storage, gets: () => gets, close: () => new Promise((resolve) => server.close(() => resolve())) };
  }

  it('asks a GET again when its body stops coming, and gives up with the error after two more tries', async () => {
    const body = randomBytes(64 * 1024);
    const twice = await cuttingEndpoint(body, 2);
    try {
      expect((await twice.storage.get('k'))!.equals(body)).to.equal(true);
      expect(twice.gets()).to.equal(3);
    } finally {
      await twice.close();
    }
    const always = await cuttingEndpoint(body, Infinity);
    try {
      const err = await always.storage.get('k').then(
        () => undefined,
        (e: Error) => e,
      );
      expect(err?.message).to.match(/aborted|ECONNRESET|premature/i);
      expect(always.gets()).to.equal(3);
    } finally {
      await always.close();
    }
  });
});

describe('S3Storage on a bucket that is not there, and under a prefix', function () {
  this.timeout(20_000);

  it('throws NoSuchBucket from every read instead of reporting keys absent (an empty registry)', async () => {
    const missing = s3Storage(await s3Endpoint(), '', 'no-such-bucket');
    const reads: [string, () => Promise<unknown>][] = [
      ['get', () => missing.get('a/b')],
      ['stat', () => missing.stat('a/b')],
      ['read', () => missing.read('a/b')],
      ['read a range', () => missing.read('a/b', { start: 0, end: 1 })],
    ];
    for (const [what, read] of reads) {
      const err = await read().then(
        (v) => v,
        (e: Error) => e,
      );
      expect((err as Error | undefined)?.name, what).to.equal('NoSuchBucket');
    }
    // Once the bucket is known to exist, a stat's bare 404 is an absent key: one HeadBucket, not one a stat.
    const present = s3Storage(await s3Endpoint(), `t-${randomUUID()}/`);
    const sent: string[] = [];
    present.client.middlewareStack.add(
      (next, context) => (args) => {
        sent.push(context.commandName!);
        return next(args);
      },
      { step: 'initialize' },
    );
    expect(await present.stat('a/b')).to.equal(undefined);
    expect(await present.stat('a/c')).to.equal(undefined);
    expect(sent).to.deep.equal(['HeadObjectCommand', 'HeadBucketCommand', 'HeadObjectCommand']);
  });

  it('takes the prefix as a folder: `p`, `p/` and `/p` name the same keys, `p/...`', async () => {
    const endpoint = await s3Endpoint();
    const folder = `team-${randomUUID()}`;
    await s3Storage(endpoint, folder).put('blobs/x', Buffer.from('1'));
    await s3Storage(endpoint, `${folder}/`).put('blobs/y', Buffer.from('2'));
    for (const prefix of [folder, `${folder}/`, `/${folder}`]) {
      expect(await keys(s3Storage(endpoint, prefix), 'blobs'), prefix).to.deep.equal(['blobs/x:1', 'blobs/y:1']);
    }
    const storage = s3Storage(endpoint, folder);
    const listed = await storage.client.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: folder }));
    expect(listed.Contents?.map((o) => o.Key).sort()).to.deep.equal([`${folder}/blobs/x`, `${folder}/blobs/y`]);
  });
});
