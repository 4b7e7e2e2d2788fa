import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { once } from 'node:events';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { loadModuleDir } from '../src/modules/module-dir.js';
import { MediaTypes, packModule, sha256Digest, type OciManifest } from '../src/registry/artifact.js';
import { RegistryClient } from '../src/registry/client.js';
import { DigestMismatchError, InvalidArtifactError, RegistryAuthError, RegistryUnreachableError } from '../src/registry/errors.js';
import type { TransferProgress } from '../src/registry/download.js';
import { pullModule } from '../src/registry/pull.js';
import { pushModule } from '../src/registry/push.js';
import { testDir } from './support/models.js';
import { age } from './support/owners.js';
import { makeRegistryModule, startOurRegistry, type OurRegistry } from './support/registries.js';
import { rejection } from './support/assertions.js';
import { runReasonplug } from './support/cli.js';

const childScript = fileURLToPath(new URL('./support/registry-child.ts', import.meta.url));

/** A pulling child process and its stdout lines as they come. */
function pullInChild(args: string[]): { child: ChildProcess; line: () => Promise<string>; exit: Promise<number | null>; stderr: () => string } {
  const child = spawn(process.execPath, ['--import', 'tsx', childScript, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exit = once(child, 'exit').then(([code]) => code as number | null);
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  return {
    child,
    exit,
    stderr: () => err,
    line: async () => {
      const next = await lines.next();
      if (next.done) throw new Error(`the child ended without a line: ${err}`);
      return next.value;
    },
  };
}

/** Names in the cache that are not final: partial downloads and temp files. */
async function leftovers(cache: string): Promise<string[]> {
  const all = await readdir(cache, { recursive: true });
  return all.filter((p) => /\.(partial|tmp)$/.test(p));
}

describe('registry faults', function () {
  this.timeout(60_000);
  let registry: OurRegistry;
  before(async () => (registry = await startOurRegistry()));
  after(() => registry?.close());

  /** A module of one `weights.bin` of `bytes` pushed as acme/`name`: its reference at 1.0.0 and the weights' digest. */
  async function pushedWeights(name: string, bytes: number): Promise<{ dir: string; ref: string; weights: string }> {
    const dir = await makeRegistryModule({ name, files: { 'weights.bin': bytes } });
    await pushModule(dir, `${registry.host}/acme/${name}`);
    const weights = `sha256:${(await loadModuleDir(dir, { verify: false })).manifest.files['weights_bin']!.sha256}`;
    return { dir, ref: `${registry.host}/acme/${name}:1.0.0`, weights };
  }

  it('a client killed mid-pull leaves nothing under a final name, and the next pull resumes with Range', async () => {
    const { ref, weights } = await pushedWeights('big', 48 << 20);
    const cache = testDir('killed-cache');

    const killed = pullInChild([ref, cache, '--stop-at', String(8 << 20)]);
    expect(await killed.line()).to.equal('ready');
    expect(await killed.line()).to.match(new RegExp(`^stopped ${weights} \\d+$`));
    killed.child.kill('SIGKILL');
    await killed.exit;

    const blobs = join(cache, 'blobs', 'sha256');
    const hex = weights.slice(7);
    expect(existsSync(join(blobs, hex)), 'no blob under its final name').to.equal(false);
    expect(existsSync(join(cache, 'modules')), 'no module directory').to.equal(false);
    const partials = (await readdir(blobs)).filter((n) => n.startsWith(`${hex}.`) && n.endsWith('.partial'));
    expect(partials).to.have.length(1);
    const kept = (await stat(join(blobs, partials[0]!))).size;
    expect(kept).to.be.within(8 << 20, (48 << 20) - 1);
    // Taken over once no one has written it for a while (a pull in another PID namespace looks dead here too).
    await age(join(blobs, partials[0]!));

    const events: TransferProgress[] = [];
    const pulled = await pullModule(ref, { cacheDir: cache, onProgress: (p) => events.push(p) });
    const resumed = events.filter((e) => e.digest === weights);
    expect(resumed[0]!.resumedFrom, 'continued where the killed process stopped').to.equal(kept);
    expect(resumed.at(-1)).to.deep.include({ bytes: 48 << 20, done: true });
    await loadModuleDir(pulled.dir);
    expect(await leftovers(cache)).to.deep.equal([]);
  });

  it('an aborted pull keeps what arrived, and the next pull in the same process resumes from it', async () => {
    const { ref, weights } = await pushedWeights('aborted', 16 << 20);
    const cache = testDir('aborted-cache');
    const controller = new AbortController();
    const err = await rejection(
      pullModule(ref, {
        cacheDir: cache,
        signal: controller.signal,
        onProgress: (p) => p.digest === weights && p.bytes >= 4 << 20 && controller.abort(),
      }),
    );
    expect(err.name).to.equal('AbortError');
    const events: TransferProgress[] = [];
    await pullModule(ref, { cacheDir: cache, onProgress: (p) => events.push(p) });
    expect(events.find((e) => e.digest === weights)!.resumedFrom).to.be.at.least(4 << 20);
    expect(await leftovers(cache)).to.deep.equal([]);
  });

  it('concurrent pulls of one module in one process fetch each blob once; the others wait for it', async () => {
    const { ref, weights } = await pushedWeights('fleet', 12 << 20);
    const cache = testDir('fleet-cache');
    const events: TransferProgress[][] = Array.from({ length: 8 }, () => []);
    const pulls = await Promise.all(events.map((e) => pullModule(ref, { cacheDir: cache, onProgress: (p) => e.push(p) })));
    const fetchedBy = events.filter((e) => e.some((p) => p.digest === weights && !p.done));
    expect(fetchedBy, 'pulls that moved the weights').to.have.length(1);
    for (const e of events) expect(e.filter((p) => p.digest === weights).at(-1)).to.deep.include({ bytes: 12 << 20, done: true });
    expect(new Set(pulls.map((p) => p.dir)).size).to.equal(1);
    expect(pulls.every((p) => !p.cached), 'none found the module cached when it asked').to.equal(true);
    await loadModuleDir(pulls[0]!.dir);
    expect(await leftovers(cache)).to.deep.equal([]);
  });

  it("a pull waiting on another's download carries on from it when that one is aborted, and stops at its own abort", async () => {
    const { ref, weights } = await pushedWeights('relay', 32 << 20);
    const cache = testDir('relay-cache');
    const leader = new AbortController();
    const impatient = new AbortController();
    const follower: TransferProgress[] = [];
    let others: [Promise<Awaited<ReturnType<typeof pullModule>>>, Promise<Error>] | undefined;
    const first = rejection(
      pullModule(ref, {
        cacheDir: cache,
        signal: leader.signal,
        onProgress: (p) => {
          if (p.digest !== weights) return;
          // Two more pulls ask for the module as its weights start coming; the leader stops halfway.
          others ??= [pullModule(ref, { cacheDir: cache, onProgress: (q) => follower.push(q) }), rejection(pullModule(ref, { cacheDir: cache, signal: impatient.signal }))];
          if (p.bytes > 0 && !impatient.signal.aborted) impatient.abort();
          if (p.bytes >= 16 << 20) leader.abort();
        },
      }),
    );
    expect((await first).name).to.equal('AbortError');
    expect((await others![1]).name).to.equal('AbortError');
    const pulled = await others![0];
    await loadModuleDir(pulled.dir);
    const own = follower.filter((p) => p.digest === weights);
    // Had it not waited, it would have fetched from byte 0 beside the leader (whose partial file it cannot take).
    expect(own[0]!.resumedFrom, 'resumed from what the aborted pull had written').to.be.at.least(16 << 20);
    expect(own.at(-1)).to.deep.include({ bytes: 32 << 20, done: true });
    expect(await leftovers(cache)).to.deep.equal([]);
  });

  it('two processes pulling the same module at once both succeed', async () => {
    const dir = await makeRegistryModule({ name: 'shared', files: { 'weights.bin': 24 << 20, 'a.bin': 1 << 20, 'b.bin': 2 << 20 } });
    await pushModule(dir, `${registry.host}/acme/shared`);
    const cache = testDir('shared-cache');
    const barrier = join(testDir('barrier'), 'go');
    const pulls = [0, 1].map(() => pullInChild([`${registry.host}/acme/shared@^1`, cache, '--barrier', barrier]));
    for (const p of pulls) expect(await p.line()).to.equal('ready');
    await writeFile(barrier, '');
    const results = await Promise.all(
      pulls.map(async (p) => {
        const out = JSON.parse(await p.line()) as { dir: string };
        expect(await p.exit, p.stderr()).to.equal(0);
        return out;
      }),
    );
    expect(results[0]!.dir).to.equal(results[1]!.dir);
    const loaded = await loadModuleDir(results[0]!.dir);
    expect(await readFile(loaded.files['weights_bin']!)).to.deep.equal(await readFile(join(dir, 'weights.bin')));
    expect(await leftovers(cache)).to.deep.equal([]);
  });

  it('refuses a layer whose bytes do not match its digest, and keeps nothing of it', async () => {
    const dir = await makeRegistryModule({ name: 'rotten', files: { 'weights.bin': 1 << 20 } });
    await pushModule(dir, `${registry.host}/acme/rotten`);
    const hex = (await loadModuleDir(dir, { verify: false })).manifest.files['weights_bin']!.sha256;
    // Bit rot in the registry's storage: same size, one byte flipped.
    const stored = join(registry.root, 'blobs', 'sha256', hex.slice(0, 2), hex, 'data');
    const bytes = await readFile(stored);
    bytes[1000]! ^= 0xff;
    await writeFile(stored, bytes);

    const cache = testDir('rotten-cache');
    const err = await rejection(pullModule(`${registry.host}/acme/rotten:1.0.0`, { cacheDir: cache }));
    expect(err).to.be.instanceOf(DigestMismatchError);
    expect(err.message).to.include(`registry ${registry.host} sent weights.bin (sha256:${hex}) of ${registry.host}/acme/rotten`);
    expect(err.message).to.match(/refused and nothing was kept/);
    expect((await readdir(join(cache, 'blobs', 'sha256'))).filter((n) => n.startsWith(hex))).to.deep.equal([]);
    expect(existsSync(join(cache, 'modules'))).to.equal(false);
  });

  it('refuses a layer the registry holds shorter than its manifest says, every time, where a retry cannot resume it', async () => {
    const dir = await makeRegistryModule({ name: 'cut', files: { 'weights.bin': 1 << 20 } });
    await pushModule(dir, `${registry.host}/acme/cut`);
    const hex = (await loadModuleDir(dir, { verify: false })).manifest.files['weights_bin']!.sha256;
    const stored = join(registry.root, 'blobs', 'sha256', hex.slice(0, 2), hex, 'data');
    await writeFile(stored, (await readFile(stored)).subarray(0, 1000));

    const cache = testDir('cut-cache');
    for (let attempt = 0; attempt < 2; attempt++) {
      const err = await rejection(pullModule(`${registry.host}/acme/cut:1.0.0`, { cacheDir: cache }));
      expect(err).to.be.instanceOf(DigestMismatchError);
      expect(err.message).to.include(`registry ${registry.host} holds weights.bin (sha256:${hex}) of ${registry.host}/acme/cut as 1000 bytes, where the manifest says ${1 << 20}`);
      expect(err.message).to.not.match(/pull again/);
      expect(await leftovers(cache)).to.deep.equal([]);
    }
  });

  it('refuses a manifest whose bytes do not match its digest', async () => {
    const dir = await makeRegistryModule({ name: 'forged' });
    const { digest } = await pushModule(dir, `${registry.host}/acme/forged`);
    const hex = digest.slice(7);
    const stored = join(registry.root, 'blobs', 'sha256', hex.slice(0, 2), hex, 'data');
    await writeFile(stored, (await readFile(stored, 'utf8')).replace('registry test module', 'registry evil module'));
    const cache = testDir('forged-cache');
    for (const ref of [`acme/forged@${digest}`, 'acme/forged:1.0.0']) {
      const err = await rejection(pullModule(ref, { registry: registry.host, cacheDir: cache }));
      expect(err, ref).to.be.instanceOf(DigestMismatchError);
      expect(err.message).to.match(/the manifest of .*acme\/forged.* has digest sha256:[0-9a-f]{64}, not sha256:/);
    }
    expect(existsSync(join(cache, 'modules'))).to.equal(false);
  });

  it('says which registry it cannot reach', async () => {
    const gone = await startOurRegistry();
    await gone.close();
    const err = await rejection(pullModule(`${gone.host}/acme/math@^1`, { cacheDir: testDir('gone-cache') }));
    expect(err).to.be.instanceOf(RegistryUnreachableError);
    expect(err.message).to.match(new RegExp(`cannot reach registry ${gone.host} at http://${gone.host}: ECONNREFUSED`));
  });
});

describe('registry auth', function () {
  this.timeout(60_000);
  let registry: OurRegistry;
  let pushToken: string;
  let pullToken: string;
  before(async () => {
    registry = await startOurRegistry({ auth: true });
    pushToken = (await registry.tokens.create({ scopes: ['push:acme/*'] })).token;
    pullToken = (await registry.tokens.create({ scopes: ['pull:acme/*'] })).token;
    await pushModule(await makeRegistryModule({ name: 'locked' }), `${registry.host}/acme/locked`, { registry: registry.host, token: pushToken });
  });
  after(() => registry?.close());

  const ref = () => `${registry.host}/acme/locked@^1`;
  const scope = 'repository:acme/locked:pull';

  it('pulls with a token, as Bearer or as user:token', async () => {
    expect((await pullModule(ref(), { registry: registry.host, token: pullToken, cacheDir: testDir('auth-cache') })).version).to.equal('1.0.0');
    expect((await pullModule(ref(), { registry: registry.host, token: `ci:${pullToken}`, cacheDir: testDir('auth-cache') })).version).to.equal('1.0.0');
  });

  it("the CLI's --token goes to the registry the command's reference names; the environment's token to its own registry only", async () => {
    const cache = testDir('auth-cli-cache');
    const pulled = await runReasonplug(['pull', `${registry.host}/acme/locked@^1`, '--token', pullToken], { REASONPLUG_CACHE: cache });
    expect(pulled.code, pulled.stderr).to.equal(0);
    expect(pulled.stderr).to.include('(version 1.0.0)');
    // REASONPLUG_TOKEN belongs to REASONPLUG_REGISTRY: a reference naming another registry gets none of it
    const elsewhere = await runReasonplug(['pull', `${registry.host}/acme/locked@^1`], { REASONPLUG_CACHE: testDir('auth-cli-cache'), REASONPLUG_TOKEN: pullToken, REASONPLUG_REGISTRY: 'registry.example' });
    expect(elsewhere.code).to.not.equal(0);
    expect(elsewhere.stderr).to.include(`registry ${registry.host} requires authentication`);
  });

  it('without a token, says which registry wants one for which scope, and how to give it', async () => {
    const err = await rejection(pullModule(ref(), { cacheDir: testDir('auth-cache') }));
    expect(err).to.be.instanceOf(RegistryAuthError);
    expect(err).to.deep.include({ registry: registry.host, scope, reason: 'missing' });
    expect(err.message).to.include(`registry ${registry.host} requires authentication for ${scope}`);
    expect(err.message).to.match(/--token.*REASONPLUG_TOKEN/);
  });

  it('with a wrong token, says the registry rejected it for the scope', async () => {
    const err = await rejection(pullModule(ref(), { registry: registry.host, token: `rpr_0123456789abcdef_${'00'.repeat(32)}`, cacheDir: testDir('auth-cache') }));
    expect(err).to.deep.include({ registry: registry.host, scope, reason: 'rejected' });
    expect(err.message).to.include(`registry ${registry.host} rejected the credentials for ${scope} (invalid credentials)`);
  });

  it('with a token lacking the scope, names the scope it lacks', async () => {
    const dir = await makeRegistryModule({ name: 'locked', version: '1.1.0' });
    const err = await rejection(pushModule(dir, `${registry.host}/acme/locked`, { registry: registry.host, token: pullToken }));
    expect(err).to.deep.include({ registry: registry.host, scope: 'repository:acme/locked:pull,push', reason: 'denied' });
    expect(err.message).to.match(/denied repository:acme\/locked:pull,push \(token has no push scope on acme\/locked\)/);
  });
});

describe('registry manifests that are not modules', function () {
  this.timeout(60_000);
  let registry: OurRegistry;
  let client: RegistryClient;
  let good: Awaited<ReturnType<typeof packModule>>;
  before(async () => {
    // The registry stores manifests up to 16 MiB; the client must still refuse more than 4 MiB.
    registry = await startOurRegistry({ maxManifestBytes: 16 << 20 });
    client = new RegistryClient({ registry: registry.host });
    good = await packModule(await makeRegistryModule({ name: 'odd' }));
    await client.uploadBlob('acme/odd', good.config.descriptor, () => good.config.bytes);
    for (const f of good.files) {
      const bytes = await readFile(f.path);
      await client.uploadBlob('acme/odd', f.descriptor, () => bytes);
    }
  });
  after(() => registry?.close());

  /** Pushes `manifest` under `tag` and pulls it; returns the refusal. */
  async function refusal(tag: string, manifest: unknown, extraBlobs: Buffer[] = []): Promise<Error> {
    for (const b of extraBlobs) {
      await client.uploadBlob('acme/odd', { mediaType: 'application/octet-stream', digest: sha256Digest(b), size: b.length }, () => b);
    }
    await client.putManifest('acme/odd', tag, Buffer.from(JSON.stringify(manifest)));
    const cache = testDir('odd-cache');
    const err = await rejection(pullModule(`${registry.host}/acme/odd:${tag}`, { cacheDir: cache }));
    expect(existsSync(join(cache, 'modules')), `${tag}: no module directory`).to.equal(false);
    expect(err, `${tag}: ${err.message}`).to.be.instanceOf(InvalidArtifactError);
    return err;
  }
  const variant = (edit: (m: OciManifest) => void): OciManifest => {
    const m = structuredClone(good.manifest);
    edit(m);
    return m;
  };

  it('refuses an oversized manifest', async () => {
    const err = await refusal('huge', variant((m) => (m.annotations!['padding'] = 'x'.repeat(5 << 20))));
    expect(err.message).to.match(/the manifest of .*acme\/odd:huge is \d+ bytes, over the 4194304-byte limit/);
  });

  it('refuses manifests of other artifacts and malformed module manifests', async () => {
    const imageConfig = Buffer.from('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}');
    const image = variant((m) => {
      delete m.artifactType;
      m.config = { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256Digest(imageConfig), size: imageConfig.length };
    });
    expect((await refusal('image', image, [imageConfig])).message).to.match(/artifact of type application\/vnd\.oci\.image\.config\.v1\+json, not a reasonplug module/);

    const notModule = Buffer.from('{"name":"odd"}');
    const badConfig = variant((m) => (m.config = { mediaType: MediaTypes.config, digest: sha256Digest(notModule), size: notModule.length }));
    expect((await refusal('bad-config', badConfig, [notModule])).message).to.match(/config of .* is not a valid reasonplug\.json: .*version: missing/s);

    const escape = variant((m) => (m.layers[0]!.annotations = { 'org.opencontainers.image.title': '../../escape' }));
    expect((await refusal('escape', escape)).message).to.match(/lists files\.model \(model\.onnx\) in its config but has no layer titled so/);

    const untitled = variant((m) => delete m.layers[0]!.annotations);
    expect((await refusal('untitled', untitled)).message).to.match(/has no org\.opencontainers\.image\.title annotation/);

    // A layer that exists in the registry, but is not the file the config lists.
    const swapped = variant((m) => (m.layers[0] = { ...m.layers[0]!, digest: sha256Digest(notModule), size: notModule.length }));
    expect((await refusal('swapped', swapped)).message).to.match(/the layer "model\.onnx" of .* is sha256:[0-9a-f]{64} \(14 bytes\) but its config says sha256:/);
  });
});
