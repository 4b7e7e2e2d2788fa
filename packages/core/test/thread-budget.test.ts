import { expect } from 'chai';
import { existsSync, readFileSync } from 'node:fs';
import { dealLanes, planThreads, validatePlacement } from '../src/runtime/thread-budget.js';
import { threadsPerCore } from '../src/runtime/cpu-topology.js';

const MB = 1024 * 1024;
/** The composition benchmark's sizes: a 24M-parameter backbone and reasoners 1/8 its size, fp32. */
const backboneBytes = 97.6 * MB;
const reasoner = 12.1 * MB;

describe('thread budget', () => {
  it('runs one small reasoner inline on two cores, and three in a lane that leaves the backbone one core', () => {
    expect(planThreads({ runtime: {}, backboneBytes, reasonerBytes: [reasoner], cores: 2, threadsPerCore: 1 })).to.deep.include({ placement: 'inline', lanes: [] });
    expect(planThreads({ runtime: {}, backboneBytes, reasonerBytes: [reasoner, reasoner, reasoner], cores: 2, threadsPerCore: 1 })).to.deep.equal({
      placement: 'lanes',
      backbone: { intraOpThreads: 1 },
      reasoner: { intraOpThreads: 1 },
      lanes: [[0, 1, 2]],
      dedicatedCores: true,
    });
  });

  it('balances the backbone against the heaviest lane on more cores', () => {
    // 8 cores: one lane of three would outlast the backbone's 7 threads; two lanes leave it 6, and neither outlasts it.
    expect(planThreads({ runtime: {}, backboneBytes, reasonerBytes: [reasoner, reasoner, reasoner], cores: 8, threadsPerCore: 1 })).to.deep.include({
      placement: 'lanes',
      backbone: { intraOpThreads: 6 },
      lanes: [[0, 2], [1]],
    });
    // 16 cores: a lane each costs the backbone little (13 threads), less than a lane of two would take.
    expect(planThreads({ runtime: {}, backboneBytes, reasonerBytes: [reasoner, reasoner, reasoner], cores: 16, threadsPerCore: 1 })).to.deep.include({
      placement: 'lanes',
      backbone: { intraOpThreads: 13 },
      lanes: [[0], [1], [2]],
    });
    // 4 cores, one reasoner: giving up one core of four costs the backbone less than running the reasoner after it.
    expect(planThreads({ runtime: {}, backboneBytes, reasonerBytes: [reasoner], cores: 4, threadsPerCore: 1 })).to.deep.include({ placement: 'lanes', backbone: { intraOpThreads: 3 } });
  });

  it('with SMT, keeps the backbone at one thread per physical core and puts lanes on the second threads', () => {
    // 8 cores × 2 threads: the backbone keeps the 8 threads it has alone, so lanes cost it nothing and win.
    expect(planThreads({ runtime: {}, backboneBytes, reasonerBytes: [reasoner], cores: 16, threadsPerCore: 2 })).to.deep.include({
      placement: 'lanes',
      backbone: { intraOpThreads: 8 },
      lanes: [[0]],
      dedicatedCores: true,
    });
    expect(planThreads({ runtime: {}, backboneBytes, reasonerBytes: [reasoner, reasoner, reasoner], cores: 4, threadsPerCore: 2 })).to.deep.include({
      placement: 'lanes',
      backbone: { intraOpThreads: 2 },
    });
  });

  it('runs reasoners inline on one core, where a lane could only time-slice with the backbone', () => {
    expect(planThreads({ runtime: {}, backboneBytes, reasonerBytes: [reasoner, reasoner], cores: 1, threadsPerCore: 1 })).to.deep.include({ placement: 'inline' });
    // asked for lanes anyway: one lane sharing the core, so nobody spins
    expect(planThreads({ runtime: {}, placement: 'lanes', backboneBytes, reasonerBytes: [reasoner, reasoner], cores: 1, threadsPerCore: 1 })).to.deep.include({
      backbone: { intraOpThreads: 1 },
      lanes: [[0, 1]],
      dedicatedCores: false,
    });
  });

  it('follows the placement a user asks for', () => {
    expect(planThreads({ runtime: { device: 'cpu' }, placement: 'inline', backboneBytes, reasonerBytes: [reasoner, reasoner, reasoner], cores: 16, threadsPerCore: 1 })).to.deep.equal({
      placement: 'inline',
      backbone: { device: 'cpu' },
      reasoner: { device: 'cpu' },
      lanes: [],
      dedicatedCores: false,
    });
    expect(planThreads({ runtime: {}, placement: 'lanes', backboneBytes, reasonerBytes: [reasoner], cores: 2, threadsPerCore: 1 })).to.deep.include({ placement: 'lanes', lanes: [[0]] });
    expect(() => validatePlacement('lane')).to.throw(/placement must be one of auto, lanes, inline; got "lane"/);
  });

  it('gives every reasoner a lane of its own on an accelerator, whatever the cores', () => {
    expect(planThreads({ runtime: { device: 'cuda' }, backboneBytes, reasonerBytes: [reasoner, reasoner], cores: 2, threadsPerCore: 1 })).to.deep.equal({
      placement: 'lanes',
      backbone: { device: 'cuda' },
      reasoner: { device: 'cuda' },
      lanes: [[0], [1]],
      dedicatedCores: false,
    });
    expect(planThreads({ runtime: { device: 'cuda' }, placement: 'inline', backboneBytes, reasonerBytes: [reasoner], cores: 2, threadsPerCore: 1 })).to.deep.include({ placement: 'inline' });
  });

  it("keeps a user's explicit thread count for every model and gives every reasoner a lane", () => {
    expect(planThreads({ runtime: { intraOpThreads: 4 }, backboneBytes, reasonerBytes: [reasoner, reasoner, reasoner], cores: 2, threadsPerCore: 1 })).to.deep.equal({
      placement: 'lanes',
      backbone: { intraOpThreads: 4 },
      reasoner: { intraOpThreads: 4 },
      lanes: [[0], [1], [2]],
      dedicatedCores: false,
    });
  });

  it('deals the heaviest reasoners first, each to the lightest lane', () => {
    expect(dealLanes([1, 1, 1], 1)).to.deep.equal([[0, 1, 2]]);
    expect(dealLanes([1, 1, 1, 1, 1], 2)).to.deep.equal([[0, 2, 4], [1, 3]]);
    expect(dealLanes([1, 5, 1, 1], 2)).to.deep.equal([[1], [0, 2, 3]]);
  });

  it("reads the hardware threads per core (on Linux: as many as cpu0's thread siblings)", () => {
    const siblings = '/sys/devices/system/cpu/cpu0/topology/thread_siblings_list';
    const expected = existsSync(siblings)
      ? readFileSync(siblings, 'utf8')
          .trim()
          .split(',')
          .reduce((n, part) => {
            const [a, b] = part.split('-').map(Number);
            return n + (b === undefined ? 1 : b - a! + 1);
          }, 0)
      : 1;
    expect(threadsPerCore()).to.equal(expected);
  });
});
