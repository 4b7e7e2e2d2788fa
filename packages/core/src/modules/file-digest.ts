/**
 * sha256 of files, streamed, and a stat cache so that an unchanged file is hashed once, like git's index.
 * Loading a verified multi-GB module then costs a few `stat` calls instead of reading every byte again.
 *
 * A record is trusted only while the file's size, mtime and ctime (nanoseconds) are the ones seen when it
 * was hashed. mtime alone is not enough: `utimes` sets it back after a write. ctime cannot be set from user
 * space; every write, truncate, `utimes`, chmod or link moves it to "now", so no change of bytes through the
 * file system leaves a record valid. Two holes remain, and are handled:
 * - timestamps are coarse (a kernel tick): a write in the same tick as the hashing would keep ctime. So, as
 *   git does with "racily clean" entries, a file whose ctime is within {@link RACY_MS} of the hashing is not
 *   recorded; it is hashed again next time.
 * - records are keyed by device and inode, so the hard links of one file (a cache blob and its module
 *   directory entry) share one record, and a file replaced by rename never inherits the old record.
 * What no stat record can see, bytes changed beneath the file system (bit rot, raw device writes), is out of
 * reach short of hashing on every use; `hashFile` is there for callers that want that.
 */
import { createHash } from 'node:crypto';
import { createReadStream, type BigIntStats } from 'node:fs';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { cacheRoot } from './cache-root.js';
import { uniqueSuffix } from '../registry/atomic.js';

/** A file's content digest (lower-case hex) and size. */
export interface FileDigest {
  sha256: string;
  size: number;
}

/** A file changed this recently (ctime) is hashed but not recorded: its timestamps may not show the next write. */
export const RACY_MS = 2000;

/** Counters for tests and diagnostics: files hashed in full, and digests answered from a record. */
export const fileDigestStats = { hashed: 0, recorded: 0 };

/** Hashes a file as a stream (never held in memory); `signal` cancels it; `onBytes` hears the bytes read so far. */
export async function hashFile(path: string, signal?: AbortSignal, onBytes?: (bytes: number) => void): Promise<FileDigest> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 22, ...(signal ? { signal } : {}) })) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
    onBytes?.(size);
  }
  fileDigestStats.hashed++;
  return { sha256: hash.digest('hex'), size };
}

interface StatRecord {
  sha256: string;
  size: number;
  /** Nanoseconds, as decimal strings (beyond a double's precision). */
  mtimeNs: string;
  ctimeNs: string;
}

const sameFile = (a: BigIntStats, b: BigIntStats) =>
  a.dev === b.dev && a.ino === b.ino && a.size === b.size && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs;

/** The default directory of stat records, `<cache root>/digests`. */
export const defaultDigestDir = (): string => join(cacheRoot(), 'digests');

/**
 * {@link hashFile} remembered under `cacheDir`, keyed by device and inode and valid while size, mtime and
 * ctime are unchanged (see the module comment). A cache that cannot be written only costs the next call a
 * re-hash. `onBytes` hears the progress of a hashing (none when a record answers).
 */
export async function cachedHashFile(
  path: string,
  signal?: AbortSignal,
  cacheDir = defaultDigestDir(),
  onBytes?: (bytes: number) => void,
): Promise<FileDigest> {
  return (await digestOf(resolve(path), cacheDir, true, signal, onBytes)).digest;
}

/**
 * {@link cachedHashFile} for checking a file against the digest it should have (hex): a record that
 * disagrees is not believed, since a damaged record must not condemn a good file; the file is hashed again
 * and the record replaced. Returns the file's actual digest.
 */
export async function checkFile(path: string, sha256: string, signal?: AbortSignal, cacheDir = defaultDigestDir()): Promise<FileDigest> {
  const abs = resolve(path);
  const first = await digestOf(abs, cacheDir, true, signal);
  if (first.digest.sha256 === sha256 || !first.fromRecord) return first.digest;
  return (await digestOf(abs, cacheDir, false, signal)).digest;
}

async function digestOf(
  abs: string,
  cacheDir: string,
  useRecord: boolean,
  signal?: AbortSignal,
  onBytes?: (bytes: number) => void,
): Promise<{ digest: FileDigest; fromRecord: boolean }> {
  const before = await stat(abs, { bigint: true });
  const now = BigInt(Date.now()) * 1_000_000n;
  const record = join(cacheDir, `${before.dev}-${before.ino}.json`);
  if (useRecord) {
    try {
      const seen = JSON.parse(await readFile(record, 'utf8')) as StatRecord;
      if (String(seen.size) === String(before.size) && seen.mtimeNs === String(before.mtimeNs) && seen.ctimeNs === String(before.ctimeNs)) {
        fileDigestStats.recorded++;
        return { digest: { sha256: seen.sha256, size: seen.size }, fromRecord: true };
      }
    } catch {
      // no record yet, or an unreadable one: hash below
    }
  }
  const digest = await hashFile(abs, signal, onBytes);
  const after = await stat(abs, { bigint: true });
  // Changed while being hashed, or too recently for its timestamps to show the next change: no record.
  const racy = before.ctimeNs > now - BigInt(RACY_MS) * 1_000_000n;
  if (!sameFile(before, after) || digest.size !== Number(before.size) || racy) return { digest, fromRecord: false };
  const fresh: StatRecord = { ...digest, mtimeNs: String(before.mtimeNs), ctimeNs: String(before.ctimeNs) };
  const tmp = `${record}.${uniqueSuffix()}.tmp`;
  try {
    await mkdir(cacheDir, { recursive: true });
    await writeFile(tmp, JSON.stringify(fresh));
    await rename(tmp, record);
  } catch {
    // read-only or full cache: the digest is still right (a full disk may have let the file be made, empty)
    await rm(tmp, { force: true }).catch(() => {});
  }
  return { digest, fromRecord: false };
}
