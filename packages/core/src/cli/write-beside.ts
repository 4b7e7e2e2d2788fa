/**
 * A command's output directory written through a temp sibling renamed onto it once complete: Ctrl-C (or SIGTERM)
 * mid-write removes the temp and leaves the destination as it was, so a rerun is not refused for a half-written,
 * non-empty destination. (A SIGKILL leaves the temp sibling, `<dest>.<pid>-<hex>.tmp`, and still no destination.)
 */
import { rmSync } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { resolve } from 'node:path';
import { uniqueSuffix } from '../registry/atomic.js';

/** Exit statuses of a process stopped by these signals, as a shell reports them. */
const STOPPED: Partial<Record<NodeJS.Signals, number>> = { SIGINT: 130, SIGTERM: 143 };

/** Runs `write` on a temp directory beside `dest` and renames it onto `dest` (absent, or an empty directory). */
export async function writeBeside<T>(dest: string, write: (tmp: string) => Promise<T>): Promise<T> {
  const tmp = `${resolve(dest)}.${uniqueSuffix()}.tmp`;
  const stop = (signal: NodeJS.Signals) => {
    rmSync(tmp, { recursive: true, force: true });
    process.exit(STOPPED[signal]);
  };
  const signals = Object.keys(STOPPED) as NodeJS.Signals[];
  for (const s of signals) process.once(s, stop);
  try {
    const result = await write(tmp);
    await rename(tmp, resolve(dest));
    return result;
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    // Named by the destination the user gave, not by the temp, which is gone.
    if (err instanceof Error) err.message = err.message.replaceAll(tmp, resolve(dest));
    throw err;
  } finally {
    for (const s of signals) process.off(s, stop);
  }
}
