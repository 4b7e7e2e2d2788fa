/**
 * Garbage collection (registry/garbage.ts) on both storage drivers: what deleted manifests alone referenced goes,
 * what anything still references stays, pushes in progress keep their blobs, untagged manifests go only when asked,
 * and the storage verifies (support/verify.ts, an fsck written from the layout) after each collection.
 */
import { expect } from 'chai';
import { setTimeout as sleep } from 'node:timers/promises';
import { collectGarbage, GarbageCollectionError } from '../src/registry/garbage.js';
import type { StorageDriver } from '../src/storage/driver.js';
import { FilesystemStorage } from '../src/storage/filesystem.js';
import { blobKey } from '../src/storage/layout.js';
import { registryCli } from './support/cli.js';
import { drivers } from './support/drivers.js';
import { Client, digestOf, moduleArtifact, OCI_INDEX, OCI_MANIFEST, startRegistry, useRegistry } from './support/registry.js';
import { scratch } from './support/tmp.js';
import { verifyStorage } from './support/verify.js';

/** The digests of the blobs in storage. */
async function blobsIn(storage: StorageDriver): Promise<Set<string>> {
  const out = new Set<string>();
  for await (const o of storage.list('blobs')) out.add(`sha256:${o.key.split('/')[3]}`);
  return out;
}

/** Pushes version `version` of math/adder (a file shared by every version, one of its own) under `tags`. */
async function pushVersion(c: Client, version: string, tags: string[] = [version]): Promise<{ digest: string; own: string; config: string; shared: string }> {
  const files = { 'shared.bin': 'the bytes every version has', 'own.bin': `the bytes only ${version} has` };
  const config = moduleArtifact({ version, files }).blobs[0]!;
  const digest = await c.pushModule('math/adder', tags, { version, files });
  return { digest, config: digestOf(config), shared: digestOf(Buffer.from(files['shared.bin'])), own: digestOf(Buffer.from(files['own.bin'])) };
}

for (const driver of drivers) {
  describe(`garbage collection: ${driver.name}`, function () {
    this.timeout(60_000);
    const under = useRegistry(() => driver.open());
    let storage: StorageDriver;
    let c: Client;
    beforeEach(() => ({ storage, c } = under));

    it('removes what only a deleted manifest referenced, keeps what another shares; a dry run removes nothing', async () => {
      const v1 = await pushVersion(c, '1.0.0');
      const v2 = await pushVersion(c, '2.0.0');
      expect((await c.request('DELETE', `/v2/math/adder/manifests/${v1.digest}`)).status).to.equal(202);
      await sleep(20);
      const before = await blobsIn(storage);
      const dry = await collectGarbage(storage, { dryRun: true, minAgeMs: 0 });
      expect(dry.blobs.sort()).to.deep.equal([v1.digest, v1.own, v1.config].sort());
      expect(await blobsIn(storage)).to.deep.equal(before);

      const done = await collectGarbage(storage, { minAgeMs: 0 });
      expect(done.blobs.sort()).to.deep.equal(dry.blobs.sort());
      expect(done.bytes).to.be.greaterThan(0);
      const after = await blobsIn(storage);
      for (const gone of done.blobs) expect(after.has(gone), gone).to.equal(false);
      for (const kept of [v2.digest, v2.own, v2.config, v2.shared]) expect(after.has(kept), kept).to.equal(true);
      expect((await verifyStorage(storage)).problems).to.deep.equal([]);
      // 2.0.0 pulls whole; a blob of 1.0.0 is gone from the repository, and a new push of it works again.
      expect((await c.request('GET', '/v2/math/adder/manifests/2.0.0', { headers: { accept: OCI_MANIFEST } })).status).to.equal(200);
      for (const d of [v2.own, v2.config, v2.shared]) expect((await c.request('GET', `/v2/math/adder/blobs/${d}`)).status, d).to.equal(200);
      expect((await c.request('HEAD', `/v2/math/adder/blobs/${v1.own}`)).status).to.equal(404);
      expect(await pushVersion(c, '1.0.0')).to.deep.equal(v1);
      expect((await verifyStorage(storage)).problems).to.deep.equal([]);
      // Nothing more to collect.
      expect((await collectGarbage(storage, { minAgeMs: 0 })).blobs).to.deep.equal([]);
    });

    it('keeps the blobs of a push whose manifest has not arrived while they are younger than the minimum age', async () => {
      const orphan = await c.pushBlob('math/adder', Buffer.from('a blob whose manifest is on its way'));
      expect((await collectGarbage(storage)).blobs).to.deep.equal([]);
      await sleep(20);
      expect((await collectGarbage(storage, { minAgeMs: 0 })).blobs).to.deep.equal([orphan]);
      expect((await verifyStorage(storage)).problems).to.deep.equal([]);
    });

    it('keeps the blobs of a manifest pushed while it collects', async () => {
      const artifact = moduleArtifact({ version: '4.0.0' });
      for (const b of artifact.blobs) await c.pushBlob('math/adder', b);
      await sleep(20);
      // The manifest lands after the marking, as the collection lists the blobs.
      let pushed: Promise<Response> | undefined;
      const during = new Proxy(storage, {
        get(target, prop) {
          if (prop === 'list') {
            return (dir: string) => {
              if (dir !== 'blobs' || pushed) return target.list(dir);
              return (async function* () {
                pushed = c.putManifest('math/adder', '4.0.0', artifact.manifest);
                expect((await pushed).status).to.equal(201);
                yield* target.list(dir);
              })();
            };
          }
          const value = Reflect.get(target, prop) as unknown;
          return typeof value === 'function' ? value.bind(target) : value;
        },
      });
      expect((await collectGarbage(during, { minAgeMs: 0 })).blobs).to.deep.equal([]);
      expect(pushed).to.not.equal(undefined);
      for (const b of artifact.blobs) expect((await c.request('GET', `/v2/math/adder/blobs/${digestOf(b)}`)).status).to.equal(200);
      expect((await verifyStorage(storage)).problems).to.deep.equal([]);
    });

    it('deletes manifests no tag reaches only with deleteUntagged, keeping those a tagged index reaches', async () => {
      const v1 = await pushVersion(c, '1.0.0', ['latest']);
      const v2 = await pushVersion(c, '2.0.0', ['latest']);
      // An index tagged `multi` whose entry is a manifest pushed by digest alone.
      const child = moduleArtifact({ version: '3.0.0', files: { 'shared.bin': 'the bytes every version has' } });
      for (const b of child.blobs) await c.pushBlob('math/adder', b);
      const childDigest = digestOf(child.manifest);
      expect((await c.putManifest('math/adder', childDigest, child.manifest)).status).to.equal(201);
      const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_MANIFEST, digest: childDigest, size: child.manifest.length }] }));
      expect((await c.putManifest('math/adder', 'multi', index, OCI_INDEX)).status).to.equal(201);
      await sleep(20);

      expect((await collectGarbage(storage, { minAgeMs: 0 })).blobs).to.deep.equal([]);
      const report = await collectGarbage(storage, { deleteUntagged: true, minAgeMs: 0 });
      expect(report.manifests).to.deep.equal([`math/adder@${v1.digest}`]);
      expect(report.blobs.sort()).to.deep.equal([v1.digest, v1.own, v1.config].sort());
      expect((await c.request('GET', `/v2/math/adder/manifests/${v1.digest}`, { headers: { accept: OCI_MANIFEST } })).status).to.equal(404);
      for (const ref of [v2.digest, childDigest, 'multi']) {
        expect((await c.request('GET', `/v2/math/adder/manifests/${ref}`, { headers: { accept: `${OCI_MANIFEST}, ${OCI_INDEX}` } })).status, ref).to.equal(200);
      }
      expect((await verifyStorage(storage)).problems).to.deep.equal([]);
    });

    it('removes nothing when a manifest cannot be read', async () => {
      const v1 = await pushVersion(c, '1.0.0');
      const v2 = await pushVersion(c, '2.0.0');
      expect((await c.request('DELETE', `/v2/math/adder/manifests/${v1.digest}`)).status).to.equal(202);
      await storage.put(blobKey(v2.digest.slice('sha256:'.length)), Buffer.from('not a manifest'));
      await sleep(20);
      const before = await blobsIn(storage);
      const err = await collectGarbage(storage, { minAgeMs: 0 }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).to.be.instanceOf(GarbageCollectionError);
      expect((err as Error).message).to.match(new RegExp(`manifest ${v2.digest} of math/adder cannot be read .*; nothing was removed`));
      expect(await blobsIn(storage)).to.deep.equal(before);
    });
  });
}

