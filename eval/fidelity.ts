/**
 * How closely quantized modules follow the fp32 ones, measured on the eval's problems without the noise of exact
 * match (the cipher gain is 4 problems out of 200, so one problem moves its ratio by 25%): each setting's next-token
 * distribution (a backbone's logits, plus a reasoner's raw logits when composed, as UniR sums them) teacher-forced
 * on the reference text (prompt, reasoning, answer), fp32 against quantized: mean KL(fp32 ‖ quantized) per answer
 * token and how often the argmax agrees.
 *
 *   npx tsx eval/fidelity.ts [--n 200] [--bits 4|8] [--block 32] [--head-bits 4|8] [--search range|weighted] [--json]
 *
 * Plain onnxruntime sessions over each module's graph (one full-sequence forward per problem), so what is compared
 * is the weights, not the engine.
 */
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as ort from 'onnxruntime-node';
import { quantizeModel, TextTokenizer, type QuantizeOptions } from '@reasonplug/core';
import { loadProblems, repoRoot, type Problem } from './run.js';

/** The settings whose gains the results table reports, as (backbone, reasoner?) on a task. */
const SETTINGS = [
  { setting: 'S', task: 'math', backbone: 'toy-backbone-s' },
  { setting: 'S+math', task: 'math', backbone: 'toy-backbone-s', reasoner: 'toy-math-reasoner' },
  { setting: 'S', task: 'cipher', backbone: 'toy-backbone-s' },
  { setting: 'S+cipher', task: 'cipher', backbone: 'toy-backbone-s', reasoner: 'toy-cipher-reasoner' },
  { setting: 'L', task: 'math', backbone: 'toy-backbone-l' },
  { setting: 'L+math', task: 'math', backbone: 'toy-backbone-l', reasoner: 'toy-math-reasoner' },
] as const;

export interface FidelityRow {
  setting: string;
  task: string;
  /** Mean KL(fp32 ‖ quantized) in nats per teacher-forced answer token. */
  kl: number;
  /** Fraction of those tokens where both pick the same argmax. */
  top1: number;
}

/** Logits `[seq, vocab]` of a whole sequence in one forward pass (empty past). */
async function forward(session: ort.InferenceSession, ids: number[]): Promise<Float32Array> {
  const seq = (values: number[]) => new ort.Tensor('int64', BigInt64Array.from(values, BigInt), [1, values.length]);
  const feeds: Record<string, ort.Tensor> = {};
  for (const m of session.inputMetadata) {
    const meta = m as { name: string; shape?: readonly (number | string)[] };
    if (meta.name === 'input_ids') feeds[meta.name] = seq(ids);
    else if (meta.name === 'attention_mask') feeds[meta.name] = seq(ids.map(() => 1));
    else if (meta.name === 'position_ids') feeds[meta.name] = seq(ids.map((_, i) => i));
    else feeds[meta.name] = new ort.Tensor('float32', new Float32Array(0), [1, meta.shape![1] as number, 0, meta.shape![3] as number]);
  }
  return (await session.run(feeds)).logits!.data as Float32Array;
}

function logSoftmax(z: Float32Array, from: number, n: number): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < n; i++) max = Math.max(max, z[from + i]!);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += Math.exp(z[from + i]! - max);
  const lse = max + Math.log(sum);
  return Float64Array.from({ length: n }, (_, i) => z[from + i]! - lse);
}

function argmax(a: Float64Array): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i]! > a[best]!) best = i;
  return best;
}

/** Sums logits of the backbone and (when composed) the reasoner, element by element. */
function sum(a: Float32Array, b?: Float32Array): Float32Array {
  if (!b) return a;
  return Float32Array.from(a, (v, i) => v + b[i]!);
}

