/** Hashing while streaming. */
import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { digestInvalid, sizeInvalid } from './errors.js';

export const sha256 = (data: Uint8Array): string => 'sha256:' + createHash('sha256').update(data).digest('hex');

export interface DigestCheck {
  /** The digest the bytes must have. */
  digest?: string;
  /** The exact number of bytes expected (a declared Content-Length or Content-Range). */
  size?: number;
}

/**
 * A pass-through that hashes and counts what flows through it. With a check, it fails in its flush,
 * before the end of the stream reaches the storage driver, so a mismatch never becomes visible.
 */
export class DigestStream extends Transform {
  private readonly hash: Hash = createHash('sha256');
  private count = 0;
  private result?: string;

  constructor(private readonly check: DigestCheck = {}) {
    super();
  }

  get bytes(): number {
    return this.count;
  }

  /** `sha256:<hex>` of everything that passed; only valid once the stream has ended. */
  get digest(): string {
    if (!this.result) throw new Error('DigestStream: digest read before the end of the stream');
    return this.result;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.count += chunk.length;
    if (this.check.size !== undefined && this.count > this.check.size) {
      cb(sizeInvalid('more bytes than declared', { declared: this.check.size }));
      return;
    }
    this.hash.update(chunk);
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    this.result = 'sha256:' + this.hash.digest('hex');
    if (this.check.size !== undefined && this.count !== this.check.size) {
      cb(sizeInvalid('fewer bytes than declared', { declared: this.check.size, received: this.count }));
    } else if (this.check.digest !== undefined && this.result !== this.check.digest) {
      cb(digestInvalid('provided digest did not match uploaded content', { expected: this.check.digest, actual: this.result }));
    } else {
      cb();
    }
  }
}
