/**
 * Downloading one blob into the cache: streamed to a process-unique `.partial` file while hashing,
 * fsynced, and renamed to its digest only when the SHA-256 matches. A download that breaks off keeps its
 * partial file; the next process to want the blob adopts it (when its owner is gone, see `ownerGone`) and asks the
 * registry for the rest with `Range`.
 */
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { link, lstat, mkdir, open, readdir, rename, rm, stat, unlink, writeFile, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { madeByMe, madeHere, suffixPid, uniqueSuffix } from './atomic.js';
import type { Descriptor } from './artifact.js';
import type { ModuleCache } from './cache.js';
import type { RegistryClient } from './client.js';
import { CacheWriteError, DigestMismatchError, RegistryUnreachableError } from './errors.js';

/** Progress of one file of a push or pull. */
export interface TransferProgress {
  /** The file's path in the module. */
  file: string;
  /** The blob's `sha256:` digest. */
  digest: string;
  /** The file's whole size in bytes. */
  size: number;
  /** Bytes present so far, including resumed ones. */
  bytes: number;
  /** Bytes taken over from an interrupted download (0 for a fresh one or an upload). */
  resumedFrom: number;
  /** True on the file's last report, once it is complete (downloads: verified and in the cache). */
  done: boolean;
}

/**
 * The `digest` of progress while a file is hashed (a GGUF before its conversion): the entry gives way to the file's
 * own digest once that phase ends, so a bar shows one phase at a time rather than their sum.
 */
export const HASHING_DIGEST = 'sha256:pending';

export interface DownloadOptions {
  /** Name shown in progress and errors (the layer title). */
  file: string;
  onProgress?: (p: TransferProgress) => void;
  signal?: AbortSignal;
}

/**
 * How long a temp file or folder of a process that is not visible here must have been still before it counts as
 * abandoned: a process in another PID namespace (a container sharing the cache volume) is invisible while it writes,
 * and writes more often than this. (One of this namespace that is not visible is gone: a pull killed here resumes at once.)
 */
const STALE_MS = 2 * 60 * 1000;
const HASH_CHUNK = 1 << 22;
/** Partial files this process is writing; its other ones are left over from failed attempts, free to resume. */
const writing = new Set<string>();
/**
 * Downloads running in this process, by the blob's final path: a pull that wants a blob another pull is fetching
 * waits for it instead of fetching it again (64 concurrent pulls of one module moved its bytes 64 times).
 */
const inFlight = new Map<string, Promise<'cached' | 'fetched' | 'repaired'>>();

/**
 * Ensures blob `descriptor` is in the cache, verified: says whether it was there (`cached`), was not
 * (`fetched`), or was there with other content and has been fetched again (`repaired`). Throws
 * `DigestMismatchError` (nothing of the blob is kept), `RegistryUnreachableError` or, where the cache could not take
 * the bytes, `CacheWriteError` (in both, what was written is kept, and the next attempt resumes from it).
 */
export async function downloadBlob(
  client: RegistryClient,
  repository: string,
  descriptor: Descriptor,
  cache: ModuleCache,
  opts: DownloadOptions,
): Promise<'cached' | 'fetched' | 'repaired'> {
  const target = cache.blobPath(descriptor.digest);
  let fetchedMeanwhile = false;
  for (let running = inFlight.get(target); running; running = inFlight.get(target)) {
    // Its failure (its caller's abort, a broken connection) is its caller's: this pull then tries for itself,
    // resuming from what arrived.
    const outcome = await settledOrAborted(running, opts.signal);
    if (outcome === 'fetched' || outcome === 'repaired') fetchedMeanwhile = true;
  }
  // Registered in the same turn as the check above, so that no other pull of this blob starts in between.
  const work = ensureBlob({ client, repository, descriptor, target, cache, opts }, cache);
  inFlight.set(target, work);
  try {
    const outcome = await work;
    return outcome === 'cached' && fetchedMeanwhile ? 'fetched' : outcome;
  } finally {
    if (inFlight.get(target) === work) inFlight.delete(target);
  }
}

/** The blob from the cache when it is there intact, else fetched into it. */
async function ensureBlob(job: Job, cache: ModuleCache): Promise<'cached' | 'fetched' | 'repaired'> {
  const { digest, size } = job.descriptor;
  const state = await cache.blobState(digest, size);
  if (state === 'verified') {
    job.opts.onProgress?.({ file: job.opts.file, digest, size, bytes: size, resumedFrom: 0, done: true });
    return 'cached';
  }
  await fetchBlob(job, cache);
  return state === 'corrupt' ? 'repaired' : 'fetched';
}

/** Fetches a blob that is not in the cache (or not intact there) into it. */
async function fetchBlob(job: Job, cache: ModuleCache): Promise<void> {
  await mkdir(cache.blobsDir, { recursive: true });
  const { digest, size } = job.descriptor;
  const hex = digest.slice('sha256:'.length);
  const partial = await claimPartial(cache.blobsDir, hex, size, true);
  try {
    await fetchInto(job, partial);
  } catch (err) {
    // A resumed prefix may itself have been bad (written by a faulty process); one fresh try settles it.
    if (!(err instanceof DigestMismatchError) || partial.size === 0) throw err;
    await fetchInto(job, await claimPartial(cache.blobsDir, hex, size, false));
  }
}

/** What `work` resolved to, undefined when it failed; throws the abort reason as soon as `signal` aborts. */
async function settledOrAborted<T>(work: Promise<T>, signal: AbortSignal | undefined): Promise<T | undefined> {
  signal?.throwIfAborted();
  const settled = work.catch(() => undefined);
  if (!signal) return settled;
  let onAbort: (() => void) | undefined;
  try {
    return await Promise.race([
      settled,
      new Promise<never>((_, reject) => signal.addEventListener('abort', (onAbort = () => reject(signal.reason as Error)), { once: true })),
    ]);
  } finally {
    if (onAbort) signal.removeEventListener('abort', onAbort);
  }
}

interface Job {
  client: RegistryClient;
  repository: string;
  descriptor: Descriptor;
  /** Final path of the blob. */
  target: string;
  cache: ModuleCache;
  opts: DownloadOptions;
}

interface PartialFile {
  path: string;
  /** Bytes already in it. */
  size: number;
}

/** Fetches the rest of a blob into `partial` (claimed by `claimPartial`), verifies it and puts it at `job.target`. */
async function fetchInto({ client, repository, descriptor, target, cache, opts }: Job, partial: PartialFile): Promise<void> {
  const { digest, size } = descriptor;
  const where = `${opts.file} (${digest}) of ${client.registry}/${repository}`;
  const unwritten = (err: unknown) => cacheWriteError(err, partial.path, `${opts.file} (${digest})`, 'pull again to resume from what was written');
  const fh = await open(partial.path, 'r+').catch((err: unknown) => {
    writing.delete(partial.path);
    throw err;
  });
  let complete = false;
  let keep = true;
  let resumedFrom = 0;
  let pos = partial.size;
  const report = (done: boolean) => opts.onProgress?.({ file: opts.file, digest, size, bytes: pos, resumedFrom, done });
  try {
    let hash = await hashPrefix(partial.path, partial.size);
    // A partial that is already whole (its process died before the rename) needs no request.
    const { body, offset, length } =
      partial.size === size ? { body: new ReadableStream<Uint8Array>({ start: (c) => c.close() }), offset: size, length: size } : await client.openBlob(repository, digest, partial.size, opts.signal);
    if (length !== undefined && length !== size) {
      // Not a broken connection, which a retry resumes: the registry's own copy is not the blob.
      await body.cancel();
      keep = false;
      throw new DigestMismatchError(
        `registry ${client.registry} holds ${where} as ${length} bytes, where the manifest says ${size}: its copy is damaged or was replaced, so it was refused and nothing was kept`,
        digest,
        `${length} bytes`,
      );
    }
    if (offset === 0 && partial.size > 0) {
      // The registry ignored our Range: start over.
      pos = 0;
      await fh.truncate(0);
      hash = createHash('sha256');
    }
    resumedFrom = offset;
    report(false);
    try {
      for await (const chunk of body) {
        if (pos + chunk.length > size) {
          keep = false;
          throw new DigestMismatchError(`registry ${client.registry} sent more than the ${size} bytes of ${where}; refusing it, nothing was kept`, digest, `more than ${size} bytes`);
        }
        hash.update(chunk);
        await writeAll(fh, chunk, pos).catch((err: unknown) => {
          throw unwritten(err);
        });
        pos += chunk.length;
        report(false);
      }
    } catch (err) {
      if (err instanceof DigestMismatchError || err instanceof CacheWriteError || opts.signal?.aborted) throw err;
      const why = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).message;
      throw new RegistryUnreachableError(`the download of ${where} broke off at byte ${pos} of ${size} (${why}); pull again to resume`, client.registry);
    }
    if (pos < size) {
      throw new RegistryUnreachableError(`the download of ${where} ended at byte ${pos} of ${size}; pull again to resume`, client.registry);
    }
    const actual = `sha256:${hash.digest('hex')}`;
    if (actual !== digest) {
      keep = false;
      throw new DigestMismatchError(
        `registry ${client.registry} sent ${where} with digest ${actual}; the content is corrupt or was replaced, so it was refused and nothing was kept`,
        digest,
        actual,
      );
    }
    await fh.sync().catch((err: unknown) => {
      throw unwritten(err);
    });
    complete = true;
  } finally {
    await fh.close();
    writing.delete(partial.path);
    // An empty partial is worth nothing to a later attempt.
    if (!complete && (!keep || pos === 0)) await rm(partial.path, { force: true });
  }
  await place(partial.path, target, descriptor, cache);
  report(true);
}

