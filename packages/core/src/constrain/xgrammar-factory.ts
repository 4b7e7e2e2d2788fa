/**
 * The constraint stage on XGrammar (`@mlc-ai/web-xgrammar`): response formats are compiled once per vocabulary
 * (cached by vocabulary fingerprint and format), and each row gets its own matcher. JSON Schemas go through
 * XGrammar's schema-to-EBNF converter after {@link prepareJsonSchema}, so that bounded numbers get exact rules.
 */
import type { CompiledGrammar, GrammarCompiler, GrammarMatcher, TokenizerInfo } from '@mlc-ai/web-xgrammar';
import { prepareJsonSchema, spliceRules } from './json-schema.js';
import { rewriteRegex } from './regex-rewrite.js';
import { unrollBoundedStrings } from './string-length.js';
import { withWritableTokens, type GrammarVocabulary } from './vocabulary.js';
import { allowedShare, applyBitmask } from '../sampling/bitmask.js';
import { StageClock } from './timing.js';
import { loadXGrammar, type EmbindIntVector, type XGrammarBinding, type XGrammarInstance } from './xgrammar-loader.js';
import { TOOL_CALL_SYNTAX, writtenTokens, type ToolCallForm, type ToolCallSyntax } from './tool-syntax.js';
import { HARMONY, HARMONY_ANSWER, HARMONY_CALL } from '../chat/harmony.js';
import { mergeGrammars, xmlArgumentsEbnf } from './xml-calls.js';
import { GENERIC_REPLY } from '../tokenizer/tools-in-prompt.js';
import { ConstraintError, type AnswerFormat, type Constraint, type ConstraintFactory, type JsonSchema, type ResponseFormat, type ThoughtFirst, type ToolChoice } from './types.js';

/** Tool calls as the Hermes/Qwen chat templates teach them (the default syntax). */
export const TOOL_CALL_BEGIN = TOOL_CALL_SYNTAX.hermes.begin;
export const TOOL_CALL_END = TOOL_CALL_SYNTAX.hermes.end;

/** JSON key order-independent text of a value, for cache keys. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/**
 * Bitmask computations run one at a time, in order: each is timed alone (they share this thread anyway, and
 * several rows prepared together would otherwise interleave between the library's awaits).
 */
let fills: Promise<unknown> = Promise.resolve();

/** The C++ matcher behind the library's class (its `handle`), as far as a bitmask read in place needs it. */
interface MatcherHandle {
  GetNextTokenBitmask(vocabSize: number): EmbindIntVector;
}

/**
 * The elements of an embind vector of `words` ints, located through the module's memory: embind's address of
 * the std::vector and libc++'s layout (begin, end, capacity pointers). `vecIntToView`, the binding's own way,
 * cost ~5 µs more per token on the 152k vocabulary (caches evicted); anything unexpected takes it.
 */
export function vectorWords(vector: EmbindIntVector, binding: XGrammarBinding, words: number): Int32Array {
  const at = vector.$$?.ptr;
  const [heap, pointers] = [binding.HEAP32, binding.HEAPU32];
  if (typeof at === 'number' && heap && pointers && at % 4 === 0) {
    const begin = pointers[at >>> 2]!;
    const end = pointers[(at >>> 2) + 1]!;
    if (begin % 4 === 0 && end - begin === words * 4) return heap.subarray(begin >>> 2, end >>> 2);
  }
  return binding.vecIntToView(vector);
}

/** One row's grammar state. */
class XGrammarConstraint implements Constraint {
  /** Kept on this side so that it can still be read once the matcher is freed. */
  private complete = false;

  /** The next bitmask, when {@link prepare} started it. */
  private next: Promise<Int32Array> | undefined;

  readonly clock = new StageClock();

  /** This row's bitmask, refilled in place for every token when the library's module is at hand. */
  private words: Int32Array | undefined;

  prefetch = true;

  allowedShare = 0;

  constructor(
    private readonly matcher: GrammarMatcher,
    private readonly binding: XGrammarBinding | undefined,
    private readonly vocabSize: number,
  ) {}

  get prepared(): boolean {
    return this.next !== undefined;
  }

  prepare(): void {
    // The library computes the bitmask after its first await, i.e. once this thread waits for the model.
    if (this.next || !this.prefetch) return;
    this.next = this.fill(true);
    this.next.catch(() => {}); // a failure surfaces where the bitmask is awaited, not as an unhandled rejection
  }

  /** The bitmask is this row's own buffer where the library's module is at hand: valid until the next {@link accept}. */
  async allowed(): Promise<Int32Array> {
    const bitmask = await (this.next ?? this.fill(false));
    this.next = undefined;
    return bitmask;
  }

  async mask(logits: Float32Array): Promise<void> {
    applyBitmask(logits, await this.allowed());
  }

  private fill(overlapped: boolean): Promise<Int32Array> {
    const run = fills.then(async () => {
      const t = performance.now();
      const bitmask = this.binding ? this.fillInPlace(this.binding) : await this.matcher.getNextTokenBitmask();
      this.allowedShare = allowedShare(bitmask);
      this.clock.filled((performance.now() - t) * 1000, overlapped);
      // (not even a stop token: the format has no complete value from here, e.g. a schema whose $ref cycle never ends)
      if (this.allowedShare === 0 && bitmask.every((w) => w === 0)) throw new ConstraintError('the response format allows no token here: no text can complete it (a schema or grammar whose recursion never ends, or that needs text the vocabulary cannot write)');
      return bitmask;
    });
    fills = run.catch(() => {});
    return run;
  }

  /**
   * XGrammar's bitmask copied straight out of its memory into this row's buffer. The library's own method awaits
   * before it starts and returns a new array per token: with the caches evicted by a model step, allocating it
   * cost more than computing the bitmask (152k vocabulary: ~97 µs against ~23 µs this way; warm 12 against 5).
   */
  private fillInPlace(binding: XGrammarBinding): Int32Array {
    const vector = (this.matcher as unknown as { handle: MatcherHandle }).handle.GetNextTokenBitmask(this.vocabSize);
    try {
      const view = vectorWords(vector, binding, (this.vocabSize + 31) >>> 5);
      if (this.words?.length !== view.length) this.words = new Int32Array(view.length);
      this.words.set(view);
      return this.words;
    } finally {
      vector.delete();
    }
  }

  accept(token: number): void {
    if (!this.tryAccept(token)) throw new ConstraintError(`the grammar rejected token ${token}, which its own mask allowed`);
  }

