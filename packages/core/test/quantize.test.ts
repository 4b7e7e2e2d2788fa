import { expect } from 'chai';
import { existsSync } from 'node:fs';
import { mkdir, copyFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Engine } from '../src/engine.js';
import { loadModuleDir } from '../src/modules/module-dir.js';
import { quantizeModel } from '../src/modules/quantize-module.js';
import { QuantizeError } from '../src/onnx/quantize/quantize-graph.js';
import { readModel } from '../src/onnx/proto.js';
import { buildProjectorModel, randomProjectorWeights, writeProjectorModel } from '../src/onnx/projector-builder.js';
import { buildProgram } from '../src/cli/main.js';
import { cacheDir, testDir } from './support/models.js';
import { makeModule, storiesConfig } from './support/modules.js';
import { bareArgmaxes, bareGreedy, bareLogits } from './support/bare-loop.js';
import { randomLlamaWeights, writeLlamaModel } from '../src/onnx/llama-builder.js';
import { quantizeMatrix } from '../src/onnx/quantize/quantize-matrix.js';
import { dequantizeMatrix } from '../src/onnx/quantized-matrix.js';

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

function opCount(model: Awaited<ReturnType<typeof readModel>>, op: string): number {
  return (model.graph?.node ?? []).filter((n) => n.opType === op).length;
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
      expect(manifest.version).to.equal(`${src.version}+q${bits}`);
      expect(manifest.provenance?.quantization).to.include({ bits, blockSize: 32, accuracy: 'int8', from: `${src.name}@${src.version}` });
      expect(manifest.files.model!.sha256).to.not.equal(src.files.model!.sha256);
      expect(Object.keys(manifest.files).sort()).to.deep.equal(Object.keys(src.files).sort());

      // Every projection and the LM head: 2 layers × (qkv, o, gate, up, down) + head.
      const graph = await readModel(files.model!);
      expect(report.matmuls).to.equal(11);
      expect(opCount(graph, 'MatMulNBits')).to.equal(11);
      // The only float matrix left is the embedding table (the attention's own MatMuls have no weights).
      const floatMatrices = graph.graph!.initializer!.filter((t) => t.dims!.length === 2 && (t.dataType === 1 || t.dataType === 10));
      expect(floatMatrices.map((t) => t.name)).to.deep.equal(['model.embed_tokens.weight']);
      const ratio = (await stat(files.model!)).size / (await stat(join(backbone, 'model.onnx'))).size;
      expect(ratio).to.be.below(bits === 4 ? 0.4 : 0.5);

      const got = (await greedy({ model: dest })).rows[0]!.ids;
      expect(got).to.deep.equal(await bareGreedy(files.model!, PROMPT, STEPS));
      // Teacher-forced on the fp32 model's tokens: how often the quantized model picks the same next token.
      const seq = [...PROMPT, ...fp32Ids];
      const argmaxes = (await bareArgmaxes(files.model!, seq)).slice(PROMPT.length - 1, seq.length - 1);
      const agree = argmaxes.filter((t, i) => t === fp32Ids[i]).length / fp32Ids.length;
      expect(agree).to.be.at.least(minAgreement);
    });
  }

  it('the 4-bit graph computes exactly what a dense graph of its dequantized weights computes (accuracy fp32)', async () => {
    const root = testDir('qexact');
    const q = join(root, 'q4.onnx');
    await quantizeModel(join(backbone, 'model.onnx'), q, { bits: 4, accuracy: 'fp32' });
    // makeModule's weights for seed 3, each matrix quantized and dequantized by the same block quantizer.
    const w = randomLlamaWeights(config, 3, 0.1);
    const h = config.hiddenSize;
    const [qd, kvd, inter] = [h, (h / config.numHeads) * config.numKvHeads!, config.intermediateSize];
    const dq = (m: Float32Array, rows: number, cols: number) => dequantizeMatrix(quantizeMatrix(m, rows, cols, 4, 32));
    const dense = join(root, 'dequantized.onnx');
    await writeLlamaModel(dense, config, {
      ...w,
      lmHead: dq(w.lmHead!, config.vocabSize, h),
      layers: w.layers.map((l) => ({
        ...l,
        wq: dq(l.wq, qd, h),
        wk: dq(l.wk, kvd, h),
        wv: dq(l.wv, kvd, h),
        wo: dq(l.wo, h, qd),
        wGate: dq(l.wGate, inter, h),
        wUp: dq(l.wUp, inter, h),
        wDown: dq(l.wDown, h, inter),
      })),
    });
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
    const file = join(root, 'single-q4.onnx');
    await buildProgram().parseAsync(['node', 'reasonplug', 'quantize', join(plain, 'model.onnx'), file]);
    const ids = (await greedy({ model: file })).rows[0]!.ids;
    expect(ids).to.deep.equal(await bareGreedy(file, PROMPT, STEPS));
  });
});
