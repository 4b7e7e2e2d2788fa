/**
 * Strict parsers of the CLI's flag values. `Number()` reads "" as 0 and takes "0x10", "1e3" and " 7 ", so a
 * typo would quietly become a different request; these accept whole decimal text only and name the flag and
 * the rule when they refuse.
 */
import { readFileSync } from 'node:fs';
import { Template } from '@huggingface/jinja';
import { InvalidArgumentError } from 'commander';
import { maxIntraOpThreads } from '../runtime/thread-budget.js';

const INTEGER = /^[+-]?\d+$/;
/** Decimal notation, optionally with an exponent (`0.7`, `.5`, `1e-3`); no hex, no Infinity, no blanks. */
const DECIMAL = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/;

function refuse(flag: string, rule: string, text: string): never {
  throw new InvalidArgumentError(`${flag} must be ${rule} (got ${JSON.stringify(text)})`);
}

/** An integer flag in `[min, max]`; `rule` words the range for the error. */
export function integerFlag(flag: string, min: number, max: number, rule: string): (text: string) => number {
  return (text) => {
    const n = Number(text);
    if (!INTEGER.test(text) || !Number.isSafeInteger(n) || n < min || n > max) refuse(flag, rule, text);
    return n;
  };
}

/** A whole number of at least 1 (`--max-tokens`, `--trace`). */
export const positiveIntegerFlag = (flag: string) => integerFlag(flag, 1, Number.MAX_SAFE_INTEGER, 'a whole number >= 1');

/** A whole number of at least 0 (`--top-k`, where 0 turns it off). */
export const nonNegativeIntegerFlag = (flag: string) => integerFlag(flag, 0, Number.MAX_SAFE_INTEGER, 'a whole number >= 0');

/** Any safe integer (`--seed`). */
export const safeIntegerFlag = (flag: string) =>
  integerFlag(flag, Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER, `a whole number between ${Number.MIN_SAFE_INTEGER} and ${Number.MAX_SAFE_INTEGER}`);

/** A finite decimal number; its range is the engine's to check (it knows each option's rule). */
export const decimalFlag = (flag: string) => (text: string) => {
  const n = Number(text);
  if (!DECIMAL.test(text) || !Number.isFinite(n)) refuse(flag, 'a decimal number such as 0.7', text);
  return n;
};

/** A decimal number from `min` to `max` (`--draft-p-min`, whose range the CLI states rather than the library option's). */
export const boundedDecimalFlag = (flag: string, min: number, max: number) => (text: string) => {
  const n = decimalFlag(flag)(text);
  if (n < min || n > max) refuse(flag, `a number from ${min} to ${max}`, text);
  return n;
};

/** `--threads`: at least 1, at most {@link maxIntraOpThreads} (more only oversubscribes the cores, and 100000 hangs). */
export const threadsFlag = (text: string) => {
  const max = maxIntraOpThreads();
  return integerFlag('--threads', 1, max, `a whole number from 1 to ${max} (4 threads per CPU this process may use)`)(text);
};

/** `--prompt-ids`: comma-separated decimal token ids, at least one, none empty. */
export function promptIdsFlag(text: string): number[] {
  const items = text.split(',').map((s) => s.trim());
  const bad = items.find((s) => !/^\d+$/.test(s) || !Number.isSafeInteger(Number(s)));
  if (bad !== undefined) {
    const what = bad === '' ? (text.trim() === '' ? 'is empty' : `has an empty item in ${JSON.stringify(text)}`) : `has ${JSON.stringify(bad)}, not a token id`;
    throw new InvalidArgumentError(`--prompt-ids ${what}; expected comma-separated non-negative decimal integers, e.g. 1,2,3`);
  }
  return items.map(Number);
}

/** `--logit-bias ID=BIAS` (repeatable): a token id and the decimal bias added to its logit. */
export function logitBiasFlag(text: string, previous: Record<number, number> = {}): Record<number, number> {
  const m = /^(\d+)=(.+)$/.exec(text);
  const bias = m ? Number(m[2]) : NaN;
  if (!m || !Number.isSafeInteger(Number(m[1])) || !DECIMAL.test(m[2]!) || !Number.isFinite(bias)) {
    throw new InvalidArgumentError(`--logit-bias must be TOKEN_ID=BIAS, e.g. 13=-100 (got ${JSON.stringify(text)})`);
  }
  return { ...previous, [Number(m[1])]: bias };
}

/** `--stop` (repeatable): an empty stop string would match before the first token, so it is refused. */
export function stopFlag(text: string, previous: string[] = []): string[] {
  if (text === '') throw new InvalidArgumentError('--stop must not be empty: an empty stop string would end every row before its first character');
  return [...previous, text];
}

/** The weight after `=` in `--reasoner PATH=WEIGHT`, when it is decimal text. */
export function parseWeight(text: string): number | undefined {
  const n = Number(text);
  return DECIMAL.test(text) && Number.isFinite(n) ? n : undefined;
}

/** A JSON object flag (`--chat-template-kwargs '{"enable_thinking": false}'`). */
export const jsonObjectFlag = (flag: string) => (text: string) => {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    refuse(flag, 'a JSON object', text);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) refuse(flag, 'a JSON object', text);
  return v as Record<string, unknown>;
};

/** A --chat-template file (chat, serve), read and parsed before the model loads: a missing file or a template that does not parse is refused naming it. */
export function chatTemplateFile(path: string): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new InvalidArgumentError(`--chat-template ${path}: ${(err as NodeJS.ErrnoException).code === 'EISDIR' ? 'is a directory' : (err as Error).message}`);
  }
  try {
    new Template(text);
  } catch (err) {
    throw new InvalidArgumentError(`--chat-template ${path} is not a Jinja template: ${(err as Error).message}`);
  }
  return text;
}

/** One `--reasoner-task` given. */
export interface ReasonerTaskFlag {
  task: string;
  weight?: number;
}

/**
 * `TASK[=WEIGHT]` (repeatable): a reasoner found by task in the registry (Engine.load's `reasonerTasks`); the task
 * names it, so it must not hold "+" (which joins names in a served composition).
 */
export function reasonerTaskFlag(v: string, prev: ReasonerTaskFlag[] = []): ReasonerTaskFlag[] {
  const at = v.lastIndexOf('=');
  const task = at > 0 ? v.slice(0, at) : v;
  const weight = at > 0 ? parseWeight(v.slice(at + 1)) : undefined;
  if (task === '' || (at > 0 && weight === undefined) || task.includes('+')) {
    throw new InvalidArgumentError(`--reasoner-task ${v}: expected TASK[=WEIGHT], a task without "+" and a number after "="`);
  }
  return [...prev, { task, ...(weight !== undefined ? { weight } : {}) }];
}
