import { expect } from 'chai';
import { existsSync, readdirSync } from 'node:fs';
import { mkdir, open, readdir, readFile, stat, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { quantizeModel } from '../src/modules/quantize-module.js';
import { loadModuleDir } from '../src/modules/module-dir.js';
import { quantizeGraph, QuantizeError } from '../src/onnx/quantize/quantize-graph.js';
import { OnnxFormatError, onnx, readModel, writeModel, type ModelProto } from '../src/onnx/proto.js';
import { randomLlamaWeights, writeLlamaModel } from '../src/onnx/llama-builder.js';
import { testDir } from './support/models.js';
import { makeModule, storiesConfig } from './support/modules.js';

const config = storiesConfig({ hiddenSize: 64, intermediateSize: 128 });
const EXTERNAL = onnx.TensorProto.DataLocation.EXTERNAL;

/** The file descriptors this process holds (Linux), or undefined where /proc does not list them. */
function openFds(): number | undefined {
  return existsSync('/proc/self/fd') ? readdirSync('/proc/self/fd').length : undefined;
}

/** Every external tensor's entry `key`, set by `fn` (from its current value). */
function editEntries(model: ModelProto, key: string, fn: (value: string) => string): void {
  for (const t of model.graph!.initializer ?? []) {
    if (t.dataLocation !== EXTERNAL) continue;
    const e = t.externalData!.find((x) => x.key === key)!;
    e.value = fn(e.value!);
  }
}

/** A float model whose weights are in `model.onnx.data` beside it, in `dir`. */
async function externalModel(dir: string, seed: number): Promise<string> {
  await mkdir(dir, { recursive: true });
  const path = join(dir, 'model.onnx');
  await writeLlamaModel(path, config, randomLlamaWeights(config, seed, 0.1), { externalData: true });
  return path;
}

describe('reasonplug quantize: large and long-named files', function () {
  this.timeout(120_000);

  it('reads weights kept beyond 2 GiB into their data file (a sparse 3 GiB file) as it reads them near its start', async () => {
    const root = testDir('q-far');
    const near = await externalModel(join(root, 'near'), 11);
    // The same graph and bytes, every tensor moved 3 GiB further into its file: past what one Buffer holds.
    const FAR = 3 * 2 ** 30;
    const model = await readModel(near);
    editEntries(model, 'offset', (v) => String(Number(v) + FAR));
    const farDir = join(root, 'far');
    await mkdir(farDir);
    const bytes = await readFile(join(root, 'near', 'model.onnx.data'));
    const data = join(farDir, 'model.onnx.data');
    const file = await open(data, 'w');
    try {
      await file.truncate(FAR + bytes.length); // a hole: no disk used
      await file.write(bytes, 0, bytes.length, FAR);
    } finally {
      await file.close();
    }
    await writeModel(join(farDir, 'model.onnx'), model);
    expect((await stat(data)).size).to.be.above(2 ** 31);

    const [a, b] = [join(root, 'near-q4.onnx'), join(root, 'far-q4.onnx')];
    await quantizeModel(near, a, { bits: 4 });
    const { report } = await quantizeModel(join(farDir, 'model.onnx'), b, { bits: 4 });
    expect(report.matmuls).to.equal(11);
    // Quantization is deterministic: the same weights give the same file, byte for byte.
    expect(Buffer.compare(await readFile(a), await readFile(b))).to.equal(0);
  });

  it('refuses a truncated data file, naming it, and closes the data files it opened, on success and on failure', async () => {
    const root = testDir('q-trunc');
    const path = await externalModel(root, 12);
    const model = await readModel(path);
    const before = openFds();
    quantizeGraph(model, path, root, { bits: 4 });
    expect(openFds()).to.equal(before);

    const data = join(root, 'model.onnx.data');
    await truncate(data, (await stat(data)).size - 100);
    expect(() => quantizeGraph(model, path, root, { bits: 4 })).to.throw(OnnxFormatError, /model\.onnx\.data ends before .* bytes at offset \d+: the file is truncated/);
    expect(openFds()).to.equal(before);
  });

  it('quantizes into a destination whose name is 240 bytes long, module and file alike, leaving nothing else beside it', async () => {
    const module = await makeModule({ name: 'qlongname', config, kind: 'backbone', seed: 13 });
    const root = testDir('q-long');
    const name = 'n'.repeat(240);
    const dir = join(root, 'modules');
    await mkdir(dir);
    const { path } = await quantizeModel(module, join(dir, name), { bits: 4 });
    expect(path).to.equal(join(dir, name));
    expect((await loadModuleDir(path)).manifest.version).to.equal('1.0.0-q4'); // every digest checked
    expect(await readdir(dir)).to.deep.equal([name]);
    // the result keeps the folder mode mkdir gives (the private temporary folder's 0700 is not passed on)
    await mkdir(join(root, 'plain'));
    expect((await stat(path)).mode & 0o777).to.equal((await stat(join(root, 'plain'))).mode & 0o777);

    const files = join(root, 'files');
    await mkdir(files);
    const fileName = `${'f'.repeat(235)}.onnx`;
    await quantizeModel(join(module, 'model.onnx'), join(files, fileName), { bits: 8 });
    expect(await readdir(files)).to.deep.equal([fileName]);

    // A failure under such a name leaves nothing behind either.
    const err = await quantizeModel(path, join(dir, `${'m'.repeat(239)}2`)).catch((e: Error) => e);
    expect(err).to.be.instanceOf(QuantizeError);
    expect((err as Error).message).to.contain('already quantized');
    expect(await readdir(dir)).to.deep.equal([name]);
  });
});
