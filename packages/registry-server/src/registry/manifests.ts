/**
 * Manifests: stored as blobs (exact bytes), made visible in a repository by a revision link that also
 * records the media type they were pushed as, and reachable by tag; one with a `subject` is listed among its
 * subject's referrers (OCI 1.1) until it is deleted, as are those a referrers tag's index names (see `referrers`).
 */
import { sha256 } from '../digest.js';
import { KeyedMutex } from '../keyed-mutex.js';
import { digestInvalid, manifestBlobUnknown, manifestInvalid, manifestUnknown } from '../errors.js';
import { digestHex, isDigest } from '../names.js';
import type { StorageDriver } from '../storage/driver.js';
import { blobKey, layersDir, manifestsDir, referrerLink, referrersDir, repositoriesDir, revisionLink, revisionsDir } from '../storage/layout.js';
import type { BlobStore } from './blobs.js';
import { parseManifest, type Descriptor, type ParsedManifest } from './manifest-format.js';
import type { TagStore } from './tags.js';

export interface StoredManifest {
  digest: string;
  mediaType: string;
  bytes: Buffer;
}

/** How the referrers API lists a manifest: OCI's descriptor, with its artifact type and annotations. */
export interface ReferrerDescriptor extends Descriptor {
  artifactType?: string;
  annotations?: Record<string, string>;
}

/**
 * The tag under which clients keep an image index of `subject`'s referrers where a registry has no referrers API
 * (OCI 1.1's referrers tag schema, `<alg>-<ref>`; a sha256 digest needs none of its truncation).
 */
const referrersTag = (subject: string) => subject.replace(':', '-');

function referrerDescriptor(digest: string, size: number, manifest: ParsedManifest): ReferrerDescriptor {
  return {
    mediaType: manifest.mediaType,
    digest,
    size,
    ...(manifest.artifactType ? { artifactType: manifest.artifactType } : {}),
    ...(Object.keys(manifest.annotations).length > 0 ? { annotations: manifest.annotations } : {}),
  };
}

export class ManifestStore {
  /** A repository's manifest, by digest, is pushed or deleted by one request at a time in this process. */
  private readonly locks = new KeyedMutex();

  constructor(
    private readonly storage: StorageDriver,
    private readonly blobs: BlobStore,
    private readonly tags: TagStore,
  ) {}

  /**
   * Stores a manifest under a tag or its digest. Every blob and child manifest it names must already be
   * in repository `name`, with the size the descriptor claims.
   */
  async put(name: string, reference: string, bytes: Buffer, contentType?: string): Promise<{ digest: string; manifest: ParsedManifest }> {
    const digest = sha256(bytes);
    if (isDigest(reference) && reference !== digest) {
      throw digestInvalid('manifest digest does not match the reference', { reference, actual: digest });
    }
    const manifest = parseManifest(bytes, contentType);
    if (manifest.subject && !isDigest(manifest.subject.digest)) throw manifestInvalid('subject has an invalid digest', { digest: manifest.subject.digest });
    for (const d of manifest.blobs) await this.checkReferenced(name, d, false);
    for (const d of manifest.manifests) await this.checkReferenced(name, d, true);

    const hex = digestHex(digest);
    await this.locks.run(`${name}\0${hex}`, async () => {
      const existed = (await this.storage.stat(revisionLink(name, hex))) !== undefined;
      const blobLinked = (await this.blobs.stat(name, digest)) !== undefined;
      if (!(await this.blobs.held(digest))) await this.storage.put(blobKey(hex), bytes);
      // Linked as a blob too, so that `GET /blobs/<manifest digest>` works as it does on other registries.
      await this.blobs.link(name, digest);
      await this.storage.put(revisionLink(name, hex), Buffer.from(JSON.stringify({ digest, mediaType: manifest.mediaType })));
      if (manifest.subject) {
        const listed = referrerDescriptor(digest, bytes.length, manifest);
        await this.storage.put(referrerLink(name, digestHex(manifest.subject.digest), hex), Buffer.from(JSON.stringify(listed)));
      }
      if (isDigest(reference)) return;
      try {
        await this.tags.set(name, reference, digest);
      } catch (err) {
        // A manifest refused its tag (an exact version that has other content) lands nowhere: not by digest, not
        // among its subject's referrers. (One the repository held before stays as it was.)
        if (!existed) {
          if (manifest.subject) await this.storage.delete(`${referrersDir(name, digestHex(manifest.subject.digest))}/${hex}`);
          await this.storage.delete(`${revisionsDir(name)}/${hex}`);
          if (!blobLinked) await this.blobs.unlink(name, digest);
        }
        throw err;
      }
    });
    return { digest, manifest };
  }

  async get(name: string, reference: string): Promise<StoredManifest> {
    const digest = isDigest(reference) ? reference : await this.tags.get(name, reference);
    if (digest === undefined) throw manifestUnknown(reference);
    const hex = digestHex(digest);
    const revision = await this.storage.get(revisionLink(name, hex));
    const bytes = revision && (await this.storage.get(blobKey(hex)));
    if (!revision || !bytes) throw manifestUnknown(reference);
    const { mediaType } = JSON.parse(revision.toString()) as { mediaType: string };
    return { digest, mediaType, bytes };
  }

