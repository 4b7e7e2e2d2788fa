/**
 * API keys: the keys a server can be given, the key a request presents (as a bearer token or Anthropic's x-api-key),
 * whether it is one of the server's, and whose stored Responses items it may name.
 */
import type { IncomingMessage } from 'node:http';
import { createHash, timingSafeEqual } from 'node:crypto';
import { HttpError } from './errors.js';

/**
 * Whether a request could present `key`: requests' keys are read trimmed, so an empty or space-padded key would
 * never match and every request would get 401.
 */
export function usableApiKey(key: unknown): key is string {
  return typeof key === 'string' && key !== '' && key === key.trim();
}

/** The API key a request presents (Anthropic's clients send it as x-api-key). */
function presentedKey(req: IncomingMessage): string | undefined {
  const m = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '');
  const header = req.headers['x-api-key'];
  return m?.[1]?.trim() ?? (typeof header === 'string' ? header.trim() : undefined);
}

/** The keys a server accepts (`ServeOptions.apiKeys`); none: no authentication. */
export class ApiKeys {
  private readonly keys: Buffer[];

  constructor(keys: readonly string[]) {
    this.keys = keys.map((k) => Buffer.from(k));
  }

  /**
   * Whose stored Responses items a request may name: those answered to the same API key (a digest of it), or, on a
   * server without keys, everyone's.
   */
  itemScope(req: IncomingMessage): string {
    return this.keys.length === 0 ? '' : createHash('sha256').update(presentedKey(req) ?? '').digest('hex');
  }

  /** Refuses (401) a request that presents none of the keys, where the server has keys. */
  authorize(req: IncomingMessage): void {
    if (this.keys.length === 0) return;
    const key = presentedKey(req);
    const given = key ? Buffer.from(key) : undefined;
    if (!given || !this.keys.some((k) => k.length === given.length && timingSafeEqual(k, given))) {
      throw new HttpError(401, given ? 'Incorrect API key provided' : 'Missing API key: send Authorization: Bearer <key> (or x-api-key)', 'invalid_request_error', 'invalid_api_key');
    }
  }
}
