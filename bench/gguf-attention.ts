/**
 * How a converted GGUF's attention is written, A/B in one process: the bench:gguf llama (768x12, GQA 12/4 heads,
 * ~125M params) as a 4-bit GGUF, converted to graphs that differ only in attention (MatMulNBits weights in all):
 *   ops         MatMul/Softmax with an additive mask, rotary by Mul/Add (the converter's graph before GQA)
 *   gqa         com.microsoft::GroupQueryAttention, rotary inside from cos/sin caches (interleaved for llama's order)
 *   gqa-ropeops GroupQueryAttention, rotary by ops before it (no caches)
 * Bare onnxruntime sessions (2 intra-op threads, last-position logits), rounds interleaved over the variants:
 * decode ms/token (median of the steps after a 16-token prompt, up to 160 keys) and a 512-token prefill.
 * The machine is shared: read the ratios to `ops`. Also counts the kernels of each optimized graph (what
 * onnxruntime fused: SimplifiedLayerNormalization, SkipSimplifiedLayerNormalization, ...).
 *
 *   npx tsx bench/gguf-attention.ts [--rounds 5 --steps 144 --type Q4_0]
 */
import { existsSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { convertGguf } from '../packages/core/src/gguf/convert.js';
import { readModel } from '../packages/core/src/onnx/proto.js';
import { GGML } from '../packages/core/test/support/ggml-quantize.js';
import { repoRoot } from '../test/support/paths.js';
import { randomLlamaGguf, type LlamaShape } from './support/random-llama.js';
import { median, printTable } from './support/stats.js';

const SHAPE: LlamaShape = { hidden: 768, layers: 12, heads: 12, kvHeads: 4, ff: 2048, vocab: 32000 };
const THREADS = 2;
const PREFILL = 512;
const PROMPT = 16;
const VARIANTS = {
  ops: { attention: 'ops' },
  gqa: { attention: 'gqa' },
  'gqa-ropeops': { attention: 'gqa', gqaRotary: 'ops' },
} as const;
type Variant = keyof typeof VARIANTS;
const dir = join(repoRoot, '.cache', 'bench', 'gguf-attention');

const ids = (n: number, offset = 0) => Array.from({ length: n }, (_, i) => 3 + (((i + offset) * 7919) % (SHAPE.vocab - 3)));

/** A bare greedy-free loop: prefill `prompt`, then `steps` single-token steps; returns each run's milliseconds. */
async function timeRuns(session: ort.InferenceSession, prompt: number[], steps: number): Promise<{ prefill: number; steps: number[] }> {
  const names = session.inputNames;
  const kvShape = [1, SHAPE.kvHeads, 0, SHAPE.hidden / SHAPE.heads];
  let past: Record<string, ort.Tensor> = {};
  for (const n of names) if (n.startsWith('past_key_values.')) past[n] = new ort.Tensor('float32', new Float32Array(0), kvShape);
  const keep = { num_logits_to_keep: new ort.Tensor('int64', BigInt64Array.from([1n]), []) };
  const times: number[] = [];
  let total = 0;
  let feed = prompt;
  for (let s = 0; s <= steps; s++) {
    const S = feed.length;
    const T = total + S;
    const inputs: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', BigInt64Array.from(feed, BigInt), [1, S]),
      attention_mask: new ort.Tensor('int64', new BigInt64Array(T).fill(1n), [1, T]),
      ...(names.includes('position_ids') ? { position_ids: new ort.Tensor('int64', BigInt64Array.from({ length: S }, (_, i) => BigInt(total + i)), [1, S]) } : {}),
      ...keep,
      ...past,
    };
    const t = performance.now();
    const out = await session.run(inputs);
    times.push(performance.now() - t);
    past = {};
    for (const n of Object.keys(out)) if (n.startsWith('present.')) past[n.replace('present.', 'past_key_values.')] = out[n]!;
    total = T;
    // a fixed id sequence rather than argmax: every variant runs the same inputs whatever its logits
    feed = ids(1, T);
  }
  return { prefill: times[0]!, steps: times.slice(1) };
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

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { rounds: { type: 'string', default: '5' }, steps: { type: 'string', default: '144' }, type: { type: 'string', default: 'Q4_0' } } });
  const rounds = Number(values.rounds);
  const steps = Number(values.steps);
  const type = values.type as keyof typeof GGML;
  if (!(type in GGML)) throw new Error(`unknown GGUF type ${type}`);
  await mkdir(dir, { recursive: true });
  const gguf = join(dir, `llama-125m-${type}.gguf`);
  if (!existsSync(gguf)) await writeFile(gguf, randomLlamaGguf(SHAPE, `bench llama 125M ${type}`, () => GGML[type]));
  const models = new Map<Variant, string>();
  for (const [name, opts] of Object.entries(VARIANTS) as [Variant, (typeof VARIANTS)[Variant]][]) {
    const out = join(dir, `${type}-${name}`);
    await rm(out, { recursive: true, force: true });
    await convertGguf(gguf, out, opts);
    models.set(name, join(out, 'model.onnx'));
  }
  const kernels = new Map<Variant, Map<string, number>>();
  for (const [name, path] of models) kernels.set(name, await optimizedOps(path));
  const sessions = new Map<Variant, ort.InferenceSession>();
  for (const [name, path] of models) {
    sessions.set(name, await ort.InferenceSession.create(path, { intraOpNumThreads: THREADS, interOpNumThreads: 1, executionMode: 'sequential' }));
  }
  const decode = new Map<Variant, number[]>();
  const prefill = new Map<Variant, number[]>();
  const loads: number[] = [];
  const prompt = ids(PROMPT);
  const long = ids(PREFILL, 100);
  for (let r = 0; r <= rounds; r++) {
    // round 0 warms every session up; the order of the variants rotates so none always runs first
    const order = [...sessions.keys()];
    for (let k = 0; k < r % order.length; k++) order.push(order.shift()!);
    for (const name of order) {
      const s = sessions.get(name)!;
      const d = await timeRuns(s, prompt, steps);
      const p = await timeRuns(s, long, 0);
      if (r === 0) continue;
      decode.set(name, [...(decode.get(name) ?? []), median(d.steps)]);
      prefill.set(name, [...(prefill.get(name) ?? []), p.prefill]);
      loads.push(loadavg()[0]!);
    }
    if (r > 0) console.error(`round ${r}/${rounds}: ${[...sessions.keys()].map((n) => `${n} ${decode.get(n)!.at(-1)!.toFixed(2)} ms/token, prefill ${prefill.get(n)!.at(-1)!.toFixed(0)} ms`).join('; ')}`);
  }
  for (const s of sessions.values()) await s.release();
  const names = [...sessions.keys()];
  const med = (m: Map<Variant, number[]>, n: Variant) => median(m.get(n)!);
  const fused = (n: Variant, op: string) => kernels.get(n)!.get(op) ?? 0;
  const result = {
    bench: 'gguf-attention',
    model: { ...SHAPE, type },
    threads: THREADS,
    rounds,
    decodeSteps: steps,
    prefillTokens: PREFILL,
    loadAverage: median(loads),
    figures: Object.fromEntries(
      names.map((n) => [
        n,
        {
          msPerToken: med(decode, n),
          prefillMs: med(prefill, n),
          kernels: [...kernels.get(n)!.values()].reduce((a, b) => a + b, 0),
          simplifiedLayerNorm: fused(n, 'SimplifiedLayerNormalization'),
          skipSimplifiedLayerNorm: fused(n, 'SkipSimplifiedLayerNormalization'),
        },
      ]),
    ),
  };
  console.log(JSON.stringify(result));
  printTable(
    `GGUF llama 768x12 ${type}: attention as ops vs GroupQueryAttention, ${THREADS} threads, medians of ${rounds} rounds (load average ${median(loads).toFixed(1)})`,
    ['graph', 'decode ms/token', 'vs ops', `prefill ${PREFILL} ms`, 'vs ops', 'kernels', 'SimplifiedLN', 'SkipSimplifiedLN'],
    names.map((n) => [
      n,
      med(decode, n),
      `${(med(decode, n) / med(decode, 'ops')).toFixed(2)}x`,
      med(prefill, n),
      `${(med(prefill, n) / med(prefill, 'ops')).toFixed(2)}x`,
      result.figures[n]!.kernels,
      fused(n, 'SimplifiedLayerNormalization'),
      fused(n, 'SkipSimplifiedLayerNormalization'),
    ]),
  );
  const counts = (n: Variant) => [...kernels.get(n)!].sort((a, b) => b[1] - a[1]).map(([op, k]) => `${op} ${k}`).join(', ');
  for (const n of names) console.log(`${n} kernels: ${counts(n)}`);
}

await main();
