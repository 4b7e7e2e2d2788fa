/** Where reasonplug keeps what it caches: `$REASONPLUG_CACHE`, else `~/.cache/reasonplug`. */
import { homedir } from 'node:os';
import { join } from 'node:path';

/** The cache root directory (not created). */
export function cacheRoot(): string {
  return process.env['REASONPLUG_CACHE'] || join(homedir(), '.cache', 'reasonplug');
}
