/**
 * The OCI distribution API calls the client needs (manifests, blobs, uploads, tags), over one
 * `Transport`. Everything read from the registry is size-limited and digest-checked here or by the caller.
 */
import { DigestMismatchError, InvalidArtifactError, ModuleNotFoundError, RegistryResponseError } from './errors.js';
import { MAX_MANIFEST_BYTES, MediaTypes, sha256Digest, type Descriptor } from './artifact.js';
import { readLimited, Transport, type TransportOptions } from './transport.js';

/** Manifest types asked for, so that a tag holding something else is reported as such instead of as missing. */
const ACCEPT_MANIFESTS = [
  MediaTypes.manifest,
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
].join(', ');

/**
 * Bytes per upload chunk, and the largest blob sent in one request. fetch keeps every chunk of a streamed request
 * body until the request ends, so a larger blob goes up as PATCHes of one buffer each: memory stays bounded.
 */
const UPLOAD_CHUNK_BYTES = 32 * 1024 * 1024;
/** Pieces a chunk is sent in. */
const UPLOAD_SLICE_BYTES = 1024 * 1024;
/** How long cancelling an upload may take: it only spares the registry's storage, and must not hold up the failure. */
const CANCEL_TIMEOUT_MS = 10_000;

const TAG_PAGE = 1000;
/** Pages of a tag list or catalog followed at most (a runaway `Link` chain must end). */
const MAX_TAG_PAGES = 100;

/** A blob body, from `offset` on (0 when the registry ignored the Range). */
export interface BlobStream {
  body: ReadableStream<Uint8Array>;
  offset: number;
  /** The blob's whole length as the registry states it (Content-Length of a 200, Content-Range of a 206), where it does. */
  length?: number;
}

/** Options of the {@link RegistryClient} constructor: the registry, plain HTTP and the credential. */
export interface ClientOptions extends TransportOptions {
  /** Bytes per upload chunk (internal: tests make it small); `UPLOAD_CHUNK_BYTES` by default. */
  uploadChunkBytes?: number;
}

/**
 * A client of one OCI registry (`opts.registry`, `host[:port]`; HTTPS unless loopback or `plainHttp`): manifests,
 * blobs, uploads, tags and catalog, answering auth challenges with `opts.credential`. Manifests and small blobs are
 * size-limited and digest-checked. Throws `RegistryClientError` subclasses: `ModuleNotFoundError` for a missing
 * manifest, blob or repository, `RegistryAuthError`, `RegistryUnreachableError`, `DigestMismatchError`,
 * `InvalidArtifactError`, and `RegistryResponseError` for other error answers.
 */
export class RegistryClient {
  /** The HTTP transport the client's calls go through (authenticated, typed errors). */
  readonly transport: Transport;
  private readonly chunkBytes: number;

  /** A client of `opts.registry`; nothing is sent before the first call. */
  constructor(opts: ClientOptions) {
    const { uploadChunkBytes, ...transport } = opts;
    this.transport = new Transport(transport);
    this.chunkBytes = uploadChunkBytes ?? UPLOAD_CHUNK_BYTES;
  }

  /**
   * A client for `registry` with the transport settings of `s`. The token is its registry's (`s.tokenFor`), as Docker
   * and oras keep credentials by host: a reference naming another registry gets none of it; so is plain HTTP asked by
   * an `http://` registry setting (`s.plainHttpFor`).
   */
  static for(registry: string, s: { plainHttp: boolean; plainHttpFor?: string; token?: string; tokenFor?: string }): RegistryClient {
    const credential = s.tokenFor?.toLowerCase() === registry.toLowerCase() ? s.token : undefined;
    const plainHttp = s.plainHttp || s.plainHttpFor?.toLowerCase() === registry.toLowerCase();
    return new RegistryClient({ registry, plainHttp, ...(credential !== undefined ? { credential } : {}) });
  }

  get registry(): string {
    return this.transport.registry;
  }

  /** The token scope for reading (and, with `push`, writing) a repository. */
  static scope(repository: string, push = false): string {
    return `repository:${repository}:${push ? 'pull,push' : 'pull'}`;
  }

