/**
 * A module as an OCI artifact (ARCHITECTURE.md, "Module format"): an image manifest whose config blob is
 * the module's `reasonplug.json` bytes and whose layers are its files, uncompressed, one each, titled by
 * their relative path. Every layer has media type `application/octet-stream`: what a file is comes from
 * the manifest key that lists it, not from the layer type.
 *
 * `packModule` builds the artifact from a module directory; `parseArtifact` and `matchLayers` check one
 * that came from a registry before anything of it touches the disk.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { MANIFEST_FILE, ManifestError, parseManifest, type ModuleManifest } from '../modules/manifest.js';
import { loadModuleDir } from '../modules/module-dir.js';
import { InvalidArtifactError } from './errors.js';

/** Media types of a module artifact: its image manifest, `artifactType`, config (`reasonplug.json`) and file layers. */
export const MediaTypes = {
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  artifact: 'application/vnd.reasonplug.module.v1+json',
  config: 'application/vnd.reasonplug.module.config.v1+json',
  layer: 'application/octet-stream',
} as const;

/**
 * Annotation keys `packModule` writes: on the manifest, fields of `reasonplug.json` (`title` is the module's name;
 * search reads `version`, `kind`, `tasks`, `tokenizer`); on each layer, `title`, the file's path in the module,
 * which a pull requires.
 */
export const Annotations = {
  title: 'org.opencontainers.image.title',
  version: 'org.opencontainers.image.version',
  description: 'org.opencontainers.image.description',
  licenses: 'org.opencontainers.image.licenses',
  kind: 'dev.reasonplug.kind',
  tasks: 'dev.reasonplug.tasks',
  tokenizer: 'dev.reasonplug.tokenizer',
} as const;

/** Largest manifest or config accepted from a registry (CNCF distribution's own manifest limit). */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

const DescriptorSchema = z.object({
  mediaType: z.string(),
  digest: z.string().regex(/^sha256:[0-9a-f]{64}$/, 'expected a sha256 digest'),
  size: z.int().nonnegative().max(Number.MAX_SAFE_INTEGER),
  annotations: z.record(z.string(), z.string()).optional(),
});
/** An OCI content descriptor: a blob's media type, `sha256:` digest, size in bytes and annotations. */
export type Descriptor = z.infer<typeof DescriptorSchema>;

const OciManifestSchema = z.object({
  schemaVersion: z.literal(2),
  mediaType: z.literal(MediaTypes.manifest),
  artifactType: z.string().optional(),
  config: DescriptorSchema,
  layers: z.array(DescriptorSchema),
  annotations: z.record(z.string(), z.string()).optional(),
});
/** An OCI image manifest as a module is pushed: its config blob, one layer per module file, and annotations. */
export type OciManifest = z.infer<typeof OciManifestSchema>;

/** A module ready to push: the manifest bytes and, for each blob, where its bytes are. */
export interface PackedModule {
  module: ModuleManifest;
  manifest: OciManifest;
  /** The manifest exactly as pushed; its SHA-256 is `digest`. */
  bytes: Buffer;
  digest: string;
  config: { descriptor: Descriptor; bytes: Buffer };
  /** Layers in manifest order, each with its title (path in the module) and the absolute path of its file. */
  files: { descriptor: Descriptor; title: string; path: string }[];
}

export const sha256Digest = (bytes: Uint8Array): string => `sha256:${createHash('sha256').update(bytes).digest('hex')}`;

/**
 * Validates a module directory (manifest and every file's SHA-256 and size) and builds its OCI artifact.
 * The same directory always packs to the same digest: nothing time-dependent goes in.
 * Throws `ManifestError` or `ModuleIntegrityError`.
 */
export async function packModule(dir: string): Promise<PackedModule> {
  const loaded = await loadModuleDir(dir);
  const { manifest: module } = loaded;
  // The config is the file as written, not a re-serialization, so a pulled directory holds the same bytes.
  const configBytes = await readFile(join(loaded.dir, MANIFEST_FILE));
  const config = { mediaType: MediaTypes.config, digest: sha256Digest(configBytes), size: configBytes.length };
  const files = Object.entries(module.files).map(([key, entry]) => ({
    descriptor: {
      mediaType: MediaTypes.layer,
      digest: `sha256:${entry.sha256}`,
      size: entry.size,
      annotations: { [Annotations.title]: entry.path },
    },
    title: entry.path,
    path: loaded.files[key]!,
  }));
  const manifest: OciManifest = {
    schemaVersion: 2,
    mediaType: MediaTypes.manifest,
    artifactType: MediaTypes.artifact,
    config,
    layers: files.map((f) => f.descriptor),
    annotations: {
      [Annotations.title]: module.name,
      [Annotations.version]: module.version,
      [Annotations.description]: module.description,
      // (an SPDX expression by OCI's definition: a license the module does not know is left out, not "unknown")
      ...(module.license && module.license !== 'unknown' ? { [Annotations.licenses]: module.license } : {}),
      [Annotations.kind]: module.kind,
      [Annotations.tasks]: module.tasks.join(','),
      [Annotations.tokenizer]: module.compat.tokenizer,
    },
  };
  const bytes = Buffer.from(JSON.stringify(manifest));
  return { module, manifest, bytes, digest: sha256Digest(bytes), config: { descriptor: config, bytes: configBytes }, files };
}

