/**
 * The results table's fast subset (20 problems per task): `npm run eval -- --n 20 --json` through the engine and
 * the registry client, from the committed example modules. Checks the JSON line's shape and the one claim that
 * holds with the committed modules at this sample size: the math reasoner lifts S on math.
 */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fromSources, repoRoot } from './support/paths.js';

const run = promisify(execFile);
const modules = join(repoRoot, 'examples', 'modules');

interface JsonRow {
  setting: string;
  task: string;
  accuracy: number;
  meanReasoningTokens: number;
}

describe('eval (fast subset of the results table)', function () {
  this.timeout(300_000);
  let rows: JsonRow[] = [];

  before(async function () {
    if (!existsSync(join(modules, 'toy-backbone-s', 'reasonplug.json'))) this.skip();
    const { stdout } = await run(process.execPath, [...fromSources, join(repoRoot, 'eval', 'run.ts'), '--n', '20', '--json'], {
      cwd: repoRoot,
      maxBuffer: 16 * 1024 * 1024,
    });
    const last = stdout.trim().split('\n').at(-1)!;
    rows = (JSON.parse(last) as { rows: JsonRow[] }).rows;
  });

  it('ends with one JSON line of rows {setting, task, accuracy, meanReasoningTokens}', () => {
    expect(rows).to.be.an('array').that.is.not.empty;
    for (const r of rows) {
      expect(r).to.have.all.keys('setting', 'task', 'accuracy', 'meanReasoningTokens');
      expect(['S', 'S+math', 'S+cipher', 'S+math+cipher', 'L', 'L+math', 'cot', 'latent']).to.include(r.setting);
      expect(['math', 'cipher']).to.include(r.task);
      expect(r.accuracy).to.be.within(0, 1);
      expect(r.meanReasoningTokens).to.be.at.least(0);
    }
    const keys = rows.map((r) => `${r.setting}/${r.task}`);
    for (const s of ['S', 'S+math', 'S+cipher', 'S+math+cipher', 'L', 'L+math']) {
      for (const t of ['math', 'cipher']) expect(keys).to.include(`${s}/${t}`);
    }
  });

  it('S + math reasoner beats S alone on math', () => {
    const acc = (s: string) => rows.find((r) => r.setting === s && r.task === 'math')!.accuracy;
    expect(acc('S+math')).to.be.greaterThan(acc('S'));
  });
});
