/**
 * One decoder model in onnxruntime with its KV cache: prefill a (left-padded) batch, then advance every
 * row by one token per step. Returns last-position logits only, as fp32.
 * Runs wherever it is created; the engine creates it inside a worker thread because `session.run` blocks.
 */
import * as ort from 'onnxruntime-node';
import { readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { availableParallelism } from 'node:os';
import { detectSignature } from '../onnx/signature.js';
import type { DecoderSignature, IdType } from '../onnx/signature.js';
import { executionProvidersFor, deviceFailure } from './devices.js';
import { intraOpThreadsFor } from './thread-budget.js';
import { threadsPerCore } from './cpu-topology.js';
import { float32ArrayToFloat16 } from '../onnx/float16.js';
import { DEFAULT_PREFIX_CACHE_BYTES, PrefixCache } from './prefix-cache.js';
import type { RowCache } from './batch-kv.js';
import { allocate, allWithBits, byPastName, copyRow, emptyPast, KV_ROOM, pastNames, pastTensor, presentsOf, rowElements, widened, withBits, writeStep, type CacheData } from './cache-tensors.js';
import { releaseTensors } from './release-tensors.js';
import { guardedRun } from './run-guard.js';
import { INT8_PROMPT_FORMAT } from '../onnx/int8-prompt-format.js';
import { createCachedSession, savedFacts, SESSION_CACHE_MIN_BYTES, type SessionCacheSpec } from './session-cache.js';

/**
 * The session prompts run on ({@link RuntimeOptions.int8Prompts}): the graph rewritten by `int8PromptGraph`, kept in
 * the session cache (`cache`) as a variant of its own, with the number of products rewritten; undefined for a graph
 * with no product to rewrite.
 */
async function createInt8PromptSession(
  source: DecoderSource,
  logitsWidth: number,
  options: ort.InferenceSession.SessionOptions,
  cache: SessionCacheSpec | undefined,
): Promise<{ session: ort.InferenceSession; products: number } | undefined> {
  // (loaded only where needed, not with this module: a model worker otherwise never loads protobuf, ~0.1-0.3 s of its start-up)
  const modules = () => Promise.all([import('../onnx/int8-prompt-graph.js'), import('../onnx/proto.js')]);
  const dataDir = source.externalDataDir ?? dirname(source.path);
  const graph = async () => source.graph ?? (await readFile(source.path));
  // (`reasonplug cache` lists it as the model's int8 prompt session, not as its own; the salt names the rewrite's format)
  const saved = cache && { ...cache, variant: `${cache.variant}+int8-prompts`, salt: `int8-prompts/${INT8_PROMPT_FORMAT}`, label: 'int8 prompts' };
  // (counted from the graph, a session loaded from its saved form rewriting nothing, unless that form kept the count)
  const recorded = saved && (await savedFacts(source.path, saved))?.['products'];
  let products = Number.isSafeInteger(recorded) && recorded! > 0 ? recorded! : undefined;
  if (products === undefined) {
    const [{ int8PromptProducts }, { decodeModel }] = await modules();
    products = int8PromptProducts(decodeModel(await graph(), source.path), logitsWidth);
  }
  if (products === 0) return undefined;
  const label = source.label ?? source.path;
  const withData = { ...options, extra: { session: { ...(options.extra?.session as Record<string, unknown> | undefined), model_external_initializers_file_folder_path: dataDir } } };
  // (rewritten only where the session cache has no saved form of it, from a graph of its own each time: the rewrite changes it)
  const load = async (opts: ort.InferenceSession.SessionOptions) => {
    const [{ int8PromptGraph }, { decodeModel, encodeModel }] = await modules();
    const rewritten = int8PromptGraph(decodeModel(await graph(), source.path), dataDir, logitsWidth);
    // (not undefined: the rewrite takes the products counted above, and a weight it cannot read, its data file missing
    // or cut short, throws instead; either way the load fails with the message below rather than run without the option)
    if (!rewritten) throw new ModelRunError('no product could be rewritten');
    return ort.InferenceSession.create(encodeModel(rewritten.model), opts);
  };
  try {
    const session = saved ? await createCachedSession(source.path, { ...saved, facts: { products } }, withData, load) : await load(withData);
    return { session, products };
  } catch (err) {
    throw new ModelRunError(`${label}: its int8 prompt graph (int8Prompts) could not be loaded: ${(err as Error).message}`);
  }
}

/** Where a prepared decoder graph lives and how to load it. */
export interface DecoderSource {
  /** The graph file to load. */
  path: string;
  /** Set when the graph keeps external data that lives in another directory: the graph is loaded from bytes. */
  externalDataDir?: string;
  /** The graph's bytes, when it is not on disk at `path` (a prepared graph the cache could not take): loaded from them. */
  graph?: Uint8Array;
  /** Original file, for messages. */
  label?: string;
  /** Weight bytes a decode step reads; small models default to one intra-op thread. */
  weightBytes?: number;
  /**
   * Which side shorter prompts of a batch are padded on. `left` (default) suits graphs that mask keys by
   * `attention_mask`; `right` suits GroupQueryAttention graphs, which take each row's positions and valid keys
   * from `seqlens_k` (Σ mask − 1) and so need every row's tokens packed from the start of its cache.
   */
  padding?: 'left' | 'right';
  /** LongRoPE graphs: prompts longer than this are prefilled in one run (see `GraphFacts.longRopeContext`). */
  longRopeContext?: number;
  /**
   * Graphs that quantize a run's activations with one scale (see `GraphFacts.runWideActivationScale`): rows run one
   * at a time, prompts whole, and no prefix is reused.
   */
  runWideActivationScale?: boolean;
  /** Where a CPU session of this graph may keep its optimized form with prepacked weights (see session-cache.ts). */
  sessionCache?: SessionCacheSpec;
}

/** Session settings a user may choose. */
export interface RuntimeOptions {
  /** Execution provider name: cpu (default), cuda, tensorrt, webgpu, coreml, dml. */
  device?: string;
  /** Threads inside one operator; default: one for small models, else onnxruntime's choice (one per physical core). */
  intraOpThreads?: number;
  /** Bytes of KV cache the session keeps of recent prompts (see {@link PrefixCache}; default {@link DEFAULT_PREFIX_CACHE_BYTES}, 0: none). */
  prefixCacheBytes?: number;
  /**
   * Whether a CPU session is created from its optimized form with prepacked weights, saved beside the prepared graph
   * the first time: later loads take 15-60% less time, the packed weights are file pages (shared, reclaimable) instead
   * of private memory, for 2.3-2.5x the module's bytes on disk (see runtime/session-cache.ts). Default: for graphs
   * whose decode step reads at least 32 MiB, and for every {@link int8Prompts} prompt session; true: every graph;
   * false: none.
   */
  sessionCache?: boolean;
  /**
   * Prompts run through a second session of the graph whose block-quantized products (MatMulNBits) are 8-bit integer
   * products, on onnxruntime's integer GEMM (AMX or VNNI kernels where the CPU has them): prefill 2-2.5x faster on
   * the CPU measured, for about a byte a weight more memory and an int8 rounding of the prompt (see
   * onnx/int8-prompt-graph.ts). Steps keep the model's own products. CPU only; a graph without such products runs as
   * without it ({@link DecoderSession.int8Prompts} says which). Default false.
   */
  int8Prompts?: boolean;
}

/**
 * What {@link RuntimeOptions.int8Prompts} did for one model (`ModelInfo.int8Prompts`): the option is no error where it
 * can do nothing, so this is where a user sees whether prompts run on int8 products.
 */
export interface Int8PromptsOutcome {
  /** Products its prompts run as 8-bit integer products; 0: none, its prompts run on the model's own products. */
  products: number;
  /**
   * With no product rewritten, why: `device`, a device other than the CPU (the int8 products are onnxruntime's CPU
   * kernels); `no-products`, no block-quantized product the rewrite takes (float and fp16 graphs, merged decoders,
   * whose products lie in `If` branches, fp16 scales as q4f16 exports have them).
   */
  unused?: 'device' | 'no-products';
}

/** Raised when a model run fails; names the model and the step. */
export class ModelRunError extends Error {
  override name = 'ModelRunError';
}

type IdArray = BigInt64Array | Int32Array;

/**
 * Weight bytes a decode step reads from which a CPU session plans no memory patterns (`enableMemPattern` false):
 * onnxruntime then takes each intermediate from its arena as it comes instead of one block planned per input
 * shape, and prefill runs, each of its own shape, leave the arena less memory it cannot reuse. Measured on the
 * Qwen2.5-0.5B-shaped Q4_0 module (2 threads): peak RSS after a 512-token prompt 863-866 MB against 916-922, after
 * 4096 1168-1174 against 1415-1420 (1050 with the shorter runs of batch-kv.ts's PREFILL_SCORE_SPAN), prefill and
 * decode times the same within the machine's noise; on the 125M llama's Q4_0 module the step the same (4.76 against
 * 4.76 ms). Small models keep them: their steps are short enough for the per-tensor allocations to show (the 24M
 * 4-bit model 1.16 against 1.03 ms a token, a 3M reasoner 0.75 against 0.61).
 */
export const MEM_PATTERN_BELOW_BYTES = 64 * 2 ** 20;

/**
 * Whether onnxruntime's intra-op pool threads may keep spinning once a run is over (its default), rather than
 * stop at its end (`session.force_spinning_stop`; within a run they still spin between parallel sections): not
 * when the pool takes every CPU this process may use (`threads` undefined: onnxruntime's default, one per physical
 * core). A pool thread spinning after a run competes with the JavaScript between two steps (sampling, streaming
 * tokens, the main thread's messages) and with any other process. Measured on the 2-vCPU machine (bench:serve's
 * 4-bit 125M module, 2 threads, 32-token greedy calls, engines loaded one at a time in 5-6 interleaved rounds):
 * beside one busy process the median inter-token latency of one call went from 8.6 to 4.2 ms (8 calls: 22.4 to
 * 21.5 ms); quiet (load 1.0-1.6) 3.49 to 3.53 ms (8 calls: 12.5 to 12.9, within the rounds' spread). Sleeping
 * between sections too (`intra_op.allow_spinning` 0) helped 8 calls under load (18.3 ms) but cost the quiet single
 * call a third (4.72 ms): each of a step's parallel sections then wakes the pool.
 */
export function poolSpinsAfterRun(threads: number | undefined, cores = availableParallelism(), perCore = threadsPerCore()): boolean {
  return (threads ?? Math.max(1, Math.floor(cores / perCore))) < cores;
}

function idTensor(type: IdType, values: ArrayLike<number>, dims: number[]): ort.Tensor {
  if (type === 'int32') return new ort.Tensor('int32', Int32Array.from(values), dims);
  return new ort.Tensor('int64', int64s(values), dims);
}

const LITTLE_ENDIAN = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;

/**
 * `values` as int64s. Ids, positions and masks fit in 32 bits: each is written as its two 32-bit halves, which
 * costs a third of a BigInt made per value (a step's attention mask has a value per row and position).
 */
function int64s(values: ArrayLike<number>): BigInt64Array {
  const data = new BigInt64Array(values.length);
  const halves = LITTLE_ENDIAN ? new Int32Array(data.buffer) : undefined;
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (halves && (v | 0) === v) {
      halves[2 * i] = v;
      halves[2 * i + 1] = v >> 31;
    } else data[i] = BigInt(v);
  }
  return data;
}

