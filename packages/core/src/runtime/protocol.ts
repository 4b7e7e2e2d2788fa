/** Messages between the engine (main thread) and its generation worker. */
import type { DraftModelSettings } from '../generate/draft-model.js';
import type { DecoderSignature } from '../onnx/signature.js';
import type { ChatMessage } from '../tokenizer/tokenizer.js';
import type { ToolsPrompt } from '../tokenizer/tools-in-prompt.js';
import type { GenerateOptions, GenerationResult, Timing, TokenEvent } from '../generate/types.js';
import type { Int8PromptsOutcome, RuntimeOptions } from './decoder-session.js';
import type { WireError } from './spawn-worker.js';
import type { FusionMode } from '../compose/fusion.js';
import type { WeightSpec } from '../compose/weights.js';
import type { MarkerSpec } from '../generate/latent-marker.js';
import type { Placement, PlacementChoice } from './thread-budget.js';
import type { ResponseFormat } from '../constrain/types.js';
import type { BatchLimits, BatchStats } from '../generate/continuous-batch.js';
import type { PreparedModel } from './open-decoder.js';
import type { GraphNeeds } from './prepare-model.js';
import type { PromptLogprobsResult } from './prompt-logprobs.js';
import type { ModelDefaults } from '../modules/model-defaults.js';

/** A prompt in one of the forms the engine takes. A list makes a batch (left-padded). */
export type PromptInput =
  | {
      /** Text to complete, tokenized as the model's tokenizer does (its BOS added where it adds one); a list is a batch. */
      prompt: string | string[];
      /**
       * Fill-in-the-middle: the code after the insertion, each prompt the code before it; the model's FIM tokens go
       * around both (see `tokenizer/fill-in-middle.ts`). Needs a code model's vocabulary.
       */
      suffix?: string;
    }
  | {
      /** Token ids as they are (no BOS added); a list of lists is a batch. */
      promptIds: number[] | number[][];
    }
  | {
      /** A conversation, rendered with the model's chat template (or `chatTemplate`): the reply continues it. */
      messages: ChatMessage[];
      /** A template to use instead of the model's. */
      chatTemplate?: string;
      /** Tools the template shows the model (OpenAI's `{ type: 'function', function: { name, description, parameters } }`). */
      tools?: unknown[];
      /**
       * Tools for a template that shows none (`TextTokenizer.rendersTools`): described in the system message, the
       * reply a JSON object as the `generic` tool-call syntax reads it (its constraint: `syntax: 'generic'`).
       */
      toolsPrompt?: ToolsPrompt;
      /** The template's own variables (Qwen3's `{ enable_thinking: false }`), as `chat_template_kwargs`. */
      chatTemplateKwargs?: Record<string, unknown>;
    };

/** Texts (tokenized as the model's tokenizer adds its special tokens) or token ids to embed, one vector each. */
export type EmbedInput =
  | {
      /** Texts, one vector each. */
      texts: string[];
    }
  | {
      /** Token id lists, one vector each (used as they are). */
      ids: number[][];
    };

/** One vector per input, in order: the backbone's final hidden state at each input's last token. */
export interface EmbedResult {
  /** One per input, `ModelInfo.embeddingSize` long; unit length unless `normalize: false`. */
  vectors: Float32Array[];
  /** Tokens each input took. */
  promptTokens: number[];
}

/** A reasoner to load beside the backbone. */
export interface ReasonerSpec {
  /** Module directory, plain export directory, or .onnx file. */
  model: string;
  /**
   * Name used in per-call options, traces and metadata; default: the manifest's name, else the file name, with `#2`,
   * `#3`, … after it where an earlier reasoner took it (two versions of one module, two files of one model).
   */
  name?: string;
  /** Default weight (or schedule); default: the manifest's `composition.defaultWeight`, else 1. */
  weight?: WeightSpec;
  /** The graph of a hub export directory to use, by transformers.js's names (fp32, fp16, q8, int8, uint8, q4, q4f16, bnb4; auto: as its config.json says, the default). */
  dtype?: string;
}

