/** `resolve` and `search`: questions about modules that download nothing but manifests (and, for projectors, their configs). */
import { Annotations, parseArtifact, parseConfig } from './artifact.js';
import { ModuleCache } from './cache.js';
import { searchByCatalog } from './catalog-search.js';
import { RegistryClient } from './client.js';
import { InvalidArtifactError, ModuleNotFoundError, NotCachedError, OfflineError, RegistryClientError } from './errors.js';
import { hasExtension, searchRemote, type SearchHit, type SearchQuery } from './extension.js';
import { forEachBounded } from './parallel.js';
import { formatRef, parseRef, tagVersion } from './reference.js';
import { pickVersion, resolveCached, resolveTarget } from './resolve.js';
import { settingsFrom, type RegistryOptions } from './settings.js';

/** Module configs read at once. */
const CONCURRENCY = 4;

/** What {@link resolveModule} found: the version a reference means and its manifest digest. Nothing is downloaded. */
export interface ResolvedModule {
  /** `host[:port]`. */
  registry: string;
  /** `namespace/name`. */
  repository: string;
  /** The exact version, when the manifest or tag says. */
  version?: string;
  /** The tag it was found under, if any. */
  tag?: string;
  /** Manifest digest (`sha256:…`). */
  digest: string;
  /** `registry/namespace/name@sha256:...` */
  pinned: string;
}

/**
 * Resolves a reference to a version and manifest digest: through the registry's `_reasonplug/resolve`,
 * else its tag list; offline, through the cache's refs.
 */
export async function resolveModule(spec: string, opts: RegistryOptions = {}): Promise<ResolvedModule> {
  const s = settingsFrom(opts);
  const ref = parseRef(spec, s.registry);
  const out = (digest: string, tag?: string, version?: string): ResolvedModule => ({
    registry: ref.registry,
    repository: ref.repository,
    ...(version !== undefined ? { version } : {}),
    ...(tag !== undefined ? { tag } : {}),
    digest,
    pinned: formatRef({ ...ref, selector: { type: 'digest', digest } }),
  });
  if (s.offline) {
    const found = await resolveCached(new ModuleCache(s.cacheDir), ref);
    if (!found) throw new NotCachedError(`${formatRef(ref)} cannot be resolved from the cache at ${s.cacheDir} in offline mode; pull it once while online`);
    return out(found.digest, found.tag, found.tag === undefined ? undefined : tagVersion(found.tag));
  }
  const client = RegistryClient.for(ref.registry, s);
  const target = await resolveTarget(client, ref);
  if (target.digest !== undefined && target.version !== undefined) return out(target.digest, target.tag, target.version);
  const { bytes, digest } = await client.getManifest(ref.repository, target.reference);
  const artifact = parseArtifact(bytes, formatRef(ref));
  return out(digest, target.tag, target.version ?? artifact.annotations?.[Annotations.version]);
}

/**
 * Searches a registry's modules: through its `_reasonplug` extension, else through its catalog (plain OCI registries
 * that publish one; catalog-search.ts). Throws ExtensionUnavailableError for a registry with neither.
 */
export async function searchModules(query: SearchQuery, opts: RegistryOptions = {}): Promise<SearchHit[]> {
  const client = searchClient(opts);
  return (await hasExtension(client)) ? searchRemote(client, query) : searchByCatalog(client, query);
}

/**
 * `hits` (of {@link searchModules}, same options) less the latent-projector versions whose config's `compat.hiddenSize`
 * is not `hiddenSize` — all of them where it is undefined (a model no projector runs with) — and less the hits left
 * without a version. Search answers do not carry the hidden size: the manifest and config of each projector version
 * are fetched, of no other. Other kinds are kept as they are.
 */
