/**
 * Real registries on loopback for the registry client tests: reasonplug-registry in this process, and
 * CNCF distribution (Debian's `docker-registry`) as a child process. Plus module directories with files
 * of chosen sizes (registry tests need bytes, not working models).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { createRegistryServer, FilesystemStorage, TokenStore } from '@reasonplug/registry-server';
import { writeModuleDir } from '../../src/modules/module-dir.js';
import type { ModuleManifest } from '../../src/modules/manifest.js';
import { testDir } from './models.js';

export interface RunningRegistry {
  /** `127.0.0.1:PORT`, as written in references. */
  host: string;
  close(): Promise<void>;
}

export interface OurRegistry extends RunningRegistry {
  /** Root of its FilesystemStorage. */
  root: string;
  tokens: TokenStore;
}

/** reasonplug-registry on a free loopback port; `auth` turns on tokens (no anonymous pulls). */
export async function startOurRegistry(opts: { auth?: boolean; maxManifestBytes?: number } = {}): Promise<OurRegistry> {
  const root = testDir('registry-data');
  const storage = new FilesystemStorage(root);
  const tokens = new TokenStore(storage);
  const server = createRegistryServer({
    storage,
    ...(opts.auth ? { auth: { tokens, anonymousPull: false } } : {}),
    ...(opts.maxManifestBytes !== undefined ? { maxManifestBytes: opts.maxManifestBytes } : {}),
  });
  const listening = await server.listen(0, '127.0.0.1');
  return { host: new URL(listening.url).host, root, tokens, close: () => listening.close() };
}

/** The CNCF distribution binary (`REASONPLUG_DOCKER_REGISTRY` overrides the Debian path). */
export const distributionBinary = process.env['REASONPLUG_DOCKER_REGISTRY'] ?? '/usr/bin/docker-registry';

/** Why distribution tests cannot run here, or undefined when they can. */
export function distributionMissing(): string | undefined {
  return existsSync(distributionBinary)
    ? undefined
    : `${distributionBinary} not found: install Debian's docker-registry package (apt-get install docker-registry) to run the CNCF distribution interop tests`;
}

/** A free TCP port on 127.0.0.1 (bound, then released). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

export interface Distribution extends RunningRegistry {
  /** Its storage root directory. */
  root: string;
  pid: number;
}

/** Starts CNCF distribution without auth on a free loopback port, storage in a temp directory. */
export async function startDistribution(): Promise<Distribution> {
  const dir = testDir('distribution');
  const root = join(dir, 'data');
  const port = await freePort();
  const config = join(dir, 'config.yml');
  await writeFile(
    config,
    ['version: 0.1', 'log:', '  level: error', 'storage:', '  filesystem:', `    rootdirectory: ${root}`, '  delete:', '    enabled: true', 'http:', `  addr: 127.0.0.1:${port}`, ''].join('\n'),
  );
  const child: ChildProcess = spawn(distributionBinary, ['serve', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const host = `127.0.0.1:${port}`;
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`docker-registry exited at start (${child.exitCode}): ${stderr}`);
    const up = await fetch(`http://${host}/v2/`).then(
      (r) => r.status === 200,
      () => false,
    );
    if (up) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`docker-registry did not answer on ${host} within 15 s: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    host,
    root,
    pid: child.pid!,
    close: async () => {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

export interface RegistryModuleSpec {
  name: string;
  version?: string;
  kind?: ModuleManifest['kind'];
  tasks?: string[];
  /** `compat.tokenizer` (default: a fixed fingerprint no real tokenizer has). */
  tokenizer?: string;
  /** Extra files and their sizes in bytes, besides a small model.onnx. */
  files?: Record<string, number>;
  /** Varies the bytes, so that one name and version can be packed with different content. */
  seed?: number;
}

/** Deterministic bytes that differ per seed and offset (so no two blocks of a file compress or dedupe). */
export function bytesOf(size: number, seed: number): Buffer {
  const words = new Uint32Array(Math.ceil(size / 4));
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x >>> 0;
  }
  return Buffer.from(words.buffer, 0, size);
}

/** A module directory whose files are plain bytes (valid manifest, not a runnable model). */
export async function makeRegistryModule(spec: RegistryModuleSpec): Promise<string> {
  const dir = join(testDir(`module-${spec.name}`), spec.name);
  await mkdir(dir, { recursive: true });
  const seed = spec.seed ?? 1;
  await writeFile(join(dir, 'model.onnx'), bytesOf(4096, seed));
  const files: Record<string, string> = { model: 'model.onnx' };
  for (const [path, size] of Object.entries(spec.files ?? {})) {
    await mkdir(join(dir, path, '..'), { recursive: true });
    await writeFile(join(dir, path), bytesOf(size, seed + size));
    files[path.replace(/[^A-Za-z0-9]/g, '_')] = path;
  }
  await writeModuleDir(dir, {
    name: spec.name,
    version: spec.version ?? '1.0.0',
    kind: spec.kind ?? 'backbone',
    tasks: spec.tasks ?? ['math'],
    description: `registry test module ${spec.name}`,
    license: 'MIT',
    compat: { tokenizer: spec.tokenizer ?? `sha256:${'ab'.repeat(32)}`, vocabSize: 512 },
    files,
  });
  return dir;
}
