/**
 * Resumable blob upload sessions, kept entirely in storage: a `startedat` marker and one atomically
 * written part per PATCH, named by its offset, with the part's digest beside it. The session's size is
 * the sum of its parts, so a restarted server, or another replica on the same bucket, carries on where
 * the last request left off, and a request cut short leaves no part and no change of offset. Sessions
 * nobody finishes are purged by age, as CNCF distribution does.
 */
import { createHash, randomUUID } from 'node:crypto';
import { Readable, pipeline, type Duplex } from 'node:stream';
import { DigestStream } from '../digest.js';
import { KeyedMutex } from '../keyed-mutex.js';
import { digestInvalid, RegistryError, uploadInvalid, uploadUnknown } from '../errors.js';
import { assertUploadId, digestHex } from '../names.js';
import type { StorageDriver } from '../storage/driver.js';
import {
  blobKey,
  partName,
  repositoriesDir,
  uploadDir,
  uploadPartDigestsDir,
  uploadPartsDir,
  uploadStarted,
} from '../storage/layout.js';
import type { BlobStore } from './blobs.js';

interface Part {
  /** `<offset>.<uuid>`: the name of the part and of its digest record. */
  file: string;
  offset: number;
  size: number;
  key: string;
}

/** Where the next chunk must start, for the 416 that answers an out-of-order chunk. */
export class ChunkOutOfOrderError extends RegistryError {
  constructor(readonly size: number) {
    super('BLOB_UPLOAD_INVALID', 416, 'chunk does not start at the end of the upload', { offset: size });
  }
}

export interface AppendOptions {
  /** First byte offset declared by `Content-Range`; must equal the session's size. */
  start?: number;
  /** Exact byte count declared by `Content-Length` or `Content-Range`. */
  length?: number;
}

/** Joins a source and a transform so that a failure of either reaches whoever reads the transform. */
function through<T extends Duplex>(source: Readable, transform: T): T {
  pipeline(source, transform, () => {});
  return transform;
}

export class UploadSessions {
  private readonly completing = new KeyedMutex();

  constructor(
    private readonly storage: StorageDriver,
    private readonly blobs: BlobStore,
  ) {}

  async start(name: string): Promise<string> {
    const id = randomUUID();
    await this.storage.put(uploadStarted(name, id), Buffer.from(JSON.stringify({ startedAt: new Date().toISOString() })));
    return id;
  }

  /** Bytes received so far; throws BLOB_UPLOAD_UNKNOWN for an unknown or finished session. */
  async size(name: string, id: string): Promise<number> {
    return end(await this.parts(name, id));
  }

  /** Appends a chunk as one new part and returns the session's new size. */
  async append(name: string, id: string, body: Readable, opts: AppendOptions = {}): Promise<number> {
    const offset = end(await this.parts(name, id));
    if (opts.start !== undefined && opts.start !== offset) throw new ChunkOutOfOrderError(offset);
    const digester = new DigestStream(opts.length === undefined ? {} : { size: opts.length });
    // A part name unique to this request ties the recorded digest to exactly these bytes: two requests
    // racing for one offset leave two parts (and a session that refuses to complete), never one part
    // beside the other's digest.
    const part = `${partName(offset)}.${randomUUID()}`;
    await this.storage.write(`${uploadPartsDir(name, id)}/${part}`, through(body, digester));
    // An empty chunk (a chunked PATCH with no bytes) adds nothing: no part is kept for it (see parts()).
    if (digester.bytes === 0) {
      await this.storage.delete(`${uploadPartsDir(name, id)}/${part}`);
      return offset;
    }
    try {
      await this.storage.put(`${uploadPartDigestsDir(name, id)}/${part}`, Buffer.from(digester.digest));
    } catch (err) {
      // The chunk is answered with an error: its part must not move the offset the client resumes from.
      await this.storage.delete(`${uploadPartsDir(name, id)}/${part}`).catch(() => {});
      throw err;
    }
    return offset + digester.bytes;
  }

  /**
   * Verifies the session's bytes against `digest`, makes them the blob (visible in `name`) and ends
   * the session. A failure (a mismatch, a full disk) ends the session too, leaving nothing behind.
   */
  async complete(name: string, id: string, digest: string): Promise<void> {
    // One completion of a session at a time (a client retrying a PUT it thought lost): the first makes the blob,
    // the others then find the session gone (404) instead of racing it for its parts.
    return this.completing.run(`${name}\0${id}`, () => this.completeNow(name, id, digest));
  }

