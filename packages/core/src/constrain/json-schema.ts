/**
 * Prepares a JSON Schema for the grammar engine: refuses, before any generation, the keywords it cannot enforce
 * (naming the keyword and where it is), and takes bounded numbers out of XGrammar's hands (see number-range.ts):
 * each becomes a placeholder `const` whose literal in the generated grammar is replaced by an exact rule.
 * Property names holding a quote, a backslash or a control character become placeholders too: XGrammar 0.1.27
 * writes them into its grammar unescaped, which then does not compile. So do `enum` and `const`: their values'
 * JSON texts are written as a prefix tree (literal-trie.ts), which its matcher takes exactly.
 */
import { ebnfLiteral, literalTrie } from './literal-trie.js';
import { numberRangeEbnf } from './number-range.js';
import { checkOneOf } from './one-of.js';
import { rewriteRegex } from './regex-rewrite.js';
import { annotates, rewriteCombinations } from './schema-combinations.js';
import { withRecordKeywords } from './schema-records.js';
import { isObject, lookupLocalRef } from './schema-refs.js';
import { isDraft2020, withTupleItems } from './schema-tuples.js';
import { ConstraintError, type JsonSchema } from './types.js';

/** Keywords that constrain values but that the engine ignores; a schema using them is refused. */
const UNENFORCEABLE: Record<string, string> = {
  not: 'negation is not expressible as a grammar here',
  if: 'conditional schemas are not supported',
  then: 'conditional schemas are not supported',
  else: 'conditional schemas are not supported',
  dependentRequired: 'property dependencies are not supported',
  dependentSchemas: 'property dependencies are not supported',
  dependencies: 'property dependencies are not supported',
  contains: 'array containment is not supported',
  minContains: 'array containment is not supported',
  maxContains: 'array containment is not supported',
  $dynamicRef: 'dynamic references are not supported',
  $recursiveRef: 'dynamic references are not supported',
  unevaluatedProperties: 'beside anyOf, oneOf or a conditional it depends on what each branch evaluates (alone, or beside an allOf or $ref merged into one schema, it is enforced as additionalProperties)',
  unevaluatedItems: 'beside anyOf, oneOf or a conditional it depends on what each branch evaluates (alone, or beside an allOf or $ref merged into one schema, it is enforced as items)',
};

/** Keywords whose subschemas' evaluations count toward the `unevaluated*` keywords beside them. */
const APPLICATORS = ['$ref', '$dynamicRef', '$recursiveRef', 'allOf', 'anyOf', 'oneOf', 'not', 'if', 'then', 'else', 'dependentSchemas', 'dependencies', 'contains'];

/** The string formats the engine enforces. */
export const SUPPORTED_FORMATS: readonly string[] = [
  'email', 'date', 'time', 'date-time', 'duration', 'ipv4', 'ipv6', 'hostname', 'uuid',
  'uri', 'uri-reference', 'uri-template', 'json-pointer', 'relative-json-pointer',
];

/** Keywords whose value is one subschema, a map of them, or a list of them. */
const ONE = ['items', 'additionalProperties', 'propertyNames', 'unevaluatedProperties', 'unevaluatedItems'];
const MAP = ['properties', 'patternProperties', '$defs', 'definitions'];
const LIST = ['anyOf', 'oneOf', 'allOf', 'prefixItems'];
const NUMERIC = ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'multipleOf'] as const;

/**
 * What one schema may ask the grammar compiler for. XGrammar's compile runs on the generation thread, stalling every
 * other request meanwhile, and grows faster than the schema: on a 152k vocabulary 8,000 enum integers took 1.5 s,
 * 30,000 many seconds; 200 optional properties of one object 2 s, 400 8 s; on a 32k one (CPU time) 500 required
 * properties 0.7 s, 1,000 2.5 s, 1,600 6.3 s, in one object or spread over ten. Within the value limits a schema
 * compiles in about half a second on the large vocabulary; within the property ones in at most 2.2 s on the small one
 * (five objects of 100 optional properties). Beyond them it is refused before the compile.
 */
