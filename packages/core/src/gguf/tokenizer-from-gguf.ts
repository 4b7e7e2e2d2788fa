/**
 * Builds a Hugging Face `tokenizer.json` (+ `tokenizer_config.json`) from the vocabulary a GGUF carries:
 * SentencePiece (`tokenizer.ggml.model` = "llama") or byte-level BPE ("gpt2", with the pre-tokenizer that
 * `tokenizer.ggml.pre` names; see {@link BPE_PRE_TOKENIZERS}).
 *
 * SentencePiece BPE encodes by starting from single characters and repeatedly merging the adjacent pair
 * whose concatenation is a vocabulary piece with the highest score. A BPE model with merges ranked by the
 * merged piece's score (higher first) reproduces that, as Hugging Face's LlamaConverter does. One
 * difference from that converter: GGUF vocabularies such as llama2.c's carry no single-character pieces
 * (every character is a byte-fallback token), so merge parts may also be single characters that are not
 * vocabulary pieces (tokenizers.js accepts such merges; the Rust `tokenizers` crate would not).
 */
import type { GgufFile, GgufValue } from './reader.js';
import { FIM_END_TEXTS } from '../tokenizer/fill-in-middle.js';
import { GgufError } from './reader.js';

/** SentencePiece piece types as GGUF stores them in `tokenizer.ggml.token_type`. */
export const TokenType = {
  UNDEFINED: 0,
  NORMAL: 1,
  UNKNOWN: 2,
  CONTROL: 3,
  USER_DEFINED: 4,
  UNUSED: 5,
  BYTE: 6,
} as const;

/** An entry of `added_tokens` in tokenizer.json. */
export interface HfAddedToken {
  id: number;
  content: string;
  single_word: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
  special: boolean;
}

/** The subset of the tokenizer.json format this converter writes. */
export interface HfTokenizerJson {
  version: '1.0';
  truncation: null;
  padding: null;
  added_tokens: HfAddedToken[];
  normalizer: object | null;
  pre_tokenizer: object | null;
  post_processor: object | null;
  decoder: object;
  model: {
    type: 'BPE';
    dropout: null;
    unk_token: string | null;
    continuing_subword_prefix: null;
    end_of_word_suffix: null;
    fuse_unk: boolean;
    byte_fallback: boolean;
    ignore_merges: boolean;
    vocab: Record<string, number>;
    merges: [string, string][];
  };
}

/** tokenizer_config.json as written for a converted vocabulary. */
export interface HfTokenizerConfig {
  tokenizer_class: 'LlamaTokenizer' | 'PreTrainedTokenizerFast';
  add_bos_token: boolean;
  add_eos_token: boolean;
  bos_token: string | null;
  eos_token: string | null;
  unk_token: string | null;
  pad_token: string | null;
  clean_up_tokenization_spaces: boolean;
  legacy?: true;
  model_max_length?: number;
  added_tokens_decoder: Record<string, Omit<HfAddedToken, 'id'>>;
  /** The template, or named templates (`default` and `tool_use`) as transformers writes several. */
  chat_template?: string | { name: string; template: string }[];
  /** The FIM tokens the GGUF names by id (`tokenizer.ggml.fim_pre/suf/mid_token_id`), by their text. */
  fim_tokens?: { prefix: string; suffix: string; middle: string };
  [key: string]: unknown;
}

/** The special token ids of a converted vocabulary (undefined when the GGUF names none). */
export interface SpecialTokenIds {
  bos?: number;
  eos?: number;
  unk?: number;
  pad?: number;
}

/** What {@link tokenizerFromGguf} builds: the two files a Hugging Face tokenizer is loaded from, and its special ids. */
export interface GgufTokenizer {
  /** Contents of tokenizer.json. */
  tokenizerJson: HfTokenizerJson;
  /** Contents of tokenizer_config.json. */
  tokenizerConfig: HfTokenizerConfig;
  /** BOS, EOS, UNK and PAD ids where the GGUF names them. */
  special: SpecialTokenIds;
  /** Ids that end generation, as llama.cpp finds them (EOS, EOT, EOM and the usual end-of-turn pieces). */
  endOfGeneration: number[];
}

/** Pieces llama.cpp treats as ending generation wherever a vocabulary has them (src/llama-vocab.cpp). */
const END_OF_GENERATION_PIECES = new Set([
  '<|eot_id|>',
  '<|im_end|>',
  '<|end|>',
  '<end_of_turn>',
  '<|endoftext|>',
  '</s>',
  '<|eom_id|>',
  '<EOT>',
  '_<EOT>',
  '<|end_of_text|>',
  '<end_of_utterance>',
  '<|return|>',
  '<|call|>',
]);

