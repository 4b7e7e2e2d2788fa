/**
 * Chat prompts: LangChain messages in the shape Hugging Face chat templates expect, rendered with the backbone's
 * template (or the one given) and tokenized by core's tokenizer.
 *
 * Rendering happens here rather than through the engine's `{ messages }` input because that input cannot carry
 * tools, and tools are part of what a template renders.
 */
import type { BaseMessage } from '@langchain/core/messages';
import type { ToolDefinition } from '@langchain/core/language_models/base';
import type { BackboneInfo } from './backbone.js';
import { cutAfterFinalMessage, TextTokenizer, type ChatMessage, type ToolsPrompt } from './core.js';
import { ChatTemplateError, UnsupportedMessageError } from './errors.js';

/**
 * Blocks of an AI message that the template gets another way or not at all: tool calls (v1's `tool_call`, Anthropic's
 * `tool_use`; the template renders `tool_calls`), a provider's server-side tool calls and their results (no local model
 * made them), and thoughts (`reasoning`, Anthropic's `thinking`, read into `reasoning_content`; a redacted one is unreadable).
 */
const AI_BLOCKS_ELSEWHERE: ReadonlySet<string> = new Set([
  'tool_call', 'tool_call_chunk', 'invalid_tool_call', 'tool_use',
  'server_tool_call', 'server_tool_call_chunk', 'server_tool_call_result',
  'reasoning', 'thinking', 'redacted_thinking',
]);

/** The text of a message; refuses content a text model cannot read (media, and tool or thought blocks outside AI messages). */
function textOf(message: BaseMessage): string {
  if (typeof message.content === 'string') return message.content;
  return message.content
    .flatMap((block) => {
      if (block.type === 'text' && typeof block.text === 'string') return [block.text];
      if (message.type === 'ai' && AI_BLOCKS_ELSEWHERE.has(block.type)) return [];
      throw new UnsupportedMessageError(`a ${message.type} message holds a "${block.type}" block; reasonplug models read text only`);
    })
    // (one text, the blocks a line apart, as vLLM and llama.cpp give a template the parts of a message)
    .join('\n');
}

type ContentBlock = Exclude<BaseMessage['content'], string>[number];

/**
 * An AI message's tool calls: its `tool_calls`, or, where it has none, the calls among its content blocks (v1's
 * `tool_call`, Anthropic's `tool_use`), as a history written by hand or by another library may hold them.
 */
function toolCallsOf(message: BaseMessage): { id?: string; name: string; args: unknown }[] {
  const calls = 'tool_calls' in message && Array.isArray(message.tool_calls) ? message.tool_calls : [];
  if (calls.length || typeof message.content === 'string') return calls;
  return message.content.flatMap((block: ContentBlock) => {
    if (typeof block.name !== 'string') return [];
    const id = typeof block.id === 'string' ? { id: block.id } : {};
    if (block.type === 'tool_call') return [{ ...id, name: block.name, args: block.args ?? {} }];
    if (block.type === 'tool_use') return [{ ...id, name: block.name, args: block.input ?? {} }];
    return [];
  });
}

/**
 * An AI message's thought, as this model (or an OpenAI-compatible server) gave it in `reasoning_content`, else its
 * `reasoning` (v1) or `thinking` (Anthropic's) blocks joined; templates that show or drop thoughts read it.
 */
function thoughtOf(message: BaseMessage): string | undefined {
  const given = message.additional_kwargs.reasoning_content;
  if (typeof given === 'string') return given;
  if (typeof message.content === 'string') return undefined;
  const parts = message.content.flatMap((block: ContentBlock) => {
    const text = block.type === 'reasoning' ? block.reasoning : block.type === 'thinking' ? block.thinking : undefined;
    return typeof text === 'string' ? [text] : [];
  });
  return parts.length ? parts.join('') : undefined;
}

/** One LangChain message as a chat template expects it (`role`, `content`, `tool_calls`, `tool_call_id`). */
export function toTemplateMessage(message: BaseMessage): ChatMessage {
  const content = textOf(message);
  switch (message.type) {
    case 'system':
      return { role: 'system', content };
    case 'human':
      return { role: 'user', content };
    case 'ai': {
      const calls = toolCallsOf(message);
      const thought = thoughtOf(message);
      return {
        role: 'assistant',
        content,
        ...(thought !== undefined ? { reasoning_content: thought } : {}),
        ...(calls.length
          ? { tool_calls: calls.map((c) => ({ id: c.id, type: 'function', function: { name: c.name, arguments: c.args } })) }
          : {}),
      };
    }
    case 'tool': {
      const { tool_call_id: id } = message as BaseMessage & { tool_call_id?: string };
      return { role: 'tool', content, ...(id ? { tool_call_id: id } : {}), ...(message.name ? { name: message.name } : {}) };
    }
    case 'generic':
      return { role: (message as BaseMessage & { role: string }).role, content };
    default:
      throw new UnsupportedMessageError(`cannot put a "${message.type}" message into a chat template`);
  }
}