export async function filterProjectorsByHiddenSize(hits: SearchHit[], hiddenSize: number | undefined, opts: RegistryOptions = {}): Promise<SearchHit[]> {
  const isProjector = (v: SearchHit['versions'][number]) => v.kind === 'latent-projector';
  const candidates = hiddenSize === undefined ? [] : hits.flatMap((h) => h.versions.filter(isProjector).map((v) => ({ name: h.name, digest: v.digest })));
  const fitting = new Set<string>();
  if (candidates.length > 0) {
    const client = searchClient(opts);
    await forEachBounded(candidates, CONCURRENCY, async ({ name, digest }) => {
      if ((await declaredHiddenSize(client, name, digest)) === hiddenSize) fitting.add(`${name}@${digest}`);
    });
  }
  return hits
    .map((h) => ({ ...h, versions: h.versions.filter((v) => !isProjector(v) || fitting.has(`${h.name}@${v.digest}`)) }))
    .filter((h) => h.versions.length > 0);
}

/**
 * The `compat.hiddenSize` of module `repository@digest`'s config; undefined where it has none, and for a manifest
 * deleted since the search or one that is no valid module (neither can be pulled).
 */
async function declaredHiddenSize(client: RegistryClient, repository: string, digest: string): Promise<number | undefined> {
  const source = `${client.registry}/${repository}@${digest}`;
  try {
    const artifact = parseArtifact((await client.getManifest(repository, digest)).bytes, source);
    return parseConfig(await client.readBlob(repository, artifact.config), source).compat.hiddenSize;
  } catch (err) {
    if (err instanceof ModuleNotFoundError || err instanceof InvalidArtifactError) return undefined;
    throw err;
  }
}

/** The client of the registry a search asks. */
function searchClient(opts: RegistryOptions): RegistryClient {
  const s = settingsFrom(opts);
  if (s.offline) throw new OfflineError('search asks a registry, but offline mode is on (--offline or REASONPLUG_OFFLINE=1)');
  if (s.registry === undefined) throw new RegistryClientError('search needs a registry: pass --registry HOST[:PORT] or set REASONPLUG_REGISTRY');
  return RegistryClient.for(s.registry, s);
}

/**
 * The registry's logit-reasoner for `task` that composes with a backbone whose tokenizer fingerprint is `tokenizer`,
 * as a reference pinned to a digest: of its versions that compose, the one `@*` would resolve to (`latest`, else the
 * highest release). Throws ModuleNotFoundError when there is none, and RegistryClientError naming the candidates when
 * several repositories offer one (the choice is then the user's).
 */
export async function reasonerForTask(task: string, tokenizer: string, opts: RegistryOptions = {}): Promise<{ ref: string; name: string; version?: string }> {
  // Versions are what hold an exact-version tag (one held by moving tags alone was yanked); a hit without any has
  // nothing to pin (catalog search leaves such repositories out; a registry may not).
  const hits = (await searchModules({ task, kind: 'logit-reasoner', tokenizer }, opts))
    .map((h) => ({ ...h, versions: h.versions.filter((v) => v.tags.some((t) => tagVersion(t) !== undefined)) }))
    .filter((h) => h.versions.length > 0);
  const registry = settingsFrom(opts).registry!;
  if (hits.length === 0) {
    throw new ModuleNotFoundError(`registry ${registry} has no logit-reasoner for task "${task}" that composes with this backbone (tokenizer ${tokenizer})`);
  }
  if (hits.length > 1) {
    throw new RegistryClientError(
      `registry ${registry} has several logit-reasoners for task "${task}" that compose with this backbone (${hits.map((h) => h.name).join(', ')}); name the one to use as a reasoner`,
    );
  }
  const [{ name, versions }] = hits as [SearchHit];
  // The same rule as resolving a range, so that a prerelease is only taken where `latest` is on it.
  const tags = versions.flatMap((v) => v.tags);
  const latest = versions.find((v) => v.tags.includes('latest'))?.tags.map(tagVersion).find((v) => v !== undefined);
  const picked = pickVersion(tags, '*', latest);
  const chosen = picked && versions.find((v) => v.tags.includes(picked.tag));
  if (!picked || !chosen) {
    throw new ModuleNotFoundError(
      `registry ${registry} has ${name} as the logit-reasoner for task "${task}", but none of its versions that compose with this backbone is a release, and \`latest\` is on none of them (it has ${tags.filter((t) => tagVersion(t) !== undefined).join(', ') || 'no version tags'}); name the one to use as a reasoner`,
    );
  }
  return { ref: `${registry}/${name}@${chosen.digest}`, name, version: picked.version };
}
