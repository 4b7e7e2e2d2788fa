/**
 * Converted GGUFs through the engine: a Qwen2-shaped model with its own byte-level BPE vocabulary takes a
 * text prompt and writes llama.cpp's tokens; llama models (GroupQueryAttention graphs, right-padded) and a Gemma
 * 2-shaped model's sliding windows hold in a batch of prompts of different lengths.
 */
import { expect } from 'chai';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Engine } from '../src/engine.js';
import type { GenerationResult } from '../src/generate/types.js';
import { convertGguf } from '../src/gguf/convert.js';
import { graphFacts } from '../src/onnx/graph-facts.js';
import { onnx, readModel } from '../src/onnx/proto.js';
import { buildProjectorModel, randomProjectorWeights, writeProjectorModel } from '../src/onnx/projector-builder.js';
import { bpeTokenizerMeta } from './support/bpe-vocab.js';
import { logprobGap } from './support/logprob-compare.js';
import { DEEPSEEK2, GEMMA2_SLIDING, llamaCppGreedy, llamaCppTokenize, storiesTokenizerMeta, writeRandomGguf, type RandomGgufSpec } from './support/gguf-models.js';
import { useTempCache } from './support/temp-cache.js';
import { rewriteGguf } from './support/gguf-writer.js';
import { GGML, quantizeGgml } from './support/ggml-quantize.js';

/**
 * Prompts of different lengths as one batch give what each gives alone, prefilled 3 tokens at a time (GroupQueryAttention's
 * prompt-after-past path), and that is llama.cpp's greedy run of the GGUF at `path` (converted into `module`).
 */
async function expectBatchedAloneAndLlamaCpp(path: string, module: string): Promise<void> {
  const prompts = [[1, 403, 407, 261, 378, 432, 383, 286, 261, 300], [1], [1, 300, 301, 302, 303]];
  const batched = await Engine.load({ model: module });
  const alone = await Engine.load({ model: module, prefillChunk: 3 });
  try {
    const batch = await batched.generate({ promptIds: prompts }, { maxTokens: 12 });
    for (const [i, p] of prompts.entries()) {
      const own = await alone.generate({ promptIds: p }, { maxTokens: 12 });
      expect(batch.rows[i]!.ids, `prompt ${i} in the batch`).to.deep.equal(own.rows[0]!.ids);
      const theirs = await llamaCppGreedy(path, p, 12);
      expect(new Set(theirs).size, `llama.cpp's tokens ${theirs}`).to.be.greaterThan(3);
      expect(own.rows[0]!.ids.slice(0, theirs.length), `prompt ${i} vs llama.cpp`).to.deep.equal(theirs);
    }
  } finally {
    await batched.dispose();
    await alone.dispose();
  }
}

