/**
 * The decode loop: prefill, then sample → stream → feed one token per row until every row stops
 * (end-of-sequence or stop token id, stop string, token limit, or abort checked between steps).
 */
import { NoCandidatesError, Sampler, checkLogitBiasIds, samplingForRow, type SamplingContext } from '../sampling/index.js';
import { LogprobPass } from '../sampling/logprobs.js';
import { StreamDecoder, type DecodeFn } from '../tokenizer/stream-decoder.js';
import { StopStringMatcher } from './stop-strings.js';
import { MarkerScanner, type MarkerSpec } from './latent-marker.js';
import type { FinishReason, GenerateOptions, RowResult, TokenEvent, TokenLogprobs, Usage } from './types.js';
import { DEFAULT_MAX_TOKENS, checkStopTokenIds, validateGenerateOptions } from './options.js';
import type { Constraint } from '../constrain/types.js';
import { pickAccepted } from '../constrain/timing.js';
import { ThoughtBudget, type ThoughtBudgetSpec } from './thought-budget.js';

/** Anything that turns a token stream into next-token logits: one model, or a composition of several. */
export interface LogitSource {
  /** Runs the prompts; returns `[rows × vocab]` last-position logits. */
  prefill(prompts: readonly (readonly number[])[]): Promise<Float32Array>;
  /** Feeds one token per row; returns `[rows × vocab]` logits. */
  step(tokens: readonly number[]): Promise<Float32Array>;
  readonly vocabSize: number;
  /** Prompt tokens the last prefill took from a prefix cache instead of running them (the backbone's). */
  readonly reusedPromptTokens?: number;
}

/** What the loop needs besides the model. */
export interface DecodeLoopInput {
  prompts: number[][];
  options: GenerateOptions;
  /** End-of-sequence ids (ignored with `options.ignoreEos`). */
  eosTokenIds: readonly number[];
  /** Detokenizer; without one, texts stay empty and stop strings cannot match. */
  decode?: DecodeFn;
  /** Ids at or above this are never sampled (a tokenizer smaller than the logits). */
  vocabLimit?: number;
  /**
   * Positions the model can hold (prompt, fed tokens and latent steps), when known: rows then stop with
   * `finishReason: 'length'` where the next token would not fit, keeping their text, and a longer prompt is
   * refused before anything runs. Unknown: the model's own limit, if any, fails the run.
   */
  contextLength?: number;
  /**
   * Per row, the grammar its reply must follow (none: free text). Applied to the composed logits before
   * sampling. A constrained row opens no latent span at a marker: the grammar decides its tokens, so marker
   * text written inside it is text.
   */
  constraints?: readonly (Constraint | undefined)[];
  /** A cap on every row's thought (needs `decode`: the thought is read from the text). */
  thoughtBudget?: ThoughtBudgetSpec;
  shouldAbort: () => boolean;
  onToken: (event: TokenEvent) => void;
  /** LiteReason latent decoding, when a projector is loaded. */
  latent?: LatentDriver;
}

/** When latent steps happen (LiteReason): at markers the model writes, never, or K steps after the prompt (Coconut). */
export type LatentPolicy = 'marker' | 'never' | { fixed: number };

/** What the loop needs to run latent steps. */
export interface LatentDriver {
  policy: LatentPolicy;
  marker: MarkerSpec;
  /** Shown in the stream once per latent step (default: nothing). */
  placeholder?: string;
  /** Runs `steps` latent steps on every row from the current state; returns the logits after the last one. */
  run(steps: number): Promise<Float32Array>;
}

/** Raised for a latent policy that cannot apply. */
export class LatentPolicyError extends Error {
  override name = 'LatentPolicyError';
}

/** Parses `marker`, `never` or `fixed:K` (K ≥ 1). */
export function parseLatentPolicy(text: string): LatentPolicy {
  if (text === 'marker' || text === 'never') return text;
  const m = /^fixed:(\d+)$/.exec(text);
  if (m && Number(m[1]) >= 1) return { fixed: Number(m[1]) };
  throw new LatentPolicyError(`latent policy must be marker, never or fixed:K with K ≥ 1; got "${text}"`);
}

