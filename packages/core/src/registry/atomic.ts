/**
 * Writes that other processes never see half-done: a process-unique temp file beside the target,
 * fsynced, then renamed over it.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, readlinkSync } from 'node:fs';
import { open, rename, rm } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname } from 'node:path';
import { makeDirectory } from '../modules/make-directory.js';

/**
 * This PID namespace on this boot, as 8 hex digits: a temp file marked with it names a pid that this process can see
 * when it runs, so one not visible is gone at once. (Containers sharing a cache have their own namespaces; where
 * /proc cannot tell, the host's name stands in.)
 */
const HERE = (() => {
  let place = hostname();
  try {
    place = `${readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()} ${readlinkSync('/proc/self/ns/pid')}`;
  } catch {
    // Not Linux, or no /proc: the host's name.
  }
  return createHash('sha256').update(place).digest('hex').slice(0, 8);
})();

/** `<pid>-<namespace><random>`: unique among processes sharing a cache, and tells which process made a temp file, where. */
export const uniqueSuffix = (): string => `${process.pid}-${HERE}${randomBytes(4).toString('hex')}`;

/** The process id a `uniqueSuffix` was made by. */
export const suffixPid = (suffix: string): number => Number(suffix.split('-')[0]);

/** Whether a `uniqueSuffix` was made in this PID namespace on this boot (a name without the mark, by an older version, was not as far as we know). */
export const madeHere = (suffix: string): boolean => {
  const hex = suffix.split('-')[1];
  return hex?.length === HERE.length + 8 && hex.startsWith(HERE);
};

/** Whether a `uniqueSuffix` was made by this process. */
export const madeByMe = (suffix: string): boolean => suffixPid(suffix) === process.pid && madeHere(suffix);

/** Writes `data` to `path` atomically, creating its directory. */
export async function writeFileAtomic(path: string, data: Uint8Array | string): Promise<void> {
  await makeDirectory(dirname(path));
  const tmp = `${path}.${uniqueSuffix()}.tmp`;
  try {
    const fh = await open(tmp, 'wx');
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}
