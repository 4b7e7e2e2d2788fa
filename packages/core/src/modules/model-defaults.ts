/**
 * A model's own defaults: the sampling settings, reply limit, context length and system prompt its files recommend.
 * `reasonplug serve` and the CLI apply them where a request or a flag says nothing, as Ollama and vLLM do; the
 * library's Engine reports them (`engine.info.defaults`) and does not apply them to its calls, whose options are taken
 * as given ({@link withModelSampling} and {@link withModelMessages} apply them for a caller that wants them).
 *
 * Two sources. An Ollama model's manifest (ollama-store.ts): its `params` layer, Ollama's options as a JSON object (those
 * this runtime has: temperature, top_p, top_k, min_p, repeat_penalty, repeat_last_n, presence_penalty,
 * frequency_penalty, seed, stop, num_predict as the reply limit, num_ctx as the context length), its system prompt,
 * example messages and license. A hub export's `generation_config.json`: the sampling fields vLLM's default
 * `--generation-config auto` takes (`temperature`, `top_p`, `top_k`, `min_p`, `repetition_penalty`, and
 * `max_new_tokens` as the reply limit), `do_sample` not read, as vLLM does not read it. A value outside what a request
 * may ask for (a temperature above 2, a top_p of 0) is left out, so that a default never refuses a request.
 */
import type { GenerateOptions } from '../generate/types.js';
import type { ChatMessage } from '../tokenizer/tokenizer.js';
import { firstBeside } from './context-length.js';
import type { ModelLocation } from './locate.js';
import { ollamaModelLayers } from './ollama-store.js';

/** The sampling settings and stop rules a model recommends, by the engine's option names. */
export type SamplingDefaults = Pick<
  GenerateOptions,
  'temperature' | 'topP' | 'topK' | 'minP' | 'repetitionPenalty' | 'repetitionWindow' | 'presencePenalty' | 'frequencyPenalty' | 'seed' | 'stop' | 'maxTokens'
>;

/** What a model's files recommend (see the module's comment for where each comes from). */
export interface ModelDefaults {
  /** Sampling settings, stop strings and reply limit (an Ollama model's `params`, a hub export's generation_config.json). */
  sampling?: SamplingDefaults;
  /** Positions a generation may use (Ollama's `num_ctx`): the engine's context length unless its `contextLength` is given. */
  contextLength?: number;
  /** The system prompt of a chat that gives none. */
  system?: string;
  /** Example messages a chat starts with, after its system message (Ollama's `MESSAGE` lines). */
  messages?: ChatMessage[];
  /** The model's license texts, one per license layer. */
  license?: string[];
  /** Ollama's options as the params layer gives them, those this runtime does not run included (`/api/show`'s `parameters`). */
  parameters?: Record<string, unknown>;
}

const inRange = (v: unknown, ok: (n: number) => boolean): number | undefined => (typeof v === 'number' && Number.isFinite(v) && ok(v) ? v : undefined);
const wholeAtLeast = (min: number) => (n: number) => Number.isSafeInteger(n) && n >= min;

/** The object of the fields that are set, undefined when none is. */
function compact<T extends object>(o: T): T | undefined {
  const given = Object.entries(o).filter(([, v]) => v !== undefined);
  return given.length > 0 ? (Object.fromEntries(given) as T) : undefined;
}

/**
 * The sampling defaults of `fields` named as `names` says (Ollama's or transformers'), each kept only where a request
 * could ask for it; undefined when none is.
 */
function samplingOf(fields: Record<string, unknown>, names: Record<keyof SamplingDefaults, string | undefined>): SamplingDefaults | undefined {
  const get = (key: keyof SamplingDefaults) => (names[key] === undefined ? undefined : fields[names[key]!]);
  const topK = inRange(get('topK'), Number.isSafeInteger);
  const window = inRange(get('repetitionWindow'), wholeAtLeast(0));
  const seed = inRange(get('seed'), wholeAtLeast(0));
  const limit = inRange(get('maxTokens'), wholeAtLeast(1));
  const stopField = get('stop');
  const stops = (typeof stopField === 'string' ? [stopField] : Array.isArray(stopField) ? stopField : []).filter((s): s is string => typeof s === 'string' && s !== '');
  const sampling: SamplingDefaults = {
    temperature: inRange(get('temperature'), (n) => n >= 0 && n <= 2),
    topP: inRange(get('topP'), (n) => n > 0 && n <= 1),
    // (0 or less: off, as Ollama's and vLLM's -1)
    topK: topK === undefined ? undefined : Math.max(0, topK),
    minP: inRange(get('minP'), (n) => n >= 0 && n < 1),
    repetitionPenalty: inRange(get('repetitionPenalty'), (n) => n > 0),
    // (Ollama's -1, every token, is the engine's unset window)
    repetitionWindow: window,
    presencePenalty: inRange(get('presencePenalty'), (n) => n >= -2 && n <= 2),
    frequencyPenalty: inRange(get('frequencyPenalty'), (n) => n >= -2 && n <= 2),
    seed,
    stop: stops.length > 0 ? stops : undefined,
    maxTokens: limit,
  };
  return compact(sampling);
}

