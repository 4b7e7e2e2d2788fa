/**
 * The vocabulary a grammar engine needs, read from a Hugging Face `tokenizer.json`: every token's encoded
 * form by id, and how encoded forms become bytes (SentencePiece byte fallback `▁`/`<0xAB>`, GPT-2 byte-level
 * `Ġ`, or raw). Added and special tokens are given as empty strings, which the engine never lets a grammar
 * produce: `<s>` or `<|im_start|>` must not appear as text inside a constrained reply. So are tokens holding a byte
 * that UTF-8 never uses.
 */
import { vocabularyPairs } from '../tokenizer/fingerprint.js';
import { byteLevelChar, pieceBytes, steps, vocabularyKind, type VocabularyKind } from '../tokenizer/token-bytes.js';

/** A vocabulary ready for a grammar engine. */
export interface GrammarVocabulary {
  /** Encoded form of every id (`''` for added/special tokens and ids without a token). */
  tokens: string[];
  kind: VocabularyKind;
  /** Whether the tokenizer prepends a space (SentencePiece's `▁`) before the text. */
  prependSpace: boolean;
  /** The ids of the added tokens, by content (their encoded forms are blank in `tokens`). */
  added: ReadonlyMap<string, number>;
}

type Json = Record<string, unknown>;

/** Reads the vocabulary of a tokenizer.json (`size` ids; ids past the tokenizer's get `''`). */
export function grammarVocabulary(tokenizerJson: object, size: number): GrammarVocabulary {
  const tj = tokenizerJson as Json;
  const model = (tj.model ?? {}) as Json;
  const tokens = new Array<string>(size).fill('');
  for (const [token, id] of vocabularyPairs(tj)) if (id < size) tokens[id] = token;
  const blank = (id: unknown) => {
    if (typeof id === 'number' && id < size) tokens[id] = '';
  };
  const added = new Map<string, number>();
  for (const t of Array.isArray(tj.added_tokens) ? (tj.added_tokens as Json[]) : []) {
    blank(t.id);
    if (typeof t.content === 'string' && typeof t.id === 'number' && t.id < size) added.set(t.content, t.id);
  }
  if (typeof model.unk_token === 'string' && model.vocab && !Array.isArray(model.vocab)) blank((model.vocab as Json)[model.unk_token]);

  const kind = vocabularyKind(tj);
  // Bytes that never occur in UTF-8 (C0, C1: overlong; F5–FF: past U+10FFFF): XGrammar takes such a lead byte as
  // the start of a character, so a reply could hold them (decoded as U+FFFD).
  if (kind !== 'raw') tokens.forEach((token, id) => {
    if (token && pieceBytes(token, kind).some((b) => b === 0xc0 || b === 0xc1 || b >= 0xf5)) tokens[id] = '';
  });
  const prependSpace =
    steps(tj.normalizer, 'normalizers').some((n) => n.type === 'Prepend' && n.prepend === '▁') ||
    steps(tj.pre_tokenizer, 'pretokenizers').some((p) => p.type === 'Metaspace' && p.prepend_scheme !== 'never' && p.add_prefix_space !== false);
  return { tokens, kind, prependSpace, added };
}

/**
 * The vocabulary with the added tokens named in `texts` writable as their text (a tool-call marker the grammar
 * must be able to write; decoding keeps them). Texts the vocabulary has no added token for are left to ordinary
 * tokens.
 */
export function withWritableTokens(vocabulary: GrammarVocabulary, texts: readonly string[]): GrammarVocabulary {
  const tokens = vocabulary.tokens.slice();
  for (const text of texts) {
    const id = vocabulary.added.get(text);
    if (id !== undefined) tokens[id] = vocabulary.kind === 'byte_level' ? byteLevelForm(text) : text;
  }
  return { ...vocabulary, tokens };
}

/** GPT-2's byte-level encoded form of a text: each UTF-8 byte as the character byte-level vocabularies use for it. */
function byteLevelForm(text: string): string {
  let form = '';
  for (const byte of new TextEncoder().encode(text)) form += String.fromCharCode(byteLevelChar(byte));
  return form;
}
