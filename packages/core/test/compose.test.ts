import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { readFile, writeFile, copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { Engine } from '../src/engine.js';
import { openDecoder, prepareModel } from '../src/runtime/prepare-model.js';
import { ComposedSource, localReasoners, type ReasonerSlot } from '../src/compose/composed-source.js';
import { ReasonerLane } from '../src/runtime/reasoner-lane.js';
import type { FusionMode } from '../src/compose/fusion.js';
import { CompositionOptionsError } from '../src/compose/composition-options.js';
import type { WeightSpec } from '../src/compose/weights.js';
import { addLogitBias, limitContext } from './support/graph-edits.js';
import { makeModule, storiesConfig } from './support/modules.js';
import { builtModel, cacheDir, smallConfig, testDir } from './support/models.js';
import { models } from '../../../test/support/paths.js';
import { argmax, expectGreedySteps, logSoftmax64 } from './support/logit-math.js';

const PROMPT = [1, 403, 407, 261];

describe('UniR composition', function () {
  this.timeout(120_000);
  let backbone: string;
  let mathR: string;
  let cipherR: string;

  before(async () => {
    [backbone, mathR, cipherR] = await Promise.all([
      makeModule({ name: 'backbone-s', kind: 'backbone', config: storiesConfig({ hiddenSize: 64, numLayers: 3 }), seed: 1 }),
      makeModule({ name: 'math-r', config: storiesConfig({ hiddenSize: 32 }), seed: 2 }),
      makeModule({ name: 'cipher-r', config: storiesConfig({ hiddenSize: 32, numHeads: 2, numKvHeads: 1 }), seed: 3 }),
    ]);
  });

  it('fused logits equal the weighted sum computed independently, in both modes, on this thread and in a lane', async () => {
    const opened = await Promise.all([backbone, mathR, cipherR].map((m) => openDecoder(m, {}, cacheDir)));
    const refs = await Promise.all([backbone, mathR, cipherR].map((m) => openDecoder(m, {}, cacheDir)));
    const prepared = await Promise.all([mathR, cipherR].map((m) => prepareModel(m, cacheDir)));
    const lane = await ReasonerLane.open(prepared, ['math', 'cipher'], { runtime: {}, dedicatedCore: true });
    try {
      const [b, r1, r2] = opened.map((o) => o.session);
      const V = 512;
      const placements: [string, ReasonerSlot[]][] = [
        ['this thread', localReasoners([{ name: 'math', decoder: r1! }, { name: 'cipher', decoder: r2! }])],
        ['a lane', [{ name: 'math', group: lane, member: 0 }, { name: 'cipher', group: lane, member: 1 }]],
      ];
      for (const [where, slots] of placements) {
        for (const mode of ['logits', 'logprobs'] as FusionMode[]) {
          for (const [w1, w2, normalize] of [[1, 1, false], [0.5, -0.3, false], [2.5, 0.7, true]] as const) {
            const source = new ComposedSource(b!, slots, V, {
              active: [{ slot: 0, weight: w1 }, { slot: 1, weight: w2 }],
              mode,
              normalize,
              traceTop: 2,
            });
            const T = (z: Float32Array) => (mode === 'logprobs' ? logSoftmax64(z, V) : Float64Array.from(z.subarray(0, V)));
            const scale = normalize ? 1 / (1 + w1 + w2) : 1;
            const expected = (zs: Float32Array[]) => {
              const [t0, t1, t2] = zs.map((z) => T(z));
              return Float64Array.from({ length: V }, (_, v) => (t0![v]! + w1 * t1![v]! + w2 * t2![v]!) * scale);
            };
            // the trace shows each reasoner's own top candidate
            const traced = (zs: Float32Array[]) => {
              const trace = source.trace(0)!;
              expect(trace.models.map((m) => m.name)).to.deep.equal(['backbone', 'math', 'cipher']);
              expect(trace.models[1]!.top[0]!.id).to.equal(argmax(zs[1]!.subarray(0, V)));
              expect(trace.models[2]!.top[0]!.id).to.equal(argmax(zs[2]!.subarray(0, V)));
            };
            await expectGreedySteps(source, refs.map((r) => r.session), PROMPT, 3, V, expected, `${where}, ${mode}`, traced);
          }
        }
      }
    } finally {
      for (const o of [...opened, ...refs]) await o.session.release();
      await lane.release();
    }
  });

  it('weight 0 reproduces the backbone alone token for token; reasoner order does not matter', async () => {
    const alone = await Engine.load({ model: backbone, cacheDir });
    const ab = await Engine.load({ model: backbone, reasoners: [{ model: mathR, weight: 0.8 }, { model: cipherR, weight: 0.6 }], cacheDir });
    const ba = await Engine.load({ model: backbone, reasoners: [{ model: cipherR, weight: 0.6 }, { model: mathR, weight: 0.8 }], cacheDir });
    try {
      const opts = { maxTokens: 20, ignoreEos: true };
      const base = (await alone.generate({ promptIds: PROMPT }, opts)).rows[0]!.ids;
      const zero = await ab.generate({ promptIds: PROMPT }, { ...opts, reasoners: [{ name: 'math-r', weight: 0 }, { name: 'cipher-r', weight: 0 }] });
      expect(zero.rows[0]!.ids).to.deep.equal(base);
      const x = (await ab.generate({ promptIds: PROMPT }, opts)).rows[0]!.ids;
      const y = (await ba.generate({ promptIds: PROMPT }, opts)).rows[0]!.ids;
      expect(x).to.deep.equal(y);
      expect(x).to.not.deep.equal(base); // the reasoners do change the output
      const sampled = { ...opts, temperature: 0.9, seed: 5 };
      expect((await ab.generate({ promptIds: PROMPT }, sampled)).rows[0]!.ids).to.deep.equal(
        (await ba.generate({ promptIds: PROMPT }, sampled)).rows[0]!.ids,
      );
    } finally {
      await Promise.all([alone.dispose(), ab.dispose(), ba.dispose()]);
    }
  });

  it('numbers a default name taken twice (math-r, math-r#2), and refuses a name given twice', async () => {
    const twice = await Engine.load({ model: backbone, reasoners: [{ model: mathR }, { model: mathR, weight: 0.5 }], cacheDir });
    try {
      expect(twice.info.reasoners.map((r) => r.name)).to.deep.equal(['math-r', 'math-r#2']);
      const picked = await twice.generate({ promptIds: PROMPT }, { maxTokens: 4, reasoners: [{ name: 'math-r#2' }] });
      expect(picked.rows[0]!.ids).to.have.length(4);
    } finally {
      await twice.dispose();
    }
    const given = await Engine.load({ model: backbone, reasoners: [{ model: mathR, name: 'm' }, { model: cipherR, name: 'm' }], cacheDir }).catch((e: Error) => e);
    expect((given as Error).message).to.match(/two reasoners are named "m"; give them distinct names/);
  });

  it('a reasoner that favours one token steers greedy decoding to it exactly past the margin', async () => {
    const favoured = 300;
    const steer = await makeModule({
      name: 'steer-r',
      config: storiesConfig({ hiddenSize: 32 }),
      seed: 9,
      edit: (p) => addLogitBias(p, 512, { [favoured]: 8 }),
    });
    const engine = await Engine.load({ model: backbone, reasoners: [{ model: steer }], cacheDir });
    try {
      // The first step's logits of both models, every candidate (the trace lists all 512).
      const stream = engine.stream({ promptIds: PROMPT }, { maxTokens: 1, trace: 512 });
      let trace;
      for await (const t of stream) trace = t.trace!;
      const zb = new Float64Array(512);
      const zr = new Float64Array(512);
      for (const c of trace!.models[0]!.top) zb[c.id] = c.logit;
      for (const c of trace!.models[1]!.top) zr[c.id] = c.logit;
      const first = argmax(zb);
      expect(first).to.not.equal(favoured);
      // favoured wins once w·(zr[f] − zr[c]) > zb[c] − zb[f] for every other token c.
      let margin = 0;
      for (let c = 0; c < 512; c++) {
        if (c === favoured) continue;
        const gap = zb[c]! - zb[favoured]!;
        const pull = zr[favoured]! - zr[c]!;
        if (pull <= 0) expect(gap).to.be.below(0);
        else margin = Math.max(margin, gap / pull);
      }
      expect(margin).to.be.greaterThan(0);
      const at = async (w: number) =>
        (await engine.generate({ promptIds: PROMPT }, { maxTokens: 1, reasoners: [{ name: 'steer-r', weight: w }] })).rows[0]!.ids[0];
      expect(await at(0)).to.equal(first);
      expect(await at(margin * 0.99)).to.not.equal(favoured);
      expect(await at(margin * 1.01)).to.equal(favoured);
    } finally {
      await engine.dispose();
    }
  });

  it('follows a weight schedule over generated tokens', async () => {
    const engine = await Engine.load({ model: backbone, reasoners: [{ model: mathR }], cacheDir });
    try {
      const schedule = [{ until: 5, weight: 3 }, { weight: 0 }];
      const stream = engine.stream({ promptIds: PROMPT }, { maxTokens: 12, ignoreEos: true, trace: 1, reasoners: [{ name: 'math-r', weight: schedule }] });
      const weights: number[] = [];
      const ids: number[] = [];
      for await (const t of stream) {
        weights.push(t.trace!.models[1]!.weight);
        ids.push(t.id);
      }
      expect(weights).to.deep.equal([3, 3, 3, 3, 3, 0, 0, 0, 0, 0, 0, 0]);
      const constant = await engine.generate({ promptIds: PROMPT }, { maxTokens: 5, ignoreEos: true, reasoners: [{ name: 'math-r', weight: 3 }] });
      expect(ids.slice(0, 5)).to.deep.equal(constant.rows[0]!.ids);
      const bad = await engine.generate({ promptIds: PROMPT }, { reasoners: [{ name: 'math-r', weight: [{ until: 5, weight: 1 }] }] }).catch((e: Error) => e);
      expect((bad as Error).message).to.match(/last segment/);
    } finally {
      await engine.dispose();
    }
  });

  it('composes reasoners with a backbone of another size that shares the tokenizer (weak-to-strong shape)', async () => {
    const large = await makeModule({ name: 'backbone-l', kind: 'backbone', config: storiesConfig({ hiddenSize: 128, numLayers: 4, numHeads: 8, numKvHeads: 4, intermediateSize: 256 }), seed: 4 });
    const alone = await Engine.load({ model: large, cacheDir });
    const composed = await Engine.load({ model: large, reasoners: [{ model: mathR, weight: 2 }], cacheDir });
    try {
      const opts = { maxTokens: 16, ignoreEos: true };
      const a = await alone.generate({ promptIds: PROMPT }, opts);
      const c = await composed.generate({ promptIds: PROMPT }, opts);
      expect(c.rows[0]!.ids).to.have.length(16);
      expect(c.rows[0]!.ids).to.not.deep.equal(a.rows[0]!.ids);
      expect(composed.info.reasoners).to.deep.equal([{ name: 'math-r', modelPath: join(mathR, 'model.onnx'), weight: 2, vocabSize: 512, mode: 'logits' }]);
    } finally {
      await Promise.all([alone.dispose(), composed.dispose()]);
    }
  });

  it('refuses a reasoner with another tokenizer, naming both fingerprints', async () => {
    const other = await makeModule({
      name: 'other-tok',
      seed: 5,
      tokenizer: (json) => {
        const vocab = json.model.vocab;
        const [a, b] = Object.keys(vocab).filter((k) => vocab[k]! > 300).slice(0, 2);
        [vocab[a!], vocab[b!]] = [vocab[b!]!, vocab[a!]!];
      },
    });
    const err = await Engine.load({ model: backbone, reasoners: [{ model: other }], cacheDir }).catch((e: Error) => e);
    expect((err as Error).name).to.equal('VocabularyMismatchError');
    expect((err as Error).message).to.match(/other-tok uses another tokenizer.*sha256:[0-9a-f]{64} vs sha256:[0-9a-f]{64}/);
  });

  it('truncates padded vocabularies to the tokenizer: padded ids are never sampled', async () => {
    const padded = await makeModule({
      name: 'padded-r',
      config: storiesConfig({ vocabSize: 520, hiddenSize: 32 }),
      seed: 6,
      edit: (p) => addLogitBias(p, 520, { 515: 50, 519: 50 }),
    });
    const engine = await Engine.load({ model: backbone, reasoners: [{ model: padded, weight: 1 }], cacheDir });
    try {
      expect(engine.info.sharedVocabSize).to.equal(512);
      expect(engine.info.reasoners[0]!.vocabSize).to.equal(520);
      const r = await engine.generate({ promptIds: [PROMPT, [1]] }, { maxTokens: 40, ignoreEos: true, temperature: 2, seed: 3 });
      for (const row of r.rows) for (const id of row.ids) expect(id).to.be.below(512);
    } finally {
      await engine.dispose();
    }
  });

  it('refuses a corrupt reasoner module, naming the file', async () => {
    const broken = await makeModule({ name: 'broken-r', seed: 7 });
    const model = join(broken, 'model.onnx');
    const bytes = await readFile(model);
    bytes[bytes.length - 10] ^= 0xff;
    await writeFile(model, bytes);
    const err = await Engine.load({ model: backbone, reasoners: [{ model: broken }], cacheDir }).catch((e: Error) => e);
    expect((err as Error).name).to.equal('ModuleIntegrityError');
    expect((err as Error).message).to.include('model.onnx');
  });

  it('composes bare .onnx files by vocabulary size with a warning, and refuses different sizes', async () => {
    const dir = testDir('bare-compose');
    const a = join(dir, 'a.onnx');
    const b = join(dir, 'b.onnx');
    await copyFile(await builtModel('bare-a'), a);
    await copyFile(await builtModel('bare-b', smallConfig, {}, 8), b);
    const engine = await Engine.load({ model: a, reasoners: [{ model: b, weight: 0.5 }], cacheDir });
    try {
      expect(engine.info.warnings.join('\n')).to.match(/no tokenizer to check/);
      expect((await engine.generate({ promptIds: [1, 2, 3] }, { maxTokens: 4 })).rows[0]!.ids).to.have.length(4);
    } finally {
      await engine.dispose();
    }
    const wide = join(dir, 'wide.onnx');
    await copyFile(await builtModel('bare-wide', { ...smallConfig, vocabSize: 100 }), wide);
    const err = await Engine.load({ model: a, reasoners: [{ model: wide }], cacheDir }).catch((e: Error) => e);
    expect((err as Error).name).to.equal('VocabularyMismatchError');
  });

  it("refuses a bare .onnx reasoner whose logit width is not the backbone's, beside a backbone with a tokenizer, naming both", async () => {
    const dir = testDir('bare-beside-module');
    const same = join(dir, 'same.onnx');
    const wider = join(dir, 'wider.onnx');
    await copyFile(await builtModel('bare-512', storiesConfig({ hiddenSize: 32 }), {}, 9), same);
    // Wider than the tokenizer, as a padded vocabulary would be: without a tokenizer nothing says it is one.
    await copyFile(await builtModel('bare-520', storiesConfig({ vocabSize: 520, hiddenSize: 32 }), {}, 9), wider);
    const engine = await Engine.load({ model: backbone, reasoners: [{ model: same, weight: 0.5 }], cacheDir });
    try {
      expect(engine.info.warnings.join('\n')).to.match(/no tokenizer to check; composing by vocabulary size \(512\)/);
    } finally {
      await engine.dispose();
    }
    const err = await Engine.load({ model: backbone, reasoners: [{ model: wider }], cacheDir }).then(
      (e) => e.dispose().then(() => undefined),
      (e: Error) => e,
    );
    expect(err?.name).to.equal('VocabularyMismatchError');
    expect(err?.message).to.match(/wider produces 520 logits but backbone \(.*\) produces 512; without a tokenizer/);
  });

  it("refuses a backbone whose tokenizer is another model's (half or twice its logits' width), which would decode nonsense", async () => {
    // stories260K's 512-wide logits beside the 32,000-token tokenizer of another export
    const dir = testDir('foreign-tokenizer');
    await copyFile(join(backbone, 'model.onnx'), join(dir, 'model.onnx'));
    await copyFile(join(models.llamaFp16, 'tokenizer.json'), join(dir, 'tokenizer.json'));
    const err = await Engine.load({ model: dir, cacheDir }).catch((e: Error) => e);
    expect((err as Error).name).to.equal('VocabularyMismatchError');
    expect((err as Error).message).to.match(/has 32000 ids but .*model\.onnx gives logits for \d+: they belong to different models/);
  });

  it('gives the same tokens whether reasoners share one lane, each have their own, or run inline', async () => {
    const reasoners = [{ model: mathR, weight: 0.8 }, { model: cipherR, weight: 0.6 }];
    // Explicit threads give every reasoner a lane of its own; forced lanes on few cores share one.
    const engines = await Promise.all([
      Engine.load({ model: backbone, reasoners, cacheDir, placement: 'lanes' }),
      Engine.load({ model: backbone, reasoners, cacheDir, intraOpThreads: 1 }),
      Engine.load({ model: backbone, reasoners, cacheDir, placement: 'inline' }),
    ]);
    try {
      expect(engines[1]!.info.placement).to.deep.equal({ kind: 'lanes', lanes: [['math-r'], ['cipher-r']] });
      expect(engines[2]!.info.placement).to.deep.equal({ kind: 'inline', lanes: [] });
      const opts = { maxTokens: 24, ignoreEos: true, trace: 2 };
      const batch = { promptIds: [PROMPT, [1, 290], [1, 403, 407, 261, 300, 301]] };
      const [a, ...others] = await Promise.all(engines.map((e) => e.generate(batch, opts)));
      for (const b of others) expect(b.rows.map((r) => r.ids)).to.deep.equal(a!.rows.map((r) => r.ids));
      // `generate` returns the trace it was asked for: per token, each model's candidates and the fused pick
      for (const row of a!.rows) {
        expect(row.trace).to.have.length(row.ids.length);
        // (greedy: the fused favourite is the token chosen)
        row.trace!.forEach((t, i) => expect(t.fused[0]!.id, `token ${i}`).to.equal(row.ids[i]));
        expect(row.trace![0]!.models.map((m) => m.name)).to.deep.equal(['backbone', 'math-r', 'cipher-r']);
      }
      // a second call with another batch size and a reasoner left out reuses the lanes and sessions
      const subset = { maxTokens: 12, ignoreEos: true, reasoners: [{ name: 'cipher-r' }] };
      const [c, ...rest] = await Promise.all(engines.map((e) => e.generate({ promptIds: PROMPT }, subset)));
      for (const d of rest) expect(d.rows[0]!.ids).to.deep.equal(c!.rows[0]!.ids);
    } finally {
      await Promise.all(engines.map((e) => e.dispose()));
    }
  });

  it('composes a third-party export (contrib ops, fp16 logits, external data) with an fp16 reasoner, in both placements', async () => {
    const reasoner = await builtModel(
      'r32k-fp16',
      { vocabSize: 32000, hiddenSize: 16, numLayers: 1, numHeads: 2, intermediateSize: 32 },
      { dtype: 'float16' },
      5,
    );
    const w = 3;
    const prompt = [1, 15043, 3186];
    // The reference: both models stepped here, argmax of z_b + w·z_r over the shared vocabulary in float64.
    const [b, r] = await Promise.all([models.llamaFp16, reasoner].map((m) => openDecoder(m, {}, cacheDir)));
    const expected: number[] = [];
    const alone: number[] = [];
    try {
      let zb = await b!.session.prefill([prompt]);
      let zr = await r!.session.prefill([prompt]);
      for (let t = 0; t < 8; t++) {
        const fused = Float64Array.from({ length: 32000 }, (_, v) => zb[v]! + w * zr[v]!);
        expected.push(argmax(fused));
        alone.push(argmax(zb));
        [zb, zr] = [await b!.session.step([expected[t]!]), await r!.session.step([expected[t]!])];
      }
    } finally {
      await Promise.all([b!.session.release(), r!.session.release()]);
    }
    expect(expected).to.not.deep.equal(alone); // the reasoner's weight changes the path, so the check can fail
    for (const placement of ['lanes', 'inline'] as const) {
      const engine = await Engine.load({ model: models.llamaFp16, reasoners: [{ model: reasoner, weight: w }], cacheDir, placement });
      try {
        expect(engine.info.sharedVocabSize).to.equal(32000);
        const out = await engine.generate({ promptIds: prompt }, { maxTokens: 8, ignoreEos: true });
        expect(out.rows[0]!.ids, placement).to.deep.equal(expected);
      } finally {
        await engine.dispose();
      }
    }
  });

  it('refuses an unknown placement', async () => {
    const err = await Engine.load({ model: backbone, reasoners: [{ model: mathR }], cacheDir, placement: 'lane' as 'lanes' }).catch((e: Error) => e);
    expect((err as Error).message).to.match(/placement must be one of auto, lanes, inline; got "lane"/);
  });

  it('a backbone failure leaves the reasoner lanes usable for the next call', async () => {
    const short = await makeModule({ name: 'short-backbone', kind: 'backbone', seed: 21, edit: (p) => limitContext(p, 8) });
    const engine = await Engine.load({ model: short, reasoners: [{ model: mathR, weight: 0.8 }], cacheDir });
    const fresh = await Engine.load({ model: short, reasoners: [{ model: mathR, weight: 0.8 }], cacheDir });
    try {
      const tooLong = await engine.generate({ promptIds: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] }, { maxTokens: 2 }).catch((e: Error) => e);
      expect((tooLong as Error).name).to.equal('ModelRunError');
      const opts = { maxTokens: 4, ignoreEos: true };
      const after = await engine.generate({ promptIds: [1, 403] }, opts);
      expect(after.rows[0]!.ids).to.deep.equal((await fresh.generate({ promptIds: [1, 403] }, opts)).rows[0]!.ids);
    } finally {
      await Promise.all([engine.dispose(), fresh.dispose()]);
    }
  });

  it('a reasoner failing mid-run fails the generation clearly and leaves no worker behind, in lanes and inline', async () => {
    const fragile = await makeModule({ name: 'fragile-r', seed: 8, edit: (p) => limitContext(p, 10) });
    // A healthy reasoner beside it shares its lane (forced lanes on few cores) or its thread; nothing may hang.
    const steady = await makeModule({ name: 'steady-r', seed: 9 });
    const script = join(testDir('fragile'), 'run.mts');
    const engineUrl = new URL('../src/engine.js', import.meta.url).href;
    await writeFile(
      script,
      `import { Engine } from ${JSON.stringify(engineUrl)};
for (const placement of ['lanes', 'inline']) {
  const engine = await Engine.load({ model: ${JSON.stringify(backbone)}, reasoners: [{ model: ${JSON.stringify(fragile)} }, { model: ${JSON.stringify(steady)} }], cacheDir: ${JSON.stringify(cacheDir)}, placement });
  const err = await engine.generate({ promptIds: [1, 2, 3] }, { maxTokens: 30, ignoreEos: true }).catch((e) => e);
  const again = await engine.generate({ promptIds: [1] }).catch((e) => e);
  console.log(JSON.stringify({ placement: engine.info.placement.kind, name: err.name, message: err.message, again: again.message }));
}
// no dispose: the process must still exit on its own, so no worker may be left running`,
    );
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', script], { timeout: 60_000 });
    const runs = stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(runs.map((r) => r.placement)).to.deep.equal(['lanes', 'inline']);
    for (const run of runs) {
      expect(run.name).to.equal('ReasonerError');
      expect(run.message).to.match(/reasoner fragile-r failed: .*out of/i);
      expect(run.again).to.match(/closed/);
    }
  });

  it('a reasoner failing under concurrent calls closes the engine with its own error, never a released session\'s', async () => {
    // Its graph fails at position 20, which every call below reaches.
    const limited = await makeModule({ name: 'limit20-r', seed: 10, edit: (p) => limitContext(p, 20) });
    const prompts = [[1, 403, 407, 261], [1, 79, 300, 45, 90, 17, 22], [1], [1, 260, 261, 262, 263, 264, 265, 266, 267]];
    // (the close races the calls queued behind the failing one: several rounds give it its chances)
    for (const placement of ['lanes', 'inline'] as const) {
      for (let round = 0; round < 3; round++) {
        const engine = await Engine.load({ model: backbone, reasoners: [{ model: limited, weight: 0.8 }], cacheDir, placement });
        try {
          const calls = await Promise.allSettled(
            prompts.map(async (p) => {
              for await (const _ of engine.stream({ promptIds: p }, { maxTokens: 30, ignoreEos: true }));
            }),
          );
          const errors = calls.map((c) => (c.status === 'rejected' ? (c.reason as Error) : undefined));
          const at = `${placement}, round ${round}`;
          for (const err of errors) {
            expect(err?.name, at).to.be.oneOf(['ReasonerError', 'EngineClosedError']);
            expect(err!.message, at).to.match(/reasoner limit20-r failed: .*out of data bounds/);
            expect(err!.message, at).to.not.match(/disposed/);
          }
          expect(errors.filter((e) => e!.name === 'ReasonerError'), at).to.not.be.empty;
          const later = await engine.generate({ promptIds: [1] }).catch((e: Error) => e);
          expect((later as Error).name, at).to.equal('EngineClosedError');
        } finally {
          await engine.dispose();
        }
      }
    }
  });
});