/** The latent steps a policy runs after the prompt before the first token (`fixed:K`: K; others none). */
export function fixedLatentSteps(policy: LatentPolicy | undefined): number {
  return typeof policy === 'object' ? policy.fixed : 0;
}

/**
 * The rows of a call: each with its sampler (seeded `seed + k` where k rows before it in the call have its prompt, see
 * {@link samplingForRow}), stop strings, what else ends it, constraint, thought budget, and a marker scanner where
 * latent steps open at markers (`markers`; a constrained row opens none: its grammar decides its tokens, so marker
 * text written inside it is text).
 */
export function newRows(
  input: Pick<DecodeLoopInput, 'prompts' | 'options' | 'eosTokenIds' | 'decode' | 'constraints' | 'thoughtBudget'>,
  stops: StopStringMatcher | undefined,
  markers: Pick<LatentDriver, 'marker' | 'placeholder'> | undefined,
): RowState[] {
  const { options, thoughtBudget } = input;
  const ends: RowEnds = {
    eos: new Set(options.ignoreEos ? [] : (options.eosTokenIds ?? input.eosTokenIds)),
    stopIds: new Set(options.stopTokenIds),
    minTokens: options.minTokens ?? 0,
    includeStop: options.includeStopString === true,
  };
  const repeats = new Map<string, number>();
  return input.prompts.map((p, r) => {
    const key = p.join();
    const repeat = repeats.get(key) ?? 0;
    repeats.set(key, repeat + 1);
    const constraint = input.constraints?.[r];
    const scanner = markers && !constraint ? new MarkerScanner(markers.marker, markers.placeholder) : undefined;
    const budget = thoughtBudget ? new ThoughtBudget(thoughtBudget) : undefined;
    return new RowState(p, new Sampler(samplingForRow(options, repeat)), input.decode, stops, ends, scanner, constraint, options.logprobs, budget);
  });
}

/** What ends a row besides its token limit and the context: a call's options, and the model's end-of-sequence ids. */
export interface RowEnds {
  /** End-of-sequence ids (none with `ignoreEos`): the row ends with 'eos'. */
  eos: ReadonlySet<number>;
  /** `stopTokenIds`: the row ends with 'stop'. */
  stopIds: ReadonlySet<number>;
  /** Tokens the row generates before an id of `eos` or `stopIds` may be sampled, or a stop string end it. */
  minTokens: number;
  /** The stop string that ends the row stays in its text. */
  includeStop: boolean;
}

/** Rows, usage and the loop's own timing. */
export interface DecodeLoopOutput {
  rows: RowResult[];
  usage: Usage;
  prefillMs: number;
  /** Time spent in decode steps after the first token, and how many there were. */
  decodeMs: number;
  decodeSteps: number;
}

/** One row of a generation: its ids, streamed text, stop rules, sampler and constraint. */
export class RowState {
  readonly ids: number[] = [];
  text = '';
  streamed = 0;
  finish: FinishReason | undefined;
  /** The stop string that ended the row. */
  private stopString: string | undefined;
  /** Latent steps run for this row, and those asked for by a marker just written. */
  latentSteps = 0;
  pendingLatent = 0;
  /** Per generated id, its log-probability and alternatives, when asked for. */
  readonly logprobs: TokenLogprobs[] | undefined;
  private readonly decoder: StreamDecoder | undefined;

  constructor(
    readonly prompt: readonly number[],
    readonly sampler: Sampler,
    decode: DecodeFn | undefined,
    private readonly stops: StopStringMatcher | undefined,
    private readonly ends: RowEnds,
    private readonly markers: MarkerScanner | undefined,
    readonly constraint?: Constraint,
    /** Alternatives per token to report (unset: no log-probabilities). */
    private readonly topLogprobs?: number,
    private readonly budget?: ThoughtBudget,
  ) {
    this.decoder = decode ? new StreamDecoder(decode, prompt) : undefined;
    this.logprobs = topLogprobs === undefined ? undefined : [];
  }

