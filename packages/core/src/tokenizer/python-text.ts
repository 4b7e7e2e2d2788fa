/**
 * Python's own text rules, where chat templates lean on them (they are written for transformers' jinja2, where every
 * value is a Python object): how numbers and strings are written by `str()` and `repr()`, and the `str` methods
 * templates call. See `jinja-python.ts`.
 */

/** What Python's `str.strip()` takes for whitespace (`str.isspace`): more than ASCII, less than JavaScript's `trim` (no BOM). */
const PY_SPACE = /^[\t\n\v\f\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]$/;

/** Characters `str.isprintable()` rejects (categories C and Z but the space), which `repr()` writes as escapes. */
const NOT_PRINTABLE = /^[\p{C}\p{Z}]$/u;

/** `s.strip(chars)`, `lstrip` (`left` only) or `rstrip` (`right` only): `chars` null or undefined strips whitespace. */
export function pyStrip(s: string, chars: string | null | undefined, left: boolean, right: boolean): string {
  const set = chars == null ? undefined : new Set(chars);
  const strips = (c: string) => (set ? set.has(c) : PY_SPACE.test(c));
  const cs = Array.from(s);
  let start = 0;
  let end = cs.length;
  if (left) while (start < end && strips(cs[start]!)) start++;
  if (right) while (end > start && strips(cs[end - 1]!)) end--;
  return cs.slice(start, end).join('');
}

/** `s.capitalize()`: the first character upper case, the rest lower case. */
export function pyCapitalize(s: string): string {
  const [first = '', ...rest] = Array.from(s);
  return first.toUpperCase() + rest.join('').toLowerCase();
}

/** `s.count(sub)`: non-overlapping occurrences; an empty `sub` is found between every two characters. */
export function pyCount(s: string, sub: string): number {
  if (sub === '') return Array.from(s).length + 1;
  return s.split(sub).length - 1;
}

/**
 * `s.format(*args, **kwargs)` for fields without a format spec (`{}`, `{0}`, `{name}`, with `!s` or `!r`), the
 * values already written by `str` and `repr`; a spec such as `{:>8}` is refused.
 */
export function pyFormat(s: string, args: readonly { str: string; repr: string }[], kwargs: ReadonlyMap<string, { str: string; repr: string }>): string {
  let auto = 0;
  return s.replace(/\{\{|\}\}|\{([^{}]*)\}/g, (whole, field: string | undefined) => {
    if (field === undefined) return whole[0]!;
    const m = /^([^!:]*)(?:!([rs]))?(?::(.*))?$/s.exec(field);
    if (!m || m[3]) throw new Error(`str.format() field {${field}} is not supported`);
    const name = m[1]!;
    const value = name === '' ? args[auto++] : /^\d+$/.test(name) ? args[Number(name)] : kwargs.get(name);
    if (!value) throw new Error(`str.format() has no value for field {${field}}`);
    return m[2] === 'r' ? value.repr : value.str;
  });
}

/** Python's `repr()` of a string: single quotes unless it holds one and no double quote, unprintables escaped. */
export function pyStringRepr(s: string): string {
  const quote = s.includes("'") && !s.includes('"') ? '"' : "'";
  let out = quote;
  for (const c of s) {
    if (c === quote || c === '\\') out += `\\${c}`;
    else if (c === '\n') out += '\\n';
    else if (c === '\r') out += '\\r';
    else if (c === '\t') out += '\\t';
    else if (c !== ' ' && NOT_PRINTABLE.test(c)) {
      const code = c.codePointAt(0)!;
      out += code < 0x100 ? `\\x${hex(code, 2)}` : code < 0x10000 ? `\\u${hex(code, 4)}` : `\\U${hex(code, 8)}`;
    } else out += c;
  }
  return out + quote;
}

const hex = (n: number, width: number) => n.toString(16).padStart(width, '0');

/**
 * Python's `json.dumps()` of a string: JSON's own escapes (which JavaScript writes alike), and with `ensureAscii`
 * every character outside printable ASCII as `\uXXXX`, an astral one as its two UTF-16 halves.
 */
export function pyJsonString(s: string, ensureAscii: boolean): string {
  const json = JSON.stringify(s);
  return ensureAscii ? json.replace(/[^\x20-\x7e]/g, (c) => `\\u${hex(c.charCodeAt(0), 4)}`) : json;
}

/** Python's `repr()` of a float: the shortest digits that read back, positional from 1e-4 to 1e16, `.0` on whole numbers. */
export function pyFloatRepr(x: number): string {
  if (Number.isNaN(x)) return 'nan';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  if (Object.is(x, -0)) return '-0.0';
  const [digits, exp] = x.toExponential().split('e') as [string, string];
  const e = Number(exp);
  if (e < -4 || e >= 16) return `${digits}e${e < 0 ? '-' : '+'}${String(Math.abs(e)).padStart(2, '0')}`;
  // JavaScript writes this range positionally too, with the same shortest digits.
  const s = String(x);
  return s.includes('.') ? s : `${s}.0`;
}

const DAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];
const MONTHS = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December'];

/**
 * `date.strftime(format)` as Python writes it in the C locale (English names), for the common directives; others
 * are left as written.
 */
export function pyStrftime(date: Date, format: string): string {
  const pad = (n: number, width = 2) => String(n).padStart(width, '0');
  const hour12 = date.getHours() % 12 || 12;
  const dayOfYear = Math.floor((Date.UTC(date.getFullYear(), date.getMonth(), date.getDate()) - Date.UTC(date.getFullYear(), 0, 1)) / 86_400_000) + 1;
  const directives: Record<string, () => string> = {
    a: () => DAYS[date.getDay()]!.slice(0, 3),
    A: () => DAYS[date.getDay()]!,
    b: () => MONTHS[date.getMonth()]!.slice(0, 3),
    B: () => MONTHS[date.getMonth()]!,
    d: () => pad(date.getDate()),
    H: () => pad(date.getHours()),
    I: () => pad(hour12),
    j: () => pad(dayOfYear, 3),
    m: () => pad(date.getMonth() + 1),
    M: () => pad(date.getMinutes()),
    p: () => (date.getHours() < 12 ? 'AM' : 'PM'),
    S: () => pad(date.getSeconds()),
    y: () => pad(date.getFullYear() % 100),
    Y: () => String(date.getFullYear()),
    '%': () => '%',
  };
  return format.replace(/%(.)/gs, (whole, d: string) => directives[d]?.() ?? whole);
}
