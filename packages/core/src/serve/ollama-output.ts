/**
 * Answers in Ollama's words: a chat choice's deltas as `/api/chat` messages (`content`, `thinking`, `tool_calls` whose
 * arguments are objects) or `/api/generate` responses, the closing chunk's counts and durations (nanoseconds), and
 * log-probabilities as Ollama lists them.
 */
import { randomBytes } from 'node:crypto';
import type { GenerationResult } from '../generate/types.js';
import type { chatLogprobs } from './logprobs.js';

/** A chat delta's or message's fields, as the OpenAI chat endpoint writes them. */
export interface ChatFields {
  content?: string | null;
  reasoning_content?: string;
  tool_calls?: { id?: string; index?: number; function: { name: string; arguments: string } }[];
}

/** An Ollama message of the assistant. */
export interface OllamaMessage {
  role: 'assistant';
  content: string;
  thinking?: string;
  tool_calls?: { id: string; function: { index: number; name: string; arguments: unknown } }[];
}

/**
 * An assistant message from a chat delta's or message's fields: a call's arguments as the object their JSON is (kept
 * as text where it is none), with its id and its place among the reply's calls (a streamed delta's own `index`, else
 * its place in the message), which Ollama always sends.
 */
export function ollamaMessage(fields: ChatFields): OllamaMessage {
  const message: OllamaMessage = { role: 'assistant', content: fields.content ?? '' };
  if (fields.reasoning_content) message.thinking = fields.reasoning_content;
  if (fields.tool_calls?.length) {
    message.tool_calls = fields.tool_calls.map((c, i) => {
      let args: unknown = c.function.arguments;
      try {
        args = JSON.parse(c.function.arguments);
      } catch {
        // not JSON: the text as the model wrote it
      }
      return { id: c.id ?? ollamaCallId(), function: { index: c.index ?? i, name: c.function.name, arguments: args } };
    });
  }
  return message;
}

/** A call id as Ollama makes one: `call_` and eight lower-case letters and digits. */
function ollamaCallId(): string {
  const chars = 'abcdefghijklmnopqrstuvwxyz0123456789';
  return `call_${Array.from(randomBytes(8), (b) => chars[b % chars.length]).join('')}`;
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

/**
 * The `done_reason` of a request that only names its model (an empty prompt, no messages): `unload` where its
 * `keep_alive` is zero (a number of seconds, or a duration such as "0s"), as `ollama stop` sends; else `load`.
 * Here the model stays loaded either way: the server serves it until it stops.
 */
export function ollamaLoadReason(keepAlive: unknown): 'load' | 'unload' {
  // (Go's durations: "0", or zeros each with a unit, "0s", "0m0s")
  const zero = keepAlive === 0 || (typeof keepAlive === 'string' && /^[+-]?(0|(0+(\.0*)?(ns|us|µs|ms|s|m|h))+)$/.test(keepAlive));
  return zero ? 'unload' : 'load';
}

/** Ollama's reason an answer ended: its token limit, or a stop (end of text, a stop string, tool calls). */
export function ollamaDoneReason(finish: string): string {
  return finish === 'length' ? 'length' : 'stop';
}