function appendColumn(type: IdType, mask: IdArray, rows: number, cols: number, value: number): IdArray {
  const next = type === 'int32' ? new Int32Array(rows * (cols + 1)) : new BigInt64Array(rows * (cols + 1));
  for (let r = 0; r < rows; r++) {
    (next as Int32Array).set((mask as Int32Array).subarray(r * cols, (r + 1) * cols), r * (cols + 1));
    (next as Int32Array)[r * (cols + 1) + cols] = (type === 'int32' ? value : BigInt(value)) as number;
  }
  return next;
}

/** A decoder session with its own KV cache. */
export class DecoderSession {
  private past: Record<string, ort.Tensor> = {};
  /** Whether nothing but this session holds {@link past}'s tensors (not the prefix cache, not a prompt's rows being joined). */
  private ownsPast = false;
  private mask: IdArray = new BigInt64Array(0);
  private rows = 0;
  private length = 0;
  private nextPosition: number[] = [];
  private hidden: Float32Array | undefined;
  /** The caches of this model's recent prompts, which its prefills (here and in a continuous batch) go on from. */
  readonly prefixCache: PrefixCache;
  /** Prompt tokens the last {@link prefill} took from the prefix cache. */
  reusedPromptTokens = 0;

  private constructor(
    private readonly session: ort.InferenceSession,
    /** The session prompts run on ({@link RuntimeOptions.int8Prompts}), else the one above. */
    private readonly promptSession: ort.InferenceSession,
    /** The detected I/O signature. */
    readonly signature: DecoderSignature,
    /** Names the model in errors. */
    readonly label: string,
    /** Intra-op threads the session was created with; undefined means onnxruntime's default. */
    readonly intraOpThreads: number | undefined,
    /** The side shorter prompts are padded on (see {@link DecoderSource.padding}). */
    readonly padding: 'left' | 'right',
    /** LongRoPE graphs: prompts longer than this are prefilled in one run (see {@link DecoderSource.longRopeContext}). */
    readonly longRopeContext: number | undefined,
    /**
     * Whether the graph quantizes a run's activations with one scale (see {@link DecoderSource.runWideActivationScale}):
     * its runs of several rows run each row alone (see {@link runRows}), prompts of different lengths are prefilled
     * one at a time, and it keeps no prefixes (a prompt's rest run after a cached prefix rounds otherwise than the
     * whole prompt).
     */
    readonly runWideActivationScale: boolean,
    prefixCacheBytes: number,
    /** What {@link RuntimeOptions.int8Prompts} did; undefined where the session was not asked for it. */
    readonly int8Prompts: Int8PromptsOutcome | undefined,
  ) {
    this.prefixCache = new PrefixCache(this, runWideActivationScale ? 0 : prefixCacheBytes);
  }

