import { expect } from 'chai';
import { existsSync } from 'node:fs';
import { cp, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { removeModules } from '../src/modules/cache-remove.js';
import { cacheUsage } from '../src/modules/cache-usage.js';
import { loadModuleDir } from '../src/modules/module-dir.js';
import { sha256Digest } from '../src/registry/artifact.js';
import { ModuleCache } from '../src/registry/cache.js';
import { CacheWriteError, ModuleNotFoundError } from '../src/registry/errors.js';
import { pullModule, type PulledModule } from '../src/registry/pull.js';
import { pushModule } from '../src/registry/push.js';
import { rejection } from './support/assertions.js';
import { runReasonplug } from './support/cli.js';
import { testDir } from './support/models.js';
import { invisiblePid, suffixOf } from './support/owners.js';
import { bytesOf, makeRegistryModule, startOurRegistry, type OurRegistry } from './support/registries.js';

/** The blobs a pulled module is made of, by its file's path (`reasonplug.json` its config), and its manifest's. */
async function blobsOf(pulled: PulledModule): Promise<Record<string, string>> {
  const { manifest } = await loadModuleDir(pulled.dir, { verify: false });
  const files = Object.fromEntries(Object.values(manifest.files).map((f) => [f.path, `sha256:${f.sha256}`]));
  return { ...files, 'reasonplug.json': sha256Digest(await readFile(join(pulled.dir, 'reasonplug.json'))), manifest: pulled.digest };
}

/** Every file and folder under `dir`, with each file's size: what a refused removal must leave as it was. */
async function tree(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    const path = join(e.parentPath, e.name);
    out.push(`${relative(dir, path)}${e.isFile() ? ` ${(await stat(path)).size}` : '/'}`);
  }
  return out.sort();
}

