/**
 * Decode speed and memory, side by side in one run: reasonplug's engine vs transformers.js 4.x vs a bare
 * loop of `session.run` calls, on the same ONNX files and the same intra-op threads (the engine's choice for the
 * model, or onnxruntime's default where it leaves it). Greedy; per-token time is the slope between a short and a
 * long generation (so load and prefill do not blur it; a round whose slope comes out ≤ 0 on a busy machine is run
 * again, and counted); medians over rounds that interleave contenders. Peak RSS comes from a fresh process per
 * contender that imports that contender alone.
 *
 *   npm run bench:decode [-- --rounds 5 --short 16 --long 144]
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { median, printTable } from './support/stats.js';
import { SlopeRounds } from './support/slope.js';
import { models } from '../test/support/paths.js';

type Contender = 'reasonplug' | 'transformers.js' | 'bare loop';
const CONTENDERS: Contender[] = ['reasonplug', 'transformers.js', 'bare loop'];

interface Runner {
  /** Generates n tokens greedily; returns ms to the first token and in total. */
  run(n: number): Promise<{ firstTokenMs: number; totalMs: number }>;
  dispose(): Promise<void>;
}

/**
 * Loads one contender on `threads` intra-op threads (onnxruntime's default where undefined; the engine picks its
 * own and reports them). Each imports only its own runtime, so an RSS probe's process holds that contender alone.
 */
async function load(contender: Contender, onnxPath: string, prompt: number[], threads?: number): Promise<Runner & { threads?: number }> {
  if (contender === 'reasonplug') {
    const { Engine } = await import('@reasonplug/core');
    const engine = await Engine.load({ model: onnxPath });
    return {
      ...(engine.info.intraOpThreads ? { threads: engine.info.intraOpThreads } : {}),
      async run(n) {
        const t0 = performance.now();
        let first = 0;
        const stream = engine.stream({ promptIds: prompt }, { maxTokens: n, ignoreEos: true });
        for await (const _ of stream) if (!first) first = performance.now() - t0;
        await stream.result;
        return { firstTokenMs: first, totalMs: performance.now() - t0 };
      },
      dispose: () => engine.dispose(),
    };
  }
  const sessionOptions = threads ? { intraOpNumThreads: threads } : {};
  if (contender === 'bare loop') {
    const { loadBareLoop } = await import('./support/bare-loop.js');
    const impl = await loadBareLoop(onnxPath, sessionOptions);
    return { run: (n) => impl.generate(prompt, n), dispose: () => impl.dispose() };
  }
  const { loadTransformersModel, prepareTransformersDir, readDecoderInfo } = await import('./support/transformers-ref.js');
  const impl = await loadTransformersModel(await prepareTransformersDir(onnxPath, await readDecoderInfo(onnxPath)), sessionOptions);
  return { run: (n) => impl.generate(prompt, n), dispose: () => impl.dispose() };
}

interface ModelFigures {
  model: string;
  /** The intra-op threads all three contenders ran on; undefined: onnxruntime's default. */
  threads?: number;
  msPerToken: Record<Contender, number>;
  firstTokenMs: Record<Contender, number>;
}

async function measure(label: string, onnxPath: string, prompt: number[], slope: SlopeRounds, rounds: number): Promise<ModelFigures> {
  const runners = new Map<Contender, Runner>();
  // The others run on the engine's thread count: the bare loop stays the floor of the same configuration, and
  // transformers.js is compared on equal threads (with onnxruntime's default it took both cores where the
  // engine took one).
  const engine = await load('reasonplug', onnxPath, prompt);
  runners.set('reasonplug', engine);
  for (const c of CONTENDERS.slice(1)) runners.set(c, await load(c, onnxPath, prompt, engine.threads));
  const slopes = new Map<Contender, number[]>(CONTENDERS.map((c) => [c, []]));
  const firsts = new Map<Contender, number[]>(CONTENDERS.map((c) => [c, []]));
  for (const r of runners.values()) await r.run(slope.short); // warm-up
  for (let round = 0; round < rounds; round++) {
    // Rotate the order each round so no contender always runs first (or last) on a warm machine.
    const order = CONTENDERS.map((_, i) => CONTENDERS[(i + round) % CONTENDERS.length]!);
    for (const c of order) {
      const r = runners.get(c)!;
      const { msPerToken, runs } = await slope.take(`${label}, ${c}`, (n) => r.run(n), (x) => x.totalMs);
      slopes.get(c)!.push(msPerToken);
      firsts.get(c)!.push(...runs.map((x) => x.firstTokenMs));
    }
  }
  for (const r of runners.values()) await r.dispose();
  const pick = (m: Map<Contender, number[]>) =>
    Object.fromEntries(CONTENDERS.map((c) => [c, median(m.get(c)!)])) as Record<Contender, number>;
  return { model: label, ...(engine.threads ? { threads: engine.threads } : {}), msPerToken: pick(slopes), firstTokenMs: pick(firsts) };
}

/**
 * Peak RSS (MiB) of a fresh process that loads the model and generates `n` tokens with one contender on `threads`
 * intra-op threads (as measured).
 */
function peakRss(contender: Contender, onnxPath: string, prompt: number[], n: number, threads: number | undefined): number {
  const out = execFileSync(
    process.execPath,
    ['--import', 'tsx', fileURLToPath(import.meta.url), '--rss-probe', contender, '--model', onnxPath, '--prompt', prompt.join(','), '--long', String(n), ...(threads ? ['--threads', String(threads)] : [])],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] },
  );
  return Number(out.trim().split('\n').pop());
}

