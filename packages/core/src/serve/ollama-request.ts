/**
 * Ollama's API requests (`POST /api/chat`, `/api/generate`, `/api/embed`, as Ollama's clients, LangChain's
 * ChatOllama and OllamaEmbeddings, Open WebUI and editors' Ollama providers send them) read as the chat, completion
 * or embeddings request they amount to: `options` become the sampling settings, `format` the response format, `think`
 * the thought's handling; the OpenAI parsers then check every field. Ollama streams unless `stream` is false.
 */
import { badRequest } from './errors.js';
import { checkFormatSchema } from './structured-output.js';
import {
  isObject,
  parseChatRequest,
  parseCompletionRequest,
  parseEmbeddingsRequest,
  shown,
  type Body,
  type ChatRequest,
  type CompletionRequest,
  type EmbeddingsRequest,
} from './requests.js';

/** Where Ollama's stop strings come from, for its errors. */
const OLLAMA_STOP = 'options.stop';

/** Ollama's `options` this server runs, as the OpenAI fields they set. */
const SAMPLING: Readonly<Record<string, string>> = {
  temperature: 'temperature',
  top_p: 'top_p',
  top_k: 'top_k',
  min_p: 'min_p',
  seed: 'seed',
  stop: 'stop',
  repeat_penalty: 'repetition_penalty',
  repeat_last_n: 'repeat_last_n',
  presence_penalty: 'presence_penalty',
  frequency_penalty: 'frequency_penalty',
};

/** Sampling options whose neutral value is all this server runs (another is refused by name). */
const NEUTRAL: Readonly<Record<string, number>> = { mirostat: 0, tfs_z: 1, typical_p: 1 };

/**
 * Ollama's defaults (its api/types.go `DefaultOptions()`) for the options a request leaves out, as the OpenAI fields
 * they set: Ollama's clients (`ollama run`, ChatOllama, Open WebUI) send none and expect these, not OpenAI's
 * temperature 1 with nothing cut. The rest of Ollama's defaults are this server's own: `min_p` 0,
 * `repeat_penalty` 1 (Ollama's since 0.32.10; 1.1 before), no penalties, no seed, no limit (`num_predict` -1).
 */
const DEFAULTS: Readonly<Record<string, number>> = { temperature: 0.8, top_k: 40, top_p: 0.9, repeat_last_n: 64 };

/**
 * A `/api/generate` request: a completion of text as given (`raw`, or a fill-in-the-middle with `suffix`; its
 * `maxTokens` unset unless `num_predict` sets it), a chat turn of one user message, or (an empty prompt) only a check
 * that the model is loaded.
 */
export type OllamaGenerateRequest =
  | { kind: 'chat'; chat: ChatRequest }
  | { kind: 'text'; completion: CompletionRequest }
  | { kind: 'load'; model: string };

/**
 * A request's model name, as written: answers echo it, as Ollama's do, and the served names resolve it (with or
 * without `:latest`, in any case).
 */
export function ollamaModelName(name: unknown): string {
  if (typeof name !== 'string' || name === '') throw badRequest('model is required: the name of a served model', 'model');
  return name;
}