/** What the worker is started with. */
export interface WorkerConfig {
  model: string;
  /** The backbone's variant in a hub export directory (see `ReasonerSpec.dtype`). */
  dtype?: string;
  runtime: RuntimeOptions;
  cacheDir?: string;
  reasoners: ReasonerSpec[];
  placement?: PlacementChoice;
  mode?: FusionMode;
  /** LiteReason reasoning projector: a module directory (kind latent-projector) or an .onnx file. */
  projector?: string;
  /** Whether the backbone also gives its final hidden state (embeddings). */
  embeddings?: boolean;
  /** Positions a generation may use, at most the models' own (see `EngineOptions.contextLength`). */
  contextLength?: number;
  /** Without `contextLength`: the model's own setting of it (Ollama's `num_ctx`), which lowers what the models declare, never raises it. */
  defaultContextLength?: number;
  /** Limits of the continuous batch. */
  batching?: BatchLimits;
  /** Speculative decoding with a draft model (its `model` a local path by now). */
  draftModel?: DraftModelSettings;
}

/** What the backbone's graph must offer for a worker started so: latent steps with a projector, its hidden state for embeddings. */
export function backboneNeeds(config: Pick<WorkerConfig, 'projector' | 'embeddings'>): GraphNeeds {
  return { ...(config.projector !== undefined ? { latent: true } : {}), ...(config.embeddings ? { hiddenState: true } : {}) };
}

/** Per-call composition options on top of the generation options. */
export interface CompositionOptions {
  /** The reasoners taking part in this call (by name), with optional weights; default: all loaded, default weights. */
  reasoners?: { name: string; weight?: WeightSpec }[];
  /**
   * Transform applied to every model's logits before weighting; default: the engine's, else each reasoner's declared
   * one (its manifest's `composition.mode`, `logits` without), the backbone's `logprobs` where a reasoner the call
   * weights declares it.
   */
  mode?: FusionMode;
  /** Divide fused logits by the sum of weights (backbone 1 included): GenARM's T/(1+a). */
  normalize?: boolean;
  /** Record the top N candidates of every model and of the fusion with each token. */
  trace?: number;
  /** When latent steps run (needs a projector): `marker` (default with a projector), `never`, or `fixed:K`. */
  latent?: string;
  /** Shown in the stream once per latent step in place of a marker (default: nothing). */
  latentPlaceholder?: string;
}

/** Per-call structure of the reply: the constraint stage. */
export interface ConstraintOptions {
  /** The structure the reply must have; a list gives each row of a batch its own (`null`: free text). */
  responseFormat?: ResponseFormat | (ResponseFormat | null)[];
}

/** What a generate request carries. */
export type GenerateRequestOptions = GenerateOptions & CompositionOptions & ConstraintOptions;

