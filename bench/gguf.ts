/**
 * GGUF files through llama.cpp (node-llama-cpp) and through reasonplug (the module `convert gguf` makes, run
 * by the engine), side by side: the same random-weight model written as Q4_0, Q4_K_M, Q8_0 and F16, for a
 * ~125M-parameter llama, a model shaped like Qwen2.5-0.5B (qwen2 architecture) and a mixture of experts shaped like
 * Qwen3-30B-A3B scaled down (qwen3moe; `--models qwen3moe`, not run by default), and one shaped like gpt-oss-20b scaled
 * down (`--models gpt-oss --types MXFP4`: MXFP4 experts, the rest Q8_0, as its file is published), and DeepSeek-V2-Lite's
 * block scaled down (`--models deepseek2`: latent attention and its experts), and the hybrids LFM2-350M (`--models lfm2`)
 * and Granite 4.0-H and Qwen3.5 scaled down (`--models granitehybrid`, `--models qwen35`: Mamba2 and gated DeltaNet layers).
 * Greedy, 2 threads each.
 * Per contender and file: decode ms/token (the step time between the `--short`-th and the `--long`-th token of one generation,
 * timed from each token's arrival: the median of `--pairs` generations per process), prefill of a
 * 512-token prompt, load time (llama.cpp: model + context; reasonplug: `Engine.load` of the converted module,
 * which also starts its worker: onnxruntime-node and the engine's modules load there), time to ready from the
 * process's start (each runtime's imports and set-up included: node-llama-cpp's module and `getLlama` are outside
 * its load time) and peak RSS. Each measurement runs in a fresh process (so peak RSS
 * is the contender's own); rounds interleave contenders and files, and the figures are medians. reasonplug runs
 * from its compiled package (`dist/`, built first: what an npm install runs, as node-llama-cpp runs its compiled
 * JavaScript), or with `--from src` from the TypeScript sources under tsx. `--row-shards off` loads the engine
 * without row shards (one-thread copies of the backbone for wide batch steps; the engine opens them when a batch
 * first widens): a single stream never uses them, and llama.cpp's context here holds one sequence. `--session-cache off`
 * loads every session the usual way instead of from its saved optimized form with prepacked weights (the engine's
 * default for these models; each module is loaded once before the rounds, so none of them writes it).
 *
 * `--int8-prompts on` adds the engine loaded with `int8Prompts` (`reasonplug int8 prompts`: prompts through 8-bit
 * integer products, see packages/core/src/onnx/int8-prompt-graph.ts) as a contender of its own.
 * llama.cpp also runs on one thread (`llama.cpp 1t`; `--llama-one-thread off` leaves it out): on a 2-vCPU machine
 * node-llama-cpp's two-thread pool can lose a core to the JavaScript thread that takes each token, and its one-thread
 * step was then the faster (2026-12-06: 3.3-3.6 against 10-13 ms a token on the 125M llama's Q4_0), so the ratios are
 * given against both and against the better of the two for each figure.
 *
 * `--context N` measures decode after a prompt of N tokens instead of 8 (both contenders' contexts hold it and the
 * longest generation): at long contexts a step reads, and with onnxruntime-node copies out, the whole cache. `--kv`
 * picks the modules' keys and values: f16 (default: the converter's, llama.cpp's default cache type, which its context
 * here keeps too), f32 (`kvCache: 'float32'`) or f16-joined (`kvOutput: 'joined'`: the op graph returning the past
 * with each run's keys and values appended, for an A/B of the converter's default, the run's keys and values alone
 * written into a cache with room to spare). `--v8-marking` runs reasonplug's processes with V8 marking on the JavaScript
 * thread (`js`, default: `--no-concurrent-marking`, as the `reasonplug` executable runs) or on V8's helper threads
 * (`concurrent`, node's default), which preempt onnxruntime's threads on a machine they fill (README, design notes).
 *
 *   npm run bench:gguf [-- --rounds 3 --models llama125m,qwen05b --types Q4_0,Q4_K_M,Q8_0,F16 --short 16 --long 48 --pairs 3 --context 8 --kv f16|f32|f16-joined --from dist --row-shards auto --session-cache auto --v8-marking js --llama-one-thread on --int8-prompts off]
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { ConvertGgufOptions } from '../packages/core/src/gguf/convert.js';
import { GGML } from '../packages/core/test/support/ggml-quantize.js';
import { repoRoot } from '../test/support/paths.js';
import { randomLlamaGguf, type LlamaShape } from './support/random-llama.js';
import { median, printTable } from './support/stats.js';
import { buildCore, coreModule, parseCoreBuild, type CoreBuild } from './support/core-build.js';

/** A benchmarked model: its shape, the stem of its cached files, its GGUF name and the title of its table. */
interface BenchModel {
  shape: LlamaShape;
  stem: string;
  name: string;
  title: string;
  /** llama-quantize's type for each tensor of a Q4_0 … F16 file of `layers` layers. */
  typeOf: (file: FileType, tensor: string, layers: number) => number;
}