describe('cache rm: removing pulled modules from the cache', function () {
  this.timeout(120_000);
  let registry: OurRegistry;
  let bSource: string;
  // rm-a 1.0.0 and rm-b 1.0.0 share model.onnx and shared.bin (same bytes); rm-a 2.0.0 shares nothing.
  before(async () => {
    registry = await startOurRegistry();
    const a1 = await makeRegistryModule({ name: 'rm-a', files: { 'shared.bin': 200_000, 'a.bin': 100_000 } });
    const a2 = await makeRegistryModule({ name: 'rm-a', version: '2.0.0', seed: 2, files: { 'shared.bin': 200_000, 'a.bin': 120_000 } });
    const b = (bSource = await makeRegistryModule({ name: 'rm-b', files: { 'shared.bin': 200_000, 'b.bin': 150_000 } }));
    await pushModule(a1, `${registry.host}/acme/rm-a:1.0.0`);
    await pushModule(a2, `${registry.host}/acme/rm-a:2.0.0`);
    await pushModule(b, `${registry.host}/acme/rm-b:1.0.0`);
  });
  after(() => registry?.close());

  /** A cache holding rm-a 1.0.0, rm-a 2.0.0 (pulled as `latest`) and rm-b 1.0.0. */
  async function pulled(name: string) {
    const cacheDir = testDir(name);
    const a1 = await pullModule(`${registry.host}/acme/rm-a:1.0.0`, { cacheDir });
    const a2 = await pullModule(`${registry.host}/acme/rm-a:latest`, { cacheDir });
    const b = await pullModule(`${registry.host}/acme/rm-b:1.0.0`, { cacheDir });
    expect(a2.version).to.equal('2.0.0');
    const cache = new ModuleCache(cacheDir);
    const has = (digest: string) => existsSync(cache.blobPath(digest));
    return { cacheDir, cache, a1, a2, b, has };
  }

  it('`cache rm name@version` removes that version and the blobs only it used; the rest stay loadable, and the listing drops it', async () => {
    const { cacheDir, cache, a1, a2, b, has } = await pulled('rm-version');
    const blobs = await blobsOf(a1);
    const others = { ...(await blobsOf(a2)), ...(await blobsOf(b)) };

    const run = await runReasonplug(['cache', 'rm', `${registry.host}/acme/rm-a@1.0.0`], { REASONPLUG_CACHE: cacheDir });
    expect(run.code, run.stderr).to.equal(0);
    expect(run.stderr).to.equal(
      `removed ${registry.host}/acme/rm-a 1.0.0 (${a1.digest}; tags 1.0.0)\n` +
        // a.bin, the config and the manifest go; model.onnx and shared.bin stay for rm-b (100 kB and two small files)
        '3 blob(s) removed, 2 kept that modules still cached use: 0.1 MiB freed\n',
    );
    expect(existsSync(a1.dir)).to.equal(false);
    expect(await cache.readRef(registry.host, 'acme/rm-a', '1.0.0')).to.equal(undefined);
    for (const what of ['a.bin', 'reasonplug.json', 'manifest']) expect(has(blobs[what]!), what).to.equal(false);
    for (const what of ['model.onnx', 'shared.bin']) expect(has(blobs[what]!), what).to.equal(true);
    for (const digest of Object.values(others)) expect(has(digest), digest).to.equal(true);
    // (verifying every file against its manifest)
    await loadModuleDir(a2.dir);
    await loadModuleDir(b.dir);
    expect(await cache.readRef(registry.host, 'acme/rm-a', 'latest')).to.equal(a2.digest);
    const offline = await pullModule(`${registry.host}/acme/rm-b:1.0.0`, { cacheDir, offline: true });
    expect(offline.dir).to.equal(b.dir);

    const listing = await runReasonplug(['cache', '--json'], { REASONPLUG_CACHE: cacheDir });
    expect(listing.code, listing.stderr).to.equal(0);
    const names = (JSON.parse(listing.stdout) as Awaited<ReturnType<typeof cacheUsage>>).entries.filter((e) => e.part === 'modules').map((e) => e.name);
    expect(names).to.include.members(['rm-a@2.0.0', 'rm-b@1.0.0']);
    expect(names).not.to.include('rm-a@1.0.0');
  });

  it('`cache rm name:tag` removes the manifest the tag points to and every ref to it', async () => {
    const { cacheDir, cache, a1, a2, b, has } = await pulled('rm-tag');
    const blobs = await blobsOf(a2);

    const outcome = await removeModules([`${registry.host}/acme/rm-a:latest`], { root: cacheDir });
    expect(outcome.removed).to.deep.equal([
      {
        ref: `${registry.host}/acme/rm-a:latest`,
        wholeRepository: false,
        modules: [{ registry: registry.host, repository: 'acme/rm-a', digest: a2.digest, version: '2.0.0', tags: ['2.0.0', 'latest'] }],
      },
    ]);
    // rm-a 2.0.0 shares no blob: its three files, config and manifest all go
    expect(outcome).to.deep.include({ blobs: { removed: 5, shared: 0 }, blobsKept: false });
    expect(existsSync(a2.dir)).to.equal(false);
    for (const digest of Object.values(blobs)) expect(has(digest), digest).to.equal(false);
    expect([...(await cache.refs(registry.host, 'acme/rm-a')).keys()]).to.deep.equal(['1.0.0']);
    await loadModuleDir(a1.dir);
    await loadModuleDir(b.dir);
  });

  it('`cache rm name` (no tag, version or digest) removes every cached version of it, and says so', async () => {
    const { cacheDir, cache, a1, a2, b, has } = await pulled('rm-bare');
    const shared = await blobsOf(b);

    const run = await runReasonplug(['cache', 'rm', 'acme/rm-a'], { REASONPLUG_CACHE: cacheDir, REASONPLUG_REGISTRY: registry.host });
    expect(run.code, run.stderr).to.equal(0);
    const lines = run.stderr.split('\n');
    expect(lines[0]).to.equal(`removed every cached version of ${registry.host}/acme/rm-a:`);
    expect(lines.slice(1, 3).sort()).to.deep.equal([`  1.0.0 (${a1.digest}; tags 1.0.0)`, `  2.0.0 (${a2.digest}; tags 2.0.0, latest)`]);
    expect(lines[3]).to.match(/^8 blob\(s\) removed, 2 kept that modules still cached use: 0\.[0-9] MiB freed$/);
    expect(existsSync(dirname(a1.dir)), 'the repository folder').to.equal(false);
    expect(existsSync(join(cacheDir, 'refs', registry.host.replace(':', '_'), 'acme', 'rm-a'))).to.equal(false);
    expect(await cache.refs(registry.host, 'acme/rm-a')).to.have.property('size', 0);
    for (const digest of Object.values(shared)) expect(has(digest), digest).to.equal(true);
    await loadModuleDir(b.dir);
    const names = (await cacheUsage(cacheDir)).entries.filter((e) => e.part === 'modules').map((e) => e.name);
    expect(names.filter((n) => n.startsWith('rm-'))).to.deep.equal(['rm-b@1.0.0']);
  });

  it('a manifest another repository holds too keeps its blobs, in a copied cache (no hard links) as well', async () => {
    const { cacheDir, b } = await pulled('rm-two-names');
    await pushModule(bSource, `${registry.host}/other/rm-b:1.0.0`);
    const c = await pullModule(`${registry.host}/other/rm-b:1.0.0`, { cacheDir });
    expect(c.digest).to.equal(b.digest);
    const copy = testDir('rm-two-names-copy');
    await cp(cacheDir, copy, { recursive: true });
    const copied = new ModuleCache(copy);

    const outcome = await removeModules([`${registry.host}/other/rm-b:1.0.0`], { root: copy });
    expect(outcome.blobs).to.deep.equal({ removed: 0, shared: 5 });
    expect(existsSync(copied.moduleDir(registry.host, 'other/rm-b', c.digest))).to.equal(false);
    for (const digest of Object.values(await blobsOf(b))) expect(existsSync(copied.blobPath(digest)), digest).to.equal(true);
    const offline = await pullModule(`${registry.host}/acme/rm-b:1.0.0`, { cacheDir: copy, offline: true });
    await loadModuleDir(offline.dir);
  });

  it('a reference the cache does not hold is an error naming it, and nothing is removed, the other references included', async () => {
    const { cacheDir } = await pulled('rm-unknown');
    const before = await tree(cacheDir);

    const run = await runReasonplug(['cache', 'rm', `${registry.host}/acme/rm-a:1.0.0`, `${registry.host}/acme/rm-b@^3`, `${registry.host}/acme/nope`], {
      REASONPLUG_CACHE: cacheDir,
    });
    expect(run.code).to.equal(1);
    expect(run.stderr).to.equal(`reasonplug: ModuleNotFoundError: not in the cache at ${cacheDir}: ${registry.host}/acme/rm-b@^3, ${registry.host}/acme/nope; nothing was removed\n`);
    expect(await tree(cacheDir)).to.deep.equal(before);

    const digest = `${registry.host}/acme/rm-a@sha256:${'0'.repeat(64)}`;
    expect(await rejection(removeModules([digest], { root: cacheDir }))).to.be.instanceOf(ModuleNotFoundError);
    expect(await tree(cacheDir)).to.deep.equal(before);
  });

  it('a removal that fails part-way is a CacheWriteError naming what it could not remove and the modules removed before it', async () => {
    const { cacheDir, cache, a1 } = await pulled('rm-fails');
    // a.bin's blob, which only rm-a 1.0.0 uses, made a folder with a file in it: removing it as a file fails
    const blob = cache.blobPath((await blobsOf(a1))['a.bin']!);
    await rm(blob);
    await mkdir(blob);
    await writeFile(join(blob, 'in-the-way'), 'x');
    const err = await rejection(removeModules([`${registry.host}/acme/rm-a@1.0.0`], { root: cacheDir }));
    expect(err).to.be.instanceOf(CacheWriteError);
    expect(err.message).to.match(new RegExp(`^cannot remove the blob sha256:[0-9a-f]{64} from the cache \\(${blob}\\): .*; ${registry.host}/acme/rm-a@${a1.digest} removed before it$`));
  });

  it('while a download is under way the blobs stay, and the output says so; by digest removes that manifest', async () => {
    const { cacheDir, a1, b, has } = await pulled('rm-live');
    const blobs = await blobsOf(a1);
    // another process's download, still being written
    const partial = join(cacheDir, 'blobs', 'sha256', `${'2'.repeat(64)}.${suffixOf(invisiblePid(), true)}.partial`);
    await mkdir(dirname(partial), { recursive: true });
    await writeFile(partial, bytesOf(4096, 7));

    const run = await runReasonplug(['cache', 'rm', `${registry.host}/acme/rm-a@${a1.digest}`], { REASONPLUG_CACHE: cacheDir });
    expect(run.code, run.stderr).to.equal(0);
    expect(run.stderr).to.equal(
      `removed ${registry.host}/acme/rm-a 1.0.0 (${a1.digest}; tags 1.0.0)\n` +
        'kept their blobs: a pull is under way, which may link them (`cache clear modules` removes them once it ends); 0.0 MiB freed\n',
    );
    expect(existsSync(a1.dir)).to.equal(false);
    for (const digest of Object.values(blobs)) expect(has(digest), digest).to.equal(true);
    expect(existsSync(partial)).to.equal(true);
    await loadModuleDir(b.dir);
  });
});
