/**
 * Parsing pushed manifests: which media type they are, which blobs and child manifests they reference
 * (these must exist), and the annotations the search index reads. Unknown fields are kept as they are:
 * the registry stores and serves the exact bytes it was given.
 */
import { z } from 'zod';
import { manifestInvalid } from '../errors.js';

/** The manifest media types the registry accepts: OCI image manifest and index, Docker schema 2 manifest and list. */
export const MediaType = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
} as const;

const IMAGE_TYPES: readonly string[] = [MediaType.ociManifest, MediaType.dockerManifest];
const INDEX_TYPES: readonly string[] = [MediaType.ociIndex, MediaType.dockerList];
export const MANIFEST_TYPES: readonly string[] = [...IMAGE_TYPES, ...INDEX_TYPES];

const descriptor = z.looseObject({
  mediaType: z.string(),
  digest: z.string(),
  size: z.number().int().nonnegative(),
});
export type Descriptor = z.infer<typeof descriptor>;

const annotations = z.record(z.string(), z.string()).optional();

const imageManifest = z.looseObject({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  artifactType: z.string().optional(),
  config: descriptor,
  layers: z.array(descriptor),
  subject: descriptor.optional(),
  annotations,
});

const indexManifest = z.looseObject({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  artifactType: z.string().optional(),
  manifests: z.array(descriptor),
  subject: descriptor.optional(),
  annotations,
});

export interface ParsedManifest {
  mediaType: string;
  /** OCI 1.1: `artifactType`, else the config's media type for image manifests. */
  artifactType?: string;
  /** Config and layers: blobs that must be in the repository. */
  blobs: Descriptor[];
  /** An index's entries: manifests that must be in the repository. */
  manifests: Descriptor[];
  /** OCI 1.1: the manifest this one refers to (a signature's, an SBOM's image); it need not be in the registry. */
  subject?: Descriptor;
  annotations: Record<string, string>;
}

/** Strips parameters (`; charset=...`) from a Content-Type. */
export const bareMediaType = (contentType: string | undefined) => contentType?.split(';')[0]!.trim().toLowerCase() || undefined;

/**
 * Parses manifest bytes. The media type comes from the manifest's `mediaType` field, else from a
 * manifest Content-Type, else from its shape; when the field and the header both name a manifest type
 * they must agree.
 */
export function parseManifest(bytes: Buffer, contentType?: string): ParsedManifest {
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw manifestInvalid('manifest is not valid JSON');
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw manifestInvalid('manifest is not a JSON object');
  const fields = json as Record<string, unknown>;
  const header = bareMediaType(contentType);
  const declared = typeof fields.mediaType === 'string' ? fields.mediaType : undefined;
  if (declared && header && MANIFEST_TYPES.includes(header) && header !== declared) {
    throw manifestInvalid('Content-Type does not match the manifest mediaType', { contentType: header, mediaType: declared });
  }
  const mediaType =
    declared ?? (header && MANIFEST_TYPES.includes(header) ? header : 'manifests' in fields ? MediaType.ociIndex : MediaType.ociManifest);

  if (IMAGE_TYPES.includes(mediaType)) {
    const m = check(imageManifest, json, mediaType);
    return {
      mediaType,
      artifactType: m.artifactType ?? m.config.mediaType,
      blobs: [m.config, ...m.layers],
      manifests: [],
      ...(m.subject ? { subject: m.subject } : {}),
      annotations: m.annotations ?? {},
    };
  }
  if (INDEX_TYPES.includes(mediaType)) {
    const m = check(indexManifest, json, mediaType);
    return {
      mediaType,
      ...(m.artifactType ? { artifactType: m.artifactType } : {}),
      blobs: [],
      manifests: m.manifests,
      ...(m.subject ? { subject: m.subject } : {}),
      annotations: m.annotations ?? {},
    };
  }
  throw manifestInvalid('unsupported manifest media type', { mediaType });
}

function check<T>(schema: z.ZodType<T>, json: unknown, mediaType: string): T {
  const parsed = schema.safeParse(json);
  if (!parsed.success) {
    throw manifestInvalid(`not a valid ${mediaType}`, { issues: parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`) });
  }
  return parsed.data;
}
