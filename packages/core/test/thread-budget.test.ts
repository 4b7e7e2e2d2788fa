import { expect } from 'chai';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { Lanes } from '../src/runtime/lanes.js';
import { partitionThreads } from '../src/runtime/thread-budget.js';

/**
 * A worker that runs `rounds` busy steps of `ms` each through the shared lanes and records, in the shared
 * counters, how many steps were inside a lane at once (index 0: now, index 1: the most seen).
 */
function laneWorker(lanes: SharedArrayBuffer, counters: SharedArrayBuffer, rounds: number, ms: number): Promise<void> {
  const tsxApi = pathToFileURL(join(dirname(createRequire(import.meta.url).resolve('tsx/package.json')), 'dist/esm/api/index.mjs')).href;
  const lanesUrl = new URL('../src/runtime/lanes.ts', import.meta.url).href;
  const code = `
    const { workerData } = await import('node:worker_threads');
    (await import(${JSON.stringify(tsxApi)})).register();
    const { Lanes } = await import(${JSON.stringify(lanesUrl)});
    const lanes = Lanes.attach(workerData.lanes);
    const c = new Int32Array(workerData.counters);
    for (let i = 0; i < workerData.rounds; i++) {
      await lanes.run(async () => {
        const now = Atomics.add(c, 0, 1) + 1;
        for (let seen = Atomics.load(c, 1); now > seen; seen = Atomics.load(c, 1)) Atomics.compareExchange(c, 1, seen, now);
        const end = performance.now() + workerData.ms;
        while (performance.now() < end);
        Atomics.sub(c, 0, 1);
      });
    }`;
  const worker = new Worker(`import(${JSON.stringify(`data:text/javascript,${encodeURIComponent(code)}`)})`, {
    eval: true,
    workerData: { lanes, counters, rounds, ms },
  });
  return new Promise((resolve, reject) => {
    worker.once('error', reject);
    worker.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`lane worker exited with ${code}`))));
  });
}

async function mostAtOnce(lanes: number, workers: number): Promise<number> {
  const shared = Lanes.create(lanes);
  const counters = new SharedArrayBuffer(8);
  await Promise.all(Array.from({ length: workers }, () => laneWorker(shared.buffer, counters, 6, 4)));
  return new Int32Array(counters)[1]!;
}

describe('thread budget', () => {
  it('gives reasoners one thread each, one lane per four cores, and the backbone the cores left', () => {
    expect(partitionThreads({}, 3, 2)).to.deep.equal({ backbone: { intraOpThreads: 1 }, reasoner: { intraOpThreads: 1 }, reasonerLanes: 1 });
    expect(partitionThreads({}, 3, 8)).to.deep.include({ backbone: { intraOpThreads: 6 }, reasonerLanes: 2 });
    expect(partitionThreads({}, 3, 16)).to.deep.include({ backbone: { intraOpThreads: 13 }, reasonerLanes: 3 });
    expect(partitionThreads({ device: 'cpu' }, 0, 16)).to.deep.equal({ backbone: { device: 'cpu' }, reasoner: { device: 'cpu' }, reasonerLanes: 1 });
  });

  it("keeps a user's explicit thread count for every model and lets all reasoners run at once", () => {
    expect(partitionThreads({ intraOpThreads: 4 }, 3, 2)).to.deep.equal({
      backbone: { intraOpThreads: 4 },
      reasoner: { intraOpThreads: 4 },
      reasonerLanes: 3,
    });
  });

  it('lanes let at most N workers run a step at once, and every step runs', async function () {
    this.timeout(30_000);
    expect(await mostAtOnce(1, 3)).to.equal(1);
    expect(await mostAtOnce(2, 4)).to.be.within(1, 2);
  });

  it('refuses a lane count that is not a positive integer', () => {
    expect(() => Lanes.create(0)).to.throw(RangeError, /positive integer/);
  });
});
