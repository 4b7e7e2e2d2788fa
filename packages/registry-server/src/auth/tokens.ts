/**
 * Access tokens, kept in the registry's own storage (so replicas on one bucket share them) and only as
 * hashes. A token reads `rpr_<id>_<secret>`: the id finds the record, the secret is compared by hash.
 * Secrets are 256 random bits, so a plain SHA-256 is enough: there is nothing to brute-force that a slow
 * password hash would protect.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { StorageDriver } from '../storage/driver.js';
import { tokenKey, tokensDir } from '../storage/layout.js';
import { formatScope, parseScope, type Scope } from './scopes.js';

/** A stored access token: who it is for, what it allows, and its secret's hash (never the secret). */
export interface TokenRecord {
  /** 16 hex digits: the token's name in storage and in `rpr_<id>_<secret>`; what `revoke` takes. */
  id: string;
  /** Who the token is for; shown in request logs. */
  user: string;
  /** Its scopes as written (`pull:<glob>`, `push:<glob>`). */
  scopes: string[];
  /** Hex SHA-256 of the secret. */
  secretHash: string;
  /** When it was created (ISO 8601, UTC). */
  createdAt: string;
}

/** A verified token: its record and parsed scopes. */
export interface Principal {
  /** {@link TokenRecord.user}. */
  user: string;
  /** {@link TokenRecord.id}. */
  tokenId: string;
  /** What the token allows. */
  scopes: Scope[];
}

const TOKEN = /^rpr_([0-9a-f]{16})_([0-9a-f]{64})$/;
const hashSecret = (secret: string) => createHash('sha256').update(secret).digest('hex');

/**
 * Creates, verifies, lists and revokes access tokens, kept as hashed records in the registry's storage. Give it to
 * `createRegistryServer` as `auth.tokens`.
 */
export class TokenStore {
  /** Tokens kept in `storage`: the registry's own (the same driver given to `createRegistryServer`). */
  constructor(private readonly storage: StorageDriver) {}

  /**
   * Creates a token; the returned `token` string is the only time the secret exists in clear. `user` defaults to
   * `reasonplug`. Throws `InvalidScopeError` for a malformed scope, and a RangeError when `scopes` is empty.
   */
  async create(opts: { scopes: string[]; user?: string }): Promise<{ token: string; record: TokenRecord }> {
    const scopes = opts.scopes.map((s) => formatScope(parseScope(s)));
    if (scopes.length === 0) throw new RangeError('a token needs at least one scope');
    const id = randomBytes(8).toString('hex');
    const secret = randomBytes(32).toString('hex');
    const record: TokenRecord = {
      id,
      user: opts.user ?? 'reasonplug',
      scopes,
      secretHash: hashSecret(secret),
      createdAt: new Date().toISOString(),
    };
    await this.storage.put(tokenKey(id), Buffer.from(JSON.stringify(record)));
    return { token: `rpr_${id}_${secret}`, record };
  }

  /** The principal a token string stands for, or undefined for an unknown, revoked or malformed token. */
  async verify(token: string): Promise<Principal | undefined> {
    const m = TOKEN.exec(token);
    if (!m) return undefined;
    const raw = await this.storage.get(tokenKey(m[1]!));
    if (!raw) return undefined;
    const record = JSON.parse(raw.toString()) as TokenRecord;
    const expected = Buffer.from(record.secretHash, 'hex');
    const actual = Buffer.from(hashSecret(m[2]!), 'hex');
    if (expected.length !== actual.length || !timingSafeEqual(expected, actual)) return undefined;
    return { user: record.user, tokenId: record.id, scopes: record.scopes.map(parseScope) };
  }

  /** Every token's record (no secrets), oldest first. */
  async list(): Promise<TokenRecord[]> {
    const records: TokenRecord[] = [];
    for await (const o of this.storage.list(tokensDir)) {
      const raw = await this.storage.get(o.key);
      if (raw) records.push(JSON.parse(raw.toString()) as TokenRecord);
    }
    return records.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  /** False when no such token exists. */
  async revoke(id: string): Promise<boolean> {
    if (!/^[0-9a-f]{16}$/.test(id) || (await this.storage.stat(tokenKey(id))) === undefined) return false;
    await this.storage.delete(tokenKey(id));
    return true;
  }
}
