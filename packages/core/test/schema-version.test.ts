/**
 * The manifest's schemaVersion says what the graph returns: 2 where it may return each run's new keys and values
 * (`new_key_values.{i}`), which a reader of version 1 (ARCHITECTURE.md's `present.{i}` decoders) cannot run; 1 for
 * every other module. Checked on real conversions, quantizations, loads, and a push and pull through a registry.
 */
import { expect } from 'chai';
import * as ort from 'onnxruntime-node';
import { cp, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Engine } from '../src/engine.js';
import { convertGguf } from '../src/gguf/convert.js';
import { MANIFEST_FILE } from '../src/modules/manifest.js';
import { loadModuleDir, writeModuleDir, type ModuleDirInit } from '../src/modules/module-dir.js';
import { quantizeModel } from '../src/modules/quantize-module.js';
import { pullModule } from '../src/registry/pull.js';
import { pushModule } from '../src/registry/push.js';
import { GEMMA2_SLIDING, storiesTokenizerMeta, writeRandomGguf } from './support/gguf-models.js';
import { cacheDir, testDir } from './support/models.js';
import { startOurRegistry } from './support/registries.js';

const STORIES = new URL('../../../../shared/models/stories260K/stories260K.gguf', import.meta.url).pathname;
const PROMPT = [1, 403, 407, 261, 378];

/** The names of a graph's key and value outputs, by the stem they share (`new_key_values` or `present`). */
async function kvStems(modelPath: string): Promise<string[]> {
  const session = await ort.InferenceSession.create(modelPath);
  try {
    const stems = session.outputNames.filter((n) => /\.\d+\.(key|value)$/.test(n)).map((n) => n.replace(/\.\d+\.(key|value)$/, ''));
    return [...new Set(stems)];
  } finally {
    await session.release();
  }
}

async function greedyIds(model: string): Promise<number[]> {
  const engine = await Engine.load({ cacheDir, model });
  try {
    return (await engine.generate({ promptIds: PROMPT }, { maxTokens: 8 })).rows[0]!.ids;
  } finally {
    await engine.dispose();
  }
}

describe('module schemaVersion', function () {
  this.timeout(120_000);
  let fresh: string;
  let joined: string;
  before(async () => {
    const root = testDir('schema-version');
    fresh = (await convertGguf(STORIES, join(root, 'new'))).dir;
    joined = (await convertGguf(STORIES, join(root, 'joined'), { kvOutput: 'joined' })).dir;
  });

  it('convert gguf writes 2 for a graph returning new keys and values, 1 for joined presents, the kernel and sliding windows', async () => {
    expect((await loadModuleDir(fresh)).manifest.schemaVersion).to.equal(2);
    expect(await kvStems(join(fresh, 'model.onnx'))).to.deep.equal(['new_key_values']);
    expect((await loadModuleDir(joined)).manifest.schemaVersion).to.equal(1);
    expect(await kvStems(join(joined, 'model.onnx'))).to.deep.equal(['present']);

    const root = testDir('schema-version-joined');
    const gqa = await convertGguf(STORIES, join(root, 'gqa'), { attention: 'gqa' });
    expect(gqa.manifest.schemaVersion).to.equal(1);
    expect(await kvStems(join(gqa.dir, 'model.onnx'))).to.deep.equal(['present']);
    // Sliding windows keep joined presents even where new keys and values are asked for.
    const gguf = join(root, 'gemma2.gguf');
    await writeRandomGguf(gguf, GEMMA2_SLIDING, await storiesTokenizerMeta());
    const sliding = await convertGguf(gguf, join(root, 'gemma2'), { kvOutput: 'new' });
    expect(JSON.parse(await readFile(join(sliding.dir, MANIFEST_FILE), 'utf8')).schemaVersion).to.equal(1);
    expect(await kvStems(join(sliding.dir, 'model.onnx'))).to.deep.equal(['present']);
  });

  it("quantize keeps the source's version, and the quantized graph keeps the source's outputs", async () => {
    const root = testDir('schema-version-q');
    for (const [src, version, stem] of [
      [fresh, 2, 'new_key_values'],
      [joined, 1, 'present'],
    ] as const) {
      const { path, manifest } = await quantizeModel(src, join(root, `q-${version}`), { bits: 8 });
      expect(manifest?.schemaVersion).to.equal(version);
      expect((await loadModuleDir(path)).manifest.schemaVersion).to.equal(version);
      expect(await kvStems(join(path, 'model.onnx'))).to.deep.equal([stem]);
    }
  });

  it('a version 2 module runs and goes through a registry; a version 1 module made with new keys and values still runs', async () => {
    const ids = await greedyIds(fresh);
    expect(ids).to.have.length(8);
    // Modules converted before version 2 existed declare 1 over the same graph.
    const older = join(testDir('schema-version-v1'), 'older');
    await cp(fresh, older, { recursive: true });
    const manifest = JSON.parse(await readFile(join(older, MANIFEST_FILE), 'utf8')) as { schemaVersion: number };
    await writeFile(join(older, MANIFEST_FILE), JSON.stringify({ ...manifest, schemaVersion: 1 }, null, 2) + '\n');
    expect((await loadModuleDir(older)).manifest.schemaVersion).to.equal(1);
    expect(await greedyIds(older)).to.deep.equal(ids);

    const registry = await startOurRegistry();
    try {
      const { name, version } = (await loadModuleDir(fresh)).manifest;
      const ref = `${registry.host}/acme/${name}:${version}`;
      await pushModule(fresh, ref);
      const pulled = await pullModule(ref, { cacheDir: testDir('schema-version-pull') });
      expect((await loadModuleDir(pulled.dir)).manifest.schemaVersion).to.equal(2);
    } finally {
      await registry.close();
    }
  });

  it('writeModuleDir writes the version it is given, else 1', async () => {
    const dir = testDir('schema-version-write');
    await cp(join(fresh, 'model.onnx'), join(dir, 'model.onnx'));
    await cp(join(fresh, 'tokenizer.json'), join(dir, 'tokenizer.json'));
    const { files: _files, schemaVersion: _schema, ...fields } = (await loadModuleDir(fresh)).manifest;
    const init: ModuleDirInit = { ...fields, files: { model: 'model.onnx', tokenizer: 'tokenizer.json' } };
    expect((await writeModuleDir(dir, init)).schemaVersion).to.equal(1);
    expect((await writeModuleDir(dir, { ...init, schemaVersion: 2 })).schemaVersion).to.equal(2);
    expect((await loadModuleDir(dir)).manifest.schemaVersion).to.equal(2);
  });
});
