/**
 * A chat reply as it streams: its thought (reasoning), its answer (content) and the tool calls in the answer. The
 * thought is split off first, so a `<tool_call>` a model writes while thinking is not a call. One splitter for
 * the OpenAI server and the LangChain plugin.
 */
import { opensThought, ReasoningTextSplitter, reasoningTagsOf, type ReasoningFormat, type ReasoningTags } from './reasoning.js';
import { ToolCallTextSplitter, type ParsedToolCall } from './tool-calls.js';

/** What one piece of a reply turned into. */
export interface SplitReply {
  reasoning: string;
  content: string;
  toolCalls: ParsedToolCall[];
}

/** How a reply is read. */
export interface ReplyParsing {
  /** The thought's tags and whether the prompt left it open; absent: no thought is split off. */
  reasoning?: { tags: ReasoningTags; open: boolean };
  /** Whether the answer may hold tool calls to split off. */
  tools: boolean;
}

/**
 * How the reply to a rendered chat prompt is read: its thought is split off unless `format` is `none` or the reply
 * is constrained from its first token (`freeStart` false: a JSON or required tool-call format leaves no room to
 * think first, so what it writes is the answer even after a prompt that opens a thought).
 */
export function replyParsing(opts: { format: ReasoningFormat; chatTemplate: string | undefined; prompt: string; freeStart: boolean; tools: boolean }): ReplyParsing {
  if (opts.format === 'none' || !opts.freeStart) return { tools: opts.tools };
  const tags = reasoningTagsOf(opts.chatTemplate);
  return { reasoning: { tags, open: opensThought(opts.prompt, tags) }, tools: opts.tools };
}

/** Splits a reply piece by piece into thought, answer and tool calls. */
export class ChatReplySplitter {
  private readonly reasoning: ReasoningTextSplitter | undefined;
  private readonly tools: ToolCallTextSplitter | undefined;

  constructor(parsing: ReplyParsing) {
    this.reasoning = parsing.reasoning && new ReasoningTextSplitter(parsing.reasoning.tags, parsing.reasoning.open);
    this.tools = parsing.tools ? new ToolCallTextSplitter() : undefined;
  }

  /** Takes the next piece of text. */
  push(text: string): SplitReply {
    const { reasoning, content } = this.reasoning ? this.reasoning.push(text) : { reasoning: '', content: text };
    return { reasoning, ...this.answer(content, false) };
  }

  /** Ends the reply: what the splitters held back. */
  end(): SplitReply {
    const { reasoning, content } = this.reasoning ? this.reasoning.end() : { reasoning: '', content: '' };
    return { reasoning, ...this.answer(content, true) };
  }

  private answer(content: string, end: boolean): Omit<SplitReply, 'reasoning'> {
    if (!this.tools) return { content, toolCalls: [] };
    const split = this.tools.push(content);
    if (!end) return split;
    const tail = this.tools.end();
    return { content: split.content + tail.content, toolCalls: [...split.toolCalls, ...tail.toolCalls] };
  }
}

/** The whole of a finished reply, split at once. */
export function splitReply(parsing: ReplyParsing, text: string): SplitReply {
  const splitter = new ChatReplySplitter(parsing);
  const a = splitter.push(text);
  const b = splitter.end();
  return { reasoning: a.reasoning + b.reasoning, content: a.content + b.content, toolCalls: [...a.toolCalls, ...b.toolCalls] };
}
