/**
 * A backbone and its reasoners loaded once into one engine, with the model's default settings. Every call of a
 * model, and of the `withConfig` bindings made from it, runs here; concurrent calls share the engine's running batch.
 */
import type { MessageContent, UsageMetadata } from '@langchain/core/messages';
import type { ModelProfile } from '@langchain/core/language_models/profile';
import { describeBackbone, type BackboneInfo } from './backbone.js';
import { Engine, TextTokenizer, fusionModes, resolveModelPath, type EngineOptions, type FusionMode, type GenerationResult, type ResponseFormat, type StreamOptions } from './core.js';
import { ReasonerOptionsError, UnknownReasonerError } from './errors.js';
import {
  CALL_FIELDS_ELSEWHERE,
  CallOptionsSchema,
  parseOptions,
  splitOptions,
  type GenerationDefaults,
  type ParsedModelOptions,
} from './options.js';

/** A weight or weight schedule, as core takes it. */
type Weight = NonNullable<NonNullable<EngineOptions['reasoners']>[number]['weight']>;

/** A reasoner taking part in a call, with its weight for that call. */
export interface ActiveReasoner {
  name: string;
  weight: Weight;
}

/** What one call runs with. */
export interface CallPlan {
  /** Options for the engine, reasoners included (one call is one row: one response format). */
  engine: Omit<StreamOptions, 'signal' | 'responseFormat'> & { responseFormat?: ResponseFormat };
  /** The reasoners taking part, with their weights. */
  reasoners: ActiveReasoner[];
}

/**
 * What a model was loaded with, beside its models' paths, that changes its replies: the device, the graphs chosen, the
 * context, the KV cache type of converted GGUFs. (Threads, placement, prefix and session caches, and speculative
 * decoding change how fast a reply comes, not what it is.)
 */
type LoadedAs = Pick<ParsedModelOptions, 'device' | 'dtype' | 'contextLength' | 'ggufKvCache'>;

/** The loaded models of a reasoner model. */
export class ReasonerRuntime {
  private loadedTokenizer: Promise<TextTokenizer | undefined> | undefined;

  private constructor(
    readonly engine: Engine,
    readonly backbone: BackboneInfo,
    /** The graph chosen of each reasoner (its `dtype` at creation, if given), in load order. */
    private readonly reasonerDtypes: readonly (string | undefined)[],
    private readonly defaults: GenerationDefaults,
    private readonly loadedAs: LoadedAs,
    /**
     * Milliseconds each call may generate, if limited (`timeout` at creation): counted from its turn (see `takeTurn`),
     * as ChatOpenAI's `timeout` is per request.
     */
    readonly timeout: number | undefined,
  ) {}

  /** Loads the backbone and reasoners of parsed model options into one engine. */
  static async load(options: ParsedModelOptions): Promise<ReasonerRuntime> {
    // (`streaming` is taken and changes nothing: every reply streams to callbacks)
    const { backbone, dtype, reasoners = [], projector, registry, onProgress, device, intraOpThreads, placement, cacheDir, prefixCacheBytes, contextLength, ggufKvCache, sessionCache, int8Prompts, promptLookup, draftModel, timeout, streaming: _, ...defaults } = options;
    // The backbone is resolved here (a registry reference becomes a pulled module directory) because its
    // directory also serves the chat template; the engine resolves the other modules itself.
    const backbonePath = await resolveModelPath(backbone, onProgress ? { ...registry, onProgress } : (registry ?? {}), ggufKvCache ? { kvCache: ggufKvCache } : undefined);
    const engine = await Engine.load({
      model: backbonePath,
      ...(dtype ? { dtype } : {}),
      ...(projector ? { projector } : {}),
      ...(registry ? { registry } : {}),
      ...(onProgress ? { onProgress } : {}),
      reasoners: reasoners.map((r) => ({ model: r.module, ...(r.name ? { name: r.name } : {}), ...(r.weight !== undefined ? { weight: r.weight } : {}), ...(r.dtype ? { dtype: r.dtype } : {}) })),
      ...(defaults.mode ? { mode: defaults.mode } : {}),
      ...(device ? { device } : {}),
      ...(intraOpThreads ? { intraOpThreads } : {}),
      ...(placement ? { placement } : {}),
      ...(cacheDir ? { cacheDir } : {}),
      ...(prefixCacheBytes !== undefined ? { prefixCacheBytes } : {}),
      ...(contextLength !== undefined ? { contextLength } : {}),
      ...(ggufKvCache ? { ggufKvCache } : {}),
      ...(sessionCache !== undefined ? { sessionCache } : {}),
      ...(int8Prompts !== undefined ? { int8Prompts } : {}),
      ...(promptLookup ? { promptLookup } : {}),
      ...(draftModel ? { draftModel } : {}),
    });
    try {
      const info = await describeBackbone(backbonePath, engine.info);
      const dtypes = reasoners.map((r) => r.dtype);
      return new ReasonerRuntime(engine, info, dtypes, defaults, { device, dtype, contextLength, ggufKvCache }, timeout);
    } catch (err) {
      await engine.dispose();
      throw err;
    }
  }

