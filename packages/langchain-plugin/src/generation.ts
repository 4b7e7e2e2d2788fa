/**
 * One generation on the shared engine, tied to the caller's lifetime: the caller's AbortSignal (LangChain folds a
 * call's `timeout` into it; the model's joins it once the call has its turn) stops the engine between two steps, and
 * so does leaving the stream of pieces early, so an abandoned call never keeps the engine, and the calls queued
 * behind it, busy. `generateChunks` is the sequence both models stream a call through.
 */
import type { NewTokenIndices } from '@langchain/core/callbacks/base';
import type { CallbackManagerForLLMRun } from '@langchain/core/callbacks/manager';
import { ModelAbortError } from '@langchain/core/errors';
import { AIMessageChunk, type UsageMetadata } from '@langchain/core/messages';
import type { GenerationChunk } from '@langchain/core/outputs';
import type { AsyncCaller } from '@langchain/core/utils/async_caller';
import type { Engine, GenerationResult, PromptInput, StreamOptions } from './core.js';
import type { CallPlan, ReasonerRuntime } from './runtime.js';

/** A running generation: its text as it comes, then its result. */
interface Generation {
  /** The non-empty text of each generated token (a token that completes no character gives none). */
  pieces: AsyncIterable<string>;
  /** The engine's result; errors surface through `pieces` first. */
  result: Promise<GenerationResult>;
}

/** Starts a generation of one sequence (callers read the first row of the result). */
function startGeneration(
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
  return new Promise((granted, refused) => {
    const abandon = () => {
      release();
      granted({ signal, release });
    };
    signal?.addEventListener('abort', abandon, { once: true });
    // The callable never fails, so the caller's retries never come into it, only its queue does, and nothing it
    // throws is lost there: a timer Node cannot set (the options refuse such a timeout) fails the call, which would
    // otherwise wait for ever.
    void caller.call(() => {
      signal?.removeEventListener('abort', abandon);
      try {
        granted({ signal: withTimeout(signal, timeout), release });
      } catch (err) {
        release();
        refused(err);
      }
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
function abortError(signal: AbortSignal | undefined, partial: AIMessageChunk): ModelAbortError {
  const reason = signal?.reason as { name?: unknown } | undefined;
  const why = reason?.name === 'TimeoutError' ? 'timed out' : 'was aborted';
  return new ModelAbortError(`the generation ${why} after ${partial.usage_metadata?.output_tokens ?? 0} tokens`, partial);
}

/** What a model makes of one generation: chunks of its own kind (text, or messages) from the text and the result. */
export interface ChunkMaker<C extends GenerationChunk> {
  /** The chunk of a piece of text as it comes, if it shows anything yet. */
  piece(text: string): C | undefined;
  /** The usage to report: the runtime's, with what only the model counts (the chat model's reasoning tokens). */
  usage?(usage: UsageMetadata, result: GenerationResult): UsageMetadata;
  /** The chunk of what was held back until the end, if any (not reached when the generation was aborted). */
  rest?(result: GenerationResult): C | undefined;
  /** The last chunk, without text: the usage and the response metadata. */
  last(usage: UsageMetadata, metadata: Record<string, unknown>): C;
}

/** One call of a model: what it generates, with what, and who hears of its chunks. */
export interface ModelCall {
  input: PromptInput;
  /** The call's plan (its reasoners and settings, for the response metadata). */
  plan: CallPlan;
  /** The engine options it runs with: the plan's, or the chat model's built on them. */
  options: Omit<StreamOptions, 'signal'>;
  /** The call's own signal (LangChain's, its `timeout` folded in). */
  signal: AbortSignal | undefined;
  runManager?: CallbackManagerForLLMRun;
  /** Which prompt's completion the chunks are, for callbacks (the prompts of one `generate` share its run). */
  indices?: NewTokenIndices;
}

/**
 * Streams one call: waits for its turn (`takeTurn`), then yields the chunks `maker` makes of the text as it comes and
 * of the result, each reported to callbacks (LangGraph's "messages" mode, tracers), the last one with the usage and
 * response metadata, as LangChain's OpenAI models report theirs. An aborted or timed-out generation throws
 * `ModelAbortError` carrying what was written. The turn is given back however the call ends.
 */
export async function* generateChunks<C extends GenerationChunk>(runtime: ReasonerRuntime, caller: AsyncCaller, call: ModelCall, maker: ChunkMaker<C>): AsyncGenerator<C> {
  const reported = async (chunk: C) => {
    await call.runManager?.handleLLMNewToken(chunk.text, call.indices, undefined, undefined, undefined, { chunk });
    return chunk;
  };
  const { signal, release } = await takeTurn(caller, call.signal, runtime.timeout);
  try {
    const generation = startGeneration(runtime.engine, call.input, call.options, signal);
    for await (const text of generation.pieces) {
      const chunk = maker.piece(text);
      if (chunk) yield await reported(chunk);
    }
    const result = await generation.result;
    const usage = maker.usage ? maker.usage(runtime.usage(result), result) : runtime.usage(result);
    const metadata = runtime.responseMetadata(call.plan, result);
    if (result.rows[0]!.finishReason === 'abort') {
      throw abortError(signal, new AIMessageChunk({ content: result.rows[0]!.text, usage_metadata: usage, response_metadata: metadata }));
    }
    const rest = maker.rest?.(result);
    if (rest) yield await reported(rest);
    yield await reported(maker.last(usage, metadata));
  } finally {
    release();
  }
}
