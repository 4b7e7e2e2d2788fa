/** vLLM's `truncate_prompt_tokens`: how many of its prompt's last tokens a request runs, and encoding just those. */
import { fixedLatentSteps, parseLatentPolicy } from '../generate/decode-loop.js';
import { badRequest } from './errors.js';
import type { Loaded } from './served.js';
import type { ParsedRequest } from './requests.js';

/**
 * How many of its prompt's last tokens a request runs (vLLM's `truncate_prompt_tokens`); undefined: all. -1 keeps as
 * many as the context holds with the positions its fixed latent steps take after the prompt (steps that fill the
 * context are the latent policy's fault). More than the context is refused, as vLLM refuses a truncation past
 * max_model_len, whatever the prompt's length.
 */
export function keptPromptTokens(l: Loaded, request: ParsedRequest): number | undefined {
  const given = request.truncatePromptTokens;
  if (given === undefined) return undefined;
  if (given > l.contextLength) throw badRequest(`truncate_prompt_tokens is ${given}, more than the model's context length (max_model_len) of ${l.contextLength}; choose a smaller one, or -1`, 'truncate_prompt_tokens');
  if (given !== -1) return given;
  const steps = fixedLatentSteps(request.options.latent === undefined ? undefined : parseLatentPolicy(request.options.latent));
  // (no prompt, however cut, fits beside these steps: the policy is refused, not the truncation)
  if (steps >= l.contextLength) throw badRequest(`reasonplug.latent fixed:${steps} leaves no room for a prompt in the context length of ${l.contextLength}: K must be below the context length`, 'reasonplug.latent');
  return l.contextLength - steps;
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
