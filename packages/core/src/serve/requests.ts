/**
 * Reading OpenAI request bodies (`/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`) into engine calls.
 * Every field read is checked here, before a request is queued, so a bad one is a 400 that names the parameter.
 * Besides OpenAI's own fields, those vLLM's and llama.cpp's clients send are honoured under their names (`top_k`,
 * `min_p`, `repetition_penalty` or `repeat_penalty`, `n_predict`, `seed: -1`, `ignore_eos`, `stop_token_ids`,
 * `min_tokens`, `include_stop_str_in_output`, `skip_special_tokens`, `truncate_prompt_tokens`, `add_special_tokens`,
 * chat `echo`, `documents`, `chat_template_kwargs`, the constraint fields of `structured-output.ts`, …); those the
 * engine cannot honour (`best_of` above 1, a per-request `chat_template`, the samplers and outputs in
 * `NEUTRAL` at any but their neutral value) are refused by name rather than ignored. Fields not read at all are
 * bookkeeping that changes no reply (`user`, `metadata`, `store`, llama.cpp's `cache_prompt`, …).
 */
import type { ChatMessage } from '../tokenizer/tokenizer.js';
import type { CompositionOptions } from '../runtime/protocol.js';
import type { GenerateOptions } from '../generate/types.js';
import type { ResponseFormat, ToolChoice, ToolSpec } from '../constrain/types.js';
import type { WeightSpec } from '../compose/weights.js';
import type { ReasoningFormat } from '../chat/reasoning.js';
import type { ToolCallSyntax } from '../constrain/tool-syntax.js';
import { badRequest } from './errors.js';
import { checkToolSchema, constraintOf } from './structured-output.js';
import { MAX_TOP_LOGPROBS } from '../sampling/logprobs.js';
import { ILL_FORMED_STOP, illFormedStop } from '../generate/options.js';
import { LatentPolicyError, parseLatentPolicy } from '../generate/decode-loop.js';

/** A JSON request body (or an object within one). */
export type Body = Record<string, unknown>;

/** The engine options a request asks for (the reasoners come from `model` and the `reasonplug` extension). */
export type CallOptions = GenerateOptions & Omit<CompositionOptions, 'reasoners'> & { responseFormat?: ResponseFormat };

/** What both endpoints share. */
export interface ParsedRequest {
  model: string;
  stream: boolean;
  /** `stream_options.include_usage`: a last chunk with the usage and no choices. */
  includeUsage: boolean;
  options: CallOptions;
  /** Whether per-token log-probabilities were asked for (how many alternatives: `options.logprobs`). */
  logprobs: boolean;
  /** The `reasonplug.reasoners` extension: replaces the reasoners `model` names, with their weights. */
  reasoners?: { name: string; weight?: WeightSpec }[];
  /** Choices per prompt (`n`): each a row of its own, row j sampling from seed + j. */
  n: number;
  /** `skip_special_tokens: false` (vLLM's): the reply keeps the text of the tokenizer's special tokens. */
  keepSpecialTokens: boolean;
  /** `truncate_prompt_tokens` (vLLM's): only the prompt's last this many tokens are run; -1, as many as the context holds. */
  truncatePromptTokens?: number;
}

/** What the chat template renders: messages, tools and the template's own variables. */
export interface ChatPromptSpec {
  messages: ChatMessage[];
  /** Tools as the template renders them (OpenAI's `{type: 'function', function: {...}}`). */
  tools?: { type: 'function'; function: { name: string; description?: string; parameters?: Record<string, unknown> } }[];
  /** `chat_template_kwargs` (vLLM's and llama.cpp's): variables for the template, such as Qwen3's `enable_thinking`. */
  templateKwargs?: Record<string, unknown>;
  /** `add_generation_prompt` (vLLM's): the template opens the assistant's turn (default, unless continuing one). */
  addGenerationPrompt: boolean;
  /** `continue_final_message` (vLLM's): the prompt ends inside the final assistant message, whose text the reply continues. */
  continueFinalMessage: boolean;
  /**
   * The tool-call constraint; absent with `tool_choice: "none"` or without tools. With `none`, a template that renders
   * tools still shows them; tools the prompt describes (the `generic` syntax's) are left out.
   */
  toolChoice?: ToolChoice;
  /** `parallel_tool_calls`: whether a reply may make several calls (OpenAI's default: true). */
  parallelToolCalls: boolean;
}

/** A chat request: messages for the chat template, and tools. */
export interface ChatRequest extends ParsedRequest, ChatPromptSpec {
  /** `reasoning_format` (llama.cpp's): `none` leaves a reply's thought in its content; default the server's. */
  reasoningFormat?: ReasoningFormat;
  /** `thinking_token_budget` (vLLM's): tokens the reply's thought may take before its closing tag is written; default the server's. */
  thinkingBudget?: number;
  /** `echo` (vLLM's): the reply's content starts with the text of a last message in the reply's role (the one continued). */
  echo: boolean;
  /** `add_special_tokens` (vLLM's): the tokenizer's BOS/EOS added around the rendered prompt (default false: the template writes them). */
  addSpecialTokens: boolean;
}

/** A text completion request: one prompt, or several (one choice each). */
export interface CompletionRequest extends ParsedRequest {
  prompt: string | string[] | number[] | number[][];
  /** `echo`: the prompt is written before the completion (with `logprobs`, its tokens' log-probabilities before the completion's). */
  echo: boolean;
  /** `add_special_tokens` (vLLM's): a text prompt is tokenized with the tokenizer's BOS/EOS (default true). */
  addSpecialTokens: boolean;
  /** `max_tokens: 0` with `echo`: the prompt alone, scored, nothing generated (OpenAI's legacy way of scoring text). */
  scoreOnly?: boolean;
  /** `suffix`: the code after the insertion; the prompt is the code before it (fill-in-the-middle). */
  suffix?: string;
}

