/**
 * Tool calls in generated text, in the syntax the chat template teaches and the tool-call constraint enforces
 * (`constrain/tool-syntax.ts`): Hermes/Qwen's `<tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call>`
 * blocks, or Llama 3's `{"name": "add", "parameters": {"a": 1}}` ending the reply. A streaming splitter: text
 * outside calls streams on as content, text that may still turn into the opening of a call is held back, and each
 * call becomes one parsed call. Shared by the OpenAI server and the LangChain plugin, so both read a model's calls
 * the same way.
 */
import { randomUUID } from 'node:crypto';
import { partialTagAt } from './partial-tag.js';
import { TOOL_CALL_SYNTAX, type ToolCallSyntax } from '../constrain/tool-syntax.js';

/** One call the model wrote. */
export interface ParsedToolCall {
  /** A fresh unique id (`call_<uuid>`). */
  id: string;
  /** The tool's name, when the block was JSON with a string `name`. */
  name?: string;
  /**
   * The arguments as JSON text (`arguments`, or `parameters` as Llama 3 writes); for a block that is not such
   * JSON, the block's raw text, so nothing the model wrote is dropped.
   */
  arguments: string;
}

/** What one piece of generated text turned into. */
export interface SplitToolText {
  content: string;
  toolCalls: ParsedToolCall[];
}

/**
 * Separates content from tool calls in text that arrives piece by piece. Whitespace before the first call, between
 * calls and after the last one is their layout (a template writes one call per line), not content: it is dropped,
 * and given out only when more text follows it.
 */
export class ToolCallTextSplitter {
  /** Text not yet given out: a possible opening outside a call, or the text of an open call. */
  private pending = '';
  private inBlock = false;
  /** Whether nothing but whitespace came since the reply began or the last call closed. */
  private afterCall = true;
  private readonly begin: string;
  /** What closes a call; none: the call runs to the end of the reply, its opening part of it (`json`). */
  private readonly close: string | undefined;

  constructor(syntax: ToolCallSyntax = 'hermes') {
    const form: { begin: string; end?: string } = TOOL_CALL_SYNTAX[syntax];
    this.begin = form.begin;
    this.close = form.end;
  }

  /** Takes the next piece of text. */
  push(text: string): SplitToolText {
    this.pending += text;
    const out: SplitToolText = { content: '', toolCalls: [] };
    for (;;) {
      if (this.inBlock) {
        const close = this.close;
        const at = close === undefined ? -1 : this.pending.indexOf(close);
        if (close === undefined || at === -1) break;
        out.toolCalls.push(parseToolCall(this.pending.slice(0, at)));
        this.afterCall = true;
        this.pending = this.pending.slice(at + close.length);
      } else {
        const at = this.pending.indexOf(this.begin);
        if (at === -1) break;
        out.content += this.content(this.pending.slice(0, at));
        this.pending = this.pending.slice(this.close === undefined ? at : at + this.begin.length);
      }
      this.inBlock = !this.inBlock;
    }
    if (!this.inBlock) {
      const free = this.pending.length - partialTagAt(this.pending, this.begin);
      if (!this.layout(this.pending.slice(0, free))) {
        out.content += this.content(this.pending.slice(0, free));
        this.pending = this.pending.slice(free);
      }
    }
    return out;
  }

  /**
   * Ends the text: what was held back is content, and so is an unclosed block, which is no tool call; a call that
   * runs to the end of the reply (`json`) is parsed now.
   */
  end(): SplitToolText {
    const out: SplitToolText = { content: '', toolCalls: [] };
    if (!this.inBlock) out.content = this.content(this.pending);
    else if (this.close === undefined) out.toolCalls.push(parseToolCall(this.pending));
    else out.content = this.begin + this.pending;
    this.pending = '';
    this.inBlock = false;
    this.afterCall = true;
    return out;
  }

  /** Whether text outside a block is (so far) only the layout after a call. */
  private layout(text: string): boolean {
    return this.afterCall && text.trim() === '';
  }

  /** Text outside a block as content: none if it is layout; once anything else comes, layout no longer. */
  private content(text: string): string {
    if (this.layout(text)) return '';
    this.afterCall = false;
    return text;
  }
}

/** One block's text as a call (see {@link ParsedToolCall} for what is kept when it is not JSON). */
export function parseToolCall(body: string): ParsedToolCall {
  const id = `call_${randomUUID()}`;
  try {
    const parsed = JSON.parse(body) as { name?: unknown; arguments?: unknown; parameters?: unknown };
    if (parsed && typeof parsed === 'object' && typeof parsed.name === 'string') {
      return { id, name: parsed.name, arguments: JSON.stringify(parsed.arguments ?? parsed.parameters ?? {}) };
    }
  } catch {
    // not JSON: kept raw below
  }
  return { id, arguments: body.trim() };
}
