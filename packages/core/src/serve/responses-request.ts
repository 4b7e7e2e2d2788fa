/**
 * OpenAI's Responses API requests (`POST /v1/responses`, as vLLM, Ollama and llama.cpp's server take them) read as
 * the chat request they amount to: `instructions` and `input` items become messages, function tools and
 * `text.format` become the chat's tools and response format, and the chat parser checks every field. An
 * `item_reference` input item reads as the output item it names, from the items the server keeps of its recent
 * answers (response-items.ts); what needs stored responses or conversations (`previous_response_id`, `conversation`,
 * `background`) and tools it cannot run (web search, file search, …) are refused by name.
 */
import { badRequest } from './errors.js';
import { checkFormatSchema } from './structured-output.js';
import { chatToolsOf, isObject, parseChatRequest, PART_SEPARATOR, REFUSED_UNLESS_NEUTRAL, shown, streamOptionsOf, type Body, type ChatRequest } from './requests.js';

/** A Responses request: the chat request it amounts to, and what the response echoes back. */
export interface ResponsesRequest {
  chat: ChatRequest;
  /** Request fields the response object repeats (OpenAI's `instructions`, `metadata`, `tools`, `text`, …). */
  echo: Body;
  /** Whether the answer's output items are kept for later `item_reference`s (`store`, true unless false, as OpenAI's). */
  store: boolean;
}

/** The output items of earlier answers, by id: what an `item_reference` names. */
export interface HeldItems {
  get(id: string): Body | undefined;
}

/** No items held: every reference is refused. */
const NONE_HELD: HeldItems = { get: () => undefined };

/**
 * The chat's sampling extensions (vLLM's and llama.cpp's, as `/v1/chat/completions` reads them) that the Responses
 * and Messages APIs, which have no such fields of their own, take as they are.
 */
export const SAMPLING_EXTENSIONS = [
  'seed', 'top_k', 'min_p', 'repetition_penalty', 'repeat_penalty', 'repeat_last_n', 'frequency_penalty', 'presence_penalty', 'logit_bias',
  'ignore_eos', 'stop_token_ids', 'min_tokens', 'include_stop_str_in_output', 'skip_special_tokens', 'truncate_prompt_tokens', 'documents',
  // (passed on to be refused by name unless neutral, as on the chat route)
  ...REFUSED_UNLESS_NEUTRAL,
] as const;

/** Fields of a chat request a Responses request may carry as they are (sampling settings and this server's extensions). */
const PASSED = [
  'model', 'stream', 'temperature', 'top_p', 'parallel_tool_calls', 'stop', ...SAMPLING_EXTENSIONS, 'chat_template_kwargs', 'reasoning_format',
  'thinking_token_budget', 'reasonplug',
] as const;

/** The chat's constraint fields (`structured-output.ts`): another API names its format its own way. */
const CHAT_CONSTRAINTS = ['response_format', 'guided_json', 'guided_regex', 'guided_choice', 'guided_grammar', 'json_schema', 'grammar', 'structured_outputs'] as const;

/**
 * Refuses a chat completions constraint field sent to another API, which would otherwise go unread and leave the reply
 * unconstrained; `instead` names that API's own field.
 */
export function refuseChatConstraints(body: Body, instead: string): void {
  for (const key of CHAT_CONSTRAINTS) {
    if (body[key] !== undefined && body[key] !== null) throw badRequest(`${key} is a chat completions field: this API's structured output is ${instead}`, key, 'unsupported_parameter');
  }
}

/** Fields that need state this server does not keep. */
const STATEFUL = ['previous_response_id', 'conversation', 'prompt'] as const;

