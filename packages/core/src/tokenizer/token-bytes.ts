/**
 * How a vocabulary's tokens spell bytes, read from a Hugging Face `tokenizer.json`: SentencePiece byte fallback
 * (`▁` for a space, `<0xAB>` for a byte no piece covers), GPT-2 byte-level (each byte as a printable character, `Ġ`
 * for a space), or raw text. A token that holds part of a character decodes to nothing or U+FFFD on its own; its
 * bytes are still these.
 */

/** How the tokens' encoded forms become bytes. */
export type VocabularyKind = 'byte_fallback' | 'byte_level' | 'raw';

type Json = Record<string, unknown>;

/** All the steps of a component that may be a `Sequence`. */
export function steps(component: unknown, key: string): Json[] {
  if (!component || typeof component !== 'object') return [];
  const c = component as Json;
  return c.type === 'Sequence' && Array.isArray(c[key]) ? (c[key] as Json[]) : [c];
}

/** The kind of a tokenizer.json's vocabulary, from its model and decoder. */
export function vocabularyKind(tokenizerJson: object): VocabularyKind {
  const tj = tokenizerJson as Json;
  const model = (tj.model ?? {}) as Json;
  const decoders = steps(tj.decoder, 'decoders');
  if (model.byte_fallback === true || decoders.some((d) => d.type === 'ByteFallback')) return 'byte_fallback';
  return decoders.some((d) => d.type === 'ByteLevel') ? 'byte_level' : 'raw';
}

/** GPT-2's byte-level alphabet: the printable bytes stand for themselves; the others are shifted past 255, in byte order. */
const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
const BYTE_LEVEL_CHARS: readonly number[] = (() => {
  let shifted = 256;
  return Array.from({ length: 256 }, (_, b) => (printable(b) ? b : shifted++));
})();
const BYTE_OF_CHAR = new Map(BYTE_LEVEL_CHARS.map((c, b) => [c, b]));

/** The character a byte-level vocabulary writes for `byte`. */
export const byteLevelChar = (byte: number): number => BYTE_LEVEL_CHARS[byte]!;

/** The bytes a token's encoded form (`piece`, as the vocabulary lists it) stands for. */
export function pieceBytes(piece: string, kind: VocabularyKind): number[] {
  if (kind === 'byte_fallback') {
    const byte = /^<0x([0-9A-Fa-f]{2})>$/.exec(piece);
    return byte ? [parseInt(byte[1]!, 16)] : [...Buffer.from(piece.replaceAll('▁', ' '), 'utf8')];
  }
  if (kind === 'byte_level') {
    const bytes = [...piece].map((ch) => BYTE_OF_CHAR.get(ch.codePointAt(0)!));
    if (bytes.every((b) => b !== undefined)) return bytes as number[];
  }
  return [...Buffer.from(piece, 'utf8')];
}
