/**
 * A chat reply as it streams: its thought (reasoning), its answer (content) and the tool calls in the answer. The
 * thought is split off first, so a `<tool_call>` a model writes while thinking is not a call. One splitter for
 * the OpenAI server and the LangChain plugin.
 */
import { closesThought, opensThought, ReasoningTextSplitter, reasoningTagsOf, reasoningTokens, THINK_TAGS, type ReasoningFormat, type ReasoningTags } from './reasoning.js';
import { answerBeside, type ResponseFormat } from '../constrain/types.js';
import type { ThinkingBudget } from '../generate/types.js';
import { TOOL_CALL_SYNTAX, type ToolCallSyntax } from '../constrain/tool-syntax.js';
import { ToolCallTextSplitter, type ParsedToolCall, type SplitToolText, type ToolParameters } from './tool-calls.js';
import { GenericReplySplitter } from './generic-reply.js';
import { GENERIC_REPLY } from '../tokenizer/tools-in-prompt.js';
import { HARMONY, HARMONY_ANSWER, HARMONY_THOUGHT, HARMONY_TOKENS, HarmonyReplySplitter, isHarmonyTemplate } from './harmony.js';

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
  /** How the answer's tool calls are written, when it may hold calls to split off. */
  tools?: ToolCallSyntax;
  /** The bound tools' parameter schemas, which type the values of calls written in tags (`qwen-xml`, `glm`). */
  toolParameters?: ToolParameters;
  /**
   * The reply is either calls or an answer of the call's own format in their place (a `tool_calls` format's `answer`):
   * one that opens as calls is read as calls, any other is the answer, content as written whatever it holds (a
   * `response` key in a generic reply, a call's marker inside a string).
   */
  answer?: boolean;
  /**
   * The reply is harmony messages (gpt-oss's template): its channels say what is thought, answer and call, whatever
   * `reasoning` and `tools` say; `thought` false gives the thought out as content (reasoning_format none).
   */
  harmony?: { thought: boolean };
}

/**
 * How the reply to a rendered chat prompt is read. Its thought is split off unless `format` is `none`; a
 * `constrained` reply (a response format, tool calls) may think first only where the template names the thought's
 * tags (a reasoning model's) and the prompt has not closed the thought already (thinking switched off): its
 * constraint then takes the thought first ({@link thoughtFirst}); elsewhere a constrained reply is the structure
 * from its first token.
 */
export function replyParsing(opts: {
  format: ReasoningFormat;
  chatTemplate: string | undefined;
  prompt: string;
  constrained: boolean;
  /** The syntax of the tool calls the reply may hold (see `toolCallSyntaxOf`, {@link toolsRead}); absent: it holds none. */
  tools?: ToolCallSyntax | undefined;
  /** Whether the reply is calls or an answer in their place ({@link ReplyParsing.answer}, {@link toolsRead}). */
  answer?: boolean;
  /** The bound tools, whose parameter schemas type the values of calls written in tags. */
  toolSpecs?: readonly { name: string; parameters?: unknown }[];
}): ReplyParsing {
  const parameters = opts.tools && opts.toolSpecs ? { toolParameters: Object.fromEntries(opts.toolSpecs.map((t) => [t.name, (t.parameters ?? {}) as Record<string, unknown>])) } : {};
  const tools = opts.tools ? { tools: opts.tools, ...(opts.answer ? { answer: true } : {}), ...parameters } : {};
  if (isHarmonyTemplate(opts.chatTemplate)) return { harmony: { thought: opts.format !== 'none' }, ...tools };
  const named = reasoningTagsOf(opts.chatTemplate);
  if (opts.format === 'none' || (opts.constrained && (!named || closesThought(opts.prompt, named)))) return tools;
  const tags = named ?? THINK_TAGS;
  return { reasoning: { tags, open: opensThought(opts.prompt, tags) }, ...tools };
}

/**
 * The format a chat reply is held to, from the call's own response format (`own`: withStructuredOutput's JSON, a
 * request's `response_format`) and the tool-call format of its tools (`calls`, which holds the tool choice): forced
 * calls (`required`, a named tool) win, as that reply is the calls and no answer; under `auto` the reply is either
 * calls or an answer in `own`'s format, as OpenAI's API takes tools beside a `response_format`; either alone is the
 * format. An own `tool_calls` format says itself how calls are made, and is kept.
 */
