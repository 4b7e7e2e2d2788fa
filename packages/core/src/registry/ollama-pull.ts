/**
 * Pulling a model by its Ollama name (`ollama://qwen2.5:0.5b`, `ollama://hf.co/org/repo:Q4_K_M`) from the registry the
 * name's host runs — `registry.ollama.ai` unless the name gives another — when no Ollama store on this machine has it,
 * so a model loads by that name without Ollama installed. Those registries speak OCI's distribution API: the manifest
 * `/v2/<namespace>/<model>/manifests/<tag>` lists the model's layers, and its model layer (the GGUF file) is fetched
 * with the small ones that give its defaults (system prompt, options, messages, license; not its Go template), with
 * the client every registry pull uses (token challenges, `Range` resumes, the digest checked before the file takes
 * its name). What is pulled goes into reasonplug's own store in its cache, laid out as Ollama's
 * (`<cache>/ollama`, modules/ollama-store.ts), never into Ollama's store.
 */
import { mkdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import {
  OllamaModelError,
  ollamaBlobPath,
  ollamaManifestPath,
  ollamaModelFile,
  ollamaModelLayer,
  ollamaSearchStores,
  ollamaSideLayers,
  ollamaShortName,
  parseOllamaName,
  pulledOllamaStore,
  type OllamaName,
} from '../modules/ollama-store.js';
import { writeFileAtomic } from './atomic.js';
import { ModuleCache } from './cache.js';
import { RegistryClient } from './client.js';
import { downloadBlob, type TransferProgress } from './download.js';
import { InvalidArtifactError, ModuleNotFoundError, OfflineError, RegistryClientError, RegistryResponseError } from './errors.js';
import { settingsFrom, type RegistryOptions } from './settings.js';

/** How to find or pull an Ollama model. */
export interface OllamaPullOptions extends RegistryOptions {
  onProgress?: (p: TransferProgress) => void;
  signal?: AbortSignal;
}

/** reasonplug's Ollama store as the blob cache downloads go into: Ollama's blob names, the shared stat records. */
class OllamaBlobs extends ModuleCache {
  constructor(
    root: string,
    private readonly cacheDir: string,
  ) {
    super(root);
  }

  override get blobsDir(): string {
    return join(this.root, 'blobs');
  }

  override get digestsDir(): string {
    return join(this.cacheDir, 'digests');
  }

  override blobPath(digest: string): string {
    return ollamaBlobPath(this.root, digest);
  }
}

/**
 * The GGUF file of `spec` (`ollama://…`): from Ollama's store or reasonplug's when one has it, else pulled from its
 * registry (not in offline mode). Throws OllamaModelError saying where it was looked for and why the pull failed.
 */
export async function ollamaModelPath(spec: string, opts: OllamaPullOptions = {}): Promise<string> {
  const { cacheDir, offline } = settingsFrom(opts);
  try {
    return ollamaModelFile(spec, ollamaSearchStores(cacheDir));
  } catch (err) {
    if (!(err instanceof OllamaModelError) || !err.notPulled) throw err;
    const failed = (why: string) => new OllamaModelError(spec, `${err.reason}; ${why}`, false, why);
    if (offline) throw failed(`offline, so it was not pulled from ${parseOllamaName(spec).host}`);
    try {
      return await pullOllamaModel(spec, opts);
    } catch (pullErr) {
      if (pullErr instanceof RegistryClientError) throw failed(`pulling it failed: ${pullErr.message}`);
      if (pullErr instanceof OllamaModelError) throw failed(`pulling it failed: ${pullErr.reason}`);
      throw pullErr;
    }
  }
}

/**
 * Pulls `spec` from its registry into reasonplug's Ollama store (again, if it is there: a tag may have moved) and
 * returns its GGUF file. Registry failures are thrown as the registry client's errors (RegistryClientError); a
 * manifest reasonplug cannot use (a LoRA adapter, no model layer) is refused before anything is downloaded.
 */
export async function pullOllamaModel(spec: string, opts: OllamaPullOptions = {}): Promise<string> {
  const settings = settingsFrom(opts);
  const name = parseOllamaName(spec);
  if (settings.offline) throw new OfflineError(`offline: ${spec} cannot be pulled from ${name.host}`);
  // The token configured for reasonplug's registry goes to that registry only, never to Ollama's.
  const client = RegistryClient.for(name.host, settings);
  const { repository, fetched } = await fetchManifest(client, name, opts.signal);
  const where = `${name.host}/${repository}:${name.tag}`;
  let manifest: unknown;
  try {
    manifest = JSON.parse(fetched.bytes.toString('utf8'));
  } catch {
    throw new InvalidArtifactError(`registry ${name.host} sent a manifest for ${repository}:${name.tag} that is not JSON`);
  }
  const { digest, size } = ollamaModelLayer(spec, manifest, where);
  if (size === undefined) throw new OllamaModelError(spec, `the manifest ${where} gives its model layer no size`);
  const store = pulledOllamaStore(settings.cacheDir);
  const blobs = new OllamaBlobs(store, settings.cacheDir);
  await downloadBlob(client, repository, { mediaType: 'application/vnd.ollama.image.model', digest, size }, blobs, {
    file: ollamaShortName(name),
    ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
    ...(opts.signal ? { signal: opts.signal } : {}),
  });
  // The small layers beside it too (system prompt, options, messages, license): the model's own defaults.
  for (const layer of ollamaSideLayers(manifest)) {
    await downloadBlob(client, repository, layer, blobs, { file: `${ollamaShortName(name)} (${layer.mediaType.replace(/.*\./, '')})`, ...(opts.signal ? { signal: opts.signal } : {}) });
  }
  // The manifest last: a store lists only models whose model blob is there.
  const at = ollamaManifestPath(store, name);
  await mkdir(dirname(at), { recursive: true });
  await writeFileAtomic(at, fetched.bytes);
  return ollamaBlobPath(store, digest);
}

/**
 * The manifest of `name` and the repository it was found under. Ollama's names are case-insensitive and the hub's
 * (hf.co) keep their case, while OCI registries take lower-case repository names only: the name as written is asked
 * for first, then in lower case.
 */
async function fetchManifest(client: RegistryClient, name: OllamaName, signal: AbortSignal | undefined): Promise<{ repository: string; fetched: { bytes: Buffer; digest: string } }> {
  const written = `${name.namespace}/${name.model}`;
  const lower = written.toLowerCase();
  const unknown = (err: unknown) => err instanceof ModuleNotFoundError || (err instanceof RegistryResponseError && err.status === 400);
  const notFound = new ModuleNotFoundError(`registry ${name.host} has no ${written}:${name.tag}`);
  try {
    return { repository: written, fetched: await client.getManifest(written, name.tag, signal) };
  } catch (err) {
    if (!unknown(err)) throw err;
    if (written === lower) throw notFound;
  }
  try {
    return { repository: lower, fetched: await client.getManifest(lower, name.tag, signal) };
  } catch (err) {
    throw unknown(err) ? notFound : err;
  }
}
