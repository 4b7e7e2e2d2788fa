/**
 * A cap on a reply's thought (vLLM's `thinking_token_budget`, Qwen3's "thinking budget"): once the thought that
 * opens a reply (or that the prompt opened) has run its budget of tokens without closing, the row writes the
 * closing tag, token by token, instead of sampling, and the model goes on to answer. The thought is read from the
 * row's text as the reply splitter reads it, so tags that are several tokens, or special tokens kept in the text,
 * work alike. A closing tag the model has begun when the budget runs out is left to it to finish: writing the whole
 * tag after its start would write it twice (`</</think>`), with a fragment of it in the thought.
 */
import { partialTagAt } from '../chat/partial-tag.js';

/** What a row's budget needs: the tags, the budget, and the ids the closing tag is written with. */
export interface ThoughtBudgetSpec {
  /** Tokens the thought may take after its opening tag, closing tag excluded; 0 closes it at once. */
  tokens: number;
  open: string;
  close: string;
  /** The prompt opened the thought: the reply starts inside it. */
  opened: boolean;
  /** The closing tag as the row writes it (its added token where the vocabulary has one). */
  closeIds: readonly number[];
}

/** One row's budget: watches its text, and names the tokens it must write once the budget is spent. */
export class ThoughtBudget {
  private state: 'before' | 'inside' | 'closing' | 'done';
  /** Tokens written inside the thought so far. */
  private spent = 0;
  /** Where in the row's text the thought's body starts, and where the search for its closing tag resumes. */
  private bodyFrom = 0;
  private searchFrom = 0;
  /** The next closing id to write, while closing. */
  private at = 0;
  /** Whether the thought's text ends in a start of the closing tag (one the next tokens may finish). */
  private partial = false;

  constructor(private readonly spec: ThoughtBudgetSpec) {
    this.state = spec.opened ? 'inside' : 'before';
  }

  /** The token the row must write next, or undefined when it samples as usual. */
  forced(): number | undefined {
    if (this.state === 'inside' && this.spent >= this.spec.tokens && !this.finishing()) {
      this.state = 'closing';
      this.at = 0;
    }
    return this.state === 'closing' ? this.spec.closeIds[this.at] : undefined;
  }

  /**
   * Whether the model, past its budget, is writing its own closing tag: it samples on while its text ends in a
   * start of the tag, for at most as many tokens past the budget as the tag has characters (a model that keeps
   * starting the tag anew is then closed as any other). The tokens of the tag were counted as thought tokens, so a
   * thought closed this way held no more than its budget; one that breaks off the tag is closed at once.
   */
  private finishing(): boolean {
    return this.partial && this.spent - this.spec.tokens < this.spec.close.length;
  }

  /** The forced token could not be written (the row's grammar refused it): the thought goes on unbounded. */
  release(): void {
    this.state = 'done';
  }

  /** Called after each token the row writes, with the row's whole text so far. */
  observe(text: string): void {
    const { open, close } = this.spec;
    switch (this.state) {
      case 'before': {
        // Only a thought that opens the reply is one (as the splitter reads it); blanks before its tag are allowed.
        const lead = text.trimStart();
        if (lead.startsWith(open)) {
          this.state = 'inside';
          this.bodyFrom = this.searchFrom = text.length - lead.length + open.length;
        } else if (!open.startsWith(lead)) this.state = 'done';
        return;
      }
      case 'inside': {
        this.spent++;
        if (text.indexOf(close, this.searchFrom) !== -1) this.state = 'done';
        else {
          this.searchFrom = Math.max(this.bodyFrom, text.length - close.length + 1);
          this.partial = partialTagAt(text.slice(this.searchFrom), close) > 0;
        }
        return;
      }
      case 'closing':
        if (++this.at >= this.spec.closeIds.length) this.state = 'done';
        return;
      case 'done':
        return;
    }
  }
}
