/**
 * Interop with CNCF distribution (Debian's `docker-registry`), a plain OCI registry: no `_reasonplug`
 * extension (resolve falls back to tags/list, search to the catalog), and overwritable tags (the client guards versions).
 */
import { expect } from 'chai';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { loadModuleDir } from '../src/modules/module-dir.js';
import { DigestMismatchError, ExtensionUnavailableError, ModuleNotFoundError, VersionExistsError } from '../src/registry/errors.js';
import { resolveModule, searchModules } from '../src/registry/lookup.js';
import { pullModule } from '../src/registry/pull.js';
import { pushModule } from '../src/registry/push.js';
import { testDir } from './support/models.js';
import { distributionMissing, makeRegistryModule, startDistribution, startOurRegistry, type Distribution, type RegistryModuleSpec } from './support/registries.js';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { rejection } from './support/assertions.js';
import { runReasonplug } from './support/cli.js';

const reasonplug = (env: Record<string, string>, ...args: string[]) => runReasonplug(args, { CI: '1', ...env });

describe('registry client with CNCF distribution (docker-registry)', function () {
  this.timeout(60_000);
  let dist: Distribution | undefined;

  before(async function () {
    const missing = distributionMissing();
    if (missing) {
      console.log(`      skipping the CNCF distribution interop tests: ${missing}`);
      this.skip();
    }
    dist = await startDistribution();
  });
  after(() => dist?.close());

  it('CLI: packs, pushes and pulls a module', async () => {
    const host = dist!.host;
    const dir = await makeRegistryModule({ name: 'cli-math', files: { 'weights.bin': 2 << 20 } });
    const cache = testDir('cli-registry-cache');
    const env = { REASONPLUG_CACHE: cache };

    const [pack, push] = await Promise.all([reasonplug(env, 'pack', dir), reasonplug(env, 'push', dir, `${host}/acme/cli-math:1.0.0`)]);
    expect(pack.code, pack.stderr).to.equal(0);
    expect(JSON.parse(pack.stdout)).to.deep.include({ artifactType: 'application/vnd.reasonplug.module.v1+json' });
    const digest = /manifest (sha256:[0-9a-f]{64})/.exec(pack.stderr)?.[1];
    expect(push.code, push.stderr).to.equal(0);
    expect(push.stdout.trim()).to.equal(`${host}/acme/cli-math@${digest}`);
    expect(push.stderr).to.match(/pushed .*acme\/cli-math 1\.0\.0 \(tags 1\.0\.0, latest;/);

    const pull = await reasonplug({ ...env, REASONPLUG_REGISTRY: host }, 'pull', 'acme/cli-math@^1');
    expect(pull.code, pull.stderr).to.equal(0);
    const loaded = await loadModuleDir(pull.stdout.trim());
    expect(await readFile(loaded.files['weights_bin']!)).to.deep.equal(await readFile(join(dir, 'weights.bin')));
    expect(pull.stderr).to.include(`pulled ${host}/acme/cli-math@${digest} (version 1.0.0)`);
  });

  it('resolves ranges from tags/list, preferring latest when it satisfies the range (as npm does)', async () => {
    const host = dist!.host;
    const digests: Record<string, string> = {};
    // 1.1.0 last, told to take latest although 2.0.0 is higher (left to itself, push keeps latest on 2.0.0).
    for (const [version, seed] of [['1.0.0', 1], ['2.0.0', 2], ['1.1.0', 3]] as const) {
      digests[version] = (await pushModule(await makeRegistryModule({ name: 'calc', version, seed }), `${host}/acme/calc:${version}`, version === '1.1.0' ? { latest: true } : {})).digest;
    }
    const resolved = async (range: string) => (await resolveModule(`${host}/acme/calc@${range}`)).version;
    expect(await resolved('^1')).to.equal('1.1.0');
    expect(await resolved('*')).to.equal('1.1.0');
    expect(await resolved('^2')).to.equal('2.0.0');
    expect(await resolved('>=1.0.0 <1.1.0')).to.equal('1.0.0');
    expect((await resolveModule(`${host}/acme/calc@^2`)).digest).to.equal(digests['2.0.0']);
    const missing = await rejection(resolveModule(`${host}/acme/calc@^3`));
    expect(missing).to.be.instanceOf(ModuleNotFoundError);
    expect(missing.message).to.match(/no version of acme\/calc matching "\^3" \(it has .*1\.0\.0.*\)/);

    const pulled = await pullModule(`${host}/acme/calc@^2`, { cacheDir: testDir('calc-cache') });
    expect(pulled).to.deep.include({ version: '2.0.0', digest: digests['2.0.0'] });
    await loadModuleDir(pulled.dir);
  });

  it('guards exact versions itself: overwriting needs --force, which distribution then allows', async () => {
    const host = dist!.host;
    const first = await pushModule(await makeRegistryModule({ name: 'mutable', seed: 1 }), `${host}/acme/mutable:1.0.0`);
    const other = await makeRegistryModule({ name: 'mutable', seed: 2 });
    const err = await rejection(pushModule(other, `${host}/acme/mutable:1.0.0`));
    expect(err).to.be.instanceOf(VersionExistsError);
    expect(err.message).to.include(`${host}/acme/mutable:1.0.0 already exists with digest ${first.digest}`);
    const forced = await pushModule(other, `${host}/acme/mutable:1.0.0`, { force: true });
    expect((await resolveModule(`${host}/acme/mutable:1.0.0`)).digest).to.equal(forced.digest);
  });

  it('refuses corrupt blobs it serves', async () => {
    const host = dist!.host;
    const dir = await makeRegistryModule({ name: 'decayed', files: { 'weights.bin': 1 << 20 } });
    await pushModule(dir, `${host}/acme/decayed`);
    const hex = (await loadModuleDir(dir, { verify: false })).manifest.files['weights_bin']!.sha256;
    const stored = join(dist!.root, 'docker', 'registry', 'v2', 'blobs', 'sha256', hex.slice(0, 2), hex, 'data');
    const bytes = await readFile(stored);
    bytes[0]! ^= 0xff;
    await writeFile(stored, bytes);
    const err = await rejection(pullModule(`${host}/acme/decayed:1.0.0`, { cacheDir: testDir('decayed-cache') }));
    expect(err).to.be.instanceOf(DigestMismatchError);
  });

  it("searches through the catalog, finding what reasonplug-registry's own search finds for the same pushes", async () => {
    const ours = await startOurRegistry();
    try {
      // (each push tags its version and latest)
      const pushes: [string, RegistryModuleSpec][] = [
        ['search/adder', { name: 'adder', version: '1.0.0', tasks: ['math'], seed: 11 }],
        ['search/adder', { name: 'adder', version: '1.2.0', tasks: ['math', 'arithmetic'], seed: 12 }],
        ['search/cipher', { name: 'cipher', version: '0.3.0', tasks: ['cipher'], seed: 13 }],
        ['search/base', { name: 'base', version: '2.0.0', tasks: ['math'], seed: 14 }],
      ];
      for (const host of [dist!.host, ours.host]) {
        for (const [repo, spec] of pushes) await pushModule(await makeRegistryModule(spec), `${host}/${repo}:${spec.version}`);
      }
      for (const query of [{}, { task: 'math' }, { task: 'cipher' }, { kind: 'backbone', task: 'arithmetic' }, { kind: 'logit-reasoner' }, { task: 'none' }]) {
        const byCatalog = (await searchModules(query, { registry: dist!.host })).filter((h) => h.name.startsWith('search/'));
        const byExtension = await searchModules(query, { registry: ours.host });
        expect(byCatalog, JSON.stringify(query)).to.deep.equal(byExtension);
      }
      expect((await searchModules({ task: 'math' }, { registry: dist!.host })).filter((h) => h.name.startsWith('search/')).map((h) => [h.name, h.versions.map((v) => v.version)])).to.deep.equal([
        ['search/adder', ['1.2.0', '1.0.0']],
        ['search/base', ['2.0.0']],
      ]);
    } finally {
      await ours.close();
    }
  });

  it('says so where a registry has neither module search nor a catalog', async () => {
    const bare = createServer((req, res) => res.writeHead(req.url === '/v2/' ? 200 : 404, { 'content-type': 'application/json' }).end('{}'));
    await new Promise<void>((resolve) => bare.listen(0, '127.0.0.1', resolve));
    try {
      const err = await rejection(searchModules({ task: 'math' }, { registry: `127.0.0.1:${(bare.address() as AddressInfo).port}` }));
      expect(err).to.be.instanceOf(ExtensionUnavailableError);
      expect(err.message).to.match(/offers no module search \(no _reasonplug extension\) and no catalog \(\/v2\/_catalog\).*resolve and pull work on any OCI registry/);
    } finally {
      await new Promise((resolve) => bare.close(resolve));
    }
  });
});
