/**
 * `mkdir -p` that fails with its real cause: Node's recursive mkdir answers ENOENT ("no such file or directory") where
 * a folder cannot be made on a read-only file system, for the very folder it was asked to make. The first missing
 * folder is then made alone, which fails with the reason (EROFS, EACCES, ENOTDIR).
 */
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';

/** Makes `path` and the folders above it that are missing; returns the first one it made, as `mkdir` does. */
export async function makeDirectory(path: string): Promise<string | undefined> {
  try {
    return await mkdir(path, { recursive: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    let missing = resolve(path);
    while (dirname(missing) !== missing && !existsSync(dirname(missing))) missing = dirname(missing);
    await mkdir(missing);
    // (made after all: another process made the folders above it meanwhile)
    return mkdir(path, { recursive: true });
  }
}
