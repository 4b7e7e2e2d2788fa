/**
 * Regressions of issue 14: requests that once ended the registry process, and what it left behind.
 */
import { expect } from 'chai';
import { setTimeout as sleep } from 'node:timers/promises';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { FilesystemStorage } from '../src/storage/filesystem.js';
import { serveCli } from './support/cli.js';
import { chunk, rawExchange } from './support/raw.js';
import { Client, OCI_MANIFEST, startRegistry } from './support/registry.js';
import { scratch } from './support/tmp.js';

const LIMIT = 1024;
const oversized = Buffer.alloc(LIMIT * 4, 'x');
const putHead = (url: string, framing: string) =>
  `PUT /v2/ns/repo/manifests/latest HTTP/1.1\r\nHost: ${new URL(url).host}\r\nContent-Type: ${OCI_MANIFEST}\r\n${framing}\r\n`;

describe('a request cannot end the registry process', function () {
  this.timeout(30_000);

  it('answers a chunked manifest over the limit with 413 and keeps serving (serve process)', async () => {
    const server = await serveCli('--data', await scratch('chunked-413'), '--max-manifest-bytes', String(LIMIT));
    try {
      for (let i = 0; i < 3; i++) {
        const res = await rawExchange(server.url, {
          send: [putHead(server.url, 'Transfer-Encoding: chunked\r\n'), ...Array.from({ length: 8 }, () => chunk(oversized.subarray(0, 600))), '0\r\n\r\n'],
        });
        expect(res.status, res.text).to.equal(413);
        expect(res.text).to.include('MANIFEST_INVALID');
      }
      const fixed = await rawExchange(server.url, { send: [putHead(server.url, `Content-Length: ${oversized.length}\r\n`), oversized] });
      expect(fixed.status).to.equal(413);
      // The crash came from a 'close' listener a tick after the response: give it the time to happen.
      await sleep(200);
      expect(server.child.exitCode, 'serve exited').to.equal(null);
      expect(server.child.signalCode).to.equal(null);
      expect((await new Client(server.url).request('GET', '/v2/')).status).to.equal(200);
    } finally {
      expect(await server.stop()).to.equal(0);
    }
  });

  it('answers 408 and closes a connection that sends no headers within headersTimeoutMs (requestTimeout 0 must not turn that off)', async () => {
    const registry = await startRegistry(new FilesystemStorage(await scratch('headers-timeout')), { headersTimeoutMs: 400 });
    try {
      const { hostname, port } = new URL(registry.url);
      const { connect } = await import('node:net');
      const socket = connect(Number(port), hostname);
      let answer = '';
      socket.on('data', (d: Buffer) => (answer += d.toString()));
      await new Promise((r) => socket.once('connect', r));
      socket.write('GET /v2/ HTTP/1.1\r\nHost: x\r\n'); // the headers never end
      const t0 = performance.now();
      await new Promise((r) => socket.once('close', r));
      expect(performance.now() - t0).to.be.below(5_000);
      expect(answer).to.match(/^HTTP\/1\.1 408/);
      // and the registry still answers others
      expect((await fetch(`${registry.url}/v2/`)).status).to.equal(200);
    } finally {
      await registry.close();
    }
  });

  it('logs the refused request with its remote address', async () => {
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(c, _enc, done) {
        lines.push(JSON.parse(c.toString()));
        done();
      },
    });
    const registry = await startRegistry(new FilesystemStorage(await scratch('log-413')), {
      maxManifestBytes: LIMIT,
      logger: pino({ level: 'info' }, sink),
    });
    try {
      const res = await rawExchange(registry.url, {
        send: [putHead(registry.url, 'Transfer-Encoding: chunked\r\n'), chunk(oversized), '0\r\n\r\n'],
      });
      expect(res.status).to.equal(413);
      await sleep(50);
      const logged = lines.find((l) => l.msg === 'request' && l.method === 'PUT');
      expect(logged).to.include({ status: 413, remote: '127.0.0.1', url: '/v2/ns/repo/manifests/latest' });
    } finally {
      await registry.close();
    }
  });
});
