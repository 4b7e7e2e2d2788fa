/**
 * Blob uploads: `POST` (session, single-request `?digest=`, cross-repository `?mount=&from=`),
 * `PATCH` (chunks, with or without `Content-Range`), `PUT ?digest=` (last chunk and commit),
 * `GET` (status) and `DELETE` (cancel). Bodies stream straight into storage, hashed on the way.
 */
import type { Request, Response } from 'express';
import { digestInvalid, sizeInvalid, uploadInvalid } from '../errors.js';
import { assertName, digestHex } from '../names.js';
import { ChunkOutOfOrderError, type AppendOptions } from '../registry/uploads.js';
import type { Caller } from './access.js';
import { chunkRange } from './ranges.js';
import { contentLength, hasBody, query } from './request.js';
import type { Services } from './services.js';

const uploadUrl = (name: string, id: string) => `/v2/${name}/blobs/uploads/${id}`;
/** The spec's `Range` of bytes received: `0-<last>`, and `0-0` when nothing was. */
const received = (size: number) => `0-${Math.max(0, size - 1)}`;

export async function startUpload(s: Services, req: Request, res: Response, name: string, caller: Caller): Promise<void> {
  const mount = query(req, 'mount');
  const from = query(req, 'from');
  if (mount !== undefined && from !== undefined) {
    digestHex(mount);
    // Without pull access on the source, or when it lacks the blob, fall back to a plain upload as the
    // spec asks, which also keeps the source's contents from being probed.
    if (s.access.may(caller, 'pull', assertName(from)) && (await s.blobs.mount(from, name, mount))) {
      created(res, name, mount);
      return;
    }
  }
  const digest = query(req, 'digest');
  // (checked before the session exists: a refused digest must not leave one behind for the purge to find)
  if (digest !== undefined) digestHex(digest);
  const id = await s.uploads.start(name);
  if (digest !== undefined) {
    try {
      if (hasBody(req)) await append(s, req, name, id);
      await s.uploads.complete(name, id, digest);
    } catch (err) {
      // Nobody knows this session's id: do not leave it behind.
      await s.uploads.cancel(name, id).catch(() => {});
      throw err;
    }
    created(res, name, digest);
    return;
  }
  accepted(res.status(202), name, id, 0);
}

export async function patchUpload(s: Services, req: Request, res: Response, name: string, id: string): Promise<void> {
  const size = hasBody(req) ? await append(s, req, name, id) : await s.uploads.size(name, id);
  accepted(res.status(202), name, id, size);
}

export async function putUpload(s: Services, req: Request, res: Response, name: string, id: string): Promise<void> {
  const digest = query(req, 'digest');
  if (digest === undefined) throw digestInvalid('digest query parameter is required to complete an upload');
  digestHex(digest);
  if (hasBody(req)) await append(s, req, name, id);
  await s.uploads.complete(name, id, digest);
  created(res, name, digest);
}

export async function uploadStatus(s: Services, res: Response, name: string, id: string): Promise<void> {
  accepted(res.status(204), name, id, await s.uploads.size(name, id));
}

export async function cancelUpload(s: Services, res: Response, name: string, id: string): Promise<void> {
  await s.uploads.cancel(name, id);
  res.status(204).end();
}

/** Streams the request body into the session as one chunk. */
async function append(s: Services, req: Request, name: string, id: string): Promise<number> {
  const range = chunkRange(req.headers['content-range']);
  if (range === null) throw uploadInvalid('malformed Content-Range', { contentRange: req.headers['content-range'] });
  const declared = contentLength(req);
  const opts: AppendOptions = {};
  if (range) {
    opts.start = range.start;
    opts.length = range.end - range.start + 1;
    if (declared !== undefined && declared !== opts.length) {
      throw sizeInvalid('Content-Length does not match Content-Range', { contentLength: declared, contentRange: range });
    }
  } else if (declared !== undefined) {
    opts.length = declared;
  }
  try {
    return await s.uploads.append(name, id, req, opts);
  } catch (err) {
    if (err instanceof ChunkOutOfOrderError) {
      Object.assign(err.headers, { Range: received(err.size), Location: uploadUrl(name, id), 'Docker-Upload-UUID': id });
    }
    throw err;
  }
}

function accepted(res: Response, name: string, id: string, size: number): void {
  res.set({ Location: uploadUrl(name, id), Range: received(size), 'Docker-Upload-UUID': id, 'Content-Length': '0' }).end();
}

function created(res: Response, name: string, digest: string): void {
  res
    .status(201)
    .set({ Location: `/v2/${name}/blobs/${digest}`, 'Docker-Content-Digest': digest, 'Content-Length': '0' })
    .end();
}
