/**
 * `ReasonerLLM`: a backbone composed with reasoner modules as a LangChain text-completion model. The prompt is
 * tokenized as text (the tokenizer adds BOS where it should); no chat template is involved.
 */
import type { CallbackManagerForLLMRun } from '@langchain/core/callbacks/manager';
import { LLM, type BaseLLMCallOptions, type BaseLLMParams } from '@langchain/core/language_models/llms';
import type { AIMessageChunk, MessageContent } from '@langchain/core/messages';
import type { ModelProfile } from '@langchain/core/language_models/profile';
import { GenerationChunk, type LLMResult } from '@langchain/core/outputs';
import { generateChunks } from './generation.js';
import { LANGCHAIN_MODEL_FIELDS, ModelOptionsSchema, parseOptions, splitOptions } from './options.js';
import type { ModelOptions, ReasonerCallOptions } from './option-types.js';
import { ReasonerRuntime } from './runtime.js';
import { ReasonerOptionsError } from './errors.js';

/** Call options of `ReasonerLLM`: LangChain's and the reasoner options. */
export interface ReasonerLLMCallOptions extends BaseLLMCallOptions, ReasonerCallOptions {
  /**
   * Fill-in-the-middle: the code after the insertion, the prompt being the code before it (code models whose
   * vocabulary has FIM tokens, such as Qwen2.5-Coder's `<|fim_prefix|>`, `<|fim_suffix|>` and `<|fim_middle|>`).
   */
  suffix?: string;
}

/** What `ReasonerLLM.create` takes: the module options and defaults, and LangChain's model parameters. */
export type ReasonerLLMOptions = ModelOptions & BaseLLMParams;

/**
 * A text-completion model over a backbone and reasoner modules loaded once into one engine.
 *
 * ```ts
 * const llm = await ReasonerLLM.create({ backbone: './stories260K', reasoners: [{ module: './happy-r' }], maxTokens: 60 });
 * for await (const text of await llm.stream('Once upon a time')) process.stdout.write(text);
 * await llm.dispose();
 * ```
 */
export class ReasonerLLM extends LLM<ReasonerLLMCallOptions> {
  static override lc_name(): string {
    return 'ReasonerLLM';
  }

  private constructor(
    private readonly runtime: ReasonerRuntime,
    fields: BaseLLMParams,
  ) {
    super(fields);
  }

  /**
   * Loads the backbone and reasoners (each a local path or a reference, pulled where needed: see `ModelOptions`)
   * into one engine. Throws `ReasonerOptionsError` for invalid options.
   */
  static async create(options: ReasonerLLMOptions): Promise<ReasonerLLM> {
    const { ours, rest } = splitOptions(ModelOptionsSchema, options, LANGCHAIN_MODEL_FIELDS);
    const runtime = await ReasonerRuntime.load(parseOptions(ModelOptionsSchema, ours, 'ReasonerLLM.create'));
    try {
      return new ReasonerLLM(runtime, rest);
    } catch (err) {
      // (LangChain's own checks, e.g. maxConcurrency: the engine loaded for nothing is not left running)
      await runtime.dispose();
      throw err;
    }
  }

  _llmType(): string {
    return 'reasonplug';
  }

  /**
   * Streams text pieces, then one empty chunk whose `generationInfo` holds the response metadata (backbone,
   * reasoners, finish reason, timing) and `usage_metadata`.
   */
  override _streamResponseChunks(prompt: string, options: this['ParsedCallOptions'], runManager?: CallbackManagerForLLMRun): AsyncGenerator<GenerationChunk> {
    return this.chunks(prompt, 0, options, runManager);
  }

  /** One completion, through the stream so that callbacks see every token. */
  override async _call(prompt: string, options: this['ParsedCallOptions'], runManager?: CallbackManagerForLLMRun): Promise<string> {
    return (await this.complete(prompt, 0, options, runManager)).text;
  }

  /** Completes the prompts concurrently (they share the engine's running batch, up to `maxConcurrency` at once) and sums their usage. */
  override async _generate(prompts: string[], options: this['ParsedCallOptions'], runManager?: CallbackManagerForLLMRun): Promise<LLMResult> {
    const generations: GenerationChunk[][] = [];
    const tokenUsage = { promptTokens: 0, completionTokens: 0, totalTokens: 0 };
    const completed = await Promise.all(prompts.map((prompt, i) => this.complete(prompt, i, options, runManager)));
    for (const generation of completed) {
      const usage = generation.generationInfo!.usage_metadata as AIMessageChunk['usage_metadata'] & object;
      tokenUsage.promptTokens += usage.input_tokens;
      tokenUsage.completionTokens += usage.output_tokens;
      tokenUsage.totalTokens += usage.total_tokens;
      generations.push([generation]);
    }
    return { generations, llmOutput: { tokenUsage } };
  }

  /**
   * The settings one call runs with, for tracing. Never throws: LangChain asks before the run starts, so invalid
   * call options are reported as given and the run raises their error, where callbacks see it.
   */
  override invocationParams(options?: this['ParsedCallOptions']): Record<string, unknown> {
    return { model_name: this.runtime.backbone.name, ...this.runtime.tracedSettings(options) };
  }

  /** Backbone, reasoners with default weights, device and defaults: what tells two models apart. */
  override _identifyingParams(): Record<string, unknown> {
    return this.runtime.identifyingParams();
  }

  /** Tokens of a text in the backbone's vocabulary (exact, offline), no special tokens added. */
  override async getNumTokens(content: MessageContent): Promise<number> {
    return (await this.runtime.countTokens(content)) ?? super.getNumTokens(content);
  }

  /** What the model can do, for LangChain's agents: the backbone's context, structured output. */
  override get profile(): ModelProfile {
    return this.runtime.profile();
  }

  /** Stops the engine's workers and frees the models; later calls fail. */
  dispose(): Promise<void> {
    return this.runtime.dispose();
  }

  private async complete(prompt: string, index: number, options: this['ParsedCallOptions'], runManager?: CallbackManagerForLLMRun): Promise<GenerationChunk> {
    let generation = new GenerationChunk({ text: '' });
    for await (const chunk of this.chunks(prompt, index, options, runManager)) generation = generation.concat(chunk);
    return generation;
  }

  /**
   * The chunks of the completion of `prompt`, each reported to callbacks as the `index`th prompt's (the prompts of one
   * `generate` share its run), the last one with the usage too, as LangChain's OpenAI models report theirs.
   */
  private async *chunks(prompt: string, index: number, options: this['ParsedCallOptions'], runManager?: CallbackManagerForLLMRun): AsyncGenerator<GenerationChunk> {
    const plan = this.runtime.plan(options);
    const { suffix } = options;
    if (suffix !== undefined && typeof suffix !== 'string') throw new ReasonerOptionsError('call options', [{ path: 'suffix', message: `must be a string, not ${JSON.stringify(suffix)}` }]);
    const input = { prompt, ...(suffix !== undefined ? { suffix } : {}) };
    const call = { input, plan, options: plan.engine, signal: options.signal, runManager, indices: { prompt: index, completion: 0 } };
    yield* generateChunks(this.runtime, this.caller, call, {
      piece: (text) => new GenerationChunk({ text }),
      last: (usage_metadata, response_metadata) => new GenerationChunk({ text: '', generationInfo: { ...response_metadata, usage_metadata } }),
    });
  }
}
