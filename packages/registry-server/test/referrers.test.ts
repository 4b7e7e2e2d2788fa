/**
 * The OCI 1.1 referrers API on both storage drivers: manifests with a `subject` (signatures, SBOMs, evaluation
 * reports attached to a module version) are listed by `GET /v2/<name>/referrers/<digest>`, filtered by artifact type,
 * until they are deleted, and so are those that clients listed under the referrers tag schema's fallback tag while the
 * registry had no referrers API; garbage collection keeps those of a manifest it keeps.
 */
import { expect } from 'chai';
import { setTimeout as sleep } from 'node:timers/promises';
import { TokenStore } from '../src/auth/tokens.js';
import { collectGarbage } from '../src/registry/garbage.js';
import type { StorageDriver } from '../src/storage/driver.js';
import { manifestsDir } from '../src/storage/layout.js';
import { drivers, filesystemDriver } from './support/drivers.js';
import { Client, digestOf, errorCode, moduleArtifact, OCI_INDEX, OCI_MANIFEST, startRegistry, useRegistry } from './support/registry.js';
import { verifyStorage } from './support/verify.js';

const SIGNATURE = 'application/vnd.example.signature.v1+json';
const SBOM = 'application/spdx+json';
const EMPTY = { mediaType: 'application/vnd.oci.empty.v1+json', digest: digestOf(Buffer.from('{}')), size: 2 };

interface Listed {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
}

/** Pushes, by digest, a manifest of `artifactType` (none: a config of its own type) holding `content`, whose subject is `subject`. */
async function pushReferrer(c: Client, repo: string, subject: { digest: string; size: number }, content: string, artifactType?: string): Promise<{ digest: string; size: number; res: Response }> {
  const layer = Buffer.from(content);
  await c.pushBlob(repo, layer);
  await c.pushBlob(repo, Buffer.from('{}'));
  const config = artifactType ? EMPTY : { ...EMPTY, mediaType: 'application/vnd.example.report.config.v1+json' };
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      ...(artifactType ? { artifactType } : {}),
      config,
      layers: [{ mediaType: 'application/octet-stream', digest: digestOf(layer), size: layer.length }],
      subject: { mediaType: OCI_MANIFEST, ...subject },
      annotations: { 'org.opencontainers.image.created': '2026-12-06T00:00:00Z', note: content },
    }),
  );
  const digest = digestOf(manifest);
  const res = await c.putManifest(repo, digest, manifest);
  return { digest, size: manifest.length, res };
}

/**
 * What a registry build without the referrers API left after these pushes: every manifest, blob and tag, but no
 * referrer links (it wrote none).
 */
async function asOlderBuildLeftIt(storage: StorageDriver, repo: string): Promise<void> {
  await storage.delete(`${manifestsDir(repo)}/referrers`);
}

/**
 * Pushes, by tag `sha256-<hex>`, the image index of `subject`'s referrers that an OCI 1.1 client keeps where a
 * registry answers no referrers API (the spec's referrers tag schema).
 */
async function pushReferrersTag(c: Client, repo: string, subject: string, entries: { digest: string; size: number; artifactType?: string }[]): Promise<void> {
  const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: entries.map((e) => ({ mediaType: OCI_MANIFEST, ...e })) }));
  const res = await c.putManifest(repo, subject.replace(':', '-'), index, OCI_INDEX);
  expect(res.status, await res.text()).to.equal(201);
}

async function referrers(c: Client, repo: string, digest: string, query = ''): Promise<{ res: Response; listed: Listed[] }> {
  const res = await c.request('GET', `/v2/${repo}/referrers/${digest}${query}`);
  const body = res.status === 200 ? ((await res.json()) as { schemaVersion: number; mediaType: string; manifests: Listed[] }) : undefined;
  if (body) expect([body.schemaVersion, body.mediaType]).to.deep.equal([2, OCI_INDEX]);
  return { res, listed: body?.manifests ?? [] };
}