/**
 * Peak resident set of this process in MiB: VmHWM, which starts afresh at exec; getrusage's maxRSS keeps the
 * high-water mark of the process it was forked from, here the benchmark holding every contender's models.
 */
function ownPeakRssMiB(): number {
  const kb = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1];
  return kb ? Number(kb) / 1024 : process.resourceUsage().maxRSS / 1024;
}

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '9' },
    short: { type: 'string', default: '16' },
    long: { type: 'string', default: '144' },
    'rss-probe': { type: 'string' },
    model: { type: 'string' },
    prompt: { type: 'string' },
    threads: { type: 'string' },
  },
});

if (values['rss-probe']) {
  // Nothing but the contender is imported here: the prompt comes on the command line, not from the bench's models.
  if (!values.prompt || !values.model) throw new Error('--rss-probe needs --model and --prompt (token ids, comma-separated)');
  const prompt = values.prompt.split(',').map(Number);
  const runner = await load(values['rss-probe'] as Contender, values.model, prompt, values.threads ? Number(values.threads) : undefined);
  await runner.run(Number(values.long));
  await runner.dispose();
  console.log(ownPeakRssMiB().toFixed(1));
  process.exit(0);
}

const { llamaParameterCount } = await import('@reasonplug/core');
const { benchLlama, benchQuantized, LLAMA_24M, PROMPT } = await import('./support/models.js');
const rounds = Number(values.rounds);
const slope = new SlopeRounds(Number(values.short), Number(values.long));
const { short, long } = slope;
const fp16Path = join(models.llamaFp16, 'model.onnx');
const path24m = await benchLlama('llama24m', LLAMA_24M, 1);
const path24mQ4 = await benchQuantized(path24m, { bits: 4 });
// (the same weights from a directory of their own, so that the 4-bit-head quantization has its own path; as
// bench:compose makes it)
const path24mQ4Head4 = await benchQuantized(await benchLlama('llama24m-head4', LLAMA_24M, 1), { bits: 4, headBits: 4 });
// Prepared graphs are made once and cached; do that outside the measurements.
for (const p of [fp16Path, path24m, path24mQ4, path24mQ4Head4]) await (await load('reasonplug', p, PROMPT)).dispose();

const figures = [
  await measure('tiny-random-llama-fp16 (overhead-bound)', fp16Path, PROMPT, slope, rounds),
  await measure(`llama-24M fp32 (${(llamaParameterCount(LLAMA_24M) / 1e6).toFixed(1)}M params, compute-bound)`, path24m, PROMPT, slope, rounds),
  // `reasonplug quantize --bits 4` keeps the LM head at 8 bits unless --head-bits 4
  await measure('llama-24M 4-bit, 8-bit head (reasonplug quantize: MatMulNBits, block 32)', path24mQ4, PROMPT, slope, rounds),
  // issue #17's "MatMul weights including the LM head"
  await measure('llama-24M 4-bit, 4-bit head (reasonplug quantize --head-bits 4)', path24mQ4Head4, PROMPT, slope, rounds),
];
/** Each 4-bit model's time per token over the fp32 model's, per contender (the bar: ≤ 0.6x for the engine). */
const overFp32 = (q: ModelFigures) => Object.fromEntries(CONTENDERS.map((c) => [c, q.msPerToken[c] / figures[1]!.msPerToken[c]])) as Record<Contender, number>;
const q4VsFp32 = overFp32(figures[2]!);
const q4Head4VsFp32 = overFp32(figures[3]!);
const rss = Object.fromEntries(
  CONTENDERS.filter((c) => c !== 'bare loop').map((c) => [c, peakRss(c, path24m, PROMPT, long, figures[1]!.threads)]),
) as Record<'reasonplug' | 'transformers.js', number>;

const summary = figures.map((f) => ({
  model: f.model,
  msPerToken: f.msPerToken,
  firstTokenMs: f.firstTokenMs,
  ratioVsTransformersJs: f.msPerToken.reasonplug / f.msPerToken['transformers.js'],
  ratioVsBareLoop: f.msPerToken.reasonplug / f.msPerToken['bare loop'],
  intraOpThreads: f.threads ?? 'onnxruntime default',
}));
console.log(JSON.stringify({ bench: 'decode', rounds, short, long, reruns: slope.reruns, models: summary, q4VsFp32, q4Head4VsFp32, peakRssMiB24M: rss }));
printTable(
  `decode, greedy, ms/token = slope between ${short} and ${long} tokens, median of ${rounds} rounds${slope.note()}; all three contenders on the same intra-op threads`,
  ['model', 'threads (all)', 'reasonplug', 'transformers.js', 'bare loop', 'vs tjs', 'vs bare', 'TTFT rp', 'TTFT tjs'],
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
printTable(
  '24M model: 4-bit ms/token over fp32 ms/token',
  ['contender', 'q4, 8-bit head / fp32', 'q4, 4-bit head / fp32'],
  CONTENDERS.map((c) => [c, `${q4VsFp32[c].toFixed(2)}x`, `${q4Head4VsFp32[c].toFixed(2)}x`]),
);
printTable('peak RSS (VmHWM), 24M model, fresh process importing only its contender, load + generate', ['contender', 'MiB'], Object.entries(rss));
