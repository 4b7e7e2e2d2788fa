/** The HTTP(S) server `reasonplug serve` listens with. */
import { createServer, STATUS_CODES, type RequestListener, type Server as HttpServer, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Socket } from 'node:net';

/** A TLS key and certificate, PEM. */
export interface TlsFiles {
  /** The private key's PEM text (the contents, not a path). */
  key: Buffer | string;
  /** The certificate, then its chain, as PEM text. */
  cert: Buffer | string;
}

/** A request refused before any handler saw it: malformed, its headers too large, or too slow to send them. */
export interface RefusedRequest {
  /** The status it is answered with (400, 431, 408). */
  status: number;
  /** Why, as Node's parser says it (`Parse Error: Invalid method encountered (HPE_INVALID_METHOD)`). */
  reason: string;
  /** The address of the client that sent it. */
  remoteAddress: string | undefined;
}

/** The status of each refusal of Node's parser that has one of its own (any other is a 400), as Node answers them. */
const REFUSAL_STATUS: Readonly<Record<string, number>> = { HPE_HEADER_OVERFLOW: 431, HPE_CHUNK_EXTENSIONS_OVERFLOW: 413, ERR_HTTP_REQUEST_TIMEOUT: 408 };

/**
 * A plain HTTP server, or an HTTPS one with `tls`'s key and certificate (refused at once when they are unusable).
 * A request the parser refuses is given to `onRefused` before it is answered, as Node would answer it: such requests
 * reach no handler, so they would otherwise leave no trace.
 */
export function listener(tls: TlsFiles | undefined, handler: RequestListener, onRefused?: (refused: RefusedRequest) => void): HttpServer {
  // (Node's own limit on a whole request, 300 s, would cut a large body sent steadily, with a bare 408: the body
  // deadline between reads, `bodyTimeoutMs`, is the server's. The headers keep Node's 60 s, given here since Node's
  // default is the lesser of that and the request limit, which off would turn it off too.)
  const limits = { requestTimeout: 0, headersTimeout: 60_000 };
  // The answers not ended on each connection: a refusal is not written into one already begun (a malformed request
  // pipelined after a stream), as Node's own handler writes none there.
  const answering = new WeakMap<Socket, Set<ServerResponse>>();
  const kept: RequestListener = (req, res) => {
    const answers = answering.get(req.socket) ?? new Set();
    answering.set(req.socket, answers.add(res));
    res.once('close', () => answers.delete(res));
    handler(req, res);
  };
  const server = tls ? httpsServer(tls, limits, kept) : createServer(limits, kept);
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    // A connection its client reset or closed is a client gone, not a request refused: there is no one to answer.
    if (err.code === 'ECONNRESET' || !socket.writable) return void socket.destroy();
    const status = REFUSAL_STATUS[err.code ?? ''] ?? 400;
    onRefused?.({ status, reason: `${err.message}${err.code ? ` (${err.code})` : ''}`, remoteAddress: socket.remoteAddress });
    if (![...(answering.get(socket) ?? [])].some((res) => res.headersSent)) socket.write(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nConnection: close\r\n\r\n`);
    socket.destroy();
  });
  return server;
}

/** An HTTPS server with `tls`'s key and certificate, refused at once when they are unusable. */
function httpsServer(tls: TlsFiles, limits: { requestTimeout: number; headersTimeout: number }, handler: RequestListener): HttpServer {
  try {
    return createHttpsServer({ ...limits, key: tls.key, cert: tls.cert }, handler);
  } catch (err) {
    throw new RangeError(`the TLS key and certificate cannot be used: ${(err as Error).message}`);
  }
}
