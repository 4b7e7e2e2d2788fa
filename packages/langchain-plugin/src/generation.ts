/**
 * One generation on the shared engine, tied to the caller's lifetime: the caller's AbortSignal (LangChain folds a
 * call's `timeout` into it; the model's joins it once the call has its turn) stops the engine between two steps, and
 * so does leaving the stream of pieces early, so an abandoned call never keeps the engine, and the calls queued
 * behind it, busy.
 */
import { ModelAbortError } from '@langchain/core/errors';
import type { AIMessageChunk } from '@langchain/core/messages';
import type { AsyncCaller } from '@langchain/core/utils/async_caller';
import type { Engine, GenerationResult, PromptInput, StreamOptions } from './core.js';

/** A running generation: its text as it comes, then its result. */
export interface Generation {
  /** The non-empty text of each generated token (a token that completes no character gives none). */
  pieces: AsyncIterable<string>;
  /** The engine's result; errors surface through `pieces` first. */
  result: Promise<GenerationResult>;
}

/** Starts a generation of one sequence (callers read the first row of the result). */
export function startGeneration(
  engine: Engine,
  input: PromptInput,
  options: Omit<StreamOptions, 'signal'>,
  signal: AbortSignal | undefined,
): Generation {
  const stop = new AbortController();
  const forward = () => stop.abort(signal?.reason);
  // Aborted before the call is made, the engine is never asked for a token (after, it could write a few first).
  if (signal?.aborted) forward();
  else signal?.addEventListener('abort', forward, { once: true });
  const stream = engine.stream(input, { ...options, signal: stop.signal });
  const result = stream.result.finally(() => signal?.removeEventListener('abort', forward));
  result.catch(() => {}); // a caller that stops at the error from `pieces` never awaits this
  async function* pieces(): AsyncGenerator<string> {
    try {
      for await (const token of stream) if (token.text) yield token.text;
    } finally {
      // Reached early when the consumer stops iterating: end the engine's generation too (no-op once done).
      stop.abort();
    }
  }
  return { pieces: pieces(), result };
}

/** A call's place among the model's running generations. */
export interface Turn {
  /** What stops the call's generation: its own signal, joined by the model's timeout counted from the turn. */
  signal: AbortSignal | undefined;
  /** Gives the place back. */
  release: () => void;
}

/**
 * Waits for a place among the model's running generations (LangChain's `maxConcurrency`, kept by the model's caller
 * as ChatOpenAI's requests are) and resolves to it: a call holds it for its whole generation, streaming included,
 * since a local engine is busy until the last token. The model's `timeout` (milliseconds) starts with the turn, as
 * ChatOpenAI's counts per request once its queue lets it go, so a call is not timed out for waiting behind others;
 * a call's own `timeout` (in `signal`) covers the wait, as LangChain's RunnableConfig.timeout does. A call aborted
 * while it waits goes on at once without a place (the engine then stops it before its first token), and its turn
 * passes on.
 */
export function takeTurn(caller: AsyncCaller, signal: AbortSignal | undefined, timeout: number | undefined): Promise<Turn> {
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  if (signal?.aborted) return Promise.resolve({ signal, release });
  return new Promise((granted) => {
    const abandon = () => {
      release();
      granted({ signal, release });
    };
    signal?.addEventListener('abort', abandon, { once: true });
    // The callable never fails, so the caller's retries never come into it: only its queue does.
    void caller.call(() => {
      signal?.removeEventListener('abort', abandon);
      granted({ signal: withTimeout(signal, timeout), release });
      return released;
    });
  });
}

/** `signal` joined by a timeout of `ms` from now, where one is given. */
function withTimeout(signal: AbortSignal | undefined, ms: number | undefined): AbortSignal | undefined {
  if (ms === undefined) return signal;
  const timeout = AbortSignal.timeout(Math.ceil(ms)); // (whole milliseconds only)
  return signal ? AbortSignal.any([signal, timeout]) : timeout;
}

/** The error an aborted generation raises, carrying what was generated before the abort. */
export function abortError(signal: AbortSignal | undefined, partial: AIMessageChunk): ModelAbortError {
  const reason = signal?.reason as { name?: unknown } | undefined;
  const why = reason?.name === 'TimeoutError' ? 'timed out' : 'was aborted';
  return new ModelAbortError(`the generation ${why} after ${partial.usage_metadata?.output_tokens ?? 0} tokens`, partial);
}
