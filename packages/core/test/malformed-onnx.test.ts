/**
 * model.onnx files that are not what they claim: a GGUF saved under that name (said to be GGUF, with how to load it),
 * and a model cut right after its graph (it decodes, but without the opset_import written after the graph).
 */
import { expect } from 'chai';
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Engine } from '../src/engine.js';
import { adaptDecoder } from '../src/onnx/adapt.js';
import { decodeModel, encodeModel, OnnxFormatError, readModel } from '../src/onnx/proto.js';
import { models } from '../../../test/support/paths.js';
import { rejection, thrown } from './support/assertions.js';
import { cacheDir, testDir } from './support/models.js';

/** The tiny Llama export's files but model.onnx, copied into a fresh folder. */
async function exportBesides(name: string): Promise<string> {
  const dir = testDir(name);
  for (const f of ['model.onnx.data', 'tokenizer.json', 'tokenizer_config.json', 'genai_config.json']) await copyFile(join(models.llamaFp16, f), join(dir, f));
  return dir;
}

describe('malformed model.onnx files', function () {
  this.timeout(60_000);

  it('says a GGUF named model.onnx is a GGUF file, and how to load it', async () => {
    const dir = await exportBesides('gguf-named-onnx');
    const model = join(dir, 'model.onnx');
    await copyFile(models.stories260K, model);
    const expected = `${model} is a GGUF file, not an ONNX model: give the file itself as the model (a GGUF is read by its path, whatever its name), or convert it into a module with \`reasonplug convert gguf\``;
    const err = await rejection(Engine.load({ model: dir, cacheDir }));
    expect(err).to.be.instanceOf(OnnxFormatError);
    expect(err.message).to.equal(expected);
    expect(thrown(() => decodeModel(new Uint8Array(Buffer.from('GGUF\x03\x00\x00\x00')), 'x.onnx')).message).to.match(/^x\.onnx is a GGUF file/);
  });

  it('says a model cut at the end of its graph (no opset_import) may be truncated, not that its opset is too old', async () => {
    const whole = await readModel(join(models.llamaFp16, 'model.onnx'));
    const bytes = encodeModel(whole);
    // What is written before opset_import: the file as cut right after the graph.
    const cut = encodeModel({ ...whole, opsetImport: [], metadataProps: [], functions: [], trainingInfo: [] });
    expect(Buffer.from(bytes.subarray(0, cut.length)).equals(Buffer.from(cut))).to.equal(true);
    const dir = await exportBesides('cut-at-graph');
    const model = join(dir, 'model.onnx');
    await writeFile(model, cut);

    const err = await rejection(Engine.load({ model: dir, cacheDir }));
    expect(err).to.be.instanceOf(OnnxFormatError);
    expect(err.message).to.equal(`${model}: no opset_import: the file may be truncated; download or export it again`);
    // An opset_import without the default domain says which domains it names.
    const customOnly = { ...decodeModel(await readFile(model)), opsetImport: [{ domain: 'com.microsoft', version: 1 }] };
    const custom = thrown(() => adaptDecoder(customOnly, { lastLogitsOnly: true }, 'm.onnx'));
    expect(custom).to.be.instanceOf(OnnxFormatError);
    expect(custom.message).to.equal('m.onnx: opset_import names no default-domain opset (only com.microsoft), which a graph of standard operators needs; export the model again');
  });
});
