/**
 * Module search on registries without the `_reasonplug` extension (CNCF distribution, zot, Harbor): the catalog
 * (`/v2/_catalog`) lists the repositories, each one's tags name its manifests, and the manifests' annotations say
 * what each module is — the index the extension keeps on its server, read here by the client, one repository after
 * another (a few at a time). The hits are those reasonplug-registry's search gives for the same modules. Registries
 * that publish no catalog (GHCR, Docker Hub) cannot be searched this way.
 */
import semver from 'semver';
import { Annotations, MediaTypes } from './artifact.js';
import type { RegistryClient } from './client.js';
import { ExtensionUnavailableError, ModuleNotFoundError } from './errors.js';
import type { SearchHit, SearchQuery } from './extension.js';
import { forEachBounded } from './parallel.js';
import { isRepository, TAG, tagVersion } from './reference.js';

/** Repositories read at once. */
const CONCURRENCY = 4;

type Version = SearchHit['versions'][number];

/** Searches `client`'s registry through its catalog; throws ExtensionUnavailableError where it has none. */
export async function searchByCatalog(client: RegistryClient, query: SearchQuery): Promise<SearchHit[]> {
  const repositories = await client.listCatalog();
  if (!repositories) {
    throw new ExtensionUnavailableError(
      `registry ${client.registry} offers no module search (no _reasonplug extension) and no catalog (/v2/_catalog) to search through; resolve and pull work on any OCI registry`,
    );
  }
  const hits: SearchHit[] = [];
  // Hits are printed and become references: names a reference cannot take are no modules to find (as with the extension).
  await forEachBounded(repositories.filter(isRepository), CONCURRENCY, async (name) => {
    const versions = (await moduleVersions(client, name)).filter((v) => matches(v, query)).sort(newestFirst);
    if (versions.length > 0) hits.push({ name, versions });
  });
  return hits.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** The module versions of repository `name`: each tagged manifest that is a reasonplug module, with its tags. */
async function moduleVersions(client: RegistryClient, name: string): Promise<Version[]> {
  let tags: string[];
  try {
    tags = await client.listTags(name);
  } catch (err) {
    // Listed by the catalog, gone since.
    if (err instanceof ModuleNotFoundError) return [];
    throw err;
  }
  const byDigest = new Map<string, string[]>();
  for (const tag of tags.filter((t) => TAG.test(t))) {
    const digest = await client.manifestDigest(name, tag);
    if (digest !== undefined) byDigest.set(digest, [...(byDigest.get(digest) ?? []), tag]);
  }
  const versions: Version[] = [];
  for (const [digest, digestTags] of byDigest) {
    const described = describe(await client.getManifest(name, digest).then((m) => m.bytes, notFound));
    if (described) versions.push({ digest, tags: digestTags.sort(), ...described });
  }
  return versions;
}

/** A manifest deleted while the search read its repository is not there any more. */
function notFound(err: unknown): undefined {
  if (err instanceof ModuleNotFoundError) return undefined;
  throw err;
}

/** A module manifest's search fields; undefined for anything else a registry holds (images, other artifacts). */
function describe(bytes: Buffer | undefined): Omit<Version, 'digest' | 'tags'> | undefined {
  if (!bytes) return undefined;
  let manifest: { artifactType?: unknown; config?: { mediaType?: unknown }; annotations?: Record<string, unknown> };
  try {
    manifest = JSON.parse(bytes.toString('utf8')) as typeof manifest;
  } catch {
    return undefined;
  }
  const artifactType = manifest.artifactType ?? manifest.config?.mediaType;
  if (artifactType !== MediaTypes.artifact) return undefined;
  const a = manifest.annotations ?? {};
  const text = (key: string) => (typeof a[key] === 'string' ? (a[key] as string) : undefined);
  const version = text(Annotations.version);
  const kind = text(Annotations.kind);
  const tokenizer = text(Annotations.tokenizer);
  return {
    ...(version ? { version } : {}),
    ...(kind ? { kind } : {}),
    tasks: (text(Annotations.tasks) ?? '').split(',').map((t) => t.trim()).filter(Boolean),
    ...(tokenizer ? { tokenizer } : {}),
  };
}

function matches(v: Version, q: SearchQuery): boolean {
  return (q.task === undefined || v.tasks.includes(q.task)) && (q.kind === undefined || v.kind === q.kind) && (q.tokenizer === undefined || v.tokenizer === q.tokenizer);
}

/** Semver descending; versions without a valid version go last, by digest (as reasonplug-registry orders them). */
function newestFirst(a: Version, b: Version): number {
  const va = versionOf(a);
  const vb = versionOf(b);
  if (va && vb) return semver.rcompare(va, vb);
  if (va || vb) return va ? -1 : 1;
  return a.digest < b.digest ? -1 : 1;
}

const versionOf = (v: Version) => (v.version && semver.valid(v.version)) || v.tags.map(tagVersion).find((t) => t !== undefined);
