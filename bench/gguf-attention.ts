/**
 * How a converted GGUF's attention and norms are written, A/B in one process: the bench:gguf llama (768x12, GQA
 * 12/4 heads, ~125M params) or its Qwen2.5-0.5B-shaped model as a 4-bit GGUF, its weights read once and written as graphs that differ only there
 * (MatMulNBits weights, last-position logits in all):
 *   ops          MatMul/Softmax with an additive mask, each kv head's group of queries as the rows of one product,
 *                rotary by Mul/Add
 *   ops-kernels  the same with one RotaryEmbedding kernel for the rotation and the residual Adds fused into
 *                SkipSimplifiedLayerNormalization (what the converter writes where query heads share kv heads)
 *   gqa          com.microsoft::GroupQueryAttention, rotary inside from cos/sin caches (interleaved for llama's
 *                order), residual Adds fused into SkipSimplifiedLayerNormalization (what the converter writes where
 *                each query head has its own kv head)
 *   gqa-ropeops  the same with rotary by ops before the kernel (no caches)
 *   gqa-unfused  gqa with the residual Adds apart from the norms
 * Bare onnxruntime sessions, 2 intra-op threads each. The machine is shared and its load swings within seconds,
 * so the variants take turns run by run: every decode step runs once per variant in a rotating order (each its
 * own KV cache, a `--prompt`-token prompt (default 16), then `--steps` steps), and so does every 512-token prefill; idle threads do not
 * spin. Reported: medians of wall-clock and of CPU time (the work done, less swayed by the load than wall-clock),
 * and the median of the paired ratios to `ops` (each run against the `ops` run next to it). Also counts the
 * kernels of each optimized graph (what onnxruntime fused).
 *
 * Keys and values are float16, as converted GGUFs keep them (`--kv f32`: float32).
 *
 *   npm run bench:gguf-attention [-- --model llama125m|llama125mMha|qwen05b --steps 160 --prefills 9 --type Q4_0 --prompt 16
 *                                    --kv f16|f32 --variants ops,ops-kernels,gqa,gqa-ropeops,gqa-unfused]
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { llamaConfigFromGguf, llamaWeightsFromGguf } from '../packages/core/src/gguf/convert.js';
import { withGguf } from '../packages/core/src/gguf/reader.js';
import { writeLlamaModel, type LlamaBuildOptions } from '../packages/core/src/onnx/llama-builder.js';
import { readModel } from '../packages/core/src/onnx/proto.js';
import { GGML } from '../packages/core/test/support/ggml-quantize.js';
import { repoRoot } from '../test/support/paths.js';
import { cached, ggufWriterStamp } from './support/models.js';
import { randomLlamaGguf, type LlamaShape } from './support/random-llama.js';
import { median, printTable } from './support/stats.js';

/** The models of bench:gguf (same shapes, same seeds of their GGUF writer). */
const MODELS: Record<string, { shape: LlamaShape; stem: string; title: string }> = {
  llama125m: { shape: { hidden: 768, layers: 12, heads: 12, kvHeads: 4, ff: 2048, vocab: 32000 }, stem: 'llama-125m', title: 'llama 768x12' },
  // the same with a kv head per query head (multi-head attention, as Llama 2 7B and Phi-3-mini have)
  llama125mMha: { shape: { hidden: 768, layers: 12, heads: 12, kvHeads: 12, ff: 2048, vocab: 32000 }, stem: 'llama-125m-mha', title: 'llama 768x12, 12 kv heads' },
  // Qwen2.5-0.5B's shape (q/k/v biases, NeoX rotary, 14 heads over 2 KV heads, tied 151936-row head)
  qwen05b: { shape: { hidden: 896, layers: 24, heads: 14, kvHeads: 2, ff: 4864, vocab: 151936, arch: 'qwen2' }, stem: 'qwen2-0.5b', title: 'qwen2 896x24' },
};
let SHAPE: LlamaShape = MODELS.llama125m!.shape;
const THREADS = 2;
const PREFILL = 512;
let PROMPT = 16;
let KV: 'float16' | 'float32' = 'float16';
const VARIANTS: Record<string, LlamaBuildOptions> = {
  ops: { attention: 'ops' },
  'ops-kernels': { attention: 'ops', fuseResidualNorms: true, rotaryKernel: true },
  gqa: { attention: 'gqa' },
  'gqa-ropeops': { attention: 'gqa', gqaRotary: 'ops' },
  'gqa-unfused': { attention: 'gqa', fuseResidualNorms: false },
};
const dir = join(repoRoot, '.cache', 'bench', 'gguf-attention');
/** Idle intra-op threads do not spin: a session's spinning pool would take the cores of the variant that runs next. */
const SESSION: ort.InferenceSession.SessionOptions = { intraOpNumThreads: THREADS, interOpNumThreads: 1, extra: { session: { intra_op: { allow_spinning: '0' } } } };

const ids = (n: number, offset = 0) => Array.from({ length: n }, (_, i) => 3 + (((i + offset) * 7919) % (SHAPE.vocab - 3)));

