/**
 * A chat reply as the block-shaped APIs give it (OpenAI's Responses output items, Anthropic's content blocks): a
 * thought block, text blocks and tool calls, in the order the model wrote them. The reply's text is split by the
 * chat splitter; this tracks which block is open and says when one opens, grows and closes, each block numbered in
 * the reply. Each API renders these events in its own words. Of a reply cut off by its token limit, only the calls
 * written whole are blocks: an Anthropic `tool_use`'s input is an object, and a Responses client reads a
 * `function_call` item's arguments as whole JSON, so the call the cut stopped in is left out (no text either).
 */
import { randomBytes } from 'node:crypto';
import { ChatReplySplitter, type ReplyParsing, type SplitReply } from '../chat/reply.js';
import type { ParsedToolCall } from '../chat/tool-calls.js';
import type { TokenLogprobs } from '../generate/types.js';
import { HeldEntries } from './logprobs.js';

/** A stream event of a block-shaped API, named by its type. */
export type Event = Record<string, unknown> & { type: string };

/** An id with the API's prefix for its kind (`resp`, `msg`, `rs`, `fc`). */
export const itemId = (prefix: string) => `${prefix}_${randomBytes(12).toString('hex')}`;

/** A block of streamed text: the model's thought, or its answer. */
export type TextBlock = 'thought' | 'text';

/** What a piece of the reply did to its blocks; `index` numbers the block in the reply. */
export type BlockEvent =
  | { kind: 'open'; block: TextBlock; index: number }
  | { kind: 'delta'; block: TextBlock; index: number; text: string }
  | { kind: 'close'; block: TextBlock; index: number; text: string }
  | { kind: 'call'; index: number; call: ParsedToolCall };

export class ReplyBlocks {
  private readonly splitter: ChatReplySplitter;
  private open: { block: TextBlock; index: number; text: string } | undefined;
  private blocks = 0;
  private callCount = 0;

  constructor(parsing: ReplyParsing) {
    this.splitter = new ChatReplySplitter(parsing);
  }

  /** Whether the reply called a tool. */
  get called(): boolean {
    return this.callCount > 0;
  }

  /** The events a piece of the reply's text gives. */
  push(text: string): BlockEvent[] {
    return text ? this.take(this.splitter.push(text)) : [];
  }

  /**
   * The events of what the splitter held back, then the last block's close (an empty reply is one empty text block);
   * `cut` where the reply stopped at its token limit.
   */
  end(cut = false): BlockEvent[] {
    const out = this.take(this.splitter.end(cut));
    if (this.blocks === 0) out.push(...this.text('text', ''));
    return [...out, ...this.close()];
  }

  /** How many of the reply's tokens its thought took. */
  reasoningTokens(ids: readonly number[], decode: (ids: number[]) => string): number {
    return this.splitter.reasoningTokens(ids, decode);
  }

  private take(split: SplitReply): BlockEvent[] {
    const out: BlockEvent[] = [];
    if (split.reasoning) out.push(...this.text('thought', split.reasoning));
    if (split.content) out.push(...this.text('text', split.content));
    for (const call of split.toolCalls.filter((c) => !c.partial)) {
      out.push(...this.close(), { kind: 'call', index: this.blocks++, call });
      this.callCount++;
    }
    return out;
  }

  /** Text for a block of `block`'s kind: appended to the open one, or to a new one (an open block of the other kind closed first). */
  private text(block: TextBlock, delta: string): BlockEvent[] {
    const out: BlockEvent[] = [];
    if (this.open?.block !== block) {
      out.push(...this.close());
      this.open = { block, index: this.blocks++, text: '' };
      out.push({ kind: 'open', block, index: this.open.index });
    }
    this.open!.text += delta;
    if (delta) out.push({ kind: 'delta', block, index: this.open!.index, text: delta });
    return out;
  }

  private close(): BlockEvent[] {
    const open = this.open;
    if (!open) return [];
    this.open = undefined;
    return [{ kind: 'close', block: open.block, index: open.index, text: open.text }];
  }
}

/**
 * A reply rendered block by block in one API's words: a subclass says what each block event reads as. Generated
 * tokens' log-probabilities, when given, ride with the text they became: each text delta (or a text block's close)
 * carries the tokens not given out yet whose text has started (a character's first bytes wait for the token
 * completing it, a possible stop string's tokens to be let out or cut; the last tokens, which show nothing, are not
 * given); those of a thought or a tool call are dropped (where a piece ends a thought and starts the text, the text
 * keeps the last tokens its own characters came from).
 */
export abstract class BlockOutput<E> {
  private readonly blocks: ReplyBlocks;
  private readonly held = new HeldEntries();

  constructor(parsing: ReplyParsing) {
    this.blocks = new ReplyBlocks(parsing);
  }

  /** Whether the reply called a tool. */
  get called(): boolean {
    return this.blocks.called;
  }

  /** The events a piece of the reply's text gives; `logprobs`: the token's that gave it. */
  push(text: string, logprobs?: TokenLogprobs): E[] {
    this.held.push(text, logprobs);
    return this.rendered(this.blocks.push(text));
  }

  /** Whether the reply was cut short (`max_tokens`): the block its end closes is incomplete. */
  protected cut = false;

  /** The events of the reply's end: what was held back, and the close of the last block; `cut` where the reply was cut short. */
  end(cut = false): E[] {
    this.cut = cut;
    this.held.end();
    return this.rendered(this.blocks.end(cut));
  }

  private rendered(events: BlockEvent[]): E[] {
    let other = false;
    return events.flatMap((e) => {
      if (e.kind === 'open') return this.render(e, []);
      if (e.kind === 'call' || e.block === 'thought') {
        other = true;
        return this.render(e, []);
      }
      const released = this.held.released();
      // Text after a thought or a call in the same piece: the tokens before its own were theirs.
      return this.render(e, other ? lastTokensOf(released, e.kind === 'delta' ? e.text : '') : released);
    });
  }

  /** How many of the reply's tokens its thought took. */
  reasoningTokens(ids: readonly number[], decode: (ids: number[]) => string): number {
    return this.blocks.reasoningTokens(ids, decode);
  }

  protected abstract render(e: BlockEvent, logprobs: readonly TokenLogprobs[]): E[];
}

/**
 * The last of `tokens` whose texts make up `text` (the last one at least), with the tokens holding the first bytes of
 * its first character: they name nothing and start where the token completing it does.
 */
function lastTokensOf(tokens: readonly TokenLogprobs[], text: string): TokenLogprobs[] {
  let start = tokens.length - 1;
  let covered = tokens[start]?.token?.length ?? 0;
  while (start > 0 && covered < text.trim().length) covered += tokens[--start]!.token?.length ?? 0;
  const at = tokens[start]?.offset;
  while (start > 0 && at !== undefined && tokens[start - 1]!.offset === at && !tokens[start - 1]!.token) start--;
  return tokens.slice(Math.max(start, 0));
}

/** Writes events as server-sent events whose `event:` names their type (the Responses and Messages APIs' streams). */
export class NamedEvents {
  private sequence = 0;

  constructor(
    private readonly write: (chunk: string) => void,
    /** Whether each event carries its `sequence_number` (the Responses API's events do, Anthropic's do not). */
    private readonly numbered = true,
  ) {}

  send(events: readonly Event[]): void {
    for (const event of events) {
      const data = this.numbered ? { ...event, sequence_number: this.sequence++ } : event;
      this.write(`event: ${event.type}\ndata: ${JSON.stringify(data)}\n\n`);
    }
  }
}
