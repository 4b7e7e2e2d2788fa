/** Each request's record (request-log.ts) while it is answered, filled in as it goes and given out at its end. */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { RequestRecord } from './request-log.js';

/** The records of the requests being answered, where requests are recorded. */
export class RequestRecords {
  /** Each request's record while it is answered, filled in as it goes (given to `onRequest` at its end). */
  private readonly records = new WeakMap<ServerResponse, RequestRecord>();

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
    res.once('close', () => {
      record.aborted = !res.writableFinished;
      // 499 (nginx's "client closed request") for a client gone before any answer was written.
      record.status = res.headersSent || !record.aborted ? res.statusCode : 499;
      record.ms = performance.now() - arrival;
      void answered.then(() => onRequest(record));
    });
  }
}