  /** Measures the row's logits before a mask or the sampler writes over them (only when log-probabilities were asked for). */
  measure(logits: Float32Array): LogprobPass | undefined {
    return this.topLogprobs === undefined ? undefined : new LogprobPass(logits, this.topLogprobs);
  }

  /** Records the log-probability of the id sampled from a measured row (call before {@link accept}, which places it in the text). */
  record(pass: LogprobPass | undefined, id: number): TokenLogprobs | undefined {
    if (!pass) return undefined;
    const entry = { id, logprob: pass.logprobOf(id), top: pass.top };
    this.logprobs!.push(entry);
    return entry;
  }

  /**
   * The event of the row's token `id` just accepted (its `text` what {@link accept} and {@link end} released), with the
   * row's end where this token ended it.
   */
  event(row: number, id: number, text: string, logprobs: TokenLogprobs | undefined): TokenEvent {
    const event: TokenEvent = logprobs ? { row, id, text, logprobs } : { row, id, text };
    if (this.finish) {
      event.finishReason = this.finish;
      if (this.stopString !== undefined) event.stopString = this.stopString;
    }
    return event;
  }

  /** The row as a result. */
  result(latent: boolean): RowResult {
    return {
      ids: this.ids,
      text: this.text,
      finishReason: this.finish ?? 'abort',
      ...(this.stopString !== undefined ? { stopString: this.stopString } : {}),
      ...(latent ? { latentSteps: this.latentSteps } : {}),
      ...(this.logprobs ? { logprobs: this.logprobs } : {}),
    };
  }

  /** Text as the reader sees it: markers become latent steps (and placeholders), as many as `room` leaves. */
  private visible(piece: string, room: number): string {
    if (!this.markers) return piece;
    const { text, markers } = this.markers.push(piece, room);
    for (const n of markers) this.pendingLatent += n;
    return text;
  }

  /**
   * The token the row must write next instead of sampling (its thought's closing tag once the thought's budget is
   * spent), already accepted by its grammar; undefined when it samples. A grammar that refuses it lifts the budget.
   */
  forcedToken(): number | undefined {
    const id = this.budget?.forced();
    if (id === undefined || !this.constraint || this.constraint.tryAccept(id)) return id;
    this.budget!.release();
    return undefined;
  }

  /**
   * The row's next token from `logits` (its own, measured already where log-probabilities are asked for; written
   * over): the token it must write, else the sampler's pick, accepted by its grammar where it has one (which has then
   * advanced on it). Before `minTokens`, the ids that would end the row are held back: −∞, as vLLM's min-tokens logits
   * processor sets them, unless the grammar allows nothing else (its value is complete and cannot be made longer: the
   * format's end wins, as a reply cut short of it could not be parsed).
   */
  async pick(logits: Float32Array): Promise<number> {
    const forced = this.forcedToken();
    if (forced !== undefined) return forced;
    const ctx: SamplingContext = { generated: this.ids, prompt: this.prompt };
    const held = this.holdEnds(logits);
    if (!this.constraint) return this.sampler.sample(logits, ctx);
    try {
      return await pickAccepted(this.constraint, this.sampler, logits, ctx);
    } catch (err) {
      if (!(err instanceof NoCandidatesError) || !held) throw err;
      // The held ids get their logits back and are shaped once by the second pick (the first left them at −∞); the
      // other tokens, shaped twice, are all refused by the grammar, so the pick among the allowed is exact.
      for (const [id, logit] of held) logits[id] = logit;
      return pickAccepted(this.constraint, this.sampler, logits, ctx);
    }
  }

  /** Sets −∞ on the ids that would end the row while it has fewer than `minTokens` tokens; returns their logits, if any. */
  private holdEnds(logits: Float32Array): Map<number, number> | undefined {
    const { eos, stopIds, minTokens } = this.ends;
    if (this.ids.length >= minTokens) return undefined;
    const held = new Map<number, number>();
    for (const id of [...eos, ...stopIds]) {
      if (id >= logits.length || held.has(id)) continue;
      held.set(id, logits[id]!);
      logits[id] = -Infinity;
    }
    return held.size > 0 ? held : undefined;
  }