/** EOS, `tokenizer.ggml.eot_token_id`, `eom_token_id`, then every end-of-turn piece of the vocabulary, ascending. */
function endOfGeneration(get: (key: string) => GgufValue | undefined, pieces: readonly string[], eos: number | undefined): number[] {
  const ids = new Set<number>();
  if (eos !== undefined) ids.add(eos);
  // End of turn and of message, and the FIM padding, repository and file-separator tokens (as llama.cpp adds them).
  for (const kind of ['eot', 'eom', 'fim_pad', 'fim_rep', 'fim_sep']) {
    const v = get(`tokenizer.ggml.${kind}_token_id`);
    if (typeof v === 'number' && Number.isInteger(v) && v >= 0 && v < pieces.length) ids.add(v);
  }
  pieces.forEach((p, id) => {
    if (END_OF_GENERATION_PIECES.has(p) || FIM_END_TEXTS.includes(p)) ids.add(id);
  });
  // OpenAI's harmony format (gpt-oss): "<|end|>" closes every message, the thought's too; the reply ends at "<|return|>"
  // or at a tool call's "<|call|>". llama.cpp drops "<|end|>" where both of those end generation, and so do we.
  const end = pieces.indexOf('<|end|>');
  if (end !== -1 && ['<|return|>', '<|call|>'].every((p) => pieces.some((q, id) => q === p && ids.has(id)))) ids.delete(end);
  return [...ids].sort((a, b) => a - b);
}

/** Options of {@link tokenizerFromGguf}. */
export interface TokenizerFromGgufOptions {
  /** Written as `model_max_length` (e.g. the model's context length). */
  modelMaxLength?: number;
}

const SPACE = '\u2581'; // ▁

type MetaSource = GgufFile | Record<string, GgufValue>;

function getter(meta: MetaSource): (key: string) => GgufValue | undefined {
  if (typeof (meta as GgufFile).get === 'function' && (meta as GgufFile).metadata instanceof Map) {
    const f = meta as GgufFile;
    return (k) => f.get(k);
  }
  const rec = meta as Record<string, GgufValue>;
  return (k) => (Object.hasOwn(rec, k) ? rec[k] : undefined);
}

function fail(msg: string, code: GgufError['code'] = 'corrupt'): never {
  throw new GgufError(msg, code);
}

type Getter = (key: string) => GgufValue | undefined;

/** The vocabulary's pieces (`tokenizer.ggml.tokens`), refused when missing or not all strings. */
function tokenPieces(get: Getter): string[] {
  const tokens = get('tokenizer.ggml.tokens');
  if (!Array.isArray(tokens) || tokens.some((t) => typeof t !== 'string')) {
    fail('The GGUF metadata "tokenizer.ggml.tokens" is missing or not an array of strings.', 'missing-metadata');
  }
  return tokens as string[];
}

/**
 * The ids llama.cpp's convert_hf_to_gguf.py filled the vocabulary with up to the model's `vocab_size`: UNUSED pieces
 * "[PAD<id>]" where the Hugging Face vocabulary has no token (get_vocab_base and the SentencePiece path; Qwen: 271 ids
 * past its 151,665 tokens), or, from its earlier SentencePiece path, a run "[PAD1]" … "[PAD<k>]" ending the list. They
 * are no tokens: the model's tokenizer.json has none (a converted one listing them would not match its fingerprint),
 * and llama.cpp renders them as nothing; left out, the engine cuts the logits to the real tokens and never samples
 * them. Other UNUSED pieces (Gemma's "<unused0>" …) are the model's own and stay.
 */
function paddingIds(pieces: readonly string[], types: readonly number[]): Set<number> {
  const isPad = (id: number, k: number) => types[id] === TokenType.UNUSED && pieces[id] === `[PAD${k}]`;
  const padding = new Set<number>();
  for (let id = 0; id < pieces.length; id++) if (isPad(id, id)) padding.add(id);
  const n = pieces.length;
  const k = Number(/^\[PAD([1-9]\d*)\]$/.exec(pieces[n - 1] ?? '')?.[1] ?? 0);
  if (k > 0 && k <= n) {
    const run = Array.from({ length: k }, (_, j) => n - k + j);
    if (run.every((id, j) => isPad(id, j + 1))) for (const id of run) padding.add(id);
  }
  return padding;
}

/**
 * Reads a token-id key of a vocabulary of `n` pieces: undefined when absent, out of range or a padding id, refused when
 * not an integer.
 */
