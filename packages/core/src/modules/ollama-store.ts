/**
 * Models Ollama has pulled, named as Ollama names them: `ollama://qwen2.5:0.5b`, `ollama://user/model:tag`,
 * `ollama://hf.co/org/repo:Q4_K_M`. Ollama keeps each model as a manifest in OCI's shape
 * (`manifests/<host>/<namespace>/<model>/<tag>`, host `registry.ollama.ai`, namespace `library` and tag `latest`
 * when a name leaves them out) whose layers are content-addressed blobs (`blobs/sha256-<hex>`); the layer of media
 * type `application/vnd.ollama.image.model` is the model's GGUF file, which is then converted like any other.
 *
 * The store is `$OLLAMA_MODELS`, else `~/.ollama/models`, else a Linux service install's
 * `/usr/share/ollama/.ollama/models`; after it, the store of the models reasonplug pulls itself from Ollama's registry
 * (registry/ollama-pull.ts), in its cache. The model layer is the model; its system prompt, options (`params`), example
 * messages and license layers are read beside it ({@link ollamaModelLayers}, the model's defaults: model-defaults.ts).
 * Ollama's Go chat template is not Jinja, and the GGUF's own `tokenizer.chat_template` (what Ollama derives its
 * template from) is used; a vision projector layer is left out (the model runs as a text model); a LoRA adapter layer
 * is refused, since it would change the model.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { cacheRoot } from './cache-root.js';
import { entryOf, namesIn, type StoredModel } from './dir-entries.js';

/** The prefix that marks a model spec as an Ollama model name. */
const OLLAMA_SCHEME = 'ollama://';

const MODEL_LAYER = 'application/vnd.ollama.image.model';
const ADAPTER_LAYER = 'application/vnd.ollama.image.adapter';
const SYSTEM_LAYER = 'application/vnd.ollama.image.system';
const PARAMS_LAYER = 'application/vnd.ollama.image.params';
const MESSAGES_LAYER = 'application/vnd.ollama.image.messages';
const LICENSE_LAYER = 'application/vnd.ollama.image.license';
const DEFAULT_HOST = 'registry.ollama.ai';
const DEFAULT_NAMESPACE = 'library';
const DEFAULT_TAG = 'latest';

/** An Ollama model that cannot be used: no store, not pulled, a manifest without a usable model layer. */
export class OllamaModelError extends Error {
  override name = 'OllamaModelError';
  /**
   * `spec`: the name asked for; `reason`: what is wrong with it, without the name; `notPulled`: no store has the model
   * (it may be pulled); `pullFailure`: why it was not pulled then (offline, or what the registry said).
   */
  constructor(
    spec: string,
    readonly reason: string,
    readonly notPulled = false,
    readonly pullFailure?: string,
  ) {
    super(`${spec}: ${reason}`);
  }
}

/** Whether a model spec names an Ollama model (`ollama://…`, the scheme in any case: RFC 3986 §3.1). */
export function isOllamaRef(spec: string): boolean {
  return spec.slice(0, OLLAMA_SCHEME.length).toLowerCase() === OLLAMA_SCHEME;
}

/** Where Ollama may keep its models, in the order looked at. */
function ollamaStores(env: NodeJS.ProcessEnv = process.env): string[] {
  if (env.OLLAMA_MODELS) return [env.OLLAMA_MODELS];
  return [join(homedir(), '.ollama', 'models'), '/usr/share/ollama/.ollama/models'];
}

/**
 * Where reasonplug keeps the Ollama models it pulls itself (registry/ollama-pull.ts), laid out as Ollama's store, under
 * its cache root: Ollama's own store is only ever read.
 */
export function pulledOllamaStore(cacheDir: string = cacheRoot()): string {
  return join(cacheDir, 'ollama');
}

/** The stores an `ollama://` name is looked up in: Ollama's, then reasonplug's own pulls (under `cacheDir`). */
export function ollamaSearchStores(cacheDir?: string, env: NodeJS.ProcessEnv = process.env): string[] {
  return [...ollamaStores(env), pulledOllamaStore(cacheDir)];
}

