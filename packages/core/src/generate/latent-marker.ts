/**
 * Finds LiteReason's plain-text latent markers, `<implicit_thought>N</implicit_thought>`, in streamed text, even
 * when a marker is split across tokens. Text that might still become a marker is held back; a marker that turns
 * out malformed (no digits, more than nine, a stray character, no close tag before the end) is released as
 * ordinary text.
 */

/** How a marker looks and how many latent steps it may ask for. */
export interface MarkerSpec {
  open: string;
  close: string;
  /** N is clamped to [1, maxSteps]. */
  maxSteps: number;
  /** Discrete tokens one latent step stood for in training, when the projector's manifest says. */
  tokensPerStep?: number;
}

/** What one piece of text produced: visible text and, where a marker completed, its clamped step count. */
export interface ScanResult {
  text: string;
  /** Step counts of the markers completed in this piece, in order. */
  markers: number[];
}

/**
 * Longest digit run read for N (clamped to maxSteps after): only a bound on the text held back, so that endless
 * digits are released as text; nine digits stay exact as a number.
 */
const MAX_DIGITS = 9;

type State = { kind: 'text' } | { kind: 'open'; matched: number } | { kind: 'digits'; digits: string } | { kind: 'close'; digits: string; matched: number };

/** A character-level scanner over generated text (never over the prompt). */
export class MarkerScanner {
  private state: State = { kind: 'text' };
  private held = '';

  constructor(
    private readonly spec: MarkerSpec,
    /** Shown once per latent step in place of a marker; empty shows nothing. */
    private readonly placeholder = '',
  ) {}

  /** Latent steps the context still has room for (a marker asking for more gets these, and placeholders for these). */
  private room = Infinity;

  /** Consumes a piece of generated text; `room`: the latent steps the context has room for after it. */
  push(piece: string, room = Infinity): ScanResult {
    this.room = room;
    const out: ScanResult = { text: '', markers: [] };
    for (const ch of piece) this.consume(ch, out);
    return out;
  }

  /** Ends the text: whatever is held (an unfinished marker) is plain text after all. */
  flush(): string {
    const rest = this.held;
    this.held = '';
    this.state = { kind: 'text' };
    return rest;
  }

  private consume(ch: string, out: ScanResult): void {
    const { open, close } = this.spec;
    const s = this.state;
    if (s.kind === 'text') {
      if (ch === open[0]) this.hold(ch, open.length === 1 ? { kind: 'digits', digits: '' } : { kind: 'open', matched: 1 });
      else out.text += ch;
      return;
    }
    if (s.kind === 'open' && ch === open[s.matched]) {
      const matched = s.matched + 1;
      this.hold(ch, matched === open.length ? { kind: 'digits', digits: '' } : { kind: 'open', matched });
      return;
    }
    if (s.kind === 'digits' && ch >= '0' && ch <= '9' && s.digits.length < MAX_DIGITS) {
      this.hold(ch, { kind: 'digits', digits: s.digits + ch });
      return;
    }
    if (s.kind === 'digits' && s.digits.length > 0 && ch === close[0]) {
      this.hold(ch, { kind: 'close', digits: s.digits, matched: 1 });
      if (close.length === 1) this.complete(s.digits, out);
      return;
    }
    if (s.kind === 'close' && ch === close[s.matched]) {
      const matched = s.matched + 1;
      this.hold(ch, { kind: 'close', digits: s.digits, matched });
      if (matched === close.length) this.complete(s.digits, out);
      return;
    }
    // Not a marker after all. Only the first held character is surely text: a later one (a `<` taken for the close
    // tag's, say) may open a marker, so the rest of the held text is read again, then this character.
    const held = this.flush();
    out.text += held.slice(0, 1);
    for (const c of held.slice(1) + ch) this.consume(c, out);
  }

  private hold(ch: string, next: State): void {
    this.held += ch;
    this.state = next;
  }

  private complete(digits: string, out: ScanResult): void {
    const steps = Math.max(0, Math.min(Math.max(Number(digits), 1), this.spec.maxSteps, this.room));
    this.room -= steps;
    out.markers.push(steps);
    out.text += this.placeholder.repeat(steps);
    this.held = '';
    this.state = { kind: 'text' };
  }
}
