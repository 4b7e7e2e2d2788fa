/**
 * Options of a reasoner model as zod schemas: what `create` loads and the model's defaults, and what one call
 * may set (through call options or `withConfig`). Parsing reports every violation at once, one line each. Their
 * types, with the docs, are the interfaces of option-types.ts.
 */
import { z } from 'zod';
import { ReasonerOptionsError, type OptionIssue } from './errors.js';
import { formatFieldPath, nearestName, PLACEMENTS, DTYPE_CHOICES, type ResponseFormat } from './core.js';
import type { ChatCallOptions, ChatModelOptions, ModelOptions, OpenAIResponseFormat, ProgressListener, ReasonerCallOptions } from './option-types.js';

/**
 * Whether `A` and `B` are one type, deeply: optional keys count too, which assignability both ways would let differ.
 * `unknown` if so, else a demand that no schema meets, naming the interface.
 */
type Same<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? unknown : { 'takes other options than': A };

/**
 * `schema` itself, where it takes exactly `Options`: ties each documented options interface (the public type, see
 * option-types.ts) to the schema that parses it, so that neither changes without the other and the build says which.
 */
export const schemaOf =
  <Options>() =>
  <S extends z.ZodType>(schema: S & Same<Options, z.input<S>>): S =>
    schema;

/** A reasoner's weight (`ReasonerWeight`): segments of a schedule in order, each `until` past the last. */
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

/** The generation settings (`GenerationOptions`), shared by a model's defaults and a call's options. */
const generation = {
  maxTokens: z.int().positive().optional(),
  temperature: z.number().min(0).optional(),
  topK: z.int().nonnegative().optional(),
  topP: z.number().gt(0).max(1).optional(),
  minP: z.number().min(0).lt(1).optional(),
  repetitionPenalty: z.number().positive().optional(),
  repetitionWindow: z.int().nonnegative().optional(),
  frequencyPenalty: z.number().optional(),
  presencePenalty: z.number().optional(),
  logitBias: z.record(z.string().regex(/^(0|[1-9][0-9]*)$/, 'keys are token ids'), z.number()).optional(),
  seed: z.int().optional(),
  stop: z.array(z.string().min(1)).optional(),
  mode: z.enum(['logits', 'logprobs']).optional(),
  normalize: z.boolean().optional(),
  latent: z.union([z.enum(['marker', 'never']), z.string().regex(/^fixed:[1-9][0-9]*$/, 'expected marker, never or fixed:K')]).optional(),
  latentPlaceholder: z.string().optional(),
};

/** The longest `timeout` taken, in milliseconds: Node's timers' limit (2^31-1). */
const MAX_TIMEOUT_MS = 2 ** 31 - 1;

/** LangChain's retry fields, refused by name (why: `ModelOptions.maxRetries`). */
const refusedRetry = z
  .never({ error: "is LangChain's retry of remote calls: a local engine fails the same way on every try, so it is not taken (model.withRetry() retries where wanted)" })
  .optional();

/** Parses `ModelOptions`. */
export const ModelOptionsSchema = schemaOf<ModelOptions>()(
  z.strictObject({
    backbone: z.string().min(1),
    dtype: z.enum(DTYPE_CHOICES).optional(),
    reasoners: z
      .array(
        z.strictObject({
          module: z.string().min(1),
          name: z.string().min(1).optional(),
          weight: Weight.optional(),
          dtype: z.enum(DTYPE_CHOICES).optional(),
        }),
      )
      .optional(),
    projector: z.string().min(1).optional(),
    registry: z
      .strictObject({
        registry: z.string().min(1).optional(),
        token: z.string().min(1).optional(),
        plainHttp: z.boolean().optional(),
        cacheDir: z.string().min(1).optional(),
        offline: z.boolean().optional(),
      })
      .optional(),
    onProgress: z.custom<ProgressListener>((v) => typeof v === 'function', 'expected a function').optional(),
    device: z.string().min(1).optional(),
    intraOpThreads: z.int().positive().optional(),
    placement: z.enum(PLACEMENTS).optional(),
    cacheDir: z.string().min(1).optional(),
    prefixCacheBytes: z.int().nonnegative().optional(),
    contextLength: z.int().positive().optional(),
    ggufKvCache: z.enum(['float32', 'float16']).optional(),
    sessionCache: z.boolean().optional(),
    int8Prompts: z.boolean().optional(),
    promptLookup: z
      .union([
        z.boolean(),
        z.strictObject({ draftTokens: z.int().positive().optional(), maxNgram: z.int().positive().optional(), minNgram: z.int().positive().optional() }),
      ])
      .optional(),
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
    // (Node's timers hold 2^31-1 ms at most: a longer one would fire at once, a far longer one never be set)
    timeout: z.number().positive().max(MAX_TIMEOUT_MS, `is at most ${MAX_TIMEOUT_MS} ms (about 24.8 days, the longest timer Node sets): leave it unset for no limit`).optional(),
    streaming: z.boolean().optional(),
    maxRetries: refusedRetry,
    onFailedAttempt: refusedRetry,
  }),
);

