/**
 * Token bitmasks, the form grammar engines (XGrammar, llguidance) give the tokens allowed next: bit i of word
 * i >> 5 set = token i allowed. Ids past the bitmask's last word are not restricted.
 *
 * Masking a row means writing −∞ over every disallowed logit: on a 151,936-token vocabulary in a structural state
 * (a few allowed tokens) that is 600 KB written on the critical path. A greedy pick and a candidate list need
 * only the allowed tokens, so they read them through the bitmask instead, skipping its empty words.
 */
import type { CandidateBuffer } from './candidates.js';
import { maxIndexIn } from './select.js';

/**
 * Sets −∞ on every logit whose bit is 0. Words with every bit set (the common case in free text) are skipped;
 * runs of words with none (the common case between JSON tokens) are filled at once (copying from a −∞ buffer
 * was faster with warm caches, slower once a model step has evicted it); in the other words only the zero
 * bits are visited.
 */
export function applyBitmask(logits: Float32Array, bitmask: Int32Array): void {
  const n = logits.length;
  const words = Math.min(bitmask.length, (n + 31) >>> 5);
  let w = 0;
  while (w < words) {
    const word = bitmask[w]!;
    if (word === -1) {
      w++;
      continue;
    }
    if (word === 0) {
      let end = w + 1;
      while (end < words && bitmask[end] === 0) end++;
      logits.fill(-Infinity, w << 5, Math.min(end << 5, n));
      w = end;
      continue;
    }
    const base = w << 5;
    for (let rejected = ~word; rejected !== 0; rejected &= rejected - 1) {
      const i = base + 31 - Math.clz32(rejected & -rejected);
      if (i < n) logits[i] = -Infinity;
    }
    w++;
  }
}

/** Whether a word allows all but at most 4 of its tokens (clearing the lowest 4 zero bits leaves none). */
function dense(word: number): boolean {
  let zeros = ~word;
  zeros &= zeros - 1;
  zeros &= zeros - 1;
  zeros &= zeros - 1;
  zeros &= zeros - 1;
  return zeros === 0;
}

/**
 * The argmax of `logits` among the allowed tokens, without writing to them: exactly `argmax` after
 * {@link applyBitmask} (first index on ties, NaN never chosen), or -1 when no allowed token is above −∞.
 * Empty words are skipped and sparse ones visited bit by bit. A run of dense words (free text: all or nearly
 * all allowed) is scanned as one range at argmax's speed; if the range's best is a disallowed token, the range
 * is scanned again checking the bits (its best allowed token is then elsewhere).
 */
export function argmaxAllowed(logits: Float32Array, bitmask: Int32Array): number {
  const n = logits.length;
  const words = Math.min(bitmask.length, (n + 31) >>> 5);
  let best = -Infinity;
  let idx = -1;
  // Ids are visited in ascending order and only a strictly larger value wins, so ties keep the first.
  const take = (i: number) => {
    if (i >= 0 && logits[i]! > best) {
      best = logits[i]!;
      idx = i;
    }
  };
  const bits = (w: number, word: number) => {
    const base = w << 5;
    for (let rest = word; rest !== 0; rest &= rest - 1) {
      const i = base + 31 - Math.clz32(rest & -rest);
      if (i >= n) return; // bits are visited lowest first: the rest are past the row too
      const v = logits[i]!;
      if (v > best) {
        best = v;
        idx = i;
      }
    }
  };
  let w = 0;
  while (w < words) {
    const word = bitmask[w]!;
    if (word === 0) {
      w++;
      continue;
    }
    if (!dense(word)) {
      bits(w, word);
      w++;
      continue;
    }
    let end = w + 1;
    while (end < words && dense(bitmask[end]!)) end++;
    const i = maxIndexIn(logits, w << 5, Math.min(end << 5, n));
    // The first best of the whole range: if allowed, it is the first best among the allowed ones too.
    if (i < 0 || ((bitmask[i >> 5]! >>> (i & 31)) & 1) === 1) take(i);
    else {
      // Scanned again, checking the bit only of a value that would win (rarely).
      for (let j = w << 5, to = Math.min(end << 5, n); j < to; j++) {
        const v = logits[j]!;
        if (v > best && ((bitmask[j >> 5]! >>> (j & 31)) & 1) === 1) {
          best = v;
          idx = j;
        }
      }
    }
    w = end;
  }
  if (words << 5 < n) take(maxIndexIn(logits, words << 5, n));
  return idx;
}

/**
 * Copies the allowed entries of `logits` that are not −∞/NaN into `buf` (ascending ids); returns the count:
 * exactly `gatherFinite` after {@link applyBitmask}, without writing to the logits.
 */
export function gatherAllowed(logits: Float32Array, bitmask: Int32Array, buf: CandidateBuffer): number {
  const n = logits.length;
  const words = Math.min(bitmask.length, (n + 31) >>> 5);
  buf.reserve(n);
  const idx = buf.idx;
  const val = buf.val;
  let c = 0;
  let w = 0;
  while (w < words) {
    const word = bitmask[w]!;
    if (word === 0) {
      w++;
      continue;
    }
    if (word === -1) {
      // A run of full words: gatherFinite's loop over its range.
      let end = w + 1;
      while (end < words && bitmask[end] === -1) end++;
      for (let i = w << 5, to = Math.min(end << 5, n); i < to; i++) {
        const v = logits[i]!;
        if (v > -Infinity) {
          idx[c] = i;
          val[c++] = v;
        }
      }
      w = end;
      continue;
    }
    const base = w << 5;
    for (let bits = word; bits !== 0; bits &= bits - 1) {
      const i = base + 31 - Math.clz32(bits & -bits);
      if (i >= n) break;
      const v = logits[i]!;
      if (v > -Infinity) {
        idx[c] = i;
        val[c++] = v;
      }
    }
    w++;
  }
  for (let i = words << 5; i < n; i++) {
    const v = logits[i]!;
    if (v > -Infinity) {
      idx[c] = i;
      val[c++] = v;
    }
  }
  return c;
}

/**
 * About what share of the tokens a bitmask allows, from every `stride`-th word (the whole mask need not be read to
 * tell a JSON string, where nearly everything is allowed, from a structural state, where a handful is).
 */
export function allowedShare(bitmask: Int32Array, stride = bitmask.length > 1024 ? 8 : 1): number {
  let bits = 0;
  let words = 0;
  for (let w = 0; w < bitmask.length; w += stride, words++) {
    let v = bitmask[w]!;
    v = v - ((v >>> 1) & 0x55555555);
    v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
    bits += (((v + (v >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
  }
  return words === 0 ? 0 : bits / (words * 32);
}
