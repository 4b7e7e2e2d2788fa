/**
 * vLLM's three ends of a reply, on stories260K (greedy, so each reply is known): `stopTokenIds` (ids that end a row
 * as EOS does, with `ignoreEos` too), `minTokens` (EOS, those ids and stop strings held back for its first tokens) and
 * `includeStopString`, on both decode paths: a plain call runs on the continuous batch, a traced one alone through
 * the decode loop.
 */
import { expect } from 'chai';
import { Engine, type StreamOptions } from '../src/engine.js';
import { GenerateOptionsError } from '../src/generate/options.js';
import { StopStringMatcher } from '../src/generate/stop-strings.js';
import type { RowResult } from '../src/generate/types.js';
import { storiesModule } from './support/modules.js';
import { rejection } from './support/assertions.js';

const PROMPT = 'Once upon a time';
/** stories260K's end-of-sequence id; a bias of 100 makes it the greedy pick at every step. */
const EOS = 2;
const EOS_FIRST = { logitBias: { [EOS]: 100 } };

/** The continuous batch (a plain call) and the decode loop (a traced call runs alone through it). */
const PATHS = [
  ['the continuous batch', {}],
  ['the decode loop', { trace: 1 }],
] as const;

interface Reply {
  row: RowResult;
  /** The text its stream gave, piece by piece joined. */
  streamed: string;
}

async function reply(engine: Engine, options: StreamOptions): Promise<Reply> {
  const stream = engine.stream({ prompt: PROMPT }, options);
  let streamed = '';
  for await (const token of stream) streamed += token.text;
  const { rows } = await stream.result;
  return { row: rows[0]!, streamed };
}

