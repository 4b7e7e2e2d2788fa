/**
 * Worker-thread entry: owns the backbone session, its tokenizer, the reasoners (in lane workers it spawns, or
 * inline on this thread) and the decode loop, so that onnxruntime's blocking `run` never stalls the main
 * thread and tokens stream out as messages.
 */
import { basename, dirname } from 'node:path';
import { parentPort, workerData } from 'node:worker_threads';
import { DECODE_LOOK_BEHIND, TextTokenizer, TokenizerError } from '../tokenizer/tokenizer.js';
import { LatentPolicyError, parseLatentPolicy, runDecodeLoop } from '../generate/decode-loop.js';
import type { MarkerSpec } from '../generate/latent-marker.js';
import { tokenizerFingerprintOf } from '../tokenizer/fingerprint.js';
import { ProjectorError, ProjectorSession } from './projector-session.js';
import type { GenerateOptions, ThinkingBudget, TokenEvent, TokenLogprobs } from '../generate/types.js';
import { GenerateOptionsError } from '../generate/options.js';
import type { ThoughtBudgetSpec } from '../generate/thought-budget.js';
import { ComposedSource, ReasonerSelectionError, type CompositionPlan, type ReasonerSlot, type TokenTrace } from '../compose/composed-source.js';
import { sharedVocabulary, VocabularyMismatchError, type VocabularyFacts } from '../compose/vocabulary.js';
import { validateWeightSpec, WeightScheduleError, type WeightSpec } from '../compose/weights.js';
import { fusionModes, type FusionMode } from '../compose/fusion.js';
import { LocalReasonerGroup, ReasonerError, labelLoadFailure, type ReasonerGroup } from '../compose/reasoner-group.js';
import { decoderSource, openPrepared, openReasoner, type PreparedModel, type ReasonerInfo } from './open-decoder.js';
import { ReasonerLane } from './reasoner-lane.js';
import { toWire } from './spawn-worker.js';
import { planThreads, type StepFacts, type ThreadPlan } from './thread-budget.js';
import { ContextLengthError, declaredContextLength } from '../modules/context-length.js';
import { declaredArchitecture } from '../modules/declared-architecture.js';
import { checkDeclaredVocabSize } from '../modules/vocab-compat.js';
import type { DecoderSession } from './decoder-session.js';
import { attachParsed, lazyConstraintFactory, releaseConstraints, rowConstraints, writtenTokenIds } from '../constrain/rows.js';
import { grammarTiming } from '../constrain/timing.js';
import type { ConstraintFactory } from '../constrain/types.js';
import { backboneNeeds, type CompositionOptions, type FromWorker, type GenerateRequestOptions, type ModelInfo, type PromptInput, type ToWorker, type WorkerConfig } from './protocol.js';
import { embed, EmbeddingsUnavailableError, poolingRefused } from './embed.js';
import { promptLogprobs, type ScoringComposition } from './prompt-logprobs.js';
import { declaredPooling } from '../modules/pooling.js';
import type { ModelLocation } from '../modules/locate.js';
import { ContinuousBatch, DEFAULT_MAX_BATCH, DEFAULT_PREFILL_CHUNK } from '../generate/continuous-batch.js';
import { DraftModel, DraftModelError, type DraftModelSettings } from '../generate/draft-model.js';
import { BatchKv } from './batch-kv.js';
import { RowShards, rowShardWorkers, SHARD_MIN_ROWS_PER_WORKER } from './row-shards.js';
import { isAlwaysZero } from '../compose/weights.js';
import { rowsShareRuns } from '../onnx/signature.js';

const port = parentPort!;
const config = workerData as WorkerConfig;
/** The models the engine found prepared: its first message, posted while this thread loads its modules (protocol.ts). */
const foundPrepared = new Promise<(PreparedModel | undefined)[]>((resolve) =>
  port.once('message', (msg: ToWorker) => resolve(msg.type === 'prepared' ? msg.models : [])),
);
/**
 * Streamed tokens of every request, posted together: a step of the continuous batch yields a token for each of
 * its rows, and one message for the step instead of one per row spares the worker a postMessage per row (timed in
 * the worker at 8 rows: 1.9-2.6 ms of a step for 8 messages, load ~3.8) and the main thread as many wake-ups.
 * Filled while a step's rows are sampled, sent at the next microtask (the step's run starts after it) or before
 * any other message, so each request's tokens still arrive in order and ahead of its result.
 */
class Outbox {
  private streams: { id: number; events: TokenEvent[] }[] = [];

  add(id: number, events: TokenEvent[]): void {
    if (this.streams.length === 0) queueMicrotask(() => this.flush());
    this.streams.push({ id, events });
  }

  flush(): void {
    if (this.streams.length === 0) return;
    const streams = this.streams;
    this.streams = [];
    port.postMessage({ type: 'stream', streams } satisfies FromWorker);
  }
}

const outbox = new Outbox();
const post = (msg: FromWorker) => {
  outbox.flush();
  port.postMessage(msg);
};

/**
 * Posts streamed tokens at most once per {@link FLUSH_MS}: a message costs the worker ~10 µs, a real share
 * of a sub-millisecond step on small models. A held token waits at most one step plus the interval; the
 * first token of a generation is never held (time to first token).
 */
const FLUSH_MS = 1;

class StreamBatcher {
  private pending: TokenEvent[] = [];
  private lastPost = -Infinity;

  constructor(private readonly send: (events: TokenEvent[]) => void) {}

  push(event: TokenEvent): void {
    this.pending.push(event);
    if (performance.now() - this.lastPost >= FLUSH_MS) this.flush();
  }

  flush(): void {
    if (this.pending.length === 0) return;
    this.send(this.pending);
    this.pending = [];
    this.lastPost = performance.now();
  }
}