  /**
   * Fetches a manifest by tag or digest: at most `MAX_MANIFEST_BYTES`, and its SHA-256 must be the digest
   * asked for and the one the registry announces. Throws `ModuleNotFoundError` when it does not exist.
   */
  async getManifest(repository: string, reference: string, signal?: AbortSignal): Promise<{ bytes: Buffer; digest: string }> {
    const source = this.describe(repository, reference);
    const res = await this.transport.request('GET', `/v2/${repository}/manifests/${reference}`, {
      scope: RegistryClient.scope(repository),
      headers: { accept: ACCEPT_MANIFESTS },
      allow: [404],
      ...(signal ? { signal } : {}),
    });
    if (res.status === 404) {
      await res.body?.cancel();
      throw new ModuleNotFoundError(`registry ${this.registry} has no ${source}; check the name and the tag or version`);
    }
    const bytes = await readLimited(
      res,
      MAX_MANIFEST_BYTES,
      (size) => new InvalidArtifactError(`the manifest of ${source} is ${size}, over the ${MAX_MANIFEST_BYTES}-byte limit; refusing it`),
    );
    const digest = sha256Digest(bytes);
    const announced = res.headers.get('docker-content-digest');
    const expected = reference.startsWith('sha256:') ? reference : announced?.startsWith('sha256:') ? announced : undefined;
    if (expected !== undefined && expected !== digest) {
      throw new DigestMismatchError(
        `the manifest of ${source} has digest ${digest}, not ${expected}; the registry or something between us changed it — nothing was kept`,
        expected,
        digest,
      );
    }
    return { bytes, digest };
  }

  /** The digest a tag points to, or undefined when the tag does not exist. */
  async manifestDigest(repository: string, reference: string, push = false): Promise<string | undefined> {
    const res = await this.transport.request('HEAD', `/v2/${repository}/manifests/${reference}`, {
      scope: RegistryClient.scope(repository, push),
      headers: { accept: ACCEPT_MANIFESTS },
      allow: [404],
    });
    await res.body?.cancel();
    if (res.status === 404) return undefined;
    const digest = res.headers.get('docker-content-digest');
    // The header is optional in the spec; without it, hash the manifest itself.
    return digest?.startsWith('sha256:') ? digest : (await this.getManifest(repository, reference)).digest;
  }

  /** Stores a manifest under a tag; returns the digest the registry computed. */
  async putManifest(repository: string, tag: string, bytes: Buffer): Promise<string> {
    const res = await this.transport.request('PUT', `/v2/${repository}/manifests/${tag}`, {
      scope: RegistryClient.scope(repository, true),
      headers: { 'content-type': MediaTypes.manifest },
      body: () => bytes,
    });
    await res.body?.cancel();
    return res.headers.get('docker-content-digest') ?? sha256Digest(bytes);
  }

  /** Whether the repository has the blob (a push skips those it has). */
  async hasBlob(repository: string, digest: string, push = false): Promise<boolean> {
    const res = await this.transport.request('HEAD', `/v2/${repository}/blobs/${digest}`, {
      scope: RegistryClient.scope(repository, push),
      allow: [404],
    });
    await res.body?.cancel();
    return res.status !== 404;
  }

  /** Opens a blob from byte `offset` on (a `Range` request); the registry may answer with the whole blob. */
  async openBlob(repository: string, digest: string, offset: number, signal?: AbortSignal): Promise<BlobStream> {
    const path = `/v2/${repository}/blobs/${digest}`;
    const common = { scope: RegistryClient.scope(repository), allow: [404, 416], ...(signal ? { signal } : {}) };
    let res = await this.transport.request('GET', path, { ...common, ...(offset > 0 ? { headers: { range: `bytes=${offset}-` } } : {}) });
    if (res.status === 416) {
      // What we hold is longer than the blob: start over.
      await res.body?.cancel();
      res = await this.transport.request('GET', path, common);
    }
    if (res.status === 404) {
      await res.body?.cancel();
      throw new ModuleNotFoundError(`registry ${this.registry} has no blob ${digest} in ${repository}, though its manifest lists it`);
    }
    if (!res.body) throw new RegistryResponseError(`registry ${this.registry} sent no body for blob ${digest}`, this.registry, res.status);
    const served = res.status === 206 ? /^bytes (\d+)-\d*(?:\/(\d+|\*))?/.exec(res.headers.get('content-range') ?? '') : null;
    if (res.status === 206 && Number(served?.[1]) !== offset) {
      await res.body.cancel();
      throw new RegistryResponseError(
        `registry ${this.registry} answered a request for ${digest} from byte ${offset} with Content-Range ${res.headers.get('content-range')}`,
        this.registry,
        206,
      );
    }
    // (A compressed response's Content-Length is not the blob's.)
    const encoded = (res.headers.get('content-encoding') ?? 'identity') !== 'identity';
    const stated = res.status === 206 ? served?.[2] : encoded ? undefined : res.headers.get('content-length');
    const length = stated && /^\d+$/.test(stated) ? Number(stated) : undefined;
    return { body: res.body, offset: res.status === 206 ? offset : 0, ...(length !== undefined && Number.isSafeInteger(length) ? { length } : {}) };
  }