  /** Creates the onnxruntime session and reads the signature from its metadata. */
  static async create(source: DecoderSource, options: RuntimeOptions = {}): Promise<DecoderSession> {
    const device = options.device ?? 'cpu';
    const sessionOptions: ort.InferenceSession.SessionOptions = {
      executionProviders: executionProvidersFor(device),
      graphOptimizationLevel: 'all',
      // Measured on the CPU only: GPU sessions keep onnxruntime's default.
      enableMemPattern: device !== 'cpu' || (source.weightBytes ?? 0) < MEM_PATTERN_BELOW_BYTES,
    };
    const threads = intraOpThreadsFor(options, source.weightBytes);
    if (threads) sessionOptions.intraOpNumThreads = threads;
    const config: Record<string, unknown> = {};
    if (!poolSpinsAfterRun(threads)) config.force_spinning_stop = '1';
    if (source.externalDataDir) config.model_external_initializers_file_folder_path = source.externalDataDir;
    if (Object.keys(config).length > 0) sessionOptions.extra = { session: config };
    const load = async (opts: ort.InferenceSession.SessionOptions) =>
      source.graph || source.externalDataDir ? ort.InferenceSession.create(source.graph ?? (await readFile(source.path)), opts) : ort.InferenceSession.create(source.path, opts);
    const keep = options.sessionCache ?? (source.weightBytes ?? 0) >= SESSION_CACHE_MIN_BYTES;
    const cache = device === 'cpu' && keep ? source.sessionCache : undefined;
    let session: ort.InferenceSession;
    try {
      session = cache ? await createCachedSession(source.path, cache, sessionOptions, load) : await load(sessionOptions);
    } catch (err) {
      throw deviceFailure(device, err, source.label ?? source.path);
    }
    const label = source.label ?? source.path;
    let promptSession = session;
    try {
      const signature = detectSignature(session.inputMetadata, session.outputMetadata, label);
      let int8Prompts: Int8PromptsOutcome | undefined;
      if (options.int8Prompts && device !== 'cpu') int8Prompts = { products: 0, unused: 'device' };
      else if (options.int8Prompts) {
        // (kept whatever the model's size unless told not to: the rewrite takes seconds where loading its saved form takes tenths)
        const promptCache = options.sessionCache === false ? undefined : source.sessionCache;
        const int8 = await createInt8PromptSession(source, signature.logits.vocabSize, sessionOptions, promptCache);
        promptSession = int8?.session ?? session;
        int8Prompts = int8 ? { products: int8.products } : { products: 0, unused: 'no-products' };
      }
      const prefixBytes = options.prefixCacheBytes ?? DEFAULT_PREFIX_CACHE_BYTES;
      return new DecoderSession(session, promptSession, signature, label, threads, source.padding ?? 'left', source.longRopeContext, source.runWideActivationScale ?? false, prefixBytes, int8Prompts);
    } catch (err) {
      await session.release();
      if (promptSession !== session) await promptSession.release();
      throw err;
    }
  }

