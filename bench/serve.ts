/**
 * `reasonplug serve` under concurrent load. A random-weight ~125M-parameter Llama (dim 768, 12 layers, GQA 12/4,
 * ffn 2048, vocab 32000) written as a Q4_0 GGUF; the server loads that file (converted once into the cache,
 * Q4_0 → MatMulNBits) and llama.cpp (node-llama-cpp) loads the same file. At each concurrency c, c streaming
 * requests of the same prompt and length go:
 *   - `server`: all at once through the server (max_batch 16), timed by the client from SSE chunk arrivals;
 *   - `one at a time`: the same c requests through the server, each after the previous one;
 *   - `llama.cpp`: c sequences of one node-llama-cpp context (`sequences: c`), evaluated concurrently.
 * Figures: aggregate output tokens/s, p50/p99 time to first token and inter-token latency, and the process's CPU
 * time per generated token (less swayed by other jobs than wall time; spinning threads count). Greedy, ignore EOS,
 * 2 threads each. Rounds interleave the contenders, taking their six orders in turn (whoever runs right after
 * llama.cpp finds cold caches); figures are medians over rounds.
 *
 * The single-stream reference of the targets is the best single-stream figure measured: the highest rate and
 * the lowest p99 inter-token latency among the server's c = 1 row and every `one at a time` row (all of them
 * are the same requests served one by one).
 *
 * `--row-shards on` serves with the engine's row shards (wide steps split over one-thread copies; off by default,
 * as in the engine: one session steps every row). `--ab N`
 * instead runs N interleaved rounds in this process, without HTTP, of two engines on the same file, row shards
 * on and off: c concurrent calls on each, then one call alone, each round (the engines' steps compared under the
 * same load, whatever else the machine runs).
 *
 * `--llama-threads N` gives llama.cpp's context N threads instead of 2: on a 2-vCPU machine its one-thread context
 * decodes a single sequence faster than its two-thread one (README, bench:gguf).
 *
 *   npm run bench:serve [-- --tokens 32 --rounds 1 --concurrency 1,2,4,8,16 --row-shards off|on --llama-threads 2]
 *   npm run bench:serve -- --ab 8 [--concurrency 8]
 */
import { parseArgs } from 'node:util';
import { startServer } from '../packages/core/src/serve/server.js';
import { Engine } from '../packages/core/src/engine.js';
import { SERVING_SHAPE, servingGguf } from './support/models.js';
import { median, printTable } from './support/stats.js';

const THREADS = 2;
const PROMPT = [1, 415, 2936, 9060, 285, 1142, 10575, 975, 4511, 319, 2213, 1029];
type Contender = 'server' | 'one at a time' | 'llama.cpp';
const CONTENDERS: Contender[] = ['server', 'one at a time', 'llama.cpp'];
/**
 * The orders rounds take in turn: over six rounds each contender runs right after each other one twice (a plain
 * rotation would always put llama.cpp, and its cold caches, right before the server).
 */
const ORDERS: Contender[][] = [
  [0, 1, 2],
  [2, 1, 0],
  [1, 0, 2],
  [2, 0, 1],
  [0, 2, 1],
  [1, 2, 0],
].map((o) => o.map((i) => CONTENDERS[i]!));

/** What one contender measured at one concurrency. */
interface Run {
  tokens: number;
  wallMs: number;
  ttftMs: number[];
  itlMs: number[];
  /** CPU time of the whole process over the run (server, its engine worker, client and llama.cpp alike). */
  cpuMs: number;
}

/** One streaming completion through the server; the arrival time of each token's chunk. */
async function request(url: string, tokens: number): Promise<number[]> {
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    body: JSON.stringify({ model: 'bench', prompt: PROMPT, max_tokens: tokens, temperature: 0, ignore_eos: true, stream: true }),
  });
  if (!res.ok) throw new Error(`server answered ${res.status}: ${await res.text()}`);
  const times: number[] = [];
  const decoder = new TextDecoder();
  let buffer = '';
  for await (const bytes of res.body as AsyncIterable<Uint8Array>) {
    const now = performance.now();
    buffer += decoder.decode(bytes, { stream: true });
    const events = buffer.split('\n\n');
    buffer = events.pop()!;
    for (const e of events) {
      if (!e.startsWith('data: ') || e === 'data: [DONE]') continue;
      const chunk = JSON.parse(e.slice(6)) as { choices: { text: string; finish_reason: string | null }[] };
      if (chunk.choices[0]?.finish_reason === null) times.push(now);
    }
  }
  return times;
}

