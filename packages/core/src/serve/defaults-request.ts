/**
 * The served model's own defaults (modules/model-defaults.ts) written into a request's body where it leaves a setting
 * out, under the names its API gives it, before the body is read: a request's own value wins, and the route's
 * defaults (OpenAI's temperature 1, Ollama's 0.8 and its other `DefaultOptions`) apply only where the model gives none,
 * as Ollama merges a model's options under a request's and vLLM takes `generation_config.json` for the fields a
 * request leaves out. Written into the body, a default is checked and answered (the Responses API echoes its
 * temperature) as if the client had sent it.
 */
import { OLLAMA_OPTION_NAMES, type SamplingDefaults } from '../modules/model-defaults.js';
import { isObject, type Body } from './requests.js';

/** Where an API's body takes the reply's limit (every name it may be given by) and its stop strings. */
export interface DefaultedFields {
  /** The limit's fields; none where the API requires it (Anthropic's `max_tokens`). */
  limit: readonly string[];
  stop: string;
}

/** `/v1/chat/completions` and `/v1/completions` (llama.cpp's `n_predict` beside OpenAI's two names). */
export const CHAT_FIELDS: DefaultedFields = { limit: ['max_tokens', 'max_completion_tokens', 'n_predict'], stop: 'stop' };
/** `/v1/responses`. */
export const RESPONSES_FIELDS: DefaultedFields = { limit: ['max_output_tokens'], stop: 'stop' };
/** `/v1/messages` (and its token count): `max_tokens` is required there. */
export const MESSAGES_FIELDS: DefaultedFields = { limit: [], stop: 'stop_sequences' };

/** A setting given: a field present and not null. */
const given = (body: Body, key: string) => body[key] !== undefined && body[key] !== null;

/** An OpenAI-shaped body (chat, completions, responses, messages) with the model's defaults where it gives none. */
export function withSamplingDefaults(body: unknown, sampling: SamplingDefaults | undefined, fields: DefaultedFields): unknown {
  if (!sampling || !isObject(body)) return body;
  const out: Body = { ...body };
  const put = (keys: readonly string[], value: unknown) => {
    if (value !== undefined && keys.length > 0 && !keys.some((k) => given(body, k))) out[keys[0]!] = value;
  };
  put(['temperature'], sampling.temperature);
  put(['top_p'], sampling.topP);
  put(['top_k'], sampling.topK);
  put(['min_p'], sampling.minP);
  // (llama.cpp's name for it as well: a request giving either has its own)
  put(['repetition_penalty', 'repeat_penalty'], sampling.repetitionPenalty);
  put(['repeat_last_n'], sampling.repetitionWindow);
  put(['presence_penalty'], sampling.presencePenalty);
  put(['frequency_penalty'], sampling.frequencyPenalty);
  put(['seed'], sampling.seed);
  put([fields.stop], sampling.stop);
  put(fields.limit, sampling.maxTokens);
  return out;
}

/** An Ollama body (`/api/chat`, `/api/generate`) whose `options` have the model's defaults under the request's own. */
export function withOllamaDefaults(body: unknown, sampling: SamplingDefaults | undefined): unknown {
  if (!sampling || !isObject(body)) return body;
  const options = body.options ?? {};
  // (not an object: the request's parser refuses it)
  if (!isObject(options)) return body;
  const own = Object.fromEntries(Object.entries(options).filter(([key]) => given(options, key)));
  return { ...body, options: { ...ollamaOptionsOf(sampling), ...own } };
}

/** The sampling defaults as the Ollama options they are (`num_predict` the reply's limit). */
export function ollamaOptionsOf(sampling: SamplingDefaults): Record<string, unknown> {
  return Object.fromEntries(Object.entries(sampling).map(([key, value]) => [OLLAMA_OPTION_NAMES[key as keyof SamplingDefaults], value]));
}

/**
 * `/api/show`'s `parameters`: the model's options as Ollama's `show` lists them, a line per value (a list a line per
 * item), the name padded to 30 characters and the value as Go writes it (`%#v`: strings quoted).
 */
export function ollamaParameters(options: Record<string, unknown>): string {
  return Object.entries(options)
    .flatMap(([key, value]) => (Array.isArray(value) ? value : [value]).map((v) => `${key.padEnd(30)} ${typeof v === 'string' ? JSON.stringify(v) : String(v)}`))
    .join('\n');
}
