/**
 * What a model path loads, and what it is refused for before its graph is looked at: a module whose graph keeps
 * weights in files its manifest does not list, the decoder an onnxruntime-genai export's genai_config.json names,
 * and a latent-projector module given where a decoder belongs.
 */
import { expect } from 'chai';
import { readdirSync, readlinkSync } from 'node:fs';
import { copyFile, mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Engine } from '../src/engine.js';
import { ModelNotFoundError, locateModel } from '../src/modules/locate.js';
import { ModuleIntegrityError, loadModuleDir, tokenizerFingerprintOfDir, writeModuleDir } from '../src/modules/module-dir.js';
import { packModule } from '../src/registry/artifact.js';
import { randomLlamaWeights, writeLlamaModel } from '../src/onnx/llama-builder.js';
import { UnsupportedModelError } from '../src/onnx/signature.js';
import { ProjectorError } from '../src/runtime/projector-session.js';
import { models, repoRoot } from '../../../test/support/paths.js';
import { rejection } from './support/assertions.js';
import { cacheDir, testDir } from './support/models.js';
import { storiesConfig, storiesModule } from './support/modules.js';

const LLAMA_FILES = ['model.onnx', 'model.onnx.data', 'tokenizer.json', 'tokenizer_config.json', 'genai_config.json'];

/** Writes the manifest of the tiny Llama export copied into `dir`, listing `files`. */
async function writeLlamaManifest(dir: string, files: Record<string, string>): Promise<void> {
  await writeModuleDir(dir, {
    name: 'tiny-llama',
    version: '1.0.0',
    kind: 'backbone',
    tasks: [],
    description: 'module loading test',
    license: 'MIT',
    compat: { tokenizer: (await tokenizerFingerprintOfDir(dir))!, vocabSize: 32000 },
    files,
  });
}

const TOKENIZER_FILES = { tokenizer: 'tokenizer.json', tokenizerConfig: 'tokenizer_config.json' };

/** Greedy ids of `model` for a short prompt. */
async function greedy(model: string): Promise<number[]> {
  const engine = await Engine.load({ model, cacheDir });
  try {
    return (await engine.generate({ promptIds: [1, 15043, 3186] }, { maxTokens: 4 })).rows[0]!.ids;
  } finally {
    await engine.dispose();
  }
}

