/**
 * GGUF vocabularies padded by llama.cpp's convert_hf_to_gguf.py: ids the Hugging Face vocabulary lacks, up to the
 * model's vocab_size, are UNUSED pieces "[PAD<id>]" (Qwen: 151,936 entries over 151,665 tokens). They are no tokens:
 * the converted tokenizer.json is the model's own (the same fingerprint), a padded model never samples them, and a
 * padded GGUF composes beside the ONNX export of the same model.
 */
import { expect } from 'chai';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { Engine } from '../src/engine.js';
import { withGguf } from '../src/gguf/reader.js';
import { TokenType, tokenizerFromGguf } from '../src/gguf/tokenizer-from-gguf.js';
import { SamplingOptionsError } from '../src/sampling/index.js';
import { tokenizerFingerprint } from '../src/tokenizer/fingerprint.js';
import { bpeTokenizerFiles, bpeTokenizerMeta, plain } from './support/bpe-vocab.js';
import { llamaCppTokenize, storiesTokenizerMeta, writeRandomGguf, type RandomGgufSpec } from './support/gguf-models.js';
import { makeGguf, rewriteGguf, type WValue } from './support/gguf-writer.js';
import { makeModule, storiesConfig } from './support/modules.js';
import { useTempCache } from './support/temp-cache.js';

/** The items of an array key of a vocabulary's metadata. */
function items(meta: Record<string, WValue>, key: string): WValue[] {
  const v = meta[key];
  if (v?.t !== 'arr') throw new Error(`${key} is not an array`);
  return v.v;
}

/** Appends UNUSED pieces to a vocabulary's metadata (score -10000 where it has scores, as convert_hf_to_gguf writes them). */
function withUnused(meta: Record<string, WValue>, pieces: readonly string[]): Record<string, WValue> {
  const out = structuredClone(meta);
  items(out, 'tokenizer.ggml.tokens').push(...pieces.map((v): WValue => ({ t: 'str', v })));
  items(out, 'tokenizer.ggml.token_type').push(...pieces.map((): WValue => ({ t: 'i32', v: TokenType.UNUSED })));
  if (out['tokenizer.ggml.scores']) items(out, 'tokenizer.ggml.scores').push(...pieces.map((): WValue => ({ t: 'f32', v: -10000 })));
  return out;
}

/** `meta` padded to `size` ids as convert_hf_to_gguf pads it: "[PAD<id>]", or (`legacy`, its earlier SentencePiece path) "[PAD1]" on. */
function padded(meta: Record<string, WValue>, size: number, legacy = false): Record<string, WValue> {
  const n = items(meta, 'tokenizer.ggml.tokens').length;
  return withUnused(meta, Array.from({ length: size - n }, (_, i) => `[PAD${legacy ? i + 1 : n + i}]`));
}

const plainMeta = (meta: Record<string, WValue>) => Object.fromEntries(Object.entries(meta).map(([k, v]) => [k, plain(v)]));

const TEXTS = ['Hello, world! How are you?', 'The year 2024 had 366 days.', 'a [PAD400] b [PAD1] <unused0> [PAD]', ' ', 'café 日本語 🎉'];

/** Writes a random model of `spec` over `meta` whose padding rows of the output head are scaled up, so that its logits favour them. */
async function writePadFavouring(path: string, spec: RandomGgufSpec, meta: Record<string, WValue>, realTokens: number): Promise<void> {
  await writeRandomGguf(`${path}.plain`, spec, meta);
  await rewriteGguf(`${path}.plain`, path, (_meta, tensors) => {
    const head = tensors.get('output.weight')!;
    const h = head.dims[0]!;
    for (let i = realTokens * h; i < head.data.length; i++) head.data[i]! *= 40;
  });
}

