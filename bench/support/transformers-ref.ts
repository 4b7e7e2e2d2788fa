/**
 * Reference harness: greedy generation through transformers.js (`@huggingface/transformers`) on a local ONNX
 * decoder file with optimum / onnxruntime-genai I/O names (`input_ids`, `attention_mask`, `position_ids`,
 * `past_key_values.{i}.key|value` -> `logits`, `present.{i}.key|value`). Used by the correctness test
 * (test/transformers-reference.test.ts) and by benchmarks as the "what a user of transformers.js gets" point.
 *
 * transformers.js runs fully offline here: remote models are disabled, nothing is cached or downloaded, and the
 * model directory is a throw-away one under the OS temp dir (see {@link prepareTransformersDir}). In Node,
 * transformers.js 4.x runs its sessions on `onnxruntime-node` (CPU EP); {@link loadTransformersModel} checks that
 * and refuses to continue if the session turned out to be anything else (e.g. the bundled onnxruntime-web/wasm).
 */
import { createHash } from 'node:crypto';
import { copyFile, link, mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { existsSync, realpathSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, isAbsolute, join, normalize, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import onnxProto from 'onnx-proto';
import type { onnx as O } from 'onnx-proto';
import * as ort from 'onnxruntime-node';
import {
  AutoModelForCausalLM,
  BaseStreamer,
  Tensor,
  env,
  type PreTrainedModel,
} from '@huggingface/transformers';

/** Sizes and token ids a transformers.js `config.json` needs for a Llama decoder. */
export interface DecoderInfo {
  vocabSize: number;
  numLayers: number;
  numKvHeads: number;
  headDim: number;
  /** Query heads; defaults to numKvHeads (transformers.js only uses it to derive head_dim when that is absent). */
  numHeads?: number;
  /** Defaults to numHeads * headDim. */
  hiddenSize?: number;
  /** Storage type of the model's float I/O; picks the file name transformers.js looks for (`model.onnx` / `model_fp16.onnx`). */
  dtype: 'fp32' | 'fp16';
  bosTokenId?: number;
  eosTokenId?: number;
}

/** Result of one greedy generation. */
export interface GenerationResult {
  /** The new token ids only (prompt excluded). */
  ids: number[];
  /** Milliseconds from the call to the first new token being chosen (prefill + one argmax). */
  firstTokenMs: number;
  /** Milliseconds for the whole call. */
  totalMs: number;
}

/** What {@link loadTransformersModel} returns. */
export interface TransformersModel {
  generate(promptIds: number[], maxNewTokens: number): Promise<GenerationResult>;
  dispose(): Promise<void>;
  /** Which runtime transformers.js really runs the session on, e.g. `onnxruntime-node 1.30.0 (cpu)`. */
  readonly backend: string;
}

/** Options of {@link loadTransformersModel}. */
export interface TransformersLoadOptions {
  /** onnxruntime intra-op threads (passed through transformers.js' `session_options`); default: onnxruntime's own. */
  intraOpNumThreads?: number;
  /**
   * Stop when the config's eos_token_id is produced (transformers.js' default behaviour). Default false, so a
   * call always yields exactly `maxNewTokens` ids, like the bare loop, which is what comparisons and timings need.
   */
  stopAtEos?: boolean;
}

const ORT_FLOAT16 = 10;
const ORT_FLOAT = 1;
const EXTERNAL = 1; // onnx.TensorProto.DataLocation.EXTERNAL

/** Points transformers.js at local files only; idempotent. */
function configureTransformersEnv(): void {
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.useFSCache = false; // nothing written under node_modules/@huggingface/transformers/.cache
  env.useBrowserCache = false;
  env.useWasmCache = false; // the wasm backend is not used in Node; never try to fetch its binaries
}

/** Names (relative `location`s) of the external data files an ONNX model references, in first-use order. */
function externalDataLocations(model: O.ModelProto): string[] {
  const out = new Set<string>();
  const visitTensors = (tensors: readonly O.ITensorProto[] | null | undefined) => {
    for (const t of tensors ?? []) {
      if (t.dataLocation !== EXTERNAL) continue;
      const loc = (t.externalData ?? []).find((e) => e.key === 'location')?.value;
      if (loc) out.add(loc);
    }
  };
  const visitGraph = (g: O.IGraphProto | null | undefined) => {
    if (!g) return;
    visitTensors(g.initializer);
    for (const n of g.node ?? []) {
      for (const a of n.attribute ?? []) {
        if (a.t) visitTensors([a.t]);
        if (a.tensors) visitTensors(a.tensors);
        if (a.g) visitGraph(a.g);
        for (const sg of a.graphs ?? []) visitGraph(sg);
      }
    }
  };
  visitGraph(model.graph);
  return [...out];
}

function dimValue(d: O.TensorShapeProto.IDimension | undefined): number | undefined {
  if (!d || d.dimValue === undefined || d.dimValue === null) return undefined;
  const v = Number(d.dimValue);
  return Number.isFinite(v) && v > 0 ? v : undefined;
}

/**
 * Reads {@link DecoderInfo} sizes from an ONNX decoder's graph inputs/outputs (past_key_values.{i}.key
 * `[batch, kv_heads, past, head_dim]`, logits `[batch, seq, vocab]`). Token ids are not in the graph; pass them
 * yourself when they matter.
 */
export async function readDecoderInfo(onnxPath: string): Promise<DecoderInfo> {
  const model = onnxProto.onnx.ModelProto.decode(await readFile(onnxPath));
  const g = model.graph;
  if (!g) throw new Error(`${onnxPath}: no ONNX graph`);
  const pastKeys = (g.input ?? []).filter((v) => /^past_key_values\.\d+\.key$/.test(v.name ?? ''));
  if (pastKeys.length === 0) throw new Error(`${onnxPath}: no past_key_values.{i}.key inputs (not an optimum-style decoder)`);
  const kt = pastKeys[0]!.type?.tensorType;
  const kd = kt?.shape?.dim ?? [];
  const numKvHeads = dimValue(kd[1]);
  const headDim = dimValue(kd[3]);
  const logits = (g.output ?? []).find((v) => v.name === 'logits');
  const vocabSize = dimValue(logits?.type?.tensorType?.shape?.dim?.[2] ?? undefined);
  if (numKvHeads === undefined || headDim === undefined || vocabSize === undefined) {
    throw new Error(`${onnxPath}: cannot read kv_heads/head_dim/vocab from the graph's I/O shapes; pass them in`);
  }
  const elem = kt?.elemType;
  if (elem !== ORT_FLOAT16 && elem !== ORT_FLOAT) throw new Error(`${onnxPath}: past KV element type ${elem} is neither float32 nor float16`);
  return { vocabSize, numLayers: pastKeys.length, numKvHeads, headDim, dtype: elem === ORT_FLOAT16 ? 'fp16' : 'fp32' };
}

/** Hardlinks `src` to `dst`, or copies it where a link is not possible (other filesystem, permissions). */
async function linkOrCopy(src: string, dst: string): Promise<void> {
  try {
    await link(src, dst);
  } catch {
    await copyFile(src, dst);
  }
}

/**
 * Prepares a directory transformers.js can load with `from_pretrained(dir)`:
 * `config.json` (model_type 'llama', sizes from `info`, `transformers.js_config.dtype` = info.dtype) and
 * `onnx/model.onnx` (fp32) or `onnx/model_fp16.onnx` (fp16), with every external data file the graph references
 * placed beside it under its original name. Files are hardlinked (copied when that fails), never symlinked:
 * onnxruntime 1.30 refuses external data whose real path leaves the model's directory. The source directory is
 * only read. The result lives under `os.tmpdir()/reasonplug-transformers-ref/<key>` and is reused while the
 * model file and its data files (path, size, mtime) and the config are unchanged; directories prepared for an
 * older build of the same source path are removed when a new one is made.
 */
export async function prepareTransformersDir(onnxPath: string, info: DecoderInfo): Promise<string> {
  const src = realpathSync(resolve(onnxPath));
  const srcDir = dirname(src);
  const model = onnxProto.onnx.ModelProto.decode(await readFile(src));
  const locations = externalDataLocations(model);
  for (const loc of locations) {
    if (isAbsolute(loc) || normalize(loc).startsWith('..')) {
      throw new Error(`${src}: external data location "${loc}" is not a plain relative path beside the model`);
    }
  }
  const stamps = await Promise.all(
    [src, ...locations.map((l) => join(srcDir, l))].map(async (f) => {
      const st = await stat(f);
      return [f, st.size, st.mtimeMs] as const;
    }),
  );
  const fileName = info.dtype === 'fp16' ? 'model_fp16.onnx' : 'model.onnx';
  const numHeads = info.numHeads ?? info.numKvHeads;
  const config = {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    vocab_size: info.vocabSize,
    hidden_size: info.hiddenSize ?? numHeads * info.headDim,
    num_hidden_layers: info.numLayers,
    num_attention_heads: numHeads,
    num_key_value_heads: info.numKvHeads,
    head_dim: info.headDim,
    max_position_embeddings: 4096,
    bos_token_id: info.bosTokenId ?? 1,
    eos_token_id: info.eosTokenId ?? 2,
    tie_word_embeddings: false,
    use_cache: true,
    'transformers.js_config': { dtype: info.dtype, device: 'cpu' },
  };
  // The key covers the model file, its external data files and the config, so a rebuilt model gets a fresh directory.
  const key = createHash('sha256').update(JSON.stringify({ stamps, config, fileName, v: 1 })).digest('hex').slice(0, 16);
  const root = join(tmpdir(), 'reasonplug-transformers-ref');
  const dir = join(root, `${basename(src).replace(/[^\w.-]/g, '_')}-${key}`);
  if (existsSync(join(dir, '.ready'))) return dir;

  const staging = `${dir}.tmp-${process.pid}-${Date.now()}`;
  await mkdir(join(staging, 'onnx'), { recursive: true });
  try {
    await linkOrCopy(src, join(staging, 'onnx', fileName));
    for (const loc of locations) {
      const to = join(staging, 'onnx', loc);
      await mkdir(dirname(to), { recursive: true });
      await linkOrCopy(join(srcDir, loc), to);
    }
    await writeFile(join(staging, 'config.json'), JSON.stringify(config, null, 2) + '\n');
    await writeFile(join(staging, '.ready'), JSON.stringify({ src, stamps }) + '\n');
    if (existsSync(dir) && !existsSync(join(dir, '.ready'))) await rm(dir, { recursive: true, force: true });
    await rename(staging, dir);
  } catch (err) {
    await rm(staging, { recursive: true, force: true });
    if (existsSync(join(dir, '.ready'))) return dir; // a concurrent preparer won the race
    throw err;
  }
  await removeStaleDirs(root, src, JSON.stringify(stamps));
  return dir;
}

/**
 * Removes directories prepared from an older build of the same source file (same path, other size/mtime), so
 * hardlinks to replaced weights do not pile up. Directories of the current build with another config are kept.
 */
async function removeStaleDirs(root: string, src: string, stamps: string): Promise<void> {
  for (const name of await readdir(root)) {
    if (name.includes('.tmp-')) continue;
    const d = join(root, name);
    let ready: { src?: string; stamps?: unknown };
    try {
      ready = JSON.parse(await readFile(join(d, '.ready'), 'utf8')) as typeof ready;
    } catch {
      continue; // not one of ours, or from an older version of this harness
    }
    if (ready.src === src && JSON.stringify(ready.stamps) !== stamps) await rm(d, { recursive: true, force: true }).catch(() => {});
  }
}

type GenerateArgs = Parameters<PreTrainedModel['generate']>[0];

/** Collects the wall-clock time of the first generated token (the second `put`; the first carries the prompt). */
class FirstTokenTimer extends BaseStreamer {
  puts = 0;
  at = 0;
  override put(_value: bigint[][]): void {
    if (++this.puts === 2) this.at = performance.now();
  }
  override end(): void {}
}

/** Describes, and checks, the runtime a transformers.js session object really uses. */
function describeBackend(session: unknown): string {
  const s = session as { handler?: { constructor?: { name?: string } } } | undefined;
  const handler = s?.handler?.constructor?.name;
  // ort.InferenceSession is typed as an interface + factory, but at runtime it is the class every session is made from.
  const SessionClass = ort.InferenceSession as unknown as abstract new (...args: never[]) => unknown;
  const isNodeSession = session instanceof SessionClass && handler === 'OnnxruntimeSessionHandler';
  if (!isNodeSession) {
    throw new Error(
      `transformers.js did not create an onnxruntime-node session (handler: ${handler ?? 'unknown'}); ` +
        'refusing to report numbers for another runtime',
    );
  }
  const cfg = (session as { config?: { device?: string } }).config;
  return `onnxruntime-node ${ort.env.versions.node ?? ort.env.versions.common} (${cfg?.device ?? 'cpu'})`;
}

/**
 * Loads a directory made by {@link prepareTransformersDir} with `AutoModelForCausalLM.from_pretrained` (local
 * files only, device 'cpu' = onnxruntime-node's CPU EP) and returns a greedy generator. `generate` goes through
 * transformers.js' own `model.generate()` with `input_ids` given as an int64 Tensor (no tokenizer, no BOS added),
 * `do_sample: false`, `num_beams: 1`, `max_new_tokens`.
 */
export async function loadTransformersModel(dir: string, opts: TransformersLoadOptions = {}): Promise<TransformersModel> {
  configureTransformersEnv();
  const session_options: Record<string, unknown> = {};
  if (opts.intraOpNumThreads !== undefined) session_options.intraOpNumThreads = opts.intraOpNumThreads;
  const model: PreTrainedModel = await AutoModelForCausalLM.from_pretrained(resolve(dir), {
    local_files_only: true,
    device: 'cpu',
    session_options,
  });
  const backend = describeBackend((model.sessions as Record<string, unknown>)['model']);

  return {
    backend,
    async generate(promptIds: number[], maxNewTokens: number): Promise<GenerationResult> {
      if (promptIds.length === 0) throw new Error('generate: empty prompt');
      const t0 = performance.now();
      const inputs = new Tensor('int64', BigInt64Array.from(promptIds, (x) => BigInt(x)), [1, promptIds.length]);
      const timer = new FirstTokenTimer();
      const out = await model.generate({
        inputs,
        max_new_tokens: maxNewTokens,
        do_sample: false,
        num_beams: 1,
        // The published typings declare the parameter as `BaseStreamer & TextStreamer`; any BaseStreamer works.
        streamer: timer as unknown as NonNullable<GenerateArgs['streamer']>,
        // An empty eos list keeps transformers.js' EOS stopping criterion in the loop but never lets it fire.
        ...(opts.stopAtEos ? {} : { eos_token_id: [] }),
      });
      const t1 = performance.now();
      const seq = out as Tensor;
      const all = seq.data as BigInt64Array;
      const ids = Array.from(all.subarray(promptIds.length), (x) => Number(x));
      return { ids, firstTokenMs: (timer.at || t1) - t0, totalMs: t1 - t0 };
    },
    async dispose(): Promise<void> {
      await model.dispose();
    },
  };
}
