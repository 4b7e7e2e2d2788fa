/**
 * Models Ollama has pulled (`ollama://name:tag`) and GGUF files without a `.gguf` name (Ollama's blobs): a store laid
 * out as Ollama writes it (manifests under `manifests/<host>/<namespace>/<model>/<tag>`, blobs as `sha256-<hex>`)
 * holding the real stories260K, loaded by the engine and the CLI against the same file given as `.gguf`.
 */
import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { makeGguf } from './support/gguf-writer.js';
import { join } from 'node:path';
import { models } from '../../../test/support/paths.js';
import { isGgufFile } from '../src/gguf/gguf-module.js';
import { OllamaModelError, ollamaModelFile } from '../src/modules/ollama-store.js';
import { resolveModelPath } from '../src/registry/resolve-model.js';
import { listLocalModels } from '../src/modules/local-names.js';
import { startServer } from '../src/serve/server.js';
import { ollamaListedName, ServedModels } from '../src/serve/models.js';
import { loadModuleDir } from '../src/modules/module-dir.js';
import { runReasonplug } from './support/cli.js';
import { testDir } from './support/models.js';
import { rejection, thrown } from './support/assertions.js';
import { ModelNotFoundError } from '../src/modules/locate.js';
import { cliGreedyText, greedyFromEach, withEnv } from './support/greedy-each.js';

const MODEL = 'application/vnd.ollama.image.model';

/** A layer of `bytes` written into the store's blobs, as Ollama names it. */
async function blob(store: string, bytes: Buffer | string, mediaType: string): Promise<{ mediaType: string; digest: string; size: number }> {
  const hex = createHash('sha256').update(bytes).digest('hex');
  await writeFile(join(store, 'blobs', `sha256-${hex}`), bytes);
  return { mediaType, digest: `sha256:${hex}`, size: Buffer.byteLength(bytes) };
}

