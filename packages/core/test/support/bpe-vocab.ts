/**
 * A small byte-level BPE vocabulary trained here (GPT-2's byte-to-character mapping, greedy pair merges over
 * a corpus with digits, punctuation, unicode, runs of spaces and newlines), written as the `tokenizer.ggml.*`
 * metadata of a GGUF the way llama.cpp's converter writes a "gpt2" vocabulary.
 */
import type { WValue } from './gguf-writer.js';
import type { GgufValue } from '../../src/gguf/reader.js';
import { tokenizerFromGguf, type HfTokenizerJson } from '../../src/gguf/tokenizer-from-gguf.js';

/** GPT-2's reversible map from bytes to printable characters. */
export function bytesToUnicode(): string[] {
  const printable = new Set<number>();
  for (let b = 0x21; b <= 0x7e; b++) printable.add(b);
  for (let b = 0xa1; b <= 0xac; b++) printable.add(b);
  for (let b = 0xae; b <= 0xff; b++) printable.add(b);
  const out: string[] = [];
  let extra = 0;
  for (let b = 0; b < 256; b++) out.push(String.fromCodePoint(printable.has(b) ? b : 256 + extra++));
  return out;
}

const CORPUS = [
  'The year 2024 had 366 days, and 1234567 + 89 = 1234656.',
  "It's what they're doing: we'll see, you've been, I'm here, he'd go, THEY'RE LOUD.",
  'Hello,   world!!  How are    you?\n\nFine...\n\n\n  indented line\n\tTabbed\ttext',
  'café naïve résumé Éric über straße 日本語のテキスト 東京 2023年',
  'emoji 🎉🚀 and symbols ≤≥÷ ™ £ € ¥ — “quotes” ‘single’',
  'def f(x):\n    return x ** 2  # squares\n\nfor i in range(10):\n    print(i, i*i)',
  'numbers: 3.14159, 2.71828, 1e-5, 0x1F, 100%, $42.50, 007, 1,000,000',
  'the the the and and of of to to in in is is that that 12 12 34 34 56 56 78 90',
  "it's it's that's that's don't don't",
];

/**
 * Trains `merges` byte-level BPE merges over the corpus, pre-split on runs of letters (with an attached contraction,
 * so pieces such as "t's" exist and pre-tokenizers that keep "it's" whole tokenize it apart from those that split
 * it), digits, spaces or other characters.
 */
