import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { copyFileSync, linkSync, statSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { models } from '../../../test/support/paths.js';
import { ggufModuleDir } from '../src/gguf/gguf-module.js';
import { cacheUsage, clearCache } from '../src/modules/cache-usage.js';
import { loadModuleDir } from '../src/modules/module-dir.js';
import type { TransferProgress } from '../src/registry/download.js';
import { pullModule } from '../src/registry/pull.js';
import { pushModule } from '../src/registry/push.js';
import { testDir } from './support/models.js';
import { age, invisiblePid, suffixOf } from './support/owners.js';
import { makeRegistryModule, startOurRegistry, type OurRegistry } from './support/registries.js';

/** A folder like a conversion's temp directory, with a file in it. */
async function tempFolder(path: string): Promise<string> {
  await mkdir(path, { recursive: true });
  await writeFile(join(path, 'model.onnx.data'), 'partly written');
  return path;
}

describe('temp files of writers this process cannot see (another PID namespace sharing the cache), and of ones gone here', function () {
  this.timeout(120_000);
  let registry: OurRegistry;
  before(async () => (registry = await startOurRegistry()));
  after(() => registry?.close());

  /** A module of one `weights.bin` pushed as acme/`name`: its directory, reference and the weights' hex digest. */
  async function pushedWeights(name: string, bytes: number): Promise<{ dir: string; ref: string; hex: string }> {
    const dir = await makeRegistryModule({ name, files: { 'weights.bin': bytes } });
    await pushModule(dir, `${registry.host}/acme/${name}`);
    const hex = (await loadModuleDir(dir, { verify: false })).manifest.files['weights_bin']!.sha256;
    return { dir, ref: `${registry.host}/acme/${name}:1.0.0`, hex };
  }

  it("a conversion sweeps only its own entry's temp folders, and only those written to by no one for a while", async () => {
    const cacheDir = testDir('owners-gguf');
    const dir = await ggufModuleDir(models.stories260K, { cacheDir });
    await rm(dir, { recursive: true });
    const pid = invisiblePid();
    // (One of this entry still writing is waited for: see below.)
    const killed = await tempFolder(`${dir}.${suffixOf(pid, true)}.tmp`);
    const running = await tempFolder(join(dirname(dir), `${'0'.repeat(64)}-v6.${suffixOf(pid, true)}.tmp`));
    const otherEntry = await tempFolder(join(dirname(dir), `${'0'.repeat(64)}-v6.${suffixOf(pid, true)}.tmp`));
    await age(killed);
    await age(otherEntry);

    expect(await ggufModuleDir(models.stories260K, { cacheDir })).to.equal(dir);
    expect(existsSync(running), "another entry's conversion still writing").to.equal(true);
    expect(existsSync(killed), 'a conversion long still').to.equal(false);
    expect(existsSync(otherEntry), "another entry's conversion").to.equal(true);
  });

  /**
   * Pulls `name`'s 1 MiB weights into a fresh cache that holds half of them as a partial download named with `suffix`
   * (written long ago where `still`): where the pull resumed from, and whether that partial file is still there.
   */
  async function pullBesidePartial(name: string, suffix: string, still: boolean): Promise<{ resumedFrom: number; kept: boolean }> {
    const { dir, ref, hex } = await pushedWeights(name, 1 << 20);
    const half = (await readFile(join(dir, 'weights.bin'))).subarray(0, 1 << 19);
    const cacheDir = testDir(`${name}-cache`);
    const partial = join(cacheDir, 'blobs', 'sha256', `${hex}.${suffix}.partial`);
    await mkdir(dirname(partial), { recursive: true });
    await writeFile(partial, half);
    if (still) await age(partial);
    let resumedFrom = 0;
    const onProgress = (p: TransferProgress) => p.file === 'weights.bin' && (resumedFrom = Math.max(resumedFrom, p.resumedFrom));
    await pullModule(ref, { cacheDir, onProgress });
    return { resumedFrom, kept: existsSync(partial) };
  }

  it('a pull adopts a partial download of an unseen process only once it has been still for a while', async () => {
    const elsewhere = suffixOf(invisiblePid(), true);
    expect(await pullBesidePartial('owners-partial', elsewhere, false), 'being written').to.deep.equal({ resumedFrom: 0, kept: true });
    expect(await pullBesidePartial('owners-partial', elsewhere, true), 'abandoned').to.deep.equal({ resumedFrom: 1 << 19, kept: false });
  });

  it('a pull killed in this PID namespace is resumed at once; one whose process lives here is left however still', async () => {
    expect(await pullBesidePartial('owners-here', suffixOf(invisiblePid()), false), 'its process gone').to.deep.equal({ resumedFrom: 1 << 19, kept: false });
    expect(await pullBesidePartial('owners-here', suffixOf(process.ppid), true), 'its process alive').to.deep.equal({ resumedFrom: 0, kept: true });
  });

  it('a conversion killed in this PID namespace is swept at once, and cache clear removes its files', async () => {
    const cacheDir = testDir('owners-here-gguf');
    const dir = await ggufModuleDir(models.stories260K, { cacheDir });
    await rm(dir, { recursive: true });
    const killed = await tempFolder(`${dir}.${suffixOf(invisiblePid())}.tmp`);
    expect(await ggufModuleDir(models.stories260K, { cacheDir })).to.equal(dir);
    expect(existsSync(killed), 'its process gone').to.equal(false);

    const alive = await tempFolder(`${dir}.${suffixOf(process.ppid)}.tmp`);
    const partial = join(cacheDir, 'blobs', 'sha256', `${'4'.repeat(64)}.${suffixOf(invisiblePid())}.partial`);
    await mkdir(dirname(partial), { recursive: true });
    await writeFile(partial, 'bytes');
    await clearCache(['gguf', 'modules'], cacheDir);
    expect(existsSync(partial), 'a partial download of a process gone').to.equal(false);
    expect(existsSync(alive), 'a conversion of a process alive').to.equal(true);
  });

  it("a load waits while another process converts the same file, takes that entry when it lands, and converts itself when that process dies", async () => {
    const cacheDir = testDir('owners-wait');
    const dir = await ggufModuleDir(models.stories260K, { cacheDir });
    const converted = `${dir}.moved`;
    await rename(dir, converted);
    // (process 1 is alive here, and its claim sorts before this process's: of the two, it converts)
    const other = await tempFolder(`${dir}.${suffixOf(1)}.tmp`);
    const tensorReads = () => {
      let reads = 0;
      const onProgress = (p: TransferProgress) => p.digest.startsWith('sha256:') && p.digest !== 'sha256:pending' && !p.done && reads++;
      return { onProgress, reads: () => reads };
    };

    // The other process finishes: its entry is taken as it is.
    const waiting = tensorReads();
    let settled = false;
    const load = ggufModuleDir(models.stories260K, { cacheDir, onProgress: waiting.onProgress }).finally(() => (settled = true));
    await new Promise((r) => setTimeout(r, 2500));
    expect(settled, 'still waiting').to.equal(false);
    await rename(converted, dir);
    await rm(other, { recursive: true });
    const ino = (await stat(dir)).ino;
    expect(await load).to.equal(dir);
    expect((await stat(dir)).ino, 'the entry it placed').to.equal(ino);
    expect(waiting.reads(), 'tensors read').to.equal(0);

    // The other process is gone with its conversion half-done: converted here.
    await rm(dir, { recursive: true });
    const killed = await tempFolder(`${dir}.${suffixOf(invisiblePid())}.tmp`);
    const converting = tensorReads();
    expect(await ggufModuleDir(models.stories260K, { cacheDir, onProgress: converting.onProgress })).to.equal(dir);
    expect(converting.reads(), 'tensors read').to.be.above(0);
    expect(existsSync(killed)).to.equal(false);
  });

  it('processes loading the same file at the same moment convert it once: the first claim converts, the others take its entry', async () => {
    const cacheDir = testDir('owners-together');
    const moduleUrl = new URL('../src/gguf/gguf-module.ts', import.meta.url).href;
    const script = `
      const { ggufModuleDir } = await import(${JSON.stringify(moduleUrl)});
      const go = Number(process.argv[1]);
      await new Promise((r) => setTimeout(r, go - Date.now()));
      let reads = 0;
      const dir = await ggufModuleDir(${JSON.stringify(models.stories260K)}, { cacheDir: ${JSON.stringify(cacheDir)}, onProgress: (p) => p.digest.startsWith('sha256:') && p.digest !== 'sha256:pending' && !p.done && reads++ });
      process.stdout.write(JSON.stringify({ dir, converted: reads > 0 }));`;
    for (let round = 0; round < 2; round++) {
      await rm(join(cacheDir, 'gguf'), { recursive: true, force: true });
      // (started together: each has hashed the file, from the stat record, by the moment all go)
      const go = Date.now() + 4000;
      const runs = await Promise.all(
        [0, 1, 2].map(
          () =>
            new Promise<{ dir: string; converted: boolean }>((resolve, reject) => {
              const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script, String(go)], { stdio: ['ignore', 'pipe', 'inherit'] });
              let out = '';
              child.stdout.on('data', (d: Buffer) => (out += d));
              child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out) as { dir: string; converted: boolean }) : reject(new Error(`exit ${code}`))));
            }),
        ),
      );
      expect(new Set(runs.map((r) => r.dir)).size).to.equal(1);
      expect(runs.filter((r) => r.converted), `round ${round}`).to.have.length(1);
      expect((await readdir(join(cacheDir, 'gguf'))).filter((n) => n.endsWith('.tmp'))).to.deep.equal([]);
    }
  });

  it('cache clear leaves the conversions and downloads still under way, and removes the rest', async () => {
    const root = testDir('owners-clear');
    const pid = invisiblePid();
    const entry = await tempFolder(join(root, 'gguf', `${'1'.repeat(64)}-v6`));
    const running = await tempFolder(`${entry}.${suffixOf(pid, true)}.tmp`);
    const killed = await tempFolder(`${entry}.${suffixOf(pid, true)}.tmp`);
    const blobs = join(root, 'blobs', 'sha256');
    await mkdir(blobs, { recursive: true });
    const downloading = join(blobs, `${'2'.repeat(64)}.${suffixOf(pid, true)}.partial`);
    const brokenOff = join(blobs, `${'2'.repeat(64)}.${suffixOf(pid, true)}.partial`);
    const blob = join(blobs, '3'.repeat(64));
    for (const f of [downloading, brokenOff, blob]) await writeFile(f, 'bytes');
    await age(killed);
    await age(brokenOff);

    expect(await clearCache(['gguf', 'modules'], root)).to.deep.equal({ live: [running, downloading], blobsKept: true });
    expect(existsSync(running)).to.equal(true);
    expect(existsSync(downloading)).to.equal(true);
    // (a pull under way links the blobs it has verified once its downloads end)
    expect(existsSync(blob), 'blobs stay while a pull is under way').to.equal(true);
    for (const gone of [entry, killed, brokenOff]) expect(existsSync(gone), gone).to.equal(false);
    // once the download has ended, they go
    await rm(downloading);
    expect(await clearCache(['modules'], root)).to.deep.equal({ live: [], blobsKept: false });
    expect(existsSync(blob)).to.equal(false);
  });

  it('an online pull into a cache whose refs already say so rewrites none (a read-only cache pulls)', async () => {
    const { ref } = await pushedWeights('owners-ro', 4096);
    const cacheDir = testDir('owners-ro-cache');
    await pullModule(ref, { cacheDir });
    const refs = async () => {
      const files = (await readdir(join(cacheDir, 'refs'), { recursive: true })).map((f) => join(cacheDir, 'refs', f)).filter((f) => statSync(f).isFile());
      // (inode and change time: a file renamed over another may get the inode number just freed)
      return new Map(files.map((f) => [f, `${statSync(f, { bigint: true }).ino} ${statSync(f, { bigint: true }).ctimeNs}`]));
    };
    const before = await refs();
    expect(before.size).to.be.above(0);
    await pullModule(ref, { cacheDir });
    expect(await refs()).to.deep.equal(before);
  });

  it('lists a cache whose folders are renamed away while it is read', async () => {
    const root = testDir('owners-list');
    const gguf = join(root, 'gguf');
    for (let i = 0; i < 20; i++) {
      const dir = join(gguf, `${String(i).padStart(64, '0')}-v6`, 'nested');
      await mkdir(dir, { recursive: true });
      for (let j = 0; j < 20; j++) await writeFile(join(dir, `f${j}`), 'x');
    }
    let moving = true;
    const mover = (async () => {
      for (let n = 0; moving; n++) {
        const i = n % 20;
        const dir = join(gguf, `${String(i).padStart(64, '0')}-v6`);
        await rename(join(dir, 'nested'), join(dir, 'moved')).catch(() => undefined);
        await rename(join(dir, 'moved'), join(dir, 'nested')).catch(() => undefined);
      }
    })();
    try {
      for (let i = 0; i < 100; i++) await cacheUsage(root);
    } finally {
      moving = false;
      await mover;
    }
  });

  it("a download that finds the blob put in place meanwhile by another process keeps that one's file (its hard links)", async () => {
    const { dir, ref, hex } = await pushedWeights('owners-link', 8 << 20);
    const cacheDir = testDir('owners-link-cache');
    const target = join(cacheDir, 'blobs', 'sha256', hex);
    const otherModule = join(testDir('owners-link-other'), 'weights.bin');
    let planted = false;
    const onProgress = (p: TransferProgress) => {
      if (planted || p.file !== 'weights.bin' || p.bytes === 0 || p.done) return;
      // Another process completes the same blob and links a module of its own to it.
      planted = true;
      copyFileSync(join(dir, 'weights.bin'), target);
      linkSync(target, otherModule);
    };
    const pulled = await pullModule(ref, { cacheDir, onProgress });
    expect(planted).to.equal(true);
    const ino = (await stat(otherModule)).ino;
    expect((await stat(target)).ino, 'the blob is the file linked to').to.equal(ino);
    expect((await stat(join(pulled.dir, 'weights.bin'))).ino).to.equal(ino);
    expect((await readdir(dirname(target))).filter((n) => n.endsWith('.partial'))).to.deep.equal([]);
  });
});
