/**
 * Offsets of tokens held back together as a stop string's possible start: a scripted backbone writes `END` (the
 * start of the stop string `ENDING`, one token a letter) mid-reply, where the next token shows it is no stop, and
 * `EN` last, released with the end-of-sequence token. Each released token sits where its own text starts, and the
 * end-of-sequence token past the text (so it is not listed), streamed as in the result, on the decode loop and the
 * continuous batch, alone and beside other calls.
 */
import { expect } from 'chai';
import { Engine, type StreamOptions } from '../src/engine.js';
import type { RowResult, TokenLogprobs } from '../src/generate/types.js';
import { shownEntries } from '../src/serve/logprobs.js';
import { cacheDir } from './support/models.js';
import { scriptedModule } from './support/modules.js';

const REPLY = 'Tom saw the END of it. The EN';
const STOP = 'ENDING';
const EOS = 2;

interface Reply {
  row: RowResult;
  /** The entries as streamed (copies made in the worker as each token was posted). */
  streamed: TokenLogprobs[];
}

/** The entries a reply's text shows, each where its own text starts: joined, the text; each after the one before. */
function expectPlaced(row: RowResult, reply: string): void {
  const shown = shownEntries(row.logprobs!, row.text.length);
  const where = shown.map((e) => `${JSON.stringify(e.token)}@${e.offset}`).join(' ');
  expect(shown.map((e) => e.token).join(''), where).to.equal(reply);
  let at = 0;
  for (const e of shown) {
    expect(e.offset, `${JSON.stringify(e.token)} in ${where}`).to.equal(at);
    at += e.token!.length;
  }
}

describe('offsets of tokens held back as a stop string\'s start', function () {
  this.timeout(120_000);
  let engine: Engine;
  let prompt: number[];
  let ids: number[];

  before(async () => {
    const made = await scriptedModule('held-token-offsets', 'Q:', (tokenizer) => tokenizer.encode(REPLY, false));
    ({ promptIds: prompt, replyIds: ids } = made);
    // The stop string's start spelt a letter a token, so that several are held back at once.
    const letters = ['E', 'N', 'D'].map((l) => made.tokenizer.tokenId(l));
    expect(ids.filter((id) => letters.includes(id)).length).to.equal(5);
    engine = await Engine.load({ model: made.dir, cacheDir });
  });
  after(() => engine?.dispose());

  async function reply(options: StreamOptions): Promise<Reply> {
    const stream = engine.stream({ promptIds: prompt }, { maxTokens: 60, logprobs: 1, ...options });
    const streamed: TokenLogprobs[] = [];
    for await (const token of stream) if (token.logprobs) streamed.push(token.logprobs);
    return { row: (await stream.result).rows[0]!, streamed };
  }

  /** A reply that held `END` and `EN` back, each released whole: every token placed, EOS past the text. */
  function expectReleased({ row, streamed }: Reply): void {
    expect([row.finishReason, row.text.trimStart()]).to.deep.equal(['eos', REPLY]);
    expect(row.logprobs!.map((e) => e.id)).to.deep.equal([...ids, EOS]);
    expectPlaced(row, row.text);
    expect(row.logprobs!.at(-1)!.offset).to.equal(row.text.length);
    expect(streamed.map((e) => e.offset)).to.deep.equal(row.logprobs!.map((e) => e.offset));
  }

  /** A reply cut at `END of`: the stop string's tokens sit past the text, not listed. */
  function expectCut({ row, streamed }: Reply): void {
    expect([row.finishReason, row.text.trimStart()]).to.deep.equal(['stop', 'Tom saw the ']);
    expectPlaced(row, row.text);
    const cut = row.logprobs!.slice(shownEntries(row.logprobs!, row.text.length).length);
    expect(cut.map((e) => e.token).join('').trimStart()).to.equal('END of');
    expect(streamed.map((e) => e.offset)).to.deep.equal(row.logprobs!.map((e) => e.offset));
  }

  for (const [path, extra] of [
    ['the decode loop', { trace: 1 }],
    ['the continuous batch', {}],
  ] as const) {
    it(`places each released token where its text starts, on ${path}`, async () => {
      expectReleased(await reply({ ...extra, stop: [STOP] }));
      expectCut(await reply({ ...extra, stop: [STOP, 'END of'] }));
    });
  }

  it('places them so for calls submitted together (the batch decodes them side by side)', async () => {
    const [a, b, c] = await Promise.all([reply({ stop: [STOP] }), reply({ stop: [STOP, 'END of'] }), reply({ stop: [STOP], temperature: 0.5 })]);
    expectReleased(a);
    expectCut(b);
    expectReleased(c);
  });
});
