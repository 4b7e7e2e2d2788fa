/** Cross-cutting middleware: request logs, caller identification, the OCI error body. */
import type { ErrorRequestHandler, Request, RequestHandler, Response } from 'express';
import type { Logger } from 'pino';
import { RegistryError } from '../errors.js';
import { InvalidKeyError } from '../storage/driver.js';
import type { Access, AuthFailure, Caller } from './access.js';
import { loggedUrl } from './log-fields.js';
import { cutByShutdown } from './open-requests.js';

/**
 * One structured log line per request, written when the response closes (finished or aborted). `status` is null
 * when no response was sent (the connection ended first): no code was answered, and nginx's 499 would say the
 * client hung up, which a server shutting down, or an error that cut the connection, does as well. Credentials
 * that did not verify make it a warning with `authFailure` (why) and `token` (the id they named, if any), as
 * OWASP asks of authentication failures. Query parameters other than the protocol's are redacted: a client may
 * put a token there.
 */
export function requestLog(logger: Logger): RequestHandler {
  return (req, res, next) => {
    const started = process.hrtime.bigint();
    // Read now: once a request is destroyed (a client gone mid-body), Node detaches its socket.
    const remote = req.socket?.remoteAddress;
    const bytes = countBodies(req, res);
    res.once('close', () =>
      guarded(logger, 'request log', () => {
        const caller = res.locals.caller as Caller;
        const failure = res.locals.authFailure as AuthFailure | undefined;
        logger[failure ? 'warn' : 'info'](
          {
            method: req.method,
            url: loggedUrl(req.originalUrl),
            status: res.headersSent ? res.statusCode : null,
            ms: Number(process.hrtime.bigint() - started) / 1e6,
            user: caller?.user ?? null,
            token: caller?.tokenId ?? failure?.tokenId ?? null,
            ...(failure ? { authFailure: failure.reason } : {}),
            bytesIn: bytes.in,
            // Node sends no body for HEAD, whatever a handler writes.
            bytesOut: req.method === 'HEAD' ? 0 : bytes.out,
            completed: res.writableFinished,
            remote,
            userAgent: req.headers['user-agent'],
          },
          'request',
        );
      }),
    );
    next();
  };
}

/**
 * Counts the body bytes that arrived and that were sent, framing left out. Node keeps no such count, and the
 * headers cannot tell (a chunked body has no Content-Length; a body cut short is shorter than its own): its HTTP
 * parser hands each body chunk that arrives to the request's `push()`, read by a handler or not, and handlers hand
 * theirs to the response's `write()` and `end()`, which take them until the response is ended or destroyed.
 */
function countBodies(req: Request, res: Response): { in: number; out: number } {
  const counts = { in: 0, out: 0 };
  const size = (chunk: unknown, encoding: unknown) => {
    if (typeof chunk === 'string') return Buffer.byteLength(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8');
    return chunk instanceof Uint8Array ? chunk.length : 0;
  };
  const push = req.push;
  req.push = function (this: Request, chunk: unknown, encoding?: BufferEncoding) {
    counts.in += size(chunk, encoding);
    return push.call(this, chunk, encoding);
  };
  const sent = (chunk: unknown, encoding: unknown) => {
    if (!res.writableEnded && !res.destroyed) counts.out += size(chunk, encoding);
  };
  const write = res.write;
  res.write = function (this: Response, chunk: unknown, ...rest: unknown[]) {
    sent(chunk, rest[0]);
    return (write as (...a: unknown[]) => boolean).call(this, chunk, ...rest);
  } as Response['write'];
  const end = res.end;
  res.end = function (this: Response, chunk?: unknown, ...rest: unknown[]) {
    sent(chunk, rest[0]);
    return (end as (...a: unknown[]) => Response).call(this, chunk, ...rest);
  } as Response['end'];
  return counts;
}

/**
 * Gives the request and response streams an 'error' listener. Without one, an error emitted on either
 * (a write after the end, a reset while streaming) would be thrown from the event loop and end the
 * process; with it, the error ends only this exchange, which the handler or Node already tears down.
 */
export function containStreamErrors(logger: Logger): RequestHandler {
  return (req, res, next) => {
    const log = (side: string) => (err: Error) =>
      guarded(logger, 'stream error log', () => logger.debug({ err, method: req.method, url: loggedUrl(req.originalUrl), side }, 'stream error'));
    req.on('error', log('request'));
    res.on('error', log('response'));
    next();
  };
}

/** Runs `work` from an event callback, where a throw would end the process; logs instead. */
function guarded(logger: Logger, what: string, work: () => void): void {
  try {
    work();
  } catch (err) {
    try {
      logger.error({ err }, `${what} failed`);
    } catch {
      // The logger itself failed: nothing is left to report with, and the request is over anyway.
    }
  }
}

/**
 * Sets `res.locals.caller` from the request's credentials (401 for credentials that do not verify, which
 * `res.locals.authFailure` then describes).
 */
export function identify(access: Access): RequestHandler {
  return async (req, res, next) => {
    res.locals.caller = await access.identify(req, res);
    next();
  };
}

export const notFound: RequestHandler = (req, _res, next) => {
  next(new RegistryError('UNSUPPORTED', 404, `no such endpoint: ${req.method} ${req.path}`));
};

/**
 * Whether `err` is the request body's stream failing because the client hung up mid-body. Decided from the error,
 * not from the connection: a handler that fails on its own (a full disk) also ends the connection of a body it
 * stops reading.
 */
function clientWentAway(err: unknown): boolean {
  const { code, message } = err as NodeJS.ErrnoException;
  return code === 'ECONNRESET' || code === 'ERR_STREAM_PREMATURE_CLOSE' || message === 'aborted';
}

/** The 500 for an unexpected error: as CNCF distribution's, UNKNOWN, with a detail where it helps the client. */
function serverFault(err: unknown): RegistryError {
  const { code } = err as NodeJS.ErrnoException;
  // Storage out of space (a full disk, a quota): worth a retry later, not a report of a bug.
  if (code === 'ENOSPC' || code === 'EDQUOT') return new RegistryError('UNKNOWN', 500, "the registry's storage is full", { code });
  return new RegistryError('UNKNOWN', 500, 'internal server error');
}

/** Writes every error as `{"errors":[{code,message,detail}]}`; unexpected ones are logged as 500s. */
export function errorBody(logger: Logger): ErrorRequestHandler {
  return (err: unknown, req: Request, res: Response, _next) => {
    const e =
      err instanceof RegistryError
        ? err
        : err instanceof InvalidKeyError
          ? new RegistryError('NAME_INVALID', 400, 'invalid name')
          : undefined;
    if (!e) {
      // A client that hung up mid-body (a truncated upload) is expected; anything else is a fault. An abort the
      // server's own shutdown caused is neither: the shutdown's warning names the requests it cut.
      const aborted = clientWentAway(err);
      const url = loggedUrl(req.originalUrl);
      if (aborted && cutByShutdown(res)) logger.debug({ method: req.method, url }, 'cut by shutdown');
      else logger[aborted ? 'warn' : 'error']({ err, method: req.method, url }, aborted ? 'client went away' : 'request failed');
    }
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const error = e ?? serverFault(err);
    // An unread body would otherwise be drained, possibly gigabytes of it, to keep the connection alive.
    if (!req.complete) res.set('Connection', 'close');
    res
      .status(error.status)
      .set(error.headers)
      .json({ errors: [{ code: error.code, message: error.message, ...(error.detail !== undefined ? { detail: error.detail } : {}) }] });
  };
}