  /** Vocabulary size of the logits. */
  get vocabSize(): number {
    return this.signature.logits.vocabSize;
  }

  /** Tokens currently in the cache (including left padding). */
  get cachedLength(): number {
    return this.length;
  }

  /**
   * Runs the prompts (left-padded to one length) through the model, replacing the cache.
   * Returns `[rows × vocab]` fp32 logits of each row's last position. A single prompt goes on from the longest
   * cached prompt it begins with, and is kept in the prefix cache.
   */
  async prefill(prompts: readonly (readonly number[])[]): Promise<Float32Array> {
    this.reusedPromptTokens = 0;
    const sig = this.signature;
    const rows = prompts.length;
    const seq = Math.max(...prompts.map((p) => p.length));
    if (rows === 0 || seq === 0) throw new ModelRunError(`${this.label}: prefill needs at least one non-empty prompt`);
    if (rows === 1) {
      const start = this.prefixCache.lookup(prompts[0]!);
      if (start) return this.prefillAfter(prompts[0]!, start);
    }
    // A padding token would run through a recurrent state (a mask hides keys, not a state's inputs), or into a run-wide
    // activation scale: rows of different lengths then run alone and are joined.
    const padless = this.padding === 'right' || sig.states.length > 0 || this.runWideActivationScale;
    if (padless && prompts.some((p) => p.length !== seq)) return this.prefillRowsAlone(prompts);
    const ids = new Array<number>(rows * seq).fill(0);
    const mask = new Array<number>(rows * seq).fill(0);
    const positions = new Array<number>(rows * seq).fill(1);
    this.nextPosition = [];
    prompts.forEach((p, r) => {
      const pad = seq - p.length;
      for (let i = 0; i < p.length; i++) {
        ids[r * seq + pad + i] = p[i]!;
        mask[r * seq + pad + i] = 1;
        positions[r * seq + pad + i] = i;
      }
      this.nextPosition.push(p.length);
    });
    this.rows = rows;
    this.length = 0;
    this.replacePast(emptyPast(sig, rows), true);
    const maskType = sig.attentionMask?.type ?? 'int64';
    this.mask = (maskType === 'int32' ? Int32Array.from(mask) : int64s(mask)) as IdArray;
    const logits = await this.run(idTensor(sig.inputIds.type, ids, [rows, seq]), undefined, positions, seq, 'prefill');
    if (rows === 1) this.keepPrompt(prompts[0]!);
    return logits;
  }

  /**
   * One prompt prefilled after the cache of its first positions. A graph that refuses a run after a past
   * (onnxruntime-genai mask subgraphs take a whole prompt or one token) runs it whole, and its cache stays off.
   */
  private async prefillAfter(prompt: readonly number[], start: RowCache): Promise<Float32Array> {
    const sig = this.signature;
    const rest = prompt.slice(start.length);
    const maskType = sig.attentionMask?.type ?? 'int64';
    this.rows = 1;
    this.replacePast({ ...start.past }, false);
    this.length = start.length;
    this.nextPosition = [prompt.length];
    this.mask = (maskType === 'int32' ? new Int32Array(prompt.length).fill(1) : new BigInt64Array(prompt.length).fill(1n)) as IdArray;
    let logits: Float32Array;
    try {
      logits = await this.run(idTensor(sig.inputIds.type, rest, [1, rest.length]), undefined, rest.map((_, i) => start.length + i), rest.length, 'prefill');
    } catch {
      this.prefixCache.refused(start.length);
      return this.prefill([prompt]);
    }
    this.reusedPromptTokens = start.length;
    this.keepPrompt(prompt);
    return logits;
  }