export const SCHEMA_LIMITS = {
  /** `enum` and `const` values, across the schema. */
  values: 2000,
  /** The JSON text of those values, in all (UTF-16 code units). */
  valueChars: 32 * 1024,
  /** Properties of one object that `required` does not name. */
  optionalProperties: 100,
  /** Declared properties (`properties`' keys), across the schema's objects (OpenAI's strict mode takes 5,000). */
  properties: 500,
  /**
   * Levels of subschemas (a property's, an item's, a combinator's branch, a `$ref`'s target) from the root, `$ref`s
   * opened where they stand; a combinator branch that is a `$ref` is one level with its target. XGrammar 0.1.27's
   * compile ran out of its WebAssembly memory ("memory access out of bounds") at 54 nested objects (53 levels
   * compiled), 28 of pydantic's nested optional models (an anyOf branch `$ref` each: 57 levels here; 27, 55 levels,
   * compiled), 40 objects linked through a property `$ref` each (81 levels here), about 70 nested arrays and 90
   * nested anyOfs; a chain of 45 such objects never ended. The limit stays 6 levels short of the nearest failure.
   */
  depth: 48,
} as const;

/** A schema ready to compile, and the grammar rules its placeholders stand for. */
export interface PreparedSchema {
  schema: JsonSchema;
  /** Placeholder literal (as it appears in the generated EBNF) → the rule text that replaces it. */
  rules: Map<string, string>;
}

/** The `$ref`s XGrammar follows as they are: the root, and a definition by a name without `/`, `~` or `%`. */
const FOLLOWED_REF = /^#(\/(\$defs|definitions)\/[^/~%]+)?$/;

const placeholder = (k: number) => `__reasonplug_placeholder_${k}__`;

/** Property names XGrammar writes into its grammar unescaped (so it fails to compile). */
const NEEDS_ESCAPE = /["\\\x00-\x1f]/;

const DAY = '(((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01]))|((0[469]|11)-(0[1-9]|[12][0-9]|30))|(02-(0[1-9]|1[0-9]|2[0-8])))';
const TIME = '([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])';
const OCTET = '(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])';
const LABEL = '[A-Za-z0-9]([A-Za-z0-9-]{0,30}[A-Za-z0-9])?';
const HOST_LABEL = '[A-Za-z0-9]([A-Za-z0-9-]{0,60}[A-Za-z0-9])?';
/** A JSON Pointer's reference token: characters but `~`, `/`, a quote, a backslash or a control character; `~0`, `~1`. */
const POINTER_TOKEN = '([^~/"\\\\\\u0000-\\u001f]|~[01])*';
const SEGMENT = "[A-Za-z0-9._~!$&'()*+,;=:@-]{1,32}";
/**
 * Formats written here as patterns, because XGrammar's rules for them admit what validators refuse (February
 * 30th; IPv4 octets with leading zeros, `15.08.40.55`, which validators refuse as possibly octal; a URI that
 * ends at its scheme's colon, `tom:`, and a URI template's dotted variable name, `{a.b}`, which the RFCs allow and
 * ajv-formats refuses; a JSON Pointer holding a raw quote or control character, which is no JSON string) or never end (fractions of
 * a second, e-mail local parts; host names, whose labels also ran past 63 characters): each pattern is a subset of
 * the format (February stops at 28; e-mail parts, host names, URI hosts, segments, queries and fragments have
 * bounded lengths, and no percent-escapes).
 */
const FORMAT_PATTERNS: Record<string, string> = {
  ipv4: `^(${OCTET}\\.){3}${OCTET}$`,
  date: `^[0-9]{4}-${DAY}$`,
  time: `^${TIME}$`,
  'date-time': `^[0-9]{4}-${DAY}T${TIME}$`,
  email: '^[a-z0-9_+-]{1,16}(\\.[a-z0-9_+-]{1,16}){0,2}@[a-z0-9]([a-z0-9-]{0,14}[a-z0-9])?(\\.[a-z]{2,6}){1,2}$',
  // RFC 1123 labels of up to 62 characters, at most four: 251 characters at most (a name may have 253, a label 63)
  hostname: `^${HOST_LABEL}(\\.${HOST_LABEL}){0,3}$`,
  // RFC 6901 reference tokens (XGrammar's class for them admits a raw quote or control character inside the JSON string)
  'json-pointer': `^(/${POINTER_TOKEN})*$`,
  'relative-json-pointer': `^(0|[1-9][0-9]{0,8})(#|(/${POINTER_TOKEN})*)$`,
  // RFC 6570 literals and expressions, but variable names without dots (ajv-formats refuses `{a.b}`, which XGrammar writes)
  'uri-template': "^([^\\u0000-\\u0020\"'<>%\\\\^`{|}]|%[0-9A-Fa-f]{2}|\\{[+#./;?&=,!@|]?[A-Za-z0-9_]{1,32}(:[1-9][0-9]{0,3}|\\*)?(,[A-Za-z0-9_]{1,32}(:[1-9][0-9]{0,3}|\\*)?)*\\})*$",
  // scheme ":" then an authority and an absolute path, or a rootless path; an optional query and fragment
  uri: `^[A-Za-z][A-Za-z0-9+.-]{0,15}:(//${LABEL}(\\.${LABEL}){0,4}(:[0-9]{1,5})?(/${SEGMENT}){0,8}/?|${SEGMENT}(/${SEGMENT}){0,7})(\\?[A-Za-z0-9._~!$&'()*+,;=:@/?-]{0,64})?(#[A-Za-z0-9._~!$&'()*+,;=:@/?-]{0,32})?$`,
};

/**
 * `pattern` with a length bound folded in, when it is one repeated atom (`^[a-z]+$`, `\d*`): `^atom{lo,hi}$`, the
 * anchors added (the grammar matches whole strings anyway); undefined for any other pattern or an empty range.
 */
function boundedPattern(pattern: string, minLength: number | undefined, maxLength: number | undefined): string | undefined {
  const m = /^\^?((?:\[(?:\\.|[^\]\\])*\]|\\.|[^\\()[\]|?*+{}^$]))([*+])\$?$/.exec(pattern);
  if (!m) return undefined;
  const lo = Math.max(m[2] === '+' ? 1 : 0, minLength ?? 0);
  if (maxLength !== undefined && lo > maxLength) return undefined;
  return `^${m[1]}{${lo},${maxLength ?? ''}}$`;
}