describe('module and export directory loading', function () {
  this.timeout(120_000);

  describe('external data a module does not list', () => {
    it('refuses a module whose model.onnx keeps weights in an unlisted model.onnx.data, and loads it once listed', async () => {
      const dir = testDir('unlisted-data');
      for (const f of LLAMA_FILES) await copyFile(join(models.llamaFp16, f), join(dir, f));
      await writeLlamaManifest(dir, { model: 'model.onnx', ...TOKENIZER_FILES });
      const data = join(dir, 'model.onnx.data');
      const expected =
        `${join(dir, 'model.onnx')} (files.model) keeps weights in ${data}, which the manifest's files do not list: unlisted, weights are ` +
        'neither verified nor published with the module — write the module again listing it (writeModuleDir, e.g. as files.modelData); ' +
        'a module downloaded so is incomplete and must be published again';
      for (const attempt of [() => loadModuleDir(dir), () => loadModuleDir(dir, { verify: false }), () => packModule(dir), () => Engine.load({ model: dir, cacheDir })]) {
        const err = await rejection(attempt());
        expect(err).to.be.instanceOf(ModuleIntegrityError);
        expect(err).to.include({ file: 'model', path: data, problem: 'unlisted', message: expected });
      }
      const bytes = await readFile(data);
      // What a pull of such a module leaves (the data file never travelled), and a changed data file.
      await rm(data);
      expect(await rejection(loadModuleDir(dir))).to.include({ problem: 'unlisted', path: data });
      bytes[4096] ^= 0xff;
      await writeFile(data, bytes);
      expect(await rejection(loadModuleDir(dir))).to.include({ problem: 'unlisted', path: data });

      bytes[4096] ^= 0xff;
      await writeFile(data, bytes);
      await writeLlamaManifest(dir, { model: 'model.onnx', modelData: 'model.onnx.data', ...TOKENIZER_FILES });
      expect((await loadModuleDir(dir)).files.modelData).to.equal(data);
      bytes[4096] ^= 0xff;
      await writeFile(data, bytes);
      expect(await rejection(loadModuleDir(dir))).to.include({ file: 'modelData', problem: 'sha256' });
    });

    it('resolves locations beside a graph in a subfolder, and names every chunk left out (the hub splits data in chunks)', async () => {
      const dir = testDir('chunked-data');
      const stories = await storiesModule();
      for (const f of ['tokenizer.json', 'tokenizer_config.json']) await copyFile(join(stories, f), join(dir, f));
      await mkdir(join(dir, 'onnx'));
      const config = storiesConfig();
      await writeLlamaModel(join(dir, 'onnx', 'model.onnx'), config, randomLlamaWeights(config, 5, 0.1), {
        externalData: { location: 'model.onnx_data', chunkBytes: 16 * 1024 },
      });
      // In the order they are written (the order the graph names them): model.onnx_data, model.onnx_data_1, ...
      const chunks = (await readdir(join(dir, 'onnx'))).filter((f) => f.startsWith('model.onnx_data')).sort((a, b) => a.length - b.length || (a < b ? -1 : 1));
      expect(chunks.length).to.be.greaterThan(2);
      const write = async (files: string[]) =>
        writeModuleDir(dir, {
          name: 'chunked-data',
          version: '1.0.0',
          kind: 'logit-reasoner',
          tasks: ['test'],
          description: 'module loading test',
          license: 'MIT',
          compat: { tokenizer: (await tokenizerFingerprintOfDir(dir))!, vocabSize: config.vocabSize },
          composition: { defaultWeight: 1, mode: 'logits' },
          files: { model: 'onnx/model.onnx', ...TOKENIZER_FILES, ...Object.fromEntries(files.map((f, i) => [`data${i}`, `onnx/${f}`])) },
        });
      await write(chunks.slice(0, 1));
      const err = await rejection(loadModuleDir(dir));
      expect(err).to.include({ problem: 'unlisted', path: join(dir, 'onnx', chunks[1]!) });
      expect(err.message).to.include(`keeps weights in ${chunks.slice(1).map((f) => join(dir, 'onnx', f)).join(', ')}, which`);
      expect(err.message).to.include('listing them');
      await write(chunks);
      expect((await loadModuleDir(dir)).files.model).to.equal(join(dir, 'onnx', 'model.onnx'));
    });
  });

  describe("an onnxruntime-genai export's decoder", () => {
    /** The tiny Llama export with its decoder renamed to `name`, as genai_config.json says (or `named` says). */
    async function genaiDir(label: string, name: string, named = name): Promise<string> {
      const dir = testDir(label);
      for (const f of LLAMA_FILES) await copyFile(join(models.llamaFp16, f), join(dir, f));
      await rename(join(dir, 'model.onnx'), join(dir, name));
      const config = JSON.parse(await readFile(join(dir, 'genai_config.json'), 'utf8')) as { model: { decoder: { filename: string } } };
      expect(config.model.decoder.filename).to.equal('model.onnx');
      config.model.decoder.filename = named;
      await writeFile(join(dir, 'genai_config.json'), JSON.stringify(config));
      return dir;
    }

    it('loads the decoder file genai_config.json names, and decodes as that file given directly', async () => {
      const dir = await genaiDir('genai-decoder', 'decoder.onnx');
      const location = await locateModel(dir);
      expect(location).to.deep.equal({ modelPath: join(dir, 'decoder.onnx'), tokenizerDir: dir });
      expect(await greedy(dir)).to.deep.equal(await greedy(join(dir, 'decoder.onnx')));
    });

    it('names the decoder genai_config.json names when it is not there', async () => {
      const dir = await genaiDir('genai-missing', 'decoder.onnx', 'other.onnx');
      const err = await rejection(locateModel(dir));
      expect(err).to.be.instanceOf(ModelNotFoundError);
      expect(err.message).to.include(`or ${join(dir, 'other.onnx')}, the decoder its genai_config.json names, which is not there`);
    });

    it('refuses the shared legacy GPT-2 directory (past.onnx) for its stacked-KV layout, not as a directory without a model', async () => {
      expect((await locateModel(models.gpt2Legacy)).modelPath).to.equal(join(models.gpt2Legacy, 'past.onnx'));
      const err = await rejection(Engine.load({ model: models.gpt2Legacy, cacheDir }));
      expect(err).to.be.instanceOf(UnsupportedModelError);
      expect(err.message).to.include('found the legacy stacked KV-cache layout');
    });
  });

  describe('a latent-projector module where a decoder belongs', () => {
    const modules = join(repoRoot, 'examples', 'modules');
    const [policy, projector] = [join(modules, 'toy-math-policy'), join(modules, 'toy-math-projector')];
    const refusal = `${projector} is a latent-projector module, not a decoder: pass it as the projector (--projector, or the projector option), not as a model, reasoner or draft model`;

    it('is refused by its kind as the model, as a reasoner and as a draft model', async () => {
      const asModel = await rejection(Engine.load({ model: projector, cacheDir }));
      expect(asModel).to.be.instanceOf(ProjectorError);
      expect(asModel.message).to.equal(refusal);
      const asReasoner = await rejection(Engine.load({ model: policy, reasoners: [{ model: projector }], cacheDir }));
      expect(asReasoner).to.be.instanceOf(ProjectorError);
      expect(asReasoner.message).to.equal(`reasoner 1 (${projector}): ${refusal}`);
      const asDraft = await rejection(Engine.load({ model: policy, draftModel: { model: projector }, cacheDir }));
      expect(asDraft).to.be.instanceOf(ProjectorError);
      expect(asDraft.message).to.equal(`draft model ${projector}: ${refusal}`);
    });
  });
});

