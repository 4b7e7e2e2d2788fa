/**
 * Garbage collection (`reasonplug-registry gc`), as CNCF distribution's `registry garbage-collect`: deleting a
 * manifest or a blob through the API only unlinks it from its repository, and the bytes stay under `blobs/` until
 * a collection finds that no manifest of any repository references them any more.
 *
 * Mark and sweep over storage: every manifest revision of every repository marks itself, its config and layers and,
 * for an index, its entries; every blob not marked is removed, with the repositories' links to it. With
 * `deleteUntagged`, manifests that no tag reaches (directly, through a tagged index, or as a referrer of a manifest
 * reached: signatures and SBOMs stay with what they describe) are deleted first, as a `DELETE` by digest would.
 *
 * Pushes may run meanwhile: a blob, or a link to it, written within `minAgeMs` (default an hour) is kept, so the
 * blobs of a push whose manifest has not arrived yet stay; manifests that arrive while the collection runs are marked
 * again before anything is removed. What remains is CNCF distribution's caveat: a manifest pushed in the instant
 * between that second look and a removal, referencing an old blob no manifest used, could lose it — so collect while
 * pushes are paused where that matters. A manifest that cannot be read stops the collection before anything is removed.
 */
import type { StorageDriver } from '../storage/driver.js';
import { blobDir, blobKey, layerDir, repositoriesDir, revisionLink } from '../storage/layout.js';
import { digestHex } from '../names.js';
import { parseManifest } from './manifest-format.js';
import { openRegistry, type Registry } from './registry.js';

/** How to collect. */
export interface CollectOptions {
  /** Say what would be removed, remove nothing. */
  dryRun?: boolean;
  /** Also delete manifests no tag reaches (distribution's `--delete-untagged`). */
  deleteUntagged?: boolean;
  /** Blobs, links and manifests written less than this long ago (ms) are kept; default one hour. */
  minAgeMs?: number;
}

/** What a collection removed (or, dry, would remove). */
export interface CollectReport {
  /** Untagged manifests deleted, as `name@digest`. */
  manifests: string[];
  /** Blobs removed, by digest. */
  blobs: string[];
  /** Their bytes. */
  bytes: number;
  /** Repositories' links to those blobs removed. */
  links: number;
}

/** A manifest could not be read: nothing was removed. */
export class GarbageCollectionError extends Error {
  override readonly name = 'GarbageCollectionError';
}

/** {@link CollectOptions.minAgeMs}'s default: one hour. */
export const DEFAULT_GC_MIN_AGE_MS = 3_600_000;

const REVISION = /^repositories\/(.+)\/_manifests\/revisions\/sha256\/([0-9a-f]{64})\/link$/;
const LAYER_LINK = /^repositories\/(.+)\/_layers\/sha256\/([0-9a-f]{64})\/link$/;
const BLOB = /^blobs\/sha256\/[0-9a-f]{2}\/([0-9a-f]{64})\/data$/;

interface Revision {
  name: string;
  hex: string;
  modified: number;
}

/** Every manifest revision of every repository, and every repository's links to blobs. */
async function scanRepositories(storage: StorageDriver): Promise<{ revisions: Revision[]; links: Revision[] }> {
  const revisions: Revision[] = [];
  const links: Revision[] = [];
  for await (const o of storage.list(repositoriesDir)) {
    const revision = REVISION.exec(o.key);
    if (revision) revisions.push({ name: revision[1]!, hex: revision[2]!, modified: o.modified });
    const link = LAYER_LINK.exec(o.key);
    if (link) links.push({ name: link[1]!, hex: link[2]!, modified: o.modified });
  }
  return { revisions, links };
}

/** What a manifest revision references (hex digests): its config and layers, an index's entries; and its subject. */
interface References {
  refs: string[];
  subject?: string;
}

async function referencesOf(storage: StorageDriver, r: Revision): Promise<References> {
  const link = await storage.get(revisionLink(r.name, r.hex));
  // Deleted since the scan: it references nothing any more.
  if (link === undefined) return { refs: [] };
  const bytes = await storage.get(blobKey(r.hex));
  if (bytes === undefined) throw new GarbageCollectionError(`manifest sha256:${r.hex} of ${r.name} has no bytes in storage; nothing was removed`);
  try {
    const { mediaType } = JSON.parse(link.toString()) as { mediaType?: string };
    const manifest = parseManifest(bytes, mediaType);
    return {
      refs: [...manifest.blobs, ...manifest.manifests].map((d) => digestHex(d.digest)),
      ...(manifest.subject ? { subject: digestHex(manifest.subject.digest) } : {}),
    };
  } catch (err) {
    throw new GarbageCollectionError(`manifest sha256:${r.hex} of ${r.name} cannot be read (${(err as Error).message}); nothing was removed`);
  }
}

