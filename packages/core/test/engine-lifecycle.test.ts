import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { getEventListeners, once } from 'node:events';
import { Engine, EngineClosedError, PromptError, QueueFullError } from '../src/index.js';
import { builtModel, cacheDir, smallConfig } from './support/models.js';

/** Wide enough that a run takes milliseconds: a generation spends nearly all its time inside onnxruntime. */
const slowConfig = { ...smallConfig, hiddenSize: 128, numLayers: 4, numHeads: 4, numKvHeads: 4, intermediateSize: 256 };
const longPrompt = Array.from({ length: 1500 }, (_, i) => 1 + ((i * 7) % 90));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('engine lifecycle', function () {
  this.timeout(120_000);

  it('a script that exits or throws during a generation ends with its own code, not an abort inside onnxruntime', async () => {
    const model = await builtModel('lifecycle-slow', slowConfig);
    const engineUrl = new URL('../src/engine.ts', import.meta.url).href;
    // (ended mid-run 12 times in 12 without the exit's wait for the run in flight)
    for (const [how, expected] of [['process.exit(3)', 3], ["throw new Error('script failed')", 1]] as const) {
      for (let i = 0; i < 3; i++) {
        const script = `const { Engine } = await import(${JSON.stringify(engineUrl)});
const engine = await Engine.load({ model: ${JSON.stringify(model)}, cacheDir: ${JSON.stringify(cacheDir)} });
engine.generate({ promptIds: ${JSON.stringify(longPrompt)} }, { maxTokens: 2000, ignoreEos: true }).catch(() => {});
await new Promise((r) => setTimeout(r, ${20 + i * 30}));
${how};`;
        const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'ignore', 'pipe'] });
        let stderr = '';
        child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        const killer = setTimeout(() => child.kill('SIGKILL'), 60_000);
        const [code, signal] = (await once(child, 'exit')) as [number | null, string | null];
        clearTimeout(killer);
        expect({ code, signal, napi: stderr.includes('Napi::Error') }, `${how} #${i}: ${stderr}`).to.deep.equal({ code: expected, signal: null, napi: false });
      }
    }
  });

  it('a queued call aborted by its caller settles at once, without running, and frees its place in maxQueue', async () => {
    const engine = await Engine.load({ model: await builtModel('lifecycle-slow', slowConfig), cacheDir, maxBatch: 1, maxQueue: 1 });
    const stopBlocker = new AbortController();
    try {
      let blockerDone = false;
      const blocker = engine.generate({ promptIds: [1, 2, 3] }, { maxTokens: 5000, ignoreEos: true, signal: stopBlocker.signal }).finally(() => (blockerDone = true));
      await sleep(50);
      const caller = new AbortController();
      const queued = engine.generate({ promptIds: [4, 5] }, { maxTokens: 10, signal: caller.signal });
      await sleep(20);
      expect((await engine.stats()).waiting).to.equal(1);
      expect(await engine.generate({ promptIds: [6] }, { maxTokens: 1 }).catch((e: Error) => e)).to.be.instanceOf(QueueFullError);
      caller.abort();
      // (it waited for the whole blocker before: raced against the blocker's end, not a clock, which a loaded machine slows)
      const first = await Promise.race([queued.then((r) => r), blocker.then(() => 'still waiting' as const)]);
      expect(first, 'the aborted call settled').to.not.equal('still waiting');
      expect(blockerDone, 'settled while the blocker runs').to.equal(false);
      if (first === 'still waiting') return;
      expect(first.rows.map((r) => [r.finishReason, r.ids.length])).to.deep.equal([['abort', 0]]);
      expect((await engine.stats()).waiting).to.equal(0);
      // its place is free again: the next call waits instead of being refused
      const next = new AbortController();
      const after = engine.generate({ promptIds: [6] }, { maxTokens: 1, signal: next.signal });
      await sleep(20);
      expect((await engine.stats()).waiting).to.equal(1);
      next.abort();
      stopBlocker.abort();
      expect((await after).rows[0]!.finishReason).to.equal('abort');
      expect((await blocker).rows[0]!.finishReason).to.equal('abort');
    } finally {
      stopBlocker.abort();
      await engine.dispose();
    }
  });

  it('a call aborted while it waits behind a call running alone (traced) settles at once, without running', async () => {
    const engine = await Engine.load({ model: await builtModel('lifecycle-slow', slowConfig), cacheDir });
    const stopLong = new AbortController();
    try {
      let longDone = false;
      const long = engine.generate({ promptIds: [1, 2, 3] }, { maxTokens: 5000, ignoreEos: true, trace: 2, signal: stopLong.signal }).finally(() => (longDone = true));
      await sleep(50);
      const caller = new AbortController();
      const traced = engine.generate({ promptIds: [4, 5] }, { maxTokens: 10, trace: 2, signal: caller.signal });
      const batched = engine.generate({ promptIds: [4, 5] }, { maxTokens: 10, signal: caller.signal });
      await sleep(20);
      caller.abort();
      const settled = await Promise.race([Promise.all([traced, batched]), long.then(() => 'still waiting' as const)]);
      expect(settled, 'the aborted calls settled').to.not.equal('still waiting');
      expect(longDone, 'settled while the traced call runs').to.equal(false);
      if (settled === 'still waiting') return;
      for (const r of settled) expect(r.rows.map((row) => [row.finishReason, row.ids.length])).to.deep.equal([['abort', 0]]);
      // a plain call alone behind it waits in the queue (it was admitted beside the running call, and settled only
      // when that ended), and settles at once when aborted
      const alone = new AbortController();
      const plain = engine.generate({ promptIds: [4, 5] }, { maxTokens: 10, signal: alone.signal });
      await sleep(20);
      expect((await engine.stats()).waiting).to.equal(1);
      alone.abort();
      const plainSettled = await Promise.race([plain, long.then(() => 'still waiting' as const)]);
      expect(plainSettled, 'the plain call settled').to.not.equal('still waiting');
      expect(longDone).to.equal(false);
      stopLong.abort();
      expect((await long).rows[0]!.finishReason).to.equal('abort');
    } finally {
      stopLong.abort();
      await engine.dispose();
    }
  });

  it('one signal shared by many streamed calls (an app-wide shutdown) stops the call in flight and keeps nothing of the calls that ended', async () => {
    const model = await builtModel('lifecycle-slow', slowConfig);
    const engine = await Engine.load({ model, cacheDir });
    try {
      const shutdown = new AbortController();
      for (let i = 0; i < 50; i++) {
        const stream = engine.stream({ promptIds: [1 + (i % 50)] }, { maxTokens: 1, signal: shutdown.signal });
        for await (const _ of stream);
        expect((await stream.result).rows[0]!.finishReason).to.not.equal('abort');
      }
      // (AbortSignal.any left an entry on the shared signal per call, for good; a forwarding listener goes with its call)
      expect(getEventListeners(shutdown.signal, 'abort')).to.have.length(0);
      const running = engine.stream({ promptIds: [1, 2, 3] }, { maxTokens: 5000, ignoreEos: true, signal: shutdown.signal });
      expect(getEventListeners(shutdown.signal, 'abort')).to.have.length(1);
      // (read to the end: leaving the loop would stop it too)
      for await (const _ of running) if (!shutdown.signal.aborted) shutdown.abort();
      expect((await running.result).rows[0]!.finishReason).to.equal('abort');
      const late = await engine.generate({ promptIds: [4] }, { maxTokens: 3, signal: shutdown.signal });
      expect(late.rows[0]!.finishReason).to.equal('abort');
    } finally {
      await engine.dispose();
    }
  });

  it('dispose: every call resolves once the worker is gone; pending and later calls reject with EngineClosedError', async () => {
    const engine = await Engine.load({ model: await builtModel('lifecycle-slow', slowConfig), cacheDir });
    const pending = engine.generate({ promptIds: longPrompt }, { maxTokens: 2000, ignoreEos: true }).catch((e: Error) => e);
    await sleep(30);
    const order: string[] = [];
    const first = engine.dispose().then(() => order.push('first'));
    await engine.dispose();
    // (the second call resolved at once before, while the worker still ran)
    expect(order, 'the second dispose() resolved after the first').to.deep.equal(['first']);
    await first;
    const err = await pending;
    expect(err).to.be.instanceOf(EngineClosedError);
    expect(err).to.include({ name: 'EngineClosedError', message: 'the engine was disposed' });
    const later = await engine.generate({ promptIds: [1] }).catch((e: Error) => e);
    expect(later).to.be.instanceOf(EngineClosedError);
    expect((later as Error).message).to.equal('the engine is closed (disposed, or a reasoner failed); load it again');
    expect(await engine.stats().catch((e: Error) => e)).to.be.instanceOf(EngineClosedError);
  });

  it('refuses empty messages and promptIds lists on the caller thread, by name', async () => {
    const engine = await Engine.load({ model: await builtModel('lifecycle-slow', slowConfig), cacheDir });
    try {
      expect(() => engine.generate({ messages: [], chatTemplate: '{% for m in messages %}{{ m.content }}{% endfor %}' })).to.throw(PromptError, 'messages is empty: give at least one message');
      expect(() => engine.stream({ promptIds: [] })).to.throw(PromptError, 'promptIds is empty: give at least one token id');
      expect((await engine.generate({ promptIds: [1] }, { maxTokens: 2 })).rows[0]!.ids).to.have.length(2);
    } finally {
      await engine.dispose();
    }
  });
});