describe('a module file refused for its digest', function () {
  this.timeout(60_000);

  it('is reported once the hashing of the other files has ended, not while it still holds them open', async function () {
    // A model worker reports the refusal and is terminated: hashes still under way then left their digest records
    // half written (`.tmp` files in the cache). Open descriptors show what is still under way (Linux: /proc/self/fd).
    if (process.platform !== 'linux') this.skip();
    const dir = testDir('digest-refused');
    await writeFile(join(dir, 'model.onnx'), 'a graph');
    const large = Buffer.alloc(24 << 20, 7);
    for (const name of ['a.bin', 'b.bin', 'c.bin']) await writeFile(join(dir, name), large);
    await writeModuleDir(dir, {
      name: 'digest-refused',
      version: '1.0.0',
      kind: 'backbone',
      tasks: [],
      description: 'a module whose small graph no longer has its digest',
      license: 'MIT',
      compat: { tokenizer: `sha256:${'0'.repeat(64)}`, vocabSize: 8 },
      files: { model: 'model.onnx', a: 'a.bin', b: 'b.bin', c: 'c.bin' },
    });
    await writeFile(join(dir, 'model.onnx'), 'A graph');
    const err = await rejection(loadModuleDir(dir));
    expect(err).to.be.instanceOf(ModuleIntegrityError);
    // (Looked at synchronously: awaited reads would give the hashing time to end.)
    const held = readdirSync('/proc/self/fd').flatMap((fd) => {
      try {
        const target = readlinkSync(join('/proc/self/fd', fd));
        return target.startsWith(dir) ? [target] : [];
      } catch {
        return [];
      }
    });
    expect(held).to.deep.equal([]);
  });
});
