/**
 * Builds a Hugging Face `tokenizer.json` (+ `tokenizer_config.json`) from the SentencePiece vocabulary a
 * llama-family GGUF carries (`tokenizer.ggml.model` = "llama").
 *
 * SentencePiece BPE encodes by starting from single characters and repeatedly merging the adjacent pair
 * whose concatenation is a vocabulary piece with the highest score. A BPE model with merges ranked by the
 * merged piece's score (higher first) reproduces that, as Hugging Face's LlamaConverter does. One
 * difference from that converter: GGUF vocabularies such as llama2.c's carry no single-character pieces
 * (every character is a byte-fallback token), so merge parts may also be single characters that are not
 * vocabulary pieces (tokenizers.js accepts such merges; the Rust `tokenizers` crate would not).
 */
import type { GgufFile, GgufValue } from './reader.js';
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
  pre_tokenizer: null;
  post_processor: object | null;
  decoder: object;
  model: {
    type: 'BPE';
    dropout: null;
    unk_token: string | null;
    continuing_subword_prefix: null;
    end_of_word_suffix: null;
    fuse_unk: true;
    byte_fallback: true;
    ignore_merges: false;
    vocab: Record<string, number>;
    merges: [string, string][];
  };
}

/** tokenizer_config.json as written for a converted llama vocabulary. */
export interface HfTokenizerConfig {
  tokenizer_class: 'LlamaTokenizer';
  add_bos_token: boolean;
  add_eos_token: boolean;
  bos_token: string | null;
  eos_token: string | null;
  unk_token: string | null;
  pad_token: string | null;
  clean_up_tokenization_spaces: false;
  legacy: true;
  model_max_length?: number;
  added_tokens_decoder: Record<string, Omit<HfAddedToken, 'id'>>;
  chat_template?: string;
  [key: string]: unknown;
}

/** The special token ids of a converted vocabulary (undefined when the GGUF names none). */
export interface SpecialTokenIds {
  bos?: number;
  eos?: number;
  unk?: number;
  pad?: number;
}

export interface GgufTokenizer {
  tokenizerJson: HfTokenizerJson;
  tokenizerConfig: HfTokenizerConfig;
  special: SpecialTokenIds;
}

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

/** Builds tokenizer.json and tokenizer_config.json objects from GGUF `tokenizer.ggml.*` metadata. */
export function tokenizerFromGguf(meta: MetaSource, options: TokenizerFromGgufOptions = {}): GgufTokenizer {
  const get = getter(meta);
  const model = get('tokenizer.ggml.model');
  if (model === undefined) fail('The GGUF has no tokenizer (metadata "tokenizer.ggml.model" is missing).', 'missing-metadata');
  if (model !== 'llama') {
    fail(
      `The GGUF tokenizer is "${String(model)}"; only SentencePiece vocabularies ("llama") can be converted to tokenizer.json.`,
      'unsupported-model',
    );
  }
  const tokens = get('tokenizer.ggml.tokens');
  if (!Array.isArray(tokens) || tokens.some((t) => typeof t !== 'string')) {
    fail('The GGUF metadata "tokenizer.ggml.tokens" is missing or not an array of strings.', 'missing-metadata');
  }
  const pieces = tokens as string[];
  const n = pieces.length;
  const scores = numberArray(get('tokenizer.ggml.scores'), 'tokenizer.ggml.scores', n) ?? new Array<number>(n).fill(0);
  const types =
    numberArray(get('tokenizer.ggml.token_type'), 'tokenizer.ggml.token_type', n) ??
    pieces.map((p): number => (/^<0x[0-9A-Fa-f]{2}>$/.test(p) ? TokenType.BYTE : TokenType.NORMAL));

  const specialId = (key: string): number | undefined => {
    const v = get(key);
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v)) fail(`The GGUF metadata "${key}" is ${String(v)}, expected a token id.`);
    return v >= 0 && v < n ? v : undefined; // llama.cpp writes 0xFFFFFFFF (-1) for "none"
  };
  const special: SpecialTokenIds = {};
  const bos = specialId('tokenizer.ggml.bos_token_id');
  const eos = specialId('tokenizer.ggml.eos_token_id');
  let unk = specialId('tokenizer.ggml.unknown_token_id');
  const pad = specialId('tokenizer.ggml.padding_token_id');
  if (unk === undefined) {
    const i = types.indexOf(TokenType.UNKNOWN);
    if (i >= 0) unk = i;
  }
  if (bos !== undefined) special.bos = bos;
  if (eos !== undefined) special.eos = eos;
  if (unk !== undefined) special.unk = unk;
  if (pad !== undefined) special.pad = pad;

  const boolMeta = (key: string, dflt: boolean): boolean => {
    const v = get(key);
    if (v === undefined) return dflt;
    if (typeof v !== 'boolean') fail(`The GGUF metadata "${key}" is ${String(v)}, expected a bool.`);
    return v;
  };
  // llama.cpp's defaults for SentencePiece vocabularies.
  const addBos = boolMeta('tokenizer.ggml.add_bos_token', true);
  const addEos = boolMeta('tokenizer.ggml.add_eos_token', false);
  const addSpacePrefix = boolMeta('tokenizer.ggml.add_space_prefix', true);

  // Vocabulary (a duplicate piece keeps its first id, as llama.cpp's token→id map does).
  const vocab: Record<string, number> = Object.create(null) as Record<string, number>;
  const vocabMap = new Map<string, number>();
  for (let id = 0; id < n; id++) {
    const p = pieces[id]!;
    if (!vocabMap.has(p)) {
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

  const addedDecoder: Record<string, Omit<HfAddedToken, 'id'>> = {};
  for (const { id, ...rest } of addedTokens) addedDecoder[String(id)] = rest;
  const tokenizerConfig: HfTokenizerConfig = {
    tokenizer_class: 'LlamaTokenizer',
    add_bos_token: addBos,
    add_eos_token: addEos,
    bos_token: bos !== undefined ? pieces[bos]! : null,
    eos_token: eos !== undefined ? pieces[eos]! : null,
    unk_token: unk !== undefined ? pieces[unk]! : null,
    pad_token: pad !== undefined ? pieces[pad]! : null,
    clean_up_tokenization_spaces: false,
    legacy: true,
    ...(options.modelMaxLength !== undefined ? { model_max_length: options.modelMaxLength } : {}),
    added_tokens_decoder: addedDecoder,
  };
  const chatTemplate = get('tokenizer.chat_template');
  if (typeof chatTemplate === 'string') tokenizerConfig.chat_template = chatTemplate;

  return { tokenizerJson: tokenJson, tokenizerConfig, special };
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
  for (let id = 0; id < pieces.length; id++) {
    if (!mergeable(id) || vocabMap.get(pieces[id]!) !== id) continue;
    const chars = Array.from(pieces[id]!);
    if (chars.length < 2) continue;
    const local: typeof all = [];
    for (let k = 1; k < chars.length; k++) {
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
