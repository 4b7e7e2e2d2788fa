/**
 * The options of the reasoner models as documented interfaces: the public types, written out so that their docs
 * reach the published declarations (a zod schema's inferred type reaches them without its fields' comments). Each
 * is tied in options.ts to the schema that parses it, so that neither changes without the other.
 */
import type { Dtype, PlacementChoice, ResponseFormat, SamplingOptions, ToolCallSyntax, TransferProgress } from './core.js';

/**
 * A reasoner's weight: a constant, or a schedule over generated tokens such as
 * `[{ until: 40, weight: 1.2 }, { weight: 1 }]` (each segment up to `until`, the last one to the end).
 */
export type ReasonerWeight = number | { until?: number; weight: number }[];

/**
 * A listener of loading's progress, named so that the declarations of both builds (ESM and CommonJS) refer to it
 * here: the CommonJS build resolves modules as Node 10 did, and would otherwise name `TransferProgress` by a path
 * into core's dist/ that core's `exports` does not open.
 */
export type ProgressListener = (p: TransferProgress) => void;

/**
 * Generation settings: defaults of a model, overridable per call. The sampling settings are the engine's own
 * (`SamplingOptions`: their docs and ranges), but for `logitBias`, whose ids are keys as JSON writes them.
 */
export interface GenerationOptions extends Omit<SamplingOptions, 'logitBias'> {
  /** Generated tokens at most (the engine's default is 256). */
  maxTokens?: number;
  /** OpenAI's `logit_bias`: token id → bias added to its logit (-100 bans it). */
  logitBias?: Record<string, number>;
  /** Strings that end generation; the text is cut before them (the engine enforces them). */
  stop?: string[];
  /** How reasoner logits are transformed before weighting: 'logits' (UniR) or 'logprobs' (GenARM). */
  mode?: 'logits' | 'logprobs';
  /** Divide fused logits by the sum of weights, the backbone's 1 included. */
  normalize?: boolean;
  /** When latent steps run (needs a projector): 'marker' (default then), 'never', or 'fixed:K'. */
  latent?: string;
  /** Shown in the text once per latent step in place of a marker (default: nothing). */
  latentPlaceholder?: string;
}

