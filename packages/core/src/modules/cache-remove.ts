/**
 * Removing pulled modules from the module cache (`reasonplug cache rm`; registry/cache.ts has its layout), as `ollama rm`
 * and `docker image rm` do. References resolve against the cache's refs alone, never a registry. A removed module's
 * directory and the refs to it go; of its blobs, those no module that stays uses. What stays is read from the
 * manifests and module directories left, not from link counts (a copied cache has none); while any pull is under
 * way no blob goes, as `cache clear` keeps them.
 */
import { readdir, readFile, rm, rmdir, stat } from 'node:fs/promises';
import { dirname, join, sep } from 'node:path';
import { Annotations, MAX_MANIFEST_BYTES, parseArtifact, sha256Digest } from '../registry/artifact.js';
import { DIGEST, MODULE_DIR, ModuleCache } from '../registry/cache.js';
import { CacheWriteError, ModuleNotFoundError } from '../registry/errors.js';
import { formatRef, parseRef, type ModuleRef } from '../registry/reference.js';
import { resolveCached } from '../registry/resolve.js';
import { settingsFrom } from '../registry/settings.js';
import { anyLive } from './cache-usage.js';
import { cacheRoot } from './cache-root.js';
import { MANIFEST_FILE, parseManifest } from './manifest.js';

/** One module (a manifest of a repository) removed. */
export interface RemovedModule {
  registry: string;
  repository: string;
  /** Manifest digest. */
  digest: string;
  /** Its version, where its cached manifest says. */
  version?: string;
  /** The tags whose refs pointed to it, removed with it. */
  tags: string[];
}

/** What {@link removeModules} removed. */
export interface RemoveOutcome {
  /** Each reference as given, whether it named a whole repository (a bare name), and the modules it removed. */
  removed: { ref: string; wholeRepository: boolean; modules: RemovedModule[] }[];
  /** Blobs of the removed modules that were removed, and those kept because modules that stay use them. */
  blobs: { removed: number; shared: number };
  /** Whether all their blobs were kept because a pull is under way, which links the blobs it verified (clear again once it ends). */
  blobsKept: boolean;
}

/** A reference resolved against the cache: a repository's manifests to remove. */
interface Target {
  ref: string;
  wholeRepository: boolean;
  registry: string;
  name: string;
  digests: string[];
}

const BLOB_NAME = /^[0-9a-f]{64}$/;

/** Whether a reference names a repository alone: no `:tag` on its last component and no `@…` (parseRef reads that as `:latest`). */
const namesRepository = (text: string) => !text.includes('@') && !text.split('/').at(-1)!.includes(':');

/**
 * Removes the modules `refs` name from the module cache at `root` (default: the cache root): `:tag` the manifest its
 * ref points to, `@sha256:…` that manifest, `@version` or `@range` the cached version a pull offline would take, a bare
 * name every cached manifest of the repository. Each goes with every ref of its repository pointing to it. All
 * references resolve before anything is removed: one that is not cached is a `ModuleNotFoundError` naming it, and
 * nothing is removed. `registry` (default `$REASONPLUG_REGISTRY`) applies to references that name none.
 */
