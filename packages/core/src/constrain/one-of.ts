/**
 * `oneOf` asks that exactly one branch matches, which a grammar cannot say: it can only offer the branches as
 * alternatives (as XGrammar does, reading `oneOf` as `anyOf`). That is the same language when no value matches
 * two branches, so `oneOf` is enforced where the branches are provably disjoint — of different types, or told
 * apart by a discriminator (a property every branch requires, with its own `const` or `enum` values in each, as
 * zod's and pydantic's discriminated unions write) — and refused otherwise.
 */
import { isObject, lookupLocalRef } from './schema-refs.js';
import { ConstraintError } from './types.js';

type Kind = 'null' | 'boolean' | 'integer' | 'number' | 'string' | 'array' | 'object';
type Schema = Record<string, unknown> | boolean;

/** Follows local `$ref`s (`#/$defs/x`, `#/definitions/x`, any JSON pointer into the root). */
function resolve(s: Schema, root: unknown, depth = 0): Schema {
  if (!isObject(s) || typeof s.$ref !== 'string' || depth > 32) return s;
  const target = lookupLocalRef(s.$ref, root);
  return isObject(target) || typeof target === 'boolean' ? resolve(target, root, depth + 1) : s;
}

function kindOf(v: unknown): Kind {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v as Kind;
}

/** The JSON values a branch admits, when it lists them (`const`, `enum`), as JSON texts. */
function values(s: Schema): Set<string> | undefined {
  if (!isObject(s)) return undefined;
  if ('const' in s) return new Set([JSON.stringify(s.const)]);
  if (Array.isArray(s.enum)) return new Set(s.enum.map((v) => JSON.stringify(v)));
  return undefined;
}

/** The kinds of value a branch may admit; undefined when it may admit any. */
function kinds(s: Schema, root: unknown): Set<Kind> | undefined {
  const r = resolve(s, root);
  if (r === false) return new Set();
  if (!isObject(r)) return undefined;
  if (typeof r.type === 'string') return new Set([r.type as Kind]);
  if (Array.isArray(r.type)) return new Set(r.type as Kind[]);
  const listed = values(r);
  if (listed) return new Set([...listed].map((v) => kindOf(JSON.parse(v))));
  return undefined;
}

function kindsOverlap(a: Set<Kind> | undefined, b: Set<Kind> | undefined): boolean {
  if (!a || !b) return true;
  const numeric = (k: Kind) => k === 'integer' || k === 'number';
  for (const x of a) for (const y of b) if (x === y || (numeric(x) && numeric(y))) return true;
  return false;
}

/** A property both object branches require whose listed values differ: no object matches both. */
function discriminated(a: Record<string, unknown>, b: Record<string, unknown>, root: unknown): boolean {
  const required = (s: Record<string, unknown>) => new Set(Array.isArray(s.required) ? (s.required as string[]) : []);
  const [ra, rb] = [required(a), required(b)];
  const [pa, pb] = [isObject(a.properties) ? a.properties : {}, isObject(b.properties) ? b.properties : {}];
  for (const name of Object.keys(pa)) {
    if (!ra.has(name) || !rb.has(name) || !(name in pb)) continue;
    const [va, vb] = [values(resolve(pa[name] as Schema, root)), values(resolve(pb[name] as Schema, root))];
    if (va && vb && ![...va].some((v) => vb.has(v))) return true;
  }
  return false;
}

function disjoint(x: Schema, y: Schema, root: unknown): boolean {
  const [a, b] = [resolve(x, root), resolve(y, root)];
  if (!kindsOverlap(kinds(a, root), kinds(b, root))) return true;
  const [va, vb] = [values(a), values(b)];
  if (va && vb && ![...va].some((v) => vb.has(v))) return true;
  return isObject(a) && isObject(b) && discriminated(a, b, root);
}

/** Throws a {@link ConstraintError} unless no value can match two of the branches of the `oneOf` at `path`. */
export function checkOneOf(branches: readonly unknown[], root: unknown, path: string): void {
  for (let i = 0; i < branches.length; i++) {
    for (let j = i + 1; j < branches.length; j++) {
      if (!disjoint(branches[i] as Schema, branches[j] as Schema, root)) {
        throw new ConstraintError(
          `JSON Schema keyword "oneOf" at ${path} cannot be enforced: a value may match both branch ${i} and branch ${j}, ` +
            'and a grammar cannot exclude that; use anyOf, or tell the branches apart by type or by a required property with a const value in each',
        );
      }
    }
  }
}
