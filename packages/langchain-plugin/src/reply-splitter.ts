/**
 * A reply as LangChain pieces: its thought (for `additional_kwargs.reasoning_content`), its content and its tool
 * calls as tool-call chunks. The splitting (a `<think>` thought first, then content outside
 * `<tool_call>…</tool_call>` blocks, a possible tag start held back, each closed block one call) is core's
 * `ChatReplySplitter`, the one `reasonplug serve` uses too; this adapts its calls to LangChain, which collapses the
 * chunks into `tool_calls` (or `invalid_tool_calls`): a reply cut off by its token limit gives the calls it wrote
 * whole as `tool_calls`, and the one it was writing as an invalid call with the arguments written so far, as
 * ChatOpenAI gives such a reply.
 */
import type { ToolCallChunk } from '@langchain/core/messages/tool';
import { ChatReplySplitter, type ParsedToolCall, type ReplyParsing, type SplitReply } from './core.js';

/** What one piece of generated text turned into. */
export interface SplitText {
  reasoning: string;
  content: string;
  toolCalls: ToolCallChunk[];
}

/**
 * One call as a chunk. Each call comes whole in one chunk, so its unique id is all LangChain needs to keep calls
 * apart; an `index` would collide with the text block's index 0 in LangChain's content-block stream. A block that
 * was not JSON with a name keeps its raw text as arguments, for LangChain to judge (it becomes an invalid call).
 * A `partial` call (cut off by the token limit) comes without its id: LangChain reads a chunk's arguments as partial
 * JSON, so with an id it would make the start of the arguments a valid call (`{"city": "Pa` a call for "Pa"); a
 * chunk with no id it keeps as an invalid call, the arguments as written.
 */
function toChunk(call: ParsedToolCall): ToolCallChunk {
  return { type: 'tool_call_chunk', ...(call.partial ? {} : { id: call.id }), ...(call.name !== undefined ? { name: call.name } : {}), args: call.arguments };
}

const adapt = (split: SplitReply): SplitText => ({ reasoning: split.reasoning, content: split.content, toolCalls: split.toolCalls.map(toChunk) });

/** Splits a reply that arrives piece by piece. */
export class ReplySplitter {
  private readonly splitter: ChatReplySplitter;

  constructor(parsing: ReplyParsing) {
    this.splitter = new ChatReplySplitter(parsing);
  }

  /** Takes the next piece of text. */
  push(text: string): SplitText {
    return adapt(this.splitter.push(text));
  }

  /**
   * Ends the text: what was held back; an unclosed block is content, no tool call, unless the reply was `cut` off by
   * its token limit: its calls are then those written, the last one (cut) an invalid call.
   */
  end(cut = false): SplitText {
    return adapt(this.splitter.end(cut));
  }

  /** How many of the reply's ids its thought took, once it has ended. */
  reasoningTokens(ids: readonly number[], decode: (ids: number[]) => string): number {
    return this.splitter.reasoningTokens(ids, decode);
  }
}
