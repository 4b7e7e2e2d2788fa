/**
 * JSON that stops short of its end (a reply the token limit cut off): the members of an object and the elements of a
 * list as far as they were written, each whole or cut off, so the whole ones can be read and the last one kept raw.
 */

/** A JSON value as written: its raw text, and whether it was written to its end. */
export interface PartialValue {
  raw: string;
  whole: boolean;
}

/**
 * The elements of the list that opens `text` (after blanks): each whole one, then the one cut off, if any; undefined
 * when `text` opens no list.
 */
export function listPrefix(text: string): PartialValue[] | undefined {
  let at = skipBlanks(text, 0);
  if (text[at] !== '[') return undefined;
  const out: PartialValue[] = [];
  for (at = skipBlanks(text, at + 1); at < text.length && text[at] !== ']'; at = skipBlanks(text, at + 1)) {
    const end = valueEnd(text, at);
    if (end === undefined) return [...out, { raw: text.slice(at), whole: false }];
    out.push({ raw: text.slice(at, end), whole: true });
    at = skipBlanks(text, end);
    if (text[at] !== ',') break;
  }
  return out;
}

/**
 * The members of the object that opens `text` (after blanks), by key: each whole value, then the one cut off, if any
 * (a member whose key or colon was cut off is left out); undefined when `text` opens no object.
 */
export function objectPrefix(text: string): Map<string, PartialValue> | undefined {
  let at = skipBlanks(text, 0);
  if (text[at] !== '{') return undefined;
  const out = new Map<string, PartialValue>();
  for (at = skipBlanks(text, at + 1); text[at] === '"'; at = skipBlanks(text, at + 1)) {
    const keyEnd = valueEnd(text, at);
    if (keyEnd === undefined) break;
    const key = JSON.parse(text.slice(at, keyEnd)) as string;
    at = skipBlanks(text, keyEnd);
    if (text[at] !== ':') break;
    at = skipBlanks(text, at + 1);
    if (at >= text.length) break;
    const end = valueEnd(text, at);
    if (end === undefined) {
      out.set(key, { raw: text.slice(at), whole: false });
      break;
    }
    out.set(key, { raw: text.slice(at, end), whole: true });
    at = skipBlanks(text, end);
    if (text[at] !== ',') break;
  }
  return out;
}

/** Whether `text` is JSON, whole. */
export function isJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

function skipBlanks(text: string, at: number): number {
  while (at < text.length && /\s/.test(text[at]!)) at++;
  return at;
}

/**
 * Where the value that starts at `at` ends: after its closing quote or bracket, or (a number, `true`, …) at the
 * first character that cannot continue it; undefined when the text stops first (a number at the very end may go on).
 */
function valueEnd(text: string, at: number): number | undefined {
  let depth = 0;
  for (let i = at; i < text.length; i++) {
    const c = text[i]!;
    if (c === '"') {
      i = stringEnd(text, i);
      if (i === -1) return undefined;
      if (depth === 0) return i + 1;
    } else if (c === '{' || c === '[') depth++;
    else if (depth > 0) {
      if ((c === '}' || c === ']') && --depth === 0) return i + 1;
    } else if (/[\s,}\]]/.test(c)) return i;
  }
  return undefined;
}

/** The index of the quote that closes the string opening at `at`; -1 when the text stops first. */
function stringEnd(text: string, at: number): number {
  for (let i = at + 1; i < text.length; i++) {
    if (text[i] === '\\') i++;
    else if (text[i] === '"') return i;
  }
  return -1;
}
