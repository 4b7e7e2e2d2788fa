/** The usage objects of answers: OpenAI's, a Responses answer's, and the latent steps beside any API's counts. */
import type { GenerationResult } from '../generate/types.js';
import type { ResponseUsage } from './responses-output.js';

/**
 * The latent steps a generation ran (LiteReason, with a projector) and the reasoning tokens they stood for (where the
 * projector declares `tokensPerStep`), for the top level of a usage object, beside the API's own counts: the steps
 * are no tokens, so no token detail holds them. The OpenAI and Anthropic SDKs keep keys they do not know.
 */
export function latentUsage({ usage }: GenerationResult): { latent_steps?: number; reasoning_tokens_saved?: number } {
  if (usage.latentSteps === undefined) return {};
  return { latent_steps: usage.latentSteps, ...(usage.reasoningTokensSaved !== undefined ? { reasoning_tokens_saved: usage.reasoningTokensSaved } : {}) };
}

/** A response's usage (one row). */
export function responseUsage(result: GenerationResult, reasoningTokens: number): ResponseUsage & ReturnType<typeof latentUsage> {
  const { promptTokens, completionTokens, cachedPromptTokens } = result.usage;
  return {
    input_tokens: promptTokens,
    input_tokens_details: { cached_tokens: cachedPromptTokens ?? 0, cache_write_tokens: 0 },
    output_tokens: completionTokens,
    output_tokens_details: { reasoning_tokens: reasoningTokens },
    total_tokens: promptTokens + completionTokens,
    ...latentUsage(result),
  };
}

/**
 * OpenAI's usage: each prompt counted once, however many choices (`n`) were made of it; cached tokens as OpenAI's;
 * with a prediction, its accepted and rejected tokens; with a projector, the latent steps of every choice.
 */
export function usageJson(result: GenerationResult, n: number) {
  const promptTokens = result.usage.promptTokens / n;
  const { completionTokens, acceptedPredictionTokens: accepted, rejectedPredictionTokens: rejected } = result.usage;
  return {
    prompt_tokens: promptTokens,
    completion_tokens: completionTokens,
    total_tokens: promptTokens + completionTokens,
    prompt_tokens_details: { cached_tokens: (result.usage.cachedPromptTokens ?? 0) / n },
    ...latentUsage(result),
    ...(accepted !== undefined ? { completion_tokens_details: { accepted_prediction_tokens: accepted, rejected_prediction_tokens: rejected ?? 0 } } : {}),
  };
}