const MODELS: Record<string, BenchModel> = {
  // Llama-shaped, GQA, untied head
  llama125m: {
    shape: { hidden: 768, layers: 12, heads: 12, kvHeads: 4, ff: 2048, vocab: 32000 },
    stem: 'llama-125m',
    name: 'bench llama 125M',
    title: 'llama 768x12 (~125M params)',
    typeOf: (file, tensor, layers) => (file === 'Q4_K_M' ? q4kmType(tensor, layers) : GGML[file]),
  },
  // Qwen3-30B-A3B's block, scaled down: q/k norms, 32 experts of 512 a layer, 4 used per token (~440M params, ~60M active)
  qwen3moe: {
    shape: { hidden: 1024, layers: 8, heads: 16, kvHeads: 4, ff: 512, vocab: 32000, arch: 'qwen3moe', experts: { count: 32, used: 4 } },
    stem: 'qwen3moe-440m',
    name: 'bench qwen3moe 440M',
    title: 'qwen3moe 1024x8, 32 experts of 512, 4 used (~440M params, ~60M active)',
    typeOf: (file, tensor, layers) => (file === 'Q4_K_M' ? q4kmType(tensor.replace('_exps', ''), layers) : GGML[file]),
  },
  // gpt-oss-20b's block, scaled down: 32 experts of 768 a layer, 4 used per token, as the file is published: experts
  // MXFP4, the rest Q8_0 (`--types MXFP4`; the other types quantize the experts alike)
  'gpt-oss': {
    shape: { hidden: 768, layers: 8, heads: 12, kvHeads: 2, ff: 768, vocab: 32000, arch: 'gpt-oss', experts: { count: 32, used: 4 } },
    stem: 'gpt-oss-520m',
    name: 'bench gpt-oss 520M',
    title: 'gpt-oss 768x8, 32 experts of 768, 4 used (~520M params, ~80M active)',
    typeOf: (file, tensor, layers) => (file === 'MXFP4' ? (tensor.includes('_exps') ? GGML.MXFP4 : GGML.Q8_0) : file === 'Q4_K_M' ? q4kmType(tensor.replace('_exps', ''), layers) : GGML[file]),
  },
  // DeepSeek-V2-Lite's block, scaled down: latent attention (8 heads of 64 + 32 rotary, a latent of 256, values of 64),
  // 32 experts of 512, 4 used, two shared, the first layer dense (`--models deepseek2`)
  deepseek2: {
    shape: { hidden: 1024, layers: 8, heads: 8, kvHeads: 8, ff: 512, vocab: 32000, arch: 'deepseek2', experts: { count: 32, used: 4 }, latent: { kvLora: 256, rope: 32, nope: 64, value: 64 } },
    stem: 'deepseek2-460m',
    name: 'bench deepseek2 460M',
    title: 'deepseek2 1024x8, latent attention, 32 experts of 512, 4 used, 2 shared (~460M params)',
    typeOf: (file, tensor, layers) => (file === 'Q4_K_M' ? q4kmType(tensor.replace('_exps', ''), layers) : GGML[file]),
  },
  // LFM2-350M's shape: 16 layers, 6 of them attention (as LFM2's 2, 5, 8, 10, 12, 14), the others gated short convolutions (`--models lfm2`)
  lfm2: {
    shape: { hidden: 1024, layers: 16, heads: 16, kvHeads: 8, ff: 4608, vocab: 32000, arch: 'lfm2', hybrid: { attention: [2, 5, 8, 10, 12, 14] } },
    stem: 'lfm2-350m',
    name: 'bench lfm2 350M',
    title: 'lfm2 1024x16, 10 short-convolution layers, 6 attention (~350M params)',
    typeOf: (file, tensor, layers) => (file === 'Q4_K_M' ? q4kmType(tensor, layers) : GGML[file]),
  },
  // Granite 4.0-H's layout scaled down: 12 layers, 2 of them attention without rotary, the others Mamba2 mixers (24 heads of
  // 64, states of 128) (`--models granitehybrid`)
  granitehybrid: {
    shape: { hidden: 768, layers: 12, heads: 12, kvHeads: 4, ff: 2048, vocab: 32000, arch: 'granitehybrid', hybrid: { attention: [5, 11] } },
    stem: 'granitehybrid-150m',
    name: 'bench granitehybrid 150M',
    title: 'granitehybrid 768x12, 10 Mamba2 layers, 2 attention (~150M params)',
    typeOf: (file, tensor, layers) => (file === 'Q4_K_M' ? q4kmType(tensor, layers) : GGML[file]),
  },
  // Qwen3.5-0.8B's block, half its layers: 9 gated DeltaNet layers (16 key and value heads of 128) and 3 gated attention
  // layers (8 heads of 256, 2 KV heads) (`--models qwen35`)
  qwen35: {
    shape: { hidden: 1024, layers: 12, heads: 8, kvHeads: 2, ff: 3584, vocab: 32000, arch: 'qwen35', hybrid: { attention: [3, 7, 11], headDim: 256 } },
    stem: 'qwen35-400m',
    name: 'bench qwen35 400M',
    title: 'qwen35 1024x12, 9 gated DeltaNet layers, 3 gated attention (~400M params)',
    typeOf: (file, tensor, layers) => (file === 'Q4_K_M' ? q4kmType(tensor, layers) : GGML[file]),
  },
  // Qwen2.5-0.5B's shape: q/k/v biases, tied head, 151936-token byte-level BPE vocabulary
  qwen05b: {
    shape: { hidden: 896, layers: 24, heads: 14, kvHeads: 2, ff: 4864, vocab: 151936, arch: 'qwen2' },
    stem: 'qwen2-0.5b',
    name: 'bench qwen2 0.5B',
    title: 'qwen2 896x24, Qwen2.5-0.5B-shaped (~494M params)',
    typeOf: qwenType,
  },
};
const THREADS = 2;
const PREFILL = 512;
const PROMPT = [1, 415, 2936, 9060, 285, 1142, 10575, 975];
const TYPES = ['Q4_0', 'Q4_K_M', 'Q8_0', 'F16', 'MXFP4'] as const;
type FileType = (typeof TYPES)[number];
/** The types measured unless `--types` says otherwise (MXFP4 is gpt-oss's). */
const DEFAULT_TYPES: readonly FileType[] = ['Q4_0', 'Q4_K_M', 'Q8_0', 'F16'];
type ModelName = keyof typeof MODELS;
type Contender = 'llama.cpp' | 'llama.cpp 1t' | 'reasonplug' | 'reasonplug int8 prompts';
/** The reasonplug contenders: the engine as it loads by default, and with `int8Prompts` (`--int8-prompts on`). */
const OURS: Contender[] = ['reasonplug', 'reasonplug int8 prompts'];
/** The llama.cpp contenders: its two-thread run (the issue's setting) and its one-thread run. */
const LLAMA: Contender[] = ['llama.cpp', 'llama.cpp 1t'];
/** The converted modules' KV cache type (`--kv`). */
type KvCache = 'f32' | 'f16' | 'f16-joined';
/** Whether the engine opens its row shards as it does by default (`auto`) or not at all (`off`). */
type RowShards = 'auto' | 'off';
/** The engine's load choices: row shards, and whether sessions come from their saved optimized form (`sessionCache`). */
interface EngineChoices {
  rowShards: RowShards;
  sessionCache: 'auto' | 'off';
  /** Where V8 marks in reasonplug's processes: on the JavaScript thread, as the `reasonplug` executable runs, or V8's default helper threads. */
  v8Marking: 'js' | 'concurrent';
}