  /** By digest: the manifest and every tag pointing to it; by tag: just the tag. */
  async delete(name: string, reference: string): Promise<void> {
    if (!isDigest(reference)) {
      if (!(await this.tags.delete(name, reference))) throw manifestUnknown(reference);
      return;
    }
    const hex = digestHex(reference);
    // Against a push of the same manifest: it lands before or after, never between the tags' removal and the
    // revision's, which left a tag pushed meanwhile pointing at nothing (found by fuzzing).
    await this.locks.run(`${name}\0${hex}`, async () => {
      if ((await this.storage.stat(revisionLink(name, hex))) === undefined) throw manifestUnknown(reference);
      for (const [tag, digest] of await this.tags.entries(name)) {
        // (read again: yanking a version moves `latest` off it, to another manifest that stays)
        if (digest === reference && (await this.tags.get(name, tag)) === reference) await this.tags.delete(name, tag);
      }
      const subject = (await this.parsed(name, hex))?.manifest.subject?.digest;
      if (subject) await this.storage.delete(`${referrersDir(name, digestHex(subject))}/${hex}`);
      await this.storage.delete(`${revisionsDir(name)}/${hex}`);
      await this.blobs.unlink(name, reference);
    });
  }

  /**
   * The manifests of repository `name` whose `subject` is `subject` (OCI 1.1 referrers), as the descriptors an index
   * lists them by, sorted by digest; with `artifactType`, only those of that type. None for a subject nothing refers to.
   */
  async referrers(name: string, subject: string, artifactType?: string): Promise<ReferrerDescriptor[]> {
    const found = new Map<string, ReferrerDescriptor>();
    for await (const o of this.storage.list(referrersDir(name, digestHex(subject)))) {
      const bytes = o.key.endsWith('/link') ? await this.storage.get(o.key) : undefined;
      if (!bytes) continue;
      const d = JSON.parse(bytes.toString()) as ReferrerDescriptor;
      // One being deleted: its revision goes first.
      if ((await this.storage.stat(revisionLink(name, digestHex(d.digest)))) === undefined) continue;
      found.set(d.digest, d);
    }
    await this.addTaggedReferrers(name, subject, found);
    return [...found.values()]
      .filter((d) => artifactType === undefined || d.artifactType === artifactType)
      .sort((a, b) => (a.digest < b.digest ? -1 : a.digest > b.digest ? 1 : 0));
  }

  /**
   * Adds to `found` the referrers of `subject` named by the index under its referrers tag. Clients keep that tag where
   * the registry answers no referrers API, as builds before it did and left their signatures without a link; the spec
   * has a registry that enables the API list them (but only manifests of `name` that do have that subject). Entries
   * already found are not read again, so this costs one tag read where clients kept no such tag.
   */
  private async addTaggedReferrers(name: string, subject: string, found: Map<string, ReferrerDescriptor>): Promise<void> {
    const tagged = await this.tags.get(name, referrersTag(subject));
    const index = tagged !== undefined && isDigest(tagged) ? await this.parsed(name, digestHex(tagged)) : undefined;
    for (const { digest } of index?.manifest.manifests ?? []) {
      if (found.has(digest) || !isDigest(digest)) continue;
      const entry = await this.parsed(name, digestHex(digest));
      if (entry?.manifest.subject?.digest === subject) found.set(digest, referrerDescriptor(digest, entry.bytes.length, entry.manifest));
    }
  }

  /** Manifest `hex` of `name` and its bytes, if the repository holds it (and it can be read). */
  private async parsed(name: string, hex: string): Promise<{ bytes: Buffer; manifest: ParsedManifest } | undefined> {
    const [revision, bytes] = await Promise.all([this.storage.get(revisionLink(name, hex)), this.storage.get(blobKey(hex))]);
    if (!revision || !bytes) return undefined;
    try {
      return { bytes, manifest: parseManifest(bytes, (JSON.parse(revision.toString()) as { mediaType?: string }).mediaType) };
    } catch {
      return undefined;
    }
  }

  /** The names of the repositories that hold at least one manifest, sorted. */
  async repositories(): Promise<string[]> {
    const names = new Set<string>();
    const revision = /^repositories\/(.+)\/_manifests\/revisions\/sha256\/[0-9a-f]{64}\/link$/;
    for await (const o of this.storage.list(repositoriesDir)) {
      const m = revision.exec(o.key);
      if (m) names.add(m[1]!);
    }
    return [...names].sort();
  }

  /** Whether the repository holds any manifest, tag or blob. */
  async repositoryExists(name: string): Promise<boolean> {
    for (const dir of [manifestsDir(name), layersDir(name)]) {
      for await (const _ of this.storage.list(dir)) return true;
    }
    return false;
  }

  private async checkReferenced(name: string, d: Descriptor, isManifest: boolean): Promise<void> {
    if (!isDigest(d.digest)) throw manifestInvalid('descriptor has an invalid digest', { digest: d.digest });
    const size = await this.blobs.stat(name, d.digest);
    const present = size !== undefined && (!isManifest || (await this.storage.stat(revisionLink(name, digestHex(d.digest)))) !== undefined);
    if (!present) throw manifestBlobUnknown(d.digest);
    if (size !== d.size) throw manifestInvalid('descriptor size does not match the stored content', { digest: d.digest, size: d.size, stored: size });
  }
}
