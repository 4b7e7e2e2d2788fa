/**
 * Repository endpoints under `/v2/<name>/...`. Names contain slashes, so the endpoint is recognised from
 * the end of the path; every part is validated before anything touches storage.
 */
import { RegistryError } from '../errors.js';
import { assertName, assertTag, assertUploadId, digestHex } from '../names.js';

export type Target =
  | { kind: 'manifest'; name: string; reference: string }
  | { kind: 'blob'; name: string; digest: string }
  | { kind: 'uploads'; name: string }
  | { kind: 'upload'; name: string; id: string }
  | { kind: 'tags'; name: string }
  | { kind: 'referrers'; name: string; digest: string };

const ROUTES: [RegExp, (name: string, part: string) => Target][] = [
  [/^\/v2\/(.+)\/manifests\/([^/]+)$/, (name, ref) => ({ kind: 'manifest', name, reference: reference(ref) })],
  [/^\/v2\/(.+)\/blobs\/uploads\/?()$/, (name) => ({ kind: 'uploads', name })],
  [/^\/v2\/(.+)\/blobs\/uploads\/([^/]+)$/, (name, id) => ({ kind: 'upload', name, id: assertUploadId(id) })],
  [/^\/v2\/(.+)\/blobs\/([^/]+)$/, (name, d) => ({ kind: 'blob', name, digest: digest(decode(d)) })],
  [/^\/v2\/(.+)\/tags\/list$/, (name) => ({ kind: 'tags', name })],
  [/^\/v2\/(.+)\/referrers\/([^/]+)$/, (name, d) => ({ kind: 'referrers', name, digest: digest(decode(d)) })],
];

/** The repository endpoint a path names, or undefined when it names none. Throws for invalid parts. */
export function parseTarget(path: string): Target | undefined {
  for (const [pattern, build] of ROUTES) {
    const m = pattern.exec(path);
    if (m) return build(assertName(m[1]!), m[2]!);
  }
  return undefined;
}

function decode(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    throw new RegistryError('UNSUPPORTED', 400, 'malformed percent-encoding in path');
  }
}

const digest = (d: string) => (digestHex(d), d);

/** A manifest reference is a digest (it has a colon) or a tag. */
function reference(part: string): string {
  const ref = decode(part);
  return ref.includes(':') ? digest(ref) : assertTag(ref);
}