/** Counting keywords, whose values JSON Schema requires to be non-negative integers. */
const COUNTS = [['minLength', 'maxLength'], ['minItems', 'maxItems'], ['minProperties', 'maxProperties']] as const;

/**
 * Keyword values JSON Schema itself forbids, or that admit no value at all, refused by name: the grammar compiler
 * took some (a maxLength of -1 wrote any string) and failed on others with its own parser's text (an empty enum).
 */
function checkKeywordValues(s: Record<string, unknown>, path: string): void {
  if ('enum' in s && (!Array.isArray(s.enum) || s.enum.length === 0)) throw new ConstraintError(`JSON Schema keyword "enum" at ${path} must list at least one value (an empty enum admits none)`);
  for (const key of ['anyOf', 'oneOf', 'allOf']) {
    if (key in s && (!Array.isArray(s[key]) || (s[key] as unknown[]).length === 0)) throw new ConstraintError(`JSON Schema keyword "${key}" at ${path} must list at least one schema`);
  }
  for (const [min, max] of COUNTS) {
    for (const key of [min, max]) {
      const v = s[key];
      if (v !== undefined && !(typeof v === 'number' && Number.isSafeInteger(v) && v >= 0)) throw new ConstraintError(`JSON Schema keyword "${key}" at ${path} must be a non-negative whole number, not ${JSON.stringify(v)}`);
    }
    if (typeof s[min] === 'number' && typeof s[max] === 'number' && (s[min] as number) > (s[max] as number)) {
      throw new ConstraintError(`JSON Schema keywords "${min}" ${String(s[min])} and "${max}" ${String(s[max])} at ${path} admit no value`);
    }
  }
}

/**
 * Object keywords XGrammar 0.1.27 combines wrongly, refused by name: `patternProperties` beside `properties` or
 * `required` (its grammar kept the pattern's properties alone), and an `additionalProperties` schema beside a
 * property whose schema differs (its key for an additional property is any string, so `{"age": "five"}` passed
 * where `age` is an integer and additional properties strings). (`additionalProperties: true` is narrowed instead:
 * see {@link prepareJsonSchema}.)
 */
