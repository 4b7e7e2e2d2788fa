/**
 * A version deleted (yanked) from a registry that never reuses a version: pushing other content under it is refused
 * by the registry after the upload, and the push says so rather than blame the token; a version yanked from under a
 * moving tag is found by no search.
 */
import { expect } from 'chai';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ModuleManifest } from '../src/modules/manifest.js';
import { reasonerForTask } from '../src/registry/lookup.js';
import { pushModule } from '../src/registry/push.js';
import { repoRoot } from '../../../test/support/paths.js';
import { testDir } from './support/models.js';
import { rejection } from './support/assertions.js';
import { makeRegistryModule, startOurRegistry, type OurRegistry } from './support/registries.js';

describe('pushing a version that was deleted', function () {
  this.timeout(60_000);
  let registry: OurRegistry;
  before(async () => (registry = await startOurRegistry()));
  after(() => registry?.close());

  it('other content is refused as a version published before, not as a token without rights; the same content comes back', async () => {
    const ref = `${registry.host}/acme/yanked:1.0.0`;
    const first = await makeRegistryModule({ name: 'yanked', seed: 1 });
    const published = await pushModule(first, ref);
    const deleted = await fetch(`http://${registry.host}/v2/acme/yanked/manifests/1.0.0`, { method: 'DELETE' });
    expect(deleted.status).to.equal(202);

    const other = await makeRegistryModule({ name: 'yanked', seed: 2 });
    const err = await rejection(pushModule(other, ref));
    expect(err.name).to.equal('RegistryClientError');
    expect(err.message).to.match(/acme\/yanked:1\.0\.0 was refused though its files were uploaded \(.*deleted.*\): .* bump "version"/);
    // A retry finds every file there: both causes are named, the version's first.
    const retry = await rejection(pushModule(other, ref));
    expect(retry.name).to.equal('RegistryAuthError');
    expect(retry.message).to.match(/acme\/yanked:1\.0\.0 was refused \(.*\): the version may have been published before with other content and deleted .*, or the token may not push here/);
    expect((await pushModule(first, ref)).digest).to.equal(published.digest);
  });

  it('a version yanked from under a moving tag is no candidate for --reasoner-task', async () => {
    const reasoner = join(repoRoot, 'examples', 'modules', 'toy-math-reasoner');
    const tokenizer = (JSON.parse(await readFile(join(reasoner, 'reasonplug.json'), 'utf8')) as ModuleManifest).compat.tokenizer;
    const opts = { registry: registry.host, cacheDir: testDir('yank-task-cache') };
    for (const ns of ['kept', 'gone']) await pushModule(reasoner, `${registry.host}/${ns}/toy-math-reasoner:1.0.0`);
    // `stable` on the version about to go, then the version yanked
    const manifest = await fetch(`http://${registry.host}/v2/gone/toy-math-reasoner/manifests/1.0.0`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
    const bytes = Buffer.from(await manifest.arrayBuffer());
    const put = await fetch(`http://${registry.host}/v2/gone/toy-math-reasoner/manifests/stable`, { method: 'PUT', body: bytes, headers: { 'content-type': manifest.headers.get('content-type')! } });
    expect(put.status).to.equal(201);
    expect((await fetch(`http://${registry.host}/v2/gone/toy-math-reasoner/manifests/1.0.0`, { method: 'DELETE' })).status).to.equal(202);
    const found = await reasonerForTask('math', tokenizer, opts);
    expect(found.name).to.equal('kept/toy-math-reasoner');
  });
});