function tokenIdReader(get: Getter, n: number, padding: ReadonlySet<number>): (key: string) => number | undefined {
  return (key) => {
    const v = get(key);
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v)) fail(`The GGUF metadata "${key}" is ${String(v)}, expected a token id.`);
    return v >= 0 && v < n && !padding.has(v) ? v : undefined; // llama.cpp writes 0xFFFFFFFF (-1) for "none"
  };
}

/** Reads a bool key: `dflt` when absent, refused when not a bool. */
function boolReader(get: Getter): (key: string, dflt: boolean) => boolean {
  return (key, dflt) => {
    const v = get(key);
    if (v === undefined) return dflt;
    if (typeof v !== 'boolean') fail(`The GGUF metadata "${key}" is ${String(v)}, expected a bool.`);
    return v;
  };
}

/** The ids that are set, as {@link SpecialTokenIds}. */
function specialIds(bos: number | undefined, eos: number | undefined, unk: number | undefined, pad: number | undefined): SpecialTokenIds {
  const special: SpecialTokenIds = {};
  if (bos !== undefined) special.bos = bos;
  if (eos !== undefined) special.eos = eos;
  if (unk !== undefined) special.unk = unk;
  if (pad !== undefined) special.pad = pad;
  return special;
}

/**
 * tokenizer_config.json: `head` (class, BOS/EOS flags, clean-up, legacy), then the special pieces, length,
 * added tokens and chat template; keys in the order the file has always had.
 */
function hfTokenizerConfig(
  get: Getter,
  pieces: readonly string[],
  special: SpecialTokenIds,
  addedTokens: readonly HfAddedToken[],
  options: TokenizerFromGgufOptions,
  head: Pick<HfTokenizerConfig, 'tokenizer_class' | 'add_bos_token' | 'add_eos_token' | 'clean_up_tokenization_spaces' | 'legacy'>,
): HfTokenizerConfig {
  const piece = (id: number | undefined) => (id !== undefined ? pieces[id]! : null);
  const addedDecoder: Record<string, Omit<HfAddedToken, 'id'>> = {};
  for (const { id, ...rest } of addedTokens) addedDecoder[String(id)] = rest;
  const { legacy, clean_up_tokenization_spaces, ...flags } = head;
  const config: HfTokenizerConfig = {
    ...flags,
    bos_token: piece(special.bos),
    eos_token: piece(special.eos),
    unk_token: piece(special.unk),
    pad_token: piece(special.pad),
    clean_up_tokenization_spaces,
    ...(legacy ? { legacy } : {}),
    ...(options.modelMaxLength !== undefined ? { model_max_length: options.modelMaxLength } : {}),
    added_tokens_decoder: addedDecoder,
  };
  const chatTemplate = get('tokenizer.chat_template');
  const toolUse = get('tokenizer.chat_template.tool_use');
  // (a named tool-use template beside it is kept as transformers keeps one: the list of named templates)
  if (typeof chatTemplate === 'string') {
    config.chat_template = typeof toolUse === 'string' ? [{ name: 'default', template: chatTemplate }, { name: 'tool_use', template: toolUse }] : chatTemplate;
  }
  // FIM tokens the file names by id (else the tokenizer finds them by llama.cpp's texts): kept by their text.
  const fim = (['pre', 'suf', 'mid'] as const).map((kind) => get(`tokenizer.ggml.fim_${kind}_token_id`));
  if (fim.every((id) => typeof id === 'number' && Number.isInteger(id) && id >= 0 && id < pieces.length)) {
    const [prefix, suffix, middle] = fim.map((id) => pieces[id as number]!);
    config.fim_tokens = { prefix: prefix!, suffix: suffix!, middle: middle! };
  }
  return config;
}

