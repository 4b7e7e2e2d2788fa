/**
 * What a dead or interrupted writer leaves behind (issue 14, defect 8): temp files of the filesystem
 * driver are swept at start, upload sessions nobody finishes are purged by age on both drivers.
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, readdir, utimes, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { createRegistryServer, type ListeningRegistry, type RegistryServer } from '../src/server.js';
import type { StorageDriver } from '../src/storage/driver.js';
import { FilesystemStorage } from '../src/storage/filesystem.js';
import { uploadDir, uploadStarted } from '../src/storage/layout.js';
import { serveCli } from './support/cli.js';
import { drivers } from './support/drivers.js';
import { Client, digestOf, errorCode } from './support/registry.js';
import { scratch } from './support/tmp.js';

const WEEK_MS = 7 * 24 * 3600 * 1000;

async function keys(storage: StorageDriver, dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const o of storage.list(dir)) out.push(o.key);
  return out;
}

/** Starts an upload session with `bytes` in it and returns its id. */
async function openSession(c: Client, repo: string, bytes: Buffer): Promise<string> {
  const post = await c.request('POST', `/v2/${repo}/blobs/uploads/`);
  const id = post.headers.get('docker-upload-uuid')!;
  const patch = await c.request('PATCH', `/v2/${repo}/blobs/uploads/${id}`, { body: bytes, headers: { 'content-range': `0-${bytes.length - 1}` } });
  expect(patch.status).to.equal(202);
  return id;
}

/** A pid that no process has: a child's, after it exited. */
function deadPid(): number {
  const child = spawnSync(process.execPath, ['-e', '']);
  return child.pid!;
}