/** What `ReasonerLLM.create` takes (LangChain's own model parameters come beside these). */
export interface ModelOptions extends GenerationOptions {
  /**
   * The backbone: a module directory, a plain ONNX export directory, an .onnx or GGUF file, a model by its Ollama,
   * Hugging Face or LM Studio name (`ollama://…`, `hf://…`, `lmstudio://…`), or a registry reference
   * (`[registry/]namespace/name@range`, pulled as `registry` says).
   */
  backbone: string;
  /** The backbone's graph in a hub export directory, by transformers.js's names (fp32, fp16, q8, int8, uint8, q4, q4f16, bnb4; auto: as its config.json says). */
  dtype?: Dtype | 'auto';
  /**
   * Reasoner modules composed with the backbone, each given as `backbone` is: a local module directory, export
   * directory, .onnx or GGUF file, or a model's name or registry reference, pulled where needed.
   */
  reasoners?: {
    module: string;
    /** Name used per call and in metadata; default: the module manifest's name. */
    name?: string;
    /** Default weight; default: the manifest's `composition.defaultWeight`, else 1. */
    weight?: ReasonerWeight;
    /** The reasoner's graph in a hub export directory (as `dtype`). */
    dtype?: Dtype | 'auto';
  }[];
  /** LiteReason reasoning projector: a latent-projector module directory or an .onnx file, or its registry reference. */
  projector?: string;
  /**
   * How registry references among `backbone`, `reasoners[].module` and `projector` are pulled: default registry,
   * token, plain HTTP, cache directory, offline (defaults: REASONPLUG_REGISTRY, REASONPLUG_TOKEN, REASONPLUG_OFFLINE).
   */
  registry?: { registry?: string; token?: string; plainHttp?: boolean; cacheDir?: string; offline?: boolean };
  /**
   * Progress of what loading pulls and converts, file by file (core's `onProgress`): a backbone named `ollama://…` or
   * `hf://…` that no local store has, or a `.gguf` converted on first use, takes minutes the first time.
   */
  onProgress?: ProgressListener;
  /** Execution provider: cpu (default), cuda, tensorrt, webgpu, coreml, dml. */
  device?: string;
  intraOpThreads?: number;
  /** Where reasoners run: `lanes`, `inline` or `auto` (default; see core's `EngineOptions.placement`). */
  placement?: PlacementChoice;
  /** Where prepared graphs are cached (default: core's). */
  cacheDir?: string;
  /**
   * Bytes of KV cache each model keeps of recent prompts, so that a call whose prompt begins with one (the next
   * turn of a conversation or an agent loop) runs only the rest (default: core's 128 MiB; 0 turns it off).
   */
  prefixCacheBytes?: number;
  /**
   * Positions a call may use (prompt and reply), at most the backbone's own (core's `contextLength`, vLLM's
   * `--max-model-len`); a chat reply without `maxTokens` runs to it. Default: the backbone's.
   */
  contextLength?: number;
  /**
   * Keys' and values' type of `.gguf` models converted on load (core's `ggufKvCache`): `float16` (default, llama.cpp's
   * default cache type: long contexts step faster) or `float32` (exact against llama.cpp's F32 cache).
   */
  ggufKvCache?: 'float32' | 'float16';
  /**
   * Whether CPU sessions are created from their optimized form with prepacked weights, saved in the cache the first
   * time (core's `sessionCache`): default for models whose decode step reads at least 64 MiB; false: never.
   */
  sessionCache?: boolean;
  /**
   * Prompts through 8-bit integer products (core's `int8Prompts`) on models whose products are block-quantized (GGUF
   * conversions, `reasonplug quantize` output): prefill about twice as fast on the CPU, for about a byte a weight more
   * memory and an int8 rounding of the prompt; steps unchanged. Default false.
   */
  int8Prompts?: boolean;
  /**
   * Speculative decoding by prompt lookup (core's `promptLookup`): a call running alone drafts its next tokens from
   * its own prompt and reply and keeps them as far as the model writes them itself, so replies are unchanged and
   * those that quote their context (retrieval answers, extraction, edits) take fewer steps. true: the defaults.
   */
  promptLookup?: boolean | { draftTokens?: number; maxNgram?: number; minNgram?: number };
  /**
   * Speculative decoding with a draft model (core's `draftModel`, llama.cpp's `--model-draft`): a small model with the
   * backbone's tokenizer (same family) drafts a call's next tokens while it runs alone, kept as far as the backbone
   * writes them itself, so replies are unchanged. A model reference as `backbone` takes, or `{ model, draftTokens,
   * adaptive, minProbability, dtype }`.
   */
  draftModel?: string | { model: string; draftTokens?: number; adaptive?: boolean; minProbability?: number; dtype?: string };
  /**
   * Milliseconds each call may run once it has its place among the model's generations (`maxConcurrency`), as
   * ChatOpenAI's `timeout` counts per request: the generation stops then. A call's own `timeout` (LangChain's call
   * option) applies beside it and, as LangChain's RunnableConfig.timeout, covers the whole call, the wait included.
   * At most 2^31-1 (about 24.8 days, the longest timer Node sets); unset: no limit.
   */
  timeout?: number;
  /**
   * Taken, as ChatOpenAI's (`new ChatOpenAI({ streaming: true })`), and of no effect: these models stream every reply
   * to callbacks token by token, invoked or streamed, so there is nothing to turn on.
   */
  streaming?: boolean;
  /**
   * Refused: LangChain's retry of remote calls. A local engine fails the same way on every try (invalid options, a
   * broken constraint, a closed engine), so retries would only delay the error; `model.withRetry()` retries a runnable.
   */
  maxRetries?: never;
  /** Refused, as `maxRetries`. */
  onFailedAttempt?: never;
}