  private async completeNow(name: string, id: string, digest: string): Promise<void> {
    const hex = digestHex(digest);
    const parts = await this.parts(name, id);
    try {
      if (parts.length === 1) {
        const actual = await this.partDigest(name, id, parts[0]!);
        if (actual !== digest) {
          throw digestInvalid('provided digest did not match uploaded content', { expected: digest, actual });
        }
        if ((await this.storage.stat(blobKey(hex))) === undefined) await this.storage.move(parts[0]!.key, blobKey(hex));
      } else {
        await this.storage.write(blobKey(hex), through(this.concat(parts), new DigestStream({ digest })));
      }
      await this.blobs.link(name, digest);
    } catch (err) {
      // As distribution's PutBlobUploadComplete cancels: parts kept for a retry of the commit would hold a full disk
      // until the purge, while clients start the upload again. (The client hears of the failure, not of a failed cleanup.)
      await this.storage.delete(uploadDir(name, id)).catch(() => {});
      throw err;
    }
    await this.storage.delete(uploadDir(name, id));
  }

  async cancel(name: string, id: string): Promise<void> {
    await this.parts(name, id);
    await this.storage.delete(uploadDir(name, id));
  }

  /**
   * Ends every session started before `before`, in every repository, and removes session directories
   * left without their `startedat` (an interrupted delete: no request can reach those). Returns how many
   * sessions it removed. A session's age counts from its start, whatever it received since.
   */
  async purge(before: Date): Promise<number> {
    const sessions = new Map<string, { name: string; id: string; started: boolean }>();
    for await (const o of this.storage.list(repositoriesDir)) {
      const m = SESSION_KEY.exec(o.key);
      if (!m) continue;
      const [, name, id, rest] = m as unknown as [string, string, string, string];
      const dir = uploadDir(name, id);
      const session = sessions.get(dir) ?? { name, id, started: false };
      if (rest === 'startedat') session.started = true;
      sessions.set(dir, session);
    }
    let removed = 0;
    for (const [dir, s] of sessions) {
      if (s.started && (await this.startedAt(s.name, s.id)) >= before.getTime()) continue;
      await this.storage.delete(dir);
      removed++;
    }
    return removed;
  }

  /** When a session started (ms since the epoch): 0 for a record that does not read as one, Infinity once it is gone. */
  private async startedAt(name: string, id: string): Promise<number> {
    const raw = await this.storage.get(uploadStarted(name, id));
    if (raw === undefined) return Infinity; // removed meanwhile: finished, nothing to purge
    try {
      const t = Date.parse((JSON.parse(raw.toString()) as { startedAt?: string }).startedAt ?? '');
      return Number.isNaN(t) ? 0 : t;
    } catch {
      return 0;
    }
  }

  private async parts(name: string, id: string): Promise<Part[]> {
    assertUploadId(id);
    if ((await this.storage.stat(uploadStarted(name, id))) === undefined) throw uploadUnknown(id);
    const parts: Part[] = [];
    for await (const o of this.storage.list(uploadPartsDir(name, id))) {
      // (an empty chunk's part, written before append() knew it was empty, holds nothing and starts where the next does)
      if (o.size === 0) continue;
      const file = o.key.slice(o.key.lastIndexOf('/') + 1);
      parts.push({ file, offset: Number(file.slice(0, file.indexOf('.'))), size: o.size, key: o.key });
    }
    parts.sort((a, b) => a.offset - b.offset);
    let expected = 0;
    for (const p of parts) {
      if (p.offset !== expected) throw uploadInvalid('upload parts are not contiguous', { uuid: id, offset: p.offset });
      expected += p.size;
    }
    return parts;
  }

  /** The digest recorded beside a part, or (when a crash came between the two writes) its hash anew. */
  private async partDigest(name: string, id: string, part: Part): Promise<string> {
    const recorded = await this.storage.get(`${uploadPartDigestsDir(name, id)}/${part.file}`);
    if (recorded) return recorded.toString();
    const source = await this.storage.read(part.key);
    if (!source) throw uploadUnknown(id);
    const hash = createHash('sha256');
    for await (const chunk of source) hash.update(chunk as Buffer);
    return 'sha256:' + hash.digest('hex');
  }

  private concat(parts: Part[]): Readable {
    const storage = this.storage;
    return Readable.from(
      (async function* () {
        for (const p of parts) {
          const source = await storage.read(p.key);
          if (!source) throw uploadInvalid('upload part vanished', { offset: p.offset });
          yield* source;
        }
      })(),
      { objectMode: false },
    );
  }
}

/** `repositories/<name>/_uploads/<uuid>/<rest>`: no name component starts with `_`, so the split is unique. */
const SESSION_KEY = /^repositories\/(.+)\/_uploads\/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\/(.+)$/;

const end = (parts: Part[]) => (parts.length === 0 ? 0 : parts.at(-1)!.offset + parts.at(-1)!.size);
