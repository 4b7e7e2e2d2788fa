import { expect } from 'chai';
import { cp, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Engine } from '../src/engine.js';
import { openDecoder, prepareModel } from '../src/runtime/prepare-model.js';
import { ComposedSource, localReasoners, type ReasonerSlot } from '../src/compose/composed-source.js';
import { ReasonerLane } from '../src/runtime/reasoner-lane.js';
import type { TokenTrace } from '../src/compose/composed-source.js';
import { writeModuleDir } from '../src/modules/module-dir.js';
import { readModel, writeModel, type ModelProto } from '../src/onnx/proto.js';
import { cacheDir, testDir } from './support/models.js';
import { repoRoot } from '../../../test/support/paths.js';
import { expectGreedySteps, logSoftmax64 } from './support/logit-math.js';

const example = (name: string) => join(repoRoot, 'examples', 'modules', name);
const backbone = example('toy-backbone-s');
const math = example('toy-math-reasoner');
/** The toy vocabulary (tokenizer and logits alike). */
const V = 52;
const PROMPT = 'Q:12+7*3=';

/**
 * A copy of toy-cipher-reasoner named `name` that declares `logprobs` (a GenARM-style reasoner), its graph edited by
 * `edit` when given.
 */
async function logprobsCipher(name: string, edit?: (model: ModelProto) => void): Promise<string> {
  const dir = join(testDir('fusion-modes'), name);
  await cp(example('toy-cipher-reasoner'), dir, { recursive: true });
  if (edit) {
    const model = await readModel(join(dir, 'model.onnx'));
    edit(model);
    await writeModel(join(dir, 'model.onnx'), model);
  }
  const { files: _files, schemaVersion: _version, ...manifest } = JSON.parse(await readFile(join(dir, 'reasonplug.json'), 'utf8'));
  const files = { model: 'model.onnx', tokenizer: 'tokenizer.json', tokenizerConfig: 'tokenizer_config.json' };
  await writeModuleDir(dir, { ...manifest, name, composition: { defaultWeight: 1, mode: 'logprobs' }, files });
  return dir;
}

/** A trace entry's candidates (all of them: the trace is asked for the whole vocabulary) as a dense row. */
function dense(top: readonly { id: number; logit: number }[]): Float64Array {
  expect(top).to.have.length(V);
  const row = new Float64Array(V);
  for (const c of top) row[c.id] = c.logit;
  return row;
}

