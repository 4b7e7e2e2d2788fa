import { expect } from 'chai';
import { readFile, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import * as ort from 'onnxruntime-node';
import { GgufError, GgufFile, GgufValueType, parseGgufHeader, tensorBytesToFloat32, withGguf } from '../src/gguf/reader.js';
import { tokenizerFromGguf, type GgufTokenizer } from '../src/gguf/tokenizer-from-gguf.js';
import { kebabName, moduleName, type ConvertedManifest } from '../src/gguf/convert.js';
import { convertExact, llamaCpp } from './support/gguf-models.js';
import { tokenizerFingerprint } from '../src/tokenizer/fingerprint.js';
import { f16Bits, makeGguf, rewriteGguf, type WValue } from './support/gguf-writer.js';
import { useTempDir } from './support/temp-cache.js';

const STORIES = new URL('../../../../shared/models/stories260K/stories260K.gguf', import.meta.url).pathname;
const STORIES_SHA256 = '270cba1bd5109f42d03350f60406024560464db173c0e387d91f0426d3bd256d';

// ---------------------------------------------------------------------------------------------------
// The reference: SentencePiece BPE as llama.cpp's llm_tokenizer_spm runs it, written independently.

function spmReferenceEncode(text: string, tokens: string[], scores: number[], addBos: number | undefined): number[] {
  const id = new Map<string, number>();
  tokens.forEach((t, i) => {
    if (!id.has(t)) id.set(t, i);
  });
  const out: number[] = addBos !== undefined ? [addBos] : [];
  if (text.length === 0) return out;
  const normalized = ('▁' + text).replaceAll(' ', '▁');
  const symbols = Array.from(normalized); // UTF-8 characters
  for (;;) {
    let best = -1;
    let bestScore = -Infinity;
    for (let i = 0; i + 1 < symbols.length; i++) {
      const tid = id.get(symbols[i]! + symbols[i + 1]!);
      if (tid === undefined) continue;
      if (best < 0 || scores[tid]! > bestScore) {
        best = i;
        bestScore = scores[tid]!;
      }
    }
    if (best < 0) break;
    symbols.splice(best, 2, symbols[best]! + symbols[best + 1]!);
  }
  for (const s of symbols) {
    const tid = id.get(s);
    if (tid !== undefined) {
      out.push(tid);
      continue;
    }
    for (const byte of Buffer.from(s, 'utf8')) {
      const name = `<0x${byte.toString(16).toUpperCase().padStart(2, '0')}>`;
      out.push(id.get(name) ?? 0);
    }
  }
  return out;
}

const TEXTS = [
  'Once upon a time',
  'Once upon a time, there was a little girl named Lily.',
  'Hello, world! How are you?',
  'The year 2024 had 366 days; 3.14159 is pi.',
  '  leading spaces',
  'trailing spaces   ',
  'multiple    spaces   between',
  'line one\nline two\n\nline four',
  'tabs\tand\ttabs',
  'café, naïve, résumé, Éric',
  '日本語のテキスト 日本',
  'emoji 🎉🚀 and 👩‍👩‍👧 family',
  '"Quotes" and \'apostrophes\' - dashes -- (parens) [brackets] {braces}',
  "Tom's dog didn't want to go. It said: \"No!\"",
  'a',
  ' ',
  'aaaaaaaaaaaaaaaaaaaa the the the thethethe',
  'Ω≈ç√∫˜µ≤≥÷ ¡™£¢∞§¶•ªº',
];

// ---------------------------------------------------------------------------------------------------

describe('gguf', function () {
  this.timeout(120_000);
  const scratch = useTempDir('reasonplug-gguf-');

  describe('reader', () => {
    it('reads the header and metadata of stories260K', async () => {
      await withGguf(STORIES, async (f) => {
        expect(f.version).to.equal(3);
        expect(f.alignment).to.equal(32);
        expect(f.dataOffset % 32).to.equal(0);
        expect(f.getString('general.architecture')).to.equal('llama');
        expect(f.getNumber('llama.embedding_length')).to.equal(64);
        expect(f.getNumber('llama.block_count')).to.equal(5);
        expect(f.getNumber('llama.feed_forward_length')).to.equal(172);
        expect(f.getNumber('llama.attention.head_count')).to.equal(8);
        expect(f.getNumber('llama.attention.head_count_kv')).to.equal(4);
        expect(f.getNumber('llama.context_length')).to.equal(2048);
        expect(f.getNumber('llama.attention.layer_norm_rms_epsilon')).to.be.closeTo(1e-5, 1e-9);
        expect(f.getNumber('tokenizer.ggml.bos_token_id')).to.equal(1);
        expect(f.getNumber('tokenizer.ggml.eos_token_id')).to.equal(2);
        expect(f.getString('tokenizer.ggml.model')).to.equal('llama');
        const tokens = f.get('tokenizer.ggml.tokens') as string[];
        expect(tokens).to.have.length(512);
        expect(tokens.slice(0, 4)).to.deep.equal(['<unk>', '<s>', '</s>', '<0x00>']);
        expect(f.metadata.get('tokenizer.ggml.tokens')).to.include({ type: GgufValueType.ARRAY, itemType: GgufValueType.STRING });
        expect(f.metadata.get('tokenizer.ggml.scores')?.itemType).to.equal(GgufValueType.FLOAT32);
        expect(f.metadata.get('tokenizer.ggml.token_type')?.itemType).to.equal(GgufValueType.INT32);
        expect(f.tensors).to.have.length(48); // 9 per layer × 5 + token_embd + output_norm + output
      });
    });

    it('reads tensors with their shapes (ne reversed)', async () => {
      await withGguf(STORIES, async (f) => {
        const embd = f.tensorInfo('token_embd.weight')!;
        expect(embd.dims).to.deep.equal([64, 512]);
        expect(embd.shape).to.deep.equal([512, 64]);
        expect(embd.typeName).to.equal('F32');
        expect(f.tensorInfo('blk.0.attn_k.weight')!.shape).to.deep.equal([32, 64]);
        expect(f.tensorInfo('blk.0.ffn_down.weight')!.shape).to.deep.equal([64, 172]);
        const e = await f.readTensor('token_embd.weight');
        expect(e).to.be.instanceOf(Float32Array);
        expect(e.length).to.equal(512 * 64);
        expect(e[0]).to.be.closeTo(-0.29474878, 1e-7);
        // the values are the file's bytes at the tensor's offset
        const raw = await readFile(STORIES);
        const at = embd.fileOffset;
        expect(e[100]).to.equal(raw.readFloatLE(at + 400));
        expect(e[512 * 64 - 1]).to.equal(raw.readFloatLE(at + (512 * 64 - 1) * 4));
        const out = await f.readTensor('output.weight');
        expect(Buffer.from(out.buffer).equals(Buffer.from(e.buffer))).to.equal(true);
        const norm = await f.readTensor('output_norm.weight');
        expect(norm.length).to.equal(64);
        expect(Array.from(norm).every(Number.isFinite)).to.equal(true);
        // parsing from memory gives the same header
        const h = parseGgufHeader(raw, 'stories260K.gguf');
        expect(h.dataOffset).to.equal(f.dataOffset);
        expect(h.tensors.map((t) => t.fileOffset)).to.deep.equal(f.tensors.map((t) => t.fileOffset));
      });
    });

    it('decodes every metadata value type, custom alignment, F16 and BF16 tensors', async () => {
      const f16Values = [0, 1, -2, 0.5, 65504, -1023 * 2 ** -24, 2 ** -24, Infinity, 1.5, -3.25];
      const f16 = new Uint16Array(f16Values.map(f16Bits));
      const f32 = new Float32Array([1.25, -7, 3.5e10, 0]);
      const bf16 = new Uint16Array(Array.from(new Uint32Array(new Float32Array([1, -2.5, 3e38, 1e-3]).buffer), (u) => u >>> 16));
      const buf = makeGguf(
        {
          'general.architecture': { t: 'str', v: 'test' },
          'general.alignment': { t: 'u32', v: 64 },
          u8: { t: 'u8', v: 200 },
          i8: { t: 'i8', v: -100 },
          u16: { t: 'u16', v: 60000 },
          i16: { t: 'i16', v: -30000 },
          u32: { t: 'u32', v: 4000000000 },
          i32: { t: 'i32', v: -2000000000 },
          f32: { t: 'f32', v: 0.1 },
          f64: { t: 'f64', v: 0.1 },
          u64small: { t: 'u64', v: 12345n },
          u64big: { t: 'u64', v: 2n ** 63n + 5n },
          i64: { t: 'i64', v: -(2n ** 62n) },
          bool: { t: 'bool', v: true },
          str: { t: 'str', v: 'héllo ▁ 日本' },
          'arr.i32': { t: 'arr', item: GgufValueType.INT32, v: [1, -2, 3].map((v) => ({ t: 'i32', v }) as WValue) },
          'arr.str': { t: 'arr', item: GgufValueType.STRING, v: ['a', '', 'ü'].map((v) => ({ t: 'str', v }) as WValue) },
          'arr.empty': { t: 'arr', item: GgufValueType.FLOAT32, v: [] },
          'arr.nested': {
            t: 'arr',
            item: GgufValueType.ARRAY,
            v: [
              { t: 'arr', item: GgufValueType.BOOL, v: [{ t: 'bool', v: false }] },
              { t: 'arr', item: GgufValueType.UINT8, v: [{ t: 'u8', v: 7 }, { t: 'u8', v: 8 }] },
            ],
          },
        },
        [
          { name: 'a.f16', dims: [5, 2], type: 1, data: new Uint8Array(f16.buffer) },
          { name: 'b.f32', dims: [4], type: 0, data: new Uint8Array(f32.buffer) },
          { name: 'c.bf16', dims: [2, 2], type: 30, data: new Uint8Array(bf16.buffer) },
          { name: 'd.iq2_xxs', dims: [256], type: 16, data: new Uint8Array(66) },
        ],
        { alignment: 64 },
      );
      const path = join(scratch.dir, 'types.gguf');
      await writeFile(path, buf);
      await withGguf(path, async (f) => {
        expect(f.alignment).to.equal(64);
        expect(f.dataOffset % 64).to.equal(0);
        const v = f.metadataObject();
        expect(v).to.deep.include({ u8: 200, i8: -100, u16: 60000, i16: -30000, u32: 4000000000, i32: -2000000000 });
        expect(v.f32).to.equal(Math.fround(0.1));
        expect(v.f64).to.equal(0.1);
        expect(v.u64small).to.equal(12345);
        expect(v.u64big).to.equal(2n ** 63n + 5n);
        expect(v.i64).to.equal(-(2n ** 62n));
        expect(v.bool).to.equal(true);
        expect(v.str).to.equal('héllo ▁ 日本');
        expect(v['arr.i32']).to.deep.equal([1, -2, 3]);
        expect(v['arr.str']).to.deep.equal(['a', '', 'ü']);
        expect(v['arr.empty']).to.deep.equal([]);
        expect(v['arr.nested']).to.deep.equal([[false], [7, 8]]);
        expect(f.metadata.get('arr.nested')?.itemType).to.equal(GgufValueType.ARRAY);
        expect(f.metadata.get('u64big')?.type).to.equal(GgufValueType.UINT64);

        expect(f.tensorInfo('a.f16')!.shape).to.deep.equal([2, 5]);
        const a = await f.readTensor('a.f16');
        expect(Array.from(a)).to.deep.equal(f16Values);
        expect(Array.from(await f.readTensor('b.f32'))).to.deep.equal(Array.from(f32));
        expect(Array.from(await f.readTensor('c.bf16'))).to.deep.equal(
          Array.from(new Float32Array(new Uint32Array(Array.from(bf16, (h) => h << 16)).buffer)),
        );
        for (const t of f.tensors) expect(t.fileOffset % 64).to.equal(0);
        const err = await f.readTensor('d.iq2_xxs').catch((e: unknown) => e);
        expect(err).to.be.instanceOf(GgufError);
        expect((err as GgufError).code).to.equal('unsupported-tensor-type');
        expect((err as Error).message).to.match(/IQ2_XXS/).and.match(/F32, F16, BF16, Q4_0/);
        const missing = await f.readTensor('nope').catch((e: unknown) => e);
        expect(missing).to.be.instanceOf(GgufError);
      });
    });

    it('refuses wrong magic, unsupported versions, big-endian files and truncated or corrupt files', async () => {
      const raw = await readFile(STORIES);
      const cases: [string, Buffer, GgufError['code'], RegExp][] = [
        ['magic.gguf', Buffer.concat([Buffer.from('GGML'), raw.subarray(4)]), 'bad-magic', /"GGML".*"GGUF"/],
        ['onnx.gguf', Buffer.from([0x08, 0x07, 0x12, 0x00, 1, 2, 3, 4]), 'bad-magic', /\\x08.*GGUF/],
        ['empty.gguf', Buffer.alloc(0), 'truncated', /0 bytes/],
        ['v1.gguf', Buffer.concat([raw.subarray(0, 4), Buffer.from([1, 0, 0, 0]), raw.subarray(8)]), 'unsupported-version', /version 1.*2 and 3/],
        ['v4.gguf', Buffer.concat([raw.subarray(0, 4), Buffer.from([4, 0, 0, 0]), raw.subarray(8)]), 'unsupported-version', /version 4/],
        ['be.gguf', Buffer.concat([raw.subarray(0, 4), Buffer.from([0, 0, 0, 3]), raw.subarray(8)]), 'big-endian', /big-endian/],
        ['head.gguf', raw.subarray(0, 20), 'truncated', /truncated/],
        ['meta.gguf', raw.subarray(0, 5000), 'truncated', /truncated/],
        ['data.gguf', raw.subarray(0, raw.length - 100), 'truncated', /tensor "blk\.4\.ffn_norm\.weight".*ends at byte/],
        ['half.gguf', raw.subarray(0, raw.length >> 1), 'truncated', /truncated/],
      ];
      // a metadata value type that does not exist
      const badType = Buffer.from(raw);
      const keyLen = Number(badType.readBigUInt64LE(24));
      badType.writeUInt32LE(42, 32 + keyLen);
      cases.push(['type.gguf', badType, 'corrupt', /value type 42/]);
      // a string length larger than the file
      const badLen = Buffer.from(raw);
      badLen.writeBigUInt64LE(2n ** 40n, 24);
      cases.push(['len.gguf', badLen, 'truncated', /truncated or corrupt/]);
      const absurd = Buffer.from(raw);
      absurd.writeBigUInt64LE(2n ** 62n, 24);
      cases.push(['absurd.gguf', absurd, 'corrupt', /implausibly large/]);

      for (const [name, bytes, code, message] of cases) {
        const path = join(scratch.dir, name);
        await writeFile(path, bytes);
        const err = await GgufFile.open(path).then(
          async (f) => {
            await f.close();
            return undefined;
          },
          (e: unknown) => e,
        );
        expect(err, name).to.be.instanceOf(GgufError);
        expect((err as GgufError).code, name).to.equal(code);
        expect((err as Error).message, name).to.match(message);
        expect((err as Error).message, name).to.include(name);
      }
    });

    it('refuses tensor data that overlap, alias another tensor or leave gaps, and metadata keys given twice, as llama.cpp does', async () => {
      const f32 = (n: number) => new Uint8Array(new Float32Array(n).fill(1).buffer);
      const good = makeGguf({ 'general.architecture': { t: 'str', v: 'llama' }, 'general.name': { t: 'str', v: 'abcd' } }, [
        { name: 'first.weight', dims: [16], type: 0, data: f32(16) },
        { name: 'second.weight', dims: [16], type: 0, data: f32(16) },
      ]);
      expect(parseGgufHeader(good).tensors.map((t) => t.offset)).to.deep.equal([0, 64]);
      const offsetAt = good.indexOf(Buffer.from('second.weight')) + 'second.weight'.length + 4 + 8 + 4;
      expect(good.readBigUInt64LE(offsetAt)).to.equal(64n);
      for (const [offset, what] of [[0n, 'alias'], [32n, 'overlap'], [96n, 'gap']] as const) {
        const bad = Buffer.from(good);
        bad.writeBigUInt64LE(offset, offsetAt);
        expect(() => parseGgufHeader(bad, `${what}.gguf`), what).to.throw(GgufError, new RegExp(`${what}\\.gguf.*"second\\.weight" has data offset ${offset}, expected 64\\. "first\\.weight" \\(F32 \\[16\\]\\) needs 64 bytes`));
      }
      // a shape that disagrees with the data written is named, not only the tensor after it
      const shortShape = makeGguf({ 'general.architecture': { t: 'str', v: 'llama' }, 'general.name': { t: 'str', v: 'abcd' } }, [
        { name: 'first.weight', dims: [16], type: 0, data: f32(16) },
        { name: 'second.weight', dims: [16], type: 0, data: f32(16) },
      ]);
      shortShape.writeBigUInt64LE(8n, shortShape.indexOf(Buffer.from('first.weight')) + 'first.weight'.length + 4);
      expect(() => parseGgufHeader(shortShape, 'shape.gguf')).to.throw(GgufError, /"second\.weight" has data offset 64, expected 32\. "first\.weight" \(F32 \[8\]\) needs 32 bytes from offset 0, but the next tensor's data starts 64 bytes after it/);
      // a second key renamed to the first (same length: the file stays well formed)
      const dup = makeGguf({ 'general.architecture': { t: 'str', v: 'llama' }, 'general.architecturX': { t: 'str', v: 'qwen2' } });
      dup.write('general.architecture', dup.lastIndexOf(Buffer.from('general.architecturX')), 'latin1');
      expect(() => parseGgufHeader(dup, 'dup.gguf')).to.throw(GgufError, /dup\.gguf is corrupt: metadata key "general\.architecture" appears twice/);
    });

    it('reads a header larger than the first read window', async () => {
      const many: WValue[] = Array.from({ length: 40_000 }, (_, i) => ({ t: 'str', v: `token-${i}-${'x'.repeat(20)}` }) as WValue);
      const buf = makeGguf({ big: { t: 'arr', item: GgufValueType.STRING, v: many } }, [
        { name: 't', dims: [3], type: 0, data: new Uint8Array(new Float32Array([1, 2, 3]).buffer) },
      ]);
      expect(buf.length).to.be.greaterThan(1 << 20);
      const path = join(scratch.dir, 'big.gguf');
      await writeFile(path, buf);
      await withGguf(path, async (f) => {
        expect((f.get('big') as string[])[39_999]).to.equal(`token-39999-${'x'.repeat(20)}`);
        expect(Array.from(await f.readTensor('t'))).to.deep.equal([1, 2, 3]);
      });
    });
  });

  describe('tokenizer from GGUF', () => {
    let tok: GgufTokenizer;
    let tokenizer: Tokenizer;
    let tokens: string[];
    let scores: number[];
    before(async () => {
      await withGguf(STORIES, async (f) => {
        tok = tokenizerFromGguf(f, { modelMaxLength: 2048 });
        tokens = f.get('tokenizer.ggml.tokens') as string[];
        scores = f.get('tokenizer.ggml.scores') as number[];
      });
      // through JSON, as it is loaded from disk
      tokenizer = new Tokenizer(JSON.parse(JSON.stringify(tok.tokenizerJson)), JSON.parse(JSON.stringify(tok.tokenizerConfig)));
    });

    it('writes a BPE model with byte fallback, the llama normalizer/decoder and special tokens', () => {
      const j = tok.tokenizerJson;
      expect(j.model).to.include({ type: 'BPE', byte_fallback: true, fuse_unk: true, unk_token: '<unk>' });
      expect(Object.keys(j.model.vocab)).to.have.length(512);
      expect(j.model.vocab['<0x0A>']).to.equal(13);
      expect(j.model.vocab['▁Lily']).to.equal(317);
      expect(j.model.merges[0]).to.deep.equal(['▁', 't']); // the highest-scored piece, "▁t"
      expect(j.added_tokens.map((t) => [t.id, t.content, t.special])).to.deep.equal([
        [0, '<unk>', true],
        [1, '<s>', true],
        [2, '</s>', true],
      ]);
      expect(tok.special).to.deep.equal({ bos: 1, eos: 2, unk: 0 });
      expect(tok.tokenizerConfig).to.include({
        add_bos_token: true,
        add_eos_token: false,
        bos_token: '<s>',
        eos_token: '</s>',
        unk_token: '<unk>',
        pad_token: null,
        model_max_length: 2048,
        clean_up_tokenization_spaces: false,
      });
    });

    it('orders merges by the merged piece score, higher first', () => {
      const j = tok.tokenizerJson;
      const s = j.model.merges.map(([a, b]) => scores[j.model.vocab[a + b]!]!);
      for (let i = 1; i < s.length; i++) expect(s[i]).to.be.at.most(s[i - 1]!);
    });

    it('derives merges from a vocabulary holding a piece of 32 Ki characters in a moment (it was cut at each one: a minute; a megabyte-long piece, hours)', async function () {
      this.timeout(10_000);
      const meta = await withGguf(STORIES, async (f) => f.metadataObject());
      const long = 'x'.repeat(2 ** 15);
      const pieces = [...tokens];
      pieces[300] = long; // a normal piece
      const t0 = performance.now();
      const j = tokenizerFromGguf({ ...meta, 'tokenizer.ggml.tokens': pieces }).tokenizerJson;
      expect(performance.now() - t0).to.be.below(5_000);
      expect(j.model.vocab[long]).to.equal(300);
      expect(j.model.merges[0]).to.deep.equal(['▁', 't']);
      expect(j.model.merges.filter(([a, b]) => a + b === long)).to.deep.equal([]);
    });

    it('encodes "Once upon a time" like SentencePiece', () => {
      const e = tokenizer.encode('Once upon a time');
      expect(e.tokens).to.deep.equal(['<s>', '▁Once', '▁upon', '▁a', '▁time']);
      expect(e.ids).to.deep.equal(spmReferenceEncode('Once upon a time', tokens, scores, 1));
    });

    for (const text of TEXTS) {
      it(`matches the SentencePiece reference and round-trips: ${JSON.stringify(text)}`, () => {
        const ids = tokenizer.encode(text).ids;
        expect(ids).to.deep.equal(spmReferenceEncode(text, tokens, scores, 1));
        expect(tokenizer.encode(text, { add_special_tokens: false }).ids).to.deep.equal(ids.slice(1));
        expect(tokenizer.decode(ids, { skip_special_tokens: true })).to.equal(text);
        expect(tokenizer.decode(ids.slice(1))).to.equal(text);
      });
    }

    it('matches the reference on 500 random strings built from vocabulary pieces and odd characters', () => {
      let seed = 12345;
      const rand = (n: number) => {
        seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
        return (seed >>> 8) % n;
      };
      const normal = tokens.slice(259).map((t) => t.replaceAll('▁', ' '));
      const extra = [' ', '  ', '\n', '\t', '.', ',', '!', '?', '"', "'", '0', '7', '42', 'é', 'ß', '日', '🎉', '\u0000', '▁', '<s>'.slice(0, 2)];
      for (let n = 0; n < 500; n++) {
        let text = '';
        const parts = 1 + rand(12);
        for (let i = 0; i < parts; i++) text += rand(4) === 0 ? extra[rand(extra.length)] : normal[rand(normal.length)];
        const ids = tokenizer.encode(text).ids;
        expect(ids, JSON.stringify(text)).to.deep.equal(spmReferenceEncode(text, tokens, scores, 1));
        // a literal "▁" decodes to a space, in SentencePiece too
        expect(tokenizer.decode(ids, { skip_special_tokens: true }), JSON.stringify(text)).to.equal(text.replaceAll('▁', ' '));
      }
    });

    it('uses byte fallback for characters outside the vocabulary', () => {
      const e = tokenizer.encode('🎉', { add_special_tokens: false });
      expect(e.tokens).to.deep.equal(['▁', '<0xF0>', '<0x9F>', '<0x8E>', '<0x89>']);
    });

    it('refuses other tokenizer models', () => {
      expect(() => tokenizerFromGguf({ 'tokenizer.ggml.model': 't5', 'tokenizer.ggml.tokens': ['a'] }))
        .to.throw(GgufError)
        .with.property('message')
        .that.matches(/"t5".*"llama".*"gpt2"/);
      expect(() => tokenizerFromGguf({})).to.throw(GgufError, /tokenizer\.ggml\.model/);
    });

    it('fingerprints the vocabulary independently of the file layout', () => {
      const j = tok.tokenizerJson;
      const fp = tokenizerFingerprint(j);
      expect(fp).to.match(/^sha256:[0-9a-f]{64}$/);
      // the same vocabulary written differently: string merges, reordered keys, different normalizer
      const vocabReversed = Object.fromEntries(Object.entries(j.model.vocab).reverse());
      const other = {
        ...j,
        normalizer: null,
        model: { ...j.model, vocab: vocabReversed, merges: j.model.merges.map(([a, b]) => `${a} ${b}`) },
      };
      expect(tokenizerFingerprint(other)).to.equal(fp);
      const changed = { ...j, model: { ...j.model, merges: j.model.merges.slice(1) } };
      expect(tokenizerFingerprint(changed)).to.not.equal(fp);
      const renamed = { ...j, model: { ...j.model, vocab: { ...j.model.vocab, '▁Lily': 999 } } };
      expect(tokenizerFingerprint(renamed)).to.not.equal(fp);
    });
  });

  describe('convert', () => {
    /** Converts stories260K with `edits` made to its metadata, as `name`.gguf: the refusal, and where the module was to go (no model there). */
    async function editedRefusal(name: string, edits: Record<string, { type: GgufValueType; value: number | string }>): Promise<{ err: GgufError; out: string }> {
      const path = join(scratch.dir, `${name}.gguf`);
      await rewriteGguf(STORIES, path, (meta) => {
        for (const [k, v] of Object.entries(edits)) meta.set(k, v);
      });
      const out = join(scratch.dir, `${name}-out`);
      const err = await convertExact(path, out).catch((e: unknown) => e);
      expect(err, name).to.be.instanceOf(GgufError);
      expect(existsSync(join(out, 'model.onnx')), name).to.equal(false);
      return { err: err as GgufError, out };
    }

    it('names modules in kebab case', () => {
      expect(kebabName('stories260K')).to.equal('stories260k');
      expect(kebabName('TinyLlama 1.1B Chat_v1.0')).to.equal('tiny-llama-1-1b-chat-v1-0');
    });

    it('refuses architectures other than llama, naming them', async () => {
      const path = join(scratch.dir, 'gpt2.gguf');
      await writeFile(path, makeGguf({ 'general.architecture': { t: 'str', v: 'gpt2' } }));
      const err = await convertExact(path, join(scratch.dir, 'gpt2-out')).catch((e: unknown) => e);
      expect(err).to.be.instanceOf(GgufError);
      expect((err as Error).message).to.match(/"gpt2"/).and.match(/"llama"/);
      expect(existsSync(join(scratch.dir, 'gpt2-out', 'reasonplug.json'))).to.equal(false);
    });

    it('refuses tensor types it does not decode, naming the type and the tensor', async () => {
      const raw = Buffer.from(await readFile(STORIES));
      const at = raw.indexOf(Buffer.from('token_embd.weight')) + 'token_embd.weight'.length;
      expect(raw.readUInt32LE(at)).to.equal(2); // n_dims
      raw.writeUInt32LE(16, at + 4 + 16); // type F32 -> IQ2_XXS, a type the converter does not take
      const path = join(scratch.dir, 'q8.gguf');
      await writeFile(path, raw);
      await withGguf(path, async (f) => {
        expect(f.tensorInfo('token_embd.weight')!.typeName).to.equal('IQ2_XXS');
        const err = await f.readTensor('token_embd.weight').catch((e: unknown) => e);
        expect(err).to.be.instanceOf(GgufError).with.property('code', 'unsupported-tensor-type');
      });
      const err = await convertExact(path, join(scratch.dir, 'q8')).catch((e: unknown) => e);
      expect(err).to.be.instanceOf(GgufError).with.property('code', 'unsupported-tensor-type');
      expect((err as Error).message).to.match(/IQ2_XXS/).and.match(/token_embd\.weight/).and.match(/F32, F16/);
    });

    it('refuses settings no model has, naming the key, and writes nothing', async () => {
      const f32 = (value: number) => ({ type: GgufValueType.FLOAT32, value });
      const u32 = (value: number) => ({ type: GgufValueType.UINT32, value });
      const cases: [string, Record<string, { type: GgufValueType; value: number }>, RegExp][] = [
        ['ctx-zero', { 'llama.context_length': u32(0) }, /"llama\.context_length" is 0, expected a positive whole number/],
        ['ctx-frac', { 'llama.context_length': f32(300.5) }, /"llama\.context_length" is 300\.5/],
        ['eps-nan', { 'llama.attention.layer_norm_rms_epsilon': f32(NaN) }, /"llama\.attention\.layer_norm_rms_epsilon" is NaN/],
        ['eps-neg', { 'llama.attention.layer_norm_rms_epsilon': f32(-1e-5) }, /"llama\.attention\.layer_norm_rms_epsilon" is -0\.0000099/],
        ['eps-huge', { 'llama.attention.layer_norm_rms_epsilon': u32(900000000) }, /layer_norm_rms_epsilon" is 900000000, expected a small/],
        ['theta-zero', { 'llama.rope.freq_base': f32(0) }, /"llama\.rope\.freq_base" is 0, expected a positive rope base/],
        ['scale-neg', { 'llama.rope.scaling.factor': f32(-2) }, /"llama\.rope\.scaling\.factor" is -2/],
      ];
      for (const [name, edits, message] of cases) {
        const { err } = await editedRefusal(name, edits);
        expect(err, name).to.have.property('code', 'corrupt');
        expect(err.message, name).to.match(message).and.include(`${name}.gguf`);
      }
    });

    it('refuses a block count past the tensors (or not the file\'s blocks, saying so), KV heads that are no positive count and a key length other than the value length, naming the keys', async () => {
      const i32 = (value: number) => ({ type: GgufValueType.INT32, value });
      const u32 = (value: number) => ({ type: GgufValueType.UINT32, value });
      const cases: [string, Record<string, { type: GgufValueType; value: number }>, RegExp][] = [
        // (a count taken as it is sized per-layer lists by it: a gemma2 file ran out of memory)
        ['blocks-huge', { 'llama.block_count': u32(1e9) }, /"llama\.block_count" is 1000000000, more blocks than the file's 48 tensors/],
        // (stories260K has 5 blocks: one more or one fewer is a missing block or blocks left over, said so)
        ['blocks-more', { 'llama.block_count': u32(6) }, /no tensor "blk\.5\.[^"]+" \(expected shape \[[\d, ]+\]; no tensor of its block, of the 6 that "llama\.block_count" says\)/],
        ['blocks-fewer', { 'llama.block_count': u32(4) }, /tensors the converter does not use: "blk\.4\.[^"]+".* \(blocks past the 4 that "llama\.block_count" says\)/],
        ['kv-negative', { 'llama.attention.head_count_kv': i32(-1) }, /"llama\.attention\.head_count_kv" is -1, expected a positive integer/],
        ['kv-zero', { 'llama.attention.head_count_kv': u32(0) }, /"llama\.attention\.head_count_kv" is 0, expected a positive integer/],
        ['key-length', { 'llama.attention.key_length': u32(16) }, /key length 16 that differs from the value length 8 \("llama\.attention\.key_length", "llama\.attention\.value_length"\)/],
      ];
      for (const [name, edits, message] of cases) {
        const { err, out } = await editedRefusal(name, edits);
        expect(err.message, name).to.match(message).and.include(`${name}.gguf`);
        expect(existsSync(out), name).to.equal(false);
      }
    });

    it("a tokenizer refusal names the file as well as the key", async () => {
      const { err } = await editedRefusal('bogus-tokenizer', { 'tokenizer.ggml.model': { type: GgufValueType.STRING, value: 'bogus' } });
      expect(err.message).to.match(/^bogus-tokenizer\.gguf: .*"bogus"/);
    });

    it('refuses a file without its norm epsilon or context length, naming the key, as llama.cpp does (no guessed default)', async () => {
      for (const key of ['llama.attention.layer_norm_rms_epsilon', 'llama.context_length']) {
        const path = join(scratch.dir, `no-${key}.gguf`);
        await rewriteGguf(STORIES, path, (meta) => meta.delete(key));
        const out = join(scratch.dir, `no-${key}-out`);
        const err = await convertExact(path, out).catch((e: unknown) => e);
        expect(err, key).to.be.instanceOf(GgufError).with.property('code', 'missing-metadata');
        expect((err as Error).message, key).to.include(`is missing the metadata "${key}"`);
        expect(existsSync(join(out, 'model.onnx')), key).to.equal(false);
        const theirs = await (await llamaCpp()).loadModel({ modelPath: path }).then(
          async (m) => (await m.dispose(), 'loaded'),
          (e: unknown) => String(e),
        );
        expect(theirs, 'llama.cpp refuses it too').to.not.equal('loaded');
      }
    });

    it('refuses a token list shorter than the embedding, as llama.cpp does', async () => {
      const path = join(scratch.dir, 'few-tokens.gguf');
      await rewriteGguf(STORIES, path, (meta) => {
        for (const k of ['tokenizer.ggml.tokens', 'tokenizer.ggml.scores', 'tokenizer.ggml.token_type']) {
          const e = meta.get(k)!;
          meta.set(k, { ...e, value: (e.value as unknown[]).slice(0, 400) as never });
        }
      });
      const err = await convertExact(path, join(scratch.dir, 'few-tokens')).catch((e: unknown) => e);
      expect(err).to.be.instanceOf(GgufError);
      expect((err as Error).message).to.match(/the tokenizer has 400 tokens but token_embd\.weight has 512 rows/);
    });

    it('names a module by general.name, else by the file, in the manifest\'s form', async () => {
      const sha = 'ab'.repeat(32);
      expect(moduleName('x.gguf', 'Qwen2.5 0.5B Instruct', undefined, sha)).to.equal('qwen2-5-0-5b-instruct');
      expect(moduleName('story-model.gguf', '故事模型', undefined, sha)).to.equal('story-model');
      expect(moduleName('故事.gguf', '!!!', undefined, sha)).to.equal('gguf-abababababab');
      const long = moduleName('x.gguf', 'word '.repeat(100_000), undefined, sha);
      expect(long.length).to.be.at.most(128);
      expect(long).to.match(/^word-word(-[a-z]+)+$/);
      expect(moduleName('x.gguf', 'Qwen', 'My Module', sha)).to.equal('my-module');
      expect(() => moduleName('x.gguf', 'Qwen', '模型', sha)).to.throw(/"模型" has no Latin letters or digits/);
      // converted, the long name makes a manifest the engine loads
      const path = join(scratch.dir, 'long-name.gguf');
      await rewriteGguf(STORIES, path, (meta) => meta.set('general.name', { type: GgufValueType.STRING, value: '长'.repeat(50) + ' Story '.repeat(40_000) }));
      const res = await convertExact(path, join(scratch.dir, 'long-name'));
      expect(res.manifest.name).to.match(/^story-story(-[a-z]+)+$/).and.have.length.at.most(128);
      expect(JSON.parse(await readFile(join(res.dir, 'reasonplug.json'), 'utf8')).name).to.equal(res.manifest.name);
    });

    let dir: string;
    let manifest: ConvertedManifest;
    it('converts stories260K into a module directory', async () => {
      const res = await convertExact(STORIES, join(scratch.dir, 'stories'));
      dir = res.dir;
      expect(res.config).to.deep.equal({
        vocabSize: 512,
        hiddenSize: 64,
        numLayers: 5,
        numHeads: 8,
        numKvHeads: 4,
        headDim: 8,
        intermediateSize: 172,
        ropeTheta: 10000,
        rmsNormEps: res.config.rmsNormEps,
        ropeStyle: 'adjacent',
        tieWordEmbeddings: true,
      });
      expect(res.config.rmsNormEps).to.be.closeTo(1e-5, 1e-9);
      manifest = JSON.parse(await readFile(join(dir, 'reasonplug.json'), 'utf8')) as ConvertedManifest;
      expect(manifest).to.deep.equal(res.manifest);
      // 2: the op graph returns new keys and values only (kvOutput 'new').
      expect(manifest).to.include({ schemaVersion: 2, name: 'stories260k', version: '0.1.0', kind: 'backbone', license: 'unknown' });
      expect(manifest.tasks).to.deep.equal([]);
      expect(manifest.description).to.be.a('string').and.not.empty;
      expect(manifest.generation).to.deep.equal({ bosTokenId: 1, eosTokenIds: [2] });
      expect(manifest.provenance.convertedFrom).to.include({ file: 'stories260K.gguf', sha256: STORIES_SHA256 });
      const tj = JSON.parse(await readFile(join(dir, 'tokenizer.json'), 'utf8')) as object;
      expect(manifest.compat).to.deep.equal({ tokenizer: tokenizerFingerprint(tj), vocabSize: 512, hiddenSize: 64 });
      expect(Object.keys(manifest.files).sort()).to.deep.equal(['model', 'tokenizer', 'tokenizerConfig']);
      for (const entry of Object.values(manifest.files)) {
        const bytes = await readFile(join(dir, entry.path));
        expect(entry.size).to.equal(bytes.length);
        expect(entry.sha256).to.equal(createHash('sha256').update(bytes).digest('hex'));
      }
      expect(manifest.files.model.path).to.equal('model.onnx');
      const cfg = JSON.parse(await readFile(join(dir, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
      expect(cfg).to.include({ bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>', add_bos_token: true, model_max_length: 2048 });
      const named = await convertExact(STORIES, join(scratch.dir, 'named'), { name: 'My Stories' });
      expect(named.manifest.name).to.equal('my-stories');
      expect(named.manifest.compat.tokenizer).to.equal(manifest.compat.tokenizer);
    });

    async function greedy(modelPath: string, steps: number, floatType: 'float32' | 'float16'): Promise<number[]> {
      const session = await ort.InferenceSession.create(modelPath);
      try {
        const ids = [1];
        for (let step = 0; step < steps; step++) {
          const S = ids.length;
          const feeds: Record<string, ort.Tensor> = {};
          for (const name of session.inputNames) {
            if (name === 'input_ids') feeds[name] = new ort.Tensor('int64', BigInt64Array.from(ids, BigInt), [1, S]);
            else if (name === 'attention_mask') feeds[name] = new ort.Tensor('int64', new BigInt64Array(S).fill(1n), [1, S]);
            else if (name === 'position_ids') feeds[name] = new ort.Tensor('int64', BigInt64Array.from(ids, (_, i) => BigInt(i)), [1, S]);
            else if (name === 'num_logits_to_keep') feeds[name] = new ort.Tensor('int64', BigInt64Array.from([0n]), []); // 0: every position
            else if (name.startsWith('past_key_values.')) {
              feeds[name] =
                floatType === 'float16'
                  ? new ort.Tensor('float16', new Uint16Array(0), [1, 4, 0, 8])
                  : new ort.Tensor('float32', new Float32Array(0), [1, 4, 0, 8]);
            } else throw new Error(`unexpected input ${name}`);
          }
          const out = await session.run(feeds);
          const logits = out.logits!;
          expect(logits.dims).to.deep.equal([1, S, 512]);
          const V = 512;
          let data: ArrayLike<number> = logits.data as Float32Array;
          if (logits.type === 'float16') {
            const half = logits.data as Uint16Array;
            data = tensorBytesToFloat32(new Uint8Array(half.buffer, half.byteOffset, half.byteLength), 1, S * V);
          }
          let best = 0;
          for (let v = 1; v < V; v++) if (data[(S - 1) * V + v]! > data[(S - 1) * V + best]!) best = v;
          ids.push(best);
        }
        return ids;
      } finally {
        await session.release();
      }
    }

    it('runs the converted model: greedy decoding from BOS tells the story', async () => {
      expect(dir, 'conversion test ran first').to.be.a('string');
      const ids = await greedy(join(dir, 'model.onnx'), 32, 'float32');
      const tj = JSON.parse(await readFile(join(dir, 'tokenizer.json'), 'utf8')) as object;
      const tc = JSON.parse(await readFile(join(dir, 'tokenizer_config.json'), 'utf8')) as object;
      const text = new Tokenizer(tj, tc).decode(ids, { skip_special_tokens: true });
      expect(text.startsWith('Once upon a time, there was a little girl named Lily. She loved to play outside in the park.'), text).to.equal(true);
    });

    it('converts to float16 and still tells the story', async () => {
      const res = await convertExact(STORIES, join(scratch.dir, 'stories-f16'), { dtype: 'float16' });
      const ids = await greedy(join(res.dir, 'model.onnx'), 24, 'float16');
      const tj = JSON.parse(await readFile(join(res.dir, 'tokenizer.json'), 'utf8')) as object;
      const text = new Tokenizer(tj, {}).decode(ids, { skip_special_tokens: true });
      expect(text.startsWith('Once upon a time, there was a little girl named Lily. She loved to play'), text).to.equal(true);
      expect(res.manifest.compat.tokenizer).to.equal(manifest.compat.tokenizer);
      expect(res.manifest.files.model.size).to.be.lessThan(manifest.files.model.size);
    });

    it('converts an F16 GGUF with a separate (untied) output head', async () => {
      const path = join(scratch.dir, 'f16-untied.gguf');
      await rewriteGguf(STORIES, path, (meta, tensors) => {
        meta.set('general.name', { type: GgufValueType.STRING, value: 'Stories F16 Untied' });
        meta.set('general.license', { type: GgufValueType.STRING, value: 'mit' });
        for (const t of tensors.values()) t.type = 1;
        // a positive scale of the head leaves greedy argmax unchanged but makes it differ from the embedding
        const out = tensors.get('output.weight')!;
        out.data = out.data.map((x) => x * 2);
      });
      await withGguf(path, async (f) => expect(f.tensorInfo('blk.0.attn_q.weight')!.typeName).to.equal('F16'));
      const res = await convertExact(path, join(scratch.dir, 'f16-untied'));
      expect(res.config.tieWordEmbeddings).to.equal(false);
      expect(res.manifest).to.include({ name: 'stories-f16-untied', license: 'mit' });
      expect(res.manifest.provenance.convertedFrom.file).to.equal('f16-untied.gguf');
      const ids = await greedy(join(res.dir, 'model.onnx'), 24, 'float32');
      const tj = JSON.parse(await readFile(join(res.dir, 'tokenizer.json'), 'utf8')) as object;
      const text = new Tokenizer(tj, {}).decode(ids, { skip_special_tokens: true });
      expect(text.startsWith('Once upon a time, there was a little girl named Lily. She loved to play'), text).to.equal(true);
      expect(res.manifest.files.model.size).to.be.greaterThan(manifest.files.model.size); // a second [512, 64] matrix
    });

    it('ties embeddings when the GGUF has no output tensor, and checks tensor shapes', async () => {
      const path = join(scratch.dir, 'tied.gguf');
      await rewriteGguf(STORIES, path, (_meta, tensors) => {
        tensors.delete('output.weight');
      });
      const res = await convertExact(path, join(scratch.dir, 'tied'));
      expect(res.config.tieWordEmbeddings).to.equal(true);
      const ids = await greedy(join(res.dir, 'model.onnx'), 8, 'float32');
      expect(ids.slice(0, 5)).to.deep.equal([1, 403, 407, 261, 378]); // <s> Once upon a time

      const bad = join(scratch.dir, 'bad-shape.gguf');
      await rewriteGguf(STORIES, bad, (meta) => {
        meta.set('llama.feed_forward_length', { type: GgufValueType.UINT32, value: 128 });
      });
      const err = await convertExact(bad, join(scratch.dir, 'bad-shape')).catch((e: unknown) => e);
      expect(err).to.be.instanceOf(GgufError);
      expect((err as Error).message).to.match(/blk\.0\.ffn_gate\.weight.*\[172, 64\].*\[128, 64\]/);
    });
  });
});
