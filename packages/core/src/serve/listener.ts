/** The HTTP(S) server `reasonplug serve` listens with. */
import { createServer, type RequestListener, type Server as HttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';

/** A TLS key and certificate, PEM. */
export interface TlsFiles {
  /** The private key's PEM text (the contents, not a path). */
  key: Buffer | string;
  /** The certificate, then its chain, as PEM text. */
  cert: Buffer | string;
}

/** A plain HTTP server, or an HTTPS one with `tls`'s key and certificate (refused at once when they are unusable). */
export function listener(tls: TlsFiles | undefined, handler: RequestListener): HttpServer {
  // (Node's own limit on a whole request, 300 s, would cut a large body sent steadily, with a bare 408: the body
  // deadline between reads, `bodyTimeoutMs`, is the server's. The headers keep Node's 60 s, given here since Node's
  // default is the lesser of that and the request limit, which off would turn it off too.)
  const limits = { requestTimeout: 0, headersTimeout: 60_000 };
  if (!tls) return createServer(limits, handler);
  try {
    return createHttpsServer({ ...limits, key: tls.key, cert: tls.cert }, handler);
  } catch (err) {
    throw new RangeError(`the TLS key and certificate cannot be used: ${(err as Error).message}`);
  }
}
