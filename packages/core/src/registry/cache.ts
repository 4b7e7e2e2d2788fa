/**
 * The module cache, laid out like the Hugging Face hub cache and Ollama's:
 *
 *   blobs/sha256/<hex>                                 verified content: manifests, configs, module files
 *   blobs/sha256/<hex>.<pid>-<rand>.partial            a download in progress, or interrupted (resumable)
 *   refs/<registry>/<namespace>/<name>/<tag>           the manifest digest the tag pointed to when pulled
 *   modules/<registry>/<namespace>/<name>/sha256-<hex>/   the module directory of a manifest: its files
 *                                                       hard-linked (or copied) from blobs/ under their titles
 *   modules/…/sha256-<hex>.<pid>-<rand>.tmp            one being assembled or removed, or left by a dead process
 *   digests/<dev>-<ino>.json                           stat records of verified files (modules/file-digest.ts)
 *
 * `<registry>` is `host_port` (":" is not allowed in Windows file names). Nothing appears under its final
 * name before it is complete: blobs are verified before their rename, module directories are assembled
 * under a temp name and renamed, refs are written atomically. So a killed process or two processes
 * pulling together can leave only temp files behind, never a wrong file under a final name.
 *
 * What is under a final name is still not trusted: disks, tools and people change files. A blob counts as
 * present only when its content verifies against its name. Small blobs (manifests, configs) are hashed on
 * every read; large ones are checked through a stat record (file-digest.ts) that no change of bytes
 * through the file system survives (it holds ctime, which nothing can set back), so reusing a verified
 * multi-GB blob costs a `stat` and not a read of every byte. A blob that fails is fetched again and
 * renamed over the bad one; a module directory whose files are not the verified blobs is rebuilt.
 */