interface Figures {
  loadMs: number;
  /** From the process's start to ready: the runtime's imports and set-up (the engine's modules and worker;
   * node-llama-cpp's module and `getLlama`), then the load; each child imports only its own contender. */
  readyMs: number;
  prefillMs: number;
  msPerToken: number;
  peakRssMb: number;
}

const dir = join(repoRoot, '.cache', 'bench', 'gguf');

/** llama-quantize's Q4_K_M choice per tensor (Q6_K for attn_v/ffn_down in the first and last eighths and every third layer between, and the head). */
function q4kmType(name: string, n: number): number {
  const layer = Number(/^blk\.(\d+)\./.exec(name)?.[1] ?? -1);
  const moreBits = layer < n / 8 || layer >= (7 * n) / 8 || (layer - Math.floor(n / 8)) % 3 === 2;
  if (name === 'output.weight') return GGML.Q6_K;
  if (/attn_v|ffn_down/.test(name) && moreBits) return GGML.Q6_K;
  return GGML.Q4_K;
}

/**
 * llama-quantize's choice per tensor of the Qwen2.5-0.5B shape, whose rows of 896 do not divide into K-quant
 * blocks of 256: the tied embedding (the head) is Q8_0 in every quantized file, and in Q4_K_M the Q4_K/Q6_K
 * tensors of 896-wide rows fall back to Q5_0/Q8_0 (only ffn_down, rows of 4864, keeps K-quants).
 */