/** The OpenAI fields of what every generating request carries: model, stream, options, format, think, logprobs, `reasonplug`. */
function common(body: Body): Body {
  const out: Body = { model: ollamaModelName(body.model), stream: body.stream ?? true };
  const options = body.options ?? {};
  if (!isObject(options)) throw badRequest('options must be an object', 'options');
  for (const [key, value] of Object.entries(options)) {
    if (value === undefined || value === null) continue;
    if (Object.hasOwn(NEUTRAL, key)) {
      if (value !== NEUTRAL[key]) throw badRequest(`options.${key} ${shown(value)} is not supported (only ${NEUTRAL[key]})`, `options.${key}`, 'unsupported_parameter');
      continue;
    }
    if (key === 'num_predict') {
      if (typeof value !== 'number' || !Number.isInteger(value)) throw badRequest('options.num_predict must be a whole number', 'options.num_predict');
      // -1 (no limit) and -2 (fill the context) leave the reply to run to the end of the context.
      if (value > 0) out.max_tokens = value;
      else if (value === 0 || value < -2) throw badRequest('options.num_predict must be positive, -1 or -2', 'options.num_predict');
      continue;
    }
    // -1 is Ollama's (and llama.cpp's) "no seed": each reply draws afresh.
    if (key === 'seed' && value === -1) continue;
    const field = SAMPLING[key];
    // The rest, the runtime's own (`num_ctx`, `num_gpu`, `draft_num_predict`, …) and those Ollama dropped
    // (`mirostat_tau`, `penalize_newline`, …) or never had, are skipped, as Ollama's Options.FromMap skips a key it
    // does not know: its clients send them all.
    if (field) out[field] = value;
  }
  for (const [key, value] of Object.entries(DEFAULTS)) out[SAMPLING[key]] ??= value;
  if (body.format !== undefined && body.format !== null && body.format !== '') {
    if (body.format === 'json') out.response_format = { type: 'json_object' };
    else if (!isObject(body.format)) throw badRequest('format must be "json" or a JSON schema', 'format');
    else {
      checkFormatSchema(body.format, 'format');
      out.response_format = { type: 'json_schema', json_schema: { name: 'response', schema: body.format, strict: true } };
    }
  }
  const think = body.think;
  if (think !== undefined && think !== null && typeof think !== 'boolean' && think !== 'low' && think !== 'medium' && think !== 'high' && think !== 'max') {
    throw badRequest('think must be true, false, "low", "medium", "high" or "max"', 'think');
  }
  // Without a thought (think: false), a template that can leave it out (Qwen3's enable_thinking) does.
  if (think === false) out.chat_template_kwargs = { enable_thinking: false };
  // A level (gpt-oss's) is the reasoning effort the template is given, as Ollama's renderer writes it; "max" is
  // "high", the most a template's `reasoning_effort` takes (Ollama maps it so for harmony's).
  if (typeof think === 'string') out.reasoning_effort = think === 'max' ? 'high' : think;
  // This server's own extension (reasoners and their weights, latent steps), as on the OpenAI routes.
  if (body.reasonplug !== undefined) out.reasonplug = body.reasonplug;
  if (body.logprobs === true) {
    out.logprobs = true;
    if (body.top_logprobs !== undefined) out.top_logprobs = body.top_logprobs;
  }
  return out;
}

/** A message of Ollama's shape as the chat parser takes it: `thinking` is the earlier thought, calls' arguments are objects. */
function message(m: unknown, i: number): Body {
  const param = `messages[${i}]`;
  if (!isObject(m)) throw badRequest(`${param} must be an object with a role`, param);
  if (Array.isArray(m.images) && m.images.length > 0) throw badRequest(`${param}.images: this server's models read text only`, `${param}.images`, 'unsupported_content');
  // (roles in any case, as Ollama lower-cases them)
  const out: Body = { role: typeof m.role === 'string' ? m.role.toLowerCase() : m.role, content: m.content ?? '' };
  if (typeof m.thinking === 'string' && m.thinking) out.reasoning_content = m.thinking;
  if (typeof m.tool_name === 'string') out.name = m.tool_name;
  if (typeof m.tool_call_id === 'string') out.tool_call_id = m.tool_call_id;
  if (Array.isArray(m.tool_calls) && m.tool_calls.length > 0) {
    out.tool_calls = m.tool_calls.map((c, j) => {
      const fn = isObject(c) ? c.function : undefined;
      if (!isObject(fn) || typeof fn.name !== 'string') throw badRequest(`${param}.tool_calls[${j}] must carry function.name`, `${param}.tool_calls[${j}]`);
      const id = isObject(c) && typeof c.id === 'string' ? c.id : `call_${i}_${j}`;
      return { id, type: 'function', function: { name: fn.name, arguments: typeof fn.arguments === 'string' ? fn.arguments : JSON.stringify(fn.arguments ?? {}) } };
    });
  }
  return out;
}

/**
 * The model a `/api/chat` body names when it only asks for the model to be loaded (Ollama's convention: no messages,
 * or an empty list), else undefined.
 */
export function ollamaChatLoad(body: unknown): string | undefined {
  if (!isObject(body) || (body.messages !== undefined && body.messages !== null && !(Array.isArray(body.messages) && body.messages.length === 0))) return undefined;
  return ollamaModelName(body.model);
}

