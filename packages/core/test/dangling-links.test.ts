/**
 * Symlinks whose target is missing, where a model's files are looked for: refused naming the link and its target
 * (`ModelNotFoundError`), never taken for an absent file (a module run as a plain export without its manifest's
 * checks, a model without its tokenizer, "no model in …").
 */
import { expect } from 'chai';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Engine } from '../src/engine.js';
import { entryOf } from '../src/modules/dir-entries.js';
import { locateModel, ModelNotFoundError } from '../src/modules/locate.js';
import { ollamaModelFile } from '../src/modules/ollama-store.js';
import { models } from '../../../test/support/paths.js';
import { rejection, thrown } from './support/assertions.js';
import { runReasonplug } from './support/cli.js';
import { cacheDir, testDir } from './support/models.js';

const FILES = ['model.onnx', 'model.onnx.data', 'tokenizer.json', 'tokenizer_config.json', 'genai_config.json'];

/** The tiny Llama export as links to the shared copy, but `dangling` linked to a path that does not exist. */
async function linkedExport(name: string, dangling: Record<string, string>): Promise<string> {
  const dir = testDir(name);
  for (const f of FILES) if (!(f in dangling)) await symlink(join(models.llamaFp16, f), join(dir, f));
  for (const [f, target] of Object.entries(dangling)) await symlink(target, join(dir, f));
  return dir;
}

describe('dangling symlinks in a model', function () {
  this.timeout(60_000);

  it('a model folder of working links loads as before', async () => {
    const dir = await linkedExport('linked', {});
    expect(await locateModel(dir)).to.deep.include({ modelPath: join(dir, 'model.onnx'), tokenizerDir: dir });
  });

  it('refuses a module whose reasonplug.json is a symlink to nothing, rather than running it unchecked as a plain export', async () => {
    const dir = await linkedExport('manifest', { 'reasonplug.json': '/nonexistent/reasonplug.json' });
    const expected = `${join(dir, 'reasonplug.json')} is a symlink to /nonexistent/reasonplug.json, which does not exist`;
    const err = await rejection(locateModel(dir));
    expect(err).to.be.instanceOf(ModelNotFoundError);
    expect(err.message).to.equal(expected);
    const loading = await rejection(Engine.load({ model: dir, cacheDir }));
    expect(loading).to.be.instanceOf(ModelNotFoundError);
    expect(loading.message).to.equal(expected);
    const cli = await runReasonplug(['generate', '--model', dir, '--prompt', 'Hi', '--max-tokens', '2'], { REASONPLUG_CACHE: join(testDir('cli'), 'cache') });
    expect(cli.code).to.not.equal(0);
    expect(cli.stderr).to.include(`ModelNotFoundError: ${expected}`);
  });

  it('refuses a tokenizer.json that is a symlink to nothing, beside a plain export and beside a graph given by path', async () => {
    // A relative target is named where it points.
    const dir = await linkedExport('tokenizer', { 'tokenizer.json': '../gone/tokenizer.json' });
    const expected = `${join(dir, 'tokenizer.json')} is a symlink to ${join(dir, '..', 'gone', 'tokenizer.json')}, which does not exist`;
    for (const path of [dir, join(dir, 'model.onnx')]) {
      const err = await rejection(locateModel(path));
      expect(err, path).to.be.instanceOf(ModelNotFoundError);
      expect(err.message, path).to.equal(expected);
    }
  });

  it('refuses a graph that is a symlink to nothing, in a folder or given by path, and a link that loops', async () => {
    const dir = await linkedExport('graph', { 'model.onnx': '/nonexistent/model.onnx' });
    const expected = `${join(dir, 'model.onnx')} is a symlink to /nonexistent/model.onnx, which does not exist`;
    for (const path of [dir, join(dir, 'model.onnx')]) {
      const err = await rejection(locateModel(path));
      expect(err, path).to.be.instanceOf(ModelNotFoundError);
      expect(err.message, path).to.equal(expected);
    }
    const hub = testDir('hub');
    await mkdir(join(hub, 'onnx'));
    await symlink('/nonexistent/model_q4.onnx', join(hub, 'onnx', 'model_q4.onnx'));
    expect((await rejection(locateModel(hub))).message).to.equal(`${join(hub, 'onnx', 'model_q4.onnx')} is a symlink to /nonexistent/model_q4.onnx, which does not exist`);

    const loop = join(testDir('loop'), 'model');
    await symlink(loop, loop);
    const err = await rejection(locateModel(loop));
    expect(err).to.be.instanceOf(ModelNotFoundError);
    expect(err.message).to.equal(`${loop} is a symlink that loops back on itself`);
  });

  it("refuses an entry of another tool's store that is a symlink to nothing (an Ollama manifest)", async () => {
    const store = join(testDir('ollama'), 'models');
    const model = join(store, 'manifests', 'registry.ollama.ai', 'library', 'stories');
    await mkdir(model, { recursive: true });
    await mkdir(join(store, 'blobs'));
    await symlink('/nonexistent/manifest', join(model, 'latest'));
    await writeFile(join(model, 'other'), '{}');
    const expected = `${join(model, 'latest')} is a symlink to /nonexistent/manifest, which does not exist`;
    const err = thrown(() => ollamaModelFile('ollama://stories', [store]));
    expect(err).to.be.instanceOf(ModelNotFoundError);
    expect(err.message).to.equal(expected);
    // The same entry found by a name in another case.
    expect(thrown(() => entryOf(model, 'LATEST')).message).to.equal(expected);
    expect(entryOf(model, 'OTHER')).to.equal(join(model, 'other'));
  });
});
