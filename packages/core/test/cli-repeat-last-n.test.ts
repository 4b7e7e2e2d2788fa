/**
 * `reasonplug generate --repeat-last-n N` (llama.cpp's flag): the window of the repetition penalty, the engine's
 * `repetitionWindow`, with llama.cpp's -1 for every token (the engine's unset window).
 */
import { expect } from 'chai';
import { join } from 'node:path';
import { Engine } from '../src/engine.js';
import { cacheDir } from './support/models.js';
import { storiesModule } from './support/modules.js';
import { runReasonplug } from './support/cli.js';

/** The CLI with its own cache beside the tests' model cache. */
const reasonplug = (...args: string[]) => runReasonplug(args, { REASONPLUG_CACHE: join(cacheDir, '..', 'cli-cache') });

const PROMPT = 'Once upon a time';
/** Sampled with a strong penalty, so that which tokens it looks at shows in the text. */
const SAMPLED = { maxTokens: 25, temperature: 1, seed: 5, minP: 0.3, repetitionPenalty: 1.8 };

describe('reasonplug generate --repeat-last-n', function () {
  this.timeout(120_000);

  it("gives the engine's text of that window (0 none, -1 all, as unset), and refuses what is not a window", async () => {
    const model = await storiesModule();
    const engine = await Engine.load({ model, cacheDir, intraOpThreads: 1 });
    const text = async (window?: number) =>
      (await engine.generate({ prompt: PROMPT }, { ...SAMPLED, ...(window !== undefined ? { repetitionWindow: window } : {}) })).rows[0]!.text;
    const [all, four, none] = [await text(), await text(4), await text(0)];
    await engine.dispose();
    // The window changes this text, so a window dropped on the way would show.
    expect(new Set([all, four, none]).size).to.equal(3);

    const args = ['generate', '--model', model, '--prompt', PROMPT, '--threads', '1', '--json'];
    const sampling = ['--max-tokens', '25', '--temperature', '1', '--seed', '5', '--min-p', '0.3', '--repetition-penalty', '1.8'];
    const cli = async (...window: string[]) => {
      const r = await reasonplug(...args, ...sampling, ...window);
      expect(r.code, r.stderr).to.equal(0);
      return (JSON.parse(r.stdout) as { text: string }).text;
    };
    expect(await cli('--repeat-last-n', '4')).to.equal(four);
    expect(await cli('--repeat-last-n', '0')).to.equal(none);
    expect(await cli('--repeat-last-n', '-1')).to.equal(all);
    expect(await cli()).to.equal(all);

    for (const bad of ['-2', '1.5', 'x']) {
      const r = await reasonplug(...args, '--repeat-last-n', bad);
      expect(r.code, bad).to.not.equal(0);
      expect(r.stderr).to.include(`--repeat-last-n must be a whole number >= 0, or -1 for all tokens (got "${bad}")`);
    }
  });
});
