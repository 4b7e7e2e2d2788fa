/** The LangChain examples run as users run them, on stories260K and the stand-in reasoners, greedy (so exactly). */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fromSources, repoRoot } from './support/paths.js';

const exec = promisify(execFile);

function example(name: string, ...args: string[]): Promise<{ stdout: string; stderr: string }> {
  return exec(process.execPath, [...fromSources, join(repoRoot, 'examples', name), ...args], { cwd: repoRoot, timeout: 60_000 });
}

describe('LangChain examples', function () {
  this.timeout(90_000);

  it('chain.ts streams a story through prompt | ChatReasoner | parser, steered by its reasoner', async () => {
    const [steered, plain] = await Promise.all([example('chain.ts', '--max-tokens', '40'), example('chain.ts', '--max-tokens', '40', '--joy', '0')]);
    expect(steered.stdout).to.match(/^Once upon a time, there was a little dog named Max\. /);
    expect(plain.stdout).to.match(/^Once upon a time, there was a little dog named Max\. /);
    expect(steered.stdout).to.include(' happy ');
    expect(plain.stdout).to.not.include('happy');
  });

  it('compare.ts prints the backbone alone beside the backbone with reasoners', async () => {
    const { stdout } = await example('compare.ts', '--max-tokens', '40');
    const [header, rule, ...rows] = stdout.trimEnd().split('\n');
    expect(header).to.match(/^backbone alone\s+\| backbone \+ joy-r \+ play-r$/);
    expect(rule).to.match(/^-+-\+-+$/);
    const left = rows.map((r) => r.split(' | ')[0]!.trim()).join(' ');
    const right = rows.map((r) => r.split(' | ')[1] ?? '').join(' ');
    expect(left).to.match(/^Once upon a time, there was a little girl named Lily\. She loved to play/);
    expect(right).to.match(/^Once upon a time, there was a happy/);
  });

  it('agent-workflow.ts picks modules per step by task tag in a LangGraph workflow and streams the story', async () => {
    const { stdout, stderr } = await example('agent-workflow.ts');
    expect(stdout).to.match(/^Once upon a time,[^.]+\. One day,[^.]+\. In the end,[^.]+\.\n/);
    expect(stdout).to.include(['step 1 [characters]: family-r', 'step 2 [play, mood]: joy-r + play-r', 'step 3 [mood]: joy-r'].join('\n'));
    expect(stderr).to.include('[route] play, mood -> joy-r + play-r');
  });
});
