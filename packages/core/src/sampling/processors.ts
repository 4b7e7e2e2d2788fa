/**
 * The logit processors of the sampler chain. Each one narrows or reshapes the logits in place and
 * owns whatever scratch memory it needs (reused across calls; resized when the vocab size changes),
 * so the per-token hot loop allocates nothing.
 */

import { expNeg } from './math.js';
import {
  CandidateBuffer,
  gatherFinite,
  maskToCandidates,
  type CandidateFilter,
} from './candidates.js';
import { heapKthLargest, quickselectKthLargest } from './select.js';
import type { LogitProcessor, SamplingContext } from './types.js';

const EMPTY: ArrayLike<number> = [];

/**
 * HF/CTRL repetition penalty: every distinct id in the last `window` tokens of prompt + generated
 * gets `logit > 0 ? logit / penalty : logit * penalty`, once however often it occurs.
 */
export class RepetitionPenaltyProcessor implements LogitProcessor {
  readonly name = 'repetition-penalty';
  private marks = new Uint32Array(0);
  private stamp = 0;

  /** @param window how many trailing tokens of prompt + generated to look at; Infinity = all. */
  constructor(
    readonly penalty: number,
    readonly window: number = Infinity,
  ) {
    if (!(penalty > 0) || !Number.isFinite(penalty)) throw new RangeError(`repetition penalty must be > 0 (got ${penalty})`);
    if (!(window >= 0)) throw new RangeError(`repetition window must be >= 0 (got ${window})`);
  }

  apply(logits: Float32Array, ctx: SamplingContext): void {
    const vocab = logits.length;
    if (this.marks.length !== vocab) {
      this.marks = new Uint32Array(vocab);
      this.stamp = 0;
    }
    if (this.stamp === 0xffffffff) {
      this.marks.fill(0);
      this.stamp = 0;
    }
    const stamp = ++this.stamp;
    const marks = this.marks;
    const p = this.penalty;
    const prompt = ctx.prompt ?? EMPTY;
    const gen = ctx.generated;
    const pLen = prompt.length;
    const gLen = gen.length;
    const start = Math.max(0, pLen + gLen - this.window);
    for (let s = 0; s < 2; s++) {
      const ids = s === 0 ? prompt : gen;
      const from = s === 0 ? start : Math.max(0, start - pLen);
      for (let j = from, n = ids.length; j < n; j++) {
        const id = ids[j]!;
        if (!(id >= 0 && id < vocab) || marks[id] === stamp) continue; // also skips NaN
        const t = id | 0;
        if (t !== id) continue;
        marks[t] = stamp;
        const v = logits[t]!;
        logits[t] = v > 0 ? v / p : v * p;
      }
    }
  }
}

/** OpenAI's `logit_bias`: a fixed amount added to the logits of some token ids (ids outside the row are skipped). */
export class LogitBiasProcessor implements LogitProcessor {
  readonly name = 'logit-bias';
  private readonly ids: Int32Array;
  private readonly biases: Float32Array;

  constructor(bias: Readonly<Record<number, number>>) {
    const entries = Object.entries(bias);
    this.ids = Int32Array.from(entries, ([id]) => Number(id));
    this.biases = Float32Array.from(entries, ([, b]) => b);
  }

  apply(logits: Float32Array): void {
    const { ids, biases } = this;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      if (id < logits.length) logits[id] += biases[i]!;
    }
  }
}

/**
 * OpenAI's frequency and presence penalties over the tokens generated so far (not the prompt): a token generated
 * c > 0 times loses `c · frequency + presence` from its logit.
 */
export class FrequencyPresencePenaltyProcessor implements LogitProcessor {
  readonly name = 'frequency-presence-penalty';
  private counts = new Uint32Array(0);

  constructor(
    readonly frequency: number,
    readonly presence: number,
  ) {
    if (!Number.isFinite(frequency) || !Number.isFinite(presence)) throw new RangeError(`penalties must be finite (got ${frequency}, ${presence})`);
  }

  apply(logits: Float32Array, ctx: SamplingContext): void {
    const vocab = logits.length;
    if (this.counts.length !== vocab) this.counts = new Uint32Array(vocab);
    const counts = this.counts;
    const gen = ctx.generated;
    for (let j = 0; j < gen.length; j++) {
      const id = gen[j]!;
      if (id >= 0 && id < vocab) counts[id]!++;
    }
    // Each distinct id once: its count is cleared as it is applied, which leaves the scratch zeroed.
    for (let j = 0; j < gen.length; j++) {
      const id = gen[j]!;
      const c = id >= 0 && id < vocab ? counts[id]! : 0;
      if (c === 0) continue;
      logits[id] -= c * this.frequency + this.presence;
      counts[id] = 0;
    }
  }
}

