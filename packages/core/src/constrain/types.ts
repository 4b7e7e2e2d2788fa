/**
 * The constraint stage of the sampler chain: per row, after composition and before sampling, the tokens a
 * grammar cannot accept next are set to −∞, end-of-sequence is allowed only once the grammar is complete, and
 * the grammar advances on every accepted token. The interfaces here are what the decode loop sees; the engine
 * behind them (XGrammar today) can be replaced.
 */
import type { StageClock } from './timing.js';
import type { ToolCallSyntax } from './tool-syntax.js';

/** A JSON Schema, as an object (or `true`: any JSON value). */
export type JsonSchema = Record<string, unknown> | boolean;

/** A tool a tool-call constraint may call: its name and the JSON Schema of its arguments. */
export interface ToolSpec {
  /** The function's name, as the model writes it in a call. */
  name: string;
  /** The JSON Schema its arguments must validate against. */
  parameters: JsonSchema;
}

/**
 * Which tool calls a `tool_calls` constraint admits: `auto` (free text, in which `<tool_call>` starts a
 * well-formed call of a bound tool), `required` (the reply is calls of bound tools, at least one), or `{ name }`
 * (the reply is one call of that tool). How many calls `auto` and `required` admit is the format's `parallel`.
 */
export type ToolChoice = 'auto' | 'required' | { name: string };

/**
 * A thought the reply writes before its structure, free text between `open` and `close` (a reasoning model's
 * `<think>…</think>`), then whitespace: optional, or, where the prompt has `opened` it, the reply starts inside it
 * and must close it first. The structure is enforced after it, as vLLM enforces structured output after a
 * reasoning parser's end.
 */
export interface ThoughtFirst {
  open: string;
  close: string;
  opened: boolean;
  /** Text the answer opens with, after the thought or without one (harmony's final channel header). */
  answer?: string;
}

/** The structure a reply must have (after a thought, with `thought`). */
export type ResponseFormat = FormatKind & { thought?: ThoughtFirst };

type FormatKind =
  /** JSON that validates against `schema`. */
  | { type: 'json_schema'; schema: JsonSchema }
  /** Any JSON object. */
  | { type: 'json_object' }
  /** Text of an EBNF grammar (XGrammar's dialect, which reads GBNF too); the start rule is `root`. */
  | { type: 'grammar'; grammar: string }
  /** Text matching a regular expression (whole reply). */
  | { type: 'regex'; pattern: string }
  /**
   * Tool calls written as `<tool_call>{"name": …, "arguments": {…}}</tool_call>` (the Hermes/Qwen form the
   * chat templates teach), arguments valid against the tool's schema. `parallel` (default true, as OpenAI's
   * `parallel_tool_calls`): with `auto`, free text may go on after a call and start more; with `required`, the
   * reply is one or more calls, one per line. False admits one call at most; a named tool is always called once.
   * `syntax` (default `hermes`) is how the model writes a call; with `json` (Llama 3's `{"name": …, "parameters":
   * {…}}`) a reply makes one call at most, its last words; with `mistral` the reply's last words are
   * `[TOOL_CALLS]` (the vocabulary's special token, which the reply's text then keeps) and a JSON list of calls;
   * with `mistral-args` each call is `[TOOL_CALLS]name[ARGS]` (both special tokens, kept) and its arguments; with
   * `granite`, `<|tool_call|>` and a list, as `mistral`.
   * `answer` (with `auto` only: refused beside `required` or a named tool, whose reply is calls and no answer) puts an
   * answer of that format in place of free text, as OpenAI's API takes tools beside a `response_format`: the reply is
   * either the calls, as `required` writes them (`parallel` respected), or the answer.
   */
  | { type: 'tool_calls'; tools: ToolSpec[]; choice: ToolChoice; parallel?: boolean; syntax?: ToolCallSyntax; answer?: AnswerFormat };

/** A format an answer may take beside tool calls (any but `tool_calls`). */
export type AnswerFormat = Exclude<FormatKind, { type: 'tool_calls' }>;