function checkObjectKeywords(s: Record<string, unknown>, path: string): void {
  const declared = isObject(s.properties) ? Object.keys(s.properties) : [];
  if (isObject(s.patternProperties) && (declared.length > 0 || (Array.isArray(s.required) && s.required.length > 0))) {
    throw new ConstraintError(`JSON Schema keyword "patternProperties" at ${path} cannot be enforced beside "${declared.length ? 'properties' : 'required'}" (XGrammar then drops the latter)`);
  }
  const additional = s.additionalProperties;
  if (!isObject(additional)) return;
  const differs = declared.find((k) => {
    const own = (s.properties as Record<string, unknown>)[k];
    return JSON.stringify(own === true ? {} : own) !== JSON.stringify(additional);
  });
  if (differs !== undefined) {
    throw new ConstraintError(
      `JSON Schema keyword "additionalProperties" at ${path} cannot be enforced beside property "${differs}" with another schema ` +
        '(an additional property may take a declared name, and its value would not be checked against the declared schema)',
    );
  }
}

/** Keywords whose subschemas are combinator branches (see {@link hop}). */
const BRANCHES = ['anyOf', 'oneOf', 'allOf'];

/**
 * The subschemas a level below a schema's own (the definitions in `$defs` are reached through `$ref`s instead), each
 * with whether it is a combinator branch.
 */
function* nested(s: Record<string, unknown>): Generator<[unknown, boolean]> {
  for (const key of [...ONE, 'additionalItems']) if (isObject(s[key])) yield [s[key], false];
  for (const key of ['properties', 'patternProperties']) if (isObject(s[key])) for (const v of Object.values(s[key] as object)) yield [v, false];
  // (`items` as a list is an older draft's tuple)
  for (const key of [...LIST, 'items']) if (Array.isArray(s[key])) for (const v of s[key] as unknown[]) yield [v, BRANCHES.includes(key)];
}

/**
 * The levels a `$ref` adds to its target's: none from a combinator branch (XGrammar's compile took 27 of pydantic's
 * optional models, a property and an anyOf branch `$ref` each, where it failed at 54 nested objects), one elsewhere
 * (it failed at 40 objects linked through a property `$ref` each).
 */
const hop = (branch: boolean): number => (branch ? 0 : 1);

const tooDeep = (path: string, how: string) =>
  new ConstraintError(`JSON Schema at ${path}${how} nests more than ${SCHEMA_LIMITS.depth} levels deep (each property, item, combinator branch and $ref target is a level, a branch's own $ref target none), the most one schema may nest`);

/** Refuses an object with more optional properties than {@link SCHEMA_LIMITS} allows (XGrammar's compile grows as their square). */
function checkOptionalProperties(s: Record<string, unknown>, path: string): void {
  if (!isObject(s.properties)) return;
  const required = new Set(Array.isArray(s.required) ? (s.required as unknown[]) : []);
  const optional = Object.keys(s.properties).filter((k) => !required.has(k)).length;
  if (optional > SCHEMA_LIMITS.optionalProperties) {
    throw new ConstraintError(`JSON Schema keyword "properties" at ${path}: ${optional} properties are optional (not in "required"); at most ${SCHEMA_LIMITS.optionalProperties} of one object may be`);
  }
}

/**
 * The node with `unevaluatedProperties`/`unevaluatedItems` written as what they mean where no applicator stands beside
 * them: only the node's own properties and items are evaluated there, so they are `additionalProperties` and the
 * items after the tuple, or nothing where those are given (so the checks on those apply: XGrammar read them so
 * itself, beside a declared property with another schema too, and beside an applicator, where they mean more:
 * `{"allOf": [{"prefixItems": [true]}, {"unevaluatedItems": false}]}` wrote `[false]`). Read from the node as
 * written, and again once {@link rewriteCombinations} has merged an `allOf` or a `$ref` into it, where what its branches
 * evaluate is the merged node's own (a branch's own `unevaluated*` beside another branch's properties or items is
 * refused there: it evaluates only that branch's); beside an applicator that remains they are left to be refused,
 * but for `true` or `{}`, which constrain nothing and are dropped.
 */
