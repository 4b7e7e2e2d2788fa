/**
 * Finds the decoder graph and tokenizer behind a model path: a module directory (reasonplug.json),
 * a plain export directory (model.onnx or decoder_model_merged.onnx beside tokenizer files, or the decoder an
 * onnxruntime-genai export's genai_config.json names), or an .onnx file.
 */
import { readFile, stat } from 'node:fs/promises';
import { lstatSync, readdirSync, readlinkSync, statSync } from 'node:fs';
import { dirname, join, resolve, sep } from 'node:path';
import { MANIFEST_FILE, type ModuleManifest } from './manifest.js';
import { loadModuleDir } from './module-dir.js';
import { DtypeError, chooseVariant, listVariants, type Dtype } from './hub-variants.js';
import { ggufModels } from './gguf-pick.js';

/** Raised when a path holds no model the engine can find. */
export class ModelNotFoundError extends Error {
  override name = 'ModelNotFoundError';
}

/** What a model path resolves to. */
export interface ModelLocation {
  /** The decoder graph. */
  modelPath: string;
  /** Directory holding tokenizer.json, when there is one. */
  tokenizerDir?: string;
  /** Special ids declared by a module manifest (they win over tokenizer files). */
  generation?: { bosTokenId?: number; eosTokenIds?: number[] };
  /** Path of the module manifest, when the path is a module directory. */
  manifestPath?: string;
  /** The validated manifest, when the path is a module directory. */
  manifest?: ModuleManifest;
  /** The variant chosen in a hub export directory (`onnx/model_<dtype>.onnx`). */
  dtype?: Dtype;
}

/** How {@link locateModel} chooses within a directory. */
export interface LocateOptions {
  /**
   * transformers.js's precision name (fp32, fp16, q8, int8, uint8, q4, q4f16, bnb4) choosing the graph of a hub
   * export directory; default (or `auto`): the one its config.json names, else the most precise variant present
   * (see hub-variants.ts). Only for export directories.
   */
  dtype?: string;
}

/** Export file names of a plain directory, for messages (variants: hub-variants.ts). */
const EXPORT_FILES = ['model.onnx', 'decoder_model_merged.onnx', 'onnx/model.onnx', 'onnx/decoder_model_merged.onnx', 'onnx/model_<dtype>.onnx'];
/** onnxruntime-genai's description of an export directory; `model.decoder.filename` names its decoder graph. */
const GENAI_CONFIG = 'genai_config.json';

/**
 * Whether `path` is there, as `existsSync` says, except that a symlink whose target is missing is refused
 * (`ModelNotFoundError` naming both) rather than taken for no file: a broken link is a broken copy of a model, and
 * taken for absent it silently changes what loads (a module without its manifest's checks, a model without its
 * tokenizer).
 */
export function exists(path: string): boolean {
  try {
    statSync(path);
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ELOOP') throw new ModelNotFoundError(`${path} is a symlink that loops back on itself`);
    if (code !== 'ENOENT' || !lstatSync(path, { throwIfNoEntry: false })?.isSymbolicLink()) return false;
    throw new ModelNotFoundError(`${path} is a symlink to ${resolve(dirname(path), readlinkSync(path))}, which does not exist`);
  }
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if ((code === 'ENOENT' || code === 'ELOOP') && !exists(path)) throw new ModelNotFoundError(`model path not found: ${path}`);
    throw err;
  }
}

/** Refuses a graph of a plain export (an .onnx file in `dir` or its onnx/ folder) that is a symlink to nothing. */
function refuseDanglingGraphs(dir: string): void {
  for (const folder of [dir, join(dir, 'onnx')]) {
    let names: string[];
    try {
      names = readdirSync(folder);
    } catch {
      continue;
    }
    for (const name of names) if (name.endsWith('.onnx')) exists(join(folder, name));
  }
}

/**
 * The decoder file `genai_config.json` names in `dir` (`model.decoder.filename`), when it names one inside `dir`;
 * undefined when there is no such config or it names none (a config that does not parse names none: onnxruntime-genai
 * would refuse it, and the file names of a plain export still apply).
 */
async function genaiDecoder(dir: string): Promise<string | undefined> {
  let config: { model?: { decoder?: { filename?: unknown } } } | undefined;
  try {
    config = JSON.parse(await readFile(join(dir, GENAI_CONFIG), 'utf8')) as typeof config;
  } catch {
    return undefined;
  }
  const filename = config?.model?.decoder?.filename;
  if (typeof filename !== 'string' || filename === '') return undefined;
  const path = resolve(dir, filename);
  return path.startsWith(dir + sep) ? path : undefined;
}

/**
 * Resolves a model path. A module directory is loaded with `loadModuleDir`, so an invalid manifest or a
 * missing, truncated or corrupt file fails here (`ManifestError`, `ModuleIntegrityError`). In an export directory
 * the graph is the hub variant `dtype` names (hub-variants.ts: without one, the variant config.json names, else the
 * most precise present); a directory with none of those file names loads the decoder its genai_config.json names
 * (onnxruntime-genai exports name it freely, e.g. `decoder.onnx`).
 */
export async function locateModel(path: string, opts: LocateOptions = {}): Promise<ModelLocation> {
  const abs = resolve(path);
  const notHub = (what: string) =>
    new DtypeError(`dtype ${opts.dtype} chooses among the graphs of a hub export directory, but ${abs} is ${what}, which holds one graph`);
  if (!(await isDirectory(abs))) {
    if (opts.dtype !== undefined && opts.dtype !== 'auto') throw notHub('a file');
    const dir = dirname(abs);
    return { modelPath: abs, ...(exists(join(dir, 'tokenizer.json')) ? { tokenizerDir: dir } : {}) };
  }
  const manifestPath = join(abs, MANIFEST_FILE);
  if (exists(manifestPath)) {
    if (opts.dtype !== undefined && opts.dtype !== 'auto') throw notHub('a module directory');
    const { manifest, files } = await loadModuleDir(abs);
    return {
      modelPath: files.model,
      manifestPath,
      manifest,
      ...(exists(join(abs, 'tokenizer.json')) ? { tokenizerDir: abs } : {}),
      ...(manifest.generation ? { generation: manifest.generation } : {}),
    };
  }
  const variant = chooseVariant(abs, listVariants(abs), opts.dtype);
  const genai = variant ? undefined : await genaiDecoder(abs);
  const found = variant?.path ?? (genai !== undefined && exists(genai) ? genai : undefined);
  if (!found) {
    refuseDanglingGraphs(abs);
    // A folder of GGUF files (one downloaded by hand, a copied LM Studio folder): the file is the model to name.
    const gguf = ggufModels(abs);
    if (gguf.length > 0) {
      const shown = gguf.slice(0, 4).map((f) => join(abs, f));
      throw new ModelNotFoundError(
        `${abs} is a folder of GGUF files, not a model directory: give the GGUF file itself as the model (${shown.join(', ')}${gguf.length > shown.length ? ', …' : ''})`,
      );
    }
    throw new ModelNotFoundError(
      `no model in ${abs}: expected reasonplug.json (a module), one of ${EXPORT_FILES.join(', ')} (a plain export) ` +
        (genai !== undefined ? `or ${genai}, the decoder its ${GENAI_CONFIG} names, which is not there` : `or a ${GENAI_CONFIG} naming the decoder (an onnxruntime-genai export)`),
    );
  }
  const tokenizerDir = [abs, dirname(found)].find((d) => exists(join(d, 'tokenizer.json')));
  return { modelPath: found, ...(variant ? { dtype: variant.dtype } : {}), ...(tokenizerDir ? { tokenizerDir } : {}) };
}
