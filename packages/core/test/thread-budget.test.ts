import { expect } from 'chai';
import { assignLanes, partitionThreads } from '../src/runtime/thread-budget.js';

describe('thread budget', () => {
  it('gives reasoners one thread each, one lane per four cores, and the backbone the cores left', () => {
    expect(partitionThreads({}, 3, 2)).to.deep.equal({ backbone: { intraOpThreads: 1 }, reasoner: { intraOpThreads: 1 }, lanes: 1, dedicatedCores: true });
    expect(partitionThreads({}, 3, 8)).to.deep.include({ backbone: { intraOpThreads: 6 }, lanes: 2, dedicatedCores: true });
    expect(partitionThreads({}, 3, 16)).to.deep.include({ backbone: { intraOpThreads: 13 }, lanes: 3 });
    expect(partitionThreads({ device: 'cpu' }, 0, 16)).to.deep.equal({ backbone: { device: 'cpu' }, reasoner: { device: 'cpu' }, lanes: 0, dedicatedCores: false });
  });

  it('on one core the lane shares it with the backbone, so nobody spins', () => {
    expect(partitionThreads({}, 2, 1)).to.deep.include({ backbone: { intraOpThreads: 1 }, lanes: 1, dedicatedCores: false });
  });

  it("keeps a user's explicit thread count for every model and gives every reasoner a lane", () => {
    expect(partitionThreads({ intraOpThreads: 4 }, 3, 2)).to.deep.equal({
      backbone: { intraOpThreads: 4 },
      reasoner: { intraOpThreads: 4 },
      lanes: 3,
      dedicatedCores: false,
    });
  });

  it('deals reasoners to lanes in turn', () => {
    expect(assignLanes(3, 1)).to.deep.equal([[0, 1, 2]]);
    expect(assignLanes(5, 2)).to.deep.equal([[0, 2, 4], [1, 3]]);
    expect(assignLanes(2, 2)).to.deep.equal([[0], [1]]);
  });
});
