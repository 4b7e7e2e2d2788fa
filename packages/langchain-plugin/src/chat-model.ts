/**
 * `ChatReasoner`: a backbone composed with reasoner modules as a LangChain chat model, for LCEL chains, agents
 * and LangGraph nodes. Conversations go through the backbone's chat template; replies stream as `AIMessageChunk`s
 * (text, then tool calls parsed from what the model wrote, then one chunk with usage and response metadata), and
 * `invoke` returns the whole reply as an `AIMessage`, as ChatOpenAI's and ChatOllama's do.
 */
import type { CallbackManagerForLLMRun } from '@langchain/core/callbacks/manager';
import type { BaseLanguageModelInput, StructuredOutputMethodOptions, ToolDefinition } from '@langchain/core/language_models/base';
import {
  BaseChatModel,
  type BaseChatModelCallOptions,
  type BaseChatModelParams,
  type BindToolsInput,
  type LangSmithParams,
} from '@langchain/core/language_models/chat_models';
import { AIMessage, AIMessageChunk, type BaseMessage, type MessageContent } from '@langchain/core/messages';
import type { ModelProfile } from '@langchain/core/language_models/profile';
import { ChatGenerationChunk, type ChatResult, type LLMResult } from '@langchain/core/outputs';
import type { Runnable } from '@langchain/core/runnables';
import { convertToOpenAITool } from '@langchain/core/utils/function_calling';
import type { SerializableSchema } from '@langchain/core/utils/standard_schema';
import type { InteropZodType } from '@langchain/core/utils/types';
import { ChatPrompter } from './chat-prompt.js';
import { ReasonerOptionsError, ToolsNotSupportedError } from './errors.js';
import { generateChunks } from './generation.js';
import {
  ChatCallOptionsSchema,
  ChatModelOptionsSchema,
  LANGCHAIN_MODEL_FIELDS,
  parseOptions,
  readResponseFormat,
  splitOptions,
} from './options.js';
import type { ChatCallOptions, ChatModelOptions, OpenAIResponseFormat, ReasonerCallOptions } from './option-types.js';
import { ReasonerRuntime } from './runtime.js';
import { ReplySplitter, type SplitText } from './reply-splitter.js';
import { structuredOutput } from './structured-output.js';
import { isHarmonyTemplate, keptTokens, reasoningTagsOf, replyFormat, replyParsing, thinkingBudgetFor, thoughtFirst, toolCallSyntaxOf, toolsRead, toolsShown, type ResponseFormat, type ToolCallSyntax, type ToolChoice } from './core.js';

/** Call options of `ChatReasoner`: LangChain's, the reasoner options, and bound tools. */
export interface ChatReasonerCallOptions extends BaseChatModelCallOptions, ReasonerCallOptions, ChatCallOptions {
  /** Tools rendered into the chat template; `bindTools` sets them. */
  tools?: BindToolsInput[];
  /**
   * Whether a reply may make several tool calls (default true, as OpenAI's option of this name): false admits
   * one call at most.
   */
  parallel_tool_calls?: boolean;
  /**
   * OpenAI's name and shape of `responseFormat` (`{ type: 'json_schema', json_schema: { schema } }`, `json_object`,
   * `text`), as ChatOpenAI takes it and `createAgent` passes it for a structured answer; one of the two at most.
   */
  response_format?: OpenAIResponseFormat;
}

/** What `ChatReasoner.create` takes: the module options and defaults, and LangChain's model parameters. */
export type ChatReasonerOptions = ChatModelOptions & BaseChatModelParams;

type TokenUsage = { promptTokens: number; completionTokens: number; totalTokens: number };

/**
 * A chat model over a backbone and reasoner modules loaded once into one engine.
 *
 * ```ts
 * const model = await ChatReasoner.create({ backbone: './qwen', reasoners: [{ module: './math-r', weight: 0.8 }] });
 * await model.withConfig({ reasoners: [{ name: 'math-r', weight: 1.2 }], temperature: 0.7, seed: 1 }).invoke('2+2?');
 * await model.dispose();
 * ```
 */
export class ChatReasoner extends BaseChatModel<ChatReasonerCallOptions, AIMessageChunk> {
  static override lc_name(): string {
    return 'ChatReasoner';
  }

