/**
 * Answers in Ollama's words: a chat choice's deltas as `/api/chat` messages (`content`, `thinking`, `tool_calls` whose
 * arguments are objects) or `/api/generate` responses, the closing chunk's counts and durations (nanoseconds), and
 * log-probabilities as Ollama lists them.
 */
import type { GenerationResult } from '../generate/types.js';
import type { chatLogprobs } from './logprobs.js';

/** A chat delta's or message's fields, as the OpenAI chat endpoint writes them. */
export interface ChatFields {
  content?: string | null;
  reasoning_content?: string;
  tool_calls?: { function: { name: string; arguments: string } }[];
}

/** An Ollama message of the assistant. */
export interface OllamaMessage {
  role: 'assistant';
  content: string;
  thinking?: string;
  tool_calls?: { function: { name: string; arguments: unknown } }[];
}

/** An assistant message from a chat delta's or message's fields: a call's arguments as the object their JSON is (kept as text where it is none). */
export function ollamaMessage(fields: ChatFields): OllamaMessage {
  const message: OllamaMessage = { role: 'assistant', content: fields.content ?? '' };
  if (fields.reasoning_content) message.thinking = fields.reasoning_content;
  if (fields.tool_calls?.length) {
    message.tool_calls = fields.tool_calls.map((c) => {
      let args: unknown = c.function.arguments;
      try {
        args = JSON.parse(c.function.arguments);
      } catch {
        // not JSON: the text as the model wrote it
      }
      return { function: { name: c.function.name, arguments: args } };
    });
  }
  return message;
}

/** Ollama's `logprobs`: each token with its log-probability and alternatives (from the chat endpoint's shape). */
export function ollamaLogprobs(logprobs: ReturnType<typeof chatLogprobs> | null): { token: string; logprob: number; top_logprobs: { token: string; logprob: number }[] }[] | undefined {
  return logprobs?.content.map((e) => ({ token: e.token, logprob: e.logprob, top_logprobs: e.top_logprobs.map((t) => ({ token: t.token, logprob: t.logprob })) }));
}

/** The closing chunk's fields: why the answer ended, the tokens read and written, the time each took (ns). */
export function ollamaDone(result: GenerationResult, doneReason: string): Record<string, unknown> {
  const ns = (ms: number) => Math.round(ms * 1e6);
  const { promptTokens, completionTokens } = result.usage;
  const { prefillMs, msPerToken, totalMs } = result.timing;
  return {
    done: true,
    done_reason: doneReason,
    total_duration: ns(totalMs),
    load_duration: 0,
    prompt_eval_count: promptTokens,
    prompt_eval_duration: ns(prefillMs),
    eval_count: completionTokens,
    eval_duration: ns(msPerToken * Math.max(0, completionTokens - 1)),
  };
}

/** Ollama's reason an answer ended: its token limit, or a stop (end of text, a stop string, tool calls). */
export function ollamaDoneReason(finish: string): string {
  return finish === 'length' ? 'length' : 'stop';
}
