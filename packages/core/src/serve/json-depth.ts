/**
 * How deeply a request body nests. JSON.parse takes any depth, but what reads a body afterwards (chat templates,
 * schema compilers, tool-argument formatting) walks it recursively: a body thousands of levels deep overflowed the
 * stack as a 500, and a schema a hundred levels deep ran the grammar compiler out of its WebAssembly memory.
 */

/** Nesting a request body may have: far beyond any real message, schema or tool argument, well within every reader. */
export const MAX_BODY_DEPTH = 64;

/** The deepest nesting of arrays and objects in `value` (0 for a scalar), counted without recursion, up to `stopAt`. */
export function jsonDepth(value: unknown, stopAt = Infinity): number {
  let deepest = 0;
  const pending: [unknown, number][] = [[value, 0]];
  while (pending.length > 0) {
    const [v, depth] = pending.pop()!;
    if (v === null || typeof v !== 'object') continue;
    const level = depth + 1;
    if (level > deepest) deepest = level;
    if (deepest > stopAt) return deepest;
    for (const child of Array.isArray(v) ? v : Object.values(v)) pending.push([child, level]);
  }
  return deepest;
}
