/**
 * Keyword combinations XGrammar 0.1.27 accepts but does not enforce, rewritten into ones it does (or refused by
 * name). Found by random walks through its grammars checked with ajv:
 * - `allOf` with more than one branch: it enforced none of them (`allOf: [{minimum: 0}, {maximum: 5}]` wrote 11,
 *   two object branches wrote `3`); with one, it dropped the keywords beside it (`{type: "integer", allOf: [true]}`
 *   wrote strings). The branches and the keywords beside them are merged into one schema where that is exact.
 * - Value keywords beside `anyOf`/`oneOf`: ignored, the branches alone compiled (`{type: "integer", anyOf:
 *   [{minimum: 5}, {maximum: -5}]}` wrote 35.2). They are written into each branch.
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

/** Keywords that hold definitions only, for `$ref`s to reach: they constrain no value where they are written. */
const DEFINITIONS: ReadonlySet<string> = new Set(['$defs', 'definitions']);

/** The keywords of JSON Schema (2020-12 and the drafts before) that constrain a value, `format` included (enforced here). */
const VALIDATING: ReadonlySet<string> = new Set([
  'type', 'enum', 'const', 'multipleOf', 'minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum',
  'minLength', 'maxLength', 'pattern', 'format',
  'items', 'prefixItems', 'additionalItems', 'unevaluatedItems', 'minItems', 'maxItems', 'uniqueItems', 'contains', 'minContains', 'maxContains',
  'properties', 'patternProperties', 'additionalProperties', 'unevaluatedProperties', 'propertyNames', 'required', 'minProperties', 'maxProperties',
  'dependentRequired', 'dependentSchemas', 'dependencies',
  'allOf', 'anyOf', 'oneOf', 'not', 'if', 'then', 'else', '$ref', '$dynamicRef', '$recursiveRef',
]);

/**
 * Whether a keyword only describes (as {@link ANNOTATIONS} do): any that neither validates nor holds definitions.
 * JSON Schema 2020-12 collects unknown keywords as annotations, and XGrammar ignores them too (pydantic's
 * `discriminator`, OpenAPI's `nullable`: `{"type": "string", "nullable": true}` did not take `null`; `x-`
 * extensions). Copied beside a recursive `$ref`, they made it an allOf inlined without end.
 */
export const annotates = (key: string): boolean => !VALIDATING.has(key) && !DEFINITIONS.has(key);

/** Keywords a listed value is checked against here (any other validating keyword beside `enum`/`const` is refused). */
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
  const others = Object.keys(s).filter((k) => k !== 'enum' && k !== 'const' && VALIDATING.has(k));
  if (others.length === 0) return s;
  const unknown = others.find((k) => !VALUE_CHECKS.has(k));
  if (unknown) throw new ConstraintError(`JSON Schema keyword "${unknown}" at ${path} cannot be enforced beside "${'const' in s ? 'const' : 'enum'}"`);
  const kept = listed.filter((v) => satisfies(v, s));
  if (kept.length === 0) throw new ConstraintError(`JSON Schema at ${path}: no value of its "${'const' in s ? 'const' : 'enum'}" satisfies the keywords beside it`);
  const out: Schema = Object.fromEntries(Object.entries(s).filter(([k]) => annotates(k)));
  out.enum = kept;
  return out;
}

/** Keywords merged by taking the larger (lower bounds) or smaller (upper bounds) value. */
const LOWER = new Set(['minimum', 'exclusiveMinimum', 'minLength', 'minItems', 'minProperties']);
const UPPER = new Set(['maximum', 'exclusiveMaximum', 'maxLength', 'maxItems', 'maxProperties']);

/** How deep `allOf`s and `$ref`s are opened, or distributed branches visited, before a cycle is assumed. */
const MAX_DEPTH = 32;

/** Refuses a merge: the keyword at fault and why, a verb phrase whose subject is the parts merged. */
type Refuse = (key: string, why: string) => never;

/** Follows a local `$ref` one step (allOf branches are often `$ref`s). */
function resolved(s: unknown, root: unknown): unknown {
  if (!isObject(s) || typeof s.$ref !== 'string') return s;
  const target = lookupLocalRef(s.$ref, root);
  if (!isObject(target) && typeof target !== 'boolean') return s;
  const { $ref: _, ...siblings } = s;
  return Object.keys(siblings).length ? { allOf: [target, siblings] } : target;
}