/** Builds tokenizer.json and tokenizer_config.json objects from GGUF `tokenizer.ggml.*` metadata. */
export function tokenizerFromGguf(meta: MetaSource, options: TokenizerFromGgufOptions = {}): GgufTokenizer {
  const get = getter(meta);
  const model = get('tokenizer.ggml.model');
  if (model === undefined) fail('The GGUF has no tokenizer (metadata "tokenizer.ggml.model" is missing).', 'missing-metadata');
  if (model === 'gpt2') return bpeTokenizer(get, options);
  if (model !== 'llama') {
    fail(
      `The GGUF tokenizer is "${String(model)}"; only SentencePiece ("llama") and byte-level BPE ("gpt2") vocabularies can be converted to tokenizer.json.`,
      'unsupported-model',
    );
  }
  const pieces = tokenPieces(get);
  const n = pieces.length;
  const scores = numberArray(get('tokenizer.ggml.scores'), 'tokenizer.ggml.scores', n) ?? new Array<number>(n).fill(0);
  const types =
    numberArray(get('tokenizer.ggml.token_type'), 'tokenizer.ggml.token_type', n) ??
    pieces.map((p): number => (/^<0x[0-9A-Fa-f]{2}>$/.test(p) ? TokenType.BYTE : TokenType.NORMAL));

  const padding = paddingIds(pieces, types);
  const specialId = tokenIdReader(get, n, padding);
  // llama.cpp's defaults for SentencePiece vocabularies, BOS 1, EOS 2 and UNK 0 (where the vocabulary has them),
  // stand wherever the file names no id in range.
  const byDefault = (id: number) => (id < n && !padding.has(id) ? id : undefined);
  const bos = specialId('tokenizer.ggml.bos_token_id') ?? byDefault(1);
  const eos = specialId('tokenizer.ggml.eos_token_id') ?? byDefault(2);
  const unk = specialId('tokenizer.ggml.unknown_token_id') ?? byDefault(0);
  const pad = specialId('tokenizer.ggml.padding_token_id');
  const special = specialIds(bos, eos, unk, pad);

  const boolMeta = boolReader(get);
  // llama.cpp's defaults for SentencePiece vocabularies.
  const addBos = boolMeta('tokenizer.ggml.add_bos_token', true);
  const addEos = boolMeta('tokenizer.ggml.add_eos_token', false);
  const addSpacePrefix = boolMeta('tokenizer.ggml.add_space_prefix', true);

  // Vocabulary (a duplicate piece keeps its first id, as llama.cpp's token→id map does), without the padding.
  const vocab: Record<string, number> = Object.create(null) as Record<string, number>;
  const vocabMap = new Map<string, number>();
  for (let id = 0; id < n; id++) {
    const p = pieces[id]!;
    if (!vocabMap.has(p) && !padding.has(id)) {
      vocabMap.set(p, id);
      vocab[p] = id;
    }
  }

  // Added tokens: control and unknown pieces are special; user-defined ones are matched verbatim.
  const addedTokens: HfAddedToken[] = [];
  for (let id = 0; id < n; id++) {
    const t = types[id];
    const isSpecial = t === TokenType.CONTROL || t === TokenType.UNKNOWN || id === bos || id === eos || id === unk;
    if (isSpecial || t === TokenType.USER_DEFINED) {
      if (vocabMap.get(pieces[id]!) !== id) continue;
      addedTokens.push({
        id,
        content: pieces[id]!,
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: false,
        special: isSpecial,
      });
    }
  }

  const merges = mergesFromScores(pieces, scores, types, vocabMap);
  stripRules(get, addedTokens);

  const normalizers: object[] = [];
  if (addSpacePrefix) normalizers.push({ type: 'Prepend', prepend: SPACE });
  normalizers.push({ type: 'Replace', pattern: { String: ' ' }, content: SPACE });
  const decoders: object[] = [
    { type: 'Replace', pattern: { String: SPACE }, content: ' ' },
    { type: 'ByteFallback' },
    { type: 'Fuse' },
  ];
  if (addSpacePrefix) decoders.push({ type: 'Strip', content: ' ', start: 1, stop: 0 });

  const tokenJson: HfTokenizerJson = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: addedTokens,
    normalizer: { type: 'Sequence', normalizers },
    pre_tokenizer: null,
    post_processor: templateProcessing(
      addBos && bos !== undefined ? pieces[bos]! : undefined,
      addBos ? bos : undefined,
      addEos && eos !== undefined ? pieces[eos]! : undefined,
      addEos ? eos : undefined,
    ),
    decoder: { type: 'Sequence', decoders },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: unk !== undefined ? pieces[unk]! : null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab,
      merges,
    },
  };

  const tokenizerConfig = hfTokenizerConfig(get, pieces, special, addedTokens, options, {
    tokenizer_class: 'LlamaTokenizer',
    add_bos_token: addBos,
    add_eos_token: addEos,
    clean_up_tokenization_spaces: false,
    legacy: true,
  });

  return { tokenizerJson: tokenJson, tokenizerConfig, special, endOfGeneration: endOfGeneration(get, pieces, eos) };
}

/**
 * llama.cpp's per-model token attributes that change how text around special tokens is read: for models
 * named Phi-3, special tokens swallow the whitespace after them (except <unk>, <s> and <|endoftext|>).
 */
function stripRules(get: (key: string) => GgufValue | undefined, added: HfAddedToken[]): void {
  const name = String(get('general.name') ?? '').toLowerCase();
  if (!name.includes('phi-3') && !name.includes('phi3')) return;
  for (const t of added) t.rstrip = !['<unk>', '<s>', '<|endoftext|>'].includes(t.content);
}

