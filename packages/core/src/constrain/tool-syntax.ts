/**
 * How models write tool calls, as their chat templates teach them: the tool-call constraint writes calls this
 * way, and the chat splitters read them back.
 */

/**
 * `hermes`: `<tool_call>{"name": …, "arguments": {…}}</tool_call>` blocks, one per line (Hermes, Qwen 2.5/3,
 * SmolLM3 and most templates that render tools); `json`: the reply ends in one JSON object
 * `{"name": …, "parameters": {…}}` (Llama 3.1–3.3, whose templates render a call that way and refuse several).
 */
export type ToolCallSyntax = 'hermes' | 'json';

/** The text that opens a call, and the text that closes it (none: the call runs to the end of the reply and its opening is part of it). */
export const TOOL_CALL_SYNTAX = {
  hermes: { begin: '<tool_call>', end: '</tool_call>' },
  json: { begin: '{"name": ' },
} as const satisfies Record<ToolCallSyntax, { begin: string; end?: string }>;

/**
 * The syntax a chat template teaches: `json` for Llama 3's (it renders calls as `"parameters"` objects and tool
 * results in the `ipython` role) unless it writes `<tool_call>` blocks; `hermes` otherwise.
 */
export function toolCallSyntaxOf(chatTemplate: string | undefined): ToolCallSyntax {
  if (!chatTemplate || chatTemplate.includes(TOOL_CALL_SYNTAX.hermes.begin)) return 'hermes';
  return chatTemplate.includes('"parameters"') && (chatTemplate.includes('ipython') || chatTemplate.includes('<|python_tag|>')) ? 'json' : 'hermes';
}
