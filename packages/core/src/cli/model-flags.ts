/**
 * The flags `generate` and `chat` share: what to load (model, reasoners, where and how they run) and how to
 * sample, each declared once with its parser, and read into the engine's options.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import { existsSync } from 'node:fs';
import { basename } from 'node:path';
import type { EngineOptions, StreamOptions } from '../engine.js';
import type { GenerationResult } from '../generate/types.js';
import type { FusionMode } from '../compose/fusion.js';
import { isGgufFile } from '../gguf/gguf-module.js';
import { isLocalModelName, localModelPath } from '../modules/local-names.js';
import { DTYPE_CHOICES } from '../modules/hub-variants.js';
import { progressBar } from '../registry/progress.js';
import { resolveModelPath } from '../registry/resolve-model.js';
import { DEFAULT_DRAFT } from '../generate/draft-model.js';
import { DEVICES } from '../runtime/devices.js';
import type { Int8PromptsOutcome } from '../runtime/decoder-session.js';
import type { ReasonerSpec } from '../runtime/protocol.js';
import { PLACEMENTS, type PlacementChoice } from '../runtime/thread-budget.js';
import { boundedDecimalFlag, decimalFlag, integerFlag, logitBiasFlag, nonNegativeIntegerFlag, parseWeight, positiveIntegerFlag, reasonerTaskFlag, type ReasonerTaskFlag, safeIntegerFlag, stopFlag, threadsFlag } from './flags.js';

/**
 * `PATH[=WEIGHT]` (or a registry ref): the weight is what follows the last `=` when it is a number, unless the whole
 * argument is a path that exists and the part before that `=` is not (a folder named `r=1`).
 */
const reasonerFlag = (v: string, prev: ReasonerSpec[] = []): ReasonerSpec[] => {
  const at = v.lastIndexOf('=');
  // `ns/name@>=1.2` is a registry range, not a weight.
  if (at > 0 && /[<>=]$/.test(v.slice(0, at))) return [...prev, { model: v }];
  if (at > 0 && existsSync(v) && !existsSync(v.slice(0, at))) return [...prev, { model: v }];
  const weight = at > 0 ? parseWeight(v.slice(at + 1)) : undefined;
  if (weight !== undefined) return [...prev, { model: v.slice(0, at), weight }];
  if (at > 0 && !existsSync(v)) throw new InvalidArgumentError(`--reasoner ${v}: the weight after "=" must be a number`);
  return [...prev, { model: v }];
};

/** What the loading flags give. */
export interface ModelFlags {
  model: string;
  dtype?: string;
  reasoner?: ReasonerSpec[];
  reasonerTask?: ReasonerTaskFlag[];
  mode?: FusionMode;
  projector?: string;
  device: string;
  threads?: number;
  placement?: PlacementChoice;
  contextLength?: number;
  kvCache?: 'float32' | 'float16';
  /** false with --no-session-cache. */
  sessionCache?: boolean;
  /** --int8-prompts. */
  int8Prompts?: boolean;
  /** false with --no-model-defaults. */
  modelDefaults?: boolean;
  /** --prompt-lookup, with the draft's length when given. */
  promptLookup?: true | number;
  /** --draft-model, --draft-max, --draft-p-min. */
  draftModel?: string;
  draftMax?: number;
  /** false with --no-draft-adaptive. */
  draftAdaptive?: boolean;
  draftPMin?: number;
}

/** --prompt-lookup [n] (Engine.load's `promptLookup`), for every command that generates. */
export function promptLookupOption(): Option {
  return new Option('--prompt-lookup [n]', "speculative decoding by prompt lookup: draft up to n tokens (default 4) from the reply's own context, kept as far as the model writes them itself").argParser(positiveIntegerFlag('--prompt-lookup'));
}

/** --draft-model, --draft-max, --draft-p-min (llama.cpp's flags) and --no-draft-adaptive (Engine.load's `draftModel`), for every command that generates. */
export function draftModelOptions(): Option[] {
  return [
    new Option('--draft-model <ref>', "speculative decoding: a small model with the model's tokenizer (same family) drafts tokens the model checks in one run, kept as far as it writes them itself (GGUF files converted once, as --model)"),
    new Option('--draft-max <n>', `tokens the draft model drafts at most per step (default ${DEFAULT_DRAFT.draftTokens}; fewer, or none, where more would not pay)`).argParser(positiveIntegerFlag('--draft-max')),
    new Option('--no-draft-adaptive', 'draft --draft-max tokens every step, even where fewer (or none) would be faster'),
    new Option('--draft-p-min <p>', `the draft model stops drafting at a token it gives less than p (0 to 1, default ${DEFAULT_DRAFT.minProbability})`).argParser(boundedDecimalFlag('--draft-p-min', 0, 1)),
  ];
}

