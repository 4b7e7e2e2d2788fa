/**
 * Stop strings over streamed text: finds a stop string as soon as it is complete, and holds back the tail
 * that might still become one so that no part of a stop string is ever streamed.
 */
export class StopStringMatcher {
  private readonly longest: number;

  constructor(private readonly stops: readonly string[]) {
    this.longest = Math.max(0, ...stops.map((s) => s.length));
  }

  /**
   * Looks at `text` (all text so far) given that `checkedUpTo` characters were already searched. Returns where the
   * first stop string in it starts and which one it is (the first given, of those starting there), or undefined.
   */
  find(text: string, checkedUpTo: number): { at: number; stop: string } | undefined {
    let best: { at: number; stop: string } | undefined;
    const from = Math.max(0, checkedUpTo - this.longest + 1);
    for (const stop of this.stops) {
      const at = text.indexOf(stop, from);
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
