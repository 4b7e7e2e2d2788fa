/**
 * Tools for a model whose chat template shows none (Gemma's, Phi-3's, Mistral v0.1's, most base models' chat
 * templates): the tools and the reply's form are described in the system message, and the model answers with one
 * JSON object, `{"tool_calls": [{"name": …, "arguments": {…}}]}` to call tools or `{"response": "…"}` to answer, the
 * `generic` tool-call syntax, which the tool-call constraint enforces token by token (the envelope of llama.cpp's
 * generic tool calls). An answer held to a response format of the call's own takes the `{"response": …}` object's
 * place, as that constraint then writes it. Earlier turns are shown in the same form: the assistant's calls and answers
 * as such objects, tool results as user messages, so a template that takes neither tool calls nor a tool role still
 * renders the conversation.
 */
import type { ChatMessage } from './tokenizer.js';
import { answerBeside, type AnswerFormat, type ResponseFormat } from '../constrain/types.js';
import { isJson as isJsonText } from '../chat/partial-json.js';

/** A tool as OpenAI's requests and chat templates give it. */
export interface FunctionTool {
  type: 'function';
  function: { name: string; description?: string; parameters?: Record<string, unknown> };
}

/**
 * The tools shown in the prompt, and the calls the reply may make (as the tool-call constraint's `choice` and
 * `parallel`). With no tools (a request without them, or `tool_choice: "none"`) nothing is described, and only the
 * earlier turns' calls and results are put in the form the template takes.
 */
export interface ToolsPrompt {
  tools: readonly FunctionTool[];
  choice: 'auto' | 'required' | { name: string };
  parallel: boolean;
  /**
   * The format of an answer (under `auto` only), where the call has one of its own: the reply is the calls or the
   * answer itself in that format, no `{"response": …}` object (see `replyFormat`).
   */
  answer?: AnswerFormat;
}

/**
 * The keys of the generic reply object: a list of calls, one call (`parallel` false, a named tool), or the answer.
 * Shared with the constraint that writes the object and the splitter that reads it.
 */
export const GENERIC_REPLY = { calls: 'tool_calls', call: 'tool_call', response: 'response' } as const;

/** JSON text written into {@link spacedJson}'s output with its values as written (a call's arguments). */
class JsonText {
  constructor(readonly text: string) {}
}

/** A JSON text's tokens: strings, and runs of anything else but punctuation and whitespace (numbers, literals). */
const JSON_TOKENS = /"(?:[^"\\]|\\.)*"|[{}[\],:]|[^\s{}[\],:"]+/g;

/** JSON text in {@link spacedJson}'s layout, its strings and numbers as written (`1.0` stays, as a big integer does). */
function relaid(text: string): string {
  return (text.match(JSON_TOKENS) ?? []).map((t) => (t === ',' ? ', ' : t === ':' ? ': ' : t)).join('');
}

/**
 * JSON as the constraint writes it (XGrammar's layout without free whitespace): `", "` between items, `": "` after
 * keys, nothing else. Earlier turns are written so, the layout the reply is held to; JSON text given as such (a call's
 * arguments) in that layout with its values as written.
 */
export function spacedJson(value: unknown): string {
  if (value instanceof JsonText) return relaid(value.text);
  if (Array.isArray(value)) return `[${value.map(spacedJson).join(', ')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value).filter(([, v]) => v !== undefined);
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}: ${spacedJson(v)}`).join(', ')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/** The system message's text: the tools (name, description, arguments' schema) and the form the reply takes. */
export function toolsInstruction({ tools, choice, parallel, answer }: ToolsPrompt): string {
  const listed = tools.map(({ function: f }) => ({ name: f.name, ...(f.description ? { description: f.description } : {}), parameters: f.parameters ?? { type: 'object' } }));
  const named = typeof choice === 'object' ? choice.name : undefined;
  const call = (name: string) => `{"name": ${JSON.stringify(name)}, "arguments": {…}}`;
  const calling =
    named !== undefined
      ? `Call the tool ${JSON.stringify(named)}, replying with {"${GENERIC_REPLY.call}": ${call(named)}}.`
      : parallel
        ? `To call tools, reply with {"${GENERIC_REPLY.calls}": [${call('<tool name>')}, …]}, one entry per call.`
        : `To call a tool, reply with {"${GENERIC_REPLY.call}": ${call('<tool name>')}}.`;
  const answering = choice === 'auto' ? `\nTo answer the user, ${answerForm(answer)}` : named === undefined ? '\nYou must call a tool.' : '';
  // (an answer to a grammar or pattern need not be JSON: only the calls are an object then)
  const form = choice === 'auto' && answer && !isJson(answer) ? 'A reply that calls tools is one JSON object and nothing else.' : 'Reply with one JSON object and nothing else.';
  return `You can call these tools (the arguments of each as a JSON Schema):\n${JSON.stringify(listed, null, 2)}\n\n${form} ${calling}${answering}`;
}

/** Whether an answer's format is JSON. */
function isJson(answer: AnswerFormat): boolean {
  return answer.type === 'json_schema' || answer.type === 'json_object';
}

/**
 * How an answer is written: the reply object's `response`, or, in a format of the call's own, the answer itself (its
 * JSON Schema shown as the tools' are; a grammar or pattern is left to the conversation to describe).
 */
