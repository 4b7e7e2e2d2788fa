/**
 * Models pulled by their Ollama names when no Ollama store has them (registry/ollama-pull.ts): CNCF distribution (Debian's
 * `docker-registry`) holds models pushed in the shape Ollama's registry serves them (a Docker v2 manifest whose layers
 * are the GGUF file, its template and parameters), behind a loopback front that, as registry.ollama.ai does, answers
 * blob requests with a redirect to another origin, and can damage what passes through it.
 */
import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { models } from '../../../test/support/paths.js';
import { OllamaModelError, ollamaModelLayers } from '../src/modules/ollama-store.js';
import { listLocalModels, localModelPath } from '../src/modules/local-names.js';
import { cacheUsage } from '../src/modules/cache-usage.js';
import { RegistryClient } from '../src/registry/client.js';
import { sha256Digest } from '../src/registry/artifact.js';
import { rejection } from './support/assertions.js';
import { runReasonplug } from './support/cli.js';
import { greedyFromEach } from './support/greedy-each.js';
import { testDir } from './support/models.js';
import { startServer } from '../src/serve/server.js';
import { progressLines } from '../src/cli/serve-command.js';
import type { TransferProgress } from '../src/registry/download.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { distributionMissing, startDistribution, startOurRegistry, type Distribution } from './support/registries.js';

const MODEL = 'application/vnd.ollama.image.model';

/** Pushes `layers` to `host` as Ollama's registry serves a model: a Docker v2 manifest under `repository:tag`. */
async function pushOllamaModel(host: string, repository: string, tag: string, layers: { mediaType: string; bytes: Buffer }[], token?: string): Promise<void> {
  const client = RegistryClient.for(host, { plainHttp: true, ...(token ? { token, tokenFor: host } : {}) });
  const described = async (mediaType: string, bytes: Buffer) => {
    const descriptor = { mediaType, digest: sha256Digest(bytes), size: bytes.length };
    await client.uploadBlob(repository, descriptor, () => bytes);
    return descriptor;
  };
  const config = await described('application/vnd.docker.container.image.v1+json', Buffer.from('{"model_format":"gguf","model_family":"llama"}'));
  const manifest = {
    schemaVersion: 2,
    mediaType: 'application/vnd.docker.distribution.manifest.v2+json',
    config,
    layers: await Promise.all(layers.map((l) => described(l.mediaType, l.bytes))),
  };
  const res = await fetch(`http://${host}/v2/${repository}/manifests/${tag}`, {
    method: 'PUT',
    headers: { 'content-type': manifest.mediaType, ...(token ? { authorization: `Basic ${Buffer.from(`reasonplug:${token}`).toString('base64')}` } : {}) },
    body: JSON.stringify(manifest),
  });
  if (res.status !== 201) throw new Error(`pushing ${repository}:${tag} failed with ${res.status}: ${await res.text()}`);
}

/**
 * A loopback front to `registry`: manifests pass through; a blob request is redirected to the registry itself (another
 * origin, as Ollama's registry sends blobs to a CDN), or with `corrupt` served with one byte changed. With `challenge`,
 * a request without its anonymous token is answered with a Bearer challenge whose token service (`/token`) hands that
 * token to anyone. Records every request's Authorization header, the token service's included.
 */