  tryAccept(token: number): boolean {
    if (!this.matcher.acceptToken(token)) return false;
    this.next = undefined;
    this.complete = this.matcher.isTerminated();
    return true;
  }

  isComplete(): boolean {
    return this.complete;
  }

  dispose(): void {
    this.matcher.dispose();
  }
}

/** Compiled formats kept per vocabulary; the least recently used beyond this are freed. */
const CACHE_SIZE = 128;

/**
 * Whitespace JSON may take at each place its grammar allows some, at most: one blank (or newline) or none, so that JSON
 * spaced as `json.dumps` writes it and compact JSON (`{"a":2}`) both pass. With fixed `", "` and `": "` a model that writes
 * compact JSON was pushed off its own tokens and its values changed; free whitespace (vLLM's default) lets a weak
 * model pad every token with blanks, and indented JSON is rare under a constraint from its first token.
 */
const JSON_WHITESPACE = 1;

/**
 * Whitespace Command R+'s call arguments may take at each place: a newline and the indentation of a value three levels
 * into them, as its template renders them (`tojson(indent=4)|indent(8)`: members at 12 blanks), which the model writes.
 */
const INDENTED_WHITESPACE = 1 + 8 + 4 * 3;

/**
 * The most characters the merged grammar of a tool_calls format's arguments may hold: about 170 tools of six
 * arguments, or 400 of two. XGrammar's compile time grows with the square of a grammar's size, and while it
 * compiles every other stream of the engine waits (32,000 tokens, on a busy 2-CPU machine: 137,000 characters took
 * 11 s, 274,000 took 24 s).
 */
export const MAX_TOOL_GRAMMAR = 200_000;

/** One of JSON's blanks or none, as the schemas' grammars take them (JSON_WHITESPACE; `\s` would take `\v` and `\f`). */
const BLANK = '[ \\t\\n]?';

/**
 * Digits of a JSON number XGrammar leaves unbounded, at most: 32 in the integer part and in the fraction, 3 in the
 * exponent (a double's reach, 1e308). Enough to end a model's run of zeros; more than llama.cpp's 16 (a double's
 * precision), because tool arguments are passed on as written and ids such as a 20-digit order number are integers.
 */
const NUMBER_DIGITS = { integer: 32, fraction: 32, exponent: 3 };

/** XGrammar 0.1.27's JSON number rules (unbounded), as its schema converter writes them, and their bounded forms. */
const UNBOUNDED_NUMBERS: [string, string][] = [
  ['("0" | "-"? [1-9] [0-9]*)', `("0" | "-"? [1-9] [0-9]{0,${NUMBER_DIGITS.integer - 1}})`],
  [
    '"-"? ("0" | [1-9] [0-9]*) ("." [0-9]+)? ([eE] [+-]? [0-9]+)?',
    `"-"? ("0" | [1-9] [0-9]{0,${NUMBER_DIGITS.integer - 1}}) ("." [0-9]{1,${NUMBER_DIGITS.fraction}})? ([eE] [+-]? [0-9]{1,${NUMBER_DIGITS.exponent}})?`,
  ],
];

/**
 * XGrammar's JSON grammar with its unbounded runs bounded. Its rules for any value (`basic_array`, `basic_object`,
 * under `{"type": "object"}`, `true`, `{}`) take `[ \n\t]*` whatever whitespace count it is given, and its numbers
 * any number of digits: a small model wrote newlines, or `-3.000…`, to its token limit. Whitespace takes at most
 * `whitespace` characters there as everywhere else; numbers at most {@link NUMBER_DIGITS}. Rules spliced in after
 * (exact number ranges) are not touched.
 */
function bounded(ebnf: string, whitespace: number): string {
  let out = ebnf.split('[ \\n\\t]*').join(`[ \\n\\t]{0,${whitespace}}`);
  for (const [unbounded, limited] of UNBOUNDED_NUMBERS) out = out.split(unbounded).join(limited);
  return out;
}

/**
 * Valid UTF-8 past ASCII, byte by byte (Unicode's table 3-7: no overlong form, no surrogate, nothing past U+10FFFF).
 * XGrammar 0.1.27 compiles a class that names no negation into byte ranges, each bound cut to its low byte, so
 * `[\xc2-\xdf]` is the bytes C2–DF. A class of one member it writes as that code point's UTF-8 (`[\xe0]` would be
 * C3 A0): such lead bytes are named twice.
 */
const UTF8_CHARACTER = [
  '[\\xc2-\\xdf] C',
  '[\\xe0\\xe0] [\\xa0-\\xbf] C',
  '[\\xe1-\\xec] C C',
  '[\\xed\\xed] [\\x80-\\x9f] C',
  '[\\xee-\\xef] C C',
  '[\\xf0\\xf0] [\\x90-\\xbf] C C',
  '[\\xf1-\\xf3] C C C',
  '[\\xf4\\xf4] [\\x80-\\x8f] C C',
].map((bytes) => bytes.replace(/C/g, '[\\x80-\\xbf]')).join(' | ');

/** XGrammar's escapes in a class but the hexadecimal ones: C's and the regex punctuation it takes escaped. */
const CLASS_ESCAPES: Record<string, number> = { a: 7, b: 8, f: 12, n: 10, r: 13, t: 9, v: 11, '0': 0, e: 27 };

/**
 * The code points a class's members (the text between `[^` and `]`) name, all ASCII; undefined if one escape is
 * unknown or a member is past ASCII (such a class is left as XGrammar reads it).
 */
function asciiMembers(body: string): Set<number> | undefined {
  const named = new Set<number>();
  let last: number | undefined;
  let range = false;
  for (let i = 0; i < body.length; ) {
    let cp: number;
    if (body[i] === '\\') {
      const hex = /^\\(?:x([0-9a-fA-F]+)|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8}))/.exec(body.slice(i));
      const c = body[i + 1] ?? '';
      if (hex) cp = parseInt(hex[1] ?? hex[2] ?? hex[3]!, 16);
      else if (c in CLASS_ESCAPES) cp = CLASS_ESCAPES[c]!;
      else if (/[\\'"?^$.*+()[\]{}|/-]/.test(c)) cp = c.charCodeAt(0);
      else return undefined;
      i += hex ? hex[0].length : 2;
    } else if (body[i] === '-' && last !== undefined && !range && i + 1 < body.length) {
      range = true;
      i++;
      continue;
    } else {
      cp = body.codePointAt(i)!;
      i += String.fromCodePoint(cp).length;
    }
    if (cp > 0x7f) return undefined;
    const from = range ? last! : cp;
    for (let x = from; x <= cp; x++) named.add(x);
    last = range ? undefined : cp;
    range = false;
  }
  return named;
}