/** Reads a `/v1/responses` body; its `item_reference` items read as the items `held` gives for their ids. */
export function parseResponsesRequest(body: unknown, held: HeldItems = NONE_HELD): ResponsesRequest {
  if (!isObject(body)) throw badRequest('the request body must be a JSON object');
  if (body.store !== undefined && body.store !== null && typeof body.store !== 'boolean') throw badRequest(`store must be true or false (got ${shown(body.store)})`, 'store');
  for (const key of STATEFUL) {
    if (body[key] !== undefined && body[key] !== null) throw badRequest(`${key} is not supported: this server stores no responses or prompts; send the whole conversation as input`, key, 'unsupported_parameter');
  }
  if (body.background === true) throw badRequest('background responses are not supported: this server stores no responses', 'background', 'unsupported_parameter');
  if (body.truncation !== undefined && body.truncation !== null && body.truncation !== 'disabled') {
    throw badRequest('truncation must be "disabled": the server never drops input to fit the context (a prompt too long is refused)', 'truncation', 'unsupported_parameter');
  }
  refuseChatConstraints(body, 'text.format');
  const chat: Body = {};
  for (const key of PASSED) if (body[key] !== undefined) chat[key] = body[key];
  if (body.max_output_tokens !== undefined && body.max_output_tokens !== null) {
    if (!(Number.isSafeInteger(body.max_output_tokens) && (body.max_output_tokens as number) >= 1)) throw badRequest(`max_output_tokens must be a whole number >= 1 (got ${shown(body.max_output_tokens)})`, 'max_output_tokens');
    chat.max_completion_tokens = body.max_output_tokens;
  }
  // Log-probabilities of the answer's text: asked for by `include` (as OpenAI's SDKs and ChatOpenAI do) or by `top_logprobs`.
  const include = body.include ?? [];
  if (!Array.isArray(include) || include.some((x) => typeof x !== 'string')) throw badRequest('include must be a list of strings', 'include');
  if (include.includes('message.output_text.logprobs') || (body.top_logprobs !== undefined && body.top_logprobs !== null)) {
    chat.logprobs = true;
    chat.top_logprobs = body.top_logprobs ?? 0;
  }
  // The Responses API's reasoning effort, as chat completions' reasoning_effort.
  if (body.reasoning !== undefined && body.reasoning !== null) {
    if (!isObject(body.reasoning)) throw badRequest('reasoning must be an object such as {"effort": "high"}', 'reasoning');
    if (body.reasoning.effort !== undefined && body.reasoning.effort !== null) chat.reasoning_effort = body.reasoning.effort;
  }
  chat.messages = messagesOf(body.instructions, body.input, held);
  const tools = chatToolsOf(body.tools, (type) => type === 'function', 'parameters', undefined, '{"type": "function", "name": …, "parameters": {…}}', body.tool_choice !== 'none');
  if (tools) chat.tools = tools;
  if (body.tool_choice !== undefined) chat.tool_choice = toolChoiceOf(body.tool_choice);
  const format = formatOf(body.text);
  if (format) chat.response_format = format;
  const request = parseChatRequest(chat);
  // (the Responses API's stream options have no include_usage: its streams' usage is response.completed's, always)
  streamOptionsOf(body, request.stream, ['include_obfuscation']);
  if (body.metadata !== undefined && body.metadata !== null && !isObject(body.metadata)) throw badRequest('metadata must be an object of strings', 'metadata');
  const echo: Body = {
    instructions: body.instructions ?? null,
    max_output_tokens: body.max_output_tokens ?? null,
    metadata: body.metadata ?? {},
    parallel_tool_calls: request.parallelToolCalls,
    temperature: body.temperature ?? 1,
    top_p: body.top_p ?? 1,
    tool_choice: body.tool_choice ?? 'auto',
    // (as OpenAI's Response lists a function tool: `parameters` and `strict` always there; the schema is enforced token
    // by token, strict or not)
    tools: ((body.tools ?? []) as unknown[]).map((t) => (isObject(t) && t.type === 'function' ? { ...t, parameters: t.parameters ?? null, strict: t.strict ?? true } : t)),
    text: { format: isObject(body.text) && isObject(body.text.format) ? body.text.format : { type: 'text' } },
    top_logprobs: body.top_logprobs ?? null,
  };
  return { chat: request, echo, store: body.store !== false };
}

/** The text of an input message's content: a string, or `input_text`/`output_text` parts. */
function textOf(content: unknown, param: string): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) throw badRequest(`${param} must be a string or a list of text parts`, param);
  return content
    .map((part, i) => {
      const p = `${param}[${i}]`;
      if (!isObject(part) || typeof part.type !== 'string') throw badRequest(`${p} must be a content part with a type`, p);
      if (part.type === 'input_text' || part.type === 'output_text' || part.type === 'text') {
        if (typeof part.text !== 'string') throw badRequest(`${p}.text must be a string`, `${p}.text`);
        return part.text;
      }
      throw badRequest(`${p} is a "${part.type}" part: this server's models read text only`, p, 'unsupported_content');
    })
    .join(PART_SEPARATOR);
}

/**
 * The chat messages of `instructions` and `input`: a string is one user message; items are messages (the
 * developer's as system messages), function calls (an assistant message's tool calls, consecutive calls in one
 * message), their outputs (tool messages) and reasoning (the next assistant message's `reasoning_content`).
 */