/**
 * What stands between the text parts of a message read as one text, on every route: a line break, as vLLM and
 * llama.cpp join them for a template that reads a string.
 */
export const PART_SEPARATOR = '\n';

/** Whether a JSON value is an object (not an array, not null). */
export const isObject = (v: unknown): v is Body => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * A value a request sent, as a refusal quotes it: as JSON, but a number as JavaScript writes it (a body's `1e999`
 * parses as Infinity, which JSON would write as `null`).
 */
export function shown(v: unknown): string {
  return typeof v === 'number' ? String(v) : JSON.stringify(v);
}

function number(body: Body, key: string, check: (n: number) => boolean, rule: string): number | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v) || !check(v)) throw badRequest(`${key} must be ${rule} (got ${shown(v)})`, key);
  return v;
}

const integer = (body: Body, key: string, min: number) =>
  number(body, key, (n) => Number.isSafeInteger(n) && n >= min, `a whole number >= ${min}`);

/** Refuses a field the server does not implement when it asks for anything but the default. */
function refuseUnless(body: Body, key: string, isDefault: (v: unknown) => boolean, why: string): void {
  const v = body[key];
  if (v !== undefined && v !== null && !isDefault(v)) throw badRequest(`${key} ${shown(v)} is not supported: ${why}`, key, 'unsupported_parameter');
}

/**
 * vLLM's and llama.cpp's fields for what this server does not run: each taken at its neutral value (what their
 * clients send by default), refused by name at any other, with why and what to use instead.
 */
const NEUTRAL: Readonly<Record<string, readonly [neutral: unknown, why: string]>> = {
  use_beam_search: [false, 'there is no beam search: ask for n choices and choose'],
  priority: [0, 'requests are served in the order they come'],
  allowed_token_ids: [null, 'there is no list of allowed tokens: use logit_bias, or a constraint (guided_choice, grammar)'],
  bad_words: [[], 'there is no list of banned words: use logit_bias against their tokens'],
  prompt_logprobs: [null, "the prompt's log-probabilities come from /v1/completions with echo and logprobs"],
  return_tokens_as_token_ids: [false, 'log-probabilities name their tokens by text (and bytes)'],
  mirostat: [0, 'there is no Mirostat sampling'],
  typical_p: [1, 'there is no locally typical sampling'],
  tfs_z: [1, 'there is no tail-free sampling'],
  xtc_probability: [0, 'there is no XTC sampling'],
  dry_multiplier: [0, 'there is no DRY penalty: use repetition_penalty, frequency_penalty or presence_penalty'],
  top_n_sigma: [-1, 'there is no top-nσ sampling'],
  dynatemp_range: [0, 'there is no dynamic temperature'],
  n_probs: [0, 'ask for logprobs (with top_logprobs on chat) instead'],
};

/** The fields {@link NEUTRAL} refuses at any but their neutral value: the other APIs' routes pass them on to be checked. */
export const REFUSED_UNLESS_NEUTRAL = Object.keys(NEUTRAL);

/**
 * `stream_options`: an object, only beside `stream: true` (OpenAI and vLLM refuse stream options on an answer that is
 * not streamed), whose `members` (those of the API asked) are each true or false; gives them (absent or null: false).
 * (`include_obfuscation`, which OpenAI's chat completions and Responses take, asks for padding of its events against a
 * side channel of its network: this server writes none either way.)
 */
export function streamOptionsOf<K extends string>(body: Body, stream: boolean, members: readonly K[]): Record<K, boolean> {
  const options = body.stream_options;
  if (options !== undefined && options !== null && !isObject(options)) throw badRequest('stream_options must be an object', 'stream_options');
  if (isObject(options) && !stream) throw badRequest('stream_options is only allowed with stream: true', 'stream_options');
  const read = (member: K): [K, boolean] => {
    const v = isObject(options) ? (options[member] ?? false) : false;
    if (typeof v !== 'boolean') throw badRequest(`stream_options.${member} must be true or false`, `stream_options.${member}`);
    return [member, v];
  };
  return Object.fromEntries(members.map(read)) as Record<K, boolean>;
}

/** A true-or-false field; `fallback` when not given (or null). */
function flag(body: Body, key: string, fallback: boolean): boolean {
  const v = body[key] ?? fallback;
  if (typeof v !== 'boolean') throw badRequest(`${key} must be true or false`, key);
  return v;
}

/**
 * One setting given under two servers' names (llama.cpp's `n_predict` for `max_tokens`): either, or both where they
 * agree; two different values are a 400 naming the other server's field.
 */
function agree<T>(ours: T | undefined, oursParam: string, theirs: T | undefined, theirsParam: string): T | undefined {
  if (ours !== undefined && theirs !== undefined && ours !== theirs) {
    throw badRequest(`${theirsParam} ${JSON.stringify(theirs)} and ${oursParam} ${JSON.stringify(ours)} differ: give one of them`, theirsParam);
  }
  return ours ?? theirs;
}

/**
 * The reply's length limit: `max_completion_tokens` (or its older name `max_tokens`) or llama.cpp's `n_predict`,
 * whose -1 asks for none (the reply runs to the end of the context). Undefined for none, asked for or not.
 */
function maxTokensOf(body: Body): number | undefined {
  const param = body.max_completion_tokens !== undefined && body.max_completion_tokens !== null ? 'max_completion_tokens' : 'max_tokens';
  const predict = number(body, 'n_predict', (n) => Number.isSafeInteger(n) && (n >= 1 || n === -1), 'a whole number >= 1, or -1 for no limit');
  const limit = agree(integer(body, param, 1), param, predict, 'n_predict');
  return limit === -1 ? undefined : limit;
}

/** A reply cannot be held from ending (vLLM's `min_tokens`) past its length limit: vLLM's rule. */
function minWithinMax({ minTokens, maxTokens }: CallOptions): void {
  if (minTokens !== undefined && maxTokens !== undefined && minTokens > maxTokens) throw badRequest(`min_tokens must be at most the reply's limit of ${maxTokens} tokens (got ${minTokens})`, 'min_tokens');
}

