/**
 * `pull`: a module reference to a verified module directory in the cache. The manifest and config are
 * checked (size, digest, shape, the version asked for, files against layers) before any layer is fetched;
 * layers are verified as they stream in (see download.ts); the directory appears only once complete. Nothing
 * cached is taken on trust: every blob a pull reuses is checked against its digest first (cache.ts says how,
 * cheaply), and a bad one is fetched again and the module directory rebuilt from good blobs.
 */
import { loadModuleDir, type LoadedModule } from '../modules/module-dir.js';
import { matchLayers, parseArtifact, parseConfig, type OciManifest } from './artifact.js';
import { BlobRemovedError, ModuleCache, type ModuleFile } from './cache.js';
import { RegistryClient } from './client.js';
import { cacheWriteError, downloadBlob, type TransferProgress } from './download.js';
import { InvalidArtifactError, NotCachedError } from './errors.js';
import { forEachBounded } from './parallel.js';
import { formatRef, parseRef, tagVersion, versionTag, type ModuleRef } from './reference.js';
import { resolveCached, resolveTarget } from './resolve.js';
import { settingsFrom, type RegistryOptions } from './settings.js';

/** Options of {@link pullModule}: the registry settings, and progress and cancellation. */
export interface PullOptions extends RegistryOptions {
  /** Called as each file's bytes arrive, for a progress bar. */
  onProgress?: (p: TransferProgress) => void;
  /** Cancels the pull: it rejects, and no module directory is written. */
  signal?: AbortSignal;
}

/** A pulled module: its verified directory in the cache and what it was pulled as. */
export interface PulledModule {
  /** The module directory, ready for `Engine.load({ model })`. */
  dir: string;
  /** `host[:port]` it was pulled from. */
  registry: string;
  /** `namespace/name`. */
  repository: string;
  /** The module's exact version (its manifest's `version`). */
  version: string;
  /** Manifest digest. */
  digest: string;
  /** The reference pinned to its digest: `registry/namespace/name@sha256:...`. */
  pinned: string;
  /** True when nothing was downloaded. */
  cached: boolean;
  /** Files whose cached copy failed verification and were downloaded again (paths in the module). */
  repaired: string[];
}

/** Layers downloaded at once. */
const CONCURRENCY = 4;

/**
 * Pulls a module into the cache and returns its directory. Offline (option or `REASONPLUG_OFFLINE=1`),
 * reads the cache only and throws `NotCachedError` when the module is not there, or not intact.
 */
export async function pullModule(spec: string | ModuleRef, opts: PullOptions = {}): Promise<PulledModule> {
  const s = settingsFrom(opts);
  const ref = typeof spec === 'string' ? parseRef(spec, s.registry) : spec;
  const cache = new ModuleCache(s.cacheDir);
  const { registry, repository } = ref;
  const result = (loaded: LoadedModule, digest: string, cached: boolean, repaired: string[] = []): PulledModule => ({
    dir: loaded.dir,
    registry,
    repository,
    version: loaded.manifest.version,
    digest,
    pinned: formatRef({ registry, repository, selector: { type: 'digest', digest } }),
    cached,
    repaired,
  });

  if (s.offline) {
    const found = await resolveCached(cache, ref);
    const loaded = found && (await fromCache(cache, ref, found.digest, found.tag));
    if (!found || !loaded) {
      throw new NotCachedError(
        `${formatRef(ref)} is not in the cache at ${s.cacheDir}${found ? ' intact (a file of it is missing or failed verification)' : ''}, and offline mode (--offline or REASONPLUG_OFFLINE=1) keeps off the network; pull it once while online`,
      );
    }
    return result(loaded, found.digest, true);
  }

  // Content-addressed: a module pulled by digest before needs no request at all.
  if (ref.selector.type === 'digest') {
    const loaded = await fromCache(cache, ref, ref.selector.digest);
    if (loaded) return result(loaded, ref.selector.digest, true);
  }

  const client = RegistryClient.for(registry, s);
  const target = await resolveTarget(client, ref);
  const { bytes, digest } = await client.getManifest(repository, target.reference, opts.signal);
  const source = `${registry}/${repository}${target.tag !== undefined ? `:${target.tag}` : `@${digest}`}`;
  const artifact = parseArtifact(bytes, source);
  let config = await cache.readSmallBlob(artifact.config.digest);
  let cached = config !== undefined;
  if (!config) {
    config = await client.readBlob(repository, artifact.config);
    await storeBlob(cache, artifact.config.digest, config, `the config (reasonplug.json) of ${source}`);
  }
  const module = parseConfig(config, source);
  // The version asked for (a version tag, an exact version, a range the registry resolved) must be the one that
  // came, before any layer is fetched: no ref may point a version at another version's module.
  if (target.version !== undefined && target.version !== module.version) {
    throw new InvalidArtifactError(`${source} is version ${module.version} by its reasonplug.json, not ${target.version}; refusing it`);
  }
  const files = matchLayers(artifact, module, source);
  const configBytes = config;
  const repaired = new Set<string>();
  /** Fetches what the cache lacks of the module and assembles its directory (`again`: after a blob was removed). */
  const assemble = async (again: boolean) => {
    await forEachBounded(files, CONCURRENCY, async (f) => {
      const got = await downloadBlob(client, repository, f.descriptor, cache, {
        file: f.path,
        ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
        ...(opts.signal ? { signal: opts.signal } : {}),
      });
      if (got !== 'cached') cached = false;
      if (got === 'repaired') repaired.add(f.path);
    });
    // (the config was stored above; a clear meanwhile may have taken it too)
    if (again && !(await cache.readSmallBlob(artifact.config.digest))) await storeBlob(cache, artifact.config.digest, configBytes, `the config (reasonplug.json) of ${source}`);
    if (!(await cache.readSmallBlob(digest))) await storeBlob(cache, digest, bytes, `the manifest of ${source}`);
    return cache.materialise(registry, repository, digest, artifact.config.digest, moduleFiles(files));
  };
  // A blob verified here may be removed before the directory is made of it (a `cache clear` meanwhile): fetched again once.
  const { dir } = await assemble(false).catch((err: unknown) => {
    if (err instanceof BlobRemovedError) return assemble(true);
    throw err;
  });
  const loaded = await loadModuleDir(dir, { verify: false });
  if (target.tag !== undefined) await updateRef(cache, registry, repository, target.tag, digest);
  // The version ref lets a later offline pull resolve ranges, whatever tag this pull went through.
  await updateRef(cache, registry, repository, versionTag(loaded.manifest.version), digest);
  return result(loaded, digest, cached, [...repaired].sort());
}

