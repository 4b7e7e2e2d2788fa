/**
 * LiteReason's marker policy in the continuous batch, on the toy math policy and its projector: several prompts of
 * one call each think at their own markers as they would alone, and a marker closed by a row's last allowed token
 * runs no step and shows no placeholder.
 */
import { expect } from 'chai';
import { join } from 'node:path';
import { Engine } from '../src/engine.js';
import type { RowResult } from '../src/generate/types.js';
import { cacheDir } from './support/models.js';
import { repoRoot } from '../../../test/support/paths.js';

describe('LiteReason with the toy math policy (several prompts, the token limit)', function () {
  this.timeout(120_000);
  const MODULES = join(repoRoot, 'examples', 'modules');
  let engine: Engine;

  before(async () => {
    engine = await Engine.load({ model: join(MODULES, 'toy-math-policy'), projector: join(MODULES, 'toy-math-projector'), cacheDir });
  });
  after(() => engine?.dispose());

  it('thinks for each of several prompts in one call as for that prompt alone', async () => {
    // Markers asking for different step counts, and a chain-of-thought prompt that writes none: rows think apart.
    const prompts = ['L:24-9-6-2\n', 'L:47+7-3\n', 'Q:29+3+3\n', 'L:52-8+3-3+3\n'];
    const options = { maxTokens: 48, temperature: 0, logprobs: 0, latentPlaceholder: '·' };
    const alone: RowResult[] = [];
    for (const prompt of prompts) alone.push((await engine.generate({ prompt }, options)).rows[0]!);
    expect(alone.map((r) => r.latentSteps)).to.deep.equal([6, 4, 0, 8]);
    const together = await engine.generate({ prompt: prompts }, options);
    together.rows.forEach((row, r) => {
      const want = alone[r]!;
      expect([row.ids, row.text, row.latentSteps, row.finishReason], `row ${r}`).to.deep.equal([want.ids, want.text, want.latentSteps, want.finishReason]);
      row.logprobs!.forEach((entry, k) => expect(entry.logprob, `row ${r} token ${k}`).to.be.closeTo(want.logprobs![k]!.logprob, 1e-5));
    });
    expect(together.usage.latentSteps).to.equal(6 + 4 + 8);
    // n choices of one prompt, sampled: each thinks as that prompt's choice does
    const sampled = await engine.generate({ prompt: [prompts[0]!, prompts[0]!, prompts[0]!] }, { maxTokens: 48, temperature: 1, seed: 5 });
    expect(sampled.rows.map((row) => row.latentSteps)).to.deep.equal([6, 6, 6]);
  });

  it('shows no placeholder for a marker closed by the last token the limit allows (no step runs after it), streamed or not, in the batch and alone', async () => {
    const prompt = 'L:24-9-6-2\n';
    const full = engine.stream({ prompt }, { maxTokens: 48, temperature: 0, latentPlaceholder: '·' });
    const pieces: string[] = [];
    for await (const t of full) pieces.push(t.text);
    const { rows } = await full.result;
    // The token that closes the marker: its piece is the placeholders, one per step.
    const closing = pieces.findIndex((p) => p.includes('·'));
    expect(pieces[closing]).to.equal('·'.repeat(rows[0]!.latentSteps!));
    const before = pieces.slice(0, closing).join('');
    // (a traced call runs alone, in the decode loop; the others in the continuous batch)
    for (const trace of [undefined, 1]) {
      const cut = { maxTokens: closing + 1, temperature: 0, latentPlaceholder: '·', ...(trace ? { trace } : {}) };
      const stream = engine.stream({ prompt }, cut);
      let streamed = '';
      for await (const t of stream) streamed += t.text;
      const r = await stream.result;
      expect([r.rows[0]!.text, streamed, r.usage.latentSteps, r.rows[0]!.finishReason], `trace ${trace}`).to.deep.equal([before, before, 0, 'length']);
      expect(r.rows[0]!.ids).to.deep.equal(rows[0]!.ids.slice(0, closing + 1));
      const generated = await engine.generate({ prompt }, cut);
      expect([generated.rows[0]!.text, generated.usage.latentSteps]).to.deep.equal([before, 0]);
      // One token more: the steps run, and their placeholders show.
      const longer = await engine.generate({ prompt }, { ...cut, maxTokens: closing + 2 });
      expect(longer.usage.latentSteps).to.equal(rows[0]!.latentSteps);
      expect(longer.rows[0]!.text.startsWith(before + pieces[closing])).to.equal(true);
      // A stop token kept in the text that closes the marker ends the row there too: no step, no placeholder.
      const stop = { maxTokens: 48, temperature: 0, latentPlaceholder: '·', stopTokenIds: [rows[0]!.ids[closing]!], includeStopString: true, ...(trace ? { trace } : {}) };
      const stopped = await engine.generate({ prompt }, stop);
      expect([stopped.rows[0]!.text, stopped.usage.latentSteps, stopped.rows[0]!.finishReason], `trace ${trace}`).to.deep.equal([before, 0, 'stop']);
    }
  });
});
