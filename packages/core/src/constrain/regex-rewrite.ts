/**
 * Regular expressions rewritten where XGrammar 0.1.27 would write something else than they mean.
 *
 * - Bytes for characters: its `.` becomes the range `[\0-\U0010ffff]`, which it matches one UTF-8 byte at a time
 *   (`.{3}` takes "¨b", two characters), and its `\s` carries a raw byte 0xA0. Classes that exclude ASCII
 *   characters it reads by code point, so `.` is written as `[^\n\r]` (JavaScript's `.` but for U+2028/U+2029,
 *   which its classes cannot name) and `\s` as its ASCII members `[\t\n\v\f\r ]` (a subset: no-break and other
 *   Unicode spaces are not written).
 * - Inside a JSON string (a schema's `pattern`) it writes what the pattern matches as is, unescaped: `[^,]+` let a
 *   reply hold a raw `"` and end the string early. There a character the pattern names outside a class (a quote,
 *   `\\`, `\n`) is written as its JSON escape, which decodes to it; `.`, classes, `\W`, `\D` and `\S` leave out the
 *   quote, the backslash and the control characters (a subset of what they match), and `\s` is a space.
 * - A class naming a character past ASCII it matches on UTF-8 bytes (`[α-ω]` wrote "ñ"): such classes are refused,
 *   whether the character is written or escaped (`[\u03b1-\u03c9]`).
 */

import { ConstraintError } from './types.js';

const SPACE = '\\t\\n\\v\\f\\r ';

/** Code points a JSON string must escape: the quote, the backslash, the control characters. */
const jsonUnsafe = (cp: number) => cp < 0x20 || cp === 0x22 || cp === 0x5c;

/** A code point written for a regex, inside a class or not (escaped where regex syntax would read it otherwise). */
function written(cp: number, inClass: boolean): string {
  if (cp < 0x20 || cp === 0x7f) return `\\x${cp.toString(16).padStart(2, '0')}`;
  const ch = String.fromCodePoint(cp);
  return (inClass ? /[\\\]\[^-]/ : /[\\^$.|?*+()[\]{}]/).test(ch) ? `\\${ch}` : ch;
}

/** The regex matching `cp` as JSON text writes it: itself, or its escape (`\"`, `\\`, `\n`, `\u000b`). */
function jsonLiteral(cp: number): string {
  if (!jsonUnsafe(cp)) return written(cp, false);
  return JSON.stringify(String.fromCodePoint(cp)).slice(1, -1).replace(/\\/g, '\\\\');
}

const SINGLE_ESCAPES: Record<string, number> = { t: 9, n: 10, v: 11, f: 12, r: 13, '0': 0 };

/**
 * The code point an escape names (`x41`, `u00e9`, `cJ`, `n`, `.`: the text after the backslash) and the escape's
 * length; undefined for anything else (`\d`, `\p{L}`, `\1`, `\b`), which is kept as written.
 */
function escapedCodePoint(rest: string): { cp: number; length: number } | undefined {
  const hex = /^(?:x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4}))/.exec(rest);
  if (hex) return { cp: parseInt(hex[1] ?? hex[2]!, 16), length: hex[0].length };
  // A control escape, as ECMAScript reads it: the letter's code point modulo 32 (`\cJ` a newline). Kept as written,
  // XGrammar wrote the raw control character inside a JSON string, and misread `[\cA-\cZ]`.
  if (/^c[A-Za-z]/.test(rest)) return { cp: rest.charCodeAt(1) % 32, length: 2 };
  const c = rest[0] ?? '';
  if (c in SINGLE_ESCAPES) return { cp: SINGLE_ESCAPES[c]!, length: 1 };
  if (c === '' || /[0-9A-Za-z]/.test(c)) return undefined;
  return { cp: c.codePointAt(0)!, length: c.length };
}

/** Class members for the code points lo..hi but those a JSON string must escape. */
function safeRange(lo: number, hi: number): string {
  let parts: [number, number][] = [[lo, hi]];
  for (const [a, b] of [[0, 0x1f], [0x22, 0x22], [0x5c, 0x5c]] as const) {
    parts = parts.flatMap(([x, y]): [number, number][] => [[x, Math.min(y, a - 1)], [Math.max(x, b + 1), y]]).filter(([x, y]) => x <= y);
  }
  return parts.map(([x, y]) => (x === y ? written(x, true) : `${written(x, true)}-${written(y, true)}`)).join('');
}

/**
 * One character of a pattern at `at`: its code point (written as is or escaped), or the letter of a shorthand
 * escape (`\d`, `\s`, `\p`, …); and where the next one starts.
 */
function readAtom(pattern: string, at: number): { cp?: number; shorthand?: string; end: number } {
  if (pattern[at] !== '\\') {
    const cp = pattern.codePointAt(at)!;
    return { cp, end: at + String.fromCodePoint(cp).length };
  }
  const e = escapedCodePoint(pattern.slice(at + 1));
  return e ? { cp: e.cp, end: at + 1 + e.length } : { shorthand: pattern[at + 1] ?? '', end: at + 2 };
}

