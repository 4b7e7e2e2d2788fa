/** The content digest a GGUF is known by (its converted module's cache entry and provenance). */
import { createHash } from 'node:crypto';
import { cachedHashFile, type FileDigest } from '../modules/file-digest.js';

/**
 * The sha256 and size of a GGUF given as its files (`GgufFile.shardPaths`): a single file's own digest; for a split
 * GGUF, the sha256 of its shards' digests, one per line in order, and their total size (each shard hashed once per
 * version of it, as `cachedHashFile` records). `onBytes` hears the bytes hashed so far over all of them.
 */
export async function ggufDigest(files: readonly string[], cacheDir?: string, onBytes?: (bytes: number) => void): Promise<FileDigest> {
  if (files.length === 1) return cachedHashFile(files[0]!, undefined, cacheDir, onBytes);
  const digests: string[] = [];
  let before = 0;
  for (const file of files) {
    const offset = before;
    const d = await cachedHashFile(file, undefined, cacheDir, onBytes && ((bytes) => onBytes(offset + bytes)));
    digests.push(d.sha256);
    before += d.size;
  }
  return { sha256: createHash('sha256').update(digests.join('\n')).digest('hex'), size: before };
}
