/**
 * Where everything lives in the key space (the CNCF distribution layout, adapted):
 *
 *   blobs/sha256/<ab>/<hex>/data                                  content-addressed bytes, shared
 *   repositories/<name>/_layers/sha256/<hex>/link                 blob visible in <name>
 *   repositories/<name>/_manifests/revisions/sha256/<hex>/link    manifest in <name> (JSON: media type)
 *   repositories/<name>/_manifests/tags/<tag>/current/link        tag -> digest
 *   repositories/<name>/_manifests/tags/<tag>/release/link        exact-version tag -> the digest it was published as (kept when the tag is deleted)
 *   repositories/<name>/_manifests/referrers/sha256/<subject>/<hex>/link   a manifest whose subject is <subject>
 *   repositories/<name>/_uploads/<uuid>/startedat                 upload session
 *   repositories/<name>/_uploads/<uuid>/data/<offset>.<uuid>      its parts, each written atomically
 *   repositories/<name>/_uploads/<uuid>/sha256/<offset>.<uuid>    each part's digest
 *   _reasonplug/index/<name>/_module.json                         search index entry of <name>
 *   _reasonplug/auth/tokens/<id>.json                             hashed access tokens
 *
 * Repository components cannot start with `_`, so `_layers`, `_manifests`, `_uploads` and `_module.json`
 * never collide with a nested repository's name.
 */

/** Where a blob's bytes live (its `data`, alone in the directory). */
export const blobDir = (hex: string) => `blobs/sha256/${hex.slice(0, 2)}/${hex}`;
export const blobKey = (hex: string) => `${blobDir(hex)}/data`;

export const repositoriesDir = 'repositories';
const repo = (name: string) => `${repositoriesDir}/${name}`;
export const layersDir = (name: string) => `${repo(name)}/_layers`;
export const layerDir = (name: string, hex: string) => `${layersDir(name)}/sha256/${hex}`;
export const layerLink = (name: string, hex: string) => `${layerDir(name, hex)}/link`;
export const revisionsDir = (name: string) => `${repo(name)}/_manifests/revisions/sha256`;
export const revisionLink = (name: string, hex: string) => `${revisionsDir(name)}/${hex}/link`;
export const manifestsDir = (name: string) => `${repo(name)}/_manifests`;
export const tagsDir = (name: string) => `${repo(name)}/_manifests/tags`;
export const tagDir = (name: string, tag: string) => `${tagsDir(name)}/${tag}`;
export const tagCurrentDir = (name: string, tag: string) => `${tagDir(name, tag)}/current`;
export const tagLink = (name: string, tag: string) => `${tagCurrentDir(name, tag)}/link`;
/** The digest an exact-version tag was first set to: it outlives a `DELETE` of the tag, so the version is never reused. */
export const tagReleaseLink = (name: string, tag: string) => `${tagDir(name, tag)}/release/link`;
/** The manifests of `name` whose `subject` is manifest `subjectHex` (OCI 1.1 referrers), each a link holding its descriptor. */
export const referrersDir = (name: string, subjectHex: string) => `${repo(name)}/_manifests/referrers/sha256/${subjectHex}`;
export const referrerLink = (name: string, subjectHex: string, hex: string) => `${referrersDir(name, subjectHex)}/${hex}/link`;

export const uploadDir = (name: string, id: string) => `${repo(name)}/_uploads/${id}`;
export const uploadStarted = (name: string, id: string) => `${uploadDir(name, id)}/startedat`;
export const uploadPartsDir = (name: string, id: string) => `${uploadDir(name, id)}/data`;
export const uploadPartDigestsDir = (name: string, id: string) => `${uploadDir(name, id)}/sha256`;
/** Offsets are zero-padded so that listing order is byte order. */
export const partName = (offset: number) => String(offset).padStart(16, '0');

export const indexDir = '_reasonplug/index';
export const moduleIndex = (name: string) => `${indexDir}/${name}/_module.json`;

export const tokensDir = '_reasonplug/auth/tokens';
export const tokenKey = (id: string) => `${tokensDir}/${id}.json`;
