/**
 * The requests a server is answering, for a shutdown that lets them finish before it cuts their connections (a
 * blob upload cut mid-body must start over), and that can tell the aborts it caused from clients that hung up.
 */
import type { Request, RequestHandler, Response } from 'express';
import { loggedUrl } from './log-fields.js';

/** Set in `res.locals` of a request whose connection the server's own shutdown cut. */
const CUT = 'cutByShutdown';

/** Whether the server's own shutdown cut this request's connection (so an abort is not the client's doing). */
export const cutByShutdown = (res: Response): boolean => res.locals[CUT] === true;

export class OpenRequests {
  private readonly open = new Map<Response, Request>();
  private draining = false;
  private emptied?: () => void;

  /** Requests being answered now. */
  get size(): number {
    return this.open.size;
  }

  /** Middleware counting each request from its arrival until its response closes (finished or aborted). */
  readonly track: RequestHandler = (req, res, next) => {
    this.open.set(res, req);
    // A client on a kept-alive connection may send another request during the drain: the last one it gets.
    if (this.draining) res.set('Connection', 'close');
    res.once('close', () => {
      this.open.delete(res);
      if (this.open.size === 0) this.emptied?.();
    });
    next();
  };

  /**
   * Starts draining: each answer from now on closes its connection. Resolves true once no request is open, or
   * false after `graceMs` when some still are.
   */
  async drain(graceMs: number): Promise<boolean> {
    this.draining = true;
    for (const res of this.open.keys()) if (!res.headersSent) res.set('Connection', 'close');
    if (this.open.size === 0) return true;
    let timer: NodeJS.Timeout | undefined;
    const emptied = new Promise<true>((resolve) => (this.emptied = () => resolve(true)));
    const over = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), graceMs)));
    try {
      return await Promise.race([emptied, over]);
    } finally {
      clearTimeout(timer);
      this.emptied = undefined;
    }
  }

  /** Marks every open request as cut by the shutdown, before their connections are cut; returns them as `METHOD url`. */
  markCut(): string[] {
    return [...this.open].map(([res, req]) => {
      res.locals[CUT] = true;
      return `${req.method} ${loggedUrl(req.originalUrl)}`;
    });
  }
}
