/** The registry client: references, packing, push, pull into the cache, resolve, search. */
export { Annotations, MAX_MANIFEST_BYTES, MediaTypes, packModule, type Descriptor, type OciManifest, type PackedModule } from './artifact.js';
export { BlobRemovedError, ModuleCache } from './cache.js';
export { RegistryClient } from './client.js';
export type { TransferProgress } from './download.js';
export * from './errors.js';
export type { ResolvedVersion, SearchHit, SearchQuery } from './extension.js';
export { reasonerForTask, resolveModule, searchModules, type ResolvedModule } from './lookup.js';
export { progressBar, ProgressBar, type ProgressStream } from './progress.js';
export { pullModule, type PulledModule, type PullOptions } from './pull.js';
export { pullOllamaModel, type OllamaPullOptions } from './ollama-pull.js';
export { pushModule, type PushOptions, type PushResult } from './push.js';
export { formatRef, parseRef, tagVersion, versionTag, type ModuleRef, type Selector } from './reference.js';
export { resolveModelPath } from './resolve-model.js';
export type { RegistryOptions } from './settings.js';
