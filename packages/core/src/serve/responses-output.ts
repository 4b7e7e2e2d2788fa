/**
 * A reply as OpenAI's Responses API gives it: output items (the thought as a `reasoning` item, the answer as a
 * `message` with one `output_text` part, each tool call a `function_call`), either whole or as the stream of typed
 * events a Responses client reads (`response.created`, `response.output_item.added`, `response.output_text.delta`,
 * …, `response.completed`), each numbered by `sequence_number`.
 */
import type { ReplyParsing } from '../chat/reply.js';
import type { TokenLogprobs } from '../generate/types.js';
import { chatLogprobs } from './logprobs.js';
import { BlockOutput, itemId, type BlockEvent, type Event } from './reply-blocks.js';
import type { OutputItem as Item } from './response-items.js';

/** The usage of a finished response, in the Responses API's words. */
export interface ResponseUsage {
  input_tokens: number;
  /** `cache_write_tokens` (OpenAI's schema requires it) is 0: the prefix cache keeps prompts at no cost to report. */
  input_tokens_details: { cached_tokens: number; cache_write_tokens: number };
  output_tokens: number;
  output_tokens_details: { reasoning_tokens: number };
  total_tokens: number;
}

/**
 * One response's output as it is written: `push` takes the reply's text piece by piece and returns the stream events
 * it gives (nothing is lost when they are not sent: a response answered whole reads {@link items} at the end).
 */
export class ResponseOutput extends BlockOutput<Event> {
  /** Output items in order, one per block of the reply; the last may still be open. */
  readonly items: Item[] = [];
  /** The log-probabilities given out so far, per text item. */
  private readonly given = new Map<number, ReturnType<typeof chatLogprobs>['content']>();

  /** @param logprobs whether text carries its tokens' log-probabilities (`include: ["message.output_text.logprobs"]`) */
  constructor(
    parsing: ReplyParsing,
    private readonly logprobs = false,
  ) {
    super(parsing);
  }

  protected render(e: BlockEvent, tokens: readonly TokenLogprobs[]): Event[] {
    const output_index = e.index;
    if (e.kind === 'call') {
      const { call } = e;
      const item: Item = { type: 'function_call', id: itemId('fc'), call_id: call.id, name: call.name ?? '', arguments: call.arguments, status: 'completed' };
      this.items[output_index] = item;
      return [
        { type: 'response.output_item.added', output_index, item: { ...item, arguments: '', status: 'in_progress' } },
        { type: 'response.function_call_arguments.delta', item_id: item.id, output_index, delta: call.arguments },
        { type: 'response.function_call_arguments.done', item_id: item.id, output_index, name: item.name, arguments: call.arguments },
        { type: 'response.output_item.done', output_index, item },
      ];
    }
    const thought = e.block === 'thought';
    if (e.kind === 'open') {
      const item: Item = thought
        ? { type: 'reasoning', id: itemId('rs'), summary: [], content: [] }
        : { type: 'message', id: itemId('msg'), status: 'in_progress', role: 'assistant', content: [] };
      this.items[output_index] = item;
      // Its one part opens before any delta, which clients (the OpenAI SDK's stream helper) add to that part.
      const part = thought ? { type: 'reasoning_text', text: '' } : { type: 'output_text', text: '', annotations: [], logprobs: [] };
      return [
        { type: 'response.output_item.added', output_index, item: structuredClone(item) },
        { type: 'response.content_part.added', ...this.at(e.index), part },
      ];
    }
    if (e.kind === 'delta') {
      return [thought ? { type: 'response.reasoning_text.delta', ...this.at(e.index), delta: e.text } : { type: 'response.output_text.delta', ...this.at(e.index), delta: e.text, logprobs: this.give(e.index, tokens) }];
    }
    const item = this.items[output_index]!;
    if (thought) {
      const part = { type: 'reasoning_text', text: e.text };
      item.content = [part];
      return [
        { type: 'response.reasoning_text.done', ...this.at(e.index), text: e.text },
        { type: 'response.content_part.done', ...this.at(e.index), part },
        { type: 'response.output_item.done', output_index, item },
      ];
    }
    this.give(e.index, tokens);
    const logprobs = this.given.get(e.index) ?? [];
    const part = { type: 'output_text', text: e.text, annotations: [], logprobs };
    // (OpenAI marks the message that max_output_tokens cut "incomplete", as the response itself)
    Object.assign(item, { content: [part], status: this.cut ? 'incomplete' : 'completed' });
    return [
      { type: 'response.output_text.done', ...this.at(e.index), text: e.text, logprobs },
      { type: 'response.content_part.done', ...this.at(e.index), part },
      { type: 'response.output_item.done', output_index, item },
    ];
  }

  /** The tokens' log-probabilities in the API's shape (none unless asked for), kept for the item's final part. */
  private give(index: number, tokens: readonly TokenLogprobs[]): ReturnType<typeof chatLogprobs>['content'] {
    if (!this.logprobs) return [];
    const entries = chatLogprobs(tokens).content;
    this.given.set(index, [...(this.given.get(index) ?? []), ...entries]);
    return entries;
  }

  /** Where a text event belongs: its item, that item's place in the output, the first content part. */
  private at(index: number): { item_id: string; output_index: number; content_index: number } {
    return { item_id: this.items[index]!.id, output_index: index, content_index: 0 };
  }
}
