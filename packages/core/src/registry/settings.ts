/**
 * Client settings: what callers pass, completed from the environment (`REASONPLUG_REGISTRY`,
 * `REASONPLUG_TOKEN`, `REASONPLUG_OFFLINE`; the cache is under the shared cache root, `REASONPLUG_CACHE`).
 * Explicit options win over the environment.
 */
import { resolve } from 'node:path';
import { cacheRoot } from '../modules/cache-root.js';
import { InvalidReferenceError } from './errors.js';
import { urlScheme } from './reference.js';

/** Options shared by every registry operation. */
export interface RegistryOptions {
  /**
   * Registry for references that name none (`REASONPLUG_REGISTRY`): `host[:port]`, or its URL (see
   * {@link registrySetting}), `http://host[:port]` asking for plain HTTP.
   */
  registry?: string;
  /** Use plain HTTP with every registry, not only loopback ones (a registry given as `http://…` asks it for itself). */
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
  /** The one registry reached over plain HTTP besides loopback ones, where the setting named it by an `http://` URL. */
  plainHttpFor?: string;
  token?: string;
  /** The registry the token is for (see {@link RegistryOptions.tokenFor}). */
  tokenFor?: string;
  cacheDir: string;
  offline: boolean;
}

const truthy = (v: string | undefined) => v !== undefined && ['1', 'true', 'yes'].includes(v.toLowerCase());

/**
 * A registry setting (`--registry`, `REASONPLUG_REGISTRY`, `registry`): `host[:port]`, or the URL of the registry's
 * root, `http://host[:port]` (plain HTTP, as `--plain-http` asks) or `https://host[:port]` (as the host alone). The
 * setting names a registry, not a place in one: another scheme, a path, credentials or a query are refused.
 */
export function registrySetting(text: string): { registry: string; plainHttp: boolean } {
  const scheme = urlScheme(text);
  if (!scheme) return { registry: text, plainHttp: false };
  const url = /^(https?):\/\/([^/?#@]+)\/?$/i.exec(text);
  if (!url) {
    const host = text.slice(scheme.length).split(/[/?#]/)[0]!.replace(/^.*@/, '');
    // (credentials in the text are not repeated: error messages reach logs)
    const shown = text.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/?#]*@/i, '$1…@');
    throw new InvalidReferenceError(`registry ${shown}: give its host (e.g. ${host}), or its root's URL (http://${host} for plain HTTP)`);
  }
  return { registry: url[2]!, plainHttp: url[1]!.toLowerCase() === 'http' };
}

/** `opts` completed from `env` (and the cache root). */
export function settingsFrom(opts: RegistryOptions = {}, env: NodeJS.ProcessEnv = process.env): Settings {
  const given = opts.registry ?? (env['REASONPLUG_REGISTRY'] || undefined);
  const setting = given !== undefined ? registrySetting(given) : undefined;
  const registry = setting?.registry;
  const token = opts.token ?? (env['REASONPLUG_TOKEN'] || undefined);
  const tokenFor = opts.tokenFor ?? registry;
  return {
    ...(registry ? { registry } : {}),
    ...(token ? { token, ...(tokenFor ? { tokenFor } : {}) } : {}),
    plainHttp: opts.plainHttp ?? false,
    // (`http://` is the named registry's own: Ollama's and a reference's other registries stay on HTTPS)
    ...(setting?.plainHttp ? { plainHttpFor: setting.registry } : {}),
    cacheDir: resolve(opts.cacheDir ?? cacheRoot()),
    offline: opts.offline ?? truthy(env['REASONPLUG_OFFLINE']),
  };
}
