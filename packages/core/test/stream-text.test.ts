import { expect } from 'chai';
import { DECODE_LOOK_BEHIND, TextTokenizer } from '../src/tokenizer/tokenizer.js';
import { StreamDecoder } from '../src/tokenizer/stream-decoder.js';
import { StopStringMatcher } from '../src/generate/stop-strings.js';
import { models } from '../../../test/support/paths.js';
import { storiesModule } from './support/modules.js';

describe('incremental detokenization', () => {
  let tok: TextTokenizer;
  before(async () => {
    tok = await TextTokenizer.fromDirectory(models.llamaFp16);
  });

  it('reads special ids from the tokenizer files, not from genai_config.json', () => {
    expect(tok.bosTokenId).to.equal(1);
    expect(tok.eosTokenIds).to.deep.equal([2]);
    expect(tok.addsBos).to.equal(true);
  });

  for (const text of ['Hello world, how are you?', 'naïve café – 日本語 😀 done', '  two  spaces\nnew line', '🦙🦙']) {
    it(`streams ${JSON.stringify(text)} piecewise to exactly the decoded text, never half a character`, () => {
      const ids = tok.encode(text, false);
      const decoder = new StreamDecoder((x) => tok.decode(x));
      const pieces = ids.map((id) => decoder.push(id));
      pieces.push(decoder.flush());
      for (const p of pieces) expect(p).to.not.include('\uFFFD');
      expect(pieces.join('')).to.equal(tok.decode(ids));
    });
  }

  it('holds back the bytes of a character split over byte-fallback tokens', () => {
    const ids = tok.encode('😀', false);
    expect(ids.length).to.be.greaterThan(2); // byte fallback: ▁ plus four <0xNN> tokens
    const decoder = new StreamDecoder((x) => tok.decode(x));
    const pieces = ids.map((id) => decoder.push(id));
    expect(pieces.slice(0, -1).join('')).to.not.include('😀');
    expect(pieces.join('')).to.equal('😀');
  });
});

describe('incremental detokenization with a byte view', () => {
  it('gives bytes that can be no character, and a U+FFFD written out, with their own token, as the tokens are named', async () => {
    const tok = await TextTokenizer.fromDirectory(await storiesModule());
    const byte = (b: number) => tok.tokenId(`<0x${b.toString(16).toUpperCase()}>`)!;
    // `Hi`, a lone continuation byte, `A`, U+FFFD spelt out (EF BF BD), then 你 (E4 BD A0)
    const ids = [...tok.encode('Hi', false), byte(0x98), tok.tokenId('A')!, byte(0xef), byte(0xbf), byte(0xbd), byte(0xe4), byte(0xbd), byte(0xa0)];
    const pieces = (decoder: StreamDecoder) => [...ids.map((id) => decoder.push(id)), decoder.flush()];
    const names = ids.map((id, j) => tok.textsAfter(ids.slice(Math.max(0, j - DECODE_LOOK_BEHIND), j), [id], true)[0]!);
    expect(names).to.deep.equal(['H', 'i', '\uFFFD', 'A', '', '', '\uFFFD', '', '', '你']);
    expect(pieces(new StreamDecoder(tok.replyDecoder()))).to.deep.equal([...names, '']);
    // Without one, any U+FFFD at the end may be a character not finished yet: it waits for the next token.
    expect(pieces(new StreamDecoder((x) => tok.decode(x)))).to.deep.equal(['H', 'i', '', '\uFFFDA', '', '', '', '', '', '\uFFFD你', '']);
  });
});

describe('stop strings', () => {
  it('finds a stop string completed across pieces, only in the unchecked tail, and says which', () => {
    const m = new StopStringMatcher(['###', 'END']);
    expect(m.find('abc#', 0)).to.equal(undefined);
    expect(m.find('abc###x', 4)).to.deep.equal({ at: 3, stop: '###' });
    expect(m.find('END then more', 13)).to.equal(undefined); // already checked past it
    expect(m.find('xxEND', 3)).to.deep.equal({ at: 2, stop: 'END' });
    // the earliest in the text, whatever the order given
    expect(new StopStringMatcher(['END', '###']).find('a###END', 0)).to.deep.equal({ at: 1, stop: '###' });
  });

  it('holds back the longest tail that could still become a stop string', () => {
    const m = new StopStringMatcher(['</answer>', 'STOP']);
    expect(m.holdback('result </ans')).to.equal(5);
    expect(m.holdback('result ST')).to.equal(2);
    expect(m.holdback('result')).to.equal(0);
    expect(m.holdback('STOP')).to.equal(0); // complete matches are found, not held
  });
});

describe('incremental detokenization after a prompt', () => {
  it('keeps the leading space of the first generated word', async () => {
    const tok = await TextTokenizer.fromDirectory(models.llamaFp16);
    const prompt = tok.encode('Once upon');
    const generated = tok.encode('Once upon a time', true).slice(prompt.length);
    const decoder = new StreamDecoder((x) => tok.decode(x), prompt);
    const text = generated.map((id) => decoder.push(id)).join('') + decoder.flush();
    expect(text).to.equal(' a time');
  });
});