function numberArray(v: GgufValue | undefined, key: string, n: number): number[] | undefined {
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'number')) fail(`The GGUF metadata "${key}" is not an array of numbers.`);
  if (v.length !== n) fail(`The GGUF metadata "${key}" has ${v.length} entries but the vocabulary has ${n} tokens.`);
  return v as number[];
}

/**
 * Merges that make a BPE model encode like SentencePiece BPE: one merge (left, right) for every way a
 * mergeable piece splits into two symbols that can occur while encoding — mergeable pieces or single
 * characters — ranked by the merged piece's score, higher first (ties: lower piece id, then lower
 * part ids, as Hugging Face's SentencePieceExtractor orders them).
 */
export function mergesFromScores(
  pieces: readonly string[],
  scores: readonly number[],
  types: readonly number[],
  vocabMap: ReadonlyMap<string, number> = new Map(pieces.map((p, i) => [p, i] as const)),
): [string, string][] {
  // SentencePiece only ever produces normal (and user-defined) pieces by merging.
  const mergeable = (id: number | undefined): id is number =>
    id !== undefined && (types[id] === TokenType.NORMAL || types[id] === TokenType.USER_DEFINED || types[id] === TokenType.UNDEFINED);
  const all: { left: string; right: string; score: number; piece: number; kl: number; kr: number }[] = [];
  // A part other than a first or last character is a piece, so of a length some piece has: splits are looked up only
  // there (a piece of n characters cut at every point costs n² in copies: a damaged vocabulary's megabyte-long piece took hours).
  const lengths = new Set(pieces.map((p) => Array.from(p).length));
  for (let id = 0; id < pieces.length; id++) {
    if (!mergeable(id) || vocabMap.get(pieces[id]!) !== id) continue;
    const chars = Array.from(pieces[id]!);
    if (chars.length < 2) continue;
    const local: typeof all = [];
    for (let k = 1; k < chars.length; k++) {
      if (!(k === 1 || lengths.has(k)) || !(k === chars.length - 1 || lengths.has(chars.length - k))) continue;
      const left = chars.slice(0, k).join('');
      const right = chars.slice(k).join('');
      const il = vocabMap.get(left);
      const ir = vocabMap.get(right);
      const okL = mergeable(il) || k === 1;
      const okR = mergeable(ir) || k === chars.length - 1;
      if (!okL || !okR) continue;
      local.push({
        left,
        right,
        score: scores[id]!,
        piece: id,
        kl: mergeable(il) ? il : Number.MAX_SAFE_INTEGER,
        kr: mergeable(ir) ? ir : Number.MAX_SAFE_INTEGER,
      });
    }
    local.sort((a, b) => a.kl - b.kl || a.kr - b.kr);
    all.push(...local);
  }
  // Array.prototype.sort is stable: equal scores keep piece-id order.
  all.sort((a, b) => b.score - a.score);
  return all.map((m) => [m.left, m.right]);
}

function templateProcessing(
  bosToken: string | undefined,
  bosId: number | undefined,
  eosToken: string | undefined,
  eosId: number | undefined,
): object {
  const single: object[] = [];
  const pair: object[] = [];
  const specialTokens: Record<string, object> = {};
  const withSpecials = (seq: 'A' | 'B', typeId: number, out: object[]) => {
    if (bosToken !== undefined) out.push({ SpecialToken: { id: bosToken, type_id: typeId } });
    out.push({ Sequence: { id: seq, type_id: typeId } });
    if (eosToken !== undefined) out.push({ SpecialToken: { id: eosToken, type_id: typeId } });
  };
  withSpecials('A', 0, single);
  withSpecials('A', 0, pair);
  withSpecials('B', 1, pair);
  if (bosToken !== undefined) specialTokens[bosToken] = { id: bosToken, ids: [bosId], tokens: [bosToken] };
  if (eosToken !== undefined) specialTokens[eosToken] = { id: eosToken, ids: [eosId], tokens: [eosToken] };
  return { type: 'TemplateProcessing', single, pair, special_tokens: specialTokens };
}

/** llama.cpp's whitespace beyond ASCII (`unicode_set_whitespace`, the code points of Unicode's White_Space). */
const NON_ASCII_SPACES = new Set([0x85, 0xa0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000]);

/**
 * The inside of one of llama.cpp's character classes, from its code point ranges ("41-5a b5", hex), as llama.cpp
 * matches it in an expression without \p{…} classes: before such an expression runs, unicode_regex_split turns every
 * non-ASCII whitespace character into U+000B (std::wregex's \s knows only ASCII spaces), so those characters match
 * \s but no range that spans them. Written as numbers: several characters of these classes are singletons that
 * Unicode normalization would turn into others.
 */
