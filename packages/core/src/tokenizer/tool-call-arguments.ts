/**
 * How a chat template reads a tool call's arguments. Most render them with `tojson` from an object, as transformers
 * hands them over; some write them into the text as they come (DeepSeek's `+ arguments +`), where an object would
 * print as "[object Map]". Which one a template takes is found by rendering a probe call both ways, as llama.cpp
 * probes a template's capabilities.
 *
 * Arguments parsed for a template reach it as transformers' do (Python's `json.loads`): each number as its JSON text
 * ({@link JsonNumber}, `1.0` a float, `12345678901234567890` exact), each object a Map, its keys in the text's order
 * (a JavaScript object puts `"2"` before `"b"`).
 */
import type { ChatMessage } from './tokenizer.js';
import { JsonNumber } from './jinja-python.js';

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

/**
 * The messages with each tool call's arguments in `form` (JSON text read as Python reads it where it parses; objects
 * written as JSON).
 */
export function withArgumentsAs(messages: ChatMessage[], form: ArgumentsForm): ChatMessage[] {
  return messages.map((m) => {
    if (!Array.isArray(m.tool_calls)) return m;
    const toolCalls = (m.tool_calls as unknown[]).map((c) => {
      const fn = (c as { function?: { arguments?: unknown } } | null)?.function;
      if (!fn || typeof fn !== 'object') return c;
      return { ...(c as object), function: { ...fn, arguments: inForm(fn.arguments, form) } };
    });
    return { ...m, tool_calls: toolCalls };
  });
}

function inForm(args: unknown, form: ArgumentsForm): unknown {
  if (form === 'text') return typeof args === 'string' ? args : JSON.stringify(args ?? {});
  if (typeof args !== 'string') return args;
  try {
    JSON.parse(args);
  } catch {
    return args;
  }
  return pythonJson(args);
}

/** A token of JSON text, after blanks: a string, a number, a literal, or a bracket, colon or comma. */
const TOKEN = /[ \t\n\r]*("(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null|[{}[\]:,])/y;

/** The value of JSON text `json` (known to parse), numbers as {@link JsonNumber}s and objects as Maps. */
function pythonJson(json: string): unknown {
  let at = 0;
  const next = (): string => {
    TOKEN.lastIndex = at;
    const token = TOKEN.exec(json)![1]!;
    at = TOKEN.lastIndex;
    return token;
  };
  const read = (token: string): unknown => {
    if (token === '[') {
      const items: unknown[] = [];
      for (let t = next(); t !== ']'; t = next()) if (t !== ',') items.push(read(t));
      return items;
    }
    if (token === '{') {
      // A key given twice keeps its first place and its last value, as in Python's dict.
      const entries = new Map<string, unknown>();
      for (let t = next(); t !== '}'; t = next()) {
        if (t === ',') continue;
        next(); // the colon
        entries.set(JSON.parse(t) as string, read(next()));
      }
      return entries;
    }
    return /^-?\d/.test(token) ? new JsonNumber(token) : (JSON.parse(token) as unknown);
  };
  return read(next());
}
