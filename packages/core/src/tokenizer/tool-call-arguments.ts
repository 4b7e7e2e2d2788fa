/**
 * How a chat template reads a tool call's arguments. Most render them with `tojson` from an object, as transformers
 * hands them over; some write them into the text as they come (DeepSeek's `+ arguments +`), where an object would
 * print as "[object Map]". Which one a template takes is found by rendering a probe call both ways, as llama.cpp
 * probes a template's capabilities.
 *
 * Arguments parsed for a template render as transformers' do (Python's `json.loads`, then `tojson`): a number whose
 * JavaScript value would be written otherwise (`1.0` as `1`, an integer past 2^53 rounded, `1e-7` as `1e-7` for
 * Python's `1e-07`) goes to the template as a placeholder number, and the rendering gets Python's spelling back where
 * the placeholder shows (as transformers itself stands placeholders in for special tokens). The placeholder is a
 * number of the same kind, integer or float, so that templates which test a value's type (`is string`, `is number`)
 * take the branch Python's value takes.
 */
import { randomInt } from 'node:crypto';
import type { ChatMessage } from './tokenizer.js';
import { pyFloatRepr } from './python-text.js';

/** `object`: arguments as a parsed object; `text`: as JSON text. */
export type ArgumentsForm = 'object' | 'text';

const PROBE_VALUE = 'probe_value_5f3a';

/**
 * The form `render` (a template rendering the given messages) takes: `text` only where an object's arguments do not
 * show in the rendering and their JSON text does; `object` otherwise, including templates that render no calls.
 */
export function argumentsFormOf(render: (messages: ChatMessage[]) => string): ArgumentsForm {
  const shows = (args: unknown): boolean => {
    // Nine letters and digits: the only call ids Mistral's templates take.
    const call = { id: 'probe0001', type: 'function', function: { name: 'probe_tool', arguments: args } };
    try {
      return render([
        { role: 'user', content: 'probe' },
        { role: 'assistant', content: '', tool_calls: [call] },
      ]).includes(PROBE_VALUE);
    } catch {
      return false;
    }
  };
  const args = { probe_key: PROBE_VALUE };
  return !shows(args) && shows(JSON.stringify(args)) ? 'text' : 'object';
}

/** Messages ready for a template, and what its rendering of them needs put back. */
export interface TemplateArguments {
  messages: ChatMessage[];
  /** The rendering with Python's spelling of each number that stood in as a placeholder. */
  restore(rendered: string): string;
}

/**
 * The messages with each tool call's arguments in `form` (JSON text parsed where it parses, numbers JavaScript would
 * write otherwise as placeholders; objects written as JSON).
 */
export function withArgumentsAs(messages: ChatMessage[], form: ArgumentsForm): TemplateArguments {
  const numbers = new NumberPlaceholders();
  const out = messages.map((m) => {
    if (!Array.isArray(m.tool_calls)) return m;
    const toolCalls = (m.tool_calls as unknown[]).map((c) => {
      const fn = (c as { function?: { arguments?: unknown } } | null)?.function;
      if (!fn || typeof fn !== 'object') return c;
      return { ...(c as object), function: { ...fn, arguments: inForm(fn.arguments, form, numbers) } };
    });
    return { ...m, tool_calls: toolCalls };
  });
  return { messages: out, restore: (rendered) => numbers.restore(rendered) };
}

function inForm(args: unknown, form: ArgumentsForm, numbers: NumberPlaceholders): unknown {
  if (form === 'text') return typeof args === 'string' ? args : JSON.stringify(args ?? {});
  if (typeof args !== 'string') return args;
  try {
    return JSON.parse(numbers.replace(args)) as unknown;
  } catch {
    return args;
  }
}

/** A JSON text's strings and numbers, in order (a digit outside a string is part of a number). */
const STRING_OR_NUMBER = /"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g;

/** A placeholder as a template writes it: sixteen digits, and `.5` for a float's. */
const PLACEHOLDER = /(?<![\d.])\d{16}(?:\.5)?(?!\d)/g;

/**
 * Placeholders for the numbers of JSON texts that a JavaScript value would not write back as Python does: random
 * integers from 10^15 (below 2^53, so written exactly), plus one half for a float.
 */
class NumberPlaceholders {
  /** Python's spelling of each number, by its placeholder's text. */
  private readonly spellings = new Map<string, string>();

  /** `json` with such numbers as placeholders. */
  replace(json: string): string {
    return json.replace(STRING_OR_NUMBER, (token) => {
      if (token.startsWith('"')) return token;
      const spelling = pythonNumber(token);
      if (spelling === JSON.stringify(Number(token))) return token;
      let placeholder: string;
      do placeholder = `${1e15 + randomInt(2 ** 48 - 1)}${/^-?\d+$/.test(token) ? '' : '.5'}`;
      while (this.spellings.has(placeholder));
      this.spellings.set(placeholder, spelling);
      return placeholder;
    });
  }

  /** `rendered` with each placeholder as its number. */
  restore(rendered: string): string {
    if (this.spellings.size === 0) return rendered;
    return rendered.replace(PLACEHOLDER, (text) => this.spellings.get(text) ?? text);
  }
}

/**
 * How Python writes the number JSON text `raw` reads as: an integer exactly, a float as its `repr` (`1.0`, `1e-07`),
 * infinity (a float too large) as `json.dumps` writes it.
 */
function pythonNumber(raw: string): string {
  if (/^-?\d+$/.test(raw)) return BigInt(raw).toString();
  const value = Number(raw);
  return Number.isFinite(value) ? pyFloatRepr(value) : value > 0 ? 'Infinity' : '-Infinity';
}
