/** The public shapes of a generation: options, streamed events, and the final result. */
import type { SamplingOptions } from '../sampling/index.js';
import type { TokenTrace } from '../compose/composed-source.js';

/** Options of one generation request. */
export interface GenerateOptions extends SamplingOptions {
  /** Generated tokens per row at most, a whole number >= 1 (default 256); a row also stops where the model's context ends. */
  maxTokens?: number;
  /** Strings that end a row; the text is cut before them (after them with `includeStopString`). */
  stop?: string[];
  /**
   * Keep the stop string that ended a row at the end of its text, streamed too, and a `stopTokenIds` token's text
   * (vLLM's `include_stop_str_in_output`; default false: the text is cut before them).
   */
  includeStopString?: boolean;
  /** Replace the model's end-of-sequence ids. */
  eosTokenIds?: number[];
  /** Keep generating past end-of-sequence ids (not past `stopTokenIds`, as vLLM's `ignore_eos`). */
  ignoreEos?: boolean;
  /**
   * Token ids that end a row as an end-of-sequence id does, beside the model's (vLLM's `stop_token_ids`), with
   * `ignoreEos` too: `finishReason` 'stop', the id last in `ids` and its text not in the reply (unless `includeStopString`). Ids inside the vocabulary.
   */
  stopTokenIds?: number[];
  /**
   * Tokens a row generates before anything but its token limit or the context may end it (vLLM's `min_tokens`; default
   * 0): until then its end-of-sequence ids and `stopTokenIds` are never sampled (their logits set to −∞ after log-probabilities
   * are read) and stop strings do not end it (one written by then stays text). A whole number from 0 to `maxTokens`. A response format's end still
   * ends the row where its grammar allows nothing else (a complete JSON value cannot be made longer).
   */
  minTokens?: number;
  /**
   * Special tokens whose text the reply keeps (decoding drops special tokens otherwise): a reasoning model's thought
   * tags where its vocabulary makes them special (Magistral's `[THINK]`, `[/THINK]`), for the reply to be read by.
   */
  keepTokens?: string[];
  /**
   * A cap on the reply's thought (vLLM's `thinking_token_budget`): once the thought that opens the reply, or that the
   * prompt opened, has taken `tokens` tokens without closing, the engine writes its closing tag and the model goes on
   * to answer. Its tags stay in the text. Needs the model's tokenizer.
   */
  thinkingBudget?: ThinkingBudget;
  /**
   * Report each generated token's log-probability and this many most likely alternatives (0 to 20; unset:
   * none, and nothing is computed). Log-softmax of the logits the row samples from (a composition's fused
   * logits) before the grammar mask, the logit bias, the penalties, temperature and truncation, as vLLM reports by default.
   */
  logprobs?: number;
  /**
   * The reply's expected text (OpenAI's Predicted Outputs): where the reply's last tokens occur in it, the tokens
   * that follow them there are drafted and checked in one step, as prompt lookup's are (whether or not the engine
   * has `promptLookup` on), so a reply that repeats much of it (a file with a few lines edited) takes fewer steps.
   * The reply is what it is without; needs the model's tokenizer.
   */
  prediction?: string;
}

/** A thought's tags and how many tokens it may take. */
export interface ThinkingBudget {
  /** Tokens the thought may take after its opening tag (the closing tag not counted); 0 closes it at once. */
  tokens: number;
  /** The tags, e.g. `<think>` and `</think>`. */
  open: string;
  /** The closing tag, e.g. `</think>`. */
  close: string;
  /** The prompt opened the thought (DeepSeek-R1's template): the reply starts inside it. */
  opened?: boolean;
}

/** A token and its log-probability; the engine fills `token` and `bytes` where it has a tokenizer. */
export interface TokenLogprob {
  /** Token id. */
  id: number;
  /** Natural log of its probability (≤ 0). */
  logprob: number;
  /** The token on its own, as the tokenizer decodes it (special tokens kept). */
  token?: string;
  /** The UTF-8 bytes of `token`. */
  bytes?: number[];
}

/** A generated token's log-probability and the most likely alternatives at its step (most likely first). */
export interface TokenLogprobs extends TokenLogprob {
  /** The `logprobs` most likely tokens at this step, most likely first (empty with `logprobs: 0`). */
  top: TokenLogprob[];
  /**
   * Where the token's text starts in the row's text, in characters (UTF-16 units, as `text.length` counts): a token
   * that shows nothing there (a special token, a latent marker's, a stop string's) sits where the next text goes.
   */
  offset?: number;
}

/** Why a row stopped. */
export type FinishReason = 'eos' | 'stop' | 'length' | 'abort';