/** vLLM's `stop_token_ids`: ids that end the reply as end-of-sequence does; undefined when none. */
function stopTokenIdsOf(v: unknown): number[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || (v.length > 0 && !isTokenIds(v))) throw badRequest(`stop_token_ids must be a list of token ids (got ${JSON.stringify(v)})`, 'stop_token_ids');
  return v.length > 0 ? v : undefined;
}

/**
 * Log-probabilities: chat's `logprobs: true` with `top_logprobs` alternatives (0 to 20), or the legacy
 * completions `logprobs: N` (alternatives per token, 0 to 20 as vLLM allows). Undefined when not asked for.
 */
function logprobsOf(body: Body, chat: boolean): number | undefined {
  const top = integer(body, 'top_logprobs', 0);
  if (top !== undefined && top > MAX_TOP_LOGPROBS) throw badRequest(`top_logprobs must be a whole number from 0 to ${MAX_TOP_LOGPROBS} (got ${top})`, 'top_logprobs');
  const v = body.logprobs;
  if (chat) {
    if (v !== undefined && v !== null && typeof v !== 'boolean') throw badRequest('logprobs must be true or false', 'logprobs');
    if (v !== true) {
      if (top) throw badRequest('top_logprobs needs logprobs: true', 'top_logprobs');
      return undefined;
    }
    return top ?? 0;
  }
  if (top !== undefined) throw badRequest('top_logprobs is a chat parameter; /v1/completions takes logprobs: N', 'top_logprobs');
  if (v === undefined || v === null) return undefined;
  if (!(Number.isSafeInteger(v) && (v as number) >= 0 && (v as number) <= MAX_TOP_LOGPROBS)) {
    throw badRequest(`logprobs must be a whole number from 0 to ${MAX_TOP_LOGPROBS}: alternatives per token (got ${shown(v)})`, 'logprobs');
  }
  return v as number;
}

/** `model`, streaming, sampling, stop rules, log-probabilities, the constraint (`structured-output.ts`) and the `reasonplug` extension. */
function common(body: Body, chat: boolean, stopParam: string): ParsedRequest {
  if (typeof body.model !== 'string' || body.model === '') throw badRequest('model must be the name of a served model (see GET /v1/models)', 'model');
  const n = integer(body, 'n', 1) ?? 1;
  if (n > MAX_CHOICES) throw badRequest(`n must be a whole number from 1 to ${MAX_CHOICES} (got ${n})`, 'n');
  refuseUnless(body, 'best_of', (v) => v === 1 || v === n, 'choices are not ranked on the server: ask for n of them and choose');
  for (const [key, [neutral, why]] of Object.entries(NEUTRAL)) {
    refuseUnless(body, key, (v) => JSON.stringify(v) === JSON.stringify(neutral), `${why} (leave it out${neutral === null ? '' : ` or send ${JSON.stringify(neutral)}`})`);
  }
  const frequencyPenalty = number(body, 'frequency_penalty', (x) => x >= -2 && x <= 2, 'a number from -2 to 2');
  const presencePenalty = number(body, 'presence_penalty', (x) => x >= -2 && x <= 2, 'a number from -2 to 2');
  const logitBias = logitBiasOf(body.logit_bias);
  const stream = body.stream ?? false;
  if (typeof stream !== 'boolean') throw badRequest('stream must be true or false', 'stream');
  const { include_usage: includeUsage } = streamOptionsOf(body, stream, ['include_usage', 'include_obfuscation']);

  const maxTokens = maxTokensOf(body);
  const temperature = number(body, 'temperature', (n) => n >= 0 && n <= 2, 'a number from 0 to 2');
  const topP = number(body, 'top_p', (n) => n > 0 && n <= 1, 'a number in (0, 1]');
  // vLLM's -1 (as 0) leaves top-k off.
  const topK = body.top_k === -1 ? 0 : integer(body, 'top_k', 0);
  const minP = number(body, 'min_p', (n) => n >= 0 && n < 1, 'a number in [0, 1)');
  const penalty = (key: string) => number(body, key, (n) => n > 0, 'a number > 0 (1 = off)');
  const repetitionPenalty = agree(penalty('repetition_penalty'), 'repetition_penalty', penalty('repeat_penalty'), 'repeat_penalty');
  const repetitionWindow = repetitionWindowOf(body);
  // vLLM's and llama.cpp's -1: no seed, each reply drawn afresh.
  const seed = body.seed === -1 ? undefined : number(body, 'seed', Number.isSafeInteger, 'a whole number');
  const stop = stopList(body.stop, stopParam);
  const logprobs = logprobsOf(body, chat);
  const responseFormat = constraintOf(body);
  const prediction = predictionOf(body.prediction);
  const ext = extension(body.reasonplug);
  // vLLM's extension: keep generating past end-of-sequence (benchmarks of a fixed length).
  const ignoreEos = flag(body, 'ignore_eos', false);
  // vLLM's stop rules beside OpenAI's: ids that end the reply, a length before it may end, the stop string kept.
  const stopTokenIds = stopTokenIdsOf(body.stop_token_ids);
  const minTokens = integer(body, 'min_tokens', 0);
  const includeStopString = flag(body, 'include_stop_str_in_output', false);
  const truncatePromptTokens = number(body, 'truncate_prompt_tokens', (k) => Number.isSafeInteger(k) && (k >= 1 || k === -1), 'a whole number >= 1, or -1 for the context length');
  const options: CallOptions = {
    // OpenAI samples at temperature 1 unless told otherwise; 0 is greedy.
    temperature: temperature ?? 1,
    ...(maxTokens !== undefined ? { maxTokens } : {}),
    ...(topP !== undefined ? { topP } : {}),
    ...(topK !== undefined ? { topK } : {}),
    ...(minP !== undefined ? { minP } : {}),
    ...(repetitionPenalty !== undefined ? { repetitionPenalty } : {}),
    ...(repetitionWindow !== undefined ? { repetitionWindow } : {}),
    ...(frequencyPenalty ? { frequencyPenalty } : {}),
    ...(presencePenalty ? { presencePenalty } : {}),
    ...(logitBias ? { logitBias } : {}),
    ...(seed !== undefined ? { seed } : {}),
    ...(stop ? { stop } : {}),
    ...(ignoreEos ? { ignoreEos } : {}),
    ...(stopTokenIds ? { stopTokenIds } : {}),
    ...(minTokens ? { minTokens } : {}),
    ...(includeStopString ? { includeStopString } : {}),
    ...(logprobs !== undefined ? { logprobs } : {}),
    ...(responseFormat ? { responseFormat } : {}),
    ...(prediction !== undefined ? { prediction } : {}),
    ...(ext.mode ? { mode: ext.mode } : {}),
    ...(ext.latent !== undefined ? { latent: ext.latent } : {}),
  };
  minWithinMax(options);
  return {
    model: body.model,
    stream,
    includeUsage,
    options,
    logprobs: logprobs !== undefined,
    n,
    ...(ext.reasoners ? { reasoners: ext.reasoners } : {}),
    keepSpecialTokens: !flag(body, 'skip_special_tokens', true),
    ...(truncatePromptTokens !== undefined ? { truncatePromptTokens } : {}),
  };
}

