import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { appendFile, mkdir, readdir, readFile, rename, rm, truncate, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { fileDigestStats, hashFile, RACY_MS } from '../src/modules/file-digest.js';
import { locateModel } from '../src/modules/locate.js';
import { loadModuleDir } from '../src/modules/module-dir.js';
import { NotCachedError } from '../src/registry/errors.js';
import { pullModule } from '../src/registry/pull.js';
import { pushModule } from '../src/registry/push.js';
import { rejection } from './support/assertions.js';
import { testDir } from './support/models.js';
import { makeRegistryModule, startOurRegistry, type OurRegistry } from './support/registries.js';
import { flipKeepingStat } from './support/tamper.js';

const cli = fileURLToPath(new URL('../src/cli/reasonplug.ts', import.meta.url));
const run = promisify(execFile);

async function reasonplug(cache: string, ...args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const { stdout, stderr } = await run(process.execPath, ['--import', 'tsx', cli, ...args], { env: { ...process.env, REASONPLUG_CACHE: cache } });
    return { stdout, stderr, code: 0 };
  } catch (err) {
    const e = err as { stdout: string; stderr: string; code: number };
    return { stdout: e.stdout, stderr: e.stderr, code: e.code };
  }
}

/** Every file of a pulled module, hashed in full (no stat records), equals the pushed original, byte for byte. */
async function expectSameModule(pulled: string, original: string): Promise<void> {
  expect(await readFile(join(pulled, 'reasonplug.json'))).to.deep.equal(await readFile(join(original, 'reasonplug.json')));
  const { manifest } = await loadModuleDir(original, { verify: false });
  for (const [key, entry] of Object.entries(manifest.files)) {
    expect((await hashFile(join(pulled, entry.path))).sha256, `files.${key}`).to.equal(entry.sha256);
  }
}

const blobsOf = (cache: string) => join(cache, 'blobs', 'sha256');

