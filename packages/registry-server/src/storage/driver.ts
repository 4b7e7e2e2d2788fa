/**
 * The storage driver interface: a flat key space of immutable-until-replaced objects. Registry logic
 * (blobs, links, upload sessions, the search index, tokens) lives above it, so a driver is small and
 * stateless: two servers on one directory or one bucket see the same registry.
 *
 * Keys are `/`-separated and validated by {@link assertKey}; a driver never sees client text that did
 * not pass the name/tag/digest grammars first.
 */
import type { Readable } from 'node:stream';

/** An inclusive byte range. */
export interface ByteRange {
  /** First byte's offset. */
  start: number;
  /** Last byte's offset (included). */
  end: number;
}

/** An object as {@link StorageDriver.list} lists it. */
export interface ObjectInfo {
  /** Its key. */
  key: string;
  /** Its size in bytes. */
  size: number;
  /** When the object was last written (ms since the epoch): garbage collection keeps what is younger than it asks. */
  modified: number;
}

/**
 * Where a registry keeps its objects (blobs, manifests, tags, tokens): `FilesystemStorage`, `S3Storage`, or your own
 * implementation of these calls.
 */
export interface StorageDriver {
  /** Whole content of a small object, or undefined when absent. */
  get(key: string): Promise<Buffer | undefined>;
  /**
   * Writes a small object atomically. With `ifAbsent`, writes nothing and returns false when the key
   * already exists (the check and the write are one atomic step where the backend allows it).
   */
  put(key: string, data: Uint8Array, opts?: { ifAbsent?: boolean }): Promise<boolean>;
  /** Size in bytes, or undefined when absent. */
  stat(key: string): Promise<number | undefined>;
  /** The object's bytes (or a range of them) as a stream, or undefined when absent. */
  read(key: string, range?: ByteRange): Promise<Readable | undefined>;
  /**
   * Streams `source` into `key`. The object appears only when `source` ends without error, complete:
   * a failing source (a digest check in its flush, a client that hangs up) leaves nothing behind.
   */
  write(key: string, source: Readable): Promise<void>;
  /**
   * Every object whose key starts with `dir + '/'`, at any depth, in no particular order; with `namePrefix` (the start
   * of one segment, see {@link assertNamePrefix}), only those whose key starts with `dir + '/' + namePrefix`, which S3
   * lists by prefix and a directory by its entries' names, without reading the others.
   */
  list(dir: string, namePrefix?: string): AsyncIterable<ObjectInfo>;
  /** Moves an object to another key, replacing what is there. */
  move(from: string, to: string): Promise<void>;
  /** Removes the object at `key` and every object under `key + '/'`; absent keys are not an error. */
  delete(key: string): Promise<void>;
  /**
   * Removes what writers that died mid-write left outside the key space (temp files), never touching a
   * write still in progress; returns how many leftovers it removed. Run at start and then periodically.
   */
  sweep?(): Promise<number>;
}

/** Thrown for a key that could escape the storage root or is not a plain path. */
export class InvalidKeyError extends Error {
  override readonly name = 'InvalidKeyError';
  /** @param key the key refused */
  constructor(readonly key: string) {
    super(`invalid storage key: ${JSON.stringify(key)}`);
  }
}

const SEGMENT = /^[A-Za-z0-9_][A-Za-z0-9._:-]*$/;

/** Returns the key's segments, refusing empty, `.`-leading, `..` and odd-character segments. */
export function assertKey(key: string): string[] {
  const segments = key.split('/');
  if (segments.some((s) => !SEGMENT.test(s))) throw new InvalidKeyError(key);
  return segments;
}

/** Refuses a {@link StorageDriver.list} name prefix that is not the start of one valid segment under `dir`. */
export function assertNamePrefix(dir: string, namePrefix: string): void {
  if (namePrefix.includes('/')) throw new InvalidKeyError(`${dir}/${namePrefix}`);
  assertKey(`${dir}/${namePrefix}`);
}

/**
 * A cheap request that fails unless the storage answers: reads a key nothing writes, so a missing bucket, refused
 * credentials or an unreadable directory throw, while an empty registry (even a directory not made yet) passes.
 */
export async function probeStorage(storage: StorageDriver): Promise<void> {
  await storage.get('_reasonplug/probe');
}