/**
 * `prediction` (OpenAI's Predicted Outputs): `{ type: "content", content }`, the content a string or a list of
 * text parts; the reply's expected text, which the engine drafts from.
 */
function predictionOf(v: unknown): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isObject(v) || v.type !== 'content') throw badRequest('prediction must be { "type": "content", "content": a string or a list of text parts }', 'prediction');
  if (v.content === undefined || v.content === null) throw badRequest('prediction.content must be a string or a list of text parts', 'prediction.content');
  return textContent(v.content, 'prediction.content');
}

/**
 * llama.cpp's and Ollama's `repeat_last_n`: how many of the last tokens the repetition penalty looks at, 0 none, -1
 * (or unset) all of them.
 */
function repetitionWindowOf(body: Body): number | undefined {
  if (body.repeat_last_n === -1) return undefined;
  return number(body, 'repeat_last_n', (n) => Number.isSafeInteger(n) && n >= 0, 'a whole number >= 0, or -1 for all tokens');
}

/** Most choices one request may ask for (`n`). */
const MAX_CHOICES = 64;

/** `logit_bias`: token ids (as keys) to biases from -100 to 100, as OpenAI takes them; undefined when empty. */
function logitBiasOf(v: unknown): Record<number, number> | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isObject(v)) throw badRequest('logit_bias must be an object of token ids to biases from -100 to 100', 'logit_bias');
  const out: Record<number, number> = {};
  for (const [key, bias] of Object.entries(v)) {
    if (!/^(0|[1-9][0-9]*)$/.test(key) || !Number.isSafeInteger(Number(key))) throw badRequest(`logit_bias keys must be token ids (got ${JSON.stringify(key)})`, 'logit_bias');
    if (typeof bias !== 'number' || !(bias >= -100 && bias <= 100)) throw badRequest(`logit_bias values must be numbers from -100 to 100 (token ${key}: ${shown(bias)})`, 'logit_bias');
    out[Number(key)] = bias;
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

/**
 * Stop strings a request may give. OpenAI's API takes 4; local runtimes (vLLM, llama.cpp, Ollama) take more, and
 * their clients send more (lm-evaluation-harness adds the model's end-of-text to a task's own): this bound only keeps
 * the matcher cheap.
 */
const MAX_STOPS = 64;

/** A request's stop strings, non-empty and well-formed, named in errors by `param` (Anthropic's `stop_sequences`, Ollama's `options.stop`). */
function stopList(v: unknown, param: string): string[] | undefined {
  if (v === undefined || v === null) return undefined;
  const list = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(list) || list.length > MAX_STOPS || list.some((s) => typeof s !== 'string' || s === '')) {
    throw badRequest(`${param} must be a non-empty string or a list of at most ${MAX_STOPS} non-empty strings`, param);
  }
  // (the engine refuses one too, under its own option's name, which is not the field this client sent)
  const lone = illFormedStop(list as string[]);
  if (lone >= 0) {
    const name = typeof v === 'string' ? param : `${param}[${lone}]`;
    throw badRequest(`${name} ${ILL_FORMED_STOP}`, name);
  }
  return list as string[];
}

function extension(v: unknown): { reasoners?: { name: string; weight?: WeightSpec }[]; mode?: 'logits' | 'logprobs'; latent?: string } {
  if (v === undefined || v === null) return {};
  if (!isObject(v)) throw badRequest('reasonplug must be an object: { reasoners: [{ name, weight }], mode, latent }', 'reasonplug');
  const out: ReturnType<typeof extension> = {};
  if (v.reasoners !== undefined) {
    if (!Array.isArray(v.reasoners)) throw badRequest('reasonplug.reasoners must be a list of { name, weight }', 'reasonplug.reasoners');
    out.reasoners = v.reasoners.map((r, i) => {
      if (!isObject(r) || typeof r.name !== 'string') throw badRequest(`reasonplug.reasoners[${i}] must be { name, weight? }`, `reasonplug.reasoners[${i}]`);
      return { name: r.name, ...(r.weight !== undefined ? { weight: r.weight as WeightSpec } : {}) };
    });
  }
  if (v.mode !== undefined) {
    if (v.mode !== 'logits' && v.mode !== 'logprobs') throw badRequest('reasonplug.mode must be "logits" or "logprobs"', 'reasonplug.mode');
    out.mode = v.mode;
  }
  if (v.latent !== undefined) out.latent = latentOf(v.latent);
  return out;
}

