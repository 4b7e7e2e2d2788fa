/**
 * What a decode step's matrix products cost at 1-16 rows under each MatMulNBits configuration onnxruntime offers
 * on this CPU (issue 19: the 4-bit ~125M model's wide batch step). The products of one step of the bench:serve
 * model (dim 768, 12 layers, GQA 12/4, ffn 2048, vocab 32000): per layer q/k/v 768→1280, o 768→768, gate and up
 * 768→2048, down 2048→768, then the 768→32000 head — 61 products, as independent nodes of one graph on random
 * weights (a kernel's time does not depend on the values), each configuration its own bare onnxruntime session.
 *
 * Configurations: 4-bit at accuracy_level 0-4 (onnxruntime maps every level but 4 to fp32 compute for fp32 inputs:
 * contrib_ops/cpu/quantization/matmul_nbits.cc GetComputeType), block 32/64/128, with and without zero points;
 * 8-bit at level 4; dense fp32 MatMul; and `qgemm`, int8 weights with one scale per column as
 * `DynamicQuantizeMatMul` (its activations quantized per call to 8 bits with one scale for the whole input), which
 * onnxruntime runs on MLAS's QGEMM (AMX or VNNI kernels where the CPU has them; MatMulNBits has neither). Rows of a
 * prompt's size (`--rows 64,512`) show what prefill would gain from it. Rounds interleave configurations and widths (order rotated each round);
 * figures are medians of the rounds' per-step times, in ms, with the range of the middle half.
 *
 * `--graph PATH` instead times whole decode steps of a converted decoder (e.g. bench:serve's Q4_0 module under
 * ~/.cache/reasonplug/gguf/…/model.onnx): one row per sequence, `--past` (40) cached positions, sessions on
 * `--threads` (here default 1,2) interleaved, 8 consecutive steps per width and round. With `--engine DIR` (the
 * module directory holding that graph) each round also runs the Engine on 2 threads, one call alone and `--calls`
 * (8) concurrent greedy calls of 16 tokens, and reports their median inter-token latency beside the bare steps:
 * what the engine adds around onnxruntime's run at each width.
 *
 *   npm run bench:nbits-width [-- --rounds 15 --threads 1 --rows 1,2,4,8,16 --configs a4b32z,a4b128,...]
 *   npm run bench:nbits-width -- --graph PATH [--past 40 --rounds 15 --threads 1,2 --engine DIR --calls 8]
 */
import { parseArgs } from 'node:util';
import { cpus, loadavg } from 'node:os';
import * as ort from 'onnxruntime-node';
import { Engine } from '../packages/core/src/engine.js';
import { DataType, encodeModel, makeNode, makeTensor, makeValueInfo, type NodeProto, type TensorProto } from '../packages/core/src/onnx/proto.js';
import { float32ArrayToFloat16 } from '../packages/core/src/onnx/float16.js';
import { median, printTable, quartiles } from './support/stats.js';

const DIM = 768;
const FF = 2048;
const QKV = 768 + 2 * 256;
const VOCAB = 32000;
const LAYERS = 12;

/** One MatMulNBits (or dense) configuration. */
interface Config {
  name: string;
  /** 32: dense fp32 MatMul; 'qgemm': int8 per-column weights through DynamicQuantizeMatMul; else MatMulNBits. */
  bits: 4 | 8 | 32 | 'qgemm';
  accuracy: number;
  block: number;
  zeroPoints: boolean;
}

