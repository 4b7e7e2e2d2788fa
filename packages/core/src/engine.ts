/**
 * The engine: loads a model into its own worker thread and generates from it. The main thread only
 * sends requests and receives streamed tokens, so it stays responsive while the model runs.
 */
import type { Worker } from 'node:worker_threads';
import type { GenerateOptions, GenerationResult, TokenEvent } from './generate/types.js';
import type { RuntimeOptions } from './runtime/decoder-session.js';
import {
  backboneNeeds,
  type CompositionOptions,
  type ConstraintOptions,
  type EmbedInput,
  type EmbedResult,
  type FromWorker,
  type GenerateRequestOptions,
  type ModelInfo,
  type PromptInput,
  type ReasonerSpec,
  type ToWorker,
  type WorkerConfig,
} from './runtime/protocol.js';
import { spawnWorker } from './runtime/spawn-worker.js';
import { callSite, EngineClosedError, workerError, type CallSite } from './runtime/worker-errors.js';
import { holdExitForRuns, newRunGuard, withRunGuard, type RunGuard } from './runtime/run-guard.js';
import { findPreparedModel } from './runtime/prepare-model.js';
import { resolveModelPath } from './registry/resolve-model.js';
import type { RegistryOptions } from './registry/settings.js';
import { reasonersForTasks, type ReasonerTask } from './registry/task-reasoners.js';
import type { TransferProgress } from './registry/download.js';
import type { FusionMode } from './compose/fusion.js';
import { refuseUnknownOptions, validateGenerateOptions } from './generate/options.js';
import { validatePromptInput } from './generate/prompt-input.js';
import { checkCallShape, checkMode, checkModelRef, checkReasonerList, checkTrace, CompositionOptionsError } from './compose/composition-options.js';
import { PromptError } from './generate/decode-loop.js';
import { validateIntraOpThreads, validatePlacement, type PlacementChoice } from './runtime/thread-budget.js';
import { validateDtype } from './modules/hub-variants.js';
import { checkDeviceName } from './runtime/devices.js';
import { QueueFullError, type BatchStats } from './generate/continuous-batch.js';
import { unitLength } from './runtime/unit-length.js';
import { promptLookup, type PromptLookupOptions } from './generate/prompt-lookup.js';
import { draftModel, type DraftModelOptions } from './generate/draft-model.js';
import { MAX_TOP_LOGPROBS } from './sampling/logprobs.js';
import type { PromptLogprobsResult } from './runtime/prompt-logprobs.js';
import { ggufModuleName } from './gguf/gguf-module.js';
import { generationConfigDefaults, ollamaModelDefaults } from './modules/model-defaults.js';
import { isOllamaRef, ollamaSearchStores } from './modules/ollama-store.js';
import { settingsFrom } from './registry/settings.js';

