import { expect } from 'chai';
import { availableParallelism } from 'node:os';
import { Engine } from '../src/engine.js';
import { DecoderSession, poolSpinsAfterRun } from '../src/runtime/decoder-session.js';
import { prepareDecoder } from '../src/onnx/prepared-cache.js';
import { builtModel, cacheDir, smallConfig } from './support/models.js';
import { makeModule } from './support/modules.js';

describe('onnxruntime pool spinning after a run', () => {
  it('is off when the pool takes every CPU, on when CPUs are left (onnxruntime picks one per physical core)', () => {
    expect(poolSpinsAfterRun(2, 2, 1)).to.equal(false);
    expect(poolSpinsAfterRun(8, 8, 2)).to.equal(false);
    expect(poolSpinsAfterRun(undefined, 2, 1)).to.equal(false);
    expect(poolSpinsAfterRun(undefined, 8, 1)).to.equal(false);
    expect(poolSpinsAfterRun(1, 2, 1)).to.equal(true);
    expect(poolSpinsAfterRun(4, 8, 1)).to.equal(true);
    expect(poolSpinsAfterRun(undefined, 16, 2)).to.equal(true);
  });

  it('a session on every CPU (pool stopping after each run) decodes what a one-thread session decodes', async function () {
    this.timeout(60_000);
    const model = await builtModel('spin-off', { ...smallConfig, numLayers: 2 }, {}, 41);
    const p = await prepareDecoder(model, { lastLogitsOnly: true, logitsFloat32: true, cacheDir });
    const cores = Math.max(2, availableParallelism());
    const [wide, one] = await Promise.all([
      DecoderSession.create({ path: p.preparedPath }, { intraOpThreads: cores }),
      DecoderSession.create({ path: p.preparedPath }, { intraOpThreads: 1 }),
    ]);
    try {
      let a = await wide.prefill([[1, 5, 9], [1, 7]]);
      let b = await one.prefill([[1, 5, 9], [1, 7]]);
      for (let step = 0; step < 6; step++) {
        let worst = 0;
        for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
        expect(worst, `step ${step}`).to.be.below(1e-4);
        const V = wide.vocabSize;
        const ids = [0, 1].map((r) => {
          const row = a.subarray(r * V, (r + 1) * V);
          return row.indexOf(Math.max(...row));
        });
        [a, b] = await Promise.all([wide.step(ids), one.step(ids)]);
      }
    } finally {
      await Promise.all([wide.release(), one.release()]);
    }
  });
});

describe('streamed tokens of concurrent calls (one message per batch step)', function () {
  this.timeout(120_000);
  let engine: Engine;
  before(async () => {
    engine = await Engine.load({ model: await makeModule({ name: 'step-msg-backbone', kind: 'backbone', seed: 43 }), cacheDir, maxBatch: 8 });
  });
  after(() => engine?.dispose());

  it("reach each call in order, equal to its result and to the call alone", async () => {
    const prompts = Array.from({ length: 8 }, (_, k) => [1, 5 + k, 9 + 2 * k].slice(0, 2 + (k % 2)));
    const options = { maxTokens: 12, ignoreEos: true };
    const alone: number[][] = [];
    for (const p of prompts) alone.push((await engine.generate({ promptIds: p }, options)).rows[0]!.ids);
    const got = await Promise.all(
      prompts.map(async (p) => {
        const stream = engine.stream({ promptIds: p }, options);
        const streamed: number[] = [];
        for await (const t of stream) streamed.push(t.id);
        return { streamed, result: (await stream.result).rows[0]!.ids };
      }),
    );
    got.forEach(({ streamed, result }, k) => {
      expect(streamed, `call ${k} streamed`).to.deep.equal(result);
      expect(result, `call ${k} alone`).to.deep.equal(alone[k]);
    });
  });
});
