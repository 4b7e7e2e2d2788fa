/**
 * Errors that cross from the model worker to the caller's thread, rebuilt there as the classes the package exports,
 * so that `err instanceof KvBudgetError` holds for a call refused in the worker as it does for one refused before it
 * was sent. Their own fields (a `GenerateOptionsError`'s `option`, a `GgufError`'s `code`) travel with them.
 */
import { CompositionOptionsError } from '../compose/composition-options.js';
import { ReasonerSelectionError } from '../compose/composed-source.js';
import { ReasonerError } from '../compose/reasoner-group.js';
import { VocabularyMismatchError } from '../compose/vocabulary.js';
import { WeightScheduleError } from '../compose/weights.js';
import { ConstraintError } from '../constrain/types.js';
import { KvBudgetError, QueueFullError } from '../generate/continuous-batch.js';
import { LatentPolicyError, PromptError } from '../generate/decode-loop.js';
import { DraftModelError } from '../generate/draft-model.js';
import { GenerateOptionsError } from '../generate/options.js';
import { GgufError } from '../gguf/reader.js';
import { ContextLengthError } from '../modules/context-length.js';
import { DtypeError } from '../modules/hub-variants.js';
import { ModelNotFoundError } from '../modules/locate.js';
import { ManifestError } from '../modules/manifest.js';
import { ModuleIntegrityError } from '../modules/module-dir.js';
import { ModuleCompatError } from '../modules/vocab-compat.js';
import { OnnxFormatError } from '../onnx/format-error.js';
import { PreparedCacheError } from '../onnx/prepared-cache-error.js';
import { UnsupportedModelError } from '../onnx/signature.js';
import { SamplingOptionsError } from '../sampling/options.js';
import { ChatTemplateUnsupportedError, TokenizerError } from '../tokenizer/tokenizer.js';
import { ModelRunError } from './decoder-session.js';
import { DeviceUnavailableError, ModelMemoryError } from './devices.js';
import { EmbedInputError, EmbeddingsUnavailableError } from './embed.js';
import { ProjectorError } from './projector-session.js';
import { ShardError } from './row-shards.js';
import { PlacementError, ThreadCountError } from './thread-budget.js';
import { fromWire, type WireError } from './spawn-worker.js';

const CLASSES: Readonly<Record<string, abstract new (...args: never[]) => Error>> = Object.fromEntries(
  [
    CompositionOptionsError, ConstraintError, ContextLengthError, DeviceUnavailableError, DraftModelError, DtypeError, EmbedInputError,
    EmbeddingsUnavailableError, GenerateOptionsError, GgufError, KvBudgetError, LatentPolicyError, ManifestError, ModelMemoryError, ModelNotFoundError,
    ModelRunError, ModuleCompatError, ModuleIntegrityError, OnnxFormatError, PlacementError, PreparedCacheError, ProjectorError, PromptError, QueueFullError,
    ReasonerError, ReasonerSelectionError, SamplingOptionsError, ShardError, ThreadCountError, TokenizerError, ChatTemplateUnsupportedError, UnsupportedModelError,
    VocabularyMismatchError, WeightScheduleError,
  ].map((c) => [c.name, c]),
);

/** Raised for failures reported by the worker that are none of the package's own errors, keeping the original's name. */
export class EngineError extends Error {
  constructor(error: WireError, options?: ErrorOptions) {
    super(error.message, options);
    this.name = error.name;
  }
}

/**
 * Raised for calls an engine can no longer answer: it was disposed (calls pending then and made after), its worker
 * exited, or it closed itself (a reasoner failed). Load the model again.
 */
export class EngineClosedError extends Error {
  override name = 'EngineClosedError';
}

/** Where a call was made on the caller's thread: the frames its worker's errors are given (see {@link callSite}). */
export interface CallSite {
  readonly stack?: string;
}

/** The stack here from the caller of `above` down: the frames of `above` and of what it called left out. */
export function callSite(above: (...args: never[]) => unknown): CallSite {
  const site: { stack?: string } = {};
  Error.captureStackTrace(site, above);
  return site;
}

/**
 * The error the worker reported, as its own class where the package has it (else an {@link EngineError}), with the
 * stack of `site`: the frames of the call that the worker answered, under its own `Name: message` line. Its causes
 * are rebuilt as any error from another thread is ({@link fromWire}: their names, messages and the worker's stacks).
 */
export function workerError(error: WireError, site: CallSite): Error {
  const Class = CLASSES[error.name];
  const options = error.cause ? { cause: fromWire(error.cause) } : undefined;
  let e: Error;
  if (Class) {
    // Made as an Error whose prototype is the class's: the constructors differ in what they take, the fields came along.
    // V8 records no frames for it (it drops those up to new.target's constructor, which never ran): see below.
    e = Reflect.construct(Error, [error.message, options], Class) as Error;
    Object.assign(e, error.fields, { name: error.name });
  } else {
    e = new EngineError(error, options);
  }
  // (the site's own first line, `Error`, gives way to the error's; no frames where Error.stackTraceLimit is 0)
  const at = site.stack?.indexOf('\n') ?? -1;
  e.stack = `${error.message ? `${error.name}: ${error.message}` : error.name}${at === -1 ? '' : site.stack!.slice(at)}`;
  return e;
}
