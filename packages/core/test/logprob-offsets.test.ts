/**
 * Where each token's text starts in the reply (`TokenLogprobs.offset`, the server's `text_offset`): past text a
 * stop string held back, characters spelt in byte tokens, special tokens and latent markers, which show nothing.
 */
import { expect } from 'chai';
import { join } from 'node:path';
import { Engine } from '../src/engine.js';
import type { GenerationResult } from '../src/generate/types.js';
import { TextTokenizer } from '../src/tokenizer/tokenizer.js';
import { cacheDir } from './support/models.js';
import { storiesModule } from './support/modules.js';
import { repoRoot } from '../../../test/support/paths.js';

const modules = join(repoRoot, 'examples', 'modules');

/** Each entry's offset lies in the text, in order, and the token it names is written there (those shown). */
function expectOffsetsInText(result: GenerationResult, shown: (token: string, i: number) => boolean): void {
  const { text, logprobs } = result.rows[0]!;
  const offsets = logprobs!.map((e) => e.offset!);
  expect(offsets.every((o, i) => o >= 0 && o <= text.length && (i === 0 || o >= offsets[i - 1]!)), JSON.stringify(offsets)).to.equal(true);
  for (const [i, e] of logprobs!.entries()) if (shown(e.token!, i)) expect(text.slice(e.offset!).startsWith(e.token!), `${JSON.stringify(e.token)} at ${e.offset} of ${JSON.stringify(text)}`).to.equal(true);
}

describe('log-probability offsets', function () {
  this.timeout(120_000);

  it('point at each token in the text, past byte pieces and special tokens, and past a stop string held back', async () => {
    const dir = await storiesModule();
    const tokenizer = await TextTokenizer.fromDirectory(dir);
    const engine = await Engine.load({ model: dir, cacheDir });
    try {
      const bos = tokenizer.bosTokenId!;
      // a snowman spelt in three byte tokens, BOS forced in mid-reply (shown as nothing), then a story
      const snow = await engine.generate({ prompt: 'A' }, { maxTokens: 12, logprobs: 1, responseFormat: { type: 'regex', pattern: ' ☃ [a-z ]+' } });
      expect(snow.rows[0]!.text.startsWith(' ☃ ')).to.equal(true);
      expectOffsetsInText(snow, (t) => t !== '');
      const special = await engine.generate({ prompt: 'Once upon a time' }, { maxTokens: 3, logprobs: 1, logitBias: { [bos]: 100 } });
      expect(special.rows[0]!.logprobs!.map((e) => e.offset)).to.deep.equal([0, 0, 0]);
      // a stop string's start is held back until the next token shows it is not one
      const story = await engine.generate({ prompt: 'Once upon a time' }, { maxTokens: 40, logprobs: 1, stop: ['Lily went'] });
      expectOffsetsInText(story, (t) => !tokenizer.isSpecial(tokenizer.tokenId(t) ?? -1));
    } finally {
      await engine.dispose();
    }
  });

  it('give a latent marker no width: its tokens sit where the answer goes on', async () => {
    const engine = await Engine.load({ model: join(modules, 'toy-math-policy'), projector: join(modules, 'toy-math-projector'), cacheDir });
    try {
      const result = await engine.generate({ prompt: 'L:47+5-3+8\n' }, { maxTokens: 30, logprobs: 1 });
      expect(result.usage.latentSteps).to.be.greaterThan(0);
      const { text, logprobs } = result.rows[0]!;
      const open = logprobs!.findIndex((e) => e.token === '<implicit_thought>');
      const close = logprobs!.findIndex((e) => e.token === '</implicit_thought>');
      expect([open, close].every((i) => i >= 0) && close > open).to.equal(true);
      const marker = logprobs!.slice(open, close + 1);
      expect(marker.every((e) => e.offset === marker[0]!.offset)).to.equal(true);
      expect(text).to.not.include('implicit_thought');
      expect(text.length).to.be.greaterThan(marker[0]!.offset!);
      expectOffsetsInText(result, (t, i) => (i < open || i > close) && t !== '</s>');
    } finally {
      await engine.dispose();
    }
  });
});