/**
 * The grammar with each negated class (`[^"\\\x00-\x1f]`, a JSON string's character) taking valid UTF-8 alone. Past
 * ASCII, XGrammar's negated classes take any lead byte and then any continuation bytes, so a string could hold
 * `F4 9E 9D 9E` (past U+10FFFF) or `ED A0 80` (a surrogate), which decode to U+FFFD; here such a class is its ASCII
 * members and {@link UTF8_CHARACTER}, the same language but for those sequences.
 */
function utf8Only(ebnf: string): string {
  let out = '';
  for (let i = 0; i < ebnf.length; ) {
    const c = ebnf[i]!;
    // A string literal, or a class, read to its unescaped end.
    const close = c === '"' ? '"' : c === '[' ? ']' : undefined;
    if (!close) {
      out += c;
      i++;
      continue;
    }
    let j = i + 1;
    while (j < ebnf.length && ebnf[j] !== close) j += ebnf[j] === '\\' ? 2 : 1;
    const text = ebnf.slice(i, j + 1);
    i = j + 1;
    const named = close === ']' && text.startsWith('[^') ? asciiMembers(text.slice(2, -1)) : undefined;
    // Written out in place: as a rule of its own (shared), a length-bounded string's masks were no longer
    // precomputed (17 ms a token against 30 µs, `maxLength: 40`, 32,000 tokens).
    out += named ? `(${asciiClass(named)}${UTF8_CHARACTER})` : text;
  }
  return out;
}

/** A class of the ASCII code points not `named`, and ` | ` after it; empty where there are none. */
function asciiClass(named: ReadonlySet<number>): string {
  const at = (v: number) => `\\x${v.toString(16).padStart(2, '0')}`;
  let ranges = '';
  for (let x = 0; x < 0x80; x++) {
    if (named.has(x)) continue;
    let y = x;
    while (y + 1 < 0x80 && !named.has(y + 1)) y++;
    ranges += x === y ? at(x) : `${at(x)}-${at(y)}`;
    x = y;
  }
  return ranges ? `[${ranges}] | ` : '';
}

/**
 * One copy of the library for a stop-token set (and the tokens written as text): its compiler, and the compiles on
 * it, which take turns so that what the library prints while one runs is that compile's own.
 */
interface Loaded {
  instance: XGrammarInstance;
  ready: Promise<{ info: TokenizerInfo; compiler: GrammarCompiler }>;
  /** Settles once the compiles started on this copy so far have. */
  turn: Promise<unknown>;
  /** Set when a compile on it failed (the library aborted): compiles waiting their turn go to a fresh copy. */
  failed?: boolean;
}

/**
 * Compiles formats for one vocabulary with XGrammar. Its tokenizer information carries the stop tokens, one per
 * set of them (a model's usually): a grammar that may end inside free text (`tool_calls` with `auto`, whose
 * dispatch ends at a stop token) allows them only if the compiler knew them, whatever the matcher is told. A
 * format whose syntax writes special tokens (Mistral's `[TOOL_CALLS]`) gets a vocabulary where those are text.
 */
export class XGrammarFactory implements ConstraintFactory {
  /** By stop-token set (ids sorted, joined) and the special tokens written as text. */
  private readonly loaded = new Map<string, Loaded>();
  private readonly cache = new Map<string, Promise<CompiledGrammar>>();
  /** The copy each grammar was compiled on: its matchers are made there (a grammar of another copy is no grammar to it). */
  private readonly owners = new WeakMap<CompiledGrammar, XGrammarInstance>();
  /** Formats compiled so far (a cache hit compiles nothing). */
  compiles = 0;

  /** `fingerprint` identifies the vocabulary in cache keys (e.g. the tokenizer fingerprint of the manifest). */
  constructor(
    private readonly vocabulary: GrammarVocabulary,
    readonly fingerprint: string,
  ) {}

  async create(format: ResponseFormat, stopTokenIds: readonly number[]): Promise<Constraint> {
    if (stopTokenIds.length === 0) {
      throw new ConstraintError('constrained decoding needs an end-of-sequence token id: this model declares none (pass eosTokenIds)');
    }
    const stops = [...new Set(stopTokenIds)].sort((a, b) => a - b);
    const compiled = await this.compile(format, stops);
    const instance = this.owners.get(compiled)!;
    const matcher = await instance.xg.GrammarMatcher.createGrammarMatcher(compiled, stops);
    return new XGrammarConstraint(matcher, instance.binding(), this.vocabulary.tokens.length);
  }

  /** The compiled grammar of a format (compiled once per vocabulary, stop tokens and format). */
  compile(format: ResponseFormat, stops: readonly number[]): Promise<CompiledGrammar> {
    const key = `${this.fingerprint}\u0000${stops.join(',')}\u0000${canonical(format)}`;
    let compiled = this.cache.get(key);
    if (compiled) {
      // Most recently used last: a Map keeps insertion order.
      this.cache.delete(key);
      this.cache.set(key, compiled);
      return compiled;
    }
    compiled = this.compileNew(format, stops);
    this.cache.set(key, compiled);
    compiled.catch(() => this.cache.delete(key));
    if (this.cache.size > CACHE_SIZE) {
      const [oldest, evicted] = this.cache.entries().next().value!;
      this.cache.delete(oldest);
      // Matchers made from it keep their own reference on the C++ side.
      evicted.then((g) => g.dispose(), () => {});
    }
    return compiled;
  }

  /**
   * The added tokens of this vocabulary that `format` writes as text (its thought's tags, its tool-call markers);
   * none where the vocabulary holds them as ordinary text, which then shares the plain vocabulary's compiler.
   */
  private writable(format: ResponseFormat): string[] {
    return writtenTokens(format).filter((text) => this.vocabulary.added.has(text));
  }

  private load(stops: readonly number[], written: readonly string[]): Loaded {
    const key = `${stops.join(',')}\u0000${written.join('\u0000')}`;
    let loaded = this.loaded.get(key);
    if (!loaded) {
      const instance = loadXGrammar();
      const ready = (async () => {
        const { tokens, kind, prependSpace } = written.length ? withWritableTokens(this.vocabulary, written) : this.vocabulary;
        const info = await instance.xg.TokenizerInfo.createTokenizerInfo(tokens, kind, prependSpace, tokens.length, [...stops]);
        // Without the compiler's own cache: it keeps every grammar it compiled, with no bound, beside this factory's
        // bounded one (a server whose clients send their own schemas grew ~8 KB a schema for good).
        const compiler = await instance.xg.GrammarCompiler.createGrammarCompiler(info, false);
        return { info, compiler };
      })();
      loaded = { instance, ready, turn: ready.catch(() => {}) };
      this.loaded.set(key, loaded);
    }
    return loaded;
  }