/** What the engine learns about its model once loaded. */
export interface ModelInfo {
  /** The backbone's decoder graph as located (not its prepared copy). */
  modelPath: string;
  /** The graph's inputs and outputs as the engine drives them (KV layout, id and float types, states). */
  signature: DecoderSignature;
  /** The architecture the model's files declare (`llama`, `qwen2`, …: see `declaredArchitecture`), if they do. */
  architecture?: string;
  /** Logit width of the model. */
  vocabSize: number;
  /** The backbone's tokenizer; `dir` holds its tokenizer.json and config (for rendering chats outside the engine). */
  tokenizer?: {
    /** Directory holding tokenizer.json. */
    dir: string;
    /** Ids the tokenizer knows (may be less than the logits' width, for a padded vocabulary). */
    vocabSize: number;
    /** The id prompts start with, where the model uses one. */
    bosTokenId?: number;
    /** Ids that end a row (`finishReason: 'eos'`). */
    eosTokenIds: number[];
    /** Whether the model has a chat template (else `messages` need `chatTemplate`). */
    hasChatTemplate: boolean;
  };
  /** Vocabulary the fused logits cover (the tokenizer's size; padded logits are cut to it). */
  sharedVocabSize: number;
  /** What graph preparation did (or could not do). */
  notes: string[];
  /** Things the user should know, e.g. a reasoner whose tokenizer could not be checked. */
  warnings: string[];
  /**
   * The backbone's transform for a call that gives none and weights the loaded reasoners: the load's `mode`, else
   * `logprobs` where a loaded reasoner declares it, else `logits`. Each reasoner fuses in its own declared one.
   */
  mode: FusionMode;
  /** The length of `Engine.embed`'s vectors, when the engine was loaded with `embeddings`. */
  embeddingSize?: number;
  /** The loaded reasoning projector and the marker it answers to. */
  projector?: {
    /** The projector's graph. */
    modelPath: string;
    /** Width of the hidden states it maps. */
    hiddenSize: number;
    /** How the model asks for latent steps (`<implicit_thought>N</implicit_thought>`). */
    marker: MarkerSpec;
  };
  /**
   * Whether the backbone's prompts run on 8-bit integer products, where the engine was loaded with `int8Prompts`:
   * `{ products: N }`, N of its block-quantized products rewritten; `{ products: 0, unused }` where none could be,
   * and why (`device`: not the CPU; `no-products`: no block-quantized product the rewrite takes, as in float and fp16
   * graphs, merged decoders and q4f16 exports), its prompts then running as without the option. Absent without it.
   */
  int8Prompts?: Int8PromptsOutcome;
  /**
   * Loaded reasoners with their default weights, the fusion mode each one's manifest declares, and what `int8Prompts`
   * did for each (as the backbone's {@link int8Prompts}).
   */
  reasoners: { name: string; modelPath: string; weight: WeightSpec; vocabSize: number; mode?: FusionMode; int8Prompts?: Int8PromptsOutcome }[];
  /** The draft model, when one is loaded: its graph, and how many tokens it drafts at most. */
  draftModel?: {
    /** The draft model's graph. */
    modelPath: string;
    /** Tokens drafted a step at most. */
    draftTokens: number;
    /** Whether a step drafts only as many as pay for themselves (`DraftModelOptions.adaptive`). */
    adaptive: boolean;
    /** The draft's own probability below which it stops drafting (`DraftModelOptions.minProbability`). */
    minProbability: number;
    /** What `int8Prompts` did for the draft model's prompts (as the backbone's {@link int8Prompts}). */
    int8Prompts?: Int8PromptsOutcome;
  };
  /** Intra-op threads of the session; absent means onnxruntime's default (one per physical core). */
  intraOpThreads?: number;
  /** Where the reasoners run, and the reasoners (by name) each lane worker hosts (none inline). */
  placement: {
    /** `lanes` (reasoners in worker threads of their own) or `inline` (on the backbone's thread). */
    kind: Placement;
    /** Per lane worker, the names of the reasoners it hosts (empty when inline). */
    lanes: string[][];
  };
  /**
   * Positions a generation may use (prompt, generated tokens, latent steps): the engine's `contextLength`, else what
   * the models declare (`genai_config.json`, `config.json`, `tokenizer_config.json`; the smallest of a
   * composition's models). Generation stops there with `finishReason: 'length'`.
   */
  contextLength?: number;
  /**
   * What the model's files recommend (modules/model-defaults.ts): sampling settings, a system prompt, a license. The
   * engine's calls do not apply them (`reasonplug serve` and the CLI do, where a request or flag says nothing); absent
   * when the files give none, or with `EngineOptions.modelDefaults: false`.
   */
  defaults?: ModelDefaults;
}

export type ToWorker =
  /**
   * The first message, posted while the worker starts: the backbone and then each reasoner as the engine found them
   * already prepared (undefined where not). The worker prepares only the others, and so need not load the manifest
   * schema and protobuf modules; the engine looks them up while the worker's thread starts and loads its modules.
   */
  | { type: 'prepared'; models: (PreparedModel | undefined)[] }
  | {
      type: 'generate';
      id: number;
      input: PromptInput;
      options: GenerateRequestOptions;
      abort: SharedArrayBuffer;
      /** Whether tokens are posted as they come (`stream`); `generate` wants only the result. */
      streamTokens: boolean;
    }
  | { type: 'tokenize'; id: number; text: string; addSpecialTokens: boolean }
  | { type: 'embed'; id: number; input: EmbedInput }
  | { type: 'promptLogprobs'; id: number; input: EmbedInput; top: number; composition: Pick<CompositionOptions, 'reasoners' | 'mode' | 'normalize'> }
  | { type: 'stats'; id: number }
  | { type: 'dispose' };


export type FromWorker =
  | { type: 'ready'; info: ModelInfo }
  | { type: 'failed'; error: WireError }
  /**
   * Tokens in generation order, by request: one message per step of the continuous batch for all its rows, and
   * several tokens of a request when they come faster than the flush interval.
   */
  | { type: 'stream'; streams: { id: number; events: TokenEvent[] }[] }
  | { type: 'done'; id: number; result: Omit<GenerationResult, 'timing'> & { prefillMs: number; decodeMs: number; decodeSteps: number } & Pick<Timing, 'grammar'> }
  | { type: 'encoded'; id: number; ids: number[] }
  | { type: 'embedded'; id: number; result: EmbedResult }
  | { type: 'scored'; id: number; result: PromptLogprobsResult }
  | { type: 'stats'; id: number; stats: BatchStats }
  | { type: 'error'; id: number; error: WireError }
  /** The worker released its models after a failure it cannot recover from. */
  | { type: 'closed'; reason: string };
