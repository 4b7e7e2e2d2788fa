/**
 * The benchmark's reference points agree with a known answer: transformers.js' own generate() (through
 * bench/support/transformers-ref.ts) and the bare onnxruntime-node loop (bench/support/bare-loop.ts) both
 * reproduce the greedy continuation recorded for onnxruntime-genai's tiny random Llama (fp16, external data).
 */
import { expect } from 'chai';
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  loadTransformersModel,
  prepareTransformersDir,
  readDecoderInfo,
  type DecoderInfo,
} from '../bench/support/transformers-ref.js';
import { loadBareLoop } from '../bench/support/bare-loop.js';
import { Engine, randomLlamaWeights, writeLlamaModel } from '@reasonplug/core';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';

const here = dirname(fileURLToPath(import.meta.url));
const MODEL_DIR = resolve(here, '../../shared/models/tiny-random-llama-fp16');
const MODEL = join(MODEL_DIR, 'model.onnx');
const PROMPT = [1, 15043, 3186];
const EXPECTED = [30016, 7356, 9023, 25068, 22665, 2507, 5236, 14142];

describe('transformers.js reference harness (tiny-random-llama-fp16)', function () {
  this.timeout(20_000);

  let info: DecoderInfo;
  let listing: string[];

  before(async function () {
    if (!existsSync(MODEL)) throw new Error(`test model missing: ${MODEL} (see ../shared/models/README.md)`);
    listing = (await readdir(MODEL_DIR)).sort();
    info = await readDecoderInfo(MODEL);
  });

  it('reads the decoder sizes from the graph', function () {
    expect(info).to.deep.equal({ vocabSize: 32000, numLayers: 2, numKvHeads: 1, headDim: 16, dtype: 'fp16' });
  });

  it('transformers.js generate() on onnxruntime-node gives the known greedy ids', async function () {
    const dir = await prepareTransformersDir(MODEL, { ...info, bosTokenId: 1, eosTokenId: 2 });
    expect(existsSync(join(dir, 'config.json'))).to.equal(true);
    expect(existsSync(join(dir, 'onnx', 'model_fp16.onnx'))).to.equal(true);
    expect(existsSync(join(dir, 'onnx', 'model.onnx.data'))).to.equal(true);
    const model = await loadTransformersModel(dir);
    try {
      expect(model.backend).to.match(/^onnxruntime-node \d+\.\d+\.\d+ \(cpu\)$/);
      const r = await model.generate(PROMPT, EXPECTED.length);
      expect(r.ids).to.deep.equal(EXPECTED);
      expect(r.firstTokenMs).to.be.greaterThan(0).and.at.most(r.totalMs);
      // A second call starts from a fresh cache and gives the same answer.
      expect((await model.generate(PROMPT, EXPECTED.length)).ids).to.deep.equal(EXPECTED);
    } finally {
      await model.dispose();
    }
  });

  it('the bare onnxruntime-node loop gives the same ids', async function () {
    const loop = await loadBareLoop(MODEL, { intraOpNumThreads: 1 });
    try {
      const r = await loop.generate(PROMPT, EXPECTED.length);
      expect(r.ids).to.deep.equal(EXPECTED);
      expect(r.firstTokenMs).to.be.greaterThan(0).and.at.most(r.totalMs);
    } finally {
      await loop.dispose();
    }
  });

  it("reasonplug's engine generates what transformers.js generates, beyond the known 8 ids", async function () {
    this.timeout(60_000);
    const scratch = await mkdtemp(join(tmpdir(), 'rp-tjs-'));
    try {
      // A builder model too: fp32, GQA, half-split RoPE — another export than the genai one.
      const config = { vocabSize: 500, hiddenSize: 64, numLayers: 2, numHeads: 4, numKvHeads: 2, intermediateSize: 128 };
      const builder = join(scratch, 'model.onnx');
      await writeLlamaModel(builder, config, randomLlamaWeights(config, 11, 0.1));
      for (const [path, prompt] of [[MODEL, PROMPT], [builder, [1, 150, 300]]] as const) {
        const reference = await loadTransformersModel(await prepareTransformersDir(path, await readDecoderInfo(path)));
        const engine = await Engine.load({ model: path, cacheDir: join(scratch, 'cache') });
        try {
          const expected = (await reference.generate([...prompt], 24)).ids;
          const r = await engine.generate({ promptIds: [...prompt] }, { maxTokens: 24, ignoreEos: true });
          expect(r.rows[0]!.ids, path).to.deep.equal(expected);
        } finally {
          await reference.dispose();
          await engine.dispose();
        }
      }
    } finally {
      await rm(scratch, { recursive: true, force: true });
    }
  });

  it('leaves the source model directory untouched', async function () {
    expect((await readdir(MODEL_DIR)).sort()).to.deep.equal(listing);
  });
});
