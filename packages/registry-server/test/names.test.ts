import { expect } from 'chai';
import { connect } from 'node:net';
import { once } from 'node:events';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { FilesystemStorage } from '../src/storage/filesystem.js';
import type { ListeningRegistry } from '../src/server.js';
import { assertName, exactVersionOfTag } from '../src/names.js';
import { chunkRange, requestedRange } from '../src/http/ranges.js';
import { allows, parseScope } from '../src/auth/scopes.js';
import { Client, errorCode, startRegistry } from './support/registry.js';
import { scratch } from './support/tmp.js';

/** Sends a request line exactly as written (fetch would normalise `..` away). */
async function raw(url: string, method: string, path: string): Promise<string> {
  const { hostname, port } = new URL(url);
  const socket = connect(Number(port), hostname);
  await once(socket, 'connect');
  socket.end(`${method} ${path} HTTP/1.1\r\nHost: ${hostname}\r\nConnection: close\r\n\r\n`);
  const chunks: Buffer[] = [];
  for await (const c of socket) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString();
}

describe('names, tags, digests and paths', () => {
  let dir: string;
  let registry: ListeningRegistry;
  let c: Client;

  before(async () => {
    dir = await scratch('names');
    registry = await startRegistry(new FilesystemStorage(dir));
    c = new Client(registry.url);
  });
  after(() => registry.close());

  it('accepts OCI repository names, multi-component included, and refuses the rest', () => {
    for (const ok of ['a', 'ns/name', 'a/b/c', 'my-org/my_repo', 'a.b/c__d', 'x--y/z']) expect(assertName(ok)).to.equal(ok);
    for (const bad of ['', 'A', 'ns/', '/ns', 'ns//x', '../x', 'ns/..', 'ns/_x', 'ns/.x', 'a/b-', 'x'.repeat(256), 'a%2fb']) {
      expect(() => assertName(bad), bad).to.throw();
    }
  });

  it('refuses traversal and invalid names over HTTP before touching storage', async () => {
    const probes = [
      ['GET', '/v2/../../etc/passwd/manifests/latest'],
      ['GET', '/v2/ns/%2e%2e/manifests/latest'],
      ['PUT', '/v2/NS/Name/manifests/latest'],
      ['POST', '/v2/ns/../../x/blobs/uploads/'],
      ['GET', '/v2/ns/name/manifests/..'],
      ['GET', '/v2/ns/name/blobs/sha256:..%2f..%2f..'],
      ['GET', '/v2/ns/name/blobs/uploads/..%2f..%2fx'],
      ['GET', '/v2/ns/name/manifests/sha512:abc'],
    ];
    for (const [method, path] of probes) {
      const res = await raw(registry.url, method!, path!);
      expect(res, `${method} ${path}`).to.match(/^HTTP\/1\.1 4\d\d /);
      expect(res).to.match(/"code":"(NAME_INVALID|MANIFEST_INVALID|DIGEST_INVALID|BLOB_UPLOAD_UNKNOWN)"/);
    }
    // Nothing was created outside the registry's own layout.
    expect((await readdir(dir)).filter((e) => !['.tmp'].includes(e))).to.deep.equal([]);
    expect(await readdir(join(dir, '..'))).to.not.include('x');
  });

  it('answers unknown endpoints and methods with OCI errors', async () => {
    const nowhere = await c.request('GET', '/v2/ns/name/nowhere');
    expect(nowhere.status).to.equal(404);
    expect(await errorCode(nowhere)).to.equal('UNSUPPORTED');
    const method = await c.request('POST', '/v2/ns/name/tags/list');
    expect(method.status).to.equal(405);
  });

  it('tells exact-version tags from moving ones', () => {
    expect(exactVersionOfTag('1.2.3')).to.equal('1.2.3');
    expect(exactVersionOfTag('1.2.3-rc.1')).to.equal('1.2.3-rc.1');
    expect(exactVersionOfTag('1.2.3_build.7')).to.equal('1.2.3+build.7');
    for (const moving of ['latest', '1', '1.2', 'v1.2.3', '01.2.3', '1.2.3.4', 'stable']) {
      expect(exactVersionOfTag(moving), moving).to.equal(undefined);
    }
  });

  it('parses Range and Content-Range', () => {
    expect(requestedRange('bytes=0-9', 100)).to.deep.equal({ start: 0, end: 9 });
    expect(requestedRange('bytes=90-200', 100)).to.deep.equal({ start: 90, end: 99 });
    expect(requestedRange('bytes=-10', 100)).to.deep.equal({ start: 90, end: 99 });
    expect(requestedRange('bytes=-200', 100)).to.deep.equal({ start: 0, end: 99 });
    expect(requestedRange('bytes=100-', 100)).to.equal('unsatisfiable');
    expect(requestedRange('bytes=0-', 0)).to.equal('unsatisfiable');
    expect(requestedRange('bytes=0-1,5-6', 100)).to.equal(undefined);
    expect(requestedRange('bytes=9-1', 100)).to.equal(undefined);
    expect(chunkRange('0-99')).to.deep.equal({ start: 0, end: 99 });
    expect(chunkRange('bytes 100-199/*')).to.deep.equal({ start: 100, end: 199 });
    expect(chunkRange('99-0')).to.equal(null);
    expect(chunkRange(undefined)).to.equal(undefined);
  });

  it('matches scope globs: * within a component, ** across, push implies pull', () => {
    const scopes = [parseScope('push:math/*'), parseScope('pull:shared/**')];
    expect(allows(scopes, 'push', 'math/adder')).to.equal(true);
    expect(allows(scopes, 'pull', 'math/adder')).to.equal(true);
    expect(allows(scopes, 'push', 'math/sub/adder')).to.equal(false);
    expect(allows(scopes, 'push', 'mathx/adder')).to.equal(false);
    expect(allows(scopes, 'pull', 'shared/a/b/c')).to.equal(true);
    expect(allows(scopes, 'push', 'shared/a')).to.equal(false);
    expect(() => parseScope('admin:*')).to.throw(/invalid scope/);
    expect(() => parseScope('push:../x')).to.throw(/invalid scope/);
  });
});
