/**
 * A chat request's turn, as the chat routes (OpenAI's, Responses, Anthropic's Messages, Ollama's) share it: its prompt
 * rendered with the chat template (the server's or the model's), and its engine options and how its reply is read.
 */
import { keptTokens, replyFormat, replyParsing, thinkingBudgetFor, thoughtFirst, toolsRead, type ReplyParsing } from '../chat/reply.js';
import { cutAfterFinalMessage } from '../chat/continuation.js';
import { toolCallSyntaxOf, type ToolCallSyntax } from '../constrain/tool-syntax.js';
import { toolsShown } from '../tokenizer/tools-in-prompt.js';
import { TokenizerError, type ChatMessage, type TextTokenizer } from '../tokenizer/tokenizer.js';
import { withModelMessages } from '../modules/model-defaults.js';
import { badRequest } from './errors.js';
import { keptPromptTokens, lastTokens } from './prompt-truncation.js';
import { toolCallFormat, type ChatPromptSpec, type ChatRequest } from './requests.js';
import type { ChatModel, Loaded } from './served.js';

/**
 * A chat request's turn: its prompt rendered, its engine options completed (token limit, constraint, thought,
 * kept tokens, thinking budget), and how its reply is read. Shared by chat completions, responses and messages.
 */
export function chatTurn(l: ChatModel, request: ChatRequest): { prompt: { text: string; ids: number[] }; parsing: ReplyParsing } {
  // A model not served is a 404 before the prompt's own faults (no chat template, tools not shown) are found.
  l.models.resolve(request.model);
  const prompt = chatPrompt(l, request, request.addSpecialTokens, keptPromptTokens(l, request));
  // Without max_tokens a chat reply may run to the end of the context (where the engine stops a row), as
  // OpenAI's and vLLM's do, not to the engine's 256: a long answer would be cut with nothing asked for.
  request.options.maxTokens ??= l.contextLength;
  const chatTemplate = l.options.chatTemplate ?? l.tokenizer!.chatTemplate;
  const syntax = toolSyntax(l);
  // (a response format of the request's own beside its tools: forced calls win, `auto` calls or answers in it)
  const format = replyFormat(request.options.responseFormat, toolCallFormat(request, syntax));
  const parsing = replyParsing({
    format: request.reasoningFormat ?? l.options.reasoningFormat ?? 'auto',
    chatTemplate,
    prompt: prompt.text,
    constrained: format !== undefined,
    ...(request.tools !== undefined && request.toolChoice !== undefined ? toolsRead(syntax, format) : {}),
    toolSpecs: request.tools?.map((t) => ({ name: t.function.name, parameters: t.function.parameters })),
  });
  if (format) request.options.responseFormat = thoughtFirst(format, parsing);
  const kept = keptTokens(parsing);
  if (kept.length) request.options.keepTokens = kept;
  const budget = request.thinkingBudget ?? l.options.thinkingBudget;
  if (budget !== undefined) request.options.thinkingBudget = thinkingBudgetFor(budget, parsing, chatTemplate, prompt.text);
  return { prompt, parsing };
}

/**
 * A chat's prompt: the messages (and tools) rendered with the chat template, and its ids (the tokenizer's BOS/EOS
 * added around them with `addSpecialTokens`; only the last `keep` of them with one). Continuing the final message,
 * the prompt ends where that message's text does (the template's end of turn cut off).
 */
