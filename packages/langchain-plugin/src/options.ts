/**
 * Options of a reasoner model as zod schemas: what `create` loads and the model's defaults, and what one call
 * may set (through call options or `withConfig`). Parsing reports every violation at once, one line each.
 */
import { z } from 'zod';
import { ReasonerOptionsError, type OptionIssue } from './errors.js';
import { formatFieldPath, nearestName, PLACEMENTS, DTYPE_CHOICES, type ResponseFormat, type TransferProgress } from './core.js';

/**
 * A reasoner's weight: a constant, or a schedule over generated tokens such as
 * `[{ until: 40, weight: 1.2 }, { weight: 1 }]` (each segment up to `until`, the last one to the end).
 */
const Weight = z.union([
  z.number(),
  z
    .array(z.strictObject({ until: z.int().positive().optional(), weight: z.number() }))
    .min(1)
    .superRefine((segments, ctx) => {
      let previous = 0;
      segments.forEach((s, i) => {
        const last = i === segments.length - 1;
        if (last && s.until !== undefined) {
          ctx.addIssue({ code: 'custom', path: [i, 'until'], message: 'the last segment has no "until": it covers the rest' });
        } else if (!last && (s.until === undefined || s.until <= previous)) {
          ctx.addIssue({ code: 'custom', path: [i, 'until'], message: `needs an "until" greater than ${previous}` });
        } else if (!last) previous = s.until!;
      });
    }),
]);

/** Generation settings: defaults of a model, overridable per call. Ranges are the engine's. */
const generation = {
  /** Generated tokens at most (the engine's default is 256). */
  maxTokens: z.int().positive().optional(),
  /** 0 (the default) is greedy. */
  temperature: z.number().min(0).optional(),
  /** 0 disables. */
  topK: z.int().nonnegative().optional(),
  topP: z.number().gt(0).max(1).optional(),
  minP: z.number().min(0).lt(1).optional(),
  /** 1 is off. */
  repetitionPenalty: z.number().positive().optional(),
  /**
   * How many of the last tokens (prompt and reply) the repetition penalty looks at, as llama.cpp's and Ollama's
   * `repeat_last_n`: unset looks at all of them (their -1), 0 at none.
   */
  repetitionWindow: z.int().nonnegative().optional(),
  /** OpenAI's: each generated token's logit less this times its count so far; 0 is off. */
  frequencyPenalty: z.number().optional(),
  /** OpenAI's: every generated token's logit less this; 0 is off. */
  presencePenalty: z.number().optional(),
  /** OpenAI's `logit_bias`: token id → bias added to its logit (-100 bans it). */
  logitBias: z.record(z.string().regex(/^(0|[1-9][0-9]*)$/, 'keys are token ids'), z.number()).optional(),
  /** Makes sampled output reproducible. */
  seed: z.int().optional(),
  /** Strings that end generation; the text is cut before them (the engine enforces them). */
  stop: z.array(z.string().min(1)).optional(),
  /** How reasoner logits are transformed before weighting: 'logits' (UniR) or 'logprobs' (GenARM). */
  mode: z.enum(['logits', 'logprobs']).optional(),
  /** Divide fused logits by the sum of weights, the backbone's 1 included. */
  normalize: z.boolean().optional(),
  /** When latent steps run (needs a projector): 'marker' (default then), 'never', or 'fixed:K'. */
  latent: z.union([z.enum(['marker', 'never']), z.string().regex(/^fixed:[1-9][0-9]*$/, 'expected marker, never or fixed:K')]).optional(),
  /** Shown in the text once per latent step in place of a marker (default: nothing). */
  latentPlaceholder: z.string().optional(),
};

/**
 * LangChain's retry fields, refused by name: a local engine fails the same way on every try (invalid options, a
 * broken constraint, a closed engine), so retries would only delay the error; `.withRetry()` retries a runnable.
 */
const refusedRetry = z
  .never({ error: "is LangChain's retry of remote calls: a local engine fails the same way on every try, so it is not taken (model.withRetry() retries where wanted)" })
  .optional();