/** Ollama's option names (its api/types.go `Options`) of the sampling defaults. */
export const OLLAMA_OPTION_NAMES = {
  temperature: 'temperature',
  topP: 'top_p',
  topK: 'top_k',
  minP: 'min_p',
  repetitionPenalty: 'repeat_penalty',
  repetitionWindow: 'repeat_last_n',
  presencePenalty: 'presence_penalty',
  frequencyPenalty: 'frequency_penalty',
  seed: 'seed',
  stop: 'stop',
  maxTokens: 'num_predict',
} as const satisfies Record<keyof SamplingDefaults, string>;

/** The names transformers' `generation_config.json` gives the fields vLLM reads (`get_diff_sampling_param`). */
const GENERATION_CONFIG_NAMES: Record<keyof SamplingDefaults, string | undefined> = {
  temperature: 'temperature',
  topP: 'top_p',
  topK: 'top_k',
  minP: 'min_p',
  repetitionPenalty: 'repetition_penalty',
  repetitionWindow: undefined,
  presencePenalty: undefined,
  frequencyPenalty: undefined,
  seed: undefined,
  stop: undefined,
  maxTokens: 'max_new_tokens',
};

/**
 * The defaults of the Ollama model `spec` (`ollama://…`) found in `stores`: its params, system, messages and license
 * layers; undefined when it has none. Throws OllamaModelError for a layer that is not what Ollama writes.
 */
export function ollamaModelDefaults(spec: string, stores?: string[]): ModelDefaults | undefined {
  const layers = ollamaModelLayers(spec, stores);
  const params = layers.params ?? {};
  const messages = (layers.messages ?? []).flatMap((m) =>
    m !== null && typeof m === 'object' && typeof (m as ChatMessage).role === 'string' && typeof (m as ChatMessage).content === 'string'
      ? [{ role: (m as ChatMessage).role, content: (m as ChatMessage).content }]
      : [],
  );
  return compact<ModelDefaults>({
    sampling: samplingOf(params, OLLAMA_OPTION_NAMES),
    contextLength: inRange(params.num_ctx, wholeAtLeast(1)),
    system: layers.system || undefined,
    messages: messages.length > 0 ? messages : undefined,
    license: layers.license,
    parameters: layers.params && Object.keys(layers.params).length > 0 ? layers.params : undefined,
  });
}

/** The sampling defaults of the `generation_config.json` beside a located model (a hub export's); undefined when none. */
export async function generationConfigDefaults(location: ModelLocation): Promise<ModelDefaults | undefined> {
  const sampling = await firstBeside(location, 'generation_config.json', (json) => samplingOf(json, GENERATION_CONFIG_NAMES));
  return sampling ? { sampling } : undefined;
}

/** `options` with the model's sampling defaults where they leave a setting unset (undefined): the caller's own win. */
export function withModelSampling<T extends GenerateOptions>(options: T, defaults: ModelDefaults | undefined): T {
  const out: T = { ...options };
  for (const [key, value] of Object.entries(defaults?.sampling ?? {})) {
    if (out[key as keyof SamplingDefaults] === undefined) (out as Record<string, unknown>)[key] = value;
  }
  return out;
}

/**
 * A chat's messages as the model's defaults open them, as Ollama's chat does: its system prompt first when the chat
 * does not begin with a system message of its own, then its example messages (after the chat's system message, where
 * templates want that message first).
 */
export function withModelMessages(messages: ChatMessage[], defaults: ModelDefaults | undefined): ChatMessage[] {
  if (!defaults?.system && !defaults?.messages) return messages;
  const lead = messages[0]?.role === 'system' ? 1 : 0;
  const system: ChatMessage[] = lead === 0 && defaults.system ? [{ role: 'system', content: defaults.system }] : [];
  return [...system, ...messages.slice(0, lead), ...(defaults.messages ?? []), ...messages.slice(lead)];
}
