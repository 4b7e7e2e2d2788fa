/**
 * S3 driver (`@aws-sdk/client-s3`): the whole registry, upload sessions included, lives in one bucket, so
 * any number of stateless server replicas can share it. Objects appear atomically by S3's own semantics
 * (a PUT or a completed multipart upload); a failing source aborts the multipart upload instead.
 *
 * `put(..., { ifAbsent })` sends `If-None-Match: *`, which AWS S3 and most compatible servers honour;
 * a server that ignores it degrades to last-writer-wins across replicas (one process still serialises
 * its own tag writes, see the tag store).
 */
import {
  CopyObjectCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  NoSuchBucket,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import type { Readable } from 'node:stream';
import { assertKey, assertNamePrefix, type ByteRange, type ObjectInfo, type StorageDriver } from './driver.js';

/** Options of {@link S3Storage}: the bucket, the key prefix and the S3 client. */
export interface S3StorageOptions {
  /** The bucket's name; it must exist (the driver does not create it). */
  bucket: string;
  /**
   * Key prefix inside the bucket, so one bucket can hold several registries: a folder, as CNCF distribution's
   * `rootdirectory` (`registry` and `/registry/` both mean the keys `registry/…`).
   */
  prefix?: string;
  /** A ready client, or the configuration to build one (endpoint, region, credentials, forcePathStyle). */
  client: S3Client | S3ClientConfig;
  /** Multipart part size in bytes (default 8 MiB); at most 4 parts are in flight per write. */
  partSize?: number;
}

/** How long a bucket HeadBucket found is taken to exist before a stat's 404 asks again. */
const BUCKET_RECHECK_MS = 60_000;

/** CopyObject's documented limit; larger objects are copied by streaming them through. */
const MAX_COPY = 5 * 1024 ** 3;

const status = (err: unknown) => (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;

/**
 * Whether a GET's error says the key is absent. Only the key: a 404 `NoSuchBucket` (or a 404 page from something
 * that is not S3) must not pass for an empty registry.
 */
const noSuchKey = (err: unknown) => status(err) === 404 && ['NoSuchKey', 'NotFound'].includes((err as Error).name);

/**
 * Times a whole-object GET is asked again when its body is cut off. The SDK retries a request that fails before
 * its answer, not a body that stops coming (a reset connection, a server replacing the object as it sends it:
 * s3rver does, and real endpoints drop connections); reading an object again is harmless.
 */
const BODY_RETRIES = 2;

/** Whether `err` is a response body cut off in transport rather than an answer of the service. */
function cutOff(err: unknown): boolean {
  if (status(err) !== undefined) return false;
  const { code, message } = err as NodeJS.ErrnoException;
  return ['ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ERR_STREAM_PREMATURE_CLOSE'].includes(code ?? '') || message === 'aborted';
}

/**
 * A {@link StorageDriver} on an S3 bucket (or an S3-compatible server), under an optional key prefix; stateless, so
 * server replicas may share one bucket. The constructor sends no request: a wrong bucket or missing credentials
 * show as the S3 client's errors on the first storage call.
 */
export class S3Storage implements StorageDriver {
  /** The S3 client every call goes through (the one given, or built from the configuration given). */
  readonly client: S3Client;
  private readonly bucket: string;
  private readonly prefix: string;
  private readonly partSize: number;
  /** When HeadBucket last found the bucket (see {@link S3Storage.stat}). */
  private bucketSeenAt = -Infinity;

  /** Storage in `opts.bucket` under `opts.prefix`; sends no request (see the class comment). */
  constructor(opts: S3StorageOptions) {
    this.client = opts.client instanceof S3Client ? opts.client : new S3Client(opts.client);
    this.bucket = opts.bucket;
    // Keys are joined to the prefix as they are: without its slash, `team-b` would make `team-bblobs/…`.
    const prefix = (opts.prefix ?? '').replace(/^\/+/, '');
    this.prefix = prefix === '' || prefix.endsWith('/') ? prefix : `${prefix}/`;
    this.partSize = opts.partSize ?? 8 * 1024 * 1024;
  }

  async get(key: string): Promise<Buffer | undefined> {
    for (let attempt = 0; ; attempt++) {
      try {
        const out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key) }));
        return Buffer.from(await out.Body!.transformToByteArray());
      } catch (err) {
        if (noSuchKey(err)) return undefined;
        if (attempt < BODY_RETRIES && cutOff(err)) continue;
        throw err;
      }
    }
  }

  async put(key: string, data: Uint8Array, opts: { ifAbsent?: boolean } = {}): Promise<boolean> {
    try {
      await this.client.send(
        new PutObjectCommand({
          Bucket: this.bucket,
          Key: this.objectKey(key),
          Body: data,
          ...(opts.ifAbsent ? { IfNoneMatch: '*' } : {}),
        }),
      );
      return true;
    } catch (err) {
      // 412: the object exists; 409: a concurrent conditional write to the same key won the race.
      if (opts.ifAbsent && (status(err) === 412 || status(err) === 409)) return false;
      throw err;
    }
  }

  async stat(key: string): Promise<number | undefined> {
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key) }));
      return out.ContentLength ?? 0;
    } catch (err) {
      // A HEAD's answer has no body, so a missing key and a missing bucket are the same bare 404 (`NotFound`):
      // HeadBucket tells them apart, at most once a minute (a bucket deleted under a running server is seen then).
      if (status(err) !== 404) throw err;
      if (Date.now() - this.bucketSeenAt > BUCKET_RECHECK_MS) await this.headBucket();
      return undefined;
    }
  }

  /** Throws the SDK's `NoSuchBucket` unless the bucket exists (and its other errors: access denied, unreachable). */
  private async headBucket(): Promise<void> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
      this.bucketSeenAt = Date.now();
    } catch (err) {
      if (status(err) !== 404) throw err;
      throw new NoSuchBucket({ message: `no bucket named ${this.bucket}`, $metadata: (err as NoSuchBucket).$metadata });
    }
  }

  async read(key: string, range?: ByteRange): Promise<Readable | undefined> {
    try {
      const out = await this.client.send(
        new GetObjectCommand({
          Bucket: this.bucket,
          Key: this.objectKey(key),
          ...(range ? { Range: `bytes=${range.start}-${range.end}` } : {}),
        }),
      );
      return out.Body as Readable;
    } catch (err) {
      if (noSuchKey(err)) return undefined;
      throw err;
    }
  }

  async write(key: string, source: Readable): Promise<void> {
    const upload = new Upload({
      client: this.client,
      params: { Bucket: this.bucket, Key: this.objectKey(key), Body: source },
      partSize: this.partSize,
      queueSize: 4,
      leavePartsOnError: false,
    });
    await upload.done();
  }

  async *list(dir: string, namePrefix?: string): AsyncIterable<ObjectInfo> {
    if (namePrefix !== undefined) assertNamePrefix(dir, namePrefix);
    const prefix = `${this.objectKey(dir)}/${namePrefix ?? ''}`;
    let token: string | undefined;
    do {
      const out = await this.client.send(
        new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ContinuationToken: token }),
      );
      for (const o of out.Contents ?? []) {
        if (o.Key) yield { key: o.Key.slice(this.prefix.length), size: o.Size ?? 0, modified: o.LastModified?.getTime() ?? Date.now() };
      }
      token = out.IsTruncated ? out.NextContinuationToken : undefined;
    } while (token);
  }

  async move(from: string, to: string): Promise<void> {
    const size = await this.stat(from);
    if (size === undefined) throw Object.assign(new Error(`no such object: ${from}`), { code: 'ENOENT' });
    if (size > MAX_COPY) {
      await this.write(to, (await this.read(from))!);
    } else {
      const source = `${this.bucket}/${this.objectKey(from).split('/').map(encodeURIComponent).join('/')}`;
      await this.client.send(new CopyObjectCommand({ Bucket: this.bucket, Key: this.objectKey(to), CopySource: source }));
    }
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.objectKey(from) }));
  }

  async delete(key: string): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key) }));
    let batch: { Key: string }[] = [];
    const flush = async () => {
      if (batch.length === 0) return;
      await this.client.send(new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: batch, Quiet: true } }));
      batch = [];
    };
    for await (const o of this.list(key)) {
      batch.push({ Key: this.objectKey(o.key) });
      if (batch.length === 1000) await flush();
    }
    await flush();
  }

  private objectKey(key: string): string {
    assertKey(key);
    return this.prefix + key;
  }
}
