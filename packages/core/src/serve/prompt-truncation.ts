/** vLLM's `truncate_prompt_tokens`: how many of its prompt's last tokens a request runs, and encoding just those. */
import type { Loaded } from './served.js';
import type { ParsedRequest } from './requests.js';

/** How many of its prompt's last tokens a request runs (vLLM's `truncate_prompt_tokens`, -1 the context's); undefined: all. */
export function keptPromptTokens(l: Loaded, request: ParsedRequest): number | undefined {
  return request.truncatePromptTokens === -1 ? l.contextLength : request.truncatePromptTokens;
}

/**
 * The last `keep` tokens of `text` (vLLM's `truncate_prompt_tokens`), encoded from an end of it long enough to give
 * more than that (a few more, so that where it is cut does not change the ones kept): a prompt past the context is
 * cut rather than refused, and an 8 MB one encoded whole would hold the server's thread for a minute.
 */
export function lastTokens(encode: (text: string) => number[], text: string, keep: number): number[] {
  for (let chars = keep * 4; ; chars *= 4) {
    const ids = encode(text.slice(-chars));
    if (chars >= text.length || ids.length > keep + 16) return ids.slice(Math.max(0, ids.length - keep));
  }
}