describe('reasonplug generate --reasoner', function () {
  this.timeout(120_000);
  it('composes from the CLI and reports the reasoners and a trace in JSON', async () => {
    const backbone = await makeModule({ name: 'cli-backbone', kind: 'backbone', seed: 11 });
    const reasoner = await makeModule({ name: 'cli-r', seed: 12, config: storiesConfig({ hiddenSize: 32 }) });
    const cli = fileURLToPath(new URL('../src/cli/reasonplug.ts', import.meta.url));
    const { stdout } = await promisify(execFile)(process.execPath, [
      '--import', 'tsx', cli, 'generate', '--model', backbone, '--reasoner', `${reasoner}=1.5`, '--prompt-ids', '1,403', '--max-tokens', '4', '--trace', '3', '--placement', 'inline', '--json',
    ]);
    const out = JSON.parse(stdout);
    expect(out.reasoners).to.deep.equal([{ path: reasoner, name: 'cli-r', weight: 1.5 }]);
    expect(out.placement).to.deep.equal({ kind: 'inline', lanes: [] });
    expect(out.ids).to.have.length(4);
    expect(out.trace).to.have.length(4);
    expect(out.trace[0].models.map((m: { name: string }) => m.name)).to.deep.equal(['backbone', 'cli-r']);
    expect(out.trace[0].fused[0].id).to.equal(out.ids[0]);
  });
});