/** Points a tag at `digest`, writing nothing when it already does (a read-only cache pulls what it holds). */
async function updateRef(cache: ModuleCache, registry: string, repository: string, tag: string, digest: string): Promise<void> {
  if ((await cache.readRef(registry, repository, tag)) === digest) return;
  await cache.writeRef(registry, repository, tag, digest).catch((err: unknown) => {
    throw cacheWriteError(err, cache.refPath(registry, repository, tag), `the ref ${tag} of ${registry}/${repository}`, 'pull again');
  });
}

/** `cache.putBlob`, its file system failures as `CacheWriteError`s naming the blob's path and `what` it is. */
async function storeBlob(cache: ModuleCache, digest: string, bytes: Uint8Array, what: string): Promise<void> {
  await cache.putBlob(digest, bytes).catch((err: unknown) => {
    throw cacheWriteError(err, cache.blobPath(digest), what, 'pull again');
  });
}

const moduleFiles = (files: ReturnType<typeof matchLayers>): ModuleFile[] => files.map((f) => ({ path: f.path, digest: f.descriptor.digest }));

/**
 * The module of manifest `digest` from the cache alone, when its manifest, config and every file verify
 * (a module directory whose files are not the blobs is rebuilt from them); undefined otherwise. Reached
 * through a version tag, the manifest must be of that version (a ref can be damaged too).
 */
async function fromCache(cache: ModuleCache, ref: ModuleRef, digest: string, tag?: string): Promise<LoadedModule | undefined> {
  const bytes = await cache.readSmallBlob(digest);
  if (!bytes) return undefined;
  const source = `${formatRef({ ...ref, selector: { type: 'digest', digest } })} (cached)`;
  let artifact: OciManifest;
  let files: ReturnType<typeof matchLayers>;
  try {
    artifact = parseArtifact(bytes, source);
    const config = await cache.readSmallBlob(artifact.config.digest);
    if (!config) return undefined;
    files = matchLayers(artifact, parseConfig(config, source), source);
  } catch {
    // Verified bytes that are no module: not something a pull stored; treat as not cached.
    return undefined;
  }
  for (const f of files) {
    if ((await cache.blobState(f.descriptor.digest, f.descriptor.size)) !== 'verified') return undefined;
  }
  const { dir } = await cache.materialise(ref.registry, ref.repository, digest, artifact.config.digest, moduleFiles(files));
  const loaded = await loadModuleDir(dir, { verify: false });
  const version = tag === undefined ? undefined : tagVersion(tag);
  return version === undefined || version === loaded.manifest.version ? loaded : undefined;
}