/** What `ReasonerLLM.create` takes (LangChain's own model parameters come beside these). */
export const ModelOptionsSchema = z.strictObject({
  /** The backbone: a module directory, a plain ONNX export directory, or an .onnx file. */
  backbone: z.string().min(1),
  /** The backbone's graph in a hub export directory, by transformers.js's names (fp32, fp16, q8, int8, uint8, q4, q4f16, bnb4; auto: as its config.json says). */
  dtype: z.enum(DTYPE_CHOICES).optional(),
  /** Reasoner modules composed with the backbone, each a local module directory (or export, or .onnx file). */
  reasoners: z
    .array(
      z.strictObject({
        module: z.string().min(1),
        /** Name used per call and in metadata; default: the module manifest's name. */
        name: z.string().min(1).optional(),
        /** Default weight; default: the manifest's `composition.defaultWeight`, else 1. */
        weight: Weight.optional(),
        /** The reasoner's graph in a hub export directory (as `dtype`). */
        dtype: z.enum(DTYPE_CHOICES).optional(),
      }),
    )
    .optional(),
  /** LiteReason reasoning projector: a latent-projector module directory or an .onnx file. */
  projector: z.string().min(1).optional(),
  /**
   * How registry references among `backbone`, `reasoners[].module` and `projector` are pulled: default registry,
   * token, plain HTTP, cache directory, offline (defaults: REASONPLUG_REGISTRY, REASONPLUG_TOKEN, REASONPLUG_OFFLINE).
   */
  registry: z
    .strictObject({
      registry: z.string().min(1).optional(),
      token: z.string().min(1).optional(),
      plainHttp: z.boolean().optional(),
      cacheDir: z.string().min(1).optional(),
      offline: z.boolean().optional(),
    })
    .optional(),
  /**
   * Progress of what loading pulls and converts, file by file (core's `onProgress`): a backbone named `ollama://…` or
   * `hf://…` that no local store has, or a `.gguf` converted on first use, takes minutes the first time.
   */
  onProgress: z.custom<(p: TransferProgress) => void>((v) => typeof v === 'function', 'expected a function').optional(),
  /** Execution provider: cpu (default), cuda, tensorrt, webgpu, coreml, dml. */
  device: z.string().min(1).optional(),
  intraOpThreads: z.int().positive().optional(),
  /** Where reasoners run: `lanes`, `inline` or `auto` (default; see core's `EngineOptions.placement`). */
  placement: z.enum(PLACEMENTS).optional(),
  /** Where prepared graphs are cached (default: core's). */
  cacheDir: z.string().min(1).optional(),
  /**
   * Bytes of KV cache each model keeps of recent prompts, so that a call whose prompt begins with one (the next
   * turn of a conversation or an agent loop) runs only the rest (default: core's 128 MiB; 0 turns it off).
   */
  prefixCacheBytes: z.int().nonnegative().optional(),
  /**
   * Positions a call may use (prompt and reply), at most the backbone's own (core's `contextLength`, vLLM's
   * `--max-model-len`); a chat reply without `maxTokens` runs to it. Default: the backbone's.
   */
  contextLength: z.int().positive().optional(),
  /**
   * Keys' and values' type of `.gguf` models converted on load (core's `ggufKvCache`): `float16` (default, llama.cpp's
   * default cache type: long contexts step faster) or `float32` (exact against llama.cpp's F32 cache).
   */
  ggufKvCache: z.enum(['float32', 'float16']).optional(),
  /**
   * Whether CPU sessions are created from their optimized form with prepacked weights, saved in the cache the first
   * time (core's `sessionCache`): default for models whose decode step reads at least 64 MiB; false: never.
   */
  sessionCache: z.boolean().optional(),
  /**
   * Speculative decoding by prompt lookup (core's `promptLookup`): a call running alone drafts its next tokens from
   * its own prompt and reply and keeps them as far as the model writes them itself, so replies are unchanged and
   * those that quote their context (retrieval answers, extraction, edits) take fewer steps. true: the defaults.
   */
  promptLookup: z
    .union([
      z.boolean(),
      z.strictObject({ draftTokens: z.int().positive().optional(), maxNgram: z.int().positive().optional(), minNgram: z.int().positive().optional() }),
    ])
    .optional(),
  /**
   * Speculative decoding with a draft model (core's `draftModel`, llama.cpp's `--model-draft`): a small model with the
   * backbone's tokenizer (same family) drafts a call's next tokens while it runs alone, kept as far as the backbone
   * writes them itself, so replies are unchanged. A model reference as `backbone` takes, or `{ model, draftTokens,
   * adaptive, minProbability, dtype }`.
   */
  draftModel: z
    .union([
      z.string().min(1),
      z.strictObject({
        model: z.string().min(1),
        draftTokens: z.int().positive().optional(),
        adaptive: z.boolean().optional(),
        minProbability: z.number().min(0).max(1).optional(),
        dtype: z.string().optional(),
      }),
    ])
    .optional(),
  ...generation,
  /**
   * Milliseconds each call may run once it has its place among the model's generations (`maxConcurrency`), as
   * ChatOpenAI's `timeout` counts per request: the generation stops then. A call's own `timeout` (LangChain's call
   * option) applies beside it and, as LangChain's RunnableConfig.timeout, covers the whole call, the wait included.
   */
  timeout: z.number().positive().optional(),
  maxRetries: refusedRetry,
  onFailedAttempt: refusedRetry,
});