export async function removeModules(refs: readonly string[], opts: { registry?: string; root?: string } = {}): Promise<RemoveOutcome> {
  const cache = new ModuleCache(opts.root ?? cacheRoot());
  const targets: Target[] = [];
  const missing: string[] = [];
  const registry = settingsFrom(opts.registry !== undefined ? { registry: opts.registry } : {}).registry;
  for (const text of refs) {
    const ref = parseRef(text, registry);
    const wholeRepository = namesRepository(text);
    const digests = await cachedDigests(cache, ref, wholeRepository);
    if (digests.length === 0) missing.push(wholeRepository ? `${ref.registry}/${ref.repository}` : formatRef(ref));
    targets.push({ ref: text, wholeRepository, registry: ref.registry, name: ref.repository, digests });
  }
  if (missing.length > 0) throw new ModuleNotFoundError(`not in the cache at ${cache.root}: ${missing.join(', ')}; nothing was removed`);

  const done = new Set<string>();
  const candidates = new Set<string>();
  const removed: RemoveOutcome['removed'] = [];
  for (const t of targets) {
    const modules: RemovedModule[] = [];
    for (const digest of t.digests) {
      const key = `${t.registry}/${t.name}@${digest}`;
      if (done.has(key)) continue;
      done.add(key);
      const manifest = await manifestBlobs(cache, digest);
      const dir = cache.moduleDir(t.registry, t.name, digest);
      const files = await directoryBlobs(dir);
      for (const blob of [digest, ...(manifest?.blobs ?? []), ...files]) candidates.add(blob);
      const tags: string[] = [];
      // (the directory first: a ref goes only with its module, so a failure leaves a module its refs still name)
      await removal(cache.dropModule(t.registry, t.name, digest), dir, `${t.registry}/${t.name}@${digest}`, removed);
      for (const [tag, to] of await cache.refs(t.registry, t.name)) {
        if (to !== digest) continue;
        const ref = cache.refPath(t.registry, t.name, tag);
        await removal(rm(ref, { force: true }), ref, `the ref ${tag} of ${t.registry}/${t.name}`, removed);
        tags.push(tag);
      }
      modules.push({ registry: t.registry, repository: t.name, digest, ...(manifest?.version !== undefined ? { version: manifest.version } : {}), tags: tags.sort() });
    }
    removed.push({ ref: t.ref, wholeRepository: t.wholeRepository, modules });
    await pruneEmpty(cache.repositoryDir(t.registry, t.name), join(cache.root, 'modules'));
    await pruneEmpty(dirname(cache.refPath(t.registry, t.name, 'latest')), join(cache.root, 'refs'));
  }

  // A pull under way (its downloads, or its temp module directory or ref once they end) links the blobs it verified.
  const live = await Promise.all(['blobs', 'modules', 'refs'].map((d) => anyLive(join(cache.root, d))));
  if (live.some(Boolean)) return { removed, blobs: { removed: 0, shared: 0 }, blobsKept: true };
  const used = await usedBlobs(cache, new Set(removed.flatMap((r) => r.modules.map((m) => m.digest))));
  let gone = 0;
  for (const digest of candidates) {
    if (used.has(digest)) continue;
    await removal(rm(cache.blobPath(digest), { force: true }), cache.blobPath(digest), `the blob ${digest}`, removed);
    gone++;
  }
  return { removed, blobs: { removed: gone, shared: candidates.size - gone }, blobsKept: false };
}

/**
 * Awaits one removal; its file system failure becomes a `CacheWriteError` naming `what` could not be removed (at `path`)
 * and the modules removed before it, so that a cache left part-way is described as it is.
 */
async function removal(done: Promise<void>, path: string, what: string, removed: RemoveOutcome['removed']): Promise<void> {
  try {
    await done;
  } catch (err) {
    const before = removed.flatMap((r) => r.modules.map((m) => `${m.registry}/${m.repository}@${m.digest}`));
    if (!(err instanceof Error)) throw err;
    const so = before.length > 0 ? `${before.join(', ')} removed before it` : 'nothing removed before it';
    throw new CacheWriteError(`cannot remove ${what} from the cache (${path}): ${err.message}; ${so}`, path, (err as NodeJS.ErrnoException).code, { cause: err });
  }
}

/** The manifest digests of `ref` the cache holds a module directory or a ref of (every one, for `wholeRepository`). */
async function cachedDigests(cache: ModuleCache, ref: ModuleRef, wholeRepository: boolean): Promise<string[]> {
  const dirs = await cache.manifests(ref.registry, ref.repository);
  const tagged = [...(await cache.refs(ref.registry, ref.repository)).values()];
  const held = [...new Set([...dirs, ...tagged])];
  if (wholeRepository) return held;
  const s = ref.selector;
  if (s.type === 'digest') return held.includes(s.digest) ? [s.digest] : [];
  const found = await resolveCached(cache, ref);
  return found ? [found.digest] : [];
}