  /** Reads a small blob whole (at most `MAX_MANIFEST_BYTES`) and checks its digest. */
  async readBlob(repository: string, descriptor: Descriptor): Promise<Buffer> {
    const { body } = await this.openBlob(repository, descriptor.digest, 0);
    const bytes = await readLimited(
      new Response(body),
      MAX_MANIFEST_BYTES,
      (size) => new InvalidArtifactError(`blob ${descriptor.digest} of ${repository} is ${size}, over the ${MAX_MANIFEST_BYTES}-byte limit`),
    );
    const digest = sha256Digest(bytes);
    if (digest !== descriptor.digest) {
      throw new DigestMismatchError(`registry ${this.registry} sent ${digest} for blob ${descriptor.digest} of ${repository}; refusing it`, descriptor.digest, digest);
    }
    return bytes;
  }

  /**
   * Uploads a blob; `open` makes its bytes. One larger than a chunk goes up in chunks (POST, a PATCH per chunk,
   * PUT `?digest=`), or in one PUT where the registry refuses chunks; a smaller one in one PUT (POST, PUT `?digest=`).
   * An upload that fails is cancelled (see `cancelUpload`) before its error is thrown.
   */
  async uploadBlob(repository: string, descriptor: Descriptor, open: () => AsyncIterable<Uint8Array> | Uint8Array): Promise<void> {
    if (descriptor.size > this.chunkBytes && (await this.uploadChunks(repository, descriptor, open))) return;
    const scope = RegistryClient.scope(repository, true);
    const session = await this.startUpload(repository, scope);
    const commit = new URL(session);
    commit.searchParams.set('digest', descriptor.digest);
    try {
      const done = await this.transport.request('PUT', commit, {
        scope,
        headers: { 'content-type': 'application/octet-stream', 'content-length': String(descriptor.size) },
        body: open,
      });
      await done.body?.cancel();
    } catch (err) {
      await this.cancelUpload(session, scope);
      throw err;
    }
  }

  /**
   * Uploads a blob as PATCHes of at most `chunkBytes`, each following the `Location` of the answer before, then
   * commits it. False, with nothing of it stored, where the registry refuses the first PATCH as unsupported.
   */
  private async uploadChunks(repository: string, descriptor: Descriptor, open: () => AsyncIterable<Uint8Array> | Uint8Array): Promise<boolean> {
    const scope = RegistryClient.scope(repository, true);
    let url = await this.startUpload(repository, scope);
    let offset = 0;
    try {
      // (leaving the loop early closes `open`'s stream)
      for await (const chunk of chunksOf(open(), this.chunkBytes)) {
        let res: Response;
        try {
          res = await this.transport.request('PATCH', url, {
            scope,
            headers: {
              'content-type': 'application/octet-stream',
              'content-range': `${offset}-${offset + chunk.length - 1}`,
              'content-length': String(chunk.length),
            },
            // (the same bytes again when the request is repeated after an auth challenge)
            body: () => slices(chunk),
          });
        } catch (err) {
          if (offset !== 0 || !refusesChunks(err)) throw err;
          await this.cancelUpload(url, scope);
          return false;
        }
        await res.body?.cancel();
        url = this.location(res, `took a chunk of an upload to ${repository}`);
        offset += chunk.length;
      }
      const commit = new URL(url);
      commit.searchParams.set('digest', descriptor.digest);
      const done = await this.transport.request('PUT', commit, { scope, headers: { 'content-length': '0' } });
      await done.body?.cancel();
    } catch (err) {
      await this.cancelUpload(url, scope);
      throw err;
    }
    return true;
  }

  /** Opens an upload session (POST); its URL. */
  private async startUpload(repository: string, scope: string): Promise<URL> {
    const started = await this.transport.request('POST', `/v2/${repository}/blobs/uploads/`, { scope });
    await started.body?.cancel();
    return this.location(started, `started an upload to ${repository}`);
  }

  /**
   * Cancels an upload session the client gives up on (`DELETE`, as OCI defines it): the client never resumes one, and
   * a registry keeps an abandoned session's parts until it purges such sessions, days later (on a full disk, no retry
   * can succeed until then). Best effort, and bounded in time: the failure that ended the upload is the one reported.
   */
  private async cancelUpload(session: URL, scope: string): Promise<void> {
    try {
      const res = await this.transport.request('DELETE', session, { scope, signal: AbortSignal.timeout(CANCEL_TIMEOUT_MS) });
      await res.body?.cancel();
    } catch {
      // (a registry that cannot cancel it still purges it in the end)
    }
  }

