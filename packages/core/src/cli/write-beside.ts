/**
 * A command's output directory written through a temp sibling (`<dest>.<pid>-<hex>.tmp`) renamed onto it once
 * complete: a run stopped midway (Ctrl-C, a kill) leaves the destination as it was, so a rerun is not refused for a
 * half-written, non-empty destination, and the rerun removes the temp siblings whose writer is gone. No signal is
 * caught: a conversion's graph is built synchronously, and a handler would hold Ctrl-C until it ended. Of two runs
 * writing the same new destination, the first to finish takes it and the other is refused, overwriting nothing.
 */
import { rename, rm } from 'node:fs/promises';
import { resolve } from 'node:path';
import { uniqueSuffix } from '../registry/atomic.js';
import { sweepTemps } from '../registry/download.js';

/** The destination was written by another process while this one wrote its temp: nothing of it was overwritten. */
export class DestinationTakenError extends Error {
  override name = 'DestinationTakenError';
}

/** Runs `write` on a temp directory beside `dest` and renames it onto `dest` (absent, or an empty directory). */
export async function writeBeside<T>(dest: string, write: (tmp: string) => Promise<T>): Promise<T> {
  const target = resolve(dest);
  // (the temps of earlier runs that were stopped)
  await sweepTemps(target);
  const tmp = `${target}.${uniqueSuffix()}.tmp`;
  try {
    const result = await write(tmp);
    await rename(tmp, target).catch((err: NodeJS.ErrnoException) => {
      // (rename replaces only an empty directory: one that holds files, or a file, was written meanwhile)
      if (err.code !== 'ENOTEMPTY' && err.code !== 'EEXIST' && err.code !== 'ENOTDIR') throw err;
      throw new DestinationTakenError(`${target} was written by another process meanwhile: nothing in it was overwritten, and this run's output is discarded`);
    });
    return result;
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    // Named by the destination the user gave, not by the temp, which is gone.
    if (err instanceof Error) err.message = err.message.replaceAll(tmp, target);
    throw err;
  }
}