/** Figures from each request's start and token times. */
function figures(starts: number[], tokenTimes: number[][], wallMs: number, cpu0: NodeJS.CpuUsage): Run {
  const ttftMs = tokenTimes.map((t, i) => t[0]! - starts[i]!);
  const itlMs = tokenTimes.flatMap((t) => t.slice(1).map((x, j) => x - t[j]!));
  const cpu = process.cpuUsage(cpu0);
  return { tokens: tokenTimes.reduce((n, t) => n + t.length, 0), wallMs, ttftMs, itlMs, cpuMs: (cpu.user + cpu.system) / 1000 };
}

async function serverRun(url: string, c: number, tokens: number, concurrent: boolean): Promise<Run> {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const starts: number[] = [];
  const times: number[][] = [];
  if (concurrent) {
    await Promise.all(
      Array.from({ length: c }, async (_, i) => {
        starts[i] = performance.now();
        times[i] = await request(url, tokens);
      }),
    );
  } else {
    for (let i = 0; i < c; i++) {
      starts[i] = performance.now();
      times[i] = await request(url, tokens);
    }
  }
  return figures(starts, times, performance.now() - t0, cpu0);
}

/** A contender's medians at one concurrency. */
interface Figures {
  contender: Contender;
  concurrency: number;
  tokensPerS: number;
  ttftP50Ms: number;
  ttftP99Ms: number;
  itlP50Ms: number;
  itlP99Ms: number;
  cpuMsPerToken: number;
}

/** One llama.cpp binding for the whole run (each getLlama adds process listeners). */
let binding: Promise<import('node-llama-cpp').Llama> | undefined;

async function llamaRun(gguf: string, c: number, tokens: number, threads: number): Promise<Run> {
  binding ??= import('node-llama-cpp').then(({ getLlama, LlamaLogLevel }) => getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error }));
  const llama = await binding;
  const model = await llama.loadModel({ modelPath: gguf });
  const ctx = await model.createContext({ contextSize: c * (PROMPT.length + tokens + 16), sequences: c, threads, batchSize: 512 });
  try {
    // Warm-up on one sequence, then its history is cleared.
    const warm = ctx.getSequence();
    for await (const _ of warm.evaluate(PROMPT as never[], { temperature: 0 })) break;
    warm.dispose();
    const sequences = Array.from({ length: c }, () => ctx.getSequence());
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const starts: number[] = [];
    const times: number[][] = [];
    await Promise.all(
      sequences.map(async (seq, i) => {
        starts[i] = performance.now();
        const t: number[] = [];
        for await (const _ of seq.evaluate(PROMPT as never[], { temperature: 0 })) {
          t.push(performance.now());
          if (t.length >= tokens) break;
        }
        times[i] = t;
      }),
    );
    return figures(starts, times, performance.now() - t0, cpu0);
  } finally {
    await ctx.dispose();
    await model.dispose();
  }
}

function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
}

/** c concurrent calls on an engine (no HTTP), timed from their streamed tokens. */
async function engineRun(engine: Engine, c: number, tokens: number): Promise<Run> {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const starts: number[] = [];
  const times: number[][] = [];
  await Promise.all(
    Array.from({ length: c }, async (_, i) => {
      starts[i] = performance.now();
      const t: number[] = [];
      for await (const _ of engine.stream({ promptIds: PROMPT }, { maxTokens: tokens, ignoreEos: true })) t.push(performance.now());
      times[i] = t;
    }),
  );
  return figures(starts, times, performance.now() - t0, cpu0);
}