/** `reasonplug.latent`: a policy the engine's own parser takes; any other (`""` too) is refused here, naming the field. */
function latentOf(v: unknown): string {
  try {
    if (typeof v === 'string') {
      parseLatentPolicy(v);
      return v;
    }
  } catch (err) {
    if (!(err instanceof LatentPolicyError)) throw err;
  }
  throw badRequest(`reasonplug.latent must be "marker", "never" or "fixed:K" with K >= 1 (got ${shown(v)})`, 'reasonplug.latent');
}

/** Reads a `/v1/chat/completions` body (or one translated into it, whose stop strings came as `stopParam`). */
export function parseChatRequest(body: unknown, stopParam = 'stop'): ChatRequest {
  if (!isObject(body)) throw badRequest('the request body must be a JSON object');
  const base = common(body, true, stopParam);
  if (!Array.isArray(body.messages) || body.messages.length === 0) throw badRequest('messages must be a non-empty list', 'messages');
  const prompt = chatPromptSpec(body);
  // OpenAI's deprecated function calling: silently ignored, the reply could never hold the call asked for.
  for (const old of ['functions', 'function_call'] as const) {
    if (body[old] !== undefined) throw badRequest(`${old} (deprecated function calling) is not supported: use tools and tool_choice`, old);
  }
  // Output this text server cannot give is refused, not answered with text alone.
  refuseUnless(body, 'modalities', (v) => Array.isArray(v) && v.every((m) => m === 'text'), 'this server writes text only');
  refuseUnless(body, 'audio', () => false, 'this server writes text only');
  refuseUnless(body, 'web_search_options', () => false, 'this server does not search the web (give search results as tool results)');
  const reasoningFormat = reasoningFormatOf(body.reasoning_format);
  const thinkingBudget = integer(body, 'thinking_token_budget', 0);
  return {
    ...base,
    ...prompt,
    ...(reasoningFormat ? { reasoningFormat } : {}),
    ...(thinkingBudget !== undefined ? { thinkingBudget } : {}),
    echo: flag(body, 'echo', false),
    // vLLM's chat default: the template writes the special tokens.
    addSpecialTokens: flag(body, 'add_special_tokens', false),
  };
}

/** What a chat or `/tokenize` body asks the template to render: messages, tools, `chat_template_kwargs`, and where the prompt ends. */
function chatPromptSpec(body: Body): ChatPromptSpec {
  const messages = (body.messages as unknown[]).map((m, i) => chatMessage(m, i));
  // (enforced by the tool-call constraint unless tool_choice is none, which only shows them)
  const tools = toolsOf(body.tools, body.tool_choice !== 'none');
  const kwargs = body.chat_template_kwargs;
  if (kwargs !== undefined && kwargs !== null && !isObject(kwargs)) throw badRequest('chat_template_kwargs must be an object of template variables', 'chat_template_kwargs');
  for (const key of TEMPLATE_INPUTS) {
    if (kwargs?.[key] !== undefined) throw badRequest(`chat_template_kwargs.${key} is set by the request itself, not as a template variable`, `chat_template_kwargs.${key}`);
  }
  refuseRequestTemplate(body);
  const documents = documentsOf(body.documents, kwargs?.documents);
  const effort = reasoningEffortOf(body.reasoning_effort);
  const continueFinal = body.continue_final_message ?? false;
  if (typeof continueFinal !== 'boolean') throw badRequest('continue_final_message must be true or false', 'continue_final_message');
  const generation = body.add_generation_prompt ?? !continueFinal;
  if (typeof generation !== 'boolean') throw badRequest('add_generation_prompt must be true or false', 'add_generation_prompt');
  if (continueFinal) {
    if (generation) throw badRequest('continue_final_message continues the last message: it cannot go with add_generation_prompt: true', 'continue_final_message');
    const last = messages[messages.length - 1];
    if (last?.role !== 'assistant' || !last.content) throw badRequest('continue_final_message needs a last message from the assistant, with the text to continue', 'continue_final_message');
  }
  const toolChoice = toolChoiceOf(body.tool_choice, tools);
  const parallel = body.parallel_tool_calls ?? true;
  if (typeof parallel !== 'boolean') throw badRequest('parallel_tool_calls must be true or false', 'parallel_tool_calls');
  return {
    messages,
    ...(tools ? { tools } : {}),
    ...((kwargs && Object.keys(kwargs).length) || effort || documents
      ? { templateKwargs: { ...(effort ? { reasoning_effort: effort } : {}), ...(documents ? { documents } : {}), ...kwargs } }
      : {}),
    addGenerationPrompt: generation,
    continueFinalMessage: continueFinal,
    ...(toolChoice ? { toolChoice } : {}),
    parallelToolCalls: parallel,
  };
}

/** `tool_choice` as the constraint takes it: undefined for `none` or without tools. */
function toolChoiceOf(choice: unknown, tools: ChatPromptSpec['tools']): ToolChoice | undefined {
  if (!tools) {
    if (choice !== undefined && choice !== null && choice !== 'none' && choice !== 'auto') throw badRequest('tool_choice needs tools', 'tool_choice');
    return undefined;
  }
  if (choice === undefined || choice === null || choice === 'auto') return 'auto';
  if (choice === 'required') return 'required';
  if (choice === 'none') return undefined;
  if (isObject(choice) && isObject(choice.function) && typeof choice.function.name === 'string') {
    const name = choice.function.name;
    if (!tools.some((t) => t.function.name === name)) throw badRequest(`tool_choice names "${name}", which is not among tools`, 'tool_choice');
    return { name };
  }
  throw badRequest('tool_choice must be "none", "auto", "required" or {"type": "function", "function": {"name": …}}', 'tool_choice');
}

