/** @reasonplug/registry-server: an OCI distribution registry with the `_reasonplug` module extension. */
export { createRegistryServer, type ListeningRegistry, type RegistryServer, type RegistryServerOptions } from './server.js';
export type { AuthConfig } from './http/access.js';
export type { StorageDriver, ByteRange, ObjectInfo } from './storage/driver.js';
export { InvalidKeyError } from './storage/driver.js';
export { FilesystemStorage } from './storage/filesystem.js';
export { S3Storage, type S3StorageOptions } from './storage/s3.js';
export { TokenStore, type TokenRecord, type Principal } from './auth/tokens.js';
export { parseScope, InvalidScopeError, type Scope, type Action } from './auth/scopes.js';
export { RegistryError, type ErrorCode } from './errors.js';
export { MODULE_ARTIFACT_TYPE, type SearchResult, type IndexedManifest } from './registry/module-index.js';
export { MediaType } from './registry/manifest-format.js';
export type { Resolved } from './registry/resolve.js';
export type { MaintenanceReport } from './registry/maintenance.js';
export { collectGarbage, GarbageCollectionError, DEFAULT_GC_MIN_AGE_MS, type CollectOptions, type CollectReport } from './registry/garbage.js';