export function replyFormat(own: ResponseFormat | undefined, calls: ResponseFormat | undefined): ResponseFormat | undefined {
  if (calls?.type !== 'tool_calls' || own?.type === 'tool_calls') return own ?? calls;
  const answer = answerBeside(own, calls.choice);
  return answer ? { ...calls, answer } : calls;
}

/**
 * How a reply held to `format` (see {@link replyFormat}) reads tool calls written in `syntax`, as `replyParsing` takes
 * it: calls, or calls or the answer in their place (`answer`); none in a generic reply shaped by a response format of
 * the call's own alone, whose structure is the answer, even one with a `response` key.
 */
export function toolsRead(syntax: ToolCallSyntax, format: ResponseFormat | undefined): { tools?: ToolCallSyntax; answer?: boolean } {
  if (format?.type === 'tool_calls') return format.answer !== undefined ? { tools: syntax, answer: true } : { tools: syntax };
  return syntax === 'generic' && format !== undefined ? {} : { tools: syntax };
}

/**
 * The tokens a reply's text must keep to be read as `parsing` reads it: the thought's tags, which are special tokens
 * in some vocabularies (Magistral's `[THINK]`) and decoding would drop. As the engine's `keepTokens`.
 */
export function keptTokens(parsing: ReplyParsing): string[] {
  if (parsing.harmony) return [...HARMONY_TOKENS];
  return parsing.reasoning ? [parsing.reasoning.tags.open, parsing.reasoning.tags.close] : [];
}

/** A reply's constraint with the thought `parsing` reads before it (the thought is then free text, and optional unless the prompt opened it). */
export function thoughtFirst(format: ResponseFormat, parsing: ReplyParsing): ResponseFormat {
  // Harmony: the analysis message may come first; a structured answer is the final channel's message, calls are not.
  if (parsing.harmony) return { ...format, thought: { ...HARMONY_THOUGHT, opened: false, ...(format.type === 'tool_calls' ? {} : { answer: HARMONY_ANSWER }) } };
  return parsing.reasoning ? { ...format, thought: { ...parsing.reasoning.tags, opened: parsing.reasoning.open } } : format;
}

/**
 * The engine's `thinkingBudget` of `tokens` for a reply read as `parsing`: the thought's tags are those it reads, or,
 * where it splits none off (`reasoning_format: none`), the template's (else `<think>`), open where the prompt opened them.
 */
export function thinkingBudgetFor(tokens: number, parsing: ReplyParsing, chatTemplate: string | undefined, prompt: string): ThinkingBudget {
  // Harmony: the analysis message, closed where the next message starts (the answer's or a call's header follows).
  if (parsing.harmony) return { tokens, ...HARMONY_THOUGHT, opened: false };
  const tags = parsing.reasoning?.tags ?? reasoningTagsOf(chatTemplate) ?? THINK_TAGS;
  return { tokens, ...tags, opened: parsing.reasoning?.open ?? opensThought(prompt, tags) };
}

/** Splits a reply piece by piece into thought, answer and tool calls. */
export class ChatReplySplitter {
  private readonly reasoning: ReasoningTextSplitter | undefined;
  private readonly tools: { push(text: string): SplitToolText; end(cut?: boolean): SplitToolText } | undefined;
  private readonly harmony: HarmonyReplySplitter | undefined;

  constructor(private readonly parsing: ReplyParsing) {
    this.harmony = parsing.harmony && new HarmonyReplySplitter(parsing.harmony.thought);
    this.reasoning = !this.harmony && parsing.reasoning ? new ReasoningTextSplitter(parsing.reasoning.tags, parsing.reasoning.open) : undefined;
    const calls = this.harmony || !parsing.tools ? undefined : parsing.tools === 'generic' ? new GenericReplySplitter() : new ToolCallTextSplitter(parsing.tools, parsing.toolParameters);
    this.tools = calls && parsing.answer ? new CallsOrAnswer(calls, callOpenings(parsing.tools!, parsing.toolParameters)) : calls;
  }

  /** Takes the next piece of text. */
  push(text: string): SplitReply {
    if (this.harmony) return this.harmony.push(text);
    const { reasoning, content } = this.reasoning ? this.reasoning.push(text) : { reasoning: '', content: text };
    return { reasoning, ...this.answer(content, false) };
  }

