/** Every example in examples/ runs, as users would run it. */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { repoRoot } from './support/paths.js';

const run = promisify(execFile);

describe('examples', function () {
  this.timeout(120_000);

  it('demo.ts publishes the modules, composes reasoners picked by task, reasons latently and tells the story', async () => {
    const t0 = performance.now();
    const { stdout } = await run(process.execPath, ['--import', 'tsx', join(repoRoot, 'examples', 'demo.ts'), '--problems', '1'], {
      cwd: repoRoot,
    });
    expect(performance.now() - t0).to.be.below(60_000);
    expect(stdout).to.match(/pushed examples\/toy-math-reasoner:1\.0\.0 {2}\(logit-reasoner; tasks: math\)/);
    expect(stdout).to.include('reasoners by task tag: math → examples/toy-math-reasoner@^1, cipher → examples/toy-cipher-reasoner@^1');
    expect(stdout).to.match(/backbone alone .*\n {2}with reasoners /);
    expect(stdout).to.match(/latent steps {10}: .*\[\d+ tokens written, \d+ latent steps\]/);
    expect(stdout).to.include('Once upon a time, there was a little girl named Lily. She loved to play outside in the park.');
  });
});