for (const driver of drivers) {
  describe(`referrers API (OCI 1.1): ${driver.name}`, function () {
    this.timeout(60_000);
    const under = useRegistry(() => driver.open());
    let storage: StorageDriver;
    let c: Client;
    beforeEach(() => ({ storage, c } = under));

    it('lists the manifests whose subject a manifest is, filters them by artifact type, and forgets a deleted one', async () => {
      const moduleDigest = await c.pushModule('math/adder', ['1.0.0']);
      const subject = { digest: moduleDigest, size: Number((await c.request('HEAD', `/v2/math/adder/manifests/1.0.0`, { headers: { accept: OCI_MANIFEST } })).headers.get('content-length')) };
      const signature = await pushReferrer(c, 'math/adder', subject, 'signature bytes', SIGNATURE);
      expect(signature.res.status).to.equal(201);
      expect(signature.res.headers.get('oci-subject')).to.equal(moduleDigest);
      const sbom = await pushReferrer(c, 'math/adder', subject, 'sbom bytes', SBOM);
      // No artifactType: listed by its config's media type, as the spec says.
      const report = await pushReferrer(c, 'math/adder', subject, 'evaluation report');

      const all = await referrers(c, 'math/adder', moduleDigest);
      expect(all.res.headers.get('content-type')).to.equal(OCI_INDEX);
      expect(all.res.headers.get('oci-filters-applied')).to.equal(null);
      const expected: Listed[] = [
        { mediaType: OCI_MANIFEST, digest: signature.digest, size: signature.size, artifactType: SIGNATURE, annotations: { 'org.opencontainers.image.created': '2026-12-06T00:00:00Z', note: 'signature bytes' } },
        { mediaType: OCI_MANIFEST, digest: sbom.digest, size: sbom.size, artifactType: SBOM, annotations: { 'org.opencontainers.image.created': '2026-12-06T00:00:00Z', note: 'sbom bytes' } },
        { mediaType: OCI_MANIFEST, digest: report.digest, size: report.size, artifactType: 'application/vnd.example.report.config.v1+json', annotations: { 'org.opencontainers.image.created': '2026-12-06T00:00:00Z', note: 'evaluation report' } },
      ].sort((a, b) => (a.digest < b.digest ? -1 : 1));
      expect(all.listed).to.deep.equal(expected);

      const signatures = await referrers(c, 'math/adder', moduleDigest, `?artifactType=${encodeURIComponent(SIGNATURE)}`);
      expect(signatures.res.headers.get('oci-filters-applied')).to.equal('artifactType');
      expect(signatures.listed.map((d) => d.digest)).to.deep.equal([signature.digest]);

      expect((await c.request('DELETE', `/v2/math/adder/manifests/${sbom.digest}`)).status).to.equal(202);
      expect((await referrers(c, 'math/adder', moduleDigest)).listed.map((d) => d.digest).sort()).to.deep.equal([signature.digest, report.digest].sort());
      expect((await verifyStorage(storage)).problems).to.deep.equal([]);
    });

    it("lists the referrers a referrers tag's index names, as a build without the API left them, filtered by artifact type", async () => {
      const moduleDigest = await c.pushModule('math/adder', ['1.0.0']);
      const subject = { digest: moduleDigest, size: Number((await c.request('HEAD', `/v2/math/adder/manifests/1.0.0`, { headers: { accept: OCI_MANIFEST } })).headers.get('content-length')) };
      const signature = await pushReferrer(c, 'math/adder', subject, 'signature bytes', SIGNATURE);
      const sbom = await pushReferrer(c, 'math/adder', subject, 'sbom bytes', SBOM);
      const gone = await pushReferrer(c, 'math/adder', subject, 'signature deleted since', SIGNATURE);
      const other = await pushReferrer(c, 'math/adder', { digest: `sha256:${'d'.repeat(64)}`, size: 9 }, 'signature of another manifest', SIGNATURE);
      await asOlderBuildLeftIt(storage, 'math/adder');
      // Pushed after the upgrade, with its link, and listed under the tag as well by a client that keeps the tag anyway.
      const report = await pushReferrer(c, 'math/adder', subject, 'evaluation report');
      // A client that found no referrers API listed them under the fallback tag (one twice, and, wrongly, a referrer of
      // another manifest, which is no referrer of this one however it is tagged); one was deleted since.
      const listed = [signature, sbom, gone, other, report, signature];
      await pushReferrersTag(c, 'math/adder', moduleDigest, listed.map((r) => ({ digest: r.digest, size: r.size })));
      expect((await c.request('DELETE', `/v2/math/adder/manifests/${gone.digest}`)).status).to.equal(202);

      const all = await referrers(c, 'math/adder', moduleDigest);
      expect(all.res.headers.get('oci-filters-applied')).to.equal(null);
      const created = { 'org.opencontainers.image.created': '2026-12-06T00:00:00Z' };
      expect(all.listed).to.deep.equal(
        [
          { mediaType: OCI_MANIFEST, digest: signature.digest, size: signature.size, artifactType: SIGNATURE, annotations: { ...created, note: 'signature bytes' } },
          { mediaType: OCI_MANIFEST, digest: sbom.digest, size: sbom.size, artifactType: SBOM, annotations: { ...created, note: 'sbom bytes' } },
          { mediaType: OCI_MANIFEST, digest: report.digest, size: report.size, artifactType: 'application/vnd.example.report.config.v1+json', annotations: { ...created, note: 'evaluation report' } },
        ].sort((a, b) => (a.digest < b.digest ? -1 : 1)),
      );
      const signatures = await referrers(c, 'math/adder', moduleDigest, `?artifactType=${encodeURIComponent(SIGNATURE)}`);
      expect(signatures.res.headers.get('oci-filters-applied')).to.equal('artifactType');
      expect(signatures.listed.map((d) => d.digest)).to.deep.equal([signature.digest]);

      expect((await c.request('DELETE', `/v2/math/adder/manifests/${sbom.digest}`)).status).to.equal(202);
      expect((await referrers(c, 'math/adder', moduleDigest)).listed.map((d) => d.digest).sort()).to.deep.equal([signature.digest, report.digest].sort());
    });

    it('ignores a referrers tag that names no index, and one of another repository', async () => {
      const moduleDigest = await c.pushModule('math/adder', ['1.0.0']);
      const subject = { digest: moduleDigest, size: Number((await c.request('HEAD', `/v2/math/adder/manifests/1.0.0`, { headers: { accept: OCI_MANIFEST } })).headers.get('content-length')) };
      const signature = await pushReferrer(c, 'math/adder', subject, 'signature bytes', SIGNATURE);
      await asOlderBuildLeftIt(storage, 'math/adder');
      await pushReferrersTag(c, 'math/adder', moduleDigest, [signature]);
      // Another repository holding the same signature and the same subject, but a tag that is an image manifest.
      await c.pushModule('math/other', ['1.0.0']);
      await pushReferrer(c, 'math/other', subject, 'signature bytes', SIGNATURE);
      await asOlderBuildLeftIt(storage, 'math/other');
      expect((await c.putManifest('math/other', moduleDigest.replace(':', '-'), moduleArtifact().manifest)).status).to.equal(201);
      expect((await referrers(c, 'math/other', moduleDigest)).listed).to.deep.equal([]);
      expect((await referrers(c, 'math/adder', moduleDigest)).listed.map((d) => d.digest)).to.deep.equal([signature.digest]);
    });

    it('answers an empty index, never 404, for a digest nothing refers to or a repository it does not have; 400 for a bad digest', async () => {
      await c.pushModule('math/adder', ['1.0.0']);
      for (const path of [`/v2/math/adder/referrers/sha256:${'a'.repeat(64)}`, `/v2/no/such/referrers/sha256:${'b'.repeat(64)}`]) {
        const res = await c.request('GET', path);
        expect(res.status, path).to.equal(200);
        expect(((await res.json()) as { manifests: unknown[] }).manifests).to.deep.equal([]);
      }
      const bad = await c.request('GET', '/v2/math/adder/referrers/sha256:nothex');
      expect(bad.status).to.equal(400);
      expect(await errorCode(bad)).to.equal('DIGEST_INVALID');
    });

    it('takes a referrer before its subject exists (as clients push signatures), and refuses a malformed subject', async () => {
      const absent = { digest: `sha256:${'c'.repeat(64)}`, size: 123 };
      const early = await pushReferrer(c, 'math/adder', absent, 'signature of something not pushed yet', SIGNATURE);
      expect(early.res.status).to.equal(201);
      expect((await referrers(c, 'math/adder', absent.digest)).listed.map((d) => d.digest)).to.deep.equal([early.digest]);
      const bad = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: EMPTY, layers: [], subject: { mediaType: OCI_MANIFEST, digest: 'sha256:short', size: 1 } }));
      const res = await c.putManifest('math/adder', digestOf(bad), bad);
      expect(res.status).to.equal(400);
      expect(await errorCode(res)).to.equal('MANIFEST_INVALID');
    });

    it("garbage collection with deleteUntagged keeps a kept manifest's referrers and deletes a deleted one's", async () => {
      const size = async (tag: string) => Number((await c.request('HEAD', `/v2/math/adder/manifests/${tag}`, { headers: { accept: OCI_MANIFEST } })).headers.get('content-length'));
      const kept = await c.pushModule('math/adder', ['2.0.0'], { version: '2.0.0' });
      const keptSignature = await pushReferrer(c, 'math/adder', { digest: kept, size: await size('2.0.0') }, 'signature of 2.0.0', SIGNATURE);
      const dropped = await c.pushModule('math/adder', ['1.0.0'], { version: '1.0.0' });
      const droppedSignature = await pushReferrer(c, 'math/adder', { digest: dropped, size: await size('1.0.0') }, 'signature of 1.0.0', SIGNATURE);
      expect((await c.request('DELETE', `/v2/math/adder/manifests/${dropped}`)).status).to.equal(202);
      await sleep(20);
      const result = await collectGarbage(storage, { deleteUntagged: true, minAgeMs: 0 });
      expect(result.manifests).to.deep.equal([`math/adder@${droppedSignature.digest}`]);
      expect(result.blobs).to.include(droppedSignature.digest).and.to.not.include(keptSignature.digest);
      expect((await referrers(c, 'math/adder', kept)).listed.map((d) => d.digest)).to.deep.equal([keptSignature.digest]);
      expect((await referrers(c, 'math/adder', dropped)).listed).to.deep.equal([]);
      expect((await verifyStorage(storage)).problems).to.deep.equal([]);
    });
  });
}

describe('referrers API: access', function () {
  this.timeout(30_000);

  it('needs pull access to the repository, as its manifests do', async () => {
    const storage = (await filesystemDriver.open()).storage;
    const tokens = new TokenStore(storage);
    const { token } = await tokens.create({ scopes: ['pull:math/*'], user: 'reader' });
    const registry = await startRegistry(storage, { auth: { tokens, anonymousPull: false } });
    try {
      const c = new Client(registry.url);
      const path = `/v2/math/adder/referrers/sha256:${'a'.repeat(64)}`;
      expect((await c.request('GET', path)).status).to.equal(401);
      expect((await c.as(`Bearer ${token}`).request('GET', path)).status).to.equal(200);
      expect((await c.as(`Bearer ${token}`).request('GET', `/v2/other/adder/referrers/sha256:${'a'.repeat(64)}`)).status).to.equal(403);
    } finally {
      await registry.close();
    }
  });
});