/** Writes the manifest of `host/namespace/model:tag` with these layers. */
async function manifest(store: string, [host, namespace, model, tag]: string[], layers: object[]): Promise<void> {
  const dir = join(store, 'manifests', host!, namespace!, model!);
  await mkdir(dir, { recursive: true });
  const config = { mediaType: 'application/vnd.docker.container.image.v1+json', digest: `sha256:${'0'.repeat(64)}`, size: 2 };
  await writeFile(join(dir, tag!), JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.docker.distribution.manifest.v2+json', config, layers }));
}

describe('models Ollama has pulled (ollama://)', function () {
  this.timeout(120_000);
  let store: string;
  let gguf: { mediaType: string; digest: string; size: number };
  let encoder: { mediaType: string; digest: string; size: number };

  before(async () => {
    store = join(testDir('ollama'), 'models');
    await mkdir(join(store, 'blobs'), { recursive: true });
    gguf = await blob(store, await readFile(models.stories260K), MODEL);
    const template = await blob(store, '{{ .Prompt }}', 'application/vnd.ollama.image.template');
    const params = await blob(store, '{"stop":["<|end|>"]}', 'application/vnd.ollama.image.params');
    await manifest(store, ['registry.ollama.ai', 'library', 'stories', '260k'], [gguf, template, params]);
    await manifest(store, ['registry.ollama.ai', 'someone', 'tiny', 'latest'], [gguf]);
    await manifest(store, ['hf.co', 'org', 'repo', 'Q8_0'], [gguf]);
    await manifest(store, ['registry.ollama.ai', 'library', 'tuned', 'latest'], [gguf, await blob(store, 'lora', 'application/vnd.ollama.image.adapter')]);
    await manifest(store, ['registry.ollama.ai', 'library', 'gone', 'latest'], [{ mediaType: MODEL, digest: `sha256:${'a'.repeat(64)}`, size: 1 }]);
    await manifest(store, ['registry.ollama.ai', 'library', 'template-only', 'latest'], [template]);
    // An encoder model: its header is read, and its architecture refused by name.
    const bert = makeGguf({ 'general.architecture': { t: 'str', v: 'bert' } }, [{ name: 'token_embd.weight', dims: [4, 2], type: 0, data: new Uint8Array(32) }]);
    encoder = await blob(store, bert, MODEL);
    await manifest(store, ['registry.ollama.ai', 'library', 'encoder', 'latest'], [encoder]);
  });

  it("finds a model's GGUF blob by Ollama's names: defaults, namespaces, other hosts, any case", () => {
    const file = join(store, 'blobs', gguf.digest.replace(':', '-'));
    for (const name of ['stories:260k', 'Stories:260K', 'library/stories:260k', 'registry.ollama.ai/library/stories:260k', 'someone/tiny', 'someone/tiny:latest', 'hf.co/org/repo:Q8_0']) {
      expect(ollamaModelFile(`ollama://${name}`, [store]), name).to.equal(file);
    }
    // A blob has no extension; it is still read as GGUF, by its magic.
    expect(isGgufFile(file)).to.equal(true);
    expect(isGgufFile(join(store, 'manifests', 'registry.ollama.ai', 'library', 'stories', '260k'))).to.equal(false);
  });

  it('refuses what it cannot use, naming it: a name that is none, a model not pulled (listing those there are), an adapter, a missing blob, no store', () => {
    const refusal = (spec: string, stores = [store]) => {
      const err = thrown(() => ollamaModelFile(spec, stores));
      expect(err, spec).to.be.instanceOf(OllamaModelError);
      return err.message;
    };
    for (const spec of ['ollama://', 'ollama://a/b/c/d', 'ollama://../x', 'ollama://stories:', 'ollama://sto ries']) expect(refusal(spec)).to.match(/: not an Ollama model name/);
    expect(refusal('ollama://stories:7b')).to.equal(
      `ollama://stories:7b: Ollama has not pulled stories:7b into ${store} (ollama pull stories:7b); it has encoder:latest, gone:latest, hf.co/org/repo:Q8_0, someone/tiny:latest, stories:260k, template-only:latest, tuned:latest`,
    );
    expect(refusal('ollama://tuned')).to.match(/carries a LoRA adapter .* which reasonplug does not apply/);
    expect(refusal('ollama://gone')).to.match(/its model blob .*sha256-a{64} is missing \(ollama pull gone:latest again\)/);
    expect(refusal('ollama://template-only')).to.match(/has 0 model layers/);
    expect(refusal('ollama://stories:260k', [join(store, 'nowhere')])).to.match(/no Ollama model store in .*nowhere; set OLLAMA_MODELS/);
  });

  it('lists every pulled model by the name that loads it, its header read, and why the others cannot load', async () => {
    const listed = await listLocalModels({ ollamaStores: [store], hfCache: join(store, 'no-hf-cache'), lmStudioRoots: [] });
    const stories = { kind: 'gguf', architecture: 'llama', tensorTypes: ['F32'], bytes: gguf.size };
    expect(listed.map(({ path: _, ...m }) => m)).to.deep.equal([
      { name: 'ollama://encoder:latest', kind: 'gguf', architecture: 'bert', tensorTypes: ['F32'], bytes: encoder.size, refused: 'architecture "bert" is not converted' },
      { name: 'ollama://gone:latest', refused: `its model blob ${join(store, 'blobs', `sha256-${'a'.repeat(64)}`)} is missing (ollama pull gone:latest again)` },
      { name: 'ollama://hf.co/org/repo:Q8_0', ...stories },
      { name: 'ollama://someone/tiny:latest', ...stories },
      { name: 'ollama://stories:260k', ...stories },
      { name: 'ollama://template-only:latest', refused: `the manifest ${join(store, 'manifests', 'registry.ollama.ai', 'library', 'template-only', 'latest')} has 0 model layers (application/vnd.ollama.image.model); reasonplug reads a model of one GGUF file` },
      { name: 'ollama://tuned:latest', refused: 'it carries a LoRA adapter (a layer of type application/vnd.ollama.image.adapter), which reasonplug does not apply; use its base model, or merge the adapter into a GGUF file' },
    ]);
    // The CLI's table, from $OLLAMA_MODELS.
    const table = await runReasonplug(['models'], { OLLAMA_MODELS: store, HF_HUB_CACHE: join(store, 'no-hf-cache'), HOME: join(store, 'no-home') });
    expect(table.code, table.stderr).to.equal(0);
    expect(table.stdout).to.match(/^NAME +ARCHITECTURE +TENSOR TYPES +SIZE +LOADS\n/);
    expect(table.stdout).to.match(/^ollama:\/\/stories:260k +llama +F32 +[\d.]+ MiB +yes$/m);
    expect(table.stdout).to.match(/^ollama:\/\/tuned:latest +no: it carries a LoRA adapter/m);
  });

  it('the engine loads ollama://name:tag and the bare blob as it loads the .gguf file: the same greedy story', async () => {
    const specs = [models.stories260K, 'ollama://stories:260k', join(store, 'blobs', gguf.digest.replace(':', '-'))];
    const [direct, ...others] = await greedyFromEach(specs, { OLLAMA_MODELS: store });
    expect(direct).to.have.length(24);
    for (const ids of others) expect(ids).to.deep.equal(direct);
    expect(await resolveModelPath(ollamaModelFile('ollama://stories:260k', [store]), { cacheDir: testDir('ollama-cache') })).to.match(/gguf/);
  });

  it('reasonplug serve answers to the Ollama name of the model it serves, as Ollama\'s clients ask for it', async () => {
    await withEnv({ OLLAMA_MODELS: store }, async () => {
      // (a template for the Anthropic route: stories260K has none)
      const chatTemplate = '{% for m in messages %}{{ m.content }}{% endfor %}';
      const server = await startServer({ engine: { model: 'ollama://someone/tiny', cacheDir: testDir('ollama-serve-cache') }, chatTemplate, port: 0 });
      try {
        await server.ready;
        const { data } = (await (await fetch(`${server.url}/v1/models`)).json()) as { data: { id: string }[] };
        expect(data.map((m) => m.id)).to.deep.equal(['someone/tiny']);
        // Ollama's clients write `:latest`, or leave it out, on Ollama's routes and the OpenAI and Anthropic ones alike.
        const post = (path: string, body: object) => fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
        for (const model of ['someone/tiny:latest', 'someone/tiny']) {
          const res = await post('/api/generate', { model, prompt: 'Once upon a time', stream: false, options: { num_predict: 4, temperature: 0 } });
          expect(res.status, model).to.equal(200);
          expect(((await res.json()) as { eval_count: number }).eval_count).to.equal(4);
          const completion = await post('/v1/completions', { model, prompt: 'Once upon a time', max_tokens: 4, temperature: 0 });
          expect(completion.status, model).to.equal(200);
          expect(((await completion.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens).to.equal(4);
          const message = await post('/v1/messages', { model, max_tokens: 4, messages: [{ role: 'user', content: 'Once upon a time' }] });
          expect(message.status, model).to.equal(200);
        }
        // Ollama lists every model with its tag.
        const { models } = (await (await fetch(`${server.url}/api/tags`)).json()) as { models: { name: string; model: string }[] };
        expect(models.map((m) => [m.name, m.model])).to.deep.equal([['someone/tiny:latest', 'someone/tiny:latest']]);
      } finally {
        await server.close();
      }
    });
  });

  it("a served name with a tag of its own answers to it alone, one without also with Ollama's default tag", () => {
    const tagged = new ServedModels('stories:260k', []);
    expect(tagged.resolve('stories:260k')).to.deep.equal([]);
    expect(() => tagged.resolve('stories:260k:latest')).to.throw(/The model "stories:260k:latest" does not exist/);
    expect(ollamaListedName('stories:260k')).to.equal('stories:260k');
    const untagged = new ServedModels('registry.example:5000/team/model', ['r']);
    expect(untagged.resolve('registry.example:5000/team/model:latest')).to.deep.equal([]);
    expect(untagged.resolve('registry.example:5000/team/model+r:latest')).to.deep.equal(['r']);
    expect(ollamaListedName('registry.example:5000/team/model')).to.equal('registry.example:5000/team/model:latest');
  });

  it('a name Ollama has pulled, given without ollama://, is refused saying how it loads', async () => {
    await withEnv({ OLLAMA_MODELS: store }, async () => {
      // (A name with a namespace, `someone/tiny:latest`, is a registry reference and goes to the registry.)
      const err = await rejection(resolveModelPath('stories:260k', { cacheDir: testDir('ollama-hint') }));
      expect(err).to.be.instanceOf(ModelNotFoundError);
      expect(err.message).to.equal('stories:260k is neither a path nor a registry reference, and Ollama has pulled stories:260k: --model ollama://stories:260k');
      // A name Ollama has not pulled is left to the engine (a missing path), as before.
      expect(await resolveModelPath('stories', { cacheDir: testDir('ollama-hint') })).to.equal('stories');
    });
  });

  it('the CLI generates from ollama://, converts it, and says what is missing', async () => {
    const env = { OLLAMA_MODELS: store, REASONPLUG_CACHE: testDir('ollama-cli-cache') };
    expect(await cliGreedyText('ollama://stories:260k', env)).to.equal(await cliGreedyText(models.stories260K, env));
    const out = join(testDir('ollama-convert'), 'stories');
    const converted = await runReasonplug(['convert', 'gguf', 'ollama://someone/tiny', out], env);
    expect(converted.code, converted.stderr).to.equal(0);
    expect(converted.stdout.trim()).to.equal(out);
    // named as serve answers to it, not after the blob (`sha256-<hex>`); --name still names it
    expect((await loadModuleDir(out)).manifest.name).to.equal('someone-tiny');
    const named = join(testDir('ollama-convert'), 'named');
    expect((await runReasonplug(['convert', 'gguf', 'ollama://stories:260k', named, '--name', 'my-stories'], env)).code).to.equal(0);
    expect((await loadModuleDir(named)).manifest.name).to.equal('my-stories');
    // (Offline: a model no store has is otherwise pulled from Ollama's registry; ollama-pull.test.ts.)
    const missing = await runReasonplug(['generate', '--model', 'ollama://qwen2.5:0.5b', '--prompt', 'hi'], { ...env, REASONPLUG_OFFLINE: '1' });
    expect(missing.code).to.not.equal(0);
    expect(missing.stderr).to.contain('Ollama has not pulled qwen2.5:0.5b');
    expect(missing.stderr).to.contain('offline, so it was not pulled from registry.ollama.ai');
  });
});
