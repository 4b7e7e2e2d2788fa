/**
 * Models LM Studio has downloaded, named as LM Studio keys them: `lmstudio://publisher/model` (its GGUF file, or the
 * one of several that llama.cpp's `-hf` would pick), `lmstudio://publisher/model:Q4_K_M`, or
 * `lmstudio://publisher/model/file.gguf` (the scheme in any case). LM Studio keeps plain GGUF files, one folder per
 * model, `<models>/<publisher>/<model>/`, under its home: the folder `~/.lmstudio-home-pointer` names, else
 * `~/.lmstudio` (`~/.cache/lm-studio` in older versions); the models folder is `<home>/models` unless the home's
 * `settings.json` moves it (`downloadsFolder`, as LM Studio's own `lms import` reads it).
 */
import { readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { byId, entryOf, namesIn, type StoredModel } from './dir-entries.js';
import { chooseGguf, ggufModels, ggufPath, storedGguf } from './gguf-pick.js';
import { exists } from './locate.js';

const SCHEME = 'lmstudio://';

/** An LM Studio model name that cannot be answered: not a name, not downloaded, no single GGUF file. */
export class LmStudioModelError extends Error {
  override name = 'LmStudioModelError';
}

/** Whether a model spec names an LM Studio model (`lmstudio://…`, the scheme in any case: RFC 3986 §3.1). */
export function isLmStudioRef(spec: string): boolean {
  return spec.slice(0, SCHEME.length).toLowerCase() === SCHEME;
}

/** The home `~/.lmstudio-home-pointer` names (its first line), where that is a folder: LM Studio moved there. */
function pointedHome(home: string): string | undefined {
  try {
    const pointed = readFileSync(join(home, '.lmstudio-home-pointer'), 'utf8').split(/\r?\n/)[0]!.trim();
    return pointed !== '' && statSync(pointed).isDirectory() ? pointed : undefined;
  } catch {
    // No pointer, or one to nothing: LM Studio's default homes.
    return undefined;
  }
}

/** The models folder `settings.json` in LM Studio's home `lmHome` moves its downloads to (`downloadsFolder`), if any. */
function downloadsFolder(lmHome: string): string | undefined {
  try {
    const folder = (JSON.parse(readFileSync(join(lmHome, 'settings.json'), 'utf8')) as { downloadsFolder?: unknown } | null)?.downloadsFolder;
    return typeof folder === 'string' && folder !== '' ? folder : undefined;
  } catch {
    // No settings, or ones LM Studio itself would not read (lms import then uses <home>/models too).
    return undefined;
  }
}

/** LM Studio's models folders, where it keeps them now first: those of the home it points to, then of its default homes, newest first. */
export function lmStudioRoots(home: string = homedir()): string[] {
  const pointed = pointedHome(home);
  const homes = [...(pointed !== undefined ? [pointed] : []), join(home, '.lmstudio'), join(home, '.cache', 'lm-studio')];
  const roots = homes.flatMap((h) => [downloadsFolder(h), join(h, 'models')].filter((r): r is string => r !== undefined));
  return [...new Set(roots)];
}

/** The models in `roots`, as `publisher/model` with their folders. */
function downloaded(roots: string[]): { id: string; dir: string }[] {
  const seen = new Set<string>();
  const out: { id: string; dir: string }[] = [];
  for (const root of roots) {
    for (const publisher of namesIn(root)) {
      for (const model of namesIn(join(root, publisher))) {
        const id = `${publisher}/${model}`;
        if (!seen.has(id)) out.push({ id, dir: join(root, publisher, model) });
        seen.add(id);
      }
    }
  }
  return out.sort(byId);
}

/** The folder of `publisher/model` in the first of `roots` that has it. */
function modelDir(roots: string[], publisher: string, model: string): string | undefined {
  return roots.map((root) => entryOf(root, publisher)).map((p) => p && entryOf(p, model)).find((d) => d !== undefined);
}

/**
 * The GGUF file the LM Studio model name `spec` stands for, in the first of `roots` that has it. Throws
 * LmStudioModelError naming what is missing, with what LM Studio has instead.
 */
export function lmStudioModelFile(spec: string, roots: string[] = lmStudioRoots()): string {
  const [publisher = '', modelPart = '', ...path] = spec.slice(SCHEME.length).split('/');
  const m = /^([^:/]+)(?::([A-Za-z0-9][A-Za-z0-9._-]*))?$/.exec(modelPart);
  if (!publisher || publisher.startsWith('.') || !m || m[1]!.startsWith('.') || path.some((p) => p === '' || p === '.' || p === '..') || (path.length > 0 && m[2] !== undefined)) {
    throw new LmStudioModelError(`${spec} is not an LM Studio model name: write lmstudio://publisher/model[:QUANT] or lmstudio://publisher/model/file.gguf`);
  }
  const [model, quant] = [m[1]!, m[2]];
  const id = `${publisher}/${model}`;
  const dir = modelDir(roots, publisher, model);
  if (dir === undefined) {
    const models = downloaded(roots).map((d) => d.id);
    throw new LmStudioModelError(`${spec}: LM Studio has not downloaded ${id} into ${roots.join(' or ')}; it has ${models.join(', ') || 'no models'}`);
  }
  if (path.length > 0) {
    const file = join(dir, ...path);
    if (!exists(file)) throw new LmStudioModelError(`${spec}: ${path.join('/')} is not among ${id}'s files in ${dir}`);
    return file;
  }
  const ggufs = ggufModels(dir);
  if (ggufs.length === 0) throw new LmStudioModelError(`${spec}: ${id} has no GGUF files (an MLX model is not read)`);
  const { file, candidates } = chooseGguf(ggufs, quant);
  if (file !== undefined) return ggufPath(dir, file);
  const has = `it has ${ggufs.join(', ')}`;
  if (quant === undefined) throw new LmStudioModelError(`${spec}: ${id} has ${ggufs.length} GGUF files; choose one with lmstudio://${id}:<QUANT> or lmstudio://${id}/<file>; ${has}`);
  throw new LmStudioModelError(`${spec}: ${candidates.length ? `${candidates.length} GGUF files of ${id} are ${quant}; name one: lmstudio://${id}/<file>` : `no GGUF file of ${id} is ${quant}`}; ${has}`);
}

/** Every model LM Studio has downloaded, by the name that loads it: `lmstudio://publisher/model`, or one name per GGUF file of a folder of several. */
export function lmStudioModels(roots: string[] = lmStudioRoots()): StoredModel[] {
  return downloaded(roots).flatMap(({ id, dir }): StoredModel[] => {
    const ggufs = ggufModels(dir);
    if (ggufs.length === 0) return [{ name: `${SCHEME}${id}`, refused: 'no GGUF files (an MLX model is not read)' }];
    if (ggufs.length === 1) return [storedGguf(`${SCHEME}${id}`, dir, ggufs[0]!)];
    return ggufs.map((f) => storedGguf(`${SCHEME}${id}/${f}`, dir, f));
  });
}

/** Whether LM Studio has downloaded model `id` (`publisher/model`) into one of `roots`. */
export function lmStudioHas(id: string, roots: string[] = lmStudioRoots()): boolean {
  const [publisher = '', model = ''] = id.split('/');
  return modelDir(roots, publisher, model) !== undefined;
}