import { existsSync } from 'node:fs';
import { copyFile, link, mkdir, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { checkFile } from '../modules/file-digest.js';
import { MANIFEST_FILE } from '../modules/manifest.js';
import { sha256Digest } from './artifact.js';
import { uniqueSuffix, writeFileAtomic } from './atomic.js';
import { sweepTemps } from './download.js';
import { InvalidReferenceError, RegistryClientError } from './errors.js';
import { TAG } from './reference.js';
import { makeDirectory } from '../modules/make-directory.js';

const hexOf = (digest: string) => digest.slice('sha256:'.length);
const registryDir = (registry: string) => registry.replaceAll(':', '_');
/** A `sha256:` digest as the cache writes it in refs and names blobs by. */
export const DIGEST = /^sha256:[0-9a-f]{64}$/;
/** A module directory's name (see {@link ModuleCache.moduleDir}). */
export const MODULE_DIR = /^sha256-[0-9a-f]{64}$/;

/** What the cache holds under a blob's name: nothing, the verified content, or something else (corrupt). */
export type BlobState = 'absent' | 'verified' | 'corrupt';

/**
 * A blob a module directory was to be assembled from was removed after the caller verified it (a `reasonplug cache
 * clear` in between): the cache cannot make the module without fetching it again, so pulling again does.
 */
export class BlobRemovedError extends RegistryClientError {
  override name = 'BlobRemovedError';
  constructor(
    message: string,
    /** The `sha256:` digest of the blob that is gone. */
    readonly digest: string,
  ) {
    super(message);
  }
}

/** A file of a module directory and the blob it is made from. */
export interface ModuleFile {
  /** The file's path in the module directory. */
  path: string;
  /** The `sha256:` digest of its blob. */
  digest: string;
}

/**
 * The module cache under `root` (layout in the module comment): content-addressed blobs that count only once they
 * verify, tag refs, and module directories assembled from the blobs.
 */
export class ModuleCache {
  /** The cache at `root` (e.g. `$REASONPLUG_CACHE`); nothing is read or created until a call needs it. */
  constructor(readonly root: string) {}

  get blobsDir(): string {
    return join(this.root, 'blobs', 'sha256');
  }

  /** Where stat records of this cache's verified files are kept. */
  get digestsDir(): string {
    return join(this.root, 'digests');
  }

  blobPath(digest: string): string {
    return join(this.blobsDir, hexOf(digest));
  }

  /**
   * Whether blob `digest` of `size` bytes is cached with its content. A wrong size or a wrong digest is
   * `corrupt` (the caller fetches it again and renames the good copy over it); anything but a regular file
   * under the blob's name is removed.
   */
  async blobState(digest: string, size: number): Promise<BlobState> {
    const path = this.blobPath(digest);
    let info;
    try {
      info = await stat(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'absent';
      throw err;
    }
    if (!info.isFile()) {
      await rm(path, { recursive: true, force: true });
      return 'corrupt';
    }
    if (info.size !== size) return 'corrupt';
    return (await checkFile(path, hexOf(digest), undefined, this.digestsDir)).sha256 === hexOf(digest) ? 'verified' : 'corrupt';
  }

  /** Stores bytes already verified against `digest` (manifests and configs, which are read whole). */
  async putBlob(digest: string, bytes: Uint8Array): Promise<void> {
    const path = this.blobPath(digest);
    // A directory under the blob's name would make the rename fail.
    if ((await stat(path).catch(() => undefined))?.isDirectory()) await rm(path, { recursive: true, force: true });
    await writeFileAtomic(path, bytes);
  }

  /** A small blob (manifest, config) read whole and hashed; undefined when it is not cached or does not verify. */
  async readSmallBlob(digest: string): Promise<Buffer | undefined> {
    let bytes: Buffer;
    try {
      bytes = await readFile(this.blobPath(digest));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'EISDIR') return undefined;
      throw err;
    }
    return sha256Digest(bytes) === digest ? bytes : undefined;
  }

  /** The file a tag's ref is kept in (`InvalidReferenceError` for a string no tag can be). */
  refPath(registry: string, repository: string, tag: string): string {
    // The tag becomes a file name: a tag from a registry must never name a path ("../..") outside the cache.
    if (!TAG.test(tag)) throw new InvalidReferenceError(`${JSON.stringify(tag)} is not a tag, so it cannot name a ref in the cache at ${this.root}`);
    return join(this.root, 'refs', registryDir(registry), ...repository.split('/'), tag);
  }

  /** The manifest digest recorded for a tag; undefined when there is none or the ref file does not hold a digest. */
  async readRef(registry: string, repository: string, tag: string): Promise<string | undefined> {
    let text: string;
    try {
      text = (await readFile(this.refPath(registry, repository, tag), 'utf8')).trim();
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'EISDIR') return undefined;
      throw err;
    }
    // A damaged ref is no ref: its text must never become a path.
    return DIGEST.test(text) ? text : undefined;
  }

  async writeRef(registry: string, repository: string, tag: string, digest: string): Promise<void> {
    await writeFileAtomic(this.refPath(registry, repository, tag), `${digest}\n`);
  }

  /** Every tag recorded for a repository, with its digest. */
  async refs(registry: string, repository: string): Promise<Map<string, string>> {
    const dir = dirname(this.refPath(registry, repository, 'x'));
    const out = new Map<string, string>();
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return out;
      throw err;
    }
    for (const e of entries) {
      // Skip nested repositories, temp files of refs being written, and files no tag names.
      if (!e.isFile() || e.name.endsWith('.tmp') || !TAG.test(e.name)) continue;
      const digest = await this.readRef(registry, repository, e.name);
      if (digest) out.set(e.name, digest);
    }
    return out;
  }

  /** The directory a repository's module directories are in. */
  repositoryDir(registry: string, repository: string): string {
    return join(this.root, 'modules', registryDir(registry), ...repository.split('/'));
  }

  /** The manifest digests of a repository's module directories (nested repositories' are theirs). */
  async manifests(registry: string, repository: string): Promise<string[]> {
    let entries;
    try {
      entries = await readdir(this.repositoryDir(registry, repository), { withFileTypes: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    // (temp directories of pulls under way, or of dead ones, end in `.tmp` and are no module)
    return entries.filter((e) => e.isDirectory() && MODULE_DIR.test(e.name)).map((e) => `sha256:${e.name.slice('sha256-'.length)}`);
  }

  moduleDir(registry: string, repository: string, digest: string): string {
    return join(this.repositoryDir(registry, repository), `sha256-${hexOf(digest)}`);
  }

  /**
   * The module directory of manifest `digest`, assembled from cached blobs (the config as `reasonplug.json`,
   * each file under its path) unless a good one is there. The caller has verified every blob (`blobState`)
   * in this process; an existing directory is good when each file is one of those blobs (the same inode,
   * as a hard link is) or, for copies, verifies against the blob's digest. A bad one is replaced, and the temp
   * directories of dead processes beside it are swept. A blob removed meanwhile is a `BlobRemovedError`.
   * Paths must be validated relative paths. Returns the directory and whether it was (re)built.
   */
  async materialise(
    registry: string,
    repository: string,
    digest: string,
    config: string,
    files: readonly ModuleFile[],
  ): Promise<{ dir: string; built: boolean }> {
    const dir = this.moduleDir(registry, repository, digest);
    const all = [...files, { path: MANIFEST_FILE, digest: config }];
    // (best effort: a cache this process cannot write still serves the modules it holds)
    await sweepTemps(dir).catch(() => {});
    const state = await this.moduleState(dir, all);
    if (state === 'good') return { dir, built: false };
    if (state === 'bad') await this.dropModule(registry, repository, digest);
    const tmp = `${dir}.${uniqueSuffix()}.tmp`;
    try {
      await makeDirectory(tmp);
      for (const f of all) {
        await mkdir(dirname(join(tmp, f.path)), { recursive: true });
        const blob = this.blobPath(f.digest);
        await linkOrCopy(blob, join(tmp, f.path)).catch((err: unknown) => {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || existsSync(blob)) throw err;
          throw new BlobRemovedError(
            `${f.path} (${f.digest}) was removed from the cache at ${this.root} after it was verified, before the module ${registry}/${repository}@${digest} was assembled from it (a \`reasonplug cache clear\` meanwhile?); pull it again`,
            f.digest,
          );
        });
      }
      await rename(tmp, dir);
    } catch (err) {
      await rm(tmp, { recursive: true, force: true });
      const code = (err as NodeJS.ErrnoException).code;
      // Another process renamed its copy into place first; theirs is as good as ours.
      if ((code === 'ENOTEMPTY' || code === 'EEXIST') && (await this.moduleState(dir, all)) === 'good') return { dir, built: false };
      throw err;
    }
    return { dir, built: true };
  }

  /** Whether a module directory is there (`reasonplug.json` appears last) and every file in it is its blob's content. */
  private async moduleState(dir: string, files: readonly ModuleFile[]): Promise<'missing' | 'good' | 'bad'> {
    const entry = async (path: string) => stat(path, { bigint: true }).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return undefined;
      throw err;
    });
    // The directory first: another process renames its complete copy into place at once, so a directory seen
    // before its manifest is looked for is complete unless it is damaged; looked for the other way round, a copy
    // renamed in between would read as a directory without its manifest, and be dropped under its puller.
    if (!(await entry(dir))) return 'missing';
    if (!(await entry(join(dir, MANIFEST_FILE)))) return 'bad';
    for (const f of files) {
      const path = join(dir, f.path);
      const [mine, blob] = await Promise.all([entry(path), entry(this.blobPath(f.digest))]);
      if (!mine?.isFile()) return 'bad';
      if (blob && mine.dev === blob.dev && mine.ino === blob.ino) continue;
      if ((await checkFile(path, hexOf(f.digest), undefined, this.digestsDir)).sha256 !== hexOf(f.digest)) return 'bad';
    }
    return 'good';
  }

  /** Removes a module directory, so it can be assembled again. */
  async dropModule(registry: string, repository: string, digest: string): Promise<void> {
    const dir = this.moduleDir(registry, repository, digest);
    const doomed = `${dir}.${uniqueSuffix()}.tmp`;
    // Renamed away first, so no other process sees it half-deleted; one that is not there is already gone.
    await rename(dir, doomed).catch((err: unknown) => {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    });
    await rm(doomed, { recursive: true, force: true });
  }
}

/** Hard link, or a copy where links are impossible (another file system, no link support). */
async function linkOrCopy(from: string, to: string): Promise<void> {
  try {
    await link(from, to);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EXDEV' && code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EMLINK') throw err;
    await copyFile(from, to);
  }
}
