/**
 * Anthropic's Messages API requests (`POST /v1/messages`, as llama.cpp's server and Ollama take them for Claude
 * Code and the Anthropic SDKs) read as the chat request they amount to: `system` and `messages` with their content
 * blocks (text, tool_use, tool_result, thinking) become chat messages, consecutive user or assistant messages one
 * turn (as Anthropic combines them), a system message in `messages` a system message in place, a last assistant
 * turn a prefill the reply continues, `tools`/`tool_choice` the chat's tools, `thinking.budget_tokens` the thinking
 * budget, `output_config.format` the response format; the chat parser checks every field. Images, documents and
 * server tools (web search, code execution) are refused by name.
 */
import { badRequest } from './errors.js';
import { checkFormatSchema } from './structured-output.js';
import { chatToolsOf, isObject, parseChatRequest, PART_SEPARATOR, shown, type Body, type ChatRequest } from './requests.js';
import { refuseChatConstraints, SAMPLING_EXTENSIONS } from './responses-request.js';

/** A `/v1/messages` request: the chat request it amounts to, and how its answer shows the thought. */
export interface MessagesRequest extends ChatRequest {
  /** `thinking.display: "omitted"`: thinking blocks come without their text, as Anthropic's then do. */
  thoughtOmitted: boolean;
}

/** Reads a `/v1/messages` (or `/v1/messages/count_tokens`) body; `counting` needs no `max_tokens`. */
export function parseMessagesRequest(body: unknown, counting = false): MessagesRequest {
  if (!isObject(body)) throw badRequest('the request body must be a JSON object');
  const chat: Body = { model: body.model, stream: body.stream ?? false };
  const max = body.max_tokens;
  if (!counting) {
    // (Anthropic's API requires it, where OpenAI's leave it out for no limit)
    if (max === undefined || max === null) throw badRequest('max_tokens is required: the most tokens the reply may take, a whole number >= 1', 'max_tokens');
    if (!(Number.isSafeInteger(max) && (max as number) >= 1)) throw badRequest(`max_tokens must be a whole number >= 1 (got ${shown(max)})`, 'max_tokens');
    chat.max_completion_tokens = max;
  }
  for (const [from, to] of [['temperature', 'temperature'], ['top_p', 'top_p'], ['stop_sequences', 'stop']] as const) {
    if (body[from] !== undefined) chat[to] = body[from];
  }
  // The chat's sampling extensions (`top_k` is Anthropic's own too) and this server's, as on the other endpoints.
  for (const key of [...SAMPLING_EXTENSIONS, 'chat_template_kwargs', 'reasoning_format', 'reasonplug'] as const) if (body[key] !== undefined) chat[key] = body[key];
  refuseChatConstraints(body, 'output_config.format');
  Object.assign(chat, outputConfigOf(body));
  const messages = messagesOf(body.system, body.messages);
  chat.messages = messages;
  // A last assistant turn is the start of the answer (Anthropic's prefill): the reply continues it.
  const last = messages[messages.length - 1];
  if (last?.role === 'assistant' && last.content !== '') chat.continue_final_message = true;
  // Client tools (`{name, description, input_schema}`, typed `custom` or not); typed server tools are refused.
  const tools = chatToolsOf(body.tools, (type) => type === undefined || type === 'custom', 'input_schema', { type: 'object' }, '{"name": …, "description": …, "input_schema": {…}}', !(isObject(body.tool_choice) && body.tool_choice.type === 'none'));
  if (tools) chat.tools = tools;
  Object.assign(chat, toolChoiceOf(body.tool_choice));
  Object.assign(chat, thinkingOf(body.thinking, chat.chat_template_kwargs));
  return { ...parseChatRequest(chat, 'stop_sequences'), thoughtOmitted: thinkingDisplayOf(body.thinking) === 'omitted' };
}

/** The text of a content given as a string or as text blocks (others refused, by name). */
function textOf(content: unknown, param: string): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) throw badRequest(`${param} must be a string or a list of content blocks`, param);
  return content
    .map((block, i) => {
      const at = `${param}[${i}]`;
      const type = blockType(block, at);
      if (type !== 'text') throw READ.has(type) ? badRequest(`${at} is a "${type}" block: ${param} takes text blocks only`, at) : unsupportedBlock(type, at);
      return checked(block as Body, ['text'], at).text as string;
    })
    .join(PART_SEPARATOR);
}

/**
 * The block types this server's models read, each with the role whose messages hold it (text blocks go in either)
 * and its fields that must be strings.
 */
const READ = new Map<string, { role?: 'user' | 'assistant'; strings: readonly string[] }>([
  ['text', { strings: ['text'] }],
  ['tool_result', { role: 'user', strings: ['tool_use_id'] }],
  ['tool_use', { role: 'assistant', strings: ['id', 'name'] }],
  ['thinking', { role: 'assistant', strings: ['thinking'] }],
  // (its `data` is the provider's sealed thought: none here to read, so it is dropped whatever it holds)
  ['redacted_thinking', { role: 'assistant', strings: [] }],
]);

