/** Sampling options and their validation. */

export interface SamplingOptions {
  /** Softmax temperature; 0 (the default) means greedy argmax. Must be >= 0. */
  temperature?: number;
  /** Keep only the k most likely tokens; integer >= 0, 0 = disabled, 1 = greedy. */
  topK?: number;
  /** Nucleus sampling: keep the smallest set of most likely tokens whose mass is >= topP; in (0, 1]. */
  topP?: number;
  /** Drop tokens whose probability is below minP * (probability of the most likely token); in [0, 1). */
  minP?: number;
  /** HF/CTRL repetition penalty (> 0; 1 = off): seen logit > 0 ? logit / p : logit * p. */
  repetitionPenalty?: number;
  /**
   * How many of the most recent tokens of prompt + generated the repetition penalty looks at;
   * integer >= 0, unset = all of them, 0 = penalty disabled (llama.cpp `penalty_last_n = 0`).
   */
  repetitionWindow?: number;
  /**
   * OpenAI's frequency penalty (finite; 0 = off): each token's logit less this times the number of times the
   * sequence has generated it so far (the prompt does not count). Negative values favour repeats.
   */
  frequencyPenalty?: number;
  /** OpenAI's presence penalty (finite; 0 = off): less this from the logit of every token generated so far. */
  presencePenalty?: number;
  /**
   * Added to the logits of these token ids before every other stage, as OpenAI's `logit_bias` (token id → finite
   * bias; -100 in effect bans a token, 100 all but forces it). Ids must be in the model's vocabulary.
   */
  logitBias?: Readonly<Record<number, number>>;
  /**
   * Seed for the sampler's own PRNG (safe integer); unset = seeded from crypto randomness. Each prompt of a call of
   * several draws as it would alone; the k-th repeat of a prompt in the call draws from seed + k (see
   * {@link samplingForRow}).
   */
  seed?: number;
}

/** Thrown by {@link validateSamplingOptions} (and the Sampler constructor) for an invalid option. */
export class SamplingOptionsError extends Error {
  /** The offending option, or undefined when the options value itself is malformed. */
  readonly option: keyof SamplingOptions | undefined;
  constructor(option: keyof SamplingOptions | undefined, message: string) {
    super(message);
    this.name = 'SamplingOptionsError';
    this.option = option;
  }
}

/** The options that are numbers. */
type NumberOption = Exclude<keyof SamplingOptions, 'logitBias'>;

const KEYS: readonly NumberOption[] = [
  'temperature',
  'topK',
  'topP',
  'minP',
  'repetitionPenalty',
  'repetitionWindow',
  'frequencyPenalty',
  'presencePenalty',
  'seed',
];

function describe(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean' || v === null || v === undefined) return String(v);
  return typeof v;
}

function fail(option: keyof SamplingOptions, rule: string, got: unknown): never {
  throw new SamplingOptionsError(option, `sampling option ${option} ${rule} (got ${describe(got)})`);
}

/**
 * Check sampling options and return a clean copy holding only the known options that are set.
 * Unknown keys are ignored (so a wider options object may be passed through); `undefined` means unset.
 * @throws SamplingOptionsError naming the offending option.
 */
export function validateSamplingOptions(o: unknown): SamplingOptions {
  if (o === undefined || o === null) return {};
  if (typeof o !== 'object' || Array.isArray(o)) {
    throw new SamplingOptionsError(undefined, `sampling options must be an object (got ${describe(o)})`);
  }
  const src = o as Record<string, unknown>;
  const out: SamplingOptions = {};
  if (src.logitBias !== undefined) out.logitBias = validateLogitBias(src.logitBias);
  for (const key of KEYS) {
    const v = src[key];
    if (v === undefined) continue;
    if (typeof v !== 'number' || Number.isNaN(v)) fail(key, 'must be a number', v);
    switch (key) {
      case 'temperature':
        if (!Number.isFinite(v) || v < 0) fail(key, 'must be a finite number >= 0 (0 = greedy)', v);
        break;
      case 'topK':
        if (!Number.isSafeInteger(v) || v < 0) fail(key, 'must be an integer >= 0 (0 = disabled)', v);
        break;
      case 'topP':
        if (!(v > 0 && v <= 1)) fail(key, 'must be in (0, 1]', v);
        break;
      case 'minP':
        if (!(v >= 0 && v < 1)) fail(key, 'must be in [0, 1)', v);
        break;
      case 'repetitionPenalty':
        if (!Number.isFinite(v) || v <= 0) fail(key, 'must be a finite number > 0 (1 = off)', v);
        break;
      case 'repetitionWindow':
        if (!Number.isSafeInteger(v) || v < 0) fail(key, 'must be an integer >= 0', v);
        break;
      case 'frequencyPenalty':
      case 'presencePenalty':
        if (!Number.isFinite(v)) fail(key, 'must be a finite number (0 = off)', v);
        break;
      case 'seed':
        if (!Number.isSafeInteger(v)) fail(key, 'must be a safe integer', v);
        break;
    }
    out[key] = v;
  }
  return out;
}

/** A clean copy of a logit bias: whole-number token ids (as keys) to finite biases. */
function validateLogitBias(v: unknown): Record<number, number> {
  const refuse = (why: string): never => {
    throw new SamplingOptionsError('logitBias', `sampling option logitBias ${why}`);
  };
  if (typeof v !== 'object' || v === null || Array.isArray(v)) refuse(`must be an object of token id → bias (got ${describe(v)})`);
  const out: Record<number, number> = {};
  for (const [key, bias] of Object.entries(v as object)) {
    if (!/^(0|[1-9]\d*)$/.test(key) || !Number.isSafeInteger(Number(key))) refuse(`keys must be token ids, whole numbers >= 0 (got ${JSON.stringify(key)})`);
    if (typeof bias !== 'number' || !Number.isFinite(bias)) refuse(`values must be finite numbers (token ${key}: ${describe(bias)})`);
    out[Number(key)] = bias as number;
  }
  return out;
}

/** Throws a {@link SamplingOptionsError} when a logit bias names a token id outside a vocabulary of `vocab` tokens. */
export function checkLogitBiasIds(bias: Readonly<Record<number, number>> | undefined, vocab: number): void {
  const outside = Object.keys(bias ?? {}).find((id) => Number(id) >= vocab);
  if (outside !== undefined) throw new SamplingOptionsError('logitBias', `sampling option logitBias names token ${outside}, outside the model's vocabulary of ${vocab} tokens`);
}

/**
 * The sampling options of a row whose prompt `repeat` rows before it in its call also have: seed + repeat (seed −
 * repeat past the safe range). Several choices of one prompt then draw different samples, reproducibly, the first
 * as the prompt alone does; and each prompt of a call draws as it would alone, as LangChain's batches (a call a
 * prompt) and vLLM's lists of prompts (prompt i's choice j from seed + j) draw it.
 */
export function samplingForRow<T extends SamplingOptions>(options: T, repeat: number): T {
  if (options.seed === undefined || repeat === 0) return options;
  const up = options.seed + repeat;
  return { ...options, seed: Number.isSafeInteger(up) ? up : options.seed - repeat };
}