describe('GGUF vocabularies padded with "[PAD<id>]" pieces (llama.cpp\'s converter)', function () {
  this.timeout(180_000);
  const scratch = useTempCache('reasonplug-gguf-padding-');

  it('BPE: the converted tokenizer.json is the unpadded one, other UNUSED pieces stay, and text tokenizes as llama.cpp does', async () => {
    const meta = bpeTokenizerMeta('qwen2');
    const n = items(meta, 'tokenizer.ggml.tokens').length;
    const tok = tokenizerFromGguf(plainMeta(padded(meta, n + 69)));
    expect(tokenizerFingerprint(tok.tokenizerJson)).to.equal(tokenizerFingerprint(bpeTokenizerFiles().tokenizerJson));
    expect(Object.keys(tok.tokenizerJson.model.vocab).filter((p) => p.startsWith('[PAD'))).to.deep.equal([]);
    expect(Math.max(...Object.values(tok.tokenizerJson.model.vocab), ...tok.tokenizerJson.added_tokens.map((t) => t.id))).to.equal(n - 1);

    // (an UNUSED piece of another form, and "[PAD<k>]" at an id other than k, are the model's own: llama.cpp keeps them)
    const mixed = padded(withUnused(meta, ['<unused0>', '[PAD3]']), n + 8);
    const path = join(scratch.dir, 'bpe-mixed.gguf');
    await writeFile(path, makeGguf({ 'general.architecture': { t: 'str', v: 'qwen2' }, ...mixed }));
    const own = await withGguf(path, async (f) => tokenizerFromGguf(f));
    expect(own.tokenizerJson.model.vocab).to.include({ '<unused0>': n, '[PAD3]': n + 1 });
    expect(own.tokenizerJson.model.vocab).to.not.have.property(`[PAD${n + 2}]`);
    const hf = new Tokenizer(own.tokenizerJson, own.tokenizerConfig);
    const theirs = await llamaCppTokenize(path, TEXTS);
    TEXTS.forEach((t, i) => expect(hf.encode(t, { add_special_tokens: false }).ids, JSON.stringify(t)).to.deep.equal(theirs[i]));
  });

  it('SentencePiece: "[PAD<id>]" padding, and the earlier "[PAD1]" … run, leave the unpadded tokenizer.json; text tokenizes as llama.cpp does', async () => {
    const meta = await storiesTokenizerMeta();
    const unpadded = tokenizerFingerprint(tokenizerFromGguf(plainMeta(meta)).tokenizerJson);
    for (const legacy of [false, true]) {
      const path = join(scratch.dir, `spm-${legacy}.gguf`);
      await writeFile(path, makeGguf({ 'general.architecture': { t: 'str', v: 'llama' }, ...padded(meta, 544, legacy) }));
      const tok = await withGguf(path, async (f) => tokenizerFromGguf(f));
      expect(tokenizerFingerprint(tok.tokenizerJson), `legacy ${legacy}`).to.equal(unpadded);
      const hf = new Tokenizer(tok.tokenizerJson, tok.tokenizerConfig);
      const theirs = await llamaCppTokenize(path, TEXTS);
      TEXTS.forEach((t, i) => expect(hf.encode(t, { add_special_tokens: false }).ids, `legacy ${legacy}: ${JSON.stringify(t)}`).to.deep.equal(theirs[i]));
    }
  });

  it('a padded model never samples or prints a padding id, though its logits favour them (BPE and SentencePiece)', async () => {
    const bpe = bpeTokenizerMeta('qwen2');
    const models: [string, RandomGgufSpec, Record<string, WValue>, number[]][] = [
      ['bpe', { arch: 'qwen2', hidden: 64, layers: 2, heads: 4, kvHeads: 2, ff: 96, qkvBias: true, untied: true, seed: 51 }, bpe, [100, 101, 102]],
      ['spm', { arch: 'llama', hidden: 48, layers: 2, heads: 4, kvHeads: 2, ff: 96, untied: true, seed: 52 }, await storiesTokenizerMeta(), [1, 403, 407]],
    ];
    for (const [name, spec, meta, prompt] of models) {
      const real = items(meta, 'tokenizer.ggml.tokens').length;
      const path = join(scratch.dir, `${name}-favours-pads.gguf`);
      await writePadFavouring(path, spec, padded(meta, real + 64), real);
      const engine = await Engine.load({ model: path });
      try {
        expect(engine.info.vocabSize, name).to.equal(real + 64);
        expect(engine.info.sharedVocabSize, name).to.equal(real);
        const greedy = await engine.generate({ promptIds: prompt }, { maxTokens: 8, ignoreEos: true });
        const sampled = await engine.generate({ promptIds: prompt }, { maxTokens: 8, ignoreEos: true, temperature: 1.5, seed: 3 });
        for (const r of [greedy, sampled]) {
          expect(r.rows[0]!.ids.filter((id) => id >= real), name).to.deep.equal([]);
          expect(r.rows[0]!.text, name).to.not.include('[PAD');
        }
        const bias = await engine.generate({ promptIds: prompt }, { maxTokens: 2, logitBias: { [real + 5]: 100 } }).catch((e: Error) => e);
        expect(bias, name).to.be.instanceOf(SamplingOptionsError);
      } finally {
        await engine.dispose();
      }
    }
  });

  it('a padded GGUF reasoner composes beside an ONNX backbone that ships the model\'s own tokenizer.json', async () => {
    const meta = bpeTokenizerMeta('qwen2');
    const real = items(meta, 'tokenizer.ggml.tokens').length;
    const path = join(scratch.dir, 'qwen-pad-reasoner.gguf');
    await writePadFavouring(path, { arch: 'qwen2', hidden: 64, layers: 2, heads: 4, kvHeads: 2, ff: 96, qkvBias: true, untied: true, seed: 53 }, padded(meta, real + 64), real);
    const backbone = await makeModule({ name: 'qwen-onnx-padded-width', kind: 'backbone', config: storiesConfig({ vocabSize: real + 64, hiddenSize: 64 }), seed: 54, tokenizerFiles: bpeTokenizerFiles() });
    const engine = await Engine.load({ model: backbone, reasoners: [{ model: path, weight: 0.8 }] });
    try {
      expect(engine.info.sharedVocabSize).to.equal(real);
      const r = await engine.generate({ promptIds: [100, 101, 102] }, { maxTokens: 8, ignoreEos: true });
      expect(r.rows[0]!.ids).to.have.length(8);
      expect(r.rows[0]!.ids.filter((id) => id >= real)).to.deep.equal([]);
    } finally {
      await engine.dispose();
    }
  });
});
