import { randomBytes } from 'node:crypto';
import { readdir, stat, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { uniqueSuffix } from '../../src/registry/atomic.js';

/** A pid no process has here: what a writer in another PID namespace (a container sharing the cache) looks like. */
export function invisiblePid(): number {
  for (let pid = 4_000_000; ; pid++) {
    try {
      process.kill(pid, 0);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ESRCH') return pid;
    }
  }
}

/** Sets the mtime of a file, or of a folder and everything in it, to long ago (a writer that stopped). */
export async function age(path: string): Promise<void> {
  if ((await stat(path)).isDirectory()) for (const name of await readdir(path)) await age(join(path, name));
  await utimes(path, 1_700_000_000, 1_700_000_000);
}

/** A temp-file suffix as process `pid` makes it in this PID namespace, or (`elsewhere`) in another one. */
export function suffixOf(pid: number, elsewhere = false): string {
  const here = uniqueSuffix().split('-')[1]!.slice(0, 8);
  const mark = elsewhere ? [...here].map((c) => (parseInt(c, 16) ^ 1).toString(16)).join('') : here;
  return `${pid}-${mark}${randomBytes(4).toString('hex')}`;
}
