/**
 * `reasonplug serve` over HTTPS (`tls` in startServer, `--ssl-key-file`/`--ssl-cert-file` on the CLI): a self-signed
 * certificate made by Debian's openssl (skipped, saying why, where there is none), clients that trust it and one that
 * does not, unusable keys refused at start.
 */
import { expect } from 'chai';
import { execFile, spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { request } from 'node:https';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { startServer, type RunningServer } from '../src/serve/server.js';
import { rejection } from './support/assertions.js';
import { makeModule } from './support/modules.js';
import { testDir } from './support/models.js';
import { fromSources } from '../../../test/support/paths.js';

const run = promisify(execFile);

/** A request over HTTPS trusting `ca`: the status and body. */
function httpsCall(url: string, ca: Buffer, body?: unknown): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { ca, method: body === undefined ? 'GET' : 'POST', headers: { 'Content-Type': 'application/json' } }, (res) => {
      let text = '';
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

describe('reasonplug serve over HTTPS', function () {
  this.timeout(120_000);
  let key: Buffer;
  let cert: Buffer;
  let keyFile: string;
  let certFile: string;
  let model: string;
  let server: RunningServer | undefined;

  before(async function () {
    const dir = testDir('serve-tls');
    keyFile = join(dir, 'key.pem');
    certFile = join(dir, 'cert.pem');
    const args = ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', '/CN=localhost'];
    const made = await run('openssl', [...args, '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost', '-keyout', keyFile, '-out', certFile]).then(
      () => true,
      () => false,
    );
    if (!made) {
      console.log('      no openssl to make a certificate with (apt-get install -y openssl): skipping the HTTPS tests');
      return this.skip();
    }
    [key, cert] = await Promise.all([readFile(keyFile), readFile(certFile)]);
    model = await makeModule({ name: 'tls-model', seed: 4 });
  });
  afterEach(async () => {
    await server?.close();
    server = undefined;
  });

  it('answers over HTTPS a client that trusts its certificate, and no client that does not', async () => {
    server = await startServer({ engine: { model }, name: 'tls-model', port: 0, tls: { key, cert } });
    expect(server.url).to.match(/^https:\/\/127\.0\.0\.1:\d+$/);
    await server.ready;
    expect((await httpsCall(`${server.url}/health`, cert)).status).to.equal(200);
    const completion = await httpsCall(`${server.url}/v1/completions`, cert, { model: 'tls-model', prompt: 'Once upon a time', max_tokens: 6, temperature: 0 });
    expect(completion.status).to.equal(200);
    expect(JSON.parse(completion.body).usage.completion_tokens).to.equal(6);
    // Node's fetch trusts the system's authorities only: the self-signed certificate is refused.
    const untrusted = await rejection(fetch(`${server.url}/health`));
    expect(String((untrusted.cause as Error | undefined)?.message ?? untrusted.message)).to.match(/self[- ]signed certificate/);
    // Plain HTTP to the HTTPS port gets no answer of the API.
    const plain = await fetch(server.url.replace('https:', 'http:') + '/health').then((r) => r.status, () => 'refused');
    expect(plain).to.not.equal(200);
  });

  it('refuses at start a key that is not the certificate\'s, or no key at all; the CLI wants both files, and readable', async () => {
    const other = join(testDir('serve-tls-other'), 'key.pem');
    await run('openssl', ['genpkey', '-algorithm', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-out', other]);
    for (const tls of [{ key: await readFile(other), cert }, { key: Buffer.from('not a key'), cert }]) {
      const err = await rejection(startServer({ engine: { model: 'never-loaded' }, port: 0, tls }));
      expect(err).to.be.instanceOf(RangeError);
      expect(err.message).to.match(/^the TLS key and certificate cannot be used: /);
    }
    const cli = fileURLToPath(new URL('../src/cli/reasonplug.ts', import.meta.url));
    const serve = (...flags: string[]) =>
      run(process.execPath, [...fromSources, cli, 'serve', '--model', 'never-loaded', '--port', '0', ...flags]).then(
        () => ({ code: 0, stderr: '' }),
        (e: { code: number; stderr: string }) => e,
      );
    const one = await serve('--ssl-key-file', keyFile);
    expect(one.code).to.not.equal(0);
    expect(one.stderr).to.contain('--ssl-key-file and --ssl-cert-file go together (only --ssl-key-file was given)');
    const missing = await serve('--ssl-key-file', join(keyFile, 'nope'), '--ssl-cert-file', certFile);
    expect(missing.code).to.not.equal(0);
    expect(missing.stderr).to.match(/--ssl-key-file .*nope: ENOTDIR/);
  });

  it('the CLI serves HTTPS with --ssl-key-file and --ssl-cert-file', async () => {
    const cli = fileURLToPath(new URL('../src/cli/reasonplug.ts', import.meta.url));
    const child = spawn(process.execPath, [...fromSources, cli, 'serve', '--model', model, '--port', '0', '--ssl-key-file', keyFile, '--ssl-cert-file', certFile], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    try {
      await new Promise<void>((resolve, reject) => {
        child.stderr.on('data', () => stderr.includes('ready;') && resolve());
        child.on('exit', () => reject(new Error(`serve exited: ${stderr}`)));
      });
      const url = /listening on (\S+)/.exec(stderr)![1]!;
      expect(url).to.match(/^https:/);
      expect((await httpsCall(`${url}/health`, cert)).status).to.equal(200);
    } finally {
      child.kill('SIGKILL');
    }
  });
});
