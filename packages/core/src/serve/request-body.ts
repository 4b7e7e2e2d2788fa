/**
 * Reading request bodies: refused past a size limit (413), after a time without a byte arriving (408), or as the
 * server shuts down (503).
 */
import type { IncomingMessage } from 'node:http';
import { HttpError, badRequest } from './errors.js';
import { jsonDepth, MAX_BODY_DEPTH } from './json-depth.js';

/** Reads the bodies of requests, and can refuse every one still arriving. */
export class BodyReader {
  /** The refusals of the bodies being read, each ending its read (called as the server shuts down). */
  private readonly reading = new Set<(err: HttpError) => void>();

  /**
   * @param limit Largest body in bytes.
   * @param timeoutMs Milliseconds a body may go without a byte arriving.
   */
  constructor(
    private readonly limit: number,
    private readonly timeoutMs: number,
  ) {}

  /** A request's body read as JSON: a 400 unless it parses, and nests no deeper than the limit. */
  async readJson(req: IncomingMessage): Promise<unknown> {
    const text = (await this.readBody(req)).toString('utf8');
    let body: unknown;
    try {
      // (a byte order mark before the JSON is allowed to be ignored, RFC 8259 §8.1, and Python's json.loads does)
      body = JSON.parse(text.startsWith('\uFEFF') ? text.slice(1) : text);
    } catch (err) {
      throw badRequest(`the request body is not JSON: ${(err as Error).message}`, null, 'invalid_json');
    }
    if (jsonDepth(body, MAX_BODY_DEPTH) > MAX_BODY_DEPTH) throw badRequest(`the request body nests arrays and objects more than ${MAX_BODY_DEPTH} levels deep`, null, 'too_deep');
    return body;
  }

  /**
   * A request's body, refused once larger than the limit (413), once `bodyTimeoutMs` has passed (408), or as the
   * server shuts down (503). A refused body is left unread, not destroyed (which would close the connection before
   * the refusal is written): the refusal says `Connection: close`, so the connection ends after it.
   */
  private async readBody(req: IncomingMessage): Promise<Buffer> {
    let refuse!: (err: HttpError) => void;
    const refused = new Promise<never>((_, reject) => (refuse = reject));
    // (the time between two reads, as nginx's client_body_timeout: a large body sent steadily takes what it takes)
    let timer: NodeJS.Timeout | undefined;
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(
        () => refuse(new HttpError(408, `no part of the request body arrived for ${this.timeoutMs / 1000} s`, 'invalid_request_error', 'request_timeout', { Connection: 'close' })),
        this.timeoutMs,
      );
    };
    arm();
    this.reading.add(refuse);
    const chunks = req[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
    const body: Buffer[] = [];
    try {
      for (let size = 0; ; ) {
        const next = await Promise.race([chunks.next(), refused]);
        if (next.done) return Buffer.concat(body);
        arm();
        size += next.value.length;
        if (size > this.limit) throw new HttpError(413, `the request body is larger than ${this.limit} bytes`, 'invalid_request_error', 'body_too_large', { Connection: 'close' });
        body.push(next.value);
      }
    } finally {
      clearTimeout(timer);
      this.reading.delete(refuse);
    }
  }

  /** Refuses every body still being read (the server is shutting down). */
  refuseAll(): void {
    for (const refuse of this.reading) refuse(new HttpError(503, 'the server is shutting down', 'server_error', 'shutting_down', { Connection: 'close' }));
  }
}