  /** Keeps the cache of the prompt just prefilled alone (a copy of the record: later runs replace its tensors). */
  private keepPrompt(prompt: readonly number[]): void {
    const past = this.past;
    this.prefixCache.store(
      prompt,
      () => {
        this.ownsPast = false;
        return { past: { ...past }, length: prompt.length };
      },
      true,
    );
  }

  /** Takes `next` as the cache; the one it replaces is freed at once when this session held it alone. */
  private replacePast(next: Record<string, ort.Tensor>, owned: boolean): void {
    if (this.ownsPast) releaseTensors(Object.values(this.past));
    this.past = next;
    this.ownsPast = owned;
  }

  /**
   * Prompts of different lengths run alone (so each last position is the prompt's own last token, which a
   * last-position graph returns, and no padding runs through a recurrent state), then joined on the session's
   * padding side: right, each row's keys packed from the start and zeros after them, the mask marking the zeros, so
   * `seqlens_k` (Σ mask − 1) points each row's next token at its own next slot; left, as a padded prefill leaves them.
   */
  private async prefillRowsAlone(prompts: readonly (readonly number[])[]): Promise<Float32Array> {
    const sig = this.signature;
    const rows = prompts.length;
    const seq = Math.max(...prompts.map((p) => p.length));
    const right = this.padding === 'right';
    const perRow: { past: Record<string, ort.Tensor>; logits: Float32Array; hidden?: Float32Array }[] = [];
    let reused = 0;
    for (const p of prompts) {
      const logits = await this.prefill([p]);
      reused += this.reusedPromptTokens;
      perRow.push({ past: this.past, logits, ...(this.hidden ? { hidden: this.hidden } : {}) });
      this.ownsPast = false; // (read below, after the next row's prefill has replaced it)
    }
    this.reusedPromptTokens = reused;
    const past: Record<string, ort.Tensor> = {};
    for (const name of pastNames(sig)) {
      const data = allocate(sig, name, rows * rowElements(sig, name, seq));
      perRow.forEach((r, row) => {
        const length = prompts[row]!.length;
        const to = { row, width: seq, first: right ? 0 : seq - length, length };
        copyRow(sig, name, r.past[name]!.data as CacheData, { row: 0, width: length, first: 0, length }, data, to);
      });
      past[name] = pastTensor(sig, name, data, rows, seq);
    }
    const mask = prompts.flatMap((p) => Array.from({ length: seq }, (_, i) => ((right ? i < p.length : i >= seq - p.length) ? 1 : 0)));
    const maskType = sig.attentionMask?.type ?? 'int64';
    this.mask = (maskType === 'int32' ? Int32Array.from(mask) : int64s(mask)) as IdArray;
    this.replacePast(past, true);
    this.rows = rows;
    this.length = seq;
    this.nextPosition = prompts.map((p) => p.length);
    const vocab = sig.logits.vocabSize;
    const logits = new Float32Array(rows * vocab);
    perRow.forEach((r, row) => logits.set(r.logits, row * vocab));
    if (sig.hiddenState) {
      const width = sig.hiddenState.hiddenSize;
      const hidden = new Float32Array(rows * width);
      perRow.forEach((r, row) => hidden.set(r.hidden!, row * width));
      this.hidden = hidden;
    }
    return logits;
  }

  /** Appends one token per row (in row order) and returns the new last-position logits. */
  async step(tokens: readonly number[]): Promise<Float32Array> {
    if (tokens.length !== this.rows) {
      throw new ModelRunError(`${this.label}: step got ${tokens.length} tokens for ${this.rows} rows`);
    }
    return this.advance(idTensor(this.signature.inputIds.type, tokens, [this.rows, 1]), undefined, 'step');
  }

  /**
   * Appends one continuous input embedding per row (`[rows × hidden]`, fp32) instead of a token — a latent
   * step — and returns the new last-position logits. Needs a graph prepared with `inputs_embeds`.
   */
  async stepEmbeds(embeds: Float32Array): Promise<Float32Array> {
    const spec = this.signature.inputsEmbeds;
    if (!spec) throw new ModelRunError(`${this.label}: this session was not prepared with an inputs_embeds input`);
    if (embeds.length !== this.rows * spec.hiddenSize) {
      throw new ModelRunError(`${this.label}: got ${embeds.length} embedding values for ${this.rows} rows of ${spec.hiddenSize}`);
    }
    const ids = idTensor(this.signature.inputIds.type, [], [this.rows, 0]);
    return this.advance(ids, floatTensor(spec.type, embeds, [this.rows, 1, spec.hiddenSize]), 'latent step');
  }

  /** The final (post-norm) hidden state of each row's last position, `[rows × hidden]` fp32; needs a graph prepared with it. */
  get lastHidden(): Float32Array {
    if (!this.hidden) throw new ModelRunError(`${this.label}: this session was not prepared with a last_hidden_state output`);
    return this.hidden;
  }

