/** What the HTTP handlers work with, built once per server. */
import type { Logger } from 'pino';
import type { Registry } from '../registry/registry.js';
import type { Access } from './access.js';

export interface Services extends Registry {
  access: Access;
  maxManifestBytes: number;
  /** The server's logger, for faults a handler answers past (a derived index left stale). */
  logger: Logger;
}