/** Engine.load's `draftModel` of the --draft-* flags (the others need --draft-model). */
export function draftModelOf(flags: Pick<ModelFlags, 'draftModel' | 'draftMax' | 'draftAdaptive' | 'draftPMin'>, model = flags.draftModel): Pick<EngineOptions, 'draftModel'> {
  const { draftMax, draftAdaptive, draftPMin } = flags;
  if (model === undefined) {
    if (draftMax !== undefined || draftAdaptive === false || draftPMin !== undefined) throw new InvalidArgumentError('--draft-max, --no-draft-adaptive and --draft-p-min need --draft-model');
    return {};
  }
  return {
    draftModel: {
      model,
      ...(draftMax !== undefined ? { draftTokens: draftMax } : {}),
      ...(draftAdaptive === false ? { adaptive: false } : {}),
      ...(draftPMin !== undefined ? { minProbability: draftPMin } : {}),
    },
  };
}

/** A generation's decode speed for the summary line: ms per token, and its steps where drafts saved some. */
export function decodeSpeed(result: GenerationResult): string {
  const { msPerToken, decodeSteps } = result.timing;
  const after = Math.max(0, ...result.rows.map((r) => r.ids.length - 1));
  return `${msPerToken.toFixed(2)} ms/token${decodeSteps < after ? ` (${decodeSteps} steps for ${after} tokens)` : ''}`;
}

/** Engine.load's `promptLookup` of the --prompt-lookup flag. */
export function promptLookupOf(flag: true | number | undefined): Pick<EngineOptions, 'promptLookup'> {
  if (flag === undefined) return {};
  return { promptLookup: flag === true ? true : { draftTokens: flag } };
}

/** --no-session-cache (Engine.load's `sessionCache: false`), for every command that loads a model. */
export function sessionCacheOption(): Option {
  return new Option('--no-session-cache', "don't keep large models' optimized sessions with prepacked weights on disk (faster later loads, for 2.3-2.5x the model's bytes)");
}

/** --int8-prompts (Engine.load's `int8Prompts`), for every command that loads a model. */
export function int8PromptsOption(): Option {
  return new Option(
    '--int8-prompts',
    "run prompts through 8-bit integer products (AMX/VNNI) instead of the model's 4/8-bit block products: prefill about twice as fast, for about a byte a weight more memory and an int8 rounding of the prompt (steps unchanged)",
  );
}

/**
 * What `generate`, `chat`, `embed` and `serve` say where --int8-prompts (given) rewrote nothing of the backbone
 * (`ModelInfo.int8Prompts`): the option is no error there, its prompts run as without it, and this line is how the
 * user learns it did nothing, and why; undefined where it rewrote products or was not given.
 */
export function int8PromptsUnused(outcome: Int8PromptsOutcome | undefined): string | undefined {
  if (!outcome || outcome.products > 0) return undefined;
  const why = outcome.unused === 'device' ? 'int8 products are for the CPU only' : 'no block-quantized products to rewrite';
  return `--int8-prompts: ${why}; prompts run as without the option`;
}

/** Writes {@link int8PromptsUnused}'s line on stderr, in the CLI's bracketed note style, where there is one. */
export function noteInt8PromptsUnused(outcome: Int8PromptsOutcome | undefined): void {
  const unused = int8PromptsUnused(outcome);
  if (unused) process.stderr.write(`[${unused}]\n`);
}

/**
 * --no-model-defaults (Engine.load's `modelDefaults: false`; vLLM's `--generation-config vllm`), for every command that
 * generates: without it, what the model's files recommend is used where flags (or a request) leave it out.
 */
export function modelDefaultsOption(): Option {
  return new Option(
    '--no-model-defaults',
    "ignore the model's own defaults, used otherwise where flags or requests say nothing: the sampling settings, reply limit and stop strings its files recommend (an Ollama model's parameters, a hub export's generation_config.json), an Ollama model's system prompt and context length (num_ctx)",
  );
}