/** How a chat model renders a conversation and reads its reply: defaults of `ChatReasoner`, overridable per call. */
export interface ChatCallOptions {
  /**
   * Variables for the chat template beside the messages, as vLLM's and llama.cpp's `chat_template_kwargs`
   * (Qwen3's `{ enable_thinking: false }`); a call's keys override the model's.
   */
  chatTemplateKwargs?: Record<string, unknown>;
  /**
   * `auto` (the default): a reply's `<think>…</think>` thought comes apart, as `additional_kwargs.reasoning_content`
   * (as ChatOpenAI reads it from vLLM or llama.cpp); `none` leaves it in the content.
   */
  reasoningFormat?: 'auto' | 'none';
  /**
   * Tokens the reply's thought may take (vLLM's `thinking_token_budget`): once spent, the engine writes the closing
   * tag and the model answers. Default: no limit; a call's value overrides the model's.
   */
  thinkingBudget?: number;
}

/** What `ChatReasoner.create` takes: the model options, the chat defaults, and a chat template for backbones without one. */
export interface ChatModelOptions extends ModelOptions, ChatCallOptions {
  /** A jinja chat template that replaces (or stands in for) the one in the backbone's tokenizer_config.json. */
  chatTemplate?: string;
  /**
   * How the model writes tool calls: `<tool_call>` blocks (`hermes`), Llama 3's JSON object (`json`), Mistral's
   * `[TOOL_CALLS]` list (`mistral`), its `[TOOL_CALLS]name[ARGS]` calls (`mistral-args`), Granite's `<|tool_call|>` list
   * (`granite`), DeepSeek's fenced calls (`deepseek`), Cohere's `<|START_ACTION|>` list (`command-r`), Command R+'s
   * `Action:` and ```json list (`command-r-plus`), gpt-oss's commentary messages to `functions.<name>` (`harmony`),
   * Qwen3-Coder's `<function=…>`/`<parameter=…>` tags (`qwen-xml`), GLM-4.5's `<arg_key>`/`<arg_value>` tags (`glm`), or a JSON reply with the tools described in the system message (`generic`); default: as its chat template renders them, `generic` where it
   * renders none.
   */
  toolCallSyntax?: ToolCallSyntax;
}

/** Per-call options of reasoner models (`model.withConfig({ reasoners: [{ name: 'math', weight: 0.8 }] })`), besides LangChain's own. */
export interface ReasonerCallOptions extends GenerationOptions {
  /**
   * The reasoners taking part in this call, by name, among those loaded; `[]` runs the backbone alone.
   * Default: every loaded reasoner with its default weight.
   */
  reasoners?: { name: string; weight?: ReasonerWeight }[];
  /**
   * The structure the reply must have, enforced token by token (core's `responseFormat`): `json_schema`,
   * `json_object`, `grammar`, `regex` or `tool_calls`. `withStructuredOutput` and `bindTools` set it.
   */
  responseFormat?: ResponseFormat;
  /**
   * The reply's expected text (OpenAI's Predicted Outputs, core's `prediction`): ChatOpenAI's shape
   * (`{ type: 'content', content }`, the content a string or text parts) or a string. Where the reply's last tokens
   * occur in it, the tokens after them are drafted and checked in one step; the reply is what it is without.
   */
  prediction?: string | { type: 'content'; content: string | { type: 'text'; text: string }[] };
}

/**
 * OpenAI's `response_format` (ChatOpenAI's call option, which LangChain's `createAgent` passes a chat model for its
 * provider strategy): `json_schema` with the schema under `json_schema.schema`, `json_object`, or `text` (none). Its
 * `name`, `description` and `strict` are not read: the reply follows the schema whatever `strict` says.
 */
export type OpenAIResponseFormat =
  | {
      type: 'json_schema';
      json_schema: {
        schema?: Record<string, unknown> | boolean;
        /** Not read (the format's name, as OpenAI takes it). */
        name?: string;
        /** Not read. */
        description?: string;
        /** Not read: the reply follows the schema either way. */
        strict?: boolean | null;
      };
    }
  | { type: 'json_object' }
  | { type: 'text' };
