import { expect } from 'chai';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { ConvertGgufOptions } from '../src/gguf/convert.js';
import { GgufError, withGguf } from '../src/gguf/reader.js';
import { convertExact, llamaCppGreedy, requantizedGguf, llamaCppNextProbabilities, ortGreedy, STORIES, storiesTokenizerMeta, writeRandomGguf, type RandomGgufSpec } from './support/gguf-models.js';
import { rewriteGguf } from './support/gguf-writer.js';
import { BLOCK_TYPES, dequantize } from '../src/gguf/quant/index.js';
import { isLossless, toNBits } from '../src/gguf/quant/nbits.js';
import { dequantizeMatrix, rowBytes } from '../src/onnx/quantized-matrix.js';
import { seededNormals } from '../src/onnx/random-weights.js';
import { readModel } from '../src/onnx/proto.js';
import { graphFacts } from '../src/onnx/graph-facts.js';
import { GGML, quantizeGgml, quantizeGgmlWithValues } from './support/ggml-quantize.js';
import { useTempDir } from './support/temp-cache.js';

/** Largest error of each element, relative to the largest magnitude of its row. */
function relErr(ref: Float32Array, got: Float32Array, cols: number): number {
  let worst = 0;
  for (let r = 0; r < ref.length / cols; r++) {
    let amax = 0;
    for (let c = 0; c < cols; c++) amax = Math.max(amax, Math.abs(ref[r * cols + c]!));
    for (let c = 0; c < cols; c++) worst = Math.max(worst, Math.abs(ref[r * cols + c]! - got[r * cols + c]!) / amax);
  }
  return worst;
}

/** Root mean square of the difference. */
function rms(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i]! - b[i]!) ** 2;
  return Math.sqrt(s / a.length);
}

describe('gguf quantized types', () => {
  const rows = 8;
  const cols = 512;
  const x = seededNormals(7)(rows * cols, 0.05);
  // with a few outliers, as real weights have
  for (let i = 0; i < x.length; i += 97) x[i] = x[i]! * 6;

  // quantization error bounds of the reference quantizers, relative to the row's largest magnitude
  const bound: Record<string, number> = {
    Q4_0: 0.1, Q4_1: 0.1, Q5_0: 0.05, Q5_1: 0.05, Q8_0: 0.01, Q2_K: 0.35, Q3_K: 0.2, Q4_K: 0.1, Q5_K: 0.05, Q6_K: 0.03, IQ4_NL: 0.12, IQ4_XS: 0.12, MXFP4: 0.3,
  };
  const requantBound: Record<string, number> = { Q4_1: 0.2, Q4_K: 0.2, Q2_K: 0.2, Q5_1: 0.2, Q5_K: 0.2 };
  for (const [name, type] of Object.entries(GGML)) {
    const block = BLOCK_TYPES.get(type);
    if (!block) continue;
    it(`${name}: our dequantizer returns the reference quantizer's values bit for bit, within the type's error; MatMulNBits ${isLossless(type) ? 'repack is exact' : 'offset columns add a small measured error'}`, () => {
      const { bytes, values } = quantizeGgmlWithValues(x, type);
      expect(bytes.length).to.equal((x.length / block.blockElems) * block.blockBytes);
      const deq = dequantize(block, bytes, x.length);
      // bit for bit the values the reference quantizer's codes and scales stand for
      expect(Buffer.from(deq.buffer).equals(Buffer.from(values.buffer)), `${name} dequantizes to the reference values`).to.equal(true);
      expect(relErr(x, deq, cols), name).to.be.below(bound[name]!);
      const m = toNBits(type, bytes, rows, cols);
      expect(m.rows).to.equal(rows);
      expect(m.data.length).to.equal(rows * rowBytes(m));
      const back = dequantizeMatrix(m);
      if (isLossless(type)) {
        expect(m.zeroPoints).to.equal(undefined);
        expect(Buffer.from(back.buffer).equals(Buffer.from(deq.buffer)), `${name} repack is bit-exact`).to.equal(true);
      } else {
        const e = relErr(deq, back, cols);
        expect(e).to.be.above(0);
        expect(e, name).to.be.below(m.bits === 8 ? 0.001 : 0.05);
        // the error the quantized offsets add, as a fraction of the type's own quantization error (README's figures)
        expect(m.offsetColumns).to.equal(cols / m.blockSize);
        expect(rms(back, deq) / rms(deq, x), name).to.be.below(requantBound[name]!);
      }
    });
  }
});