describe('module cache: nothing cached is trusted unverified', function () {
  this.timeout(60_000);
  let registry: OurRegistry;
  before(async () => (registry = await startOurRegistry()));
  after(() => registry?.close());

  it('`reasonplug pull` fetches again a cached blob with a flipped byte (same size and mtime) and rebuilds the module', async () => {
    const original = await makeRegistryModule({ name: 'flip', files: { 'weights.bin': 200_000 } });
    const ref = `${registry.host}/acme/flip:1.0.0`;
    await pushModule(original, ref);
    const weights = (await loadModuleDir(original, { verify: false })).manifest.files['weights_bin']!.sha256;
    const cache = testDir('flip-cache');
    const blob = join(blobsOf(cache), weights);

    const { dir } = await pullModule(ref, { cacheDir: cache });

    // Corrupt the blob (the module directory's hard link sees it too); whole-second mtime so utimes restores it exactly.
    await utimes(blob, 1_700_000_000, 1_700_000_000);
    await flipKeepingStat(blob, 12_345);
    expect(await rejection(locateModel(dir)), 'the engine refuses the damaged module').to.have.property('name', 'ModuleIntegrityError');

    const second = await reasonplug(cache, 'pull', ref);
    expect(second.code, second.stderr).to.equal(0);
    expect(second.stderr).to.match(/^pulled /m);
    expect(second.stderr).to.match(/^repaired weights\.bin: the cached copy failed verification and was downloaded again$/m);
    expect(second.stdout.trim()).to.equal(dir);
    expect((await hashFile(blob)).sha256).to.equal(weights);
    await expectSameModule(dir, original);
    await locateModel(dir);

    // Damaged again, and the module directory gone: it must be rebuilt from a fresh blob, not the bad one.
    await utimes(blob, 1_700_000_000, 1_700_000_000);
    await flipKeepingStat(blob, 7);
    await rm(join(cache, 'modules'), { recursive: true });
    const third = await pullModule(ref, { cacheDir: cache });
    expect(third).to.deep.include({ dir, cached: false, repaired: ['weights.bin'] });
    await expectSameModule(dir, original);

    const fourth = await pullModule(ref, { cacheDir: cache });
    expect(fourth).to.deep.include({ dir, cached: true, repaired: [] });
  });

  it('reusing verified blobs reads none of their bytes once their stat records are written', async () => {
    const original = await makeRegistryModule({ name: 'reuse', files: { 'weights.bin': 1 << 20 } });
    const ref = `${registry.host}/acme/reuse:1.0.0`;
    await pushModule(original, ref);
    const cache = testDir('reuse-cache');
    await pullModule(ref, { cacheDir: cache });
    // Past the racy window, one pull hashes and records; the next only stats.
    await new Promise((r) => setTimeout(r, RACY_MS + 100));
    await pullModule(ref, { cacheDir: cache });
    const hashed = fileDigestStats.hashed;
    expect(await pullModule(ref, { cacheDir: cache })).to.deep.include({ cached: true, repaired: [] });
    expect(fileDigestStats.hashed, 'no file hashed in full').to.equal(hashed);
  });

  it('offline, a damaged module is not cached (a typed error that says so); online repairs it; damaged refs are no refs', async () => {
    const original = await makeRegistryModule({ name: 'offline', files: { 'weights.bin': 50_000 } });
    const ref = `${registry.host}/acme/offline:1.0.0`;
    await pushModule(original, ref);
    const cache = testDir('offline-cache');
    const pulled = await pullModule(ref, { cacheDir: cache });
    const weights = (await loadModuleDir(original, { verify: false })).manifest.files['weights_bin']!.sha256;
    await truncate(join(blobsOf(cache), weights), 100);

    const err = await rejection(pullModule(ref, { cacheDir: cache, offline: true }));
    expect(err).to.be.instanceOf(NotCachedError);
    expect(err.message).to.match(/is not in the cache at .* intact \(a file of it is missing or failed verification\)/);
    expect((await pullModule(ref, { cacheDir: cache })).repaired).to.deep.equal(['weights.bin']);
    await expectSameModule((await pullModule(ref, { cacheDir: cache, offline: true })).dir, original);

    // A ref whose text would be a path outside the cache, and one naming a manifest the cache does not hold.
    const refFile = join(cache, 'refs', registry.host.replace(':', '_'), 'acme', 'offline', '1.0.0');
    await writeFile(refFile, 'sha256:../../../../etc/passwd\n');
    expect(await rejection(pullModule(ref, { cacheDir: cache, offline: true }))).to.be.instanceOf(NotCachedError);
    await writeFile(refFile, `sha256:${'0'.repeat(64)}\n`);
    expect(await rejection(pullModule(ref, { cacheDir: cache, offline: true }))).to.be.instanceOf(NotCachedError);
    expect((await pullModule(ref, { cacheDir: cache })).digest).to.equal(pulled.digest);
    expect((await readFile(refFile, 'utf8')).trim()).to.equal(pulled.digest);
  });

  it('fuzz: random damage to blobs, refs, records, partial and temp files between pulls; every pull ends verified or fails typed', async function () {
    // Two versions that share model.onnx (same seed) and differ in weights.bin.
    const v1 = await makeRegistryModule({ name: 'fz', version: '1.0.0', files: { 'weights.bin': 65_536, 'extra/tok.json': 3000 } });
    const v2 = await makeRegistryModule({ name: 'fz', version: '1.1.0', files: { 'weights.bin': 98_304 } });
    const repo = `${registry.host}/acme/fz`;
    const d1 = (await pushModule(v1, `${repo}:1.0.0`)).digest;
    const d2 = (await pushModule(v2, `${repo}:1.1.0`)).digest;
    const originals = new Map([[d1, v1], [d2, v2]]);
    // Each reference with what an online pull must give, and what an offline one may: offline, a range resolves
    // among the version refs that survived, so ^1 may fairly give 1.0.0 once the 1.1.0 ref is gone.
    const refs: [string, string, string[]][] = [
      [`${repo}:1.0.0`, d1, [d1]],
      [`${repo}:1.1.0`, d2, [d2]],
      [`${repo}@~1.0`, d1, [d1]],
      [`${repo}@^1`, d2, [d1, d2]],
      [`${repo}:latest`, d2, [d2]],
      [`${repo}@${d1}`, d1, [d1]],
      [`${repo}@${d2}`, d2, [d2]],
    ];
    const cache = testDir('fuzz-cache');
    const blobs = blobsOf(cache);

    const SEED = 14;
    const ROUNDS = 80;
    let x = SEED;
    const rand = () => {
      // xorshift32: the same damage on every run.
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      return (x >>> 0) / 2 ** 32;
    };
    const pick = <T>(items: readonly T[]): T | undefined => (items.length === 0 ? undefined : items[Math.floor(rand() * items.length)]);
    const files = async (dir: string, filter: (name: string) => boolean = () => true): Promise<string[]> =>
      existsSync(dir) ? (await readdir(dir, { recursive: true, withFileTypes: true })).filter((e) => e.isFile() && filter(e.name)).map((e) => join(e.parentPath, e.name)).sort() : [];
    const finalBlobs = () => files(blobs, (n) => /^[0-9a-f]{64}$/.test(n));
    const junk = (n: number) => Buffer.from(Array.from({ length: n }, () => Math.floor(rand() * 256)));

    const damage: Record<string, () => Promise<boolean>> = {
      async flipBlob() {
        const b = pick(await finalBlobs());
        if (!b) return false;
        const size = (await readFile(b)).length;
        await utimes(b, 1_700_000_000, 1_700_000_000);
        await flipKeepingStat(b, Math.floor(rand() * size));
        return true;
      },
      async truncateBlob() {
        const b = pick(await finalBlobs());
        if (!b) return false;
        await truncate(b, Math.floor(rand() * (await readFile(b)).length));
        return true;
      },
      async extendBlob() {
        const b = pick(await finalBlobs());
        if (!b) return false;
        await appendFile(b, junk(1 + Math.floor(rand() * 64)));
        return true;
      },
      async deleteBlob() {
        const b = pick(await finalBlobs());
        if (!b) return false;
        await rm(b);
        return true;
      },
      async blobBecomesDirectory() {
        const b = pick(await finalBlobs());
        if (!b) return false;
        await rm(b);
        await mkdir(join(b, 'x'), { recursive: true });
        return true;
      },
      async damageRef() {
        const r = pick(await files(join(cache, 'refs'), (n) => !n.endsWith('.tmp')));
        if (!r) return false;
        const how = pick(['junk', 'empty', 'hex', 'path'] as const)!;
        const text = { junk: junk(40), empty: '', hex: `sha256:${junk(32).toString('hex')}\n`, path: 'sha256:../../blobs\n' }[how];
        await writeFile(r, text);
        return true;
      },
      async deleteRef() {
        const r = pick(await files(join(cache, 'refs')));
        if (!r) return false;
        await rm(r);
        return true;
      },
      async damageRecord() {
        const r = pick(await files(join(cache, 'digests')));
        if (!r) return false;
        const text = await readFile(r);
        text[Math.floor(rand() * text.length)] = junk(1)[0]!;
        await writeFile(r, text);
        return true;
      },
      async partialFile() {
        // A leftover download of a known blob: a good prefix, a bad one, or longer than the blob.
        const b = pick(await finalBlobs());
        if (!b) return false;
        const bytes = await readFile(b);
        const cut = Math.floor(rand() * (bytes.length + 1));
        const kind = pick(['good', 'bad', 'long'] as const)!;
        const content = kind === 'good' ? bytes.subarray(0, cut) : kind === 'bad' ? junk(Math.min(cut, 4096)) : Buffer.concat([bytes, junk(10)]);
        const pid = pick([process.pid, 4_000_000])!;
        await writeFile(`${b}.${pid}-${junk(4).toString('hex')}.partial`, content);
        return true;
      },
      async tempFiles() {
        const where = pick([blobs, join(cache, 'refs'), join(cache, 'modules')])!;
        if (!existsSync(where)) return false;
        await writeFile(join(where, `junk.${process.pid}-${junk(4).toString('hex')}.tmp`), junk(100));
        return true;
      },
      async moduleFileCopy() {
        // A module file replaced by a damaged copy: no longer a link to its blob.
        const f = pick(await files(join(cache, 'modules')));
        if (!f) return false;
        const bytes = await readFile(f);
        if (bytes.length > 0) bytes[Math.floor(rand() * bytes.length)]! ^= 1 + Math.floor(rand() * 255);
        await writeFile(`${f}.new`, bytes);
        await rename(`${f}.new`, f);
        return true;
      },
      async deleteModuleManifest() {
        const f = pick(await files(join(cache, 'modules'), (n) => n === 'reasonplug.json'));
        if (!f) return false;
        await rm(f);
        return true;
      },
    };

    const tally = { damage: 0, online: 0, repaired: 0, offlineOk: 0, offlineRefused: 0 };
    const started = Date.now();
    for (let round = 0; round < ROUNDS; round++) {
      const n = Math.floor(rand() * 3);
      for (let i = 0; i < n; i++) if (await damage[pick(Object.keys(damage))!]!()) tally.damage++;
      const [ref, online, offlineMay] = pick(refs)!;
      const offline = rand() < 0.3;
      const what = `round ${round}: ${offline ? 'offline ' : ''}pull ${ref}`;
      let pulled;
      try {
        pulled = await pullModule(ref, { cacheDir: cache, offline });
      } catch (err) {
        // The registry is healthy, so only offline pulls may fail, and only by saying the module is not cached.
        expect(offline, `${what}: ${(err as Error).stack}`).to.equal(true);
        expect(err, what).to.be.instanceOf(NotCachedError);
        tally.offlineRefused++;
        continue;
      }
      if (offline) expect(offlineMay, what).to.include(pulled.digest);
      else expect(pulled.digest, what).to.equal(online);
      await expectSameModule(pulled.dir, originals.get(pulled.digest)!);
      if (offline) tally.offlineOk++;
      else tally.online++;
      tally.repaired += pulled.repaired.length;
    }
    // The run must have exercised every outcome, or it proves little.
    expect(tally.damage).to.be.greaterThan(ROUNDS / 2);
    expect(tally.repaired).to.be.greaterThan(0);
    expect(tally.offlineOk).to.be.greaterThan(0);
    expect(tally.offlineRefused).to.be.greaterThan(0);
    this.test!.title += ` [${JSON.stringify({ ...tally, ms: Date.now() - started })}]`;
  });
});
