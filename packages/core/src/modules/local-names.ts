/**
 * Names of models that other tools keep on this machine, taken wherever a model is: Ollama's (`ollama://name:tag`,
 * ollama-store.ts; pulled from Ollama's registry when no store has it, registry/ollama-pull.ts), the Hugging Face hub
 * cache's (`hf://org/repo[:QUANT]`, hf-cache.ts; a GGUF file it lacks pulled through the hub's Ollama registry) and LM
 * Studio's (`lmstudio://publisher/model[:QUANT]`, lmstudio-models.ts).
 */
import { isGgufFile } from '../gguf/gguf-module.js';
import { summarizeGguf } from '../gguf/inspect.js';
import { HfCacheError, hfCachedModels, hfCachePath, isHfRef } from './hf-cache.js';
import { locateModel, ModelNotFoundError } from './locate.js';
import { isLmStudioRef, lmStudioModelFile, lmStudioModels } from './lmstudio-models.js';
import { isOllamaRef, OllamaModelError, ollamaPulledModels } from './ollama-store.js';
import { ollamaModelPath, type OllamaPullOptions } from '../registry/ollama-pull.js';
import { fileURLToPath } from 'node:url';

/** Whether `spec` is such a name. */
export function isLocalModelName(spec: string): boolean {
  return isOllamaRef(spec) || isHfRef(spec) || isLmStudioRef(spec);
}

/**
 * The file or directory such a name stands for (throwing what is missing); any other spec unchanged. An Ollama name that
 * no store on this machine has is pulled from its registry (registry/ollama-pull.ts; `opts` as for registry pulls).
 */
export async function localModelPath(spec: string, opts: OllamaPullOptions = {}): Promise<string> {
  if (/^file:/i.test(spec)) return filePath(spec);
  if (isOllamaRef(spec)) return ollamaModelPath(spec, opts);
  if (isHfRef(spec)) return hfModelPath(spec, opts);
  if (isLmStudioRef(spec)) return lmStudioModelFile(spec);
  return spec;
}

/** The path of a `file:` URL (percent-escapes decoded), as Node's fs functions read one. */
function filePath(spec: string): string {
  try {
    return fileURLToPath(spec);
  } catch (err) {
    throw new ModelNotFoundError(`${spec} is not a file URL of this machine: ${(err as Error).message}`);
  }
}

/**
 * The hub `hf://` names' GGUF files are pulled from when the cache lacks them: `$HF_ENDPOINT` (as huggingface_hub
 * reads it, e.g. a mirror), else hf.co, whose Ollama registry serves every GGUF repository's files by quantization.
 */
function hubEndpoint(env: NodeJS.ProcessEnv = process.env): URL {
  return new URL(env['HF_ENDPOINT'] || 'https://hf.co');
}

/**
 * An `hf://` name's file in the Hugging Face cache; a GGUF file the cache lacks (main revision, by quantization) is
 * looked up and pulled as the Ollama name the hub serves it under (`ollama://hf.co/org/repo:QUANT`).
 */
async function hfModelPath(spec: string, opts: OllamaPullOptions): Promise<string> {
  try {
    return hfCachePath(spec);
  } catch (err) {
    if (!(err instanceof HfCacheError) || !err.fromHub) throw err;
    const hub = hubEndpoint();
    const name = `ollama://${hub.host}/${err.fromHub.repository}:${err.fromHub.tag}`;
    try {
      return await ollamaModelPath(name, { ...opts, ...(hub.protocol === 'http:' ? { plainHttp: true } : {}) });
    } catch (pullErr) {
      if (!(pullErr instanceof OllamaModelError)) throw pullErr;
      throw new HfCacheError(`${err.message}; as ${name}: ${pullErr.pullFailure ?? pullErr.reason}`);
    }
  }
}

/** A model another tool keeps on this machine, by the name that loads it. */
export interface LocalModel {
  /** What `--model` takes: `ollama://…`, `hf://…` or `lmstudio://…`. */
  name: string;
  /** Its GGUF file, or its export directory. */
  path?: string;
  /** What `path` is. */
  kind?: 'gguf' | 'directory';
  /** A GGUF file's architecture and tensor types, from its header. */
  architecture?: string;
  tensorTypes?: string[];
  bytes?: number;
  /** Why reasonplug cannot load it; absent when it can (as far as its header or directory says). */
  refused?: string;
}

/** Where to look: Ollama's stores, the Hugging Face cache and LM Studio's folders (default: where those tools keep them). */
export interface LocalModelSources {
  ollamaStores?: string[];
  hfCache?: string;
  lmStudioRoots?: string[];
}

/**
 * The models Ollama has pulled, the Hugging Face cache holds and LM Studio has downloaded, each looked at as loading
 * would: a GGUF file by its header (architecture, tensor types), a directory by whether a decoder is found in it.
 */
export async function listLocalModels(sources: LocalModelSources = {}): Promise<LocalModel[]> {
  const found = [...ollamaPulledModels(sources.ollamaStores), ...hfCachedModels(sources.hfCache), ...lmStudioModels(sources.lmStudioRoots)];
  return Promise.all(
    found.map(async ({ name, path, refused }): Promise<LocalModel> => {
      if (path === undefined) return { name, ...(refused ? { refused } : {}) };
      if (isGgufFile(path)) {
        try {
          return { name, path, kind: 'gguf', ...(await summarizeGguf(path)) };
        } catch (err) {
          return { name, path, kind: 'gguf', refused: (err as Error).message };
        }
      }
      try {
        await locateModel(path);
        return { name, path, kind: 'directory' };
      } catch (err) {
        return { name, path, kind: 'directory', refused: (err as Error).message };
      }
    }),
  );
}
