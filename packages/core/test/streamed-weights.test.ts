/**
 * writeLlamaModel with external data writes each initializer to `model.onnx.data` as the builder makes it, so that a
 * large model's converted weights (transposed, or fp16) are let go one by one instead of all held until the graph is
 * done (issue #16: converting a multi-GB GGUF took 3-4x its size in memory).
 */
import { expect } from 'chai';
import { statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { randomLlamaWeights, writeLlamaModel } from '../src/onnx/llama-builder.js';
import type { LlamaConfig } from '../src/onnx/llama-spec.js';

const CONFIG: LlamaConfig = {
  vocabSize: 512,
  hiddenSize: 64,
  numLayers: 4,
  numHeads: 4,
  numKvHeads: 2,
  intermediateSize: 128,
  ropeTheta: 10000,
  rmsNormEps: 1e-5,
  tieWordEmbeddings: false,
};

describe('external data written as the model is built', function () {
  this.timeout(60_000);

  for (const dtype of ['float32', 'float16'] as const) {
    it(`holds the embedding and every layer in the file before the builder reads the head (${dtype})`, async () => {
      const dir = await mkdtemp(join(tmpdir(), 'reasonplug-streamed-'));
      try {
        const path = join(dir, 'model.onnx');
        const weights = randomLlamaWeights(CONFIG, 3);
        const head = weights.lmHead!;
        // The data file's size each time the builder reads the head: the last read is when it stores it, after the layers.
        const sizes: number[] = [];
        Object.defineProperty(weights, 'lmHead', {
          get: () => {
            sizes.push(statSync(`${path}.data`, { throwIfNoEntry: false })?.size ?? 0);
            return head;
          },
        });
        await writeLlamaModel(path, CONFIG, weights, { dtype, externalData: true });

        const { hiddenSize: h, intermediateSize: ff, vocabSize: vocab } = CONFIG;
        const kvDim = (CONFIG.numKvHeads! * h) / CONFIG.numHeads;
        const perLayer = h * h * 2 + h * kvDim * 2 + h * ff * 3;
        const bytes = dtype === 'float16' ? 2 : 4;
        expect(sizes.length).to.be.greaterThan(0);
        expect(sizes.at(-1)).to.be.at.least((vocab * h + CONFIG.numLayers * perLayer) * bytes);
        // (and the model written is whole: onnxruntime opens it)
        const session = await ort.InferenceSession.create(path);
        await session.release();
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
  }
});
