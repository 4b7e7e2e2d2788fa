/**
 * A reply as OpenAI's Responses API gives it: output items (the thought as a `reasoning` item, the answer as a
 * `message` with one `output_text` part, each tool call a `function_call`), either whole or as the stream of typed
 * events a Responses client reads (`response.created`, `response.output_item.added`, `response.output_text.delta`,
 * …, `response.completed`), each numbered by `sequence_number`.
 */
import { randomBytes } from 'node:crypto';
import { ChatReplySplitter, type ReplyParsing, type SplitReply } from '../chat/reply.js';
import type { ParsedToolCall } from '../chat/tool-calls.js';

type Item = Record<string, unknown> & { type: string; id: string };
type Event = Record<string, unknown> & { type: string };

/** An id with OpenAI's prefix for its kind (`resp`, `msg`, `rs`, `fc`). */
export const itemId = (prefix: string) => `${prefix}_${randomBytes(12).toString('hex')}`;

/** The usage of a finished response, in the Responses API's words. */
export interface ResponseUsage {
  input_tokens: number;
  input_tokens_details: { cached_tokens: number };
  output_tokens: number;
  output_tokens_details: { reasoning_tokens: number };
  total_tokens: number;
}

/**
 * One response's output as it is written. {@link push} takes the reply's text piece by piece and returns the stream
 * events it gives (nothing is lost when they are not sent: a response answered whole reads {@link items} at the end).
 */
export class ResponseOutput {
  private readonly splitter: ChatReplySplitter;
  /** Output items in order; the last may still be open (its text growing). */
  readonly items: Item[] = [];
  private open: { item: Item; text: string } | undefined;
  private calls = 0;

  constructor(parsing: ReplyParsing) {
    this.splitter = new ChatReplySplitter(parsing);
  }

  /** Whether the reply called a tool. */
  get called(): boolean {
    return this.calls > 0;
  }

  /** The events a piece of the reply's text gives. */
  push(text: string): Event[] {
    return text ? this.take(this.splitter.push(text)) : [];
  }

  /** The events of what the splitter held back, and those that close the last item (an empty reply is an empty message). */
  end(): Event[] {
    const out = this.take(this.splitter.end());
    if (this.items.length === 0) out.push(...this.text('message', ''));
    return [...out, ...this.close()];
  }

  /** How many of the reply's tokens its thought took. */
  reasoningTokens(ids: readonly number[], decode: (ids: number[]) => string): number {
    return this.splitter.reasoningTokens(ids, decode);
  }

  private take(split: SplitReply): Event[] {
    const out: Event[] = [];
    if (split.reasoning) out.push(...this.text('reasoning', split.reasoning));
    if (split.content) out.push(...this.text('message', split.content));
    for (const call of split.toolCalls) out.push(...this.call(call));
    return out;
  }

  /** Text for an item of `kind`: appended to the open one, or to a new one (the open item of another kind closed first). */
  private text(kind: 'reasoning' | 'message', delta: string): Event[] {
    const out: Event[] = [];
    if (this.open?.item.type !== kind) {
      out.push(...this.close());
      const item: Item =
        kind === 'reasoning'
          ? { type: 'reasoning', id: itemId('rs'), summary: [], content: [] }
          : { type: 'message', id: itemId('msg'), status: 'in_progress', role: 'assistant', content: [] };
      this.items.push(item);
      this.open = { item, text: '' };
      out.push({ type: 'response.output_item.added', output_index: this.items.length - 1, item: structuredClone(item) });
      if (kind === 'message') out.push({ type: 'response.content_part.added', ...this.at(), part: { type: 'output_text', text: '', annotations: [] } });
    }
    this.open!.text += delta;
    if (delta) out.push(kind === 'reasoning' ? { type: 'response.reasoning_text.delta', ...this.at(), delta } : { type: 'response.output_text.delta', ...this.at(), delta, logprobs: [] });
    return out;
  }

  /** A tool call, whole: the splitter gives calls once their JSON is complete. */
  private call(call: ParsedToolCall): Event[] {
    const out = this.close();
    const item: Item = { type: 'function_call', id: itemId('fc'), call_id: call.id, name: call.name ?? '', arguments: call.arguments, status: 'completed' };
    this.items.push(item);
    this.calls++;
    const output_index = this.items.length - 1;
    out.push(
      { type: 'response.output_item.added', output_index, item: { ...item, arguments: '', status: 'in_progress' } },
      { type: 'response.function_call_arguments.delta', item_id: item.id, output_index, delta: call.arguments },
      { type: 'response.function_call_arguments.done', item_id: item.id, output_index, name: item.name, arguments: call.arguments },
      { type: 'response.output_item.done', output_index, item },
    );
    return out;
  }

  /** Closes the open text item: its final text, part and item. */
  private close(): Event[] {
    const open = this.open;
    if (!open) return [];
    this.open = undefined;
    const { item, text } = open;
    if (item.type === 'reasoning') {
      item.content = [{ type: 'reasoning_text', text }];
      return [
        { type: 'response.reasoning_text.done', ...this.at(item), text },
        { type: 'response.output_item.done', output_index: this.items.indexOf(item), item },
      ];
    }
    const part = { type: 'output_text', text, annotations: [], logprobs: [] };
    item.content = [part];
    item.status = 'completed';
    return [
      { type: 'response.output_text.done', ...this.at(item), text, logprobs: [] },
      { type: 'response.content_part.done', ...this.at(item), part },
      { type: 'response.output_item.done', output_index: this.items.indexOf(item), item },
    ];
  }

  /** Where a text event belongs: its item, that item's place in the output, the first content part. */
  private at(item = this.open!.item): { item_id: string; output_index: number; content_index: number } {
    return { item_id: item.id, output_index: this.items.indexOf(item), content_index: 0 };
  }
}

/** Numbers the events of one response's stream and writes them as server-sent events (`event:` names the type). */
export class ResponseEvents {
  private sequence = 0;

  constructor(private readonly write: (chunk: string) => void) {}

  send(events: readonly Event[]): void {
    for (const event of events) this.write(`event: ${event.type}\ndata: ${JSON.stringify({ ...event, sequence_number: this.sequence++ })}\n\n`);
  }
}