  /** The backbone's tokenizer (loaded on first use: a plain LLM whose prompts the engine tokenizes needs none here). */
  tokenizer(): Promise<TextTokenizer | undefined> {
    const dir = this.backbone.tokenizerDir;
    this.loadedTokenizer ??= dir ? TextTokenizer.fromDirectory(dir) : Promise.resolve(undefined);
    return this.loadedTokenizer;
  }

  /**
   * How many tokens a message content (its text, and its text blocks) takes in the backbone's vocabulary, no
   * special tokens added; undefined without a tokenizer.
   */
  async countTokens(content: MessageContent): Promise<number | undefined> {
    const tokenizer = await this.tokenizer();
    if (!tokenizer) return undefined;
    const text = typeof content === 'string' ? content : content.map((b) => (b.type === 'text' && typeof b.text === 'string' ? b.text : '')).join('');
    return tokenizer.encode(text, false).length;
  }

  /** What LangChain's `profile` tells of every model here: context, structured output, no media. */
  profile(): ModelProfile {
    const context = this.engine.info.contextLength;
    return {
      ...(context !== undefined ? { maxInputTokens: context, maxOutputTokens: context } : {}),
      structuredOutput: true,
      imageInputs: false,
      audioInputs: false,
      videoInputs: false,
      pdfInputs: false,
      imageOutputs: false,
      audioOutputs: false,
      videoOutputs: false,
    };
  }

  /** Loaded reasoners with their default weights. */
  get reasoners(): ActiveReasoner[] {
    return this.engine.info.reasoners.map((r) => ({ name: r.name, weight: r.weight }));
  }

  /**
   * Validates the options of one call (LangChain's included, left to their readers; a key that spells one of this
   * package's options another way is refused by name rather than dropped) and merges them over the model's defaults. Throws
   * `ReasonerOptionsError` or `UnknownReasonerError`.
   */
  plan(callOptions: object = {}): CallPlan {
    const { reasoners: chosen, ...settings } = parseOptions(CallOptionsSchema, splitOptions(CallOptionsSchema, callOptions, CALL_FIELDS_ELSEWHERE).ours, 'call options');
    const loaded = this.reasoners;
    const reasoners = chosen
      ? chosen.map(({ name, weight }) => {
          const match = loaded.find((r) => r.name === name);
          if (!match) throw new UnknownReasonerError(name, loaded.map((r) => r.name));
          return { name, weight: weight ?? match.weight };
        })
      : loaded;
    return { engine: { ...this.defaults, ...settings, reasoners }, reasoners };
  }

  /**
   * A call's settings as tracing reports them (`invocationParams`, LangSmith's parameters), which LangChain asks for
   * before the run starts: the plan's where the call options are valid, else the call's own over the model's
   * defaults, unchecked, so that the run raises the error and callbacks (`handleLLMError`) see it.
   */
  tracedSettings(callOptions: object = {}): Record<string, unknown> {
    try {
      return this.plan(callOptions).engine;
    } catch (err) {
      if (!(err instanceof ReasonerOptionsError || err instanceof UnknownReasonerError)) throw err;
      return { ...this.defaults, ...splitOptions(CallOptionsSchema, callOptions, CALL_FIELDS_ELSEWHERE).ours };
    }
  }