/** How to load a model. */
export interface EngineOptions extends RuntimeOptions {
  /** A module directory, a plain export directory, an .onnx file, or a registry reference (pulled and verified). */
  model: string;
  /**
   * Which graph of a hub export directory to load, by transformers.js's names: fp32 (`onnx/model.onnx`), fp16,
   * q8 (`model_quantized`), int8, uint8, q4, q4f16, bnb4; default (or `auto`): the one the export's config.json
   * names (`transformers.js_config.dtype`), else the most precise variant present.
   */
  dtype?: string;
  /** Where prepared graphs are cached (default `$REASONPLUG_CACHE/prepared` or `~/.cache/reasonplug/prepared`). */
  cacheDir?: string;
  /** Reasoners composed with the backbone (UniR). */
  reasoners?: ReasonerSpec[];
  /**
   * Reasoners found by task in the registry (`registry`'s, else `REASONPLUG_REGISTRY`): for each, the logit-reasoner
   * trained for `task` whose tokenizer is the backbone's, pinned to the version `@*` resolves to (`latest`, else its
   * newest release) and named after the task.
   * Loading fails when none, or more than one repository, offers one.
   */
  reasonerTasks?: ReasonerTask[];
  /**
   * Where reasoners run: `lanes` (worker threads beside the backbone, on cores it gives up), `inline` (on the
   * backbone's thread after it, the backbone keeping every core), or `auto` (default: on the CPU, the one
   * predicted faster from the models' sizes and the cores, always inline on one core; on other devices, a lane
   * per reasoner).
   */
  placement?: PlacementChoice;
  /**
   * Transform of every model's logits before weighting: 'logits' (UniR) or 'logprobs' (GenARM); default: each
   * reasoner's declared one (its manifest's `composition.mode`), the backbone's `logprobs` where a reasoner the call
   * weights declares it.
   */
  mode?: FusionMode;
  /** LiteReason reasoning projector (module directory or .onnx); enables latent decoding. */
  projector?: string;
  /**
   * Prepares the backbone to also give its final hidden state, for {@link Engine.embed} (one more output of its
   * graph, a separate entry of the prepared-graph cache). A model that declares a pooling other than its last
   * token's (`1_Pooling/config.json`, a GGUF's `pooling_type`) is refused.
   */
  embeddings?: boolean;
  /**
   * Positions a generation may use (prompt, generated tokens, latent steps), as vLLM's `--max-model-len` and
   * llama.cpp's `-c`: at most what the models declare (more is refused), and a limit for models that declare none.
   * A chat reply without its own token limit runs to it. Default: the models' own.
   */
  contextLength?: number;
  /** How registry references among the models are pulled (default registry, token, offline; env defaults). */
  registry?: RegistryOptions;
  /**
   * Progress of what loading fetches and converts, file by file: registry pulls (modules, models by Ollama or Hugging
   * Face names) and GGUF conversions (a multi-GB model takes minutes the first time).
   */
  onProgress?: (p: TransferProgress) => void;
  /**
   * Keys' and values' type of `.gguf` models converted on load (ConvertGgufOptions.kvCache): `float16` (default, llama.cpp's
   * default cache type: a long context's steps move half the bytes) or `float32` (exact against llama.cpp's F32 cache).
   */
  ggufKvCache?: 'float32' | 'float16';
  /**
   * Rows decoded together at most (continuous batching; default 8). Concurrent calls share the running batch;
   * 1 runs one call at a time.
   */
  maxBatch?: number;
  /**
   * Calls waiting for room in the batch (or for their turn alone) at most; a call that would wait beyond it is
   * refused with a {@link QueueFullError} (default: no limit).
   */
  maxQueue?: number;
  /**
   * Bytes the batch's KV cache may take, each row counted at its prompt plus its `maxTokens` (default: no
   * limit). A call waits until it fits; one that could never fit alone fails with a KvBudgetError.
   */
  kvBudgetBytes?: number;
  /** Prompt tokens prefilled per run while the running rows wait (default 256). */
  prefillChunk?: number;
  /**
   * Prefix caching: bytes of KV cache each model keeps of recent prompts and finished rows, so that a call whose
   * prompt begins with one of them (a conversation's next turn, a shared system prompt) runs only the rest
   * (default 128 MiB; 0 turns it off). Not counted in `kvBudgetBytes`; `stats().prefixCache` reports it.
   */
  prefixCacheBytes?: number;
  /**
   * Wide steps (at least two rows per thread) on row shards: a one-thread copy of the backbone per thread, each
   * in its own worker stepping its share of the rows, instead of the whole batch on the backbone's threads.
   * Each copy holds the backbone's weights again (`stats().rowShards.weightBytes`). true opens them with the
   * engine (on the CPU, given two or more threads, without a projector; a failure fails the load). Default off:
   * on the 2-vCPU machine measured, two shards slowed each other and one session was faster (see README).
   */
  rowShards?: boolean;
  /**
   * Speculative decoding by prompt lookup: while a call runs alone, the tokens that followed the last few tokens
   * where they occurred before in its prompt or reply are run with its next token in one step, and kept as far as
   * the model writes them itself, so outputs are unchanged (greedy and seeded sampling alike) and a reply that
   * quotes its context takes fewer steps. true takes the defaults (4 tokens drafted, after runs of 3 or 2 tokens).
   * Works on graphs that can take positions back (converted GGUFs and most exports; not GroupQueryAttention or
   * hybrid graphs, which decode as without it). A call's `prediction` drafts with or without it.
   * `stats().drafts` counts drafted and accepted tokens.
   */
  promptLookup?: boolean | PromptLookupOptions;
  /**
   * Speculative decoding with a draft model (llama.cpp's `--model-draft`): a small model with the backbone's
   * tokenizer (the same family, e.g. Qwen2.5-0.5B for Qwen2.5-7B) drafts a call's next tokens greedily while the
   * call runs alone, and the backbone checks them in one run, keeping what it writes itself, so outputs are
   * unchanged (greedy and seeded sampling alike). A model reference (loaded as `model` is: `.gguf` converted,
   * registry references pulled), or `{ model, draftTokens (4), adaptive (true), minProbability (0.5), dtype }`:
   * up to `draftTokens` a step, as many as the engine measures to pay for themselves on this model and machine (none
   * where drafting costs more than it saves); `adaptive: false` drafts `draftTokens` every step. Drafts from a
   * call's `prediction` or from `promptLookup` come first where they find any. Not used on graphs that cannot take
   * positions back (see `promptLookup`).
   */
  draftModel?: string | DraftModelOptions;
  /**
   * Whether the model's own defaults are read from its files (`info.defaults`: an Ollama model's params, system prompt
   * and license layers; a hub export's `generation_config.json`) and its own context length setting (Ollama's
   * `num_ctx`) is the context length where `contextLength` is not given. Default true; the engine's calls never apply
   * the sampling defaults themselves (see `ModelInfo.defaults`).
   */
  modelDefaults?: boolean;
  /**
   * The name `model` was resolved from, when the caller resolved it first (`resolveModelPath`): an `ollama://` name's
   * manifest holds the model's defaults, its converted module does not. Default: `model`.
   */
  modelSource?: string;
}

