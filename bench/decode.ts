/**
 * Decode speed and memory, side by side in one run: reasonplug's engine vs transformers.js 4.x vs a bare
 * loop of `session.run` calls, on the same ONNX files. Greedy; per-token time is the slope between a short
 * and a long generation (so load and prefill do not blur it); medians over rounds that interleave contenders.
 *
 *   npm run bench:decode [-- --rounds 5 --short 16 --long 144]
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { Engine, llamaParameterCount } from '@reasonplug/core';
import { loadBareLoop } from './support/bare-loop.js';
import { loadTransformersModel, prepareTransformersDir, readDecoderInfo } from './support/transformers-ref.js';
import { median, printTable } from './support/stats.js';
import { benchLlama, benchQuantized, LLAMA_24M, PROMPT } from './support/models.js';
import { models } from '../test/support/paths.js';

type Contender = 'reasonplug' | 'transformers.js' | 'bare loop';
const CONTENDERS: Contender[] = ['reasonplug', 'transformers.js', 'bare loop'];

interface Runner {
  /** Generates n tokens greedily; returns ms to the first token and in total. */
  run(n: number): Promise<{ firstTokenMs: number; totalMs: number }>;
  dispose(): Promise<void>;
}

async function load(contender: Contender, onnxPath: string, threads?: number): Promise<Runner & { threads?: number }> {
  if (contender === 'reasonplug') {
    const engine = await Engine.load({ model: onnxPath });
    return {
      ...(engine.info.intraOpThreads ? { threads: engine.info.intraOpThreads } : {}),
      async run(n) {
        const t0 = performance.now();
        let first = 0;
        const stream = engine.stream({ promptIds: PROMPT }, { maxTokens: n, ignoreEos: true });
        for await (const _ of stream) if (!first) first = performance.now() - t0;
        await stream.result;
        return { firstTokenMs: first, totalMs: performance.now() - t0 };
      },
      dispose: () => engine.dispose(),
    };
  }
  const impl =
    contender === 'bare loop'
      ? await loadBareLoop(onnxPath, threads ? { intraOpNumThreads: threads } : {})
      : await loadTransformersModel(await prepareTransformersDir(onnxPath, await readDecoderInfo(onnxPath)));
  return { run: (n) => impl.generate(PROMPT, n), dispose: () => impl.dispose() };
}

const threadsUsed: Record<string, number | string> = {};

const settle = () => new Promise((r) => setTimeout(r, 25));

interface ModelFigures {
  model: string;
  msPerToken: Record<Contender, number>;
  firstTokenMs: Record<Contender, number>;
}

async function measure(label: string, onnxPath: string, rounds: number, short: number, long: number): Promise<ModelFigures> {
  const runners = new Map<Contender, Runner>();
  // The bare loop runs with the engine's thread count, so it stays the floor of the same configuration;
  // transformers.js runs as users run it, with onnxruntime's defaults.
  const engine = await load('reasonplug', onnxPath);
  runners.set('reasonplug', engine);
  for (const c of CONTENDERS.slice(1)) runners.set(c, await load(c, onnxPath, engine.threads));
  const slopes = new Map<Contender, number[]>(CONTENDERS.map((c) => [c, []]));
  const firsts = new Map<Contender, number[]>(CONTENDERS.map((c) => [c, []]));
  for (const r of runners.values()) await r.run(short); // warm-up
  for (let round = 0; round < rounds; round++) {
    // Rotate the order each round so no contender always runs first (or last) on a warm machine.
    const order = CONTENDERS.map((_, i) => CONTENDERS[(i + round) % CONTENDERS.length]!);
    for (const c of order) {
      const r = runners.get(c)!;
      // Let the previous contender's onnxruntime threads stop spinning before timing the next one: on a
      // small machine they would otherwise take the cores the next contender's first step needs.
      await settle();
      const a = await r.run(short);
      await settle();
      const b = await r.run(long);
      slopes.get(c)!.push((b.totalMs - a.totalMs) / (long - short));
      firsts.get(c)!.push(a.firstTokenMs, b.firstTokenMs);
    }
  }
  for (const r of runners.values()) await r.dispose();
  threadsUsed[label] = engine.threads ?? 'onnxruntime default';
  const pick = (m: Map<Contender, number[]>) =>
    Object.fromEntries(CONTENDERS.map((c) => [c, median(m.get(c)!)])) as Record<Contender, number>;
  return { model: label, msPerToken: pick(slopes), firstTokenMs: pick(firsts) };
}

