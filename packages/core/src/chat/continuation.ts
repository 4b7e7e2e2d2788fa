/**
 * Prefilled assistant turns: a conversation whose last message is the assistant's own beginning (vLLM's
 * `continue_final_message`, Anthropic's and Ollama's prefill) is rendered, then cut where that message's text ends,
 * so that the reply continues it instead of opening a new turn.
 */

/**
 * `rendered` (the conversation as the template writes it, with no generation prompt) cut right after the last
 * occurrence of `finalText`; undefined when the template does not write the final message's text as given.
 */
export function cutAfterFinalMessage(rendered: string, finalText: string): string | undefined {
  const at = rendered.lastIndexOf(finalText);
  return at === -1 ? undefined : rendered.slice(0, at + finalText.length);
}