  /** Where an upload goes on: the answer's `Location`, relative to the registry. */
  private location(res: Response, what: string): URL {
    const location = res.headers.get('location');
    if (!location) throw new RegistryResponseError(`registry ${this.registry} ${what} without a Location header`, this.registry, res.status);
    return new URL(location, this.transport.baseUrl);
  }

  /** Every tag of a repository, following `Link` pagination. Throws `ModuleNotFoundError` for an unknown repository. */
  async listTags(repository: string): Promise<string[]> {
    return this.listPaged(`/v2/${repository}/tags/list?n=${TAG_PAGE}`, RegistryClient.scope(repository), 'tags', `the tag list of ${repository}`, [404], () => {
      throw new ModuleNotFoundError(`registry ${this.registry} has no repository ${repository}`);
    });
  }

  /**
   * Every repository of the registry's catalog (`/v2/_catalog`, CNCF distribution's), following `Link` pagination;
   * undefined where the registry publishes none (GHCR, Docker Hub).
   */
  async listCatalog(): Promise<string[] | undefined> {
    return this.listPaged(`/v2/_catalog?n=${TAG_PAGE}`, 'registry:catalog:*', 'repositories', 'the catalog', [400, 404, 405], () => undefined);
  }

  /**
   * The names a paged list (`tags` or `repositories`) holds, from `first` on along its `Link` headers; `missing`
   * answers the statuses `absent` lists (a list that does not exist).
   */
  private async listPaged<T>(first: string, scope: string, field: 'tags' | 'repositories', what: string, absent: number[], missing: () => T): Promise<string[] | T> {
    const names: string[] = [];
    let next: string | undefined = first;
    for (let page = 0; next !== undefined && page < MAX_TAG_PAGES; page++) {
      const res = await this.transport.request('GET', next, { scope, allow: absent });
      if (!res.ok) {
        await res.body?.cancel();
        return missing();
      }
      const body = (await readLimited(res, MAX_MANIFEST_BYTES, (size) => new InvalidArtifactError(`${what} is ${size}, too large`))).toString('utf8');
      let parsed: Record<string, unknown>;
      try {
        parsed = JSON.parse(body) as Record<string, unknown>;
      } catch {
        throw new InvalidArtifactError(`registry ${this.registry} sent ${what} that is not JSON`);
      }
      // Distribution answers `"tags": null` for a repository whose tags were all deleted.
      const listed = parsed[field];
      if (listed !== null && listed !== undefined && (!Array.isArray(listed) || listed.some((t) => typeof t !== 'string'))) {
        throw new InvalidArtifactError(`registry ${this.registry} sent a malformed ${what}`);
      }
      names.push(...((listed as string[] | null) ?? []));
      next = /<([^>]+)>\s*;\s*rel="?next"?/.exec(res.headers.get('link') ?? '')?.[1];
    }
    return names;
  }

  private describe(repository: string, reference: string): string {
    return `${this.registry}/${repository}${reference.startsWith('sha256:') ? '@' : ':'}${reference}`;
  }
}

/**
 * Whether an error answering an upload's PATCH says the registry takes no chunked uploads (method not routed,
 * or OCI `UNSUPPORTED`), so that a single PUT may still work.
 */
function refusesChunks(err: unknown): boolean {
  return err instanceof RegistryResponseError && (err.status === 404 || err.status === 405 || err.code === 'UNSUPPORTED');
}

/** A buffer as views of it: fetch copies a buffer body whole first, while it sends a stream's pieces as they are. */
async function* slices(chunk: Buffer): AsyncIterable<Uint8Array> {
  for (let at = 0; at < chunk.length; at += UPLOAD_SLICE_BYTES) yield chunk.subarray(at, at + UPLOAD_SLICE_BYTES);
}

/** The bytes of `source` in buffers of `size` bytes (the last one shorter), each allocated once a byte needs it. */
async function* chunksOf(source: AsyncIterable<Uint8Array> | Uint8Array, size: number): AsyncGenerator<Buffer> {
  let chunk: Buffer | undefined;
  let filled = 0;
  for await (const piece of source instanceof Uint8Array ? [source] : source) {
    for (let at = 0; at < piece.length; ) {
      chunk ??= Buffer.allocUnsafe(size);
      const n = Math.min(size - filled, piece.length - at);
      chunk.set(piece.subarray(at, at + n), filled);
      filled += n;
      at += n;
      if (filled === size) {
        yield chunk;
        chunk = undefined;
        filled = 0;
      }
    }
  }
  if (chunk) yield chunk.subarray(0, filled);
}