/** A model name's parts, defaults filled in. */
export interface OllamaName {
  host: string;
  namespace: string;
  model: string;
  tag: string;
}

/** Parses `ollama://[host/][namespace/]model[:tag]` as Ollama does; refuses what cannot be a name (and any path tricks). */
export function parseOllamaName(spec: string): OllamaName {
  const name = spec.slice(OLLAMA_SCHEME.length);
  const parts = name.split('/');
  const last = parts.pop() ?? '';
  const colon = last.lastIndexOf(':');
  const [model, tag] = colon >= 0 ? [last.slice(0, colon), last.slice(colon + 1)] : [last, DEFAULT_TAG];
  const [host, namespace] = parts.length === 2 ? parts : parts.length === 1 ? [DEFAULT_HOST, parts[0]!] : parts.length === 0 ? [DEFAULT_HOST, DEFAULT_NAMESPACE] : [];
  const part = /^[A-Za-z0-9_][A-Za-z0-9._:-]*$/;
  if (host === undefined || namespace === undefined || ![host, namespace, model, tag].every((p) => part.test(p) && !p.includes('..'))) {
    throw new OllamaModelError(spec, `not an Ollama model name: write ${OLLAMA_SCHEME}[host/][namespace/]model[:tag], e.g. ${OLLAMA_SCHEME}qwen2.5:0.5b`);
  }
  return { host, namespace, model, tag };
}

/** The model `spec` names (`ollama://…`) as Ollama lists it (`qwen2.5:latest`, `someone/tiny:v2`). */
export function ollamaDisplayName(spec: string): string {
  return ollamaShortName(parseOllamaName(spec));
}

/** How Ollama shows a name: the default host and namespace left out. */
export function ollamaShortName(n: OllamaName): string {
  const prefix = n.host === DEFAULT_HOST ? (n.namespace === DEFAULT_NAMESPACE ? '' : `${n.namespace}/`) : `${n.host}/${n.namespace}/`;
  return `${prefix}${n.model}:${n.tag}`;
}

/** The names of every model pulled into `store`, as Ollama lists them. */
function pulledModels(store: string): string[] {
  const root = join(store, 'manifests');
  const names: string[] = [];
  for (const host of namesIn(root)) {
    for (const namespace of namesIn(join(root, host))) {
      for (const model of namesIn(join(root, host, namespace))) {
        for (const tag of namesIn(join(root, host, namespace, model))) names.push(ollamaShortName({ host, namespace, model, tag }));
      }
    }
  }
  return names.sort();
}

/** The stores of `stores` that exist. */
function existingStores(stores: string[]): string[] {
  return stores.filter((s) => existsSync(join(s, 'manifests')));
}

/** Every model pulled into the stores, by the name that loads it (the first store's where two have it): its GGUF blob, or why it cannot be used. */
export function ollamaPulledModels(stores: string[] = ollamaSearchStores()): StoredModel[] {
  const seen = new Set<string>();
  return existingStores(stores).flatMap((store) =>
    pulledModels(store)
      .filter((short) => !seen.has(short.toLowerCase()) && seen.add(short.toLowerCase()))
      .map((short) => {
        const name = `${OLLAMA_SCHEME}${short}`;
        try {
          return { name, path: ollamaModelFile(name, [store]) };
        } catch (err) {
          if (!(err instanceof OllamaModelError)) throw err;
          return { name, refused: err.reason };
        }
      }),
  );
}

/** The name Ollama lists for `name` (written without `ollama://`) when it has pulled that model; else undefined. */
export function ollamaHas(name: string, stores: string[] = ollamaSearchStores()): string | undefined {
  const spec = `${OLLAMA_SCHEME}${name}`;
  try {
    ollamaModelFile(spec, stores);
    return ollamaDisplayName(spec);
  } catch (err) {
    if (err instanceof OllamaModelError) return undefined;
    throw err;
  }
}

/** One layer of an Ollama manifest. */
interface Layer {
  mediaType?: unknown;
  digest?: unknown;
  size?: unknown;
}

/** The blob a manifest's model layer names, and its size (when the manifest gives it). */
export interface OllamaModelLayer {
  digest: string;
  size?: number;
}

