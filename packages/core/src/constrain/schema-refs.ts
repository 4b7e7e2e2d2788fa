/** Small readers of JSON Schema documents shared by the schema rewrites. */

/** A JSON object (not an array, not null). */
export const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * What a local `$ref` (`#`, `#/$defs/x`, any JSON pointer into `root`, RFC 6901 and URI escapes decoded) points at;
 * undefined for other references (an anchor `#name`, a URI) and pointers that lead nowhere.
 */
export function lookupLocalRef(ref: string, root: unknown): unknown {
  if (ref !== '#' && !ref.startsWith('#/')) return undefined;
  let target: unknown = root;
  for (const raw of ref.slice(2).split('/').filter((t, i, all) => t !== '' || all.length > 1)) {
    let key: string;
    try {
      key = decodeURIComponent(raw).replace(/~1/g, '/').replace(/~0/g, '~');
    } catch {
      return undefined; // a malformed escape
    }
    target = isObject(target) || Array.isArray(target) ? (target as Record<string, unknown>)[key] : undefined;
  }
  return target;
}
