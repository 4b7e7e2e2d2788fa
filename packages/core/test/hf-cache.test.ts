/**
 * Models in the Hugging Face hub cache (`hf://org/repo[@revision][:QUANT]`, `hf://org/repo/file`): a cache laid out as
 * huggingface_hub writes it (`models--<org>--<repo>/refs/<revision>` → `snapshots/<commit>/<file>`, files as links into
 * `blobs/`), holding the real stories260K under the names GGUF repositories give their files, and an export directory.
 */
import { expect } from 'chai';
import { copyFile, mkdir, readdir, readFile, realpath, rename, symlink, writeFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { models } from '../../../test/support/paths.js';
import { HfCacheError, hfCachePath, hfCacheRoot } from '../src/modules/hf-cache.js';
import { listLocalModels } from '../src/modules/local-names.js';
import { ModelNotFoundError } from '../src/modules/locate.js';
import { randomLlamaWeights, writeLlamaModel } from '../src/onnx/llama-builder.js';
import { findPreparedDecoder, prepareDecoder } from '../src/onnx/prepared-cache.js';
import { runReasonplug } from './support/cli.js';
import { storiesConfig, storiesModule } from './support/modules.js';
import { testDir } from './support/models.js';
import { thrown } from './support/assertions.js';
import { cliGreedyText, greedyFromEach } from './support/greedy-each.js';

const MAIN = 'a'.repeat(40);
const OLD = 'b'.repeat(40);

/** Writes `files` (path in the repository → bytes) as revision `commit` of `org/repo`, named by `refs`. */
async function snapshot(cache: string, id: string, commit: string, refs: string[], files: Record<string, Buffer | string>): Promise<string> {
  const repo = join(cache, `models--${id.replace('/', '--')}`);
  const snap = join(repo, 'snapshots', commit);
  for (const [path, bytes] of Object.entries(files)) {
    const blob = join(repo, 'blobs', `${commit.slice(0, 8)}-${path.replace(/\//g, '_')}`);
    await mkdir(dirname(blob), { recursive: true });
    await writeFile(blob, bytes);
    await mkdir(dirname(join(snap, path)), { recursive: true });
    await symlink(relative(dirname(join(snap, path)), blob), join(snap, path));
  }
  for (const ref of refs) {
    await mkdir(join(repo, 'refs'), { recursive: true });
    await writeFile(join(repo, 'refs', ref), commit);
  }
  return snap;
}

describe('models in the Hugging Face cache (hf://)', function () {
  this.timeout(120_000);
  let cache: string;
  let gguf: Buffer;
  let exportSnap: string;

  before(async () => {
    cache = join(testDir('hf-cache'), 'hub');
    gguf = await readFile(models.stories260K);
    await snapshot(cache, 'org/stories-GGUF', MAIN, ['main'], {
      'stories260K-Q4_K_M.gguf': gguf,
      'stories260K-Q8_0.gguf': gguf,
      'stories260K-Q4_K.gguf': gguf,
      'mmproj-stories260K-f16.gguf': 'projector',
      'Q2_K/stories260K-Q2_K-00001-of-00002.gguf': gguf,
      'Q2_K/stories260K-Q2_K-00002-of-00002.gguf': 'shard',
      'README.md': '# stories',
    });
    await snapshot(cache, 'org/stories-GGUF', OLD, ['v1'], { 'stories260K-Q8_0.gguf': gguf });
    await snapshot(cache, 'org/one-GGUF', MAIN, ['main'], { 'one.Q8_0.gguf': gguf });
    await snapshot(cache, 'org/two-GGUF', MAIN, ['main'], { 'two.Q8_0.gguf': gguf, 'two.Q6_K.gguf': gguf });
    // An export directory: the stories module's files (reasonplug.json, model.onnx, tokenizer files).
    const module = await storiesModule();
    const files: Record<string, Buffer> = {};
    for (const f of ['reasonplug.json', 'model.onnx', 'tokenizer.json', 'tokenizer_config.json']) files[f] = await readFile(join(module, f));
    exportSnap = await snapshot(cache, 'org/stories-onnx', MAIN, ['main'], files);
  });

  it('finds a file by quantization, by path, at a revision; the one GGUF file; an export directory; as llama.cpp picks', () => {
    const at = (spec: string) => hfCachePath(spec, cache);
    const snap = join(cache, 'models--org--stories-GGUF', 'snapshots');
    expect(at('hf://org/stories-GGUF:Q8_0')).to.equal(join(snap, MAIN, 'stories260K-Q8_0.gguf'));
    expect(at('hf://org/stories-GGUF:q4_k')).to.equal(join(snap, MAIN, 'stories260K-Q4_K.gguf'));
    expect(at('huggingface://org/stories-GGUF:Q2_K')).to.equal(join(snap, MAIN, 'Q2_K', 'stories260K-Q2_K-00001-of-00002.gguf'));
    // Several files, none named: Q4_K_M, llama.cpp's default.
    expect(at('hf://org/stories-GGUF')).to.equal(join(snap, MAIN, 'stories260K-Q4_K_M.gguf'));
    expect(at('hf://org/stories-GGUF/stories260K-Q8_0.gguf')).to.equal(join(snap, MAIN, 'stories260K-Q8_0.gguf'));
    expect(at('hf://org/stories-GGUF@v1:Q8_0')).to.equal(join(snap, OLD, 'stories260K-Q8_0.gguf'));
    expect(at(`hf://org/stories-GGUF@${OLD}`)).to.equal(join(snap, OLD, 'stories260K-Q8_0.gguf'));
    expect(at('hf://ORG/Stories-gguf:Q8_0')).to.equal(join(snap, MAIN, 'stories260K-Q8_0.gguf'));
    expect(at('hf://org/one-GGUF')).to.equal(join(cache, 'models--org--one-GGUF', 'snapshots', MAIN, 'one.Q8_0.gguf'));
    expect(at('hf://org/stories-onnx')).to.equal(exportSnap);
    expect(hfCacheRoot({ HF_HOME: '/h' })).to.equal(join('/h', 'hub'));
    expect(hfCacheRoot({ HF_HUB_CACHE: '/c', HF_HOME: '/h' })).to.equal('/c');
    expect(hfCacheRoot({ XDG_CACHE_HOME: '/x' })).to.equal(join('/x', 'huggingface', 'hub'));
  });

  it('refuses what the cache cannot answer, naming it with what it has and the command that fetches it', () => {
    const refusal = (spec: string) => {
      const err = thrown(() => hfCachePath(spec, cache));
      expect(err, spec).to.be.instanceOf(HfCacheError);
      return err.message;
    };
    for (const spec of ['hf://', 'hf://org/', 'hf://org/repo:Q8_0/file.gguf', 'hf://org/repo/../x.gguf', 'hf://-org/repo', 'hf://org/repo@', 'hf://org/repo@v1/../x.gguf', 'hf://org/repo@v1/f.gguf:Q8_0']) {
      expect(refusal(spec), spec).to.match(/is not a Hugging Face model name/);
    }
    // (`hf://org` names a repository of no organization, as `hf://gpt2`: model-discovery.test.ts.)
    expect(refusal('hf://org')).to.match(/^hf:\/\/org: org is not in the Hugging Face cache/);
    expect(refusal('hf://org/missing')).to.equal(
      `hf://org/missing: org/missing is not in the Hugging Face cache at ${cache} (hf download org/missing); it has org/one-GGUF, org/stories-GGUF, org/stories-onnx, org/two-GGUF`,
    );
    expect(refusal('hf://org/stories-GGUF:Q5_K_M')).to.match(/no GGUF file of org\/stories-GGUF in the cache is Q5_K_M; it has Q2_K\/stories260K-Q2_K-00001-of-00002\.gguf, stories260K-Q4_K\.gguf, stories260K-Q4_K_M\.gguf, stories260K-Q8_0\.gguf$/);
    expect(refusal('hf://org/two-GGUF')).to.match(/has 2 GGUF files in the cache \(two\.Q6_K\.gguf, two\.Q8_0\.gguf\); choose one with hf:\/\/org\/two-GGUF:<QUANT>/);
    expect(refusal('hf://org/stories-GGUF@v2')).to.equal(
      `hf://org/stories-GGUF@v2: revision v2 of org/stories-GGUF is not in the cache; it has commits ${MAIN} (main), ${OLD} (v1), loaded as hf://org/stories-GGUF@<commit>; hf download org/stories-GGUF --revision v2`,
    );
    expect(refusal('hf://org/stories-GGUF/other.gguf')).to.match(/other\.gguf of org\/stories-GGUF is not in the cache \(hf download org\/stories-GGUF other\.gguf\)/);
  });

  it('lists each model by the name that loads it: a repository of one GGUF file or an export directory by its own, several files each by path', async () => {
    const listed = await listLocalModels({ ollamaStores: [join(cache, 'no-ollama')], hfCache: cache, lmStudioRoots: [] });
    const stories = { kind: 'gguf', architecture: 'llama', tensorTypes: ['F32'], bytes: gguf.length };
    expect(listed.map(({ path: _, ...m }) => m)).to.deep.equal([
      { name: 'hf://org/one-GGUF', ...stories },
      { name: 'hf://org/stories-GGUF/Q2_K/stories260K-Q2_K-00001-of-00002.gguf', ...stories },
      { name: 'hf://org/stories-GGUF/stories260K-Q4_K.gguf', ...stories },
      { name: 'hf://org/stories-GGUF/stories260K-Q4_K_M.gguf', ...stories },
      { name: 'hf://org/stories-GGUF/stories260K-Q8_0.gguf', ...stories },
      { name: 'hf://org/stories-onnx', kind: 'directory' },
      { name: 'hf://org/two-GGUF/two.Q6_K.gguf', ...stories },
      { name: 'hf://org/two-GGUF/two.Q8_0.gguf', ...stories },
    ]);
    expect(listed.find((m) => m.name === 'hf://org/stories-onnx')!.path).to.equal(exportSnap);
    // Every name listed loads as that path.
    for (const m of listed) expect(hfCachePath(m.name, cache), m.name).to.equal(m.path);
  });

  it('the engine loads a GGUF file and an export directory by their hub names as by their paths: the same greedy story', async () => {
    const specs = [models.stories260K, 'hf://org/stories-GGUF:Q8_0', await storiesModule(), 'hf://org/stories-onnx'];
    const [gguf, named, module, exported] = await greedyFromEach(specs, { HF_HUB_CACHE: cache });
    expect(gguf).to.have.length(24);
    expect(named).to.deep.equal(gguf);
    expect(exported).to.deep.equal(module);
  });

  it('the CLI takes hf:// names and says what is missing', async () => {
    const env = { HF_HUB_CACHE: cache, REASONPLUG_CACHE: testDir('hf-cli-cache') };
    expect(await cliGreedyText('hf://org/stories-GGUF:Q8_0', env)).to.equal(await cliGreedyText(models.stories260K, env));
    // (Offline: a GGUF file the cache lacks is otherwise pulled through the hub's Ollama registry; ollama-pull.test.ts.)
    const missing = await runReasonplug(['generate', '--model', 'hf://Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M', '--prompt', 'hi'], { ...env, REASONPLUG_OFFLINE: '1' });
    expect(missing.code).to.not.equal(0);
    expect(missing.stderr).to.contain('Qwen/Qwen2.5-0.5B-Instruct-GGUF is not in the Hugging Face cache');
    expect(missing.stderr).to.contain('; as ollama://hf.co/Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M: offline, so it was not pulled from hf.co');
  });

  it('reasonplug quantize takes hf:// names: an export directory is quantized, a GGUF file sent to convert gguf', async () => {
    const env = { HF_HUB_CACHE: cache, REASONPLUG_CACHE: testDir('hf-quantize-cache') };
    const dest = join(testDir('hf-quantize'), 'stories-q8');
    const quantized = await runReasonplug(['quantize', 'hf://org/stories-onnx', dest, '--bits', '8'], env);
    expect(quantized.code, quantized.stderr).to.equal(0);
    expect(quantized.stdout.trim()).to.equal(dest);
    const gguf = await runReasonplug(['quantize', 'hf://org/stories-GGUF:Q8_0', join(testDir('hf-quantize'), 'no')], env);
    expect(gguf.code).to.not.equal(0);
    expect(gguf.stderr).to.contain(`convert gguf ${join(cache, 'models--org--stories-GGUF', 'snapshots', MAIN, 'stories260K-Q8_0.gguf')} DIR`);
  });

  it('a link whose blob is gone is refused when chosen, naming it, not passed over for another file', async () => {
    const snap = await snapshot(cache, 'org/partial-GGUF', MAIN, ['main'], { 'p.Q8_0.gguf': gguf, 'p.Q4_K_M.gguf': gguf });
    const blob = join(cache, 'models--org--partial-GGUF', 'blobs', `${MAIN.slice(0, 8)}-p.Q4_K_M.gguf`);
    await rename(blob, `${blob}.gone`);
    const err = thrown(() => hfCachePath('hf://org/partial-GGUF', cache));
    expect(err).to.be.instanceOf(ModelNotFoundError);
    expect(err.message).to.equal(`${join(snap, 'p.Q4_K_M.gguf')} is a symlink to ${blob}, which does not exist`);
    expect(thrown(() => hfCachePath('hf://org/partial-GGUF/p.Q4_K_M.gguf', cache))).to.be.instanceOf(ModelNotFoundError);
    expect(hfCachePath('hf://org/partial-GGUF:Q8_0', cache)).to.equal(join(snap, 'p.Q8_0.gguf'));
    const listed = await listLocalModels({ ollamaStores: [join(cache, 'no-ollama')], hfCache: cache, lmStudioRoots: [] });
    expect(listed.filter((m) => m.name.startsWith('hf://org/partial-GGUF')).map((m) => [m.name, m.refused ?? 'loads'])).to.deep.equal([
      ['hf://org/partial-GGUF/p.Q4_K_M.gguf', err.message],
      ['hf://org/partial-GGUF/p.Q8_0.gguf', 'loads'],
    ]);
  });

  it('an export whose data files are links into blobs/, or into another directory, decodes as the same export in a plain directory', async () => {
    // A hub export keeping its weights in chunks beside the graph (model.onnx_data, model.onnx_data_1, ...).
    const plain = testDir('hub-external');
    const stories = await storiesModule();
    await mkdir(join(plain, 'onnx'));
    const config = storiesConfig();
    await writeLlamaModel(join(plain, 'onnx', 'model.onnx'), config, randomLlamaWeights(config, 5, 0.1), { externalData: { location: 'model.onnx_data', chunkBytes: 64 * 1024 } });
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) await copyFile(join(stories, f), join(plain, f));
    await writeFile(join(plain, 'config.json'), JSON.stringify({ model_type: 'llama', eos_token_id: 2 }));
    const graphs = (await readdir(join(plain, 'onnx'))).map((f) => join('onnx', f));
    expect(graphs).to.include.members([join('onnx', 'model.onnx_data'), join('onnx', 'model.onnx_data_1')]);
    // Its own hub cache (the listings above name every repository of theirs).
    const hub = join(testDir('hf-external'), 'hub');
    const files: Record<string, Buffer> = {};
    for (const f of [...graphs, 'tokenizer.json', 'tokenizer_config.json', 'config.json']) files[f] = await readFile(join(plain, f));
    await snapshot(hub, 'org/stories-external-ONNX', MAIN, ['main'], files);
    // A directory whose onnx/ files are links to the plain one's.
    const linked = testDir('hub-linked');
    await mkdir(join(linked, 'onnx'));
    for (const f of ['tokenizer.json', 'tokenizer_config.json', 'config.json']) await copyFile(join(plain, f), join(linked, f));
    for (const f of graphs) await symlink(join(plain, f), join(linked, f));

    const [fromPlain, fromHub, fromLinks] = await greedyFromEach([plain, 'hf://org/stories-external-ONNX', linked], { HF_HUB_CACHE: hub });
    expect(fromPlain).to.have.length(24);
    expect(fromHub).to.deep.equal(fromPlain);
    expect(fromLinks).to.deep.equal(fromPlain);

    // onnxruntime is given blobs/, where the data really is; the graph so prepared is found again without writing.
    const graph = join(hfCachePath('hf://org/stories-external-ONNX', hub), 'onnx', 'model.onnx');
    const opts = { lastLogitsOnly: true, logitsFloat32: true, cacheDir: testDir('hf-external-prepared') };
    const prepared = await prepareDecoder(graph, opts);
    expect(prepared.externalDataDir).to.equal(await realpath(join(hub, 'models--org--stories-external-ONNX', 'blobs')));
    expect(await findPreparedDecoder(graph, opts)).to.deep.equal(prepared);
  });
});
