import { expect } from 'chai';
import { existsSync, readFileSync } from 'node:fs';
import { dealLanes, planThreads, validatePlacement, type StepFacts } from '../src/runtime/thread-budget.js';
import { graphFacts } from '../src/onnx/graph-facts.js';
import { buildLlamaModel, randomLlamaWeights } from '../src/onnx/llama-builder.js';
import type { LlamaConfig } from '../src/onnx/llama-spec.js';
import { quantizeGraph } from '../src/onnx/quantize/quantize-graph.js';
import { testDir } from './support/models.js';
import { threadsPerCore } from '../src/runtime/cpu-topology.js';

/** The composition benchmark's steps (graph facts of its fp32 models): a 24M-parameter backbone and a reasoner 1/8 its size. */
const backbone = { bytes: 60_767_108, nodes: 304 };
const reasoner = { bytes: 6_501_120, nodes: 214 };
/** The benchmark's backbone and reasoner shapes (bench/support/models.ts, bench/compose.ts). */
const LLAMA_24M: LlamaConfig = { vocabSize: 32000, hiddenSize: 288, numLayers: 6, numHeads: 6, intermediateSize: 768 };
const REASONER_3M: LlamaConfig = { vocabSize: 32000, hiddenSize: 44, numLayers: 4, numHeads: 2, intermediateSize: 352 };