describe('per-call reasoner choice', function () {
  this.timeout(60_000);
  it('refuses a reasoner listed twice for one call, and a name that is not loaded', async () => {
    const backbone = await makeModule({ name: 'dup-backbone', kind: 'backbone', seed: 31 });
    const reasoner = await makeModule({ name: 'dup-r', seed: 32, config: storiesConfig({ hiddenSize: 32 }) });
    const engine = await Engine.load({ model: backbone, reasoners: [{ model: reasoner }], cacheDir });
    try {
      const twice = await engine.generate({ promptIds: [1, 2] }, { reasoners: [{ name: 'dup-r' }, { name: 'dup-r', weight: 2 }] }).catch((e: Error) => e);
      expect((twice as Error).message).to.match(/listed twice/);
      const unknown = await engine.generate({ promptIds: [1, 2] }, { reasoners: [{ name: 'nope' }] }).catch((e: Error) => e);
      expect((unknown as Error).message).to.match(/no reasoner named "nope" is loaded \(loaded: dup-r\)/);
      expect((await engine.generate({ promptIds: [1, 2] }, { maxTokens: 2 })).rows[0]!.ids).to.have.length(2);
    } finally {
      await engine.dispose();
    }
  });
});

describe('normalised fusion', function () {
  this.timeout(60_000);
  it("refuses weights whose sum is not above zero: constant ones on the caller's thread, others at the token they reach it", async () => {
    const backbone = await makeModule({ name: 'norm-backbone', kind: 'backbone', seed: 33 });
    const reasoner = await makeModule({ name: 'norm-r', seed: 34, config: storiesConfig({ hiddenSize: 32 }) });
    for (const placement of ['inline', 'lanes'] as const) {
      const engine = await Engine.load({ model: backbone, reasoners: [{ model: reasoner, weight: -2 }], cacheDir, placement });
      try {
        const options = (weight?: WeightSpec) => ({ maxTokens: 4, normalize: true, ...(weight === undefined ? {} : { reasoners: [{ name: 'norm-r', weight }] }) });
        const call = (weight?: WeightSpec) => engine.generate({ promptIds: [1, 2] }, options(weight));
        expect(() => call(-1)).to.throw(CompositionOptionsError, /^cannot normalise composed logits: the weights sum to zero; /);
        // (a negative sum is a negative temperature: the least likely tokens would come first)
        expect(() => call(-1.5)).to.throw(CompositionOptionsError, /the weights sum to -0\.5 \(below zero: dividing by it would invert the distribution\)/);
        const scored = await engine.promptLogprobs({ ids: [[1, 2, 3]] }, { reasoners: [{ name: 'norm-r', weight: -3 }], normalize: true }).catch((e: Error) => e);
        expect(scored).to.be.instanceOf(CompositionOptionsError);
        expect((await call(-0.5)).rows[0]!.ids, placement).to.have.length(4);
        // The loaded weight is known where the call runs, a schedule's at each token: the call fails there.
        const loaded = await call().catch((e: Error) => e);
        expect((loaded as Error).message, placement).to.match(/^cannot normalise composed logits: the weights sum to -1 \(below zero/);
        const tokens: number[] = [];
        const stream = engine.stream({ promptIds: [1, 2] }, options([{ until: 2, weight: 0.5 }, { weight: -1 }]));
        const later = await (async () => {
          for await (const e of stream) tokens.push(e.id);
        })().catch((e: Error) => e);
        expect((later as Error).message, placement).to.equal('cannot normalise composed logits: the weights sum to zero');
        expect(tokens, placement).to.have.length(2);
      } finally {
        await engine.dispose();
      }
    }
  });
});
