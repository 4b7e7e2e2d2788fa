import { expect } from 'chai';
import { openRegistry } from '../src/registry/registry.js';
import type { StorageDriver } from '../src/storage/driver.js';
import { indexDir, tagDir, tagLink } from '../src/storage/layout.js';
import { filesystemDriver } from './support/drivers.js';
import { Client, digestOf, errorCode, moduleArtifact, useRegistry } from './support/registry.js';

const TOK_A = 'sha256:' + 'aa'.repeat(32);
const TOK_B = 'sha256:' + 'bb'.repeat(32);

// Index logic sits above the driver interface, whose S3 side the storage and protocol suites cover.
describe('_reasonplug extension', function () {
  this.timeout(20_000);
  const under = useRegistry(() => filesystemDriver.open());
  let storage: StorageDriver;
  let c: Client;
  beforeEach(() => ({ storage, c } = under));

  const search = async (q: string) => {
    const res = await c.request('GET', `/v2/_reasonplug/search?${q}`);
    expect(res.status).to.equal(200);
    return { body: (await res.json()) as { results: { name: string; versions: { version: string; tags: string[] }[] }[] }, link: res.headers.get('link') };
  };
  const names = (r: { results: { name: string }[] }) => r.results.map((x) => x.name);

  it('is advertised at /v2/_oci/ext/discover', async () => {
    const res = await c.request('GET', '/v2/_oci/ext/discover');
    const body = (await res.json()) as { extensions: { name: string; endpoints: string[] }[] };
    const ours = body.extensions.find((e) => e.name === '_reasonplug')!;
    expect(ours.endpoints).to.deep.equal(['_reasonplug/search', '_reasonplug/resolve']);
  });

  it('searches module annotations by task, kind and tokenizer, newest version first', async () => {
    await c.pushModule('math/adder', ['1.0.0'], { version: '1.0.0', tasks: ['math', 'arith'], tokenizer: TOK_A });
    await c.pushModule('math/adder', ['1.2.0', 'latest'], { version: '1.2.0', tasks: ['math', 'arith'], tokenizer: TOK_A });
    await c.pushModule('code/linter', ['0.1.0'], { version: '0.1.0', tasks: ['code'], kind: 'latent-projector', tokenizer: TOK_B });
    // A plain OCI image in the registry is not a module and never shows up.
    const cfg = await c.pushBlob('other/image', Buffer.from('{}'));
    const image = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: cfg, size: 2 }, layers: [] }));
    expect((await c.putManifest('other/image', 'latest', image)).status).to.equal(201);

    const all = await search('');
    expect(names(all.body)).to.deep.equal(['code/linter', 'math/adder']);
    const adder = all.body.results[1]!;
    expect(adder.versions.map((v) => v.version)).to.deep.equal(['1.2.0', '1.0.0']);
    expect(adder.versions[0]).to.include({ kind: 'logit-reasoner', tokenizer: TOK_A });
    expect(adder.versions[0]!.tags).to.deep.equal(['1.2.0', 'latest']);

    expect(names((await search('task=arith')).body)).to.deep.equal(['math/adder']);
    expect(names((await search('kind=latent-projector')).body)).to.deep.equal(['code/linter']);
    expect(names((await search(`tokenizer=${TOK_B}&task=code`)).body)).to.deep.equal(['code/linter']);
    expect(names((await search('task=math&kind=latent-projector')).body)).to.deep.equal([]);
  });

  it('pages search results by repository with n, last and Link', async () => {
    for (const name of ['a/one', 'b/two', 'c/three']) await c.pushModule(name, ['1.0.0']);
    const first = await search('n=2');
    expect(names(first.body)).to.deep.equal(['a/one', 'b/two']);
    expect(first.link).to.equal('</v2/_reasonplug/search?n=2&last=b%2Ftwo>; rel="next"');
    const next = await search(first.link!.slice(first.link!.indexOf('?') + 1, first.link!.indexOf('>')));
    expect(names(next.body)).to.deep.equal(['c/three']);
    expect(next.link).to.equal(null);
  });

  it('keeps the index right through tag moves and deletes', async () => {
    const v1 = await c.pushModule('math/adder', ['1.0.0', 'latest'], { version: '1.0.0' });
    const v2 = await c.pushModule('math/adder', ['1.1.0'], { version: '1.1.0' });
    expect((await c.putManifest('math/adder', 'latest', moduleArtifact({ version: '1.1.0' }).manifest)).status).to.equal(201);
    let versions = (await search('')).body.results[0]!.versions;
    expect(versions.map((v) => [v.version, v.tags])).to.deep.equal([
      ['1.1.0', ['1.1.0', 'latest']],
      ['1.0.0', ['1.0.0']],
    ]);

    await c.request('DELETE', `/v2/math/adder/manifests/${v2}`);
    versions = (await search('')).body.results[0]!.versions;
    // (latest moves off the version yanked, to the newest left)
    expect(versions.map((v) => [v.version, v.tags])).to.deep.equal([['1.0.0', ['1.0.0', 'latest']]]);

    await c.request('DELETE', '/v2/math/adder/manifests/1.0.0');
    expect((await search('')).body.results).to.deep.equal([]);

    // A version yanked from under a moving tag of its own is no version any more.
    await c.pushModule('math/stable', ['1.0.0'], { version: '1.0.0' });
    const v3 = await c.pushModule('math/stable', ['2.0.0', 'stable'], { version: '2.0.0' });
    expect((await search('')).body.results[0]!.versions.map((v) => v.version)).to.deep.equal(['2.0.0', '1.0.0']);
    await c.request('DELETE', '/v2/math/stable/manifests/2.0.0');
    expect((await c.request('HEAD', '/v2/math/stable/manifests/stable')).headers.get('docker-content-digest')).to.equal(v3);
    expect((await search('')).body.results[0]!.versions.map((v) => v.version)).to.deep.equal(['1.0.0']);
    expect((await c.request('HEAD', `/v2/math/adder/manifests/${v1}`)).status).to.equal(200);
  });

  it('keeps the index right when many tags of one repository are pushed at once', async () => {
    const versions = ['1.0.0', '1.1.0', '1.2.0', '2.0.0', '2.1.0'];
    await Promise.all(versions.map((v) => c.pushModule('math/adder', [v], { version: v })));
    const indexed = (await search('')).body.results[0]!.versions.map((v) => v.version);
    expect(indexed).to.deep.equal([...versions].reverse());
  });

  it('rebuilds lost index documents from the tags', async () => {
    await c.pushModule('math/adder', ['1.0.0', 'latest']);
    await c.pushModule('code/linter', ['0.1.0']);
    await storage.delete(indexDir);
    expect((await search('')).body.results).to.deep.equal([]);
    expect(await openRegistry(storage).index.rebuildAll()).to.equal(2);
    expect(names((await search('')).body)).to.deep.equal(['code/linter', 'math/adder']);
  });

  it('resolves ranges with npm semantics: highest match, latest preferred, prereleases opt-in', async () => {
    const digests: Record<string, string> = {};
    for (const v of ['1.0.0', '1.2.0', '1.2.5', '1.3.0-rc.1', '2.0.0']) {
      digests[v] = await c.pushModule('math/adder', [v], { version: v });
    }
    await c.putManifest('math/adder', 'latest', moduleArtifact({ version: '1.2.5' }).manifest);
    const resolve = async (range: string) => {
      const res = await c.request('GET', `/v2/_reasonplug/resolve?name=math/adder&range=${encodeURIComponent(range)}`);
      return { status: res.status, body: (await res.json()) as { version: string; tag: string; digest: string } };
    };
    expect((await resolve('^1.2')).body).to.deep.equal({ name: 'math/adder', version: '1.2.5', tag: '1.2.5', digest: digests['1.2.5'] });
    expect((await resolve('^1.0.0')).body.version).to.equal('1.2.5'); // latest wins when in range
    expect((await resolve('>=1.3.0-rc.0')).body.version).to.equal('2.0.0');
    expect((await resolve('1.3.0-rc.1')).body.version).to.equal('1.3.0-rc.1');
    expect((await resolve('')).body.version).to.equal('1.2.5');
    expect((await resolve('latest')).body.version).to.equal('1.2.5');
    expect((await resolve('2')).body.version).to.equal('2.0.0');
    const none = await c.request('GET', '/v2/_reasonplug/resolve?name=math/adder&range=^3');
    expect(none.status).to.equal(404);
    expect(await errorCode(none)).to.equal('MANIFEST_UNKNOWN');
    const unknown = await c.request('GET', '/v2/_reasonplug/resolve?name=math/nothing&range=^1');
    expect(await errorCode(unknown)).to.equal('NAME_UNKNOWN');
    const invalid = await c.request('GET', '/v2/_reasonplug/resolve?name=../etc&range=^1');
    expect(await errorCode(invalid)).to.equal('NAME_INVALID');
    expect(digestOf(moduleArtifact({ version: '1.2.5' }).manifest)).to.equal(digests['1.2.5']);

    // one version under two build metadata: npm's one version, so other content under other metadata is refused
    const plain = await c.pushModule('math/builds', ['3.0.0', 'latest', '__proto__'], { version: '3.0.0' });
    const other = moduleArtifact({ version: '3.0.0+b.1' });
    for (const b of other.blobs) await c.pushBlob('math/builds', b);
    const refused = await c.putManifest('math/builds', '3.0.0_b.1', other.manifest);
    expect(refused.status).to.equal(403);
    const body = (await refused.json()) as { errors: { code: string; message: string }[] };
    expect(body.errors[0]).to.deep.include({ code: 'DENIED' });
    expect(body.errors[0]!.message).to.include('version 3.0.0 already exists as tag 3.0.0');
    await c.pushModule('math/builds', ['3.0.1_b.1'], { version: '3.0.1+b.1' });
    // (answered with its build metadata, as search gives the version)
    const built = await c.request('GET', '/v2/_reasonplug/resolve?name=math/builds&range=3.0.1');
    expect(await built.json()).to.deep.include({ version: '3.0.1+b.1', tag: '3.0.1_b.1' });
    const plainLater = moduleArtifact({ version: '3.0.1' });
    for (const b of plainLater.blobs) await c.pushBlob('math/builds', b);
    expect((await c.putManifest('math/builds', '3.0.1', plainLater.manifest)).status).to.equal(403);
    const res = await c.request('GET', `/v2/_reasonplug/resolve?name=math/builds&range=__proto__`);
    expect(await res.json()).to.deep.include({ tag: '3.0.0', digest: plain });
  });

  it('resolves modules only: another artifact tagged with a version beside them is not picked', async () => {
    const module = await c.pushModule('math/mixed', ['1.0.0'], { version: '1.0.0' });
    const cfg = await c.pushBlob('math/mixed', Buffer.from('{}'));
    const image = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: cfg, size: 2 }, layers: [] }));
    expect((await c.putManifest('math/mixed', '9.9.9', image)).status).to.equal(201);
    const res = await c.request('GET', '/v2/_reasonplug/resolve?name=math/mixed&range=*');
    expect(await res.json()).to.deep.include({ version: '1.0.0', digest: module });
    expect((await c.request('GET', '/v2/_reasonplug/resolve?name=math/mixed&range=^9')).status).to.equal(404);
  });

  it('resolves repositories written before build variants were refused: latest, then the plain tag, wins', async () => {
    const plain = await c.pushModule('math/legacy', ['3.0.0'], { version: '3.0.0' });
    const built = await c.pushModule('math/legacy', ['4.0.0'], { version: '3.0.0+b.1' });
    // What an older registry let through: the build variant tagged beside the plain version.
    await storage.put(tagLink('math/legacy', '3.0.0_b.1'), Buffer.from(built));
    await storage.delete(tagDir('math/legacy', '4.0.0'));
    await openRegistry(storage).index.rebuildAll();
    const of = async (range: string) => (await (await c.request('GET', `/v2/_reasonplug/resolve?name=math/legacy&range=${encodeURIComponent(range)}`)).json()) as { tag: string; digest: string };
    expect(await of('^3')).to.deep.include({ tag: '3.0.0', digest: plain });
    expect(await of('')).to.deep.include({ tag: '3.0.0', digest: plain });
    await c.putManifest('math/legacy', 'latest', moduleArtifact({ version: '3.0.0+b.1' }).manifest);
    expect(await of('latest')).to.deep.include({ tag: '3.0.0_b.1', digest: built, version: '3.0.0+b.1' });
    expect(await of('')).to.deep.include({ tag: '3.0.0_b.1', digest: built });
    expect(await of('^3')).to.deep.include({ tag: '3.0.0_b.1', digest: built });
  });
});