/** A subschema that constrains nothing (`true`, `{}` or annotations alone). */
const saysNothing = (v: unknown): boolean => v === true || (isObject(v) && Object.keys(v).every(annotates));

/** The types both `a` and `b` allow (an integer is a number); undefined where they share none. */
function commonType(a: unknown, b: unknown, refuse: Refuse): string | string[] | undefined {
  const list = (t: unknown): string[] => (Array.isArray(t) && t.every((x) => typeof x === 'string') ? t : typeof t === 'string' ? [t] : refuse('type', 'give it a value that is no type name or list of them'));
  const [as, bs] = [list(a), list(b)];
  const integer = (t: string, others: string[]) => (t === 'integer' && others.includes('number')) || (t === 'number' && others.includes('integer'));
  const types = [...new Set(as.flatMap((t) => (bs.includes(t) ? [t] : integer(t, bs) ? ['integer'] : [])))];
  return types.length === 0 ? undefined : types.length === 1 ? types[0] : types;
}

/** Keywords whose items or properties count as evaluated for an `unevaluatedItems`/`unevaluatedProperties` beside them. */
const EVALUATING: Record<string, string[]> = {
  unevaluatedItems: ['prefixItems', 'items', 'additionalItems', 'contains', 'unevaluatedItems'],
  unevaluatedProperties: ['properties', 'patternProperties', 'additionalProperties', 'unevaluatedProperties'],
};
const APPLICATORS = ['allOf', 'anyOf', 'oneOf', '$ref', 'not', 'if', 'then', 'else', 'dependentSchemas'];

/**
 * Refuses keywords that would apply to other items or properties once merged: `items` (and draft-07's
 * `additionalItems`) cover the positions after their own sibling tuple only, `additionalProperties` the properties
 * its own siblings do not declare, `unevaluatedItems`/`unevaluatedProperties` what its own siblings do not evaluate.
 * Beside another part's tuple or properties they would cover those too. (Those of `outer`, the schema holding the
 * combinator, already see what its branches evaluate.)
 */
function checkSiblingScopes(parts: Schema[], outer: Schema | undefined, refuse: Refuse): void {
  const tuple = (p: Schema) => JSON.stringify(p.prefixItems ?? (Array.isArray(p.items) ? p.items : null));
  for (const part of parts) {
    for (const [key, evaluating] of Object.entries(EVALUATING)) {
      if (part === outer || !(key in part) || saysNothing(part[key])) continue;
      const other = parts.flatMap((p) => (p === part ? [] : Object.keys(p))).find((k) => evaluating.includes(k) || APPLICATORS.includes(k));
      if (other !== undefined) refuse(key, `are one whose "${key}" covers what its own keywords leave unevaluated and one with "${other}"`);
    }
    for (const key of ['items', 'additionalItems']) {
      if (!(key in part) || (key === 'items' && Array.isArray(part.items)) || saysNothing(part[key])) continue;
      if (parts.some((p) => p !== part && tuple(p) !== 'null' && tuple(p) !== tuple(part))) {
        refuse(key, `are one whose "${key}" covers the items after its own tuple and one with another "prefixItems"`);
      }
    }
    if (!('additionalProperties' in part) || saysNothing(part.additionalProperties)) continue;
    const ownNames = (p: Schema, key: string) => Object.keys(isObject(p[key]) ? p[key] : {});
    for (const key of ['properties', 'patternProperties']) {
      const own = new Set(ownNames(part, key));
      const other = parts.flatMap((p) => (p === part ? [] : ownNames(p, key))).find((k) => !own.has(k));
      if (other === undefined) continue;
      const which = part.additionalProperties === false ? 'one closed to the properties it does not declare' : 'one whose "additionalProperties" covers the properties it does not declare';
      refuse('additionalProperties', `are ${which} and one that declares ${key === 'properties' ? 'property' : 'pattern'} "${other}"`);
    }
  }
}

/**
 * A property's schema admitting what both `a` and `b` admit (`false` where one is). Two schemas no value satisfies
 * together are refused: the property would silently never be written (or never be valid, where required).
 */
