/**
 * How models write tool calls, as their chat templates teach them: the tool-call constraint writes calls this
 * way, and the chat splitters read them back.
 */
import type { ResponseFormat } from './types.js';
import { HARMONY_CALL, HARMONY_TOKENS, isHarmonyTemplate } from '../chat/harmony.js';

/**
 * `hermes`: `<tool_call>{"name": …, "arguments": {…}}</tool_call>` blocks, one per line (Hermes, Qwen 2.5/3,
 * SmolLM3 and most templates that render tools); `json`: the reply ends in one JSON object
 * `{"name": …, "parameters": {…}}` (Llama 3.1–3.3, whose templates render a call that way and refuse several);
 * `mistral`: the reply ends in `[TOOL_CALLS]` and a JSON list of `{"name": …, "arguments": {…}}` objects
 * (Mistral 7B v0.3, Nemo, Small 24B 2501); `mistral-args`: each call is `[TOOL_CALLS]name[ARGS]{…}` (Mistral's
 * later tokenizers: Small 3.2, Magistral, Devstral, Ministral 3), or `[TOOL_CALLS]name[CALL_ID]id[ARGS]{…}` with the
 * call's nine-character id, as Small 3.2's template renders calls. `[TOOL_CALLS]`, `[CALL_ID]` and `[ARGS]` are special
 * tokens of those vocabularies. `granite`: the reply ends in `<|tool_call|>` (a special token) and a JSON list of calls
 * (Granite 3.x). `deepseek`: DeepSeek R1's and V3's calls between `<｜tool▁calls▁begin｜>` and `<｜tool▁calls▁end｜>`,
 * each `<｜tool▁call▁begin｜>function<｜tool▁sep｜>name`, a newline and its arguments in a ```json fence, then
 * `<｜tool▁call▁end｜>` (DeepSeek-R1-0528 and its Qwen3 distill); the markers are added tokens of their vocabularies.
 * `command-r`: Cohere's, a JSON list of `{"tool_call_id": "0", "tool_name": …, "parameters": {…}}` objects between the
 * special tokens `<|START_ACTION|>` and `<|END_ACTION|>` (Command R7B, Command A). `command-r-plus`: Command R+'s
 * (its 04-2024 and 08-2024 tool_use templates), `Action:` and a ```json fence around a JSON list of
 * `{"tool_name": …, "parameters": {…}}` objects, all plain text; its tool `directly-answer` calls nothing, the answer
 * follows as text (llama.cpp names no format for it, and reads it as its generic one). `generic`: for templates that
 * show no tools, the reply is one JSON object, `{"tool_calls": [{"name": …, "arguments": {…}}, …]}` (`{"tool_call": {…}}` for one
 * call) or `{"response": "…"}`, as the system message describes it (`tokenizer/tools-in-prompt.ts`). `harmony`:
 * gpt-oss's, a message to `functions.<name>` on the commentary channel whose body is the arguments' JSON, one call a
 * reply (`chat/harmony.ts`). `qwen-xml`: Qwen3-Coder's, `<tool_call>`, `<function=name>` and each argument as
 * `<parameter=key>`, a newline, its value and `</parameter>` on lines of their own; `glm`: GLM-4.5's, `<tool_call>name`
 * and each argument as `<arg_key>key</arg_key>` and `<arg_value>value</arg_value>`; in both a string value is written
 * as it is, any other as JSON (`XmlCallForm`).
 */
export type ToolCallSyntax = 'hermes' | 'json' | 'mistral' | 'mistral-args' | 'granite' | 'deepseek' | 'command-r' | 'command-r-plus' | 'generic' | 'harmony' | 'qwen-xml' | 'glm';

/**
 * A call written as tags around its name and each argument (Qwen3-Coder's, GLM-4.5's), between the form's `begin` and
 * `end`: `name[0]`, the name, `name[1]`; per argument `key[0]`, the key, `key[1]`, the value (a string as it is, any other
 * value as JSON), `value`; then `close`. `markers`: the tags some vocabularies hold as added tokens.
 */
export interface XmlCallForm {
  readonly name: readonly [string, string];
  readonly key: readonly [string, string];
  readonly value: string;
  readonly close: string;
  readonly markers: readonly string[];
}