/** EngineOptions by name, for refusing the others (the type makes a new option fail to compile until it is listed). */
const ENGINE_OPTION_NAMES = {
  model: true, dtype: true, cacheDir: true, reasoners: true, reasonerTasks: true, placement: true, mode: true, projector: true,
  embeddings: true, contextLength: true, registry: true, onProgress: true, ggufKvCache: true, maxBatch: true, maxQueue: true,
  kvBudgetBytes: true, prefillChunk: true, prefixCacheBytes: true, rowShards: true, promptLookup: true, draftModel: true,
  device: true, intraOpThreads: true, sessionCache: true, int8Prompts: true, modelDefaults: true, modelSource: true,
} as const satisfies Record<keyof EngineOptions, true>;

/**
 * Checks `Engine.load`'s options as it does before it pulls or converts anything (names, types, ranges, dtypes, the
 * device's name; not whether the device is installed, found when its session is made), throwing what it throws, and
 * gives the prompt lookup and draft model options parsed: for a caller that resolves the models itself first (the
 * server), so that a mistake is named before any download.
 */
export function checkEngineOptions(options: EngineOptions): { lookup?: ReturnType<typeof promptLookup>; draft?: ReturnType<typeof draftModel> } {
  if (options === null || typeof options !== 'object') throw new CompositionOptionsError('Engine.load takes { model, … }');
  refuseUnknownOptions(options, ENGINE_OPTION_NAMES, 'Engine.load');
  checkModelRef(options.model, 'model');
  if (options.projector !== undefined) checkModelRef(options.projector, 'projector');
  checkReasonerList(options.reasoners, 'model', '', 'Engine.load');
  checkReasonerTaskFields(options.reasonerTasks);
  checkMode(options.mode, '');
  const { dtype, reasoners: reasonerSpecs, placement, maxBatch, maxQueue, kvBudgetBytes, prefillChunk, promptLookup: lookupOption, draftModel: draftOption, contextLength, modelDefaults: readDefaults, modelSource, ...runtime } = options;
  for (const [name, value] of [['modelDefaults', readDefaults], ['sessionCache', runtime.sessionCache], ['int8Prompts', runtime.int8Prompts]] as const) {
    if (value !== undefined && typeof value !== 'boolean') throw new CompositionOptionsError(`${name} must be true or false; got ${JSON.stringify(value)}`);
  }
  if (modelSource !== undefined) checkModelRef(modelSource, 'modelSource');
  const count = (name: string, v: number | undefined, min: number) => {
    if (v !== undefined && !(Number.isInteger(v) && v >= min)) throw new RangeError(`${name} must be a whole number >= ${min}; got ${v}`);
  };
  count('maxBatch', maxBatch, 1);
  count('maxQueue', maxQueue, 0);
  count('kvBudgetBytes', kvBudgetBytes, 1);
  count('prefillChunk', prefillChunk, 1);
  count('prefixCacheBytes', runtime.prefixCacheBytes, 0);
  count('contextLength', contextLength, 1);
  const lookup = lookupOption ? promptLookup(lookupOption) : undefined;
  const draft = draftOption !== undefined ? draftModel(draftOption) : undefined;
  if (placement !== undefined) validatePlacement(placement);
  if (runtime.intraOpThreads !== undefined) validateIntraOpThreads(runtime.intraOpThreads);
  if (runtime.device !== undefined) checkDeviceName(runtime.device);
  for (const d of [dtype, draft?.dtype, ...(reasonerSpecs ?? []).map((r) => r.dtype)]) if (d !== undefined) validateDtype(d);
  return { ...(lookup ? { lookup } : {}), ...(draft ? { draft } : {}) };
}