export function trainBpe(mergeCount: number): { tokens: string[]; merges: string[] } {
  const b2u = bytesToUnicode();
  const enc = new TextEncoder();
  const words = new Map<string, number>();
  for (const text of CORPUS) {
    for (const w of text.match(/ ?\p{L}+(?:'\p{L}+)?| ?\p{N}+|\s+|[^\s\p{L}\p{N}]+/gu) ?? []) words.set(w, (words.get(w) ?? 0) + 1);
  }
  let seqs = [...words].map(([w, count]) => ({ symbols: Array.from(enc.encode(w), (b) => b2u[b]!), count }));
  const tokens = [...b2u];
  const merges: string[] = [];
  for (let m = 0; m < mergeCount; m++) {
    const pairs = new Map<string, number>();
    for (const { symbols, count } of seqs) {
      for (let i = 0; i + 1 < symbols.length; i++) {
        const key = `${symbols[i]} ${symbols[i + 1]}`;
        pairs.set(key, (pairs.get(key) ?? 0) + count);
      }
    }
    let best: string | undefined;
    let bestCount = 1;
    for (const [k, c] of pairs) if (c > bestCount || (c === bestCount && best !== undefined && k < best)) [best, bestCount] = [k, c];
    if (!best) break;
    const at = best.indexOf(' ', 1);
    const [a, b] = [best.slice(0, at), best.slice(at + 1)];
    merges.push(best);
    tokens.push(a + b);
    seqs = seqs.map(({ symbols, count }) => {
      const out: string[] = [];
      for (let i = 0; i < symbols.length; i++) {
        if (i + 1 < symbols.length && symbols[i] === a && symbols[i + 1] === b) {
          out.push(a + b);
          i++;
        } else out.push(symbols[i]!);
      }
      return { symbols: out, count };
    });
  }
  return { tokens, merges };
}

/**
 * Grows a vocabulary to `size` tokens with merges of existing ones (two bytes, then a byte pair and a byte), so
 * a model of a real vocabulary size (Qwen's 151936) has as many tokens and merges as a real one to load.
 */
function padVocabulary(tokens: string[], merges: string[], size: number): void {
  const have = new Set(tokens);
  const bytes = bytesToUnicode();
  const pairs: string[] = [];
  const merge = (a: string, b: string) => {
    if (have.has(a + b)) return;
    have.add(a + b);
    tokens.push(a + b);
    merges.push(`${a} ${b}`);
    if (a.length === 1) pairs.push(a + b);
  };
  for (const a of bytes) for (const b of bytes) if (tokens.length < size) merge(a, b);
  for (const a of pairs) for (const b of bytes) if (tokens.length < size) merge(a, b);
  if (tokens.length < size) throw new Error(`bpe-vocab: cannot pad a vocabulary to ${size} tokens`);
}

/**
 * `tokenizer.ggml.*` metadata of a trained BPE vocabulary with Qwen-style special tokens and one user-defined
 * token; `vocabSize` pads the ordinary tokens (see {@link padVocabulary}) so the whole vocabulary has that size.
 */
export function bpeTokenizerMeta(pre: string, opts: { addBos?: boolean; chatTemplate?: string; vocabSize?: number; extraMerges?: readonly string[] } = {}): Record<string, WValue> {
  const { tokens, merges } = trainBpe(400);
  // merges the corpus's pre-split never makes (a piece across punctuation and a newline), to tell pre-tokenizers apart
  for (const m of opts.extraMerges ?? []) {
    merges.push(m);
    tokens.push(m.replace(' ', ''));
  }
  const specials = ['<|endoftext|>', '<|im_start|>', '<|im_end|>'];
  const userDefined = ['<tool_call>'];
  if (opts.vocabSize !== undefined) padVocabulary(tokens, merges, opts.vocabSize - specials.length - userDefined.length);
  const all = [...tokens, ...specials, ...userDefined];
  const types = all.map((_, i) => (i < tokens.length ? 1 : i < tokens.length + specials.length ? 3 : 4));
  const str = (v: string): WValue => ({ t: 'str', v });
  const meta: Record<string, WValue> = {
    'tokenizer.ggml.model': str('gpt2'),
    'tokenizer.ggml.pre': str(pre),
    'tokenizer.ggml.tokens': { t: 'arr', item: 8, v: all.map(str) },
    'tokenizer.ggml.token_type': { t: 'arr', item: 5, v: types.map((v) => ({ t: 'i32', v })) },
    'tokenizer.ggml.merges': { t: 'arr', item: 8, v: merges.map(str) },
    'tokenizer.ggml.bos_token_id': { t: 'u32', v: tokens.length },
    'tokenizer.ggml.eos_token_id': { t: 'u32', v: tokens.length + 2 },
    'tokenizer.ggml.padding_token_id': { t: 'u32', v: tokens.length },
  };
  if (opts.addBos !== undefined) meta['tokenizer.ggml.add_bos_token'] = { t: 'bool', v: opts.addBos };
  if (opts.chatTemplate !== undefined) meta['tokenizer.chat_template'] = str(opts.chatTemplate);
  return meta;
}

/**
 * The `tokenizer.json` and `tokenizer_config.json` of the trained vocabulary with Qwen's pre-tokenizer, as the GGUF
 * converter writes them (byte-level: added tokens decode as written, where a SentencePiece decoder would turn their `▁`
 * into blanks).
 */
export function bpeTokenizerFiles(): { tokenizerJson: HfTokenizerJson; tokenizerConfig: Record<string, unknown> } {
  const meta = Object.fromEntries(Object.entries(bpeTokenizerMeta('qwen2')).map(([k, v]) => [k, plain(v)]));
  const { tokenizerJson, tokenizerConfig } = tokenizerFromGguf(meta);
  return { tokenizerJson, tokenizerConfig: tokenizerConfig as Record<string, unknown> };
}

/** A writer value as the GGUF reader returns it. */
export function plain(v: WValue): GgufValue {
  if (v.t === 'arr') return v.v.map(plain);
  if (v.t === 'u64' || v.t === 'i64') return Number(v.v);
  return v.v;
}

/** Qwen's fill-in-the-middle tokens, in the order a coder vocabulary lists them after its others. */
export const FIM_TOKENS = ['<|fim_prefix|>', '<|fim_middle|>', '<|fim_suffix|>', '<|fim_pad|>', '<|repo_name|>', '<|file_sep|>'];

/** The trained vocabulary with Qwen's FIM tokens as control tokens after it, as Qwen2.5-Coder's GGUFs have them. */
export function coderTokenizerMeta(): Record<string, WValue> {
  const meta = bpeTokenizerMeta('qwen2');
  for (const [key, item] of [['tokenizer.ggml.tokens', (v: string): WValue => ({ t: 'str', v })], ['tokenizer.ggml.token_type', (): WValue => ({ t: 'i32', v: 3 })]] as const) {
    const arr = meta[key]!;
    if (arr.t !== 'arr') throw new Error(`bpe-vocab: ${key} is not an array`);
    arr.v.push(...FIM_TOKENS.map(item));
  }
  return meta;
}
