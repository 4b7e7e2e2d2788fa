/** The sampler: a fixed chain of logit processors followed by argmax or a seeded softmax draw. */

import { CandidateBuffer, drawCandidates, gatherFinite, type CandidateFilter } from './candidates.js';
import { validateSamplingOptions, type SamplingOptions } from './options.js';
import {
  FrequencyPresencePenaltyProcessor,
  LogitBiasProcessor,
  MinPProcessor,
  RepetitionPenaltyProcessor,
  TemperatureProcessor,
  TopKProcessor,
  TopPProcessor,
} from './processors.js';
import { createRng, randomSeed } from './rng.js';
import { argmax } from './select.js';
import { applyBitmask, argmaxAllowed, gatherAllowed } from './bitmask.js';
import type { LogitProcessor, SamplingContext } from './types.js';

/** Thrown by {@link Sampler.sample} when every token has been excluded (all -Infinity/NaN). */
export class NoCandidatesError extends Error {
  constructor() {
    super('sampling: every logit is -Infinity or NaN; no token can be drawn');
    this.name = 'NoCandidatesError';
  }
}

/**
 * Draw one token from softmax(logits) with `rng` (uniform [0,1)): max-subtracted exponentials
 * summed in float64, then an inverse-CDF scan over the eligible tokens in id order. -Infinity and
 * NaN entries are never drawn. Returns -1 when nothing is eligible. If the max is +Infinity the
 * first +Infinity token is returned (it holds all the mass).
 * @param buf scratch to reuse across calls (optional).
 */
export function drawFromLogits(logits: Float32Array, rng: () => number, buf = new CandidateBuffer()): number {
  const n = gatherFinite(logits, buf);
  return drawCandidates(buf.idx, buf.val, n, rng, buf.w);
}

/**
 * Temperatures below this sample greedily, as vLLM's do: 1/T would scale a logit past float32's range, and the first
 * infinite entry (not the largest logit) would win.
 */
const GREEDY_BELOW = 1e-5;

/**
 * A per-sequence sampler. The chain is fixed: logit bias → repetition penalty → frequency and presence
 * penalties → temperature → top-k → top-p → min-p → draw from softmax (seeded RNG).
 * Options left unset (or at their no-op value: no bias, penalties 1 and 0, temperature 1, topK 0, topP 1, minP 0)
 * add no processor. Temperature 0 (the default), below {@link GREEDY_BELOW} or topK = 1 means greedy: the bias and penalties
 * and then a single argmax pass, with no RNG draw (so topP/minP do not matter then).
 *
 * `sample` uses `logits` as scratch: on return it holds the logits after the bias, penalties and
 * temperature (truncation is done on a compact candidate list, not written back). Pass a copy if
 * you need the raw logits afterwards. The result is exactly that of running {@link processors} over
 * the row and then {@link drawFromLogits} with this sampler's RNG.
 * Each Sampler owns its RNG: the same seed (and the same logits) reproduces a run. Without a seed
 * one is drawn from crypto randomness and exposed as {@link Sampler.seed} so a run can be replayed.
 */
export class Sampler {
  readonly options: Readonly<SamplingOptions>;
  readonly processors: readonly LogitProcessor[];
  /** True when sampling is a plain argmax (after the bias and penalties). */
  readonly greedy: boolean;
  /** The seed this sampler's RNG was started from. */
  readonly seed: number;
  private readonly rng: () => number;
  /** The stages that must see the whole row (bias, penalties, temperature). */
  private readonly denseStages: readonly LogitProcessor[];
  private readonly topK: TopKProcessor | undefined;
  /** Truncation stages after top-k, run on the compact candidate list. */
  private readonly filters: readonly CandidateFilter[];
  private readonly buf = new CandidateBuffer();

