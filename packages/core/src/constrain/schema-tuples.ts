/**
 * Tuples as drafts before 2020-12 write them (zod's draft-07 output, zod-to-json-schema's): `items` a list of schemas,
 * one per position, and `additionalItems` the schema of the items after them. XGrammar reads 2020-12's form only
 * (`prefixItems`, then `items` for the rest) and refused the list ("items must be a boolean or an object"), so the
 * older form is rewritten into it.
 */
import { ConstraintError } from './types.js';

type Schema = Record<string, unknown>;

/** Whether a schema document declares draft 2020-12 (where `items` takes one schema and `additionalItems` is gone). */
export function isDraft2020(root: unknown): boolean {
  const declared = typeof root === 'object' && root !== null ? (root as Schema).$schema : undefined;
  return typeof declared === 'string' && declared.includes('/draft/2020-12/');
}

/**
 * The node with a list-form `items` read as `prefixItems` and `additionalItems` as the `items` after them. Under
 * draft 2020-12 a list-form `items` is no schema and is refused; beside a one-schema `items` (or under 2020-12)
 * `additionalItems` constrains nothing and is dropped.
 */
export function withTupleItems(s: Schema, draft2020: boolean, path: string): Schema {
  if (!('items' in s) && !('additionalItems' in s)) return s;
  const { additionalItems, ...rest } = s;
  if (!Array.isArray(s.items)) return 'additionalItems' in s ? rest : s;
  if (draft2020) throw new ConstraintError(`JSON Schema keyword "items" at ${path} is a list, which draft 2020-12 (the schema's "$schema") does not allow; write the tuple as "prefixItems"`);
  if ('prefixItems' in s) throw new ConstraintError(`JSON Schema keywords "items" (a list) and "prefixItems" at ${path} both give a tuple's items; give one`);
  const { items, ...others } = rest;
  return { ...others, prefixItems: items, ...(additionalItems !== undefined ? { items: additionalItems } : {}) };
}
