/**
 * Interop with a real OCI client: Debian's skopeo pushes a module artifact from an OCI image layout
 * written here by hand, pulls it back, lists tags, with and without credentials, and deletes a version.
 */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { TokenStore } from '../src/auth/tokens.js';
import { collectGarbage } from '../src/registry/garbage.js';
import type { ListeningRegistry } from '../src/server.js';
import { filesystemDriver } from './support/drivers.js';
import { digestOf, moduleArtifact, OCI_MANIFEST, startRegistry } from './support/registry.js';
import { scratch } from './support/tmp.js';
import { verifyStorage } from './support/verify.js';

const run = promisify(execFile);

async function skopeo(...args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const { stdout, stderr } = await run('skopeo', ['--insecure-policy', ...args], { timeout: 60_000 });
    return { stdout, stderr, code: 0 };
  } catch (err) {
    const e = err as { stdout: string; stderr: string; code: number };
    return { stdout: e.stdout, stderr: e.stderr, code: e.code };
  }
}

/** Writes an OCI image layout holding one module artifact tagged `tag`; returns its manifest digest. */
async function writeLayout(dir: string, tag: string): Promise<string> {
  const { blobs, manifest } = moduleArtifact({ name: 'adder', version: tag, files: { 'model.onnx': 'onnx bytes', 'tokenizer.json': '{}' } });
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  for (const b of [...blobs, manifest]) await writeFile(join(dir, 'blobs', 'sha256', digestOf(b).slice(7)), b);
  const digest = digestOf(manifest);
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await writeFile(
    join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [{ mediaType: OCI_MANIFEST, digest, size: manifest.length, annotations: { 'org.opencontainers.image.ref.name': tag } }],
    }),
  );
  return digest;
}

describe('interop with skopeo', function () {
  this.timeout(60_000);
  let registry: ListeningRegistry | undefined;

  before(async function () {
    const found = await run('skopeo', ['--version']).then(
      () => true,
      () => false,
    );
    if (!found) {
      console.log('      skopeo is not installed (apt-get install -y skopeo): skipping the interop tests');
      this.skip();
    }
  });
  afterEach(() => registry?.close());

  it('copies a module artifact in and out unchanged, and lists its tags', async () => {
    const storage = (await filesystemDriver.open()).storage;
    registry = await startRegistry(storage);
    const host = new URL(registry.url).host;
    const layout = await scratch('layout');
    const digest = await writeLayout(layout, '1.0.0');

    const push = await skopeo('copy', '--dest-tls-verify=false', `oci:${layout}:1.0.0`, `docker://${host}/ns/adder:1.0.0`);
    expect(push.code, push.stderr).to.equal(0);
    const out = await scratch('pulled');
    const pull = await skopeo('copy', '--src-tls-verify=false', `docker://${host}/ns/adder:1.0.0`, `oci:${out}:copy`);
    expect(pull.code, pull.stderr).to.equal(0);
    const index = JSON.parse(await readFile(join(out, 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
    expect(index.manifests[0]!.digest).to.equal(digest);

    const tags = await skopeo('list-tags', '--tls-verify=false', `docker://${host}/ns/adder`);
    expect(tags.code, tags.stderr).to.equal(0);
    expect(JSON.parse(tags.stdout).Tags).to.deep.equal(['1.0.0']);

    const found = (await fetch(`${registry.url}/v2/_reasonplug/search?task=math`).then((r) => r.json())) as {
      results: { versions: object[] }[];
    };
    expect(found.results[0]!.versions[0]).to.include({ digest, version: '1.0.0' });
  });

  it('deletes a version with skopeo delete; garbage collection then frees its bytes and the other version copies out whole', async () => {
    const storage = (await filesystemDriver.open()).storage;
    registry = await startRegistry(storage);
    const host = new URL(registry.url).host;
    const digests: Record<string, string> = {};
    for (const tag of ['1.0.0', '2.0.0']) {
      const layout = await scratch('layout');
      digests[tag] = await writeLayout(layout, tag);
      const push = await skopeo('copy', '--dest-tls-verify=false', `oci:${layout}:${tag}`, `docker://${host}/ns/adder:${tag}`);
      expect(push.code, push.stderr).to.equal(0);
    }
    const gone = await skopeo('delete', '--tls-verify=false', `docker://${host}/ns/adder:1.0.0`);
    expect(gone.code, gone.stderr).to.equal(0);
    await sleep(20);
    const report = await collectGarbage(storage, { minAgeMs: 0 });
    // The manifest and the config of 1.0.0 (its files' bytes are 2.0.0's too).
    expect(report.blobs).to.include(digests['1.0.0']).and.to.have.length(2);
    expect((await verifyStorage(storage)).problems).to.deep.equal([]);
    const out = await scratch('pulled');
    const pull = await skopeo('copy', '--src-tls-verify=false', `docker://${host}/ns/adder:2.0.0`, `oci:${out}:copy`);
    expect(pull.code, pull.stderr).to.equal(0);
    const tags = await skopeo('list-tags', '--tls-verify=false', `docker://${host}/ns/adder`);
    expect(JSON.parse(tags.stdout).Tags).to.deep.equal(['2.0.0']);
  });

  it('pushes with --dest-creds user:token and is refused without', async () => {
    const storage = (await filesystemDriver.open()).storage;
    const tokens = new TokenStore(storage);
    const { token } = await tokens.create({ scopes: ['push:ns/*'], user: 'ci' });
    registry = await startRegistry(storage, { auth: { tokens, anonymousPull: false } });
    const host = new URL(registry.url).host;
    const layout = await scratch('layout');
    const digest = await writeLayout(layout, '2.0.0');

    const anonymous = await skopeo('copy', '--dest-tls-verify=false', `oci:${layout}:2.0.0`, `docker://${host}/ns/adder:2.0.0`);
    expect(anonymous.code).to.not.equal(0);
    const push = await skopeo('copy', '--dest-tls-verify=false', '--dest-creds', `ci:${token}`, `oci:${layout}:2.0.0`, `docker://${host}/ns/adder:2.0.0`);
    expect(push.code, push.stderr).to.equal(0);

    const tags = await skopeo('list-tags', '--tls-verify=false', '--creds', `ci:${token}`, `docker://${host}/ns/adder`);
    expect(tags.code, tags.stderr).to.equal(0);
    expect(JSON.parse(tags.stdout).Tags).to.deep.equal(['2.0.0']);
    const inspect = await skopeo('inspect', '--raw', '--tls-verify=false', '--creds', `ci:${token}`, `docker://${host}/ns/adder:2.0.0`);
    expect(digestOf(Buffer.from(inspect.stdout))).to.equal(digest);
  });
});