// toy-math-reasoner declares `logits`; its cipher sibling, copied with `logprobs` declared, stands for a GenARM-style
// reasoner loaded beside it.
describe('fusion mode per reasoner', function () {
  this.timeout(120_000);
  let lp: string;

  before(async () => {
    lp = await logprobsCipher('cipher-lp');
  });

  it('fuses each model with its own T, on this thread and in a lane', async () => {
    const opened = await Promise.all([backbone, math, lp].map((m) => openDecoder(m, {}, cacheDir)));
    const refs = await Promise.all([backbone, math, lp].map((m) => openDecoder(m, {}, cacheDir)));
    const lane = await ReasonerLane.open(await Promise.all([math, lp].map((m) => prepareModel(m, cacheDir))), ['math', 'lp'], { runtime: {}, dedicatedCore: true });
    try {
      const [b, r1, r2] = opened.map((o) => o.session);
      const placements: [string, ReasonerSlot[]][] = [
        ['this thread', localReasoners([{ name: 'math', decoder: r1! }, { name: 'lp', decoder: r2! }])],
        ['a lane', [{ name: 'math', group: lane, member: 0 }, { name: 'lp', group: lane, member: 1 }]],
      ];
      const prompt = [1, 20, 21, 22];
      for (const [where, slots] of placements) {
        const source = new ComposedSource(b!, slots, V, {
          active: [{ slot: 0, weight: 0.8, mode: 'logits' }, { slot: 1, weight: 0.6, mode: 'logprobs' }],
          mode: 'logprobs',
          normalize: false,
          traceTop: 0,
        });
        const expected = ([zb, zm, zl]: Float32Array[]) => {
          const [tb, tl] = [logSoftmax64(zb!, V), logSoftmax64(zl!, V)];
          return Float64Array.from({ length: V }, (_, v) => tb[v]! + 0.8 * zm![v]! + 0.6 * tl[v]!);
        };
        await expectGreedySteps(source, refs.map((r) => r.session), prompt, 3, V, expected, where);
      }
    } finally {
      for (const o of [...opened, ...refs]) await o.session.release();
      await lane.release();
    }
  });

  it("an engine fuses each reasoner in its declared mode and the backbone in log-probabilities beside one that declares them, unless the call gives a mode", async () => {
    for (const placement of ['inline', 'lanes'] as const) {
      const engine = await Engine.load({ model: backbone, reasoners: [{ model: math }, { model: lp }], cacheDir, placement });
      try {
        expect(engine.info.mode, placement).to.equal('logprobs');
        expect(engine.info.reasoners.map((r) => r.mode), 'declared').to.deep.equal(['logits', 'logprobs']);
        const reasoners = [{ name: 'toy-math-reasoner', weight: 0.8 }, { name: 'cipher-lp', weight: 0.6 }];
        const cases: [string, 'logits' | undefined, (zb: Float64Array, zm: Float64Array, zl: Float64Array, v: number) => number][] = [
          ['declared modes', undefined, (zb, zm, zl, v) => logSoftmax64(zb, V)[v]! + 0.8 * zm[v]! + 0.6 * logSoftmax64(zl, V)[v]!],
          ['the call\'s mode', 'logits', (zb, zm, zl, v) => zb[v]! + 0.8 * zm[v]! + 0.6 * zl[v]!],
        ];
        for (const [what, mode, fuse] of cases) {
          const r = await engine.generate({ prompt: PROMPT }, { maxTokens: 4, reasoners, trace: V, ...(mode ? { mode } : {}) });
          r.rows[0]!.trace!.forEach((t: TokenTrace, i) => {
            const [zb, zm, zl] = t.models.map((m) => dense(m.top));
            const fused = dense(t.fused);
            for (let v = 0; v < V; v++) {
              const expected = fuse(zb!, zm!, zl!, v);
              expect(fused[v]!, `${placement}, ${what}, token ${i}, id ${v}`).to.be.closeTo(expected, 1e-4 * Math.max(1, Math.abs(expected)));
            }
          });
        }
      } finally {
        await engine.dispose();
      }
    }
  });

  it('gives a call the same tokens whatever order the reasoners were loaded in, and whatever reasoners it leaves out', async () => {
    const options = { maxTokens: 12, repetitionPenalty: 1.5 };
    const load = (models: string[]) => Engine.load({ model: backbone, reasoners: models.map((model) => ({ model })), cacheDir });
    const [ab, ba, alone] = await Promise.all([load([math, lp]), load([lp, math]), load([math])]);
    try {
      const both = await Promise.all([ab, ba].map((e) => e.generate({ prompt: PROMPT }, options)));
      expect(both[1]!.rows[0]!.ids).to.deep.equal(both[0]!.rows[0]!.ids);
      expect([ab.info.mode, ba.info.mode, alone.info.mode]).to.deep.equal(['logprobs', 'logprobs', 'logits']);
      // Loaded, left out of the call: cipher-lp's declared mode has no say in it.
      const mathOnly = { ...options, reasoners: [{ name: 'toy-math-reasoner', weight: 1 }] };
      const [beside, without] = await Promise.all([ba, alone].map((e) => e.generate({ prompt: PROMPT }, mathOnly)));
      expect(beside!.rows[0]!.ids).to.deep.equal(without!.rows[0]!.ids);
    } finally {
      await Promise.all([ab, ba, alone].map((e) => e.dispose()));
    }
  });

  it('gives a mixed call the tokens of its own fusion where the continuous batch would run it (inline reasoners)', async () => {
    const engine = await Engine.load({ model: backbone, reasoners: [{ model: math }, { model: lp }], cacheDir, placement: 'inline' });
    try {
      const options = { maxTokens: 16, repetitionPenalty: 1.5, reasoners: [{ name: 'toy-math-reasoner', weight: 0.8 }, { name: 'cipher-lp', weight: 0.6 }] };
      // A traced call runs alone, through the composed source checked above.
      const traced = await engine.generate({ prompt: PROMPT }, { ...options, trace: 1 });
      const plain = await engine.generate({ prompt: PROMPT }, options);
      expect(plain.rows[0]!.ids).to.deep.equal(traced.rows[0]!.ids);
      // (with these weights and the penalty, every model fused in one mode, either, writes another reply)
      for (const mode of ['logits', 'logprobs'] as const) {
        const single = await engine.generate({ prompt: PROMPT }, { ...options, mode });
        expect(single.rows[0]!.ids, mode).to.not.deep.equal(plain.rows[0]!.ids);
      }
    } finally {
      await engine.dispose();
    }
  });

  it('runs a mixed call of several prompts in the continuous batch, each row as it runs alone, where a model runs one row at a time', async () => {
    // (its inputs fix the batch at one row: the continuous batch runs its rows apart, each with its models' own T)
    const lone = await logprobsCipher('cipher-lp-one-row', (model) => {
      for (const input of model.graph!.input!) input.type!.tensorType!.shape!.dim![0] = { dimValue: 1 };
    });
    const engine = await Engine.load({ model: backbone, reasoners: [{ model: math }, { model: lone }], cacheDir, placement: 'inline' });
    try {
      const options = { maxTokens: 8, repetitionPenalty: 1.5, reasoners: [{ name: 'toy-math-reasoner', weight: 0.8 }, { name: 'cipher-lp-one-row', weight: 0.6 }] };
      const prompts = [PROMPT, 'Q:3*4+5='];
      const together = await engine.generate({ prompt: prompts }, options);
      for (const [r, prompt] of prompts.entries()) {
        // A traced call runs alone, through the composed source.
        const alone = await engine.generate({ prompt }, { ...options, trace: 1 });
        expect(together.rows[r]!.ids, prompt).to.deep.equal(alone.rows[0]!.ids);
      }
    } finally {
      await engine.dispose();
    }
  });
});