const ALL: Config[] = [
  { name: 'a4b32z', bits: 4, accuracy: 4, block: 32, zeroPoints: true },
  { name: 'a4b32', bits: 4, accuracy: 4, block: 32, zeroPoints: false },
  { name: 'a4b64z', bits: 4, accuracy: 4, block: 64, zeroPoints: true },
  { name: 'a4b128z', bits: 4, accuracy: 4, block: 128, zeroPoints: true },
  { name: 'a4b128', bits: 4, accuracy: 4, block: 128, zeroPoints: false },
  { name: 'a3b32z', bits: 4, accuracy: 3, block: 32, zeroPoints: true },
  { name: 'a2b32z', bits: 4, accuracy: 2, block: 32, zeroPoints: true },
  { name: 'a1b32z', bits: 4, accuracy: 1, block: 32, zeroPoints: true },
  { name: 'a0b32z', bits: 4, accuracy: 0, block: 32, zeroPoints: true },
  { name: 'a1b128z', bits: 4, accuracy: 1, block: 128, zeroPoints: true },
  { name: '8bit-a4b32z', bits: 8, accuracy: 4, block: 32, zeroPoints: true },
  { name: '8bit-a4b128z', bits: 8, accuracy: 4, block: 128, zeroPoints: true },
  { name: 'fp32', bits: 32, accuracy: 0, block: 0, zeroPoints: false },
  { name: 'qgemm', bits: 'qgemm', accuracy: 0, block: 0, zeroPoints: false },
];

/** The step's products: [inputs, outputs] per node. */
function shapes(): [number, number][] {
  const layer: [number, number][] = [
    [DIM, QKV],
    [DIM, DIM],
    [DIM, FF],
    [DIM, FF],
    [FF, DIM],
  ];
  return [...Array.from({ length: LAYERS }, () => layer).flat(), [DIM, VOCAB]];
}

