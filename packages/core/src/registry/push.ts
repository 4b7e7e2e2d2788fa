/**
 * `push`: a module directory to `registry/namespace/name:VERSION`, tagged with its exact version and, when
 * it is the repository's newest release, `latest`. Exact versions are immutable: the client checks first and
 * refuses to replace one with other content (unless forced, which registries that enforce immutability
 * refuse in turn).
 */
import { createReadStream } from 'node:fs';
import semver from 'semver';
import { packModule, type Descriptor } from './artifact.js';
import { RegistryClient } from './client.js';
import type { TransferProgress } from './download.js';
import { InvalidReferenceError, ModuleNotFoundError, OfflineError, RegistryAuthError, RegistryClientError, VersionExistsError } from './errors.js';
import { forEachBounded } from './parallel.js';
import { formatRef, parseRef, tagVersion, versionTag } from './reference.js';
import { settingsFrom, type RegistryOptions } from './settings.js';

/** Options of {@link pushModule}: the registry settings, and how versions and tags are treated. */
export interface PushOptions extends RegistryOptions {
  /** Replace an exact version that exists with other content (where the registry allows it). */
  force?: boolean;
  /**
   * Move `latest` to this version: always (true), never (false), or by default where it is no older than
   * every release the repository holds (a prerelease only where it holds none), so that a fix to an old
   * line, a prerelease or a pushed-again old version does not take `latest` from a newer release.
   */
  latest?: boolean;
  /** Called as each file's bytes are uploaded, for a progress bar. */
  onProgress?: (p: TransferProgress) => void;
}

/** What {@link pushModule} published. */
export interface PushResult {
  /** `host[:port]` pushed to. */
  registry: string;
  /** `namespace/name`. */
  repository: string;
  /** The module's exact version (its manifest's `version`). */
  version: string;
  /** Manifest digest. */
  digest: string;
  /** Tags set: the exact version, and `latest` where it moved. */
  tags: string[];
  /** Bytes uploaded. */
  uploaded: number;
  /** Blobs not uploaded because the registry had them already. */
  skipped: number;
}

/** Blobs uploaded at once. */
const CONCURRENCY = 3;
const READ_CHUNK = 1 << 20;

/**
 * Pushes the module in `dir` to `spec` (`[registry/]namespace/name[:VERSION]`); the version, if given,
 * must be the one in reasonplug.json, and the repository's last component its name.
 */
