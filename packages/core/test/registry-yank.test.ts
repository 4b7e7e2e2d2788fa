/**
 * A version deleted (yanked) from a registry that never reuses a version: pushing other content under it is refused
 * by the registry after the upload, and the push says so rather than blame the token.
 */
import { expect } from 'chai';
import { pushModule } from '../src/registry/push.js';
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
    expect((await pushModule(first, ref)).digest).to.equal(published.digest);
  });
});
