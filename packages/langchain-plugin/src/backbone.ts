/**
 * What this package needs to know about a loaded backbone that the engine does not report: the name to show
 * in metadata (its manifest's, for a module) and the directory of its tokenizer files (for chat templates).
 */
import { existsSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { loadModuleDir, MANIFEST_FILE, type ModelInfo } from './core.js';

/** A backbone as metadata and chat rendering see it. */
export interface BackboneInfo {
  /** The module's name, else the directory's or file's name. */
  name: string;
  /** The module's version, when it is a module. */
  version?: string;
  /** Absolute path as given to `create`. */
  path: string;
  /** Directory holding tokenizer.json (and tokenizer_config.json), when there is one. */
  tokenizerDir?: string;
}

/**
 * Describes a backbone the engine has loaded from `path`. The tokenizer directory is the one the engine found,
 * and the manifest is read without hashing: the engine verified the files.
 */
export async function describeBackbone(path: string, info: ModelInfo): Promise<BackboneInfo> {
  const abs = resolve(path);
  const isDir = (await stat(abs)).isDirectory();
  const manifest = isDir && existsSync(join(abs, MANIFEST_FILE)) ? (await loadModuleDir(abs, { verify: false })).manifest : undefined;
  const tokenizerDir = info.tokenizer?.dir;
  return {
    name: manifest?.name ?? basename(abs).replace(/\.onnx$/, ''),
    ...(manifest ? { version: manifest.version } : {}),
    path: abs,
    ...(tokenizerDir ? { tokenizerDir } : {}),
  };
}