describe('stop token ids, a minimum length, and keeping the stop string', function () {
  this.timeout(120_000);
  let engine: Engine;
  /** The greedy reply's first 100 tokens, and the text of its first 20. */
  let greedy: RowResult;
  let first20: string;

  before(async () => {
    engine = await Engine.load({ model: await storiesModule() });
    greedy = (await engine.generate({ prompt: PROMPT }, { maxTokens: 100 })).rows[0]!;
    first20 = (await engine.generate({ prompt: PROMPT }, { maxTokens: 20 })).rows[0]!.text;
    expect(greedy.ids).to.not.include(EOS);
  });
  after(() => engine?.dispose());

  /** The greedy reply's 6th id, and the text of the tokens before its first occurrence. */
  const stopId = () => {
    const id = greedy.ids[5]!;
    return { id, at: greedy.ids.indexOf(id) };
  };

  for (const [path, extra] of PATHS) {
    describe(`on ${path}`, () => {
      it('a stop token id the greedy reply writes ends it there: finishReason stop, the id last, its text not in the reply', async () => {
        const { id, at } = stopId();
        const before = (await engine.generate({ prompt: PROMPT }, { maxTokens: at })).rows[0]!.text;
        for (const ignoreEos of [false, true]) {
          const { row, streamed } = await reply(engine, { ...extra, maxTokens: 100, stopTokenIds: [id], ignoreEos });
          expect(row.ids, `ignoreEos ${ignoreEos}`).to.deep.equal(greedy.ids.slice(0, at + 1));
          expect(row).to.include({ finishReason: 'stop', text: before });
          expect(row.stopString).to.equal(undefined);
          expect(streamed).to.equal(before);
        }
      });

      it('with ignoreEos, EOS is written on and a stop token id still ends the row (EOS among them too)', async () => {
        const { id } = stopId();
        const past = await reply(engine, { ...extra, ...EOS_FIRST, maxTokens: 8, ignoreEos: true, stopTokenIds: [id] });
        expect(past.row.ids).to.deep.equal(Array(8).fill(EOS));
        expect(past.row.finishReason).to.equal('length');
        const ended = await reply(engine, { ...extra, ...EOS_FIRST, maxTokens: 8, ignoreEos: true, stopTokenIds: [id, EOS] });
        expect(ended.row.ids).to.deep.equal([EOS]);
        expect(ended.row).to.include({ finishReason: 'stop', text: '' });
      });

      it('minTokens holds back EOS, the greedy pick, for exactly k tokens; then EOS ends the row', async () => {
        expect((await reply(engine, { ...extra, ...EOS_FIRST, maxTokens: 20 })).row.ids).to.deep.equal([EOS]);
        for (const k of [0, 1, 5]) {
          const { row, streamed } = await reply(engine, { ...extra, ...EOS_FIRST, maxTokens: 20, minTokens: k });
          expect(row.ids, `minTokens ${k}`).to.have.length(k + 1);
          expect(row.ids.slice(0, k)).to.not.include(EOS);
          expect(row.ids[k]).to.equal(EOS);
          expect(row.finishReason).to.equal('eos');
          expect(streamed).to.equal(row.text);
        }
        // the same for a stop token id
        const { id } = stopId();
        const { row } = await reply(engine, { ...extra, logitBias: { [id]: 100 }, maxTokens: 20, minTokens: 3, stopTokenIds: [id] });
        expect(row.ids).to.have.length(4);
        expect(row.ids.slice(0, 3)).to.not.include(id);
        expect(row).to.include({ finishReason: 'stop' });
      });

      it('minTokens lets a stop string written before it go by: the row ends at the next one', async () => {
        const text = greedy.text;
        const firstLily = text.indexOf('Lily');
        const nextLily = text.indexOf('Lily', firstLily + 1);
        // (the first ends inside the first 20 tokens, the next starts past them)
        expect(firstLily + 4).to.be.at.most(first20.length);
        expect(nextLily).to.be.above(first20.length);
        const early = await reply(engine, { ...extra, maxTokens: 100, stop: ['Lily'] });
        expect(early.row).to.include({ text: text.slice(0, firstLily), finishReason: 'stop', stopString: 'Lily' });
        const held = await reply(engine, { ...extra, maxTokens: 100, stop: ['Lily'], minTokens: 20 });
        expect(held.row).to.include({ text: text.slice(0, nextLily), finishReason: 'stop', stopString: 'Lily' });
        expect(held.streamed).to.equal(held.row.text);
      });

      it('includeStopString keeps the stop string at the end of the text, streamed too', async () => {
        const text = greedy.text;
        const end = text.indexOf('Lily') + 'Lily'.length;
        const { row, streamed } = await reply(engine, { ...extra, maxTokens: 100, stop: ['park', 'Lily'], includeStopString: true });
        expect(row).to.include({ text: text.slice(0, end), finishReason: 'stop', stopString: 'Lily' });
        expect(streamed).to.equal(row.text);
        const cut = await reply(engine, { ...extra, maxTokens: 100, stop: ['park', 'Lily'], includeStopString: false });
        expect(cut.row.text).to.equal(text.slice(0, end - 'Lily'.length));
        // a stop token's text too, as vLLM's include_stop_str_in_output keeps it
        const { id, at } = stopId();
        const through = (await engine.generate({ prompt: PROMPT }, { maxTokens: at + 1 })).rows[0]!.text;
        const kept = await reply(engine, { ...extra, maxTokens: 100, stopTokenIds: [id], includeStopString: true });
        expect(kept.row).to.include({ text: through, finishReason: 'stop' });
        expect(kept.streamed).to.equal(through);
      });

      it('a response format that allows only its end wins over minTokens; one that can go on is held back', async () => {
        // (ab)+ can always go on: EOS, the greedy pick once the grammar allows it, waits for minTokens
        const more = await reply(engine, { ...extra, ...EOS_FIRST, maxTokens: 30, minTokens: 6, responseFormat: { type: 'regex', pattern: '(ab)+' } });
        expect(more.row.ids.length).to.be.at.least(7);
        expect(more.row.ids.slice(0, 6)).to.not.include(EOS);
        expect(more.row.ids.at(-1)).to.equal(EOS);
        expect(more.row).to.include({ finishReason: 'eos' });
        expect(more.row.text).to.match(/^(ab)+$/);
        // "ab" is complete once written: nothing but its end is allowed, which ends the reply before minTokens
        const done = await reply(engine, { ...extra, maxTokens: 30, minTokens: 20, responseFormat: { type: 'regex', pattern: 'ab' } });
        expect(done.row).to.include({ text: 'ab', finishReason: 'eos' });
        expect(done.row.ids.length).to.be.below(20);
      });
    });
  }

  it('rows of concurrent calls on the continuous batch, each with its own settings, give what each gives alone', async () => {
    const { id } = stopId();
    const calls: StreamOptions[] = [
      { maxTokens: 60, stop: ['Lily'], includeStopString: true },
      { maxTokens: 60, stop: ['Lily'] },
      { maxTokens: 60, stopTokenIds: [id] },
      { ...EOS_FIRST, maxTokens: 60, minTokens: 9 },
      { maxTokens: 60, stop: ['Lily'], minTokens: 20, includeStopString: true },
      { ...EOS_FIRST, maxTokens: 60, ignoreEos: true, stopTokenIds: [EOS], minTokens: 4 },
    ];
    const alone: Reply[] = [];
    for (const options of calls) alone.push(await reply(engine, options));
    let busiest = 0;
    let done = false;
    // (sampled on its own while the calls run, not only as tokens arrive: on a busy machine a call's tokens can all
    // arrive before the next call is admitted)
    const sampling = (async () => {
      while (!done) busiest = Math.max(busiest, (await engine.stats()).running);
    })();
    const together = await Promise.all(
      calls.map(async (options) => {
        const stream = engine.stream({ prompt: PROMPT }, options);
        let streamed = '';
        for await (const token of stream) streamed += token.text;
        return { row: (await stream.result).rows[0]!, streamed };
      }),
    ).finally(() => (done = true));
    await sampling;
    expect(busiest, 'rows running at once').to.be.above(1);
    const shown = (r: Reply) => ({ ids: r.row.ids, text: r.row.text, finishReason: r.row.finishReason, stopString: r.row.stopString, streamed: r.streamed });
    expect(together.map(shown)).to.deep.equal(alone.map(shown));
    expect(alone[0]!.row.text.endsWith('Lily')).to.equal(true);
    expect(alone[4]!.row.text).to.equal(greedy.text.slice(0, greedy.text.indexOf('Lily', greedy.text.indexOf('Lily') + 1) + 4));
    expect(alone[5]!.row).to.include({ finishReason: 'stop' });
    expect(alone[5]!.row.ids).to.have.length(5);
    expect(alone[5]!.row.ids.indexOf(EOS)).to.equal(4);
  });

  it('refuses bad values by name: minTokens outside 0..maxTokens, stop token ids that are no ids or outside the vocabulary, includeStopString not a flag', async () => {
    const refused = (options: StreamOptions): GenerateOptionsError => {
      try {
        void engine.generate({ prompt: PROMPT }, options);
      } catch (err) {
        expect(err).to.be.instanceOf(GenerateOptionsError);
        return err as GenerateOptionsError;
      }
      throw new Error(`expected ${JSON.stringify(options)} to be refused`);
    };
    expect(refused({ minTokens: -1 }).option).to.equal('minTokens');
    expect(refused({ minTokens: 1.5 }).option).to.equal('minTokens');
    expect(refused({ maxTokens: 10, minTokens: 11 }).message).to.include('at most maxTokens (10)');
    expect(refused({ minTokens: 257 }).message).to.include('at most maxTokens (256, the default)');
    expect(refused({ stopTokenIds: 5 as unknown as number[] }).option).to.equal('stopTokenIds');
    expect(refused({ stopTokenIds: [3, -1] }).option).to.equal('stopTokenIds[1]');
    expect(refused({ includeStopString: 'yes' as unknown as boolean }).option).to.equal('includeStopString');
    // the vocabulary is the model's: known in its worker
    const outside = await rejection(engine.generate({ prompt: PROMPT }, { stopTokenIds: [3, 512] }));
    expect(outside).to.be.instanceOf(GenerateOptionsError);
    expect(outside).to.include({ option: 'stopTokenIds[1]' });
    expect(outside.message).to.include('vocabulary of 512 tokens');
    const traced = await rejection(engine.generate({ prompt: PROMPT }, { stopTokenIds: [512], trace: 1 }));
    expect(traced).to.include({ option: 'stopTokenIds[0]' });
    // (no maxTokens beyond the default needed for minTokens up to it)
    expect((await engine.generate({ prompt: PROMPT }, { minTokens: 2, maxTokens: 2 })).rows[0]!.ids).to.have.length(2);
  });

  it('a stop string wholly inside text already searched is not found again, whatever its length beside the others', () => {
    const m = new StopStringMatcher(['\n', 'a longer one']);
    // "\n" was written while minTokens held stop strings back: only text past what was searched counts now
    expect(m.find('x\ny', 2)).to.equal(undefined);
    expect(m.find('x\ny\n', 3)).to.deep.equal({ at: 3, stop: '\n' });
    expect(m.find('x a longer one', 5)).to.deep.equal({ at: 2, stop: 'a longer one' });
  });
});
