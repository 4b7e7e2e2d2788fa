/**
 * Concurrent pushes of one exact version with different content (issue 14, defect 6): the losers are told
 * the version exists, as a sequential re-push is, not that their token lacks a scope.
 */
import { expect } from 'chai';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRegistryServer, FilesystemStorage } from '../../registry-server/src/index.js';
import { VersionExistsError } from '../src/registry/errors.js';
import { pushModule } from '../src/registry/push.js';
import { testDir } from './support/models.js';
import { makeRegistryModule } from './support/registries.js';

const PUSHERS = 3;

describe('registry push: concurrent pushes of one version', function () {
  this.timeout(30_000);
  let server: Server;
  let host: string;

  before(async () => {
    const { app } = createRegistryServer({ storage: new FilesystemStorage(testDir('race-registry')) });
    // The real registry behind a barrier: the exact-version manifest PUTs are held until every pusher has
    // sent one, so every pusher has checked the tag (absent) before any of them sets it.
    const held: (() => void)[] = [];
    server = createServer((req, res) => {
      if (req.method === 'PUT' && req.url?.endsWith('/manifests/1.0.0')) {
        held.push(() => app(req, res));
        if (held.length === PUSHERS) for (const release of held) release();
        return;
      }
      app(req, res);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it('lets one win and tells every loser the version exists, with the winner digest', async () => {
    const dirs = await Promise.all(Array.from({ length: PUSHERS }, (_, i) => makeRegistryModule({ name: 'race', version: '1.0.0', seed: 10 + i })));
    const outcomes = await Promise.allSettled(dirs.map((dir) => pushModule(dir, `${host}/acme/race:1.0.0`)));
    const won = outcomes.filter((o) => o.status === 'fulfilled');
    expect(won, 'exactly one push wins').to.have.length(1);
    const winner = (won[0] as PromiseFulfilledResult<{ digest: string }>).value.digest;
    for (const o of outcomes.filter((x): x is PromiseRejectedResult => x.status === 'rejected')) {
      expect(o.reason, String(o.reason)).to.be.instanceOf(VersionExistsError);
      expect((o.reason as VersionExistsError).existing).to.equal(winner);
      expect((o.reason as Error).message).to.match(/acme\/race:1\.0\.0 already exists with digest .*pushed while this push ran/);
    }
  });
});