  /**
   * Compiles on the current copy of the library, after the compiles before it there: the library awaits inside each
   * call, so compiles run side by side would interleave what they print. One queued behind a compile that failed
   * starts over on the copy that replaces it.
   */
  private compileNew(format: ResponseFormat, stops: readonly number[]): Promise<CompiledGrammar> {
    const loaded = this.load(stops, this.writable(format));
    const run = loaded.turn.then(() => (loaded.failed ? this.compileNew(format, stops) : this.compileOn(loaded, format)));
    loaded.turn = run.catch(() => {});
    return run;
  }

  /** One compile, on `loaded`'s copy of the library, whose grammar its matchers will be made on. */
  private async compileOn({ instance, ready }: Loaded, format: ResponseFormat): Promise<CompiledGrammar> {
    instance.takeMessages(); // (printed since the last compile: not this one's)
    let compiled: CompiledGrammar;
    try {
      const { compiler } = await ready;
      // Everything that can be refused is checked before the library sees it.
      const source = thoughtFirst(await this.grammarSource(format, instance), format.thought);
      compiled = source.kind === 'ebnf' ? await compileEbnf(instance, compiler, source.text) : await compiler.compileStructuralTag(source.tag);
    } catch (err) {
      throw this.failure(format, err, instance);
    }
    this.owners.set(compiled, instance);
    this.compiles++;
    return compiled;
  }

  /** The EBNF (or structural tag) a format compiles from. */
  private async grammarSource(
    format: ResponseFormat,
    instance: XGrammarInstance,
  ): Promise<GrammarSource> {
    switch (format.type) {
      case 'json_schema':
        return { kind: 'ebnf', text: await this.schemaEbnf(format.schema, true, instance) };
      case 'json_object':
        return { kind: 'ebnf', text: await this.schemaEbnf({ type: 'object' }, false, instance) };
      case 'grammar':
        if (typeof format.grammar !== 'string' || !format.grammar.trim()) throw new ConstraintError('grammar: give the text of an EBNF grammar with a root rule');
        return { kind: 'ebnf', text: format.grammar };
      case 'regex':
        if (typeof format.pattern !== 'string' || !format.pattern) throw new ConstraintError('regex: give a non-empty pattern');
        return { kind: 'tag', tag: { type: 'structural_tag', format: { type: 'regex', pattern: rewriteRegex(format.pattern) } } };
      case 'tool_calls':
        return { kind: 'tag', tag: { type: 'structural_tag', format: await this.toolCallFormat(format, instance) } };
      default:
        throw new ConstraintError(`unknown response format type ${JSON.stringify((format as { type?: unknown }).type)}`);
    }
  }

  private async schemaEbnf(schema: JsonSchema, strict: boolean, instance: XGrammarInstance, whitespace = JSON_WHITESPACE): Promise<string> {
    const prepared = prepareJsonSchema(schema);
    try {
      const ebnf = await instance.xg.Testings._jsonSchemaToEBNF(JSON.stringify(prepared.schema), true, -1, undefined, strict, whitespace);
      return utf8Only(unrollBoundedStrings(spliceRules(bounded(ebnf, whitespace), prepared.rules)));
    } catch (err) {
      throw this.failure({ type: 'json_schema', schema }, err, instance);
    }
  }

  /**
   * A `tool_calls` format's structure. With an `answer` (under `auto`), the reply is the calls as `required` writes
   * them, or the answer where `auto` would take free text: in the generic syntax the answer replaces the
   * `{"response": …}` object, in harmony it is the final channel's message (its header first) where calls go to the
   * commentary channel.
   */
  private async toolCallFormat(format: Extract<ResponseFormat, { type: 'tool_calls' }>, instance: XGrammarInstance): Promise<Record<string, unknown>> {
    const { answer, choice } = format;
    if (answer === undefined) return this.callsFormat(format, choice, instance);
    if (choice !== 'auto') throw new ConstraintError('tool_calls: an answer goes with tool_choice auto only: with required or a named tool the reply is the calls, no answer');
    const [calls, answered] = await Promise.all([this.callsFormat(format, 'required', instance), this.answerFormat(answer, instance)]);
    // Harmony's answer is its final channel's message, header first. A generic reply's JSON answer may take the blank its
    // calls' object may (a SentencePiece model's reply starts with "▁{"; JSON takes it), so neither way is favoured.
    const json = answer.type === 'json_schema' || answer.type === 'json_object';
    const opening = format.syntax === 'harmony' ? [{ type: 'const_string', value: HARMONY_ANSWER }] : format.syntax === 'generic' && json && this.vocabulary.prependSpace ? [{ type: 'regex', pattern: ' ?' }] : [];
    const reply = opening.length ? { type: 'sequence', elements: [...opening, answered] } : answered;
    // XGrammar takes an `or` of elements all limited or all unlimited (a run of calls has no end of its own): beside
    // such calls the answer is a run too, one that stops after its first and only element.
    const one = { type: 'tags_with_separator', tags: [{ type: 'tag', begin: '', content: reply, end: '' }], separator: '\n', at_least_one: true, stop_after_first: true };
    return { type: 'or', elements: [calls, unlimited(calls) ? one : reply] };
  }

  /** An answer beside tool calls as an element of their structural tag. */
  private async answerFormat(answer: AnswerFormat, instance: XGrammarInstance): Promise<Record<string, unknown>> {
    const type = (answer as { type?: unknown } | null)?.type;
    if (typeof answer !== 'object' || answer === null || type === 'tool_calls' || typeof type !== 'string') {
      throw new ConstraintError('tool_calls: the answer must be a json_schema, json_object, grammar or regex format');
    }
    const source = await this.grammarSource(answer, instance);
    return source.kind === 'ebnf' ? { type: 'grammar', grammar: source.text } : source.tag.format;
  }