/**
 * Writes all of `chunk` at `pos`. A positional write may take only part of it and report no error (a file-size limit
 * reached, a disk filling up): the rest is written again, which then fails with the cause. A write that takes nothing
 * without an error is a full disk.
 */
async function writeAll(fh: FileHandle, chunk: Uint8Array, pos: number): Promise<void> {
  for (let done = 0; done < chunk.length; ) {
    const { bytesWritten } = await fh.write(chunk, done, chunk.length - done, pos + done);
    if (bytesWritten === 0) throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', syscall: 'write' });
    done += bytesWritten;
  }
}

/** Why a write into the cache failed, by the system's error code, with what gets past it. */
const WRITE_FAILURES: Record<string, string> = {
  ENOSPC: 'no space left on its disk (ENOSPC); free some, or point REASONPLUG_CACHE at another disk',
  EDQUOT: 'the disk quota is used up (EDQUOT); free some space, or point REASONPLUG_CACHE at another disk',
  EFBIG: 'the file would be larger than this process may write (EFBIG: a file-size limit, ulimit -f); raise the limit',
};

/**
 * `err`, a file system failure to write `what` to `path` in the cache, as a `CacheWriteError` naming the path and the
 * cause, ending with `next` (what to do then); any other error (one with no `syscall`) is returned as it is.
 */
