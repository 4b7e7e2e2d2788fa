import { expect } from 'chai';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { createRegistryServer, FilesystemStorage } from '../src/index.js';
import { Client, errorCode } from './support/registry.js';
import { registryCli, serveCli } from './support/cli.js';
import { BUCKET, s3Endpoint } from './support/drivers.js';
import { scratch } from './support/tmp.js';

describe('reasonplug-registry CLI', function () {
  // (each test runs the CLI from sources a few times, a second or more each: 5-6 s on CI, past 10 s when it is loaded)
  this.timeout(60_000);

  it('prints its version (--version, -v, version) and its usage (--help, help)', async () => {
    const { version } = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
    for (const args of [['--version'], ['-v'], ['version']]) {
      const run = await registryCli(...args);
      expect([run.code, run.stdout], args.join(' ')).to.deep.equal([0, `${version}\n`]);
    }
    for (const args of [['--help'], ['help']]) {
      const run = await registryCli(...args);
      expect(run.code, args.join(' ')).to.equal(0);
      expect(run.stdout, args.join(' ')).to.match(/^usage:\n {2}reasonplug-registry serve/);
    }
  });

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
      const again = await registryCli('token', 'revoke', id, '--data', data);
      expect(again.code).to.equal(1);
      expect(again.stderr).to.match(new RegExp(`no token ${id} \\(token list shows the ids\\)\n$`)); // no usage text: the command was right
      expect((await c.as(`Bearer ${token}`).request('GET', '/v2/')).status).to.equal(401);
    } finally {
      await server.stop();
    }
  });

  it('on SIGTERM says so, lets a request in flight finish, and says when it is done', async () => {
    const server = await serveCli('--data', await scratch('cli-drain'));
    const c = new Client(server.url);
    const location = (await c.request('POST', '/v2/acme/drain/blobs/uploads/')).headers.get('location')!;
    let sent = 0;
    const body = (async function* () {
      for (; sent < 6; sent++) {
        if (sent > 0) await new Promise((resolve) => setTimeout(resolve, 250));
        yield Buffer.alloc(1000, 'x');
      }
    })();
    const patched = c.request('PATCH', location, { body, headers: { 'content-type': 'application/octet-stream' } });
    while (sent < 2) await new Promise((resolve) => setTimeout(resolve, 10)); // the request is under way
    const stopped = server.stop();
    expect((await patched).status).to.equal(202);
    expect(await stopped).to.equal(0);
    const lines = server.log.filter((l) => l.msg !== 'maintenance' && l.method !== 'POST').map((l) => [l.level, l.msg, l.method ?? l.signal, l.status ?? l.requests]);
    expect(lines.slice(-3)).to.deep.equal([
      [30, 'SIGTERM: draining 1 requests', 'SIGTERM', 1],
      [30, 'request', 'PATCH', 202],
      [30, 'shutdown complete', undefined, undefined],
    ]);
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

  it('refuses bad flags and stray arguments before it logs, listens or touches storage', async function () {
    // 18 processes one after another, about a second each from sources: 13-20 s on CI, past 30 s when it is loaded
    this.timeout(120_000);
    const data = await scratch('cli-flags');
    const file = `${data}/not-a-dir`;
    await writeFile(file, 'x');
    const cases: [string[], RegExp][] = [
      [['serve', '--port', '99999'], /--port must be an integer from 0 to 65535/],
      [['serve', '--max-manifest-bytes', '0'], /--max-manifest-bytes must be an integer from 1 to/],
      [['serve', '--log-level', 'loud'], /--log-level must be one of fatal, error, warn, info, debug, trace, silent/],
      [['serve', 'extra'], /serve takes no arguments \(also got "extra"\)/],
      [['reindex', 'now'], /reindex takes no arguments/],
      [['token', 'list', 'all'], /token list takes no arguments/],
      [['token', 'revoke', 'a', 'b'], /token revoke takes one ID \(also got "b"\)/],
      [['serve', '--data', file], /--data .*not-a-dir is not a directory/],
      [['token', 'list', '--data', file], /is not a directory/],
      [['serve', '--s3-bucket', ''], /--s3-bucket must name a bucket/],
      [['serve', '--no-anonymous-pull'], /--no-anonymous-pull needs --auth/],
      [['gc', '--data', `${data}/missing`], /--data .*missing does not exist/],
      [['reindex', '--data', `${data}/missing`], /does not exist/],
      [['token', 'revoke', 'abc', '--data', `${data}/missing`], /does not exist/],
      [['serve', '--s3-bucket', 'b', '--s3-endpoint', 'localhost:9000'], /--s3-endpoint must be an http:\/\/ or https:\/\/ URL/],
      // An unset $HOST must not open the registry on every interface.
      [['serve', '--host', ''], /--host must name an address \(0\.0\.0\.0 or :: to listen on every interface\)/],
      [['serve', '--host', ' '], /--host must name an address/],
      [['gc', '--min-age', 'never'], /--min-age must be a duration such as 30m or 1h, or 0/],
    ];
    for (const [args, message] of cases) {
      const run = await registryCli(...args, ...(args.includes('--data') ? [] : ['--data', data]));
      expect(run.code, args.join(' ')).to.equal(2);
      expect(run.stderr, args.join(' ')).to.match(message);
      expect(run.stdout, args.join(' ')).to.equal(''); // nothing logged: refused before the server was made
    }
    expect(await readdir(data)).to.deep.equal(['not-a-dir']);
    expect(() => createRegistryServer({ storage: new FilesystemStorage(data), maxManifestBytes: -1 })).to.throw(RangeError, /maxManifestBytes must be a positive integer/);
    expect(() => createRegistryServer({ storage: new FilesystemStorage(data), uploadMaxAgeMs: 0 })).to.throw(RangeError, /uploadMaxAgeMs must be a positive/);
  });

  it('refuses to serve from a bucket that does not exist, naming it, before it logs or listens', async () => {
    const endpoint = await s3Endpoint();
    const saved = { ...process.env };
    Object.assign(process.env, { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER', AWS_REQUEST_CHECKSUM_CALCULATION: 'when_required' });
    try {
      const run = await registryCli('serve', '--port', '0', '--auth', '--s3-bucket', 'no-such-bucket', '--s3-endpoint', endpoint, '--s3-path-style');
      expect(run.code, run.stderr).to.equal(1);
      expect(run.stderr).to.equal(`reasonplug-registry: cannot serve from --s3-bucket no-such-bucket: no bucket named no-such-bucket at ${endpoint} (create it first)\n`);
      expect(run.stdout).to.equal('');
      // The bucket that exists is served (an empty registry passes the check) and is ready.
      const server = await serveCli('--s3-bucket', BUCKET, '--s3-prefix', `cli-${Date.now()}`, '--s3-endpoint', endpoint, '--s3-path-style');
      try {
        expect((await fetch(`${server.url}/readyz`)).status).to.equal(200);
      } finally {
        expect(await server.stop()).to.equal(0);
      }
    } finally {
      process.env = saved;
    }
  });
});