  private async advance(ids: ort.Tensor, embeds: ort.Tensor | undefined, what: string): Promise<Float32Array> {
    const type = this.signature.attentionMask?.type ?? 'int64';
    this.mask = appendColumn(type, this.mask, this.rows, this.length, 1);
    const logits = await this.run(ids, embeds, this.nextPosition, 1, what);
    for (let r = 0; r < this.rows; r++) this.nextPosition[r]! += 1;
    return logits;
  }

  private async run(inputIds: ort.Tensor, embeds: ort.Tensor | undefined, positions: number[], seq: number, what: string): Promise<Float32Array> {
    const sig = this.signature;
    // A step of a graph that returns new keys and values writes them into room the cache keeps (as BatchKv does);
    // prefills (from an empty cache or a cached prefix) take whole caches, and the prefix cache keeps those.
    const inRoom = sig.kvAppends && seq === 1;
    if (inRoom && this.slotsHeld() === this.length) this.makeRoom();
    const slots = inRoom ? this.slotsHeld() : this.length;
    const total = this.length + seq;
    const feeds: Record<string, ort.Tensor> = { [sig.inputIds.name]: inputIds, ...this.past };
    if (sig.inputsEmbeds) {
      // Token steps pass no embeddings: the prepared graph concatenates token and continuous inputs.
      feeds[sig.inputsEmbeds.name] = embeds ?? floatTensor(sig.inputsEmbeds.type, new Float32Array(0), [this.rows, 0, sig.inputsEmbeds.hiddenSize]);
    }
    if (sig.attentionMask) feeds[sig.attentionMask.name] = new ort.Tensor(sig.attentionMask.type, inRoom ? this.maskWithRoom(slots) : this.mask, [this.rows, slots + seq]);
    if (sig.positionIds) feeds[sig.positionIds.name] = idTensor(sig.positionIds.type, positions, [this.rows, seq]);
    if (sig.useCacheBranch) feeds[sig.useCacheBranch] = new ort.Tensor('bool', [this.length > 0], [1]);
    if (sig.numLogitsToKeep) feeds[sig.numLogitsToKeep.name] = idTensor(sig.numLogitsToKeep.type, [1], []);
    let out: Record<string, ort.Tensor>;
    try {
      out = await this.runRows(feeds, this.rows, what === 'prefill');
    } catch (err) {
      throw new ModelRunError(`${this.label}: ${what} failed at position ${this.length}: ${(err as Error).message}`);
    }
    if (inRoom) writeStep(sig, this.past, byPastName(sig, out), this.rows, slots, this.length);
    else this.replacePast({ ...this.past, ...presentsOf(sig, out, this.past, this.length, this.rows) }, true);
    this.length = total;
    if (sig.hiddenState) this.hidden = lastPosition(out[sig.hiddenState.name]!, this.rows, sig.hiddenState.hiddenSize);
    return lastPosition(out[sig.logits.name]!, this.rows, sig.logits.vocabSize);
  }

  /** Slots each row of the cache's keys and values has: its length, or more where steps write into room. */
  private slotsHeld(): number {
    const kv = this.signature.kv[0]!;
    return Number(this.past[kv.pastKey]!.dims[2]);
  }

  /** Copies the cache into one with {@link KV_ROOM} more slots a row (recurrent states too: the copy is all this session's own). */
  private makeRoom(): void {
    const sig = this.signature;
    const slots = this.length + KV_ROOM;
    const next: Record<string, ort.Tensor> = {};
    for (const name of pastNames(sig)) next[name] = pastTensor(sig, name, widened(sig, name, this.past[name]!.data as CacheData, this.rows, this.length, slots), this.rows, slots);
    this.replacePast(next, true);
  }

  /** The step's mask (`[rows × (length + 1)]`) with the room's slots masked out between the cache's positions and the new one. */
  private maskWithRoom(slots: number): IdArray {
    const [rows, length] = [this.rows, this.length];
    const mask = (this.mask instanceof Int32Array ? new Int32Array(rows * (slots + 1)) : new BigInt64Array(rows * (slots + 1))) as IdArray;
    for (let r = 0; r < rows; r++) {
      (mask as Int32Array).set((this.mask as Int32Array).subarray(r * (length + 1), (r + 1) * (length + 1) - 1), r * (slots + 1));
      (mask as Int32Array)[r * (slots + 1) + slots] = (this.mask as Int32Array)[(r + 1) * (length + 1) - 1]!;
    }
    return mask;
  }

