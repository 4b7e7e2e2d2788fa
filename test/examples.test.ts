/** Every example in examples/ runs, as users would run it. */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { repoRoot } from './support/paths.js';

const run = promisify(execFile);

describe('examples', function () {
  this.timeout(120_000);

  it('demo.ts converts stories260K and streams its greedy story', async () => {
    const { stdout, stderr } = await run(process.execPath, ['--import', 'tsx', join(repoRoot, 'examples', 'demo.ts'), '--max-tokens', '30'], {
      cwd: repoRoot,
    });
    expect(stdout).to.match(/^Once upon a time, there was a little girl named Lily\. She loved to play outside in the park/);
    expect(stderr).to.match(/30 tokens/);
  });
});