  constructor(opts: SamplingOptions = {}) {
    const o = validateSamplingOptions(opts);
    this.options = Object.freeze(o);
    this.seed = o.seed ?? randomSeed();
    this.rng = createRng(this.seed);
    const temperature = o.temperature ?? 0;
    this.greedy = temperature < GREEDY_BELOW || o.topK === 1;
    const dense: LogitProcessor[] = [];
    const filters: (LogitProcessor & CandidateFilter)[] = [];
    let topK: TopKProcessor | undefined;
    if (o.logitBias && Object.keys(o.logitBias).length > 0) dense.push(new LogitBiasProcessor(o.logitBias));
    if (o.repetitionPenalty !== undefined && o.repetitionPenalty !== 1 && o.repetitionWindow !== 0) {
      dense.push(new RepetitionPenaltyProcessor(o.repetitionPenalty, o.repetitionWindow ?? Infinity));
    }
    if (o.frequencyPenalty || o.presencePenalty) dense.push(new FrequencyPresencePenaltyProcessor(o.frequencyPenalty ?? 0, o.presencePenalty ?? 0));
    if (!this.greedy) {
      if (temperature !== 1) dense.push(new TemperatureProcessor(temperature));
      if (o.topK !== undefined && o.topK > 0) topK = new TopKProcessor(o.topK);
      if (o.topP !== undefined && o.topP < 1) filters.push(new TopPProcessor(o.topP));
      if (o.minP !== undefined && o.minP > 0) filters.push(new MinPProcessor(o.minP));
    }
    this.denseStages = Object.freeze(dense);
    this.topK = topK;
    this.filters = Object.freeze(filters);
    this.processors = Object.freeze([...dense, ...(topK ? [topK] : []), ...filters]);
  }

  /**
   * True when a pick from the whole row, kept only if a grammar accepts it and otherwise redone under the
   * grammar's bitmask, is distributed exactly as a pick under the bitmask: greedy (the argmax, if allowed, is the
   * allowed argmax), or a plain draw (kept with probability Z, the allowed mass, else redrawn from p/Z: P(t) =
   * p(t) + (1 − Z)·p(t)/Z = p(t)/Z). Truncation (top-k, top-p, min-p) ranks the row before the grammar, so not then.
   */
  get exactWithoutMask(): boolean {
    return this.greedy || (!this.topK && this.filters.length === 0);
  }

  /**
   * Run the chain over `logits` (modified in place) and pick one token id.
   * @param allowed a grammar's bitmask of the tokens allowed (bit i of word i >> 5): the pick is exactly that
   *   from the logits with every other token set to −∞, but only top-k writes them (a greedy pick walks the
   *   allowed tokens, a candidate list is gathered from them).
   * @throws NoCandidatesError when every token is excluded.
   */
  sample(logits: Float32Array, ctx: SamplingContext, allowed?: Int32Array): number {
    this.shape(logits, ctx);
    return this.pick(logits, allowed);
  }

  /**
   * The chain's stages that see the whole row (bias, penalties, temperature), in place: {@link sample} is
   * `shape` then {@link pick}, split so that a grammar can see a first pick and ask for a second on the same row.
   */
  shape(logits: Float32Array, ctx: SamplingContext): void {
    const dense = this.denseStages;
    for (let i = 0; i < dense.length; i++) dense[i]!.apply(logits, ctx);
  }

  /** The pick from logits already {@link shape}d (one RNG draw when sampling), under `allowed` when given. */
  pick(logits: Float32Array, allowed?: Int32Array): number {
    // Top-k reads the whole row for its threshold: it needs the masked row.
    if (allowed && this.topK) applyBitmask(logits, allowed);
    let id: number;
    if (this.greedy) {
      id = allowed ? argmaxAllowed(logits, allowed) : argmax(logits);
      if (id >= 0 && !(logits[id]! > -Infinity)) id = -1;
    } else {
      const buf = this.buf;
      let n = this.topK ? this.topK.gather(logits, buf) : allowed ? gatherAllowed(logits, allowed, buf) : gatherFinite(logits, buf);
      const filters = this.filters;
      for (let i = 0; i < filters.length; i++) n = filters[i]!.filter(buf.idx, buf.val, n);
      id = drawCandidates(buf.idx, buf.val, n, this.rng, buf.w);
    }
    if (id < 0) throw new NoCandidatesError();
    return id;
  }
}
