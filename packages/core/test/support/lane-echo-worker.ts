/** A lane that answers every request at once: the channel's handshake alone, for lane-channel.test.ts. */
import { workerData } from 'node:worker_threads';
import { ChannelServer } from '../../src/runtime/lane-channel.js';

const { channel, anticipate } = workerData as { channel: SharedArrayBuffer; anticipate: boolean };
const server = new ChannelServer(channel, anticipate);
for (;;) {
  server.next();
  server.answer();
}
