import { expect } from 'chai';
import { Client, errorCode } from './support/registry.js';
import { registryCli, serveCli } from './support/cli.js';
import { scratch } from './support/tmp.js';

describe('reasonplug-registry CLI', function () {
  this.timeout(30_000);

  it('serves a data directory with no set-up, and reindexes it', async () => {
    const data = await scratch('cli');
    const server = await serveCli('--data', data);
    try {
      const c = new Client(server.url);
      expect((await c.request('GET', '/v2/')).status).to.equal(200);
      await c.pushModule('math/adder', ['1.0.0']);
      expect((await c.request('GET', '/v2/math/adder/tags/list')).status).to.equal(200);
    } finally {
      expect(await server.stop()).to.equal(0);
    }
    const reindexed = await registryCli('reindex', '--data', data);
    expect(reindexed.code, reindexed.stderr).to.equal(0);
    expect(reindexed.stderr).to.match(/reindexed 1 repositories/);
  });

  it('creates, lists and revokes tokens that a server with --auth accepts', async () => {
    const data = await scratch('cli-auth');
    const created = await registryCli('token', 'create', '--data', data, '--scope', 'push:math/*', '--user', 'ci');
    expect(created.code, created.stderr).to.equal(0);
    const token = created.stdout.trim();
    expect(token).to.match(/^rpr_[0-9a-f]{16}_[0-9a-f]{64}$/);
    expect(created.stderr).to.match(/for ci: push:math\/\*/);

    const server = await serveCli('--data', data, '--auth', '--no-anonymous-pull');
    try {
      const c = new Client(server.url);
      expect((await c.request('GET', '/v2/')).status).to.equal(401);
      await c.as(`Bearer ${token}`).pushModule('math/adder', ['1.0.0']);
      expect(await errorCode(await c.request('GET', '/v2/math/adder/manifests/1.0.0'))).to.equal('UNAUTHORIZED');

      const listed = await registryCli('token', 'list', '--data', data);
      const id = token.split('_')[1]!;
      expect(listed.stdout).to.match(new RegExp(`^${id}\\tci\\t.*\\tpush:math/\\*$`, 'm'));
      expect((await registryCli('token', 'revoke', id, '--data', data)).code).to.equal(0);
      expect((await c.as(`Bearer ${token}`).request('GET', '/v2/')).status).to.equal(401);
    } finally {
      await server.stop();
    }
  });

  it('explains its usage on bad input', async () => {
    const bad = await registryCli('token', 'create', '--scope', 'admin:*');
    expect(bad.code).to.equal(1);
    expect(bad.stderr).to.match(/invalid scope "admin:\*"/);
    const unknown = await registryCli('frobnicate');
    expect(unknown.code).to.equal(2);
    expect(unknown.stderr).to.match(/usage:/);
    const age = await registryCli('serve', '--data', await scratch('cli-age'), '--port', '0', '--upload-max-age', '7 days');
    expect(age.code).to.equal(2);
    expect(age.stderr).to.match(/--upload-max-age must be a positive duration such as 90s, 30m, 12h or 7d, or never/);
  });
});
