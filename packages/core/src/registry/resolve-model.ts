/**
 * Wherever reasonplug takes a model path (`Engine.load({ model })`, reasoners, `--model`, `--reasoner`,
 * the LangChain plugin), a registry reference works too: `resolveModelPath` leaves local paths alone and
 * pulls references into the cache. Models other tools keep (`ollama://name:tag`, `hf://org/repo:QUANT`,
 * modules/local-names.ts) stand for their files; a GGUF file is converted once into the cache (gguf/gguf-module.ts).
 */
import { existsSync } from 'node:fs';
import { ggufModuleDir, isGgufFile, type GgufModuleOptions } from '../gguf/gguf-module.js';
import { localModelPath } from '../modules/local-names.js';
import { hfCacheHas } from '../modules/hf-cache.js';
import { lmStudioHas } from '../modules/lmstudio-models.js';
import { ModelNotFoundError } from '../modules/locate.js';
import { ollamaHas } from '../modules/ollama-store.js';
import { isAbsolute } from 'node:path';
import { InvalidReferenceError } from './errors.js';
import { pullModule, type PullOptions } from './pull.js';
import { parseRef } from './reference.js';
import { settingsFrom } from './settings.js';

/** Spellings that only a path has: relative, absolute, home, Windows separators, an .onnx or .gguf file. */
function looksLikePath(spec: string): boolean {
  return isAbsolute(spec) || /^(?:\.{1,2}|~)(?:[/\\]|$)/.test(spec) || spec.includes('\\') || /\.(?:onnx|gguf)$/i.test(spec);
}

/** What a name typed without a scheme may mean: a model another tool keeps. */
export interface LocalNameHint {
  /** The name that loads it (`ollama://…`, `hf://…`, `lmstudio://…`). */
  name: string;
  /** Who has it, for messages (`Ollama has pulled stories:260k`). */
  holder: string;
}

/**
 * The tools' names that `spec`, typed without a scheme, may mean where the tool has the model: Ollama's as its users
 * type them (`llama3`, `qwen2.5:0.5b`), and `org/repo[:QUANT]` as llama.cpp's `-hf` takes it (the Hugging Face
 * cache's) or as LM Studio shows it (`publisher/model`).
 */
export function localNameHints(spec: string): LocalNameHint[] {
  const hints: LocalNameHint[] = [];
  const pulled = ollamaHas(spec);
  if (pulled) hints.push({ name: `ollama://${spec}`, holder: `Ollama has pulled ${pulled}` });
  const repo = /^([A-Za-z0-9][\w.-]*\/[A-Za-z0-9][\w.-]*)(?::[A-Za-z0-9][\w.-]*)?$/.exec(spec)?.[1];
  if (repo !== undefined && hfCacheHas(repo)) hints.push({ name: `hf://${spec}`, holder: `the Hugging Face cache has ${repo}` });
  if (repo !== undefined && lmStudioHas(repo)) hints.push({ name: `lmstudio://${spec}`, holder: `LM Studio has ${repo}` });
  return hints;
}

/**
 * Returns `spec` unchanged when it is a local path (existing, or spelled as one), and otherwise treats it
 * as a module reference: pulls it (or finds it in the cache; offline mode reads only the cache) and
 * returns the verified module directory. Text that is neither an existing path nor a reference without
 * `@` or `:` is returned as is, for the engine to report as a missing path. `convert`: how a GGUF file is converted.
 */
export async function resolveModelPath(spec: string, opts: PullOptions = {}, convert?: GgufModuleOptions['convert']): Promise<string> {
  const local = await localModelPath(spec, opts);
  if (isGgufFile(local)) {
    return ggufModuleDir(local, { cacheDir: settingsFrom(opts).cacheDir, ...(opts.onProgress ? { onProgress: opts.onProgress } : {}), ...(convert ? { convert } : {}) });
  }
  if (local !== spec) return local;
  if (existsSync(spec) || looksLikePath(spec)) return spec;
  let ref;
  try {
    ref = parseRef(spec, settingsFrom(opts).registry);
  } catch (err) {
    if (!(err instanceof InvalidReferenceError)) throw err;
    // What Ollama's, llama.cpp's and LM Studio's users type: say how it loads, rather than that no such path exists or
    // that a reference is not written in lower case.
    const hints = localNameHints(spec);
    if (hints.length > 0) {
      throw new ModelNotFoundError(`${spec} is neither a path nor a registry reference, and ${hints.map((h) => `${h.holder}: --model ${h.name}`).join('; ')}`);
    }
    if (!/[@:]/.test(spec)) return spec;
    throw err;
  }
  return (await pullModule(ref, opts)).dir;
}