/** Peak RSS (MiB) of a fresh process that loads the model and generates `n` tokens with one contender. */
function peakRss(contender: Contender, onnxPath: string, n: number): number {
  const out = execFileSync(
    process.execPath,
    ['--import', 'tsx', fileURLToPath(import.meta.url), '--rss-probe', contender, '--model', onnxPath, '--long', String(n)],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] },
  );
  return Number(out.trim().split('\n').pop());
}

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '9' },
    short: { type: 'string', default: '16' },
    long: { type: 'string', default: '144' },
    'rss-probe': { type: 'string' },
    model: { type: 'string' },
  },
});

if (values['rss-probe']) {
  const runner = await load(values['rss-probe'] as Contender, values.model!);
  await runner.run(Number(values.long));
  await runner.dispose();
  console.log((process.resourceUsage().maxRSS / 1024).toFixed(1));
  process.exit(0);
}

const rounds = Number(values.rounds);
const short = Number(values.short);
const long = Number(values.long);
const fp16Path = join(models.llamaFp16, 'model.onnx');
const path24m = await benchLlama('llama24m', LLAMA_24M, 1);
const path24mQ4 = await benchQuantized(path24m, { bits: 4 });
// Prepared graphs are made once and cached; do that outside the measurements.
for (const p of [fp16Path, path24m, path24mQ4]) await (await load('reasonplug', p)).dispose();

const figures = [
  await measure('tiny-random-llama-fp16 (overhead-bound)', fp16Path, rounds, short, long),
  await measure(`llama-24M fp32 (${(llamaParameterCount(LLAMA_24M) / 1e6).toFixed(1)}M params, compute-bound)`, path24m, rounds, short, long),
  await measure('llama-24M 4-bit (reasonplug quantize: MatMulNBits, block 32)', path24mQ4, rounds, short, long),
];
/** The 4-bit model's time per token over the fp32 model's, per contender (the bar: ≤ 0.6x for the engine). */
const q4VsFp32 = Object.fromEntries(CONTENDERS.map((c) => [c, figures[2]!.msPerToken[c] / figures[1]!.msPerToken[c]]));
const rss = Object.fromEntries(CONTENDERS.filter((c) => c !== 'bare loop').map((c) => [c, peakRss(c, path24m, long)])) as Record<
  'reasonplug' | 'transformers.js',
  number
>;

const summary = figures.map((f) => ({
  model: f.model,
  msPerToken: f.msPerToken,
  firstTokenMs: f.firstTokenMs,
  ratioVsTransformersJs: f.msPerToken.reasonplug / f.msPerToken['transformers.js'],
  ratioVsBareLoop: f.msPerToken.reasonplug / f.msPerToken['bare loop'],
  intraOpThreads: threadsUsed[f.model],
}));
console.log(JSON.stringify({ bench: 'decode', rounds, short, long, models: summary, q4VsFp32, peakRssMiB24M: rss }));
printTable(
  `decode, greedy, ms/token = slope between ${short} and ${long} tokens, median of ${rounds} rounds`,
  ['model', 'threads', 'reasonplug', 'transformers.js', 'bare loop', 'vs tjs', 'vs bare', 'TTFT rp', 'TTFT tjs'],
  summary.map((s) => [
    s.model,
    String(s.intraOpThreads),
    s.msPerToken.reasonplug,
    s.msPerToken['transformers.js'],
    s.msPerToken['bare loop'],
    `${s.ratioVsTransformersJs.toFixed(2)}x`,
    `${s.ratioVsBareLoop.toFixed(2)}x`,
    s.firstTokenMs.reasonplug,
    s.firstTokenMs['transformers.js'],
  ]),
);
printTable('24M model: 4-bit ms/token over fp32 ms/token', ['contender', 'q4 / fp32'], Object.entries(q4VsFp32).map(([c, r]) => [c, `${r.toFixed(2)}x`]));
printTable('peak RSS, 24M model, fresh process, load + generate', ['contender', 'MiB'], Object.entries(rss));