/**
 * Names the tokens of a log-probability entry by the text each adds after `context` (the row's last ids), so
 * that a word's leading space shows as the decoder writes it mid-text; special tokens kept.
 */
function nameTokens(tokenizer: TextTokenizer, context: readonly number[], entry: TokenLogprobs): void {
  const named = [entry, ...entry.top];
  const texts = tokenizer.textsAfter(context, named.map((t) => t.id));
  for (const [i, t] of named.entries()) {
    t.token = texts[i]!;
    // A token holding part of a character is named by nothing, or the whole character it completes (U+FFFD where
    // it leaves one unfinished): its bytes are the vocabulary's own, so that a client joining a reply's bytes gets
    // each character once (OpenAI's reason for `bytes`).
    const raw = tokenizer.tokenBytes(t.id);
    t.bytes = raw !== undefined && (!wholeCharacters(raw) || t.token.includes('\uFFFD')) ? raw : [...Buffer.from(t.token, 'utf8')];
  }
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** Whether bytes are whole UTF-8 characters (not a piece of one, as byte-fallback and byte-level tokens may be). */
function wholeCharacters(bytes: readonly number[]): boolean {
  try {
    strictUtf8.decode(Uint8Array.from(bytes));
    return true;
  } catch {
    return false;
  }
}

interface Loaded {
  backbone: DecoderSession;
  /** The backbone's row shards for wide steps, when it has them. */
  shards?: RowShards;
  tokenizer?: TextTokenizer;
  /** Each with its loaded weight and the fusion mode its manifest declares. */
  reasoners: (ReasonerSlot & { weight: WeightSpec; declaredMode: FusionMode | undefined })[];
  groups: ReasonerGroup[];
  vocab: number;
  /** The load's fusion mode, when it gives one: every model's unless a call gives another. */
  mode?: FusionMode;
  /** Positions the composition holds, when its models declare it. */
  contextLength?: number;
  projector?: { session: ProjectorSession; marker: MarkerSpec };
  /** The reasoners' sessions by slot, when they run on this thread (inline): the continuous batch steps them. */
  inline?: DecoderSession[];
  /**
   * For reasoners placed in lanes: opens a copy of reasoner `slot` on this thread, for calls in the continuous
   * batch (a lane's cache lives in another thread and cannot join it); the lane keeps serving calls alone.
   */
  openCopy?: (slot: number) => Promise<DecoderSession>;
  /** The copies opened so far, by slot. */
  copies: Map<number, Promise<DecoderSession>>;
  /** The draft model, when one is loaded: what drafts, and its session. */
  draft?: { drafter: DraftModel; session: DecoderSession };
}

/** Locates and prepares a model the engine did not find prepared (only then are those modules loaded). */
async function prepareModel(...args: Parameters<typeof import('./prepare-model.js').prepareModel>): Promise<PreparedModel> {
  return (await import('./prepare-model.js')).prepareModel(...args);
}

/** LiteReason's marker, as its reference code writes it. */
const DEFAULT_MARKER: MarkerSpec = { open: '<implicit_thought>', close: '</implicit_thought>', maxSteps: 32 };

/** Loads the projector and checks it against the backbone's hidden size (and its manifest, when it has one). */
async function openProjector(
  path: string,
  backbone: DecoderSession,
  tokenizer: TextTokenizer | undefined,
): Promise<{ session: ProjectorSession; marker: MarkerSpec }> {
  const { locateModel } = await import('../modules/locate.js');
  const location = await locateModel(path);
  const manifest = location.manifest;
  if (manifest && manifest.kind !== 'latent-projector') {
    throw new ProjectorError(`${path} is a ${manifest.kind} module, not a latent-projector`);
  }
  // A projector has no logits of its own: its compat.vocabSize names the backbone it was trained with.
  if (manifest && location.manifestPath) {
    const shape = { logits: backbone.vocabSize, tokenizerSize: async () => tokenizer?.vocabSize };
    await checkDeclaredVocabSize(location.manifestPath, manifest.compat.vocabSize, shape, 'the backbone', 'the projector was trained beside another backbone: use a projector trained for this one');
  }
  const session = await ProjectorSession.create(location.modelPath);
  const hidden = backbone.signature.hiddenState!.hiddenSize;
  const declared = manifest?.compat.hiddenSize;
  if (session.hiddenSize !== hidden || (declared !== undefined && declared !== hidden)) {
    await session.release();
    throw new ProjectorError(
      `projector ${path} maps hidden size ${declared ?? session.hiddenSize} but the backbone's hidden size is ${hidden}; ` +
        'use a projector trained for this backbone',
    );
  }
  return { session, marker: manifest?.latent ?? DEFAULT_MARKER };
}

/** The prompts of a request as ids; text past `context` tokens is refused while it is encoded (see {@link TextTokenizer.encode}). */
function toPromptIds(input: PromptInput, tokenizer: TextTokenizer | undefined, context: number | undefined): number[][] {
  if ('promptIds' in input) {
    const ids = input.promptIds;
    return ids.length > 0 && Array.isArray(ids[0]) ? (ids as number[][]) : [ids as number[]];
  }
  if (!tokenizer) throw new TokenizerError('this model has no tokenizer.json beside it: pass prompt ids instead of text');
  if ('messages' in input) {
    const text = tokenizer.applyChatTemplate(input.messages, {
      ...(input.chatTemplate ? { template: input.chatTemplate } : {}),
      ...(input.tools ? { tools: input.tools } : {}),
      ...(input.toolsPrompt ? { toolsPrompt: input.toolsPrompt } : {}),
      ...(input.chatTemplateKwargs ? { extra: input.chatTemplateKwargs } : {}),
    });
    return [tokenizer.encodeChat(text, context)];
  }
  const prompts = Array.isArray(input.prompt) ? input.prompt : [input.prompt];
  const { suffix } = input;
  return prompts.map((p) => (suffix === undefined ? tokenizer.encode(p, true, context) : tokenizer.encodeFillInMiddle(p, suffix, context)));
}

/** The directory a model's side files sit in: its module's, else its tokenizer's (a hub export's root), else its graph's. */
function modelDirectory(location: ModelLocation): string {
  return location.manifestPath ? dirname(location.manifestPath) : (location.tokenizerDir ?? dirname(location.modelPath));
}

/** A reasoner's display name: as given, else its manifest's, else its file or directory name. */
function reasonerName(spec: WorkerConfig['reasoners'][number], manifestName: string | undefined): string {
  return spec.name ?? manifestName ?? basename(spec.model).replace(/\.onnx$/, '');
}

/** A rejection handler that labels a reasoner's load failure and rethrows it. */
function labelled(label: string): (err: Error) => never {
  return (err) => {
    throw labelLoadFailure(err, label);
  };
}

/**
 * Awaits every opening; if any failed, releases the ones that opened and throws the first failure, so that
 * nothing half-loaded stays behind.
 */
async function openAll<T>(openings: Promise<T>[], release: (opened: T) => Promise<unknown>): Promise<T[]> {
  const settled = await Promise.allSettled(openings);
  const opened = settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  const failure = settled.find((s) => s.status === 'rejected');
  if (failure) {
    await Promise.allSettled(opened.map(release));
    throw failure.reason;
  }
  return opened;
}

/** What a step of a prepared model reads and runs, as the thread plan weighs it. */
const stepFacts = ({ prepared }: PreparedModel): StepFacts => ({ bytes: prepared.stepBytes, nodes: prepared.stepNodes });

/** Opens the reasoners where the plan puts them: lane workers, or this thread (inline). */
async function openReasoners(
  plan: ThreadPlan,
  prepared: PreparedModel[],
  label: (i: number) => string,
): Promise<{ groups: ReasonerGroup[]; placed: { group: ReasonerGroup; member: number; info: ReasonerInfo }[]; inline?: DecoderSession[] }> {
  if (plan.placement === 'inline') {
    const loaded = await openAll(
      prepared.map((p, i) => openReasoner(p, plan.reasoner).catch(labelled(label(i)))),
      (l) => l.session.release(),
    );
    const group = new LocalReasonerGroup(
      loaded.map((l) => l.session),
      prepared.map((_, i) => label(i)),
    );
    return { groups: [group], placed: loaded.map(({ info }, member) => ({ group, member, info })), inline: loaded.map((l) => l.session) };
  }
  const lanes = await openAll(
    plan.lanes.map((members) =>
      ReasonerLane.open(
        members.map((i) => prepared[i]!),
        members.map(label),
        { runtime: plan.reasoner, dedicatedCore: plan.dedicatedCores },
      ),
    ),
    (lane) => lane.release(),
  );
  // Reasoners in the order they were given, each found in its lane.
  const placed: { group: ReasonerGroup; member: number; info: ReasonerInfo }[] = [];
  plan.lanes.forEach((members, l) => members.forEach((i, member) => (placed[i] = { group: lanes[l]!, member, info: lanes[l]!.members[member]! })));
  return { groups: lanes, placed };
}

/** The backbone's row shards, when {@link rowShardWorkers} gives it any. */
function rowShards(backbone: PreparedModel, session: DecoderSession): RowShards | undefined {
  // (a shard's rows run together; the batch runs each row of such a graph alone)
  if (session.runWideActivationScale || !rowsShareRuns(session.signature)) return undefined;
  const workers = rowShardWorkers({
    choice: config.batching?.rowShards,
    threads: session.intraOpThreads,
    device: config.runtime.device,
    latent: config.projector !== undefined,
    maxBatch: config.batching?.maxBatch ?? DEFAULT_MAX_BATCH,
  });
  if (workers === 0) return undefined;
  return new RowShards(session, decoderSource(backbone), workers, SHARD_MIN_ROWS_PER_WORKER * workers, backbone.prepared.weightBytes);
}

async function start(): Promise<Loaded> {
  const label = (i: number) => config.reasoners[i]!.name ?? `${i + 1} (${config.reasoners[i]!.model})`;
  // Every model is located and prepared first: their sizes decide where the reasoners run. Those the engine
  // found prepared come in its first message.
  const found = await foundPrepared;
  const [backbonePrepared, ...reasonersPrepared] = await Promise.all([
    found[0] ?? prepareModel(config.model, config.cacheDir, backboneNeeds(config), config.dtype),
    ...config.reasoners.map((r, i) => found[i + 1] ?? prepareModel(r.model, config.cacheDir, {}, r.dtype).catch(labelled(label(i)))),
  ]);
  // The engine gives last-token embeddings: a model that declares another pooling gets none rather than wrong ones.
  if (config.embeddings) {
    const pooling = await declaredPooling(modelDirectory(backbonePrepared!.location));
    if (pooling !== undefined && pooling !== 'last') throw poolingRefused(config.model, pooling);
  }
  const plan = planThreads({
    runtime: config.runtime,
    ...(config.placement ? { placement: config.placement } : {}),
    // What a step reads and runs, not what the files weigh: quantized weights count packed, embedding tables
    // not at all, and each operator its fixed cost (most of a small quantized model's step).
    backbone: stepFacts(backbonePrepared!),
    reasoners: reasonersPrepared.map(stepFacts),
  });
  const [first, second] = await Promise.allSettled([openPrepared(backbonePrepared!, plan.backbone), openReasoners(plan, reasonersPrepared, label)]);
  if (first.status === 'rejected' || second.status === 'rejected') {
    // Nothing half-loaded stays behind: release what did load before reporting.
    if (first.status === 'fulfilled') await first.value.session.release();
    if (second.status === 'fulfilled') await Promise.allSettled(second.value.groups.map((g) => g.release()));
    throw (first.status === 'rejected' ? first : (second as PromiseRejectedResult)).reason;
  }
  const { location, session, notes } = first.value;
  const { groups, placed, inline } = second.value;
  const releaseAll = () => Promise.allSettled([session.release(), ...groups.map((g) => g.release())]);
  const tokenizer = location.tokenizerDir
    ? await TextTokenizer.fromDirectory(location.tokenizerDir, location.generation ?? {})
    : undefined;
  const projector = config.projector
    ? await openProjector(config.projector, session, tokenizer).catch(async (err) => {
        await releaseAll();
        throw err;
      })
    : undefined;
  // Every model of a composition is fed every token: it holds as many positions as its shortest model. The
  // engine's limit may lower that, never raise it.
  const contextLength = await Promise.all([location, ...reasonersPrepared.map((p) => p.location)].map(declaredContextLength)).then(
    (lengths) => {
      const declared = lengths.reduce<number | undefined>((min, n) => (n === undefined ? min : Math.min(n, min ?? n)), undefined);
      const limit = config.contextLength;
      if (limit !== undefined && declared !== undefined && limit > declared) {
        throw new ContextLengthError(`contextLength ${limit} is more than the ${declared} positions the model${config.reasoners.length ? 's' : ''} declare${config.reasoners.length ? '' : 's'}; it can only lower them`);
      }
      // (the model's own setting, Ollama's num_ctx, may ask for more than it was trained on: it only lowers the limit)
      return limit ?? (config.defaultContextLength !== undefined ? Math.min(config.defaultContextLength, declared ?? Infinity) : declared);
    },
  ).catch(async (err: unknown) => {
    await Promise.allSettled([releaseAll(), projector?.session.release()]);
    throw err;
  });

  // Default names taken twice are numbered; names given are the caller's own (and refused below when repeated).
  const defaults = new Map<string, number>();
  const reasoners = placed.map(({ group, member, info }, i) => {
    const spec = config.reasoners[i]!;
    const manifest = info.manifest;
    let name = reasonerName(spec, manifest?.name);
    if (spec.name === undefined) {
      const seen = (defaults.get(name) ?? 0) + 1;
      defaults.set(name, seen);
      if (seen > 1) name = `${name}#${seen}`;
    }
    group.names[member] = name;
    return {
      name,
      group,
      member,
      info,
      weight: validateWeightSpec(spec.weight ?? manifest?.composition?.defaultWeight ?? 1, name),
      declaredMode: manifest?.composition?.mode,
      manifest,
      fingerprint: manifest?.compat.tokenizer ?? info.tokenizerFingerprint,
    };
  });
  const names = reasoners.map((r) => r.name);
  const duplicate = names.find((n, i) => names.indexOf(n) !== i);
  if (duplicate) throw new ReasonerError(`two reasoners are named "${duplicate}"; give them distinct names`);

  // A padded vocabulary leaves a few ids past the tokenizer's (Qwen2.5: 271 of 151,936); half or twice the logits'
  // width is another model's tokenizer.json beside this one, whose ids would decode to nonsense.
  if (tokenizer && (2 * tokenizer.vocabSize < session.vocabSize || tokenizer.vocabSize > 2 * session.vocabSize)) {
    throw new VocabularyMismatchError(
      `the tokenizer in ${location.tokenizerDir} has ${tokenizer.vocabSize} ids but ${location.modelPath} gives logits for ${session.vocabSize}: they belong to different models; put the model's own tokenizer files beside it`,
    );
  }
  const backboneFingerprint = await tokenizerFingerprintOf(location);
  const { vocab, warnings } = sharedVocabulary(
    {
      name: `backbone (${location.modelPath})`,
      logits: session.vocabSize,
      ...(backboneFingerprint ? { fingerprint: backboneFingerprint } : {}),
      ...(tokenizer ? { tokenizerSize: Math.min(tokenizer.vocabSize, session.vocabSize) } : {}),
    },
    reasoners.map((r) => ({ name: r.name, logits: r.info.vocabSize, ...(r.fingerprint ? { fingerprint: r.fingerprint } : {}) })),
  );
  constraintFactory = lazyConstraintFactory(location.tokenizerDir, backboneFingerprint, vocab);
  const draft = config.draftModel
    ? await openDraftModel(config.draftModel, { name: `backbone (${location.modelPath})`, logits: session.vocabSize, ...(backboneFingerprint ? { fingerprint: backboneFingerprint } : {}) }, vocab, contextLength).catch(
        async (err: unknown) => {
          await Promise.allSettled([releaseAll(), projector?.session.release()]);
          throw err;
        },
      )
    : undefined;
  // (a prepared graph the cache could not take says so)
  warnings.push(...[backbonePrepared!, ...reasonersPrepared].flatMap((m) => m!.prepared.warnings ?? []));
  if (draft) warnings.push(...draft.warnings);
  // (a batch cache of the backbone says whether its graph can take drafted positions back)
  if (draft && (!new BatchKv(session).takesRuns || session.runWideActivationScale || !rowsShareRuns(session.signature))) {
    const why = session.runWideActivationScale
      ? 'quantizes the activations of a run together (DynamicQuantizeLinear), so a run of drafted positions would change its tokens'
      : !rowsShareRuns(session.signature)
        ? `runs each row in a run of its own (${loneRowsReason(session)})`
        : 'cannot take drafted positions back (recurrent states, or right padding)';
    warnings.push(`the draft model is loaded but not used: ${location.modelPath} ${why}; it decodes one token a step`);
  }
  // The backbone's T for a call that gives none and takes the loaded reasoners (each reasoner keeps its own, see planFor).
  const mode = config.mode ?? fusionModes(undefined, reasoners.map((r) => ({ declared: r.declaredMode, weighted: !isAlwaysZero(r.weight) }))).backbone;

  const architecture = await declaredArchitecture(location);
  const info: ModelInfo = {
    modelPath: location.modelPath,
    ...(architecture ? { architecture } : {}),
    signature: session.signature,
    vocabSize: session.vocabSize,
    sharedVocabSize: vocab,
    notes,
    warnings,
    mode,
    ...(session.int8Prompts ? { int8Prompts: session.int8Prompts } : {}),
    reasoners: reasoners.map((r) => ({
      name: r.name,
      modelPath: r.info.modelPath,
      weight: r.weight,
      vocabSize: r.info.vocabSize,
      ...(r.declaredMode ? { mode: r.declaredMode } : {}),
      ...(r.info.int8Prompts ? { int8Prompts: r.info.int8Prompts } : {}),
    })),
    ...(draft
      ? {
          draftModel: {
            modelPath: draft.modelPath,
            draftTokens: config.draftModel!.draftTokens,
            adaptive: config.draftModel!.adaptive,
            minProbability: config.draftModel!.minProbability,
            ...(draft.session.int8Prompts ? { int8Prompts: draft.session.int8Prompts } : {}),
          },
        }
      : {}),
    ...(session.intraOpThreads ? { intraOpThreads: session.intraOpThreads } : {}),
    placement: { kind: plan.placement, lanes: plan.lanes.map((members) => members.map((i) => names[i]!)) },
    ...(contextLength !== undefined ? { contextLength } : {}),
    ...(config.embeddings && session.signature.hiddenState ? { embeddingSize: session.signature.hiddenState.hiddenSize } : {}),
    ...(projector ? { projector: { modelPath: config.projector!, hiddenSize: projector.session.hiddenSize, marker: projector.marker } } : {}),
    ...(tokenizer && location.tokenizerDir
      ? {
          tokenizer: {
            dir: location.tokenizerDir,
            vocabSize: tokenizer.vocabSize,
            ...(tokenizer.bosTokenId !== undefined ? { bosTokenId: tokenizer.bosTokenId } : {}),
            eosTokenIds: [...tokenizer.eosTokenIds],
            hasChatTemplate: tokenizer.chatTemplate !== undefined,
          },
        }
      : {}),
  };
  const shards = rowShards(backbonePrepared!, session);
  // They open with the engine: a failure fails the load.
  if (shards) {
    await shards.start().catch(async (err: unknown) => {
      await Promise.allSettled([releaseAll(), projector?.session.release(), draft?.session.release()]);
      throw err;
    });
  }
  post({ type: 'ready', info });
  return {
    backbone: session,
    ...(shards ? { shards } : {}),
    ...(tokenizer ? { tokenizer } : {}),
    reasoners,
    groups,
    vocab,
    ...(config.mode ? { mode: config.mode } : {}),
    ...(projector ? { projector } : {}),
    ...(contextLength !== undefined ? { contextLength } : {}),
    ...(inline ? { inline } : {}),
    // On the backbone's thread a copy runs after the backbone, with its runtime, as inline reasoners do.
    ...(inline ? {} : { openCopy: (slot: number) => openReasoner(reasonersPrepared[slot]!, plan.backbone).then((r) => r.session) }),
    copies: new Map(),
    ...(draft ? { draft: { drafter: draft.drafter, session: draft.session } } : {}),
  };
}

/**
 * Opens the draft model on this thread (it drafts between the backbone's runs) on the user's device, with the
 * threads its size calls for whatever the backbone was given (one for a small model: a pool's hand-offs cost a tiny
 * model's step more than they save). Its tokenizer must be the backbone's, and its graph must take positions back.
 */
async function openDraftModel(
  settings: DraftModelSettings,
  backbone: VocabularyFacts,
  vocab: number,
  contextLength: number | undefined,
): Promise<{ drafter: DraftModel; session: DecoderSession; modelPath: string; warnings: string[] }> {
  const asDraftModel = (err: Error): never => {
    err.message = `draft model ${settings.model}: ${err.message}`;
    throw err;
  };
  const prepared = await prepareModel(settings.model, config.cacheDir, {}, settings.dtype).catch(asDraftModel);
  const { intraOpThreads: _threads, ...runtime } = config.runtime;
  const { session, info } = await openReasoner(prepared, runtime).catch(asDraftModel);
  try {
    const fingerprint = info.manifest?.compat.tokenizer ?? info.tokenizerFingerprint;
    const facts = { name: `the draft model (${info.modelPath})`, logits: info.vocabSize, ...(fingerprint ? { fingerprint } : {}) };
    const { warnings } = sharedVocabulary({ ...backbone, tokenizerSize: vocab }, [facts], 'A draft model must share the backbone tokenizer, token for token: pick a smaller model of the same family.');
    const own = await declaredContextLength(prepared.location);
    const context = Math.min(own ?? Infinity, contextLength ?? Infinity);
    const drafter = new DraftModel(session, settings, vocab, context, config.batching?.prefillChunk ?? DEFAULT_PREFILL_CHUNK);
    return { drafter, session, modelPath: info.modelPath, warnings: [...(prepared.prepared.warnings ?? []), ...warnings.filter((w) => w.startsWith(facts.name))] };
  } catch (err) {
    await session.release();
    // (a tokenizer mismatch names the draft model's graph already)
    throw err instanceof DraftModelError ? asDraftModel(err) : err;
  }
}

/** Which reasoners take part in one request, with which weights, and each model's T (see {@link fusionModes}). */
function planFor(loaded: Loaded, options: GenerateRequestOptions): CompositionPlan {
  const byName = new Map(loaded.reasoners.map((r, slot) => [r.name, slot]));
  const named = options.reasoners?.map((r) => r.name) ?? [];
  const twice = named.find((n, i) => named.indexOf(n) !== i);
  // A reasoner listed twice would be stepped twice per token and fall out of step with the stream.
  if (twice) throw new ReasonerSelectionError(`reasoner "${twice}" is listed twice for this call; list each reasoner once`);
  const chosen = options.reasoners
    ? options.reasoners.map((r) => {
        const slot = byName.get(r.name);
        if (slot === undefined) {
          throw new ReasonerSelectionError(`no reasoner named "${r.name}" is loaded (loaded: ${[...byName.keys()].join(', ') || 'none'})`);
        }
        return { slot, weight: validateWeightSpec(r.weight ?? loaded.reasoners[slot]!.weight, r.name) };
      })
    : loaded.reasoners.map((r, slot) => ({ slot, weight: r.weight }));
  const modes = fusionModes(
    options.mode ?? loaded.mode,
    chosen.map(({ slot, weight }) => ({ declared: loaded.reasoners[slot]!.declaredMode, weighted: !isAlwaysZero(weight) })),
  );
  const active = chosen.map((a, i) => ({ ...a, mode: modes.reasoners[i]! }));
  return { active, mode: modes.backbone, normalize: options.normalize ?? false, traceTop: options.trace ?? 0 };
}

/** Why a session's rows cannot share a run (see {@link rowsShareRuns}). */
function loneRowsReason(session: DecoderSession): string {
  return session.signature.attentionMask ? 'its graph takes a batch fixed at one row' : 'its graph takes no attention_mask to hide a shorter row\'s padding';
}

/**
 * The first model of a call on this thread (the backbone, its inline reasoners) whose rows cannot share a run: the
 * sessions' own loop, which traced calls and calls to lane-placed reasoners take, runs a call's prompts together
 * (left-padded), and only the batch runs such a model's rows apart.
 */
function loneRowsModel(loaded: Loaded, plan: CompositionPlan): DecoderSession | undefined {
  return [loaded.backbone, ...plan.active.map((a) => loaded.inline?.[a.slot])].find((s) => s !== undefined && !rowsShareRuns(s.signature));
}

/**
 * The composition a request brings into the continuous batch, or undefined when it runs alone: traces, and a
 * call that weights reasoners placed in lanes while the engine is idle (alone, its reasoners run in their lanes,
 * in parallel with the backbone, as the placement chose them for) unless it has drafts to run: a draft model's or
 * its prediction's, which are kept most of the time and only the batch runs (prompt lookup's, often none, do not
 * outweigh the lanes), several prompts a model cannot run together (see {@link loneRowsModel}) or several prompts
 * that think at their own markers (`thinksPerRow`: alone, latent steps run on every row at once); a traced call of
 * those is refused. Otherwise lane-placed reasoners join through a copy on the batch's thread, each reasoner fused
 * with its own T. Latent steps run in the batch, and right-padded (GroupQueryAttention) graphs too, each model's cache
 * padded on its own side.
 */
async function batchComposition(loaded: Loaded, batch: ContinuousBatch, plan: CompositionPlan, trace: number | undefined, predicted: boolean, prompts: number, thinksPerRow: boolean) {
  const reasoners = plan.active.filter((a) => !isAlwaysZero(a.weight)).map((a) => ({ index: a.slot, weight: a.weight, ...(a.mode ? { mode: a.mode } : {}) }));
  const lone = prompts > 1 ? loneRowsModel(loaded, plan) : undefined;
  if (trace) {
    if (lone) throw new GenerateOptionsError('trace', `a traced call runs its prompts together, which ${lone.label} cannot (${loneRowsReason(lone)}): trace one prompt a call`);
    return undefined;
  }
  if (!lone && !thinksPerRow && loaded.openCopy && reasoners.length > 0 && batch.idle && !loaded.draft && !predicted) return undefined;
  const models = await Promise.all(reasoners.map((r) => onBatchThread(loaded, batch, r.index)));
  if (models.some((m) => !m)) return undefined;
  return { reasoners, mode: plan.mode, normalize: plan.normalize };
}

/** A request's prediction as tokens (none of the tokenizer's special tokens added). */
function predictionTokens(prediction: string, tokenizer: TextTokenizer | undefined): number[] {
  if (!tokenizer) throw new GenerateOptionsError('prediction', 'generation option prediction needs the model\'s tokenizer (this model has none: pass token ids as the prompt and no prediction)');
  return tokenizer.encode(prediction, false);
}

/** Reasoner `slot`'s session on this thread: the inline one, else a copy of the lane's, opened once and given to the batch. */
function onBatchThread(loaded: Loaded, batch: ContinuousBatch, slot: number): Promise<DecoderSession | undefined> {
  const inline = loaded.inline?.[slot];
  if (inline || !loaded.openCopy) return Promise.resolve(inline);
  let copy = loaded.copies.get(slot);
  if (!copy) {
    copy = loaded.openCopy(slot).then((session) => {
      batch.attachReasoner(slot, session, loaded.reasoners[slot]!.name);
      return session;
    });
    // A copy that failed to open is tried again by the next call.
    copy.catch(() => loaded.copies.delete(slot));
    loaded.copies.set(slot, copy);
  }
  return copy;
}

/**
 * The composition a prompt is scored by: the call's reasoners (all loaded ones by default, as for generation) on
 * this thread, each at a constant weight (a schedule runs over generated tokens, which scoring has none of).
 */
async function scoringComposition(loaded: Loaded, batch: ContinuousBatch, options: CompositionOptions): Promise<ScoringComposition> {
  const plan = planFor(loaded, options);
  const reasoners = await Promise.all(
    plan.active
      .filter((a) => !isAlwaysZero(a.weight))
      .map(async ({ slot, weight }) => {
        const name = loaded.reasoners[slot]!.name;
        if (typeof weight !== 'number') throw new WeightScheduleError(`${name}: prompt log-probabilities take a constant weight (a schedule counts generated tokens)`);
        const session = await onBatchThread(loaded, batch, slot);
        if (!session) throw new ReasonerSelectionError(`reasoner "${name}" runs in a lane of its own that cannot score prompts here`);
        return { session, weight };
      }),
  );
  // One T for every model (the backbone's): a score is the log-softmax of the fused row, which another T would only
  // shift by a constant per row (w · log Σ exp z), and so leave as it is.
  return { reasoners, mode: plan.mode, normalize: plan.normalize, vocab: loaded.vocab };
}

/** Releases the reasoner copies opened for the batch. */
function releaseCopies(loaded: Loaded): Promise<void>[] {
  return [...loaded.copies.values()].map((copy) => copy.then((s) => s.release(), () => {}));
}

/** Answers a message that does not generate; true when it was one. */
function answerAtOnce(loaded: Loaded, batch: ContinuousBatch, msg: ToWorker): boolean {
  if (msg.type === 'stats') {
    post({ type: 'stats', id: msg.id, stats: batch.stats() });
    return true;
  }
  if (msg.type !== 'tokenize') return false;
  try {
    if (!loaded.tokenizer) throw new TokenizerError('this model has no tokenizer');
    post({ type: 'encoded', id: msg.id, ids: loaded.tokenizer.encode(msg.text, msg.addSpecialTokens) });
  } catch (err) {
    post({ type: 'error', id: msg.id, error: toWire(err) });
  }
  return true;
}

/** How replies are decoded: special tokens dropped, but for those the constraint writes as text or the call names (`kept`). */
/** The special tokens a reply's text keeps: those asked for, and a thinking budget's tags (the budget reads them). */
function keptTexts(options: GenerateOptions): string[] {
  const budget = options.thinkingBudget;
  return [...(options.keepTokens ?? []), ...(budget ? [budget.open, budget.close] : [])];
}

/** A thinking budget with its closing tag as the row writes it: the vocabulary's added token where it has one. */
function thoughtBudgetSpec(budget: ThinkingBudget, tokenizer: TextTokenizer | undefined): ThoughtBudgetSpec {
  if (!tokenizer) throw new GenerateOptionsError('thinkingBudget', 'a thinking budget reads the thought from the reply\'s text, and this model has no tokenizer');
  const id = tokenizer.tokenId(budget.close);
  const closeIds = id !== undefined ? [id] : tokenizer.encode(budget.close, false);
  return { tokens: budget.tokens, open: budget.open, close: budget.close, opened: budget.opened ?? false, closeIds };
}

async function serve(loaded: Loaded, batch: ContinuousBatch, msg: ToWorker): Promise<void> {
  // (a closing engine's 'closed' message answers every call it has not answered)
  if (closeReason !== undefined) return;
  const { backbone, tokenizer } = loaded;
  if (msg.type === 'dispose') {
    // After the work already queued: a session is never released under a running step.
    await batch.exclusive(() => releaseModels(loaded), false);
    port.close();
    return;
  }
  const limits = { chunk: config.batching?.prefillChunk ?? DEFAULT_PREFILL_CHUNK, ...(loaded.contextLength !== undefined ? { contextLength: loaded.contextLength } : {}) };
  if (msg.type === 'embed') {
    try {
      if (!config.embeddings) throw new EmbeddingsUnavailableError('this engine gives no embeddings: load it with `embeddings: true` (reasonplug serve --embeddings)');
      post({ type: 'embedded', id: msg.id, result: await embed(backbone, tokenizer, msg.input, limits) });
    } catch (err) {
      fail(msg.id, err);
    }
    return;
  }
  if (msg.type === 'promptLogprobs') {
    try {
      const result = await promptLogprobs(backbone, tokenizer, msg.input, msg.top, limits, await scoringComposition(loaded, batch, msg.composition));
      if (tokenizer) {
        for (const { ids, logprobs } of result.prompts) logprobs.forEach((entry, j) => nameTokens(tokenizer, ids.slice(Math.max(0, j + 1 - DECODE_LOOK_BEHIND), j + 1), entry));
      }
      post({ type: 'scored', id: msg.id, result });
    } catch (err) {
      fail(msg.id, err);
    }
    return;
  }
  if (msg.type !== 'generate') return;
  let stream: StreamBatcher | undefined;
  try {
    const { reasoners: _r, mode: _m, normalize: _n, trace: _t, latent: _l, latentPlaceholder: _p, responseFormat, ...options } = msg.options;
    const projector = loaded.projector;
    const policy = parseLatentPolicy(msg.options.latent ?? (projector ? 'marker' : 'never'));
    if (policy !== 'never' && !projector) throw new LatentPolicyError('latent decoding needs a projector: load the engine with one');
    const plan = planFor(loaded, msg.options);
    const source = new ComposedSource(backbone, loaded.reasoners, loaded.vocab, plan, projector ? { backbone, projector: projector.session } : undefined);
    const prompts = toPromptIds(msg.input, tokenizer, loaded.contextLength);
    // Constraints are compiled against the vocabulary before anything runs: a bad format fails here.
    const stopIds = options.eosTokenIds ?? tokenizer?.eosTokenIds ?? [];
    const constraints = await rowConstraints(responseFormat, prompts.length, constraintFactory!, stopIds);
    const abort = new Int32Array(msg.abort);
    // `generate` calls take the result alone: their tokens are not posted.
    stream = msg.streamTokens ? new StreamBatcher((events) => outbox.add(msg.id, events)) : undefined;
    const emit = (event: TokenEvent) => stream?.push(event);
    // The row's results hold the same entries: naming them here names them there too, posted or not. (Their offsets
    // are the row's own: it knows where each token's text landed, before a stop string held any back.)
    // Made at the first token, once the prompts have been checked.
    let recent: number[][] | undefined;
    const named = (event: TokenEvent) => {
      if (!event.logprobs || !tokenizer) return event;
      recent ??= prompts.map((p) => p.slice(-DECODE_LOOK_BEHIND));
      const context = recent[event.row]!;
      nameTokens(tokenizer, context, event.logprobs);
      context.push(event.id);
      if (context.length > DECODE_LOOK_BEHIND) context.shift();
      return event;
    };
    const shared = {
      prompts,
      ...(constraints ? { constraints } : {}),
      options,
      eosTokenIds: tokenizer?.eosTokenIds ?? [],
      ...(loaded.contextLength !== undefined ? { contextLength: loaded.contextLength } : {}),
      ...(tokenizer ? { decode: tokenizer.replyDecoder(writtenTokenIds(responseFormat, prompts.length, (t) => tokenizer.tokenId(t), keptTexts(options))) } : {}),
      ...(options.thinkingBudget ? { thoughtBudget: thoughtBudgetSpec(options.thinkingBudget, tokenizer) } : {}),
      shouldAbort: () => Atomics.load(abort, 0) !== 0,
    };
    const predictionIds = options.prediction !== undefined ? predictionTokens(options.prediction, tokenizer) : undefined;
    const thinksPerRow = projector !== undefined && policy === 'marker' && prompts.length > 1;
    const composition = await batchComposition(loaded, batch, plan, msg.options.trace, predictionIds !== undefined, prompts.length, thinksPerRow);
    const latent =
      projector && policy !== 'never'
        ? { policy, marker: projector.marker, ...(msg.options.latentPlaceholder ? { placeholder: msg.options.latentPlaceholder } : {}) }
        : undefined;
    // A traced call's traces, by row: streamed with each token, and kept for the result (`generate` posts no tokens).
    const traces = msg.options.trace ? prompts.map((): TokenTrace[] => []) : undefined;
    const result = await (composition
      ? batch.submit({ ...shared, composition, ...(latent ? { latent } : {}), ...(predictionIds ? { predictionIds } : {}), onToken: (event) => emit(named(event)) })
      : batch.exclusive(() =>
          runDecodeLoop(source, {
            ...shared,
            ...(latent ? { latent: { ...latent, run: (steps: number) => source.latentSteps(steps) } } : {}),
            onToken: (event) => {
              const trace = traces ? source.trace(event.row) : undefined;
              if (trace) traces![event.row]!.push(trace);
              emit(named(trace ? { ...event, trace } : event));
            },
          }),
          true,
          shared.shouldAbort,
          // (its reasoners in lanes keep their caches in their workers)
          { ...shared, ...(latent ? { latent } : {}), reasoners: plan.active.filter((a) => !isAlwaysZero(a.weight) && loaded.inline?.[a.slot]).map((a) => a.slot) },
        )
    ).finally(() => releaseConstraints(constraints));
    if (traces) result.rows.forEach((row, r) => (row.trace = traces[r]));
    stream?.flush();
    const grammar = constraints && grammarTiming(constraints);
    if (constraints) attachParsed(result.rows, responseFormat, constraints);
    post({ type: 'done', id: msg.id, result: grammar ? { ...result, grammar } : result });
  } catch (err) {
    // Tokens generated before a failure still reach the caller, ahead of the error.
    stream?.flush();
    if (err instanceof ReasonerError && closeReason === undefined) await close(loaded, batch, msg.id, err);
    else fail(msg.id, err);
  }
}

/**
 * Why the engine closed itself, once a reasoner failed: from then on the worker answers nothing but the failed call
 * and one 'closed' message with this reason, which fails every other call the engine has not answered.
 */
let closeReason: string | undefined;

/** The constraint stage over the backbone's vocabulary (built on the first constrained request). */
let constraintFactory: (() => Promise<ConstraintFactory>) | undefined;

/** Reports a call's failure; once the engine is closing, the 'closed' message reports it instead, with the reason. */
function fail(id: number, err: unknown): void {
  if (closeReason === undefined) post({ type: 'error', id, error: toWire(err) });
}

/** Releases every model (a release that fails is left alone: the worker ends after this). */
async function releaseModels(loaded: Loaded): Promise<void> {
  await Promise.allSettled([loaded.backbone.release(), loaded.shards?.release(), loaded.projector?.session.release(), loaded.draft?.session.release(), ...loaded.groups.map((g) => g.release()), ...releaseCopies(loaded)]);
}

/**
 * Closes the engine for call `id`'s reasoner failure: the reasoner's KV cache is behind the token stream, so the
 * engine cannot go on with it. The batch stops first (its calls fail with `err`), so that no call runs on a model
 * being released and fails with that instead; then every model is released, the call gets `err`, and every other
 * call the 'closed' message with `err`'s message.
 */
async function close(loaded: Loaded, batch: ContinuousBatch, id: number, err: ReasonerError): Promise<void> {
  closeReason = `${err.message}; load the engine again`;
  await batch.stop(err);
  await releaseModels(loaded);
  post({ type: 'error', id, error: toWire(err) });
  // The engine terminates this worker when it reads 'closed'; exiting first could overtake the message.
  post({ type: 'closed', reason: closeReason });
}

start().then(
  (loaded) => {
    // Requests share the continuous batch (or wait for it to drain); tokenizing and stats answer at once.
    const inline = loaded.inline?.map((session, slot) => ({ session, name: loaded.reasoners[slot]!.name }));
    const batch = new ContinuousBatch(loaded.backbone, loaded.vocab, config.batching, inline, loaded.projector?.session, loaded.shards);
    if (loaded.draft) batch.useDraftModel(loaded.draft.drafter);
    port.on('message', (msg: ToWorker) => {
      if (!answerAtOnce(loaded, batch, msg)) void serve(loaded, batch, msg);
    });
  },
  (err) => post({ type: 'failed', error: toWire(err) }),
);
