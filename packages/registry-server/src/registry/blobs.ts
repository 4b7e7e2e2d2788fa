/**
 * Blobs: content-addressed bytes shared by the whole registry, and per-repository links that decide
 * which repository may see them. A blob pushed to one repository is invisible in another until it is
 * pushed or mounted there.
 */
import type { Readable } from 'node:stream';
import { digestHex } from '../names.js';
import type { ByteRange, StorageDriver } from '../storage/driver.js';
import { blobKey, layerLink } from '../storage/layout.js';

export class BlobStore {
  constructor(private readonly storage: StorageDriver) {}

  /** Size of a blob visible in repository `name`, or undefined. */
  async stat(name: string, digest: string): Promise<number | undefined> {
    const hex = digestHex(digest);
    if ((await this.storage.stat(layerLink(name, hex))) === undefined) return undefined;
    return this.storage.stat(blobKey(hex));
  }

  /** Streams a blob (the caller has checked visibility with {@link stat}). */
  read(digest: string, range?: ByteRange): Promise<Readable | undefined> {
    return this.storage.read(blobKey(digestHex(digest)), range);
  }

  /** Whether the registry holds the bytes at all, in any repository. */
  async held(digest: string): Promise<boolean> {
    return (await this.storage.stat(blobKey(digestHex(digest)))) !== undefined;
  }

  async link(name: string, digest: string): Promise<void> {
    await this.storage.put(layerLink(name, digestHex(digest)), Buffer.from(digest));
  }

  /** Removes the blob from repository `name` (the bytes stay for other repositories); false if absent. */
  async unlink(name: string, digest: string): Promise<boolean> {
    const key = layerLink(name, digestHex(digest));
    if ((await this.storage.stat(key)) === undefined) return false;
    await this.storage.delete(key);
    return true;
  }

  /** Makes a blob of repository `from` visible in `to`; false when `from` does not have it. */
  async mount(from: string, to: string, digest: string): Promise<boolean> {
    if ((await this.stat(from, digest)) === undefined) return false;
    await this.link(to, digest);
    return true;
  }
}