function qwenType(file: FileType, name: string, layers: number): number {
  if (file === 'F16') return GGML.F16;
  if (name === 'token_embd.weight') return GGML.Q8_0;
  if (file !== 'Q4_K_M') return GGML[file];
  const type = q4kmType(name, layers);
  if (name.includes('ffn_down')) return type;
  return type === GGML.Q6_K ? GGML.Q8_0 : GGML.Q5_0;
}

/**
 * The GGUF of `model` as `file` and its converted module, written again when the shape changes or when what the GGUF
 * writer or the converter writes for a miniature of the model does (bench/support/models.ts): an older file or module
 * would measure an older model or graph. The miniature is converted by the code this process converts with, so a
 * source edited during a long run does not stamp a module the older code converted as current.
 */
async function prepare(name: ModelName, file: FileType, kvCache: KvCache): Promise<{ gguf: string; module: string }> {
  // (imported here: the measuring children load neither the converter nor the builders)
  const { converterStamp, ggufWriterStamp } = await import('./support/models.js');
  const { shape: SHAPE, stem, name: ggufName, typeOf } = MODELS[name]!;
  const type = (tensor: string, layers: number) => typeOf(file, tensor, layers);
  const gguf = join(dir, `${stem}-${file}.gguf`);
  const module = join(dir, `${stem}-${file}${{ f32: '', f16: '-kv16', 'f16-joined': '-kv16-joined' }[kvCache]}`);
  const recipe = JSON.stringify({ SHAPE, file, writer: ggufWriterStamp(SHAPE, type) });
  const stamp = `${gguf}.recipe`;
  if (!existsSync(gguf) || (await readFile(stamp, 'utf8').catch(() => '')) !== recipe) {
    await mkdir(dir, { recursive: true });
    console.error(`writing ${gguf}`);
    // each tensor's values seeded by its place in the file, so every file holds the same model
    await writeFile(gguf, randomLlamaGguf(SHAPE, `${ggufName} ${file}`, (t) => type(t, SHAPE.layers)));
    await rm(module, { recursive: true, force: true });
    await writeFile(stamp, recipe);
  }
  const options: ConvertGgufOptions = { kvCache: kvCache === 'f32' ? 'float32' : 'float16', ...(kvCache === 'f16-joined' ? { kvOutput: 'joined' as const } : {}) };
  // (every bench model is past the converter's threshold for external data, which the miniature is not)
  const moduleRecipe = JSON.stringify({ gguf: recipe, converter: await converterStamp(SHAPE, type, { ...options, externalData: true }) });
  const moduleStamp = `${module}.converter`;
  if (!existsSync(join(module, 'reasonplug.json')) || (await readFile(moduleStamp, 'utf8').catch(() => '')) !== moduleRecipe) {
    console.error(`converting ${gguf}`);
    await rm(module, { recursive: true, force: true });
    const { convertGguf } = await import('../packages/core/src/gguf/convert.js');
    await convertGguf(gguf, module, options);
    await writeFile(moduleStamp, moduleRecipe);
  }
  return { gguf, module };
}

