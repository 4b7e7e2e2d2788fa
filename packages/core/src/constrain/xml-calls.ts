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

/** A rule's name, as XGrammar reads one (its schema converter names `$defs` rules with their `-` and `.`). */
const RULE_NAME = /^[A-Za-z_][A-Za-z0-9_.-]*/;

/** A line that starts a rule: its name, and its text after `::=`. */
const RULE_START = new RegExp(`^(${RULE_NAME.source.slice(1)})\\s*::=(.*)$`);

/** `ebnf` with each name outside string literals and character classes replaced by what `rename` makes of it. */
function renameNames(ebnf: string, rename: (name: string) => string): string {
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
      const name = RULE_NAME.exec(ebnf.slice(i))![0];
      out += rename(name);
      i += name.length;
    } else {
      out += ch;
      i++;
    }
  }
  return out;
}

/** The rules of an EBNF grammar, each name's text after its `::=` (a rule runs on to the next line that starts one). */
function rulesOf(ebnf: string): Map<string, string> {
  const rules = new Map<string, string>();
  let name: string | undefined;
  for (const line of ebnf.split('\n')) {
    const start = RULE_START.exec(line);
    if (start) rules.set((name = start[1]!), start[2]!.trim());
    else if (name !== undefined && line.trim()) rules.set(name, `${rules.get(name)}\n${line}`);
  }
  return rules;
}

/** The names a rule's text holds (those of rules, and of a built-in's arguments: `TagDispatch(stop_eos=…)`). */
function namesIn(text: string): Set<string> {
  const names = new Set<string>();
  renameNames(text, (name) => {
    names.add(name);
    return name;
  });
  return names;
}

/**
 * Several grammars as the rules of one, for a grammar that picks among them (one per tool, one per argument):
 * grammar i's rules renamed `g<i>_…` (its root `roots[i]`), but for those it shares with the grammars before it (the
 * same name and text, reaching only rules shared so), written once as `shared_…`. XGrammar's compile time grows
 * with the square of a grammar's rules, and each schema's grammar holds all of JSON's rules for any value: side by
 * side, 100 tools' grammars took 14–27 s to compile over 32,000 tokens and 400 ran the library out of memory; with
 * those rules once, 0.35 s and 1.8 s. The rules of the grammar around them must not be named `shared_…` or `g` and
 * a digit.
 */
export function mergeGrammars(grammars: readonly string[]): { rules: string; roots: string[] } {
  // Each rule written once so far: its text, and the rules its grammar defined among the names it holds.
  const written = new Map<string, { text: string; reaches: string }>();
  const out: string[] = [];
  const roots = grammars.map((ebnf, i) => {
    const rules = rulesOf(ebnf);
    const reaches = new Map<string, string[]>();
    const users = new Map<string, string[]>();
    for (const [name, text] of rules) {
      const used = [...namesIn(text)].filter((n) => rules.has(n));
      reaches.set(name, used.sort());
      for (const n of used) users.set(n, [...(users.get(n) ?? []), name]);
    }
    const same = (name: string) => {
      const before = written.get(name);
      return !before || (before.text === rules.get(name) && before.reaches === reaches.get(name)!.join(' '));
    };
    // (the root is the caller's to name; a rule that reaches one not shared is not shared either)
    const shared = new Set([...rules.keys()].filter((name) => name !== 'root' && same(name)));
    const apart = [...rules.keys()].filter((name) => !shared.has(name));
    for (let k = 0; k < apart.length; k++) {
      for (const user of users.get(apart[k]!) ?? []) if (shared.delete(user)) apart.push(user);
    }
    const rename = (name: string) => (shared.has(name) ? `shared_${name}` : rules.has(name) ? `g${i}_${name}` : name);
    for (const [name, text] of rules) {
      if (shared.has(name)) {
        if (written.has(name)) continue;
        written.set(name, { text, reaches: reaches.get(name)!.join(' ') });
      }
      out.push(`${rename(name)} ::= ${renameNames(text, rename)}`);
    }
    return rename('root');
  });
  return { rules: out.join('\n'), roots };
}

/** The EBNF (rule `root`) of one call's arguments for `schema` (an object schema) in `form`. */
export async function xmlArgumentsEbnf(form: XmlCallForm, schema: JsonSchema, schemaEbnf: SchemaEbnf): Promise<string> {
  const root = schema as Record<string, unknown>;
  if (root.type !== undefined && root.type !== 'object') throw new ConstraintError(`tool parameters must be an object schema, not ${JSON.stringify(root.type)}`);
  const properties = (root.properties ?? {}) as Record<string, JsonSchema>;
  const required = new Set(Array.isArray(root.required) ? (root.required as string[]) : []);
  // Definitions a property refers to (`#/$defs/…`) go with it, its schema then converted on its own.
  const defs = Object.fromEntries(['$defs', 'definitions'].filter((k) => root[k] !== undefined).map((k) => [k, root[k]]));
  const keys = Object.keys(properties);
  // Each value's rule text; a JSON value's is its grammar's root, once the grammars are merged (JSON's rules once).
  const values: string[] = [];
  const json: { at: number; ebnf: string }[] = [];
  for (const [i, key] of keys.entries()) {
    const property = properties[key] as Record<string, unknown>;
    if (/[\n<>]/.test(key)) throw new ConstraintError(`tool parameter ${JSON.stringify(key)} cannot be written in tags (a newline, < or > in its name)`);
    const choices = stringChoices(property);
    if (choices) values.push(`(${choices.map(literal).join(' | ')}) ${literal(form.value)}`);
    else if (property.type === 'string') {
      // free text through the value's closing tag, which XGrammar's TagDispatch consumes with it
      values.push(`TagDispatch(stop_eos=false, stop_str=(${literal(form.value)}), loop_after_dispatch=false)`);
    } else {
      json.push({ at: i, ebnf: await schemaEbnf({ ...property, ...defs } as JsonSchema) });
      values.push('');
    }
  }
  const missing = [...required].filter((k) => !(k in properties));
  if (missing.length) throw new ConstraintError(`tool parameters require ${missing.map((k) => JSON.stringify(k)).join(', ')}, which its properties do not define`);
  const merged = mergeGrammars(json.map((j) => j.ebnf));
  json.forEach((j, k) => (values[j.at] = `${merged.roots[k]} ${literal(form.value)}`));
  const rules = merged.rules ? [merged.rules] : [];
  for (const [i, key] of keys.entries()) {
    rules.push(`xml_arg_${i} ::= ${literal(form.key[0] + key + form.key[1])} ${values[i]}`);
    const rest = i + 1 < keys.length ? `xml_rest_${i + 1}` : '""';
    rules.push(`xml_rest_${i} ::= ${required.has(key) ? `xml_arg_${i} ${rest}` : `xml_arg_${i} ${rest} | ${rest}`}`);
  }
  return [`root ::= ${keys.length ? 'xml_rest_0' : '""'}`, ...rules].join('\n');
}