function withUnevaluated(node: Record<string, unknown>): Record<string, unknown> {
  if (!('unevaluatedProperties' in node) && !('unevaluatedItems' in node)) return node;
  const { unevaluatedProperties: properties, unevaluatedItems: items, ...out } = node;
  if (APPLICATORS.some((k) => k in node)) {
    const constrains = (v: unknown) => v !== undefined && v !== true && !(isObject(v) && Object.keys(v).every(annotates));
    return { ...out, ...(constrains(properties) ? { unevaluatedProperties: properties } : {}), ...(constrains(items) ? { unevaluatedItems: items } : {}) };
  }
  if (properties !== undefined && !('additionalProperties' in node)) out.additionalProperties = properties;
  // (a list of `items` is an older draft's tuple: its additional items are `additionalItems`)
  if (items !== undefined && !(Array.isArray(node.items) ? 'additionalItems' in node : 'items' in node)) out[Array.isArray(node.items) ? 'additionalItems' : 'items'] = items;
  return out;
}

/**
 * Array items as JSON Schema reads them where XGrammar's strict mode did not: an array without `items` or
 * `prefixItems` takes any items (given a `minItems` it failed to compile, "minItems is greater than the number of
 * prefixItems, but additional items are not allowed: 1 > 0"; given a `maxItems` it wrote only `[]`), as do the items
 * past a tuple shorter than its `minItems`. A tuple without `items` stays closed: its replies are tuples the schema
 * admits, as objects carry only their declared properties. An array that must hold more items than `items: false`
 * leaves room for is refused by name.
 */
function withItems(s: Record<string, unknown>, path: string): Record<string, unknown> {
  const tuple = Array.isArray(s.prefixItems) ? s.prefixItems.length : 0;
  const needed = typeof s.minItems === 'number' ? s.minItems : 0;
  if (s.items === false && needed > tuple) {
    throw new ConstraintError(`JSON Schema keyword "items" at ${path} is false, so an array holds at most ${tuple} items (its "prefixItems"), fewer than its "minItems" ${needed} (it admits no array)`);
  }
  const types = Array.isArray(s.type) ? (s.type as unknown[]) : [s.type];
  if (!types.includes('array') || 'items' in s || (tuple > 0 && needed <= tuple)) return s;
  return { ...s, items: true };
}

/**
 * The schema with the `false` subschemas that cannot hold a value dropped: optional properties (never written then),
 * `anyOf`/`oneOf` branches, and the tuple items from the first `false` one on (the array ends before it: `items`
 * becomes false). XGrammar refuses any `false` with its own internal check ("prefixItems contains false"). A required
 * `false` property, only `false` branches, or a `false` item before `minItems` admit no value and are refused.
 */
function withoutFalse(s: Record<string, unknown>, path: string): Record<string, unknown> {
  let out = s;
  if (isObject(s.properties) && Object.values(s.properties).includes(false)) {
    const required = Array.isArray(s.required) ? (s.required as unknown[]) : [];
    const never = Object.keys(s.properties).find((k) => s.properties && (s.properties as Record<string, unknown>)[k] === false && required.includes(k));
    if (never !== undefined) throw new ConstraintError(`JSON Schema at ${path}: "required" names "${never}", whose schema is false (it admits no value)`);
    out = { ...out, properties: Object.fromEntries(Object.entries(s.properties).filter(([, v]) => v !== false)) };
  }
  for (const key of ['anyOf', 'oneOf']) {
    const branches = s[key];
    if (!Array.isArray(branches) || !branches.includes(false)) continue;
    const kept = branches.filter((b) => b !== false);
    if (kept.length === 0) throw new ConstraintError(`JSON Schema keyword "${key}" at ${path}: every branch is false (it admits no value)`);
    out = { ...out, [key]: kept };
  }
  const end = Array.isArray(s.prefixItems) ? s.prefixItems.indexOf(false) : -1;
  if (end >= 0) {
    if (typeof s.minItems === 'number' && s.minItems > end) {
      throw new ConstraintError(`JSON Schema keyword "prefixItems" at ${path}: item ${end} is false, so an array holds at most ${end} items, fewer than its "minItems" ${s.minItems} (it admits no array)`);
    }
    const { prefixItems: _, ...rest } = out;
    out = { ...rest, ...(end > 0 ? { prefixItems: (s.prefixItems as unknown[]).slice(0, end) } : {}), items: false };
  }
  return out;
}

