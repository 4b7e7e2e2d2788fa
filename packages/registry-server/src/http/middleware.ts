/** Cross-cutting middleware: request logs, caller identification, the OCI error body. */
import type { ErrorRequestHandler, Request, RequestHandler, Response } from 'express';
import type { Logger } from 'pino';
import { RegistryError } from '../errors.js';
import { InvalidKeyError } from '../storage/driver.js';
import type { Access, Caller } from './access.js';

/** One structured log line per request, written when the response closes (finished or aborted). */
export function requestLog(logger: Logger): RequestHandler {
  return (req, res, next) => {
    const started = process.hrtime.bigint();
    // Read now: once a request is destroyed (a client gone mid-body), Node detaches its socket.
    const remote = req.socket?.remoteAddress;
    res.once('close', () =>
      guarded(logger, 'request log', () => {
        const caller = res.locals.caller as Caller;
        logger.info(
          {
            method: req.method,
            url: req.originalUrl,
            status: res.statusCode,
            ms: Number(process.hrtime.bigint() - started) / 1e6,
            user: caller?.user ?? null,
            token: caller?.tokenId ?? null,
            bytesIn: Number(req.headers['content-length'] ?? 0),
            bytesOut: Number(res.getHeader('content-length') ?? 0),
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
 * Gives the request and response streams an 'error' listener. Without one, an error emitted on either
 * (a write after the end, a reset while streaming) would be thrown from the event loop and end the
 * process; with it, the error ends only this exchange, which the handler or Node already tears down.
 */
export function containStreamErrors(logger: Logger): RequestHandler {
  return (req, res, next) => {
    const log = (side: string) => (err: Error) =>
      guarded(logger, 'stream error log', () => logger.debug({ err, method: req.method, url: req.originalUrl, side }, 'stream error'));
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

/** Sets `res.locals.caller` from the request's credentials (401 for credentials that do not verify). */
export function identify(access: Access): RequestHandler {
  return async (req, res, next) => {
    res.locals.caller = await access.identify(req);
    next();
  };
}

export const notFound: RequestHandler = (req, _res, next) => {
  next(new RegistryError('UNSUPPORTED', 404, `no such endpoint: ${req.method} ${req.path}`));
};

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
      // A client that hung up mid-body (a truncated upload) is expected; anything else is a fault.
      const clientGone = !req.complete && (req.socket?.destroyed ?? true);
      logger[clientGone ? 'warn' : 'error']({ err, method: req.method, url: req.originalUrl }, clientGone ? 'client went away' : 'request failed');
    }
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const error = e ?? new RegistryError('UNKNOWN', 500, 'internal server error');
    // An unread body would otherwise be drained, possibly gigabytes of it, to keep the connection alive.
    if (!req.complete) res.set('Connection', 'close');
    res
      .status(error.status)
      .set(error.headers)
      .json({ errors: [{ code: error.code, message: error.message, ...(error.detail !== undefined ? { detail: error.detail } : {}) }] });
  };
}