async function until(what: string, check: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

for (const driver of drivers) {
  describe(`upload session purge: ${driver.name}`, function () {
    this.timeout(20_000);
    let storage: StorageDriver;
    let server: RegistryServer;
    let registry: ListeningRegistry;
    let c: Client;

    beforeEach(async () => {
      storage = (await driver.open()).storage;
      server = createRegistryServer({ storage });
      registry = await server.listen(0);
      c = new Client(registry.url);
    });
    afterEach(() => registry.close());

    it('purges sessions started more than a week ago (and orphaned parts), and leaves fresh ones working', async () => {
      const stale = await openSession(c, 'ns/old', Buffer.from('abandoned bytes'));
      await storage.put(uploadStarted('ns/old', stale), Buffer.from(JSON.stringify({ startedAt: new Date(Date.now() - WEEK_MS - 60_000).toISOString() })));
      const orphan = await openSession(c, 'ns/deep/orphan', Buffer.from('half-deleted'));
      await storage.delete(uploadStarted('ns/deep/orphan', orphan));
      const fresh = await openSession(c, 'ns/new', Buffer.from('first half, '));

      expect(await server.maintain()).to.deep.include({ uploadSessions: 2 });
      expect(await keys(storage, uploadDir('ns/old', stale))).to.deep.equal([]);
      expect(await keys(storage, uploadDir('ns/deep/orphan', orphan))).to.deep.equal([]);
      const gone = await c.request('GET', `/v2/ns/old/blobs/uploads/${stale}`);
      expect(gone.status).to.equal(404);
      expect(await errorCode(gone)).to.equal('BLOB_UPLOAD_UNKNOWN');

      const rest = Buffer.from('second half');
      const whole = Buffer.concat([Buffer.from('first half, '), rest]);
      const put = await c.request('PUT', `/v2/ns/new/blobs/uploads/${fresh}?digest=${digestOf(whole)}`, {
        body: rest,
        headers: { 'content-range': `12-${whole.length - 1}` },
      });
      expect(put.status).to.equal(201);
      expect(Buffer.from(await (await c.request('GET', `/v2/ns/new/blobs/${digestOf(whole)}`)).arrayBuffer()).equals(whole)).to.equal(true);
      expect(await server.maintain()).to.deep.include({ uploadSessions: 0 });
    });

    it('honours the maximum age it is given', async () => {
      const id = await openSession(c, 'ns/short', Buffer.from('x'));
      const tenMinutesAgo = new Date(Date.now() - 10 * 60_000).toISOString();
      await storage.put(uploadStarted('ns/short', id), Buffer.from(JSON.stringify({ startedAt: tenMinutesAgo })));
      expect(await createRegistryServer({ storage, uploadMaxAgeMs: 3600_000 }).maintain()).to.deep.include({ uploadSessions: 0 });
      expect(await server.maintain()).to.deep.include({ uploadSessions: 0 });
      expect(await createRegistryServer({ storage, uploadMaxAgeMs: 5 * 60_000 }).maintain()).to.deep.include({ uploadSessions: 1 });
      expect((await c.request('GET', `/v2/ns/short/blobs/uploads/${id}`)).status).to.equal(404);
    });
  });
}

describe('filesystem temp file sweep', function () {
  this.timeout(30_000);

  it('removes temp files of dead writers and day-old ones, and keeps live writes of any process', async () => {
    const root = await scratch('sweep');
    const storage = new FilesystemStorage(root);
    const tmp = join(root, '.tmp');
    await mkdir(tmp, { recursive: true });
    const dead = `${deadPid()}-00000000-0000-4000-8000-000000000001`;
    // A file with this process's pid that it is not writing: left by an earlier process with the same pid.
    const samePid = `${process.pid}-00000000-0000-4000-8000-000000000002`;
    const liveOther = `${process.ppid}-00000000-0000-4000-8000-000000000003`;
    const liveButOld = `${process.ppid}-00000000-0000-4000-8000-000000000004`;
    const foreign = 'not-a-temp-name';
    for (const name of [dead, samePid, liveOther, liveButOld, foreign]) await writeFile(join(tmp, name), 'partial');
    const twoDaysAgo = new Date(Date.now() - 2 * 24 * 3600 * 1000);
    await utimes(join(tmp, liveButOld), twoDaysAgo, twoDaysAgo);

    // A write of this process in flight while the sweep runs.
    const source = new PassThrough();
    const writing = storage.write('w/inflight', source);
    source.write('first part ');
    await until('the in-flight temp file', async () => (await readdir(tmp)).length === 6);

    const inflight = (await readdir(tmp)).filter((n) => n.startsWith(`${process.pid}-`) && n !== samePid);
    expect(inflight).to.have.length(1);

    expect(await storage.sweep()).to.equal(3);
    expect((await readdir(tmp)).sort()).to.deep.equal([foreign, liveOther, inflight[0]].sort());
    source.end('second part');
    await writing;
    expect((await storage.get('w/inflight'))!.toString()).to.equal('first part second part');
    expect((await readdir(tmp)).sort()).to.deep.equal([foreign, liveOther].sort());
  });

  it('after a serve process is killed mid-upload, the next one removes its temp file and purges its session', async () => {
    const data = await scratch('killed');
    const first = await serveCli('--data', data);
    const c = new Client(first.url);
    const post = await c.request('POST', '/v2/ns/big/blobs/uploads/');
    const id = post.headers.get('docker-upload-uuid')!;
    // A chunked PATCH that never ends: the server streams it into a temp file.
    const patch = request(`${first.url}/v2/ns/big/blobs/uploads/${id}`, { method: 'PATCH' });
    patch.on('error', () => {}); // the server is about to be killed under it
    patch.write(Buffer.alloc(256 * 1024, 1));
    const tmp = join(data, '.tmp');
    await until('a temp file of the upload', async () => (await readdir(tmp).catch(() => [])).length > 0);
    first.child.kill('SIGKILL');
    await once(first.child, 'exit');
    patch.destroy();
    const left = await readdir(tmp);
    expect(left).to.have.length(1);
    expect(left[0]).to.match(new RegExp(`^${first.child.pid}-`));
    expect(await readdir(join(data, 'repositories/ns/big/_uploads'))).to.deep.equal([id]);

    await sleep(1100);
    const second = await serveCli('--data', data, '--upload-max-age', '1s');
    try {
      await until('the sweep and the purge', async () =>
        (await readdir(tmp)).length === 0 && (await readdir(join(data, 'repositories/ns/big/_uploads'))).length === 0,
      );
      expect((await new Client(second.url).request('GET', `/v2/ns/big/blobs/uploads/${id}`)).status).to.equal(404);
    } finally {
      expect(await second.stop()).to.equal(0);
    }
  });
});
