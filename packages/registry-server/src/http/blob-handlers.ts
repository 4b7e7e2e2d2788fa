/** `GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>`. Reads stream from storage with backpressure. */
import type { Request, Response } from 'express';
import { pipeline } from 'node:stream/promises';
import { blobUnknown } from '../errors.js';
import { requestedRange } from './ranges.js';
import type { Services } from './services.js';

export async function getBlob(s: Services, req: Request, res: Response, name: string, digest: string): Promise<void> {
  const size = await s.blobs.stat(name, digest);
  if (size === undefined) throw blobUnknown(digest);
  res.set({
    'Docker-Content-Digest': digest,
    ETag: `"${digest}"`,
    'Accept-Ranges': 'bytes',
    'Content-Type': 'application/octet-stream',
    // Content-addressed bytes never change; a shared cache may keep them for anyone only when they were served to
    // anyone (RFC 9111 §3.5: with Authorization on the request, `public` would let it hand them to the anonymous).
    'Cache-Control': `${req.headers.authorization ? 'private' : 'public'}, max-age=31536000, immutable`,
  });
  const range = requestedRange(req.headers.range, size);
  if (range === 'unsatisfiable') {
    res.status(416).set('Content-Range', `bytes */${size}`).end();
    return;
  }
  if (range) res.status(206).set('Content-Range', `bytes ${range.start}-${range.end}/${size}`);
  res.set('Content-Length', String(range ? range.end - range.start + 1 : size));
  if (req.method === 'HEAD') {
    res.end();
    return;
  }
  const body = await s.blobs.read(digest, range);
  if (!body) throw blobUnknown(digest);
  // A client that hangs up mid-body only ends this response; nothing is left to clean up.
  await pipeline(body, res).catch(() => {});
}

export async function deleteBlob(s: Services, res: Response, name: string, digest: string): Promise<void> {
  if (!(await s.blobs.unlink(name, digest))) throw blobUnknown(digest);
  res.status(202).set('Content-Length', '0').end();
}
