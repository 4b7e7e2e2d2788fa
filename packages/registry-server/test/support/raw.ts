/**
 * Raw HTTP/1.1 over a `net` socket, for what fetch will not send: chunked bodies cut short, lying
 * lengths, half-closed and abandoned connections.
 */
import { connect, type Socket } from 'node:net';

export interface RawExchange {
  /** The status of the first response, or undefined when none came (connection closed or timed out). */
  status?: number;
  /** Everything the server sent. */
  text: string;
}

export interface RawOptions {
  /** Bytes sent once the connection is up, in pieces (each written as its own chunk). */
  send: (string | Buffer)[];
  /** `end` half-closes after sending; `destroy` resets at once; `keep` leaves the write side open. */
  then?: 'end' | 'destroy' | 'keep';
  /** Give up waiting for the server after this many ms (default 2000), then destroy the socket. */
  timeoutMs?: number;
}

/** Opens a connection to `url`'s host and port, sends, and collects what comes back until close or timeout. */
export function rawExchange(url: string, opts: RawOptions): Promise<RawExchange> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket: Socket = connect(Number(port), hostname);
    const chunks: Buffer[] = [];
    let settled = false;
    const finish = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      const text = Buffer.concat(chunks).toString('latin1');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
      resolve({ text, ...(m ? { status: Number(m[1]) } : {}) });
    };
    const timer = setTimeout(finish, opts.timeoutMs ?? 2000);
    socket.on('data', (c: Buffer) => chunks.push(c));
    // A reset or a refused write is one of the outcomes under test, not a failure of the helper.
    socket.on('error', finish);
    socket.on('close', finish);
    socket.on('connect', () => {
      for (const piece of opts.send) socket.write(piece);
      if (opts.then === 'destroy') finish();
      else if (opts.then !== 'keep') socket.end();
    });
  });
}

/** A chunked-encoding frame of `data`. */
export const chunk = (data: string | Buffer) => {
  const b = Buffer.isBuffer(data) ? data : Buffer.from(data);
  return Buffer.concat([Buffer.from(`${b.length.toString(16)}\r\n`), b, Buffer.from('\r\n')]);
};