  /**
   * What identifies this model, as LangChain's cache keys and tracers read it: backbone, reasoners with their default
   * weights, the load options that change replies (snake_case, as `model_name`), and the default settings. Each model
   * is named by what was loaded, not as given: a registry range (`acme/math@^1`) loads another version once one is
   * pushed, and a pulled module lies in a directory named by its manifest's digest.
   */
  identifyingParams(): Record<string, unknown> {
    const { device, dtype, contextLength, ggufKvCache } = this.loadedAs;
    return {
      model_name: this.backbone.name,
      backbone: this.backbone.path,
      ...(dtype ? { dtype } : {}),
      reasoners: this.engine.info.reasoners.map((r, i) => {
        const chosen = this.reasonerDtypes[i];
        return { name: r.name, module: r.modelPath, ...(chosen ? { dtype: chosen } : {}), weight: r.weight };
      }),
      mode: this.engine.info.mode,
      ...(this.engine.info.projector ? { projector: this.engine.info.projector.modelPath } : {}),
      device: device ?? 'cpu',
      ...(contextLength !== undefined ? { context_length: contextLength } : {}),
      ...(ggufKvCache ? { gguf_kv_cache: ggufKvCache } : {}),
      ...this.defaults,
    };
  }

  /** `usage_metadata` of a finished generation. */
  usage(result: GenerationResult): UsageMetadata {
    const { promptTokens, completionTokens, cachedPromptTokens } = result.usage;
    return {
      input_tokens: promptTokens,
      output_tokens: completionTokens,
      total_tokens: promptTokens + completionTokens,
      ...(cachedPromptTokens ? { input_token_details: { cache_read: cachedPromptTokens } } : {}),
    };
  }

  /** `response_metadata` of a finished generation: who generated it, with which reasoners, why it stopped. */
  responseMetadata(plan: CallPlan, result: GenerationResult): Record<string, unknown> {
    return {
      model_provider: 'reasonplug',
      // The name under ChatOpenAI's key and under ChatOllama's (which LangChain's standard tests read): code written for either finds it.
      model_name: this.backbone.name,
      model: this.backbone.name,
      backbone: { name: this.backbone.name, ...(this.backbone.version ? { version: this.backbone.version } : {}), path: this.backbone.path },
      ...this.fusionOf(plan),
      // OpenAI's words, as ChatOpenAI reports them: the end-of-sequence token is a 'stop' too.
      finish_reason: result.rows[0]!.finishReason === 'eos' ? 'stop' : result.rows[0]!.finishReason,
      ...(result.usage.latentSteps !== undefined
        ? {
            latent: {
              policy: plan.engine.latent ?? 'marker',
              steps: result.usage.latentSteps,
              ...(result.usage.reasoningTokensSaved !== undefined ? { reasoning_tokens_saved: result.usage.reasoningTokensSaved } : {}),
            },
          }
        : {}),
      timing: { prefill_ms: result.timing.prefillMs, ms_per_token: result.timing.msPerToken, decode_steps: result.timing.decodeSteps, total_ms: result.timing.totalMs },
    };
  }

  /**
   * How the call fused: the backbone's mode, and each reasoner's beside its weight (a mode the call or the model gives
   * applies to every model; else each reasoner fuses in the one its manifest declares, see core's `fusionModes`).
   */
  private fusionOf(plan: CallPlan): { reasoners: (ActiveReasoner & { mode: FusionMode })[]; mode: FusionMode } {
    const declared = new Map(this.engine.info.reasoners.map((r) => [r.name, r.mode]));
    const modes = fusionModes(
      plan.engine.mode,
      plan.reasoners.map((r) => ({ declared: declared.get(r.name), weighted: r.weight !== 0 })),
    );
    return { reasoners: plan.reasoners.map((r, i) => ({ ...r, mode: modes.reasoners[i]! })), mode: modes.backbone };
  }

  /** Stops the engine's workers; later calls fail. */
  dispose(): Promise<void> {
    return this.engine.dispose();
  }
}
