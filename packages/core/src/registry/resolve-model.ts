/**
 * Wherever reasonplug takes a model path (`Engine.load({ model })`, reasoners, `--model`, `--reasoner`,
 * the LangChain plugin), a registry reference works too: `resolveModelPath` leaves local paths alone and
 * pulls references into the cache. Models other tools keep (`ollama://name:tag`, `hf://org/repo:QUANT`,
 * modules/local-names.ts) stand for their files; a GGUF file is converted once into the cache (gguf/gguf-module.ts).
 */
import { existsSync } from 'node:fs';
import { ggufModuleDir, isGgufFile, type GgufModuleOptions } from '../gguf/gguf-module.js';
import { localModelPath } from '../modules/local-names.js';
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
    // What Ollama's users type (`llama3`, `qwen2.5:0.5b`): say how it loads, rather than that no such path exists.
    const pulled = ollamaHas(spec);
    if (pulled) throw new ModelNotFoundError(`${spec} is neither a path nor a registry reference, and Ollama has pulled ${pulled}: --model ollama://${spec}`);
    if (!/[@:]/.test(spec)) return spec;
    throw err;
  }
  return (await pullModule(ref, opts)).dir;
}
