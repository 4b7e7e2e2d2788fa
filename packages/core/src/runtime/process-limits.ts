/** This process's resource limits, for errors that name the limit a failure ran into. */
import { readFileSync } from 'node:fs';

/** A limit as Linux's /proc/self/limits names it: open file descriptors, or address space in bytes (`ulimit -v`). */
export type ProcessLimit = 'Max open files' | 'Max address space';

/**
 * The soft value of `limit` in force, from /proc/self/limits; undefined where it is unlimited or cannot be read
 * (not Linux). Node raises the soft open-files limit to the hard one as it starts, so that one reads as the hard.
 */
export function processLimit(limit: ProcessLimit): number | undefined {
  let text: string;
  try {
    text = readFileSync('/proc/self/limits', 'utf8');
  } catch {
    return undefined;
  }
  const soft = new RegExp(`^${limit}\\s+(\\S+)`, 'm').exec(text)?.[1];
  return soft !== undefined && /^\d+$/.test(soft) ? Number(soft) : undefined;
}
