/**
 * Running a request in the engine: its admission (admission.ts), the engine call, its stream read no faster than the
 * client takes the answer, a stream's keep-alives while its first token (or its prompt's scores) is awaited, and what
 * it adds to the metrics and to its record.
 */
import type { ServerResponse } from 'node:http';
import type { GenerationStream, StreamOptions } from '../engine.js';
import type { GenerationResult, TokenEvent } from '../generate/types.js';
import type { PromptInput } from '../runtime/protocol.js';
import type { TextTokenizer } from '../tokenizer/tokenizer.js';
import type { Admission, Slot } from './admission.js';
import { flowing, openEventStream } from './answer-writers.js';
import type { ServerMetrics } from './metrics.js';
import type { RequestRecord } from './request-log.js';
import type { RequestRecords } from './request-records.js';
import type { ParsedRequest } from './requests.js';
import type { Loaded } from './served.js';
import { TokenClock } from './token-clock.js';

/** The rows a call of `input` runs in the engine: one per prompt (a call's n choices are listed as prompts of their own). */
function rowsOf(input: PromptInput): number {
  if ('promptIds' in input) return typeof input.promptIds[0] === 'number' ? 1 : input.promptIds.length;
  if ('prompt' in input) return Array.isArray(input.prompt) ? input.prompt.length : 1;
  return 1;
}

/** Each tokenizer's special tokens' texts, listed once asked for. */
const SPECIAL_TEXTS = new WeakMap<TextTokenizer, string[]>();

/** The text of every special token of `tokenizer` (BOS, EOS, a chat turn's markers): what vLLM's `skip_special_tokens: false` keeps. */
function specialTokenTexts(tokenizer: TextTokenizer): string[] {
  let texts = SPECIAL_TEXTS.get(tokenizer);
  if (!texts) {
    texts = [];
    // (an added token's bytes are its text's)
    for (let id = 0; id < tokenizer.vocabSize; id++) if (tokenizer.isSpecial(id)) texts.push(Buffer.from(tokenizer.tokenBytes(id) ?? []).toString('utf8'));
    SPECIAL_TEXTS.set(tokenizer, texts);
  }
  return texts;
}

/** Milliseconds a streamed answer waits for its first token before its stream opens with a keep-alive (and between two). */
export const KEEP_ALIVE_MS = 15_000;

/** Runs requests in the engine, each admitted first, and counts what they did. */
export class RequestRunner {
  constructor(
    private readonly admission: Admission,
    /** The server's metrics, which the runs add to (and routes that answer without a run, such as a scored prompt). */
    readonly metrics: ServerMetrics,
    private readonly records: RequestRecords,
    /** Milliseconds a streamed answer may wait for its client to take what was written (`ServeOptions.sendTimeoutMs`). */
    private readonly sendTimeoutMs: number,
    /** Milliseconds a stream waits for its first token before each keep-alive (`KEEP_ALIVE_MS`, but in tests). */
    private readonly keepAliveMs: number,
  ) {}

  /** Adds what a handler learnt to its request's record, when requests are recorded. */
  note(res: ServerResponse, fields: Partial<RequestRecord>): void {
    this.records.note(res, fields);
  }

  /**
   * Runs one request: admission, the engine call, its metrics; `consume` reads the stream and answers. A streamed
   * answer gives its `keepAlive` text (an event-stream comment, or its API's ping event): while its first token is
   * awaited (queued, or a long prefill), the stream opens after `keepAliveMs` with it, and it is written again every
   * `keepAliveMs`, so that a reverse proxy's read timeout (nginx's `proxy_read_timeout`, 60 s by default) does not cut
   * the stream off. Until then the request's faults are answered with their own status; once the stream opened, they
   * end it, as faults after its first token do.
   */
  async run(
    l: Loaded,
    request: ParsedRequest,
    input: PromptInput,
    res: ServerResponse,
    consume: (stream: GenerationStream, first: IteratorResult<TokenEvent>, rest: AsyncIterator<TokenEvent>, clock: TokenClock) => Promise<string>,
    keepAlive?: string,
  ): Promise<void> {
    this.note(res, { model: request.model });
    // The model name is checked even when the extension lists the reasoners itself.
    const named = l.models.resolve(request.model).map((name) => ({ name }));
    if (request.reasoners) l.models.checkExtension(request.reasoners);
    const reasoners = request.reasoners ?? named;
    const arrival = performance.now();
    const slot: Slot = { rows: rowsOf(input) };
    const { admitted, signal, stopKeepAlive } = this.queue(res, slot, keepAlive);
    await admitted.catch((err: unknown) => {
      // A client gone while queued finished too, aborted (as the metrics' reasons and the request log have it).
      if (signal.aborted) {
        this.note(res, { finishReason: 'abort' });
        this.metrics.countFinished('abort');
        this.metrics.e2e.observe((performance.now() - arrival) / 1000);
      }
      throw err;
    });
    let reason = 'error';
    try {
      if (signal.aborted) return void (reason = 'abort');
      // (vLLM's `skip_special_tokens: false`: every special token's text stays in the reply, beside those it is read by)
      const keepTokens = request.keepSpecialTokens && l.tokenizer ? [...new Set([...(request.options.keepTokens ?? []), ...specialTokenTexts(l.tokenizer)])] : request.options.keepTokens;
      const callOptions: StreamOptions = { ...request.options, ...(keepTokens ? { keepTokens } : {}), reasoners, signal };
      const stream = l.engine.stream(input, callOptions);
      const iterator = stream[Symbol.asyncIterator]();
      // Faults of the request (a bad schema, an unknown reasoner, a prompt too long) surface before the
      // first token: waiting for it lets them be a 400 rather than a broken stream (unless keep-alives opened it).
      const first = await iterator.next().finally(stopKeepAlive);
      const clock = new TokenClock(arrival, this.metrics);
      if (!first.done) clock.tick(first.value.row);
      // A streamed answer takes its next event only once what was written has gone out to the client; one that reads
      // nothing for the send deadline is cut off (its row stops and frees its place), as nginx's send_timeout does.
      const rest: AsyncIterator<TokenEvent> = {
        next: async () => {
          await flowing(res, this.sendTimeoutMs);
          return iterator.next();
        },
      };
      reason = await consume(stream, first, rest, clock);
      clock.end();
      const result = await stream.result;
      // (the engine counts the prompt once per row; the n rows of one prompt share its prefill)
      const promptTokens = result.usage.promptTokens / request.n;
      this.metrics.promptTokens += promptTokens;
      this.note(res, { promptTokens, completionTokens: result.usage.completionTokens });
    } finally {
      stopKeepAlive();
      const finishReason = signal.aborted ? 'abort' : reason;
      this.note(res, { finishReason });
      this.metrics.countFinished(finishReason);
      this.metrics.e2e.observe((performance.now() - arrival) / 1000);
      this.admission.release(slot);
    }
  }