function answerForm(answer: AnswerFormat | undefined): string {
  if (!answer) return `reply with {"${GENERIC_REPLY.response}": "<your answer>"}.`;
  if (answer.type === 'json_schema') return `reply with your answer as one JSON object following this JSON Schema:\n${JSON.stringify(answer.schema, null, 2)}`;
  if (answer.type === 'json_object') return 'reply with your answer as one JSON object.';
  return 'reply with your answer in the requested format instead.';
}

/**
 * What a chat prompt shows of a request's tools (`ChatTemplateOptions`): for the `generic` syntax a `toolsPrompt`, the
 * tools described only where the reply may call them (`calls`), earlier calls and results in the reply object's form
 * either way (the template takes neither), and under `auto` the call's own response format (`own`) as the answer's
 * (as `replyFormat` holds the reply to it); for the others the tools themselves, for the template to render.
 */
export function toolsShown<T extends FunctionTool>(
  generic: boolean,
  tools: T[] | undefined,
  calls: Pick<ToolsPrompt, 'choice' | 'parallel'> | undefined,
  own?: ResponseFormat,
): { tools?: T[]; toolsPrompt?: ToolsPrompt } {
  if (!generic) return tools ? { tools } : {};
  const prompt: ToolsPrompt = { tools: tools && calls ? tools : [], choice: calls?.choice ?? 'auto', parallel: calls?.parallel ?? true };
  const answer = prompt.tools.length > 0 ? answerBeside(own, prompt.choice) : undefined;
  return { toolsPrompt: answer ? { ...prompt, answer } : prompt };
}

/**
 * A call of an assistant message as the reply object lists it: arguments given as JSON text laid out again with their
 * values as written (a number parsed and written again may change: `1.0`, an integer past 2^53), other text as a JSON
 * string.
 */
function callOf(c: unknown): { name: unknown; arguments: unknown } {
  const fn = (c as { function?: { name?: unknown; arguments?: unknown } } | null)?.function ?? {};
  const args: unknown = fn.arguments ?? {};
  return { name: fn.name, arguments: typeof args === 'string' && isJsonText(args) ? new JsonText(args.trim()) : args };
}

/**
 * The conversation as a template without tools renders it, with `prompt`'s tools described in the system message:
 * merged into the first one, or, where the template has no system role (`systemRole` false, as Gemma's), put before
 * the first user message's text (so is a system message of the conversation's own). An assistant's calls become its
 * reply object, and, where tools are described and the answer has no format of its own, its answers before the last
 * message `{"response": …}` (the last may be continued, so it stays as given; an answer in a format of its own is
 * shown as written, as the reply writes it); each run of tool results becomes one user message of
 * `{"tool_response": …}` lines (the tool's name found from its call's id), and a user message right after the run joins
 * it (after a blank line), so user and assistant still alternate as Gemma's and Llama 2's templates demand.
 */
export function withToolsInPrompt(messages: readonly ChatMessage[], prompt: ToolsPrompt, systemRole: boolean): ChatMessage[] {
  const described = prompt.tools.length > 0;
  const names = new Map<unknown, unknown>();
  const out: ChatMessage[] = [];
  messages.forEach((m, i) => {
    if (m.role === 'assistant' && Array.isArray(m.tool_calls) && m.tool_calls.length > 0) {
      const calls = (m.tool_calls as unknown[]).map(callOf);
      (m.tool_calls as { id?: unknown }[]).forEach((c, j) => names.set(c?.id, calls[j]!.name));
      const reply = calls.length === 1 && !prompt.parallel ? { [GENERIC_REPLY.call]: calls[0] } : { [GENERIC_REPLY.calls]: calls };
      const shown: ChatMessage = { ...m, content: [m.content, spacedJson(reply)].filter((t) => t !== '').join('\n') };
      delete shown.tool_calls;
      out.push(shown);
    } else if (m.role === 'assistant' && described && !prompt.answer && i < messages.length - 1) {
      out.push({ ...m, content: spacedJson({ [GENERIC_REPLY.response]: m.content }) });
    } else if (m.role === 'tool') {
      const line = spacedJson({ tool_response: { name: m.name ?? names.get(m.tool_call_id), tool_call_id: m.tool_call_id, content: m.content } });
      const previous = out[out.length - 1];
      if (previous?.role === 'user' && i > 0 && messages[i - 1]!.role === 'tool') previous.content += `\n${line}`;
      else out.push({ role: 'user', content: line });
    } else if (m.role === 'user' && i > 0 && messages[i - 1]!.role === 'tool') {
      // (the text sent with the results, as Anthropic's tool_result and text blocks of one user message)
      out[out.length - 1]!.content += `\n\n${m.content}`;
    } else out.push({ ...m });
  });
  const first = out[0];
  const system = [first?.role === 'system' ? first.content : '', described ? toolsInstruction(prompt) : ''].filter((t) => t !== '').join('\n\n');
  if (first?.role === 'system') out.shift();
  if (system === '') return out;
  if (systemRole) return [{ role: 'system', content: system }, ...out];
  const user = out.findIndex((m) => m.role === 'user');
  if (user === -1) return [{ role: 'user', content: system }, ...out];
  out[user] = { ...out[user]!, content: `${system}\n\n${out[user]!.content}` };
  return out;
}