function mergeProperty(name: string, a: unknown, b: unknown, refuse: Refuse): unknown {
  if (a === true || b === false) return b;
  if (b === true || a === false) return a;
  const inner: Refuse = (key, why) => refuse(key, `give property "${name}" schemas that ${why}`);
  if (!isObject(a) || !isObject(b)) return inner('properties', 'are not both schemas');
  return mergeAll([a, b], inner) || inner('properties', 'share no type or listed value');
}

/**
 * One schema that admits exactly what all of `parts` admit, where their keywords combine simply; false where no
 * value satisfies them all (no type or listed value in common); else a refusal. `outer` is the part holding the
 * combinator, if one does.
 */
function mergeAll(parts: Schema[], refuse: Refuse, outer?: Schema): Schema | false {
  checkSiblingScopes(parts, outer, refuse);
  const lists = parts.filter((p) => 'const' in p || Array.isArray(p.enum)).map((p) => ('const' in p ? [p.const] : (p.enum as unknown[])));
  const out: Schema = {};
  for (const part of parts) {
    for (const [key, value] of Object.entries(part)) {
      if (lists.length > 1 && (key === 'const' || (key === 'enum' && Array.isArray(value)))) continue;
      // (definitions are reached from the root whatever part holds them)
      if (!(key in out) || !VALIDATING.has(key)) {
        if (!(key in out)) out[key] = value;
        continue;
      }
      const prior = out[key];
      if (key === 'required') out.required = [...new Set([...(prior as string[]), ...(value as string[])])];
      else if (key === 'properties' && isObject(prior) && isObject(value)) {
        const properties = { ...prior };
        for (const [name, schema] of Object.entries(value)) {
          properties[name] = name in prior ? mergeProperty(name, prior[name], schema, refuse) : schema;
        }
        out.properties = properties;
      } else if (key === 'type') {
        const type = commonType(prior, value, refuse);
        if (type === undefined) return false;
        out.type = type;
      } else if (LOWER.has(key) && typeof prior === 'number' && typeof value === 'number') out[key] = Math.max(prior, value);
      else if (UPPER.has(key) && typeof prior === 'number' && typeof value === 'number') out[key] = Math.min(prior, value);
      else if (JSON.stringify(prior) !== JSON.stringify(value)) refuse(key, 'give it different values');
    }
  }
  if (lists.length > 1) {
    // (values equal as JSON texts: one written with its keys in another order is dropped, a subset kept)
    const others = lists.slice(1).map((l) => new Set(l.map((v) => JSON.stringify(v))));
    const kept = lists[0]!.filter((v) => others.every((texts) => texts.has(JSON.stringify(v))));
    if (kept.length === 0) return false;
    out.enum = kept;
  }
  return out;
}

/** The branches of an `allOf` as plain schemas: `$ref`s followed, nested `allOf`s opened, `true` dropped; false if one is `false`. */
function allOfParts(branches: unknown[], root: unknown, refuse: Refuse, depth = 0): Schema[] | false {
  if (depth > MAX_DEPTH) refuse('allOf', `nest allOfs and $refs more than ${MAX_DEPTH} deep (a $ref cycle?)`);
  const parts: Schema[] = [];
  for (const branch of branches) {
    const r = resolved(branch, root);
    if (r === true) continue;
    if (r === false) return false;
    if (!isObject(r)) return refuse('allOf', 'hold something that is no schema');
    let opened: Schema[] | false = [r];
    if (r !== branch && typeof r.$ref === 'string') opened = allOfParts([r], root, refuse, depth + 1);
    else if (Array.isArray(r.allOf)) {
      const { allOf, ...rest } = r;
      const inner = allOfParts(allOf, root, refuse, depth + 1);
      opened = inner && [rest, ...inner];
    }
    if (opened === false) return false;
    parts.push(...opened);
  }
  return parts;
}

/**
 * An `anyOf`/`oneOf` with the value keywords beside it written into each branch (JSON Schema applies both; XGrammar
 * compiled the branches alone: `{type: "integer", anyOf: [{minimum: 5}, …]}` wrote 35.2). `true` branches are `{}`;
 * branches no value satisfies (`false`, no type in common with the keywords beside) are dropped. For `oneOf` this is
 * exact too: exactly one of S∧A, S∧B holds where S and exactly one of A, B does. An `unevaluatedProperties` or
 * `unevaluatedItems` beside it sees what every matching branch evaluates, in each branch only what that branch does:
 * the node is then left as it is, to be refused.
 */