  /** The calls of a `tool_calls` format under `choice`, in its syntax. */
  private async callsFormat(format: Extract<ResponseFormat, { type: 'tool_calls' }>, choice: ToolChoice, instance: XGrammarInstance): Promise<Record<string, unknown>> {
    const { tools } = format;
    const parallel = format.parallel ?? true;
    const syntax: ToolCallSyntax = format.syntax ?? 'hermes';
    if (!Array.isArray(tools) || tools.length === 0) throw new ConstraintError('tool_calls: bind at least one tool');
    if (typeof parallel !== 'boolean') throw new ConstraintError(`tool_calls: parallel must be true or false, not ${JSON.stringify(parallel)}`);
    if (!(syntax in TOOL_CALL_SYNTAX)) throw new ConstraintError(`tool_calls: syntax must be one of ${Object.keys(TOOL_CALL_SYNTAX).join(', ')}, not ${JSON.stringify(syntax)}`);
    const names = tools.map((t) => t.name);
    const wanted = typeof choice === 'object' ? choice.name : undefined;
    if (wanted !== undefined && !names.includes(wanted)) {
      throw new ConstraintError(`tool_choice names "${wanted}", which is not among the bound tools (${names.join(', ')})`);
    }
    const called = tools.filter((t) => wanted === undefined || t.name === wanted);
    // Every tool's arguments as rules of one grammar, JSON's own rules once (see mergeGrammars).
    const whitespace = syntax === 'command-r-plus' ? INDENTED_WHITESPACE : undefined;
    const xml = syntax === 'qwen-xml' || syntax === 'glm' ? TOOL_CALL_SYNTAX[syntax].xml : undefined;
    const schemaEbnf = (schema: JsonSchema) => this.schemaEbnf(schema, true, instance, whitespace);
    const grammars = await Promise.all(called.map((t) => (xml ? xmlArgumentsEbnf(xml, t.parameters, schemaEbnf) : schemaEbnf(t.parameters))));
    const { rules, roots } = mergeGrammars(grammars);
    if (rules.length > MAX_TOOL_GRAMMAR) {
      throw new ConstraintError(
        `tool_calls: the grammar of the ${called.length} tools' arguments holds ${rules.length} characters, over the limit of ${MAX_TOOL_GRAMMAR} (MAX_TOOL_GRAMMAR: its compile time grows with the square of its size, and other streams wait for it); bind fewer tools, or give them smaller schemas`,
      );
    }
    const merged: CallRules = { calls: called.map((t, i) => ({ name: t.name, args: roots[i]! })), rules };
    switch (syntax) {
      case 'qwen-xml':
      case 'glm':
        return xmlCalls(TOOL_CALL_SYNTAX[syntax], merged, choice, parallel);
      case 'hermes':
        return hermesCalls(merged, choice, parallel, this.vocabulary.prependSpace);
      case 'json':
        return jsonCall(merged, choice);
      case 'deepseek':
        return deepseekCalls(merged, choice, parallel);
      case 'command-r':
        return cohereCalls(merged, choice, parallel);
      case 'command-r-plus':
        return actionCalls(merged, choice, parallel);
      case 'harmony':
        return harmonyCalls(merged, choice);
      case 'generic':
        return genericReply(merged, choice, parallel, await this.schemaEbnf({ type: 'string' }, true, instance), this.vocabulary.prependSpace);
      case 'mistral-args':
        return mistralArgsCalls(merged, choice, parallel, this.vocabulary.added.has(TOOL_CALL_SYNTAX['mistral-args'].id));
      default:
        return listedCalls(syntax, merged, choice, parallel);
    }
  }

  /**
   * A library failure as a ConstraintError with the library's own reason: its FATAL line (a WARNING it printed first,
   * say that it ignores a `^`, is not why). A failed call aborts the WebAssembly instance, so that copy of the library
   * is dropped, once, with the grammars cached from it: later compiles go to a fresh one, while the rows already
   * matching on the old one finish there.
   */
  private failure(format: ResponseFormat, err: unknown, instance: XGrammarInstance): ConstraintError {
    if (err instanceof ConstraintError) return err;
    const printed = instance.takeMessages().filter((l) => l && !l.startsWith('[WARNING]') && !l.startsWith('Aborted('));
    const line = printed.find((l) => l.startsWith('[FATAL]')) ?? printed[0];
    const reason = line?.replace(/^\[FATAL\]\s*\S+:\d+:\s*/, '') ?? (err as Error)?.message ?? String(err);
    for (const [key, loaded] of this.loaded) {
      if (loaded.instance !== instance) continue;
      loaded.failed = true;
      this.loaded.delete(key);
      for (const [cached, compiled] of this.cache) {
        compiled.then((g) => this.owners.get(g) === instance && this.cache.get(cached) === compiled && this.cache.delete(cached), () => {});
      }
    }
    return new ConstraintError(`cannot compile the ${format.type} constraint: ${reason}`);
  }
}

/** An EBNF string literal of `text` (XGrammar reads JSON's escapes). */
function ebnfLiteral(text: string): string {
  return JSON.stringify(text);
}

/** The called tools' arguments as rules of one grammar: each tool's name and its arguments' root rule, and the rules. */
interface CallRules {
  calls: { name: string; args: string }[];
  rules: string;
}

/** The tools as alternatives of a rule's text, each as `call` writes it from the tool's name and arguments' rule. */
function eachCall(tools: CallRules, call: (name: string, args: string) => string): string {
  return tools.calls.map((c) => `(${call(c.name, c.args)})`).join(' | ');
}

/** A grammar element of a structural tag: the rules `lines` (`root` among them) and the tools' rules. */
function callsGrammar(tools: CallRules, ...lines: string[]): Record<string, unknown> {
  return { type: 'grammar', grammar: [...lines, tools.rules].join('\n') };
}

/**
 * Hermes/Qwen's calls: each in a `<tool_call>` tag, in either layout templates use: Hermes/Qwen's (a newline inside
 * the tags) or the compact one; after a blank where the vocabulary prepends one to text (SentencePiece writes `▁`
 * after an added token, as Hermes 2 Pro Mistral's `<tool_call>` is). Several one per line, as Hermes/Qwen templates
 * write an assistant turn's calls; `parallel` false and a named tool admit one call (vLLM likewise calls a named tool once).
 */
function hermesCalls(tools: CallRules, choice: ToolChoice, parallel: boolean, blank: boolean): Record<string, unknown> {
  // (spaced as json.dumps writes it, or compact: a blank or none after each separator, as the arguments take it)
  const named = eachCall(tools, (name, args) => `${ebnfLiteral(JSON.stringify(name))} ${BLANK} "," ${BLANK} "\\"arguments\\"" ${BLANK} ":" ${BLANK} ${args}`);
  const content = callsGrammar(tools, `root ::= ${blank ? '" "? ' : ''}("\\n" call "\\n" | call)`, `call ::= "{" ${BLANK} "\\"name\\"" ${BLANK} ":" ${BLANK} (${named}) ${BLANK} "}"`);
  const tags = [{ type: 'tag', begin: TOOL_CALL_BEGIN, content, end: TOOL_CALL_END }];
  if (choice === 'auto') return { type: 'triggered_tags', triggers: [TOOL_CALL_BEGIN], tags, stop_after_first: !parallel };
  if (choice === 'required' && parallel) return { type: 'tags_with_separator', tags, separator: '\n', at_least_one: true };
  return tags[0]!;
}

