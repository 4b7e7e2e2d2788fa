/**
 * Writing answers: a JSON body, an error in the shape of the API asked (OpenAI's, Anthropic's or Ollama's), and the
 * two stream formats (server-sent events, JSON lines), written no faster than the client reads.
 */
import type { ServerResponse } from 'node:http';
import type { HttpError } from './errors.js';

/** Answers `body` as JSON with `status` (and `headers`). */
export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

/**
 * Cuts an ended answer whose client takes nothing of what is left to send for `ms`, as a streamed answer is cut while
 * it runs: the unsent rest (a non-streamed answer of many choices with logprobs is megabytes) is otherwise held for as
 * long as the connection stays open. On the socket's own timeout, which Node restarts on every part of a write the
 * client takes (a non-streamed answer is one write: a timer of our own would see it complete only whole, and cut a
 * client reading slowly but steadily). `keepAliveMs` is the server's keep-alive timeout, which Node sets on a socket
 * left idle when the answer finishes; a socket that goes on to a pipelined request's answer gets back the timeout it
 * had (the request may take longer than `ms` to answer). Where the two are equal they cannot be told apart, and the
 * socket keeps `ms`.
 */
export function limitUnsentTail(res: ServerResponse, ms: number, keepAliveMs: number): void {
  const socket = res.socket;
  if (!socket || !res.writableEnded || res.writableFinished || res.destroyed) return;
  const before = socket.timeout ?? 0;
  const cut = () => res.destroy();
  res.setTimeout(ms, cut);
  res.once('finish', () => {
    res.off('timeout', cut);
    if (!socket.destroyed && socket.timeout === ms && ms !== keepAliveMs) socket.setTimeout(before);
  });
}

/** The error shapes of the APIs served: OpenAI's, Anthropic's (`/v1/messages`) and Ollama's (`/api/*`). */
type ErrorDialect = 'openai' | 'anthropic' | 'ollama';

/** Answers an error, unless the answer already started (a stream then ends with an error event). */
export function sendError(res: ServerResponse, err: HttpError, dialect: ErrorDialect = 'openai'): void {
  // An answer already ended (a Responses or Messages stream closes with its own error event) takes nothing more.
  if (res.destroyed || res.writableEnded) return;
  const body = dialect === 'anthropic' ? anthropicError(err, res) : dialect === 'ollama' ? { error: err.message } : err.body();
  if (res.headersSent) {
    // Mid-stream: the stream's own last line (Ollama's are JSON lines, the others server-sent events).
    res.end(dialect === 'ollama' ? `${JSON.stringify(body)}\n` : `data: ${JSON.stringify(body)}\n\n`);
    return;
  }
  sendJson(res, err.status, body, err.headers);
}

/**
 * An error in Anthropic's shape, `{"type": "error", "error": {"type", "message"}, "request_id"}`, its type from the
 * status, its id the answer's `request-id`.
 */
export function anthropicError(err: HttpError, res: ServerResponse): { type: 'error'; error: { type: string; message: string }; request_id: string | null } {
  const types: Record<number, string> = { 400: 'invalid_request_error', 401: 'authentication_error', 403: 'permission_error', 404: 'not_found_error', 405: 'invalid_request_error', 408: 'timeout_error', 413: 'request_too_large', 429: 'rate_limit_error', 503: 'overloaded_error' };
  const id = res.getHeader('request-id');
  return { type: 'error', error: { type: types[err.status] ?? 'api_error', message: err.message }, request_id: typeof id === 'string' ? id : null };
}

/**
 * Settles once `res` can take more: at once unless its last write filled the socket's buffer, else when that drains
 * or the connection closes. A stream that waits on it before each event writes no faster than its client reads; one
 * that did not kept the whole reply in memory for a client that stopped reading (86 MiB for one stream of 64 choices
 * with 20 alternatives per token), as the engine generates on. The events not yet sent wait in the engine's stream.
 * A client that takes nothing for `deadlineMs` is cut off: it would hold its place in the batch for ever.
 */
export function flowing(res: ServerResponse, deadlineMs: number): Promise<void> | undefined {
  if (!res.writableNeedDrain) return undefined;
  return new Promise((resolve) => {
    const go = () => {
      clearTimeout(timer);
      res.off('drain', go).off('close', go);
      resolve();
    };
    // (destroyed, the answer closes: its row is aborted as a client's leaving aborts it)
    const timer = setTimeout(() => res.destroy(), deadlineMs);
    res.on('drain', go).on('close', go);
  });
}

/**
 * Opens a server-sent event stream, unless its keep-alives already did (its `Connection` header Node's own: a
 * client's `close` and HTTP/1.0 are kept to). `X-Accel-Buffering: no` has nginx pass each event on as it comes, where
 * its default `proxy_buffering on` would hold them back and send them in bursts.
 */
export function openEventStream(res: ServerResponse): void {
  if (res.headersSent) return;
  res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache', 'X-Accel-Buffering': 'no' });
  res.flushHeaders();
}

/** A comment line, which event-stream clients skip: the keep-alive of a stream of OpenAI's shapes (request-runner.ts). */
export const SSE_KEEP_ALIVE = ': keep-alive\n\n';

/** A server-sent event stream of data lines, OpenAI's `data: [DONE]` last. */
export class Sse {
  constructor(private readonly res: ServerResponse) {
    openEventStream(res);
  }
  send(data: object): void {
    if (!this.res.destroyed) this.res.write(`data: ${JSON.stringify(data)}\n\n`);
  }
  done(): void {
    if (!this.res.destroyed) this.res.end('data: [DONE]\n\n');
  }
}

/**
 * Ollama's stream: one JSON object per line. The format has no comment to keep a stream alive with while it waits for
 * its first token: a proxy's read timeout must cover its queue and prefill.
 */
export class JsonLines {
  constructor(private readonly res: ServerResponse) {
    // (unbuffered by nginx, as an event stream is)
    res.writeHead(200, { 'Content-Type': 'application/x-ndjson', 'X-Accel-Buffering': 'no' });
  }
  send(line: object): void {
    if (!this.res.destroyed) this.res.write(`${JSON.stringify(line)}\n`);
  }
  end(line: object): void {
    if (!this.res.destroyed) this.res.end(`${JSON.stringify(line)}\n`);
  }
}
