/**
 * Characters split over tokens, on stories260K's byte-fallback vocabulary and on a byte-level BPE one: scripted
 * backbones write a reply of CJK, emoji and a U+FFFD the model spells out (`EF BF BD`), then a lone first byte of a
 * character (`C3`), then EOS. Log-probability entries name each piece nothing and the token completing a character
 * that character, with no U+FFFD of the bytes before it; the reply's text is its tokens' decode whatever ends it
 * (EOS, a stop token id, the token limit), streamed or not, on the continuous batch and the decode loop.
 */
import { expect } from 'chai';
import { Engine, type StreamOptions } from '../src/engine.js';
import type { RowResult } from '../src/generate/types.js';
import { DECODE_LOOK_BEHIND, TextTokenizer } from '../src/tokenizer/tokenizer.js';
import { cacheDir } from './support/models.js';
import { scriptedModule } from './support/modules.js';

/** Whole characters, each split over several tokens in both vocabularies, and a U+FFFD written out. */
const REPLY = 'Hi 你好世界 👩🏽 a\uFFFD';
/** The byte the reply ends on: the first of a two-byte character (é), which no later token completes. */
const LONE = 0xc3;

/** The continuous batch (a plain call) and the decode loop (a traced call runs alone through it). */
const PATHS = [
  ['the continuous batch', {}],
  ['the decode loop', { trace: 1 }],
] as const;

interface Scripted {
  engine: Engine;
  tokenizer: TextTokenizer;
  prompt: number[];
  /** The reply's ids: REPLY's, then LONE's. */
  ids: number[];
  lone: number;
}

/** A backbone over the vocabulary that answers `prompt` with REPLY's tokens, LONE's, then EOS. */
async function scripted(name: string, bpe: boolean): Promise<Scripted> {
  let lone = 0;
  const made = await scriptedModule(
    name,
    'Q:',
    (tokenizer) => {
      lone = [...Array(tokenizer.vocabSize).keys()].find((id) => tokenizer.tokenBytes(id)?.join() === String(LONE))!;
      return [...tokenizer.encode(REPLY, false), lone];
    },
    { bpe, eosRun: 200 },
  );
  return { engine: await Engine.load({ model: made.dir, cacheDir }), tokenizer: made.tokenizer, prompt: made.promptIds, ids: made.replyIds, lone };
}

async function reply(s: Scripted, options: StreamOptions): Promise<{ row: RowResult; streamed: string }> {
  const stream = s.engine.stream({ promptIds: s.prompt }, options);
  let streamed = '';
  for await (const token of stream) streamed += token.text;
  return { row: (await stream.result).rows[0]!, streamed };
}

for (const [vocabulary, bpe] of [['byte-fallback', false], ['byte-level BPE', true]] as const) {
  describe(`characters split over tokens (${vocabulary} vocabulary)`, function () {
    this.timeout(120_000);
    let s: Scripted;
    before(async () => {
      s = await scripted(bpe ? 'split-chars-bpe' : 'split-chars-sp', bpe);
      // The script is as meant: pieces of characters, and the lone byte last.
      expect(s.ids.some((id) => s.tokenizer.decode([id]).includes('\uFFFD'))).to.equal(true);
      expect(s.tokenizer.decode(s.ids)).to.equal(s.tokenizer.decode(s.tokenizer.encode(REPLY, false)) + '\uFFFD');
    });
    after(() => s?.engine.dispose());

    it('names each token by the text it adds after the few before it: a piece nothing, the token completing a character the character', () => {
      const names = s.ids.map((id, j) => s.tokenizer.textsAfter(s.ids.slice(Math.max(0, j - DECODE_LOOK_BEHIND), j), [id], true)[0]!);
      // Joined, the reply's text but for the character left unfinished; each character once, whole.
      expect(names.join('')).to.equal(s.tokenizer.decode(s.ids).slice(0, -1));
      for (const ch of ['你', '好', '世', '界', '👩', '🏽']) expect(names, ch).to.include(ch);
      expect(names.filter((n) => n.includes('\uFFFD'))).to.deep.equal(['\uFFFD']);
      expect(names.at(-1)).to.equal('');
    });

    for (const [path, extra] of PATHS) {
      it(`names the tokens of a reply so on ${path}`, async () => {
        const { row } = await reply(s, { ...extra, maxTokens: 60, logprobs: 1 });
        const entries = row.logprobs!.slice(0, s.ids.length);
        expect(entries.map((e) => e.id)).to.deep.equal(s.ids);
        expect(entries.map((e) => e.token).join('')).to.equal(row.text.slice(0, -1));
        for (const e of entries) if (e.token !== '\uFFFD') expect(e.token, `token ${e.id}`).to.not.include('\uFFFD');
        // A piece's bytes are its own: joined, the reply's.
        expect(Buffer.from(entries.flatMap((e) => e.bytes!)).toString('utf8')).to.equal(row.text);
      });

      it(`ends a reply with its tokens' decode whatever ends it, streamed as in the result, on ${path}`, async () => {
        // (after the prompt: a word's leading space as it reads there)
        const whole = s.tokenizer.decode([...s.prompt, ...s.ids]).slice(s.tokenizer.decode(s.prompt).length);
        const cases: [StreamOptions, RowResult['finishReason'], string][] = [
          // The unfinished character shows as U+FFFD at EOS as at the token limit; the model's own U+FFFD stays.
          [{ maxTokens: 60 }, 'eos', whole],
          [{ maxTokens: s.ids.length }, 'length', whole],
          [{ maxTokens: 60, stopTokenIds: [s.lone] }, 'stop', whole.slice(0, -1)],
          [{ maxTokens: 60, stopTokenIds: [s.lone], includeStopString: true }, 'stop', whole],
        ];
        for (const [options, finish, text] of cases) {
          const { row, streamed } = await reply(s, { ...extra, ...options });
          expect([row.finishReason, row.text, streamed], JSON.stringify(options)).to.deep.equal([finish, text, text]);
        }
      });
    }
  });
}