/**
 * Llama 3's call: one, the rest of the reply (its templates render one and refuse several). Under `auto`, the call
 * also with OpenAI's `"type": "function"` first, as Llama 3.2 writes it (llama.cpp takes both).
 */
function jsonCall(tools: CallRules, choice: ToolChoice): Record<string, unknown> {
  const { begin } = TOOL_CALL_SYNTAX.json;
  const content = callsGrammar(tools, `root ::= ${eachCall(tools, (name, args) => `${ebnfLiteral(`${JSON.stringify(name)}, "parameters": `)} ${args}`)}`);
  const call = (opening: string) => ({ type: 'tag', begin: opening, content, end: '}' });
  if (choice !== 'auto') return call(begin);
  // (each opening a trigger of its own, so the grammar twice)
  const typed = '{"type": "function", "name": ';
  return { type: 'triggered_tags', triggers: [begin, typed], tags: [call(begin), call(typed)], stop_after_first: true };
}

/**
 * Calls as a list after a marker (Mistral's `[TOOL_CALLS]`, Granite's `<|tool_call|>`): the marker, a few blanks
 * (Mistral's templates render one) or none, then one JSON list of `{"name": …, "arguments": …}` objects that ends
 * the reply; Mistral's each with the 9-character `id` Nemo writes or without. `parallel` false admits one call.
 */
function listedCalls(syntax: 'mistral' | 'granite', tools: CallRules, choice: ToolChoice, parallel: boolean): Record<string, unknown> {
  const { begin } = TOOL_CALL_SYNTAX[syntax];
  const id = syntax === 'mistral' ? ` (${ebnfLiteral(', "id": "')} [a-zA-Z0-9]{9} "\\"")?` : '';
  const content = callsGrammar(tools, `root ::= (${eachCall(tools, (name, args) => `${ebnfLiteral(`${JSON.stringify(name)}, "arguments": `)} ${args}`)})${id}`);
  const call = { type: 'tag', begin: '{"name": ', content, end: '}' };
  const several = typeof choice === 'object' ? false : parallel;
  const items = several ? { type: 'tags_with_separator', tags: [call], separator: ', ', at_least_one: true } : call;
  // The list as a tag of its own: its closing bracket is the tag's end (XGrammar takes separated tags only so).
  // Blanks before it, bounded: a SentencePiece vocabulary may write the template's one blank as two pieces.
  const list = { type: 'sequence', elements: [{ type: 'regex', pattern: ' {0,4}' }, { type: 'tag', begin: '[', content: items, end: ']' }] };
  const marked = { type: 'tag', begin, content: list, end: '' };
  return choice === 'auto' ? { type: 'triggered_tags', triggers: [begin], tags: [marked], stop_after_first: true } : marked;
}

/**
 * Mistral's later calls: each `[TOOL_CALLS]name[ARGS]` and the arguments' JSON, one after another, with a few
 * blanks admitted after each special token (a SentencePiece vocabulary writes one there, as llama.cpp tokenizes).
 * With `ids` (a vocabulary that holds `[CALL_ID]`, as Small 3.2's, whose template renders each call's id so), a call may
 * name its id between: `[TOOL_CALLS]name[CALL_ID]` and nine letters and digits, then `[ARGS]`. `parallel` false and a
 * named tool admit one call.
 */
function mistralArgsCalls(tools: CallRules, choice: ToolChoice, parallel: boolean, ids: boolean): Record<string, unknown> {
  const { begin, args, id } = TOOL_CALL_SYNTAX['mistral-args'];
  const several = typeof choice === 'object' ? false : parallel;
  // (the special texts as literals of the grammar: it writes each as its token)
  const named = ids ? ` (${ebnfLiteral(id)} [ ]{0,4} [a-zA-Z0-9]{9})?` : '';
  const call = callsGrammar(tools, `root ::= [ ]{0,4} (${eachCall(tools, (name, rule) => `${ebnfLiteral(name)}${named} ${ebnfLiteral(args)} [ ]{0,4} ${rule}`)})`);
  const marked = { type: 'tag', begin, content: call, end: '' };
  if (choice === 'auto') return { type: 'triggered_tags', triggers: [begin], tags: [marked], stop_after_first: !several };
  if (!several) return marked;
  // The opening of each call after the first separates it from the one before (XGrammar takes no empty separator).
  return { type: 'sequence', elements: [{ type: 'const_string', value: begin }, { type: 'tags_with_separator', tags: [{ type: 'tag', begin: '', content: call, end: '' }], separator: begin, at_least_one: true }] };
}

/**
 * Cohere's calls: `<|START_ACTION|>`, a JSON list of `{"tool_call_id": "<n>", "tool_name": …, "parameters": …}`
 * objects, `<|END_ACTION|>`, which ends the reply. `parallel` false and a named tool admit one call.
 */
function cohereCalls(tools: CallRules, choice: ToolChoice, parallel: boolean): Record<string, unknown> {
  const { begin, end } = TOOL_CALL_SYNTAX['command-r'];
  const several = typeof choice === 'object' ? false : parallel;
  const named = eachCall(tools, (name, args) => `${ebnfLiteral(`${JSON.stringify(name)}, "parameters": `)} ${args}`);
  const call = callsGrammar(tools, `root ::= ${ebnfLiteral('{"tool_call_id": "')} [0-9]{1,3} ${ebnfLiteral('", "tool_name": ')} (${named}) "}"`);
  const items = several ? { type: 'tags_with_separator', tags: [{ type: 'tag', begin: '', content: call, end: '' }], separator: ', ', at_least_one: true } : call;
  // The list as the marked tag's content: its closing bracket before the end marker.
  const marked = { type: 'tag', begin: `${begin}[`, content: items, end: `]${end}` };
  return choice === 'auto' ? { type: 'triggered_tags', triggers: [begin], tags: [marked], stop_after_first: true } : marked;
}

