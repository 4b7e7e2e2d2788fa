/**
 * Raised when a prepared graph cannot be written into the cache for a reason other than a cache that takes no files
 * (those graphs are used from memory): a file-size limit, an I/O error, a directory where the graph goes. The message
 * names the model and the cache; `cause` is the system's error. Apart from prepared-cache.ts, so that the caller's
 * thread can rebuild it from the model worker without loading protobuf.
 */
export class PreparedCacheError extends Error {
  override name = 'PreparedCacheError';
}
