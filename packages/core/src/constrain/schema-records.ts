/**
 * Records (objects of any keys, one value schema) as zod writes them, read into keywords XGrammar enforces.
 * `z.record(z.string(), v)` is `propertyNames: {type: "string"}` beside `additionalProperties: v`; XGrammar, given
 * both, ignores the latter (the values went unchecked), so:
 * - a `propertyNames` that constrains nothing (`true`, `{}`, `{type: "string"}`: a property name is a string) is dropped;
 * - names from an `enum`/`const` (`z.record(z.enum([...]), v)`) become declared properties, each of schema `v`;
 * - names matching a `pattern` (`z.record(z.string().regex(r), v)`) become `patternProperties: {r: v}`.
 * `additionalProperties: {}` (zod's loose objects) is `true`. Any other `propertyNames` beside an `additionalProperties`
 * schema is refused by name.
 */
import { ANNOTATIONS } from './schema-combinations.js';
import { isObject } from './schema-refs.js';
import { ConstraintError } from './types.js';

type Schema = Record<string, unknown>;


/** The keywords of a `propertyNames` schema that say something of a name (`type: "string"` does not: every name is one). */
const nameKeywords = (v: Schema): string[] => Object.keys(v).filter((k) => !ANNOTATIONS.has(k) && !(k === 'type' && v.type === 'string'));

/** The node with its `propertyNames` and `additionalProperties` read as above. */
export function withRecordKeywords(node: Schema, path: string): Schema {
  const open = isObject(node.additionalProperties) && Object.keys(node.additionalProperties).every((k) => ANNOTATIONS.has(k));
  const s = open ? { ...node, additionalProperties: true } : node;
  const names = s.propertyNames;
  if (names === undefined) return s;
  const { propertyNames: _, ...rest } = s;
  const keys = isObject(names) ? nameKeywords(names) : [];
  if (names === true || (isObject(names) && keys.length === 0)) return rest;
  const values = s.additionalProperties;
  if (!isObject(values) || !isObject(names)) return s;
  const declared = isObject(s.properties) ? s.properties : {};
  if (keys.length === 1 && (keys[0] === 'enum' || keys[0] === 'const')) {
    const listed = keys[0] === 'enum' ? names.enum : [names.const];
    if (Array.isArray(listed) && listed.every((n): n is string => typeof n === 'string')) {
      const outside = (Array.isArray(s.required) ? (s.required as unknown[]) : []).find((k) => typeof k === 'string' && !listed.includes(k));
      if (outside !== undefined) throw new ConstraintError(`JSON Schema at ${path}: "required" names "${String(outside)}", which its "propertyNames" does not admit`);
      // (a declared property the names leave out can never be written; one they admit keeps its own schema)
      const properties = Object.fromEntries(listed.map((k) => [k, k in declared ? declared[k] : values]));
      return { ...rest, properties, additionalProperties: false };
    }
  }
  if (keys.length === 1 && typeof names.pattern === 'string' && Object.keys(declared).length === 0 && !('patternProperties' in s)) {
    return { ...rest, patternProperties: { [names.pattern]: values }, additionalProperties: false };
  }
  throw new ConstraintError(
    `JSON Schema keyword "propertyNames" at ${path} cannot be enforced beside an "additionalProperties" schema (XGrammar then ignores the latter) ` +
      'unless it is an enum of names, or one pattern beside no declared property; use patternProperties',
  );
}
