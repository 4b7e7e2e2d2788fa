import { expect } from 'chai';
import type { ListeningRegistry } from '../src/server.js';
import { drivers, type OpenedStorage } from './support/drivers.js';
import {
  Client,
  digestOf,
  errorCode,
  moduleArtifact,
  OCI_INDEX,
  OCI_MANIFEST,
  startRegistry,
} from './support/registry.js';

const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
const DOCKER_CONFIG = 'application/vnd.docker.container.image.v1+json';
const DOCKER_LAYER = 'application/vnd.docker.image.rootfs.diff.tar.gzip';

for (const driver of drivers) {
  describe(`manifests and tags: ${driver.name}`, function () {
    this.timeout(20_000);
    let opened: OpenedStorage;
    let registry: ListeningRegistry;
    let c: Client;

    beforeEach(async () => {
      opened = await driver.open();
      registry = await startRegistry(opened.storage, { maxManifestBytes: 64 * 1024 });
      c = new Client(registry.url);
    });
    afterEach(() => registry.close());

    /** Pushes a module's blobs and returns its manifest bytes, not yet pushed. */
    async function prepared(repo: string, version = '1.0.0'): Promise<Buffer> {
      const a = moduleArtifact({ version });
      for (const b of a.blobs) await c.pushBlob(repo, b);
      return a.manifest;
    }

    it('keeps the exact bytes and serves them by tag and by digest with digest, ETag and type', async () => {
      const bytes = await prepared('ns/one');
      const digest = digestOf(bytes);
      const put = await c.putManifest('ns/one', '1.0.0', bytes);
      expect(put.status).to.equal(201);
      expect(put.headers.get('docker-content-digest')).to.equal(digest);
      expect(put.headers.get('location')).to.equal(`/v2/ns/one/manifests/${digest}`);

      for (const ref of ['1.0.0', digest]) {
        const get = await c.request('GET', `/v2/ns/one/manifests/${ref}`, { headers: { accept: OCI_MANIFEST } });
        expect(get.status).to.equal(200);
        expect(get.headers.get('content-type')).to.equal(OCI_MANIFEST);
        expect(get.headers.get('docker-content-digest')).to.equal(digest);
        expect(get.headers.get('etag')).to.equal(`"${digest}"`);
        expect(Buffer.from(await get.arrayBuffer()).equals(bytes)).to.equal(true);
      }
      const head = await c.request('HEAD', '/v2/ns/one/manifests/1.0.0');
      expect(head.headers.get('content-length')).to.equal(String(bytes.length));
      const asBlob = await c.request('GET', `/v2/ns/one/blobs/${digest}`);
      expect(Buffer.from(await asBlob.arrayBuffer()).equals(bytes)).to.equal(true);
    });

    it('negotiates on Accept: a type the client does not list is not served', async () => {
      await c.putManifest('ns/one', 'latest', await prepared('ns/one'));
      const docker = await c.request('GET', '/v2/ns/one/manifests/latest', { headers: { accept: DOCKER_MANIFEST } });
      expect(docker.status).to.equal(404);
      expect(await errorCode(docker)).to.equal('MANIFEST_UNKNOWN');
      for (const accept of [`${DOCKER_MANIFEST}, ${OCI_MANIFEST};q=0.9`, '*/*']) {
        expect((await c.request('GET', '/v2/ns/one/manifests/latest', { headers: { accept } })).status).to.equal(200);
      }
    });

    it('accepts image indexes and Docker schema 2 manifests, checking what they reference', async () => {
      const config = await c.pushBlob('ns/img', Buffer.from('{"architecture":"amd64","os":"linux"}'));
      const layer = await c.pushBlob('ns/img', Buffer.from('gzip bytes'));
      const docker = Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: DOCKER_MANIFEST,
          config: { mediaType: DOCKER_CONFIG, digest: config, size: 37 },
          layers: [{ mediaType: DOCKER_LAYER, digest: layer, size: 10 }],
        }),
      );
      const pushed = await c.putManifest('ns/img', 'amd64', docker, DOCKER_MANIFEST);
      expect(pushed.status, await pushed.text()).to.equal(201);
      const get = await c.request('GET', '/v2/ns/img/manifests/amd64');
      expect(get.headers.get('content-type')).to.equal(DOCKER_MANIFEST);

      const index = (child: string) =>
        Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: DOCKER_MANIFEST, digest: child, size: docker.length }] }));
      expect((await c.putManifest('ns/img', 'multi', index(digestOf(docker)), OCI_INDEX)).status).to.equal(201);
      const missing = await c.putManifest('ns/img', 'broken', index(digestOf(Buffer.from('nope'))), OCI_INDEX);
      expect(missing.status).to.equal(400);
      expect(await errorCode(missing)).to.equal('MANIFEST_BLOB_UNKNOWN');
    });

    it('refuses manifests that name missing blobs, lie about sizes, are not JSON, or mismatch their digest', async () => {
      const a = moduleArtifact();
      await c.pushBlob('ns/one', a.blobs[0]!);
      const missing = await c.putManifest('ns/one', '1.0.0', a.manifest);
      expect(missing.status).to.equal(400);
      expect(await errorCode(missing)).to.equal('MANIFEST_BLOB_UNKNOWN');
      // Present in another repository is still missing here.
      await c.pushBlob('ns/other', a.blobs[1]!);
      expect(await errorCode(await c.putManifest('ns/one', '1.0.0', a.manifest))).to.equal('MANIFEST_BLOB_UNKNOWN');

      await c.pushBlob('ns/one', a.blobs[1]!);
      const lying = JSON.parse(a.manifest.toString());
      lying.layers[0].size += 1;
      expect(await errorCode(await c.putManifest('ns/one', '1.0.0', Buffer.from(JSON.stringify(lying))))).to.equal('MANIFEST_INVALID');
      expect(await errorCode(await c.putManifest('ns/one', '1.0.0', Buffer.from('{not json')))).to.equal('MANIFEST_INVALID');
      const wrongDigest = await c.putManifest('ns/one', digestOf(Buffer.from('x')), a.manifest);
      expect(await errorCode(wrongDigest)).to.equal('DIGEST_INVALID');
      expect((await c.request('GET', '/v2/ns/one/manifests/1.0.0')).status).to.equal(404);
    });

    it('answers an oversized manifest with 413', async () => {
      const big = Buffer.from(JSON.stringify({ schemaVersion: 2, pad: 'x'.repeat(70 * 1024) }));
      const res = await c.putManifest('ns/one', 'latest', big);
      expect(res.status).to.equal(413);
      expect(await errorCode(res)).to.equal('MANIFEST_INVALID');
    });

    it('keeps exact-version tags immutable and lets moving tags move', async () => {
      const first = await prepared('ns/one', '1.0.0');
      const second = await prepared('ns/one', '1.0.1');
      expect((await c.putManifest('ns/one', '1.0.0', first)).status).to.equal(201);
      expect((await c.putManifest('ns/one', '1.0.0', first)).status).to.equal(201);
      const repush = await c.putManifest('ns/one', '1.0.0', second);
      expect(repush.status).to.equal(403);
      expect(await errorCode(repush)).to.equal('DENIED');
      // `+` build metadata is written `_`, and such a tag is exact too.
      expect((await c.putManifest('ns/one', '1.0.0-rc.1_build.5', first)).status).to.equal(201);
      expect((await c.putManifest('ns/one', '1.0.0-rc.1_build.5', second)).status).to.equal(403);

      for (const tag of ['latest', '1', '1.0']) {
        expect((await c.putManifest('ns/one', tag, first)).status).to.equal(201);
        expect((await c.putManifest('ns/one', tag, second)).status).to.equal(201);
        const now = await c.request('HEAD', `/v2/ns/one/manifests/${tag}`);
        expect(now.headers.get('docker-content-digest')).to.equal(digestOf(second));
      }
    });

    it('lets exactly one of several concurrent pushes of one exact-version tag win', async () => {
      const candidates = await Promise.all(['2.0.0-a', '2.0.0-b', '2.0.0-c', '2.0.0-d'].map((v) => prepared('ns/race', v)));
      const results = await Promise.all(candidates.map((m) => c.putManifest('ns/race', '2.0.0', m)));
      const statuses = results.map((r) => r.status).sort();
      expect(statuses).to.deep.equal([201, 403, 403, 403]);
      const winner = candidates[results.findIndex((r) => r.status === 201)]!;
      const now = await c.request('HEAD', '/v2/ns/race/manifests/2.0.0');
      expect(now.headers.get('docker-content-digest')).to.equal(digestOf(winner));
    });

    it('keeps an exact-version tag single-valued across two replicas pushing at once', async function () {
      if (driver.name.startsWith('s3')) {
        // Across processes this rests on S3's If-None-Match, which AWS S3 honours and s3rver ignores.
        console.log('      (skipped: s3rver does not implement conditional writes)');
        this.skip();
      }
      const replica = await startRegistry(opened.reopen());
      try {
        const clients = [c, new Client(replica.url)];
        const candidates = await Promise.all(['3.0.0-a', '3.0.0-b', '3.0.0-c', '3.0.0-d'].map((v) => prepared('ns/race', v)));
        const results = await Promise.all(candidates.map((m, i) => clients[i % 2]!.putManifest('ns/race', '3.0.0', m)));
        expect(results.map((r) => r.status).sort()).to.deep.equal([201, 403, 403, 403]);
      } finally {
        await replica.close();
      }
    });

    it('lists tags in lexical order with n, last and a Link to the next page', async () => {
      const m = await prepared('ns/one');
      for (const tag of ['b', 'a', '1.0.0', 'latest', 'c']) await c.putManifest('ns/one', tag, m);
      const all = await c.request('GET', '/v2/ns/one/tags/list');
      expect(await all.json()).to.deep.equal({ name: 'ns/one', tags: ['1.0.0', 'a', 'b', 'c', 'latest'] });

      const tagsOf = async (res: Response) => ((await res.json()) as { tags: string[] }).tags;
      const page1 = await c.request('GET', '/v2/ns/one/tags/list?n=2');
      expect(await tagsOf(page1)).to.deep.equal(['1.0.0', 'a']);
      const link = page1.headers.get('link')!;
      expect(link).to.equal('</v2/ns/one/tags/list?n=2&last=a>; rel="next"');
      const page2 = await c.request('GET', link.slice(1, link.indexOf('>')));
      expect(await tagsOf(page2)).to.deep.equal(['b', 'c']);
      const page3 = await c.request('GET', '/v2/ns/one/tags/list?n=2&last=c');
      expect(await tagsOf(page3)).to.deep.equal(['latest']);
      expect(page3.headers.get('link')).to.equal(null);

      const unknown = await c.request('GET', '/v2/ns/nothing/tags/list');
      expect(unknown.status).to.equal(404);
      expect(await errorCode(unknown)).to.equal('NAME_UNKNOWN');
    });

    it('lists the repositories that hold manifests in the catalog, in pages, a deleted one gone', async () => {
      for (const name of ['ns/b', 'ns/a', 'other/deep/c']) await c.putManifest(name, 'latest', await prepared(name));
      await c.pushBlob('ns/blob-only', Buffer.from('no manifest here'));
      const names = async (res: Response) => ((await res.json()) as { repositories: string[] }).repositories;
      expect(await names(await c.request('GET', '/v2/_catalog'))).to.deep.equal(['ns/a', 'ns/b', 'other/deep/c']);
      const page1 = await c.request('GET', '/v2/_catalog?n=2');
      expect(await names(page1)).to.deep.equal(['ns/a', 'ns/b']);
      const link = page1.headers.get('link')!;
      expect(link).to.equal('</v2/_catalog?n=2&last=ns%2Fb>; rel="next"');
      const page2 = await c.request('GET', link.slice(1, link.indexOf('>')));
      expect(await names(page2)).to.deep.equal(['other/deep/c']);
      expect(page2.headers.get('link')).to.equal(null);
      const digest = digestOf(await prepared('ns/a'));
      expect((await c.request('DELETE', `/v2/ns/a/manifests/${digest}`)).status).to.equal(202);
      expect(await names(await c.request('GET', '/v2/_catalog'))).to.deep.equal(['ns/b', 'other/deep/c']);
    });

    it('deletes a tag, or a manifest with every tag pointing to it', async () => {
      const m = await prepared('ns/one');
      const digest = digestOf(m);
      for (const tag of ['1.0.0', 'latest']) await c.putManifest('ns/one', tag, m);
      expect((await c.request('DELETE', '/v2/ns/one/manifests/latest')).status).to.equal(202);
      expect((await c.request('HEAD', '/v2/ns/one/manifests/latest')).status).to.equal(404);
      expect((await c.request('HEAD', `/v2/ns/one/manifests/${digest}`)).status).to.equal(200);

      expect((await c.request('DELETE', `/v2/ns/one/manifests/${digest}`)).status).to.equal(202);
      expect((await c.request('HEAD', '/v2/ns/one/manifests/1.0.0')).status).to.equal(404);
      expect((await c.request('HEAD', `/v2/ns/one/manifests/${digest}`)).status).to.equal(404);
      expect(await (await c.request('GET', '/v2/ns/one/tags/list')).json()).to.deep.equal({ name: 'ns/one', tags: [] });
      expect((await c.request('DELETE', `/v2/ns/one/manifests/${digest}`)).status).to.equal(404);
    });

    it('a manifest deleted while it is pushed under another tag lands before or after, never leaving the tag on nothing', async () => {
      for (let round = 0; round < 10; round++) {
        const m = await prepared('ns/race', `1.0.${round}`);
        await c.putManifest('ns/race', `a${round}`, m);
        const [deleted, pushed] = await Promise.all([c.request('DELETE', `/v2/ns/race/manifests/${digestOf(m)}`), c.putManifest('ns/race', `b${round}`, m)]);
        expect([deleted.status, pushed.status], `round ${round}`).to.deep.equal([202, 201]);
        const listed = ((await (await c.request('GET', '/v2/ns/race/tags/list')).json()) as { tags: string[] }).tags.includes(`b${round}`);
        const served = (await c.request('HEAD', `/v2/ns/race/manifests/b${round}`)).status === 200;
        expect(listed, `round ${round}: b${round} listed ${listed}, served ${served}`).to.equal(served);
      }
    });
  });
}