export function cacheWriteError(err: unknown, path: string, what: string, next: string): unknown {
  if (!(err instanceof Error) || typeof (err as NodeJS.ErrnoException).syscall !== 'string') return err;
  const { code } = err as NodeJS.ErrnoException;
  const why = (code !== undefined && WRITE_FAILURES[code]) || err.message;
  return new CacheWriteError(`cannot write ${what} into the cache (${path}): ${why}; then ${next}`, path, code, { cause: err });
}

/**
 * Moves a verified download to the blob's path, unless another process put the blob there meanwhile: renamed over,
 * that one's inode would leave the modules already hard-linked to it, which would then hold no blob's file.
 */
async function place(partial: string, target: string, { digest, size }: Descriptor, cache: ModuleCache): Promise<void> {
  try {
    await link(partial, target);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // (no hard links on this filesystem: nothing can be linked to the blob either)
    if (code !== 'EEXIST' || (await cache.blobState(digest, size)) !== 'verified') {
      await rename(partial, target);
      return;
    }
  }
  await unlink(partial);
}

/** Hashes the first `size` bytes of a file (the prefix a resumed download continues). */
async function hashPrefix(path: string, size: number): Promise<Hash> {
  const hash = createHash('sha256');
  if (size === 0) return hash;
  for await (const chunk of createReadStream(path, { start: 0, end: size - 1, highWaterMark: HASH_CHUNK })) hash.update(chunk as Buffer);
  return hash;
}

