/** The registry's stores over one storage driver, wired together. */
import type { StorageDriver } from '../storage/driver.js';
import { BlobStore } from './blobs.js';
import { ManifestStore } from './manifests.js';
import { ModuleIndex } from './module-index.js';
import { TagStore } from './tags.js';
import { UploadSessions } from './uploads.js';

export interface Registry {
  blobs: BlobStore;
  uploads: UploadSessions;
  manifests: ManifestStore;
  tags: TagStore;
  index: ModuleIndex;
}

export function openRegistry(storage: StorageDriver): Registry {
  const blobs = new BlobStore(storage);
  const tags = new TagStore(storage);
  const manifests = new ManifestStore(storage, blobs, tags);
  return {
    blobs,
    tags,
    manifests,
    uploads: new UploadSessions(storage, blobs),
    index: new ModuleIndex(storage, manifests, tags),
  };
}
