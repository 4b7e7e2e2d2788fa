/**
 * Byte-level BPE vocabularies from GGUF files: for each pre-tokenizer the converter supports, text
 * tokenizes to the same ids as llama.cpp's tokenizer on the same file; the chat template travels into
 * tokenizer_config.json and its rendering tokenizes like llama.cpp with special tokens parsed.
 */
import { expect } from 'chai';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { GgufError, withGguf } from '../src/gguf/reader.js';
import { tokenizerFromGguf } from '../src/gguf/tokenizer-from-gguf.js';
import { TextTokenizer } from '../src/tokenizer/tokenizer.js';
import { makeGguf, type WValue } from './support/gguf-writer.js';
import { bpeTokenizerMeta, plain } from './support/bpe-vocab.js';
import { llamaCpp, llamaCppTokenize, storiesTokenizerMeta } from './support/gguf-models.js';
import { useTempDir } from './support/temp-cache.js';
import { createRng } from '../src/sampling/index.js';

const TEXTS = [
  'Hello, world! How are you?',
  'The year 2024 had 366 days; 1234567 + 89 = 1234656.',
  "It's what they're doing: we'll see, you've been, I'M HERE, he'd go.",
  '  leading spaces',
  'trailing spaces   ',
  'multiple    spaces   between\t\ttabs',
  'line one\nline two\n\n\nline four\r\nwindows',
  'Done.\nNext.\r\nEnd.',
  '    indented code\n        more\n',
  'café naïve résumé Éric über straße',
  // (a combining acute after a letter: Qwen3.5's expression keeps it in the word, Qwen's splits it off)
  'cafe\u0301 re\u0301sume\u0301',
  '日本語のテキスト 東京 2023年 ²³ ٣٤',
  'emoji 🎉🚀 and 👩‍👩‍👧 family ≤≥÷ ™ £ € — “quotes”',
  'numbers: 3.14159, 1e-5, 0x1F, 100%, $42.50, 007, 1,000,000',
  '!!!??? ... --- ((()))',
  'CamelCaseWords HTTPServer iPhone ÉcoleNormale ΑθήναΠόλη path/to/file.txt',
  'a',
  ' ',
  '\n',
  // spaces beyond ASCII beside blanks, words, punctuation and CJK (llama.cpp reads each as U+000B in its expressions
  // without \p{…} classes, so they fall in no literal range there: DeepSeek's CJK and punctuation ranges span them)
  '\u2009 ',
  ' \u2009',
  '\u2028 ',
  '  \u3000',
  '\u3000  ',
  'Vraiment\u202f?',
  '\u2009word \u2028म 日\u3000本 a\u00a0b\u205f\u1680c \u2029\u0085',
];

/** Random texts joined from pieces of many scripts and classes: contractions, spaces of every kind, digits, marks, emoji. */
function randomTexts(count: number): string[] {
  const pieces = ['a', 'Z', 'hello', 'World', "'s", "'T", "'re", "'LL", ' ', '  ', '\t', '\n', '\r\n', '\u00a0', '\u3000', '\u2009', '1', '23', '4567', '½', '²', '٣',
    '.', ',', '!?', '...', '—', '“', '(', ')', '#', '$', '%', '&', '_', 'é', 'ß', 'Ω', 'Ж', 'ж', 'ع', '日本', 'の', '한국', 'ก', '\u0301', '🎉',
    '👩\u200d👩\u200d👧', '🇫🇷', 'x\u200dy', '\ufeff', '<', '>', '/', '\\', '`', '~', '^', '|', 'A1', 'b2c'];
  const rng = createRng(3);
  return Array.from({ length: count }, () => Array.from({ length: 1 + Math.floor(rng() * 12) }, () => pieces[Math.floor(rng() * pieces.length)]).join(''));
}