function literalClass(ranges: string): string {
  const out: string[] = [];
  for (const range of ranges.split(' ')) {
    const [from, to = from] = range.split('-').map((h) => parseInt(h, 16)) as [number, number?];
    let start: number | undefined;
    for (let cp = from; cp <= to + 1; cp++) {
      const inside = cp <= to && !NON_ASCII_SPACES.has(cp);
      if (inside && start === undefined) start = cp;
      if (!inside && start !== undefined) {
        out.push(start === cp - 1 ? String.fromCodePoint(start) : `${String.fromCodePoint(start)}-${String.fromCodePoint(cp - 1)}`);
        start = undefined;
      }
    }
  }
  return out.join('');
}

/** The cased letters of DeepSeek LLM's word expression, as its tokenizer.json lists them. */
const CASED_LETTERS = literalClass('41-5a 61-7a b5 c0-d6 d8-f6 f8-1ba 1bc-1bf 1c4-293 295-2af 370-373 376 377 37b-37d 37f 386 388-38a 38c 38e-3a1 3a3-3f5 3f7-481 48a-52f 531-556 10a0-10c5 13a0-13f5 13f8-13fd 1c90-1cba 1cbd-1cbf 1d00-1d2b 1d6b-1d77 1d79-1d9a 1e00-1f15 1f18-1f1d 1f20-1f45 1f48-1f4d 1f50-1f57 1f59 1f5b 1f5d 1f5f-1f7d 1f80-1fb4 1fb6-1fbc 1fbe 1fc2-1fc4 1fc6-1fcc 1fd0-1fd3 1fd6-1fdb 1fe0-1fec 1ff2-1ff4 1ff6-1ffc 2102 2107 210a-2113 2115 2119-211d 2124 2126 2128 212a-212d 212f-2134 2139 213c-213f 2145-2149 214e 2183 2184 2c00-2c7b 2c7e-2ce4 2ceb-2cee 2cf2 2cf3 a640-a66d a680-a69b a722-a76f a771-a787 a78b-a78e ab70-abbf fb00-fb06 fb13-fb17 ff21-ff3a ff41-ff5a 10400-1044f 104b0-104d3 104d8-104fb 10c80-10cb2 10cc0-10cf2 118a0-118df 1e900-1e943');

/** How llama.cpp pre-tokenizes one kind of BPE vocabulary (see {@link BPE_PRE_TOKENIZERS}). */
interface BpePreTokenizer {
  regexes: string[];
  ignoreMerges: boolean;
  addBos: boolean;
  cleanSpaces: boolean;
  /** Without `tokenizer.ggml.bos_token_id` the vocabulary has no BOS, rather than llama.cpp's default of 11 (GLM-4). */
  noDefaultBos?: boolean;
}

/**
 * The pre-tokenizers of llama.cpp's BPE vocabularies this converter writes, by `tokenizer.ggml.pre`: the
 * regular expressions llama.cpp splits with (src/llama-vocab.cpp), applied in order, each match and each
 * gap a piece, and whether whole pieces found in the vocabulary skip the merges (Llama 3).
 */