/** Reads a `/api/chat` body as the chat request it amounts to. */
export function parseOllamaChat(body: unknown): ChatRequest {
  if (!isObject(body)) throw badRequest('the request body must be a JSON object');
  if (!Array.isArray(body.messages)) throw badRequest('messages must be a list', 'messages');
  const chat: Body = { ...common(body), messages: body.messages.map(message) };
  if (Array.isArray(body.tools) && body.tools.length > 0) chat.tools = body.tools;
  return parseChatRequest(chat, OLLAMA_STOP);
}

/** Reads a `/api/generate` body. */
export function parseOllamaGenerate(body: unknown, hasChatTemplate: boolean): OllamaGenerateRequest {
  if (!isObject(body)) throw badRequest('the request body must be a JSON object');
  // (no prompt at all asks, as an empty one does, only that the model be loaded)
  const prompt = body.prompt ?? '';
  if (typeof prompt !== 'string') throw badRequest('prompt must be a string', 'prompt');
  const given = (v: unknown) => v !== undefined && v !== null && v !== '' && !(Array.isArray(v) && v.length === 0);
  // (Ollama's own words: its raw mode takes the prompt alone)
  if (body.raw === true && (given(body.template) || given(body.system) || given(body.context))) throw badRequest('raw mode does not support template, system, or context', 'raw');
  for (const key of ['template', 'context'] as const) {
    if (given(body[key])) throw badRequest(`${key} is not supported: the model's own chat template renders the prompt (send raw: true for text as given)`, key, 'unsupported_parameter');
  }
  if (Array.isArray(body.images) && body.images.length > 0) throw badRequest("images: this server's models read text only", 'images', 'unsupported_content');
  const base = common(body);
  const suffix = typeof body.suffix === 'string' && body.suffix ? body.suffix : undefined;
  if (prompt === '' && suffix === undefined) return { kind: 'load', model: base.model as string };
  if (body.raw === true || suffix !== undefined || !hasChatTemplate) {
    // Text as given: the prompt, or the code before the suffix; log-probabilities as a completion asks for them.
    const { logprobs, top_logprobs: top, ...rest } = base;
    const completion = parseCompletionRequest({ ...rest, prompt, ...(suffix !== undefined ? { suffix } : {}), ...(logprobs === true ? { logprobs: top ?? 0 } : {}) }, OLLAMA_STOP);
    if (base.max_tokens === undefined) delete completion.options.maxTokens;
    return { kind: 'text', completion };
  }
  const messages = [...(typeof body.system === 'string' && body.system ? [{ role: 'system', content: body.system }] : []), { role: 'user', content: prompt }];
  return { kind: 'chat', chat: parseChatRequest({ ...base, messages }, OLLAMA_STOP) };
}

/**
 * An `/api/embed` or `/api/embeddings` request: its texts, and whether an input past the context is cut to it (`/api/embed`
 * unless `truncate` is false, as Ollama's; `/api/embeddings` never); or (none given) only a check that the model is loaded.
 */
export type OllamaEmbedRequest = { kind: 'embed'; embed: EmbeddingsRequest; truncate: boolean } | { kind: 'load'; model: string };

/** Reads a `/api/embed` body (`input` a string or a list of them) or the older `/api/embeddings` one (`prompt`). */
export function parseOllamaEmbed(body: unknown, legacy: boolean): OllamaEmbedRequest {
  if (!isObject(body)) throw badRequest('the request body must be a JSON object');
  const model = ollamaModelName(body.model);
  const input = legacy ? body.prompt : body.input;
  if (legacy && input !== undefined && input !== null && typeof input !== 'string') throw badRequest('prompt must be a string', 'prompt');
  // Nothing to embed asks, as Ollama's clients warm a model, only that it be loaded.
  if (input === undefined || input === null || input === '' || (Array.isArray(input) && input.length === 0)) return { kind: 'load', model };
  const truncate = legacy ? false : (body.truncate ?? true);
  if (typeof truncate !== 'boolean') throw badRequest('truncate must be true or false', 'truncate');
  return { kind: 'embed', embed: parseEmbeddingsRequest({ model, input, ...(body.dimensions !== undefined ? { dimensions: body.dimensions } : {}) }), truncate };
}
