/**
 * Answering `WWW-Authenticate` challenges. Three shapes occur in the wild:
 * - `Basic realm=...` (reasonplug-registry, htpasswd distribution): send the credential as Basic;
 * - `Bearer realm="<token url>",service=...` (Docker token flow: GHCR, Harbor, Docker Hub): trade the
 *   credential (or nothing, for anonymous pulls) for a short-lived token per scope;
 * - `Bearer` without a realm: send the token itself.
 * A credential is a token, or `user:token`; a token alone goes out as Basic with the user `reasonplug`.
 */
import { RegistryAuthError } from './errors.js';

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** Parses a `WWW-Authenticate` header into its challenges (RFC 7235: `scheme k=v, k="v", scheme2 ...`). */
export function parseChallenges(header: string): Challenge[] {
  const out: Challenge[] = [];
  const token = /\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*/y;
  let i = 0;
  while (i < header.length) {
    token.lastIndex = i;
    const m = token.exec(header);
    if (!m) {
      i++;
      continue;
    }
    i = token.lastIndex;
    if (header[i] === '=' && out.length > 0) {
      // A parameter of the current challenge: quoted string or token.
      i++;
      let value = '';
      if (header[i] === '"') {
        for (i++; i < header.length && header[i] !== '"'; i++) value += header[i] === '\\' ? header[++i] ?? '' : header[i];
        i++;
      } else {
        token.lastIndex = i;
        const v = token.exec(header);
        value = v?.[1] ?? '';
        i = v ? token.lastIndex : i;
      }
      out.at(-1)!.params[m[1]!.toLowerCase()] = value;
    } else {
      out.push({ scheme: m[1]!.toLowerCase(), params: {} });
    }
    while (header[i] === ',' || header[i] === ' ') i++;
  }
  return out;
}

/** Fetches a token URL (the transport supplies its own fetch, with its error handling). */
export type TokenFetch = (url: URL, headers: Record<string, string>) => Promise<Response>;

/** Remembers how to authenticate with one registry and answers its challenges. */
export class Authenticator {
  /** Header for every request once a Basic or realm-less Bearer challenge was answered. */
  private shared?: string;
  /** Docker token-flow tokens, by scope. */
  private readonly tokens = new Map<string, string>();

  constructor(
    private readonly registry: string,
    private readonly credential: string | undefined,
    private readonly fetchToken: TokenFetch,
  ) {}

  /** The Authorization header to send for `scope` before any challenge, if one is known. */
  header(scope: string): string | undefined {
    return this.tokens.get(scope) ?? this.shared;
  }

  /**
   * An Authorization header that answers `wwwAuthenticate` for `scope`.
   * Throws `RegistryAuthError` when it needs a credential we do not have or the token service refuses.
   */
  async answer(wwwAuthenticate: string | null, scope: string, serverMessage?: string): Promise<string> {
    const challenges = parseChallenges(wwwAuthenticate ?? '');
    const realm = challenges.find((c) => c.scheme === 'bearer' && c.params['realm']);
    if (realm) return this.tokenFlow(realm.params, scope);
    const scheme = challenges.find((c) => c.scheme === 'basic' || c.scheme === 'bearer')?.scheme ?? 'basic';
    if (this.credential === undefined) throw this.error('missing', scope, serverMessage);
    const colon = this.credential.indexOf(':');
    this.shared =
      scheme === 'bearer'
        ? `Bearer ${colon >= 0 ? this.credential.slice(colon + 1) : this.credential}`
        : `Basic ${Buffer.from(colon >= 0 ? this.credential : `reasonplug:${this.credential}`).toString('base64')}`;
    return this.shared;
  }

  /** The error for a request that was refused after (or for want of) our credentials. */
  error(reason: RegistryAuthError['reason'], scope: string, serverMessage?: string): RegistryAuthError {
    const said = serverMessage ? ` (${serverMessage})` : '';
    // A token goes only to the registry it is configured with, so both are named.
    const give = `pass --token TOKEN (or user:token) with --registry ${this.registry}, or set REASONPLUG_TOKEN with REASONPLUG_REGISTRY=${this.registry}`;
    const text = {
      missing: `registry ${this.registry} requires authentication for ${scope}${said}; ${give}`,
      rejected: `registry ${this.registry} rejected the credentials for ${scope}${said}; check --token or REASONPLUG_TOKEN`,
      denied: `registry ${this.registry} denied ${scope}${said}${this.credential === undefined ? `; ${give} if it needs one` : '; where the token lacks this scope, use one that grants it'}`,
    }[reason];
    return new RegistryAuthError(text, this.registry, scope, reason, serverMessage);
  }

  private async tokenFlow(params: Record<string, string>, scope: string): Promise<string> {
    const url = new URL(params['realm']!);
    if (params['service']) url.searchParams.set('service', params['service']);
    url.searchParams.set('scope', scope);
    const headers: Record<string, string> = {};
    if (this.credential !== undefined) {
      const basic = this.credential.includes(':') ? this.credential : `reasonplug:${this.credential}`;
      headers['authorization'] = `Basic ${Buffer.from(basic).toString('base64')}`;
    }
    const res = await this.fetchToken(url, headers);
    if (!res.ok) {
      await res.body?.cancel();
      const why = `token service ${url.origin} answered ${res.status}`;
      throw this.error(this.credential === undefined ? 'missing' : 'rejected', scope, why);
    }
    const body = (await res.json().catch(() => ({}))) as { token?: unknown; access_token?: unknown };
    const token = typeof body.token === 'string' ? body.token : body.access_token;
    if (typeof token !== 'string' || token === '') {
      throw this.error('rejected', scope, `token service ${url.origin} returned no token`);
    }
    const header = `Bearer ${token}`;
    this.tokens.set(scope, header);
    return header;
  }
}