  /**
   * One run for callers that keep the KV cache themselves (continuous batching), leaving this session's own
   * cache alone: `ids` `[rows × seq]` after `past` (by past input name, `[rows, kvHeads, pastLength, headDim]`;
   * none: empty), with `mask` `[rows × (pastLength + seq)]` and `positions` `[rows × seq]`. With `embeds`
   * (`[rows × hidden]`, and no ids) one continuous input per row is fed instead: a latent step. Returns the
   * last-position logits `[rows × vocab]` (fp32), the present caches by past input name, and the last
   * position's hidden state `[rows × hidden]` when the graph reports it. With `ends` (each row's last own
   * position among this run's `seq`, for right-padded rows) the logits are each row's at its own end instead, and
   * no hidden state is returned; that needs a graph with `num_logits_to_keep` (see {@link keepsLogits}). With
   * `every`, the logits of each of the last `every` positions (`[rows × every × vocab]`), and no hidden state.
   * `prompt`: the run is (part of) a prompt's prefill, run on the prompt session ({@link RuntimeOptions.int8Prompts}).
   */
  async forward(
    ids: readonly number[],
    rows: number,
    past: Record<string, ort.Tensor> | undefined,
    pastLength: number,
    mask: readonly number[],
    positions: readonly number[],
    embeds?: Float32Array,
    ends?: readonly number[],
    every?: number,
    prompt = false,
  ): Promise<{ logits: Float32Array; present: Record<string, ort.Tensor>; hidden?: Float32Array }> {
    // (a caller's fp16 tensors hold Float16Arrays where the global exists; the presents are joined to them as bits)
    const fed = past ? allWithBits(past) : emptyPast(this.signature, rows);
    const { out, ...rest } = await this.runBatch(ids, rows, fed, pastLength, mask, positions, embeds, ends, every, prompt);
    return { ...rest, present: presentsOf(this.signature, out, fed, pastLength, rows) };
  }

  /**
   * A run on a cache kept with room to spare, for a graph that returns only new keys and values
   * (`signature.kvAppends`): `seq` tokens per row (`tokens` `[rows × seq]`) after `past` (`[rows, kvHeads, slots,
   * headDim]`, its unused slots masked out in `mask`, `[rows × (slots + seq)]`). Returns the logits of every position
   * run (`[rows × seq × vocab]`; a step's are the last position's), each row's new keys and values (`[rows, kvHeads,
   * seq, headDim]`) and recurrent states by past input name, and the hidden state when reported (one step only).
   */
  async appendStep(
    tokens: readonly number[],
    past: Record<string, ort.Tensor>,
    slots: number,
    mask: readonly number[],
    positions: readonly number[],
    seq = 1,
  ): Promise<{ logits: Float32Array; fresh: Record<string, ort.Tensor>; hidden?: Float32Array }> {
    if (!this.signature.kvAppends) throw new ModelRunError(`${this.label}: the graph returns joined caches (present.{i}), not new keys and values`);
    const { out, ...rest } = await this.runBatch(tokens, tokens.length / seq, past, slots, mask, positions, undefined, undefined, seq);
    return { ...rest, fresh: byPastName(this.signature, out) };
  }

  private async runBatch(
    ids: readonly number[],
    rows: number,
    past: Record<string, ort.Tensor>,
    pastLength: number,
    mask: readonly number[],
    positions: readonly number[],
    embeds?: Float32Array,
    ends?: readonly number[],
    /** Logits of every one of the last `every` positions (none: one per row). */
    every?: number,
    prompt = false,
  ): Promise<{ logits: Float32Array; out: Record<string, ort.Tensor>; hidden?: Float32Array }> {
    const sig = this.signature;
    if (embeds && !sig.inputsEmbeds) throw new ModelRunError(`${this.label}: this session was not prepared with an inputs_embeds input`);
    const seq = embeds ? 1 : ids.length / rows;
    const feeds: Record<string, ort.Tensor> = { [sig.inputIds.name]: idTensor(sig.inputIds.type, ids, [rows, ids.length / rows]), ...past };
    if (sig.inputsEmbeds) {
      const { name, type, hiddenSize } = sig.inputsEmbeds;
      feeds[name] = floatTensor(type, embeds ?? new Float32Array(0), [rows, embeds ? 1 : 0, hiddenSize]);
    }
    if (sig.attentionMask) feeds[sig.attentionMask.name] = idTensor(sig.attentionMask.type, mask, [rows, pastLength + seq]);
    if (sig.positionIds) feeds[sig.positionIds.name] = idTensor(sig.positionIds.type, positions, [rows, seq]);
    if (sig.useCacheBranch) feeds[sig.useCacheBranch] = new ort.Tensor('bool', [pastLength > 0], [1]);
    // Logits of the last `keep` positions: every row's own end among them, or all those asked for.
    const keep = every ?? (ends ? seq - Math.min(...ends) : 1);
    if (keep > 1 && !sig.numLogitsToKeep) throw new ModelRunError(`${this.label}: the graph returns the last position's logits only (no num_logits_to_keep input)`);
    if (sig.numLogitsToKeep) feeds[sig.numLogitsToKeep.name] = idTensor(sig.numLogitsToKeep.type, [keep], []);
    let out: Record<string, ort.Tensor>;
    try {
      out = await this.runRows(feeds, rows, prompt);
    } catch (err) {
      throw new ModelRunError(`${this.label}: batch step failed at position ${pastLength}: ${(err as Error).message}`);
    }
    if (ends) return { logits: atPositions(out[sig.logits.name]!, rows, sig.logits.vocabSize, ends.map((e) => seq - 1 - e)), out };
    if (every !== undefined && every > 1) return { logits: out[sig.logits.name]!.data as Float32Array, out };
    const logits = lastPosition(out[sig.logits.name]!, rows, sig.logits.vocabSize);
    if (!sig.hiddenState) return { logits, out };
    return { logits, out, hidden: lastPosition(out[sig.hiddenState.name]!, rows, sig.hiddenState.hiddenSize) };
  }

