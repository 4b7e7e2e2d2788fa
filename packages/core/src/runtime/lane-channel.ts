/**
 * The per-step handshake between the generation worker and a reasoner lane, in shared memory: a request
 * counter, an answer counter, a status and an error text. A step costs no message and no event-loop turn on
 * either side (a message to a worker and back cost ~0.4 ms per step, measured). The lane sleeps in
 * `Atomics.wait` between requests, and waking it costs the generation worker a futex wake on its critical path
 * (20–45 µs on a virtual CPU, measured), and the lane 0.07–0.3 ms of latency. A lane with a core of its own
 * therefore anticipates: it learns the usual time from its answer to the next request, sleeps through most of
 * it on a timer and spins for the rest, and the request then needs no wake at all (the generation worker
 * wakes it only when it finds it asleep). A lane that always spun would take the core that the main thread's
 * streaming needs. The generation worker, which waits on the critical path, spins for up to {@link SPIN_MS}
 * before it sleeps.
 */

/** How long the generation worker spins for a lane's answer before it sleeps. */
export const SPIN_MS = 1;

/** What a request asks for. */
export const enum RequestKind {
  /** A new call: its details are in the message posted just before. */
  Start = 1,
  /** One token per row, in the call's token buffer. */
  Step = 2,
}

const REQUEST = 0;
const ANSWER = 1;
const KIND = 2;
const ROWS = 3;
const FAILED = 4;
const FAILED_MEMBER = 5;
const ERROR_BYTES = 6;
/** 1 while the lane sleeps in `Atomics.wait` (a request must wake it), 0 while it works or spins. */
const SLEEPING = 7;
const HEADER_INTS = 8;
const ERROR_CAPACITY = 4096;

/** Creates the shared block behind a channel. */
export function createChannelBuffer(): SharedArrayBuffer {
  return new SharedArrayBuffer(HEADER_INTS * Int32Array.BYTES_PER_ELEMENT + ERROR_CAPACITY);
}

/** A failure a lane reported: which member, and what went wrong. */
export interface LaneFailure {
  member: number;
  message: string;
}

/** The generation worker's side. */
export class ChannelClient {
  private readonly ints: Int32Array;
  private readonly bytes: Uint8Array;
  private sent = 0;

  constructor(
    buffer: SharedArrayBuffer,
    private readonly spinMs: number,
  ) {
    this.ints = new Int32Array(buffer, 0, HEADER_INTS);
    this.bytes = new Uint8Array(buffer, HEADER_INTS * Int32Array.BYTES_PER_ELEMENT);
  }

  /** Sends a request (the payload is already in place). */
  request(kind: RequestKind, rows: number): void {
    Atomics.store(this.ints, KIND, kind);
    Atomics.store(this.ints, ROWS, rows);
    Atomics.store(this.ints, REQUEST, ++this.sent);
    // (the lane marks itself asleep before it checks for a request and waits: either it sees this request, or
    // this sees the mark)
    if (Atomics.load(this.ints, SLEEPING) !== 0) Atomics.notify(this.ints, REQUEST);
  }

  /** Whether the lane has answered the latest request. */
  get answered(): boolean {
    return Atomics.load(this.ints, ANSWER) === this.sent;
  }

  /** Spins up to the client's spin time for the answer; returns whether it came (else wait with {@link waitSlice}). */
  spinForAnswer(): boolean {
    if (this.answered || this.spinMs <= 0) return this.answered;
    const until = performance.now() + this.spinMs;
    while (performance.now() < until) if (this.answered) return true;
    return false;
  }

  /** Sleeps up to `ms` for the answer. */
  waitSlice(ms: number): boolean {
    const now = Atomics.load(this.ints, ANSWER);
    if (now !== this.sent) Atomics.wait(this.ints, ANSWER, now, ms);
    return this.answered;
  }

  /** The failure behind the latest answer, if it was one. */
  failure(): LaneFailure | undefined {
    if (Atomics.load(this.ints, FAILED) === 0) return undefined;
    const length = Atomics.load(this.ints, ERROR_BYTES);
    // TextDecoder refuses views on shared memory: copy the bytes out first.
    const message = new TextDecoder().decode(this.bytes.slice(0, length));
    return { member: Atomics.load(this.ints, FAILED_MEMBER), message };
  }
}

/** How long before the expected request an anticipating lane starts spinning, and how long after it it gives up. */
const SPIN_LEAD_MS = 0.3;
const SPIN_LAG_MS = 0.5;
/**
 * Gaps from an answer to the next request that the lane remembers; the second shortest is expected next (the
 * shortest may be an odd one, e.g. the first step after a prefill).
 */
const GAPS_KEPT = 8;
/** A longer gap is a pause between calls, not a step's rhythm. */
const STEP_GAP_MS = 50;

/** The lane's side. */
export class ChannelServer {
  private readonly ints: Int32Array;
  private readonly bytes: Uint8Array;
  private handled = 0;
  private answeredAt = 0;
  private readonly gaps: number[] = [];

  /** @param anticipate spin for a request expected soon (only for a lane with a core of its own). */
  constructor(
    buffer: SharedArrayBuffer,
    private readonly anticipate: boolean,
  ) {
    this.ints = new Int32Array(buffer, 0, HEADER_INTS);
    this.bytes = new Uint8Array(buffer, HEADER_INTS * Int32Array.BYTES_PER_ELEMENT);
  }

  /** Blocks this thread until the next request; returns its kind and row count. */
  next(): { kind: RequestKind; rows: number } {
    if (this.anticipate && this.gaps.length > 1) this.awaitExpected([...this.gaps].sort((a, b) => a - b)[1]!);
    // Sleeps in slices so that a terminating worker is never stuck here.
    while (!this.requested()) this.sleep(100);
    const gap = performance.now() - this.answeredAt;
    if (this.answeredAt > 0 && gap < STEP_GAP_MS) {
      if (this.gaps.length === GAPS_KEPT) this.gaps.shift();
      this.gaps.push(gap);
    }
    this.handled = Atomics.load(this.ints, REQUEST);
    return { kind: Atomics.load(this.ints, KIND) as RequestKind, rows: Atomics.load(this.ints, ROWS) };
  }

  /** Answers the current request. */
  answer(failure?: LaneFailure): void {
    if (failure) {
      const encoded = new TextEncoder().encode(failure.message).subarray(0, ERROR_CAPACITY);
      this.bytes.set(encoded);
      Atomics.store(this.ints, ERROR_BYTES, encoded.length);
      Atomics.store(this.ints, FAILED_MEMBER, failure.member);
    }
    Atomics.store(this.ints, FAILED, failure ? 1 : 0);
    Atomics.store(this.ints, ANSWER, this.handled);
    Atomics.notify(this.ints, ANSWER);
    this.answeredAt = performance.now();
  }

  private requested(): boolean {
    return Atomics.load(this.ints, REQUEST) !== this.handled;
  }

  /** Sleeps up to `ms` unless a request is there, marked asleep so that a request wakes it. */
  private sleep(ms: number): void {
    Atomics.store(this.ints, SLEEPING, 1);
    Atomics.wait(this.ints, REQUEST, this.handled, ms);
    Atomics.store(this.ints, SLEEPING, 0);
  }

  /** Sleeps until shortly before a request expected `gap` ms after the last answer, then spins for it a while. */
  private awaitExpected(gap: number): void {
    const expected = this.answeredAt + gap;
    const rest = expected - SPIN_LEAD_MS - performance.now();
    if (rest > 0) this.sleep(rest);
    while (!this.requested() && performance.now() < expected + SPIN_LAG_MS);
  }
}