function distributed(s: Schema, path: string): Schema {
  const key = Array.isArray(s.anyOf) ? 'anyOf' : Array.isArray(s.oneOf) ? 'oneOf' : undefined;
  if (key === undefined) return s;
  // (a second combinator beside it goes into the branches too, and is distributed there)
  const beside = Object.fromEntries(Object.entries(s).filter(([k]) => k !== key && VALIDATING.has(k)));
  if (Object.keys(beside).length === 0 || 'unevaluatedProperties' in beside || 'unevaluatedItems' in beside) return s;
  // A branch that is a `$ref` to a schema with this combinator meets it again in its own branches: cut such a cycle.
  if (path.split('/').filter((segment) => segment === 'anyOf' || segment === 'oneOf').length > MAX_DEPTH) {
    throw new ConstraintError(`JSON Schema keyword "${key}" at ${path} cannot be enforced: with the keywords beside them written into them, its branches nest more than ${MAX_DEPTH} deep (a $ref cycle through them?)`);
  }
  const branches: Schema[] = [];
  (s[key] as unknown[]).forEach((branch, i) => {
    const refuse: Refuse = (k, why) => {
      throw new ConstraintError(`JSON Schema keyword "${key}" at ${path} cannot be enforced: branch ${i} and the keywords beside it ${why} ("${k}"); write those keywords into each branch`);
    };
    if (branch === false) return;
    if (branch !== true && !isObject(branch)) refuse(key, 'are not both schemas');
    const merged = mergeAll([beside, branch === true ? {} : branch], refuse, beside);
    if (merged !== false) branches.push(merged);
  });
  if (branches.length === 0) throw new ConstraintError(`JSON Schema keyword "${key}" at ${path}: no branch admits a value beside the keywords next to it (it admits no value)`);
  return { ...Object.fromEntries(Object.entries(s).filter(([k]) => !VALIDATING.has(k))), [key]: branches };
}

/**
 * The schema node with the combinations above rewritten (before the rest of the preparation sees it). `root`
 * resolves `$ref`s in `allOf` branches.
 */
export function rewriteCombinations(node: Schema, root: unknown, path: string): Schema {
  let s = node;
  // A `$ref` beside value keywords applies both (draft 2020-12): as the branches of an allOf.
  const { $ref, ...siblings } = s;
  if (typeof $ref === 'string' && Object.keys(siblings).some((k) => VALIDATING.has(k))) {
    s = { allOf: [{ $ref }, ...(Array.isArray(siblings.allOf) ? siblings.allOf : [])], ...Object.fromEntries(Object.entries(siblings).filter(([k]) => k !== 'allOf')) };
  }
  // An allOf of one `$ref` beside annotations is that `$ref` (zod's draft-07 output wraps each recursive use so):
  // merged, the definition was inlined into itself without end.
  const only = Array.isArray(s.allOf) && s.allOf.length === 1 ? s.allOf[0] : undefined;
  if (isObject(only) && Object.keys(only).every((k) => k === '$ref') && typeof only.$ref === 'string' && Object.keys(s).every((k) => k === 'allOf' || annotates(k))) {
    const { allOf: _, ...own } = s;
    s = { ...own, $ref: only.$ref };
  }
  if (Array.isArray(s.allOf) && s.allOf.length > 0) {
    const { allOf, ...own } = s;
    const which = Object.keys(own).some((k) => VALIDATING.has(k)) ? 'its branches and the keywords beside it' : 'its branches';
    const refuse: Refuse = (key, why) => {
      throw new ConstraintError(`JSON Schema keyword "allOf" at ${path} cannot be enforced: ${which} ${why} ("${key}"); write them as one schema`);
    };
    const parts = allOfParts(allOf, root, refuse);
    const merged = parts && mergeAll([own, ...parts], refuse, own);
    if (merged === false) throw new ConstraintError(`JSON Schema keyword "allOf" at ${path}: no value satisfies all its branches (a branch is false, or they share no type or listed value)`);
    s = merged;
  }
  s = distributed(s, path);
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