/** How one syntax writes its calls. */
export interface ToolCallForm {
  /** The text that opens a call (`list`: the list of calls). */
  readonly begin: string;
  /** The text that closes a call; none: the call (or list) runs to the end of the reply. */
  readonly end?: string;
  /** Whether the opening is the start of the call's own JSON (`json`), not a marker before it. */
  readonly beginsJson?: boolean;
  /** Other openings a call may have, read as `begin` is (models write `json`'s compact, or with OpenAI's `"type"`). */
  readonly alsoBegins?: readonly string[];
  /** Whether what follows the opening is a JSON list of calls rather than one call. */
  readonly list?: boolean;
  /** Without `end`: the special text between a call's name and its JSON arguments, each call opened anew. */
  readonly args?: string;
  /** With `args`: the special text between a call's name and the id the model gives it, where it writes one. */
  readonly id?: string;
  /**
   * Each call between `begin` and `end` inside the block: the call's kind (`function`), `sep`, its name, a newline and
   * its arguments' JSON fenced as ```json (DeepSeek's); calls after the first start on a new line.
   */
  readonly each?: { readonly begin: string; readonly sep: string; readonly end: string };
  /** Between `begin` and `end`: the call's name and arguments in tags (see {@link XmlCallForm}). */
  readonly xml?: XmlCallForm;
  /**
   * With `end`: the code fence that opens the calls after `begin` (a language tag may follow it); `end`, the fence's
   * close, is looked for after it. Text after `begin` that does not open the fence holds no call.
   */
  readonly fence?: string;
  /** The name of a tool that calls nothing: the model's way to answer in text after the calls (Cohere's). */
  readonly direct?: string;
}

/** Each syntax's form. */
export const TOOL_CALL_SYNTAX = {
  hermes: { begin: '<tool_call>', end: '</tool_call>' },
  json: { begin: '{"name": ', beginsJson: true, alsoBegins: ['{"name":"', '{"type": "function", "name": ', '{"type":"function","name":"'] },
  mistral: { begin: '[TOOL_CALLS]', list: true },
  'mistral-args': { begin: '[TOOL_CALLS]', args: '[ARGS]', id: '[CALL_ID]' },
  granite: { begin: '<|tool_call|>', list: true },
  deepseek: { begin: '<｜tool▁calls▁begin｜>', end: '<｜tool▁calls▁end｜>', each: { begin: '<｜tool▁call▁begin｜>', sep: '<｜tool▁sep｜>', end: '<｜tool▁call▁end｜>' } },
  'command-r': { begin: '<|START_ACTION|>', end: '<|END_ACTION|>', list: true },
  // As Command R+'s template renders a call: `Action:\n```json\n[\n    {\n        "tool_name": "add",\n        "parameters": {…}\n    }\n]```\n`.
  'command-r-plus': { begin: 'Action:', end: '```', fence: '```', list: true, direct: 'directly-answer' },
  // The calls' opening, for completeness: the reply object is written and read by its own code (the generic branch of
  // xgrammar-factory, `chat/generic-reply.ts`), not by the marker machinery; it holds no marker token.
  generic: { begin: '{"tool_call', beginsJson: true },
  // The call's recipient, which its message's header opens with; written and read by their own code (harmonyCalls in
  // xgrammar-factory, `chat/harmony.ts`).
  harmony: { begin: HARMONY_CALL },
  // As Qwen3-Coder's template renders a call: `<tool_call>\n<function=add>\n<parameter=a>\n2\n</parameter>\n</function>\n</tool_call>`.
  'qwen-xml': { begin: '<tool_call>', end: '</tool_call>', xml: { name: ['\n<function=', '>\n'], key: ['<parameter=', '>\n'], value: '\n</parameter>\n', close: '</function>\n', markers: [] } },
  // As GLM-4.5's renders one: `<tool_call>add\n<arg_key>a</arg_key>\n<arg_value>2</arg_value>\n</tool_call>`.
  glm: {
    begin: '<tool_call>',
    end: '</tool_call>',
    xml: { name: ['', '\n'], key: ['<arg_key>', '</arg_key>\n<arg_value>'], value: '</arg_value>\n', close: '', markers: ['<arg_key>', '</arg_key>', '<arg_value>', '</arg_value>'] },
  },
} as const satisfies Record<ToolCallSyntax, ToolCallForm>;

