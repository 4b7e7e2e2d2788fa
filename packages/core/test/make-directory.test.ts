/**
 * Folders that cannot be made fail with their cause: Node's recursive mkdir answers ENOENT on a read-only file
 * system, which read as "no such file or directory" for the folder being made.
 */
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { makeDirectory } from '../src/modules/make-directory.js';
import { convertGguf } from '../src/gguf/convert.js';
import { STORIES } from './support/gguf-models.js';
import { testDir } from './support/models.js';

describe('making folders', function () {
  this.timeout(60_000);

  it('makes the missing folders and returns the first it made, as mkdir -p does; a file in the way is ENOTDIR', async () => {
    const root = testDir('make-directory');
    expect(await makeDirectory(join(root, 'a', 'b'))).to.equal(join(root, 'a'));
    expect(await makeDirectory(join(root, 'a', 'b'))).to.equal(undefined);
    await writeFile(join(root, 'file'), '');
    const err = await makeDirectory(join(root, 'file', 'c', 'd')).catch((e: NodeJS.ErrnoException) => e);
    expect((err as NodeJS.ErrnoException).code).to.equal('ENOTDIR');
  });

  it('on a read-only file system: EROFS, not ENOENT, also from a conversion (where a read-only bind mount can be made)', async function () {
    const source = testDir('ro-source');
    const mounted = testDir('ro-mount');
    await mkdir(source, { recursive: true });
    try {
      execFileSync('mount', ['--bind', source, mounted], { stdio: 'ignore' });
      execFileSync('mount', ['-o', 'remount,bind,ro', mounted], { stdio: 'ignore' });
    } catch {
      this.skip();
    }
    try {
      const err = await makeDirectory(join(mounted, 'a', 'b')).catch((e: NodeJS.ErrnoException) => e);
      expect((err as NodeJS.ErrnoException).code).to.equal('EROFS');
      const failed = await convertGguf(STORIES, join(mounted, 'out', 'module')).catch((e: Error) => e);
      expect((failed as Error).message).to.match(/EROFS/);
    } finally {
      execFileSync('umount', [mounted]);
    }
  });
});
