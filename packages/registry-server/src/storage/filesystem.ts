/**
 * The embedded default driver: a directory tree. Every write goes to a process-unique temp file under
 * `<root>/.tmp`, is fsynced, then renamed into place (and the directory fsynced), so a reader or a crash
 * never sees a partial object. `.tmp` cannot collide with a key, whose segments never start with a dot.
 * Temp files are named `<pid>-<uuid>`, so that {@link FilesystemStorage.sweep} can tell a dead writer's
 * leftovers from the live writes of other servers on the same directory.
 */
import { randomUUID } from 'node:crypto';
import { link, mkdir, open, readdir, readFile, rename, rm, stat, unlink } from 'node:fs/promises';
import { dirname, join, relative, resolve, sep } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { assertKey, assertNamePrefix, type ByteRange, type ObjectInfo, type StorageDriver } from './driver.js';

const CHUNK = 1 << 20;
/**
 * A temp file untouched this long is abandoned whoever wrote it: its pid may have been reused, or its
 * writer may live in another pid namespace (a container on the same volume). A live write touches its
 * file with every chunk; small objects are written in one go.
 */
const ABANDONED_MS = 24 * 3600 * 1000;
/** Temp files this process is writing now (whichever instance), which a sweep must leave alone. */
const writing = new Set<string>();
const isMissing = (err: unknown) => ['ENOENT', 'ENOTDIR'].includes((err as NodeJS.ErrnoException).code ?? '');

/**
 * A {@link StorageDriver} on a local directory (`reasonplug-registry --data`), created on first write. Every object
 * appears whole (an fsynced temp file renamed into place), so a crash never leaves a partial one.
 */
export class FilesystemStorage implements StorageDriver {
  private tmpReady?: Promise<string | undefined>;

  /** @param root directory holding the registry; created on first write. */
  constructor(readonly root: string) {}

  async get(key: string): Promise<Buffer | undefined> {
    try {
      return await readFile(this.path(key));
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw err;
    }
  }

  async put(key: string, data: Uint8Array, opts: { ifAbsent?: boolean } = {}): Promise<boolean> {
    const target = this.path(key);
    const tmp = await this.tempFile();
    try {
      const handle = await open(tmp, 'w');
      try {
        await handle.writeFile(data);
        await handle.sync();
      } finally {
        await handle.close();
      }
      // link(2) fails when the target exists, which makes check-and-create one atomic step.
      return await place(tmp, target, opts.ifAbsent ? link : rename);
    } finally {
      await this.release(tmp);
    }
  }

  async stat(key: string): Promise<number | undefined> {
    try {
      const s = await stat(this.path(key));
      return s.isFile() ? s.size : undefined;
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw err;
    }
  }

  async read(key: string, range?: ByteRange): Promise<Readable | undefined> {
    let handle;
    try {
      handle = await open(this.path(key), 'r');
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw err;
    }
    return handle.createReadStream({ highWaterMark: CHUNK, ...(range ? { start: range.start, end: range.end } : {}) });
  }

  async write(key: string, source: Readable): Promise<void> {
    const target = this.path(key);
    const tmp = await this.tempFile();
    try {
      // Opened before the stream exists: a write stream that opens its own file does so asynchronously,
      // and when destroyed first (a source failing at once) creates the file after the unlink below.
      const handle = await open(tmp, 'w');
      await pipeline(source, handle.createWriteStream({ highWaterMark: CHUNK }));
      await syncFile(tmp);
      await place(tmp, target, rename);
    } finally {
      await this.release(tmp);
    }
  }

  async *list(dir: string, namePrefix?: string): AsyncIterable<ObjectInfo> {
    if (namePrefix !== undefined) assertNamePrefix(dir, namePrefix);
    yield* this.walk(this.path(dir), namePrefix);
  }

  async move(from: string, to: string): Promise<void> {
    await place(this.path(from), this.path(to), rename);
  }

  async delete(key: string): Promise<void> {
    // Retried on ENOTEMPTY: a concurrent write may add an entry while the tree is being removed.
    await rm(this.path(key), { recursive: true, force: true, maxRetries: 5, retryDelay: 10 });
  }

