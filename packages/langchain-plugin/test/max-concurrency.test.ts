/**
 * LangChain's `maxConcurrency` on `ChatReasoner` and `ReasonerLLM`: at most that many calls of a model generate at
 * once, each holding its place for its whole generation, streaming included, and giving it back however it ends
 * (finished, failed, aborted, left early, or aborted while it waited). The model's `timeout` counts from a call's
 * turn, up to the longest timer Node sets. LangChain's retry fields are refused by name.
 */
import { expect } from 'chai';
import { ModelAbortError } from '@langchain/core/errors';
import { AsyncCaller } from '@langchain/core/utils/async_caller';
import { ChatReasoner, ReasonerLLM, ReasonerOptionsError } from '../src/index.js';
import { takeTurn } from '../src/generation.js';
import { PLAIN_TEMPLATE, cacheDir, slowBackbone, storiesModule, withChatTemplate } from './support/modules.js';
import { Recorder } from './support/recorder.js';

const PROMPTS = ['Once upon a time', 'Tim saw', 'Lily liked'];

/** Runs the calls at once, each with a recorder, and gives the order in which their tokens came (call indices). */
async function tokenOrder(calls: ((recorder: Recorder) => Promise<unknown>)[]): Promise<number[]> {
  const order: number[] = [];
  await Promise.all(calls.map((call, i) => call(new Recorder(() => order.push(i)))));
  return order;
}

/** How often the tokens pass from one call to another: calls.length - 1 when each ran alone in turn. */
const switches = (order: number[]) => order.filter((call, k) => k > 0 && call !== order[k - 1]).length;

/** `promise`, or a failure after `ms` (a place never given back would leave it waiting for ever). */
function within<T>(ms: number, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`still waiting after ${ms} ms`)), ms)));
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

async function collect<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of stream) out.push(x);
  return out;
}