  /**
   * Queues `slot` for the request `res` answers: `signal` aborts once its client goes away before the answer ended
   * (which ends its wait, then its run). With a `keepAlive` text, its stream opens with it after `keepAliveMs` and has
   * it again every `keepAliveMs` until `stopKeepAlive` (or a failed wait) stops them. A full queue throws here,
   * before any keep-alive is due.
   */
  private queue(res: ServerResponse, slot: Slot, keepAlive?: string): { admitted: Promise<void>; signal: AbortSignal; stopKeepAlive: () => void } {
    const controller = new AbortController();
    const gone = () => {
      if (!res.writableFinished) controller.abort();
    };
    // (a request queued twice, scored for echo and then run, may find its client gone already: 'close' has fired)
    if (res.closed) gone();
    else res.on('close', gone);
    const admitted = this.admission.admit(slot, controller.signal);
    const keepingAlive = keepAlive === undefined ? undefined : setInterval(() => this.keepAlive(res, keepAlive), this.keepAliveMs);
    const stopKeepAlive = () => clearInterval(keepingAlive);
    return {
      admitted: admitted.catch((err: unknown) => {
        stopKeepAlive();
        throw err;
      }),
      signal: controller.signal,
      stopKeepAlive,
    };
  }

  /** Opens a stream still waiting for its first token (headers only once) and writes its keep-alive. */
  private keepAlive(res: ServerResponse, text: string): void {
    if (res.destroyed) return;
    openEventStream(res);
    res.write(text);
  }

  /**
   * Runs `work` once the request is admitted (a slot of its own, as any request takes), freeing the slot after. A
   * streamed answer gives its `keepAlive`, written as `run` writes it while `work` waits and runs (a prompt scored
   * before its generation); a fault of `work` after the stream opened then ends the stream with its error event.
   */
  async admitted<T>(res: ServerResponse, work: () => Promise<T>, keepAlive?: string): Promise<T> {
    const slot: Slot = { rows: 1 };
    const { admitted, stopKeepAlive } = this.queue(res, slot, keepAlive);
    await admitted;
    try {
      return await work();
    } finally {
      stopKeepAlive();
      this.admission.release(slot);
    }
  }

  /**
   * Reads the stream of a streamed answer of `choices` choices (one a row) to its end as {@link drain} does, each event
   * given to `choice.token`, and ends each choice once by `choice.end`: in the chunk where its row ends (its last token
   * says so), as OpenAI's and vLLM's do, not once the last of them has; rows an abort ended, which had no last token
   * to say so, once the stream is over.
   */
  async streamChoices(
    stream: GenerationStream,
    first: IteratorResult<TokenEvent>,
    rest: AsyncIterator<TokenEvent>,
    clock: TokenClock,
    choices: number,
    choice: { token(e: TokenEvent): void; end(index: number, reason: string): void },
  ): Promise<GenerationResult> {
    const open = new Set(Array.from({ length: choices }, (_, index) => index));
    const end = (index: number, reason: string) => {
      open.delete(index);
      choice.end(index, reason);
    };
    const result = await this.drain(stream, first, rest, clock, (e) => {
      choice.token(e);
      if (e.finishReason) end(e.row, e.finishReason);
    });
    for (const index of open) end(index, result.rows[index]!.finishReason);
    return result;
  }

  /**
   * Reads a stream to its end, timing its tokens, each event heard by `onEvent` (a streamed answer writes it there),
   * and adds the tokens generated to the metrics.
   */
  async drain(stream: GenerationStream, first: IteratorResult<TokenEvent>, rest: AsyncIterator<TokenEvent>, clock: TokenClock, onEvent?: (e: TokenEvent) => void): Promise<GenerationResult> {
    for (let next = first; !next.done; next = await rest.next()) {
      if (next !== first) clock.tick(next.value.row);
      onEvent?.(next.value);
    }
    const result = await stream.result;
    this.metrics.generationTokens += result.usage.completionTokens;
    return result;
  }
}
