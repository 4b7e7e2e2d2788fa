/**
 * Tool calls in generated text as LangChain tool-call chunks. The splitting (content outside
 * `<tool_call>…</tool_call>` blocks streams on, a possible tag start is held back, each closed block is one call)
 * is core's `ToolCallTextSplitter`, the one `reasonplug serve` uses too; this adapts its calls to LangChain, which
 * collapses the chunks into `tool_calls` (or `invalid_tool_calls`).
 */
import type { ToolCallChunk } from '@langchain/core/messages/tool';
import { ToolCallTextSplitter, type ParsedToolCall, type SplitToolText } from './core.js';

/** What one piece of generated text turned into. */
export interface SplitText {
  content: string;
  toolCalls: ToolCallChunk[];
}

/**
 * One call as a chunk. Each call comes whole in one chunk, so its unique id is all LangChain needs to keep calls
 * apart; an `index` would collide with the text block's index 0 in LangChain's content-block stream. A block that
 * was not JSON with a name keeps its raw text as arguments, for LangChain to judge (it becomes an invalid call).
 */
function toChunk(call: ParsedToolCall): ToolCallChunk {
  return { type: 'tool_call_chunk', id: call.id, ...(call.name !== undefined ? { name: call.name } : {}), args: call.arguments };
}

const adapt = (split: SplitToolText): SplitText => ({ content: split.content, toolCalls: split.toolCalls.map(toChunk) });

/** Separates content from tool calls in text that arrives piece by piece. */
export class ToolCallSplitter {
  private readonly splitter = new ToolCallTextSplitter();

  /** Takes the next piece of text. */
  push(text: string): SplitText {
    return adapt(this.splitter.push(text));
  }

  /** Ends the text: what was held back is content, and so is an unclosed block, which is no tool call. */
  end(): SplitText {
    return adapt(this.splitter.end());
  }
}
