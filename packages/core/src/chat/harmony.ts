/**
 * OpenAI's harmony format (gpt-oss): a reply is a run of messages, each a header, `<|message|>` and a body closed by
 * `<|end|>`, or by `<|call|>` (a tool call) or `<|return|>` (the answer), which end generation. The header names the
 * channel: `analysis` (the thought), `final` (the answer), `commentary` (a tool call, with its recipient
 * `to=functions.<name>`, or words to the user). The next message opens with `<|start|>assistant`; gpt-oss's template
 * writes a call's recipient there, before the channel (`<|start|>assistant to=functions.add<|channel|>commentary
 * json<|message|>{…}<|call|>`), the format's own guide after it (`<|channel|>commentary to=functions.add
 * <|constrain|>json<|message|>`): both read alike. Special tokens all; the reply's text keeps them for the splitter.
 */
import { randomUUID } from 'node:crypto';
import { partialTagAt } from './partial-tag.js';
import { isJson } from './partial-json.js';
import type { ParsedToolCall } from './tool-calls.js';

/** The format's special tokens. */
export const HARMONY = {
  start: '<|start|>',
  channel: '<|channel|>',
  message: '<|message|>',
  end: '<|end|>',
  call: '<|call|>',
  return: '<|return|>',
  constrain: '<|constrain|>',
} as const;

/** The tokens a reply's text keeps to be read. */
export const HARMONY_TOKENS: readonly string[] = Object.values(HARMONY);

/**
 * The thought as a constraint lets it come first: the analysis message, closed where the next message starts (the
 * tool call's recipient, or the answer's channel, follows).
 */
export const HARMONY_THOUGHT = { open: `${HARMONY.channel}analysis${HARMONY.message}`, close: `${HARMONY.end}${HARMONY.start}assistant` } as const;

/** The header of the answer's message, after its `<|start|>assistant`. */
export const HARMONY_ANSWER = `${HARMONY.channel}final${HARMONY.message}`;

/** Where a tool call's recipient begins: the opening of a call as the template writes it, after `<|start|>assistant`. */
export const HARMONY_CALL = ' to=functions.';

/** Whether a chat template writes harmony messages (gpt-oss's). */
export function isHarmonyTemplate(chatTemplate: string | undefined): boolean {
  return !!chatTemplate && chatTemplate.includes(HARMONY.channel) && chatTemplate.includes(HARMONY.message);
}

/** The closers of a message's body. */
const CLOSERS = [HARMONY.end, HARMONY.call, HARMONY.return];

/** What one piece of a harmony reply turned into. */
export interface SplitHarmony {
  reasoning: string;
  content: string;
  toolCalls: ParsedToolCall[];
}

/**
 * Splits a harmony reply piece by piece: analysis bodies are reasoning, final bodies (and commentary to no one, and
 * other channels) content, commentary to `functions.<name>` a call, read when its body closes or the reply ends. A
 * reply that opens with no header is content as written (a model that writes plain text). `thought: false`
 * (reasoning_format none) leaves the analysis message in the content as written, from its `<|channel|>` through the
 * token that closes it, as llama.cpp's gpt-oss parser does with format none; the other messages lose their markers.
 */
export class HarmonyReplySplitter {
  private pending = '';
  private state: 'header' | 'body' | 'plain' = 'header';
  private kind: 'reasoning' | 'content' | 'call' = 'content';
  private recipient = '';
  /** The body is a thought given as content (`thought: false`), its markers kept. */
  private raw = false;
  /** Whether the reply held an analysis message (its tokens are reasoning tokens). */
  entered = false;

  constructor(private readonly thought = true) {}

