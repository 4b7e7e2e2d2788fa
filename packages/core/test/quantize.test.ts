import { expect } from 'chai';
import { ModelNotFoundError } from '../src/modules/locate.js';
import { resolveModule } from '../src/registry/lookup.js';
import { pullModule } from '../src/registry/pull.js';
import { pushModule } from '../src/registry/push.js';
import { startOurRegistry } from './support/registries.js';
import { existsSync } from 'node:fs';
import { mkdir, copyFile, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Engine } from '../src/engine.js';
import { loadModuleDir } from '../src/modules/module-dir.js';
import { quantizeModel } from '../src/modules/quantize-module.js';
import { QuantizeError, quantizeGraph } from '../src/onnx/quantize/quantize-graph.js';
import { makeValueInfo, onnx, readModel } from '../src/onnx/proto.js';
import * as ort from 'onnxruntime-node';
import { buildProjectorModel, randomProjectorWeights, writeProjectorModel } from '../src/onnx/projector-builder.js';
import { buildProgram } from '../src/cli/main.js';
import { cacheDir, testDir } from './support/models.js';
import { models, repoRoot } from '../../../test/support/paths.js';
import { makeModule, storiesConfig } from './support/modules.js';
import { bareArgmaxes, bareGreedy, bareLogits } from './support/bare-loop.js';
import { randomLlamaWeights, writeLlamaModel } from '../src/onnx/llama-builder.js';
import { quantizeMatrix } from '../src/onnx/quantize/quantize-matrix.js';
import { dequantizeMatrix } from '../src/onnx/quantized-matrix.js';
import { searchBlock } from '../src/onnx/quantize/block-search.js';
import { quantizeBlock } from '../src/gguf/quant/nbits.js';
import type { GraphProto, NodeProto } from '../src/onnx/proto.js';
import type { LlamaConfig, LlamaWeights } from '../src/onnx/llama-spec.js';

const config = storiesConfig({ hiddenSize: 64, intermediateSize: 128 });
const PROMPT = [1, 72, 19, 301, 44, 9];
const STEPS = 16;

async function greedy(options: Parameters<typeof Engine.load>[0], generate: Parameters<Engine['generate']>[1] = {}) {
  const engine = await Engine.load({ cacheDir, ...options });
  try {
    return await engine.generate({ promptIds: PROMPT }, { maxTokens: STEPS, ...generate });
  } finally {
    await engine.dispose();
  }
}

/** Every MatMulNBits node, sub-graphs included, as `head<bits>` (weight named lm_head…) or `body<bits>`. */
function nbitsKinds(g: GraphProto): string[] {
  const out: string[] = [];
  const visit = (graph: GraphProto) => {
    for (const n of graph.node ?? []) {
      if (n.opType === 'MatMulNBits') out.push((n.input![1]!.startsWith('lm_head') ? 'head' : 'body') + bitsAttr(n));
      for (const a of n.attribute ?? []) if (a.g) visit(a.g);
    }
  };
  visit(g);
  return out.sort();
}

function bitsAttr(n: NodeProto): number {
  return Number(n.attribute!.find((a) => a.name === 'bits')!.i);
}

function opCount(model: Awaited<ReturnType<typeof readModel>>, op: string): number {
  return (model.graph?.node ?? []).filter((n) => n.opType === op).length;
}

/**
 * The model `w` with every matrix passed through `dq` (quantize, then dequantize: what the quantized graph should
 * compute, as a dense graph): the head at 8 bits, as `--bits 4` keeps it, the layers at 4.
 */