export const BPE_PRE_TOKENIZERS: Readonly<Record<string, BpePreTokenizer>> = (() => {
  const contractions = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])";
  const llama3 = {
    regexes: [`${contractions}|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+`],
    ignoreMerges: true,
    addBos: true,
    cleanSpaces: true,
  };
  // Phi-4 and DBRX (cl100k): Llama 3's expression, with merges and no BOS.
  const dbrx = { ...llama3, ignoreMerges: false, addBos: false };
  const qwen2 = {
    regexes: [`${contractions}|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+`],
    ignoreMerges: false,
    addBos: false,
    cleanSpaces: false,
  };
  // Qwen3.5's: Qwen's expression with combining marks taken into words (and out of punctuation runs).
  const qwen35 = { ...qwen2, regexes: [`${contractions}|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+`] };
  const gpt2Regex = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
  const smollm = { regexes: ['\\p{N}', gpt2Regex], ignoreMerges: false, addBos: false, cleanSpaces: false };
  // Granite 3, StarCoder and EXAONE: SmolLM's digits one by one, with llama.cpp's BPE default of cleaning up spaces.
  const refact = { ...smollm, cleanSpaces: true };
  const gpt2 = { regexes: [gpt2Regex], ignoreMerges: false, addBos: false, cleanSpaces: true };
  // Mistral's Tekken (Mistral Nemo, Small 3): words split at case changes; llama.cpp's form of the regex.
  const tekken = {
    regexes: [
      '[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+',
    ],
    ignoreMerges: true,
    addBos: true,
    cleanSpaces: false,
  };
  // o200k (Phi-4-mini and other GPT-4o-vocabulary models): Tekken's case-change words with contractions attached, digits in threes.
  const gpt4o = {
    regexes: [
      `[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+${contractions}?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*${contractions}?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+`,
    ],
    ignoreMerges: false,
    addBos: false,
    cleanSpaces: false,
  };
  // GLM-4: Llama 3's expression with merges; no BOS unless the file names one (its chat template writes `[gMASK]<sop>`).
  const glm4 = { ...dbrx, noDefaultBos: true };
  // DeepSeek LLM and DeepSeek Coder (the llama-architecture models): newlines alone, words and punctuation with one
  // leading space, CJK runs, digits (runs, or one by one).
  // (llama.cpp's "[一-龥ࠀ-一가-퟿]+" and "[!-/:-~！-／：-～‘-‟　-。]", less the spaces in their ranges, U+2000–U+200A and
  // U+3000 among them, which never match there)
  const cjk = `[${literalClass('4e00-9fa5 800-4e00 ac00-d7ff')}]+`;
  const deepseekLlm = {
    regexes: [
      '[\r\n]',
      `\\s?[${CASED_LETTERS}]+`,
      `\\s?[${literalClass('21-2f 3a-7e ff01-ff0f ff1a-ff5e 2018-201f 3000-3002')}]+`,
      '\\s+$',
      cjk,
      '\\p{N}+',
    ],
    ignoreMerges: false,
    // llama.cpp adds a BOS to the DeepSeek vocabularies only when the file says so (their converted files do)
    addBos: false,
    cleanSpaces: false,
  };
  const deepseekCoder = { ...deepseekLlm, regexes: ['[\r\n]', '\\s?\\p{L}+', '\\s?\\p{P}+', cjk, '\\p{N}'] };
  // Ling (bailingmoe, Ling 2.0's bailingmoe2): Qwen's expression with contractions as llama.cpp writes them, a newline
  // taken alone rather than in runs.
  const bailing = {
    ...qwen2,
    regexes: ["'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+"],
  };
  // DeepSeek-V3 and R1: digits in threes, CJK runs, then words (a punctuation mark may lead one), punctuation runs and blanks.
  const deepseekV3 = {
    regexes: [
      '\\p{N}{1,3}',
      '[一-龥぀-ゟ゠-ヿ]+',
      "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    ],
    ignoreMerges: false,
    addBos: false,
    cleanSpaces: false,
  };
  // Seed-Coder and Seed-OSS: Qwen's expression with punctuation runs that stop at a newline and take none after them.
  const seedCoder = { ...qwen2, regexes: [`${contractions}|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}\\r\\n]+|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+`] };
  return {
    'llama-bpe': llama3,
    llama3,
    'llama-v3': llama3,
    falcon3: llama3,
    pixtral: llama3,
    // LFM2's and Falcon-H1's (llama.cpp reads them as Llama 3's)
    lfm2: llama3,
    'falcon-h1': llama3,
    dbrx,
    'smaug-bpe': dbrx,
    qwen2,
    'deepseek-r1-qwen': qwen2,
    qwen35,
    // StableLM 2: Qwen's expression, with llama.cpp's BPE default of cleaning up spaces.
    stablelm2: { ...qwen2, cleanSpaces: true },
    smollm,
    'command-r': smollm,
    refact,
    starcoder: refact,
    exaone: refact,
    'gpt-2': gpt2,
    'phi-2': gpt2,
    olmo: gpt2,
    mpt: gpt2,
    glm4,
    'chatglm-bpe': glm4,
    'deepseek-llm': deepseekLlm,
    'deepseek-coder': deepseekCoder,
    'deepseek-v3': deepseekV3,
    bailingmoe: bailing,
    bailingmoe2: bailing,
    'llada-moe': bailing,
    exaone4: gpt2,
    tekken,
    'gpt-4o': gpt4o,
    'seed-coder': seedCoder,
  };
})();

