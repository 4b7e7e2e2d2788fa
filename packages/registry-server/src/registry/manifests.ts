/**
 * Manifests: stored as blobs (exact bytes), made visible in a repository by a revision link that also
 * records the media type they were pushed as, and reachable by tag.
 */
import { sha256 } from '../digest.js';
import { KeyedMutex } from '../keyed-mutex.js';
import { digestInvalid, manifestBlobUnknown, manifestInvalid, manifestUnknown } from '../errors.js';
import { digestHex, isDigest } from '../names.js';
import type { StorageDriver } from '../storage/driver.js';
import { blobKey, layersDir, manifestsDir, revisionLink, revisionsDir } from '../storage/layout.js';
import type { BlobStore } from './blobs.js';
import { parseManifest, type Descriptor, type ParsedManifest } from './manifest-format.js';
import type { TagStore } from './tags.js';

export interface StoredManifest {
  digest: string;
  mediaType: string;
  bytes: Buffer;
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
    for (const d of manifest.blobs) await this.checkReferenced(name, d, false);
    for (const d of manifest.manifests) await this.checkReferenced(name, d, true);

    const hex = digestHex(digest);
    await this.locks.run(`${name}\0${hex}`, async () => {
      if (!(await this.blobs.held(digest))) await this.storage.put(blobKey(hex), bytes);
      // Linked as a blob too, so that `GET /blobs/<manifest digest>` works as it does on other registries.
      await this.blobs.link(name, digest);
      await this.storage.put(revisionLink(name, hex), Buffer.from(JSON.stringify({ digest, mediaType: manifest.mediaType })));
      if (!isDigest(reference)) await this.tags.set(name, reference, digest);
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
        if (digest === reference) await this.tags.delete(name, tag);
      }
      await this.storage.delete(`${revisionsDir(name)}/${hex}`);
      await this.blobs.unlink(name, reference);
    });
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
