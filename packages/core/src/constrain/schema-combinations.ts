/**
 * Keyword combinations XGrammar 0.1.27 accepts but does not enforce, rewritten into ones it does (or refused by
 * name). Found by random walks through its grammars checked with ajv:
 * - `allOf` with more than one branch: it enforced none of them (`allOf: [{minimum: 0}, {maximum: 5}]` wrote 11,
 *   two object branches wrote `3`). The branches are merged into one schema where that is exact.
 * - `required` naming a property `properties` does not declare: ignored (`{}` for `required: ["x"]`). The
 *   property is declared, with any value.
 * - `enum`/`const` beside other keywords (`minLength`, `maximum`, …): the others were ignored (`"a"` for
 *   `enum: ["a", "bb"], minLength: 2`). The listed values are filtered by those keywords.
 * - String, number and array keywords without a `type`: ignored. The schema takes the one type they belong to.
 * - A `$ref` beside value keywords (`{"$ref": "#/$defs/n", "maximum": 3}`): read as an allOf of the two.
 */
import { isObject, lookupLocalRef } from './schema-refs.js';
import { ConstraintError } from './types.js';

type Schema = Record<string, unknown>;

/** Keywords that only describe or identify (zod's JSON Schema puts `$schema` beside a top-level `enum`). */
export const ANNOTATIONS: ReadonlySet<string> = new Set(['title', 'description', 'default', 'examples', '$comment', 'deprecated', 'readOnly', 'writeOnly', '$schema', '$id']);

