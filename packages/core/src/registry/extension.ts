/**
 * The `_reasonplug` registry extension (reasonplug-registry): `search` over module annotations and
 * npm-style `resolve`. Whether a registry has it is learned once from OCI extension discovery
 * (`/v2/_oci/ext/discover`); plain registries answer 404 there.
 */
import { z } from 'zod';
import { MAX_MANIFEST_BYTES } from './artifact.js';
import { RegistryClient } from './client.js';
import { InvalidArtifactError, ModuleNotFoundError, RegistryAuthError } from './errors.js';
import { isRepository, TAG } from './reference.js';
import { readLimited } from './transport.js';

const EXTENSION = '_reasonplug';
const MAX_SEARCH_PAGES = 50;

const DiscoverySchema = z.object({ extensions: z.array(z.object({ name: z.string() }).loose()) }).loose();

const DIGEST = /^sha256:[0-9a-f]{64}$/;

// The tag is written into the cache as a ref: only a tag (resolve.ts checks it against the version and range).
const ResolvedSchema = z.object({ name: z.string(), version: z.string(), tag: z.string().regex(TAG), digest: z.string().regex(DIGEST) });
/** A range resolved by the registry: the version picked, the tag it is pushed under, its manifest digest. */
export type ResolvedVersion = z.infer<typeof ResolvedSchema>;

// Names, tags and digests become references and are printed: only what OCI's grammar allows.
const HitSchema = z.object({
  name: z.string().refine(isRepository),
  versions: z.array(
    z.object({
      digest: z.string().regex(DIGEST),
      tags: z.array(z.string().regex(TAG)),
      version: z.string().optional(),
      kind: z.string().optional(),
      tasks: z.array(z.string()),
      tokenizer: z.string().optional(),
    }),
  ),
});
/** One repository that matched a search, with its matching versions, newest first. */
export type SearchHit = z.infer<typeof HitSchema>;

/** What {@link searchModules} looks for; a field left out matches every module, given ones must all match. */
export interface SearchQuery {
  /** A task the module lists in its manifest's `tasks`. */
  task?: string;
  /** The module's kind (`backbone`, `logit-reasoner`, `latent-projector`). */
  kind?: string;
  /** The tokenizer fingerprint (`sha256:…`) of the backbone it composes with (`compat.tokenizer`). */
  tokenizer?: string;
}

const offered = new WeakMap<RegistryClient, Promise<boolean>>();

/** Whether the registry offers the `_reasonplug` extension (asked once per client). */
export function hasExtension(client: RegistryClient): Promise<boolean> {
  let known = offered.get(client);
  if (!known) {
    known = (async () => {
      let res: Response;
      try {
        res = await client.transport.request('GET', '/v2/_oci/ext/discover', { scope: 'registry:catalog:*', allow: [404, 405, 400] });
      } catch (err) {
        // A registry that guards even discovery has no extension we could use without the credentials
        // the actual request will ask for (and report) anyway.
        if (err instanceof RegistryAuthError) return false;
        throw err;
      }
      if (!res.ok) {
        await res.body?.cancel();
        return false;
      }
      const parsed = DiscoverySchema.safeParse(await readJson(client, res, 'extension discovery'));
      return parsed.success && parsed.data.extensions.some((e) => e.name === EXTENSION);
    })();
    offered.set(client, known);
  }
  return known;
}

/** Asks the registry to resolve `range` for `repository`. Throws `ModuleNotFoundError` when nothing matches. */
export async function resolveRemote(client: RegistryClient, repository: string, range: string): Promise<ResolvedVersion> {
  const query = new URLSearchParams({ name: repository, range });
  const res = await client.transport.request('GET', `/v2/${EXTENSION}/resolve?${query}`, {
    scope: RegistryClient.scope(repository),
    allow: [404],
  });
  if (res.status === 404) {
    await res.body?.cancel();
    throw new ModuleNotFoundError(`registry ${client.registry} has no version of ${repository} matching ${JSON.stringify(range)}`);
  }
  const parsed = ResolvedSchema.safeParse(await readJson(client, res, `resolve ${repository}@${range}`));
  if (!parsed.success) throw new InvalidArtifactError(`registry ${client.registry} sent a malformed answer to resolve ${repository}@${range}`);
  return parsed.data;
}

/** Searches modules by task, kind and tokenizer fingerprint, following `Link` pagination. */
export async function searchRemote(client: RegistryClient, query: SearchQuery): Promise<SearchHit[]> {
  const params = new URLSearchParams(Object.entries(query).filter((e): e is [string, string] => typeof e[1] === 'string'));
  const hits: SearchHit[] = [];
  let next: string | undefined = `/v2/${EXTENSION}/search?${params}`;
  for (let page = 0; next !== undefined && page < MAX_SEARCH_PAGES; page++) {
    const res = await client.transport.request('GET', next, { scope: 'registry:catalog:*' });
    const parsed = z.object({ results: z.array(HitSchema) }).safeParse(await readJson(client, res, 'search'));
    if (!parsed.success) throw new InvalidArtifactError(`registry ${client.registry} sent a malformed search answer`);
    hits.push(...parsed.data.results);
    next = /<([^>]+)>\s*;\s*rel="?next"?/.exec(res.headers.get('link') ?? '')?.[1];
  }
  return hits;
}

async function readJson(client: RegistryClient, res: Response, what: string): Promise<unknown> {
  const bytes = await readLimited(res, MAX_MANIFEST_BYTES, (size) => new InvalidArtifactError(`registry ${client.registry}: the ${what} answer is ${size}, too large`));
  try {
    return JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new InvalidArtifactError(`registry ${client.registry}: the ${what} answer is not JSON`);
  }
}