export function chatPrompt(l: ChatModel, spec: ChatPromptSpec & Partial<Pick<ChatRequest, 'options'>>, addSpecialTokens = false, keep?: number): { text: string; ids: number[] } {
  const tokenizer = chatTokenizer(l);
  if (!l.options.chatTemplate && !tokenizer.chatTemplate) {
    throw badRequest(`the model ${l.models.backbone} has no chat template; start the server with --chat-template, or use /v1/completions`, 'messages', 'no_chat_template');
  }
  const template = l.options.chatTemplate ? { template: l.options.chatTemplate } : {};
  const extra = { ...l.options.chatTemplateKwargs, ...spec.templateKwargs };
  const generic = toolSyntax(l) === 'generic';
  if (spec.tools && !generic && !tokenizer.rendersTools(l.options.chatTemplate)) {
    throw badRequest(
      `the chat template of ${l.models.backbone} does not show tools to the model, so it cannot call them in the ${toolSyntax(l)} syntax the server was started with; start it without --tool-call-syntax (or with generic) to describe the tools in the system message`,
      'tools',
      'tools_not_supported',
    );
  }
  // With tool_choice none a template that renders tools still shows them; a generic prompt does not describe them.
  const calls = spec.toolChoice ? { choice: spec.toolChoice, parallel: spec.parallelToolCalls } : undefined;
  // (a request's own response format, which under auto the reply may answer in: the description says so)
  const shown = toolsShown(generic, spec.tools, calls, spec.options?.responseFormat);
  // (a prompt cut to its last tokens, vLLM's truncate_prompt_tokens, may be rendered longer than the context)
  if (keep === undefined) refuseBeyondContext(l, spec.messages);
  // A chat without a system message of its own gets the model's (and its example messages), as Ollama's does.
  const messages = withModelMessages(spec.messages, l.engine.info.defaults);
  let text = tokenizer.applyChatTemplate(messages, { ...template, addGenerationPrompt: spec.addGenerationPrompt, extra, ...shown });
  if (spec.continueFinalMessage) {
    const cut = cutAfterFinalMessage(text, spec.messages[spec.messages.length - 1]!.content);
    if (cut === undefined) throw badRequest(`the chat template of ${l.models.backbone} does not write the last message as given, so it cannot be continued`, 'continue_final_message');
    text = cut;
  }
  const encode = (t: string, within?: number) => (addSpecialTokens ? tokenizer.encode(t, true, within) : tokenizer.encodeChat(t, within));
  return { text, ids: keep === undefined ? encode(text, l.engine.info.contextLength) : lastTokens(encode, text, keep) };
}

/**
 * Refuses, before they are rendered, messages that cannot fit the context: more messages and tool calls than it has
 * positions, since any real template writes each with one token at least (280,000 empty messages held the
 * server's thread 2.4 s in the template before the prompt was found too long). Content parts are not counted: they
 * are joined into their message's text first, and may be empty. A TokenizerError, as the prompt's own overflow is.
 */
function refuseBeyondContext(l: Loaded, messages: readonly ChatMessage[]): void {
  const calls = messages.reduce((n, m) => n + (Array.isArray(m.tool_calls) ? m.tool_calls.length : 0), 0);
  if (messages.length + calls <= l.contextLength) return;
  const counted = `${messages.length} messages${calls ? ` and ${calls} tool calls` : ''}`;
  throw new TokenizerError(`the chat's ${counted} are more than the context length of ${l.contextLength} tokens (each takes one token at least); send fewer`);
}

/**
 * How the model is shown tools and writes its calls: the server's `toolCallSyntax`, else the syntax the chat
 * template teaches, or `generic` (tools described in the system message, calls as a JSON reply) where it shows none;
 * without the server's, a model without a tokenizer gets the chat routes' 400.
 */
export function toolSyntax(l: ChatModel): ToolCallSyntax {
  if (l.options.toolCallSyntax) return l.options.toolCallSyntax;
  const tokenizer = chatTokenizer(l);
  return toolCallSyntaxOf(l.options.chatTemplate ?? tokenizer.toolUseTemplate ?? tokenizer.chatTemplate, tokenizer.rendersTools(l.options.chatTemplate));
}

/** The tokenizer chat prompts are rendered with: a 400 for a model without one (a bare graph), which cannot chat. */
function chatTokenizer(l: Loaded): TextTokenizer {
  if (!l.tokenizer) throw badRequest('this model has no tokenizer.json beside it, so it cannot take chat messages', 'messages');
  return l.tokenizer;
}