/**
 * The model layer of manifest `manifest` (parsed JSON, read from `where`): refuses a manifest without layers, with a
 * LoRA adapter, with other than one model layer, or whose model layer's digest or size is malformed.
 */
export function ollamaModelLayer(spec: string, manifest: unknown, where: string): OllamaModelLayer {
  const layers = (manifest as { layers?: unknown } | null)?.layers;
  if (!Array.isArray(layers)) throw new OllamaModelError(spec, `the manifest ${where} cannot be read: it has no layers`);
  if (layers.some((l: Layer) => l?.mediaType === ADAPTER_LAYER)) {
    throw new OllamaModelError(spec, `it carries a LoRA adapter (a layer of type ${ADAPTER_LAYER}), which reasonplug does not apply; use its base model, or merge the adapter into a GGUF file`);
  }
  const models = (layers as Layer[]).filter((l) => l?.mediaType === MODEL_LAYER);
  if (models.length !== 1) {
    throw new OllamaModelError(spec, `the manifest ${where} has ${models.length} model layers (${MODEL_LAYER}); reasonplug reads a model of one GGUF file`);
  }
  const { digest, size } = models[0]!;
  if (typeof digest !== 'string' || !/^sha256:[0-9a-f]{64}$/.test(digest)) {
    throw new OllamaModelError(spec, `the manifest ${where} gives its model layer the digest ${JSON.stringify(digest)}, not sha256:<64 hex digits>`);
  }
  if (size !== undefined && !(Number.isSafeInteger(size) && (size as number) >= 0)) {
    throw new OllamaModelError(spec, `the manifest ${where} gives its model layer the size ${JSON.stringify(size)}, not a byte count`);
  }
  return { digest, ...(size !== undefined ? { size: size as number } : {}) };
}

/** Where a store keeps blob `digest` (Ollama writes "-" for the digest's ":", a name Windows takes). */
export function ollamaBlobPath(store: string, digest: string): string {
  return join(store, 'blobs', digest.replace(':', '-'));
}

/** Where a store keeps the manifest of `name`. */
export function ollamaManifestPath(store: string, name: OllamaName): string {
  return join(store, 'manifests', name.host, name.namespace, name.model, name.tag);
}

/** A model's manifest as found in a store: where, and its parsed JSON. */
interface FoundManifest {
  store: string;
  at: string;
  manifest: unknown;
}

/**
 * The manifest of the Ollama model `spec` names, from the first of `stores` that has pulled it. Throws OllamaModelError
 * naming what is missing: a store, the model (with the models there are); both are `notPulled` (registry/ollama-pull.ts
 * can then pull it).
 */
function findManifest(spec: string, stores: string[]): FoundManifest {
  const name = parseOllamaName(spec);
  const present = existingStores(stores);
  if (present.length === 0) {
    throw new OllamaModelError(spec, `no Ollama model store in ${stores.join(' or ')}; set OLLAMA_MODELS to the folder where Ollama keeps its models`, true);
  }
  for (const store of present) {
    let at: string | undefined = join(store, 'manifests');
    for (const part of [name.host, name.namespace, name.model, name.tag]) at = at && entryOf(at, part);
    if (!at || !statSync(at).isFile()) continue;
    try {
      return { store, at, manifest: JSON.parse(readFileSync(at, 'utf8')) };
    } catch (err) {
      throw new OllamaModelError(spec, `the manifest ${at} cannot be read: ${(err as Error).message}`);
    }
  }
  const pulled = [...new Set(present.flatMap(pulledModels))].sort();
  throw new OllamaModelError(
    spec,
    `Ollama has not pulled ${ollamaShortName(name)} into ${present.join(' or ')} (ollama pull ${ollamaShortName(name)}); it has ${pulled.length ? pulled.join(', ') : 'no models'}`,
    true,
  );
}

/**
 * The GGUF file of the Ollama model `spec` names (`ollama://…`), from the first of `stores` that has pulled it. Throws
 * OllamaModelError naming what is missing: a store, the model (with the models there are), its model layer or blob;
 * the first two are `notPulled` (registry/ollama-pull.ts can then pull it).
 */
