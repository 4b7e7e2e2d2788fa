/**
 * Converting a GGUF reads each dense weight as the build writes it out (issue #16: a multi-GB file must not need memory
 * several times its size): the data file already holds the earlier weights when a later tensor is read, rather than
 * every tensor being read into floats before anything is written. Row reads of a tensor agree with whole-tensor reads.
 */
import { expect } from 'chai';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { convertGguf } from '../src/gguf/convert.js';
import { GgufFile } from '../src/gguf/reader.js';
import { storiesTokenizerMeta, writeRandomGguf } from './support/gguf-models.js';
import { GGML, quantizeGgml } from './support/ggml-quantize.js';
import { rewriteGguf } from './support/gguf-writer.js';
import { testDir } from './support/models.js';

const SPEC = { arch: 'llama', hidden: 64, layers: 6, heads: 4, kvHeads: 2, ff: 128, untied: true } as const;

describe('GGUF conversion streams its weights', function () {
  this.timeout(60_000);

  for (const dtype of ['float32', 'float16'] as const) {
    it(`reads a later tensor only once the earlier ones are in model.onnx.data (F16 file, ${dtype})`, async () => {
      const dir = testDir('convert-streaming');
      const gguf = join(dir, 'model-f16.gguf');
      await writeRandomGguf(gguf, { ...SPEC, matrixType: 1 }, await storiesTokenizerMeta());
      const out = join(dir, 'module');
      const data = join(out, 'model.onnx.data');
      const reads: { bytes: number; total: number; written: number }[] = [];
      await convertGguf(gguf, out, {
        dtype,
        externalData: true,
        onTensorRead: (bytes, total) => reads.push({ bytes, total, written: existsSync(data) ? statSync(data).size : 0 }),
      });
      const size = statSync(data).size;
      const last = reads.at(-1)!;
      // every tensor's bytes counted, once
      expect(last.bytes).to.equal(last.total);
      // the last layer's weights are read after the embedding's and the first five layers' are written
      expect(last.written).to.be.greaterThan(size / 2);
      expect(reads.map((r) => r.written)).to.deep.equal(reads.map((r) => r.written).sort((a, b) => a - b));
    });
  }

  it('readRowsSync gives the rows readTensor gives (F32, F16, BF16, Q8_0)', async () => {
    const dir = testDir('gguf-rows');
    const base = join(dir, 'f32.gguf');
    await writeRandomGguf(base, { ...SPEC, layers: 1 }, await storiesTokenizerMeta());
    for (const type of [GGML.F32, GGML.F16, GGML.BF16, GGML.Q8_0]) {
      const path = join(dir, `t${type}.gguf`);
      await rewriteGguf(
        base,
        path,
        (_m, tensors) => {
          for (const [name, t] of tensors) if (name.endsWith('ffn_down.weight')) t.type = type;
        },
        (values, t) => quantizeGgml(values, t),
      );
      const f = await GgufFile.open(path);
      try {
        const name = 'blk.0.ffn_down.weight';
        const cols = f.tensorInfo(name)!.dims[0]!;
        expect(f.tensorInfo(name)!.type).to.equal(type);
        const whole = await f.readTensor(name);
        expect(Array.from(f.readRowsSync(name, 3, 5))).to.deep.equal(Array.from(whole.subarray(3 * cols, 8 * cols)));
        expect(Array.from(f.readRowsSync(name))).to.deep.equal(Array.from(whole));
        expect(() => f.readRowsSync(name, 60, 5)).to.throw(RangeError, /rows 60 to 65 of tensor "blk.0.ffn_down.weight", which has 64/);
      } finally {
        await f.close();
      }
    }
  });
});
