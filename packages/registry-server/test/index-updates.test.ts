/**
 * What a tag push costs and how the search index follows it (issue 34's audit: every push walked and read every tag of
 * its repository, twice, so a push to a repository of a thousand versions took over a second). A push now reads the
 * same storage at 10 versions as at 40, and the index document it patches still catches up with every change.
 */
import { expect } from 'chai';
import type { ListeningRegistry } from '../src/server.js';
import type { ObjectInfo, StorageDriver } from '../src/storage/driver.js';
import { moduleIndex } from '../src/storage/layout.js';
import { drivers, filesystemDriver } from './support/drivers.js';
import { Client, moduleArtifact, startRegistry } from './support/registry.js';

/** `storage` with the calls `hook` names replaced (the rest go through unchanged). */
function intercepted(storage: StorageDriver, hook: Partial<Pick<StorageDriver, 'get' | 'put' | 'list'>>): StorageDriver {
  return new Proxy(storage, {
    get(target, prop) {
      const own = hook[prop as keyof typeof hook];
      if (own) return own;
      const value = Reflect.get(target, prop) as unknown;
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

const versionsOf = async (c: Client, repo: string): Promise<string[]> => {
  const res = (await (await c.request('GET', '/v2/_reasonplug/search')).json()) as { results: { name: string; versions: { version: string }[] }[] };
  return res.results.find((r) => r.name === repo)?.versions.map((v) => v.version) ?? [];
};

for (const driver of drivers) {
  describe(`the storage a tag push reads: ${driver.name}`, function () {
    this.timeout(60_000);
    let registry: ListeningRegistry | undefined;
    afterEach(() => registry?.close());

    it('is the same at 10 versions as at 40: only the pushed version\'s tags are listed, and the index is patched', async () => {
      const opened = await driver.open();
      const reads = { gets: 0, listed: 0 };
      const storage = intercepted(opened.storage, {
        get: (key) => (reads.gets++, opened.storage.get(key)),
        list: (dir, namePrefix) =>
          (async function* (): AsyncGenerator<ObjectInfo> {
            for await (const o of opened.storage.list(dir, namePrefix)) yield (reads.listed++, o);
          })(),
      });
      registry = await startRegistry(storage);
      const c = new Client(registry.url);
      const repo = 'math/many';
      /** The storage reads of one manifest push, its blobs pushed first. */
      const pushRead = async (version: string) => {
        const a = moduleArtifact({ version });
        for (const b of a.blobs) await c.pushBlob(repo, b);
        Object.assign(reads, { gets: 0, listed: 0 });
        expect((await c.putManifest(repo, version, a.manifest)).status).to.equal(201);
        return { ...reads };
      };

      for (let i = 0; i < 10; i++) await c.pushModule(repo, [`1.0.${i}`], { version: `1.0.${i}` });
      const at10 = await pushRead('1.0.10');
      for (let i = 11; i < 40; i++) await c.pushModule(repo, [`1.0.${i}`], { version: `1.0.${i}` });
      const at40 = await pushRead('1.0.40');
      // Before: 3 walks of every tag (2 objects each) and 2 reads of every tag.
      expect(at40).to.deep.equal(at10);
      expect(at40.listed).to.equal(0);
      expect((await versionsOf(c, repo)).length).to.equal(41);

      // The prefix listed takes in other versions (`1.0.4` lists `1.0.40`), which are not this version's: the
      // version's own tags still are, under any build metadata.
      const held = await c.pushModule(repo, ['1.0.4_b'], { version: '1.0.4' });
      const other = moduleArtifact({ version: '1.0.4', files: { 'model.onnx': 'other weights' } });
      for (const b of other.blobs) await c.pushBlob(repo, b);
      expect((await c.putManifest(repo, '1.0.4_c', other.manifest)).status).to.equal(403);
      // Deleted by digest, with both its tags: the version stays held, and leaves the index.
      expect((await c.request('DELETE', `/v2/${repo}/manifests/${held}`)).status).to.equal(202);
      expect((await c.putManifest(repo, '1.0.4_c', other.manifest)).status).to.equal(403);
      expect(await versionsOf(c, repo)).to.have.length(40).and.not.include('1.0.4');
    });
  });
}

// Index logic sits above the driver interface.
describe('the search index patched by each push', function () {
  this.timeout(20_000);
  let registry: ListeningRegistry | undefined;
  afterEach(() => registry?.close());

  it('catches up with a change whose update failed at the next push to the repository, its old document still there', async () => {
    const { storage } = await filesystemDriver.open();
    const repo = 'math/adder';
    let failing = false;
    registry = await startRegistry(
      intercepted(storage, {
        put: (key, data, opts) => (failing && key === moduleIndex(repo) ? Promise.reject(new Error('ENOSPC: no space left on device')) : storage.put(key, data, opts)),
      }),
    );
    const c = new Client(registry.url);
    await c.pushModule(repo, ['1.0.0'], { version: '1.0.0' });
    failing = true;
    await c.pushModule(repo, ['1.1.0'], { version: '1.1.0' });
    expect(await versionsOf(c, repo)).to.deep.equal(['1.0.0']);
    failing = false;
    await c.pushModule(repo, ['1.2.0'], { version: '1.2.0' });
    expect(await versionsOf(c, repo)).to.deep.equal(['1.2.0', '1.1.0', '1.0.0']);
  });

  it('rebuilds a document that another replica wrote over its update, from the document before', async () => {
    const { storage } = await filesystemDriver.open();
    const repo = 'math/adder';
    let overwrite = false;
    registry = await startRegistry(
      intercepted(storage, {
        // What a replica updating the same repository at that instant writes: its patch of the document it read first.
        put: async (key, data, opts) => {
          if (!overwrite || key !== moduleIndex(repo)) return storage.put(key, data, opts);
          overwrite = false;
          const before = (await storage.get(key))!;
          await storage.put(key, data, opts);
          return storage.put(key, before);
        },
      }),
    );
    const c = new Client(registry.url);
    await c.pushModule(repo, ['1.0.0'], { version: '1.0.0' });
    overwrite = true;
    await c.pushModule(repo, ['1.1.0'], { version: '1.1.0' });
    expect(overwrite).to.equal(false);
    expect(await versionsOf(c, repo)).to.deep.equal(['1.1.0', '1.0.0']);
  });
});
