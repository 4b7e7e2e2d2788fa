/**
 * Prepares a JSON Schema for the grammar engine: refuses, before any generation, the keywords it cannot enforce
 * (naming the keyword and where it is), and takes bounded numbers out of XGrammar's hands (see number-range.ts):
 * each becomes a placeholder `const` whose literal in the generated grammar is replaced by an exact rule.
 */
import { numberRangeEbnf } from './number-range.js';
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
};

/** The string formats the engine enforces. */
export const SUPPORTED_FORMATS: readonly string[] = [
  'email', 'date', 'time', 'date-time', 'duration', 'ipv4', 'ipv6', 'hostname', 'uuid',
  'uri', 'uri-reference', 'uri-template', 'json-pointer', 'relative-json-pointer',
];

/** Keywords whose value is one subschema, a map of them, or a list of them. */
const ONE = ['items', 'additionalProperties', 'additionalItems', 'propertyNames', 'unevaluatedProperties', 'unevaluatedItems'];
const MAP = ['properties', 'patternProperties', '$defs', 'definitions'];
const LIST = ['anyOf', 'oneOf', 'allOf', 'prefixItems'];
const NUMERIC = ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'multipleOf'] as const;

/** A schema ready to compile, and the grammar rules its placeholders stand for. */
export interface PreparedSchema {
  schema: JsonSchema;
  /** Placeholder literal (as it appears in the generated EBNF) → the rule text that replaces it. */
  rules: Map<string, string>;
}

const placeholder = (k: number) => `__reasonplug_number_${k}__`;

/** Checks and rewrites a schema; throws ConstraintError naming the first unenforceable keyword. */
export function prepareJsonSchema(schema: unknown): PreparedSchema {
  const rules = new Map<string, string>();
  const visit = (node: unknown, path: string): unknown => {
    if (typeof node === 'boolean') return node;
    if (!node || typeof node !== 'object' || Array.isArray(node)) {
      throw new ConstraintError(`JSON Schema at ${path} must be an object or a boolean`);
    }
    const s = node as Record<string, unknown>;
    for (const key of Object.keys(s)) {
      if (key in UNENFORCEABLE) throw new ConstraintError(`JSON Schema keyword "${key}" at ${path} cannot be enforced: ${UNENFORCEABLE[key]}`);
    }
    if (s.uniqueItems === true) throw new ConstraintError(`JSON Schema keyword "uniqueItems" at ${path} cannot be enforced: item uniqueness is not supported`);
    if (s.format !== undefined && (typeof s.format !== 'string' || !SUPPORTED_FORMATS.includes(s.format))) {
      throw new ConstraintError(
        `JSON Schema keyword "format" at ${path}: format ${JSON.stringify(s.format)} cannot be enforced (supported: ${SUPPORTED_FORMATS.join(', ')})`,
      );
    }
    const out: Record<string, unknown> = { ...s };
    for (const key of ONE) if (key in s && typeof s[key] === 'object' && !Array.isArray(s[key])) out[key] = visit(s[key], `${path}/${key}`);
    if (Array.isArray(s.items)) out.items = s.items.map((x, i) => visit(x, `${path}/items/${i}`));
    for (const key of MAP) {
      if (s[key] && typeof s[key] === 'object') {
        out[key] = Object.fromEntries(Object.entries(s[key] as object).map(([k, v]) => [k, visit(v, `${path}/${key}/${k}`)]));
      }
    }
    for (const key of LIST) if (Array.isArray(s[key])) out[key] = (s[key] as unknown[]).map((x, i) => visit(x, `${path}/${key}/${i}`));

    const numeric = NUMERIC.filter((k) => s[k] !== undefined);
    if (numeric.length === 0) return out;
    for (const k of numeric) if (typeof s[k] !== 'number' || !Number.isFinite(s[k])) throw new ConstraintError(`JSON Schema keyword "${k}" at ${path} must be a finite number`);
    if (s.type !== 'integer' && s.type !== 'number') {
      throw new ConstraintError(`JSON Schema keyword "${numeric[0]}" at ${path} is enforced only with "type": "integer" or "number"`);
    }
    const key = placeholder(rules.size);
    const bounds = Object.fromEntries(numeric.map((k) => [k, s[k] as number]));
    rules.set(`"\\"${key}\\""`, numberRangeEbnf({ integer: s.type === 'integer', ...bounds }, path));
    const rest = Object.fromEntries(Object.entries(out).filter(([k]) => !NUMERIC.includes(k as never) && k !== 'type'));
    return { ...rest, const: key };
  };
  return { schema: visit(schema, '#') as JsonSchema, rules };
}

/** Replaces the placeholders in a generated grammar by their rules. */
export function spliceRules(ebnf: string, rules: Map<string, string>): string {
  let out = ebnf;
  let k = 0;
  for (const [literal, rule] of rules) {
    const name = `reasonplug_number_${k++}`;
    if (!out.includes(literal)) continue; // the subschema was unreachable
    out = out.split(literal).join(name) + `\n${name} ::= ${rule}`;
  }
  return out;
}