/** A deterministic generator, so every configuration sees the same kind of data. */
function random(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** A graph of the step's 61 products under one configuration; inputs `a` [rows, 768] and `f` [rows, 2048]. */
function buildModel(c: Config): Uint8Array {
  const rnd = random(7);
  const nodes: NodeProto[] = [];
  const inits: TensorProto[] = [];
  const outputs: string[] = [];
  shapes().forEach(([k, n], i) => {
    const input = k === DIM ? 'a' : 'f';
    const y = `y${i}`;
    outputs.push(y);
    if (c.bits === 32) {
      const w = new Float32Array(k * n);
      for (let j = 0; j < w.length; j++) w[j] = (rnd() - 0.5) * 0.05;
      inits.push(makeTensor(`w${i}`, DataType.FLOAT, [k, n], w));
      nodes.push(makeNode('MatMul', [input, `w${i}`], [y]));
      return;
    }
    if (c.bits === 'qgemm') {
      const w = new Uint8Array(k * n);
      for (let j = 0; j < w.length; j++) w[j] = (rnd() * 256) | 0;
      const scales = Float32Array.from({ length: n }, () => 0.002 + rnd() * 0.004);
      inits.push(makeTensor(`w${i}`, DataType.INT8, [k, n], w), makeTensor(`s${i}`, DataType.FLOAT, [n], scales));
      nodes.push(makeNode('DynamicQuantizeMatMul', [input, `w${i}`, `s${i}`], [y], {}, `n${i}`, 'com.microsoft'));
      return;
    }
    const blocks = k / c.block;
    const blobBytes = (c.block * c.bits) / 8;
    const data = new Uint8Array(n * blocks * blobBytes);
    for (let j = 0; j < data.length; j++) data[j] = (rnd() * 256) | 0;
    const scales = new Float32Array(n * blocks);
    for (let j = 0; j < scales.length; j++) scales[j] = 0.002 + rnd() * 0.004;
    inits.push(makeTensor(`q${i}`, DataType.UINT8, [n, blocks, blobBytes], data));
    inits.push(makeTensor(`s${i}`, DataType.FLOAT, [n * blocks], scales));
    const ins = [input, `q${i}`, `s${i}`];
    if (c.zeroPoints) {
      const zpBytes = c.bits === 4 ? Math.ceil(blocks / 2) : blocks;
      const zp = new Uint8Array(n * zpBytes);
      for (let j = 0; j < zp.length; j++) zp[j] = c.bits === 4 ? (((rnd() * 4) | 0) + 6) * 17 : 120 + ((rnd() * 16) | 0);
      inits.push(makeTensor(`z${i}`, DataType.UINT8, [n * zpBytes], zp));
      ins.push(`z${i}`);
    }
    nodes.push(makeNode('MatMulNBits', ins, [y], { K: k, N: n, bits: c.bits, block_size: c.block, accuracy_level: c.accuracy }, `n${i}`, 'com.microsoft'));
  });
  const graph = {
    name: c.name,
    node: nodes,
    initializer: inits,
    input: [makeValueInfo('a', DataType.FLOAT, ['rows', DIM]), makeValueInfo('f', DataType.FLOAT, ['rows', FF])],
    output: outputs.map((o, i) => makeValueInfo(o, DataType.FLOAT, ['rows', shapes()[i]![1]])),
  };
  return encodeModel({
    irVersion: 10,
    opsetImport: [{ domain: '', version: 21 }, { domain: 'com.microsoft', version: 1 }],
    graph,
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      rounds: { type: 'string', default: '15' },
      threads: { type: 'string' },
      rows: { type: 'string', default: '1,2,4,8,16' },
      configs: { type: 'string' },
      graph: { type: 'string' },
      past: { type: 'string', default: '40' },
      engine: { type: 'string' },
      calls: { type: 'string', default: '8' },
    },
  });
  if (values.graph) {
    const threadCounts = (values.threads ?? '1,2').split(',').map(Number);
    return wholeSteps(values.graph, Number(values.past), Number(values.rounds), values.rows!.split(',').map(Number), threadCounts, values.engine, Number(values.calls));
  }
  const rounds = Number(values.rounds);
  const threads = Number(values.threads ?? '1');
  const widths = values.rows!.split(',').map(Number);
  const wanted = values.configs?.split(',');
  const configs = wanted ? wanted.map((w) => ALL.find((c) => c.name === w) ?? fail(`unknown config ${w} (known: ${ALL.map((c) => c.name).join(', ')})`)) : ALL;

  const sessions = new Map<string, ort.InferenceSession>();
  for (const c of configs) {
    sessions.set(
      c.name,
      await ort.InferenceSession.create(buildModel(c), {
        intraOpNumThreads: threads,
        interOpNumThreads: 1,
        executionMode: 'sequential',
        graphOptimizationLevel: 'all',
      }),
    );
  }
  const feeds = new Map(
    widths.map((m) => {
      const rnd = random(m);
      const a = Float32Array.from({ length: m * DIM }, () => rnd() - 0.5);
      const f = Float32Array.from({ length: m * FF }, () => rnd() - 0.5);
      return [m, { a: new ort.Tensor('float32', a, [m, DIM]), f: new ort.Tensor('float32', f, [m, FF]) }] as const;
    }),
  );
  // Warm-up: every session at every width twice (first runs allocate).
  for (const s of sessions.values()) for (const m of widths) for (let i = 0; i < 2; i++) await s.run(feeds.get(m)!);

  const times = new Map<string, number[]>();
  // The process's CPU time per run: under load a descheduled thread stretches wall time but not this (spinning
  // threads count, so with 2 threads it includes their spin).
  const cpu = new Map<string, number[]>();
  const load0 = loadavg()[0]!;
  const pairs = configs.flatMap((c) => widths.map((m) => [c.name, m] as const));
  for (let r = 0; r < rounds; r++) {
    const shift = (r * 7) % pairs.length;
    for (const [name, m] of [...pairs.slice(shift), ...pairs.slice(0, shift)]) {
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      await sessions.get(name)!.run(feeds.get(m)!);
      const ms = performance.now() - t0;
      const c = process.cpuUsage(c0);
      const key = `${name}@${m}`;
      (times.get(key) ?? times.set(key, []).get(key)!).push(ms);
      (cpu.get(key) ?? cpu.set(key, []).get(key)!).push((c.user + c.system) / 1000);
    }
  }
  const load1 = loadavg()[0]!;

  const title = `61 products of one decode step (125M llama shape), ms per step, ${threads} thread(s), median of ${rounds} interleaved rounds (load average ${load0.toFixed(1)} → ${load1.toFixed(1)}, ${cpus().length} vCPUs)`;
  printTable(
    title,
    ['rows', ...configs.map((c) => c.name)],
    widths.map((m) => [String(m), ...configs.map((c) => median(times.get(`${c.name}@${m}`)!))]),
  );
  printTable(
    `the same runs, process CPU ms per step (user + system, all threads)`,
    ['rows', ...configs.map((c) => c.name)],
    widths.map((m) => [String(m), ...configs.map((c) => median(cpu.get(`${c.name}@${m}`)!))]),
  );
  printTable(
    'per-row cost against one row (step at m rows / step at 1 row)',
    ['rows', ...configs.map((c) => c.name)],
    widths.map((m) => [String(m), ...configs.map((c) => `${(median(times.get(`${c.name}@${m}`)!) / median(times.get(`${c.name}@${widths[0]}`)!)).toFixed(2)}x`)]),
  );
  printTable(
    'middle half of the rounds (q1-q3, ms)',
    ['rows', ...configs.map((c) => c.name)],
    widths.map((m) => [String(m), ...configs.map((c) => quartiles(times.get(`${c.name}@${m}`)!).map((x) => x.toFixed(2)).join('-'))]),
  );
  console.log(JSON.stringify({ bench: 'nbits-width', threads, rounds, load: [load0, load1], medians: Object.fromEntries([...times].map(([k, v]) => [k, median(v)])), cpuMedians: Object.fromEntries([...cpu].map(([k, v]) => [k, median(v)])) }));
}