async function startFront(
  registry: string,
): Promise<{ host: string; corrupt: boolean; challenge: boolean; paused?: Promise<void>; authorizations: (string | undefined)[]; close(): Promise<void> }> {
  const front = {
    host: '',
    corrupt: false,
    challenge: false,
    paused: undefined as Promise<void> | undefined,
    authorizations: [] as (string | undefined)[],
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
  const server: Server = createServer(async (req, res) => {
    front.authorizations.push(req.headers.authorization);
    if (req.url?.startsWith('/token')) {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"token":"anonymous"}');
      return;
    }
    if (front.challenge && req.headers.authorization !== 'Bearer anonymous') {
      res.writeHead(401, { 'www-authenticate': `Bearer realm="http://${front.host}/token",service="front"` }).end();
      return;
    }
    const url = `http://${registry}${req.url}`;
    const blob = /\/blobs\/sha256:/.test(req.url ?? '');
    if (blob && !front.corrupt && !front.paused) {
      res.writeHead(307, { location: url }).end();
      return;
    }
    const upstream = await fetch(url, { method: req.method, headers: { accept: req.headers.accept ?? '*/*', ...(req.headers.range ? { range: req.headers.range } : {}) } });
    const body = Buffer.from(await upstream.arrayBuffer());
    if (blob && front.corrupt && body.length > 100) body[100]! ^= 0xff;
    const headers: Record<string, string> = { 'content-length': String(body.length) };
    for (const name of ['content-type', 'docker-content-digest', 'content-range']) {
      const value = upstream.headers.get(name);
      if (value) headers[name] = value;
    }
    res.writeHead(upstream.status, headers);
    if (req.method === 'HEAD') return void res.end();
    // Paused: half of a blob now, the rest once the test lets it go on.
    if (blob && front.paused) {
      res.write(body.subarray(0, body.length >> 1));
      await front.paused;
      return void res.end(body.subarray(body.length >> 1));
    }
    res.end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  front.host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  return front;
}

describe("models pulled by their Ollama names from Ollama's registry (ollama://host/…)", function () {
  this.timeout(180_000);
  let registry: Distribution;
  let front: Awaited<ReturnType<typeof startFront>>;
  let stories: Buffer;
  /** No Ollama store on this "machine". */
  const noOllama = { OLLAMA_MODELS: join(testDir('no-ollama'), 'models') };

  before(async function () {
    const missing = distributionMissing();
    if (missing) return this.skip();
    registry = await startDistribution();
    front = await startFront(registry.host);
    stories = await readFile(models.stories260K);
    const template = { mediaType: 'application/vnd.ollama.image.template', bytes: Buffer.from('{{ .Prompt }}') };
    const params = { mediaType: 'application/vnd.ollama.image.params', bytes: Buffer.from('{"stop":["</s>"]}') };
    await pushOllamaModel(registry.host, 'library/stories', '260k', [{ mediaType: MODEL, bytes: stories }, template, params]);
    // A GGUF repository as the Hugging Face hub's Ollama registry serves it (registries keep names in lower case).
    await pushOllamaModel(registry.host, 'org/stories-gguf', 'Q8_0', [{ mediaType: MODEL, bytes: stories }]);
    await pushOllamaModel(registry.host, 'someone/tuned', 'latest', [
      { mediaType: MODEL, bytes: stories },
      { mediaType: 'application/vnd.ollama.image.adapter', bytes: Buffer.from('lora') },
    ]);
  });
  after(async () => {
    await front?.close();
    await registry?.close();
  });

  it('pulls the model layer of a model no store has, loads it as the GGUF file, and reads it from the cache afterwards', async () => {
    const cache = testDir('ollama-pull-cache');
    const name = `ollama://${front.host}/library/stories:260k`;
    const [direct, pulled] = await greedyFromEach([models.stories260K, name], { ...noOllama, REASONPLUG_CACHE: cache });
    expect(pulled).to.deep.equal(direct);
    // The GGUF file came down, under Ollama's blob name, in reasonplug's store, with the model's options (its
    // defaults) and not its Go template; the manifest beside them.
    const digest = createHash('sha256').update(stories).digest('hex');
    const store = join(cache, 'ollama');
    const paramsDigest = createHash('sha256').update('{"stop":["</s>"]}').digest('hex');
    expect(await readdir(join(store, 'blobs'))).to.have.members([`sha256-${digest}`, `sha256-${paramsDigest}`]);
    expect(ollamaModelLayers(name, [store])).to.deep.equal({ params: { stop: ['</s>'] } });
    expect(existsSync(join(store, 'manifests', front.host, 'library', 'stories', '260k'))).to.equal(true);
    // Listed by the name that loads it, and in the cache's own part.
    const listed = await listLocalModels({ ollamaStores: [noOllama.OLLAMA_MODELS, store], hfCache: join(cache, 'no-hf'), lmStudioRoots: [] });
    expect(listed.map((m) => [m.name, m.architecture])).to.deep.equal([[`ollama://${front.host}/library/stories:260k`, 'llama']]);
    const usage = await cacheUsage(cache);
    expect(usage.entries.filter((e) => e.part === 'ollama').map((e) => [e.name, e.bytes])).to.deep.include([`ollama://${front.host}/library/stories:260k`, stories.length]);
    // Found again without the registry: the front is asked nothing more.
    const asked = front.authorizations.length;
    expect(await localModelPath(name, { cacheDir: cache })).to.equal(join(store, 'blobs', `sha256-${digest}`));
    expect(front.authorizations.length).to.equal(asked);
  });

  it("pulls an hf:// GGUF file the Hugging Face cache lacks through the hub's Ollama registry ($HF_ENDPOINT), the name's case kept", async () => {
    const env = { ...noOllama, HF_HUB_CACHE: join(testDir('empty-hf-cache'), 'hub'), HF_ENDPOINT: `http://${front.host}`, REASONPLUG_CACHE: testDir('hf-pull-cache') };
    const [direct, pulled] = await greedyFromEach([models.stories260K, 'hf://org/Stories-GGUF:Q8_0'], env);
    expect(pulled).to.deep.equal(direct);
    // `reasonplug pull hf://…` prints the file (pulled already: the same one).
    const cli = await runReasonplug(['pull', 'hf://org/Stories-GGUF:Q8_0'], env);
    expect(cli.code, cli.stderr).to.equal(0);
    expect(cli.stdout.trim()).to.equal(join(env.REASONPLUG_CACHE, 'ollama', 'blobs', `sha256-${createHash('sha256').update(stories).digest('hex')}`));
    // Stored under the Ollama name it was pulled as, which loads it too.
    const listed = await listLocalModels({ ollamaStores: [join(env.REASONPLUG_CACHE, 'ollama')], hfCache: env.HF_HUB_CACHE, lmStudioRoots: [] });
    expect(listed.map((m) => m.name)).to.deep.equal([`ollama://${front.host}/org/Stories-GGUF:Q8_0`]);
    // What the hub does not have: the cache's refusal, then the registry's.
    const saved = { ...process.env };
    Object.assign(process.env, env);
    try {
      const err = await rejection(localModelPath('hf://org/Stories-GGUF:Q2_K', { cacheDir: env.REASONPLUG_CACHE }));
      expect(err.message).to.match(
        new RegExp(`^hf://org/Stories-GGUF:Q2_K: org/Stories-GGUF is not in the Hugging Face cache .*; as ollama://${front.host.replace(/\./g, '\\.')}/org/Stories-GGUF:Q2_K: pulling it failed: registry \\S+ has no org/Stories-GGUF:Q2_K$`),
      );
    } finally {
      process.env = saved;
    }
  });

  it("reasonplug serve says on /health how far a first load's pull has come, and reports its progress", async () => {
    let resume!: () => void;
    front.paused = new Promise<void>((r) => (resume = r));
    const events: TransferProgress[] = [];
    const cacheDir = testDir('ollama-serve-pull');
    const saved = { ...process.env };
    Object.assign(process.env, noOllama, { REASONPLUG_CACHE: cacheDir });
    const server = await startServer({ engine: { model: `ollama://${front.host}/library/stories:260k`, cacheDir, onProgress: (p) => events.push(p) }, port: 0 });
    try {
      let health: { status: string; progress?: { file: string; bytes: number; size: number } } | undefined;
      // The paused front has sent half the blob; it may arrive in several chunks.
      const half = stories.length >> 1;
      for (let i = 0; i < 400 && health?.progress?.bytes !== half; i++) {
        const res = await fetch(`${server.url}/health`);
        expect(res.status).to.equal(503);
        health = (await res.json()) as typeof health;
        if (health?.progress?.bytes !== half) await sleep(25);
      }
      expect(health).to.deep.equal({ status: 'loading', progress: { file: `${front.host}/library/stories:260k`, bytes: half, size: stories.length } });
      resume();
      await server.ready;
      expect((await fetch(`${server.url}/health`)).status).to.equal(200);
      const pulled = events.filter((e) => e.file === `${front.host}/library/stories:260k`);
      expect(pulled.at(-1)).to.include({ bytes: stories.length, size: stories.length, done: true });
      // The conversion's reading of the file is reported too.
      expect(events.some((e) => e.file !== pulled[0]!.file && e.size === stories.length)).to.equal(true);
    } finally {
      front.paused = undefined;
      resume();
      process.env = saved;
      await server.close();
    }
  });

  it('`reasonplug pull ollama://…` pulls again and prints the GGUF file; `reasonplug cache` lists it', async () => {
    const env = { ...noOllama, REASONPLUG_CACHE: testDir('ollama-pull-cli') };
    const r = await runReasonplug(['pull', `ollama://${front.host}/library/stories:260k`], env);
    expect(r.code, r.stderr).to.equal(0);
    expect(createHash('sha256').update(await readFile(r.stdout.trim())).digest()).to.deep.equal(createHash('sha256').update(stories).digest());
    const listing = await runReasonplug(['cache'], env);
    expect(listing.stdout).to.match(new RegExp(`^ollama +[\\d.]+ [KM]iB +ollama://${front.host.replace(/\./g, '\\.')}/library/stories:260k$`, 'm'));
    // offline, the file it pulled is what a pull gives (read from where it was kept, not refused as a pull)
    const offline = await runReasonplug(['pull', `ollama://${front.host}/library/stories:260k`, '--offline'], env);
    expect(offline.code, offline.stderr).to.equal(0);
    expect(offline.stdout).to.equal(r.stdout);
    const cleared = await runReasonplug(['cache', 'clear', 'ollama'], env);
    expect(cleared.code, cleared.stderr).to.equal(0);
    expect(existsSync(join(env.REASONPLUG_CACHE, 'ollama'))).to.equal(false);
  });

  it('refuses, naming why and leaving nothing: a model the registry lacks, an adapter, a corrupt download, no registry, offline', async () => {
    const cache = testDir('ollama-pull-refusals');
    const refusal = async (spec: string, env: Record<string, string> = {}) => {
      const saved = { ...process.env };
      Object.assign(process.env, noOllama, env);
      try {
        const err = await rejection(localModelPath(spec, { cacheDir: cache }));
        expect(err, spec).to.be.instanceOf(OllamaModelError);
        return err.message;
      } finally {
        process.env = saved;
      }
    };
    expect(await refusal(`ollama://${front.host}/library/stories:7b`)).to.match(
      /: no Ollama model store in .*; pulling it failed: registry 127\.0\.0\.1:\d+ has no library\/stories:7b$/,
    );
    expect(await refusal(`ollama://${front.host}/someone/tuned`)).to.match(/carries a LoRA adapter/);
    front.corrupt = true;
    try {
      expect(await refusal(`ollama://${front.host}/library/stories:260k`)).to.match(/pulling it failed: registry .* sent .* with digest sha256:[0-9a-f]{64}; the content is corrupt/);
    } finally {
      front.corrupt = false;
    }
    const closed = await startFront(registry.host);
    await closed.close();
    expect(await refusal(`ollama://${closed.host}/library/stories:260k`)).to.match(/pulling it failed: cannot reach registry 127\.0\.0\.1:\d+/);
    expect(await refusal(`ollama://${front.host}/library/stories:260k`, { REASONPLUG_OFFLINE: '1' })).to.match(/; offline, so it was not pulled from 127\.0\.0\.1:\d+$/);
    // Nothing under a final name: no manifest, no blob.
    const left = existsSync(join(cache, 'ollama')) ? await readdir(join(cache, 'ollama'), { recursive: true }) : [];
    expect(left.filter((p) => /^(blobs\/sha256-[0-9a-f]{64}|manifests\/.*\/[^/]+\/[^/]+\/[^/]+)$/.test(p) && !p.endsWith('.partial'))).to.deep.equal([]);
  });

  it("pulls through an anonymous token challenge, and never sends the token set for reasonplug's own registry", async () => {
    const before = front.authorizations.length;
    const env = { ...noOllama, REASONPLUG_CACHE: testDir('ollama-pull-token'), REASONPLUG_TOKEN: 'secret', REASONPLUG_REGISTRY: 'registry.example' };
    front.challenge = true;
    try {
      const r = await runReasonplug(['pull', `ollama://${front.host}/library/stories:260k`], env);
      expect(r.code, r.stderr).to.equal(0);
    } finally {
      front.challenge = false;
    }
    const sent = front.authorizations.slice(before);
    expect(sent).to.include('Bearer anonymous');
    expect(sent.filter((a) => a !== undefined && a !== 'Bearer anonymous')).to.deep.equal([]);
  });
});

describe("models in Ollama's format on reasonplug's own registry (ollama://host/team/model:tag)", function () {
  this.timeout(120_000);

  it('loads a GGUF model a team keeps there, sending the token set for that registry', async () => {
    const registry = await startOurRegistry({ auth: true });
    try {
      const { token: pusher } = await registry.tokens.create({ scopes: ['push:team/*'], user: 'ci' });
      const { token: reader } = await registry.tokens.create({ scopes: ['pull:team/*'], user: 'reader' });
      const stories = await readFile(models.stories260K);
      await pushOllamaModel(registry.host, 'team/stories', '260k', [{ mediaType: MODEL, bytes: stories }], pusher);
      const env = { OLLAMA_MODELS: join(testDir('no-ollama'), 'models'), REASONPLUG_CACHE: testDir('team-pull-cache'), REASONPLUG_REGISTRY: registry.host };
      const refused = await runReasonplug(['pull', `ollama://${registry.host}/team/stories:260k`], env);
      expect(refused.code).to.not.equal(0);
      expect(refused.stderr).to.match(/requires authentication/);
      const [direct, pulled] = await greedyFromEach([models.stories260K, `ollama://${registry.host}/team/stories:260k`], { ...env, REASONPLUG_TOKEN: reader });
      expect(pulled).to.deep.equal(direct);
    } finally {
      await registry.close();
    }
  });
});

describe("reasonplug serve's progress lines", () => {
  it('writes a line each time a large file passes another tenth, and none for small files', () => {
    const lines: string[] = [];
    const report = progressLines((line) => lines.push(line));
    const size = 100 * 2 ** 20;
    for (const bytes of [0, 5, 10, 10.5, 35, 99.9].map((m) => Math.round(m * 2 ** 20))) report({ file: 'qwen2.5:7b', digest: 'sha256:a', size, bytes, resumedFrom: 0, done: false });
    report({ file: 'qwen2.5:7b', digest: 'sha256:a', size, bytes: size, resumedFrom: 0, done: true });
    report({ file: 'small', digest: 'sha256:b', size: 2 ** 20, bytes: 2 ** 20, resumedFrom: 0, done: true });
    expect(lines).to.deep.equal(['qwen2.5:7b: 10% of 100.0 MiB', 'qwen2.5:7b: 30% of 100.0 MiB', 'qwen2.5:7b: 90% of 100.0 MiB', 'qwen2.5:7b: 100% of 100.0 MiB']);
  });
});
