/**
 * Tool calls in generated text, in the form tool-aware chat templates (Hermes, Qwen and their kin) teach:
 * `<tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call>`. A streaming splitter: text outside the tags
 * streams on as content, text that may still turn into an opening tag is held back, and each closed block
 * becomes one tool-call chunk, which LangChain collapses into `tool_calls` (or `invalid_tool_calls`).
 */
import { randomUUID } from 'node:crypto';
import type { ToolCallChunk } from '@langchain/core/messages/tool';

export const TOOL_CALL_OPEN = '<tool_call>';
export const TOOL_CALL_CLOSE = '</tool_call>';

/** What one piece of generated text turned into. */
export interface SplitText {
  content: string;
  toolCalls: ToolCallChunk[];
}

/** Length of the longest suffix of `text` that is a proper prefix of `tag`. */
function partialTagAt(text: string, tag: string): number {
  for (let n = Math.min(tag.length - 1, text.length); n > 0; n--) if (text.endsWith(tag.slice(0, n))) return n;
  return 0;
}

/** Separates content from tool calls in text that arrives piece by piece. */
export class ToolCallSplitter {
  /** Text not yet given out: a possible tag start outside a block, or the body of an open block. */
  private pending = '';
  private inBlock = false;

  /** Takes the next piece of text. */
  push(text: string): SplitText {
    this.pending += text;
    const out: SplitText = { content: '', toolCalls: [] };
    for (;;) {
      const tag = this.inBlock ? TOOL_CALL_CLOSE : TOOL_CALL_OPEN;
      const at = this.pending.indexOf(tag);
      if (at === -1) break;
      if (this.inBlock) out.toolCalls.push(this.toolCall(this.pending.slice(0, at)));
      else out.content += this.pending.slice(0, at);
      this.pending = this.pending.slice(at + tag.length);
      this.inBlock = !this.inBlock;
    }
    if (!this.inBlock) {
      const keep = partialTagAt(this.pending, TOOL_CALL_OPEN);
      out.content += this.pending.slice(0, this.pending.length - keep);
      this.pending = this.pending.slice(this.pending.length - keep);
    }
    return out;
  }

  /** Ends the text: what was held back is content, and so is an unclosed block, which is no tool call. */
  end(): SplitText {
    const content = (this.inBlock ? TOOL_CALL_OPEN : '') + this.pending;
    this.pending = '';
    this.inBlock = false;
    return { content, toolCalls: [] };
  }

  /**
   * One block as a tool-call chunk. JSON with a string `name` gives the name and its `arguments` (or
   * `parameters`, as Llama 3 writes); anything else keeps the raw text as arguments for LangChain to judge
   * (text that is not JSON becomes an invalid tool call), so nothing the model wrote is dropped.
   */
  private toolCall(body: string): ToolCallChunk {
    // Each call comes whole in one chunk, so a unique id is all LangChain needs to keep calls apart; an `index`
    // would collide with the text block's index 0 in LangChain's content-block stream.
    const base = { type: 'tool_call_chunk' as const, id: `call_${randomUUID()}` };
    try {
      const parsed = JSON.parse(body) as { name?: unknown; arguments?: unknown; parameters?: unknown };
      if (parsed && typeof parsed === 'object' && typeof parsed.name === 'string') {
        return { ...base, name: parsed.name, args: JSON.stringify(parsed.arguments ?? parsed.parameters ?? {}) };
      }
    } catch {
      // not JSON: kept raw below
    }
    return { ...base, args: body.trim() };
  }
}