/** Feeds for one decode step of `rows` sequences with `past` cached positions, from the session's own metadata. */
function stepFeeds(session: ort.InferenceSession, rows: number, past: number): Record<string, ort.Tensor> {
  const feeds: Record<string, ort.Tensor> = {};
  const rnd = random(rows * 31 + past);
  for (const meta of session.inputMetadata) {
    if (!meta.isTensor) continue;
    const name = meta.name;
    if (name === 'input_ids') feeds[name] = new ort.Tensor('int64', BigInt64Array.from({ length: rows }, (_, i) => BigInt(100 + i * 7)), [rows, 1]);
    else if (name === 'attention_mask') feeds[name] = new ort.Tensor('int64', new BigInt64Array(rows * (past + 1)).fill(1n), [rows, past + 1]);
    else if (name === 'position_ids') feeds[name] = new ort.Tensor('int64', new BigInt64Array(rows).fill(BigInt(past)), [rows, 1]);
    else if (name === 'num_logits_to_keep') feeds[name] = new ort.Tensor('int64', BigInt64Array.from([1n]), []);
    else if (name.startsWith('past_key_values.')) {
      const [, heads, , dim] = meta.shape as [unknown, number, unknown, number];
      const data = Float32Array.from({ length: rows * heads * past * dim }, () => rnd() - 0.5);
      // Converted GGUFs keep fp16 caches by default: feed the type the graph declares.
      feeds[name] = meta.type === 'float16' ? new ort.Tensor('float16', float32ArrayToFloat16(data), [rows, heads, past, dim]) : new ort.Tensor('float32', data, [rows, heads, past, dim]);
    } else throw new Error(`--graph: no feed for input ${name}`);
  }
  return feeds;
}

/**
 * Whole decode steps of a converted decoder at each width, interleaved: each round runs every (threads, width) pair
 * for `STEPS` consecutive steps (as a decode does: the same width, warm caches), every step timed.
 */