/**
 * Command R+'s calls: `Action:`, a blank or a newline, a ```json fence around a JSON list of
 * `{"tool_name": …, "parameters": …}` objects, laid out as its template renders them (each line indented) or compact,
 * and the fence's close, which ends the reply. `parallel` false and a named tool admit one call. Under `auto` the reply
 * may instead be text, or, as the template asks, the call of `directly-answer` with no parameters and then the answer
 * in text.
 */
function actionCalls(tools: CallRules, choice: ToolChoice, parallel: boolean): Record<string, unknown> {
  const { begin, end, fence, direct } = TOOL_CALL_SYNTAX['command-r-plus'];
  const several = typeof choice === 'object' ? false : parallel;
  // Where the template puts a newline and indentation; bounded, and none at all for compact JSON.
  const indent = '"\\n"? [ ]{0,8}';
  const opening = `[ \\n]? ${ebnfLiteral(`${fence}json\n[`)}`;
  const named = (name: string) => `${ebnfLiteral(`"tool_name": ${JSON.stringify(name)},`)} ${indent} ${ebnfLiteral('"parameters": ')}`;
  // Each call ends with the indentation before what follows it: the next call's comma, or the list's bracket.
  const callEnd = `${indent} "}" ${indent}`;
  const one = callsGrammar(tools, `root ::= ${indent} "{" ${indent} (${eachCall(tools, (name, args) => `${named(name)} ${args}`)}) ${callEnd}`);
  const items = several ? { type: 'tags_with_separator', tags: [{ type: 'tag', begin: '', content: one, end: '' }], separator: ',', at_least_one: true } : one;
  // The list as a tag of its own (XGrammar takes separated tags only so), its bracket the tag's end.
  const list = { type: 'sequence', elements: [{ type: 'grammar', grammar: `root ::= ${opening}` }, { type: 'tag', begin: '', content: items, end: ']' }, { type: 'regex', pattern: '\\n?' }] };
  const marked = { type: 'tag', begin, content: list, end };
  if (choice !== 'auto') return marked;
  const answer = `root ::= ${ebnfLiteral(begin)} ${opening} ${indent} "{" ${indent} ${named(direct)} "{}" ${callEnd} "]" "\\n"? ${ebnfLiteral(end)}`;
  return { type: 'or', elements: [{ type: 'triggered_tags', triggers: [begin], tags: [marked], stop_after_first: true }, { type: 'sequence', elements: [{ type: 'grammar', grammar: answer }, { type: 'any_text' }] }] };
}

/**
 * The generic reply (for templates that show no tools): one JSON object, `{"tool_calls": [call, …]}` (or
 * `{"tool_call": call}` where one call is admitted), each call `{"name": …, "arguments": …}`; with `auto`, or
 * `{"response": "…"}`. Laid out as XGrammar lays out JSON without free whitespace, as the prompt's earlier turns are;
 * `blank`: one blank may come first.
 */
function genericReply(tools: CallRules, choice: ToolChoice, parallel: boolean, text: string, blank: boolean): Record<string, unknown> {
  const call = callsGrammar(tools, `root ::= ${ebnfLiteral('{"name": ')} (${eachCall(tools, (name, args) => `${ebnfLiteral(`${JSON.stringify(name)}, "arguments": `)} ${args}`)}) "}"`);
  const several = typeof choice === 'object' ? false : parallel;
  const calling = several
    ? { type: 'tag', begin: `{"${GENERIC_REPLY.calls}": [`, content: { type: 'tags_with_separator', tags: [{ type: 'tag', begin: '', content: call, end: '' }], separator: ', ', at_least_one: true }, end: ']}' }
    : { type: 'tag', begin: `{"${GENERIC_REPLY.call}": `, content: call, end: '}' };
  const answer = { type: 'tag', begin: `{"${GENERIC_REPLY.response}": `, content: { type: 'grammar', grammar: text }, end: '}' };
  const reply = choice === 'auto' ? { type: 'or', elements: [calling, answer] } : calling;
  // A blank first where the vocabulary prepends one to text: a SentencePiece model's reply starts with "▁{".
  return blank ? { type: 'sequence', elements: [{ type: 'regex', pattern: ' ?' }, reply] } : reply;
}

/**
 * DeepSeek's calls: `<｜tool▁calls▁begin｜>`, then each `<｜tool▁call▁begin｜>function<｜tool▁sep｜>name`, a newline and
 * its arguments in a ```json fence, closed by `<｜tool▁call▁end｜>`, calls after the first on a new line (as R1's
 * template renders them), and `<｜tool▁calls▁end｜>`, which ends the reply. `parallel` false and a named tool admit one call.
 */
function deepseekCalls(tools: CallRules, choice: ToolChoice, parallel: boolean): Record<string, unknown> {
  const { begin, end, each } = TOOL_CALL_SYNTAX.deepseek;
  const several = typeof choice === 'object' ? false : parallel;
  const named = eachCall(tools, (name, args) => `${ebnfLiteral(`${name}\n\`\`\`json\n`)} ${args}`);
  const call = callsGrammar(tools, `root ::= ${ebnfLiteral(`function${each.sep}`)} (${named}) ${ebnfLiteral('\n```')}`);
  // As in mistralArgsCalls, the next call's opening separates it from the one before (XGrammar takes no empty separator).
  const items = several
    ? { type: 'sequence', elements: [{ type: 'const_string', value: each.begin }, { type: 'tags_with_separator', tags: [{ type: 'tag', begin: '', content: call, end: each.end }], separator: `\n${each.begin}`, at_least_one: true }] }
    : { type: 'tag', begin: each.begin, content: call, end: each.end };
  const marked = { type: 'tag', begin, content: items, end };
  return choice === 'auto' ? { type: 'triggered_tags', triggers: [begin], tags: [marked], stop_after_first: true } : marked;
}

/** A harmony call's opening with its recipient in the channel, as the harmony guide writes it. */
const HARMONY_IN_CHANNEL = `${HARMONY.channel}commentary to=functions.`;

/**
 * Commentary preambles (the harmony guide's "Preambles"), any number or none: words to the user on the commentary
 * channel before a call, each body closed by the first `<|end|>` (as the splitter reads it, content), then the next
 * message's `<|start|>assistant`.
 */
const HARMONY_PREAMBLES = [
  'root ::= harmony_preamble*',
  `harmony_preamble ::= "${HARMONY.channel}commentary${HARMONY.message}" harmony_body "${HARMONY.start}assistant"`,
  `harmony_body ::= TagDispatch(stop_eos=false, stop_str=("${HARMONY.end}"), loop_after_dispatch=false)`,
].join('\n');

/**
 * gpt-oss's call (harmony): after its message's `<|start|>assistant`, the recipient ` to=functions.<name>`, the channel
 * `<|channel|>commentary json<|message|>` (as its template writes a call) and the arguments' JSON; the model then writes
 * `<|call|>`, which ends the reply: one call a reply, as the template renders one a message. With `auto` the reply may
 * be any messages instead (the answer on the final channel). Otherwise (`required`, a named tool, beside an answer) the
 * call may also name its recipient in the channel, as the harmony guide writes it, and come after commentary preambles.
 */
function harmonyCalls(tools: CallRules, choice: ToolChoice): Record<string, unknown> {
  // The recipient in the header before the channel, as gpt-oss's template writes it (`<|start|>assistant
  // to=functions.f<|channel|>commentary json<|message|>`), or in the channel after it, as the harmony guide does
  // (`<|channel|>commentary to=functions.f <|constrain|>json<|message|>`): both are read (chat/harmony.ts), as llama.cpp reads them.
  const header = `header ::= ${[`${HARMONY.channel}commentary json${HARMONY.message}`, ` ${HARMONY.constrain}json${HARMONY.message}`, `${HARMONY.constrain}json${HARMONY.message}`, HARMONY.message].map(ebnfLiteral).join(' | ')}`;
  const named = (headerRule: string) => eachCall(tools, (name, args) => `${ebnfLiteral(name)} ${headerRule} ${args}`);
  // Under auto the free text before the trigger holds the guide's channel and any preambles; elsewhere each is spelled out.
  if (choice === 'auto') {
    const tag = { type: 'tag', begin: HARMONY_CALL, content: callsGrammar(tools, `root ::= ${named('header')}`, header), end: '' };
    return { type: 'triggered_tags', triggers: [HARMONY_CALL], tags: [tag], stop_after_first: true };
  }
  const channelHeader = `channel_header ::= ${[` ${HARMONY.constrain}json${HARMONY.message}`, `${HARMONY.constrain}json${HARMONY.message}`, ` json${HARMONY.message}`, HARMONY.message].map(ebnfLiteral).join(' | ')}`;
  const call = callsGrammar(tools, `root ::= ${ebnfLiteral(HARMONY_CALL)} (${named('header')}) | ${ebnfLiteral(HARMONY_IN_CHANNEL)} (${named('channel_header')})`, header, channelHeader);
  return { type: 'sequence', elements: [{ type: 'grammar', grammar: HARMONY_PREAMBLES }, call] };
}