/** Collects the registry's garbage (see the module comment). */
export async function collectGarbage(storage: StorageDriver, opts: CollectOptions = {}): Promise<CollectReport> {
  const registry = openRegistry(storage);
  const started = Date.now();
  const youngerThan = started - (opts.minAgeMs ?? DEFAULT_GC_MIN_AGE_MS);
  const report: CollectReport = { manifests: [], blobs: [], bytes: 0, links: 0 };
  const scanned = (await scanRepositories(storage)).revisions;
  let revisions = scanned;
  const references = new Map<string, References>();
  const referencesOfRevision = async (r: Revision) => {
    const key = `${r.name}@${r.hex}`;
    let refs = references.get(key);
    if (!refs) references.set(key, (refs = await referencesOf(storage, r)));
    return refs;
  };

  if (opts.deleteUntagged) {
    const doomed = await untagged(registry, revisions, referencesOfRevision, youngerThan);
    for (const r of doomed) {
      report.manifests.push(`${r.name}@sha256:${r.hex}`);
      if (!opts.dryRun) await registry.manifests.delete(r.name, `sha256:${r.hex}`);
    }
    const gone = new Set(doomed);
    revisions = revisions.filter((r) => !gone.has(r));
  }

  const marked = new Set<string>();
  const mark = async (list: Revision[]) => {
    for (const r of list) {
      marked.add(r.hex);
      for (const hex of (await referencesOfRevision(r)).refs) marked.add(hex);
    }
  };
  await mark(revisions);

  const candidates = new Map<string, number>();
  for await (const o of storage.list('blobs')) {
    const blob = BLOB.exec(o.key);
    if (blob && !marked.has(blob[1]!) && o.modified < youngerThan) candidates.set(blob[1]!, o.size);
  }
  // Manifests pushed while this ran, and blobs linked into a repository lately (an upload or mount whose manifest
  // may be on its way), keep what they name.
  const again = await scanRepositories(storage);
  const seen = new Set(scanned.map((r) => `${r.name}@${r.hex}`));
  await mark(again.revisions.filter((r) => !seen.has(`${r.name}@${r.hex}`)));
  for (const link of again.links) if (link.modified >= youngerThan) marked.add(link.hex);

  const linkedFrom = groupBy(again.links, (l) => l.hex);
  for (const [hex, size] of candidates) {
    if (marked.has(hex)) continue;
    report.blobs.push(`sha256:${hex}`);
    report.bytes += size;
    const links = linkedFrom.get(hex) ?? [];
    report.links += links.length;
    if (opts.dryRun) continue;
    for (const l of links) await storage.delete(layerDir(l.name, hex));
    await storage.delete(blobDir(hex));
  }
  return report;
}

/**
 * The revisions (older than `youngerThan`) that no tag of their repository reaches: directly, as an entry of a tagged
 * index, or as a referrer (a signature, an SBOM) of a manifest reached.
 */
async function untagged(registry: Registry, revisions: Revision[], referencesOf: (r: Revision) => Promise<References>, youngerThan: number): Promise<Revision[]> {
  const doomed: Revision[] = [];
  for (const [name, list] of groupBy(revisions, (r) => r.name)) {
    const byHex = new Map(list.map((r) => [r.hex, r]));
    const referrers = new Map<string, string[]>();
    for (const r of list) {
      const { subject } = await referencesOf(r);
      if (subject) referrers.set(subject, [...(referrers.get(subject) ?? []), r.hex]);
    }
    const reached = new Set<string>();
    const queue = [...(await registry.tags.entries(name)).values()].map(digestHex);
    for (let hex = queue.pop(); hex !== undefined; hex = queue.pop()) {
      if (reached.has(hex)) continue;
      reached.add(hex);
      const r = byHex.get(hex);
      // An index's entries are manifests of the same repository.
      if (r) queue.push(...(await referencesOf(r)).refs.filter((h) => byHex.has(h)));
      queue.push(...(referrers.get(hex) ?? []));
    }
    doomed.push(...list.filter((r) => !reached.has(r.hex) && r.modified < youngerThan));
  }
  return doomed;
}

function groupBy<T>(items: readonly T[], key: (item: T) => string): Map<string, T[]> {
  const groups = new Map<string, T[]>();
  for (const item of items) {
    const k = key(item);
    const group = groups.get(k);
    if (group) group.push(item);
    else groups.set(k, [item]);
  }
  return groups;
}
