/**
 * The search index: one document per repository listing its tagged manifests with the reasonplug
 * annotations. A tag write updates the document from the previous one plus the tags it changed (a push must not
 * cost time in the repository's tag count); the document is rebuilt from all the tags where it is missing or does not
 * read, where an update of it failed in this process, where a read-back finds another replica's update written over
 * this one, and by `refresh`/`rebuildAll` (`reasonplug-registry reindex`). A rebuild repeats until the tags it read
 * are still the tags after it wrote, so concurrent pushes, tag moves and deletes converge on the truth. Within one
 * process a repository's document is written by one update at a time. Manifest bytes never change, so entries known
 * from the previous document are reused instead of re-read.
 */
import semver from 'semver';
import { RegistryError } from '../errors.js';
import { KeyedMutex } from '../keyed-mutex.js';
import { exactVersionOfTag, isDigest } from '../names.js';
import type { StorageDriver } from '../storage/driver.js';
import { indexDir, moduleIndex } from '../storage/layout.js';
import { parseManifest } from './manifest-format.js';
import type { ManifestStore } from './manifests.js';
import type { TagStore } from './tags.js';

/**
 * The `artifactType` of a reasonplug module's manifest (or its config's media type, for an image manifest without
 * one): only manifests of this type, with an exact-version tag, are found by search and resolve.
 */
export const MODULE_ARTIFACT_TYPE = 'application/vnd.reasonplug.module.v1+json';

const ANNOTATION = {
  kind: 'dev.reasonplug.kind',
  tasks: 'dev.reasonplug.tasks',
  tokenizer: 'dev.reasonplug.tokenizer',
  version: 'org.opencontainers.image.version',
} as const;

/** A tagged manifest as the index knows it. */
export interface IndexedManifest {
  /** Manifest digest (`sha256:…`). */
  digest: string;
  /** The manifest's media type. */
  mediaType: string;
  /** The manifest's `artifactType` ({@link MODULE_ARTIFACT_TYPE} for a module). */
  artifactType?: string;
  /** Tags pointing to it, sorted. */
  tags: string[];
  /** The module's version (annotation `org.opencontainers.image.version`). */
  version?: string;
  /** The module's kind (`dev.reasonplug.kind`). */
  kind?: string;
  /** The tasks it lists (`dev.reasonplug.tasks`); empty when none. */
  tasks: string[];
  /** Tokenizer fingerprint of the backbone it composes with (`dev.reasonplug.tokenizer`). */
  tokenizer?: string;
}

export interface RepositoryIndex {
  name: string;
  manifests: IndexedManifest[];
}

export interface SearchQuery {
  task?: string;
  kind?: string;
  tokenizer?: string;
  /** Repositories per page. */
  n: number;
  /** Repository name the previous page ended with. */
  last?: string;
}

/** One repository a search found, with its matching module versions. */
export interface SearchResult {
  /** Repository name (`namespace/name`). */
  name: string;
  /** Matching module versions, newest first. */
  versions: Omit<IndexedManifest, 'mediaType' | 'artifactType'>[];
}

const MAX_REBUILDS = 5;

export class ModuleIndex {
  /** A repository's document is read, changed and written by one update at a time in this process. */
  private readonly locks = new KeyedMutex();
  /** Repositories whose last update failed: their document may lack a change, so the next update rebuilds it. */
  private readonly stale = new Set<string>();

  constructor(
    private readonly storage: StorageDriver,
    private readonly manifests: ManifestStore,
    private readonly tags: TagStore,
  ) {}

  /**
   * Repository `name`'s document; undefined where there is none, or none that reads (a store that serves an object
   * while another request replaces it: s3rver does): refresh then rebuilds it from the tags alone.
   */
  async read(name: string): Promise<RepositoryIndex | undefined> {
    const doc = await this.storage.get(moduleIndex(name));
    if (!doc) return undefined;
    try {
      return JSON.parse(doc.toString()) as RepositoryIndex;
    } catch {
      return undefined;
    }
  }

  /**
   * Brings repository `name`'s document up to date after a write to `reference`: a tag (set or deleted) or a manifest
   * digest (deleted, with its tags). Only the tags that write can have changed are read again: the tag, or those the
   * document lists for the digest, and `latest`, which a yanked version moves.
   */
  async update(name: string, reference: string): Promise<void> {
    await this.locks.run(name, async () => {
      try {
        const previous = this.stale.has(name) ? undefined : await this.read(name);
        if (!previous || !(await this.patch(name, previous, reference))) await this.rebuild(name);
        this.stale.delete(name);
      } catch (err) {
        this.stale.add(name);
        throw err;
      }
    });
  }

  /** Rebuilds repository `name`'s document from its current tags. */
  async refresh(name: string): Promise<void> {
    await this.locks.run(name, () => this.rebuild(name));
  }

  /**
   * Writes `previous` with the tags `reference` can have changed read again; false where a read-back finds another
   * document written over it meanwhile (a replica's update of the same repository, made from the document before).
   */
  private async patch(name: string, previous: RepositoryIndex, reference: string): Promise<boolean> {
    const tags = new Map(previous.manifests.flatMap((m) => m.tags.map((tag) => [tag, m.digest] as const)));
    const changed = new Set(isDigest(reference) ? [...tags].filter(([, digest]) => digest === reference).map(([tag]) => tag) : [reference]);
    changed.add('latest');
    for (const tag of changed) {
      const digest = await this.tags.get(name, tag);
      if (digest === undefined) tags.delete(tag);
      else tags.set(tag, digest);
    }
    const written = await this.write(name, await this.build(name, tags, previous));
    return (await this.storage.get(moduleIndex(name)))?.toString() === written;
  }

