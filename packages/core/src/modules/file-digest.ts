/**
 * sha256 of files, streamed, and a stat cache so that an unchanged file is hashed once: like git's index,
 * a file whose size, mtime and inode match the recorded ones keeps its recorded digest. Loading a verified
 * multi-GB module then costs a few `stat` calls instead of reading every byte again.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { cacheRoot } from './cache-root.js';

/** A file's content digest (lower-case hex) and size. */
export interface FileDigest {
  sha256: string;
  size: number;
}

/** Hashes a file as a stream (never held in memory); `signal` cancels it. */
export async function hashFile(path: string, signal?: AbortSignal): Promise<FileDigest> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 22, ...(signal ? { signal } : {}) })) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { sha256: hash.digest('hex'), size };
}

interface StatRecord extends FileDigest {
  mtimeMs: number;
  ino: number;
}

/**
 * {@link hashFile} remembered under `<cache>/digests/`, keyed by the absolute path and valid while size,
 * mtime and inode are unchanged. A cache that cannot be written only costs the next call a re-hash.
 */
export async function cachedHashFile(path: string, signal?: AbortSignal, cacheDir = join(cacheRoot(), 'digests')): Promise<FileDigest> {
  const abs = resolve(path);
  const st = await stat(abs);
  const record = join(cacheDir, `${createHash('sha256').update(abs).digest('hex')}.json`);
  try {
    const seen = JSON.parse(await readFile(record, 'utf8')) as StatRecord;
    if (seen.size === st.size && seen.mtimeMs === st.mtimeMs && seen.ino === st.ino) return { sha256: seen.sha256, size: seen.size };
  } catch {
    // no record yet, or an unreadable one: hash below
  }
  const digest = await hashFile(abs, signal);
  const fresh: StatRecord = { ...digest, mtimeMs: st.mtimeMs, ino: st.ino };
  try {
    await mkdir(cacheDir, { recursive: true });
    const tmp = `${record}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
    await writeFile(tmp, JSON.stringify(fresh));
    await rename(tmp, record);
  } catch {
    // read-only or full cache: the digest is still right
  }
  return digest;
}
