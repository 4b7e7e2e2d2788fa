/**
 * Writes that fail part way, on both sides of a transfer. A pull into a cache that cannot take a file (here a real
 * file-size limit, `ulimit -f`, on the pulling process: its last write comes back short, and the next fails with
 * EFBIG) must stop with a `CacheWriteError` naming the cache file and the cause, never link fewer bytes under a
 * blob's name, and keep what it wrote for the next pull. A push whose upload fails (a registry process under a
 * file-size limit; a file that cannot be read on after chunks went up) must cancel its session, so that the registry
 * does not keep its parts. (A PATCH refused after one was stored: registry-chunked-upload.test.ts.)
 */
import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fromSources } from '../../../test/support/paths.js';
import { sha256Digest } from '../src/registry/artifact.js';
import { ModuleCache } from '../src/registry/cache.js';
import { RegistryClient } from '../src/registry/client.js';
import type { TransferProgress } from '../src/registry/download.js';
import { CacheWriteError, RegistryResponseError } from '../src/registry/errors.js';
import { pullModule } from '../src/registry/pull.js';
import { pushModule } from '../src/registry/push.js';
import { rejection } from './support/assertions.js';
import { cliPath } from './support/cli.js';
import { testDir } from './support/models.js';
import { bytesOf, freePort, makeRegistryModule, startOurRegistry, type OurRegistry } from './support/registries.js';

const MiB = 1 << 20;
const registryCli = fileURLToPath(new URL('../../registry-server/src/cli.ts', import.meta.url));