function writeDequantized(path: string, config: LlamaConfig, w: LlamaWeights, dq: (m: Float32Array, rows: number, cols: number, bits: 4 | 8) => Float32Array): Promise<void> {
  const h = config.hiddenSize;
  const [qd, kvd, inter] = [h, (h / config.numHeads) * config.numKvHeads!, config.intermediateSize];
  return writeLlamaModel(path, config, {
    ...w,
    lmHead: dq(w.lmHead!, config.vocabSize, h, 8),
    layers: w.layers.map((l) => ({
      ...l,
      wq: dq(l.wq!, qd, h, 4),
      wk: dq(l.wk!, kvd, h, 4),
      wv: dq(l.wv!, kvd, h, 4),
      wo: dq(l.wo!, h, qd, 4),
      wGate: dq(l.wGate!, inter, h, 4),
      wUp: dq(l.wUp!, inter, h, 4),
      wDown: dq(l.wDown!, h, inter, 4),
    })),
  });
}

describe('reasonplug quantize', function () {
  this.timeout(120_000);
  let backbone: string;
  let fp32Ids: number[];
  before(async () => {
    backbone = await makeModule({ name: 'qbackbone', config, kind: 'backbone', seed: 3 });
    fp32Ids = (await greedy({ model: backbone })).rows[0]!.ids;
  });

  // A random model's next-token choices are near ties, so the bar is lower than a trained model's would be
  // (measured here: 4-bit agrees on 9/16, 8-bit on 14/16 teacher-forced positions).
  for (const [bits, minAgreement] of [
    [4, 0.5],
    [8, 0.8],
  ] as const) {
    it(`${bits}-bit: a verified module with the same kind, tasks and tokenizer; decodes as onnxruntime's bare loop does, and mostly as fp32`, async () => {
      const dest = join(testDir(`q${bits}`), `qbackbone-q${bits}`);
      const { report } = await quantizeModel(backbone, dest, { bits });
      const src = (await loadModuleDir(backbone)).manifest;
      const { manifest, files } = await loadModuleDir(dest); // every digest checked
      expect(manifest.name).to.equal(src.name);
      expect(manifest.kind).to.equal(src.kind);
      expect(manifest.tasks).to.deep.equal(src.tasks);
      expect(manifest.compat).to.deep.equal(src.compat);
      expect(manifest.version).to.equal(`${src.version}-q${bits}`);
      // --bits 4 keeps the LM head at 8 bits by default (as Q4_K_M keeps output.weight at Q6_K), and says so.
      expect(manifest.provenance?.quantization).to.include({ bits, headBits: 8, search: 'range', blockSize: 32, accuracy: 'int8', from: `${src.name}@${src.version}` });
      expect(report.head).to.deep.equal({ names: ['lm_head.weight.T'], bits: 8 });
      expect(manifest.files.model!.sha256).to.not.equal(src.files.model!.sha256);
      expect(Object.keys(manifest.files).sort()).to.deep.equal(Object.keys(src.files).sort());

      // Every projection and the LM head: 2 layers × (qkv, o, gate, up, down) + head.
      const graph = await readModel(files.model!);
      expect(report.matmuls).to.equal(11);
      expect(opCount(graph, 'MatMulNBits')).to.equal(11);
      expect(nbitsKinds(graph.graph!)).to.deep.equal([...Array(10).fill(`body${bits}`), 'head8'].sort());
      // The only float matrix left is the embedding table (the attention's own MatMuls have no weights).
      const floatMatrices = graph.graph!.initializer!.filter((t) => t.dims!.length === 2 && (t.dataType === 1 || t.dataType === 10));
      expect(floatMatrices.map((t) => t.name)).to.deep.equal(['model.embed_tokens.weight']);
      const ratio = (await stat(files.model!)).size / (await stat(join(backbone, 'model.onnx'))).size;
      // 4-bit: the 512×64 head, a fifth of the weights here, stays at 8 bits.
      expect(ratio).to.be.below(bits === 4 ? 0.45 : 0.5);

      const got = (await greedy({ model: dest })).rows[0]!.ids;
      expect(got).to.deep.equal(await bareGreedy(files.model!, PROMPT, STEPS));
      // Teacher-forced on the fp32 model's tokens: how often the quantized model picks the same next token.
      const seq = [...PROMPT, ...fp32Ids];
      const argmaxes = (await bareArgmaxes(files.model!, seq)).slice(PROMPT.length - 1, seq.length - 1);
      const agree = argmaxes.filter((t, i) => t === fp32Ids[i]).length / fp32Ids.length;
      expect(agree).to.be.at.least(minAgreement);
    });
  }

  it('a quantized module is pushed beside its original; ranges and latest keep to the original, its tag pulls it', async () => {
    const registry = await startOurRegistry();
    try {
      const q4 = join(testDir('q-push'), 'qbackbone-q4');
      await quantizeModel(backbone, q4, { bits: 4 });
      const [original, quantized] = [(await loadModuleDir(backbone)).manifest, (await loadModuleDir(q4)).manifest];
      const repo = `${registry.host}/acme/${original.name}`;
      await pushModule(backbone, `${repo}:${original.version}`);
      await pushModule(q4, `${repo}:${quantized.version}`);
      const opts = { cacheDir: testDir('q-push-cache') };
      expect((await resolveModule(`${repo}@^${original.version}`, opts)).version).to.equal(original.version);
      expect((await resolveModule(`${repo}:latest`, opts)).version).to.equal(original.version);
      const pulled = await pullModule(`${repo}:${quantized.version}`, opts);
      expect((await loadModuleDir(pulled.dir)).manifest.provenance?.quantization).to.include({ bits: 4 });
    } finally {
      await registry.close();
    }
  });

  it('the 4-bit graph (8-bit head) computes exactly what a dense graph of its dequantized weights computes (accuracy fp32)', async () => {
    const root = testDir('qexact');
    const q = join(root, 'q4.onnx');
    await quantizeModel(join(backbone, 'model.onnx'), q, { bits: 4, accuracy: 'fp32' });
    // makeModule's weights for seed 3, each matrix quantized and dequantized by the same block quantizer.
    const w = randomLlamaWeights(config, 3, 0.1);
    const dense = join(root, 'dequantized.onnx');
    await writeDequantized(dense, config, w, (m, rows, cols, bits) => dequantizeMatrix(quantizeMatrix(m, rows, cols, bits, 32)));
    const seq = [...PROMPT, ...fp32Ids];
    const [a, b] = await Promise.all([bareLogits(q, seq), bareLogits(dense, seq)]);
    let diff = 0;
    for (let i = 0; i < a.length; i++) diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
    expect(diff).to.be.below(1e-4);
  });

  it('quantized reasoners compose, in lanes and inline alike, and a quantized backbone runs latent steps (embeddings quantized too)', async () => {
    const reasonerSrc = await makeModule({ name: 'qreasoner', config: { ...config, numLayers: 1 }, seed: 4 });
    const root = testDir('qcompose');
    const backboneQ = join(root, 'backbone-q4');
    const reasonerQ = join(root, 'reasoner-q4');
    const { report } = await quantizeModel(backbone, backboneQ, { bits: 4, embeddings: true });
    expect(report.gathers).to.equal(1);
    await quantizeModel(reasonerSrc, reasonerQ, { bits: 4 });
    const projector = join(root, 'projector.onnx');
    await writeProjectorModel(projector, buildProjectorModel({ hiddenSize: config.hiddenSize }, randomProjectorWeights({ hiddenSize: config.hiddenSize }, 5)));
    const runs = [];
    for (const placement of ['inline', 'lanes'] as const) {
      runs.push(await greedy({ model: backboneQ, reasoners: [{ model: reasonerQ, weight: 0.8 }], projector, placement }, { latent: 'fixed:3' }));
    }
    expect(runs[0]!.rows[0]!.ids).to.deep.equal(runs[1]!.rows[0]!.ids);
    expect(runs[0]!.usage.latentSteps).to.equal(3);
    const alone = (await greedy({ model: backboneQ, projector }, { latent: 'fixed:3' })).rows[0]!.ids;
    expect(runs[0]!.rows[0]!.ids).to.not.deep.equal(alone);
  });

  it('refuses weights that are already quantized, and an existing destination, leaving nothing behind', async () => {
    const root = testDir('qrefuse');
    const once = join(root, 'once');
    await quantizeModel(backbone, once, { bits: 8 });
    const twice = join(root, 'twice');
    const err = await quantizeModel(once, twice).catch((e: Error) => e);
    expect(err).to.be.instanceOf(QuantizeError);
    expect((err as Error).message).to.match(/already quantized \(11 com\.microsoft::MatMulNBits nodes\)/);
    expect(existsSync(twice)).to.equal(false);
    const exists = await quantizeModel(backbone, once).catch((e: Error) => e);
    expect((exists as Error).message).to.contain('already exists');
    // A GGUF file is refused by what it is (read as ONNX it would pass for a corrupt download).
    const gguf = await quantizeModel(models.stories260K, join(root, 'from-gguf')).catch((e: Error) => e);
    expect(gguf).to.be.instanceOf(QuantizeError);
    expect((gguf as Error).message).to.match(/is a GGUF file, .*reasonplug convert gguf /);
    expect(existsSync(join(root, 'from-gguf'))).to.equal(false);
    // a source that is not there is named as such (not a raw ENOENT of stat)
    const missing = await quantizeModel(join(root, 'nowhere'), join(root, 'from-nowhere')).catch((e: Error) => e);
    expect(missing).to.be.instanceOf(ModelNotFoundError);
    expect((missing as Error).message).to.equal(`model path not found: ${join(root, 'nowhere')}`);
  });

  it('the CLI quantizes a plain export directory and an .onnx file', async () => {
    const root = testDir('qcli');
    const plain = join(root, 'export');
    await mkdir(plain);
    for (const f of ['model.onnx', 'tokenizer.json', 'tokenizer_config.json']) await copyFile(join(backbone, f), join(plain, f));
    const out = join(root, 'export-q8');
    await buildProgram().parseAsync(['node', 'reasonplug', 'quantize', plain, out, '--bits', '8', '--block', '16', '--accuracy', 'fp32']);
    expect(existsSync(join(out, 'tokenizer.json'))).to.equal(true);
    const graph = await readModel(join(out, 'model.onnx'));
    const node = graph.graph!.node!.find((n) => n.opType === 'MatMulNBits')!;
    const attrs = Object.fromEntries(node.attribute!.map((a) => [a.name, Number(a.i)]));
    expect(attrs).to.include({ bits: 8, block_size: 16, accuracy_level: 1 });
    // (a file's destination folder is made, as a directory's is)
    const file = join(root, 'new', 'folder', 'single-q4.onnx');
    await buildProgram().parseAsync(['node', 'reasonplug', 'quantize', join(plain, 'model.onnx'), file]);
    const ids = (await greedy({ model: file })).rows[0]!.ids;
    expect(ids).to.deep.equal(await bareGreedy(file, PROMPT, STEPS));
    // blocks onnxruntime does not take (a module of 1024-blocks was written, then failed to load), and loose numbers
    for (const block of ['1024', '0x20', '3.2e1', '']) {
      const program = buildProgram();
      // (a subcommand's bad option would otherwise exit the process)
      for (const c of [program, ...program.commands]) c.exitOverride().configureOutput({ writeErr: () => {} });
      const err = await program.parseAsync(['node', 'reasonplug', 'quantize', plain, join(root, `b${block}`), '--block', block]).catch((e: Error) => e);
      expect((err as Error).message, block).to.match(/--block must be a power of two from 16 to 256/);
    }
    expect(() => quantizeGraph(new onnx.ModelProto(), 'x', root, { blockSize: 512 })).to.throw(QuantizeError, /from 16 to 256; got 512/);
  });

  it("keeps an onnxruntime-genai export's genai_config.json, its decoder renamed to the copy's graph, so its context length stays", async () => {
    const root = testDir('qgenai');
    const genai = join(root, 'genai');
    await mkdir(genai);
    // (the decoder under a name of its own, as genai exports name it freely; its weights' file keeps its name)
    await copyFile(join(models.llamaFp16, 'model.onnx'), join(genai, 'decoder.onnx'));
    for (const f of ['model.onnx.data', 'tokenizer.json', 'tokenizer_config.json']) await copyFile(join(models.llamaFp16, f), join(genai, f));
    const config = JSON.parse(await readFile(join(models.llamaFp16, 'genai_config.json'), 'utf8'));
    config.model.context_length = 512; // tokenizer_config.json says 2048
    config.model.decoder.filename = 'decoder.onnx';
    await writeFile(join(genai, 'genai_config.json'), JSON.stringify(config));
    const out = join(root, 'genai-q8');
    await quantizeModel(genai, out, { bits: 8 });
    const copied = JSON.parse(await readFile(join(out, 'genai_config.json'), 'utf8'));
    expect(copied).to.deep.equal({ model: { ...config.model, decoder: { ...config.model.decoder, filename: 'model.onnx' } } });
    const engine = await Engine.load({ model: out, cacheDir });
    try {
      expect(engine.info.contextLength).to.equal(512);
    } finally {
      await engine.dispose();
    }
  });

  it('finds a tied LM head in both branches of a merged decoder; --head-bits 4 and --search weighted are applied and recorded', async () => {
    const root = testDir('qhead');
    const tied = { ...config, tieWordEmbeddings: true };
    const merged = join(root, 'merged.onnx');
    await writeLlamaModel(merged, tied, randomLlamaWeights(tied, 6, 0.1), { mergedDecoder: true });
    const { report } = await quantizeModel(merged, join(root, 'merged-q4.onnx'), { bits: 4 });
    expect(report.head).to.deep.equal({ names: ['lm_head.weight.T'], bits: 8 });
    const kinds = nbitsKinds((await readModel(join(root, 'merged-q4.onnx'))).graph!);
    expect(kinds.filter((k) => k.startsWith('head'))).to.deep.equal(['head8', 'head8']);
    expect(kinds.filter((k) => k !== 'body4' && !k.startsWith('head'))).to.deep.equal([]);

    const dest = join(root, 'all4');
    await buildProgram().parseAsync(['node', 'reasonplug', 'quantize', backbone, dest, '--head-bits', '4', '--search', 'weighted']);
    const { manifest, files } = await loadModuleDir(dest);
    expect(manifest.provenance?.quantization).to.include({ bits: 4, headBits: 4, search: 'weighted' });
    expect(nbitsKinds((await readModel(files.model!)).graph!)).to.deep.equal([...Array(10).fill('body4'), 'head4'].sort());
  });

  it('drops the replaced weights of an old export whose initializers are graph inputs too (IR < 4), with their input declarations', async () => {
    const source = await readModel(join(repoRoot, 'examples', 'modules', 'toy-backbone-s', 'model.onnx'));
    const inputs = source.graph!.input!.map((i) => i.name);
    for (const t of source.graph!.initializer!) source.graph!.input!.push(makeValueInfo(t.name!, t.dataType!, (t.dims ?? []).map(Number)));
    const { model, report } = quantizeGraph(source, 'legacy', '.');
    const kept = new Set(model.graph!.initializer!.map((t) => t.name));
    // every input left is one a caller feeds, or one of the weights still there
    expect(model.graph!.input!.map((i) => i.name).filter((n) => !kept.has(n))).to.deep.equal(inputs);
    expect(report.bytesAfter).to.be.below(report.bytesBefore / 3);
    const session = await ort.InferenceSession.create(onnx.ModelProto.encode(model).finish());
    expect(session.inputNames).to.deep.equal(inputs);
    await session.release();
  });

  it('the weighted block search has lower weighted error than the range search, and no higher squared error', () => {
    // Gaussian weights with a few outliers, as trained matrices have them (seeded LCG + Box–Muller).
    let state = 12345;
    const uniform = () => ((state = (state * 1103515245 + 12345) % 2 ** 31) + 0.5) / 2 ** 31;
    const n = 32;
    const blocks = 400;
    const x = Float32Array.from({ length: n * blocks }, () => Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform()) * (uniform() < 0.02 ? 6 : 1));
    const codes = new Uint8Array(n);
    const totals = { weighted: [0, 0], range: [0, 0] };
    for (let b = 0; b < blocks; b++) {
      const from = b * n;
      let sq = 0;
      for (let i = 0; i < n; i++) sq += x[from + i]! ** 2;
      const rms = Math.sqrt(sq / n);
      for (const [name, search] of [['weighted', searchBlock], ['range', quantizeBlock]] as const) {
        const [scale, zp] = search(x, from, n, 15, codes);
        for (let i = 0; i < n; i++) {
          const d = (codes[i]! - zp) * scale - x[from + i]!;
          expect(codes[i]).to.be.within(0, 15);
          totals[name][0]! += (rms + Math.abs(x[from + i]!)) * d * d;
          totals[name][1]! += d * d;
        }
      }
    }
    expect(totals.weighted[0]).to.be.below(totals.range[0]! * 0.99);
    expect(totals.weighted[1]).to.be.at.most(totals.range[1]!);
    // An all-zero block is exact.
    expect(searchBlock(new Float32Array(n), 0, n, 15, codes)).to.deep.equal([0, 0]);
  });

  it('pads widths that are not a multiple of the block size: every MatMul quantized, computing what its dequantized weights compute', async () => {
    const narrow = storiesConfig(); // hidden 48: q/k/v, o, gate, up and the head read 48 inputs, 1.5 blocks of 32
    const root = testDir('qpad');
    const src = join(root, 'narrow.onnx');
    const w = randomLlamaWeights(narrow, 8, 0.1);
    await writeLlamaModel(src, narrow, w);
    const q = join(root, 'narrow-q4.onnx');
    const { report } = await quantizeModel(src, q, { bits: 4, accuracy: 'fp32' });
    expect(report.skipped).to.deep.equal([]);
    expect(report.matmuls).to.equal(11);
    const head = (await readModel(q)).graph!.node!.find((n) => n.opType === 'MatMulNBits' && n.input![1]!.startsWith('lm_head'))!;
    expect(Object.fromEntries(head.attribute!.map((a) => [a.name, Number(a.i)]))).to.include({ K: 48, bits: 8 });

    // Each [out, in] matrix padded to whole blocks with zeros, quantized, dequantized and cut back.
    const dq = (m: Float32Array, rows: number, cols: number, bits: 4 | 8 = 4) => {
      const width = Math.ceil(cols / 32) * 32;
      const padded = new Float32Array(rows * width);
      for (let r = 0; r < rows; r++) padded.set(m.subarray(r * cols, (r + 1) * cols), r * width);
      const back = dequantizeMatrix(quantizeMatrix(padded, rows, width, bits, 32));
      return Float32Array.from({ length: rows * cols }, (_, i) => back[Math.floor(i / cols) * width + (i % cols)]!);
    };
    const dense = join(root, 'dequantized.onnx');
    await writeDequantized(dense, narrow, w, dq);
    const [a, b] = await Promise.all([bareLogits(q, PROMPT), bareLogits(dense, PROMPT)]);
    let diff = 0;
    for (let i = 0; i < a.length; i++) diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
    expect(diff).to.be.below(1e-4);
    // The default accuracy (int8 activations) runs the padded blocks too, and the engine decodes as the bare loop.
    const q8a = join(root, 'narrow-q4-int8.onnx');
    await quantizeModel(src, q8a, { bits: 4 });
    expect((await greedy({ model: q8a })).rows[0]!.ids).to.deep.equal(await bareGreedy(q8a, PROMPT, STEPS));
  });
});
