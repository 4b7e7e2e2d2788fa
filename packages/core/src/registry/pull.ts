/**
 * `pull`: a module reference to a verified module directory in the cache. The manifest and config are
 * checked (size, digest, shape, files against layers) before any layer is fetched; layers are verified as
 * they stream in (see download.ts); the directory appears only once complete.
 */
import { loadModuleDir, type LoadedModule } from '../modules/module-dir.js';
import { matchLayers, parseArtifact, parseConfig } from './artifact.js';
import { ModuleCache } from './cache.js';
import { RegistryClient } from './client.js';
import { downloadBlob, type TransferProgress } from './download.js';
import { NotCachedError } from './errors.js';
import { forEachBounded } from './parallel.js';
import { formatRef, parseRef, versionTag, type ModuleRef } from './reference.js';
import { resolveCached, resolveTarget } from './resolve.js';
import { settingsFrom, type RegistryOptions } from './settings.js';

export interface PullOptions extends RegistryOptions {
  onProgress?: (p: TransferProgress) => void;
  signal?: AbortSignal;
}

export interface PulledModule {
  /** The module directory, ready for `Engine.load({ model })`. */
  dir: string;
  registry: string;
  repository: string;
  version: string;
  /** Manifest digest. */
  digest: string;
  /** The reference pinned to its digest: `registry/namespace/name@sha256:...`. */
  pinned: string;
  /** True when nothing was downloaded. */
  cached: boolean;
}

/** Layers downloaded at once. */
const CONCURRENCY = 4;

/**
 * Pulls a module into the cache and returns its directory. Offline (option or `REASONPLUG_OFFLINE=1`),
 * reads the cache only and throws `NotCachedError` when the module is not there.
 */
export async function pullModule(spec: string | ModuleRef, opts: PullOptions = {}): Promise<PulledModule> {
  const s = settingsFrom(opts);
  const ref = typeof spec === 'string' ? parseRef(spec, s.registry) : spec;
  const cache = new ModuleCache(s.cacheDir);
  const { registry, repository } = ref;
  const result = (loaded: LoadedModule, digest: string, cached: boolean): PulledModule => ({
    dir: loaded.dir,
    registry,
    repository,
    version: loaded.manifest.version,
    digest,
    pinned: formatRef({ registry, repository, selector: { type: 'digest', digest } }),
    cached,
  });

  if (s.offline) {
    const found = await resolveCached(cache, ref);
    const loaded = found && (await cachedModule(cache, ref, found.digest, false));
    if (!found || !loaded) {
      throw new NotCachedError(
        `${formatRef(ref)} is not in the cache at ${s.cacheDir}, and offline mode (--offline or REASONPLUG_OFFLINE=1) keeps off the network; pull it once while online`,
      );
    }
    return result(loaded, found.digest, true);
  }

  // Content-addressed: a module pulled by digest before needs no request at all.
  if (ref.selector.type === 'digest') {
    const loaded = await cachedModule(cache, ref, ref.selector.digest, true);
    if (loaded) return result(loaded, ref.selector.digest, true);
  }

  const client = RegistryClient.for(registry, s);
  const target = await resolveTarget(client, ref);
  const { bytes, digest } = await client.getManifest(repository, target.reference, opts.signal);
  let loaded = await cachedModule(cache, ref, digest, true);
  const cached = loaded !== undefined;
  if (!loaded) {
    const source = `${registry}/${repository}${target.tag !== undefined ? `:${target.tag}` : `@${digest}`}`;
    const artifact = parseArtifact(bytes, source);
    const config = await client.readBlob(repository, artifact.config);
    const files = matchLayers(artifact, parseConfig(config, source), source);
    await forEachBounded(files, CONCURRENCY, (f) =>
      downloadBlob(client, repository, f.descriptor, cache, {
        file: f.path,
        ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
        ...(opts.signal ? { signal: opts.signal } : {}),
      }),
    );
    await cache.putBlob(artifact.config.digest, config);
    await cache.putBlob(digest, bytes);
    const dir = await cache.materialise(
      registry,
      repository,
      digest,
      artifact.config.digest,
      files.map((f) => ({ path: f.path, digest: f.descriptor.digest })),
    );
    loaded = await loadModuleDir(dir, { verify: false });
  }
  if (target.tag !== undefined) await cache.writeRef(registry, repository, target.tag, digest);
  // The version ref lets a later offline pull resolve ranges, whatever tag this pull went through.
  await cache.writeRef(registry, repository, versionTag(loaded.manifest.version), digest);
  return result(loaded, digest, cached);
}

/**
 * The cached module directory of a manifest, size-checked (the blobs were hashed on the way in; the
 * engine hashes again on load). One missing a file is dropped when `repair` is set, to be assembled again.
 */
async function cachedModule(cache: ModuleCache, ref: ModuleRef, digest: string, repair: boolean): Promise<LoadedModule | undefined> {
  if (!(await cache.hasModule(ref.registry, ref.repository, digest))) return undefined;
  try {
    return await loadModuleDir(cache.moduleDir(ref.registry, ref.repository, digest), { verify: false });
  } catch (err) {
    if (!repair) throw err;
    await cache.dropModule(ref.registry, ref.repository, digest);
    return undefined;
  }
}
