/** A registry on loopback for one test, an OCI client small enough to read, and module artifacts. */
import { createHash } from 'node:crypto';
import { createRegistryServer, type ListeningRegistry, type RegistryServerOptions } from '../../src/server.js';
import type { StorageDriver } from '../../src/storage/driver.js';

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const MODULE_TYPE = 'application/vnd.reasonplug.module.v1+json';
export const MODULE_CONFIG = 'application/vnd.reasonplug.module.config.v1+json';
export const FILE_LAYER = 'application/vnd.oci.image.layer.v1.tar';

export const digestOf = (b: Uint8Array) => 'sha256:' + createHash('sha256').update(b).digest('hex');

export function startRegistry(storage: StorageDriver, opts: Omit<RegistryServerOptions, 'storage'> = {}): Promise<ListeningRegistry> {
  return createRegistryServer({ storage, ...opts }).listen(0, '127.0.0.1');
}

/** What {@link useRegistry} gives each test: fresh storage, a registry over it, and a client of that registry. */
export interface RegistryUnderTest {
  readonly storage: StorageDriver;
  readonly registry: ListeningRegistry;
  readonly c: Client;
}

/** Call inside a `describe`: before each test, fresh storage from `open` and a registry over it (closed after the test). */
export function useRegistry(open: () => Promise<{ storage: StorageDriver }>): RegistryUnderTest {
  let current: { storage: StorageDriver; registry: ListeningRegistry; c: Client } | undefined;
  beforeEach(async () => {
    const { storage } = await open();
    const registry = await startRegistry(storage);
    current = { storage, registry, c: new Client(registry.url) };
  });
  afterEach(() => current?.registry.close());
  return {
    get storage() {
      return current!.storage;
    },
    get registry() {
      return current!.registry;
    },
    get c() {
      return current!.c;
    },
  };
}

export type Body = NonNullable<RequestInit['body']> | AsyncIterable<Uint8Array>;

export interface RequestOptions {
  body?: Body;
  headers?: Record<string, string>;
}

export class Client {
  constructor(
    readonly url: string,
    private readonly auth?: string,
  ) {}

  /** The same client sending `Authorization: <header>`. */
  as(authorization: string): Client {
    return new Client(this.url, authorization);
  }

  request(method: string, path: string, opts: RequestOptions = {}): Promise<Response> {
    return fetch(this.url + path, {
      method,
      headers: { ...(this.auth ? { authorization: this.auth } : {}), ...opts.headers },
      ...(opts.body !== undefined ? { body: opts.body, duplex: 'half' } : {}),
      redirect: 'manual',
    } as RequestInit);
  }

  /** Monolithic push (`POST ?digest=`); returns the digest. */
  async pushBlob(repo: string, bytes: Uint8Array): Promise<string> {
    const digest = digestOf(bytes);
    const res = await this.request('POST', `/v2/${repo}/blobs/uploads/?digest=${digest}`, {
      body: bytes,
      headers: { 'content-type': 'application/octet-stream' },
    });
    if (res.status !== 201) throw new Error(`blob push: ${res.status} ${await res.text()}`);
    return digest;
  }

  putManifest(repo: string, reference: string, bytes: Uint8Array, mediaType = OCI_MANIFEST): Promise<Response> {
    return this.request('PUT', `/v2/${repo}/manifests/${reference}`, { body: bytes, headers: { 'content-type': mediaType } });
  }

  /** Pushes a module's blobs and its manifest under each tag; returns the manifest digest. */
  async pushModule(repo: string, tags: string[], spec: ModuleSpec = {}): Promise<string> {
    const artifact = moduleArtifact(spec);
    for (const b of artifact.blobs) await this.pushBlob(repo, b);
    for (const tag of tags) {
      const res = await this.putManifest(repo, tag, artifact.manifest);
      if (res.status !== 201) throw new Error(`manifest push ${repo}:${tag}: ${res.status} ${await res.text()}`);
    }
    return digestOf(artifact.manifest);
  }
}

export async function errorCode(res: Response): Promise<string> {
  const body = (await res.json()) as { errors: { code: string }[] };
  return body.errors[0]!.code;
}

export interface ModuleSpec {
  name?: string;
  version?: string;
  kind?: string;
  tasks?: string[];
  tokenizer?: string;
  files?: Record<string, string>;
}

/** A module as the client will push it: config = reasonplug.json, one layer per file, annotations. */
export function moduleArtifact(spec: ModuleSpec = {}): { blobs: Buffer[]; manifest: Buffer } {
  const { name = 'adder', version = '1.0.0', kind = 'logit-reasoner', tasks = ['math'], tokenizer = 'sha256:' + 'ab'.repeat(32) } = spec;
  const files = spec.files ?? { 'model.onnx': `weights of ${name} ${version}` };
  const layers = Object.entries(files).map(([path, text]) => ({ path, bytes: Buffer.from(text) }));
  const config = Buffer.from(
    JSON.stringify({ schemaVersion: 1, name, version, kind, tasks, compat: { tokenizer, vocabSize: 96 }, files: {} }),
  );
  const manifest = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    artifactType: MODULE_TYPE,
    config: { mediaType: MODULE_CONFIG, digest: digestOf(config), size: config.length },
    layers: layers.map((l) => ({
      mediaType: FILE_LAYER,
      digest: digestOf(l.bytes),
      size: l.bytes.length,
      annotations: { 'org.opencontainers.image.title': l.path },
    })),
    annotations: {
      'dev.reasonplug.kind': kind,
      'dev.reasonplug.tasks': tasks.join(','),
      'dev.reasonplug.tokenizer': tokenizer,
      'org.opencontainers.image.version': version,
    },
  };
  return { blobs: [config, ...layers.map((l) => l.bytes)], manifest: Buffer.from(JSON.stringify(manifest, null, 2)) };
}