/** Merges of the byte-level forms of U+2009, U+2028, U+202F and U+3000, alone and with a blank, a word or "?" beside them. */
const SPACE_MERGES = ['â Ģ', 'âĢ ī', 'âĢ ¨', 'âĢ ¯', 'ã Ģ', 'ãĢ Ģ', 'âĢī Ġ', 'Ġ âĢī', 'âĢ¨ Ġ', 'ĠĠ ãĢĢ', 'Ġ ãĢĢ', 'ãĢĢ Ġ', 'âĢ¯ ?', 'âĢī w', 'âĢ¨ à'];

const QWEN_TEMPLATE =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/** A GGUF with a vocabulary and the few model keys llama.cpp reads before it. */
function vocabGguf(tokenizer: Record<string, WValue>): Buffer {
  return makeGguf({ 'general.architecture': { t: 'str', v: 'qwen2' }, ...tokenizer });
}

/** The items of an array key of a vocabulary's metadata. */
function metaArray(meta: Record<string, WValue>, key: string): WValue[] {
  const v = meta[key]!;
  if (v.t !== 'arr') throw new Error(key);
  return v.v;
}

/** Appends `merges` to a vocabulary's metadata, with the pieces they make where it lacks them. */
function withMerges(meta: Record<string, WValue>, merges: readonly string[]): Record<string, WValue> {
  const has = (key: string, v: string) => metaArray(meta, key).some((w) => w.t === 'str' && w.v === v);
  for (const m of merges) {
    if (!has('tokenizer.ggml.merges', m)) metaArray(meta, 'tokenizer.ggml.merges').push({ t: 'str', v: m });
    const piece = m.replace(' ', '');
    if (!has('tokenizer.ggml.tokens', piece)) {
      metaArray(meta, 'tokenizer.ggml.tokens').push({ t: 'str', v: piece });
      metaArray(meta, 'tokenizer.ggml.token_type').push({ t: 'i32', v: 1 });
    }
  }
  return meta;
}