/** Checks and rewrites a schema; throws ConstraintError naming the first unenforceable keyword. */
export function prepareJsonSchema(schema: unknown): PreparedSchema {
  const rules = new Map<string, string>();
  // `$ref`s XGrammar does not follow itself (all but the root and a definition by a plain name): it aborted on a pointer
  // with an escape (`~1`, `~0`, `%20`), which it does not decode, and on one through a list (`#/prefixItems/0`, "Cannot
  // find field 0"). Each target is copied under a plain name into the root's `$defs`.
  const aliases = new Map<string, string>();
  const aliased: Record<string, unknown> = {};
  const listed = { values: 0, chars: 0, properties: 0 };
  // (the keywords beside an anyOf/oneOf are written into each branch: their one `properties` counts once)
  const counted = new WeakSet<object>();
  const draft2020 = isDraft2020(schema);
  // The levels each `$ref` target nests below itself, kept for each place that opens it. A `$ref` to a schema it is
  // within (`open`) opens nothing: the grammar refers to that schema's rule there, a recursion.
  const heights = new Map<unknown, number>();
  const open = new Set<unknown>();
  /** The levels below `target`, exact up to `room`; past it a number above `room` (refused, so a cut count is never reused). */
  const below = (target: unknown, room: number): number => {
    if (!isObject(target) || open.has(target)) return 0;
    let known = heights.get(target);
    if (known === undefined) {
      open.add(target);
      known = height(target, room);
      open.delete(target);
      heights.set(target, known);
    }
    return known;
  };
  /** The same for a schema within a target (a combinator branch or not), its `$ref`'s target and subschemas below it. */
  const height = (node: Record<string, unknown>, room: number, branch = false): number => {
    if (room < 0) return 0;
    let most = typeof node.$ref === 'string' ? hop(branch) + below(lookupLocalRef(node.$ref, schema), room - hop(branch)) : 0;
    for (const [child, isBranch] of nested(node)) {
      if (most > room) break;
      most = Math.max(most, 1 + (isObject(child) ? height(child, room - 1, isBranch) : 0));
    }
    return most;
  };
  const visit = (node: unknown, path: string, depth: number, branch = false): unknown => {
    // (before anything walks the node: deeper, such a schema also ran these walks out of the JavaScript stack)
    if (depth > SCHEMA_LIMITS.depth) throw tooDeep(path, '');
    open.add(node);
    const out = prepare(node, path, depth, branch);
    open.delete(node);
    return out;
  };
  const prepare = (node: unknown, path: string, depth: number, branch: boolean): unknown => {
    if (node === false && path === '#') throw new ConstraintError('JSON Schema at # is false: it admits no value');
    if (typeof node === 'boolean') return node;
    if (!node || typeof node !== 'object' || Array.isArray(node)) {
      throw new ConstraintError(`JSON Schema at ${path} must be an object or a boolean`);
    }
    checkKeywordValues(node as Record<string, unknown>, path);
    // (again once an allOf or a `$ref` is merged: its branches' properties and items are the merged node's own)
    const combined = withUnevaluated(rewriteCombinations(withUnevaluated(node as Record<string, unknown>), schema, path));
    const s = withItems(withoutFalse(withRecordKeywords(withTupleItems(combined, draft2020, path), path), path), path);
    let ref: string | undefined;
    if (s.$ref !== undefined) {
      const target = typeof s.$ref === 'string' ? lookupLocalRef(s.$ref, schema) : undefined;
      // (XGrammar ignored the others: an anchor, a relative or external URI admitted any value)
      if (target === undefined) {
        throw new ConstraintError(`JSON Schema keyword "$ref" at ${path}: ${JSON.stringify(s.$ref)} cannot be resolved; only JSON pointers into this schema (#/$defs/name) are followed`);
      }
      if (target === false) throw new ConstraintError(`JSON Schema keyword "$ref" at ${path}: ${JSON.stringify(s.$ref)} points at a false schema (it admits no value)`);
      const room = SCHEMA_LIMITS.depth - depth - hop(branch);
      if (below(target, room) > room) throw tooDeep(path, `, its "$ref" ${JSON.stringify(s.$ref)} opened there,`);
      if (!FOLLOWED_REF.test(s.$ref as string)) {
        ref = aliases.get(s.$ref as string);
        if (ref === undefined) {
          ref = `__reasonplug_ref_${aliases.size}`;
          aliases.set(s.$ref as string, ref);
          aliased[ref] = visit(target, s.$ref as string, depth + hop(branch));
        }
      }
    }
    checkObjectKeywords(s, path);
    checkOptionalProperties(s, path);
    if (isObject(s.properties) && !counted.has(s.properties)) {
      counted.add(s.properties);
      listed.properties += Object.keys(s.properties).length;
      if (listed.properties > SCHEMA_LIMITS.properties) throw new ConstraintError(`JSON Schema at ${path}: the schema declares more than ${SCHEMA_LIMITS.properties} object properties (${listed.properties} by here), the most one schema may declare`);
    }
    for (const key of Object.keys(s)) {
      if (key in UNENFORCEABLE) throw new ConstraintError(`JSON Schema keyword "${key}" at ${path} cannot be enforced: ${UNENFORCEABLE[key]}`);
    }
    if ('const' in s || Array.isArray(s.enum)) {
      // (rewriteCombinations left only the listed values, filtered by the keywords beside them)
      const key = placeholder(rules.size);
      const values = 'const' in s ? [s.const] : (s.enum as unknown[]);
      listed.values += values.length;
      if (listed.values > SCHEMA_LIMITS.values) throw new ConstraintError(`JSON Schema at ${path}: the schema lists more than ${SCHEMA_LIMITS.values} enum/const values (${listed.values} by here), the most one schema may list`);
      const texts = values.map((v) => JSON.stringify(v));
      listed.chars += texts.reduce((n, t) => n + t.length, 0);
      if (listed.chars > SCHEMA_LIMITS.valueChars) throw new ConstraintError(`JSON Schema at ${path}: the schema's enum/const values run to more than ${SCHEMA_LIMITS.valueChars} characters of JSON (${listed.chars} by here), the most one schema may list`);
      rules.set(`"\\"${key}\\""`, literalTrie(texts));
      return { const: key };
    }
    if (s.uniqueItems === true) throw new ConstraintError(`JSON Schema keyword "uniqueItems" at ${path} cannot be enforced: item uniqueness is not supported`);
    if (s.format !== undefined && (typeof s.format !== 'string' || !SUPPORTED_FORMATS.includes(s.format))) {
      throw new ConstraintError(
        `JSON Schema keyword "format" at ${path}: format ${JSON.stringify(s.format)} cannot be enforced (supported: ${SUPPORTED_FORMATS.join(', ')})`,
      );
    }
    const lengthKey = ['minLength', 'maxLength'].find((k) => s[k] !== undefined);
    if (typeof s.format === 'string' && lengthKey && typeof s.pattern !== 'string') {
      throw new ConstraintError(`JSON Schema keyword "${lengthKey}" at ${path} cannot be enforced together with "format"`);
    }
    if (Array.isArray(s.oneOf)) checkOneOf(s.oneOf, schema, path);
    const out: Record<string, unknown> = { ...s };
    // Open beside declared properties, XGrammar's additional key could take a declared name with any value: the
    // reply holds the declared properties only, a subset of what the schema admits (each such object valid).
    if (s.additionalProperties === true && isObject(s.properties) && Object.keys(s.properties).length > 0) out.additionalProperties = false;
    if (typeof s.pattern === 'string') {
      // XGrammar enforces a pattern and ignores a format or length bound beside it (it wrote "abcd" for
      // `^[a-z]+$` with maxLength 3). A pattern is more specific than its format (zod writes both for e-mail, UUID,
      // ISO dates and IPs, its patterns lying within the formats): the pattern is enforced. A length bound is
      // folded into a pattern that is one repeated atom; beside any other it cannot be enforced.
      let pattern = s.pattern;
      if (lengthKey) {
        const bounded = boundedPattern(pattern, s.minLength as number | undefined, s.maxLength as number | undefined);
        if (bounded === undefined) {
          throw new ConstraintError(
            `JSON Schema keywords "pattern" and "${lengthKey}" at ${path} cannot be enforced together (the grammar engine ignores a ` +
              'length beside a pattern) unless the pattern is one repeated character or class, such as ^[a-z]+$; put the length into the pattern',
          );
        }
        pattern = bounded;
        delete out.minLength;
        delete out.maxLength;
      }
      delete out.format;
      // In a group: XGrammar binds the string's quotes to the first and last branch of a top-level `|` (`cat|dog`
      // wrote `"cat` and `dog"`, which are no JSON strings).
      out.pattern = rewriteRegex(`(?:${pattern})`, true, `JSON Schema keyword "pattern" at ${path}`);
    } else if (typeof s.format === 'string' && s.format in FORMAT_PATTERNS) {
      delete out.format;
      out.pattern = FORMAT_PATTERNS[s.format];
    }
    for (const key of ONE) if (key in s && typeof s[key] === 'object' && !Array.isArray(s[key])) out[key] = visit(s[key], `${path}/${key}`, depth + 1);
    for (const key of MAP) {
      if (s[key] && typeof s[key] === 'object') {
        out[key] = Object.fromEntries(Object.entries(s[key] as object).map(([k, v]) => [k, visit(v, `${path}/${key}/${k}`, depth + 1)]));
      }
    }
    for (const key of LIST) if (Array.isArray(s[key])) out[key] = (s[key] as unknown[]).map((x, i) => visit(x, `${path}/${key}/${i}`, depth + 1, BRANCHES.includes(key)));
    if (ref !== undefined) out.$ref = `#/$defs/${ref}`;
    if (out.properties && typeof out.properties === 'object' && Object.keys(out.properties).some((k) => NEEDS_ESCAPE.test(k))) {
      const renamed = new Map<string, string>();
      for (const name of Object.keys(out.properties)) {
        if (!NEEDS_ESCAPE.test(name)) continue;
        const key = placeholder(rules.size);
        rules.set(`"\\"${key}\\""`, ebnfLiteral(JSON.stringify(name)));
        renamed.set(name, key);
      }
      const rename = (name: string) => renamed.get(name) ?? name;
      out.properties = Object.fromEntries(Object.entries(out.properties as object).map(([k, v]) => [rename(k), v]));
      if (Array.isArray(out.required)) out.required = (out.required as string[]).map(rename);
    }

    const numeric = NUMERIC.filter((k) => s[k] !== undefined);
    if (numeric.length === 0) return out;
    for (const k of numeric) if (typeof s[k] !== 'number' || !Number.isFinite(s[k])) throw new ConstraintError(`JSON Schema keyword "${k}" at ${path} must be a finite number`);
    const types = Array.isArray(s.type) ? (s.type as unknown[]) : [s.type];
    const numberType = types.includes('number') ? 'number' : types.includes('integer') ? 'integer' : undefined;
    if (!numberType) throw new ConstraintError(`JSON Schema keyword "${numeric[0]}" at ${path} is enforced only with "type": "integer" or "number"`);
    const key = placeholder(rules.size);
    const bounds = Object.fromEntries(numeric.map((k) => [k, s[k] as number]));
    rules.set(`"\\"${key}\\""`, numberRangeEbnf({ integer: numberType === 'integer', ...bounds }, path));
    const rest = Object.fromEntries(Object.entries(out).filter(([k]) => !NUMERIC.includes(k as never) && k !== 'type'));
    const others = types.filter((t) => t !== 'number' && t !== 'integer');
    // With a type list, the bounded number is one branch and the other types another.
    return others.length ? { anyOf: [{ const: key }, { ...rest, type: others }] } : { ...rest, const: key };
  };
  const prepared = visit(schema, '#', 0);
  if (aliases.size === 0 || !isObject(prepared)) return { schema: prepared as JsonSchema, rules };
  return { schema: { ...prepared, $defs: { ...(isObject(prepared.$defs) ? prepared.$defs : {}), ...aliased } } as JsonSchema, rules };
}

/** Replaces the placeholders in a generated grammar by their rules. */
export function spliceRules(ebnf: string, rules: Map<string, string>): string {
  let out = ebnf;
  let k = 0;
  for (const [literal, rule] of rules) {
    const name = `reasonplug_rule_${k++}`;
    if (!out.includes(literal)) continue; // the subschema was unreachable
    out = out.split(literal).join(name) + `\n${name} ::= ${rule}`;
  }
  return out;
}
