/**
 * The grammar of a tool call's arguments in an XML-like syntax (Qwen3-Coder's `<parameter=key>`, GLM-4.5's
 * `<arg_key>`; `XmlCallForm`): the schema's properties in its order, each required one once, each optional one once
 * or not at all; a string value as free text up to the value's closing tag (the template writes strings as they
 * are: code with newlines and `<`), an enum of strings as one of its values, any other value as the JSON its schema
 * admits. A string's other constraints (pattern, length, format) are not enforced on the free text.
 */
import type { XmlCallForm } from './tool-syntax.js';
import type { JsonSchema } from './types.js';
import { ConstraintError } from './types.js';

/** A JSON Schema's EBNF (its rule `root`), as the factory converts schemas. */
export type SchemaEbnf = (schema: JsonSchema) => Promise<string>;

/** An EBNF string literal of `text`. */
function literal(text: string): string {
  return JSON.stringify(text);
}

/** The strings of a schema that admits only strings and names them all (`enum`, `const`); undefined otherwise. */
function stringChoices(schema: Record<string, unknown>): string[] | undefined {
  const values = schema.const !== undefined ? [schema.const] : Array.isArray(schema.enum) ? schema.enum : undefined;
  if (!values || values.length === 0 || !values.every((v) => typeof v === 'string')) return undefined;
  return schema.type === undefined || schema.type === 'string' ? (values as string[]) : undefined;
}

/** Whether a value of this schema is written as it is: a string (and nothing else) of any content. */
export function isStringSchema(schema: unknown): boolean {
  if (!schema || typeof schema !== 'object') return false;
  const s = schema as Record<string, unknown>;
  return s.type === 'string' || stringChoices(s) !== undefined;
}

/**
 * `ebnf` with each rule it defines renamed `prefix` + name, where the name is defined or used (not inside string
 * literals or character classes), so that several converted schemas can share one grammar.
 */
export function prefixRules(ebnf: string, prefix: string): string {
  const defined = new Set([...ebnf.matchAll(/^([A-Za-z_][A-Za-z0-9_]*)\s*::=/gm)].map((m) => m[1]!));
  let out = '';
  let i = 0;
  while (i < ebnf.length) {
    const ch = ebnf[i]!;
    if (ch === '"' || ch === '[') {
      // a literal or a class, through its unescaped closing character
      const close = ch === '"' ? '"' : ']';
      let j = i + 1;
      while (j < ebnf.length && ebnf[j] !== close) j += ebnf[j] === '\\' ? 2 : 1;
      out += ebnf.slice(i, j + 1);
      i = j + 1;
    } else if (/[A-Za-z_]/.test(ch)) {
      const name = /^[A-Za-z_][A-Za-z0-9_]*/.exec(ebnf.slice(i))![0];
      out += defined.has(name) ? prefix + name : name;
      i += name.length;
    } else {
      out += ch;
      i++;
    }
  }
  return out;
}

/** The EBNF (rule `root`) of one call's arguments for `schema` (an object schema) in `form`. */
export async function xmlArgumentsEbnf(form: XmlCallForm, schema: JsonSchema, schemaEbnf: SchemaEbnf): Promise<string> {
  const root = schema as Record<string, unknown>;
  if (root.type !== undefined && root.type !== 'object') throw new ConstraintError(`tool parameters must be an object schema, not ${JSON.stringify(root.type)}`);
  const properties = (root.properties ?? {}) as Record<string, JsonSchema>;
  const required = new Set(Array.isArray(root.required) ? (root.required as string[]) : []);
  // Definitions a property refers to (`#/$defs/…`) go with it, its schema then converted on its own.
  const defs = Object.fromEntries(['$defs', 'definitions'].filter((k) => root[k] !== undefined).map((k) => [k, root[k]]));
  const rules: string[] = [];
  const keys = Object.keys(properties);
  for (const [i, key] of keys.entries()) {
    const property = properties[key] as Record<string, unknown>;
    if (/[\n<>]/.test(key)) throw new ConstraintError(`tool parameter ${JSON.stringify(key)} cannot be written in tags (a newline, < or > in its name)`);
    const opening = literal(form.key[0] + key + form.key[1]);
    const choices = stringChoices(property);
    let value: string;
    if (choices) value = `(${choices.map(literal).join(' | ')}) ${literal(form.value)}`;
    else if (property.type === 'string') {
      // free text through the value's closing tag, which XGrammar's TagDispatch consumes with it
      value = `TagDispatch(stop_eos=false, stop_str=(${literal(form.value)}), loop_after_dispatch=false)`;
    } else {
      const json = prefixRules(await schemaEbnf({ ...property, ...defs } as JsonSchema), `xml_json_${i}_`);
      rules.push(json);
      value = `xml_json_${i}_root ${literal(form.value)}`;
    }
    rules.push(`xml_arg_${i} ::= ${opening} ${value}`);
    const rest = i + 1 < keys.length ? `xml_rest_${i + 1}` : '""';
    rules.push(`xml_rest_${i} ::= ${required.has(key) ? `xml_arg_${i} ${rest}` : `xml_arg_${i} ${rest} | ${rest}`}`);
  }
  const missing = [...required].filter((k) => !(k in properties));
  if (missing.length) throw new ConstraintError(`tool parameters require ${missing.map((k) => JSON.stringify(k)).join(', ')}, which its properties do not define`);
  return [`root ::= ${keys.length ? 'xml_rest_0' : '""'}`, ...rules].join('\n');
}