/**
 * The syntax a chat template teaches: `deepseek` where it writes `<｜tool▁calls▁begin｜>`, `command-r` where it writes
 * `<|START_ACTION|>`, `command-r-plus` where it asks for `Action:` and a ```json list of `"tool_name"` objects,
 * `qwen-xml` where it writes `<function=` and `<parameter=`, `glm` where it writes `<arg_key>` and `<arg_value>`,
 * `hermes` where it writes `<tool_call>` otherwise, `granite` where it writes `<|tool_call|>`, `mistral-args` where it
 * writes `[TOOL_CALLS]` and `[ARGS]`, `mistral` where it writes `[TOOL_CALLS]` alone, `json` for Llama 3's (it renders calls as `"parameters"` objects and tool results in the `ipython` role). `generic` where it shows no tools
 * (`rendersTools` false), and where it shows them but writes calls in none of these forms: the model is then told the
 * generic reply's form in the system message, rather than held to a syntax it never saw (llama.cpp likewise falls back
 * to its generic form). `hermes` without a template (prompts the caller writes).
 */
export function toolCallSyntaxOf(chatTemplate: string | undefined, rendersTools = true): ToolCallSyntax {
  if (!chatTemplate) return 'hermes';
  if (isHarmonyTemplate(chatTemplate)) return 'harmony';
  if (!rendersTools) return 'generic';
  if (chatTemplate.includes(TOOL_CALL_SYNTAX.deepseek.begin)) return 'deepseek';
  if (chatTemplate.includes(TOOL_CALL_SYNTAX['command-r'].begin)) return 'command-r';
  if (chatTemplate.includes(TOOL_CALL_SYNTAX['command-r-plus'].begin) && chatTemplate.includes('```json') && chatTemplate.includes('"tool_name"')) return 'command-r-plus';
  // (both open their calls with Hermes' `<tool_call>` too; Seed-OSS's tags of the same shape open with `<seed:tool_call>`,
  // a form not built: such templates get the generic reply rather than tags they never saw)
  if (chatTemplate.includes('<seed:tool_call>')) return 'generic';
  if (chatTemplate.includes('<function=') && chatTemplate.includes('<parameter=')) return 'qwen-xml';
  if (chatTemplate.includes('<arg_key>') && chatTemplate.includes('<arg_value>')) return 'glm';
  if (chatTemplate.includes(TOOL_CALL_SYNTAX.hermes.begin)) return 'hermes';
  if (chatTemplate.includes(TOOL_CALL_SYNTAX.granite.begin)) return 'granite';
  if (chatTemplate.includes(TOOL_CALL_SYNTAX.mistral.begin)) return chatTemplate.includes(TOOL_CALL_SYNTAX['mistral-args'].args) ? 'mistral-args' : 'mistral';
  return chatTemplate.includes('"parameters"') && (chatTemplate.includes('ipython') || chatTemplate.includes('<|python_tag|>')) ? 'json' : 'generic';
}

/**
 * The markers a syntax writes that vocabularies hold as added tokens (Qwen's `<tool_call>` and `</tool_call>`;
 * DeepSeek's five; Mistral's `[TOOL_CALLS]`, which a tokenizer declares special and decoding would drop): the constraint lets the
 * grammar write them as those tokens, and the reply's text keeps them for the splitter.
 */
export function markerTokensOf(syntax: ToolCallSyntax): readonly string[] {
  const form: ToolCallForm = TOOL_CALL_SYNTAX[syntax];
  // Llama 3's opening is the call's own JSON, no marker; Command R+'s `Action:` and fences are text; harmony's headers
  // are its special tokens.
  if (form.beginsJson || form.fence) return [];
  if (syntax === 'harmony') return HARMONY_TOKENS;
  return [form.begin, form.end, form.args, form.id, form.each?.begin, form.each?.sep, form.each?.end, ...(form.xml?.markers ?? [])].filter((t): t is string => t !== undefined);
}

/**
 * The added tokens a response format writes as text: its thought's tags (Qwen3's `<think>` and `</think>` are added
 * tokens, which a model writes whole) and its tool-call syntax's marker, if it has them. The grammar's vocabulary
 * leaves added tokens out unless named here.
 */
export function writtenTokens(format: ResponseFormat): readonly string[] {
  // A tag may be several special tokens with text between them (harmony's `<|channel|>analysis<|message|>`).
  const thought = format.thought ? [format.thought.open, format.thought.close, format.thought.answer ?? ''].flatMap((t) => [t, ...(t.match(/<\|[a-z_]+\|>/g) ?? [])]).filter((t) => t) : [];
  const syntax = format.type === 'tool_calls' ? (format.syntax ?? 'hermes') : undefined;
  const marker = typeof syntax === 'string' && Object.hasOwn(TOOL_CALL_SYNTAX, syntax) ? markerTokensOf(syntax) : [];
  return [...thought, ...marker].filter((t) => typeof t === 'string');
}
