/** Damage done to files the way a faulty disk, tool or person would, for the cache tests. */
import { expect } from 'chai';
import { open, stat, utimes } from 'node:fs/promises';

/**
 * Flips one byte in place, then puts mtime back: size, inode and mtime are as before, which fools a stat
 * cache keyed on them. The file's mtime must be whole seconds (utimes takes seconds as a double, which
 * cannot carry every nanosecond), so set it with `utimes` first.
 */
export async function flipKeepingStat(path: string, at: number): Promise<void> {
  const before = await stat(path, { bigint: true });
  const fh = await open(path, 'r+');
  try {
    const one = Buffer.alloc(1);
    await fh.read(one, 0, 1, at);
    one[0]! ^= 0xff;
    await fh.write(one, 0, 1, at);
  } finally {
    await fh.close();
  }
  await utimes(path, Number(before.atimeMs) / 1000, Number(before.mtimeNs / 1_000_000_000n));
  const after = await stat(path, { bigint: true });
  expect([after.size, after.mtimeNs, after.ino], 'size, mtime and inode kept').to.deep.equal([before.size, before.mtimeNs, before.ino]);
}
