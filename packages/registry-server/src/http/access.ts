/**
 * Authentication and authorisation of requests. Credentials are tokens from the {@link TokenStore},
 * sent as `Authorization: Bearer <token>` or as Basic `user:<token>` (the user part is not checked: the
 * token names its holder, as on GHCR). Challenges are Basic, which every OCI client answers with the
 * credentials it was given.
 */
import type { Request, Response } from 'express';
import { denied, RegistryError } from '../errors.js';
import { allows, type Action } from '../auth/scopes.js';
import type { Principal, TokenStore } from '../auth/tokens.js';
import type { StorageDriver } from '../storage/driver.js';
import { tokenKey } from '../storage/layout.js';

/** Token authentication of a registry (`RegistryServerOptions.auth`). */
export interface AuthConfig {
  /** The tokens that authenticate callers (kept in the registry's storage). */
  tokens: TokenStore;
  /** Whether requests without credentials may pull (default true). */
  anonymousPull?: boolean;
  /** Realm named in `WWW-Authenticate` (default `reasonplug-registry`). */
  realm?: string;
}

/** Who is calling: a verified token, or undefined for an anonymous caller. */
export type Caller = Principal | undefined;

/**
 * Why credentials did not verify, for the log only (the client hears `invalid credentials` whatever the reason):
 * not a token at all (or a scheme not taken), no token under the id (never issued, or revoked: revoking deletes
 * it), or a real token's id with the wrong secret.
 */
type AuthFailureReason = 'malformed credentials' | 'unknown or revoked token' | 'wrong secret';

/** A request's credentials that did not verify (`res.locals.authFailure`). */
export interface AuthFailure {
  reason: AuthFailureReason;
  /** The id the token named (`rpr_<id>_…`): not secret, it finds the record. Null when there was none. */
  tokenId: string | null;
}

/** The id of a token as {@link TokenStore} issues them (`rpr_<id>_<secret>`), and a token of that whole form. */
const TOKEN_ID = /^rpr_([0-9a-f]{16})_/;
const WELL_FORMED = /^rpr_[0-9a-f]{16}_[0-9a-f]{64}$/;

export class Access {
  /** `storage` is the registry's, where `config.tokens` keeps its records. */
  constructor(
    private readonly config: AuthConfig | undefined,
    private readonly storage: StorageDriver,
  ) {}

  get enabled(): boolean {
    return this.config !== undefined;
  }

  /**
   * The caller behind a request's credentials; 401 for credentials that do not verify, after setting
   * `res.locals.authFailure` ({@link AuthFailure}) for the request log.
   */
  async identify(req: Request, res: Response): Promise<Caller> {
    if (!this.config) return undefined;
    const token = credentials(req.headers.authorization);
    if (token === undefined) return undefined;
    const principal = await this.config.tokens.verify(token);
    if (principal) return principal;
    res.locals.authFailure = await this.failure(token);
    throw this.unauthorized('invalid credentials');
  }

  /** Why `token`, which did not verify, was refused. */
  private async failure(token: string): Promise<AuthFailure> {
    const tokenId = TOKEN_ID.exec(token)?.[1] ?? null;
    if (tokenId === null || !WELL_FORMED.test(token)) return { reason: 'malformed credentials', tokenId };
    const known = (await this.storage.stat(tokenKey(tokenId))) !== undefined;
    return { reason: known ? 'wrong secret' : 'unknown or revoked token', tokenId };
  }

  /** Throws 401 (anonymous) or 403 (authenticated, lacking the scope) unless `caller` may act on `name`. */
  check(caller: Caller, action: Action, name: string): void {
    if (this.may(caller, action, name)) return;
    if (!caller) throw this.unauthorized('authentication required', { name, action });
    throw denied(`token has no ${action} scope on ${name}`, { name, action });
  }

  /** A token adds to what anyone may do, never takes away: with anonymous pull, every caller may pull. */
  may(caller: Caller, action: Action, name: string): boolean {
    if (!this.config) return true;
    if (action === 'pull' && (this.config.anonymousPull ?? true)) return true;
    return caller !== undefined && allows(caller.scopes, action, name);
  }

  unauthorized(message: string, detail?: unknown): RegistryError {
    const realm = this.config?.realm ?? 'reasonplug-registry';
    return new RegistryError('UNAUTHORIZED', 401, message, detail, { 'WWW-Authenticate': `Basic realm="${realm}", charset="UTF-8"` });
  }
}

/**
 * The token in an Authorization header: undefined when there is none (or Basic with an empty password),
 * '' for a scheme we do not take, which then fails verification like a wrong token.
 */
function credentials(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const [scheme, value = ''] = header.trim().split(/\s+/, 2);
  switch (scheme?.toLowerCase()) {
    case 'bearer':
      return value || undefined;
    case 'basic': {
      const decoded = Buffer.from(value, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      // Clients without credentials answer a Basic challenge with an empty user and password.
      return colon < 0 ? decoded || undefined : decoded.slice(colon + 1) || undefined;
    }
    default:
      return '';
  }
}