  private constructor(
    private readonly runtime: ReasonerRuntime,
    private readonly prompter: ChatPrompter,
    /** The template and tool-call syntax given at creation, if any (part of what identifies the model). */
    private readonly given: Pick<ChatModelOptions, 'chatTemplate' | 'toolCallSyntax'>,
    /** Template variables and reasoning format given at creation (calls override them). */
    private readonly chatDefaults: ChatCallOptions,
    /** How the model writes tool calls. */
    private readonly toolCallSyntax: ToolCallSyntax,
    fields: BaseChatModelParams,
  ) {
    super(fields);
  }

  /**
   * Loads the backbone and reasoners (each a local path or a reference, pulled where needed: see `ModelOptions`)
   * into one engine. Throws `ReasonerOptionsError` for invalid options and `ChatTemplateError` when the backbone has no
   * chat template and none is given, or when the template does not parse.
   */
  static async create(options: ChatReasonerOptions): Promise<ChatReasoner> {
    const { ours, rest } = splitOptions(ChatModelOptionsSchema, options, LANGCHAIN_MODEL_FIELDS);
    const { chatTemplate, chatTemplateKwargs, reasoningFormat, thinkingBudget, toolCallSyntax, ...modelOptions } = parseOptions(ChatModelOptionsSchema, ours, 'ChatReasoner.create');
    // Before the engine loads: a template that does not parse is refused at once, not after loading the models.
    if (chatTemplate !== undefined) ChatPrompter.checkTemplate(chatTemplate);
    const runtime = await ReasonerRuntime.load(modelOptions);
    const chatDefaults = {
      ...(chatTemplateKwargs ? { chatTemplateKwargs } : {}),
      ...(reasoningFormat ? { reasoningFormat } : {}),
      ...(thinkingBudget !== undefined ? { thinkingBudget } : {}),
    };
    try {
      const prompter = ChatPrompter.load(runtime.backbone, await runtime.tokenizer(), chatTemplate);
      return new ChatReasoner(runtime, prompter, { chatTemplate, toolCallSyntax }, chatDefaults, toolCallSyntax ?? toolCallSyntaxOf(prompter.toolsTemplate, prompter.rendersTools), rest);
    } catch (err) {
      await runtime.dispose();
      throw err;
    }
  }

  _llmType(): string {
    return 'reasonplug';
  }

  /**
   * Binds tools: they are rendered into the chat template on every call (or, where it renders none, described in
   * the system message, the reply a JSON object: the `generic` syntax), and the calls the model writes come back as
   * `tool_calls`, always well-formed (a bound tool, arguments valid against its schema): with `tool_choice` `auto`
   * (the default) the model may answer or call; `required` (or `any`) forces one or more calls, a tool's name one
   * call of it; `none` forbids calls: the template still shows the tools (a `generic` prompt does not describe them)
   * and the reply is free text, read for no call. `parallel_tool_calls: false` admits one call at most. Throws
   * `ToolsNotSupportedError` when a `toolCallSyntax` given at creation needs a template that renders tools and this
   * one does not.
   */
  override bindTools(
    tools: BindToolsInput[],
    kwargs?: Partial<ChatReasonerCallOptions>,
  ): Runnable<BaseLanguageModelInput, AIMessageChunk, ChatReasonerCallOptions> {
    this.checkToolsRendered();
    return this.withConfig({ tools: tools.map((t) => convertToOpenAITool(t)), ...kwargs });
  }

