import { expect } from 'chai';
import type { ListeningRegistry } from '../src/server.js';
import { tagLink } from '../src/storage/layout.js';
import { drivers, type OpenedStorage } from './support/drivers.js';
import { Client, digestOf, moduleArtifact, startRegistry } from './support/registry.js';

for (const driver of drivers) {
  describe(`deleted exact-version tags: ${driver.name}`, function () {
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

    /** Pushes a module's blobs and returns its manifest bytes, not yet pushed. */
    async function prepared(repo: string, version: string): Promise<Buffer> {
      const a = moduleArtifact({ version });
      for (const b of a.blobs) await c.pushBlob(repo, b);
      return a.manifest;
    }

    /** The status and OCI error (code, message) of a manifest push. */
    async function push(client: Client, repo: string, tag: string, bytes: Buffer): Promise<{ status: number; code?: string; message?: string }> {
      const res = await client.putManifest(repo, tag, bytes);
      if (res.status === 201) return { status: 201 };
      const { errors } = (await res.json()) as { errors: { code: string; message: string }[] };
      return { status: res.status, code: errors[0]!.code, message: errors[0]!.message };
    }

    it('yanks a version on DELETE of its tag and takes it back only with the same digest, after a restart too', async () => {
      const first = await prepared('ns/one', '1.0.0');
      const other = await prepared('ns/one', '1.0.1');
      expect((await push(c, 'ns/one', '1.0.0', first)).status).to.equal(201);
      expect((await c.request('DELETE', '/v2/ns/one/manifests/1.0.0')).status).to.equal(202);
      expect((await c.request('HEAD', '/v2/ns/one/manifests/1.0.0')).status).to.equal(404);
      expect(await (await c.request('GET', '/v2/ns/one/tags/list')).json()).to.deep.equal({ name: 'ns/one', tags: [] });

      // The record is in storage, not in this server's memory: a restarted server (or another replica) refuses too.
      const restarted = await startRegistry(opened.reopen());
      try {
        const refused = await push(new Client(restarted.url), 'ns/one', '1.0.0', other);
        expect(refused.status).to.equal(403);
        expect(refused.code).to.equal('DENIED');
        expect(refused.message).to.match(/1\.0\.0 is an exact version and was deleted/);
      } finally {
        await restarted.close();
      }
      expect((await push(c, 'ns/one', '1.0.0', other)).status).to.equal(403);

      expect((await push(c, 'ns/one', '1.0.0', first)).status).to.equal(201);
      const back = await c.request('HEAD', '/v2/ns/one/manifests/1.0.0');
      expect(back.headers.get('docker-content-digest')).to.equal(digestOf(first));
      expect((await c.request('DELETE', '/v2/ns/one/manifests/1.0.0')).status).to.equal(202);
      expect((await push(c, 'ns/one', '1.0.0', other)).status).to.equal(403);
    });

    it('keeps a version deleted by manifest digest from coming back with other content', async () => {
      const first = await prepared('ns/one', '2.0.0');
      const other = await prepared('ns/one', '2.0.1');
      for (const tag of ['2.0.0', 'latest']) expect((await push(c, 'ns/one', tag, first)).status).to.equal(201);
      expect((await c.request('DELETE', `/v2/ns/one/manifests/${digestOf(first)}`)).status).to.equal(202);

      expect((await push(c, 'ns/one', '2.0.0', other)).code).to.equal('DENIED');
      // A moving tag is not a version: it takes other content.
      expect((await push(c, 'ns/one', 'latest', other)).status).to.equal(201);
      expect((await push(c, 'ns/one', '2.0.0', first)).status).to.equal(201);
    });

    it('holds a deleted version to its digest under any build metadata', async () => {
      const first = await prepared('ns/one', '3.0.0');
      const other = await prepared('ns/one', '3.0.1');
      expect((await push(c, 'ns/one', '3.0.0_build.7', first)).status).to.equal(201);
      expect((await c.request('DELETE', '/v2/ns/one/manifests/3.0.0_build.7')).status).to.equal(202);

      for (const tag of ['3.0.0', '3.0.0_build.8', '3.0.0_build.7']) {
        const refused = await push(c, 'ns/one', tag, other);
        expect(refused.status, tag).to.equal(403);
        expect(refused.code, tag).to.equal('DENIED');
      }
      expect((await push(c, 'ns/one', '3.0.0_build.8', other)).message).to.match(/version 3\.0\.0 was published as tag 3\.0\.0_build\.7 \(since deleted\)/);
      expect((await push(c, 'ns/one', '3.0.0', first)).status).to.equal(201);
    });

    it('remembers a version whose tag was written before versions were recorded, once it is deleted', async () => {
      const first = await prepared('ns/old', '4.0.0');
      const other = await prepared('ns/old', '4.0.1');
      expect((await push(c, 'ns/old', digestOf(first), first)).status).to.equal(201);
      // What an earlier release of the registry left: the tag's current link alone.
      await opened.storage.put(tagLink('ns/old', '4.0.0'), Buffer.from(digestOf(first)));
      expect((await push(c, 'ns/old', '4.0.0', other)).code).to.equal('DENIED');

      expect((await c.request('DELETE', '/v2/ns/old/manifests/4.0.0')).status).to.equal(202);
      expect((await push(c, 'ns/old', '4.0.0', other)).code).to.equal('DENIED');
      expect((await push(c, 'ns/old', '4.0.0', first)).status).to.equal(201);
    });
    it('a manifest refused its exact-version tag lands nowhere: not by digest, not among its subject\'s referrers', async () => {
      const first = await prepared('ns/refused', '1.0.0');
      expect((await push(c, 'ns/refused', '1.0.0', first)).status).to.equal(201);
      const other = JSON.parse((await prepared('ns/refused', '1.0.1')).toString()) as Record<string, unknown>;
      // other content under 1.0.0, naming the first as its subject
      const bytes = Buffer.from(JSON.stringify({ ...other, subject: { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: digestOf(first), size: first.length } }));
      expect((await push(c, 'ns/refused', '1.0.0', bytes)).status).to.equal(403);
      expect((await c.request('GET', `/v2/ns/refused/manifests/${digestOf(bytes)}`)).status).to.equal(404);
      const referrers = (await (await c.request('GET', `/v2/ns/refused/referrers/${digestOf(first)}`)).json()) as { manifests: { digest: string }[] };
      expect(referrers.manifests.map((m) => m.digest)).to.not.include(digestOf(bytes));
      // The same bytes pushed by digest (untagged) land as any manifest does.
      expect((await push(c, 'ns/refused', digestOf(bytes), bytes)).status).to.equal(201);
      expect((await c.request('GET', `/v2/ns/refused/manifests/${digestOf(bytes)}`)).status).to.equal(200);
    });

    it('moves latest off a yanked version, to the newest release left (by tag or by digest), and drops it when none is left', async () => {
      const tags = async () => (await (await c.request('GET', '/v2/ns/latest/tags/list')).json()) as { tags: string[] };
      const latest = async () => (await c.request('HEAD', '/v2/ns/latest/manifests/latest')).headers.get('docker-content-digest');
      const pushed: Record<string, string> = {};
      for (const version of ['1.0.0', '1.1.0', '2.0.0-rc.1', '1.2.0']) {
        const bytes = await prepared('ns/latest', version);
        expect((await push(c, 'ns/latest', version, bytes)).status).to.equal(201);
        pushed[version] = digestOf(bytes);
      }
      expect((await push(c, 'ns/latest', 'latest', await prepared('ns/latest', '1.2.0'))).status).to.equal(201);
      expect(await latest()).to.equal(pushed['1.2.0']);
      // By tag: the newest release left, not the prerelease above it.
      expect((await c.request('DELETE', '/v2/ns/latest/manifests/1.2.0')).status).to.equal(202);
      expect(await latest()).to.equal(pushed['1.1.0']);
      // By digest: the manifest's tags go, latest moves on and stays.
      expect((await c.request('DELETE', `/v2/ns/latest/manifests/${pushed['1.1.0']}`)).status).to.equal(202);
      expect(await latest()).to.equal(pushed['1.0.0']);
      // Only a prerelease left: it; then nothing.
      expect((await c.request('DELETE', '/v2/ns/latest/manifests/1.0.0')).status).to.equal(202);
      expect(await latest()).to.equal(pushed['2.0.0-rc.1']);
      expect((await c.request('DELETE', '/v2/ns/latest/manifests/2.0.0-rc.1')).status).to.equal(202);
      expect(await latest()).to.equal(null);
      expect((await tags()).tags ?? []).to.deep.equal([]);
    });
  });
}
