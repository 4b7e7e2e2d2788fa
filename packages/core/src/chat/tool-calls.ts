/**
 * Tool calls in generated text, in the form tool-aware chat templates (Hermes, Qwen and their kin) teach and the
 * tool-call constraint enforces: `<tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call>`. A streaming
 * splitter: text outside the tags streams on as content, text that may still turn into an opening tag is held
 * back, and each closed block becomes one call. Shared by the OpenAI server and the LangChain plugin, so both
 * read a model's calls the same way.
 */
import { randomUUID } from 'node:crypto';
import { partialTagAt } from './partial-tag.js';
import { TOOL_CALL_BEGIN, TOOL_CALL_END } from '../constrain/xgrammar-factory.js';

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
 * Separates content from tool calls in text that arrives piece by piece. Whitespace between calls and after the
 * last one is their layout (a template writes one call per line), not content: it is dropped, and given out only
 * when more text follows it.
 */
export class ToolCallTextSplitter {
  /** Text not yet given out: a possible tag start outside a block, or the body of an open block. */
  private pending = '';
  private inBlock = false;
  /** Whether nothing but whitespace came since the last call closed. */
  private afterCall = false;

  /** Takes the next piece of text. */
  push(text: string): SplitToolText {
    this.pending += text;
    const out: SplitToolText = { content: '', toolCalls: [] };
    for (;;) {
      const tag = this.inBlock ? TOOL_CALL_END : TOOL_CALL_BEGIN;
      const at = this.pending.indexOf(tag);
      if (at === -1) break;
      if (this.inBlock) {
        out.toolCalls.push(parseToolCall(this.pending.slice(0, at)));
        this.afterCall = true;
      } else out.content += this.content(this.pending.slice(0, at));
      this.pending = this.pending.slice(at + tag.length);
      this.inBlock = !this.inBlock;
    }
    if (!this.inBlock) {
      const free = this.pending.length - partialTagAt(this.pending, TOOL_CALL_BEGIN);
      if (!this.layout(this.pending.slice(0, free))) {
        out.content += this.content(this.pending.slice(0, free));
        this.pending = this.pending.slice(free);
      }
    }
    return out;
  }

  /** Ends the text: what was held back is content, and so is an unclosed block, which is no tool call. */
  end(): SplitToolText {
    const content = this.inBlock ? TOOL_CALL_BEGIN + this.pending : this.content(this.pending);
    this.pending = '';
    this.inBlock = false;
    this.afterCall = false;
    return { content, toolCalls: [] };
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