/**
 * The answer a reply under `choice` may give in place of tool calls, in `own`'s format (a call's own response format):
 * only under `auto` (a forced call is the whole reply), none where `own` is itself a `tool_calls` format; `own`'s
 * thought belongs to the reply, not to the answer. Shared by the constraint (`replyFormat`) and the prompt that
 * describes it (`toolsShown`).
 */
export function answerBeside(own: ResponseFormat | undefined, choice: ToolChoice): AnswerFormat | undefined {
  if (!own || own.type === 'tool_calls' || choice !== 'auto') return undefined;
  const { thought: _, ...answer } = own;
  return answer;
}

/**
 * Each format's fields by name (`thought` aside, which a reply's format has and an answer's has not), for refusing
 * the others: the type makes a new field fail to compile until it is listed here.
 */
export const FORMAT_FIELD_NAMES = {
  json_schema: { type: true, schema: true },
  json_object: { type: true },
  grammar: { type: true, grammar: true },
  regex: { type: true, pattern: true },
  tool_calls: { type: true, tools: true, choice: true, parallel: true, syntax: true, answer: true },
} as const satisfies { [K in FormatKind['type']]: Record<keyof Extract<FormatKind, { type: K }>, true> };

/** {@link ThoughtFirst}'s fields by name. */
export const THOUGHT_FIELD_NAMES = { open: true, close: true, opened: true, answer: true } as const satisfies Record<keyof ThoughtFirst, true>;

/** A grammar's state for one row. */
export interface Constraint {
  /**
   * The tokens the grammar can accept next, as a bitmask (bit i of word i >> 5 set: token i allowed; see
   * sampling/bitmask.ts). The sampler picks among them without writing −∞ over the others where it can.
   */
  allowed(): Promise<Int32Array>;
  /** Sets −∞ on the logits of every token the grammar cannot accept next (logits cover ids 0..n-1). */
  mask(logits: Float32Array): Promise<void>;
  /**
   * Starts computing the next bitmask, after {@link accept} and while the model computes the next logits (it
   * runs off the JavaScript thread), so that the grammar's work overlaps the model's; {@link allowed} then
   * only hands it over. Does nothing while {@link prefetch} is false.
   */
  prepare?(): void;
  /**
   * Whether {@link prepare} computes the next bitmask ahead (true at first). The pick turns it off when its next
   * pick is likely to need none (see {@link tryAccept}): computing one would take a core from the model's step.
   */
  prefetch: boolean;
  /** True while a bitmask started by {@link prepare} is waiting to be handed over. */
  readonly prepared: boolean;
  /** About what share of the vocabulary the last bitmask allowed (0 to 1; 0 before the first). */
  readonly allowedShare: number;
  /** What the stage has cost this row (bitmasks, waits, picks). */
  readonly clock: StageClock;
  /** Advances on the token sampled; throws {@link ConstraintError} for a token the grammar rejects. */
  accept(token: number): void;
  /**
   * Advances on `token` if the grammar accepts it next (exactly the tokens its bitmask would allow) and returns
   * true; otherwise returns false and changes nothing. Lets a pick made without the bitmask stand when it is allowed.
   */
  tryAccept(token: number): boolean;
  /** True once the grammar has accepted its end (the stop token): the reply is complete. */
  isComplete(): boolean;
  /** Frees what the constraint holds. */
  dispose(): void;
}

/** Compiles response formats against one vocabulary and hands out constraints. */
export interface ConstraintFactory {
  /**
   * A constraint for one row. `stopTokenIds` are the ids that end the reply (allowed only when the grammar
   * is complete). Throws {@link ConstraintError} for a format that cannot be enforced, before any generation.
   */
  create(format: ResponseFormat, stopTokenIds: readonly number[]): Promise<Constraint>;
}

/** Raised for a response format that cannot be enforced, naming what is wrong. */
export class ConstraintError extends Error {
  override name = 'ConstraintError';
}