/** Appends `extra` to a vocabulary's metadata as control tokens; returns the first one's id. */
function withControlTokens(meta: Record<string, WValue>, extra: readonly string[]): number {
  const arr = (key: string) => metaArray(meta, key);
  const first = arr('tokenizer.ggml.tokens').length;
  arr('tokenizer.ggml.tokens').push(...extra.map((v): WValue => ({ t: 'str', v })));
  arr('tokenizer.ggml.token_type').push(...extra.map((): WValue => ({ t: 'i32', v: 3 })));
  return first;
}
describe('gguf tokenizers: BPE pre-tokenizers, SentencePiece options, special tokens (llama.cpp is the reference)', function () {
  this.timeout(60_000);
  const scratch = useTempDir('reasonplug-gguf-bpe-');

  for (const pre of ['qwen2', 'llama-bpe', 'smollm', 'tekken', 'gpt-4o', 'falcon3', 'pixtral', 'dbrx', 'refact', 'exaone', 'exaone4', 'command-r', 'olmo', 'mpt', 'glm4', 'chatglm-bpe', 'deepseek-llm', 'deepseek-coder', 'stablelm2', 'phi-2', 'seed-coder', 'deepseek-v3', 'bailingmoe2', 'lfm2', 'falcon-h1', 'qwen35']) {
    it(`"${pre}": text tokenizes to llama.cpp's ids`, async () => {
      const path = join(scratch.dir, `${pre}.gguf`);
      // (a piece of "." and a newline: Seed-Coder's expression splits them where Qwen's keeps them together; one of "e"
      // and a combining mark's first byte, which Qwen3.5's keeps in one word; pieces of U+2009, U+2028, U+202F and
      // U+3000 with what follows or precedes them, which a split between them would keep apart)
      await writeFile(path, vocabGguf(withMerges(bpeTokenizerMeta(pre, { extraMerges: ['. Ċ', 'e Ì'] }), SPACE_MERGES)));
      const tok = await withGguf(path, async (f) => tokenizerFromGguf(f));
      const hf = new Tokenizer(tok.tokenizerJson, tok.tokenizerConfig);
      const ours = TEXTS.map((t) => hf.encode(t, { add_special_tokens: false }).ids);
      const theirs = await llamaCppTokenize(path, TEXTS);
      TEXTS.forEach((t, i) => expect(ours[i], JSON.stringify(t)).to.deep.equal(theirs[i]));
      const random = randomTexts(200);
      const theirsRandom = await llamaCppTokenize(path, random);
      random.forEach((t, i) => expect(hf.encode(t, { add_special_tokens: false }).ids, JSON.stringify(t)).to.deep.equal(theirsRandom[i]));
      // the pre-tokenizers differ on digits: the vocabulary has multi-digit pieces, so the ids must differ too
      expect(ours[1]!.length).to.be.lessThan(Buffer.byteLength(TEXTS[1]!));
      // decoding gives the text back (Llama 3 cleans up spaces before punctuation, as llama.cpp's clean_spaces does)
      if (!tok.tokenizerConfig.clean_up_tokenization_spaces) {
        for (const [i, t] of TEXTS.entries()) expect(hf.decode(ours[i]!, { skip_special_tokens: false }), JSON.stringify(t)).to.equal(t);
      }
    });
  }

  it("adds a BOS by default where llama.cpp does, for each pre-tokenizer whose file does not say (Llama 3's family yes, DeepSeek's no)", async () => {
    const llama = await llamaCpp();
    const defaults: Record<string, boolean> = {};
    const theirs: Record<string, boolean> = {};
    for (const pre of ['qwen2', 'llama-bpe', 'smollm', 'falcon3', 'pixtral', 'dbrx', 'deepseek-llm', 'deepseek-coder', 'deepseek-v3', 'lfm2', 'glm4']) {
      const path = join(scratch.dir, `bos-${pre}.gguf`);
      await writeFile(path, vocabGguf(bpeTokenizerMeta(pre)));
      defaults[pre] = (await withGguf(path, async (f) => tokenizerFromGguf(f))).tokenizerConfig.add_bos_token === true;
      const model = await llama.loadModel({ modelPath: path, vocabOnly: true });
      theirs[pre] = model.tokens.shouldPrependBosToken;
      await model.dispose();
    }
    expect(defaults).to.deep.equal(theirs);
    expect(Object.values(theirs)).to.include.members([true, false]);
  });

  it("gives each token's own bytes, joined the text's UTF-8, where a token alone decodes to U+FFFD (byte-level and byte-fallback)", async () => {
    const path = join(scratch.dir, 'bytes-qwen2.gguf');
    await writeFile(path, vocabGguf(bpeTokenizerMeta('qwen2')));
    const tok = await withGguf(path, async (f) => tokenizerFromGguf(f));
    const dir = join(scratch.dir, 'bytes-qwen2');
    await import('node:fs/promises').then((fs) => fs.mkdir(dir, { recursive: true }));
    await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(tok.tokenizerJson));
    const stories = await TextTokenizer.fromDirectory(await (await import('./support/modules.js')).storiesModule());
    for (const tokenizer of [await TextTokenizer.fromDirectory(dir), stories]) {
      for (const text of ['😀 日本 café', 'naïve ✓ x']) {
        const ids = tokenizer.encode(text, false);
        expect(ids.some((id) => tokenizer.decode([id], false).includes('\uFFFD')), 'some token holds part of a character').to.equal(true);
        expect(Buffer.from(ids.flatMap((id) => tokenizer.tokenBytes(id)!)).toString('utf8').trimStart(), text).to.equal(text);
      }
    }
  });

  it('splits digits as each pre-tokenizer does (qwen2 one by one, llama-bpe up to three, smollm one by one)', async () => {
    const ids = (pre: string) => {
      const tok = tokenizerFromGguf(Object.fromEntries(Object.entries(bpeTokenizerMeta(pre)).map(([k, v]) => [k, plain(v)])));
      return new Tokenizer(tok.tokenizerJson, tok.tokenizerConfig).encode('1234567', { add_special_tokens: false }).tokens;
    };
    expect(ids('qwen2')).to.deep.equal(['1', '2', '3', '4', '5', '6', '7']);
    expect(ids('smollm')).to.deep.equal(['1', '2', '3', '4', '5', '6', '7']);
    expect(ids('llama-bpe').join('|')).to.match(/^12?3?\|/);
    expect(ids('llama-bpe').every((p: string) => p.length <= 3)).to.equal(true);
  });

  it('adds BOS as llama.cpp does, carries the chat template, and renders it to the ids llama.cpp reads with special tokens', async () => {
    const path = join(scratch.dir, 'chat.gguf');
    await writeFile(path, vocabGguf(bpeTokenizerMeta('qwen2', { addBos: false, chatTemplate: QWEN_TEMPLATE })));
    const tok = await withGguf(path, async (f) => tokenizerFromGguf(f));
    expect(tok.tokenizerConfig.chat_template).to.equal(QWEN_TEMPLATE);
    expect(tok.tokenizerConfig).to.include({ add_bos_token: false, bos_token: '<|endoftext|>', eos_token: '<|im_end|>' });
    const dir = join(scratch.dir, 'chat-tok');
    await rm(dir, { recursive: true, force: true });
    await import('node:fs/promises').then(async (fs) => {
      await fs.mkdir(dir, { recursive: true });
      await fs.writeFile(join(dir, 'tokenizer.json'), JSON.stringify(tok.tokenizerJson));
      await fs.writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify(tok.tokenizerConfig));
    });
    const text = await TextTokenizer.fromDirectory(dir);
    expect(text.addsBos).to.equal(false);
    const rendered = text.applyChatTemplate([
      { role: 'system', content: 'You are terse.' },
      { role: 'user', content: 'What is 12 + 30? <tool_call>' },
    ]);
    expect(rendered).to.contain('<|im_start|>assistant\n');
    const [withSpecials] = await llamaCppTokenize(path, [rendered], true);
    expect(text.encode(rendered, false)).to.deep.equal(withSpecials);
    expect(text.eosTokenIds).to.include(tok.special.eos!);
    // the ids that end generation are llama.cpp's (here <|endoftext|> and <|im_end|>)
    const llamaForEog = await (await import('./support/gguf-models.js')).llamaCpp();
    const vocabModel = await llamaForEog.loadModel({ modelPath: path, vocabOnly: true });
    try {
      const eog = Array.from({ length: tok.tokenizerJson.added_tokens.at(-1)!.id + 1 }, (_, i) => i).filter((i) =>
        vocabModel.isEogToken(i as unknown as import('node-llama-cpp').Token),
      );
      expect(tok.endOfGeneration).to.deep.equal(eog).and.have.length(2);
    } finally {
      await vocabModel.dispose();
    }

    // Llama 3's pre-tokenizer adds BOS unless the file says otherwise, as llama.cpp does.
    const llama3 = tokenizerFromGguf(Object.fromEntries(Object.entries(bpeTokenizerMeta('llama-bpe')).map(([k, v]) => [k, plain(v)])));
    const hf = new Tokenizer(llama3.tokenizerJson, llama3.tokenizerConfig);
    const l3path = join(scratch.dir, 'l3.gguf');
    await writeFile(l3path, vocabGguf(bpeTokenizerMeta('llama-bpe')));
    const llama = await (await import('./support/gguf-models.js')).llamaCpp();
    const model = await llama.loadModel({ modelPath: l3path, vocabOnly: true });
    try {
      expect(llama3.tokenizerConfig.add_bos_token).to.equal(true);
      expect(model.tokens.bos).to.equal(llama3.special.bos);
      expect(hf.encode('Hi there', { add_special_tokens: true }).ids).to.deep.equal([model.tokens.bos!, ...model.tokenize('Hi there')]);
    } finally {
      await model.dispose();
    }
  });

  it('GLM-4 has no BOS unless the file names one, and adds it only when asked, as llama.cpp reads "glm4" vocabularies', async () => {
    const llama = await (await import('./support/gguf-models.js')).llamaCpp();
    for (const [named, addBos] of [[false, undefined], [true, true], [true, undefined]] as const) {
      const meta = bpeTokenizerMeta('glm4', addBos === undefined ? {} : { addBos });
      if (!named) delete meta['tokenizer.ggml.bos_token_id'];
      const path = join(scratch.dir, `glm4-bos-${named}-${addBos}.gguf`);
      await writeFile(path, vocabGguf(meta));
      const tok = await withGguf(path, async (f) => tokenizerFromGguf(f));
      const model = await llama.loadModel({ modelPath: path, vocabOnly: true });
      try {
        expect(tok.special.bos ?? null, `named ${named}`).to.equal(model.tokens.bos).and.to.equal(named ? meta['tokenizer.ggml.bos_token_id']!.v : null);
        expect(tok.tokenizerConfig.add_bos_token).to.equal(model.tokens.shouldPrependBosToken).and.to.equal(addBos === true);
        const hf = new Tokenizer(tok.tokenizerJson, tok.tokenizerConfig);
        const bos = model.tokens.shouldPrependBosToken ? [model.tokens.bos!] : [];
        expect(hf.encode('Hi there', { add_special_tokens: true }).ids).to.deep.equal([...bos, ...model.tokenize('Hi there')]);
      } finally {
        await model.dispose();
      }
    }
  });

  it("finds the fill-in-the-middle tokens, and the tokens that end an infill, as llama.cpp does", async () => {
    const llama = await (await import('./support/gguf-models.js')).llamaCpp();
    const cases: [string, string[], Record<string, number>][] = [
      ['Qwen2.5-Coder', ['<|fim_prefix|>', '<|fim_middle|>', '<|fim_suffix|>', '<|fim_pad|>', '<|repo_name|>', '<|file_sep|>'], {}],
      ['DeepSeek Coder', ['<｜fim▁hole｜>', '<｜fim▁begin｜>', '<｜fim▁end｜>'], {}],
      ['StarCoder 2', ['<fim_prefix>', '<fim_middle>', '<fim_suffix>', '<fim_pad>'], {}],
      // named by id: texts no list holds
      ['by key', ['<|a|>', '<|b|>', '<|c|>', '<|d|>'], { fim_pre: 0, fim_suf: 2, fim_mid: 1, fim_sep: 3 }],
      ['no middle token', ['<|fim_prefix|>', '<|fim_suffix|>'], {}],
    ];
    for (const [name, extra, keys] of cases) {
      const meta = bpeTokenizerMeta('qwen2');
      const first = withControlTokens(meta, extra);
      for (const [key, index] of Object.entries(keys)) meta[`tokenizer.ggml.${key}_token_id`] = { t: 'u32', v: first + index };
      const path = join(scratch.dir, `fim-${name.replace(/\W/g, '')}.gguf`);
      await writeFile(path, vocabGguf(meta));
      const tok = await withGguf(path, async (f) => tokenizerFromGguf(f));
      const dir = join(scratch.dir, `fim-${name.replace(/\W/g, '')}`);
      await import('node:fs/promises').then(async (fs) => {
        await fs.mkdir(dir, { recursive: true });
        await fs.writeFile(join(dir, 'tokenizer.json'), JSON.stringify(tok.tokenizerJson));
        await fs.writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify(tok.tokenizerConfig));
      });
      const ours = (await TextTokenizer.fromDirectory(dir)).fimTokens;
      const model = await llama.loadModel({ modelPath: path, vocabOnly: true });
      try {
        const { prefix, suffix, middle } = model.tokens.infill;
        expect(middle === null, name).to.equal(name === 'no middle token');
        if (middle === null) expect(ours, name).to.equal(undefined);
        else expect(ours, name).to.deep.equal({ prefix, suffix, middle });
        const eog = Array.from({ length: first + extra.length }, (_, i) => i).filter((i) => model.isEogToken(i as unknown as import('node-llama-cpp').Token));
        expect(tok.endOfGeneration, name).to.deep.equal(eog);
      } finally {
        await model.dispose();
      }
    }
  });

  it("ends generation where llama.cpp does for OpenAI's harmony tokens (gpt-oss): at <|return|> and <|call|>, not at <|end|>", async () => {
    const llama = await (await import('./support/gguf-models.js')).llamaCpp();
    const harmony = ['<|start|>', '<|channel|>', '<|message|>', '<|end|>', '<|return|>', '<|call|>', '<|constrain|>'];
    // [label, control tokens added]: with <|return|> and <|call|>, <|end|> closes a message only; without them, a turn.
    const cases: [string, string[]][] = [
      ['harmony', harmony],
      ['<|end|> without <|call|>', harmony.filter((t) => t !== '<|call|>')],
    ];
    for (const [name, extra] of cases) {
      const meta = bpeTokenizerMeta('gpt-4o');
      const first = withControlTokens(meta, extra);
      const path = join(scratch.dir, `eog-${name.replace(/\W/g, '')}.gguf`);
      await writeFile(path, vocabGguf(meta));
      const tok = await withGguf(path, async (f) => tokenizerFromGguf(f));
      const model = await llama.loadModel({ modelPath: path, vocabOnly: true });
      try {
        // llama.cpp's own llama_vocab_is_eog, what its generation stops at (node-llama-cpp's isEogToken adds the EOT id,
        // which llama.cpp finds by text, "<|end|>" among them, before it drops that from the list)
        const native = (model as unknown as { _model: { isEogToken(t: number): boolean } })._model;
        const eog = Array.from({ length: first + extra.length }, (_, i) => i).filter((i) => native.isEogToken(i));
        expect(tok.endOfGeneration, name).to.deep.equal(eog);
        expect(eog.includes(first + extra.indexOf('<|end|>')), name).to.equal(name !== 'harmony');
      } finally {
        await model.dispose();
      }
    }
  });

  it('Phi-3: special tokens swallow the whitespace after them, as llama.cpp reads models of that name', async () => {
    const meta = await storiesTokenizerMeta();
    const extra = ['<|endoftext|>', '<|user|>', '<|assistant|>', '<|end|>'];
    const push = (key: string, values: WValue[]) => {
      const arr = meta[key]!;
      if (arr.t !== 'arr') throw new Error(key);
      arr.v.push(...values);
    };
    push('tokenizer.ggml.tokens', extra.map((v) => ({ t: 'str', v })));
    push('tokenizer.ggml.scores', extra.map(() => ({ t: 'f32', v: 0 })));
    push('tokenizer.ggml.token_type', extra.map(() => ({ t: 'i32', v: 3 })));
    const texts = ['<|user|>\nOnce upon a time<|end|>\n<|assistant|>\n', '<s> <|user|>  a\n\n<|endoftext|> b </s> c'];
    for (const name of ['Phi-3-mini-4k-instruct', 'Stories']) {
      const path = join(scratch.dir, `${name}.gguf`);
      await writeFile(path, makeGguf({ 'general.architecture': { t: 'str', v: 'phi3' }, 'general.name': { t: 'str', v: name }, ...meta }));
      const tok = await withGguf(path, async (f) => tokenizerFromGguf(f));
      const hf = new Tokenizer(tok.tokenizerJson, tok.tokenizerConfig);
      const theirs = await llamaCppTokenize(path, texts, true);
      texts.forEach((t, i) => expect(hf.encode(t, { add_special_tokens: false }).ids, `${name}: ${JSON.stringify(t)}`).to.deep.equal(theirs[i]));
    }
  });

  it('SentencePiece with and without the space prefix (Gemma writes add_space_prefix false) tokenizes like llama.cpp', async () => {
    for (const prefix of [true, false]) {
      const meta = { ...(await storiesTokenizerMeta()), 'tokenizer.ggml.add_space_prefix': { t: 'bool', v: prefix } as WValue };
      const path = join(scratch.dir, `spm-${prefix}.gguf`);
      await writeFile(path, makeGguf({ 'general.architecture': { t: 'str', v: 'gemma2' }, ...meta }));
      const tok = await withGguf(path, async (f) => tokenizerFromGguf(f));
      const hf = new Tokenizer(tok.tokenizerJson, tok.tokenizerConfig);
      const theirs = await llamaCppTokenize(path, TEXTS);
      TEXTS.forEach((t, i) => expect(hf.encode(t, { add_special_tokens: false }).ids, `prefix ${prefix}: ${JSON.stringify(t)}`).to.deep.equal(theirs[i]));
    }
  });

  it("SentencePiece without BOS and EOS ids takes llama.cpp's defaults (BOS 1, EOS 2, UNK 0) and adds the BOS as it does", async () => {
    const meta = await storiesTokenizerMeta();
    delete meta['tokenizer.ggml.bos_token_id'];
    delete meta['tokenizer.ggml.eos_token_id'];
    const path = join(scratch.dir, 'spm-no-ids.gguf');
    await writeFile(path, makeGguf({ 'general.architecture': { t: 'str', v: 'llama' }, ...meta }));
    const tok = await withGguf(path, async (f) => tokenizerFromGguf(f));
    const model = await (await llamaCpp()).loadModel({ modelPath: path, vocabOnly: true });
    try {
      expect(tok.special).to.deep.equal({ bos: model.tokens.bos, eos: model.tokens.eos, unk: 0 });
      expect(tok.tokenizerConfig).to.include({ bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>', add_bos_token: model.tokens.shouldPrependBosToken });
      expect(tok.endOfGeneration).to.include(model.tokens.eos);
      const hf = new Tokenizer(tok.tokenizerJson, tok.tokenizerConfig);
      for (const t of TEXTS) expect(hf.encode(t, { add_special_tokens: true }).ids, JSON.stringify(t)).to.deep.equal([model.tokens.bos, ...model.tokenize(t)]);
    } finally {
      await model.dispose();
    }
  });

  it('a BOS or EOS id outside the vocabulary counts as none named: the defaults stand (llama.cpp: "bad special token … using default id")', async () => {
    const u32 = (v: number): WValue => ({ t: 'u32', v });
    for (const base of [bpeTokenizerMeta('llama-bpe'), await storiesTokenizerMeta()]) {
      const absent = { ...base };
      delete absent['tokenizer.ggml.bos_token_id'];
      delete absent['tokenizer.ggml.eos_token_id'];
      const outside = { ...absent, 'tokenizer.ggml.bos_token_id': u32(1_000_000), 'tokenizer.ggml.eos_token_id': u32(1_000_001) };
      const read = (meta: Record<string, WValue>) => tokenizerFromGguf(Object.fromEntries(Object.entries(meta).map(([k, v]) => [k, plain(v)])));
      const [a, b] = [read(absent), read(outside)];
      expect(b.special).to.deep.equal(a.special);
      expect(b.special.bos, 'a default BOS').to.not.equal(undefined);
      expect(b.tokenizerConfig).to.deep.equal(a.tokenizerConfig);
    }
  });

  it('ranks a merge the file lists twice by its first place, as llama.cpp does', async () => {
    const meta = bpeTokenizerMeta('qwen2');
    const merges = metaArray(meta, 'tokenizer.ggml.merges');
    merges.push(...merges.slice(0, 20));
    const path = join(scratch.dir, 'twice.gguf');
    await writeFile(path, vocabGguf(meta));
    const tok = await withGguf(path, async (f) => tokenizerFromGguf(f));
    const hf = new Tokenizer(tok.tokenizerJson, tok.tokenizerConfig);
    const theirs = await llamaCppTokenize(path, TEXTS);
    TEXTS.forEach((t, i) => expect(hf.encode(t, { add_special_tokens: false }).ids, JSON.stringify(t)).to.deep.equal(theirs[i]));
  });

  it('refuses unknown and missing pre-tokenizers by name', () => {
    const meta = (pre: string | undefined) =>
      Object.fromEntries(Object.entries(bpeTokenizerMeta(pre ?? 'qwen2')).filter(([k]) => pre !== undefined || k !== 'tokenizer.ggml.pre').map(([k, v]) => [k, plain(v)]));
    expect(() => tokenizerFromGguf(meta('viking'))).to.throw(GgufError, /"viking".*qwen2/);
    expect(() => tokenizerFromGguf(meta(undefined))).to.throw(GgufError, /tokenizer\.ggml\.pre/);
  });
});