  /** Takes the next piece of text. */
  push(text: string): SplitHarmony {
    this.pending += text;
    const out: SplitHarmony = { reasoning: '', content: '', toolCalls: [] };
    for (;;) {
      if (this.state === 'plain') {
        out.content += this.pending;
        this.pending = '';
        return out;
      }
      if (this.state === 'header') {
        const at = this.pending.indexOf(HARMONY.message);
        if (at === -1) {
          if (!this.couldBeHeader(this.pending)) this.state = 'plain';
          else return out;
          continue;
        }
        this.open(out, this.pending.slice(0, at));
        this.pending = this.pending.slice(at + HARMONY.message.length);
        continue;
      }
      const closed = CLOSERS.map((c) => [this.pending.indexOf(c), c] as const).filter(([at]) => at !== -1).sort((a, b) => a[0] - b[0])[0];
      if (!closed) {
        if (this.kind !== 'call') {
          const held = Math.max(...CLOSERS.map((c) => partialTagAt(this.pending, c)));
          this.give(out, this.pending.slice(0, this.pending.length - held));
          this.pending = this.pending.slice(this.pending.length - held);
        }
        return out;
      }
      const [at, closer] = closed;
      this.close(out, this.pending.slice(0, at) + (this.raw ? closer : ''));
      this.pending = this.pending.slice(at + closer.length);
      this.state = 'header';
    }
  }

  /**
   * Ends the reply: an unclosed body is given out (a call read from what it holds); a header never finished is dropped.
   * In a reply `cut` off by its token limit, the start of a closer it stopped in is dropped, and a call whose
   * arguments are no JSON yet is `partial`.
   */
  end(cut = false): SplitHarmony {
    const out: SplitHarmony = { reasoning: '', content: '', toolCalls: [] };
    if (this.state === 'body') {
      const held = cut ? Math.max(...CLOSERS.map((c) => partialTagAt(this.pending, c))) : 0;
      this.close(out, this.pending.slice(0, this.pending.length - held));
      const call = out.toolCalls[0];
      if (cut && call && !isJson(call.arguments)) call.partial = true;
    } else if (this.state === 'plain') out.content = this.pending;
    this.pending = '';
    this.state = 'header';
    return out;
  }

  /**
   * Whether text with no `<|message|>` yet may still be a header: it starts (after blanks) with a special token or a
   * recipient, or is a prefix of one.
   */
  private couldBeHeader(text: string): boolean {
    const t = text.trimStart();
    return t === '' || ['<|', 'to='].some((h) => t.startsWith(h) || h.startsWith(t));
  }

  /** Opens a message's body after its header. */
  private open(out: SplitHarmony, header: string): void {
    const channel = /<\|channel\|>\s*([A-Za-z_]+)/.exec(header)?.[1] ?? '';
    const recipient = /(?:^|\s|>)to=([^\s<]+)/.exec(header)?.[1] ?? '';
    this.state = 'body';
    this.raw = false;
    if (recipient.startsWith('functions.')) {
      this.kind = 'call';
      this.recipient = recipient.slice('functions.'.length);
    } else if (channel === 'analysis' && this.thought) {
      this.kind = 'reasoning';
      this.entered = true;
    } else {
      this.kind = 'content';
      if (channel === 'analysis') {
        // (the header from its channel: the `<|start|>assistant` before it is the message's opening, not its header)
        this.raw = true;
        out.content += `${header.slice(header.indexOf(HARMONY.channel))}${HARMONY.message}`;
      }
    }
  }

  private give(out: SplitHarmony, text: string): void {
    if (this.kind === 'reasoning') out.reasoning += text;
    else if (this.kind === 'content') out.content += text;
  }

  /**
   * Closes the body whose rest is `text`. A call's arguments are its body as written (JSON's numbers spelled as the
   * model spelled them, its layout kept), or, not JSON, its raw text, as the other syntaxes keep both.
   */
  private close(out: SplitHarmony, text: string): void {
    if (this.kind !== 'call') {
      this.give(out, text);
      return;
    }
    out.toolCalls.push({ id: `call_${randomUUID()}`, name: this.recipient, arguments: text.trim() });
  }
}
