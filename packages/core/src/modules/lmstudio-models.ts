/**
 * Models LM Studio has downloaded, named as LM Studio keys them: `lmstudio://publisher/model` (its GGUF file, or the
 * one of several that llama.cpp's `-hf` would pick), `lmstudio://publisher/model:Q4_K_M`, or
 * `lmstudio://publisher/model/file.gguf`. LM Studio keeps plain GGUF files, one folder per model:
 * `~/.lmstudio/models/<publisher>/<model>/` (`~/.cache/lm-studio/models` in older versions); a models folder moved
 * elsewhere in LM Studio's settings is given by path instead.
 */
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { byId, entryOf, namesIn, type StoredModel } from './dir-entries.js';
import { chooseGguf, ggufModels } from './gguf-pick.js';

const SCHEME = 'lmstudio://';

/** An LM Studio model name that cannot be answered: not a name, not downloaded, no single GGUF file. */
export class LmStudioModelError extends Error {
  override name = 'LmStudioModelError';
}

/** Whether a model spec names an LM Studio model (`lmstudio://…`). */
export function isLmStudioRef(spec: string): boolean {
  return spec.startsWith(SCHEME);
}

/** LM Studio's models folders, newest layout first. */
function lmStudioRoots(): string[] {
  return [join(homedir(), '.lmstudio', 'models'), join(homedir(), '.cache', 'lm-studio', 'models')];
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
  const dir = roots.map((root) => entryOf(root, publisher)).map((p) => p && entryOf(p, model)).find((d) => d !== undefined);
  if (dir === undefined) {
    const models = downloaded(roots).map((d) => d.id);
    throw new LmStudioModelError(`${spec}: LM Studio has not downloaded ${id} into ${roots.join(' or ')}; it has ${models.join(', ') || 'no models'}`);
  }
  if (path.length > 0) {
    const file = join(dir, ...path);
    if (!existsSync(file)) throw new LmStudioModelError(`${spec}: ${path.join('/')} is not among ${id}'s files in ${dir}`);
    return file;
  }
  const ggufs = ggufModels(dir);
  if (ggufs.length === 0) throw new LmStudioModelError(`${spec}: ${id} has no GGUF files (an MLX model is not read)`);
  const { file, candidates } = chooseGguf(ggufs, quant);
  if (file !== undefined) return join(dir, file);
  const has = `it has ${ggufs.join(', ')}`;
  if (quant === undefined) throw new LmStudioModelError(`${spec}: ${id} has ${ggufs.length} GGUF files; choose one with lmstudio://${id}:<QUANT> or lmstudio://${id}/<file>; ${has}`);
  throw new LmStudioModelError(`${spec}: ${candidates.length ? `${candidates.length} GGUF files of ${id} are ${quant}; name one: lmstudio://${id}/<file>` : `no GGUF file of ${id} is ${quant}`}; ${has}`);
}

/** Every model LM Studio has downloaded, by the name that loads it: `lmstudio://publisher/model`, or one name per GGUF file of a folder of several. */
export function lmStudioModels(roots: string[] = lmStudioRoots()): StoredModel[] {
  return downloaded(roots).flatMap(({ id, dir }): StoredModel[] => {
    const ggufs = ggufModels(dir);
    if (ggufs.length === 0) return [{ name: `${SCHEME}${id}`, refused: 'no GGUF files (an MLX model is not read)' }];
    if (ggufs.length === 1) return [{ name: `${SCHEME}${id}`, path: join(dir, ggufs[0]!) }];
    return ggufs.map((f) => ({ name: `${SCHEME}${id}/${f}`, path: join(dir, f) }));
  });
}