/** A request's own `chat_template` is refused: vLLM refuses one unless started with --trust-request-chat-template. */
function refuseRequestTemplate(body: Body): void {
  if (body.chat_template === undefined || body.chat_template === null) return;
  throw badRequest(
    "chat_template is not taken per request: the server renders with the model's template, or the one it was started with (--chat-template), as vLLM does unless started with --trust-request-chat-template",
    'chat_template',
    'unsupported_parameter',
  );
}

/**
 * vLLM's `documents` (texts retrieved for the answer, each an object such as `{title, text}`), the template's variable
 * of that name, as vLLM gives it (RAG models' templates, Command R's and Granite's, render them); `kwarg` is
 * `chat_template_kwargs.documents`, which must not say otherwise.
 */
function documentsOf(v: unknown, kwarg: unknown): Body[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || !v.every(isObject)) throw badRequest('documents must be a list of objects such as {"title": …, "text": …}', 'documents');
  if (kwarg !== undefined && JSON.stringify(kwarg) !== JSON.stringify(v)) throw badRequest('documents and chat_template_kwargs.documents differ: give one of them', 'documents');
  return v;
}

/** Template variables the server sets from the request's own fields. */
const TEMPLATE_INPUTS = ['messages', 'tools', 'add_generation_prompt'] as const;

/**
 * OpenAI's `reasoning_effort`, given to the template as the variable of that name, as vLLM does (gpt-oss's template
 * writes it into its system message: `Reasoning: high`); `chat_template_kwargs` names it too, and wins.
 */
function reasoningEffortOf(v: unknown): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'string' && (REASONING_EFFORTS as readonly string[]).includes(v)) return v;
  throw badRequest(`reasoning_effort must be ${REASONING_EFFORTS.map((e) => JSON.stringify(e)).join(', ')} (got ${shown(v)})`, 'reasoning_effort');
}

/** The reasoning efforts OpenAI's API names (its SDK's `ReasoningEffort`); the template reads the one given. */
const REASONING_EFFORTS = ['none', 'minimal', 'low', 'medium', 'high', 'xhigh', 'max'] as const;

/** `reasoning_format`: llama.cpp's names (`deepseek` and `auto` split a thought off, `none` leaves it in the content). */
function reasoningFormatOf(v: unknown): ReasoningFormat | undefined {
  if (v === undefined || v === null) return undefined;
  if (v === 'auto' || v === 'deepseek') return 'auto';
  if (v === 'none') return 'none';
  throw badRequest(`reasoning_format must be "auto", "deepseek" or "none" (got ${shown(v)})`, 'reasoning_format');
}

/**
 * Another API's tool list (Responses, Messages) in the chat's shape: the tools of a type the client runs (`runs`)
 * with their parameters (the tool's field `schemaField`, `fallback` where it has none, checked where `enforced`: the
 * tool choice is not none); any other type (a hosted tool) is refused by name. `shape` spells that API's tool for
 * errors. Undefined for none.
 */
export function chatToolsOf(tools: unknown, runs: (type: unknown) => boolean, schemaField: string, fallback: unknown, shape: string, enforced: boolean): Body[] | undefined {
  if (tools === undefined || tools === null) return undefined;
  if (!Array.isArray(tools)) throw badRequest(`tools must be a list of tools, each ${shape}`, 'tools');
  if (tools.length === 0) return undefined;
  return tools.map((t, i) => {
    const param = `tools[${i}]`;
    if (!isObject(t)) throw badRequest(`${param} must be a tool: ${shape}`, param);
    // A client written for chat completions sends its tools as they are there.
    if (isObject(t.function)) throw badRequest(`${param} is a chat completions tool ({"type": "function", "function": {…}}): this API's tools are ${shape}`, param);
    if (!runs(t.type)) throw badRequest(`${param} is a "${String(t.type)}" tool: this server serves tools the client runs only`, param, 'unsupported_tool');
    if (typeof t.name !== 'string' || t.name === '') throw badRequest(`${param}.name must be the tool's name: tools are ${shape}`, `${param}.name`);
    const parameters = t[schemaField] ?? fallback;
    if (parameters !== undefined && parameters !== null && enforced) checkToolSchema(parameters, t.name, `${param}.${schemaField}`);
    return { type: 'function', function: { name: t.name, ...(t.description !== undefined ? { description: t.description } : {}), ...(parameters !== undefined && parameters !== null ? { parameters } : {}) } };
  });
}

/** The tool-call constraint of a chat request's tools and choice (the engine's `tool_calls` format), calls written in `syntax`. */
export function toolCallFormat(request: ChatRequest, syntax: ToolCallSyntax): ResponseFormat | undefined {
  if (!request.tools || !request.toolChoice) return undefined;
  const tools: ToolSpec[] = request.tools.map((t) => ({ name: t.function.name, parameters: t.function.parameters ?? { type: 'object' } }));
  return { type: 'tool_calls', tools, choice: request.toolChoice, parallel: request.parallelToolCalls, syntax };
}

function chatMessage(m: unknown, i: number): ChatMessage {
  const param = `messages[${i}]`;
  if (!isObject(m) || typeof m.role !== 'string') throw badRequest(`${param} must be an object with a role`, param);
  const role = m.role === 'developer' ? 'system' : m.role;
  if (!['system', 'user', 'assistant', 'tool'].includes(role)) throw badRequest(`${param}.role ${JSON.stringify(m.role)} is not system, developer, user, assistant or tool`, `${param}.role`);
  // Only an assistant's turn may go without content (its tool calls say it all), as OpenAI's API has it.
  if (role !== 'assistant' && (m.content === undefined || m.content === null)) throw badRequest(`${param}.content is required for a ${m.role} message`, `${param}.content`);
  const content = textContent(m.content, `${param}.content`);
  const out: ChatMessage = { role, content };
  // An earlier turn's thought, as the server gave it out: templates that show or drop thoughts read this field.
  // (or as `reasoning`, vLLM's newer name for it, which the OpenAI Agents SDK sends back)
  const thought = m.reasoning_content ?? m.reasoning;
  if (role === 'assistant' && typeof thought === 'string') out.reasoning_content = thought;
  if (role === 'assistant' && Array.isArray(m.tool_calls) && m.tool_calls.length > 0) {
    // OpenAI sends arguments as JSON text, kept so: the tokenizer parses it for templates that render an object
    // (`tojson`), keeping its numbers' spelling, and gives it as it is to those that join it in (DeepSeek's).
    out.tool_calls = m.tool_calls.map((c, j) => {
      const fn = isObject(c) ? c.function : undefined;
      if (!isObject(fn) || typeof fn.name !== 'string') throw badRequest(`${param}.tool_calls[${j}] must carry function.name`, `${param}.tool_calls[${j}]`);
      return { id: (c as Body).id, type: 'function', function: { name: fn.name, arguments: fn.arguments ?? {} } };
    });
  }
  if (role === 'tool' && typeof m.tool_call_id === 'string') out.tool_call_id = m.tool_call_id;
  if (typeof m.name === 'string') out.name = m.name;
  return out;
}

