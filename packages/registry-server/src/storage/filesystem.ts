/**
 * The embedded default driver: a directory tree. Every write goes to a process-unique temp file under
 * `<root>/.tmp`, is fsynced, then renamed into place (and the directory fsynced), so a reader or a crash
 * never sees a partial object. `.tmp` cannot collide with a key, whose segments never start with a dot.
 */
import { randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { link, mkdir, open, readdir, readFile, rename, rm, stat, unlink } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { assertKey, type ByteRange, type ObjectInfo, type StorageDriver } from './driver.js';

const CHUNK = 1 << 20;
const isMissing = (err: unknown) => ['ENOENT', 'ENOTDIR'].includes((err as NodeJS.ErrnoException).code ?? '');

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
      await mkdir(dirname(target), { recursive: true });
      if (opts.ifAbsent) {
        // link(2) fails when the target exists, which makes check-and-create one atomic step.
        try {
          await link(tmp, target);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
          throw err;
        }
      } else {
        await rename(tmp, target);
      }
      await syncDir(dirname(target));
      return true;
    } finally {
      await unlink(tmp).catch(() => {});
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
      await pipeline(source, createWriteStream(tmp, { highWaterMark: CHUNK }));
      await syncFile(tmp);
      await mkdir(dirname(target), { recursive: true });
      await rename(tmp, target);
      await syncDir(dirname(target));
    } finally {
      await unlink(tmp).catch(() => {});
    }
  }

  async *list(dir: string): AsyncIterable<ObjectInfo> {
    yield* this.walk(this.path(dir));
  }

  async move(from: string, to: string): Promise<void> {
    const target = this.path(to);
    await mkdir(dirname(target), { recursive: true });
    await rename(this.path(from), target);
    await syncDir(dirname(target));
  }

  async delete(key: string): Promise<void> {
    await rm(this.path(key), { recursive: true, force: true });
  }

  private path(key: string): string {
    return join(this.root, ...assertKey(key));
  }

  private async *walk(path: string): AsyncGenerator<ObjectInfo> {
    let entries;
    try {
      entries = await readdir(path, { withFileTypes: true });
    } catch (err) {
      if (isMissing(err)) return;
      throw err;
    }
    for (const e of entries) {
      const child = join(path, e.name);
      if (e.isDirectory()) yield* this.walk(child);
      else if (e.isFile()) {
        // A concurrent delete may remove the file between readdir and stat; skip it then.
        const size = await stat(child).then((s) => s.size, (err) => (isMissing(err) ? undefined : Promise.reject(err)));
        if (size !== undefined) yield { key: this.keyOf(child), size };
      }
    }
  }

  private keyOf(path: string): string {
    return relative(this.root, path).split(sep).join('/');
  }

  private async tempFile(): Promise<string> {
    this.tmpReady ??= mkdir(join(this.root, '.tmp'), { recursive: true });
    await this.tmpReady;
    return join(this.root, '.tmp', `${process.pid}-${randomUUID()}`);
  }
}

/**
 * fsync through a fresh descriptor: it flushes the file, whichever descriptor wrote it. (A write stream
 * on a FileHandle kept open for the sync can stall `pipeline` on Node 20, so the stream owns its own.)
 */
async function syncFile(path: string): Promise<void> {
  const handle = await open(path, 'r+');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Makes a rename durable: the new directory entry is on disk once the directory itself is synced. */
async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
