/**
 * A command's output directory written through a temp sibling (`<dest>.<pid>-<hex>.tmp`) renamed onto it once
 * complete: a run stopped midway (Ctrl-C, a kill) leaves the destination as it was, so a rerun is not refused for a
 * half-written, non-empty destination, and the rerun removes the temp siblings whose writer is gone. No signal is
 * caught: a conversion's graph is built synchronously, and a handler would hold Ctrl-C until it ended.
 */
import { readdir, rename, rm } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { madeByMe, uniqueSuffix } from '../registry/atomic.js';
import { ownerGone } from '../registry/download.js';

/** Runs `write` on a temp directory beside `dest` and renames it onto `dest` (absent, or an empty directory). */
export async function writeBeside<T>(dest: string, write: (tmp: string) => Promise<T>): Promise<T> {
  const target = resolve(dest);
  await sweepAbandoned(target);
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

/** Removes the temp siblings of `target` that earlier runs left when they were stopped. */
async function sweepAbandoned(target: string): Promise<void> {
  const prefix = `${basename(target)}.`;
  for (const name of await readdir(dirname(target)).catch(() => [] as string[])) {
    const m = /\.(\d+-[0-9a-f]+)\.tmp$/.exec(name);
    if (!m || !name.startsWith(prefix) || name.length !== prefix.length + m[0].length - 1 || madeByMe(m[1]!)) continue;
    if (await ownerGone(join(dirname(target), name), m[1]!)) await rm(join(dirname(target), name), { recursive: true, force: true });
  }
}
