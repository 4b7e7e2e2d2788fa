/**
 * Stop strings over streamed text: finds a stop string as soon as it is complete, and holds back the tail
 * that might still become one so that no part of a stop string is ever streamed.
 */
export class StopStringMatcher {
  constructor(private readonly stops: readonly string[]) {}

  /**
   * Looks at `text` (all text so far) given that `checkedUpTo` characters were already searched. Returns where the
   * first stop string that ends past them starts and which one it is (the first given, of those starting there), or
   * undefined. One wholly inside the searched text is not found again: text written before `minTokens` keeps its.
   */
  find(text: string, checkedUpTo: number): { at: number; stop: string } | undefined {
    let best: { at: number; stop: string } | undefined;
    for (const stop of this.stops) {
      const at = text.indexOf(stop, Math.max(0, checkedUpTo - stop.length + 1));
      if (at !== -1 && (best === undefined || at < best.at)) best = { at, stop };
    }
    return best;
  }

  /** Length of the longest suffix of `text` that is a proper prefix of a stop string. */
  holdback(text: string): number {
    let hold = 0;
    for (const s of this.stops) {
      for (let n = Math.min(s.length - 1, text.length); n > hold; n--) {
        if (text.endsWith(s.slice(0, n))) {
          hold = n;
          break;
        }
      }
    }
    return hold;
  }
}
