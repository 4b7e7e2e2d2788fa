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
  /** Seed for the sampler's own PRNG (safe integer); unset = seeded from crypto randomness. */
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

const KEYS: readonly (keyof SamplingOptions)[] = [
  'temperature',
  'topK',
  'topP',
  'minP',
  'repetitionPenalty',
  'repetitionWindow',
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
      case 'seed':
        if (!Number.isSafeInteger(v)) fail(key, 'must be a safe integer', v);
        break;
    }
    out[key] = v;
  }
  return out;
}
