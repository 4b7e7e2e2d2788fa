/** `GET`/`HEAD`/`PUT`/`DELETE /v2/<name>/manifests/<reference>`. */
import type { Request, Response } from 'express';
import { manifestUnknown } from '../errors.js';
import { isDigest } from '../names.js';
import { bareMediaType, MediaType } from '../registry/manifest-format.js';
import { readManifestBody } from './request.js';
import type { Services } from './services.js';

export async function getManifest(s: Services, req: Request, res: Response, name: string, reference: string): Promise<void> {
  const m = await s.manifests.get(name, reference);
  if (!accepts(req.headers.accept, m.mediaType)) {
    throw manifestUnknown(reference, `manifest is ${m.mediaType}, which the Accept header does not list`);
  }
  res.status(200).set({
    'Content-Type': m.mediaType,
    'Content-Length': String(m.bytes.length),
    'Docker-Content-Digest': m.digest,
    ETag: `"${m.digest}"`,
  });
  if (req.method === 'HEAD') res.end();
  else res.end(m.bytes);
}

export async function putManifest(s: Services, req: Request, res: Response, name: string, reference: string): Promise<void> {
  const bytes = await readManifestBody(req, s.maxManifestBytes);
  const { digest, manifest } = await s.manifests.put(name, reference, bytes, req.headers['content-type']);
  if (!isDigest(reference)) await updateIndex(s, name, reference);
  res
    .status(201)
    .set({
      Location: `/v2/${name}/manifests/${digest}`,
      'Docker-Content-Digest': digest,
      'Content-Length': '0',
      // Tells an OCI 1.1 client the subject was taken: it need not maintain a referrers tag itself.
      ...(manifest.subject ? { 'OCI-Subject': manifest.subject.digest } : {}),
    })
    .end();
}

/**
 * `GET /v2/<name>/referrers/<digest>[?artifactType=T]` (OCI 1.1): an image index of the manifests whose subject is
 * `digest`; empty, never 404, when there are none.
 */
export async function listReferrers(s: Services, req: Request, res: Response, name: string, digest: string): Promise<void> {
  const artifactType = typeof req.query['artifactType'] === 'string' ? req.query['artifactType'] : undefined;
  const manifests = await s.manifests.referrers(name, digest, artifactType);
  const body = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests }));
  res.status(200).set({
    'Content-Type': MediaType.ociIndex,
    'Content-Length': String(body.length),
    ...(artifactType !== undefined ? { 'OCI-Filters-Applied': 'artifactType' } : {}),
  });
  if (req.method === 'HEAD') res.end();
  else res.end(body);
}

export async function deleteManifest(s: Services, res: Response, name: string, reference: string): Promise<void> {
  await s.manifests.delete(name, reference);
  await updateIndex(s, name, reference);
  res.status(202).set('Content-Length', '0').end();
}

/**
 * Updates repository `name`'s search document after a write to `reference` that has landed. A failure (a full disk) is
 * logged, not answered: the tag or deletion stands either way, so an error would only tell the client to retry what is
 * done (an exact version then refuses other content), and the document is derived data, rebuilt by the next write to
 * the repository (in this process) or by `reasonplug-registry reindex`. (Not updated before the write: it is made from
 * the tags as they are.)
 */
async function updateIndex(s: Services, name: string, reference: string): Promise<void> {
  try {
    await s.index.update(name, reference);
  } catch (err) {
    s.logger.error({ err, repository: name }, 'search index not updated (the write stands; `reasonplug-registry reindex` rebuilds it)');
  }
}

/**
 * Content negotiation: a manifest is served when the client sent no Accept, or listed its media type,
 * a wildcard, or plain JSON (manifests are JSON; curl-style clients ask for that).
 */
function accepts(accept: string | undefined, mediaType: string): boolean {
  if (!accept?.trim()) return true;
  return accept
    .split(',')
    .map((t) => bareMediaType(t))
    .some((t) => t === mediaType || t === '*/*' || t === 'application/*' || t === 'application/json');
}