describe('gguf quantized models against llama.cpp', function () {
  this.timeout(120_000);
  const scratch = useTempDir('reasonplug-gguf-quant-');


  async function compare(path: string, steps: number, prompt = [1], options: ConvertGgufOptions = {}): Promise<{ ours: number[]; ref: number[] }> {
    const res = await convertExact(path, join(scratch.dir, `${basename(path)}-module`), options);
    const ours = await ortGreedy(join(res.dir, 'model.onnx'), prompt, steps);
    const ref = await llamaCppGreedy(path, prompt, steps);
    return { ours, ref };
  }

  it("a Qwen3-MoE whose experts (3-D tensors) are quantized, run by QMoE: greedy tokens and the next token's distribution equal llama.cpp's", async () => {
    const f32Path = join(scratch.dir, 'moe-f32.gguf');
    // A router decisive enough that quantization does not reorder the experts a token takes.
    const spec = { arch: 'qwen3moe', hidden: 256, layers: 2, heads: 4, kvHeads: 2, ff: 512, qkNorm: true as const, untied: true, experts: { count: 4, used: 2, ff: 256, routerScale: 0.5 }, seed: 35 };
    await writeRandomGguf(f32Path, spec, await storiesTokenizerMeta());
    const PROMPT = [1];
    // a degenerate model repeating one token would prove little (llama.cpp's F32 run)
    expect(new Set(await llamaCppGreedy(f32Path, PROMPT, 24)).size).to.be.greaterThan(3);
    const probabilities = (logits: Float32Array) => {
      const max = Math.max(...logits);
      const z = logits.reduce((sum, l) => sum + Math.exp(l - max), 0);
      return (token: number) => Math.exp(logits[token]! - max) / z;
    };
    /** The next token's distribution of a converted model. */
    const firstOf = async (dir: string) => {
      let first: Float32Array = new Float32Array(0);
      await ortGreedy(join(dir, 'model.onnx'), PROMPT, 1, (l) => (first = l));
      return probabilities(first);
    };
    const exact = await firstOf((await convertExact(f32Path, join(scratch.dir, 'moe-f32-module'))).dir);
    // [label, the experts' types (gate and up, down), QMoE's bits, block size, zero points]: repacked without loss
    // (Q8_0, Q6_K, MXFP4 as 8-bit codes; Q4_0 as 4-bit ones), offsets requantized to 8 bits (Q4_K), and Q4_K_M's mix of block
    // sizes requantized alike.
    const variants = [
      ['Q8_0', GGML.Q8_0, GGML.Q8_0, 8, 32, false],
      ['Q4_0 (4-bit codes, int8 activations)', GGML.Q4_0, GGML.Q4_0, 4, 32, false],
      ['Q6_K', GGML.Q6_K, GGML.Q6_K, 8, 16, false],
      ['MXFP4 (gpt-oss\'s experts; codes 8-bit)', GGML.MXFP4, GGML.MXFP4, 8, 32, false],
      ['Q4_K', GGML.Q4_K, GGML.Q4_K, 8, 32, true],
      ['Q4_K and Q6_K (Q4_K_M)', GGML.Q4_K, GGML.Q6_K, 8, 32, true],
    ] as const;
    for (const [label, type, downType, bits, block, zeroPoints] of variants) {
      const path = join(scratch.dir, `moe-${label.replace(/\W+/g, '-')}.gguf`);
      await rewriteGguf(
        f32Path,
        path,
        (_meta, tensors) => tensors.forEach((t, name) => t.dims.length === 3 && (t.type = name.includes('down') ? downType : type)),
        (data, t) => quantizeGgml(data, t),
      );
      const res = await convertExact(path, join(scratch.dir, `moe-${label.replace(/\W+/g, '-')}-module`));
      const model = await readModel(join(res.dir, 'model.onnx'));
      const qmoe = model.graph!.node!.filter((n) => n.opType === 'QMoE');
      expect(qmoe, label).to.have.length(2);
      const attr = (name: string) => Number(qmoe[0]!.attribute!.find((a) => a.name === name)!.i);
      expect([attr('expert_weight_bits'), attr('block_size'), (qmoe[0]!.input![11] ?? '') !== ''], label).to.deep.equal([bits, block, zeroPoints]);
      const ours = await ortGreedy(join(res.dir, 'model.onnx'), PROMPT, 24);
      const ref = await llamaCppGreedy(path, PROMPT, 24);
      // llama.cpp reads the file two ways: quantized experts times 8-bit activations (as QMoE multiplies them), and an
      // F32 file of the same values. Ours equals its quantized run wherever the two agree (all 24 tokens but for MXFP4,
      // whose two part at token 15, and Q4_K_M, whose first token is a near tie they take apart), and follows one of
      // the two for 12 tokens at least. (llama.cpp's runs end before an end-of-generation token; ours runs on.)
      const valuesPath = `${path}.values.gguf`;
      await rewriteGguf(path, valuesPath, () => {});
      const refValues = await llamaCppGreedy(valuesPath, PROMPT, 24);
      const common = (a: number[], b: number[]) => {
        let n = 0;
        while (n < a.length && n < b.length && a[n] === b[n]) n++;
        return n;
      };
      const agree = common(ref, refValues);
      expect(ours.slice(0, agree), label).to.deep.equal(ref.slice(0, agree));
      expect(Math.max(common(ours, ref), common(ours, refValues)), `${label}: ours ${ours}, llama.cpp's ${ref} and ${refValues}`).to.be.at.least(12);
      // The same experts dequantized for the float MoE operator (`dequantize`): QMoE computes their distribution to within
      // what int8 activations change where the experts were repacked; requantized to 8 bits, within a small part of the
      // type's own error.
      const dense = await convertExact(path, join(scratch.dir, `moe-${label.replace(/\W+/g, '-')}-dense`), { dequantize: true });
      expect((await readModel(join(dense.dir, 'model.onnx'))).graph!.node!.filter((n) => n.opType === 'MoE'), label).to.have.length(2);
      const [p, q] = [await firstOf(res.dir), await firstOf(dense.dir)];
      const top = await llamaCppNextProbabilities(path, PROMPT, 5);
      const gap = (a: (t: number) => number, b: (t: number) => number) => Math.max(...top.map(([t]) => Math.abs(a(t) - b(t))));
      if (zeroPoints) expect(gap(p, q), `${label}: requantized against dequantized`).to.be.below(gap(q, exact) / 3);
      else expect(gap(p, q), `${label}: repacked against dequantized`).to.be.below(6e-3);
      // llama.cpp's own 8-bit activations are not the operator's (its blocks and rounding): close, not equal.
      for (const [token, theirs] of top) expect(p(token), `${label}: token ${token} against llama.cpp`).to.be.closeTo(theirs, zeroPoints ? gap(q, exact) / 3 : 1e-2);
    }
  });

  const hybrids = [
    ['an LFM2 (short convolutions)', { arch: 'lfm2', hidden: 256, layers: 4, heads: 4, kvHeads: 2, ff: 512, qkNorm: true, convLayers: { kernel: 3, layers: [0, 2, 3] }, seed: 36 }],
    [
      'a Granite 4.0-H (Mamba2 mixers)',
      { arch: 'granitehybrid', hidden: 256, layers: 4, heads: 4, kvHeads: 2, ff: 512, untied: true, mambaLayers: { layers: [0, 1, 3], convKernel: 4, heads: 8, headDim: 64, stateSize: 32, groups: 1 }, meta: { 'rope.scaling.finetuned': { t: 'bool', v: false } }, seed: 40 },
    ],
    [
      'a Qwen3-Next (gated DeltaNets whose fused per-key-head projections are taken apart by quantized rows)',
      {
        arch: 'qwen3next',
        hidden: 256,
        layers: 4,
        heads: 4,
        kvHeads: 2,
        headDim: 64,
        ff: 512,
        qkNorm: true,
        deltaLayers: { interval: 4, convKernel: 4, keyHeads: 2, keyDim: 64, valueHeads: 4, valueDim: 64, interleaved: true },
        // (a router decisive enough that quantization does not reorder the experts a token takes)
        experts: { count: 4, used: 2, ff: 128, shared: 256, routerScale: 0.5 },
        meta: { 'rope.dimension_count': { t: 'u32', v: 16 } },
        seed: 45,
      },
    ],
  ] as [string, RandomGgufSpec][];
  for (const [label, spec] of hybrids) {
    it(`${label} as Q8_0 and Q4_0: greedy tokens equal llama.cpp's where its quantized and float runs agree`, async () => {
      const f32Path = join(scratch.dir, `${spec.arch}-f32.gguf`);
      await writeRandomGguf(f32Path, spec, await storiesTokenizerMeta());
      for (const type of [GGML.Q8_0, GGML.Q4_0]) {
        const path = join(scratch.dir, `${spec.arch}-${type}.gguf`);
        // the matrices quantized; norms and the convolutions' taps stay F32, as llama.cpp's quantizer leaves them (measured: LFM2's
        // quantized and float runs agree on 23 of 24 tokens at Q8_0 and 6 at Q4_0; Granite's on 24 and 23)
        await requantizedGguf(f32Path, path, (name) => (/norm|conv1d|shortconv\.conv\.|gate_inp/.test(name) ? GGML.F32 : type));
        // Granite's and Qwen3-Next's 4-bit matrices run on float activations here: on int8 ones (accuracy level 4, the default)
        // these random models leave llama.cpp's quantized run at its 4th and 11th tokens (measured), where llama.cpp's own
        // int8 activations (q8_0) round otherwise and its two runs stay together; on float ones ours equals both over all they share.
        const options = (spec.arch === 'granitehybrid' || spec.arch === 'qwen3next') && type === GGML.Q4_0 ? { quantAccuracyLevel: 0 as const } : {};
        const { ours, ref } = await compare(path, 24, [1], options);
        // (a file of the quantized tensors' values, F32: llama.cpp's run of it without int8 activations)
        const valuesPath = `${path}.values.gguf`;
        await rewriteGguf(path, valuesPath, () => {});
        const refValues = await llamaCppGreedy(valuesPath, [1], 24);
        let agree = 0;
        while (agree < ref.length && ref[agree] === refValues[agree]) agree++;
        expect(agree, `type ${type}: llama.cpp's quantized ${ref} and float ${refValues}`).to.be.at.least(type === GGML.Q8_0 ? 16 : 4);
        expect(ours.slice(0, agree), `type ${type}`).to.deep.equal(ref.slice(0, agree));
        const module = await readModel(join(scratch.dir, `${basename(path)}-module`, 'model.onnx'));
        expect(module.graph!.node!.filter((n) => n.opType === 'MatMulNBits').length, `type ${type}`).to.be.greaterThan(6);
      }
    });
  }

  it('stories260K as Q8_0: all 60 greedy tokens equal llama.cpp', async () => {
    const path = join(scratch.dir, 'stories-q8_0.gguf');
    await requantizedGguf(STORIES, path, () => GGML.Q8_0);
    await withGguf(path, async (f) => {
      expect(f.tensorInfo('blk.0.attn_q.weight')!.typeName).to.equal('Q8_0');
      expect(f.tensorInfo('token_embd.weight')!.typeName).to.equal('Q8_0');
    });
    const { ours, ref } = await compare(path, 60);
    expect(ours).to.deep.equal(ref);
  });

  it('refuses a truncated quantized file and a quantized tensor whose rows do not divide into blocks, naming the tensor; writes nothing', async () => {
    const path = join(scratch.dir, 'stories-q8_0.gguf'); // written by the Q8_0 test above
    const raw = await readFile(path);
    const cut = join(scratch.dir, 'cut.gguf');
    await writeFile(cut, raw.subarray(0, raw.length - 40));
    const out = join(scratch.dir, 'cut-module');
    const err = await convertExact(cut, out).catch((e: unknown) => e);
    expect(err).to.be.instanceOf(GgufError).with.property('code', 'truncated');
    expect((err as Error).message).to.match(/cut\.gguf is truncated: tensor "blk\.4\.[a-z_]+\.weight"/);
    expect(existsSync(out)).to.equal(false);
    // ffn_down's rows hold 172 elements: not whole Q8_0 blocks of 32
    const bad = Buffer.from(raw);
    const at = bad.indexOf(Buffer.from('blk.0.ffn_down.weight')) + 'blk.0.ffn_down.weight'.length;
    bad.writeUInt32LE(GGML.Q8_0, at + 4 + 16);
    const badPath = join(scratch.dir, 'bad-blocks.gguf');
    await writeFile(badPath, bad);
    const err2 = await convertExact(badPath, join(scratch.dir, 'bad-blocks')).catch((e: unknown) => e);
    expect(err2).to.be.instanceOf(GgufError).with.property('code', 'corrupt');
    expect((err2 as Error).message).to.match(/"blk\.0\.ffn_down\.weight" is Q8_0 with rows of 172 elements/);
  });

  it("stories260K as Q4_0: greedy tokens equal llama.cpp's over the prefix where its F32 and Q4_0 runs agree", async () => {
    const path = join(scratch.dir, 'stories-q4_0.gguf');
    await requantizedGguf(STORIES, path, () => GGML.Q4_0);
    const { ours, ref } = await compare(path, 60);
    const f32 = await llamaCppGreedy(STORIES, [1], 60);
    let agree = 0;
    while (agree < 60 && f32[agree] === ref[agree]) agree++;
    expect(agree, 'llama.cpp F32 and Q4_0 agree on a prefix').to.be.at.least(8);
    expect(ours.slice(0, agree)).to.deep.equal(ref.slice(0, agree));
  });
});

