/**
 * Client settings: what callers pass, completed from the environment (`REASONPLUG_REGISTRY`,
 * `REASONPLUG_TOKEN`, `REASONPLUG_OFFLINE`; the cache is under the shared cache root, `REASONPLUG_CACHE`).
 * Explicit options win over the environment.
 */
import { resolve } from 'node:path';
import { cacheRoot } from '../modules/cache-root.js';
import { InvalidReferenceError } from './errors.js';
import { BY_HOST, urlScheme } from './reference.js';

/** Options shared by every registry operation. */
export interface RegistryOptions {
  /** Registry for references that name none (`REASONPLUG_REGISTRY`). */
  registry?: string;
  /** Use plain HTTP with every registry, not only loopback ones. */
  plainHttp?: boolean;
  /** Bearer token, or `user:token` for Basic (`REASONPLUG_TOKEN`). */
  token?: string;
  /** The registry the token is for (default: `registry`); no other registry gets it. */
  tokenFor?: string;
  /** Module cache directory (default: the shared cache root, `$REASONPLUG_CACHE` or `~/.cache/reasonplug`). */
  cacheDir?: string;
  /** Read the cache only, never the network (`REASONPLUG_OFFLINE=1`). */
  offline?: boolean;
}

export interface Settings {
  registry?: string;
  plainHttp: boolean;
  token?: string;
  /** The registry the token is for (see {@link RegistryOptions.tokenFor}). */
  tokenFor?: string;
  cacheDir: string;
  offline: boolean;
}

const truthy = (v: string | undefined) => v !== undefined && ['1', 'true', 'yes'].includes(v.toLowerCase());

/** `opts` completed from `env` (and the cache root). */
export function settingsFrom(opts: RegistryOptions = {}, env: NodeJS.ProcessEnv = process.env): Settings {
  const registry = opts.registry ?? (env['REASONPLUG_REGISTRY'] || undefined);
  const scheme = registry && urlScheme(registry);
  if (scheme) {
    throw new InvalidReferenceError(`registry ${registry}: name it by its host, without ${scheme} (e.g. ${registry!.slice(scheme.length).replace(/\/+$/, '')}); ${BY_HOST}`);
  }
  const token = opts.token ?? (env['REASONPLUG_TOKEN'] || undefined);
  const tokenFor = opts.tokenFor ?? registry;
  return {
    ...(registry ? { registry } : {}),
    ...(token ? { token, ...(tokenFor ? { tokenFor } : {}) } : {}),
    plainHttp: opts.plainHttp ?? false,
    cacheDir: resolve(opts.cacheDir ?? cacheRoot()),
    offline: opts.offline ?? truthy(env['REASONPLUG_OFFLINE']),
  };
}