/** The classes that `\W`, `\D` and `\S` negate. */
const NEGATED_SHORTHAND: Record<string, string> = { W: 'a-zA-Z0-9_', D: '0-9', S: SPACE };

/** `text` as a regular expression that matches it alone. */
export function regexLiteral(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * `pattern` rewritten for XGrammar; `json`: the text is the content of a JSON string (a schema's `pattern`).
 * Throws a ConstraintError, naming `where`, for `\W`, `\D` or `\S` inside a class of a JSON pattern, for a
 * class member that is not ASCII, and for a back-reference or a lookaround, which XGrammar's regular expressions lack.
 */
export function rewriteRegex(pattern: string, json = false, where = 'the pattern'): string {
  const unsafe = json ? '"\\\\\\x00-\\x1f' : '';
  let out = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '[') {
      const negated = pattern[i + 1] === '^';
      let j = i + (negated ? 2 : 1);
      let body = '';
      // Class members up to the closing bracket: code points, ranges, shorthands.
      while (j < pattern.length && pattern[j] !== ']') {
        const atom = readAtom(pattern, j);
        j = atom.end;
        if (atom.cp === undefined) {
          const letter = atom.shorthand!;
          // (JavaScript and Python read `[\1]` as the octal escape \x01, XGrammar as the digit: neither is what it says)
          if (/[0-9]/.test(letter)) throw new ConstraintError(`${where}: \\${letter} inside a character class cannot be enforced`);
          if (letter === 's') body += json && !negated ? ' ' : SPACE;
          else if (json && !negated && letter in NEGATED_SHORTHAND) {
            throw new ConstraintError(`${where}: \\${letter} inside a character class cannot be enforced inside a JSON string`);
          } else if (negated && letter in NEGATED_SHORTHAND) {
            // (XGrammar reads it as another member: [^\s\S], which matches nothing, let it write "“")
            throw new ConstraintError(`${where}: \\${letter} inside a negated character class cannot be enforced; write the class without it`);
          } else body += `\\${letter}`;
          continue;
        }
        let hi = atom.cp;
        if (pattern[j] === '-' && j + 1 < pattern.length && pattern[j + 1] !== ']') {
          const end = readAtom(pattern, j + 1);
          if (end.cp !== undefined) {
            hi = end.cp;
            j = end.end;
          }
        }
        // XGrammar matches such classes on UTF-8 bytes ([α-ω] wrote "ñ"), written or escaped alike.
        if (Math.max(atom.cp, hi) > 0x7f) {
          throw new ConstraintError(`${where}: character classes with non-ASCII characters cannot be enforced; write alternatives (α|β) instead`);
        }
        body += json && !negated ? safeRange(atom.cp, hi) : atom.cp === hi ? written(atom.cp, true) : `${written(atom.cp, true)}-${written(hi, true)}`;
      }
      if (j >= pattern.length) throw new ConstraintError(`${where}: the character class opened at ${i} is never closed with "]"`);
      // (every member left out: XGrammar refuses the empty class, saying only that it is empty)
      if (json && !negated && !body && j > i + 1) {
        throw new ConstraintError(`${where}: the character class ${pattern.slice(i, j + 1)} holds only characters a JSON string escapes (the quote, the backslash, control characters), which a class cannot write; write them outside a class (\\cA|\\cB)`);
      }
      out += negated ? `[^${body}${unsafe}]` : `[${body}]`;
      i = j;
      continue;
    }
    if (c === '\\') {
      // (XGrammar's regular expressions have none: its compile fails, for the whole request, after any check here)
      if (/^\\([1-9]|k<)/.test(pattern.slice(i, i + 3))) throw new ConstraintError(`${where}: back-references (${pattern.slice(i, i + 2)}…) cannot be enforced`);
      const atom = readAtom(pattern, i);
      const letter = atom.shorthand ?? '';
      if (atom.cp !== undefined) out += json ? jsonLiteral(atom.cp) : pattern.slice(i, atom.end);
      else if (letter === 's') out += json ? '[ ]' : `[${SPACE}]`;
      else if (json && letter in NEGATED_SHORTHAND) out += `[^${NEGATED_SHORTHAND[letter]}${unsafe}]`;
      else out += `\\${letter}`;
      i = atom.end - 1;
      continue;
    }
    // (nor lookarounds: its compile fails on them too)
    if (c === '(' && /^\(\?(=|!|<=|<!)/.test(pattern.slice(i, i + 4))) throw new ConstraintError(`${where}: lookaround assertions (${pattern.slice(i, i + (pattern[i + 2] === '<' ? 4 : 3))}…) cannot be enforced`);
    if (c === '.') out += json ? `[^${unsafe}]` : '[^\\n\\r]';
    else if (json && jsonUnsafe(c.codePointAt(0)!)) out += jsonLiteral(c.codePointAt(0)!);
    else out += c;
  }
  return out;
}