/** How a chat model renders a conversation and reads its reply: defaults of `ChatReasoner`, overridable per call. */
const chat = {
  /**
   * Variables for the chat template beside the messages, as vLLM's and llama.cpp's `chat_template_kwargs`
   * (Qwen3's `{ enable_thinking: false }`); a call's keys override the model's.
   */
  chatTemplateKwargs: z.record(z.string(), z.unknown()).optional(),
  /**
   * `auto` (the default): a reply's `<think>…</think>` thought comes apart, as `additional_kwargs.reasoning_content`
   * (as ChatOpenAI reads it from vLLM or llama.cpp); `none` leaves it in the content.
   */
  reasoningFormat: z.enum(['auto', 'none']).optional(),
  /**
   * Tokens the reply's thought may take (vLLM's `thinking_token_budget`): once spent, the engine writes the closing
   * tag and the model answers. Default: no limit; a call's value overrides the model's.
   */
  thinkingBudget: z.int().nonnegative().optional(),
};

/** What `ChatReasoner.create` takes: the model options, and a chat template for backbones without one. */
export const ChatModelOptionsSchema = ModelOptionsSchema.extend({
  /** A jinja chat template that replaces (or stands in for) the one in the backbone's tokenizer_config.json. */
  chatTemplate: z.string().min(1).optional(),
  /**
   * How the model writes tool calls: `<tool_call>` blocks (`hermes`), Llama 3's JSON object (`json`), Mistral's
   * `[TOOL_CALLS]` list (`mistral`), its `[TOOL_CALLS]name[ARGS]` calls (`mistral-args`), Granite's `<|tool_call|>` list
   * (`granite`), DeepSeek's fenced calls (`deepseek`), Cohere's `<|START_ACTION|>` list (`command-r`), Command R+'s
   * `Action:` and ```json list (`command-r-plus`), gpt-oss's commentary messages to `functions.<name>` (`harmony`),
   * Qwen3-Coder's `<function=…>`/`<parameter=…>` tags (`qwen-xml`), GLM-4.5's `<arg_key>`/`<arg_value>` tags (`glm`), or a JSON reply with the tools described in the system message (`generic`); default: as its chat template renders them, `generic` where it
   * renders none.
   */
  toolCallSyntax: z.enum(['hermes', 'json', 'mistral', 'mistral-args', 'granite', 'deepseek', 'command-r', 'command-r-plus', 'harmony', 'qwen-xml', 'glm', 'generic']).optional(),
  ...chat,
});

/** What one call of a chat model may set besides the generation settings. */
export const ChatCallOptionsSchema = z.strictObject(chat);

/** What one call may set, besides LangChain's own call options. */
export const CallOptionsSchema = z.strictObject({
  /**
   * The reasoners taking part in this call, by name, among those loaded; `[]` runs the backbone alone.
   * Default: every loaded reasoner with its default weight.
   */
  reasoners: z
    .array(z.strictObject({ name: z.string().min(1), weight: Weight.optional() }))
    .superRefine((list, ctx) => {
      // A model runs at most once per step; naming it twice would advance its cache twice.
      list.forEach((r, i) => {
        if (list.findIndex((o) => o.name === r.name) !== i) {
          ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `"${r.name}" is named twice` });
        }
      });
    })
    .optional(),
  /**
   * The structure the reply must have, enforced token by token (core's `responseFormat`): `json_schema`,
   * `json_object`, `grammar`, `regex` or `tool_calls`. `withStructuredOutput` and `bindTools` set it.
   */
  responseFormat: z
    .custom<ResponseFormat>((v) => typeof v === 'object' && v !== null && typeof (v as { type?: unknown }).type === 'string', {
      message: 'expected a response format such as { type: "json_schema", schema }',
    })
    .optional(),
  /**
   * The reply's expected text (OpenAI's Predicted Outputs, core's `prediction`): ChatOpenAI's shape
   * (`{ type: 'content', content }`, the content a string or text parts) or a string. Where the reply's last tokens
   * occur in it, the tokens after them are drafted and checked in one step; the reply is what it is without.
   */
  prediction: z
    .union([
      z.string(),
      z.strictObject({ type: z.literal('content'), content: z.union([z.string(), z.array(z.object({ type: z.literal('text'), text: z.string() }))]) }),
    ])
    .transform((p) => (typeof p === 'string' ? p : typeof p.content === 'string' ? p.content : p.content.map((part) => part.text).join('')))
    .optional(),
  ...generation,
});