function textContent(v: unknown, param: string): string {
  if (v === undefined || v === null) return '';
  if (typeof v === 'string') return v;
  if (Array.isArray(v)) {
    return v
      .map((part, j) => {
        if (isObject(part) && part.type === 'text') {
          if (typeof part.text !== 'string') throw badRequest(`${param}[${j}].text must be a string`, `${param}[${j}].text`);
          return part.text;
        }
        throw badRequest(`${param}[${j}] is a ${isObject(part) ? JSON.stringify(part.type) : typeof part} part; the models read text only`, `${param}[${j}]`);
      })
      .join(PART_SEPARATOR);
  }
  throw badRequest(`${param} must be a string or a list of text parts`, param);
}

function toolsOf(v: unknown, enforced: boolean): ChatRequest['tools'] {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v)) throw badRequest('tools must be a list of {"type": "function", "function": {...}}', 'tools');
  if (v.length === 0) return undefined;
  return v.map((t, i) => {
    const fn = isObject(t) ? t.function : undefined;
    if (!isObject(t) || t.type !== 'function' || !isObject(fn) || typeof fn.name !== 'string') {
      throw badRequest(`tools[${i}] must be {"type": "function", "function": {"name": …, "parameters": {…}}}`, `tools[${i}]`);
    }
    if (fn.parameters !== undefined && !isObject(fn.parameters)) throw badRequest(`tools[${i}].function.parameters must be a JSON Schema object`, `tools[${i}].function.parameters`);
    // (the model writes the name to call the tool: an empty one can be neither written nor told apart)
    if (fn.name.trim() === '') throw badRequest(`tools[${i}].function.name is empty; name the function`, `tools[${i}].function.name`);
    if (fn.parameters && enforced) checkToolSchema(fn.parameters, fn.name, `tools[${i}].function.parameters`);
    return {
      type: 'function' as const,
      function: {
        name: fn.name,
        ...(typeof fn.description === 'string' ? { description: fn.description } : {}),
        ...(fn.parameters ? { parameters: fn.parameters as Record<string, unknown> } : {}),
      },
    };
  });
}

/**
 * A `/tokenize` body (vLLM's shape): a text prompt, tokenized as `/v1/completions` reads one (special tokens
 * added unless `add_special_tokens` is false), or chat `messages` (with `tools`), rendered and tokenized as
 * `/v1/chat/completions` does (the template writes the special tokens: none added unless asked). A chat's constraint
 * (`response_format` and the others chat reads) is kept: the generic tool syntax's prompt describes the answer in it.
 * llama.cpp's shape too: the text as `content`, special tokens added only with `add_special`.
 */
export type TokenizeRequest = {
  model?: string;
  addSpecialTokens?: boolean;
  /** `return_token_strs` (vLLM's): `token_strs` beside the ids, each token as the vocabulary spells it. */
  returnTokenStrs: boolean;
  /** `with_pieces` (llama.cpp's): `tokens` as `{id, piece}`, the piece the token's text (its bytes where they are not UTF-8). */
  withPieces: boolean;
} & (
  | { prompt: string }
  | (ChatPromptSpec & { options?: Pick<CallOptions, 'responseFormat'> })
);

/** Reads a `/tokenize` body. */
export function parseTokenizeRequest(body: unknown): TokenizeRequest {
  if (!isObject(body)) throw badRequest('the request body must be a JSON object');
  const model = optionalString(body, 'model');
  // (beside a prompt too, where no template renders: taken, it would be ignored)
  refuseRequestTemplate(body);
  const special = body.add_special_tokens;
  if (special !== undefined && typeof special !== 'boolean') throw badRequest('add_special_tokens must be true or false', 'add_special_tokens');
  const base = {
    ...(model !== undefined ? { model } : {}),
    ...(special !== undefined ? { addSpecialTokens: special } : {}),
    returnTokenStrs: flag(body, 'return_token_strs', false),
    withPieces: flag(body, 'with_pieces', false),
  };
  // llama.cpp's clients send the text as `content`, its BOS added only where `add_special` asks (llama.cpp's default: none).
  if (typeof body.content === 'string' && body.prompt === undefined && body.messages === undefined) return { ...base, prompt: body.content, addSpecialTokens: flag(body, 'add_special', false) };
  if (typeof body.prompt === 'string' && body.messages === undefined) return { ...base, prompt: body.prompt };
  if (!Array.isArray(body.messages) || body.prompt !== undefined) throw badRequest("give either prompt (a string, or llama.cpp's content) or messages (a list)", body.prompt === undefined ? 'messages' : 'prompt');
  const responseFormat = constraintOf(body);
  return { ...base, ...chatPromptSpec(body), ...(responseFormat ? { options: { responseFormat } } : {}) };
}

