/**
 * Choosing the GGUF file a model name means in a folder of them (a Hugging Face snapshot, an LM Studio model
 * folder), as llama.cpp's `-hf` chooses: by quantization type, else the only file, else the Q4_K_M one.
 */
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { namesIn } from './dir-entries.js';

/** The quantization llama.cpp's `-hf` picks when a repository has several and the name says none. */
const DEFAULT_QUANT = 'Q4_K_M';
/** Folders deep that GGUF files are looked for (repositories keep a split file's shards in a folder of its type). */
const MAX_DEPTH = 3;

/** GGUF model files below `dir` (relative paths), vision projectors (`mmproj…`) and later shards of split files left out. */
export function ggufModels(dir: string, prefix = '', depth = 0): string[] {
  const found: string[] = [];
  for (const name of namesIn(join(dir, prefix))) {
    const rel = prefix ? `${prefix}/${name}` : name;
    const full = join(dir, rel);
    if (!existsSync(full)) continue; // a link whose blob was never downloaded
    if (statSync(full).isDirectory()) {
      if (depth < MAX_DEPTH) found.push(...ggufModels(dir, rel, depth + 1));
      continue;
    }
    const shard = /-(\d{5})-of-(\d{5})\.gguf$/i.exec(name);
    if (/\.gguf$/i.test(name) && !/^mmproj/i.test(name) && (!shard || Number(shard[1]) === 1)) found.push(rel);
  }
  return found.sort();
}

/** Whether a file's path names quantization `quant` as a word of its own (`Q4_K` is not `Q4_K_M`). */
function namesQuant(path: string, quant: string): boolean {
  const q = quant.toLowerCase().replace(/[.]/g, '\\.');
  return new RegExp(`(^|[-._/])${q}(?=[-./]|$)`).test(path.toLowerCase());
}

/**
 * Which of `files` a name means: the one of type `quant` when it gives one, else the only file, else the Q4_K_M
 * one. `candidates`: the files it had to choose among when it could not (those of type `quant`, or all).
 */
export function chooseGguf(files: string[], quant?: string): { file?: string; candidates: string[] } {
  const candidates = quant !== undefined ? files.filter((f) => namesQuant(f, quant)) : files;
  if (candidates.length === 1) return { file: candidates[0]!, candidates };
  if (quant === undefined && candidates.length > 1) {
    const preferred = candidates.filter((f) => namesQuant(f, DEFAULT_QUANT));
    if (preferred.length === 1) return { file: preferred[0]!, candidates };
  }
  return { candidates };
}