describe('thread budget', () => {
  it('puts one and three reasoners in a lane beside the backbone on two cores (measured faster than inline)', () => {
    // bench:compose, fp32 (2026-12-03 23:34): + 1 in a lane 1.06x the backbone alone, inline 1.32x; + 3 1.37x / 1.85x.
    expect(planThreads({ runtime: {}, backbone, reasoners: [reasoner], cores: 2, threadsPerCore: 1 })).to.deep.include({ placement: 'lanes', lanes: [[0]] });
    expect(planThreads({ runtime: {}, backbone, reasoners: [reasoner, reasoner, reasoner], cores: 2, threadsPerCore: 1 })).to.deep.equal({
      placement: 'lanes',
      backbone: { intraOpThreads: 1 },
      reasoner: { intraOpThreads: 1 },
      lanes: [[0, 1, 2]],
      dedicatedCores: true,
    });
  });

  describe('on the graph facts of 4-bit models', function () {
    this.timeout(120_000);
    let q4: { backbone: StepFacts; reasoner: StepFacts };
    before(() => {
      // The composition benchmark's models after `reasonplug quantize` (4 bits, block 32), built here.
      const facts = (config: LlamaConfig, name: string): StepFacts => {
        const { stepBytes, stepNodes } = graphFacts(quantizeGraph(buildLlamaModel(config, randomLlamaWeights(config, 1)), name, testDir(`plan-${name}`)).model);
        return { bytes: stepBytes, nodes: stepNodes };
      };
      q4 = { backbone: facts(LLAMA_24M, 'backbone'), reasoner: facts(REASONER_3M, 'reasoner') };
    });

    it('reads a step of a 4-bit reasoner as mostly operators, not bytes', () => {
      // 2.6 MB packed against the backbone's 14.5 MB, but as many operators as two thirds of the backbone's.
      expect(q4.reasoner.bytes / q4.backbone.bytes).to.be.below(0.2);
      expect(q4.reasoner.nodes / q4.backbone.nodes).to.be.above(0.65);
    });

    it('puts one and three 4-bit reasoners in a lane on two cores (measured faster than inline)', () => {
      // Measured 2026-12-04 10:35 (engine, 5 rounds, load ~1): + 1 in a lane 1.09x the 4-bit backbone alone,
      // inline 1.31x; + 3 in a lane 1.37x, inline 2.03x.
      const { backbone: b, reasoner: r } = q4;
      expect(planThreads({ runtime: {}, backbone: b, reasoners: [r], cores: 2, threadsPerCore: 1 })).to.deep.include({ placement: 'lanes', lanes: [[0]] });
      expect(planThreads({ runtime: {}, backbone: b, reasoners: [r, r, r], cores: 2, threadsPerCore: 1 })).to.deep.include({
        placement: 'lanes',
        backbone: { intraOpThreads: 1 },
        lanes: [[0, 1, 2]],
      });
    });

    it('gives three 4-bit reasoners two lanes once the backbone has cores to spare', () => {
      // 4 cores: one lane of three takes longer than the backbone's step on three threads; two lanes about match it on two.
      expect(planThreads({ runtime: {}, backbone: q4.backbone, reasoners: [q4.reasoner, q4.reasoner, q4.reasoner], cores: 4, threadsPerCore: 1 })).to.deep.include({
        placement: 'lanes',
        backbone: { intraOpThreads: 2 },
        lanes: [[0, 2], [1]],
      });
    });
  });

  it('balances the backbone against the heaviest lane on more cores', () => {
    // 8 cores: one lane of three would outlast the backbone's 7 threads; two lanes leave it 6, and neither outlasts it.
    expect(planThreads({ runtime: {}, backbone, reasoners: [reasoner, reasoner, reasoner], cores: 8, threadsPerCore: 1 })).to.deep.include({
      placement: 'lanes',
      backbone: { intraOpThreads: 6 },
      lanes: [[0, 2], [1]],
    });
    // 16 cores: a lane of two still finishes before the backbone's step on 14 threads, which a 15th would not
    // shorten by much (its operators' fixed costs do not divide among threads).
    expect(planThreads({ runtime: {}, backbone, reasoners: [reasoner, reasoner, reasoner], cores: 16, threadsPerCore: 1 })).to.deep.include({
      placement: 'lanes',
      backbone: { intraOpThreads: 14 },
      lanes: [[0, 2], [1]],
    });
    // 4 cores, one reasoner: giving up one core of four costs the backbone less than running the reasoner after it.
    expect(planThreads({ runtime: {}, backbone, reasoners: [reasoner], cores: 4, threadsPerCore: 1 })).to.deep.include({ placement: 'lanes', backbone: { intraOpThreads: 3 } });
  });

  it('with SMT, keeps the backbone at one thread per physical core and puts lanes on the second threads', () => {
    // 8 cores × 2 threads: the backbone keeps the 8 threads it has alone, so lanes cost it nothing and win.
    expect(planThreads({ runtime: {}, backbone, reasoners: [reasoner], cores: 16, threadsPerCore: 2 })).to.deep.include({
      placement: 'lanes',
      backbone: { intraOpThreads: 8 },
      lanes: [[0]],
      dedicatedCores: true,
    });
    expect(planThreads({ runtime: {}, backbone, reasoners: [reasoner, reasoner, reasoner], cores: 4, threadsPerCore: 2 })).to.deep.include({
      placement: 'lanes',
      backbone: { intraOpThreads: 2 },
    });
  });

  it('runs reasoners inline on one core, where a lane could only time-slice with the backbone', () => {
    expect(planThreads({ runtime: {}, backbone, reasoners: [reasoner, reasoner], cores: 1, threadsPerCore: 1 })).to.deep.include({ placement: 'inline' });
    // asked for lanes anyway: one lane sharing the core, so nobody spins
    expect(planThreads({ runtime: {}, placement: 'lanes', backbone, reasoners: [reasoner, reasoner], cores: 1, threadsPerCore: 1 })).to.deep.include({
      backbone: { intraOpThreads: 1 },
      lanes: [[0, 1]],
      dedicatedCores: false,
    });
  });

  it('follows the placement a user asks for', () => {
    expect(planThreads({ runtime: { device: 'cpu' }, placement: 'inline', backbone, reasoners: [reasoner, reasoner, reasoner], cores: 16, threadsPerCore: 1 })).to.deep.equal({
      placement: 'inline',
      backbone: { device: 'cpu' },
      reasoner: { device: 'cpu' },
      lanes: [],
      dedicatedCores: false,
    });
    expect(planThreads({ runtime: {}, placement: 'lanes', backbone, reasoners: [reasoner], cores: 2, threadsPerCore: 1 })).to.deep.include({ placement: 'lanes', lanes: [[0]] });
    expect(() => validatePlacement('lane')).to.throw(/placement must be one of auto, lanes, inline; got "lane"/);
  });

  it('gives every reasoner a lane of its own on an accelerator, whatever the cores', () => {
    expect(planThreads({ runtime: { device: 'cuda' }, backbone, reasoners: [reasoner, reasoner], cores: 2, threadsPerCore: 1 })).to.deep.equal({
      placement: 'lanes',
      backbone: { device: 'cuda' },
      reasoner: { device: 'cuda' },
      lanes: [[0], [1]],
      dedicatedCores: false,
    });
    expect(planThreads({ runtime: { device: 'cuda' }, placement: 'inline', backbone, reasoners: [reasoner], cores: 2, threadsPerCore: 1 })).to.deep.include({ placement: 'inline' });
  });

  it("keeps a user's explicit thread count for every model and gives every reasoner a lane", () => {
    expect(planThreads({ runtime: { intraOpThreads: 4 }, backbone, reasoners: [reasoner, reasoner, reasoner], cores: 2, threadsPerCore: 1 })).to.deep.equal({
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