  /**
   * Runs `feeds` of `rows` rows in one run; on a graph with a run-wide activation scale, one run per row (its part of
   * every batch input, a view), the outputs joined along the rows, so that no row's values enter another's scale. (The
   * continuous batch keeps such rows apart altogether, see lone-rows-kv.ts; here a shorter row still runs over the
   * longest row's width, its padding masked, which can change its last bits.)
   */
  private async runRows(feeds: Record<string, ort.Tensor>, rows: number, prompt: boolean): Promise<Record<string, ort.Tensor>> {
    if (!this.runWideActivationScale || rows === 1) return this.runOnce(feeds, prompt);
    const sig = this.signature;
    const whole = new Set([sig.useCacheBranch, sig.numLogitsToKeep?.name]);
    const runs: Record<string, ort.Tensor>[] = [];
    for (let r = 0; r < rows; r++) {
      const own = Object.fromEntries(Object.entries(feeds).map(([name, t]) => [name, whole.has(name) ? t : rowView(t, r, rows)]));
      runs.push(await this.runOnce(own, prompt));
    }
    const out = Object.fromEntries(Object.keys(runs[0]!).map((name) => [name, joinRows(runs.map((o) => o[name]!))]));
    // (each row's outputs were copied into the joined ones)
    releaseTensors(runs.flatMap((o) => Object.values(o)));
    return out;
  }

  /** One run of the session (a prompt's on the prompt session), fp16 tensors fed and returned as raw bits (see `withBits`). */
  private async runOnce(feeds: Record<string, ort.Tensor>, prompt: boolean): Promise<Record<string, ort.Tensor>> {
    const session = prompt ? this.promptSession : this.session;
    return allWithBits((await guardedRun(() => session.run(allWithBits(feeds)))) as Record<string, ort.Tensor>);
  }

  /** Whether {@link forward} can return logits of positions before the last (the graph takes `num_logits_to_keep`). */
  get keepsLogits(): boolean {
    return this.signature.numLogitsToKeep !== undefined;
  }

  /** Frees the native session. */
  async release(): Promise<void> {
    this.past = {};
    await this.session.release();
    if (this.promptSession !== this.session) await this.promptSession.release();
  }
}

const f16Table = (() => {
  const table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    table[h] =
      exp === 0 ? sign * 2 ** -14 * (frac / 1024) : exp === 31 ? (frac ? NaN : sign * Infinity) : sign * 2 ** (exp - 15) * (1 + frac / 1024);
  }
  return table;
})();

type TensorData = Float32Array | Uint16Array | Int32Array | BigInt64Array | Uint8Array;

/** Row `r` of a tensor of `rows` rows (its first dimension), as a view of its data. */
function rowView(t: ort.Tensor, r: number, rows: number): ort.Tensor {
  const data = t.data as TensorData;
  const per = data.length / rows;
  return new ort.Tensor(t.type as 'float32', data.subarray(r * per, (r + 1) * per) as Float32Array, [1, ...t.dims.slice(1)]);
}

/** Tensors of one type and the same trailing dimensions, joined along their first. */
function joinRows(parts: readonly ort.Tensor[]): ort.Tensor {
  const first = parts[0]!;
  const data = first.data as TensorData;
  const out = new (data.constructor as new (length: number) => TensorData)(parts.reduce((n, t) => n + (t.data as TensorData).length, 0));
  let at = 0;
  for (const t of parts) {
    out.set(t.data as never, at);
    at += (t.data as TensorData).length;
  }
  const rows = parts.reduce((n, t) => n + Number(t.dims[0]), 0);
  return withBits(new ort.Tensor(first.type as 'float32', out as Float32Array, [rows, ...first.dims.slice(1)]));
}

/** An fp32 or fp16 tensor from fp32 values. */
function floatTensor(type: 'float32' | 'float16', values: Float32Array, dims: number[]): ort.Tensor {
  return type === 'float16' ? new ort.Tensor('float16', float32ArrayToFloat16(values), dims) : new ort.Tensor('float32', values, dims);
}

/** `[rows, seq, width]` values (fp32 or fp16) → `[rows × width]` fp32 of the last position. */
function lastPosition(t: ort.Tensor, rows: number, vocab: number): Float32Array {
  const seq = t.dims.length === 3 ? Number(t.dims[1]) : 1;
  if (t.type === 'float32' && seq === 1) return t.data as Float32Array;
  return atPositions(t, rows, vocab, new Array<number>(rows).fill(0));
}

/** `[rows, seq, width]` values (fp32 or fp16) → `[rows × width]` fp32, row r's from `fromEnd[r]` positions before the last. */
function atPositions(t: ort.Tensor, rows: number, vocab: number, fromEnd: readonly number[]): Float32Array {
  const seq = t.dims.length === 3 ? Number(t.dims[1]) : 1;
  const out = new Float32Array(rows * vocab);
  for (let r = 0; r < rows; r++) {
    const offset = (r * seq + seq - 1 - fromEnd[r]!) * vocab;
    if (t.type === 'float32') out.set((t.data as Float32Array).subarray(offset, offset + vocab), r * vocab);
    else {
      const src = t.data as Uint16Array;
      for (let v = 0; v < vocab; v++) out[r * vocab + v] = f16Table[src[offset + v]!]!;
    }
  }
  return out;
}