async function wholeSteps(path: string, past: number, rounds: number, widths: number[], threadCounts: number[], engineDir: string | undefined, calls: number): Promise<void> {
  const STEPS = 8;
  const engine = engineDir ? await Engine.load({ model: engineDir, intraOpThreads: 2, maxBatch: 16 }) : undefined;
  const itl = new Map<number, number[]>();
  const sessions = new Map<number, ort.InferenceSession>();
  for (const threads of threadCounts) {
    sessions.set(threads, await ort.InferenceSession.create(path, { intraOpNumThreads: threads, graphOptimizationLevel: 'all' }));
  }
  const feeds = new Map(widths.map((m) => [m, stepFeeds(sessions.values().next().value!, m, past)] as const));
  for (const s of sessions.values()) for (const m of widths) for (let i = 0; i < 2; i++) await s.run(feeds.get(m)!);
  const wall = new Map<string, number[]>();
  const pairs = [...sessions.keys()].flatMap((t) => widths.map((m) => [t, m] as const));
  const load0 = loadavg()[0]!;
  for (let r = 0; r < rounds; r++) {
    const shift = (r * 3) % pairs.length;
    for (const [t, m] of [...pairs.slice(shift), ...pairs.slice(0, shift)]) {
      const key = `${t}@${m}`;
      for (let i = 0; i < STEPS; i++) {
        const t0 = performance.now();
        await sessions.get(t)!.run(feeds.get(m)!);
        (wall.get(key) ?? wall.set(key, []).get(key)!).push(performance.now() - t0);
      }
    }
    if (engine) {
      for (const c of r % 2 ? [calls, 1] : [1, calls]) (itl.get(c) ?? itl.set(c, []).get(c)!).push(await engineItl(engine, c));
    }
  }
  await engine?.dispose();
  const load1 = loadavg()[0]!;
  const at = (t: number, m: number) => median(wall.get(`${t}@${m}`)!);
  printTable(
    `whole decode step of ${path.split('/').slice(-2).join('/')}, ${past} cached positions, ms, median of ${rounds} interleaved rounds x ${STEPS} steps (load average ${load0.toFixed(1)} → ${load1.toFixed(1)})`,
    ['rows', ...threadCounts.flatMap((t) => [`${t} thread(s)`, 'x 1 row'])],
    widths.map((m) => [String(m), ...threadCounts.flatMap((t) => [at(t, m), `${(at(t, m) / at(t, widths[0]!)).toFixed(2)}x`])]),
  );
  if (engine) {
    const e1 = median(itl.get(1)!);
    const ec = median(itl.get(calls)!);
    const bare = (m: number) => (sessions.has(2) && widths.includes(m) ? at(2, m) : NaN);
    printTable(
      `Engine on the same module, 2 threads, 16 greedy tokens per call (prompt 12), median over rounds of each run's median inter-token latency`,
      ['calls', 'ITL p50 ms', 'x 1 call', 'bare 2-thread step ms'],
      [
        ['1', e1, '1.00x', bare(1)],
        [String(calls), ec, `${(ec / e1).toFixed(2)}x`, bare(calls)],
      ],
    );
  }
  console.log(JSON.stringify({ bench: 'nbits-width', graph: path, past, rounds, steps: STEPS, load: [load0, load1], wall: Object.fromEntries([...wall].map(([k, v]) => [k, median(v)])), engineItl: Object.fromEntries([...itl].map(([k, v]) => [k, median(v)])) }));
}

/** The median gap between consecutive streamed tokens of `c` concurrent greedy calls (16 tokens each). */
async function engineItl(engine: Engine, c: number): Promise<number> {
  const gaps: number[] = [];
  await Promise.all(
    Array.from({ length: c }, async () => {
      let last: number | undefined;
      for await (const _ of engine.stream({ promptIds: [1, 415, 2936, 9060, 285, 1142, 10575, 975, 4511, 319, 2213, 1029] }, { maxTokens: 16, ignoreEos: true })) {
        const now = performance.now();
        if (last !== undefined) gaps.push(now - last);
        last = now;
      }
    }),
  );
  return median(gaps);
}

function fail(msg: string): never {
  throw new Error(msg);
}

await main();