function messagesOf(instructions: unknown, input: unknown, held: HeldItems): Body[] {
  const messages: Body[] = [];
  if (instructions !== undefined && instructions !== null) {
    if (typeof instructions !== 'string') throw badRequest('instructions must be a string', 'instructions');
    messages.push({ role: 'system', content: instructions });
  }
  if (typeof input === 'string') return [...messages, { role: 'user', content: input }];
  if (!Array.isArray(input)) throw badRequest('input must be a string or a list of input items', 'input');
  let thought: string | undefined;
  /** The assistant message that function calls join: the one just before them. */
  let caller: Body | undefined;
  input.forEach((given, i) => {
    const param = `input[${i}]`;
    if (!isObject(given)) throw badRequest(`${param} must be an input item`, param);
    const item = isReference(given) ? referenced(given, held, param) : given;
    const type = item.type ?? 'message';
    if (type === 'message') {
      const role = item.role === 'developer' ? 'system' : item.role;
      if (role !== 'user' && role !== 'system' && role !== 'assistant') throw badRequest(`${param}.role must be "user", "system", "developer" or "assistant"`, `${param}.role`);
      const message: Body = { role, content: textOf(item.content, `${param}.content`) };
      if (role === 'assistant' && thought !== undefined) message.reasoning_content = thought;
      thought = undefined;
      messages.push(message);
      caller = role === 'assistant' ? message : undefined;
    } else if (type === 'function_call') {
      if (typeof item.name !== 'string' || typeof item.arguments !== 'string' || typeof item.call_id !== 'string') {
        throw badRequest(`${param} must be a function call with call_id, name and arguments (a JSON string)`, param);
      }
      if (!caller) {
        caller = { role: 'assistant', content: '', tool_calls: [], ...(thought !== undefined ? { reasoning_content: thought } : {}) };
        thought = undefined;
        messages.push(caller);
      }
      // (pushed: a list copied for each call took 55 s over 100,000 calls)
      ((caller.tool_calls ??= []) as unknown[]).push({ id: item.call_id, type: 'function', function: { name: item.name, arguments: item.arguments } });
    } else if (type === 'function_call_output') {
      if (typeof item.call_id !== 'string') throw badRequest(`${param}.call_id must be the call_id of a function call`, `${param}.call_id`);
      messages.push({ role: 'tool', tool_call_id: item.call_id, content: textOf(item.output, `${param}.output`) });
      caller = undefined;
    } else if (type === 'reasoning') {
      const parts = [...(Array.isArray(item.content) ? item.content : []), ...(Array.isArray(item.summary) ? item.summary : [])];
      thought = parts.map((p) => (isObject(p) && typeof p.text === 'string' ? p.text : '')).join('');
    } else {
      throw badRequest(`${param} is a "${String(type)}" item, which this server does not take (messages, function calls, their outputs and reasoning)`, param, 'unsupported_input');
    }
  });
  return messages;
}

/**
 * Whether an input item is an `item_reference`: so typed, or (OpenAI's schema makes a reference's `type` optional)
 * untyped with an `id` and no `role`, which a message would have.
 */
function isReference(item: Body): boolean {
  return item.type === 'item_reference' || ((item.type === undefined || item.type === null) && item.role === undefined && item.id !== undefined);
}

/** The held item a reference names; a 400 saying why none is and how to do without. */
function referenced(reference: Body, held: HeldItems, param: string): Body {
  if (typeof reference.id !== 'string') throw badRequest(`${param}.id must be the id of an output item of an earlier response`, `${param}.id`);
  const item = held.get(reference.id);
  if (item) return item;
  throw badRequest(
    `${param} is a reference to the item ${JSON.stringify(reference.id)}, which this server does not hold: it keeps the output items of its recent ` +
      'answers in memory (the least recently used go first; answers asked with store: false leave none; none outlive a restart, and replicas ' +
      'behind a load balancer do not share them). Send the whole item instead (the AI SDK sends whole items with providerOptions: { openai: { store: false } })',
    param,
    'item_not_found',
  );
}

/** `tool_choice`: the chat's strings, or `{ type: 'function', name }`. */
function toolChoiceOf(choice: unknown): unknown {
  if (typeof choice === 'string') return choice;
  if (isObject(choice) && choice.type === 'function' && typeof choice.name === 'string') return { type: 'function', function: { name: choice.name } };
  throw badRequest('tool_choice must be "none", "auto", "required" or {"type": "function", "name": …}', 'tool_choice');
}

/** `text.format` as the chat's `response_format` (none for plain text). */
function formatOf(text: unknown): Body | undefined {
  if (text === undefined || text === null) return undefined;
  if (!isObject(text)) throw badRequest('text must be an object such as {"format": {"type": "json_schema", …}}', 'text');
  const format = text.format;
  if (format === undefined || format === null) return undefined;
  if (!isObject(format)) throw badRequest('text.format must be an object', 'text.format');
  if (format.type === 'text') return undefined;
  if (format.type === 'json_object') return { type: 'json_object' };
  if (format.type === 'json_schema') {
    checkFormatSchema(format.schema ?? true, 'text.format.schema');
    return { type: 'json_schema', json_schema: { name: format.name, schema: format.schema, ...(format.strict !== undefined ? { strict: format.strict } : {}) } };
  }
  throw badRequest(`text.format.type must be "text", "json_object" or "json_schema" (got ${JSON.stringify(format.type)})`, 'text.format.type');
}
