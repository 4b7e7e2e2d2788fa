/**
 * Prefix caching on a growing conversation: a system prompt, then turns that each add a user message and take a
 * reply, every turn's prompt the previous prompt, its reply and the new message (token ids of the serving
 * benchmark's random ~125M Q4_0 Llama, 2 threads, greedy, 16-token replies). Time to first token per turn for:
 *   - `reasonplug`: one engine, prefix caching on (the default);
 *   - `reasonplug, no cache`: one engine with `prefixCacheBytes: 0` (the whole prompt prefilled every turn);
 *   - `llama.cpp`: one node-llama-cpp sequence that keeps its context between turns, the tokens past the common
 *     prefix erased and the rest evaluated, as llama.cpp's server does with `cache_prompt`.
 * Each round is one conversation (fresh random ids) run by every contender, their order rotating over rounds;
 * figures are medians over rounds.
 *
 *   npm run bench:prefix-cache [-- --rounds 5 --turns 6 --system 400 --message 40]
 */
import { parseArgs } from 'node:util';
import { Engine } from '../packages/core/src/engine.js';
import { createRng } from '../packages/core/src/sampling/index.js';
import { servingGguf } from './support/models.js';
import { median, printTable } from './support/stats.js';

const THREADS = 2;
const REPLY = 16;
type Contender = 'reasonplug' | 'reasonplug, no cache' | 'llama.cpp';
const CONTENDERS: Contender[] = ['reasonplug', 'reasonplug, no cache', 'llama.cpp'];

/** Runs one turn: its prompt in, the reply's ids and the time to its first token out. */
type Turn = (prompt: number[]) => Promise<{ ids: number[]; ttftMs: number }>;

function engineTurn(engine: Engine): Turn {
  return async (promptIds) => {
    const t0 = performance.now();
    let ttftMs = 0;
    const stream = engine.stream({ promptIds }, { maxTokens: REPLY, ignoreEos: true });
    for await (const _ of stream) if (ttftMs === 0) ttftMs = performance.now() - t0;
    return { ids: (await stream.result).rows[0]!.ids, ttftMs };
  };
}

async function llamaCppTurn(gguf: string, contextSize: number): Promise<{ turn: Turn; reset: () => Promise<void>; dispose: () => Promise<void> }> {
  const { getLlama, LlamaLogLevel } = await import('node-llama-cpp');
  const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
  const model = await llama.loadModel({ modelPath: gguf });
  const ctx = await model.createContext({ contextSize, threads: THREADS, batchSize: 512 });
  const seq = ctx.getSequence();
  const turn: Turn = async (prompt) => {
    const t0 = performance.now();
    const held = seq.contextTokens as readonly number[];
    let common = 0;
    // At least the last prompt token is evaluated: its logits give the first reply token.
    while (common < held.length && common < prompt.length - 1 && held[common] === prompt[common]) common++;
    if (common < held.length) await seq.eraseContextTokenRanges([{ start: common, end: held.length }]);
    let ttftMs = 0;
    const ids: number[] = [];
    for await (const id of seq.evaluate(prompt.slice(common) as never[], { temperature: 0 })) {
      if (ttftMs === 0) ttftMs = performance.now() - t0;
      ids.push(id as number);
      if (ids.length >= REPLY) break;
    }
    return { ids, ttftMs };
  };
  return { turn, reset: () => seq.clearHistory(), dispose: async () => (await ctx.dispose(), await model.dispose()) };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      rounds: { type: 'string', default: '5' },
      turns: { type: 'string', default: '6' },
      system: { type: 'string', default: '400' },
      message: { type: 'string', default: '40' },
    },
  });
  const [rounds, turns, system, message] = [values.rounds, values.turns, values.system, values.message].map(Number) as [number, number, number, number];
  const gguf = await servingGguf();
  const [cached, plain] = await Promise.all([
    Engine.load({ model: gguf, intraOpThreads: THREADS }),
    Engine.load({ model: gguf, intraOpThreads: THREADS, prefixCacheBytes: 0 }),
  ]);
  const llama = await llamaCppTurn(gguf, 2 * (system + turns * (message + REPLY)));
  const run: Record<Contender, Turn> = { reasonplug: engineTurn(cached), 'reasonplug, no cache': engineTurn(plain), 'llama.cpp': llama.turn };
  // per contender, per turn: the time to first token of each round
  const ttft = Object.fromEntries(CONTENDERS.map((c) => [c, Array.from({ length: turns }, () => [] as number[])])) as Record<Contender, number[][]>;
  const lengths: number[] = [];
  // Warm-up: one turn each.
  for (const c of CONTENDERS) await run[c](Array.from({ length: 64 }, (_, i) => 100 + i));
  for (let round = 0; round < rounds; round++) {
    const rng = createRng(1000 + round);
    const ids = (n: number) => Array.from({ length: n }, () => 3 + Math.floor(rng() * 31000));
    const opening = ids(system);
    const messages = Array.from({ length: turns }, () => ids(message));
    const order = CONTENDERS.map((_, i) => CONTENDERS[(i + round) % CONTENDERS.length]!);
    for (const c of order) {
      await llama.reset(); // every contender starts the conversation cold
      let prompt = [...opening, ...messages[0]!];
      for (let t = 0; t < turns; t++) {
        const { ids: reply, ttftMs } = await run[c](prompt);
        ttft[c][t]!.push(ttftMs);
        lengths[t] = prompt.length;
        if (t + 1 < turns) prompt = [...prompt, ...reply, ...messages[t + 1]!];
      }
    }
  }
  const stats = await cached.stats();
  await Promise.all([cached.dispose(), plain.dispose(), llama.dispose()]);
  const rows = lengths.map((length, t) => {
    const [on, off, cpp] = CONTENDERS.map((c) => median(ttft[c][t]!)) as [number, number, number];
    return { turn: t + 1, promptTokens: length, ttftMs: { reasonplug: on, noCache: off, llamaCpp: cpp }, cachedVsNoCache: on / off, cachedVsLlamaCpp: on / cpp };
  });
  console.log(JSON.stringify({ bench: 'prefix-cache', threads: THREADS, rounds, system, message, reply: REPLY, results: rows, prefixCache: stats.prefixCache }));
  printTable(
    `time to first token over a conversation (Q4_0 ~125M, ${system}-token system prompt, ${message}-token messages, ${REPLY}-token replies, ${THREADS} threads, median of ${rounds} rounds)`,
    ['turn', 'prompt tokens', 'reasonplug ms', 'no cache ms', 'llama.cpp ms', 'vs no cache', 'vs llama.cpp'],
    rows.map((r) => [String(r.turn), r.promptTokens, r.ttftMs.reasonplug.toFixed(1), r.ttftMs.noCache.toFixed(1), r.ttftMs.llamaCpp.toFixed(1), `${r.cachedVsNoCache.toFixed(2)}x`, `${r.cachedVsLlamaCpp.toFixed(2)}x`]),
  );
}

await main();
