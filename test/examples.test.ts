/** Every example in examples/ runs, as users would run it. */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fromSources, repoRoot } from './support/paths.js';

const run = promisify(execFile);

/** Percent in a table cell, or undefined for a dash. */
function percent(cell: string): number | undefined {
  return cell.trim() === '—' ? undefined : Number(cell.trim().replace('%', ''));
}

describe('examples', function () {
  this.timeout(120_000);

  it('demo.ts publishes the modules, picks reasoners by task and shows their effect on held-out problems, then tells the story', async () => {
    const t0 = performance.now();
    const { stdout, stderr } = await run(process.execPath, [...fromSources, join(repoRoot, 'examples', 'demo.ts')], {
      cwd: repoRoot,
    });
    const seconds = (performance.now() - t0) / 1000;
    expect(seconds).to.be.below(60);
    expect(stderr, 'the demo is quiet').to.equal('');
    expect(stdout).to.match(/pushed examples\/toy-math-reasoner:1\.0\.0 {2}\(logit-reasoner; tasks: math\)/);
    expect(stdout).to.include('reasoners by task tag: math → examples/toy-math-reasoner@^1, cipher → examples/toy-cipher-reasoner@^1');

    // The table: math and cipher accuracy of each setting over 40 held-out problems per task.
    expect(stdout).to.include('accuracy on held-out problems (greedy, exact answer, 40 per task)');
    const row = (label: string) => {
      const m = stdout.match(new RegExp(`^ {2}${label.replace(/[+&]/g, '\\$&')} +(\\S+) +(\\S+)$`, 'm'));
      expect(m, `table row ${label}`).to.not.equal(null);
      return { math: percent(m![1]!), cipher: percent(m![2]!) };
    };
    const alone = row('backbone alone');
    const composed = row('backbone + math & cipher reasoners');
    const latent = row('latent policy + projector');
    expect(composed.math! - alone.math!, 'math reasoner gain, points').to.be.at.least(30);
    expect(composed.cipher!).to.be.at.least(alone.cipher!);
    expect(latent.math!).to.be.at.least(composed.math!);
    expect(latent.cipher).to.equal(undefined);

    // The seeded examples: three math problems (each answered by all three settings) and one cipher problem,
    // every mark agreeing with the expected answer printed above it.
    const blocks = stdout.split('\n\n').filter((b) => /^[QC]:\S+ {3}\(expected /.test(b));
    expect(blocks.map((b) => b[0])).to.deep.equal(['Q', 'Q', 'Q', 'C']);
    for (const block of blocks) {
      const [head, ...answers] = block.trim().split('\n');
      const expected = head!.match(/\(expected (\S+)\)/)![1]!;
      expect(answers).to.have.length(head!.startsWith('Q') ? 3 : 2);
      for (const line of answers) {
        const [, answer, mark] = line.match(/^ {2}.{34} (\S+) {3}([✓✗])$/)!;
        const final = head!.startsWith('Q') ? answer!.slice(answer!.lastIndexOf('#')) : answer;
        expect(mark, line).to.equal(final === expected ? '✓' : '✗');
      }
    }
    expect(stdout).to.include('Once upon a time, there was a little girl named Lily. She loved to play outside in the park.');
    console.log(`      (demo: ${seconds.toFixed(1)} s)`);
  });

  it('demo.ts refuses a count that is no whole number before it runs anything (it printed a table of dashes)', async () => {
    for (const [flag, value, least] of [['--problems', 'abc', 1], ['--problems', '0', 1], ['--examples', '1.5', 0]] as const) {
      const failed = await run(process.execPath, [...fromSources, join(repoRoot, 'examples', 'demo.ts'), flag, value], { cwd: repoRoot }).then(
        () => undefined,
        (err: { code: number; stderr: string; stdout: string }) => err,
      );
      expect(failed?.code, `${flag} ${value}`).to.equal(2);
      expect(failed?.stderr).to.equal(`demo: ${flag} ${value}: give a whole number from ${least}\n`);
      expect(failed?.stdout).to.equal('');
    }
  });

  it('predicted-outputs.ts writes the same story one token a step, with prompt lookup and with a prediction, in fewer steps', async () => {
    const { stdout, stderr } = await run(process.execPath, [...fromSources, join(repoRoot, 'examples', 'predicted-outputs.ts')], { cwd: repoRoot });
    expect(stderr).to.equal('');
    const line = (label: string) => {
      const m = stdout.match(new RegExp(`^${label} +(\\d+) tokens in +(\\d+) steps +same text: (\\w+)`, 'm'));
      expect(m, label).to.not.equal(null);
      return { tokens: Number(m![1]), steps: Number(m![2]), same: m![3] };
    };
    const [plain, lookup, predicted] = [line('one token a step'), line('prompt lookup'), line('with a prediction')];
    expect(plain).to.deep.equal({ tokens: 96, steps: 96, same: 'yes' });
    expect(lookup.same).to.equal('yes');
    expect(predicted.same).to.equal('yes');
    expect(lookup.steps).to.be.lessThan(plain.steps);
    expect(predicted.steps).to.be.lessThan(lookup.steps);
    expect(stdout).to.match(/prediction tokens kept: \d+, not kept: \d+/);
  });

  it('openai-client.ts asks reasonplug serve through OpenAI\'s SDK for the backbone and the composition, streamed with usage', async () => {
    const { stdout, stderr } = await run(process.execPath, [...fromSources, join(repoRoot, 'examples', 'openai-client.ts')], { cwd: repoRoot });
    expect(stderr).to.equal('');
    expect(stdout).to.include('served models: toy-backbone-s, toy-backbone-s+math');
    const blocks = stdout.split('\n\n').filter((b) => /^Q:\S+ {3}\(expected /.test(b));
    expect(blocks).to.have.length(2);
    for (const block of blocks) {
      const [head, alone, composed] = block.trim().split('\n');
      const expected = head!.match(/\(expected (\S+)\)/)![1]!;
      // Each mark agrees with the answer printed; the composition gets these right, the backbone alone does not.
      for (const line of [alone!, composed!]) {
        const [, answer, mark] = line.match(/^ {2}\S+ +(\S+) {3}([✓✗])$/)!;
        expect(mark, line).to.equal(answer!.endsWith(expected) ? '✓' : '✗');
      }
      expect(alone).to.match(/✗$/);
      expect(composed).to.match(/^ {2}toy-backbone-s\+math .*✓$/);
    }
    // The stream writes what the same request gave in one piece, then its usage.
    const composedFirst = blocks[0]!.split('\n')[2]!.trim().split(/ +/)[1]!;
    expect(stdout).to.match(new RegExp(`streamed from toy-backbone-s\\+math: ${composedFirst.replace(/[+]/g, '\\+')}\nusage: \\d+ prompt \\+ \\d+ completion tokens\n$`));
  });
});