/** The type of a content block sent at `at`. */
function blockType(block: unknown, at: string): string {
  if (!isObject(block) || typeof block.type !== 'string') throw badRequest(`${at} must be a content block, an object with its "type"`, at);
  return block.type;
}

function unsupportedBlock(type: string, at: string) {
  return badRequest(`${at} is a "${type}" block: this server's models read text, tool_use, tool_result and thinking blocks`, at, 'unsupported_content');
}

/** `block` once each of `fields` is found to be a string (the refusal names the first that is not). */
function checked(block: Body, fields: readonly string[], at: string): Body {
  for (const field of fields) if (typeof block[field] !== 'string') throw badRequest(`${at}.${field} must be a string`, `${at}.${field}`);
  return block;
}

/** A content block of a user or assistant turn, with where it was sent (named by a refusal). */
interface SentBlock {
  block: unknown;
  at: string;
}

/** A turn of the conversation: a system message in place, or one or more consecutive user or assistant messages' blocks. */
type Turn = { role: 'system'; content: string } | { role: 'user' | 'assistant'; blocks: SentBlock[] };

/**
 * The chat messages of `system` and `messages`. Consecutive user or assistant messages are one turn, their blocks
 * in order (Anthropic combines them so; templates such as Gemma's refuse roles that do not alternate). A user turn's
 * `tool_result` blocks become tool messages (before its text), an assistant turn's `tool_use` blocks its tool calls
 * and its `thinking` blocks its `reasoning_content`.
 */
function messagesOf(system: unknown, messages: unknown): Body[] {
  const out: Body[] = [];
  if (system !== undefined && system !== null) out.push({ role: 'system', content: textOf(system, 'system') });
  if (!Array.isArray(messages) || messages.length === 0) throw badRequest('messages must be a non-empty list of messages', 'messages');
  for (const turn of turnsOf(messages)) {
    if (turn.role === 'system') out.push(turn);
    else if (turn.role === 'user') out.push(...userMessages(turn.blocks));
    else out.push(assistantMessage(turn.blocks));
  }
  return out;
}

/** The turns of `messages`, each message checked for its role and the form of its content. */
function turnsOf(messages: unknown[]): Turn[] {
  const turns: Turn[] = [];
  messages.forEach((m, i) => {
    const param = `messages[${i}]`;
    if (!isObject(m) || (m.role !== 'user' && m.role !== 'assistant' && m.role !== 'system')) {
      throw badRequest(`${param} must be a message whose role is "user", "assistant" or "system"`, `${param}.role`);
    }
    if (m.role === 'system') return void turns.push({ role: 'system', content: textOf(m.content, `${param}.content`) });
    const content = typeof m.content === 'string' ? [{ type: 'text', text: m.content }] : m.content;
    if (!Array.isArray(content)) throw badRequest(`${param}.content must be a string or a list of content blocks`, `${param}.content`);
    const blocks = content.map((block, j) => ({ block, at: `${param}.content[${j}]` }));
    const last = turns[turns.length - 1];
    // (pushed one by one: a spread of more than about 120,000 blocks overflows the stack)
    if (last !== undefined && last.role !== 'system' && last.role === m.role) for (const b of blocks) last.blocks.push(b);
    else turns.push({ role: m.role, blocks });
  });
  return turns;
}

/** A user or assistant turn's block, refused unless it is of a type its role holds, with its fields. */
function turnBlock({ block, at }: SentBlock, role: 'user' | 'assistant'): Body & { type: string } {
  const type = blockType(block, at);
  const read = READ.get(type);
  if (!read) throw unsupportedBlock(type, at);
  if (read.role !== undefined && read.role !== role) throw badRequest(`${at}: ${type} blocks go in ${read.role} messages, not ${role} ones`, `${at}.type`);
  return checked(block as Body, read.strings, at) as Body & { type: string };
}

/** A user turn's tool messages (one per `tool_result`, in order), then its text, if any or if it holds no results. */
function userMessages(blocks: SentBlock[]): Body[] {
  const out: Body[] = [];
  const texts: string[] = [];
  for (const sent of blocks) {
    const block = turnBlock(sent, 'user');
    if (block.type === 'text') {
      texts.push(block.text as string);
      continue;
    }
    const content = block.content === undefined ? '' : textOf(block.content, `${sent.at}.content`);
    out.push({ role: 'tool', tool_call_id: block.tool_use_id, content: block.is_error === true ? `Error: ${content}` : content });
  }
  // (an assistant turn's text is joined as it is: a prefill's pieces continue one another)
  const text = texts.join(PART_SEPARATOR);
  return text || out.length === 0 ? [...out, { role: 'user', content: text }] : out;
}