/** Divide every logit by the temperature (> 0). */
export class TemperatureProcessor implements LogitProcessor {
  readonly name = 'temperature';
  private readonly inv: number;
  constructor(readonly temperature: number) {
    if (!(temperature > 0) || !Number.isFinite(temperature)) throw new RangeError(`temperature must be > 0 (got ${temperature})`);
    this.inv = 1 / temperature;
  }
  apply(logits: Float32Array): void {
    const inv = this.inv;
    for (let i = 0, n = logits.length; i < n; i++) logits[i] *= inv;
  }
}

/** Up to this k the threshold is found with a size-k heap in one pass; above it, quickselect on a copy. */
const HEAP_MAX_K = 4096;

/**
 * Keep exactly the k highest logits (ties at the boundary broken toward the lower id); the rest
 * become -Infinity. No sort: the k-th largest value is found by a size-k heap (k <= 4096, one pass
 * with one comparison for most tokens) or by quickselect on a copy (larger k).
 */
export class TopKProcessor implements LogitProcessor, CandidateFilter {
  readonly name = 'top-k';
  private scratch = new Float32Array(0);
  /** Outputs of {@link threshold}. */
  private t = 0;
  private quota = 0;

  constructor(readonly k: number) {
    if (!Number.isSafeInteger(k) || k < 1) throw new RangeError(`top-k must be an integer >= 1 (got ${k})`);
  }

  /**
   * Find the k-th largest eligible value t of `values[0 .. n)` and how many entries equal to t
   * still fit (into this.t / this.quota). False when at most k entries are eligible.
   */
  private threshold(values: Float32Array, n: number): boolean {
    const k = this.k;
    if (k >= n) return false;
    let greater: number;
    if (k <= HEAP_MAX_K) {
      if (this.scratch.length < k) this.scratch = new Float32Array(k);
      const r = heapKthLargest(values, n, k, this.scratch);
      if (r === undefined) return false;
      this.t = r.value;
      greater = r.greater;
    } else {
      if (this.scratch.length < n) this.scratch = new Float32Array(n);
      const a = this.scratch;
      let m = 0;
      for (let i = 0; i < n; i++) {
        const v = values[i]!;
        if (v > -Infinity) a[m++] = v;
      }
      if (m <= k) return false;
      const t = quickselectKthLargest(a, m, k);
      greater = 0;
      for (let i = 0; i < m; i++) if (a[i]! > t) greater++;
      this.t = t;
    }
    this.quota = k - greater;
    return true;
  }

  apply(logits: Float32Array): void {
    const n = logits.length;
    if (!this.threshold(logits, n)) return;
    const t = this.t;
    let quota = this.quota;
    for (let i = 0; i < n; i++) {
      const v = logits[i]!;
      if (v > t) continue;
      if (v === t && quota > 0) {
        quota--;
        continue;
      }
      logits[i] = -Infinity;
    }
  }

  filter(idx: Int32Array, val: Float32Array, n: number): number {
    if (!this.threshold(val, n)) return n;
    return keepAbove(idx, val, n, this.t, this.quota);
  }

  /**
   * The k survivors of the dense row `logits`, gathered into `buf` (ascending ids) without touching
   * `logits`: the fused form of {@link apply} followed by {@link gatherFinite}. Returns the count.
   */
  gather(logits: Float32Array, buf: CandidateBuffer): number {
    const n = logits.length;
    if (!this.threshold(logits, n)) return gatherFinite(logits, buf);
    buf.reserve(this.k);
    const idx = buf.idx;
    const val = buf.val;
    const t = this.t;
    let quota = this.quota;
    let c = 0;
    for (let i = 0; i < n; i++) {
      const v = logits[i]!;
      if (v > t || (v === t && quota-- > 0)) {
        idx[c] = i;
        val[c++] = v;
      }
    }
    return c;
  }
}

/** Histogram resolution for top-p: buckets of 1/32 nat below the max logit, 1024 of them (32 nats). */
const BUCKETS_PER_NAT = 32;
const N_BUCKETS = 1024;

/**
 * Nucleus (top-p): keep the smallest set of most likely tokens whose probability mass is >= p
 * (always >= 1 token; ties at the boundary broken toward the lower id).
 *
 * No full sort: one pass builds a histogram of softmax mass by distance below the max logit,
 * locates the single bucket where the cumulative mass crosses p, and only that bucket's tokens are
 * sorted. Everything in closer buckets is kept, everything farther is dropped. After top-k only the
 * k survivors are ever looked at.
 */
export class TopPProcessor implements LogitProcessor, CandidateFilter {
  readonly name = 'top-p';
  private readonly mass = new Float64Array(N_BUCKETS);
  private readonly count = new Int32Array(N_BUCKETS);
  private pos = new Int32Array(0);
  private dense: CandidateBuffer | undefined;

  constructor(readonly p: number) {
    if (!(p > 0 && p <= 1)) throw new RangeError(`top-p must be in (0, 1] (got ${p})`);
  }