export async function pushModule(dir: string, spec: string, opts: PushOptions = {}): Promise<PushResult> {
  const s = settingsFrom(opts);
  if (s.offline) throw new OfflineError('push needs the network, but offline mode is on (--offline or REASONPLUG_OFFLINE=1); turn it off to push');
  const packed = await packModule(dir);
  const { module } = packed;
  const ref = parseRef(spec, s.registry);
  const { registry, repository } = ref;
  const sel = ref.selector;
  // `:latest` is what a reference without a version parses to; push always sets it anyway.
  if (sel.type !== 'tag' || (sel.tag !== 'latest' && tagVersion(sel.tag) !== module.version)) {
    const given = sel.type === 'tag' ? `:${sel.tag}` : sel.type === 'range' ? `@${sel.range}` : `@${sel.digest}`;
    throw new InvalidReferenceError(
      `cannot push ${dir} as ${spec}: ${given} is not the module's version ${module.version} (from reasonplug.json); push to ${registry}/${repository}:${versionTag(module.version)}`,
    );
  }
  const name = repository.slice(repository.lastIndexOf('/') + 1);
  if (name !== module.name) {
    throw new InvalidReferenceError(
      `cannot push module ${JSON.stringify(module.name)} to repository ${repository}: the repository's last component must be the module name (e.g. ${repository.slice(0, repository.lastIndexOf('/'))}/${module.name})`,
    );
  }

  const client = RegistryClient.for(registry, s);
  const tag = versionTag(module.version);
  const where = formatRef({ registry, repository, selector: { type: 'tag', tag } });
  const existing = await client.manifestDigest(repository, tag, true);
  const conflict = (current: string, extra = '') =>
    new VersionExistsError(
      `${where} already exists with digest ${current}, and this module packs to ${packed.digest}; published versions are immutable, so bump "version" in reasonplug.json${extra}`,
      current,
      packed.digest,
    );
  if (existing !== undefined && existing !== packed.digest && !opts.force) throw conflict(existing, ' (or pass --force to replace it, where the registry allows that)');
  // `1.0.0+b` is version 1.0.0 (semver, npm): where the repository has 1.0.0 under other build metadata with other
  // content, its registry refuses the push after the upload; say so before it.
  // (a repository's first push finds none)
  const tags = await client.listTags(repository).catch((err: unknown) => (err instanceof ModuleNotFoundError ? [] : Promise.reject(err)));
  const core = semver.parse(module.version)!.version;
  for (const other of tags) {
    const version = tagVersion(other);
    if (other === tag || version === undefined || semver.parse(version)?.version !== core) continue;
    const current = await client.manifestDigest(repository, other, true);
    if (current !== undefined && current !== packed.digest) {
      throw new VersionExistsError(
        `${formatRef({ registry, repository, selector: { type: 'tag', tag: other } })} already holds version ${core} with other content (digest ${current}); ` +
          `build metadata does not make another version, so give this module a version of its own in reasonplug.json (a variant of ${core}: a prerelease such as ${core}-q4)`,
        current,
        packed.digest,
      );
    }
  }

  let uploaded = 0;
  let skipped = 0;
  const blobs: { descriptor: Descriptor; file: string; open: () => AsyncIterable<Uint8Array> | Uint8Array }[] = [
    { descriptor: packed.config.descriptor, file: 'reasonplug.json', open: () => packed.config.bytes },
    ...packed.files.map((f) => ({
      descriptor: f.descriptor,
      file: f.title,
      open: () => counted(createReadStream(f.path, { highWaterMark: READ_CHUNK }), f.descriptor, f.title, opts.onProgress),
    })),
  ];
  await forEachBounded(blobs, CONCURRENCY, async (b) => {
    const { digest, size } = b.descriptor;
    if (await client.hasBlob(repository, digest, true)) {
      skipped++;
    } else {
      await client.uploadBlob(repository, b.descriptor, b.open);
      uploaded += size;
    }
    opts.onProgress?.({ file: b.file, digest, size, bytes: size, resumedFrom: 0, done: true });
  });

  try {
    await client.putManifest(repository, tag, packed.bytes);
  } catch (err) {
    // Registries that keep versions immutable answer DENIED, also to the losers of a concurrent push, who
    // checked before the winner's tag existed: look again, and say so rather than blame the token.
    if (err instanceof RegistryAuthError && err.reason === 'denied') {
      const current = existing === undefined ? await client.manifestDigest(repository, tag, true).catch(() => undefined) : existing;
      if (current !== undefined && current !== packed.digest) {
        throw conflict(current, existing === undefined ? ' (it was pushed while this push ran)' : `; the registry refused to replace it (${err.serverMessage ?? 'DENIED'})`);
      }
      // The token could write blobs, so it may push: the registry refuses the version itself (one published and
      // deleted since keeps its content on registries that never reuse a version).
      if (current === undefined && uploaded > 0) {
        throw new RegistryClientError(
          `${where} was refused though its files were uploaded (${err.serverMessage ?? 'DENIED'}): a registry that keeps versions immutable refuses a version published before with other content, even once deleted; bump "version" in reasonplug.json`,
        );
      }
      // Every file was there already (a retry): nothing shows whether the token may push, so both causes are named.
      if (current === undefined) {
        throw new RegistryAuthError(
          `${where} was refused (${err.serverMessage ?? 'DENIED'}): the version may have been published before with other content and deleted (registries that never reuse a version refuse it: bump "version" in reasonplug.json), or the token may not push here (pass --token TOKEN or set REASONPLUG_TOKEN)`,
          err.registry,
          err.scope,
          err.reason,
          ...(err.serverMessage !== undefined ? [err.serverMessage] : []),
        );
      }
    }
    throw err;
  }
  const latest = opts.latest ?? takesLatest(module.version, tags);
  if (latest) await client.putManifest(repository, 'latest', packed.bytes);
  return { registry, repository, version: module.version, digest: packed.digest, tags: latest ? [tag, 'latest'] : [tag], uploaded, skipped };
}

/** Whether `version` is no older than every release among `tags` (a prerelease: than every version, where there is no release). */
function takesLatest(version: string, tags: readonly string[]): boolean {
  const versions = tags.map(tagVersion).filter((v): v is string => v !== undefined);
  const releases = versions.filter((v) => semver.prerelease(v) === null);
  if (semver.prerelease(version) === null) return releases.every((v) => semver.gte(version, v));
  return releases.length === 0 && versions.every((v) => semver.gte(version, v));
}

/** Passes a file's chunks through, reporting upload progress. */
async function* counted(
  source: AsyncIterable<Buffer>,
  descriptor: Descriptor,
  file: string,
  onProgress?: (p: TransferProgress) => void,
): AsyncIterable<Uint8Array> {
  let bytes = 0;
  for await (const chunk of source) {
    bytes += chunk.length;
    onProgress?.({ file, digest: descriptor.digest, size: descriptor.size, bytes, resumedFrom: 0, done: false });
    yield chunk;
  }
}