  /**
   * Records a sampled id; returns the text that may be streamed now. `latentRoom`: the latent steps a marker this id
   * completes can run (see {@link latentRoom}: none where it is the row's last), its placeholders shown for those.
   */
  accept(id: number, latentRoom = Infinity): string {
    this.ids.push(id);
    const { eos, stopIds, minTokens, includeStop } = this.ends;
    // Once the grammar has taken its stop token the reply is complete (even when EOS is otherwise ignored).
    const ended = eos.has(id) || this.constraint?.isComplete() === true;
    if (ended || stopIds.has(id)) {
      this.finish = ended ? 'eos' : 'stop';
      if (this.decoder) {
        // (kept with `includeStopString`, as vLLM's include_stop_str_in_output keeps a stop token's text)
        const kept = !ended && includeStop;
        // (the row ends on it: a marker its text completes runs no step)
        if (kept) this.append(this.decoder.push(id), 0);
        // The reply's text is its tokens' decode whatever ends it, as at the token limit: a character left unfinished
        // shows as U+FFFD, and a U+FFFD the model wrote last stays.
        this.text += this.visible(this.decoder.flush(), 0) + (this.markers?.flush() ?? '');
        // An end the text does not keep shows nothing: past the text, it is no token of the reply's.
        if (!kept) this.place(this.text.length);
      }
      return this.release(this.text.length);
    }
    if (!this.decoder) return '';
    const checked = this.text.length;
    this.append(this.decoder.push(id), latentRoom);
    this.budget?.observe(this.text);
    if (!this.stops) return this.release(this.text.length);
    // As vLLM's stop checker, none is looked for until the row has more than `minTokens` tokens: one written before stays text.
    const found = this.ids.length > minTokens ? this.stops.find(this.text, checked) : undefined;
    if (found) {
      const end = found.at + (includeStop ? found.stop.length : 0);
      this.text = this.text.slice(0, end);
      this.finish = 'stop';
      this.stopString = found.stop;
      return this.release(end);
    }
    // A stop string that will stay in the text needs no part of it held back.
    return this.release(this.text.length - (includeStop ? 0 : this.stops.holdback(this.text)));
  }

  /**
   * Ends the row at the token limit (releasing held-back text) or on abort (keeping exactly the text
   * already streamed, so the result matches what the caller saw).
   */
  end(reason: 'length' | 'abort'): string {
    this.finish = reason;
    if (reason === 'abort') {
      this.text = this.text.slice(0, this.streamed);
      return '';
    }
    // (the row ends here: a marker its last text completes runs no step)
    if (this.decoder) this.text += this.visible(this.decoder.flush(), 0) + (this.markers?.flush() ?? '');
    return this.release(this.text.length);
  }

  /**
   * Adds the text the decoder gave for the last id (`piece`: its own text as its entry names it, with the character
   * it completes whole) as the reader sees it, and places the id where the piece starts, before any stop string
   * holds it back. Text a marker held comes out before the piece; a piece the marker scanner swallows or holds (or
   * turns into placeholders) sits where what it shows starts; an id that completes no character yet, where its
   * character will.
   */
  private append(piece: string, room: number): void {
    const shown = this.visible(piece, room);
    this.text += shown;
    this.place(this.text.length - (piece !== '' && shown.endsWith(piece) ? piece.length : shown.length));
  }

  /** Sets where the last id's text starts on its log-probability entry, when log-probabilities were asked for. */
  private place(at: number): void {
    const entry = this.logprobs?.[this.ids.length - 1];
    if (entry) entry.offset = at;
  }

  private release(upTo: number): string {
    const out = this.text.slice(this.streamed, upTo);
    this.streamed = Math.max(this.streamed, upTo);
    return out;
  }
}

/**
 * The latent steps a marker completed by `row`'s next token may run: none where that token is the row's last by its
 * token limit (no step runs after it, so no placeholder is shown for one), else `contextLeft`, the positions the
 * context has left once the token is fed.
 */
