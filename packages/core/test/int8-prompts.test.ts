import { expect } from 'chai';
import * as ort from 'onnxruntime-node';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Engine } from '../src/engine.js';
import { int8PromptGraph, int8PromptProducts } from '../src/onnx/int8-prompt-graph.js';
import { DataType, encodeModel, readModel } from '../src/onnx/proto.js';
import { quantizeGraph } from '../src/onnx/quantize/quantize-graph.js';
import { convertExact, llamaCppGreedy, requantizedGguf, STORIES, storiesTokenizerMeta, writeRandomGguf } from './support/gguf-models.js';
import { GGML } from './support/ggml-quantize.js';
import { runReasonplug } from './support/cli.js';
import { useTempDir } from './support/temp-cache.js';

const TEXT =
  'Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends. One day, she saw a big red ball under a tree. She ran to get it, but a dog was there.';

/** The last position's logits of `ids` run from an empty cache through a bare session of `graph` (a path or bytes). */
async function promptLogits(graph: string | Uint8Array, dataDir: string, ids: number[]): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(graph as Uint8Array, { logSeverityLevel: 3, extra: { session: { model_external_initializers_file_folder_path: dataDir } } });
  try {
    const feeds: Record<string, ort.Tensor> = {};
    for (const m of session.inputMetadata as unknown as { name: string; shape: (number | string)[] }[]) {
      const n = ids.length;
      if (m.name === 'input_ids') feeds[m.name] = new ort.Tensor('int64', BigInt64Array.from(ids, BigInt), [1, n]);
      else if (m.name === 'attention_mask') feeds[m.name] = new ort.Tensor('int64', new BigInt64Array(n).fill(1n), [1, n]);
      else if (m.name === 'position_ids') feeds[m.name] = new ort.Tensor('int64', BigInt64Array.from(ids, (_, i) => BigInt(i)), [1, n]);
      else if (m.name === 'num_logits_to_keep') feeds[m.name] = new ort.Tensor('int64', BigInt64Array.of(1n), []);
      else feeds[m.name] = new ort.Tensor('float32', new Float32Array(0), [1, Number(m.shape[1]), 0, Number(m.shape[3])]);
    }
    const logits = (await session.run(feeds)).logits!;
    const data = logits.data as Float32Array;
    const vocab = Number(logits.dims.at(-1));
    return data.slice(data.length - vocab);
  } finally {
    await session.release();
  }
}

/** KL(p ‖ q) of the softmaxes of two logit vectors. */
function klOfLogits(a: Float32Array, b: Float32Array): number {
  const logSoftmax = (z: Float32Array) => {
    const max = Math.max(...z);
    const log = Math.log(z.reduce((s, x) => s + Math.exp(x - max), 0)) + max;
    return z.map((x) => x - log);
  };
  const [p, q] = [logSoftmax(a), logSoftmax(b)];
  return p.reduce((s, lp, i) => s + Math.exp(lp) * (lp - q[i]!), 0);
}