/** A `reasonerTasks` entry's fields by name. */
const REASONER_TASK_NAMES = { task: true, weight: true } as const satisfies Record<keyof NonNullable<EngineOptions['reasonerTasks']>[number], true>;

/** Refuses names outside a `reasonerTasks` entry's fields (a misspelt weight would compose at the reasoner's default). */
function checkReasonerTaskFields(tasks: unknown): void {
  if (tasks === undefined) return;
  if (!Array.isArray(tasks)) throw new CompositionOptionsError(`reasonerTasks must be a list of { task, weight? }; got ${JSON.stringify(tasks)}`);
  tasks.forEach((t: unknown, i) => {
    if (t !== null && typeof t === 'object') refuseUnknownOptions(t, REASONER_TASK_NAMES, 'Engine.load', `reasonerTasks[${i}]`);
  });
}

/** Options of {@link Engine.embed}. */
export interface EmbedOptions {
  /** false: the hidden states as they are, not scaled to unit length. */
  normalize?: boolean;
}

const EMBED_OPTION_NAMES = { normalize: true } as const satisfies Record<keyof EmbedOptions, true>;

/** Options of {@link Engine.promptLogprobs}. */
export type PromptLogprobsOptions = {
  /** How many most likely alternatives to report at each position beside the prompt's own token (0–20, default 0). */
  topLogprobs?: number;
} & Pick<CompositionOptions, 'reasoners' | 'mode' | 'normalize'>;

const PROMPT_LOGPROBS_OPTION_NAMES = { topLogprobs: true, reasoners: true, mode: true, normalize: true } as const satisfies Record<keyof PromptLogprobsOptions, true>;

export { QueueFullError };
export { EngineClosedError, EngineError } from './runtime/worker-errors.js';

/**
 * How long dispose waits for the worker to stop once its generations are told to: a step or a prefill chunk, even
 * of a large model. Ending it earlier, with a run in flight, would abort the process.
 */
const DISPOSE_WAIT_MS = 60_000;

/** Options of one call, plus cancellation. */
export interface StreamOptions extends GenerateOptions, CompositionOptions, ConstraintOptions {
  /** Stops generation between two steps; the result then has `finishReason: 'abort'`. */
  signal?: AbortSignal;
}

/** Streamed tokens of one generation (a row's last one with its `finishReason` as the row ends, unless an abort ends it), and its result once done. */
export interface GenerationStream extends AsyncIterable<TokenEvent> {
  /** Settles when the generation ends (rejecting where it fails), whether or not the tokens are read. */
  readonly result: Promise<GenerationResult>;
}

/** A request before it gets its id (distributes over the union). */
type Request<T = Extract<ToWorker, { id: number }>> = T extends unknown ? Omit<T, 'id'> : never;

type Pending = { onTokens(e: TokenEvent[]): void; resolve(v: unknown): void; reject(e: Error): void; abort?: Int32Array; site: CallSite };

/** A loaded model, ready to generate. */
export class Engine {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private closed = false;
  private disposing: Promise<void> | undefined;
  /** Ends the process exit's wait for this engine's runs (see run-guard.ts). */
  private readonly releaseExit: () => void;