export function latentRoom(row: RowState, maxTokens: number, contextLeft: number): number {
  return row.ids.length + 1 >= maxTokens ? 0 : contextLeft;
}

/** Runs one generation over a logit source. */
export async function runDecodeLoop(source: LogitSource, input: DecodeLoopInput): Promise<DecodeLoopOutput> {
  const { options } = input;
  validateGenerateOptions(options);
  const maxTokens = options.maxTokens ?? DEFAULT_MAX_TOKENS;
  const vocab = source.vocabSize;
  const limit = Math.min(input.vocabLimit ?? vocab, vocab);
  const stops = options.stop?.length && input.decode ? new StopStringMatcher(options.stop) : undefined;
  checkPrompts(input.prompts, vocab);
  checkLogitBiasIds(options.logitBias, limit);
  checkStopTokenIds(options.stopTokenIds, limit);
  const latent = input.latent;
  const context = input.contextLength ?? Infinity;
  // A batch is left-padded to its longest prompt: every row takes that many positions.
  let used = Math.max(...input.prompts.map((p) => p.length));
  const fixedSteps = fixedLatentSteps(latent?.policy);
  if (used + fixedSteps > context) throw pastContext(input.prompts.findIndex((p) => p.length === used), used, fixedSteps, context);
  const markerPolicy = latent?.policy === 'marker' && input.decode !== undefined;
  // The driver's steps run on every row at once, and rows write their markers at different steps: only a lone row
  // can think here (the continuous batch thinks row by row, and takes every other call of several prompts).
  if (markerPolicy && input.prompts.length > 1) {
    throw new LatentPolicyError('a traced call under the marker policy thinks for one prompt at a time: trace one prompt a call, or use fixed:K');
  }
  const rows = newRows(input, stops, markerPolicy ? latent : undefined);
  const usage: Usage = { promptTokens: input.prompts.reduce((n, p) => n + p.length, 0), completionTokens: 0 };
  const runLatent = async (steps: number, who: readonly RowState[]) => {
    for (const row of who) row.latentSteps += steps;
    return latent!.run(steps);
  };

  if (input.shouldAbort()) {
    // Aborted while it waited its turn: nothing is run.
    for (const row of rows) row.end('abort');
    return { rows: rows.map((r) => r.result(false)), usage, prefillMs: 0, decodeMs: 0, decodeSteps: 0 };
  }
  const t0 = performance.now();
  const prefilling = source.prefill(input.prompts);
  // The first bitmasks are computed while the prompts are prefilled.
  for (const row of rows) row.constraint?.prepare?.();
  let logits = await prefilling;
  if (source.reusedPromptTokens) usage.cachedPromptTokens = source.reusedPromptTokens;
  // Coconut-style: K continuous thoughts right after the prompt, before the first token.
  if (fixedSteps) {
    logits = await runLatent(fixedSteps, rows);
    used += fixedSteps;
  }
  const prefillMs = performance.now() - t0;
  let decodeSteps = 0;
  const tDecode = performance.now();

  while (rows.some((r) => !r.finish)) {
    if (input.shouldAbort()) {
      for (const row of rows) if (!row.finish) row.end('abort');
      break;
    }
    // A token is sampled from logits already computed; only feeding it needs a free position.
    const lastFit = used >= context;
    // Log-probabilities are read from the logits as the model gave them, before the grammar stage.
    const passes = options.logprobs === undefined ? undefined : rows.map((row, r) => (row.finish ? undefined : row.measure(logits.subarray(r * vocab, r * vocab + limit))));
    // Every row's token (a constrained row's accepted by its grammar, which has advanced on it), then their events.
    const picked: number[] = [];
    for (let r = 0; r < rows.length; r++) if (!rows[r]!.finish) picked[r] = await rows[r]!.pick(logits.subarray(r * vocab, r * vocab + limit));
    const next = rows.map((row, r) => {
      if (row.finish) return row.ids[row.ids.length - 1] ?? row.prompt[row.prompt.length - 1]!;
      const id = picked[r]!;
      const logprobs = row.record(passes?.[r], id);
      let text = row.accept(id, latentRoom(row, maxTokens, context - used - 1));
      if (!row.finish && (row.ids.length >= maxTokens || lastFit)) text += row.end('length');
      usage.completionTokens++;
      const event = row.event(r, id, text, logprobs);
      if (usage.completionTokens === 1 && usage.cachedPromptTokens) event.cachedPromptTokens = usage.cachedPromptTokens;
      input.onToken(event);
      return id;
    });
    if (rows.every((r) => r.finish)) break;
    // The model runs off this thread: the grammar's next masks are computed meanwhile.
    const stepping = source.step(next);
    for (const row of rows) if (!row.finish) row.constraint?.prepare?.();
    logits = await stepping;
    used++;
    decodeSteps++;
    // A marker was just written (and fed): think N latent steps from its last token, then sample again.
    const thinking = markerPolicy ? rows[0]! : undefined;
    if (thinking?.pendingLatent) {
      // Thinking is cut short where the context ends; the token sampled next is then the row's last.
      const steps = Math.min(thinking.pendingLatent, context - used);
      thinking.pendingLatent = 0;
      if (steps > 0) {
        logits = await runLatent(steps, [thinking]);
        used += steps;
      }
    }
  }
  if (latent) {
    usage.latentSteps = rows.reduce((n, r) => n + r.latentSteps, 0);
    if (latent.marker.tokensPerStep) usage.reasoningTokensSaved = Math.round(usage.latentSteps * latent.marker.tokensPerStep);
  }
  return {
    rows: rows.map((r) => r.result(latent !== undefined)),
    usage,
    prefillMs,
    decodeMs: performance.now() - tDecode,
    decodeSteps,
  };
}

