import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Engine } from '../src/engine.js';
import { loadModuleDir, ModuleIntegrityError } from '../src/modules/module-dir.js';
import { packModule, MediaTypes } from '../src/registry/artifact.js';
import { InvalidReferenceError, ModuleNotFoundError, NotCachedError, VersionExistsError } from '../src/registry/errors.js';
import { resolveModule, searchModules } from '../src/registry/lookup.js';
import { pullModule } from '../src/registry/pull.js';
import { pushModule } from '../src/registry/push.js';
import { resolveModelPath } from '../src/registry/resolve-model.js';
import { cacheDir as preparedCache, testDir } from './support/models.js';
import { makeModule } from './support/modules.js';
import { makeRegistryModule, startOurRegistry, type OurRegistry } from './support/registries.js';
import { rejection } from './support/assertions.js';
import { runReasonplug } from './support/cli.js';
import { storiesModule } from './support/modules.js';
import { tokenizerFingerprintOfDir } from '../src/tokenizer/fingerprint.js';
import { models } from '../../../test/support/paths.js';

const sha256 = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

describe('registry pack', () => {
  it('builds the OCI artifact of a module: config = reasonplug.json bytes, one titled layer per file, annotations', async () => {
    const dir = await makeRegistryModule({ name: 'packed', version: '1.2.3+build.4', tasks: ['math', 'tool-use'], files: { 'weights/extra.bin': 1000 } });
    const packed = await packModule(dir);
    const m = packed.manifest;
    expect(m.mediaType).to.equal('application/vnd.oci.image.manifest.v1+json');
    expect(m.artifactType).to.equal('application/vnd.reasonplug.module.v1+json');
    const config = await readFile(join(dir, 'reasonplug.json'));
    expect(m.config).to.deep.equal({ mediaType: 'application/vnd.reasonplug.module.config.v1+json', digest: sha256(config), size: config.length });
    expect(m.layers.map((l) => l.annotations?.['org.opencontainers.image.title'])).to.deep.equal(['model.onnx', 'weights/extra.bin']);
    expect(m.layers[1]).to.deep.include({ mediaType: MediaTypes.layer, digest: sha256(await readFile(join(dir, 'weights/extra.bin'))), size: 1000 });
    expect(m.annotations).to.include({
      'dev.reasonplug.kind': 'backbone',
      'dev.reasonplug.tasks': 'math,tool-use',
      'dev.reasonplug.tokenizer': `sha256:${'ab'.repeat(32)}`,
      'org.opencontainers.image.version': '1.2.3+build.4',
      'org.opencontainers.image.licenses': 'MIT',
    });
    expect(packed.digest).to.equal(sha256(packed.bytes));
    expect((await packModule(dir)).digest, 'packing is deterministic').to.equal(packed.digest);
  });

  it('leaves the licenses annotation (an SPDX expression) out for a module whose license is unknown', async () => {
    const dir = await makeRegistryModule({ name: 'unlicensed' });
    const manifest = JSON.parse(await readFile(join(dir, 'reasonplug.json'), 'utf8')) as { license: string };
    await writeFile(join(dir, 'reasonplug.json'), JSON.stringify({ ...manifest, license: 'unknown' }));
    expect((await packModule(dir)).manifest.annotations).to.not.have.property('org.opencontainers.image.licenses');
  });

  it('refuses a module whose files do not match its manifest', async () => {
    const dir = await makeRegistryModule({ name: 'tampered' });
    await writeFile(join(dir, 'model.onnx'), 'changed');
    const err = await rejection(packModule(dir));
    expect(err).to.be.instanceOf(ModuleIntegrityError);
    expect(err.message).to.match(/model\.onnx.*manifest says/);
  });
});

