/**
 * From a reference's selector to the manifest to fetch. Ranges follow npm: the highest version that
 * satisfies the range, except that `latest` wins when its version satisfies it. A registry with the
 * `_reasonplug` extension resolves them itself; on plain OCI registries the client lists the tags and
 * picks among the exact-version ones.
 */
import semver from 'semver';
import { Annotations } from './artifact.js';
import type { ModuleCache } from './cache.js';
import type { RegistryClient } from './client.js';
import { InvalidArtifactError, ModuleNotFoundError } from './errors.js';
import { hasExtension, resolveRemote } from './extension.js';
import { tagVersion, versionTag, type ModuleRef } from './reference.js';

/** What a reference stands for once resolved. */
export interface Target {
  /** Tag or digest to fetch the manifest by. */
  reference: string;
  /** The tag it was found under, when it was found under one. */
  tag?: string;
  /** The exact version, when known before fetching the manifest. */
  version?: string;
  /** The manifest digest, when known before fetching it. */
  digest?: string;
}

/** The version a range names when it names exactly one (`1.2.3`, not `^1.2.3`). */
export function exactVersion(range: string): string | undefined {
  return tagVersion(versionTag(range));
}

/**
 * Picks among exact-version tags by npm's rule, as reasonplug-registry's resolve does. `latestVersion` is the version
 * the `latest` tag stands for, when known. Undefined when no tag satisfies the range.
 */
export function pickVersion(tags: Iterable<string>, range: string, latestVersion?: string): { tag: string; version: string } | undefined {
  const tagOf = new Map<string, string>();
  for (const tag of tags) {
    const version = tagVersion(tag);
    if (version !== undefined) tagOf.set(version, tag);
  }
  // npm's `*` takes `latest` even as a prerelease; other ranges only when it satisfies them.
  if (latestVersion !== undefined && tagOf.has(latestVersion) && (range === '*' || semver.satisfies(latestVersion, range))) {
    return { tag: tagOf.get(latestVersion)!, version: latestVersion };
  }
  // npm keys versions without build metadata: where one version has several tags, its plain one stands for it.
  const byVersion = new Map<string, string>();
  for (const version of tagOf.keys()) {
    const key = semver.parse(version)!.version;
    if (!byVersion.has(key) || version === key) byVersion.set(key, version);
  }
  const picked = semver.maxSatisfying([...byVersion.keys()], range);
  if (picked === null) return undefined;
  const version = byVersion.get(picked)!;
  return { tag: tagOf.get(version)!, version };
}

/** Resolves a reference against its registry. Throws `ModuleNotFoundError` when no version matches. */
export async function resolveTarget(client: RegistryClient, ref: ModuleRef): Promise<Target> {
  const s = ref.selector;
  if (s.type === 'digest') return { reference: s.digest, digest: s.digest };
  if (s.type === 'tag') {
    const version = tagVersion(s.tag);
    return { reference: s.tag, tag: s.tag, ...(version ? { version } : {}) };
  }
  const exact = exactVersion(s.range);
  if (exact !== undefined) {
    if (semver.parse(exact)!.build.length > 0) return { reference: versionTag(exact), tag: versionTag(exact), version: exact };
    // `1.2.3` also names a module pushed as `1.2.3+build.7` (ranges and npm ignore build metadata): its own tag
    // first, else resolved as the range it is.
    const digest = await client.manifestDigest(ref.repository, exact);
    if (digest !== undefined) return { reference: digest, tag: exact, version: exact, digest };
  }
  if (await hasExtension(client)) {
    const r = await resolveRemote(client, ref.repository, s.range);
    // The answer is checked, not trusted: its tag is an exact version's, that version (which the registry may give
    // without build metadata, as npm keys versions) and in the range; npm's `*` takes `latest` even as a prerelease.
    const version = tagVersion(r.tag);
    const agrees = version !== undefined && semver.valid(r.version) !== null && semver.eq(version, r.version);
    if (!agrees || !(s.range === '*' || semver.satisfies(version, s.range))) {
      throw new InvalidArtifactError(
        `registry ${client.registry} resolved ${ref.repository}@${s.range} to version ${JSON.stringify(r.version)} under tag ${JSON.stringify(r.tag)}, ${agrees ? 'which is not in the range' : "which is not that version's tag"}; refusing it`,
      );
    }
    return { reference: r.digest, tag: r.tag, version, digest: r.digest };
  }
  const tags = await client.listTags(ref.repository);
  const picked = pickVersion(tags, s.range, tags.includes('latest') ? await latestVersion(client, ref.repository) : undefined);
  if (!picked) {
    const known = tags.filter((t) => tagVersion(t) !== undefined);
    throw new ModuleNotFoundError(
      `registry ${client.registry} has no version of ${ref.repository} matching ${JSON.stringify(s.range)}` +
        (known.length > 0 ? ` (it has ${known.slice(-10).join(', ')})` : ' (it has no version tags)'),
    );
  }
  return { reference: picked.tag, ...picked };
}

/** The version annotation of the manifest tagged `latest`. */
async function latestVersion(client: RegistryClient, repository: string): Promise<string | undefined> {
  const { bytes } = await client.getManifest(repository, 'latest');
  try {
    const version = (JSON.parse(bytes.toString('utf8')) as { annotations?: Record<string, unknown> }).annotations?.[Annotations.version];
    return typeof version === 'string' ? version : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Resolves a reference from the cache's refs alone (offline): a digest as is, a tag through its ref, a
 * range to the highest exact version pulled before that satisfies it. The cached `latest` ref is not
 * preferred here as it is online: it only says what `latest` was at the last pull.
 */
export async function resolveCached(cache: ModuleCache, ref: ModuleRef): Promise<{ digest: string; tag?: string } | undefined> {
  const s = ref.selector;
  if (s.type === 'digest') return { digest: s.digest };
  if (s.type === 'tag') {
    const digest = await cache.readRef(ref.registry, ref.repository, s.tag);
    return digest === undefined ? undefined : { digest, tag: s.tag };
  }
  const refs = await cache.refs(ref.registry, ref.repository);
  const picked = pickVersion(refs.keys(), s.range);
  return picked === undefined ? undefined : { digest: refs.get(picked.tag)!, tag: picked.tag };
}
