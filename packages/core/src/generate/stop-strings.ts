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
   * Looks at `text` (all text so far) given that `checkedUpTo` characters were already searched.
   * Returns the index where a stop string starts, or -1.
   */
  find(text: string, checkedUpTo: number): number {
    let best = -1;
    const from = Math.max(0, checkedUpTo - this.longest + 1);
    for (const s of this.stops) {
      const i = text.indexOf(s, from);
      if (i !== -1 && (best === -1 || i < best)) best = i;
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