/** Peak resident set of this process in MB (VmHWM: unlike getrusage's maxrss it starts afresh at exec). */
function peakRssMb(): number {
  const kb = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1];
  return kb ? Number(kb) / 1024 : process.resourceUsage().maxRSS / 1024;
}

const ids = (n: number, vocab: number) => Array.from({ length: n }, (_, i) => 3 + ((i * 7919) % (vocab - 3)));
/** The prompt decode is measured after: the 8-token one, or `context` tokens. */
const decodePrompt = (context: number, vocab: number) => (context > PROMPT.length ? [PROMPT[0]!, ...ids(context - 1, vocab)] : PROMPT);

/**
 * The same timing protocol for both contenders, given `gen(prompt, n)` → each token's arrival (ms from the call) in
 * an n-token greedy generation: a warm-up, then `pairs` generations of `long` tokens, each giving the step time
 * between its `short`-th and its last token (decode ms/token: the median of them, so one generation slowed by a
 * neighbour on the machine does not set the figure; the prompt's prefill stays outside it, which at a long
 * `--context` would otherwise swamp the steps), and as many 512-token prefills (the first token's arrival; their
 * median).
 */
async function timeGenerations(
  gen: (prompt: number[], n: number) => Promise<number[]>,
  vocab: number,
  short: number,
  long: number,
  pairs: number,
  context: number,
): Promise<{ msPerToken: number; prefillMs: number }> {
  const prompt = decodePrompt(context, vocab);
  await gen(prompt, short);
  const stepTimes: number[] = [];
  const prefills: number[] = [];
  for (let i = 0; i < pairs; i++) {
    const arrivals = await gen(prompt, long);
    if (arrivals.length < long) throw new Error(`a ${long}-token generation stopped after ${arrivals.length} tokens`);
    stepTimes.push((arrivals[long - 1]! - arrivals[short - 1]!) / (long - short));
    prefills.push((await gen(ids(PREFILL, vocab), 1))[0]!);
  }
  return { msPerToken: median(stepTimes), prefillMs: median(prefills) };
}

/** `Engine.load`'s options for a bench module. */
function engineLoadOptions(module: string, choices: EngineChoices, int8Prompts = false) {
  return { model: module, ...(int8Prompts ? { int8Prompts } : {}), intraOpThreads: THREADS, prefixCacheBytes: 0, ...(choices.rowShards === 'off' ? { rowShards: false } : {}), ...(choices.sessionCache === 'off' ? { sessionCache: false } : {}) };
}

