/**
 * The shared-memory handshake between the generation worker and a reasoner lane: whether the lane sleeps between
 * requests or, with a core of its own, anticipates them (sleeping on a timer, then spinning, while the client wakes it
 * only when it finds it asleep), no request is missed. A missed wake-up would not hang, since the lane sleeps in
 * 100 ms slices, but would cost its step that long: that is what the round trips are checked for.
 */
import { expect } from 'chai';
import { ChannelClient, RequestKind, createChannelBuffer } from '../src/runtime/lane-channel.js';
import { workerAt } from '../src/runtime/spawn-worker.js';

/** Busy for `ms` (the backbone's run, which blocks its thread). */
const busy = (ms: number) => {
  for (const until = performance.now() + ms; performance.now() < until; );
};

describe('lane channel', function () {
  this.timeout(60_000);

  for (const anticipate of [false, true]) {
    it(`answers every request of a changing rhythm without waiting out a sleep slice (${anticipate ? 'anticipating' : 'sleeping'} lane)`, async () => {
      const channel = createChannelBuffer();
      const worker = workerAt(new URL('./support/lane-echo-worker.ts', import.meta.url), { channel, anticipate });
      try {
        const client = new ChannelClient(channel, 1);
        const trips: number[] = [];
        // Steps of a steady rhythm, then ones that come early, late or after a pause between calls.
        const gaps = [...Array<number>(150).fill(1), ...Array.from({ length: 150 }, (_, i) => [0, 0.2, 3, 1, 60][i % 5]!)];
        for (const gap of gaps) {
          busy(gap);
          const t0 = performance.now();
          client.request(RequestKind.Step, 1);
          // (bounded: a lane that failed to start never answers)
          if (!client.spinForAnswer()) for (let i = 0; !client.waitSlice(5); i++) if (i === 400) throw new Error('the lane did not answer within 2 s');
          trips.push(performance.now() - t0);
        }
        const slow = trips.filter((t) => t >= 90);
        expect(slow.length, `round trips of 90 ms or more: ${slow.map((t) => t.toFixed(0)).join(', ')}`).to.be.below(3);
      } finally {
        await worker.terminate();
      }
    });
  }
});