/** One generated token of one row, with the text it completed (possibly empty). */
export interface TokenEvent {
  /** The row (prompt) it belongs to: an index into the call's prompts and the result's `rows`. */
  row: number;
  /** The token id. */
  id: number;
  /** Text this token completed, to append to the row's text: empty while a character or a possible stop string is incomplete. */
  text: string;
  /** What each composed model proposed for this token (when tracing was asked for). */
  trace?: TokenTrace;
  /** Its log-probability and alternatives (when `logprobs` was asked for). */
  logprobs?: TokenLogprobs;
  /**
   * On the row's last token, sent as the row ends while the call's other rows may go on: why it ended (its result's
   * `finishReason`). Its `text` then holds the rest of the row's text (what a possible stop string held back). Rows
   * that the call's abort ends have no such token: their stream just ends.
   */
  finishReason?: FinishReason;
  /** With `finishReason` 'stop': the stop string that ended the row (its result's `stopString`). */
  stopString?: string;
  /**
   * On a call's first token, when the prefix cache gave part of the prompt: how many prompt tokens it gave (the
   * result's `usage.cachedPromptTokens`, known before the end: Anthropic's `message_start` reports it).
   */
  cachedPromptTokens?: number;
}

/** Token counts. */
export interface Usage {
  /** Prompt tokens over every row (cached ones included). */
  promptTokens: number;
  /** Discrete tokens generated. */
  completionTokens: number;
  /** Prompt tokens whose cache came from the prefix cache instead of being run (counted like `promptTokens`). */
  cachedPromptTokens?: number;
  /** Latent (continuous) steps run instead of written reasoning, when a projector is loaded. */
  latentSteps?: number;
  /** Reasoning tokens the latent steps stood for (steps × the projector's `latent.tokensPerStep`, when declared). */
  reasoningTokensSaved?: number;
  /** With a `prediction`: its tokens drafted and kept in the reply, and those drafted and not kept (OpenAI's counts). */
  acceptedPredictionTokens?: number;
  /** With a `prediction`: its tokens drafted and not kept. */
  rejectedPredictionTokens?: number;
}

/** Wall-clock timing of a run. */
export interface Timing {
  /** Time to load the model(s), once per engine. */
  loadMs: number;
  /** Prompt processing up to the first token's logits. */
  prefillMs: number;
  /** Mean time per generated token after the first (of the longest row). */
  msPerToken: number;
  /** Model steps after the first token: one a token, fewer where prompt lookup's drafted tokens were kept. */
  decodeSteps: number;
  /** The whole call as the caller waited for it (queueing included), ms. */
  totalMs: number;
  /** What the grammar stage cost, when a response format constrained the call. */
  grammar?: GrammarTiming;
}

/** One figure over the tokens of a call, µs. */
export interface StageFigure {
  /** Mean, µs. */
  mean: number;
  /** Median, µs. */
  median: number;
  /** Largest, µs. */
  max: number;
}

/**
 * The grammar stage of a constrained call, per token over its constrained rows. The bitmask of allowed tokens
 * is computed while the model runs its step (off the critical path) after a token that needed one; after a token
 * that did not, none is computed unless the next pick is refused (then on the critical path). Picks are on it.
 */
export interface GrammarTiming {
  /** Tokens picked under a grammar. */
  tokens: number;
  /** How many bitmasks were computed: one for each token not counted in {@link unmasked}. */
  bitmasks: number;
  /** The grammar engine's bitmask of the next allowed tokens (XGrammar's fill), over the bitmasks computed. */
  bitmaskUs: StageFigure;
  /**
   * How many of those were computed ahead of their pick, while a model step or the prefill ran (a call that
   * finds the engine idle computes its first one just before its prefill starts).
   */
  overlapped: number;
  /** Time the pick waited for its bitmask (on the critical path): a bitmask computed after the logits came, or still in flight. */
  waitUs: StageFigure;
  /** Picking the token (on the critical path, the sampler's own work included): a greedy pick under a bitmask walks the allowed tokens. */
  pickUs: StageFigure;
  /** The grammar checking and advancing on the token (on the critical path; a refused first pick adds its check). */
  acceptUs: StageFigure;
  /**
   * Tokens picked without a bitmask: the sampler's pick from the whole row, which the grammar accepted (greedy and
   * plain sampling only; exact, see `Sampler.exactWithoutMask`). The others waited for one, computed ahead or not.
   */
  unmasked: number;
}

/** What one prompt produced. */
export interface RowResult {
  /** Generated ids (not the prompt's), the end-of-sequence or stop token that ended the row included. */
  ids: number[];
  /** Generated text: no end-of-sequence text, and no stop string unless `includeStopString`. */
  text: string;
  /**
   * `eos`: an end-of-sequence id (or a response format's grammar completed); `stop`: a stop string or `stopTokenIds`;
   * `length`: `maxTokens` or the end of the context; `abort`: the call's signal, or the stream was left early.
   */
  finishReason: FinishReason;
  /** The stop string that ended the row (`finishReason` 'stop'; none where a `stopTokenIds` id, the last of `ids`, ended it). */
  stopString?: string;
  /** Latent steps this row ran, when a projector is loaded. */
  latentSteps?: number;
  /** The reply as a JSON value: only when a JSON response format was asked for and its grammar completed. */
  parsed?: unknown;
  /** Per id of `ids`, its log-probability and alternatives (when `logprobs` was asked for). */
  logprobs?: TokenLogprobs[];
  /** Per id of `ids`, what each composed model proposed for it (when `trace` was asked for). */
  trace?: TokenTrace[];
}

/** The result of a generation (one row per prompt). */
export interface GenerationResult {
  /** One per prompt, in the order given. */
  rows: RowResult[];
  /** Token counts of the whole call. */
  usage: Usage;
  /** Where the call's time went. */
  timing: Timing;
}