/** The chat settings (`ChatCallOptions`): defaults of `ChatReasoner`, overridable per call. */
const chat = {
  chatTemplateKwargs: z.record(z.string(), z.unknown()).optional(),
  reasoningFormat: z.enum(['auto', 'none']).optional(),
  thinkingBudget: z.int().nonnegative().optional(),
};

/** Parses `ChatModelOptions`. */
export const ChatModelOptionsSchema = schemaOf<ChatModelOptions>()(
  ModelOptionsSchema.extend({
    chatTemplate: z.string().min(1).optional(),
    toolCallSyntax: z.enum(['hermes', 'json', 'mistral', 'mistral-args', 'granite', 'deepseek', 'command-r', 'command-r-plus', 'harmony', 'qwen-xml', 'glm', 'generic']).optional(),
    ...chat,
  }),
);

/** Parses `ChatCallOptions`, what one call of a chat model may set besides the generation settings. */
export const ChatCallOptionsSchema = schemaOf<ChatCallOptions>()(z.strictObject(chat));

/** Parses `ReasonerCallOptions`, what one call may set besides LangChain's own call options. */
export const CallOptionsSchema = schemaOf<ReasonerCallOptions>()(
  z.strictObject({
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
    responseFormat: z
      .custom<ResponseFormat>((v) => typeof v === 'object' && v !== null && typeof (v as { type?: unknown }).type === 'string', {
        message: 'expected a response format such as { type: "json_schema", schema }',
      })
      .optional(),
    prediction: z
      .union([
        z.string(),
        z.strictObject({ type: z.literal('content'), content: z.union([z.string(), z.array(z.object({ type: z.literal('text'), text: z.string() }))]) }),
      ])
      .transform((p) => (typeof p === 'string' ? p : typeof p.content === 'string' ? p.content : p.content.map((part) => part.text).join('')))
      .optional(),
    ...generation,
  }),
);

/** Parses `OpenAIResponseFormat`. */
const OpenAIResponseFormatSchema = schemaOf<OpenAIResponseFormat>()(
  z.discriminatedUnion(
    'type',
    [
      z.object({ type: z.literal('json_schema'), json_schema: z.object({ schema: z.union([z.record(z.string(), z.unknown()), z.boolean()]).optional(), name: z.string().optional(), description: z.string().optional(), strict: z.boolean().nullable().optional() }) }),
      z.object({ type: z.literal('json_object') }),
      z.object({ type: z.literal('text') }),
    ],
    { error: 'expected OpenAI\'s { type: "json_schema", json_schema: { schema } }, { type: "json_object" } or { type: "text" }' },
  ),
);

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

export type ParsedModelOptions = z.output<typeof ModelOptionsSchema>;
export type ParsedCallOptions = z.output<typeof CallOptionsSchema>;
/** The generation settings a model holds as defaults. */
export type GenerationDefaults = Omit<ParsedCallOptions, 'reasoners'>;

/** The keys of an object schema, to pick them out of a wider options object. */
function keysOf(schema: z.ZodObject): string[] {
  return Object.keys(schema.shape);
}

/**
 * LangChain's constructor fields of a model (`BaseChatModelParams`, `BaseLLMParams`), which go to LangChain. Two kinds
 * of field are the schema's instead: its retry fields, which the schema refuses, and the providers' `streaming` flag,
 * which it takes (and which changes nothing).
 */
export const LANGCHAIN_MODEL_FIELDS: ReadonlySet<string> = new Set([
  'verbose', 'callbacks', 'tags', 'metadata', 'callbackManager', 'cache', 'maxConcurrency', 'disableStreaming', 'outputVersion',
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
