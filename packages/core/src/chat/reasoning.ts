/**
 * Thoughts in generated text: reasoning models (Qwen3, QwQ, DeepSeek-R1 and its distills, Phi-4-reasoning,
 * SmolLM3, EXAONE Deep) open their reply with `<think>…</think>` and answer after it; some chat templates open
 * the thought in the prompt already (`<think>\n` after the generation prompt) so the reply starts inside it.
 * The splitter here separates the thought from the answer as text streams in, the way llama.cpp's server
 * (`reasoning_format: deepseek`) and vLLM's reasoning parsers give it out as `reasoning_content`. Shared by the
 * OpenAI server and the LangChain plugin.
 */
import { partialTagAt } from './partial-tag.js';

/** How a reply's thought is given out: `auto` splits it off as reasoning, `none` leaves it in the content. */
export type ReasoningFormat = 'auto' | 'none';

/** The tags that open and close a thought. */
export interface ReasoningTags {
  open: string;
  close: string;
}

/** The common tags, and those read where a template names none. */
export const THINK_TAGS: ReasoningTags = { open: '<think>', close: '</think>' };

/**
 * The tag pairs models are trained with (Magistral's and Ministral 3's `[THINK]`, and Cohere's `<|START_THINKING|>`,
 * are special tokens of their vocabularies).
 */
const KNOWN_TAGS: readonly ReasoningTags[] = [
  THINK_TAGS,
  { open: '<thought>', close: '</thought>' },
  { open: '[THINK]', close: '[/THINK]' },
  { open: '<|START_THINKING|>', close: '<|END_THINKING|>' },
];

/**
 * The thought tags a chat template names: reasoning models' templates name the closing tag (to strip thoughts
 * from earlier turns) or the opening one (to open the reply's thought, or write an empty one).
 */
export function reasoningTagsOf(chatTemplate: string | undefined): ReasoningTags | undefined {
  return KNOWN_TAGS.find((t) => chatTemplate?.includes(t.close) || chatTemplate?.includes(t.open));
}

/** Whether a rendered prompt leaves a thought open, so that the reply starts inside it (DeepSeek-R1's template, QwQ's). */
export function opensThought(prompt: string, tags: ReasoningTags): boolean {
  return prompt.trimEnd().endsWith(tags.open);
}

/**
 * Whether a rendered prompt ends with a closed thought, so that the reply is the answer (Qwen3's template with
 * `enable_thinking: false` writes an empty `<think>\n\n</think>\n\n`).
 */
export function closesThought(prompt: string, tags: ReasoningTags): boolean {
  return prompt.trimEnd().endsWith(tags.close);
}

/** What one piece of generated text turned into. */
export interface SplitReasoning {
  reasoning: string;
  content: string;
}

/**
 * Separates a reply's thought from its answer as text arrives piece by piece. Only a thought that opens the reply
 * (after whitespace), or that the prompt left open, counts: a tag later in the answer is the answer's text. The
 * thought is given out without the whitespace around it, and the answer without the whitespace that follows the
 * closing tag; text that may still turn into a tag, or whitespace that may still precede the closing tag, is held
 * back until the next piece shows which.
 */
export class ReasoningTextSplitter {
  private state: 'start' | 'thought' | 'after' | 'answer';
  /** Text held back and searched again with the next piece: what may still turn into a tag. */
  private pending = '';
  /**
   * Whitespace held back before `pending` (before a thought, or that may still precede its closing tag): not read
   * until it is given out or dropped, so a long run of it costs no more per piece than a short one (a growing string
   * read with each piece is copied whole each time).
   */
  private blank = '';
  /** Whether any of the thought has been given out (whitespace before it is dropped). */
  private thoughtStarted = false;
  /** Whether the reply has been inside a thought, empty or not (its tags are then reasoning tokens). */
  entered: boolean;

  /**
   * @param tags the thought's tags
   * @param open whether the prompt left a thought open (see {@link opensThought})
   */
  constructor(
    private readonly tags: ReasoningTags,
    open: boolean,
  ) {
    this.state = open ? 'thought' : 'start';
    this.entered = open;
  }

  /** Whether the reply is inside a thought as far as it has arrived. */
  get thinking(): boolean {
    return this.state === 'thought';
  }

  /** Takes the next piece of text. */
  push(text: string): SplitReasoning {
    let rest = this.pending + text;
    this.pending = '';
    const out: SplitReasoning = { reasoning: '', content: '' };
    if (this.state === 'start') {
      const opening = rest.trimStart();
      this.blank += rest.slice(0, rest.length - opening.length);
      if (opening.startsWith(this.tags.open)) {
        this.state = 'thought';
        this.entered = true;
        this.blank = '';
        rest = opening.slice(this.tags.open.length);
      } else if (this.tags.open.startsWith(opening)) {
        this.pending = opening;
        return out; // whitespace, or the opening tag so far
      } else {
        this.state = 'answer';
        rest = this.blank + opening;
        this.blank = '';
      }
    }
    if (this.state === 'thought') {
      const at = rest.indexOf(this.tags.close);
      if (at === -1) {
        const free = rest.length - partialTagAt(rest, this.tags.close);
        out.reasoning = this.thought(rest.slice(0, free), false);
        this.pending = rest.slice(free);
        return out;
      }
      out.reasoning = this.thought(rest.slice(0, at), true);
      rest = rest.slice(at + this.tags.close.length);
      this.state = 'after';
    }
    if (this.state === 'after') {
      rest = rest.trimStart();
      if (!rest) return out;
      this.state = 'answer';
    }
    out.content = rest;
    return out;
  }

  /** Ends the text: a thought never closed (the reply was cut) is all reasoning; held-back text before any thought is content. */
  end(): SplitReasoning {
    const out: SplitReasoning = { reasoning: '', content: '' };
    if (this.state === 'thought') out.reasoning = this.thought(this.pending, true);
    else if (this.state !== 'after') out.content = this.blank + this.pending;
    this.pending = this.blank = '';
    return out;
  }

  /**
   * Gives out the thought's `text` that follows the held `blank`; its trailing whitespace waits (in `blank`) unless the
   * thought `closes` there, where it is dropped.
   */
  private thought(text: string, closes: boolean): string {
    if (!this.thoughtStarted) text = text.trimStart();
    const kept = text.trimEnd();
    const blank = this.blank;
    this.blank = closes ? '' : kept ? text.slice(kept.length) : blank + text;
    if (!kept) return '';
    this.thoughtStarted = true;
    return blank + kept;
  }
}

/**
 * How many of a reply's tokens belong to its thought: up to and including the one that completes the closing tag
 * (all of them when the thought never closes). `decode` gives the text of a prefix of the reply's ids; the prefix
 * is found by bisection, so a long reply costs a few decodes.
 */
export function reasoningTokens(count: number, decode: (tokens: number) => string, tags: ReasoningTags): number {
  let lo = 0; // decode(lo) has no closing tag
  let hi = count + 1; // the first prefix with one is at most `count`, or none (count + 1)
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (decode(mid).includes(tags.close)) hi = mid;
    else lo = mid;
  }
  return Math.min(hi, count);
}
