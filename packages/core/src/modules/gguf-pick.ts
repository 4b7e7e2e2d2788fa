/**
 * Choosing the GGUF file a model name means in a folder of them (a Hugging Face snapshot, an LM Studio model
 * folder), as llama.cpp's `-hf` chooses: by quantization type, else the only file, else the Q4_K_M one. Vision
 * projectors are no models to choose: they are told by the architecture their header gives (`clip`), whatever their name.
 */
import { closeSync, existsSync, fstatSync, lstatSync, openSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { GgufError, metadataAtStart } from '../gguf/reader.js';
import { namesIn, type StoredModel } from './dir-entries.js';
import { exists, ModelNotFoundError } from './locate.js';

/** The quantization llama.cpp's `-hf` picks when a repository has several and the name says none. */
const DEFAULT_QUANT = 'Q4_K_M';
/** Folders deep that GGUF files are looked for (repositories keep a split file's shards in a folder of its type). */
const MAX_DEPTH = 3;
/**
 * The bytes of a file's start that `general.architecture` is looked for in: gguf-py and llama.cpp write it first,
 * Ollama sorts its keys (a projector's few `clip.*` ones come before it; the long `tokenizer.*` arrays after).
 */
const HEADER_BYTES = 64 * 1024;
/** `general.architecture` of llama.cpp's vision projectors (`mmproj` files), whatever their file is called. */
const PROJECTOR_ARCHITECTURE = 'clip';

/**
 * GGUF model files below `dir` (relative paths), vision projectors and later shards of split files left out. A link
 * to a blob that is not there is kept, so that choosing it is refused ({@link ggufPath}) rather than another file
 * loading in its place.
 */
export function ggufModels(dir: string, prefix = '', depth = 0): string[] {
  const found: string[] = [];
  for (const name of namesIn(join(dir, prefix))) {
    const rel = prefix ? `${prefix}/${name}` : name;
    const full = join(dir, rel);
    const present = existsSync(full);
    if (present && statSync(full).isDirectory()) {
      if (depth < MAX_DEPTH) found.push(...ggufModels(dir, rel, depth + 1));
      continue;
    }
    if (!present && !lstatSync(full, { throwIfNoEntry: false })?.isSymbolicLink()) continue;
    const shard = /-(\d{5})-of-(\d{5})\.gguf$/i.exec(name);
    if (/\.gguf$/i.test(name) && (!shard || Number(shard[1]) === 1) && !isProjector(full, name)) found.push(rel);
  }
  return found.sort();
}

/**
 * The file `file` of `dir` (from {@link ggufModels}); a link whose blob is missing is refused (`ModelNotFoundError`
 * naming both), as a broken download of the file asked for.
 */
export function ggufPath(dir: string, file: string): string {
  const path = join(dir, file);
  exists(path);
  return path;
}

/** File `file` of `dir` listed by `name`: its path, or why it cannot be used (a link to a blob not there). */
export function storedGguf(name: string, dir: string, file: string): StoredModel {
  try {
    return { name, path: ggufPath(dir, file) };
  } catch (err) {
    if (!(err instanceof ModelNotFoundError)) throw err;
    return { name, refused: err.message };
  }
}

/** Whether a GGUF file is a vision projector: by its header's architecture, else (no header read) by an `mmproj` name. */
function isProjector(path: string, name: string): boolean {
  const architecture = ggufArchitecture(path);
  return architecture !== undefined ? architecture === PROJECTOR_ARCHITECTURE : /^mmproj/i.test(name);
}

/**
 * `general.architecture` of the GGUF file at `path`, read from its first bytes only (a folder's every file is looked
 * at, and a whole header can be megabytes of vocabulary); undefined when it is not found there: no GGUF file of a
 * version read here, a link to nothing, or the key past those bytes.
 */
function ggufArchitecture(path: string): string | undefined {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return undefined;
  }
  try {
    const window = Buffer.alloc(HEADER_BYTES);
    const bytes = window.subarray(0, readSync(fd, window, 0, HEADER_BYTES, 0));
    const value = metadataAtStart(bytes, 'general.architecture', path, fstatSync(fd).size);
    return typeof value === 'string' ? value : undefined;
  } catch (err) {
    if (err instanceof GgufError) return undefined;
    throw err;
  } finally {
    closeSync(fd);
  }
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
