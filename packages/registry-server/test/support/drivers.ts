/**
 * The storage drivers every behavioural test runs against: the filesystem, and S3 through s3rver (an
 * S3-compatible server from npm) on loopback. Each `open()` gets fresh, empty storage; `reopen()` gives
 * a second driver instance over the same data, as a restarted server or another replica would have.
 */
import { randomUUID } from 'node:crypto';
import S3rver from 's3rver';
import { FilesystemStorage } from '../../src/storage/filesystem.js';
import { S3Storage } from '../../src/storage/s3.js';
import type { StorageDriver } from '../../src/storage/driver.js';
import { scratch } from './tmp.js';

export interface OpenedStorage {
  storage: StorageDriver;
  reopen(): StorageDriver;
}

export interface DriverUnderTest {
  name: string;
  open(): Promise<OpenedStorage>;
}

/** The one bucket s3rver has. */
export const BUCKET = 'registry';
// The SDK warns once per process that its 2027 releases will need Node 22; the tests run on Node 20 on purpose.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
let s3server: Promise<{ endpoint: string; server: S3rver }> | undefined;

// A root-level hook (registered when a test file imports this module): stop s3rver after the whole run.
after(async () => {
  if (s3server) await (await s3server).server.close();
});

/** One s3rver per test process, started on first use. */
function s3(): Promise<{ endpoint: string; server: S3rver }> {
  s3server ??= (async () => {
    const server = new S3rver({
      address: '127.0.0.1',
      port: 0,
      silent: true,
      directory: await scratch('s3rver'),
      configureBuckets: [{ name: BUCKET }],
    });
    const { port } = await server.run();
    return { endpoint: `http://127.0.0.1:${port}`, server };
  })();
  return s3server;
}

export const filesystemDriver: DriverUnderTest = {
  name: 'filesystem',
  async open() {
    const dir = await scratch('fs');
    return { storage: new FilesystemStorage(dir), reopen: () => new FilesystemStorage(dir) };
  },
};

/** The test process's s3rver endpoint, whose one bucket is {@link BUCKET}. */
export const s3Endpoint = async (): Promise<string> => (await s3()).endpoint;

/** An S3Storage on s3rver at `endpoint`: in its bucket unless `bucket` names another (which s3rver lacks). */
export function s3Storage(endpoint: string, prefix: string, bucket = BUCKET): S3Storage {
  return new S3Storage({
    bucket,
    prefix,
    partSize: 5 * 1024 * 1024,
    client: {
      endpoint,
      region: 'us-east-1',
      forcePathStyle: true,
      credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
      // s3rver predates S3's flexible checksums (aws-chunked bodies); send checksums only where required.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    },
  });
}

export const s3Driver: DriverUnderTest = {
  name: 's3 (s3rver)',
  async open() {
    // A fresh prefix per test keeps tests apart inside the one bucket.
    const prefix = `t-${randomUUID()}/`;
    const endpoint = await s3Endpoint();
    const make = () => s3Storage(endpoint, prefix);
    return { storage: make(), reopen: make };
  },
};

export const drivers: DriverUnderTest[] = [filesystemDriver, s3Driver];
