/** A suite's scratch directory, and one whose `cache/` is $REASONPLUG_CACHE while the suite runs. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Call inside a `describe`: a fresh directory (named from `prefix`) made before its tests and removed after them. */
export function useTempDir(prefix: string): { readonly dir: string } {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), prefix));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  return {
    get dir() {
      return dir;
    },
  };
}

/**
 * Call inside a `describe`: as {@link useTempDir}, and $REASONPLUG_CACHE points at the directory's `cache/`
 * while the suite runs (restored after).
 */
export function useTempCache(prefix: string): { readonly dir: string; readonly cache: string } {
  const saved = process.env['REASONPLUG_CACHE'];
  const scratch = useTempDir(prefix);
  before(() => {
    process.env['REASONPLUG_CACHE'] = join(scratch.dir, 'cache');
  });
  after(() => {
    if (saved === undefined) delete process.env['REASONPLUG_CACHE'];
    else process.env['REASONPLUG_CACHE'] = saved;
  });
  return {
    get dir() {
      return scratch.dir;
    },
    get cache() {
      return join(scratch.dir, 'cache');
    },
  };
}
