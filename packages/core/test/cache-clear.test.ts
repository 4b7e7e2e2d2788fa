import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { existsSync, rmSync } from 'node:fs';
import { cp, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { cacheUsage, clearCache } from '../src/modules/cache-usage.js';
import { loadModuleDir } from '../src/modules/module-dir.js';
import { BlobRemovedError, ModuleCache, type ModuleFile } from '../src/registry/cache.js';
import { pullModule, type PulledModule } from '../src/registry/pull.js';
import { pushModule } from '../src/registry/push.js';
import { rejection } from './support/assertions.js';
import { runReasonplug } from './support/cli.js';
import { testDir } from './support/models.js';
import { invisiblePid, suffixOf } from './support/owners.js';
import { bytesOf, makeRegistryModule, startOurRegistry, type OurRegistry } from './support/registries.js';

/** The files a pull verified and links into its module directory, as `materialise` takes them, and its config's digest. */
async function filesOf(pulled: PulledModule): Promise<{ files: ModuleFile[]; config: string }> {
  const { manifest } = await loadModuleDir(pulled.dir, { verify: false });
  const files = Object.values(manifest.files).map((f) => ({ path: f.path, digest: `sha256:${f.sha256}` }));
  const config = `sha256:${createHash('sha256').update(await readFile(join(pulled.dir, 'reasonplug.json'))).digest('hex')}`;
  return { files, config };
}

/** A `.partial` download of another process that is still writing it (one in another PID namespace, written just now). */
async function liveDownload(cacheDir: string, bytes = 4096): Promise<string> {
  const path = join(cacheDir, 'blobs', 'sha256', `${'2'.repeat(64)}.${suffixOf(invisiblePid(), true)}.partial`);
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, bytesOf(bytes, 7));
  return path;
}