/** What the sampling flags give. */
export interface SamplingFlags {
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  repetitionPenalty?: number;
  /** llama.cpp's `--repeat-last-n`: -1 for all tokens. */
  repeatLastN?: number;
  frequencyPenalty?: number;
  presencePenalty?: number;
  logitBias?: Record<number, number>;
  seed?: number;
  stop?: string[];
}

/** Adds the loading flags (`--model`, `--reasoner`, …) to a command. */
export function addModelFlags(command: Command): Command {
  command
    .requiredOption('--model <path>', 'module directory, plain export directory, .onnx file, GGUF file (converted once into the cache; also as ollama://name:tag, hf://org/repo:QUANT or lmstudio://publisher/model), or registry reference')
    .addOption(new Option('--dtype <t>', "graph of a hub export directory (transformers.js names; default: as its config.json says, else the most precise present)").choices([...DTYPE_CHOICES]))
    .option('--reasoner <path[=weight]>', 'reasoner module composed with the model (repeatable)', reasonerFlag)
    .option('--reasoner-task <task[=weight]>', "the registry's reasoner for this task that composes with the model (REASONPLUG_REGISTRY; repeatable)", reasonerTaskFlag)
    .addOption(new Option('--mode <mode>', 'transform before weighting: logits (UniR) or logprobs (GenARM)').choices(['logits', 'logprobs']))
    .option('--projector <path>', 'LiteReason reasoning projector (module directory or .onnx)')
    .addOption(new Option('--device <d>', 'execution provider').choices([...DEVICES]).default('cpu'))
    .option('--threads <n>', 'intra-op threads (at most 4 per CPU)', threadsFlag)
    .option('--context-length <n>', "positions a generation may use, at most the model's own (default: the model's)", positiveIntegerFlag('--context-length'))
    .addOption(new Option('--kv-cache <t>', "keys' and values' type of .gguf models converted on first use: float16 (default, as llama.cpp's; faster at long contexts) or float32 (exact against llama.cpp's F32 cache)").choices(['float32', 'float16']))
    .addOption(sessionCacheOption())
    .addOption(int8PromptsOption())
    .addOption(promptLookupOption())
    .addOption(
      new Option('--placement <p>', 'where reasoners run: lanes (threads beside the backbone), inline (after it), auto')
        .choices([...PLACEMENTS])
        .default('auto'),
    );
  for (const option of draftModelOptions()) command.addOption(option);
  return command;
}

/** Adds the sampling flags (`--temperature`, `--seed`, `--stop`, …) to a command. */
export function addSamplingFlags(command: Command): Command {
  return command
    .option('--temperature <t>', "0 = greedy (the default, unless the model's files recommend one: see --no-model-defaults)", decimalFlag('--temperature'))
    .option('--top-k <k>', 'keep the k most likely tokens (0 = off)', nonNegativeIntegerFlag('--top-k'))
    .option('--top-p <p>', 'nucleus sampling mass', decimalFlag('--top-p'))
    .option('--min-p <p>', 'drop tokens below p × the top probability', decimalFlag('--min-p'))
    .option('--repetition-penalty <r>', 'penalise tokens already present (>1)', decimalFlag('--repetition-penalty'))
    .option('--repeat-last-n <n>', 'how many of the last tokens the repetition penalty looks at (0 = none, -1 = all, the default)', integerFlag('--repeat-last-n', -1, Number.MAX_SAFE_INTEGER, 'a whole number >= 0, or -1 for all tokens'))
    .option('--frequency-penalty <f>', "OpenAI's: lower each generated token's logit by f per time it was generated", decimalFlag('--frequency-penalty'))
    .option('--presence-penalty <p>', "OpenAI's: lower every generated token's logit by p", decimalFlag('--presence-penalty'))
    .option('--logit-bias <id=bias>', 'add bias to a token\'s logit, -100 bans it (repeatable)', logitBiasFlag)
    .option('--seed <s>', 'seed of the sampler', safeIntegerFlag('--seed'))
    .option('--stop <text>', 'stop string, not empty (repeatable)', stopFlag)
    .addOption(modelDefaultsOption());
}

/** The engine options of the sampling flags (only those given). */
/** --latent and --latent-placeholder (LiteReason's steps, with a --projector). */
export interface LatentFlags {
  latent?: string;
  latentPlaceholder?: string;
}