describe('maxConcurrency', function () {
  this.timeout(60_000);
  let chat: ChatReasoner;
  let llm: ReasonerLLM;

  before(async () => {
    const stories = await storiesModule();
    const backbone = await withChatTemplate(stories, 'stories-turns', PLAIN_TEMPLATE);
    [chat, llm] = await Promise.all([
      ChatReasoner.create({ backbone, cacheDir, maxTokens: 12, maxConcurrency: 1 }),
      ReasonerLLM.create({ backbone: stories, cacheDir, maxTokens: 12, maxConcurrency: 1 }),
    ]);
  });

  after(() => Promise.all([chat?.dispose(), llm?.dispose()]));

  it('with maxConcurrency 1, concurrent calls generate one after the other, invoked or streamed, chat or completion', async () => {
    const runs = {
      'chat invoke': PROMPTS.map((p) => (cb: Recorder) => chat.invoke(p, { callbacks: [cb] })),
      'chat stream and bindings': PROMPTS.map((p, i) => async (cb: Recorder) => collect(await chat.withConfig({ seed: i }).stream(p, { callbacks: [cb] }))),
      'llm invoke': PROMPTS.map((p) => (cb: Recorder) => llm.invoke(p, { callbacks: [cb] })),
    };
    for (const [how, calls] of Object.entries(runs)) {
      const order = await tokenOrder(calls);
      for (let i = 0; i < calls.length; i++) expect(order.filter((c) => c === i).length, `${how}: tokens of call ${i}`).to.be.greaterThan(2);
      expect(switches(order), `${how}: ${order.join('')}`).to.equal(calls.length - 1);
    }
  });

  it('a call gives its place back when it fails, is aborted or its stream is left early', async () => {
    // (each call would wait for ever behind one that kept its place)
    const failed = await within(10_000, chat.invoke('Hi', { responseFormat: { type: 'regex', pattern: '(' } }).catch((e: Error) => e));
    expect(failed).to.be.instanceOf(Error).and.have.property('name', 'ConstraintError');
    const leave = async (stream: Promise<AsyncIterable<unknown>>) => {
      for await (const _ of await stream) break;
    };
    await within(10_000, leave(chat.stream('Hi')));
    await within(10_000, leave(llm.stream('Hi')));
    const controller = new AbortController();
    const aborted = await within(10_000, chat.invoke('Hi', { signal: controller.signal, callbacks: [new Recorder(() => controller.abort())] }).catch((e: unknown) => e));
    expect(ModelAbortError.isInstance(aborted), String(aborted)).to.equal(true);
    expect((await within(10_000, chat.invoke('Hi'))).usage_metadata?.output_tokens).to.equal(12);
    expect(await within(10_000, llm.invoke('Hi'))).to.be.a('string').that.is.not.empty;
  });

  it('a call aborted while it waits for its place ends at once, without a token, and its turn passes on', async () => {
    const slow = await ReasonerLLM.create({ backbone: await slowBackbone(), cacheDir, maxTokens: 1500, maxConcurrency: 1 });
    try {
      const first = new AbortController();
      const second = new AbortController();
      let firstEnded = false;
      let generating!: () => void;
      const started = new Promise<void>((resolve) => (generating = resolve));
      // The second call starts once the first generates, and is aborted some tokens later, waiting for its place.
      const onToken = (r: Recorder) => (r.tokens.length === 1 ? generating() : r.tokens.length === 30 && second.abort());
      const running = slow.invoke('Hello', { signal: first.signal, callbacks: [new Recorder(onToken)] }).finally(() => (firstEnded = true));
      running.catch(() => {});
      await started;
      const waiting = await slow.invoke('Hi', { signal: second.signal }).catch((e: unknown) => e);
      expect(firstEnded, 'the first call was still generating').to.equal(false);
      expect(ModelAbortError.isInstance(waiting), String(waiting)).to.equal(true);
      expect((waiting as ModelAbortError).partialOutput!.usage_metadata!.output_tokens).to.equal(0);
      first.abort();
      await running.catch(() => {});
      expect(await within(10_000, slow.invoke('Hi', { maxTokens: 3 }))).to.be.a('string');
    } finally {
      await slow.dispose();
    }
  });

  it("the model's timeout counts from a call's turn (as ChatOpenAI's, per request), not its wait; a call's own timeout covers the wait", async function () {
    // (some twenty calls of 300 tokens of a slow backbone, one after another: 9-11 s on CI, 31 s once when it was loaded)
    this.timeout(240_000);
    const backbone = await slowBackbone();
    const slowChat = await withChatTemplate(backbone, 'slow-turns', PLAIN_TEMPLATE);
    const MAX = 300;
    const untimed = await ReasonerLLM.create({ backbone, cacheDir, maxTokens: MAX });
    let alone = 0;
    try {
      await untimed.invoke('Hi');
      // (the slowest of three: one call timed once, in a lull of a loaded machine, made a timeout some later call ran past)
      for (let i = 0; i < 3; i++) {
        const t0 = performance.now();
        await untimed.invoke('Hi');
        alone = Math.max(alone, performance.now() - t0);
      }
    } finally {
      await untimed.dispose();
    }
    // Each call alone takes a quarter of the timeout at most; the eighth in line waits seven times as long.
    const timeout = Math.ceil(Math.max(400, 4 * alone));
    const timed = [
      await ReasonerLLM.create({ backbone, cacheDir, maxTokens: MAX, timeout, maxConcurrency: 1 }),
      await ChatReasoner.create({ backbone: slowChat, cacheDir, maxTokens: MAX, timeout, maxConcurrency: 1 }),
    ];
    try {
      for (const model of timed) {
        const replies = await (model as ReasonerLLM).batch(Array<string>(8).fill('Hi'), {}, { returnExceptions: true });
        expect(replies.map((r) => (r instanceof Error ? `${r.name}: ${r.message}` : 'ok')), model._llmType()).to.deep.equal(Array(8).fill('ok'));
        // A call's own timeout (LangChain's, which covers the whole call) ends it while it waits, before its first
        // token: here behind a stream, which holds its place until it is read to its end.
        const first = (await (model as ReasonerLLM).stream('Hi'))[Symbol.asyncIterator]();
        await first.next();
        const second = await (model as ReasonerLLM).invoke('Hi', { timeout: Math.ceil(alone / 4) }).catch((e: unknown) => e);
        while (!(await first.next()).done);
        expect(ModelAbortError.isInstance(second), String(second)).to.equal(true);
        expect((second as ModelAbortError).partialOutput!.usage_metadata!.output_tokens).to.equal(0);
      }
    } finally {
      await Promise.all(timed.map((m) => m.dispose()));
    }
  });

  it('refuses a timeout longer than any timer Node sets (2^31-1 ms), naming it, and takes the longest', async () => {
    for (const create of [ChatReasoner.create, ReasonerLLM.create]) {
      for (const timeout of [2 ** 31, 2 ** 32]) {
        const err = await create({ backbone: 'never-loaded', cacheDir, timeout }).catch((e: Error) => e);
        expect(err, String(err)).to.be.instanceOf(ReasonerOptionsError);
        expect((err as ReasonerOptionsError).issues.map((i) => i.path)).to.deep.equal(['timeout']);
        expect((err as Error).message).to.match(/timeout: is at most 2147483647 ms/);
      }
    }
    const longest = await ReasonerLLM.create({ backbone: await storiesModule(), cacheDir, maxTokens: 4, timeout: 2 ** 31 - 1 });
    try {
      expect(await within(10_000, longest.invoke('Once upon a time'))).to.be.a('string').that.is.not.empty;
    } finally {
      await longest.dispose();
    }
  });

  it('a turn whose timer cannot be set fails the call, never leaves it waiting, and passes the turn on', async () => {
    const caller = new AsyncCaller({ maxConcurrency: 1, maxRetries: 0 });
    const err = await within(5_000, takeTurn(caller, undefined, 2 ** 32)).catch((e: Error) => e);
    expect(err).to.be.instanceOf(RangeError);
    const next = await within(5_000, takeTurn(caller, undefined, 1_000));
    expect(next.signal?.aborted).to.equal(false);
    next.release();
  });

  it("refuses LangChain's retry fields by name: a local engine fails the same way on every try", async () => {
    for (const create of [ChatReasoner.create, ReasonerLLM.create]) {
      const err = await create({ backbone: 'never-loaded', cacheDir, maxRetries: 2, onFailedAttempt: () => {} } as never).catch((e: Error) => e);
      expect(err).to.be.instanceOf(ReasonerOptionsError);
      expect((err as ReasonerOptionsError).issues.map((i) => i.path)).to.deep.equal(['maxRetries', 'onFailedAttempt']);
      expect((err as Error).message).to.match(/maxRetries: is LangChain's retry of remote calls: a local engine fails the same way on every try.*withRetry/);
    }
  });
});
