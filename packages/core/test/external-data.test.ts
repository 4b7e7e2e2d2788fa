/**
 * External-data files that are there but unusable, refused in one line naming the file before onnxruntime opens it:
 * an absolute `location` or one leading out of the model's folder (ONNX names external data relative to the model,
 * below it), a directory where the data file belongs, and a data file this user cannot read (onnxruntime's own report
 * is "SystemError : 13").
 */
import { expect } from 'chai';
import { chmod, copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Engine } from '../src/engine.js';
import { prepareDecoder } from '../src/onnx/prepared-cache.js';
import { OnnxFormatError, readModel, writeModel } from '../src/onnx/proto.js';
import { models } from '../../../test/support/paths.js';
import { rejection } from './support/assertions.js';
import { cacheDir, testDir } from './support/models.js';

const DATA_BYTES = 2130080;

/** The tiny Llama export (weights in model.onnx.data) copied into `dir`, without its data file. */
async function exportWithoutData(dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  for (const f of ['model.onnx', 'tokenizer.json', 'tokenizer_config.json', 'genai_config.json']) await copyFile(join(models.llamaFp16, f), join(dir, f));
  return join(dir, 'model.onnx');
}

describe('unusable external-data files', function () {
  this.timeout(60_000);

  it('refuses an absolute external-data location by name, though the file it names exists', async () => {
    const dir = testDir('absolute');
    const model = await exportWithoutData(dir);
    const absolute = join(models.llamaFp16, 'model.onnx.data');
    const proto = await readModel(model);
    for (const t of proto.graph!.initializer!) for (const e of t.externalData ?? []) if (e.key === 'location') e.value = absolute;
    await writeModel(model, proto);
    const err = await rejection(Engine.load({ model: dir, cacheDir }));
    expect(err).to.be.instanceOf(OnnxFormatError);
    expect(err.message).to.equal(
      `${model} keeps weights in ${absolute}, an absolute path: ONNX requires external data to be named relative to the model's folder; export the model again`,
    );
  });

  it('refuses a location that leads out of the model folder by name, rather than checking the file it reaches', async () => {
    // Checked as written, a file outside (here a short one, as /etc/passwd was) was called a truncated data file.
    const dir = testDir('outside');
    const model = await exportWithoutData(join(dir, 'inner'));
    await writeFile(join(dir, 'outside.data'), 'not weights');
    const proto = await readModel(model);
    for (const t of proto.graph!.initializer!) for (const e of t.externalData ?? []) if (e.key === 'location') e.value = '../outside.data';
    await writeModel(model, proto);
    const err = await rejection(Engine.load({ model: join(dir, 'inner'), cacheDir }));
    expect(err).to.be.instanceOf(OnnxFormatError);
    expect(err.message).to.equal(
      `${model} keeps weights in ../outside.data, outside the model's folder: ONNX requires external data to be a file in that folder or below it; export the model again`,
    );
  });

  it('says a data file that is a directory is one, not that it is missing', async () => {
    const dir = testDir('data-dir');
    await exportWithoutData(dir);
    await mkdir(join(dir, 'model.onnx.data'));
    const err = await rejection(Engine.load({ model: dir, cacheDir }));
    expect(err).to.be.instanceOf(OnnxFormatError);
    expect(err.message).to.equal(
      `${join(dir, 'model.onnx.data')} is a directory: model.onnx keeps weights in it (${DATA_BYTES} bytes expected); it must be the data file saved with the model`,
    );
  });

  it('says a data file this user cannot read is not readable, before onnxruntime opens it', async function () {
    // Root reads any file: the check then runs as nobody (effective ids, given back after), in a folder nobody can enter.
    const root = process.geteuid?.() === 0;
    if (!process.geteuid || (root && !process.seteuid)) this.skip();
    const dir = await mkdtemp(join(tmpdir(), 'reasonplug-unreadable-'));
    try {
      await chmod(dir, 0o755);
      const model = await exportWithoutData(dir);
      await copyFile(join(models.llamaFp16, 'model.onnx.data'), join(dir, 'model.onnx.data'));
      await chmod(join(dir, 'model.onnx.data'), 0o000);
      const asUser = async <T>(fn: () => Promise<T>): Promise<T> => {
        if (!root) return fn();
        process.setegid!(65534);
        process.seteuid!(65534);
        try {
          return await fn();
        } finally {
          process.seteuid!(0);
          process.setegid!(0);
        }
      };
      const err = await asUser(() => rejection(prepareDecoder(model, {})));
      expect(err).to.be.instanceOf(OnnxFormatError);
      expect(err.message).to.equal(`${join(dir, 'model.onnx.data')} is not readable (permission denied): model.onnx keeps weights in it; give this user read access to it`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
