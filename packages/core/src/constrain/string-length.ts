/**
 * Rewrites the length-bounded strings of XGrammar's JSON Schema grammars into rules its token-mask cache can
 * decide ahead of time. XGrammar writes `minLength`/`maxLength` as a counted repetition, `"\"" [^"\\\r\n]{m,n} "\""`,
 * which it matches with a repetition counter: inside such a string most tokens stay undecided until run time, and
 * its bitmask took 0.4–18 ms per token on a 151,936-token vocabulary (XGrammar issues #465, #852). Written instead
 * as one rule per count of characters read, each shaped like XGrammar's own JSON string rule (the closing quote
 * or one more character, and a look-ahead for what follows a JSON string), every count's mask is precomputed.
 * The language is XGrammar's but for control characters: its class admits a raw tab or U+0001 inside the string,
 * which JSON forbids (JSON.parse refuses such a reply), so both forms, unrolled or kept, exclude U+0000–U+001F.
 */

/** A string of XGrammar's length-bounded form, as its schema converter prints it (one rule per line). */
const BOUNDED = /^([A-Za-z0-9_]+) ::= "\\"" \[\^"\\\\\\r\\n\]\{(\d+),(\d*)\} "\\""$/gm;
/** The characters such a string may hold: no escapes (XGrammar's bounded strings have none), no control characters. */
const CHAR = '[^"\\\\\\x00-\\x1f]';
/** After a JSON string come blanks (the grammar takes one or none), then a separator, the end of a container, or a key's colon. */
const FOLLOW = '(= [ \\n\\t]* [,}\\]:])';
/**
 * Above this many counts the rules' compile time (one mask per count over the whole vocabulary) outweighs the
 * per-token saving; XGrammar unrolls repetitions up to the same size itself.
 */
export const MAX_UNROLLED_LENGTH = 128;

/**
 * The grammar with each length-bounded string of at most {@link MAX_UNROLLED_LENGTH} counts rewritten. Strings
 * with the same bounds share their rules (each rule costs a pass over the vocabulary when compiled).
 */
export function unrollBoundedStrings(ebnf: string): string {
  const added = new Map<string, string[]>();
  const out = ebnf.replace(BOUNDED, (line, name: string, lo: string, hi: string) => {
    const min = Number(lo);
    const max = hi === '' ? undefined : Number(hi);
    if ((max ?? min) > MAX_UNROLLED_LENGTH || (max !== undefined && max < min)) return `${name} ::= "\\"" ${CHAR}{${lo},${hi}} "\\""`;
    // `…_i`: i characters read so far. Past `max` nothing more; past `min` (no max) any number more.
    const prefix = `reasonplug_string_${min}_${max ?? 'up'}`;
    const rule = (i: number) => `${prefix}_${i}`;
    if (!added.has(prefix)) {
      const last = max ?? min;
      const rules: string[] = [];
      for (let i = 0; i <= last; i++) {
        const alternatives: string[] = [];
        if (i >= min) alternatives.push('"\\""');
        if (i < last) alternatives.push(`${CHAR} ${rule(i + 1)}`);
        else if (max === undefined) alternatives.push(`${CHAR} ${rule(i)}`);
        rules.push(`${rule(i)} ::= (${alternatives.join(' | ')}) ${FOLLOW}`);
      }
      added.set(prefix, rules);
    }
    return `${name} ::= "\\"" ${rule(0)}`;
  });
  return added.size ? `${out}\n${[...added.values()].flat().join('\n')}` : out;
}