describe('cache clear and pulls under way; temp folders of dead processes', function () {
  this.timeout(120_000);
  let registry: OurRegistry;
  before(async () => (registry = await startOurRegistry()));
  after(() => registry?.close());

  async function pulled(name: string, cacheDir: string): Promise<PulledModule> {
    const original = await makeRegistryModule({ name, files: { 'weights.bin': 300_000 } });
    await pushModule(original, `${registry.host}/acme/${name}:1.0.0`);
    return pullModule(`${registry.host}/acme/${name}:1.0.0`, { cacheDir });
  }

  it('cache clear modules while a pull downloads keeps the blobs it has verified, so it assembles its module', async () => {
    const cacheDir = testDir('clear-during-pull');
    // A pull that has verified some blobs (here: all of this module's) and is still downloading another.
    const pull = await pulled('clear-during', cacheDir);
    const { files, config } = await filesOf(pull);
    const downloading = await liveDownload(cacheDir);

    const outcome = await clearCache(['modules'], cacheDir);
    expect(existsSync(pull.dir), 'module directories go').to.equal(false);
    expect(existsSync(join(cacheDir, 'refs')), 'refs go').to.equal(false);

    // its downloads done, the pull links the blobs it verified
    const { dir, built } = await new ModuleCache(cacheDir).materialise(pull.registry, pull.repository, pull.digest, config, files);
    expect(built).to.equal(true);
    await loadModuleDir(dir);
    expect(outcome).to.deep.equal({ live: [downloading], blobsKept: true });
  });

  it('a blob removed between its verification and the assembly of its module is a BlobRemovedError saying to pull again', async () => {
    const cacheDir = testDir('clear-blob-removed');
    const pull = await pulled('clear-removed', cacheDir);
    const { files, config } = await filesOf(pull);
    // no download under way: the clear removes every blob
    await clearCache(['modules'], cacheDir);

    const err = await rejection(new ModuleCache(cacheDir).materialise(pull.registry, pull.repository, pull.digest, config, files));
    expect(err).to.be.instanceOf(BlobRemovedError);
    expect(err.message).to.match(/was removed from the cache at .* after it was verified, .*; pull it again$/);
    expect((err as BlobRemovedError).digest).to.be.oneOf([...files.map((f) => f.digest), config]);
    const left = await readdir(dirname(pull.dir)).catch(() => [] as string[]);
    expect(left, 'no temp directory is left').to.deep.equal([]);
  });

  it('a pull whose verified blob is removed before it assembles the module fetches it again and succeeds', async () => {
    const cacheDir = testDir('clear-pull-retry');
    const original = await makeRegistryModule({ name: 'clear-retry', files: { 'a.bin': 1000, 'b.bin': 2000 } });
    await pushModule(original, `${registry.host}/acme/clear-retry:1.0.0`);
    const cache = new ModuleCache(cacheDir);
    const removed: string[] = [];
    // Once every file is in, the first time only: the others' verified blobs go, as a clear meanwhile would take them.
    const done = new Map<string, string>();
    const pull = await pullModule(`${registry.host}/acme/clear-retry:1.0.0`, {
      cacheDir,
      onProgress: (p) => {
        if (!p.done) return;
        done.set(p.file, p.digest);
        if (done.size === 2 && removed.length === 0) for (const [file, digest] of done) removed.push(file), rmSync(cache.blobPath(digest));
      },
    });
    expect(removed).to.have.length(2);
    await loadModuleDir(pull.dir);
  });

  it('`reasonplug cache clear` reports the bytes it freed, and those of downloads in progress it kept', async () => {
    const cacheDir = testDir('clear-report');
    await pulled('clear-report', cacheDir);
    await liveDownload(cacheDir, 3 * 2 ** 20);
    const modules = await runReasonplug(['cache', 'clear', 'modules'], { REASONPLUG_CACHE: cacheDir });
    expect(modules.code, modules.stderr).to.equal(0);
    // (the module directory's files are its blobs' inodes: removing it frees nothing while they stay)
    expect(modules.stderr).to.equal('removed modules: 0.0 MiB freed; kept 3.3 MiB of downloads in progress and the module blobs their pulls link (clear modules again once they end)\n');

    // a conversion under way is kept, the finished entry beside it freed
    const entry = join(cacheDir, 'gguf', `${'1'.repeat(64)}-kv16-v8`);
    const converting = `${entry}.${suffixOf(invisiblePid(), true)}.tmp`;
    await mkdir(entry, { recursive: true });
    await mkdir(converting, { recursive: true });
    await writeFile(join(entry, 'model.onnx.data'), bytesOf(2 * 2 ** 20, 1));
    await writeFile(join(converting, 'model.onnx.data'), bytesOf(2 ** 20, 2));
    const gguf = await runReasonplug(['cache', 'clear', 'gguf'], { REASONPLUG_CACHE: cacheDir });
    expect(gguf.code, gguf.stderr).to.equal(0);
    expect(gguf.stderr).to.equal('removed gguf: 2.0 MiB freed; kept 1.0 MiB of downloads and conversions in progress\n');
    expect(existsSync(converting)).to.equal(true);
  });

  it('a module temp folder of a dead process is listed as a pull broken off, not as a module, and the next pull sweeps it', async () => {
    const cacheDir = testDir('module-temp');
    const pull = await pulled('module-temp', cacheDir);
    // what a pull killed while it assembled its module leaves, and one another process is assembling now
    const dead = `${pull.dir}.${suffixOf(invisiblePid())}.tmp`;
    const running = `${pull.dir}.${suffixOf(invisiblePid(), true)}.tmp`;
    await cp(pull.dir, dead, { recursive: true });
    await cp(pull.dir, running, { recursive: true });

    const names = (await cacheUsage(cacheDir)).entries.filter((e) => e.part === 'modules').map((e) => e.name);
    expect(names.filter((n) => n === 'module-temp@1.0.0')).to.have.length(1);
    expect(names.filter((n) => n === 'a pull in progress or broken off')).to.have.length(2);

    await pullModule(`${registry.host}/acme/module-temp:1.0.0`, { cacheDir });
    expect(existsSync(dead), 'swept').to.equal(false);
    expect(existsSync(running), 'left to its process').to.equal(true);
  });
});