/** `--ab`: engines with row shards on and off, interleaved in this process. */
async function abMain(gguf: string, rounds: number, c: number, tokens: number): Promise<void> {
  const load = (rowShards: boolean) => Engine.load({ model: gguf, intraOpThreads: THREADS, maxBatch: 16, rowShards });
  const engines = { 'row shards': await load(true), 'one session': await load(false) };
  const runs = new Map<string, Run[]>();
  const record = (k: string, r: Run) => runs.set(k, [...(runs.get(k) ?? []), r]);
  try {
    for (const e of Object.values(engines)) await engineRun(e, c, 4); // warm-up
    for (let round = 0; round < rounds; round++) {
      console.error(`A/B round ${round + 1}`);
      const order = round % 2 === 0 ? (['row shards', 'one session'] as const) : (['one session', 'row shards'] as const);
      for (const k of order) record(`${k} c=${c}`, await engineRun(engines[k], c, tokens));
      record('one session c=1', await engineRun(engines['one session'], 1, tokens));
    }
  } finally {
    await Promise.all(Object.values(engines).map((e) => e.dispose()));
  }
  const rows = [...runs].map(([k, rs]) => ({
    run: k,
    tokensPerS: median(rs.map((r) => (r.tokens / r.wallMs) * 1000)),
    itlP50Ms: median(rs.map((r) => percentile(r.itlMs, 50))),
    itlP99Ms: median(rs.map((r) => percentile(r.itlMs, 99))),
    cpuMsPerToken: median(rs.map((r) => r.cpuMs / r.tokens)),
    // The least disturbed round: other jobs only ever slow a round down.
    bestTokensPerS: Math.max(...rs.map((r) => (r.tokens / r.wallMs) * 1000)),
    bestItlP50Ms: Math.min(...rs.map((r) => percentile(r.itlMs, 50))),
  }));
  const single = rows.find((r) => r.run === 'one session c=1')!;
  console.log(JSON.stringify({ bench: 'serve-ab', model: { ...SERVING_SHAPE, type: 'Q4_0' }, threads: THREADS, tokens, rounds, concurrency: c, results: rows }));
  printTable(
    `engine A/B, row shards on vs off (no HTTP; Q4_0 ~125M, ${tokens} tokens/call, ${THREADS} threads, medians of ${rounds} interleaved rounds)`,
    ['run', 'tok/s (all)', 'vs c=1', 'ITL p50 ms', 'ITL p99 ms', 'p99 ITL vs c=1', 'CPU ms/token', 'best tok/s', 'best vs c=1', 'best ITL p50 ms'],
    rows.map((r) => [
      r.run,
      r.tokensPerS,
      `${(r.tokensPerS / single.tokensPerS).toFixed(2)}x`,
      r.itlP50Ms,
      r.itlP99Ms,
      `${(r.itlP99Ms / single.itlP99Ms).toFixed(2)}x`,
      r.cpuMsPerToken,
      r.bestTokensPerS,
      `${(r.bestTokensPerS / single.bestTokensPerS).toFixed(2)}x`,
      r.bestItlP50Ms,
    ]),
  );
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      tokens: { type: 'string', default: '32' },
      rounds: { type: 'string', default: '1' },
      concurrency: { type: 'string', default: '1,2,4,8,16' },
      'row-shards': { type: 'string', default: 'off' },
      'llama-threads': { type: 'string', default: String(THREADS) },
      ab: { type: 'string' },
    },
  });
  const tokens = Number(values.tokens);
  const rounds = Number(values.rounds);
  const levels = values.concurrency!.split(',').map(Number);
  const gguf = await servingGguf();
  if (values.ab) return abMain(gguf, Number(values.ab), values.concurrency === '1,2,4,8,16' ? 8 : levels.at(-1)!, tokens);
  if (!['on', 'off'].includes(values['row-shards']!)) throw new Error(`--row-shards takes on or off; got ${values['row-shards']}`);
  const rowShards = values['row-shards'] === 'on';
  const llamaThreads = Number(values['llama-threads']);
  if (!(llamaThreads >= 1)) throw new Error(`--llama-threads takes a thread count; got ${values['llama-threads']}`);
  // true opens the row shards with the engine (by default they open the first time the batch is wide enough).
  const server = await startServer({ engine: { model: gguf, intraOpThreads: THREADS, rowShards }, name: 'bench', port: 0, maxBatch: 16, maxQueue: 64 });
  await server.ready;
  await request(server.url, 4); // warm-up
  // With row shards, their first wide step too.
  if (rowShards) await Promise.all(Array.from({ length: 8 }, () => request(server.url, 4)));
  const runs = new Map<string, Run[]>();
  const record = (who: Contender, c: number, r: Run) => runs.set(`${who}@${c}`, [...(runs.get(`${who}@${c}`) ?? []), r]);
  try {
    for (let round = 0; round < rounds; round++) {
      for (const c of levels) {
        console.error(`round ${round + 1}: concurrency ${c}`);
        const order = ORDERS[round % ORDERS.length]!;
        for (const who of order) {
          if (who === 'llama.cpp') record(who, c, await llamaRun(gguf, c, tokens, llamaThreads));
          else record(who, c, await serverRun(server.url, c, tokens, who === 'server'));
        }
      }
    }
  } finally {
    await server.close();
  }
  const rows: (string | number)[][] = [];
  const json: Figures[] = [];
  for (const c of levels) {
    for (const who of CONTENDERS) {
      const rs = runs.get(`${who}@${c}`)!;
      const f: Figures = {
        contender: who,
        concurrency: c,
        tokensPerS: median(rs.map((r) => (r.tokens / r.wallMs) * 1000)),
        ttftP50Ms: median(rs.map((r) => percentile(r.ttftMs, 50))),
        ttftP99Ms: median(rs.map((r) => percentile(r.ttftMs, 99))),
        itlP50Ms: median(rs.map((r) => percentile(r.itlMs, 50))),
        itlP99Ms: median(rs.map((r) => percentile(r.itlMs, 99))),
        cpuMsPerToken: median(rs.map((r) => r.cpuMs / r.tokens)),
      };
      json.push(f);
      rows.push([`${c}`, who, f.tokensPerS, f.ttftP50Ms, f.ttftP99Ms, f.itlP50Ms, f.itlP99Ms, f.cpuMsPerToken]);
    }
  }
  // The best single-stream figures measured (see the header): the targets are judged against them.
  const single = json.filter((f) => f.contender === 'one at a time' || (f.contender === 'server' && f.concurrency === 1));
  const reference = { tokensPerS: Math.max(...single.map((f) => f.tokensPerS)), itlP99Ms: Math.min(...single.map((f) => f.itlP99Ms)) };
  const targets = json
    .filter((f) => f.contender === 'server' && f.concurrency > 1)
    .map((f) => {
      const llama = json.find((g) => g.contender === 'llama.cpp' && g.concurrency === f.concurrency)!;
      return {
        concurrency: f.concurrency,
        throughputRatio: f.tokensPerS / reference.tokensPerS,
        vsLlamaCpp: f.tokensPerS / llama.tokensPerS,
        itlP99Ratio: f.itlP99Ms / reference.itlP99Ms,
      };
    });
  console.log(JSON.stringify({ bench: 'serve', model: { ...SERVING_SHAPE, type: 'Q4_0' }, threads: THREADS, llamaThreads, tokens, rounds, rowShards, results: json, singleStream: reference, targets }));
  printTable(
    `reasonplug serve (row shards ${rowShards ? 'on' : 'off'}) vs one at a time vs llama.cpp parallel sequences (Q4_0 ~125M, ${tokens} tokens/request, ${THREADS} threads${llamaThreads === THREADS ? '' : `, llama.cpp ${llamaThreads}`}, median of ${rounds} round(s))`,
    ['c', 'contender', 'tok/s (all)', 'TTFT p50 ms', 'TTFT p99 ms', 'ITL p50 ms', 'ITL p99 ms', 'CPU ms/token'],
    rows,
  );
  printTable(
    `server against the best single-stream figures (${reference.tokensPerS.toFixed(0)} tok/s, p99 ITL ${reference.itlP99Ms.toFixed(2)} ms); targets at c = 8: rate >= 3x and >= llama.cpp, p99 ITL <= 3x`,
    ['c', 'tok/s vs single', 'vs llama.cpp', 'p99 ITL vs single'],
    targets.map((t) => [`${t.concurrency}`, `${t.throughputRatio.toFixed(2)}x`, `${t.vsLlamaCpp.toFixed(2)}x`, `${t.itlP99Ratio.toFixed(2)}x`]),
  );
}

await main();
