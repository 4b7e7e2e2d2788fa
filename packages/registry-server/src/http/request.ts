/** Small readers of request details shared by the handlers. */
import type { Request } from 'express';
import { RegistryError } from '../errors.js';

/** A query parameter's first value. */
export function query(req: Request, key: string): string | undefined {
  const v = (req.query as Record<string, unknown>)[key];
  const first = Array.isArray(v) ? v[0] : v;
  return typeof first === 'string' ? first : undefined;
}

/** A pagination size `n`: undefined when absent, 400 when not a non-negative integer. */
export function pageSize(req: Request): number | undefined {
  const n = query(req, 'n');
  if (n === undefined) return undefined;
  if (!/^\d+$/.test(n)) throw new RegistryError('UNSUPPORTED', 400, 'n must be a non-negative integer', { n });
  return Number(n);
}

export function contentLength(req: Request): number | undefined {
  const v = req.headers['content-length'];
  return v === undefined ? undefined : Number(v);
}

/** Whether the request carries a body to read (a chunked one, or a non-zero Content-Length). */
export const hasBody = (req: Request): boolean =>
  req.headers['transfer-encoding'] !== undefined || (contentLength(req) ?? 0) > 0;

/** Reads a manifest body whole, refusing (413) one over `max` bytes before buffering more than that. */
export async function readManifestBody(req: Request, max: number): Promise<Buffer> {
  const tooLarge = () => new RegistryError('MANIFEST_INVALID', 413, `manifest exceeds ${max} bytes`, { max });
  if ((contentLength(req) ?? 0) > max) throw tooLarge();
  const chunks: Buffer[] = [];
  let total = 0;
  // Stopping early must not destroy the request: the 413 still has to reach the client, and Node closes
  // the connection after it (the error body asks for `Connection: close` while a body is unread).
  for await (const chunk of req.iterator({ destroyOnReturn: false })) {
    total += (chunk as Buffer).length;
    if (total > max) throw tooLarge();
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}
