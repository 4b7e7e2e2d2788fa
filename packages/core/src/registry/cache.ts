/**
 * The module cache, laid out like the Hugging Face hub cache and Ollama's:
 *
 *   blobs/sha256/<hex>                                 verified content: manifests, configs, module files
 *   blobs/sha256/<hex>.<pid>-<rand>.partial            a download in progress, or interrupted (resumable)
 *   refs/<registry>/<namespace>/<name>/<tag>           the manifest digest the tag pointed to when pulled
 *   modules/<registry>/<namespace>/<name>/sha256-<hex>/   the module directory of a manifest: its files
 *                                                       hard-linked (or copied) from blobs/ under their titles
 *
 * `<registry>` is `host_port` (":" is not allowed in Windows file names). Nothing appears under its final
 * name before it is complete: blobs are verified before their rename, module directories are assembled
 * under a temp name and renamed, refs are written atomically. So a killed process or two processes
 * pulling together can leave only temp files behind, never a wrong file under a final name.
 */
import { copyFile, link, mkdir, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { MANIFEST_FILE } from '../modules/manifest.js';
import { uniqueSuffix, writeFileAtomic } from './atomic.js';

const hexOf = (digest: string) => digest.slice('sha256:'.length);
const registryDir = (registry: string) => registry.replaceAll(':', '_');

export class ModuleCache {
  constructor(readonly root: string) {}

  get blobsDir(): string {
    return join(this.root, 'blobs', 'sha256');
  }

  blobPath(digest: string): string {
    return join(this.blobsDir, hexOf(digest));
  }

  /** Size of a cached blob, or undefined when it is not cached. */
  async blobSize(digest: string): Promise<number | undefined> {
    try {
      return (await stat(this.blobPath(digest))).size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  /** Stores bytes already verified against `digest` (manifests and configs, which are read whole). */
  async putBlob(digest: string, bytes: Uint8Array): Promise<void> {
    await writeFileAtomic(this.blobPath(digest), bytes);
  }

  async readBlob(digest: string): Promise<Buffer> {
    return readFile(this.blobPath(digest));
  }

  private refPath(registry: string, repository: string, tag: string): string {
    return join(this.root, 'refs', registryDir(registry), ...repository.split('/'), tag);
  }

  async readRef(registry: string, repository: string, tag: string): Promise<string | undefined> {
    try {
      return (await readFile(this.refPath(registry, repository, tag), 'utf8')).trim();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
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
      // Skip nested repositories and temp files of refs being written.
      if (!e.isFile() || e.name.endsWith('.tmp')) continue;
      const digest = await this.readRef(registry, repository, e.name);
      if (digest) out.set(e.name, digest);
    }
    return out;
  }

  moduleDir(registry: string, repository: string, digest: string): string {
    return join(this.root, 'modules', registryDir(registry), ...repository.split('/'), `sha256-${hexOf(digest)}`);
  }

  /** Whether the module directory of a manifest is complete (it only ever appears complete). */
  async hasModule(registry: string, repository: string, digest: string): Promise<boolean> {
    try {
      await stat(join(this.moduleDir(registry, repository, digest), MANIFEST_FILE));
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
  }

  /**
   * Assembles the module directory of manifest `digest` from cached blobs: the config as `reasonplug.json`
   * and each file under its path. Every blob must be cached; paths must be validated relative paths.
   */
  async materialise(
    registry: string,
    repository: string,
    digest: string,
    config: string,
    files: readonly { path: string; digest: string }[],
  ): Promise<string> {
    const dir = this.moduleDir(registry, repository, digest);
    if (await this.hasModule(registry, repository, digest)) return dir;
    const tmp = `${dir}.${uniqueSuffix()}.tmp`;
    try {
      await mkdir(tmp, { recursive: true });
      for (const f of files) {
        await mkdir(dirname(join(tmp, f.path)), { recursive: true });
        await linkOrCopy(this.blobPath(f.digest), join(tmp, f.path));
      }
      await linkOrCopy(this.blobPath(config), join(tmp, MANIFEST_FILE));
      await rename(tmp, dir);
    } catch (err) {
      await rm(tmp, { recursive: true, force: true });
      const code = (err as NodeJS.ErrnoException).code;
      // Another process renamed its copy into place first; theirs is as good as ours.
      if ((code === 'ENOTEMPTY' || code === 'EEXIST') && (await this.hasModule(registry, repository, digest))) return dir;
      throw err;
    }
    return dir;
  }

  /** Removes a module directory that turned out incomplete (a file deleted by hand), so it can be assembled again. */
  async dropModule(registry: string, repository: string, digest: string): Promise<void> {
    const dir = this.moduleDir(registry, repository, digest);
    const doomed = `${dir}.${uniqueSuffix()}.tmp`;
    // Renamed away first, so no other process sees it half-deleted.
    await rename(dir, doomed).catch(() => {});
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
