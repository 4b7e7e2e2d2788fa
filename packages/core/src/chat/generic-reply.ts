/**
 * Replies in the `generic` tool-call syntax (for templates that show no tools): one JSON object, either
 * `{"response": "…"}`, whose text streams as content while it is written, or `{"tool_calls": [...]}` /
 * `{"tool_call": {...}}`, read as calls once the reply ends. A reply that is no such object (one written under a
 * response format of the request's own) is content as written, and so is an object that ended before it closed, unless
 * the token limit cut it: its calls are then those written, the last `partial`, and no part of the object is content.
 */
import { GENERIC_REPLY } from '../tokenizer/tools-in-prompt.js';
import { cutJsonCalls, toolCallId, toolCallOf, type ParsedToolCall, type SplitToolText } from './tool-calls.js';
import { isJson, listPrefix, objectPrefix } from './partial-json.js';

/** The opening of an answer, up to its string's first character. */
const RESPONSE_OPENING = new RegExp(`^\\s*\\{\\s*"${GENERIC_REPLY.response}"\\s*:\\s*"`);
/** The opening of calls. */
const CALLS_OPENING = new RegExp(`^\\s*\\{\\s*"(?:${GENERIC_REPLY.calls}|${GENERIC_REPLY.call})"\\s*:`);
/** Text that may still become either opening: a brace, a key being written, its colon. */
const UNDECIDED = /^\s*(?:\{\s*(?:"[a-z_]*(?:"\s*(?::\s*)?)?)?)?$/;

/** Splits a generic reply piece by piece (as `ToolCallTextSplitter` does for the marker syntaxes). */
export class GenericReplySplitter {
  /**
   * The text not yet given out: `open` and `calls`, the reply so far; `response`, the answer's string text not yet
   * decoded, then, once its closing quote is written, what follows it. It is read with each piece only while short
   * (`open`, a string's unfinished escape), so a long reply costs no more per piece than a short one (a growing
   * string read with each piece is copied whole each time).
   */
  private text = '';
  private kind: 'open' | 'response' | 'calls' | 'plain' = 'open';
  /** `response`: whether the string's closing quote is written. */
  private closed = false;

  /** Takes the next piece of text. */
  push(piece: string): SplitToolText {
    this.text += piece;
    if (this.kind === 'open') this.decide();
    return { content: this.flush(), toolCalls: [] };
  }

  /**
   * Ends the reply: calls are read now; what was held back is content, except in a reply `cut` off by its token limit,
   * where it is the object's unfinished text (an opening, the rest of an escape). The splitter then takes a new reply.
   */
  end(cut = false): SplitToolText {
    if (this.kind === 'open' && !cut) this.kind = 'plain';
    const out =
      this.kind === 'calls' ? this.calls(cut) : this.kind === 'open' ? { content: '', toolCalls: [] } : { content: this.flush() + (cut ? '' : this.tail()), toolCalls: [] };
    this.text = '';
    this.kind = 'open';
    this.closed = false;
    return out;
  }

  /**
   * What follows an answer's decoded text when the reply ends: the raw rest of a string cut off inside an escape, or
   * after the closing quote anything but the object's closing brace.
   */
  private tail(): string {
    if (this.kind !== 'response') return '';
    return this.closed ? this.text.replace(/^\s*\}\s*$/, '') : this.text;
  }

  private decide(): void {
    const response = RESPONSE_OPENING.exec(this.text);
    if (response) {
      this.kind = 'response';
      this.text = this.text.slice(response[0].length);
    } else if (CALLS_OPENING.test(this.text)) this.kind = 'calls';
    else if (!UNDECIDED.test(this.text)) this.kind = 'plain';
  }

  /** The content that can be given out now. */
  private flush(): string {
    if (this.kind === 'plain') {
      const out = this.text;
      this.text = '';
      return out;
    }
    if (this.kind !== 'response' || this.closed) return '';
    const { end, closed } = completeString(this.text);
    const raw = this.text.slice(0, end);
    this.text = this.text.slice(closed ? end + 1 : end);
    this.closed = closed;
    try {
      return JSON.parse(`"${raw}"`) as string;
    } catch {
      return raw; // an escape JSON does not know: kept as written
    }
  }

  /**
   * The reply's calls, each from its own text, so its arguments are the JSON the model wrote; a reply that does not
   * parse as them is content, unless it was `cut` ({@link cutCalls}).
   */
  private calls(cut: boolean): SplitToolText {
    const text = this.text;
    if (!isJson(text)) return cut ? { content: '', toolCalls: cutCalls(text) } : { content: text, toolCalls: [] };
    const members = objectPrefix(text);
    const listed = members?.get(GENERIC_REPLY.calls);
    const one = members?.get(GENERIC_REPLY.call);
    // (as a parsed reply reads: the list where it is one, else the single call)
    const calls = listPrefix(listed?.raw ?? '')?.map((element) => element.raw) ?? (one ? [one.raw] : []);
    if (calls.length === 0) return { content: text, toolCalls: [] };
    const toolCalls: ParsedToolCall[] = calls.map((raw) => toolCallOf(JSON.parse(raw), 'generic', raw) ?? { id: toolCallId('generic'), arguments: raw });
    return { content: '', toolCalls };
  }
}

/** The calls of a reply object the token limit cut off: those written whole, then the one cut off (see `cutJsonCalls`). */
function cutCalls(text: string): ParsedToolCall[] {
  const members = objectPrefix(text);
  const calls = members?.get(GENERIC_REPLY.calls) ?? members?.get(GENERIC_REPLY.call);
  return calls ? cutJsonCalls(calls.raw, 'generic') : [];
}

/**
 * How far the text of a JSON string can be decoded now: up to its closing quote (`closed`), or up to an escape not yet
 * complete (a `\u` high surrogate waits for its low half, so no half of a character is given out).
 */
function completeString(text: string): { end: number; closed: boolean } {
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === '"') return { end: i, closed: true };
    if (c !== '\\') {
      i++;
      continue;
    }
    if (i + 1 >= text.length) break;
    if (text[i + 1] !== 'u') {
      i += 2;
      continue;
    }
    if (i + 6 > text.length) break;
    const code = Number.parseInt(text.slice(i + 2, i + 6), 16);
    const width = code >= 0xd800 && code < 0xdc00 ? 12 : 6;
    if (i + width > text.length) break;
    i += width;
  }
  return { end: i, closed: false };
}