/** An assistant turn's message: its text, its tool calls, its thought (a redacted one dropped). */
function assistantMessage(blocks: SentBlock[]): Body {
  let text = '';
  let thought: string | undefined;
  const calls: Body[] = [];
  for (const sent of blocks) {
    const block = turnBlock(sent, 'assistant');
    if (block.type === 'text') text += block.text as string;
    else if (block.type === 'tool_use') calls.push({ id: block.id, type: 'function', function: { name: block.name, arguments: JSON.stringify(block.input ?? {}) } });
    else if (block.type === 'thinking') thought = (thought ?? '') + (block.thinking as string);
  }
  return { role: 'assistant', content: text, ...(calls.length ? { tool_calls: calls } : {}), ...(thought !== undefined ? { reasoning_content: thought } : {}) };
}

/** `tool_choice` (`auto`, `any`, `tool` with a name, `none`; `disable_parallel_tool_use`) in the chat's words. */
function toolChoiceOf(choice: unknown): Body {
  if (choice === undefined || choice === null) return {};
  if (!isObject(choice) || typeof choice.type !== 'string') throw badRequest('tool_choice must be {"type": "auto" | "any" | "tool" | "none"}', 'tool_choice');
  const parallel = choice.disable_parallel_tool_use === true ? { parallel_tool_calls: false } : {};
  if (choice.type === 'auto') return { tool_choice: 'auto', ...parallel };
  if (choice.type === 'any') return { tool_choice: 'required', ...parallel };
  if (choice.type === 'none') return { tool_choice: 'none' };
  if (choice.type === 'tool' && typeof choice.name === 'string') return { tool_choice: { type: 'function', function: { name: choice.name } }, ...parallel };
  throw badRequest('tool_choice must be {"type": "auto" | "any" | "tool" | "none"} ("tool" with a name)', 'tool_choice');
}

/**
 * `output_config` (`format`: a JSON schema the answer follows, as chat's `json_schema` response format; `effort`: the
 * template's `reasoning_effort`), and the structured outputs beta's `output_format`, which Anthropic still takes.
 */
function outputConfigOf(body: Body): Body {
  const present = (v: unknown) => v !== undefined && v !== null;
  const config = body.output_config ?? {};
  if (!isObject(config)) throw badRequest('output_config must be an object such as {"format": {"type": "json_schema", "schema": {…}}}', 'output_config');
  for (const key of Object.keys(config)) {
    if (key !== 'format' && key !== 'effort') throw badRequest(`output_config.${key} is not supported (format and effort are)`, `output_config.${key}`, 'unsupported_parameter');
  }
  const out: Body = present(config.effort) ? { reasoning_effort: config.effort } : {};
  if (present(config.format) && present(body.output_format)) throw badRequest('give the output format once: output_config.format (output_format is its beta name)', 'output_format');
  const [param, format] = present(config.format) ? ['output_config.format', config.format] : ['output_format', body.output_format];
  if (!present(format)) return out;
  if (!isObject(format) || format.type !== 'json_schema' || !isObject(format.schema)) throw badRequest(`${param} must be {"type": "json_schema", "schema": {…}}`, param);
  checkFormatSchema(format.schema, `${param}.schema`);
  return { ...out, response_format: { type: 'json_schema', json_schema: { name: 'output', schema: format.schema, strict: true } } };
}

/**
 * `thinking`: `enabled` with `budget_tokens` caps the thought (the thinking budget); `adaptive` and `between_tools`
 * leave the thought to the model and its template, with no budget; `disabled` asks the template for none (Qwen3's
 * `enable_thinking: false`).
 */
function thinkingOf(thinking: unknown, kwargs: unknown): Body {
  if (thinking === undefined || thinking === null) return {};
  if (!isObject(thinking)) throw badRequest('thinking must be {"type": "enabled", "budget_tokens": N}, {"type": "adaptive"}, {"type": "between_tools"} or {"type": "disabled"}', 'thinking');
  if (thinking.type === 'disabled') return { chat_template_kwargs: { enable_thinking: false, ...(isObject(kwargs) ? kwargs : {}) } };
  if (thinking.type === 'adaptive' || thinking.type === 'between_tools') return {};
  if (thinking.type === 'enabled') {
    const budget = thinking.budget_tokens;
    if (!(Number.isSafeInteger(budget) && (budget as number) >= 0)) throw badRequest(`thinking.budget_tokens must be a whole number >= 0 (got ${shown(budget)})`, 'thinking.budget_tokens');
    return { thinking_token_budget: budget };
  }
  throw badRequest('thinking.type must be "enabled", "adaptive", "between_tools" or "disabled"', 'thinking.type');
}

/** `thinking.display` (of `enabled` and `adaptive`, the types that take it): `summarized` (the thought as written, the default) or `omitted`. */
function thinkingDisplayOf(thinking: unknown): 'summarized' | 'omitted' {
  if (!isObject(thinking) || (thinking.type !== 'enabled' && thinking.type !== 'adaptive')) return 'summarized';
  const display = thinking.display ?? 'summarized';
  if (display !== 'summarized' && display !== 'omitted') throw badRequest(`thinking.display must be "summarized" or "omitted" (got ${shown(display)})`, 'thinking.display');
  return display;
}