  apply(logits: Float32Array): void {
    if (this.p >= 1) return;
    const buf = (this.dense ??= new CandidateBuffer());
    const n = gatherFinite(logits, buf);
    const kept = this.filter(buf.idx, buf.val, n);
    if (kept < n) maskToCandidates(logits, buf.idx, kept);
  }

  filter(idx: Int32Array, val: Float32Array, n: number): number {
    if (n <= 1 || this.p >= 1) return n;
    let m = -Infinity;
    for (let j = 0; j < n; j++) {
      const v = val[j]!;
      if (v > m) m = v;
    }
    if (m === Infinity) {
      // all mass sits on the +Infinity tokens
      let w = 0;
      for (let j = 0; j < n; j++) {
        if (val[j] === Infinity) {
          idx[w] = idx[j]!;
          val[w++] = Infinity;
        }
      }
      return w;
    }
    // pass 1: mass histogram by distance below the max
    const mass = this.mass;
    const count = this.count;
    mass.fill(0);
    count.fill(0);
    for (let j = 0; j < n; j++) {
      const d = m - val[j]!;
      const b = d * BUCKETS_PER_NAT;
      const bi = b < N_BUCKETS - 1 ? b | 0 : N_BUCKETS - 1;
      mass[bi] += expNeg(-d);
      count[bi]++;
    }
    let total = 0;
    for (let b = 0; b < N_BUCKETS; b++) total += mass[b]!;
    const target = this.p * total;
    let before = 0; // mass of the buckets closer to the max than the crossing bucket
    let star = -1;
    for (let b = 0; b < N_BUCKETS; b++) {
      if (count[b] === 0) continue;
      const mb = mass[b]!;
      if (before + mb >= target) {
        star = b;
        break;
      }
      before += mb;
    }
    if (star < 0) return n; // rounding kept the target out of reach: keep everything
    // pass 2: gather the crossing bucket and sort it, most likely first (ties: lower id first)
    const c = count[star]!;
    if (this.pos.length < c) this.pos = new Int32Array(Math.max(c, this.pos.length * 2));
    let g = 0;
    for (let j = 0; j < n && g < c; j++) {
      const b = (m - val[j]!) * BUCKETS_PER_NAT;
      const bi = b < N_BUCKETS - 1 ? b | 0 : N_BUCKETS - 1;
      if (bi === star) this.pos[g++] = j;
    }
    const cand = this.pos.subarray(0, g);
    if (g > 1) cand.sort((a, b) => val[b]! - val[a]! || a - b);
    let acc = before;
    let last = g - 1;
    for (let j = 0; j < g; j++) {
      acc += expNeg(-(m - val[cand[j]!]!));
      if (acc >= target) {
        last = j;
        break;
      }
    }
    const t = val[cand[last]!]!;
    let quota = 0;
    for (let j = last; j >= 0 && val[cand[j]!] === t; j--) quota++;
    return keepAbove(idx, val, n, t, quota);
  }
}

/** Min-p: drop tokens whose probability is below minP times the top token's probability. */
export class MinPProcessor implements LogitProcessor, CandidateFilter {
  readonly name = 'min-p';
  private readonly logMinP: number;
  constructor(readonly minP: number) {
    if (!(minP >= 0 && minP < 1)) throw new RangeError(`min-p must be in [0, 1) (got ${minP})`);
    this.logMinP = Math.log(minP);
  }

  // p_i >= minP * p_max  <=>  logit_i >= max + ln(minP)

  apply(logits: Float32Array): void {
    if (this.minP <= 0) return;
    const n = logits.length;
    let m = -Infinity;
    for (let i = 0; i < n; i++) {
      const v = logits[i]!;
      if (v > m) m = v;
    }
    if (m === -Infinity) return;
    const cutoff = m + this.logMinP;
    for (let i = 0; i < n; i++) if (!(logits[i]! >= cutoff)) logits[i] = -Infinity;
  }

  filter(idx: Int32Array, val: Float32Array, n: number): number {
    if (n <= 1 || this.minP <= 0) return n;
    let m = -Infinity;
    for (let j = 0; j < n; j++) {
      const v = val[j]!;
      if (v > m) m = v;
    }
    const cutoff = m + this.logMinP;
    let w = 0;
    for (let j = 0; j < n; j++) {
      const v = val[j]!;
      if (v >= cutoff) {
        idx[w] = idx[j]!;
        val[w++] = v;
      }
    }
    return w;
  }
}

/**
 * Compacts the candidate list in place to entries above `t`, plus the first `quota` entries equal to it
 * (ties broken toward lower positions). Returns the new count.
 */
function keepAbove(idx: Int32Array, val: Float32Array, n: number, t: number, quota: number): number {
  let w = 0;
  for (let j = 0; j < n; j++) {
    const v = val[j]!;
    if (v > t || (v === t && quota-- > 0)) {
      idx[w] = idx[j]!;
      val[w++] = v;
    }
  }
  return w;
}