/** One contender's figures on one file of a model of `vocab` tokens, measured in this (fresh) process. */
async function measureHere(contender: Contender, gguf: string, module: string, vocab: number, short: number, long: number, pairs: number, context: number, from: CoreBuild, choices: EngineChoices): Promise<Figures> {
  if (OURS.includes(contender)) {
    const { Engine } = (await import(coreModule(from, 'engine'))) as typeof import('../packages/core/src/engine.js');
    const t0 = performance.now();
    // No prefix cache: llama.cpp's sequence is cleared before each call here, so neither keeps earlier prompts
    // (the random 512-token prompts would never be reused, only held: up to 128 MiB more RSS).
    const engine = await Engine.load(engineLoadOptions(module, choices, contender === 'reasonplug int8 prompts'));
    const loadMs = performance.now() - t0;
    // performance.now() counts from the process's start
    const readyMs = performance.now();
    const gen = async (promptIds: number[], n: number) => {
      const t = performance.now();
      const arrivals: number[] = [];
      for await (const _ of engine.stream({ promptIds }, { maxTokens: n, ignoreEos: true })) arrivals.push(performance.now() - t);
      return arrivals;
    };
    const timed = await timeGenerations(gen, vocab, short, long, pairs, context);
    await engine.dispose();
    return { loadMs, readyMs, ...timed, peakRssMb: peakRssMb() };
  }
  const { getLlama, LlamaLogLevel } = await import('node-llama-cpp');
  const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
  const t0 = performance.now();
  const model = await llama.loadModel({ modelPath: gguf });
  const ctx = await model.createContext({ contextSize: Math.max(1024, context + long + 16), threads: contender === 'llama.cpp 1t' ? 1 : THREADS, batchSize: PREFILL });
  const loadMs = performance.now() - t0;
  const readyMs = performance.now();
  const seq = ctx.getSequence();
  const gen = async (promptIds: number[], n: number) => {
    await seq.clearHistory();
    const t = performance.now();
    const arrivals: number[] = [];
    for await (const _ of seq.evaluate(promptIds as never[], { temperature: 0 })) if (arrivals.push(performance.now() - t) >= n) break;
    return arrivals;
  };
  const timed = await timeGenerations(gen, vocab, short, long, pairs, context);
  await ctx.dispose();
  await model.dispose();
  return { loadMs, readyMs, ...timed, peakRssMb: peakRssMb() };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      rounds: { type: 'string', default: '3' },
      models: { type: 'string', default: 'llama125m,qwen05b' },
      types: { type: 'string', default: DEFAULT_TYPES.join(',') },
      short: { type: 'string', default: '16' },
      long: { type: 'string', default: '48' },
      pairs: { type: 'string', default: '3' },
      context: { type: 'string', default: '8' },
      kv: { type: 'string', default: 'f16' },
      child: { type: 'string' },
      gguf: { type: 'string' },
      module: { type: 'string' },
      vocab: { type: 'string' },
      from: { type: 'string', default: 'dist' },
      'row-shards': { type: 'string', default: 'auto' },
      'session-cache': { type: 'string', default: 'auto' },
      'v8-marking': { type: 'string', default: 'js' },
      'llama-one-thread': { type: 'string', default: 'on' },
      'int8-prompts': { type: 'string', default: 'off' },
    },
  });
  const from = parseCoreBuild(values.from!);
  const rowShards = values['row-shards'] as RowShards;
  if (rowShards !== 'auto' && rowShards !== 'off') throw new Error(`--row-shards must be auto or off; got ${rowShards}`);
  const sessionCache = values['session-cache'] as EngineChoices['sessionCache'];
  if (sessionCache !== 'auto' && sessionCache !== 'off') throw new Error(`--session-cache must be auto or off; got ${sessionCache}`);
  const v8Marking = values['v8-marking'] as EngineChoices['v8Marking'];
  if (v8Marking !== 'js' && v8Marking !== 'concurrent') throw new Error(`--v8-marking must be js or concurrent; got ${v8Marking}`);
  const choices: EngineChoices = { rowShards, sessionCache, v8Marking };
  const oneThread = values['llama-one-thread'];
  if (oneThread !== 'on' && oneThread !== 'off') throw new Error(`--llama-one-thread must be on or off; got ${oneThread}`);
  const int8 = values['int8-prompts'];
  if (int8 !== 'on' && int8 !== 'off') throw new Error(`--int8-prompts must be on or off; got ${int8}`);
  const contenders: Contender[] = [...(oneThread === 'on' ? LLAMA : ['llama.cpp' as const]), 'reasonplug', ...(int8 === 'on' ? ['reasonplug int8 prompts' as const] : [])];
  const short = Number(values.short);
  const long = Number(values.long);
  const pairs = Number(values.pairs);
  if (!(pairs >= 1)) throw new Error(`--pairs must be at least 1; got ${values.pairs}`);
  const kvCache = values.kv as KvCache;
  if (kvCache !== 'f32' && kvCache !== 'f16' && kvCache !== 'f16-joined') throw new Error(`--kv must be f32, f16 or f16-joined; got ${values.kv}`);
  const context = Number(values.context);
  if (!(context >= 1)) throw new Error(`--context must be at least 1; got ${values.context}`);
  if (values.child === 'warm') {
    const { Engine } = (await import(coreModule(from, 'engine'))) as typeof import('../packages/core/src/engine.js');
    await (await Engine.load(engineLoadOptions(values.module!, choices, values['int8-prompts'] === 'on'))).dispose();
    return;
  }
  if (values.child) {
    const fig = await measureHere(values.child as Contender, values.gguf!, values.module!, Number(values.vocab), short, long, pairs, context, from, choices);
    process.stdout.write(JSON.stringify(fig) + '\n');
    return;
  }
  const models = values.models!.split(',');
  for (const m of models) if (!(m in MODELS)) throw new Error(`unknown model ${m}; choose from ${Object.keys(MODELS).join(', ')}`);
  const types = values.types!.split(',') as FileType[];
  for (const t of types) if (!TYPES.includes(t)) throw new Error(`unknown type ${t}; choose from ${TYPES.join(', ')}`);
  if (from === 'dist') buildCore();
  for (const m of models) await benchModel(m, types, contenders, Number(values.rounds), short, long, pairs, context, kvCache, from, choices);
}

