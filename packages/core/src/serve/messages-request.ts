/**
 * Anthropic's Messages API requests (`POST /v1/messages`, as llama.cpp's server and Ollama take them for Claude
 * Code and the Anthropic SDKs) read as the chat request they amount to: `system` and `messages` with their content
 * blocks (text, tool_use, tool_result, thinking) become chat messages, a last assistant message is a prefill the
 * reply continues, `tools`/`tool_choice` the chat's tools, `thinking.budget_tokens` the thinking budget,
 * `output_config.format` the response format; the chat parser checks every field. Images, documents and server
 * tools (web search, code execution) are refused by name.
 */
import { badRequest } from './errors.js';
import { chatToolsOf, isObject, parseChatRequest, type Body, type ChatRequest } from './requests.js';
import { refuseChatConstraints, SAMPLING_EXTENSIONS } from './responses-request.js';

/** Reads a `/v1/messages` (or `/v1/messages/count_tokens`) body; `counting` needs no `max_tokens`. */
export function parseMessagesRequest(body: unknown, counting = false): ChatRequest {
  if (!isObject(body)) throw badRequest('the request body must be a JSON object');
  const chat: Body = { model: body.model, stream: body.stream ?? false };
  const max = body.max_tokens;
  if (!counting) {
    if (!(Number.isSafeInteger(max) && (max as number) >= 1)) throw badRequest(`max_tokens must be a whole number >= 1 (got ${JSON.stringify(max)})`, 'max_tokens');
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
  // A last assistant message is the start of the answer (Anthropic's prefill): the reply continues it.
  const last = messages[messages.length - 1];
  if (last?.role === 'assistant' && last.content !== '') chat.continue_final_message = true;
  // Client tools (`{name, description, input_schema}`, typed `custom` or not); typed server tools are refused.
  const tools = chatToolsOf(body.tools, (type) => type === undefined || type === 'custom', (t) => t.input_schema ?? { type: 'object' }, '{"name": …, "description": …, "input_schema": {…}}');
  if (tools) chat.tools = tools;
  Object.assign(chat, toolChoiceOf(body.tool_choice));
  Object.assign(chat, thinkingOf(body.thinking, chat.chat_template_kwargs));
  return parseChatRequest(chat, 'stop_sequences');
}

/** The text of a content given as a string or as blocks of `allowed` types (others refused by name). */
function textOf(content: unknown, param: string): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) throw badRequest(`${param} must be a string or a list of content blocks`, param);
  return content
    .map((block, i) => {
      if (!isObject(block) || block.type !== 'text' || typeof block.text !== 'string') throw unsupportedBlock(block, `${param}[${i}]`);
      return block.text;
    })
    .join('');
}

function unsupportedBlock(block: unknown, param: string) {
  const type = isObject(block) ? String(block.type) : typeof block;
  return badRequest(`${param} is a "${type}" block: this server's models read text, tool_use, tool_result and thinking blocks`, param, 'unsupported_content');
}

/**
 * The chat messages of `system` and `messages`: a user message's `tool_result` blocks become tool messages (before
 * its text), an assistant message's `tool_use` blocks its tool calls and its `thinking` block its `reasoning_content`.
 */
function messagesOf(system: unknown, messages: unknown): Body[] {
  const out: Body[] = [];
  if (system !== undefined && system !== null) out.push({ role: 'system', content: textOf(system, 'system') });
  if (!Array.isArray(messages) || messages.length === 0) throw badRequest('messages must be a non-empty list of messages', 'messages');
  messages.forEach((m, i) => {
    const param = `messages[${i}]`;
    if (!isObject(m) || (m.role !== 'user' && m.role !== 'assistant')) throw badRequest(`${param} must be a message whose role is "user" or "assistant"`, `${param}.role`);
    const blocks = typeof m.content === 'string' ? [{ type: 'text', text: m.content }] : m.content;
    if (!Array.isArray(blocks)) throw badRequest(`${param}.content must be a string or a list of content blocks`, `${param}.content`);
    let text = '';
    let thought: string | undefined;
    const calls: Body[] = [];
    blocks.forEach((block, j) => {
      const at = `${param}.content[${j}]`;
      if (!isObject(block)) throw unsupportedBlock(block, at);
      if (block.type === 'text' && typeof block.text === 'string') text += block.text;
      else if (m.role === 'user' && block.type === 'tool_result' && typeof block.tool_use_id === 'string') {
        const content = block.content === undefined ? '' : textOf(block.content, `${at}.content`);
        out.push({ role: 'tool', tool_call_id: block.tool_use_id, content: block.is_error === true ? `Error: ${content}` : content });
      } else if (m.role === 'assistant' && block.type === 'tool_use' && typeof block.id === 'string' && typeof block.name === 'string') {
        calls.push({ id: block.id, type: 'function', function: { name: block.name, arguments: JSON.stringify(block.input ?? {}) } });
      } else if (m.role === 'assistant' && block.type === 'thinking' && typeof block.thinking === 'string') thought = block.thinking;
      else if (m.role === 'assistant' && block.type === 'redacted_thinking') return;
      else throw unsupportedBlock(block, at);
    });
    if (m.role === 'assistant') out.push({ role: 'assistant', content: text, ...(calls.length ? { tool_calls: calls } : {}), ...(thought !== undefined ? { reasoning_content: thought } : {}) });
    else if (text || !blocks.some((b) => isObject(b) && b.type === 'tool_result')) out.push({ role: 'user', content: text });
  });
  return out;
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
  return { ...out, response_format: { type: 'json_schema', json_schema: { name: 'output', schema: format.schema, strict: true } } };
}

/**
 * `thinking`: `enabled` with `budget_tokens` caps the thought (the thinking budget); `disabled` asks the template
 * for none (Qwen3's `enable_thinking: false`).
 */
function thinkingOf(thinking: unknown, kwargs: unknown): Body {
  if (thinking === undefined || thinking === null) return {};
  if (!isObject(thinking)) throw badRequest('thinking must be {"type": "enabled", "budget_tokens": N} or {"type": "disabled"}', 'thinking');
  if (thinking.type === 'disabled') return { chat_template_kwargs: { enable_thinking: false, ...(isObject(kwargs) ? kwargs : {}) } };
  if (thinking.type === 'enabled') {
    const budget = thinking.budget_tokens;
    if (!(Number.isSafeInteger(budget) && (budget as number) >= 0)) throw badRequest(`thinking.budget_tokens must be a whole number >= 0 (got ${JSON.stringify(budget)})`, 'thinking.budget_tokens');
    return { thinking_token_budget: budget };
  }
  throw badRequest('thinking.type must be "enabled" or "disabled"', 'thinking.type');
}
