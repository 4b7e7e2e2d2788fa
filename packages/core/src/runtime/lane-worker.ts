/**
 * Worker-thread entry for a reasoner lane: holds one or more reasoner sessions (each with its own KV cache),
 * runs them one after another on this thread at every step, and adds each one's weighted logits to the
 * call's shared sum as soon as it has run. Requests arrive through the shared-memory channel; only the start
 * of a call carries a message (its prompts and buffers), read synchronously.
 */
import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import { openReasoner, type PreparedModel, type ReasonerInfo } from './open-decoder.js';
import { toWire, type WireError } from './spawn-worker.js';
import type { DecoderSession, RuntimeOptions } from './decoder-session.js';
import { ChannelServer, RequestKind } from './lane-channel.js';
import { addMemberLogits, type GroupCall } from '../compose/reasoner-group.js';

/** What the lane is started with. */
export interface LaneWorkerConfig {
  /** Located and prepared by the generation worker (their sizes planned the lanes). */
  models: PreparedModel[];
  runtime: RuntimeOptions;
  /** The shared block of the request/answer channel. */
  channel: SharedArrayBuffer;
  /** The lane has a core of its own: it may spin for a request it expects soon. */
  dedicatedCore: boolean;
}

/** The lane's messages, before it starts serving. */
export type FromLaneWorker = { type: 'ready'; members: ReasonerInfo[] } | { type: 'failed'; member: number; error: WireError };

/** Shared buffers of a call, sized for its rows (the client reuses them while they are big enough). */
export interface LaneBuffers {
  tokens: SharedArrayBuffer;
  weights: SharedArrayBuffer;
  sum: SharedArrayBuffer;
  /** One per member of the call, when the call keeps each member's logits. */
  logits: SharedArrayBuffer[];
}

/** The message that starts a call. */
export interface LaneStart {
  call: GroupCall;
  prompts: number[][];
  buffers: LaneBuffers;
}

const port = parentPort!;
const config = workerData as LaneWorkerConfig;

/** Loads every model at once; a failure names the member that failed (the others go with the worker). */
async function load(): Promise<{ sessions: DecoderSession[]; members: ReasonerInfo[] }> {
  const opened = await Promise.allSettled(config.models.map((model) => openReasoner(model, config.runtime)));
  const failed = opened.findIndex((o) => o.status === 'rejected');
  if (failed !== -1) throw Object.assign((opened[failed] as PromiseRejectedResult).reason as Error, { member: failed });
  const loaded = opened.map((o) => (o as PromiseFulfilledResult<{ session: DecoderSession; info: ReasonerInfo }>).value);
  return { sessions: loaded.map((l) => l.session), members: loaded.map((l) => l.info) };
}

/** The call in progress: its members' sessions, request buffers and output views. */
interface CallState {
  call: GroupCall;
  tokens: Int32Array;
  weights: Float64Array;
  out: { sum: Float32Array; logits?: Float32Array[] };
}

function startCall(start: LaneStart, rows: number): CallState {
  const size = rows * start.call.vocab;
  return {
    call: start.call,
    tokens: new Int32Array(start.buffers.tokens),
    weights: new Float64Array(start.buffers.weights),
    out: {
      sum: new Float32Array(start.buffers.sum, 0, size),
      ...(start.call.keepLogits ? { logits: start.buffers.logits.map((b) => new Float32Array(b, 0, size)) } : {}),
    },
  };
}

/** The call's details, posted just before the request that announced them. */
function receiveStart(): LaneStart {
  const received = receiveMessageOnPort(port);
  if (!received) throw new Error('the call details did not arrive with the request');
  return received.message as LaneStart;
}

async function serve(sessions: DecoderSession[]): Promise<never> {
  const server = new ChannelServer(config.channel, config.dedicatedCore);
  let state: CallState | undefined;
  for (;;) {
    const { kind, rows } = server.next();
    let running = -1;
    try {
      let advance: (s: DecoderSession) => Promise<Float32Array>;
      if (kind === RequestKind.Start) {
        const start = receiveStart();
        state = startCall(start, rows);
        advance = (s) => s.prefill(start.prompts);
      } else {
        if (!state) throw new Error('a step arrived before any call started');
        const tokens = Array.from(state.tokens.subarray(0, rows));
        advance = (s) => s.step(tokens);
      }
      const { call, out, weights } = state;
      for (let i = 0; i < call.members.length; i++) {
        running = call.members[i]!;
        const session = sessions[running]!;
        addMemberLogits(out, i, await advance(session), session.vocabSize, rows, call, weights[i]!);
      }
      server.answer();
    } catch (err) {
      const { name, message } = toWire(err);
      server.answer({ member: running, message: `${name}: ${message}` });
    }
  }
}

load().then(
  ({ sessions, members }) => {
    port.postMessage({ type: 'ready', members } satisfies FromLaneWorker);
    return serve(sessions);
  },
  (err) => port.postMessage({ type: 'failed', member: (err as { member?: number }).member ?? 0, error: toWire(err) } satisfies FromLaneWorker),
);