  private constructor(
    private readonly worker: Worker,
    guard: RunGuard,
    /** What was loaded. */
    readonly info: ModelInfo,
    private readonly loadMs: number,
  ) {
    // An idle engine does not keep the process alive (as an idle HTTP agent does not): a script that forgets
    // dispose() still ends. The worker holds the event loop only while a call waits on it.
    worker.unref();
    worker.on('message', (msg: FromWorker) => this.dispatch(msg));
    worker.on('error', (err) => this.failAll(err));
    worker.on('exit', (code) => {
      if (this.closed) return;
      this.closed = true;
      this.disposing = Promise.resolve();
      this.releaseExit();
      this.failAll(new EngineClosedError(`the model worker exited unexpectedly (code ${code})`));
    });
    // The process ending during a generation (process.exit(), an uncaught throw) first lets its runs finish.
    this.releaseExit = holdExitForRuns(guard);
  }

  /** Loads a model (prepares its graph on first use, then starts its session in a worker). */
  static async load(options: EngineOptions): Promise<Engine> {
    const t0 = performance.now();
    // (taken before the first await: after it, the caller's frames are gone)
    const site = callSite(Engine.load);
    const { lookup, draft } = checkEngineOptions(options);
    const { model: modelSpec, dtype, projector: projectorSpec, reasoners: reasonerSpecs, reasonerTasks, registry, onProgress, ggufKvCache, cacheDir, mode, placement, maxBatch, maxQueue, kvBudgetBytes, prefillChunk, rowShards, promptLookup: _lookup, draftModel: _draft, embeddings, contextLength, modelDefaults: readDefaults, modelSource, ...runtime } = options;
    // Registry references (`[registry/]namespace/name@range`) are pulled into the cache; paths pass through.
    const pull = (spec: string) => resolveModelPath(spec, onProgress ? { ...registry, onProgress } : registry, ggufKvCache ? { kvCache: ggufKvCache } : undefined);
    const [model, projector, draftPath, named] = await Promise.all([
      pull(modelSpec),
      projectorSpec ? pull(projectorSpec) : undefined,
      draft ? pull(draft.model) : undefined,
      Promise.all(
        (reasonerSpecs ?? []).map(async (r) => {
          const model = await pull(r.model);
          const name = r.name ?? (await ggufModuleName(r.model, model));
          return { ...r, model, ...(name !== undefined ? { name } : {}) };
        }),
      ),
    ]);
    const byTask = reasonerTasks?.length ? await reasonersForTasks(model, dtype, reasonerTasks, registry) : [];
    const reasoners = [...named, ...(await Promise.all(byTask.map(async (r) => ({ ...r, model: await pull(r.model) }))))];
    // An Ollama model's defaults are in its manifest (pulled by now), which its converted module does not keep.
    const source = modelSource ?? modelSpec;
    const ollamaDefaults = readDefaults !== false && isOllamaRef(source) ? ollamaModelDefaults(source, ollamaSearchStores(settingsFrom(registry).cacheDir)) : undefined;
    const config: WorkerConfig = {
      model,
      ...(dtype ? { dtype } : {}),
      runtime,
      reasoners,
      ...(projector ? { projector } : {}),
      ...(embeddings ? { embeddings } : {}),
      ...(contextLength !== undefined ? { contextLength } : {}),
      ...(contextLength === undefined && ollamaDefaults?.contextLength !== undefined ? { defaultContextLength: ollamaDefaults.contextLength } : {}),
      ...(cacheDir ? { cacheDir } : {}),
      ...(placement ? { placement } : {}),
      ...(mode ? { mode } : {}),
      batching: {
        ...(maxBatch !== undefined ? { maxBatch } : {}),
        ...(maxQueue !== undefined ? { maxQueue } : {}),
        ...(kvBudgetBytes !== undefined ? { kvBudgetBytes } : {}),
        ...(prefillChunk !== undefined ? { prefillChunk } : {}),
        ...(rowShards !== undefined ? { rowShards } : {}),
        ...(lookup ? { promptLookup: lookup } : {}),
      },
      ...(draft ? { draftModel: { ...draft, model: draftPath! } } : {}),
    };
    const guard = newRunGuard();
    const worker = withRunGuard(guard, () => spawnWorker('generation-worker', config));
    const loading = new Promise<ModelInfo>((resolve, reject) => {
      const onExit = (code: number) => reject(new Error(`the model worker exited during load (code ${code})`));
      worker.once('error', reject);
      worker.once('exit', onExit);
      worker.once('message', (msg: FromWorker) => {
        worker.off('exit', onExit);
        worker.off('error', reject);
        if (msg.type === 'ready') resolve(msg.info);
        else if (msg.type === 'failed') reject(workerError(msg.error, site));
        else reject(new Error(`unexpected first message from the model worker: ${msg.type}`));
      });
    })
      .then(async (loaded) => {
        // (a hub export's generation_config.json, beside the graph the worker found)
        const location = { modelPath: loaded.modelPath, ...(loaded.tokenizer ? { tokenizerDir: loaded.tokenizer.dir } : {}) };
        const defaults = readDefaults === false ? undefined : (ollamaDefaults ?? (await generationConfigDefaults(location)));
        return defaults ? { ...loaded, defaults } : loaded;
      })
      .catch(async (err) => {
        await worker.terminate();
        throw err;
      });
    // Models already prepared are looked up on this thread, where the modules it takes are loaded anyway, so the
    // worker need not load them (~0.3 s of its start-up); it prepares the others and reports any failure. The lookup
    // (manifests read, files checked against their stat records: 0.07-0.09 s for a 125M llama's module) runs while the
    // worker's thread starts and loads its modules (0.14 s). (Never rejects: a model not found prepared is prepared by
    // the worker.)
    const found = Promise.all([
      findPreparedModel(model, cacheDir, backboneNeeds({ ...(projector ? { projector } : {}), ...(embeddings ? { embeddings } : {}) }), dtype),
      ...reasoners.map((r) => findPreparedModel(r.model, cacheDir, {}, r.dtype)),
    ]).then((models) => worker.postMessage({ type: 'prepared', models } satisfies ToWorker));
    // (a worker whose first message could not be posted would wait for it, and hold the process, forever)
    const [info] = await Promise.all([
      loading,
      found.catch(async (err) => {
        await worker.terminate();
        throw err;
      }),
    ]);
    return new Engine(worker, guard, info, performance.now() - t0);
  }