export function ollamaModelFile(spec: string, stores: string[] = ollamaSearchStores()): string {
  const { store, at, manifest } = findManifest(spec, stores);
  const blob = ollamaBlobPath(store, ollamaModelLayer(spec, manifest, at).digest);
  if (!existsSync(blob)) throw new OllamaModelError(spec, `its model blob ${blob} is missing (ollama pull ${ollamaShortName(parseOllamaName(spec))} again)`);
  return blob;
}

/**
 * What an Ollama model's manifest carries beside its model, as Ollama's GetModel reads it (server/images.go): the
 * system prompt (the last `system` layer), the options (`params`, a JSON object of Ollama's option names), the
 * example messages (`messages`, a JSON list) and the license texts.
 */
export interface OllamaModelLayers {
  system?: string;
  params?: Record<string, unknown>;
  messages?: unknown[];
  license?: string[];
}

/**
 * The layers of `spec`'s manifest beside its model (found as {@link ollamaModelFile} finds it). A layer whose blob the
 * store lacks is left out (one larger than reasonplug's own pulls fetch, {@link ollamaSideLayers}); one that is not what Ollama writes (params
 * not a JSON object, messages not a JSON list) is refused with an OllamaModelError naming it.
 */
export function ollamaModelLayers(spec: string, stores: string[] = ollamaSearchStores()): OllamaModelLayers {
  const { store, at, manifest } = findManifest(spec, stores);
  const layers = (manifest as { layers?: unknown } | null)?.layers;
  const out: OllamaModelLayers = {};
  for (const layer of Array.isArray(layers) ? (layers as Layer[]) : []) {
    const { mediaType, digest } = layer ?? {};
    if (typeof digest !== 'string' || !/^sha256:[0-9a-f]{64}$/.test(digest)) continue;
    if (mediaType !== SYSTEM_LAYER && mediaType !== PARAMS_LAYER && mediaType !== MESSAGES_LAYER && mediaType !== LICENSE_LAYER) continue;
    const blob = ollamaBlobPath(store, digest);
    if (!existsSync(blob)) continue;
    const text = readFileSync(blob, 'utf8');
    if (mediaType === SYSTEM_LAYER) out.system = text;
    else if (mediaType === LICENSE_LAYER) out.license = [...(out.license ?? []), text];
    else {
      const json = jsonLayer(spec, text, `the ${mediaType} layer of ${at}`);
      if (mediaType === PARAMS_LAYER) {
        if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new OllamaModelError(spec, `the ${mediaType} layer of ${at} is not a JSON object of options`);
        out.params = json as Record<string, unknown>;
      } else {
        if (!Array.isArray(json)) throw new OllamaModelError(spec, `the ${mediaType} layer of ${at} is not a JSON list of messages`);
        out.messages = json;
      }
    }
  }
  return out;
}

/** Layers of at most this many bytes are read beside the model: a system prompt, options, messages, a license. */
const SIDE_LAYER_BYTES = 1 << 20;

/**
 * The layers of a manifest that {@link ollamaModelLayers} reads beside the model (system, params, messages, license),
 * each of a well-formed digest and a size of at most 1 MiB: what a pull fetches with the model layer so that the model
 * keeps its defaults.
 */
export function ollamaSideLayers(manifest: unknown): { mediaType: string; digest: string; size: number }[] {
  const layers = (manifest as { layers?: unknown } | null)?.layers;
  return (Array.isArray(layers) ? (layers as Layer[]) : []).flatMap((layer) => {
    const { mediaType, digest, size } = layer ?? {};
    const side = mediaType === SYSTEM_LAYER || mediaType === PARAMS_LAYER || mediaType === MESSAGES_LAYER || mediaType === LICENSE_LAYER;
    const sized = typeof size === 'number' && Number.isSafeInteger(size) && size >= 0 && size <= SIDE_LAYER_BYTES;
    return side && sized && typeof digest === 'string' && /^sha256:[0-9a-f]{64}$/.test(digest) ? [{ mediaType, digest, size }] : [];
  });
}

/** A layer's JSON, refused naming the layer when it is not JSON. */
function jsonLayer(spec: string, text: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new OllamaModelError(spec, `${what} is not JSON: ${(err as Error).message}`);
  }
}