  /**
   * Removes temp files that no live writer owns: those of a pid that is not running on this host (or is
   * this process's pid but not one of its writes: a restarted container often gets the same pid), and
   * any untouched for a day. Another server on this directory and host keeps its writes.
   */
  async sweep(): Promise<number> {
    const dir = resolve(this.root, '.tmp');
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (err) {
      if (isMissing(err)) return 0;
      throw err;
    }
    let removed = 0;
    for (const name of names) {
      const path = join(dir, name);
      if (writing.has(path)) continue;
      const pid = Number(/^(\d+)-/.exec(name)?.[1]);
      const writerGone = Number.isSafeInteger(pid) && (pid === process.pid || !running(pid));
      const mtime = await stat(path).then((s) => s.mtimeMs, () => undefined);
      if (mtime === undefined) continue; // finished (renamed or unlinked) meanwhile
      if (!writerGone && Date.now() - mtime < ABANDONED_MS) continue;
      await rm(path, { recursive: true, force: true });
      removed++;
    }
    return removed;
  }

  private path(key: string): string {
    return join(this.root, ...assertKey(key));
  }

  /** The files under `path`; with `namePrefix`, only under its entries whose name starts with it. */
  private async *walk(path: string, namePrefix = ''): AsyncGenerator<ObjectInfo> {
    let entries;
    try {
      entries = await readdir(path, { withFileTypes: true });
    } catch (err) {
      if (isMissing(err)) return;
      throw err;
    }
    for (const e of entries) {
      if (!e.name.startsWith(namePrefix)) continue;
      const child = join(path, e.name);
      if (e.isDirectory()) yield* this.walk(child);
      else if (e.isFile()) {
        // A concurrent delete may remove the file between readdir and stat; skip it then.
        const info = await stat(child).catch((err) => (isMissing(err) ? undefined : Promise.reject(err)));
        if (info !== undefined) yield { key: this.keyOf(child), size: info.size, modified: info.mtimeMs };
      }
    }
  }

  private keyOf(path: string): string {
    return relative(this.root, path).split(sep).join('/');
  }

  private async tempFile(): Promise<string> {
    this.tmpReady ??= mkdir(join(this.root, '.tmp'), { recursive: true });
    await this.tmpReady;
    const path = resolve(this.root, '.tmp', `${process.pid}-${randomUUID()}`);
    writing.add(path);
    return path;
  }

  private async release(tmp: string): Promise<void> {
    await unlink(tmp).catch(() => {});
    writing.delete(tmp);
  }
}

/**
 * Links or renames `from` to `target`, creating the directory; false when linking finds the target
 * there. A concurrent delete may remove the directory between its creation and the rename (a session
 * cancelled during a chunk, a tag deleted while set): then it is created again, as if the delete had come
 * first.
 */
async function place(from: string, target: string, how: typeof link | typeof rename): Promise<boolean> {
  for (let attempt = 1; ; attempt++) {
    try {
      await mkdir(dirname(target), { recursive: true });
      await how(from, target);
      break;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EEXIST' && how === link) return false;
      if (code !== 'ENOENT' || attempt === 5 || !(await stat(from).then(() => true, () => false))) throw err;
    }
  }
  await syncDir(dirname(target));
  return true;
}

/** Whether a process with this pid runs on this host (EPERM: it does, as another user). */
function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * fsync through a fresh descriptor: it flushes the file, whichever descriptor wrote it. (A write stream
 * on a FileHandle kept open for the sync can stall `pipeline` on Node 20, so the stream owns and closes
 * its handle.)
 */
async function syncFile(path: string): Promise<void> {
  const handle = await open(path, 'r+');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Makes a rename durable: the new directory entry is on disk once the directory itself is synced. A
 * directory deleted meanwhile has nothing left to make durable.
 */
async function syncDir(dir: string): Promise<void> {
  let handle;
  try {
    handle = await open(dir, 'r');
  } catch (err) {
    if (isMissing(err)) return;
    throw err;
  }
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
