/**
 * A command's output directory written through a temp sibling (`<dest>.<pid>-<hex>.tmp`) renamed onto it once
 * complete: a run stopped midway (Ctrl-C, a kill) leaves the destination as it was, so a rerun is not refused for a
 * half-written, non-empty destination, and the rerun removes the temp siblings whose writer is gone. No signal is
 * caught: a conversion's graph is built synchronously, and a handler would hold Ctrl-C until it ended.
 */
import { rename, rm } from 'node:fs/promises';
import { resolve } from 'node:path';
import { uniqueSuffix } from '../registry/atomic.js';
import { sweepTemps } from '../registry/download.js';

/** Runs `write` on a temp directory beside `dest` and renames it onto `dest` (absent, or an empty directory). */
export async function writeBeside<T>(dest: string, write: (tmp: string) => Promise<T>): Promise<T> {
  const target = resolve(dest);
  // (the temps of earlier runs that were stopped)
  await sweepTemps(target);
  const tmp = `${target}.${uniqueSuffix()}.tmp`;
  try {
    const result = await write(tmp);
    await rename(tmp, target);
    return result;
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    // Named by the destination the user gave, not by the temp, which is gone.
    if (err instanceof Error) err.message = err.message.replaceAll(tmp, target);
    throw err;
  }
}
