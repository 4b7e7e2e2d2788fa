import { expect } from 'chai';
import * as ort from 'onnxruntime-node';
import { join } from 'node:path';
import { Engine } from '../src/engine.js';
import { buildGenaiLlamaModel, type GenaiBuildOptions } from '../src/onnx/genai-builder.js';
import { buildLlamaModel, randomLlamaWeights } from '../src/onnx/llama-builder.js';
import type { LlamaConfig } from '../src/onnx/llama-spec.js';
import { writeModel } from '../src/onnx/proto.js';
import { prepareDecoder } from '../src/onnx/prepared-cache.js';
import { buildProjectorModel, randomProjectorWeights, writeProjectorModel } from '../src/onnx/projector-builder.js';
import { cacheDir, testDir } from './support/models.js';

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

/** onnxruntime's bare greedy loop over one prompt (no padding, no engine): the reference for graphs that compute in fp16. */
async function bareGreedy(path: string, prompt: number[], steps: number): Promise<number[]> {
  const session = await ort.InferenceSession.create(path);
  try {
    const meta = new Map(session.inputMetadata.map((m) => [m.name, m as { type: string; shape: readonly (number | string)[] }]));
    const ids = (values: number[], name: string) => {
      const type = meta.get(name)!.type;
      return type === 'int32' ? new ort.Tensor('int32', Int32Array.from(values), [1, values.length]) : new ort.Tensor('int64', BigInt64Array.from(values, BigInt), [1, values.length]);
    };
    const kvType = meta.get('past_key_values.0.key')!.type as 'float16' | 'float32';
    let past: Record<string, ort.Tensor> = {};
    for (const [name, m] of meta) {
      if (name.startsWith('past_key_values.')) past[name] = new ort.Tensor(kvType, kvType === 'float16' ? new Uint16Array(0) : new Float32Array(0), [1, m.shape[1] as number, 0, m.shape[3] as number]);
    }
    const out: number[] = [];
    let feed = prompt;
    let length = 0;
    for (let s = 0; s < steps; s++) {
      length += feed.length;
      const feeds: Record<string, ort.Tensor> = { input_ids: ids(feed, 'input_ids'), attention_mask: ids(new Array(length).fill(1), 'attention_mask'), ...past };
      if (meta.has('position_ids')) feeds.position_ids = ids(feed.map((_, i) => length - feed.length + i), 'position_ids');
      const r = await session.run(feeds);
      const logits = r.logits!;
      const vocab = logits.dims[2] as number;
      const last = (logits.dims[1] as number) - 1;
      const row = Array.from({ length: vocab }, (_, v) => {
        const x = (logits.data as Float32Array | Uint16Array)[last * vocab + v]!;
        return logits.type === 'float16' ? float16(x) : x;
      });
      const next = row.indexOf(Math.max(...row));
      out.push(next);
      past = Object.fromEntries(Object.keys(past).map((k) => [k, r[k.replace('past_key_values', 'present')]!]));
      feed = [next];
    }
    return out;
  } finally {
    await session.release();
  }
}

function float16(h: number): number {
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  const v = e === 0 ? m * 2 ** -24 : e === 31 ? (m ? NaN : Infinity) : (1 + m / 1024) * 2 ** (e - 15);
  return h & 0x8000 ? -v : v;
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