/**
 * OpenAI's `response_format` (ChatOpenAI's call option, which LangChain's `createAgent` passes a chat model for its
 * provider strategy): `json_schema` with the schema under `json_schema.schema`, `json_object`, or `text` (none). Its
 * `name`, `description` and `strict` are not read: the reply follows the schema whatever `strict` says.
 */
const OpenAIResponseFormatSchema = z.discriminatedUnion(
  'type',
  [
    z.object({ type: z.literal('json_schema'), json_schema: z.object({ schema: z.union([z.record(z.string(), z.unknown()), z.boolean()]).optional() }) }),
    z.object({ type: z.literal('json_object') }),
    z.object({ type: z.literal('text') }),
  ],
  { error: 'expected OpenAI\'s { type: "json_schema", json_schema: { schema } }, { type: "json_object" } or { type: "text" }' },
);

/** OpenAI's `response_format`, as a chat model's call option. */
export type OpenAIResponseFormat = z.input<typeof OpenAIResponseFormatSchema>;

/**
 * A chat call's options with OpenAI's `response_format` read into `responseFormat` (`json_schema` → its schema,
 * `json_object` as it is, `text` none), so that code written for ChatOpenAI (createAgent's provider strategy) gets
 * its structure. Throws `ReasonerOptionsError` naming `response_format` for another shape, or beside a `responseFormat`.
 */
export function readResponseFormat(options: object): object {
  const { response_format: given, ...rest } = options as Record<string, unknown>;
  if (given === undefined || given === null) return rest;
  if (rest.responseFormat !== undefined) {
    throw new ReasonerOptionsError('call options', [{ path: 'response_format', message: 'is OpenAI\'s spelling of responseFormat, which is given too: give one of them' }]);
  }
  const format = parseOptions(z.object({ response_format: OpenAIResponseFormatSchema }), { response_format: given }, 'call options').response_format;
  if (format.type === 'text') return rest;
  const responseFormat: ResponseFormat = format.type === 'json_object' ? format : { type: 'json_schema', schema: format.json_schema.schema ?? true };
  return { ...rest, responseFormat };
}

export type ModelOptions = z.input<typeof ModelOptionsSchema>;
export type ChatModelOptions = z.input<typeof ChatModelOptionsSchema>;
export type ParsedModelOptions = z.output<typeof ModelOptionsSchema>;
/** Per-call options of reasoner models (`model.withConfig({ reasoners: [{ name: 'math', weight: 0.8 }] })`). */
export type ReasonerCallOptions = z.input<typeof CallOptionsSchema>;
export type ParsedCallOptions = z.output<typeof CallOptionsSchema>;
/** Per-call options of `ChatReasoner` beyond those of every reasoner model. */
export type ChatCallOptions = z.input<typeof ChatCallOptionsSchema>;
/** The generation settings a model holds as defaults. */
export type GenerationDefaults = Omit<ParsedCallOptions, 'reasoners'>;

/** The keys of an object schema, to pick them out of a wider options object. */
function keysOf(schema: z.ZodObject): string[] {
  return Object.keys(schema.shape);
}

/**
 * LangChain's constructor fields of a model (`BaseChatModelParams`, `BaseLLMParams`), which go to LangChain; its
 * retry fields are the schema's, which refuses them. Also the providers' `streaming` flag, taken and of no effect:
 * these models stream every reply to callbacks, invoked or streamed.
 */
export const LANGCHAIN_MODEL_FIELDS: ReadonlySet<string> = new Set([
  'verbose', 'callbacks', 'tags', 'metadata', 'callbackManager', 'cache', 'maxConcurrency', 'disableStreaming', 'outputVersion', 'streaming',
]);

/**
 * Other runtimes' names for this package's options (OpenAI's, llama.cpp's, Ollama's, transformers'), which a call
 * given them would otherwise drop without a word (a `num_predict` leaves every reply unbounded).
 */
