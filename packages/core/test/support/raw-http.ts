/** Raw HTTP on a socket: requests a client library would not send (bodies cut short, HTTP/1.0, trickled bytes). */
import { connect, type Socket } from 'node:net';

/** A raw request's connection: what came back so far, and whether the server closed it. */
export interface Raw {
  socket: Socket;
  received: () => string;
  closed: Promise<void>;
}

/** Opens a connection to `url` and writes `head` (a request's headers, perhaps part of its body) on it. */
export function rawRequest(url: string, head: string): Raw {
  const { hostname, port } = new URL(url);
  const socket = connect(Number(port), hostname);
  const chunks: Buffer[] = [];
  socket.on('data', (d: Buffer) => chunks.push(d));
  socket.on('error', () => {});
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.write(head);
  return { socket, received: () => Buffer.concat(chunks).toString('utf8'), closed };
}