/** Compares the module directories `ref` (fp32) and `q` (quantized), both keyed by module name. */
export async function fidelity(ref: Record<string, string>, q: Record<string, string>, n: number): Promise<FidelityRow[]> {
  const tokenizer = await TextTokenizer.fromDirectory(ref['toy-backbone-s']!);
  const sessions = new Map<string, ort.InferenceSession>();
  const session = async (dir: string) => {
    let s = sessions.get(dir);
    if (!s) sessions.set(dir, (s = await ort.InferenceSession.create(join(dir, 'model.onnx'), { intraOpNumThreads: 1 })));
    return s;
  };
  const problems: Record<string, Problem[]> = { math: loadProblems('math', n), cipher: loadProblems('cipher', n) };
  const rows: FidelityRow[] = [];
  try {
    for (const s of SETTINGS) {
      let kl = 0;
      let agree = 0;
      let tokens = 0;
      for (const p of problems[s.task]!) {
        const promptIds = tokenizer.encode(p.prompt);
        const ids = [...promptIds, ...tokenizer.encode(p.cot + p.answer, false)];
        const logits = async (dirs: Record<string, string>) =>
          sum(await forward(await session(dirs[s.backbone]!), ids), 'reasoner' in s ? await forward(await session(dirs[s.reasoner]!), ids) : undefined);
        const [a, b] = [await logits(ref), await logits(q)];
        const vocab = a.length / ids.length;
        // Positions predicting the reasoning and answer tokens (the prompt's own predictions are not generated).
        for (let t = promptIds.length - 1; t < ids.length - 1; t++) {
          const lp = logSoftmax(a, t * vocab, vocab);
          const lq = logSoftmax(b, t * vocab, vocab);
          for (let i = 0; i < vocab; i++) kl += Math.exp(lp[i]!) * (lp[i]! - lq[i]!);
          if (argmax(lp) === argmax(lq)) agree++;
          tokens++;
        }
      }
      rows.push({ setting: s.setting, task: s.task, kl: kl / tokens, top1: agree / tokens });
    }
  } finally {
    for (const s of sessions.values()) await s.release();
  }
  return rows;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({
    options: {
      n: { type: 'string', default: '200' },
      bits: { type: 'string', default: '4' },
      block: { type: 'string', default: '32' },
      'head-bits': { type: 'string' },
      search: { type: 'string', default: 'range' },
      json: { type: 'boolean', default: false },
    },
  });
  const opts: QuantizeOptions = {
    bits: Number(values.bits) as 4 | 8,
    blockSize: Number(values.block),
    search: values.search as 'weighted' | 'range',
    ...(values['head-bits'] ? { headBits: Number(values['head-bits']) as 4 | 8 } : {}),
  };
  const modules = join(repoRoot, 'examples', 'modules');
  const names = [...new Set(SETTINGS.flatMap((s) => ['backbone', 'reasoner'].map((k) => (s as Record<string, string>)[k]).filter(Boolean)))];
  const root = await mkdtemp(join(tmpdir(), 'reasonplug-fidelity-'));
  try {
    const ref: Record<string, string> = {};
    const q: Record<string, string> = {};
    for (const name of names) {
      ref[name] = join(modules, name);
      q[name] = (await quantizeModel(ref[name], join(root, name), opts)).path;
    }
    const rows = await fidelity(ref, q, Number(values.n));
    const label = `${opts.bits}-bit, block ${opts.blockSize}, head ${values['head-bits'] ?? 'default'}, ${opts.search} search`;
    console.log(`fidelity to fp32 (${label}), teacher-forced on ${values.n} reference answers per task`);
    console.log('| setting | task | KL(fp32 ‖ q) nats/token | top-1 agreement |\n|---|---|---|---|');
    for (const r of rows) console.log(`| ${r.setting} | ${r.task} | ${r.kl.toFixed(4)} | ${(r.top1 * 100).toFixed(1)}% |`);
    if (values.json) console.log(JSON.stringify({ options: { ...opts, headBits: values['head-bits'] ?? null }, rows }));
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}