describe('registry push and pull (reasonplug-registry)', function () {
  this.timeout(60_000);
  let registry: OurRegistry;
  let cache: string;
  let v1: string;
  let v1Digest: string;

  before(async () => {
    registry = await startOurRegistry();
    cache = testDir('pull-cache');
    v1 = await makeRegistryModule({ name: 'math', version: '1.0.0', files: { 'weights.bin': 3 << 20 } });
  });
  after(() => registry?.close());

  it('pushes a module under its version and latest, and pushing it again uploads nothing', async () => {
    const first = await pushModule(v1, `${registry.host}/acme/math:1.0.0`);
    expect(first).to.deep.include({ repository: 'acme/math', version: '1.0.0', tags: ['1.0.0', 'latest'], skipped: 0 });
    expect(first.uploaded).to.be.greaterThan(3 << 20);
    v1Digest = first.digest;
    const again = await pushModule(v1, 'acme/math', { registry: registry.host });
    expect(again).to.deep.include({ digest: v1Digest, uploaded: 0, skipped: 3 });
  });

  it('moves latest to the newest release only, unless told', async () => {
    const repo = `${registry.host}/acme/lines`;
    const version = (v: string) => makeRegistryModule({ name: 'lines', version: v, tasks: ['versioning'], seed: Number(v.replace(/\D/g, '')) });
    const latest = async () => (await resolveModule(`${repo}:latest`)).version;
    expect((await pushModule(await version('1.0.0'), repo)).tags).to.deep.equal(['1.0.0', 'latest']);
    expect((await pushModule(await version('2.0.0'), repo)).tags).to.deep.equal(['2.0.0', 'latest']);
    // a fix to the old line, the old version pushed again, a prerelease: latest stays on 2.0.0
    expect((await pushModule(await version('1.0.1'), repo)).tags).to.deep.equal(['1.0.1']);
    expect((await pushModule(await version('1.0.0'), repo)).tags).to.deep.equal(['1.0.0']);
    expect((await pushModule(await version('3.0.0-rc.1'), repo)).tags).to.deep.equal(['3.0.0-rc.1']);
    expect(await latest()).to.equal('2.0.0');
    expect((await pushModule(await version('2.0.1'), repo, { latest: false })).tags).to.deep.equal(['2.0.1']);
    expect(await latest()).to.equal('2.0.0');
    expect((await pushModule(await version('1.0.1'), repo, { latest: true })).tags).to.deep.equal(['1.0.1', 'latest']);
    expect(await latest()).to.equal('1.0.1');
    // a repository of prereleases only: the newest of them
    const pre = `${registry.host}/acme/lines-pre`;
    const preVersion = (v: string) => makeRegistryModule({ name: 'lines-pre', version: v, tasks: ['versioning'], seed: 7 });
    expect((await pushModule(await preVersion('1.0.0-rc.2'), pre)).tags).to.deep.equal(['1.0.0-rc.2', 'latest']);
    expect((await pushModule(await preVersion('1.0.0-rc.1'), pre)).tags).to.deep.equal(['1.0.0-rc.1']);
    expect((await pushModule(await preVersion('1.0.0'), pre)).tags).to.deep.equal(['1.0.0', 'latest']);
  });

  it('refuses to push under another version or name than the module has', async () => {
    const version = await rejection(pushModule(v1, `${registry.host}/acme/math:2.0.0`));
    expect(version).to.be.instanceOf(InvalidReferenceError);
    expect(version.message).to.match(/:2\.0\.0 is not the module's version 1\.0\.0.*push to .*acme\/math:1\.0\.0/);
    const name = await rejection(pushModule(v1, `${registry.host}/acme/other`));
    expect(name.message).to.match(/last component must be the module name \(e\.g\. acme\/math\)/);
  });

  it('refuses to replace a published version with other content, even with --force on an immutable registry', async () => {
    const other = await makeRegistryModule({ name: 'math', version: '1.0.0', seed: 2 });
    const plain = await rejection(pushModule(other, `${registry.host}/acme/math:1.0.0`));
    expect(plain).to.be.instanceOf(VersionExistsError);
    expect(plain.message).to.include(`${registry.host}/acme/math:1.0.0 already exists with digest ${v1Digest}`);
    expect(plain.message).to.match(/bump "version".*--force/);
    const forced = await rejection(pushModule(other, `${registry.host}/acme/math:1.0.0`, { force: true }));
    expect(forced).to.be.instanceOf(VersionExistsError);
    expect(forced.message).to.match(/the registry refused to replace it \(tag 1\.0\.0 is an exact version and already points to another manifest\)$/);
    expect(forced.message).to.not.match(/token|scope/); // no credentials at fault: the version exists
    expect((await resolveModule(`${registry.host}/acme/math:1.0.0`)).digest).to.equal(v1Digest);
    // the same version under build metadata is that version: refused before a byte is uploaded, a prerelease suggested
    const variant = await makeRegistryModule({ name: 'math', version: '1.0.0+q4', seed: 3, files: { 'weights.bin': 200_000 } });
    const uploads: string[] = [];
    const built = await rejection(pushModule(variant, `${registry.host}/acme/math:1.0.0_q4`, { onProgress: (p) => uploads.push(p.file) }));
    expect(built).to.be.instanceOf(VersionExistsError);
    expect(built.message).to.include(`${registry.host}/acme/math:1.0.0 already holds version 1.0.0 with other content`).and.include('a prerelease such as 1.0.0-q4');
    expect(uploads).to.deep.equal([]);
  });

  it('pulls a range into a verified module directory of hard-linked blobs, and records refs', async () => {
    const pulled = await pullModule(`${registry.host}/acme/math@^1`, { cacheDir: cache });
    expect(pulled).to.deep.include({ version: '1.0.0', digest: v1Digest, cached: false });
    const hex = v1Digest.slice(7);
    expect(pulled.dir).to.equal(join(cache, 'modules', registry.host.replace(':', '_'), 'acme', 'math', `sha256-${hex}`));
    const loaded = await loadModuleDir(pulled.dir);
    expect(await readFile(loaded.files['weights_bin']!)).to.deep.equal(await readFile(join(v1, 'weights.bin')));
    expect(await readFile(join(pulled.dir, 'reasonplug.json'))).to.deep.equal(await readFile(join(v1, 'reasonplug.json')));
    const blob = join(cache, 'blobs', 'sha256', loaded.manifest.files['weights_bin']!.sha256);
    expect((await stat(blob)).ino, 'hard link to the blob').to.equal((await stat(loaded.files['weights_bin']!)).ino);
    expect((await readFile(join(cache, 'blobs', 'sha256', hex))).length).to.be.greaterThan(0);
    const refs = join(cache, 'refs', registry.host.replace(':', '_'), 'acme', 'math');
    expect((await readdir(refs)).sort()).to.deep.equal(['1.0.0']);
    expect((await readFile(join(refs, '1.0.0'), 'utf8')).trim()).to.equal(v1Digest);
    expect((await readdir(join(cache, 'blobs', 'sha256'))).filter((n) => n.includes('.'))).to.deep.equal([]);

    const again = await pullModule(`${registry.host}/acme/math:latest`, { cacheDir: cache });
    expect(again).to.deep.include({ dir: pulled.dir, cached: true });
    expect((await readdir(refs)).sort()).to.deep.equal(['1.0.0', 'latest']);
  });

  it('moves latest on a new version; ranges resolve through the registry extension', async () => {
    const v11 = await makeRegistryModule({ name: 'math', version: '1.1.0', seed: 3, files: { 'weights.bin': 3 << 20 } });
    const pushed = await pushModule(v11, `${registry.host}/acme/math:1.1.0`);
    expect(await resolveModule(`${registry.host}/acme/math@^1`)).to.deep.include({ version: '1.1.0', tag: '1.1.0', digest: pushed.digest });
    expect(await resolveModule(`${registry.host}/acme/math:latest`)).to.deep.include({ version: '1.1.0', digest: pushed.digest });
    expect(await resolveModule(`${registry.host}/acme/math@~1.0`)).to.deep.include({ version: '1.0.0', digest: v1Digest });
    const missing = await rejection(resolveModule(`${registry.host}/acme/math@^2`));
    expect(missing).to.be.instanceOf(ModuleNotFoundError);
    expect(missing.message).to.match(/no version of acme\/math matching "\^2"/);
    const pulled = await pullModule(`${registry.host}/acme/math@^1`, { cacheDir: cache });
    expect(pulled).to.deep.include({ version: '1.1.0', cached: false });
  });

  it('searches by task and kind', async () => {
    await pushModule(await makeRegistryModule({ name: 'poet', tasks: ['poetry'], kind: 'backbone' }), `${registry.host}/acme/poet`);
    const math = await searchModules({ task: 'math' }, { registry: registry.host });
    expect(math.map((h) => h.name)).to.deep.equal(['acme/math']);
    expect(math[0]!.versions.map((v) => v.version)).to.deep.equal(['1.1.0', '1.0.0']);
    expect((await searchModules({ task: 'poetry', kind: 'backbone' }, { registry: registry.host })).map((h) => h.name)).to.deep.equal(['acme/poet']);
    expect(await searchModules({ task: 'cooking' }, { registry: registry.host })).to.deep.equal([]);
  });

  it("takes the registry as its root's URL, from --registry or REASONPLUG_REGISTRY alike, in the CLI and the library", async () => {
    await pushModule(await makeRegistryModule({ name: 'url-named', tasks: ['by-url'] }), `${registry.host}/acme/url-named`);
    const url = `http://${registry.host}/`;
    const names = (stdout: string) => (JSON.parse(stdout) as { name: string }[]).map((h) => h.name);
    const env = { REASONPLUG_CACHE: testDir('search-url-cache') };
    for (const [args, extra] of [[['--registry', url], {}], [[], { REASONPLUG_REGISTRY: url }]] as const) {
      const found = await runReasonplug(['search', '--task', 'by-url', '--json', ...args], { ...env, ...extra });
      expect(found.code, found.stderr).to.equal(0);
      expect(names(found.stdout)).to.deep.equal(['acme/url-named']);
    }
    expect((await resolveModule('acme/url-named', { registry: url, cacheDir: cache })).registry).to.equal(registry.host);
  });

  it('reasonplug search --for MODEL finds the modules that compose with that model (its tokenizer), a GGUF file included', async () => {
    const fingerprint = (await tokenizerFingerprintOfDir(await storiesModule()))!;
    await pushModule(await makeRegistryModule({ name: 'story-helper', tasks: ['math'], tokenizer: fingerprint }), `${registry.host}/acme/story-helper`);
    const env = { REASONPLUG_CACHE: testDir('search-for-cache') };
    const found = await runReasonplug(['search', '--task', 'math', '--for', models.stories260K, '--registry', registry.host, '--json'], env);
    expect(found.code, found.stderr).to.equal(0);
    expect((JSON.parse(found.stdout) as { name: string; versions: { tokenizer: string }[] }[]).map((h) => [h.name, h.versions[0]!.tokenizer])).to.deep.equal([['acme/story-helper', fingerprint]]);
    // (acme/math, for another tokenizer, is left out; without --for both are found)
    const both = await runReasonplug(['search', '--task', 'math', '--registry', registry.host, '--json'], env);
    expect((JSON.parse(both.stdout) as { name: string }[]).map((h) => h.name)).to.deep.equal(['acme/math', 'acme/story-helper']);
    const conflict = await runReasonplug(['search', '--for', models.stories260K, '--tokenizer', fingerprint, '--registry', registry.host], env);
    expect(conflict.code).to.not.equal(0);
    expect(conflict.stderr).to.match(/--for .* cannot be used with option '--tokenizer/);
  });

  it('offline, reads the cache only: ranges, tags and digests it holds, and a clear error for the rest', async () => {
    const offline = { cacheDir: cache, offline: true };
    expect((await pullModule(`${registry.host}/acme/math@~1.0`, offline)).digest).to.equal(v1Digest);
    expect((await pullModule(`${registry.host}/acme/math@^1`, offline)).version).to.equal('1.1.0');
    expect((await pullModule(`${registry.host}/acme/math@${v1Digest}`, offline)).version).to.equal('1.0.0');
    expect((await resolveModule(`${registry.host}/acme/math@^1`, offline)).version).to.equal('1.1.0');
    const err = await rejection(pullModule(`${registry.host}/acme/poet:latest`, offline));
    expect(err).to.be.instanceOf(NotCachedError);
    expect(err.message).to.include(`${registry.host}/acme/poet:latest is not in the cache at ${cache}`);
    expect(err.message).to.match(/REASONPLUG_OFFLINE=1.*pull it once while online/);
  });

  it('needs no network for a digest it has (runs last: it stops the registry)', async () => {
    const dir = await makeRegistryModule({ name: 'pinned' });
    const pushed = await pushModule(dir, `${registry.host}/acme/pinned`);
    const first = await pullModule(`${registry.host}/acme/pinned@${pushed.digest}`, { cacheDir: cache });
    await registry.close();
    const again = await pullModule(`${registry.host}/acme/pinned@${pushed.digest}`, { cacheDir: cache });
    expect(again).to.deep.include({ dir: first.dir, cached: true });
  });
});

describe('registry references wherever a model path is taken', function () {
  this.timeout(60_000);
  let registry: OurRegistry;
  before(async () => (registry = await startOurRegistry()));
  after(() => registry?.close());

  it('leaves local paths alone and turns references into pulled module directories the engine loads', async () => {
    const local = await makeModule({ name: 'tiny-math', seed: 5 });
    expect(await resolveModelPath(local)).to.equal(local);
    expect(await resolveModelPath('./no/such/model.onnx')).to.equal('./no/such/model.onnx');
    expect(await resolveModelPath('plain-missing-dir')).to.equal('plain-missing-dir');
    await pushModule(local, `${registry.host}/acme/tiny-math`);
    const cache = testDir('engine-cache');
    const dir = await resolveModelPath('acme/tiny-math@^1', { registry: registry.host, cacheDir: cache });
    expect(dir.startsWith(join(cache, 'modules'))).to.equal(true);

    const fromLocal = await Engine.load({ model: local, cacheDir: preparedCache });
    const fromRegistry = await Engine.load({ model: dir, cacheDir: preparedCache });
    try {
      const opts = { maxTokens: 8 };
      const a = await fromLocal.generate({ promptIds: [1, 5, 9] }, opts);
      const b = await fromRegistry.generate({ promptIds: [1, 5, 9] }, opts);
      expect(b.rows[0]!.ids).to.deep.equal(a.rows[0]!.ids);
    } finally {
      await fromLocal.dispose();
      await fromRegistry.dispose();
    }
  });
});
