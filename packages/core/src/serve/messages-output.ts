/**
 * A reply as Anthropic's Messages API gives it: content blocks (`thinking`, `text`, each tool call a `tool_use` with
 * its parsed input), either whole or as the stream a Messages client reads (`message_start`, `content_block_start`,
 * `content_block_delta` with `text_delta`/`thinking_delta`/`input_json_delta`, `content_block_stop`, `message_delta`
 * with the stop reason and usage, `message_stop`). With `thinking.display: "omitted"` a thinking block comes
 * without its text, as Anthropic's then do.
 */
import type { ReplyParsing } from '../chat/reply.js';
import type { RowResult } from '../generate/types.js';
import { BlockOutput, type BlockEvent, type Event } from './reply-blocks.js';
import { isObject } from './requests.js';

type Block = Record<string, unknown> & { type: string };

/** A text block (`citations`: this server cites no documents). */
const textBlock = (text: string): Block => ({ type: 'text', text, citations: null });
/** A thinking block (its signature empty: the server signs nothing, and takes thoughts back unsigned). */
const thinkingBlock = (thinking: string): Block => ({ type: 'thinking', thinking, signature: '' });

/**
 * Anthropic's stop reason of a row, having called tools or not: one cut before its `maxTokens` ran into the end of
 * the context (the engine stops a row there).
 */
export function stopReason(row: Pick<RowResult, 'finishReason' | 'ids'>, called: boolean, maxTokens: number): string {
  if (row.finishReason === 'length') return row.ids.length < maxTokens ? 'model_context_window_exceeded' : 'max_tokens';
  if (row.finishReason === 'stop') return 'stop_sequence';
  return called ? 'tool_use' : 'end_turn';
}

/** One message's content as it is written: `push` returns the stream events a piece of the reply gives. */
export class MessageOutput extends BlockOutput<Event> {
  /** The message's content blocks in order. */
  readonly content: Block[] = [];

  /** `thoughtOmitted` (`thinking.display: "omitted"`): thinking blocks are given without their text. */
  constructor(
    parsing: ReplyParsing,
    private readonly thoughtOmitted = false,
  ) {
    super(parsing);
  }

  protected render(e: BlockEvent): Event[] {
    const index = e.index;
    if (e.kind === 'call') {
      const { call } = e;
      const input = parsedInput(call.arguments);
      // (`caller`: the model called it itself, not a server tool's code)
      const block: Block = { type: 'tool_use', id: call.id, name: call.name ?? '', input, caller: { type: 'direct' } };
      this.content[index] = block;
      return [
        { type: 'content_block_start', index, content_block: { ...block, input: {} } },
        { type: 'content_block_delta', index, delta: { type: 'input_json_delta', partial_json: JSON.stringify(input) } },
        { type: 'content_block_stop', index },
      ];
    }
    const thought = e.block === 'thought';
    if (e.kind === 'open') {
      this.content[index] = thought ? thinkingBlock('') : textBlock('');
      return [{ type: 'content_block_start', index, content_block: { ...this.content[index]! } }];
    }
    if (e.kind === 'delta') {
      if (thought && this.thoughtOmitted) return [];
      return [{ type: 'content_block_delta', index, delta: thought ? { type: 'thinking_delta', thinking: e.text } : { type: 'text_delta', text: e.text } }];
    }
    this.content[index] = thought ? thinkingBlock(this.thoughtOmitted ? '' : e.text) : textBlock(e.text);
    // A thinking block closes with its signature (none here: the server signs nothing, and takes thoughts back unsigned).
    const signed: Event[] = thought ? [{ type: 'content_block_delta', index, delta: { type: 'signature_delta', signature: '' } }] : [];
    return [...signed, { type: 'content_block_stop', index }];
  }
}

/** A call's arguments as the object Anthropic's `input` is (a call whose text is no JSON object keeps it raw). */
function parsedInput(args: string): unknown {
  try {
    const v: unknown = JSON.parse(args);
    return isObject(v) ? v : { arguments: args };
  } catch {
    return { arguments: args };
  }
}