  /**
   * Streams a generation. Concurrent calls share the running decode batch (up to `maxBatch` rows), latent steps
   * and reasoners placed in lanes (through a copy on the backbone's thread) included; calls that trace, and calls
   * on GroupQueryAttention graphs, run alone in turn once the batch has drained.
   */
  stream(input: PromptInput, options: StreamOptions = {}): GenerationStream {
    const tokens: TokenEvent[] = [];
    /** Readers waiting for more tokens: each iteration of the stream reads all of it. */
    const waiting = new Set<() => void>();
    const wakeAll = () => {
      for (const wake of waiting) wake();
      waiting.clear();
    };
    let finished = false;
    // Every reader leaving before the end (a `break` out of `for await`) stops the generation, as an abort does.
    const left = new AbortController();
    let readers = 0;
    // The caller's signal is forwarded by a listener removed when the call ends: AbortSignal.any left an entry on a
    // long-lived signal (one shared by every call of an app) for each call, for good.
    const caller = options.signal;
    const forward = () => left.abort(caller?.reason);
    if (caller?.aborted) forward();
    else caller?.addEventListener('abort', forward, { once: true });
    const result = this.run(input, { ...options, signal: left.signal }, (events) => {
      tokens.push(...events);
      wakeAll();
    });
    const end = () => {
      caller?.removeEventListener('abort', forward);
      finished = true;
      wakeAll();
    };
    result.then(end, end);
    return {
      result,
      async *[Symbol.asyncIterator]() {
        readers++;
        try {
          for (let i = 0; ; ) {
            while (i < tokens.length) yield tokens[i++]!;
            if (finished) {
              await result; // surfaces the error, if any
              return;
            }
            await new Promise<void>((r) => waiting.add(r));
          }
        } finally {
          if (--readers === 0 && !finished) left.abort();
        }
      },
    };
  }

