/**
 * Writes that other processes never see half-done: a process-unique temp file beside the target,
 * fsynced, then renamed over it.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';

/** `<pid>-<random>`: unique among processes sharing a cache, and tells which process made a temp file. */
export const uniqueSuffix = (): string => `${process.pid}-${randomBytes(4).toString('hex')}`;

/** The process id a `uniqueSuffix` was made by. */
export const suffixPid = (suffix: string): number => Number(suffix.split('-')[0]);

/** Writes `data` to `path` atomically, creating its directory. */
export async function writeFileAtomic(path: string, data: Uint8Array | string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
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