/** Runs `command` with a file-size limit of `kib` KiB (`ulimit -f`), as a user's shell would. */
function limited(kib: number, command: string[], env: Record<string, string> = {}): ChildProcess {
  return spawn('bash', ['-c', 'ulimit -f "$1" && shift && exec "$@"', 'limited', String(kib), ...command], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/** What a child process wrote to stderr, and its exit code. */
async function finished(child: ChildProcess): Promise<{ code: number | null; stderr: string }> {
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdout!.resume();
  const [code] = (await once(child, 'exit')) as [number | null];
  return { code, stderr };
}

/** The upload sessions a reasonplug-registry at `root` holds for `repository`. */
async function sessions(root: string, repository: string): Promise<string[]> {
  return readdir(join(root, 'repositories', repository, '_uploads')).catch(() => []);
}

describe('a pull into a cache that cannot take the bytes', function () {
  this.timeout(120_000);
  let registry: OurRegistry;
  before(async () => (registry = await startOurRegistry()));
  after(() => registry?.close());

  it('stops at a file-size limit with a CacheWriteError naming the cache file, links nothing, and the next pull goes on from what was written', async () => {
    const dir = await makeRegistryModule({ name: 'limited', files: { 'weights.bin': 3 * MiB + 5000 } });
    const ref = `${registry.host}/acme/limited:1.0.0`;
    await pushModule(dir, ref);
    const weights = sha256Digest(await readFile(join(dir, 'weights.bin')));
    const cache = join(testDir('write-limit'), 'cache');
    const blob = new ModuleCache(cache).blobPath(weights);

    // The limit falls 5000 bytes short of the end of weights.bin, and above every other file of the pull.
    const pull = await finished(limited(3 * 1024, [process.execPath, ...fromSources, cliPath, 'pull', ref], { REASONPLUG_CACHE: cache }));
    expect(pull.code, pull.stderr).to.equal(1);
    expect(pull.stderr).to.include(`CacheWriteError: cannot write weights.bin (${weights}) into the cache (${blob}.`);
    expect(pull.stderr).to.include('EFBIG').and.include('ulimit -f').and.not.include('broke off');
    expect(existsSync(blob), 'no blob under its name').to.equal(false);
    expect(existsSync(join(cache, 'modules')), 'no module directory').to.equal(false);

    const progress: TransferProgress[] = [];
    const pulled = await pullModule(ref, { cacheDir: cache, onProgress: (p) => progress.push(p) });
    expect(progress.filter((p) => p.file === 'weights.bin').map((p) => p.resumedFrom)).to.include(3 * MiB);
    expect(sha256Digest(await readFile(blob))).to.equal(weights);
    expect(sha256Digest(await readFile(join(pulled.dir, 'weights.bin')))).to.equal(weights);
  });

  it("says which ref file a cache cannot take, as a CacheWriteError", async () => {
    const dir = await makeRegistryModule({ name: 'unref', files: { 'weights.bin': 10_000 } });
    const ref = `${registry.host}/acme/unref:1.0.0`;
    await pushModule(dir, ref);
    const cache = testDir('ref-blocked');
    // A folder where the ref's file goes: the rename of its temp file onto it fails.
    const refFile = join(cache, 'refs', registry.host.replace(':', '_'), 'acme', 'unref', '1.0.0');
    await mkdir(join(refFile, 'x'), { recursive: true });
    const err = await rejection(pullModule(ref, { cacheDir: cache }));
    expect(err).to.be.instanceOf(CacheWriteError);
    expect((err as CacheWriteError).path).to.equal(refFile);
    expect(err.message).to.include(`cannot write the ref 1.0.0 of ${registry.host}/acme/unref into the cache (${refFile})`);
  });
});

describe('a failed push', function () {
  this.timeout(120_000);
  let child: ChildProcess | undefined;
  let host = '';
  let root = '';
  /** reasonplug-registry in a process of its own whose files may not exceed 1 MiB (`ulimit -f 1024`). */
  before(async () => {
    root = join(testDir('limited-registry'), 'data');
    const port = await freePort();
    host = `127.0.0.1:${port}`;
    child = limited(1024, [process.execPath, ...fromSources, registryCli, 'serve', '--data', root, '--port', String(port), '--log-level', 'fatal']);
    child.stdout!.resume();
    child.stderr!.resume();
    for (let tries = 0; !(await fetch(`http://${host}/healthz`).then((r) => r.ok, () => false)); tries++) {
      if (tries > 300 || child.exitCode !== null) throw new Error(`the registry did not start (exit ${child.exitCode})`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  });
  after(async () => {
    if (child && child.exitCode === null) {
      child.kill('SIGTERM');
      await once(child, 'exit');
    }
  });

  it('cancels its upload session where the registry fails a chunk or the single PUT, and reports that failure', async () => {
    const client = new RegistryClient({ registry: host, uploadChunkBytes: 2 * MiB });
    // Chunks of 2 MiB: the registry cannot store even the first one.
    for (const size of [3 * MiB, 1.5 * MiB]) {
      const bytes = bytesOf(size, size);
      const descriptor = { mediaType: 'application/octet-stream', digest: sha256Digest(bytes), size };
      const err = await rejection(client.uploadBlob('acme/limited', descriptor, () => bytes));
      expect(err, `${size} bytes`).to.be.instanceOf(RegistryResponseError);
      expect((err as RegistryResponseError).status).to.be.at.least(500);
      expect(await sessions(root, 'acme/limited'), `${size} bytes`).to.deep.equal([]);
    }
  });
});

describe('a push whose file cannot be read to its end', function () {
  this.timeout(60_000);
  let registry: OurRegistry;
  before(async () => (registry = await startOurRegistry()));
  after(() => registry?.close());

  it('cancels the session holding the chunks already sent', async () => {
    const client = new RegistryClient({ registry: registry.host, uploadChunkBytes: MiB });
    const bytes = bytesOf(3 * MiB, 5);
    const descriptor = { mediaType: 'application/octet-stream', digest: sha256Digest(bytes), size: bytes.length };
    // The source breaks off after two chunks went up (a file that could not be read on).
    const err = await rejection(
      client.uploadBlob('acme/partway', descriptor, async function* () {
        yield bytes.subarray(0, 2 * MiB + 1);
        throw new Error('EIO: i/o error, read');
      }),
    );
    expect(err.message).to.equal('EIO: i/o error, read');
    expect(await sessions(registry.root, 'acme/partway')).to.deep.equal([]);
  });
});