  /** Generates to the end and returns the result. */
  generate(input: PromptInput, options: StreamOptions = {}): Promise<GenerationResult> {
    return this.run(input, options);
  }

  /**
   * One generation in the worker. With `onTokens` its tokens are posted as they come; without, only the result is:
   * each posted token wakes this thread, which on a machine whose cores onnxruntime's threads fill takes time from
   * the step (2 vCPUs, interleaved in one process: the 125M llama's Q4_0 module 4.21 against 4.41 ms a token, the
   * 24M 4-bit model 1.02 against 1.08).
   */
  private run(input: PromptInput, options: StreamOptions, onTokens?: (events: TokenEvent[]) => void): Promise<GenerationResult> {
    const { signal, ...generateOptions } = options;
    // Bad options throw here, before anything is sent: synchronously, from `stream` and `generate` alike.
    validatePromptInput(input);
    validateGenerateOptions(generateOptions);
    checkReasonerList(generateOptions.reasoners, 'name', 'call option ', 'generation');
    checkMode(generateOptions.mode, 'call option ');
    checkTrace(generateOptions.trace);
    checkCallShape(generateOptions);
    return this.runValidated(input, generateOptions, signal, onTokens);
  }

  private async runValidated(
    input: PromptInput,
    generateOptions: GenerateRequestOptions,
    signal: AbortSignal | undefined,
    onTokens: ((events: TokenEvent[]) => void) | undefined,
  ): Promise<GenerationResult> {
    const abort = new SharedArrayBuffer(4);
    const flag = new Int32Array(abort);
    const onAbort = () => Atomics.store(flag, 0, 1);
    if (signal?.aborted) onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
    const t0 = performance.now();
    try {
      const done = (await this.request({ type: 'generate', input, options: generateOptions, abort, streamTokens: onTokens !== undefined }, onTokens ?? (() => {}), flag)) as Extract<
        FromWorker,
        { type: 'done' }
      >['result'];
      const totalMs = performance.now() - t0;
      // (tokens of the longest row after its first: one a step, unless prompt lookup's drafts were kept)
      const after = Math.max(0, ...done.rows.map((r) => r.ids.length - 1));
      return {
        rows: done.rows,
        usage: done.usage,
        timing: {
          loadMs: this.loadMs,
          prefillMs: done.prefillMs,
          msPerToken: after > 0 ? done.decodeMs / after : 0,
          decodeSteps: done.decodeSteps,
          totalMs,
          ...(done.grammar ? { grammar: done.grammar } : {}),
        },
      } satisfies GenerationResult;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /** Tokenizes text with the model's tokenizer. */
  tokenize(text: string, addSpecialTokens = true): Promise<number[]> {
    if (typeof text !== 'string') return Promise.reject(new PromptError(`tokenize takes a text, not ${text === null ? 'null' : typeof text}`));
    return this.request({ type: 'tokenize', text, addSpecialTokens }, () => {}) as Promise<number[]>;
  }

  /**
   * Embeds texts (tokenized with the model's special tokens, as llama.cpp does) or token ids: one vector per
   * input, the backbone's final hidden state at its last token (llama.cpp's embedding of a causal model without a
   * pooling type, and the last-token pooling of Qwen3-Embedding and e5-mistral), unit length unless `normalize` is
   * false. Needs an engine loaded with `embeddings`. Each input is prefilled alone, in chunks of
   * `prefillChunk` tokens, apart from the running batch's caches, whose rows wait one chunk at a time as for a
   * prompt's prefill.
   */
  async embed(input: EmbedInput, options: EmbedOptions = {}): Promise<EmbedResult> {
    refuseUnknownOptions(options, EMBED_OPTION_NAMES, 'embed');
    const result = (await this.request({ type: 'embed', input }, () => {})) as EmbedResult;
    if (options.normalize === false) return result;
    return { ...result, vectors: result.vectors.map(unitLength) };
  }

  /**
   * The log-probability the model gives each token of each input after the tokens before it (texts tokenized with
   * the model's special tokens, or token ids): per input an entry for every token but the first, with the
   * `topLogprobs` (0–20) most likely alternatives at its position. What OpenAI's legacy `echo` with `logprobs`
   * returns, and evaluation harnesses score continuations by. The model is the composition a generation would run
   * (`reasoners`, `mode`, `normalize` as for `generate`; constant weights only), fused at every position; `reasoners:
   * []` scores by the backbone alone. Each input runs alone in chunks, as for `embed`.
   */
  promptLogprobs(input: EmbedInput, options: PromptLogprobsOptions = {}): Promise<PromptLogprobsResult> {
    const { topLogprobs: top = 0, ...composition } = options;
    try {
      refuseUnknownOptions(options, PROMPT_LOGPROBS_OPTION_NAMES, 'promptLogprobs');
      if (!(Number.isInteger(top) && top >= 0 && top <= MAX_TOP_LOGPROBS)) throw new RangeError(`topLogprobs must be a whole number from 0 to ${MAX_TOP_LOGPROBS}; got ${top}`);
      checkReasonerList(composition.reasoners, 'name', '', 'promptLogprobs');
      checkMode(composition.mode, '');
      checkCallShape(composition);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.request({ type: 'promptLogprobs', input, top, composition }, () => {}) as Promise<PromptLogprobsResult>;
  }

  /** The batch now: rows running, calls waiting in the worker, KV cache bytes held, and the cache's copy counters. */
  stats(): Promise<BatchStats> {
    return this.request({ type: 'stats' }, () => {}) as Promise<BatchStats>;
  }

  /**
   * Stops the worker and frees the session; every call resolves once the worker is gone. Pending calls fail with an
   * {@link EngineClosedError}, as do calls made after.
   */
  dispose(): Promise<void> {
    this.disposing ??= this.stop();
    return this.disposing;
  }

  private async stop(): Promise<void> {
    this.closed = true;
    // Running and queued generations stop at their next step, so that the worker releases its sessions and exits
    // soon; ending it with a run in flight aborts the whole process (onnxruntime's native code throws into a
    // terminated thread), which a 2 s wait did under any longer generation (found by fuzzing).
    for (const p of this.pending.values()) if (p.abort) Atomics.store(p.abort, 0, 1);
    this.failAll(new EngineClosedError('the engine was disposed'));
    this.worker.ref(); // (whoever awaits dispose() carries on once the worker is gone)
    const exited = new Promise((r) => this.worker.once('exit', r));
    this.worker.postMessage({ type: 'dispose' } satisfies ToWorker);
    await Promise.race([exited, new Promise((r) => setTimeout(r, DISPOSE_WAIT_MS).unref())]);
    await this.worker.terminate();
    this.releaseExit();
  }

  private request(msg: Request, onTokens: (e: TokenEvent[]) => void, abort?: Int32Array): Promise<unknown> {
    if (this.closed) return Promise.reject(new EngineClosedError('the engine is closed (disposed, or a reasoner failed); load it again'));
    const id = this.nextId++;
    // The worker's errors have no frames of the caller's thread: they are given the stack of this call.
    const site = callSite(this.request);
    return new Promise((resolve, reject) => {
      this.pending.set(id, { onTokens, resolve, reject, ...(abort ? { abort } : {}), site });
      if (this.pending.size === 1) this.worker.ref();
      this.worker.postMessage({ ...msg, id } as ToWorker);
    });
  }

  private dispatch(msg: FromWorker): void {
    if (msg.type === 'closed') {
      this.closed = true;
      this.disposing ??= this.worker.terminate().then(() => this.releaseExit());
      return this.failAll(new EngineClosedError(`the engine closed: ${msg.reason}`));
    }
    if (msg.type === 'stream') {
      for (const { id, events } of msg.streams) this.pending.get(id)?.onTokens(events);
      return;
    }
    if (!('id' in msg)) return;
    const p = this.pending.get(msg.id);
    if (!p) return;
    this.pending.delete(msg.id);
    if (this.pending.size === 0) this.worker.unref();
    if (msg.type === 'done') p.resolve(msg.result);
    else if (msg.type === 'stats') p.resolve(msg.stats);
    else if (msg.type === 'encoded') p.resolve(msg.ids);
    else if (msg.type === 'embedded' || msg.type === 'scored') p.resolve(msg.result);
    else if (msg.type === 'error') p.reject(workerError(msg.error, p.site));
  }

  private failAll(err: Error): void {
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    this.worker.unref();
  }
}