/** Keywords a listed value is checked against here (anything else beside `enum`/`const` is refused). */
const VALUE_CHECKS = new Set(['type', 'minLength', 'maxLength', 'pattern', 'minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'multipleOf']);

const jsonType = (v: unknown): string => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v === 'number' ? 'number' : typeof v);

/** Whether `v` satisfies the value keywords of `s` (JSON Schema semantics: each keyword applies to its own type). */
function satisfies(v: unknown, s: Schema): boolean {
  if (s.type !== undefined) {
    const types = Array.isArray(s.type) ? s.type : [s.type];
    const t = jsonType(v);
    if (!types.some((x) => x === t || (x === 'integer' && typeof v === 'number' && Number.isInteger(v)) || (x === 'number' && t === 'number'))) return false;
  }
  if (typeof v === 'string') {
    const length = [...v].length;
    if (typeof s.minLength === 'number' && length < s.minLength) return false;
    if (typeof s.maxLength === 'number' && length > s.maxLength) return false;
    if (typeof s.pattern === 'string' && !new RegExp(s.pattern, 'u').test(v)) return false;
  }
  if (typeof v === 'number') {
    if (typeof s.minimum === 'number' && v < s.minimum) return false;
    if (typeof s.maximum === 'number' && v > s.maximum) return false;
    if (typeof s.exclusiveMinimum === 'number' && v <= s.exclusiveMinimum) return false;
    if (typeof s.exclusiveMaximum === 'number' && v >= s.exclusiveMaximum) return false;
    if (typeof s.multipleOf === 'number' && !Number.isInteger(v / s.multipleOf)) return false;
  }
  return true;
}

/** `enum`/`const` with the value keywords beside it applied to the listed values. */
function filterListed(s: Schema, path: string): Schema {
  const listed = 'const' in s ? [s.const] : (s.enum as unknown[]);
  const others = Object.keys(s).filter((k) => k !== 'enum' && k !== 'const' && !ANNOTATIONS.has(k));
  if (others.length === 0) return s;
  const unknown = others.find((k) => !VALUE_CHECKS.has(k));
  if (unknown) throw new ConstraintError(`JSON Schema keyword "${unknown}" at ${path} cannot be enforced beside "${'const' in s ? 'const' : 'enum'}"`);
  const kept = listed.filter((v) => satisfies(v, s));
  if (kept.length === 0) throw new ConstraintError(`JSON Schema at ${path}: no value of its "${'const' in s ? 'const' : 'enum'}" satisfies the keywords beside it`);
  const out: Schema = Object.fromEntries(Object.entries(s).filter(([k]) => ANNOTATIONS.has(k)));
  out.enum = kept;
  return out;
}

/** Keywords merged by taking the larger (lower bounds) or smaller (upper bounds) value. */
const LOWER = new Set(['minimum', 'exclusiveMinimum', 'minLength', 'minItems', 'minProperties']);
const UPPER = new Set(['maximum', 'exclusiveMaximum', 'maxLength', 'maxItems', 'maxProperties']);

/** Follows a local `$ref` one step (allOf branches are often `$ref`s). */
function resolved(s: unknown, root: unknown): unknown {
  if (!isObject(s) || typeof s.$ref !== 'string') return s;
  const target = lookupLocalRef(s.$ref, root);
  if (!isObject(target)) return s;
  const { $ref: _, ...siblings } = s;
  return Object.keys(siblings).length ? { allOf: [target, siblings] } : target;
}

/** One schema that admits exactly what all of `parts` admit, where their keywords combine simply; else a refusal. */
function mergeAll(parts: Schema[], path: string): Schema {
  const out: Schema = {};
  const refuse = (key: string, why: string): never => {
    throw new ConstraintError(`JSON Schema keyword "allOf" at ${path} cannot be enforced: ${why} ("${key}"); write the branches as one schema`);
  };
  for (const part of parts) {
    if (part.additionalProperties === false && parts.some((p) => p !== part && isObject(p.properties))) {
      refuse('additionalProperties', 'a branch closed to properties it does not declare, beside another that declares some');
    }
    for (const [key, value] of Object.entries(part)) {
      if (!(key in out) || ANNOTATIONS.has(key)) {
        if (!(key in out)) out[key] = value;
        continue;
      }
      const prior = out[key];
      if (key === 'required') out.required = [...new Set([...(prior as string[]), ...(value as string[])])];
      else if (key === 'properties' && isObject(prior) && isObject(value)) {
        const shared = Object.keys(value).find((k) => k in prior);
        if (shared) refuse(key, `two branches declare property "${shared}"`);
        out.properties = { ...prior, ...value };
      } else if (LOWER.has(key) && typeof prior === 'number' && typeof value === 'number') out[key] = Math.max(prior, value);
      else if (UPPER.has(key) && typeof prior === 'number' && typeof value === 'number') out[key] = Math.min(prior, value);
      else if (JSON.stringify(prior) !== JSON.stringify(value)) refuse(key, 'two branches give it different values');
    }
  }
  return out;
}

/**
 * The schema node with the combinations above rewritten (before the rest of the preparation sees it). `root`
 * resolves `$ref`s in `allOf` branches.
 */
export function rewriteCombinations(node: Schema, root: unknown, path: string): Schema {
  let s = node;
  // A `$ref` beside value keywords applies both (draft 2020-12): as the branches of an allOf.
  const { $ref, ...siblings } = s;
  if (typeof $ref === 'string' && Object.keys(siblings).some((k) => !ANNOTATIONS.has(k) && k !== '$defs' && k !== 'definitions')) {
    s = { allOf: [{ $ref }, ...(Array.isArray(siblings.allOf) ? siblings.allOf : [])], ...Object.fromEntries(Object.entries(siblings).filter(([k]) => k !== 'allOf')) };
  }
  // An allOf of one `$ref` beside annotations is that `$ref` (zod's draft-07 output wraps each recursive use so):
  // merged, the definition was inlined into itself without end.
  const only = Array.isArray(s.allOf) && s.allOf.length === 1 ? s.allOf[0] : undefined;
  if (isObject(only) && Object.keys(only).every((k) => k === '$ref') && typeof only.$ref === 'string' && Object.keys(s).every((k) => k === 'allOf' || ANNOTATIONS.has(k))) {
    const { allOf: _, ...own } = s;
    s = { ...own, $ref: only.$ref };
  }
  if (Array.isArray(s.allOf) && s.allOf.length > 0) {
    const branches = s.allOf.map((b) => resolved(b, root));
    if (branches.some((b) => !isObject(b) || 'allOf' in b)) {
      if (branches.length > 1) throw new ConstraintError(`JSON Schema keyword "allOf" at ${path} cannot be enforced: a branch is not a plain schema`);
    } else {
      const { allOf: _, ...own } = s;
      s = mergeAll([own, ...(branches as Schema[])], path);
    }
  }
  if (Array.isArray(s.required) && s.required.length > 0) {
    const declared = isObject(s.properties) ? s.properties : {};
    const missing = (s.required as unknown[]).filter((k): k is string => typeof k === 'string' && !(k in declared));
    // A required property that `properties` leaves out holds what additionalProperties allows (unless a
    // patternProperties pattern names it, which is left as written).
    if (missing.length > 0 && !isObject(s.patternProperties)) {
      if (s.additionalProperties === false) {
        throw new ConstraintError(`JSON Schema at ${path}: "required" names "${missing[0]}", which "properties" does not declare and additionalProperties forbids`);
      }
      const value = isObject(s.additionalProperties) ? s.additionalProperties : {};
      s = { ...s, properties: { ...declared, ...Object.fromEntries(missing.map((k) => [k, value])) } };
    }
  }
  if ('const' in s || Array.isArray(s.enum)) s = filterListed(s, path);
  return typed(s);
}

const TYPE_KEYWORDS: [string, string[]][] = [
  ['string', ['minLength', 'maxLength', 'pattern', 'format']],
  ['number', ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'multipleOf']],
  ['array', ['items', 'prefixItems', 'minItems', 'maxItems']],
];

/**
 * A schema without `type` whose keywords all belong to one type gets that type: the keywords then hold (XGrammar
 * ignored `minLength` without `type: "string"` and wrote long strings), and values of other types, which such a
 * schema also admits, are no longer written.
 */
function typed(s: Schema): Schema {
  if (s.type !== undefined || 'enum' in s || 'const' in s || ['anyOf', 'oneOf', 'allOf', '$ref', 'not'].some((k) => k in s)) return s;
  const kinds = TYPE_KEYWORDS.filter(([, keys]) => keys.some((k) => k in s));
  return kinds.length === 1 ? { ...s, type: kinds[0]![0] } : s;
}