/**
 * Parses manifest bytes from a registry and checks that they describe a reasonplug module.
 * `source` names them in errors (e.g. `127.0.0.1:5000/acme/math:1.0.0`). Throws `InvalidArtifactError`.
 */
export function parseArtifact(bytes: Buffer, source: string): OciManifest {
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw new InvalidArtifactError(`the manifest of ${source} is not valid JSON (${(err as Error).message}); the registry sent something else than a manifest`);
  }
  const mediaType = (json as { mediaType?: unknown } | null)?.mediaType;
  if (mediaType !== MediaTypes.manifest) {
    throw new InvalidArtifactError(
      `${source} is ${typeof mediaType === 'string' ? `a ${mediaType}` : 'a manifest without mediaType'}, not an OCI image manifest; it is not a reasonplug module`,
    );
  }
  const parsed = OciManifestSchema.safeParse(json);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new InvalidArtifactError(`the manifest of ${source} is malformed: ${issues}`);
  }
  const m = parsed.data;
  const type = m.artifactType ?? m.config.mediaType;
  if (type !== MediaTypes.artifact && type !== MediaTypes.config) {
    throw new InvalidArtifactError(`${source} is an artifact of type ${type}, not a reasonplug module (${MediaTypes.artifact})`);
  }
  if (m.config.mediaType !== MediaTypes.config) {
    throw new InvalidArtifactError(`the config of ${source} has media type ${m.config.mediaType}; a module's config is ${MediaTypes.config}`);
  }
  if (m.config.size > MAX_MANIFEST_BYTES) {
    throw new InvalidArtifactError(`the config of ${source} is ${m.config.size} bytes, over the ${MAX_MANIFEST_BYTES}-byte limit for a reasonplug.json`);
  }
  return m;
}

/** Parses a module's config blob (its `reasonplug.json`). Throws `InvalidArtifactError`. */
export function parseConfig(bytes: Buffer, source: string): ModuleManifest {
  try {
    return parseManifest(JSON.parse(bytes.toString('utf8')), `${source} (reasonplug.json)`);
  } catch (err) {
    // One problem a line in a ManifestError; one line here, as every registry error is.
    const why = err instanceof ManifestError ? err.message.split('\n').join('; ') : `not valid JSON (${(err as Error).message})`;
    throw new InvalidArtifactError(`the config of ${source} is not a valid reasonplug.json: ${why}`);
  }
}

/**
 * Pairs every file of the module with its layer: the layer titled by the file's path, with the same
 * SHA-256 and size. A layer no file claims, a file without a layer, or two layers with one title are
 * refused, so the directory materialised from the layers is exactly the module. Titles are therefore
 * the manifest's validated relative paths, never `..` or absolute ones.
 */
export function matchLayers(artifact: OciManifest, module: ModuleManifest, source: string): { path: string; descriptor: Descriptor }[] {
  const byTitle = new Map<string, Descriptor>();
  for (const layer of artifact.layers) {
    const title = layer.annotations?.[Annotations.title];
    if (title === undefined) throw new InvalidArtifactError(`a layer of ${source} (${layer.digest}) has no ${Annotations.title} annotation`);
    if (byTitle.has(title)) throw new InvalidArtifactError(`${source} has two layers titled ${JSON.stringify(title)}`);
    byTitle.set(title, layer);
  }
  const out = Object.entries(module.files).map(([key, entry]) => {
    const layer = byTitle.get(entry.path);
    if (!layer) throw new InvalidArtifactError(`${source} lists files.${key} (${entry.path}) in its config but has no layer titled so`);
    if (layer.digest !== `sha256:${entry.sha256}` || layer.size !== entry.size) {
      throw new InvalidArtifactError(
        `the layer ${JSON.stringify(entry.path)} of ${source} is ${layer.digest} (${layer.size} bytes) but its config says sha256:${entry.sha256} (${entry.size} bytes)`,
      );
    }
    byTitle.delete(entry.path);
    return { path: entry.path, descriptor: layer };
  });
  const extra = [...byTitle.keys()];
  if (extra.length > 0) throw new InvalidArtifactError(`${source} has layers its config does not list: ${extra.map((t) => JSON.stringify(t)).join(', ')}`);
  return out;
}
