/** Reading the folders of other tools' model stores (Ollama's, the Hugging Face hub cache), which may not be there. */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { exists } from './locate.js';

/** The names in `dir`; none when it cannot be read. */
export function namesIn(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/**
 * `dir`'s entry `name`, else one whose name differs only in case (both stores' names are case-insensitive); undefined
 * when neither is there. An entry that is a symlink to nothing is refused (`ModelNotFoundError`), not taken for one.
 */
export function entryOf(dir: string, name: string): string | undefined {
  if (exists(join(dir, name))) return join(dir, name);
  const found = namesIn(dir).find((e) => e.toLowerCase() === name.toLowerCase());
  return found !== undefined && exists(join(dir, found)) ? join(dir, found) : undefined;
}

/** Orders a store's models by their ids as the code points compare (the order listings and messages give them in). */
export function byId(a: { id: string }, b: { id: string }): number {
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/** A model found in such a store, by the name that loads it: its file or folder, or why it cannot be used. */
export interface StoredModel {
  name: string;
  path?: string;
  refused?: string;
}
