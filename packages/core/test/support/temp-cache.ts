/** A suite's scratch directory whose `cache/` is $REASONPLUG_CACHE while the suite runs. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * Call inside a `describe`: before its tests, makes a fresh directory (named from `prefix`) and points
 * $REASONPLUG_CACHE at its `cache/` subdirectory; after them, restores the variable and removes the directory.
 */
export function useTempCache(prefix: string): { readonly dir: string; readonly cache: string } {
  const saved = process.env['REASONPLUG_CACHE'];
  let dir = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), prefix));
    process.env['REASONPLUG_CACHE'] = join(dir, 'cache');
  });
  after(async () => {
    if (saved === undefined) delete process.env['REASONPLUG_CACHE'];
    else process.env['REASONPLUG_CACHE'] = saved;
    await rm(dir, { recursive: true, force: true });
  });
  return {
    get dir() {
      return dir;
    },
    get cache() {
      return join(dir, 'cache');
    },
  };
}
