/** Each request's record (request-log.ts) while it is answered, filled in as it goes and given out at its end. */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import type { RefusedRequest } from './listener.js';
import type { RequestRecord } from './request-log.js';

/** A new request id, for a request that brought none of its own. */
export function newRequestId(): string {
  return `req_${randomUUID().replaceAll('-', '')}`;
}

/**
 * The record of a request the HTTP parser refused before any handler saw it (listener.ts): no method or path was
 * read (`-` stands for them, as in common log format), and its error says who sent it.
 */
export function refusedRecord({ status, reason, remoteAddress }: RefusedRequest): RequestRecord {
  return { time: new Date(), requestId: newRequestId(), method: '-', path: '-', status, ms: 0, aborted: false, error: `${reason}, from ${remoteAddress ?? 'an unknown address'}` };
}

/** The records of the requests being answered, where requests are recorded. */
export class RequestRecords {
  /** Each request's record while it is answered, filled in as it goes (given to `onRequest` at its end). */
  private readonly records = new WeakMap<ServerResponse, RequestRecord>();
  /** Records tracked and not given out yet, which a shutdown waits for. */
  private unwritten = 0;
  /** Answers not closed yet, and those the shutdown cut off (see {@link cutAll}). */
  private readonly open = new Set<ServerResponse>();
  private readonly cut = new Set<ServerResponse>();
  private allWritten: (() => void) | undefined;

  /** Adds what a handler learnt to its request's record, when requests are recorded. */
  note(res: ServerResponse, fields: Partial<RequestRecord>): void {
    const record = this.records.get(res);
    if (record) Object.assign(record, fields);
  }

  /**
   * Records a request (`requestId`: the id its answer carries): its status and time as the connection closes, given to `onRequest` once its handler is done
   * too (a client gone mid-generation closes first; its row's finish and tokens are noted as the row stops).
   */
  track(req: IncomingMessage, res: ServerResponse, path: string, requestId: string, answered: Promise<void>, onRequest: (record: RequestRecord) => void): void {
    const arrival = performance.now();
    const record: RequestRecord = { time: new Date(), requestId, method: req.method ?? '', path, status: 0, ms: 0, aborted: false };
    this.records.set(res, record);
    this.open.add(res);
    this.unwritten++;
    res.once('close', () => {
      record.aborted = !res.writableFinished;
      // 499 (nginx's "client closed request") for a client gone before any answer was written; 503 for one the
      // shutdown cut off so.
      record.status = res.headersSent || !record.aborted ? res.statusCode : this.cut.has(res) ? 503 : 499;
      record.ms = performance.now() - arrival;
      if (this.cut.has(res) && record.aborted) record.cutOff = true;
      this.open.delete(res);
      void answered.then(() => {
        // (what the handler met as its connection closed, "client went away while queued" say, was the cut)
        if (record.cutOff) delete record.error;
        if (--this.unwritten === 0) this.allWritten?.();
        onRequest(record);
      });
    });
  }

  /** Marks every request still open as cut off by the shutdown (call before its connections are closed). */
  cutAll(): void {
    for (const res of this.open) this.cut.add(res);
  }

  /**
   * Settles once every request tracked has had its record given out, or after `ms`: a shutdown that cut requests off
   * waits so for their handlers to end (their rows stop at the next step), so that their records are not lost.
   */
  written(ms: number): Promise<void> {
    if (this.unwritten === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.allWritten = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }
}
