/**
 * The engine's thinking budget on the real stories260K module: a thought that the prompt opened (or that the reply
 * opens) takes at most its budget of tokens, then the closing tag is written and the model goes on; the same in the
 * continuous batch and in a call run alone (traced), for each row of a batch, and under a grammar. Replies that open
 * no thought are left as they are.
 */
import { expect } from 'chai';
import { Engine } from '../src/engine.js';
import { GenerateOptionsError } from '../src/generate/options.js';
import { TextTokenizer } from '../src/tokenizer/tokenizer.js';
import { storiesModule } from './support/modules.js';

describe('thinking budget', function () {
  this.timeout(120_000);
  let engine: Engine;
  let tokenizer: TextTokenizer;
  const promptIds = [1, 403, 407, 261, 378];
  const tags = { open: '<think>', close: '</think>' };

  before(async () => {
    const dir = await storiesModule();
    engine = await Engine.load({ model: dir });
    tokenizer = await TextTokenizer.fromDirectory(dir);
  });
  after(() => engine?.dispose());

  const ids = async (options: Parameters<Engine['generate']>[1], input: { promptIds: number[] | number[][] } = { promptIds }) =>
    (await engine.generate(input, { maxTokens: 12, ...options })).rows.map((r) => r.ids);

  it('a thought the prompt opened takes its budget, then the closing tag is written; the model goes on after it', async () => {
    const [free] = await ids({});
    const close = tokenizer.encode('</think>', false);
    expect(close.length).to.be.greaterThan(1); // the stories vocabulary writes the tag in pieces
    for (const trace of [undefined, 1]) {
      const budget = { ...tags, opened: true, tokens: 4 };
      const [cut] = await ids({ thinkingBudget: budget, ...(trace ? { trace } : {}) });
      expect(cut!.slice(0, 4), `trace ${trace}`).to.deep.equal(free!.slice(0, 4));
      expect(cut!.slice(4, 4 + close.length), `trace ${trace}`).to.deep.equal(close);
      expect(cut!.length).to.equal(12); // sampling resumes after the tag
      const [now] = await ids({ thinkingBudget: { ...budget, tokens: 0 }, ...(trace ? { trace } : {}) });
      expect(now!.slice(0, close.length)).to.deep.equal(close);
    }
    const row = (await engine.generate({ promptIds }, { maxTokens: 12, thinkingBudget: { ...tags, opened: true, tokens: 4 } })).rows[0]!;
    // (the tag written alone takes the blank SentencePiece writes before a word)
    expect(row.text.split('</think>')[0]!.trimEnd()).to.equal(tokenizer.decode(free!.slice(0, 4)));
  });

  it('a reply that opens no thought is left alone; each row of a batch keeps its own count', async () => {
    const [free] = await ids({});
    const [same] = await ids({ thinkingBudget: { ...tags, tokens: 2 } });
    expect(same).to.deep.equal(free);
    // Two rows with prompts of different lengths, prefilled together: each is cut after its own 3 tokens.
    const prompts = [promptIds, [1, 403, 407]];
    const alone = await Promise.all(prompts.map(async (p) => (await ids({}, { promptIds: p }))[0]!));
    const close = tokenizer.encode('</think>', false);
    const rows = await ids({ thinkingBudget: { ...tags, opened: true, tokens: 3 } }, { promptIds: prompts });
    rows.forEach((row, r) => expect(row.slice(0, 3 + close.length), `row ${r}`).to.deep.equal([...alone[r]!.slice(0, 3), ...close]));
  });

  it('a constrained reply whose thought runs out closes it and writes its structure', async () => {
    const schema = { type: 'object', properties: { answer: { enum: [4] } }, required: ['answer'] };
    const thought = { ...tags, opened: true };
    const row = (await engine.generate({ promptIds }, { maxTokens: 40, responseFormat: { type: 'json_schema', schema, thought }, thinkingBudget: { ...thought, tokens: 5 } })).rows[0]!;
    expect(row.parsed).to.deep.equal({ answer: 4 });
    expect(row.text.indexOf('</think>')).to.be.greaterThan(0);
  });

  it('refuses budgets that are not whole numbers of tokens with tags, naming the option', async () => {
    for (const [budget, option] of [
      [{ ...tags, tokens: -1 }, 'thinkingBudget.tokens'],
      [{ ...tags, tokens: 1.5 }, 'thinkingBudget.tokens'],
      [{ open: '', close: '</think>', tokens: 3 }, 'thinkingBudget.open'],
      [{ ...tags, tokens: 3, opened: 'yes' }, 'thinkingBudget.opened'],
    ] as const) {
      const err = await (async () => engine.generate({ promptIds }, { thinkingBudget: budget as never }))().catch((e: unknown) => e);
      expect(err, option).to.be.instanceOf(GenerateOptionsError);
      expect((err as GenerateOptionsError).option).to.equal(option);
    }
  });
});