/**
 * A partial file of our own for blob `hex`: the largest abandoned one (its owner is dead or it has been
 * still for `STALE_MS`) renamed to our name, or a new empty one. Other abandoned ones are removed.
 */
async function claimPartial(dir: string, hex: string, size: number, adopt: boolean): Promise<PartialFile> {
  const mine = join(dir, `${hex}.${uniqueSuffix()}.partial`);
  // Ours from now on, before the file even exists, so no other pull in this process takes it.
  writing.add(mine);
  const abandoned: { path: string; size: number }[] = [];
  if (adopt) {
    for (const name of await readdir(dir)) {
      if (!name.startsWith(`${hex}.`) || !name.endsWith('.partial')) continue;
      const path = join(dir, name);
      const info = await stat(path).catch(() => undefined);
      if (info && !ownerAlive(name.slice(hex.length + 1, -'.partial'.length), path, info.mtimeMs)) abandoned.push({ path, size: info.size });
    }
  }
  abandoned.sort((a, b) => b.size - a.size);
  let claimed: PartialFile | undefined;
  for (const candidate of abandoned) {
    if (!claimed && candidate.size <= size) {
      // Two processes may race for it; rename lets exactly one win.
      const won = await rename(candidate.path, mine).then(
        () => true,
        () => false,
      );
      if (won) {
        claimed = { path: mine, size: candidate.size };
        continue;
      }
    }
    await rm(candidate.path, { force: true });
  }
  if (claimed) return claimed;
  try {
    await writeFile(mine, '', { flag: 'wx' });
  } catch (err) {
    writing.delete(mine);
    throw err;
  }
  return { path: mine, size: 0 };
}

function ownerAlive(suffix: string, path: string, mtimeMs: number): boolean {
  return madeByMe(suffix) ? writing.has(path) : !isAbandoned(mtimeMs, suffix);
}

/** Whether a temp file last written at `lastWrite`, named with `suffix` by another process, is abandoned (see {@link ownerGone}). */
function isAbandoned(lastWrite: number, suffix: string): boolean {
  if (pidVisible(suffixPid(suffix))) return false;
  return madeHere(suffix) || Date.now() - lastWrite > STALE_MS;
}

/** Whether a process with id `pid` exists in this PID namespace. */
function pidVisible(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: the process exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The newest mtime of a file, or of anything in a folder (its own included); undefined when it is gone. */
async function newestWrite(path: string): Promise<number | undefined> {
  const info = await lstat(path).catch(() => undefined);
  if (!info) return undefined;
  let newest = info.mtimeMs;
  if (info.isDirectory()) {
    for (const name of await readdir(path).catch(() => [] as string[])) newest = Math.max(newest, (await newestWrite(join(path, name))) ?? 0);
  }
  return newest;
}

/**
 * Whether the temp file or folder at `path`, named with the `uniqueSuffix` `suffix` of another process, is abandoned
 * (one that is gone counts as abandoned): no process with its id is visible here, and either it was made in this PID
 * namespace or nothing in it has been written for `STALE_MS` — a writer in another namespace (a container sharing
 * the cache) is invisible here while it writes.
 */
export async function ownerGone(path: string, suffix: string): Promise<boolean> {
  const newest = await newestWrite(path);
  return newest === undefined || isAbandoned(newest, suffix);
}

/**
 * Removes the temp siblings of `target` (`<target>.<uniqueSuffix>.tmp`, files or folders) whose writer is gone (see
 * {@link ownerGone}); the names of those other processes are still writing. This process's own are left alone.
 */
export async function sweepTemps(target: string): Promise<string[]> {
  const root = dirname(target);
  const prefix = `${basename(target)}.`;
  const running: string[] = [];
  for (const name of await readdir(root).catch(() => [] as string[])) {
    const suffix = name.startsWith(prefix) && name.endsWith('.tmp') ? name.slice(prefix.length, -'.tmp'.length) : '';
    if (!/^\d+-[0-9a-f]+$/.test(suffix) || madeByMe(suffix)) continue;
    if (await ownerGone(join(root, name), suffix)) await rm(join(root, name), { recursive: true, force: true });
    else running.push(name);
  }
  return running;
}
