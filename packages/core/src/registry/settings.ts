/**
 * Client settings: what callers pass, completed from the environment (`REASONPLUG_REGISTRY`,
 * `REASONPLUG_TOKEN`, `REASONPLUG_CACHE`, `REASONPLUG_OFFLINE`). Explicit options win over the environment.
 */
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';

/** Options shared by every registry operation. */
export interface RegistryOptions {
  /** Registry for references that name none (`REASONPLUG_REGISTRY`). */
  registry?: string;
  /** Use plain HTTP with every registry, not only loopback ones. */
  plainHttp?: boolean;
  /** Bearer token, or `user:token` for Basic (`REASONPLUG_TOKEN`). */
  token?: string;
  /** Cache root (`REASONPLUG_CACHE`, default `~/.cache/reasonplug`). */
  cacheDir?: string;
  /** Read the cache only, never the network (`REASONPLUG_OFFLINE=1`). */
  offline?: boolean;
}

export interface Settings {
  registry?: string;
  plainHttp: boolean;
  token?: string;
  cacheDir: string;
  offline: boolean;
}

/** Same root as the prepared-graph cache, so one variable moves everything reasonplug caches. */
export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return env['REASONPLUG_CACHE'] || join(homedir(), '.cache', 'reasonplug');
}

const truthy = (v: string | undefined) => v !== undefined && ['1', 'true', 'yes'].includes(v.toLowerCase());

/** `opts` completed from `env`. */
export function settingsFrom(opts: RegistryOptions = {}, env: NodeJS.ProcessEnv = process.env): Settings {
  const registry = opts.registry ?? (env['REASONPLUG_REGISTRY'] || undefined);
  const token = opts.token ?? (env['REASONPLUG_TOKEN'] || undefined);
  return {
    ...(registry ? { registry } : {}),
    ...(token ? { token } : {}),
    plainHttp: opts.plainHttp ?? false,
    cacheDir: resolve(opts.cacheDir ?? defaultCacheDir(env)),
    offline: opts.offline ?? truthy(env['REASONPLUG_OFFLINE']),
  };
}
