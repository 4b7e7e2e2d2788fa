/** What the HTTP handlers work with, built once per server. */
import type { Registry } from '../registry/registry.js';
import type { Access } from './access.js';

export interface Services extends Registry {
  access: Access;
  maxManifestBytes: number;
}
