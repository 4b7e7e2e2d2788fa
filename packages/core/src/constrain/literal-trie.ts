/**
 * A choice among literal texts as an EBNF prefix tree. XGrammar 0.1.27's matcher mis-accepts an alternation of
 * literals that share a prefix (`"\"a\"" | "\"b\"" | "\"ba\""` wrote `"baaaaaaaaa"`, as in XGrammar issue #618);
 * with the shared prefixes written once, no two alternatives start alike, and it accepts exactly the texts.
 */

/** An EBNF string literal of `text` (XGrammar reads JSON's escapes in its literals). */
export const ebnfLiteral = (text: string): string => JSON.stringify(text);

/** An EBNF expression that matches exactly `texts` (at least one; duplicates allowed). */
export function literalTrie(texts: readonly string[]): string {
  return node([...new Set(texts)].map((t) => [...t]));
}

/** The rest of the texts sharing one prefix, as code points: a text ended there is an empty list. */
function node(rests: string[][]): string {
  const ends = rests.some((r) => r.length === 0);
  const byFirst = new Map<string, string[][]>();
  for (const r of rests) {
    if (r.length === 0) continue;
    const [first, ...rest] = r;
    if (!byFirst.has(first!)) byFirst.set(first!, []);
    byFirst.get(first!)!.push(rest);
  }
  const branches = [...byFirst].map(([first, following]) => {
    // A run that every text below shares is one literal, not a chain of nested groups.
    let run = first;
    let below = following;
    while (below.length === 1 && below[0]!.length > 0) {
      run += below[0]![0];
      below = [below[0]!.slice(1)];
    }
    const after = below.length === 1 && below[0]!.length === 0 ? '' : ` ${node(below)}`;
    return `${ebnfLiteral(run)}${after}`;
  });
  if (branches.length === 0) return '""';
  const choice = branches.length === 1 && !ends ? branches[0]! : `(${branches.join(' | ')})`;
  return ends ? `${choice}?` : choice;
}