  override async *_streamResponseChunks(
    messages: BaseMessage[],
    options: this['ParsedCallOptions'],
    runManager?: CallbackManagerForLLMRun,
  ): AsyncGenerator<ChatGenerationChunk> {
    const plan = this.runtime.plan(readResponseFormat(options));
    const chat = this.chatOptions(options);
    const tools = this.toolsFor(options);
    // (under `none` the tools are shown, as OpenAI's and the server's are, but no call is held to them or read)
    const toolCalls = tools && this.toolCallFormat(options, tools);
    const calls = toolCalls && { choice: toolCalls.choice, parallel: toolCalls.parallel ?? true };
    const shown = toolsShown(this.toolCallSyntax === 'generic', tools, calls, plan.engine.responseFormat);
    const prompt = this.prompter.render(messages, shown, chat.chatTemplateKwargs);
    // A structure of the call's own (withStructuredOutput's JSON, createAgent's responseFormat) beside the tools: forced
    // calls win, under `auto` the reply is calls or the answer in that structure (as the server has it).
    const responseFormat = replyFormat(plan.engine.responseFormat, toolCalls);
    const parsing = replyParsing({
      format: chat.reasoningFormat ?? 'auto',
      chatTemplate: this.prompter.chatTemplate,
      prompt: prompt.text,
      constrained: responseFormat !== undefined,
      ...(toolCalls ? toolsRead(this.toolCallSyntax, responseFormat) : {}),
      toolSpecs: tools?.map((t) => ({ name: t.function.name, parameters: t.function.parameters })),
    });
    const splitter = new ReplySplitter(parsing);
    const kept = keptTokens(parsing);
    // Without maxTokens a reply may run to the end of the context (where the engine stops a row), as ChatOpenAI's
    // and ChatOllama's do.
    const maxTokens = plan.engine.maxTokens ?? this.runtime.engine.info.contextLength;
    const engineOptions = {
      ...plan.engine,
      ...(responseFormat ? { responseFormat: thoughtFirst(responseFormat, parsing) } : {}),
      ...(maxTokens !== undefined ? { maxTokens } : {}),
      ...(kept.length ? { keepTokens: kept } : {}),
      ...(chat.thinkingBudget !== undefined ? { thinkingBudget: thinkingBudgetFor(chat.thinkingBudget, parsing, this.prompter.chatTemplate, prompt.text) } : {}),
    };
    let called = false;
    /** The chunk of a piece of the reply as the splitter gives it: content, thought, tool calls; none if empty. */
    const chunkOf = (split: SplitText) => {
      if (!split.reasoning && !split.content && split.toolCalls.length === 0) return undefined;
      called ||= split.toolCalls.length > 0;
      return new ChatGenerationChunk({
        text: split.content,
        message: new AIMessageChunk({
          content: split.content,
          tool_call_chunks: split.toolCalls,
          additional_kwargs: split.reasoning ? { reasoning_content: split.reasoning } : {},
        }),
      });
    };
    const call = { input: { promptIds: prompt.ids }, plan, options: engineOptions, signal: options.signal, runManager };
    yield* generateChunks(this.runtime, this.caller, call, {
      piece: (text) => chunkOf(splitter.push(text)),
      usage: (usage, result) => {
        const reasoning = splitter.reasoningTokens(result.rows[0]!.ids, (ids) => this.prompter.decode(ids));
        return reasoning ? { ...usage, output_token_details: { ...usage.output_token_details, reasoning } } : usage;
      },
      rest: (result) => chunkOf(splitter.end(result.rows[0]!.finishReason === 'length')),
      last: (usage_metadata, response_metadata) => {
        // A reply that made calls ends in 'tool_calls', as ChatOpenAI's do; one cut short stays 'length'.
        if (called && response_metadata.finish_reason === 'stop') response_metadata.finish_reason = 'tool_calls';
        return new ChatGenerationChunk({ text: '', message: new AIMessageChunk({ content: '', usage_metadata, response_metadata }) });
      },
    });
  }

  /**
   * Generates through the stream, so callbacks see every token here too, and returns the whole reply as an
   * `AIMessage` (a chunk's `contentBlocks`, and so the content of `outputVersion: 'v1'`, leave its tool calls out).
   */
  override async _generate(
    messages: BaseMessage[],
    options: this['ParsedCallOptions'],
    runManager?: CallbackManagerForLLMRun,
  ): Promise<ChatResult> {
    let whole = new AIMessageChunk({ content: '' });
    for await (const chunk of this._streamResponseChunks(messages, options, runManager)) whole = whole.concat(chunk.message as AIMessageChunk);
    const { content, additional_kwargs, tool_calls, invalid_tool_calls, usage_metadata, response_metadata, id } = whole;
    const message = new AIMessage({ content, additional_kwargs, tool_calls, invalid_tool_calls, usage_metadata, response_metadata, id });
    const usage = usage_metadata!;
    return {
      generations: [{ text: message.text, message }],
      llmOutput: { tokenUsage: { promptTokens: usage.input_tokens, completionTokens: usage.output_tokens, totalTokens: usage.total_tokens } },
    };
  }

  /** Sums token usage over the conversations of one `generate` call. */
  override _combineLLMOutput(...outputs: LLMResult['llmOutput'][]): LLMResult['llmOutput'] {
    const tokenUsage: TokenUsage = { promptTokens: 0, completionTokens: 0, totalTokens: 0 };
    for (const output of outputs) {
      const u = output?.tokenUsage as TokenUsage | undefined;
      if (!u) continue;
      tokenUsage.promptTokens += u.promptTokens;
      tokenUsage.completionTokens += u.completionTokens;
      tokenUsage.totalTokens += u.totalTokens;
    }
    return { tokenUsage };
  }