/** One run: wall-clock time, and CPU time (with idle threads not spinning, the work done: less swayed by the machine's load). */
interface Timing {
  ms: number;
  cpuMs: number;
}

/** One model's bare decode state: its session, KV cache and length. */
class Runner {
  private past: Record<string, ort.Tensor> = {};
  private total = 0;
  constructor(readonly session: ort.InferenceSession) {
    this.reset();
  }

  reset(): void {
    this.past = {};
    this.total = 0;
    const kvShape = [1, SHAPE.kvHeads, 0, SHAPE.hidden / SHAPE.heads];
    const empty = () => (KV === 'float16' ? new ort.Tensor('float16', new Uint16Array(0), kvShape) : new ort.Tensor('float32', new Float32Array(0), kvShape));
    for (const n of this.session.inputNames) if (n.startsWith('past_key_values.')) this.past[n] = empty();
  }

  /** Runs `feed` after the cache; returns the run's wall-clock and CPU milliseconds (all of the process's threads). */
  async run(feed: number[]): Promise<Timing> {
    const S = feed.length;
    const T = this.total + S;
    const inputs: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', BigInt64Array.from(feed, BigInt), [1, S]),
      attention_mask: new ort.Tensor('int64', new BigInt64Array(T).fill(1n), [1, T]),
      num_logits_to_keep: new ort.Tensor('int64', BigInt64Array.from([1n]), []),
      ...this.past,
    };
    if (this.session.inputNames.includes('position_ids')) {
      inputs.position_ids = new ort.Tensor('int64', BigInt64Array.from({ length: S }, (_, i) => BigInt(this.total + i)), [1, S]);
    }
    const t = performance.now();
    const c = process.cpuUsage();
    const out = await this.session.run(inputs);
    const ms = performance.now() - t;
    const cpu = process.cpuUsage(c);
    this.past = {};
    for (const n of Object.keys(out)) if (n.startsWith('present.')) this.past[n.replace('present.', 'past_key_values.')] = out[n]!;
    this.total = T;
    return { ms, cpuMs: (cpu.user + cpu.system) / 1000 };
  }
}

/** Kernel counts of the graph onnxruntime runs (its optimized model, saved once). */
async function optimizedOps(model: string): Promise<Map<string, number>> {
  const path = `${model}.optimized.onnx`;
  const s = await ort.InferenceSession.create(model, { intraOpNumThreads: THREADS, optimizedModelFilePath: path });
  await s.release();
  const counts = new Map<string, number>();
  for (const n of (await readModel(path)).graph?.node ?? []) counts.set(n.opType!, (counts.get(n.opType!) ?? 0) + 1);
  await rm(path, { force: true });
  await rm(`${path}.data`, { force: true });
  return counts;
}