/** Measures one model's files, then prints its JSON line and table. */
async function benchModel(name: ModelName, types: FileType[], contenders: Contender[], rounds: number, short: number, long: number, pairs: number, context: number, kvCache: KvCache, from: CoreBuild, choices: EngineChoices): Promise<void> {
  const { shape, title } = MODELS[name]!;
  const files = new Map<FileType, { gguf: string; module: string }>();
  for (const t of types) files.set(t, await prepare(name, t, kvCache));
  const got = new Map<string, Figures[]>();
  const loads: number[] = [];
  const self = fileURLToPath(import.meta.url);
  const choiceArgs = ['--from', from, '--row-shards', choices.rowShards, '--session-cache', choices.sessionCache];
  // One load of each module first, so that no round pays for the prepared graph or the saved session being written.
  for (const { module } of files.values()) {
    for (const int8 of contenders.includes('reasonplug int8 prompts') ? ['off', 'on'] : ['off']) {
      execFileSync(process.execPath, [...process.execArgv, self, '--child', 'warm', '--module', module, '--int8-prompts', int8, ...choiceArgs], { stdio: ['ignore', 'ignore', 'inherit'] });
    }
  }
  for (let round = 0; round < rounds; round++) {
    for (const t of types) {
      const order = round % 2 === 0 ? contenders : [...contenders].reverse();
      for (const c of order) {
        const { gguf, module } = files.get(t)!;
        const out = execFileSync(
          process.execPath,
          [...process.execArgv, ...(OURS.includes(c) && choices.v8Marking === 'js' ? ['--no-concurrent-marking'] : []), self, '--child', c, '--gguf', gguf, '--module', module, '--vocab', String(shape.vocab), '--short', String(short), '--long', String(long), '--pairs', String(pairs), '--context', String(context), ...choiceArgs],
          { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, NODE_LLAMA_CPP_SKIP_DOWNLOAD: 'true' } },
        );
        const fig = JSON.parse(out.trim().split('\n').pop()!) as Figures;
        loads.push(loadavg()[0]!);
        const key = `${t}|${c}`;
        got.set(key, [...(got.get(key) ?? []), fig]);
        console.error(`round ${round + 1}/${rounds} ${name} ${t} ${c}: ${JSON.stringify(fig)}`);
      }
    }
  }
  const med = (t: FileType, c: Contender, k: keyof Figures) => median(got.get(`${t}|${c}`)!.map((f) => f[k]));
  const result = {
    bench: 'gguf',
    model: { name, ...shape, title },
    threads: THREADS,
    rounds,
    short,
    long,
    pairs,
    context,
    kvCache,
    prefillTokens: PREFILL,
    reasonplugFrom: from,
    rowShards: choices.rowShards,
    sessionCache: choices.sessionCache,
    v8Marking: choices.v8Marking,
    // the 1-minute load average while measuring: on a shared machine, llama.cpp's spinning thread pool suffers most
    loadAverage: median(loads),
    figures: Object.fromEntries(
      types.map((t) => [
        t,
        Object.fromEntries(
          contenders.map((c) => [
            c,
            { msPerToken: med(t, c, 'msPerToken'), prefillMs: med(t, c, 'prefillMs'), loadMs: med(t, c, 'loadMs'), readyMs: med(t, c, 'readyMs'), peakRssMb: med(t, c, 'peakRssMb') },
          ]),
        ),
      ]),
    ),
  };
  console.log(JSON.stringify(result));
  const rows: (string | number)[][] = [];
  for (const t of types) {
    for (const c of contenders) rows.push([`${t} ${c}`, med(t, c, 'msPerToken'), med(t, c, 'prefillMs'), med(t, c, 'loadMs'), med(t, c, 'readyMs'), med(t, c, 'peakRssMb')]);
    const keys: (keyof Figures)[] = ['msPerToken', 'prefillMs', 'loadMs', 'readyMs', 'peakRssMb'];
    // Against each llama.cpp run, then against the better of them for each figure (all figures: lower is better).
    const anchors = LLAMA.filter((c) => contenders.includes(c));
    for (const ours of OURS.filter((c) => contenders.includes(c))) {
      for (const a of anchors) rows.push([`${t} ${ours} / ${a}`, ...keys.map((k) => `${(med(t, ours, k) / med(t, a, k)).toFixed(2)}x`)]);
      if (anchors.length > 1) rows.push([`${t} ${ours} / best llama.cpp`, ...keys.map((k) => `${(med(t, ours, k) / Math.min(...anchors.map((a) => med(t, a, k)))).toFixed(2)}x`)]);
    }
  }
  printTable(
    `GGUF ${title}, ${THREADS} threads, greedy${context > PROMPT.length ? `, decode after ${context} tokens` : ''}${{ f32: ', reasonplug with a float32 KV cache', f16: '', 'f16-joined': ', reasonplug with joined presents' }[kvCache]}, reasonplug from ${from === 'dist' ? 'dist/' : 'sources (tsx)'}${choices.rowShards === 'off' ? ' without row shards' : ''}${choices.sessionCache === 'off' ? ' without saved sessions' : ''}, medians of ${rounds} rounds (load average ${median(loads).toFixed(1)})`,
    ['file / contender', 'decode ms/token', `prefill ${PREFILL} ms`, 'load ms', 'ready ms', 'peak RSS MB'],
    rows,
  );
}

await main();
