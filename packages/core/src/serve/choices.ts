/**
 * The choices of an answer: a row's finish reason in OpenAI's words, and a chat choice's text split into
 * reasoning, content and tool calls, either as one message (a finished row) or as stream deltas while the row runs.
 * A row cut off by its token limit gives the calls it wrote whole, then the one it was writing with the `arguments`
 * written so far (partial JSON), its finish reason `length`: as OpenAI's API gives a call that `max_tokens` cut.
 */
import { ChatReplySplitter, wholeReply, type ReplyParsing, type SplitReply } from '../chat/reply.js';
import type { ParsedToolCall } from '../chat/tool-calls.js';
import type { RowResult, TokenLogprobs } from '../generate/types.js';
import { chatLogprobs, HeldEntries, shownEntries } from './logprobs.js';

/** OpenAI's finish reasons: an end-of-sequence token and a stop string are both `stop`. */
export function finishReason(reason: string): string {
  return reason === 'length' ? 'length' : reason === 'abort' ? 'abort' : 'stop';
}

/** One `chat.completion.chunk` choice's content, without its index. */
export interface ChatDelta {
  delta: object;
  logprobs: ReturnType<typeof chatLogprobs> | null;
  finish: string | null;
}

/**
 * A reply's thought under both names clients read it by: `reasoning_content` (DeepSeek's API, llama.cpp's, vLLM's
 * older name) and `reasoning` (vLLM's newer one, which the OpenAI Agents SDK reads and sends back).
 */
const thought = (text: string) => ({ reasoning_content: text, reasoning: text });

const toolCallJson = (c: ParsedToolCall) => ({ id: c.id, type: 'function', function: { name: c.name ?? '', arguments: c.arguments } });

/** One choice of a chat completion (one row of the engine's call). */
export class ChatChoice {
  private readonly splitter: ChatReplySplitter;
  /** Tool calls streamed so far (their index in the deltas is their place here). */
  private readonly calls: ParsedToolCall[] = [];
  /** Tokens not given out yet: each rides with the first delta after its text has started. */
  private readonly held = new HeldEntries();

  /**
   * @param parsing how the reply is read: its thought split off or not, tool calls split off or not
   * @param logprobs whether the answer carries per-token log-probabilities
   * @param partialCalls whether a call cut off by the token limit is given (false: only whole calls, for an API whose
   *   calls' arguments are objects, Ollama's)
   */
  constructor(
    parsing: ReplyParsing,
    private readonly logprobs: boolean,
    private readonly partialCalls = true,
  ) {
    this.splitter = new ChatReplySplitter(parsing);
  }

  /** The whole answer of a finished row, and its finish reason (see {@link finish}). */
  message(row: RowResult): { choice: object; finish: string } {
    const split = this.given(wholeReply(this.splitter, row.text, row.finishReason === 'length'));
    const finish = callsFinish(row.finishReason, split.toolCalls.length);
    const message = {
      role: 'assistant',
      content: split.toolCalls.length && !split.content ? null : split.content,
      // (OpenAI's always: the SDKs type both as present)
      refusal: null,
      annotations: [],
      ...(split.reasoning ? thought(split.reasoning) : {}),
      ...(split.toolCalls.length ? { tool_calls: split.toolCalls.map(toolCallJson) } : {}),
    };
    return { choice: { message, logprobs: this.logprobs ? chatLogprobs(shownEntries(row.logprobs ?? [], row.text.length)) : null, finish_reason: finish }, finish };
  }

  /** How many of the row's tokens its thought took, once the row has been given out. */
  reasoningTokens(row: RowResult, decode: (ids: number[]) => string): number {
    return this.splitter.reasoningTokens(row.ids, decode);
  }

  /** The stream's first delta: the role. */
  start(): ChatDelta {
    return { delta: { role: 'assistant', content: '' }, logprobs: null, finish: null };
  }

  /** The deltas a generated token's text gives (none while the splitter or the engine holds text back). */
  push(text: string, logprobs: TokenLogprobs | undefined): ChatDelta[] {
    this.held.push(text, logprobs);
    if (!text) return [];
    return this.deltas(this.splitter.push(text));
  }

  /** The last deltas once the row has ended: what the splitter held back, then the finish reason. */
  end(reason: string): ChatDelta[] {
    this.held.end();
    const out = this.deltas(this.given(this.splitter.end(reason === 'length')));
    out.push(this.delta({}, this.finish(reason)));
    return out;
  }

  /** The finish reason of the streamed choice: `tool_calls` when it called tools and ended (not cut by a limit). */
  finish(reason: string): string {
    return callsFinish(reason, this.calls.length);
  }

  /** `split` without its partial call where this choice gives only whole ones. */
  private given(split: SplitReply): SplitReply {
    return this.partialCalls ? split : { ...split, toolCalls: split.toolCalls.filter((c) => !c.partial) };
  }

  private deltas(split: SplitReply): ChatDelta[] {
    const out: ChatDelta[] = [];
    if (split.reasoning) out.push(this.delta(thought(split.reasoning)));
    if (split.content) out.push(this.delta({ content: split.content }));
    for (const call of split.toolCalls) {
      out.push(this.delta({ tool_calls: [{ index: this.calls.length, ...toolCallJson(call) }] }));
      this.calls.push(call);
    }
    return out;
  }

  private delta(delta: object, finish: string | null = null): ChatDelta {
    const entries = this.held.released();
    const logprobs = this.logprobs && (entries.length > 0 || finish) ? chatLogprobs(entries) : null;
    return { delta, logprobs, finish };
  }
}

/** A row's finish reason in OpenAI's words once it made `calls` tool calls: a cut reply stays `length` or `abort`. */
function callsFinish(reason: string, calls: number): string {
  const finish = finishReason(reason);
  return calls > 0 && finish === 'stop' ? 'tool_calls' : finish;
}