  private async rebuild(name: string): Promise<void> {
    for (let i = 0; i < MAX_REBUILDS; i++) {
      const tags = await this.tags.entries(name);
      await this.write(name, await this.build(name, tags, await this.read(name)));
      if (sameEntries(tags, await this.tags.entries(name))) return;
    }
  }

  /** Stores `doc` (deletes it when it lists nothing); returns the text written, undefined for none. */
  private async write(name: string, doc: RepositoryIndex): Promise<string | undefined> {
    if (doc.manifests.length === 0) {
      await this.storage.delete(moduleIndex(name));
      return undefined;
    }
    const text = JSON.stringify(doc);
    await this.storage.put(moduleIndex(name), Buffer.from(text));
    return text;
  }

  /** Rebuilds every repository's document, e.g. after index documents were lost; returns the count. */
  async rebuildAll(): Promise<number> {
    const names = new Set<string>();
    const tagLinkKey = /^repositories\/(.+)\/_manifests\/tags\/[^/]+\/current\/link$/;
    for await (const o of this.storage.list('repositories')) {
      const m = tagLinkKey.exec(o.key);
      if (m) names.add(m[1]!);
    }
    // Documents of repositories that lost all their tags go too.
    for (const name of await this.indexedNames()) names.add(name);
    for (const name of names) await this.refresh(name);
    return names.size;
  }

  /** Repositories (in name order, after `last`) with module versions matching every given filter. */
  async search(query: SearchQuery, canPull: (name: string) => boolean): Promise<{ results: SearchResult[]; more: boolean }> {
    const names = (await this.indexedNames()).filter((name) => (query.last === undefined || name > query.last) && canPull(name));
    const results: SearchResult[] = [];
    for (const name of names) {
      const versions = ((await this.read(name))?.manifests ?? [])
        // Versions only, as resolve counts them: a manifest held by moving tags alone (a version yanked from under
        // `stable`) is none.
        .filter((m) => m.artifactType === MODULE_ARTIFACT_TYPE && m.tags.some((t) => exactVersionOfTag(t) !== undefined) && matches(m, query))
        .sort(newestFirst)
        .map(({ mediaType: _m, artifactType: _a, ...rest }) => rest);
      if (versions.length === 0) continue;
      // More remain only where another repository matches: a link to an empty page is no page.
      if (results.length === query.n) return { results, more: true };
      results.push({ name, versions });
    }
    return { results, more: false };
  }

  /** Names of the repositories that have an index document, sorted. */
  private async indexedNames(): Promise<string[]> {
    const names: string[] = [];
    const suffix = '/_module.json';
    for await (const o of this.storage.list(indexDir)) {
      if (o.key.endsWith(suffix)) names.push(o.key.slice(indexDir.length + 1, -suffix.length));
    }
    return names.sort();
  }

  private async build(name: string, tags: Map<string, string>, previous?: RepositoryIndex): Promise<RepositoryIndex> {
    const byDigest = new Map<string, string[]>();
    for (const [tag, digest] of tags) byDigest.set(digest, [...(byDigest.get(digest) ?? []), tag]);
    const known = new Map(previous?.manifests.map((m) => [m.digest, m]));
    const manifests: IndexedManifest[] = [];
    for (const [digest, digestTags] of byDigest) {
      const entry = known.get(digest) ?? (await this.describe(name, digest));
      if (entry) manifests.push({ ...entry, tags: digestTags.sort() });
    }
    manifests.sort((a, b) => (a.digest < b.digest ? -1 : a.digest > b.digest ? 1 : 0));
    return { name, manifests };
  }

  /** Reads a manifest's index fields; undefined when it was deleted meanwhile. */
  private async describe(name: string, digest: string): Promise<IndexedManifest | undefined> {
    let stored;
    try {
      stored = await this.manifests.get(name, digest);
    } catch (err) {
      if (err instanceof RegistryError && err.code === 'MANIFEST_UNKNOWN') return undefined;
      throw err;
    }
    const m = parseManifest(stored.bytes, stored.mediaType);
    const a = m.annotations;
    const tasks = (a[ANNOTATION.tasks] ?? '').split(',').map((t) => t.trim()).filter(Boolean);
    return {
      digest,
      mediaType: stored.mediaType,
      ...(m.artifactType ? { artifactType: m.artifactType } : {}),
      tags: [],
      ...(a[ANNOTATION.version] ? { version: a[ANNOTATION.version] } : {}),
      ...(a[ANNOTATION.kind] ? { kind: a[ANNOTATION.kind] } : {}),
      tasks,
      ...(a[ANNOTATION.tokenizer] ? { tokenizer: a[ANNOTATION.tokenizer] } : {}),
    };
  }
}

function matches(m: IndexedManifest, q: SearchQuery): boolean {
  return (
    (q.task === undefined || m.tasks.includes(q.task)) &&
    (q.kind === undefined || m.kind === q.kind) &&
    (q.tokenizer === undefined || m.tokenizer === q.tokenizer)
  );
}

/** Semver descending; entries without a valid version go last, by digest. */
function newestFirst(a: IndexedManifest, b: IndexedManifest): number {
  const va = versionOf(a);
  const vb = versionOf(b);
  if (va && vb) return semver.rcompare(va, vb);
  if (va || vb) return va ? -1 : 1;
  return a.digest < b.digest ? -1 : 1;
}

const versionOf = (m: IndexedManifest) =>
  (m.version && semver.valid(m.version)) || m.tags.map(exactVersionOfTag).find((v) => v !== undefined);

function sameEntries(a: Map<string, string>, b: Map<string, string>): boolean {
  return a.size === b.size && [...a].every(([tag, digest]) => b.get(tag) === digest);
}