describe('converted GGUFs in the engine (llama.cpp is the reference)', function () {
  this.timeout(120_000);
  const scratch = useTempCache('reasonplug-gguf-engine-');

  /** A small random Qwen3-MoE whose experts are Q8_0 (QMoE's 8-bit codes once converted) at `path`. */
  async function writeMoeQ8(path: string): Promise<void> {
    const f32 = `${path}.f32`;
    const spec = { arch: 'qwen3moe', hidden: 64, layers: 2, heads: 4, kvHeads: 2, ff: 96, qkNorm: true as const, untied: true, experts: { count: 8, used: 2, ff: 64 }, seed: 41 };
    await writeRandomGguf(f32, spec, await storiesTokenizerMeta());
    await rewriteGguf(f32, path, (_meta, tensors) => tensors.forEach((t) => t.dims.length === 3 && (t.type = GGML.Q8_0)), (data, type) => quantizeGgml(data, type));
  }

  it('qwen2 with a BPE vocabulary: a text prompt gives llama.cpp greedy tokens', async () => {
    const path = join(scratch.dir, 'qwen-bpe.gguf');
    await writeRandomGguf(path, { arch: 'qwen2', hidden: 64, layers: 2, heads: 4, kvHeads: 2, ff: 96, qkvBias: true, untied: true, seed: 11 }, bpeTokenizerMeta('qwen2'));
    const text = 'The year 2024 had   366 days, café!\n';
    const [prompt] = await llamaCppTokenize(path, [text]);
    const theirs = await llamaCppGreedy(path, prompt!, 16);
    const engine = await Engine.load({ model: path });
    try {
      const r = await engine.generate({ prompt: text }, { maxTokens: 16 });
      expect(r.usage.promptTokens).to.equal(prompt!.length);
      expect(r.rows[0]!.ids.slice(0, theirs.length)).to.deep.equal(theirs);
      expect(new Set(theirs).size).to.be.greaterThan(3);
    } finally {
      await engine.dispose();
    }
  });

  // Converted graphs of models whose query heads share kv heads run the op graph's attention (q and k rotated by one
  // RotaryEmbedding kernel), left-padded; as GroupQueryAttention (`attention: 'gqa'`, the default where each query
  // head has its own kv head) they run right-padded: a shorter row's keys sit at the start of its cache and its
  // positions come from seqlens_k. Heads of 16 are rotated inside the kernel, heads of 8 by ops.
  for (const [label, heads, attention, padding] of [
    ['the op graph, rotary kernel', 4, undefined, 'left'],
    ['rotary inside GroupQueryAttention', 4, 'gqa', 'right'],
    ['rotary by ops before GroupQueryAttention', 8, 'gqa', 'right'],
  ] as const) {
    it(`llama (${label}): a batch of prompts of different lengths equals each prompt alone, prefilled in chunks, and llama.cpp`, async () => {
      const path = join(scratch.dir, `llama-${heads}.gguf`);
      if (!existsSync(path)) await writeRandomGguf(path, { arch: 'llama', hidden: 64, layers: 2, heads, kvHeads: heads / 2, ff: 96, untied: true, seed: 31 }, await storiesTokenizerMeta());
      const module = join(scratch.dir, `llama-${heads}-${attention ?? 'default'}`);
      await convertGguf(path, module, attention ? { attention } : {});
      expect(graphFacts(await readModel(join(module, 'model.onnx'))).padding).to.equal(padding);
      await expectBatchedAloneAndLlamaCpp(path, module);
    });
  }

  it("llama with a float32 KV cache (kvCache: 'float32'; the default is llama.cpp's fp16): a batch of prompts of different lengths equals each prompt alone, prefilled in chunks, and llama.cpp", async () => {
    const path = join(scratch.dir, 'llama-kv32.gguf');
    await writeRandomGguf(path, { arch: 'llama', hidden: 64, layers: 2, heads: 4, kvHeads: 2, ff: 96, untied: true, seed: 31 }, await storiesTokenizerMeta());
    const module = join(scratch.dir, 'llama-kv32');
    await convertGguf(path, module, { kvCache: 'float32' });
    const graph = (await readModel(join(module, 'model.onnx'))).graph!;
    const typeOf = (name: string) => graph.input!.find((v) => v.name === name)?.type?.tensorType?.elemType;
    expect([typeOf('past_key_values.0.key'), typeOf('input_ids')]).to.deep.equal([onnx.TensorProto.DataType.FLOAT, onnx.TensorProto.DataType.INT64]);
    await expectBatchedAloneAndLlamaCpp(path, module);
  });

  it("a Qwen3-MoE with Q8_0 experts (QMoE): a batch of prompts of different lengths equals each prompt alone, prefilled in chunks, and llama.cpp", async () => {
    const path = join(scratch.dir, 'moe-q8.gguf');
    await writeMoeQ8(path);
    const module = join(scratch.dir, 'moe-q8');
    // (float32 keys and values, as llama.cpp's run keeps them: fp16's rounding tips this random model's near ties)
    await convertGguf(path, module, { kvCache: 'float32' });
    const facts = graphFacts(await readModel(join(module, 'model.onnx')));
    // (query heads sharing kv heads: the op graph's attention)
    expect(facts.padding).to.equal('left');
    // a step reads 2 of the 8 experts
    expect(facts.stepBytes).to.be.below(0.6 * facts.weightBytes);
    await expectBatchedAloneAndLlamaCpp(path, module);
  });

  it('a DeepSeek-V3-shaped model (latent attention, sigmoid routing with a selection bias, Q8_0 experts): a batch of prompts of different lengths equals each prompt alone, prefilled in chunks, and llama.cpp', async () => {
    const path = join(scratch.dir, 'deepseek-q8.gguf');
    // (experts of 64, whose rows Q8_0's blocks of 32 divide)
    const spec: RandomGgufSpec = {
      ...DEEPSEEK2,
      latent: { ...DEEPSEEK2.latent!, qLora: 16 },
      experts: { count: 8, used: 2, ff: 64, selectionBias: true, sharedCount: 1, leadingDense: 1 },
      meta: { expert_gating_func: { t: 'u32', v: 2 }, expert_weights_norm: { t: 'bool', v: true }, expert_weights_scale: { t: 'f32', v: 1.5 } },
      seed: 51,
    };
    await writeRandomGguf(`${path}.f32`, spec, await storiesTokenizerMeta());
    await rewriteGguf(`${path}.f32`, path, (_meta, tensors) => tensors.forEach((t) => t.dims.length === 3 && (t.type = GGML.Q8_0)), (data, type) => quantizeGgml(data, type));
    const module = join(scratch.dir, 'deepseek-q8');
    const { config } = await convertGguf(path, module);
    expect(config.mla).to.deep.equal({ kvLoraRank: 32, ropeDim: 8, valueDim: 16, qLoraRank: 16 });
    // one key/value head of the rotary part and the latent, in the op graph (left-padded)
    const facts = graphFacts(await readModel(join(module, 'model.onnx')));
    expect(facts.padding).to.equal('left');
    await expectBatchedAloneAndLlamaCpp(path, module);
  });

  for (const moe of [false, true]) {
    it(`a GroupQueryAttention conversion${moe ? ' of a Qwen3-MoE (QMoE)' : ''} composes with a reasoner and runs latent steps as the op-by-op conversion does`, async () => {
      const path = join(scratch.dir, `${moe ? 'moe' : 'llama'}-latent.gguf`);
      if (moe) await writeMoeQ8(path);
      else await writeRandomGguf(path, { arch: 'llama', hidden: 64, layers: 2, heads: 4, kvHeads: 2, ff: 96, untied: true, seed: 41 }, await storiesTokenizerMeta());
      const projector = join(scratch.dir, 'projector.onnx');
      await writeProjectorModel(projector, buildProjectorModel({ hiddenSize: 64 }, randomProjectorWeights({ hiddenSize: 64 }, 5)));
      const ids: Record<string, number[][]> = {};
      for (const attention of ['ops', 'gqa'] as const) {
        const module = join(scratch.dir, `latent-${moe ? 'moe-' : ''}${attention}`);
        await convertGguf(path, module, { attention });
        const engine = await Engine.load({ model: module, projector, reasoners: [{ model: module, weight: 0.5 }] });
        try {
          const r = await engine.generate({ promptIds: [[1, 403, 407, 261], [1, 300], [1, 5, 6, 7, 8, 9]] }, { maxTokens: 10, latent: 'fixed:2' });
          ids[attention] = r.rows.map((row) => row.ids);
          expect(r.rows.every((row) => row.latentSteps === 2), attention).to.equal(true);
        } finally {
          await engine.dispose();
        }
      }
      expect(ids.gqa).to.deep.equal(ids.ops);
    });
  }

  it('gemma2: a batch of prompts longer and shorter than the window equals each prompt alone and llama.cpp', async () => {
    const path = join(scratch.dir, 'gemma2.gguf');
    await writeRandomGguf(path, GEMMA2_SLIDING, await storiesTokenizerMeta());
    const prompts = [[1, 403, 407, 261, 378, 432, 383, 286, 261], [1, 403], [1, 300, 301, 302, 303, 304]];
    const engine = await Engine.load({ model: path });
    try {
      const batch = await engine.generate({ promptIds: prompts }, { maxTokens: 12 });
      for (const [i, p] of prompts.entries()) {
        const alone = await engine.generate({ promptIds: p }, { maxTokens: 12 });
        expect(batch.rows[i]!.ids, `prompt ${i} in the batch`).to.deep.equal(alone.rows[0]!.ids);
        const theirs = await llamaCppGreedy(path, p, 12);
        expect(alone.rows[0]!.ids.slice(0, theirs.length), `prompt ${i} vs llama.cpp`).to.deep.equal(theirs);
      }
    } finally {
      await engine.dispose();
    }
  });

  it('a Q4_0 conversion (int8 activations): a burst of calls of different lengths is prefilled together and gives each call what it gives alone (its tokens; log-probabilities to 1e-5)', async () => {
    const f32 = join(scratch.dir, 'burst-f32.gguf');
    await writeRandomGguf(f32, { arch: 'llama', hidden: 64, layers: 2, heads: 4, kvHeads: 2, ff: 96, untied: true, seed: 51 }, await storiesTokenizerMeta());
    const path = join(scratch.dir, 'burst-q4_0.gguf');
    await rewriteGguf(
      f32,
      path,
      (_meta, tensors) => {
        for (const t of tensors.values()) if (t.dims.length === 2) t.type = GGML.Q4_0;
      },
      (data, type) => quantizeGgml(data, type),
    );
    const engine = await Engine.load({ model: path });
    try {
      const prompts = [[1, 403, 407, 261, 378, 432, 383], [1, 7], [1, 300, 301], [1, 286, 261, 300, 9]];
      const options = { maxTokens: 10, ignoreEos: true, logprobs: 3 };
      const alone: GenerationResult['rows'][number][] = [];
      for (const p of prompts) alone.push((await engine.generate({ promptIds: p }, options)).rows[0]!);
      const burst = await Promise.all(prompts.map((p) => engine.generate({ promptIds: p }, options)));
      // Each row computes what its prompt alone computes: the same tokens, the same alternatives, log-probabilities
      // to 1e-5. (Bit-equal on some CPUs; on AVX2 without VNNI onnxruntime's int8 MatMulNBits sums a row a little
      // differently beside other rows, up to 1.4e-6 here, while the fp32 conversion stays bit-equal.)
      burst.forEach((r, i) => {
        expect(r.rows[0]!.ids, `call ${i}`).to.deep.equal(alone[i]!.ids);
        expect(logprobGap(r.rows[0]!.logprobs!, alone[i]!.logprobs!), `call ${i}`).to.be.below(1e-5);
      });
      const stats = await engine.stats();
      expect(stats.counters.copiedBytes, 'the burst ran in the batch').to.be.greaterThan(0);
    } finally {
      await engine.dispose();
    }
  });
});