  /**
   * The settings one call runs with, for tracing. Never throws: LangChain asks before the run starts, so invalid
   * call options are reported as given and the run raises their error, where callbacks see it.
   */
  override invocationParams(options?: this['ParsedCallOptions']): Record<string, unknown> {
    const tools = options && this.toolDefinitions(options);
    return { model_name: this.runtime.backbone.name, ...this.tracedSettings(options), ...(tools ? { tools } : {}) };
  }

  /** LangSmith's parameters of a call (never throws, as `invocationParams`). */
  override getLsParams(options: this['ParsedCallOptions']): LangSmithParams {
    const { temperature, maxTokens, stop } = this.tracedSettings(options);
    return {
      ls_provider: 'reasonplug',
      ls_model_name: this.runtime.backbone.name,
      ls_model_type: 'chat',
      ls_temperature: typeof temperature === 'number' ? temperature : 0,
      ...(typeof maxTokens === 'number' ? { ls_max_tokens: maxTokens } : {}),
      // Always there, as BaseChatModel's own, even where no stop is set.
      ls_stop: Array.isArray(stop) ? (stop as string[]) : undefined,
    };
  }

  /**
   * Backbone, reasoners with default weights, the load options that change replies, defaults, chat template, tool-call
   * syntax and chat defaults: what tells two models apart (LangChain's cache keys are made of it).
   */
  override _identifyingParams(): Record<string, unknown> {
    const { chatTemplateKwargs, reasoningFormat, thinkingBudget } = this.chatDefaults;
    const { chatTemplate, toolCallSyntax } = this.given;
    return {
      ...this.runtime.identifyingParams(),
      ...(chatTemplate ? { chat_template: chatTemplate } : {}),
      ...(toolCallSyntax ? { tool_call_syntax: toolCallSyntax } : {}),
      ...(chatTemplateKwargs ? { chat_template_kwargs: chatTemplateKwargs } : {}),
      ...(reasoningFormat ? { reasoning_format: reasoningFormat } : {}),
      ...(thinkingBudget !== undefined ? { thinking_token_budget: thinkingBudget } : {}),
    };
  }

  /**
   * A runnable that answers in `schema`'s structure (zod, standard schema or JSON Schema), enforced token by token:
   * `method` `jsonSchema` (default), `jsonMode` or `functionCalling`; `includeRaw` adds the message. Typed as
   * LangChain's providers type it (ChatOpenAI's, ChatOllama's): the parsed answer is the schema's output type.
   */
  override withStructuredOutput<RunOutput extends Record<string, any> = Record<string, any>>(
    schema: InteropZodType<RunOutput> | SerializableSchema<RunOutput> | Record<string, any>,
    config?: StructuredOutputMethodOptions<false>,
  ): Runnable<BaseLanguageModelInput, RunOutput>;
  override withStructuredOutput<RunOutput extends Record<string, any> = Record<string, any>>(
    schema: InteropZodType<RunOutput> | SerializableSchema<RunOutput> | Record<string, any>,
    config?: StructuredOutputMethodOptions<true>,
  ): Runnable<BaseLanguageModelInput, { raw: BaseMessage; parsed: RunOutput }>;
  override withStructuredOutput<RunOutput extends Record<string, any> = Record<string, any>>(
    schema: InteropZodType<RunOutput> | SerializableSchema<RunOutput> | Record<string, any>,
    config?: StructuredOutputMethodOptions<boolean>,
  ): Runnable<BaseLanguageModelInput, RunOutput> | Runnable<BaseLanguageModelInput, { raw: BaseMessage; parsed: RunOutput }>;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- the implementation of the overloads above
  override withStructuredOutput(schema: any, config?: StructuredOutputMethodOptions<boolean>): any {
    return structuredOutput(this, schema, config);
  }

  /** Tokens of a message content in the backbone's vocabulary (exact, offline; `trimMessages` counts with it). */
  override async getNumTokens(content: MessageContent): Promise<number> {
    return (await this.runtime.countTokens(content)) ?? super.getNumTokens(content);
  }

  /**
   * What the model can do, for LangChain's agents (the summarization middleware reads `maxInputTokens`): the
   * backbone's context; tool calling and tool choice wherever tools can be bound (not where the template renders no
   * tools and the tool-call syntax is not `generic`, as `bindTools` then throws); reasoning output where the template
   * names thought tags.
   */
  override get profile(): ModelProfile {
    const tools = this.showsTools;
    return { ...this.runtime.profile(), toolCalling: tools, toolChoice: tools, reasoningOutput: reasoningTagsOf(this.prompter.chatTemplate) !== undefined || isHarmonyTemplate(this.prompter.chatTemplate) };
  }

