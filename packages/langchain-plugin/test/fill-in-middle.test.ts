/**
 * `ReasonerLLM` fills in the middle: the prompt is the code before the insertion and the `suffix` call option the code
 * after it, on a Qwen2.5-Coder-shaped GGUF (core's FIM tests hold the engine to node-llama-cpp's infill); a model
 * without FIM tokens refuses by name.
 */
import { expect } from 'chai';
import { join } from 'node:path';
import { Engine } from '@reasonplug/core';
import { ReasonerLLM, ReasonerOptionsError } from '../src/index.js';
import { cacheDir, storiesModule } from './support/modules.js';
import { coderTokenizerMeta } from '../../core/test/support/bpe-vocab.js';
import { writeRandomGguf } from '../../core/test/support/gguf-models.js';
import { testDir } from '../../core/test/support/models.js';

const PREFIX = 'def add(a, b):\n    ';
const SUFFIX = '\n\nprint(add(2, 3))\n';

describe('ReasonerLLM: fill-in-the-middle with the suffix call option', function () {
  this.timeout(120_000);
  let path: string;
  let llm: ReasonerLLM;

  before(async () => {
    path = join(testDir('plugin-fim'), 'coder.gguf');
    await writeRandomGguf(path, { arch: 'qwen2', hidden: 64, layers: 2, heads: 4, kvHeads: 2, ff: 96, qkvBias: true, untied: true, seed: 12 }, coderTokenizerMeta());
    llm = await ReasonerLLM.create({ backbone: path, cacheDir, maxTokens: 12 });
  });
  after(() => llm?.dispose());

  it("completes between the prompt and the suffix as the engine does, in invoke and stream; without a suffix it is a plain completion", async () => {
    const engine = await Engine.load({ model: path, cacheDir });
    try {
      const fim = (await engine.generate({ prompt: PREFIX, suffix: SUFFIX }, { maxTokens: 12 })).rows[0]!.text;
      const plain = (await engine.generate({ prompt: PREFIX }, { maxTokens: 12 })).rows[0]!.text;
      expect(fim).to.not.equal(plain);
      expect(await llm.invoke(PREFIX, { suffix: SUFFIX })).to.equal(fim);
      let streamed = '';
      for await (const piece of await llm.stream(PREFIX, { suffix: SUFFIX })) streamed += piece;
      expect(streamed).to.equal(fim);
      expect(await llm.invoke(PREFIX)).to.equal(plain);
    } finally {
      await engine.dispose();
    }
  });

  it('refuses a suffix that is no string, and a model without FIM tokens by what it lacks', async () => {
    const bad = await llm.invoke(PREFIX, { suffix: 3 as unknown as string }).catch((e: Error) => e);
    expect(bad).to.be.instanceOf(ReasonerOptionsError).and.have.property('message').that.matches(/suffix: must be a string/);
    const stories = await ReasonerLLM.create({ backbone: await storiesModule(), cacheDir, maxTokens: 4 });
    try {
      const err = await stories.invoke('Once', { suffix: ' end.' }).catch((e: Error) => e);
      expect(err).to.be.instanceOf(Error).and.have.property('message').that.matches(/no fill-in-the-middle tokens/);
    } finally {
      await stories.dispose();
    }
  });
});