/** The blobs a cached manifest names (its config and layers) and its version; undefined when it is not cached intact. */
async function manifestBlobs(cache: ModuleCache, digest: string): Promise<{ blobs: string[]; version?: string } | undefined> {
  const bytes = await cache.readSmallBlob(digest);
  if (!bytes) return undefined;
  try {
    const m = parseArtifact(bytes, `${digest} (cached)`);
    const version = m.annotations?.[Annotations.version];
    return { blobs: [m.config.digest, ...m.layers.map((l) => l.digest)], ...(version !== undefined ? { version } : {}) };
  } catch {
    // Verified bytes that are no module manifest (a config, a small module file): they name no blob.
    return undefined;
  }
}

/** The blobs a module directory is made of, by its own `reasonplug.json`: that file and every file it lists. */
async function directoryBlobs(dir: string): Promise<string[]> {
  let bytes: Buffer;
  try {
    bytes = await readFile(join(dir, MANIFEST_FILE));
  } catch {
    return [];
  }
  try {
    const manifest = parseManifest(JSON.parse(bytes.toString('utf8')), join(dir, MANIFEST_FILE));
    return [sha256Digest(bytes), ...Object.values(manifest.files).map((f) => `sha256:${f.sha256}`)];
  } catch {
    // A damaged directory: its manifest blob, where cached, still says what it is made of.
    return [];
  }
}

/**
 * Every blob a module that stays uses: the manifests module directories and refs name, what each module directory is
 * made of, and the manifests cached as blobs (a pull by digest assembles a module from one offline) with their configs
 * and layers, but for the `removed` manifests that nothing left names.
 */
async function usedBlobs(cache: ModuleCache, removed: ReadonlySet<string>): Promise<Set<string>> {
  const used = new Set<string>();
  for (const dir of await moduleDirs(join(cache.root, 'modules'))) {
    used.add(`sha256:${dir.slice(dir.lastIndexOf('sha256-') + 'sha256-'.length)}`);
    for (const blob of await directoryBlobs(dir)) used.add(blob);
  }
  for (const digest of await refDigests(join(cache.root, 'refs'))) used.add(digest);
  let names: string[] = [];
  try {
    names = (await readdir(cache.blobsDir)).filter((n) => BLOB_NAME.test(n));
  } catch {
    // no blobs
  }
  for (const digest of names.map((n) => `sha256:${n}`)) {
    if (removed.has(digest) && !used.has(digest)) continue;
    const size = (await stat(cache.blobPath(digest)).catch(() => undefined))?.size;
    if (size === undefined || size > MAX_MANIFEST_BYTES) continue;
    const manifest = await manifestBlobs(cache, digest);
    if (manifest) for (const blob of [digest, ...manifest.blobs]) used.add(blob);
  }
  return used;
}

/** The module directories under `path`, at any depth (repositories nest). */
async function moduleDirs(path: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(path, { withFileTypes: true }).catch(() => [])) {
    if (!e.isDirectory()) continue;
    // (a temp module directory is walked as a repository: "x.tmp" can name one, and it holds no module directory)
    if (MODULE_DIR.test(e.name)) out.push(join(path, e.name));
    else out.push(...(await moduleDirs(join(path, e.name))));
  }
  return out;
}

/** The manifest digests the refs under `path` hold, at any depth (those being written too: what they name stays). */
async function refDigests(path: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(path, { withFileTypes: true }).catch(() => [])) {
    const child = join(path, e.name);
    if (e.isDirectory()) out.push(...(await refDigests(child)));
    else if (e.isFile()) {
      const text = (await readFile(child, 'utf8').catch(() => '')).trim();
      if (DIGEST.test(text)) out.push(text);
    }
  }
  return out;
}

/** Removes `dir` and its parents up to `stop` (kept) while they are empty. */
async function pruneEmpty(dir: string, stop: string): Promise<void> {
  for (let d = dir; d.startsWith(`${stop}${sep}`); d = dirname(d)) {
    try {
      await rmdir(d);
    } catch {
      // Not empty (another repository, a pull under way), or gone already.
      return;
    }
  }
}
