/**
 * The thinking budget when it runs out inside a closing tag the model has begun, on real scripted backbones: Qwen3's
 * `</think>` in several text pieces (the stories vocabulary) and harmony's `<|end|><|start|>assistant` (special tokens
 * kept in the text, byte-level BPE). The model finishes the tag itself and the engine writes none: the tag appears
 * once, and the thought holds no piece of it.
 */
import { expect } from 'chai';
import { HARMONY_THOUGHT, HARMONY_TOKENS } from '../src/chat/harmony.js';
import { partialTagAt } from '../src/chat/partial-tag.js';
import { Engine } from '../src/engine.js';
import { TextTokenizer } from '../src/tokenizer/tokenizer.js';
import { scriptedChatModule } from './support/modules.js';
import { HARMONY_TEMPLATE, THINKING_TEMPLATE } from './support/chat-templates.js';

const QUESTION = 'What are two and two?';
const THOUGHT = 'Two and two make four.';
const ANSWER = 'Four.';

const CASES = [
  { name: 'pieces-think', template: THINKING_TEMPLATE, tags: { open: '<think>', close: '</think>' }, reply: `<think>\n${THOUGHT}\n</think>\n\n${ANSWER}`, render: {}, keep: [] },
  {
    name: 'harmony-think',
    template: HARMONY_TEMPLATE,
    tags: HARMONY_THOUGHT,
    reply: `${HARMONY_THOUGHT.open}${THOUGHT}${HARMONY_THOUGHT.close}<|channel|>final<|message|>${ANSWER}<|return|>`,
    render: { specialTokens: HARMONY_TOKENS, bpe: true },
    keep: HARMONY_TOKENS,
  },
] as const;

describe('thinking budget: a closing tag the model has begun', function () {
  this.timeout(240_000);

  for (const c of CASES) {
    it(`${c.name}: a budget spent at any point inside the tag lets the model finish it; the tag is written once`, async () => {
      const { dir, replyIds } = await scriptedChatModule(c.name, c.template, [{ role: 'user', content: QUESTION }], c.reply, c.render);
      const tokenizer = await TextTokenizer.fromDirectory(dir);
      const engine = await Engine.load({ model: dir });
      try {
        const promptIds = tokenizer.encode(tokenizer.applyChatTemplate([{ role: 'user', content: QUESTION }], { template: c.template }), false);
        const options = { maxTokens: replyIds.length + 4, keepTokens: [...c.keep] };
        const free = (await engine.generate({ promptIds }, options)).rows[0]!.text;
        expect(free.split(c.tags.close)).to.have.length(2);

        // Where the thought's tokens stand: the budget counts those after the token that completes the opening tag.
        const kept = new Set(c.keep.map((t) => tokenizer.tokenId(t)!));
        const upTo = (k: number) => tokenizer.decode(replyIds.slice(0, k), true, kept);
        const opened = replyIds.findIndex((_, k) => upTo(k + 1).trimStart().startsWith(c.tags.open)) + 1;
        const closed = replyIds.findIndex((_, k) => upTo(k + 1).includes(c.tags.close)) + 1;
        const inside = Array.from({ length: closed - opened }, (_, b) => b).filter((b) => partialTagAt(upTo(opened + b), c.tags.close) > 0);
        expect(inside.length, 'budgets that end inside the tag').to.be.greaterThan(1);

        for (let tokens = 0; tokens <= closed - opened; tokens++) {
          const { text } = (await engine.generate({ promptIds }, { ...options, thinkingBudget: { ...c.tags, tokens } })).rows[0]!;
          const at = text.indexOf(c.tags.close);
          expect(at, `budget ${tokens}: ${JSON.stringify(text)}`).to.be.greaterThan(0);
          // The thought is the model's own, with no start of the tag left in it (a tag the engine writes alone takes
          // the blank SentencePiece writes before a word).
          expect(free.startsWith(text.slice(0, at).trimEnd()), `budget ${tokens}: ${JSON.stringify(text)}`).to.equal(true);
          expect(partialTagAt(text.slice(0, at), c.tags.close), `budget ${tokens}: ${JSON.stringify(text)}`).to.equal(0);
          // Spent inside the tag (or with the tag just done): the model's reply, the tag once.
          if (inside.includes(tokens) || tokens === closed - opened) expect(text, `budget ${tokens}`).to.equal(free);
        }
      } finally {
        await engine.dispose();
      }
    });
  }

  it('a model that breaks off what looked like the tag is closed at once', async () => {
    const reply = `<think>\nSee </b> here.\n</think>\n\n${ANSWER}`;
    const { dir, replyIds } = await scriptedChatModule('pieces-think-other-tag', THINKING_TEMPLATE, [{ role: 'user', content: QUESTION }], reply);
    const tokenizer = await TextTokenizer.fromDirectory(dir);
    const engine = await Engine.load({ model: dir });
    try {
      const promptIds = tokenizer.encode(tokenizer.applyChatTemplate([{ role: 'user', content: QUESTION }], { template: THINKING_TEMPLATE }), false);
      const upTo = (k: number) => tokenizer.decode(replyIds.slice(0, k));
      const opened = replyIds.findIndex((_, k) => upTo(k + 1).startsWith('<think>')) + 1;
      // the budgets spent on `<` or `</` of `</b>`: the model goes on, writes `b`, and the engine closes the thought
      const partial = Array.from({ length: 8 }, (_, b) => b).filter((b) => /<\/?$/.test(upTo(opened + b)));
      expect(partial).to.have.length(2);
      for (const tokens of partial) {
        const { text } = (await engine.generate({ promptIds }, { maxTokens: 40, thinkingBudget: { open: '<think>', close: '</think>', tokens } })).rows[0]!;
        expect(text.slice(0, text.indexOf('</think>')).trimEnd(), `budget ${tokens}: ${JSON.stringify(text)}`).to.match(/^\s*<think>\nSee <\/b>?$/);
      }
    } finally {
      await engine.dispose();
    }
  });
});