  /** Stops the engine's workers and frees the models; later calls fail. */
  dispose(): Promise<void> {
    return this.runtime.dispose();
  }

  /** A call's settings for tracing, its `response_format` read as the run reads it (never throws, as `invocationParams`). */
  private tracedSettings(options?: this['ParsedCallOptions']): Record<string, unknown> {
    try {
      return this.runtime.tracedSettings(options && readResponseFormat(options));
    } catch (err) {
      if (!(err instanceof ReasonerOptionsError)) throw err;
      return this.runtime.tracedSettings(options);
    }
  }

  /** A call's template variables (over the model's) and reasoning format; throws `ReasonerOptionsError` for invalid ones. */
  private chatOptions(options: this['ParsedCallOptions']): ChatCallOptions {
    const call = parseOptions(ChatCallOptionsSchema, splitOptions(ChatCallOptionsSchema, options).ours, 'call options');
    const kwargs = { ...this.chatDefaults.chatTemplateKwargs, ...call.chatTemplateKwargs };
    const reasoningFormat = call.reasoningFormat ?? this.chatDefaults.reasoningFormat;
    const thinkingBudget = call.thinkingBudget ?? this.chatDefaults.thinkingBudget;
    return {
      ...(Object.keys(kwargs).length ? { chatTemplateKwargs: kwargs } : {}),
      ...(reasoningFormat ? { reasoningFormat } : {}),
      ...(thinkingBudget !== undefined ? { thinkingBudget } : {}),
    };
  }

  /** The tools to render for a call, or undefined when none are bound; throws where they cannot be shown. */
  private toolsFor(options: this['ParsedCallOptions']): ToolDefinition[] | undefined {
    const tools = this.toolDefinitions(options);
    if (tools) this.checkToolsRendered();
    return tools;
  }

  /** A call's tools (shown under `tool_choice` `none` too), unchecked, or undefined when none are bound. */
  private toolDefinitions(options: this['ParsedCallOptions']): ToolDefinition[] | undefined {
    if (!options.tools?.length) return undefined;
    return options.tools.map((t) => convertToOpenAITool(t));
  }

  /** The constraint a call's tools and `tool_choice` put on the reply: none under `none`, which forbids calls. */
  private toolCallFormat(options: this['ParsedCallOptions'], tools: ToolDefinition[]): Extract<ResponseFormat, { type: 'tool_calls' }> | undefined {
    const choice = options.tool_choice as unknown;
    if (choice === 'none') return undefined;
    let toolChoice: ToolChoice;
    if (choice === undefined || choice === 'auto') toolChoice = 'auto';
    else if (choice === 'any' || choice === 'required') toolChoice = 'required';
    else if (typeof choice === 'string') toolChoice = { name: choice };
    else if (typeof (choice as { function?: { name?: unknown } }).function?.name === 'string') toolChoice = { name: (choice as { function: { name: string } }).function.name };
    else throw new ToolsNotSupportedError(`tool_choice ${JSON.stringify(choice)} is not understood: use auto, required, any, none or a tool's name`);
    const bound = tools.map((t) => t.function.name);
    if (typeof toolChoice === 'object' && !bound.includes(toolChoice.name)) {
      throw new ToolsNotSupportedError(`tool_choice names ${JSON.stringify(toolChoice.name)}, which is not a bound tool: name one of ${bound.join(', ')}, or use auto, required, any or none`);
    }
    return {
      type: 'tool_calls',
      tools: tools.map((t) => ({ name: t.function.name, parameters: (t.function.parameters ?? {}) as Record<string, unknown> })),
      choice: toolChoice,
      parallel: options.parallel_tool_calls ?? true,
      syntax: this.toolCallSyntax,
    };
  }

  /** Whether the model is shown tools: by its template, or in the system message (`generic`). */
  private get showsTools(): boolean {
    return this.toolCallSyntax === 'generic' || this.prompter.rendersTools;
  }

  private checkToolsRendered(): void {
    if (!this.showsTools) {
      throw new ToolsNotSupportedError(
        `the chat template of ${this.runtime.backbone.name} does not render tools, so they cannot be shown in the ${this.toolCallSyntax} syntax given as create({ toolCallSyntax }); ` +
          "leave toolCallSyntax unset (or 'generic') to describe them in the system message, or pass a template that renders them as create({ chatTemplate })",
      );
    }
  }
}