/** Adds the latent-step flags of every command that generates with a projector. */
export function addLatentFlags(command: Command): Command {
  return command
    .option('--latent <policy>', 'latent steps: marker (default with a projector), never, or fixed:K')
    .option('--latent-placeholder <text>', 'shown once per latent step in place of a marker');
}

/** The call options the latent flags set. */
export function latentOptions(flags: LatentFlags): StreamOptions {
  return {
    ...(flags.latent ? { latent: flags.latent } : {}),
    ...(flags.latentPlaceholder !== undefined ? { latentPlaceholder: flags.latentPlaceholder } : {}),
  };
}

export function samplingOptions(flags: SamplingFlags): StreamOptions {
  return {
    ...(flags.temperature !== undefined ? { temperature: flags.temperature } : {}),
    ...(flags.topK !== undefined ? { topK: flags.topK } : {}),
    ...(flags.topP !== undefined ? { topP: flags.topP } : {}),
    ...(flags.minP !== undefined ? { minP: flags.minP } : {}),
    ...(flags.repetitionPenalty !== undefined ? { repetitionPenalty: flags.repetitionPenalty } : {}),
    // llama.cpp's -1 (every token) is the engine's unset window.
    ...(flags.repeatLastN !== undefined && flags.repeatLastN !== -1 ? { repetitionWindow: flags.repeatLastN } : {}),
    ...(flags.frequencyPenalty !== undefined ? { frequencyPenalty: flags.frequencyPenalty } : {}),
    ...(flags.presencePenalty !== undefined ? { presencePenalty: flags.presencePenalty } : {}),
    ...(flags.logitBias ? { logitBias: flags.logitBias } : {}),
    ...(flags.seed !== undefined ? { seed: flags.seed } : {}),
    ...(flags.stop ? { stop: flags.stop } : {}),
  };
}

/** `Engine.load`'s options of the loading flags; GGUF files are converted first, with a progress bar on a terminal. */
export async function engineOptions(flags: ModelFlags): Promise<EngineOptions> {
  return {
    model: await ggufWithProgress(flags.model, flags.kvCache),
    ...(flags.dtype ? { dtype: flags.dtype } : {}),
    reasoners: await Promise.all((flags.reasoner ?? []).map(async (r) => ({ ...r, model: await ggufWithProgress(r.model, flags.kvCache) }))),
    ...(flags.reasonerTask ? { reasonerTasks: flags.reasonerTask } : {}),
    ...(flags.mode ? { mode: flags.mode } : {}),
    ...(flags.projector ? { projector: flags.projector } : {}),
    device: flags.device,
    ...(flags.threads ? { intraOpThreads: flags.threads } : {}),
    ...(flags.placement ? { placement: flags.placement } : {}),
    ...(flags.contextLength !== undefined ? { contextLength: flags.contextLength } : {}),
    ...(flags.sessionCache === false ? { sessionCache: false } : {}),
    ...(flags.int8Prompts ? { int8Prompts: true } : {}),
    // (the name it was given by: an Ollama model's defaults are in its manifest, not in the module it is converted to)
    ...(flags.modelDefaults === false ? { modelDefaults: false } : { modelSource: flags.model }),
    ...promptLookupOf(flags.promptLookup),
    ...draftModelOf(flags, flags.draftModel !== undefined ? await ggufWithProgress(flags.draftModel, flags.kvCache) : undefined),
  };
}

/** A GGUF file's converted module, named by path or as other tools name it (converted on first use, with a progress bar on a terminal); other specs as given. */
export async function ggufWithProgress(spec: string, kvCache?: ModelFlags['kvCache']): Promise<string> {
  const file = await localModelWithProgress(spec);
  if (!isGgufFile(file)) return spec;
  const bar = progressBar(`convert ${isLocalModelName(spec) ? spec : basename(spec)}`);
  return resolveModelPath(file, bar ? { onProgress: (p) => bar.update(p) } : {}, kvCache ? { kvCache } : undefined).finally(() => bar?.finish());
}

/** What `localModelPath` gives for `spec`, with a progress bar on a terminal while a model it names is pulled. */
export async function localModelWithProgress(spec: string): Promise<string> {
  const bar = isLocalModelName(spec) ? progressBar(`pull ${spec}`) : undefined;
  return localModelPath(spec, bar ? { onProgress: (p) => bar.update(p) } : {}).finally(() => bar?.finish());
}