describe('gguf quantized random models against llama.cpp', function () {
  this.timeout(120_000);
  const scratch = useTempDir('reasonplug-gguf-mix-');
  let f32Path: string;
  const prompt = [1, 403, 407];
  before(async () => {
    f32Path = join(scratch.dir, 'random-f32.gguf');
    // rows of 256 so that every K-quant fits; an untied head so token_embd and output can differ in type
    const spec = { arch: 'llama', hidden: 256, layers: 1, heads: 4, kvHeads: 2, ff: 512, untied: true, scale: 0.08, embedScale: 0.3 };
    await writeRandomGguf(f32Path, spec, await storiesTokenizerMeta());
  });

  async function quantizedCopy(label: string, typeOf: (name: string) => number, src = f32Path): Promise<string> {
    const path = join(scratch.dir, `${label.replaceAll('/', '-')}.gguf`);
    await rewriteGguf(
      src,
      path,
      (_meta, tensors) => {
        for (const [name, t] of tensors) if (t.dims.length === 2) t.type = typeOf(name);
      },
      (data, type) => quantizeGgml(data, type),
    );
    return path;
  }

  // Each type alone: our dequantization (a dense conversion) decodes like llama.cpp on the quantized file. The
  // random model is sensitive (llama.cpp's own F32 and quantized runs part within a few tokens), so a layout
  // error shows at the first token; the later tokens differ only by llama.cpp's 8-bit activations.
  for (const [name, type] of Object.entries(GGML)) {
    if (!BLOCK_TYPES.has(type)) continue;
    it(`${name}: the dequantized conversion's first 6 greedy tokens equal llama.cpp's`, async () => {
      const path = await quantizedCopy(`all-${name}`, () => type);
      const ref = await llamaCppGreedy(path, prompt, 6);
      const res = await convertExact(path, join(scratch.dir, `all-${name}-module`), { dequantize: true });
      expect(await ortGreedy(join(res.dir, 'model.onnx'), prompt, 6)).to.deep.equal(ref);
    });
  }

  it('Q4_K_M mixes (Q4_K, Q6_K for attn_v, ffn_down and the head; tied: a Q6_K embedding), a mix of the lossless types and one of the types with offsets run through MatMulNBits like llama.cpp', async () => {
    const mixes: [string, (name: string) => number, number][] = [
      ['Q4_K_M', (n) => (/attn_v|ffn_down|output\.weight/.test(n) ? GGML.Q6_K : GGML.Q4_K), 6],
      ['lossless', (n) =>
        n.includes('attn_q') ? GGML.Q3_K : n.includes('attn_k') ? GGML.Q5_0 : n.includes('attn_v') ? GGML.IQ4_NL : n.includes('ffn_gate') ? GGML.IQ4_XS : n.includes('token_embd') ? GGML.Q8_0 : GGML.Q6_K, 4],
      // the types with offsets (offset columns; a Q4_K embedding requantized to 8 bits)
      ['offsets', (n) => (n.includes('attn') ? GGML.Q5_K : n.includes('ffn_gate') ? GGML.Q4_1 : n.includes('ffn_up') ? GGML.Q5_1 : n.includes('ffn_down') ? GGML.Q2_K : GGML.Q4_K), 3],
    ];
    // a tied head (no output.weight): Q4_K_M then stores token_embd as Q6_K, read by GatherBlockQuantized and MatMulNBits
    const tiedF32 = join(scratch.dir, 'random-tied-f32.gguf');
    await writeRandomGguf(tiedF32, { arch: 'llama', hidden: 256, layers: 1, heads: 4, kvHeads: 2, ff: 512, scale: 0.08, embedScale: 0.3 }, await storiesTokenizerMeta());
    mixes.push(['Q4_K_M-tied', (n) => (/attn_v|ffn_down|token_embd/.test(n) ? GGML.Q6_K : GGML.Q4_K), 6]);
    for (const [label, typeOf, n] of mixes) {
      const path = await quantizedCopy(label, typeOf, label.endsWith('tied') ? tiedF32 : f32Path);
      const ref = await llamaCppGreedy(path, prompt, n);
      const res = await convertExact(path, join(scratch.dir, `${label}-module`));
      expect(await ortGreedy(join(res.dir, 'model.onnx'), prompt, n), label).to.deep.equal(ref);
      if (!label.endsWith('tied')) continue;
      expect(res.config.tieWordEmbeddings).to.equal(true);
      // Written with external data (as models of 16 MiB of weights or more are), the head's codes and scales are
      // the embedding's bytes in the file, no Reshape (onnxruntime would fold one into a copy at every load).
      const external = await convertExact(path, join(scratch.dir, `${label}-external-module`), { externalData: true });
      expect(await ortGreedy(join(external.dir, 'model.onnx'), prompt, n), `${label}, external data`).to.deep.equal(ref);
      const graph = (await readModel(join(external.dir, 'model.onnx'))).graph!;
      const region = (name: string) => {
        const t = graph.initializer!.find((i) => i.name === name)!;
        return ['location', 'offset', 'length'].map((k) => t.externalData!.find((e) => e.key === k)!.value).join(':');
      };
      expect(region('lm_head.qweight')).to.equal(region('model.embed_tokens.qweight'));
      expect(region('lm_head.scales')).to.equal(region('model.embed_tokens.scales'));
      // …and count once in the weights the engine sizes its threads and row shards by.
      const dataBytes = (await stat(join(external.dir, 'model.onnx.data'))).size;
      expect(graphFacts({ graph }).weightBytes).to.be.within(dataBytes - 64 * 4096, dataBytes + 16 * 1024); // + tensors under 1 KiB, kept inline
      expect(graph.node!.filter((node) => node.opType === 'Reshape' && node.input!.some((i) => i.includes('embed_tokens')))).to.deep.equal([]);
    }
  });
});