const FOREIGN_NAMES: Readonly<Record<string, string>> = {
  max_new_tokens: 'maxTokens',
  max_completion_tokens: 'maxTokens',
  num_predict: 'maxTokens',
  n_predict: 'maxTokens',
  repeat_penalty: 'repetitionPenalty',
  repeat_last_n: 'repetitionWindow',
  stop_sequences: 'stop',
  stopSequences: 'stop',
};

/** A key as compared with the options' names: `max_tokens`, `MaxTokens` and `maxTokens` are one. */
const squashed = (key: string) => key.toLowerCase().replace(/[_-]/g, '');

/** {@link FOREIGN_NAMES} by their squashed form, the option each means. */
const FOREIGN_SQUASHED: ReadonlyMap<string, string> = new Map(Object.entries(FOREIGN_NAMES).map(([name, ours]) => [squashed(name), ours]));

/** A call's option names (read for every key of every call, so listed once). */
const CALL_NAMES: readonly string[] = keysOf(CallOptionsSchema);

/** The option among `names` (default: a call's) that `key` looks like it means (see {@link CALL_FIELDS_ELSEWHERE}), if any. */
function meantOption(key: string, names: readonly string[] = CALL_NAMES): string | undefined {
  const foreign = FOREIGN_SQUASHED.get(squashed(key));
  if (foreign) return foreign;
  const same = names.find((name) => squashed(name) === squashed(key));
  if (same) return same;
  // A typo of a long name (`temprature`); short keys are left alone, as LangGraph's `store` is two edits from `stop`.
  return key.length >= 6 ? nearestName(key, names.filter((name) => name.length >= 6)) : undefined;
}

/** The keys the models themselves read beside `CallOptionsSchema`'s: `ReasonerLLM`'s `suffix`, `ChatReasoner`'s. */
const MODEL_CALL_FIELDS: ReadonlySet<string> = new Set(['suffix', 'tools', 'tool_choice', 'parallel_tool_calls', ...keysOf(ChatCallOptionsSchema)]);

/**
 * The keys of a call's options that are not `CallOptionsSchema`'s and go to their other readers: every key but one
 * that looks like this package's options spelt another way (`max_tokens`, `repeat_last_n`, `temprature`), which the
 * schema then names. LangChain's and LangGraph's keys (its call options and runnable config, the `promptIndex` it adds,
 * the runtime a graph node passes on) pass whatever they are: their set grows with their versions, and a key refused
 * for being new would fail every call.
 */
export const CALL_FIELDS_ELSEWHERE: Pick<ReadonlySet<string>, 'has'> = {
  has: (key) => MODEL_CALL_FIELDS.has(key) || meantOption(key) === undefined,
};

/**
 * Splits `options` into the keys `schema` defines and the others (`rest`): those in `elsewhere` (LangChain's
 * constructor fields, which LangChain validates itself; the call option keys read elsewhere), or every other key
 * where `elsewhere` is not given. With `elsewhere` given, any key in neither stays with ours, so that the schema
 * names it: LangChain would drop it silently, and from JavaScript a `max_tokens` would leave every reply unbounded.
 */
export function splitOptions(
  schema: z.ZodObject,
  options: object,
  elsewhere?: Pick<ReadonlySet<string>, 'has'>,
): { ours: Record<string, unknown>; rest: Record<string, unknown> } {
  const keys = new Set(keysOf(schema));
  const ours: Record<string, unknown> = {};
  const rest: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(options)) {
    if (value === undefined) continue;
    (keys.has(key) || (elsewhere !== undefined && !elsewhere.has(key)) ? ours : rest)[key] = value;
  }
  return { ours, rest };
}

/** Validates `value` against `schema`; throws `ReasonerOptionsError` naming `where` and every offending field. */
export function parseOptions<S extends z.ZodType>(schema: S, value: unknown, where: string): z.output<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const known = schema instanceof z.ZodObject ? new Set(keysOf(schema)) : new Set<string>();
  const unknown = (path: PropertyKey[], key: string) => {
    // The hint a call's options get where they are split (a foreign name, another spelling, a typo), among these names.
    const meant = path.length === 0 ? meantOption(key, [...known]) : undefined;
    const near = meant !== undefined && meant !== key ? ` (did you mean ${meant}?)` : '';
    return { path: formatFieldPath([...path, key]), message: `unknown option${near}` };
  };
  const issues: OptionIssue[] = result.error.issues.flatMap((iss) =>
    iss.code === 'unrecognized_keys' ? iss.keys.map((key) => unknown(iss.path, key)) : [{ path: formatFieldPath(iss.path), message: iss.message }],
  );
  throw new ReasonerOptionsError(where, issues);
}