/**
 * The other way out of a prompt past the context, where the limit was lowered at load (`contextLength`,
 * `--context-length`, as llama.cpp's `-c`) below what the model allows.
 */
const TO_LENGTHEN = ', or load the model with a larger contextLength (--context-length) where it allows more';

/** Raised for prompts the model cannot take. */
export class PromptError extends Error {
  override name = 'PromptError';
}

/**
 * The refusal of prompt `row` of `length` tokens, followed by `fixedSteps` latent steps, past a context of `context`
 * positions: what to shorten is the prompt, or the steps where they fill the context by themselves.
 */
export function pastContext(row: number, length: number, fixedSteps: number, context: number): PromptError {
  const steps = fixedSteps ? ` and ${fixedSteps} latent steps follow it` : '';
  const fix = fixedSteps >= context ? `ask for fewer latent steps (fixed:K with K below ${context})` : `shorten the prompt${fixedSteps ? ' or ask for fewer latent steps' : ''}`;
  return new PromptError(`prompt ${row} has ${length} tokens${steps}, more than the context length of ${context} positions; ${fix}${TO_LENGTHEN}`);
}

/** Refuses prompts that are not non-empty lists of ids inside the vocabulary. */
export function checkPrompts(prompts: readonly (readonly number[])[], vocab: number): void {
  if (prompts.length === 0) throw new PromptError('no prompt given');
  prompts.forEach((p, r) => {
    if (!Array.isArray(p)) throw new PromptError(`prompt ${r} is not a list of token ids (got ${JSON.stringify(p)})`);
    if (p.length === 0) throw new PromptError(`prompt ${r} is empty: give at least one token (e.g. BOS)`);
    const bad = p.find((id) => !Number.isSafeInteger(id) || id < 0 || id >= vocab);
    if (bad !== undefined) {
      if (!Number.isSafeInteger(bad) && typeof bad === 'number' && Number.isFinite(bad)) throw new PromptError(`prompt ${r} has token id ${bad}, which is not a whole number`);
      throw new PromptError(`prompt ${r} has token id ${JSON.stringify(bad)}, outside this model's vocabulary of ${vocab} tokens (ids 0 to ${vocab - 1})`);
    }
  });
}