describe('int8 prompts (int8Prompts)', function () {
  this.timeout(180_000);
  const scratch = useTempDir('reasonplug-int8-prompts-');
  let q8: { gguf: string; module: string };
  let f32: string;
  let prompt: number[];

  before(async () => {
    const gguf = await requantizedGguf(STORIES, join(scratch.dir, 'stories-q8_0.gguf'), () => GGML.Q8_0);
    q8 = { gguf, module: (await convertExact(gguf, join(scratch.dir, 'stories-q8_0'))).dir };
    f32 = (await convertExact(STORIES, join(scratch.dir, 'stories-f32'))).dir;
    const engine = await Engine.load({ model: q8.module, cacheDir: join(scratch.dir, 'prepared') });
    prompt = await engine.tokenize(TEXT);
    await engine.dispose();
  });

  it("rewrites every block-quantized product but the head; a prompt's next-token distribution stays within int8 rounding of the model's own (Q8_0, Q4_0, and the types with offsets)", async () => {
    const random = join(scratch.dir, 'random-f32.gguf');
    // rows of 256, so that the K-quants fit; offsets: Q4_K and Q5_K carry an offset per block (offset columns)
    await writeRandomGguf(random, { arch: 'llama', hidden: 256, layers: 2, heads: 4, kvHeads: 2, ff: 512, untied: true, scale: 0.08, embedScale: 0.3 }, await storiesTokenizerMeta());
    const files: [string, string, number[]][] = [
      ['Q8_0', q8.gguf, prompt],
      ['Q4_0', await requantizedGguf(STORIES, join(scratch.dir, 'stories-q4_0.gguf'), () => GGML.Q4_0), prompt],
      ['offsets', await requantizedGguf(random, join(scratch.dir, 'random-offsets.gguf'), (n) => (n.includes('attn') ? GGML.Q5_K : n.includes('output') ? GGML.Q6_K : GGML.Q4_K)), prompt.map((id) => id % 500)],
    ];
    for (const [label, gguf, ids] of files) {
      const dir = (await convertExact(gguf, join(scratch.dir, `${label}-module`))).dir;
      const model = await readModel(join(dir, 'model.onnx'));
      const products = model.graph!.node!.filter((n) => n.opType === 'MatMulNBits').length;
      const own = await promptLogits(join(dir, 'model.onnx'), dir, ids);
      expect(int8PromptProducts(model, own.length), label).to.equal(products - 1);
      const rewritten = int8PromptGraph(model, dir, own.length)!;
      const left = rewritten.model.graph!.node!.filter((n) => n.opType === 'MatMulNBits');
      expect(left.map((n) => Number(n.attribute!.find((a) => a.name === 'N')!.i)), `${label}: only the head left`).to.deep.equal([own.length]);
      expect(rewritten.products, label).to.equal(products - 1);
      expect(rewritten.model.graph!.node!.filter((n) => n.opType === 'MatMulIntegerToFloat').length, label).to.equal(products - 1);
      const bytes = encodeModel(rewritten.model);
      // At several prompt lengths: close to the model's own distribution (a mis-read block or offset is far off).
      for (const n of [8, 24, ids.length]) {
        const [a, b] = [await promptLogits(join(dir, 'model.onnx'), dir, ids.slice(0, n)), await promptLogits(bytes, dir, ids.slice(0, n))];
        expect(klOfLogits(a, b), `${label} at ${n} tokens`).to.be.below(5e-3);
        expect(b, `${label}: int8 products are not the model's own`).to.not.deep.equal(a);
      }
    }
  });

  it('leaves alone products whose zero points are not uint8 codes in raw bytes (HQQ writes floats; int32_data holds them too): read as codes they would be wrong', async () => {
    const f32 = (await convertExact(STORIES, join(scratch.dir, 'stories-f32-zp'))).dir;
    const source = await readModel(join(f32, 'model.onnx'));
    const vocab = 512;
    const forms: [string, (codes: Uint8Array) => object][] = [
      // the same zero points as floats, one per block, as MatMulNBits also takes them
      ['floats', (codes) => {
        const floats = Float32Array.from({ length: codes.length * 2 }, (_, i) => (codes[i >> 1]! >> ((i & 1) * 4)) & 15);
        return { dataType: DataType.FLOAT, dims: [floats.length], rawData: new Uint8Array(floats.buffer) };
      }],
      // the same bytes in int32_data, the field ONNX also allows for uint8
      ['int32_data', (codes) => ({ int32Data: Array.from(codes), rawData: new Uint8Array(0) })],
    ];
    for (const [form, rewrite] of forms) {
      const { model } = quantizeGraph(source, 'stories', f32, { bits: 4 });
      expect(int8PromptProducts(model, vocab), 'with uint8 zero points').to.be.above(0);
      for (const t of model.graph!.initializer!) if (t.name!.endsWith('.qzeros')) Object.assign(t, rewrite(t.rawData!));
      expect(int8PromptProducts(model, vocab), form).to.equal(0);
      expect(int8PromptGraph(model, f32, vocab), form).to.equal(undefined);
    }
  });

  it("stories260K as Q8_0: all 60 greedy tokens after a 70-token prompt prefilled through int8 products equal llama.cpp's", async () => {
    const engine = await Engine.load({ model: q8.module, int8Prompts: true, prefixCacheBytes: 0, cacheDir: join(scratch.dir, 'prepared') });
    try {
      const ours = await engine.generate({ promptIds: prompt }, { maxTokens: 60 });
      expect(prompt.length).to.be.greaterThan(60);
      expect(ours.rows[0]!.ids).to.deep.equal(await llamaCppGreedy(q8.gguf, prompt, 60));
    } finally {
      await engine.dispose();
    }
  });

  it('a prompt computes the same alone, beside prompts of other lengths, in chunks and after a cached prefix; steps keep the model’s own products', async () => {
    const cacheDir = join(scratch.dir, 'prepared');
    const first = (r: { rows: { ids: number[]; logprobs?: { logprob: number }[] }[] }) => ({ ids: r.rows[0]!.ids, logprobs: r.rows[0]!.logprobs!.map((l) => l.logprob) });
    const opts = { maxTokens: 12, logprobs: 0 };
    const own = await Engine.load({ model: q8.module, prefixCacheBytes: 0, cacheDir });
    const alone = await Engine.load({ model: q8.module, int8Prompts: true, prefixCacheBytes: 0, cacheDir });
    const chunked = await Engine.load({ model: q8.module, int8Prompts: true, prefixCacheBytes: 0, prefillChunk: 16, cacheDir });
    const cached = await Engine.load({ model: q8.module, int8Prompts: true, cacheDir });
    try {
      const reference = first(await alone.generate({ promptIds: prompt }, opts));
      // the int8 prompt is not the model's own prompt: its first token's log-probability differs
      const plain = first(await own.generate({ promptIds: prompt }, opts));
      expect(reference.logprobs[0]).to.not.equal(plain.logprobs[0]);
      const close = (got: { ids: number[]; logprobs: number[] }, what: string) => {
        expect(got.ids, what).to.deep.equal(reference.ids);
        got.logprobs.forEach((l, i) => expect(l, `${what}, token ${i}`).to.be.closeTo(reference.logprobs[i]!, 1e-4));
      };
      // beside a shorter and a longer prompt, prefilled together
      const together = await Promise.all([prompt.slice(0, 20), prompt, [...prompt, ...prompt.slice(0, 9)]].map((p) => alone.generate({ promptIds: p }, opts)));
      close(first(together[1]!), 'batched');
      close(first(await chunked.generate({ promptIds: prompt }, opts)), 'in chunks of 16');
      await cached.generate({ promptIds: prompt.slice(0, 40) }, { maxTokens: 1 });
      const after = await cached.generate({ promptIds: prompt }, opts);
      expect(after.usage.cachedPromptTokens, 'prefix from the cache').to.be.at.least(32);
      close(first(after), 'after a cached prefix');
    } finally {
      await Promise.all([own, alone, chunked, cached].map((e) => e.dispose()));
    }
  });

  it("embeddings (prompts alone) come through the int8 products too: close to the model's own, not equal", async () => {
    const cacheDir = join(scratch.dir, 'prepared');
    const vectors: Float32Array[][] = [];
    for (const int8Prompts of [false, true]) {
      const engine = await Engine.load({ model: q8.module, embeddings: true, int8Prompts, cacheDir });
      vectors.push((await engine.embed({ ids: [prompt, prompt.slice(0, 12)] })).vectors);
      await engine.dispose();
    }
    vectors[0]!.forEach((own, i) => {
      const int8 = vectors[1]![i]!;
      const cosine = own.reduce((s, v, k) => s + v * int8[k]!, 0);
      expect(cosine, `input ${i}`).to.be.above(0.995).and.below(1 - 1e-7);
    });
  });

  it('a model without block-quantized products runs as without the option; the int8 graph is saved with the sessions and loaded from there; Engine.info says which, either way', async () => {
    const cacheDir = join(scratch.dir, 'prepared-f32');
    const runs: number[][] = [];
    const said: unknown[] = [];
    for (const int8Prompts of [false, true]) {
      const engine = await Engine.load({ model: f32, int8Prompts, cacheDir });
      runs.push((await engine.generate({ promptIds: prompt }, { maxTokens: 20 })).rows[0]!.ids);
      said.push(engine.info.int8Prompts);
      await engine.dispose();
    }
    expect(runs[1]).to.deep.equal(runs[0]);
    expect(said).to.deep.equal([undefined, { products: 0, unused: 'no-products' }]);
    // (a string is no switch: 'false' would turn it on)
    for (const int8Prompts of ['false', 1]) {
      const err = await Engine.load({ model: f32, int8Prompts: int8Prompts as unknown as boolean, cacheDir }).catch((e: unknown) => e);
      expect(err, String(int8Prompts)).to.be.instanceOf(Error).with.property('message').that.matches(/int8Prompts must be true or false/);
    }

    const sessions = join(scratch.dir, 'prepared-q8', 'sessions');
    const entries = async () => (await readdir(sessions).catch(() => [])).filter((f) => f.endsWith('.json')).length;
    const tokens: number[][] = [];
    const counts: number[] = [];
    const infos: unknown[] = [];
    for (let i = 0; i < 2; i++) {
      const engine = await Engine.load({ model: q8.module, int8Prompts: true, sessionCache: true, cacheDir: join(scratch.dir, 'prepared-q8') });
      tokens.push((await engine.generate({ promptIds: prompt }, { maxTokens: 20 })).rows[0]!.ids);
      infos.push(engine.info.int8Prompts);
      await engine.dispose();
      counts.push(await entries());
    }
    // saved by the first load (the int8 prompt session at least: its packed weights lie aligned), read by the second
    expect(counts[0]).to.be.at.least(1);
    expect(counts[1]).to.equal(counts[0]);
    expect(tokens[1]).to.deep.equal(tokens[0]);
    // every block-quantized product but the head, rewritten by the first load and read from its saved form by the second
    const products = (await readModel(join(q8.module, 'model.onnx'))).graph!.node!.filter((n) => n.opType === 'MatMulNBits').length - 1;
    expect(products).to.be.above(0);
    expect(infos).to.deep.equal([{ products }, { products }]);
    // The count is kept with the saved form, so a load from it decodes no graph: a count edited there is the one given,
    // and one that is no count (or none, an entry saved before counts were kept) is counted from the graph again, and kept.
    const sidecars = (await readdir(sessions)).filter((f) => f.endsWith('.json')).map((f) => join(sessions, f));
    const kept: string[] = [];
    for (const f of sidecars) if (JSON.parse(await readFile(f, 'utf8')).label === 'int8 prompts') kept.push(f);
    expect(kept).to.have.length(1);
    const sidecar = JSON.parse(await readFile(kept[0]!, 'utf8'));
    expect(sidecar.facts).to.deep.equal({ products });
    const infoWith = async (facts: unknown) => {
      await writeFile(kept[0]!, JSON.stringify({ ...sidecar, facts }));
      const engine = await Engine.load({ model: q8.module, int8Prompts: true, sessionCache: true, cacheDir: join(scratch.dir, 'prepared-q8') });
      await engine.dispose();
      return engine.info.int8Prompts;
    };
    expect(await infoWith({ products: products + 1 })).to.deep.equal({ products: products + 1 });
    expect(await infoWith({ products: 0 })).to.deep.equal({ products });
    expect(await infoWith({ products: 'many' })).to.deep.equal({ products });
    expect(await infoWith(undefined)).to.deep.equal({ products });
    expect(JSON.parse(await readFile(kept[0]!, 'utf8')).facts).to.deep.equal({ products });
  });

  it('generate and embed say in one line on stderr when --int8-prompts rewrote nothing, and nothing where it did', async () => {
    const env = { REASONPLUG_CACHE: join(scratch.dir, 'cli-cache') };
    const line = '[--int8-prompts: no block-quantized products to rewrite; prompts run as without the option]\n';
    const runs = {
      'generate, float model': await runReasonplug(['generate', '--model', f32, '--int8-prompts', '--prompt-ids', '1', '--max-tokens', '2'], env),
      'embed, float model': await runReasonplug(['embed', '--model', f32, '--int8-prompts', 'Once upon a time'], env),
      'generate, Q8_0': await runReasonplug(['generate', '--model', q8.module, '--int8-prompts', '--prompt-ids', '1', '--max-tokens', '2'], env),
      'generate, float model without the flag': await runReasonplug(['generate', '--model', f32, '--prompt-ids', '1', '--max-tokens', '2'], env),
    };
    for (const [what, r] of Object.entries(runs)) expect(r.code, `${what}: ${r.stderr}`).to.equal(0);
    expect(runs['generate, float model'].stderr.split(line)).to.have.length(2);
    expect(runs['embed, float model'].stderr.split(line)).to.have.length(2);
    expect(runs['generate, Q8_0'].stderr).to.not.include('--int8-prompts');
    expect(runs['generate, float model without the flag'].stderr).to.not.include('--int8-prompts');
  });
});