describe('reasonplug-registry gc', function () {
  this.timeout(60_000);

  it('lists what it would remove with --dry-run, removes it without, and refuses a bad --min-age', async () => {
    const data = await scratch('gc-cli');
    const registry = await startRegistry(new FilesystemStorage(data));
    let v1;
    try {
      const c = new Client(registry.url);
      v1 = await pushVersion(c, '1.0.0', ['1.0.0', 'latest']);
      await pushVersion(c, '2.0.0', ['2.0.0', 'latest']);
      expect((await c.request('DELETE', '/v2/math/adder/manifests/1.0.0')).status).to.equal(202);
    } finally {
      await registry.close();
    }
    await sleep(20);
    const dry = await registryCli('gc', '--data', data, '--dry-run', '--delete-untagged', '--min-age', '0');
    expect(dry.code, dry.stderr).to.equal(0);
    expect(dry.stdout.split('\n').filter(Boolean).sort()).to.deep.equal(
      [`manifest math/adder@${v1.digest}`, `blob ${v1.digest}`, `blob ${v1.own}`, `blob ${v1.config}`].sort(),
    );
    expect(dry.stderr).to.match(/^would remove 3 blobs \([\d.]+ MiB\), 3 repository links to them and 1 untagged manifests\n$/);
    const done = await registryCli('gc', '--data', data, '--delete-untagged', '--min-age', '0');
    expect(done.code, done.stderr).to.equal(0);
    expect(done.stderr).to.match(/^removed 3 blobs/);
    expect((await verifyStorage(new FilesystemStorage(data))).problems).to.deep.equal([]);
    // Kept by the default minimum age (an hour): nothing is old enough.
    const young = await registryCli('gc', '--data', data);
    expect(young.stderr).to.match(/^removed 0 blobs/);
    // `never` (which --upload-max-age takes) would keep everything: a collection that silently removes nothing.
    for (const age of ['soon', 'never']) {
      const bad = await registryCli('gc', '--data', data, '--min-age', age);
      expect(bad.code, age).to.equal(2);
      expect(bad.stderr, age).to.match(/--min-age must be a duration such as 30m or 1h, or 0\n/);
    }
  });
});
