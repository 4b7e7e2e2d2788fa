/**
 * What a storage write failing inside a push leaves behind (issue 33's audit: a full disk): nothing that refuses the
 * retry, or fills the disk it needs, once the fault is gone. The fault is a real one of the filesystem driver: a plain
 * file where it must make a directory fails that one write (ENOTDIR/EEXIST), the others go on, and removing the file
 * ends the fault, where a small tmpfs (which CI lacks) fails whichever write comes when it is full.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import type { ListeningRegistry } from '../src/server.js';
import { FilesystemStorage } from '../src/storage/filesystem.js';
import { blobDir, indexDir, tagCurrentDir, uploadDir, uploadPartDigestsDir } from '../src/storage/layout.js';
import { Client, digestOf, moduleArtifact, startRegistry } from './support/registry.js';
import { scratch } from './support/tmp.js';

const octets = { 'content-type': 'application/octet-stream' };

describe('a storage write failing inside a push', function () {
  this.timeout(20_000);
  let storage: FilesystemStorage;
  let registry: ListeningRegistry;
  let c: Client;

  beforeEach(async () => {
    storage = new FilesystemStorage(await scratch('write-faults'));
    registry = await startRegistry(storage);
    c = new Client(registry.url);
  });
  afterEach(() => registry.close());

  /** Makes writes under `key` fail until {@link clear}: a file stands where a directory must go. */
  const block = (key: string) => storage.put(key, Buffer.from('in the way'));
  const clear = (key: string) => storage.delete(key);

  /** Keys left in storage under `dir`. */
  async function keys(dir: string): Promise<string[]> {
    const out: string[] = [];
    for await (const o of storage.list(dir)) out.push(o.key);
    return out;
  }

  it('reserves no version whose tag it kept from appearing, and keeps the record of a version published before', async () => {
    const repo = 'ns/mod';
    const first = moduleArtifact({ version: '0.1.0' });
    const corrected = moduleArtifact({ version: '0.1.0', files: { 'model.onnx': 'corrected weights' } });
    for (const b of [...first.blobs, ...corrected.blobs]) await c.pushBlob(repo, b);

    await block(tagCurrentDir(repo, '0.1.0'));
    expect((await c.putManifest(repo, '0.1.0', first.manifest)).status).to.equal(500);
    expect((await c.request('HEAD', `/v2/${repo}/manifests/0.1.0`)).status).to.equal(404);
    await clear(tagCurrentDir(repo, '0.1.0'));
    // The version was never visible, so the corrected module may take it.
    expect((await c.putManifest(repo, '0.1.0', corrected.manifest)).status).to.equal(201);

    // Yanked, then pushed again with its own digest while the tag link cannot be written: the record that an
    // earlier, successful push made stays, and still refuses other content.
    expect((await c.request('DELETE', `/v2/${repo}/manifests/0.1.0`)).status).to.equal(202);
    await block(tagCurrentDir(repo, '0.1.0'));
    expect((await c.putManifest(repo, '0.1.0', corrected.manifest)).status).to.equal(500);
    await clear(tagCurrentDir(repo, '0.1.0'));
    expect((await c.putManifest(repo, '0.1.0', first.manifest)).status).to.equal(403);
    expect((await c.putManifest(repo, '0.1.0', corrected.manifest)).status).to.equal(201);
    const head = await c.request('HEAD', `/v2/${repo}/manifests/0.1.0`);
    expect(head.headers.get('docker-content-digest')).to.equal(digestOf(corrected.manifest));
  });

  it('answers a push whose search index write failed as done (the tag stands), logs it, and the index catches up later', async () => {
    const repo = 'ns/indexed';
    const lines: { level: number; msg: string; repository?: string }[] = [];
    const sink = new Writable({
      write(chunk, _enc, done) {
        lines.push(JSON.parse(chunk.toString()) as (typeof lines)[number]);
        done();
      },
    });
    const logged = await startRegistry(storage, { logger: pino({ level: 'info' }, sink) });
    try {
      const lc = new Client(logged.url);
      const first = moduleArtifact({ version: '0.1.0' });
      const other = moduleArtifact({ version: '0.1.0', files: { 'model.onnx': 'other weights' } });
      for (const b of [...first.blobs, ...other.blobs]) await lc.pushBlob(repo, b);
      const found = async () => ((await (await lc.request('GET', '/v2/_reasonplug/search')).json()) as { results: { name: string }[] }).results.map((r) => r.name);

      // The index document's folder cannot be made: only that write fails.
      await block(`${indexDir}/${repo}`);
      expect((await lc.putManifest(repo, '0.1.0', first.manifest)).status).to.equal(201);
      expect(lines.filter((l) => l.level >= 50 && l.repository === repo).map((l) => l.msg)).to.deep.equal([
        'search index not updated (the write stands; `reasonplug-registry reindex` rebuilds it)',
      ]);
      // The client goes on to move `latest`, as a push does; the version is published, and keeps its content.
      expect((await lc.putManifest(repo, 'latest', first.manifest)).status).to.equal(201);
      expect((await lc.putManifest(repo, '0.1.0', other.manifest)).status).to.equal(403);
      expect(await found()).to.deep.equal([]);

      await clear(`${indexDir}/${repo}`);
      expect((await lc.putManifest(repo, 'latest', first.manifest)).status).to.equal(201);
      expect(await found()).to.deep.equal([repo]);
    } finally {
      await logged.close();
    }
  });

  for (const { how, parts } of [
    { how: 'two PATCHed chunks, then PUT', parts: 2 },
    { how: 'one PUT with the whole body', parts: 1 },
  ]) {
    it(`ends an upload whose commit failed, its parts with it (${how}), and a new upload then succeeds`, async () => {
      const repo = 'ns/up';
      const blob = randomBytes(300_000);
      const digest = digestOf(blob);
      const location = (await c.request('POST', `/v2/${repo}/blobs/uploads/`)).headers.get('location')!;
      const id = location.slice(location.lastIndexOf('/') + 1);
      await block(blobDir(digest.slice('sha256:'.length)));
      let committed;
      if (parts === 2) {
        for (const [start, end] of [[0, 100_000], [100_000, blob.length]] as const) {
          const res = await c.request('PATCH', location, { body: blob.subarray(start, end), headers: { ...octets, 'content-range': `${start}-${end - 1}` } });
          expect(res.status).to.equal(202);
        }
        committed = await c.request('PUT', `${location}?digest=${digest}`);
      } else {
        committed = await c.request('PUT', `${location}?digest=${digest}`, { body: blob, headers: octets });
      }
      expect(committed.status).to.equal(500);
      expect((await c.request('GET', location)).status).to.equal(404);
      expect(await keys(uploadDir(repo, id))).to.deep.equal([]);

      await clear(blobDir(digest.slice('sha256:'.length)));
      await c.pushBlob(repo, blob);
      expect(Buffer.from(await (await c.request('GET', `/v2/${repo}/blobs/${digest}`)).arrayBuffer()).equals(blob)).to.equal(true);
    });
  }

  it('keeps a chunk whose digest record failed out of the session, which resumes at its old offset', async () => {
    const repo = 'ns/chunks';
    const blob = randomBytes(200_000);
    const location = (await c.request('POST', `/v2/${repo}/blobs/uploads/`)).headers.get('location')!;
    const id = location.slice(location.lastIndexOf('/') + 1);
    const patch = (start: number, end: number) =>
      c.request('PATCH', location, { body: blob.subarray(start, end), headers: { ...octets, 'content-range': `${start}-${end - 1}` } });

    // The part is written, then its digest record fails: answered 500, the chunk must not count.
    await block(uploadPartDigestsDir(repo, id));
    expect((await patch(0, 120_000)).status).to.equal(500);
    const status = await c.request('GET', location);
    expect([status.status, status.headers.get('range')]).to.deep.equal([204, '0-0']);

    await clear(uploadPartDigestsDir(repo, id));
    expect((await patch(0, 120_000)).status).to.equal(202);
    expect((await patch(120_000, blob.length)).status).to.equal(202);
    expect((await c.request('PUT', `${location}?digest=${digestOf(blob)}`)).status).to.equal(201);
    expect(Buffer.from(await (await c.request('GET', `/v2/${repo}/blobs/${digestOf(blob)}`)).arrayBuffer()).equals(blob)).to.equal(true);
  });
});