/** A byte-level BPE tokenizer.json from `tokenizer.ggml.*` (model "gpt2"), as llama.cpp's llm_tokenizer_bpe reads it. */
function bpeTokenizer(get: (key: string) => GgufValue | undefined, options: TokenizerFromGgufOptions): GgufTokenizer {
  const preName = get('tokenizer.ggml.pre');
  if (preName === undefined) {
    fail(
      `The GGUF's BPE vocabulary names no pre-tokenizer ("tokenizer.ggml.pre" is missing); the converter knows ${Object.keys(BPE_PRE_TOKENIZERS).join(', ')}.`,
      'missing-metadata',
    );
  }
  const pre = BPE_PRE_TOKENIZERS[String(preName)];
  if (!pre || !Object.hasOwn(BPE_PRE_TOKENIZERS, String(preName))) {
    fail(
      `The GGUF's BPE pre-tokenizer "${String(preName)}" (tokenizer.ggml.pre) is not supported; the converter knows ${Object.keys(BPE_PRE_TOKENIZERS).join(', ')}.`,
      'unsupported-model',
    );
  }
  const pieces = tokenPieces(get);
  const n = pieces.length;
  const rawMerges = get('tokenizer.ggml.merges');
  if (!Array.isArray(rawMerges) || rawMerges.some((m) => typeof m !== 'string')) {
    fail('The GGUF\'s BPE vocabulary has no "tokenizer.ggml.merges" (an array of strings).', 'missing-metadata');
  }
  // "left right", split at the first space after the first character (a merge part may itself be a space). A merge
  // listed twice keeps its first rank, as llama.cpp's rank map does (tokenizers.js would rank it by the last).
  const listed = new Set<string>();
  const merges = (rawMerges as string[]).flatMap((m, i): [string, string][] => {
    const at = m.indexOf(' ', 1);
    if (at < 0) fail(`The GGUF merge #${i} "${m}" (tokenizer.ggml.merges) has no space between its two parts.`);
    if (listed.has(m)) return [];
    listed.add(m);
    return [[m.slice(0, at), m.slice(at + 1)]];
  });
  const types = numberArray(get('tokenizer.ggml.token_type'), 'tokenizer.ggml.token_type', n) ?? new Array<number>(n).fill(TokenType.NORMAL);

  const padding = paddingIds(pieces, types);
  const specialId = tokenIdReader(get, n, padding);
  // llama.cpp's defaults for BPE vocabularies: BOS = EOS = 11 unless the file names them.
  // llama.cpp's BPE defaults (11) stand wherever the file names no id in range (it warns of "bad special token").
  const byDefault = n > 11 && !padding.has(11) ? 11 : undefined;
  const bos = specialId('tokenizer.ggml.bos_token_id') ?? (pre.noDefaultBos ? undefined : byDefault);
  const eos = specialId('tokenizer.ggml.eos_token_id') ?? byDefault;
  const unk = specialId('tokenizer.ggml.unknown_token_id');
  const pad = specialId('tokenizer.ggml.padding_token_id');
  const special = specialIds(bos, eos, unk, pad);
  const boolMeta = boolReader(get);
  const addBos = bos !== undefined && boolMeta('tokenizer.ggml.add_bos_token', pre.addBos);
  const addEos = boolMeta('tokenizer.ggml.add_eos_token', false);

  const vocab: Record<string, number> = Object.create(null) as Record<string, number>;
  // (a duplicate piece keeps its first id; the padding is left out, see paddingIds)
  const first = new Map<string, number>();
  pieces.forEach((p, id) => {
    if (!first.has(p) && !padding.has(id)) {
      first.set(p, id);
      vocab[p] = id;
    }
  });
  // Control pieces are special (matched in text only when special tokens are parsed, as llama.cpp's
  // parse_special does); user-defined ones are always matched verbatim, before pre-tokenization.
  const addedTokens: HfAddedToken[] = [];
  for (let id = 0; id < n; id++) {
    const t = types[id];
    const isSpecial = t === TokenType.CONTROL || t === TokenType.UNKNOWN;
    if ((isSpecial || t === TokenType.USER_DEFINED) && first.get(pieces[id]!) === id) {
      addedTokens.push({ id, content: pieces[id]!, single_word: false, lstrip: false, rstrip: false, normalized: false, special: isSpecial });
    }
  }
  stripRules(get, addedTokens);
  const tokenJson: HfTokenizerJson = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: addedTokens,
    normalizer: null,
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        ...pre.regexes.map((regex) => ({ type: 'Split', pattern: { Regex: regex }, behavior: 'Isolated', invert: false })),
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
      ],
    },
    post_processor: templateProcessing(
      addBos && bos !== undefined ? pieces[bos]! : undefined,
      addBos ? bos : undefined,
      addEos && eos !== undefined ? pieces[eos]! : undefined,
      addEos ? eos : undefined,
    ),
    decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: pre.ignoreMerges,
      vocab,
      merges,
    },
  };
  const tokenizerConfig = hfTokenizerConfig(get, pieces, special, addedTokens, options, {
    tokenizer_class: 'PreTrainedTokenizerFast',
    add_bos_token: addBos,
    add_eos_token: addEos,
    clean_up_tokenization_spaces: pre.cleanSpaces,
  });
  return { tokenizerJson: tokenJson, tokenizerConfig, special, endOfGeneration: endOfGeneration(get, pieces, eos) };
}
