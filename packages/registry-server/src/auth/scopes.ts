/**
 * Token scopes: `pull:<glob>` or `push:<glob>` over repository names. In a glob, `*` matches within
 * one path component and `**` across components: `push:math/*` covers `math/adder` but not
 * `math/sub/adder`; `pull:**` covers everything. `push` implies `pull` (a push reads what it checks).
 */

/** What a scope allows: reading (`pull`) or writing and reading (`push`). */
export type Action = 'pull' | 'push';

/** A parsed token scope (see {@link parseScope}). */
export interface Scope {
  /** `pull`, or `push` (which implies `pull`). */
  action: Action;
  /** The repository glob: `*` within one path component, `**` across components. */
  pattern: string;
}

/** A scope that is not `pull:<glob>` or `push:<glob>`; `scope` is the text given. */
export class InvalidScopeError extends Error {
  override readonly name = 'InvalidScopeError';
  /** @param scope the text that is not a scope */
  constructor(readonly scope: string) {
    super(`invalid scope ${JSON.stringify(scope)}: expected pull:<glob> or push:<glob>, e.g. push:math/*`);
  }
}

const SCOPE = /^(pull|push):([a-z0-9*][a-z0-9._*-]*(?:\/[a-z0-9*][a-z0-9._*-]*)*)$/;

/**
 * Parses `pull:<glob>` or `push:<glob>` (lower-case repository components, `*` and `**` as in the module comment).
 * Throws `InvalidScopeError` for anything else.
 */
export function parseScope(text: string): Scope {
  const m = SCOPE.exec(text);
  if (!m) throw new InvalidScopeError(text);
  return { action: m[1] as Action, pattern: m[2]! };
}

export const formatScope = (s: Scope) => `${s.action}:${s.pattern}`;

function globToRegExp(pattern: string): RegExp {
  const body = pattern
    .split(/(\*\*|\*)/)
    .map((part) => (part === '**' ? '.*' : part === '*' ? '[^/]*' : part.replace(/[.+?^${}()|[\]\\-]/g, '\\$&')))
    .join('');
  return new RegExp(`^${body}$`);
}

/** Whether any scope grants `action` on repository `name`. */
export function allows(scopes: readonly Scope[], action: Action, name: string): boolean {
  return scopes.some((s) => (s.action === action || s.action === 'push') && globToRegExp(s.pattern).test(name));
}