/** Core's errors of a template: one that does not parse or refuses the messages, and one using what the renderer lacks. */
const TEMPLATE_ERRORS = new Set(['TokenizerError', 'ChatTemplateUnsupportedError']);

/** `fn`'s result; a template's failure (core's `TokenizerError`, its subclass) raised as `ChatTemplateError`. */
function asChatTemplateError<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    // (by name, as an error from the engine's worker thread keeps it; its subclass too: a construct the renderer lacks)
    if (TEMPLATE_ERRORS.has((err as Error).name)) throw new ChatTemplateError((err as Error).message, { cause: err });
    throw err;
  }
}

/** The tools a prompt shows: rendered by the template, or described in the system message (see `ChatTemplateOptions`). */
export type ShownTools = { tools?: ToolDefinition[]; toolsPrompt?: ToolsPrompt };

/** Renders conversations with one chat template. */
export class ChatPrompter {
  /** Whether the template shows tools to the model (rendering with a tool changes the text). */
  readonly rendersTools: boolean;

  private constructor(
    private readonly tokenizer: TextTokenizer,
    private readonly template: string | undefined,
  ) {
    this.rendersTools = tokenizer.rendersTools(template);
  }

  /** Parses a template given at creation before anything loads: throws `ChatTemplateError` when it does not parse. */
  static checkTemplate(template: string): void {
    asChatTemplateError(() => TextTokenizer.checkGivenTemplate(template));
  }

  /**
   * A prompter over the backbone's tokenizer, once there is a template to render with: `template` if given, else
   * the one in tokenizer_config.json (or chat_template.jinja). Throws `ChatTemplateError` when there is no
   * tokenizer or no template, or when the template does not parse (naming the file it came from).
   */
  static load(backbone: BackboneInfo, tokenizer: TextTokenizer | undefined, template: string | undefined): ChatPrompter {
    if (!tokenizer) {
      throw new ChatTemplateError(`${backbone.path} has no tokenizer.json beside it, so it cannot take chat messages; use ReasonerLLM with prompt ids`);
    }
    if (!template && !tokenizer.chatTemplate) {
      throw new ChatTemplateError(
        `the backbone ${backbone.name} has no chat template (its tokenizer_config.json has no chat_template): ` +
          'pass one as create({ chatTemplate }), or use ReasonerLLM for text completion',
      );
    }
    return asChatTemplateError(() => {
      tokenizer.checkChatTemplates(template);
      return new ChatPrompter(tokenizer, template);
    });
  }

  /** The template the prompts are rendered with. */
  get chatTemplate(): string {
    return this.template ?? this.tokenizer.chatTemplate!;
  }

  /** The template prompts with tools are rendered with: the model's tool-use one, where it names one. */
  get toolsTemplate(): string {
    return this.template ?? this.tokenizer.toolUseTemplate ?? this.tokenizer.chatTemplate!;
  }

  /**
   * A conversation rendered (`kwargs`: the template's own variables), and its ids: ending with the template's
   * generation prompt, or, when the last message is an AI message with text and no tool calls, ending where that
   * text does, so that the reply continues it (a prefilled answer, as Anthropic's and Ollama's models take one).
   * Throws `ChatTemplateError` when the template does not write that text as given. `tools`: the tools the template
   * renders, or, for one that renders none, those the system message describes (`toolsPrompt`, the `generic` syntax's).
   */
  render(messages: readonly BaseMessage[], tools: ShownTools, kwargs?: Record<string, unknown>): { text: string; ids: number[] } {
    const converted = messages.map(toTemplateMessage);
    const final = converted[converted.length - 1];
    const prefilled = final?.role === 'assistant' && final.content !== '' && !final.tool_calls ? final.content : undefined;
    let text = this.text(converted, tools, kwargs, prefilled === undefined);
    if (prefilled !== undefined) {
      const cut = cutAfterFinalMessage(text, prefilled);
      if (cut === undefined) throw new ChatTemplateError('the chat template does not write the last AI message as given, so the reply cannot continue it; end the conversation with a human or tool message');
      text = cut;
    }
    return { text, ids: this.tokenizer.encodeChat(text) };
  }

  /** The text of generated ids with their special tokens (a thought's tags may be special tokens; harmony's are). */
  decode(ids: number[]): string {
    return this.tokenizer.decode(ids, false);
  }

  private text(messages: ChatMessage[], tools: ShownTools, kwargs?: Record<string, unknown>, addGenerationPrompt = true): string {
    return this.tokenizer.applyChatTemplate(messages, {
      addGenerationPrompt,
      ...(this.template ? { template: this.template } : {}),
      ...tools,
      ...(kwargs ? { extra: kwargs } : {}),
    });
  }
}