/**
 * Calls in tags (Qwen3-Coder's, GLM-4.5's): each `<tool_call>`, the name in its tags, the arguments (see
 * xmlArgumentsEbnf) and the closing tags; several one per line, as the templates write them. `parallel` false and a
 * named tool admit one call.
 */
function xmlCalls(form: Required<Pick<ToolCallForm, 'begin' | 'end' | 'xml'>>, tools: CallRules, choice: ToolChoice, parallel: boolean): Record<string, unknown> {
  const { begin, end, xml } = form;
  const close = xml.close ? ` ${ebnfLiteral(xml.close)}` : '';
  const content = callsGrammar(tools, `root ::= (${eachCall(tools, (name, args) => `${ebnfLiteral(`${xml.name[0]}${name}${xml.name[1]}`)} ${args}`)})${close}`);
  const tags = [{ type: 'tag', begin, content, end }];
  if (choice === 'auto') return { type: 'triggered_tags', triggers: [begin], tags, stop_after_first: !parallel };
  if (choice === 'required' && parallel) return { type: 'tags_with_separator', tags, separator: '\n', at_least_one: true };
  return tags[0]!;
}

/** Whether XGrammar takes a structural tag element as unlimited: free text, or a run of tags, at its end. */
function unlimited(format: Record<string, unknown>): boolean {
  const elements = (format.elements ?? []) as Record<string, unknown>[];
  switch (format.type) {
    case 'any_text':
    case 'triggered_tags':
    case 'tags_with_separator':
      return true;
    case 'sequence':
      return elements.length > 0 && unlimited(elements[elements.length - 1]!);
    case 'or':
      return elements.some(unlimited);
    default:
      return false;
  }
}

type GrammarSource = { kind: 'ebnf'; text: string } | { kind: 'tag'; tag: { type: 'structural_tag'; format: Record<string, unknown> } };

/**
 * An EBNF grammar compiled, its parsed form freed after: the library's `compileGrammar(text)` parses the text into a
 * grammar object it never frees (WebAssembly memory kept for good, one per distinct schema).
 */
async function compileEbnf(instance: XGrammarInstance, compiler: GrammarCompiler, text: string): Promise<CompiledGrammar> {
  const grammar = await instance.xg.Grammar.fromEBNF(text);
  try {
    return await compiler.compileGrammar(grammar);
  } finally {
    grammar.dispose();
  }
}

/**
 * A format's grammar after a thought: free text up to the closing tag (XGrammar's `any_text`, which ends at the
 * tag's end), a little whitespace, then the structure; where the thought is not opened yet, whitespace may come before its
 * opening tag, and the structure alone is the other way in.
 */
function thoughtFirst(source: GrammarSource, thought: ThoughtFirst | undefined): GrammarSource {
  if (!thought) return source;
  if (typeof thought.open !== 'string' || !thought.open || typeof thought.close !== 'string' || !thought.close) {
    throw new ConstraintError('thought: give the open and close tags of the thought');
  }
  const structure = source.kind === 'ebnf' ? { type: 'grammar', grammar: source.text } : source.tag.format;
  if (thought.answer !== undefined && typeof thought.answer !== 'string') throw new ConstraintError('thought: the answer\'s opening must be text');
  const answer = thought.answer ? { type: 'sequence', elements: [{ type: 'const_string', value: thought.answer }, structure] } : structure;
  // Bounded: an unbounded run lets a model that wants something the grammar refuses write blanks to its token limit.
  const space = { type: 'regex', pattern: '[ \\t\\r\\n]{0,4}' };
  const tag = { type: 'tag', begin: thought.opened ? '' : thought.open, content: { type: 'any_text' }, end: thought.close };
  // Whitespace may come before the opening tag (as the splitter reads it: a SentencePiece piece "▁<" starts one).
  const thinking = { type: 'sequence', elements: [...(thought.opened ? [] : [space]), tag, space, answer] };
  return { kind: 'tag', tag: { type: 'structural_tag', format: thought.opened ? thinking : { type: 'or', elements: [thinking, answer] } } };
}
