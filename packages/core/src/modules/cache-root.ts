/** Where reasonplug keeps what it caches: `$REASONPLUG_CACHE`, else `~/.cache/reasonplug`. */
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';

/** The cache root directory (not created). */
export function cacheRoot(): string {
  // (absolute, so that what is listed and recorded names it wherever the process goes)
  return resolve(process.env['REASONPLUG_CACHE'] || join(homedir(), '.cache', 'reasonplug'));
}