/** Runs `run(variant)` for every variant in turn, `times` times, the order rotating; returns each variant's timings. */
async function takeTurns(names: string[], times: number, run: (name: string) => Promise<Timing>): Promise<Map<string, Timing[]>> {
  const got = new Map(names.map((n) => [n, [] as Timing[]]));
  for (let k = 0; k < times; k++) {
    const order = [...names.slice(k % names.length), ...names.slice(0, k % names.length)];
    for (const n of order) got.get(n)!.push(await run(n));
  }
  return got;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      steps: { type: 'string', default: '160' },
      prefills: { type: 'string', default: '9' },
      type: { type: 'string', default: 'Q4_0' },
      model: { type: 'string', default: 'llama125m' },
      prompt: { type: 'string', default: '16' },
      kv: { type: 'string', default: 'f16' },
      variants: { type: 'string', default: Object.keys(VARIANTS).join(',') },
    },
  });
  PROMPT = Number(values.prompt);
  if (values.kv !== 'f16' && values.kv !== 'f32') throw new Error(`--kv takes f16 or f32, not ${values.kv}`);
  KV = values.kv === 'f16' ? 'float16' : 'float32';
  const model = MODELS[values.model!];
  if (!model) throw new Error(`unknown model ${values.model}; choose from ${Object.keys(MODELS).join(', ')}`);
  SHAPE = model.shape;
  const steps = Number(values.steps);
  const prefills = Number(values.prefills);
  const type = values.type as keyof typeof GGML;
  if (!(type in GGML)) throw new Error(`unknown GGUF type ${type}`);
  await mkdir(dir, { recursive: true });
  const gguf = join(dir, `${model.stem}-${type}.gguf`);
  // (as llama-quantize does for the Qwen shape, whose rows of 896 are no whole K-quant blocks: a Q8_0 embedding)
  const typeOf = (t: string) => (SHAPE.arch === 'qwen2' && t === 'token_embd.weight' && type !== 'F16' && type !== 'F32' ? GGML.Q8_0 : GGML[type]);
  await cached(gguf, JSON.stringify({ SHAPE, type, writer: ggufWriterStamp(SHAPE, typeOf) }), () => writeFile(gguf, randomLlamaGguf(SHAPE, `bench ${model.stem} ${type}`, typeOf)));
  const names = values.variants!.split(',');
  const unknown = names.filter((n) => !(n in VARIANTS));
  if (unknown.length || !names.includes('ops')) throw new Error(`--variants: ops and any of ${Object.keys(VARIANTS).join(', ')} (ratios are to ops), got ${values.variants}`);
  const paths = new Map<string, string>();
  await withGguf(gguf, async (f) => {
    const config = llamaConfigFromGguf(f);
    const weights = await llamaWeightsFromGguf(f, config);
    for (const n of names) {
      const path = join(dir, `${model.stem}-${type}-${n}-${values.kv}.onnx`);
      const maxPositions = Math.max(2048, PROMPT + steps + 16);
      await writeLlamaModel(path, config, weights, { numLogitsToKeep: true, externalData: true, maxPositions, kvDtype: KV, ...VARIANTS[n] });
      paths.set(n, path);
    }
  });
  const kernels = new Map<string, Map<string, number>>();
  for (const [n, path] of paths) kernels.set(n, await optimizedOps(path));
  const runners = new Map<string, Runner>();
  for (const [n, path] of paths) runners.set(n, new Runner(await ort.InferenceSession.create(path, SESSION)));
  const loads: number[] = [];

  // warm-up: a prefill and a few steps each
  for (const r of runners.values()) {
    await r.run(ids(PREFILL));
    r.reset();
    await r.run(ids(PROMPT));
    for (let s = 0; s < 8; s++) await r.run(ids(1, s));
    r.reset();
  }
  const prefill = await takeTurns(names, prefills, async (n) => {
    const r = runners.get(n)!;
    r.reset();
    const ms = await r.run(ids(PREFILL, 100));
    loads.push(loadavg()[0]!);
    return ms;
  });
  for (const r of runners.values()) {
    r.reset();
    await r.run(ids(PROMPT));
  }
  let step = 0;
  const decode = await takeTurns(names, steps, async (n) => runners.get(n)!.run(ids(1, PROMPT + Math.floor(step++ / names.length))));
  for (const r of runners.values()) await r.session.release();

  /** Median of each run's time over the `ops` run of the same turn. */
  const pairedRatio = (m: Map<string, Timing[]>, n: string, k: keyof Timing = 'ms') => median(m.get(n)!.map((t, i) => t[k] / m.get('ops')![i]![k]));
  const med = (m: Map<string, Timing[]>, n: string, k: keyof Timing = 'ms') => median(m.get(n)!.map((t) => t[k]));
  const fused = (n: string, op: string) => kernels.get(n)!.get(op) ?? 0;
  const result = {
    bench: 'gguf-attention',
    model: { name: values.model, ...SHAPE, type },
    kv: KV,
    promptTokens: PROMPT,
    threads: THREADS,
    decodeSteps: steps,
    prefills,
    prefillTokens: PREFILL,
    loadAverage: median(loads),
    figures: Object.fromEntries(
      names.map((n) => [
        n,
        {
          msPerToken: med(decode, n),
          decodeVsOps: pairedRatio(decode, n),
          cpuMsPerToken: med(decode, n, 'cpuMs'),
          decodeCpuVsOps: pairedRatio(decode, n, 'cpuMs'),
          prefillMs: med(prefill, n),
          prefillVsOps: pairedRatio(prefill, n),
          prefillCpuMs: med(prefill, n, 'cpuMs'),
          prefillCpuVsOps: pairedRatio(prefill, n, 'cpuMs'),
          kernels: [...kernels.get(n)!.values()].reduce((a, b) => a + b, 0),
          simplifiedLayerNorm: fused(n, 'SimplifiedLayerNormalization'),
          skipSimplifiedLayerNorm: fused(n, 'SkipSimplifiedLayerNormalization'),
        },
      ]),
    ),
  };
  console.log(JSON.stringify(result));
  printTable(
    `GGUF ${model.title} ${type}: how attention and norms are written, ${KV} keys and values, ${THREADS} threads, ${steps} decode steps after ${PROMPT} tokens and ${prefills} prefills each, turn by turn (load average ${median(loads).toFixed(1)})`,
    ['graph', 'decode ms/token', 'vs ops', 'CPU ms', 'vs ops', `prefill ${PREFILL} ms`, 'vs ops', 'CPU ms', 'vs ops', 'kernels', 'SkipSimplifiedLN'],
    names.map((n) => {
      const f = result.figures[n]!;
      const x = (r: number) => `${r.toFixed(2)}x`;
      return [n, f.msPerToken, x(f.decodeVsOps), f.cpuMsPerToken, x(f.decodeCpuVsOps), f.prefillMs, x(f.prefillVsOps), f.prefillCpuMs, x(f.prefillCpuVsOps), f.kernels, f.skipSimplifiedLayerNorm];
    }),
  );
  for (const n of names) console.log(`${n} kernels: ${[...kernels.get(n)!].sort((a, b) => b[1] - a[1]).map(([op, k]) => `${op} ${k}`).join(', ')}`);
}

await main();
