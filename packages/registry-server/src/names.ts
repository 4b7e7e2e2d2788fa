/**
 * Validation of the identifiers that reach storage keys: repository names, tags, digests and upload ids.
 * Everything a client sends passes through here first, which is what keeps path traversal out.
 */
import semver from 'semver';
import { digestInvalid, nameInvalid, RegistryError } from './errors.js';

/** Repository name grammar of the OCI distribution spec (one or more `/`-separated components). */
const NAME = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/;
const TAG = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
const SHA256 = /^sha256:([a-f0-9]{64})$/;
/** The spec's general digest grammar, to tell an unsupported algorithm from a malformed digest. */
const ANY_DIGEST = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;
const UPLOAD_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** Clients commonly cap `host:port/name` at 255 characters; a name alone may not exceed that. */
const MAX_NAME = 255;

export function assertName(name: string): string {
  if (name.length > MAX_NAME) throw nameInvalid(name, `repository name longer than ${MAX_NAME} characters`);
  if (!NAME.test(name)) throw nameInvalid(name);
  return name;
}

export function assertTag(tag: string): string {
  if (!TAG.test(tag)) throw new RegistryError('MANIFEST_INVALID', 400, 'invalid tag', { tag });
  return tag;
}

/** Returns the hex part of a `sha256:` digest; other algorithms are refused. */
export function digestHex(digest: string): string {
  const m = SHA256.exec(digest);
  if (!m) {
    const why = ANY_DIGEST.test(digest) && !digest.startsWith('sha256:') ? 'only sha256 digests are supported' : 'invalid digest';
    throw digestInvalid(why, { digest });
  }
  return m[1]!;
}

export const isDigest = (ref: string): boolean => SHA256.test(ref);

export function assertUploadId(id: string): string {
  if (!UPLOAD_ID.test(id)) throw new RegistryError('BLOB_UPLOAD_UNKNOWN', 404, 'blob upload unknown to registry', { uuid: id });
  return id;
}

/**
 * The semver version an exact-version tag stands for (`1.2.3`, `1.2.3-rc.1`, `1.2.3_build.7` for
 * `1.2.3+build.7`), or undefined for moving tags such as `latest`, `1` or `1.2`.
 */
export function exactVersionOfTag(tag: string): string | undefined {
  const text = tag.replace('_', '+');
  const v = semver.parse(text);
  if (!v) return undefined;
  const full = v.build.length > 0 ? `${v.version}+${v.build.join('.')}` : v.version;
  return full === text ? full : undefined;
}