/** Reads a `/detokenize` body: `tokens`, a list of token ids. */
export function parseDetokenizeRequest(body: unknown): { model?: string; tokens: number[] } {
  if (!isObject(body)) throw badRequest('the request body must be a JSON object');
  const model = optionalString(body, 'model');
  const tokens = body.tokens;
  if (!Array.isArray(tokens) || !tokens.every((t) => Number.isSafeInteger(t) && (t as number) >= 0)) throw badRequest('tokens must be a list of token ids', 'tokens');
  return { ...(model !== undefined ? { model } : {}), tokens: tokens as number[] };
}

/** A non-empty list of token ids (as prompts and embedding inputs take them). */
function isTokenIds(x: unknown): x is number[] {
  return Array.isArray(x) && x.length > 0 && x.every((n) => Number.isSafeInteger(n) && (n as number) >= 0);
}

/** An embeddings request: texts or token id lists, one vector each. */
export interface EmbeddingsRequest {
  model: string;
  input: { texts: string[] } | { ids: number[][] };
  /** `encoding_format`: floats, or base64 of their little-endian float32 bytes (the OpenAI SDK's default). */
  encoding: 'float' | 'base64';
  /** `dimensions`: the vectors cut to their first this many components and scaled to unit length again (Matryoshka). */
  dimensions?: number;
}

/** Inputs of one embeddings request at most (OpenAI's limit). */
const MAX_EMBEDDING_INPUTS = 2048;

/** Reads a `/v1/embeddings` body: `input` a string, a list of strings, a list of token ids, or a list of such lists. */
export function parseEmbeddingsRequest(body: unknown): EmbeddingsRequest {
  if (!isObject(body)) throw badRequest('the request body must be a JSON object');
  if (typeof body.model !== 'string' || body.model === '') throw badRequest('model is required: the name of a served model', 'model');
  const given = body.input;
  let input: EmbeddingsRequest['input'];
  if (typeof given === 'string' && given !== '') input = { texts: [given] };
  else if (Array.isArray(given) && given.length > 0 && given.every((s) => typeof s === 'string' && s !== '')) input = { texts: given as string[] };
  else if (isTokenIds(given)) input = { ids: [given] };
  else if (Array.isArray(given) && given.length > 0 && given.every(isTokenIds)) input = { ids: given as number[][] };
  else throw badRequest('input must be a non-empty string, a list of them, a list of token ids, or a list of such lists', 'input');
  const count = 'texts' in input ? input.texts.length : input.ids.length;
  if (count > MAX_EMBEDDING_INPUTS) throw badRequest(`input lists ${count} items; at most ${MAX_EMBEDDING_INPUTS} per request`, 'input');
  const encoding = body.encoding_format ?? 'float';
  if (encoding !== 'float' && encoding !== 'base64') throw badRequest('encoding_format must be "float" or "base64"', 'encoding_format');
  const dimensions = body.dimensions;
  if (dimensions !== undefined && !(Number.isSafeInteger(dimensions) && (dimensions as number) >= 1)) throw badRequest('dimensions must be a whole number >= 1', 'dimensions');
  return { model: body.model, input, encoding, ...(dimensions !== undefined ? { dimensions: dimensions as number } : {}) };
}

function optionalString(body: Body, key: string): string | undefined {
  const v = body[key];
  if (v !== undefined && typeof v !== 'string') throw badRequest(`${key} must be a string`, key);
  return v;
}

/** Choices (prompts × n) one completions request may ask for. */
const MAX_COMPLETION_ROWS = 2048;

/** Reads a `/v1/completions` body (or one translated into it, whose stop strings came as `stopParam`). */
export function parseCompletionRequest(body: unknown, stopParam = 'stop'): CompletionRequest {
  if (!isObject(body)) throw badRequest('the request body must be a JSON object');
  const scoreOnly = body.max_tokens === 0 && body.echo === true;
  const base = common(scoreOnly ? { ...body, max_tokens: undefined } : body, false, stopParam);
  const suffix = optionalString(body, 'suffix') || undefined;
  const p = body.prompt;
  // With a suffix, the code before an insertion may be empty (the cursor at the start of a file), as llama.cpp's /infill takes it.
  const text = (x: unknown) => typeof x === 'string' && (x !== '' || suffix !== undefined);
  const ok = text(p) || (Array.isArray(p) && p.length > 0 && (p.every(text) || isTokenIds(p) || p.every(isTokenIds)));
  if (!ok) throw badRequest('prompt must be a non-empty string (empty only with a suffix), a list of them, a list of token ids, or a list of such lists', 'prompt');
  // Each prompt's n choices are rows of one call, admitted as one request: bounded as embedding inputs are.
  const prompts = typeof p === 'string' || isTokenIds(p) ? 1 : (p as unknown[]).length;
  if (prompts * base.n > MAX_COMPLETION_ROWS) {
    throw badRequest(`prompt lists ${prompts} prompts${base.n > 1 ? ` of ${base.n} choices each` : ''}: at most ${MAX_COMPLETION_ROWS} choices in all per request`, 'prompt');
  }
  const echo = flag(body, 'echo', false);
  if (suffix !== undefined) {
    // An insertion's prompt is the code before it, as text: the model's fill-in-the-middle tokens go around both.
    if (typeof p !== 'string' && !(p as unknown[]).every((x) => typeof x === 'string')) throw badRequest('with a suffix, prompt must be text (a string or a list of strings)', 'prompt');
    if (echo) throw badRequest('echo cannot be combined with suffix', 'echo');
  }
  // OpenAI's completions default to 16 tokens; llama.cpp's n_predict -1 asks for no limit.
  if (base.options.maxTokens === undefined && body.n_predict !== -1) base.options.maxTokens = 16;
  minWithinMax(base.options);
  const addSpecialTokens = flag(body, 'add_special_tokens', true);
  return { ...base, prompt: p as CompletionRequest['prompt'], echo, addSpecialTokens, ...(suffix !== undefined ? { suffix } : {}), ...(scoreOnly ? { scoreOnly } : {}) };
}