  /**
   * Ends the reply: what the splitters held back. `cut`: the reply stopped at its token limit, so a tool call it was
   * writing is given as written so far (`partial`, after those written whole) rather than as text, as OpenAI's API
   * gives a call that `max_tokens` cut; a reply that ended by itself is read as before.
   */
  end(cut = false): SplitReply {
    if (this.harmony) return this.harmony.end(cut);
    const { reasoning, content } = this.reasoning ? this.reasoning.end() : { reasoning: '', content: '' };
    return { reasoning, ...this.answer(content, true, cut) };
  }

  /**
   * How many of the reply's tokens its thought took, tags included, even an empty one (OpenAI's `reasoning_tokens`),
   * once the reply has been split; `decode` gives the text of ids as the engine wrote them.
   */
  reasoningTokens(ids: readonly number[], decode: (ids: number[]) => string): number {
    // (harmony's thought is its analysis message, through the <|end|> that closes it)
    if (this.harmony) return this.harmony.entered ? reasoningTokens(ids.length, (k) => decode(ids.slice(0, k)), { ...HARMONY_THOUGHT, close: HARMONY.end }) : 0;
    const tags = this.parsing.reasoning?.tags;
    if (!tags || !this.reasoning?.entered) return 0;
    return reasoningTokens(ids.length, (k) => decode(ids.slice(0, k)), tags);
  }

  private answer(content: string, end: boolean, cut = false): Omit<SplitReply, 'reasoning'> {
    if (!this.tools) return { content, toolCalls: [] };
    const split = this.tools.push(content);
    if (!end) return split;
    const tail = this.tools.end(cut);
    return { content: split.content + tail.content, toolCalls: [...split.toolCalls, ...tail.toolCalls] };
  }
}

/** What splits tool calls out of a reply's answer text. */
interface ToolsSplitter {
  push(text: string): SplitToolText;
  end(cut?: boolean): SplitToolText;
}

/**
 * How a reply that is calls (as the constraint writes `required` calls) opens, after any blanks: the syntax's opening;
 * the generic reply's object of calls; Llama 3's call of a bound tool (`tools`), whose opening an answer's JSON may share.
 */
function callOpenings(syntax: ToolCallSyntax, tools: ToolParameters | undefined): string[] {
  if (syntax === 'generic') return [`{"${GENERIC_REPLY.calls}": [`, `{"${GENERIC_REPLY.call}": `];
  const { begin } = TOOL_CALL_SYNTAX[syntax];
  return syntax === 'json' && tools ? Object.keys(tools).map((name) => `${begin}${JSON.stringify(name)}, "parameters": `) : [begin];
}

/**
 * A reply that is either calls or an answer in their place ({@link ReplyParsing.answer}): held back until its opening
 * tells which; calls go to the syntax's splitter, an answer is content as written (a reply that ends before its
 * opening told is content too).
 */
class CallsOrAnswer implements ToolsSplitter {
  private held = '';
  private kind: 'open' | 'calls' | 'answer' = 'open';

  constructor(
    private readonly calls: ToolsSplitter,
    private readonly openings: readonly string[],
  ) {}

  push(text: string): SplitToolText {
    if (this.kind === 'calls') return this.calls.push(text);
    if (this.kind === 'answer') return { content: text, toolCalls: [] };
    this.held += text;
    const start = this.held.trimStart();
    if (this.openings.some((o) => start.startsWith(o))) this.kind = 'calls';
    else if (!this.openings.some((o) => o.startsWith(start))) this.kind = 'answer';
    else return { content: '', toolCalls: [] };
    const held = this.held;
    this.held = '';
    return this.push(held);
  }

  end(cut = false): SplitToolText {
    const out = this.kind === 'calls' ? this.calls.end(cut) : { content: this.held, toolCalls: [] };
    this.held = '';
    this.kind = 'open';
    return out;
  }
}

/** The whole of a finished reply, split at once; `cut` where it stopped at its token limit (see {@link ChatReplySplitter.end}). */
export function splitReply(parsing: ReplyParsing, text: string, cut = false): SplitReply {
  return wholeReply(new ChatReplySplitter(parsing), text, cut);
}

/** A finished reply's text through `splitter`, as one split; `cut` where it stopped at its token limit. */
export function wholeReply(splitter: ChatReplySplitter, text: string, cut = false): SplitReply {
  const a = splitter.push(text);
  const b = splitter.end(cut);
  return { reasoning: a.reasoning + b.reasoning, content: a.content + b.content, toolCalls: [...a.toolCalls, ...b.toolCalls] };
}
