import { expect } from 'chai';
import { join } from 'node:path';
import { Engine } from '../src/engine.js';
import { buildGenaiLlamaModel, type GenaiBuildOptions } from '../src/onnx/genai-builder.js';
import { buildLlamaModel, randomLlamaWeights } from '../src/onnx/llama-builder.js';
import type { LlamaConfig } from '../src/onnx/llama-spec.js';
import { writeModel } from '../src/onnx/proto.js';
import { prepareDecoder } from '../src/onnx/prepared-cache.js';
import { buildProjectorModel, randomProjectorWeights, writeProjectorModel } from '../src/onnx/projector-builder.js';
import { cacheDir, testDir } from './support/models.js';
import { bareGreedy } from './support/bare-loop.js';

// GroupQueryAttention's CPU kernel rotates heads whose size is a multiple of 16.
const config: LlamaConfig = { vocabSize: 96, hiddenSize: 64, numLayers: 2, numHeads: 4, numKvHeads: 2, intermediateSize: 128 };
/** Prompts of different lengths (one of a single token): GQA graphs need them right-padded. */
const PROMPTS = [
  [5, 17, 3, 44, 9, 61],
  [12, 80],
  [33],
];

/** Writes the op-by-op graph and the genai-style graph of the same weights. */
async function pair(name: string, cfg: LlamaConfig, seed: number, options: GenaiBuildOptions): Promise<{ reference: string; genai: string }> {
  const dir = testDir(name);
  const weights = randomLlamaWeights(cfg, seed, 0.08);
  const reference = join(dir, 'reference.onnx');
  const genai = join(dir, 'genai.onnx');
  await writeModel(reference, buildLlamaModel(cfg, weights, options.dtype ? { dtype: options.dtype } : {}));
  await writeModel(genai, buildGenaiLlamaModel(cfg, weights, options));
  return { reference, genai };
}

async function greedy(options: Parameters<typeof Engine.load>[0], generate: Parameters<Engine['generate']>[1] = {}): Promise<number[][]> {
  const engine = await Engine.load({ cacheDir, ...options });
  try {
    const result = await engine.generate({ promptIds: PROMPTS }, { maxTokens: 10, ...generate });
    return result.rows.map((r) => r.ids);
  } finally {
    await engine.dispose();
  }
}

describe('onnxruntime-genai graphs (GroupQueryAttention)', function () {
  this.timeout(120_000);

  const variants: [string, LlamaConfig, GenaiBuildOptions][] = [
    ['rotary inside GQA, packed qkv, no position_ids', config, {}],
    ['RotaryEmbedding from position_ids, separate q/k/v', config, { rotary: 'op', packedQkv: false }],
  ];
  for (const [name, cfg, options] of variants) {
    it(`greedy batches of different lengths equal the op-by-op graph token for token (${name})`, async () => {
      const { reference, genai } = await pair(`gqa-${name.replace(/\W+/g, '-')}`, cfg, 11, options);
      const prepared = await prepareDecoder(genai, { lastLogitsOnly: true, logitsFloat32: true, cacheDir });
      expect(prepared.padding).to.equal('right');
      const expected = await greedy({ model: reference });
      const got = await greedy({ model: genai });
      expect(got).to.deep.equal(expected);
      expect(new Set(got.map((ids) => ids.join(','))).size).to.be.greaterThan(1);
    });
  }

  for (const [name, options] of [
    ['fp16 attention and I/O, int32 ids, adjacent rotary pairs', { dtype: 'float16', idsType: 'int32' }],
    ['fp16, RotaryEmbedding from position_ids', { dtype: 'float16', rotary: 'op', packedQkv: false }],
  ] as const) {
    it(`greedy batches of different lengths equal onnxruntime's bare loop on the same file, row by row (${name})`, async () => {
      const { genai } = await pair(`gqa-${name.replace(/\W+/g, '-')}`, { ...config, ropeStyle: 'adjacent' }, 12, options);
      const got = await greedy({ model: genai });
      const expected = await Promise.all(PROMPTS.map((p) => bareGreedy(genai, p, 10)));
      expect(got).to.deep.equal(expected);
    });
  }

  it('refuses a variant of the Llama block it does not write instead of dropping it', () => {
    const weights = randomLlamaWeights(config, 1, 0.08);
    expect(() => buildGenaiLlamaModel({ ...config, qkNorm: true, logitScale: 2 }, weights)).to.throw(/does not write qkNorm, logitScale/);
  });

  it('composes with a reasoner and runs latent steps like the op-by-op graphs', async () => {
    const backbone = await pair('gqa-backbone', config, 21, {});
    const reasoner = await pair('gqa-reasoner', { ...config, numLayers: 1 }, 22, { rotary: 'op', packedQkv: false });
    const projector = join(testDir('gqa-projector'), 'projector.onnx');
    await writeProjectorModel(projector, buildProjectorModel({ hiddenSize: config.hiddenSize }, randomProjectorWeights({ hiddenSize: config.hiddenSize }, 5)));
    for (const placement of ['inline', 'lanes'] as const) {
      const opts = { reasoners: [{ model: reasoner.reference, weight: 0.7 }], placement, projector };
      const expected = await greedy({ model: backbone.reference, ...opts }, { latent: 'fixed:2' });
      const got = await greedy({ model: backbone.genai, ...opts, reasoners: [{ model: reasoner.genai, weight: 0.7 }] }, { latent: 'fixed:2' });
      expect(got, placement).to.deep.equal(expected);
    }
  });
});
