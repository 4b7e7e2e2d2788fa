/**
 * The results table's fast subset (20 problems per task): `npm run eval -- --n 20 --json` through the engine and
 * the registry client, from the committed example modules. Checks the JSON line's shape and the one claim that
 * holds with the committed modules at this sample size: the math reasoner lifts S on math.
 */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
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

  it('takes modules of its own: another version pushed as it is, the rows of absent optional modules left out; a bad --n or a missing module said plainly', async () => {
    const own = await mkdtemp(join(tmpdir(), 'reasonplug-eval-own-'));
    for (const name of ['toy-backbone-s', 'toy-math-reasoner']) await cp(join(modules, name), join(own, name), { recursive: true });
    const manifestPath = join(own, 'toy-math-reasoner', 'reasonplug.json');
    const manifest = JSON.parse(await readFile(manifestPath, 'utf8')) as { version: string };
    await writeFile(manifestPath, JSON.stringify({ ...manifest, version: '1.0.1' }));
    const evalRun = (args: string[]) =>
      run(process.execPath, [...fromSources, join(repoRoot, 'eval', 'run.ts'), ...args], { cwd: repoRoot, maxBuffer: 16 * 1024 * 1024 }).then(
        ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
        (e: { code?: number; stdout?: string; stderr?: string }) => ({ code: e.code ?? 1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' }),
      );
    const ran = await evalRun(['--n', '2', '--json', '--modules', own]);
    expect(ran.code, ran.stderr).to.equal(0);
    expect(ran.stderr).to.include('/examples/toy-math-reasoner:1.0.1');
    const settings = (JSON.parse(ran.stdout.trim().split('\n').at(-1)!) as { rows: JsonRow[] }).rows.map((r) => `${r.setting}/${r.task}`);
    expect(settings).to.deep.equal(['S/math', 'S+math/math', 'S/cipher', 'S+math/cipher']);
    const zero = await evalRun(['--n', '0', '--local']);
    expect(zero.code).to.not.equal(0);
    expect(zero.stderr).to.include('--n 0: give a whole number of problems from 1');
    await rm(join(own, 'toy-math-reasoner'), { recursive: true });
    const missing = await evalRun(['--n', '2', '--local', '--modules', own]);
    expect(missing.code).to.not.equal(0);
    expect(missing.stderr).to.include(`the eval needs toy-math-reasoner in ${own}`);
    await rm(own, { recursive: true, force: true });
  });

  it('finds modules exported under another prefix with --prefix (through the registry too); without it names the prefix it looked for and the one there; refuses a prefix no module name can take', async () => {
    const own = await mkdtemp(join(tmpdir(), 'reasonplug-eval-prefix-'));
    // (named in their manifests as `training/export.py --prefix mine` names them: a pushed module's name is its repository's)
    for (const role of ['backbone-s', 'math-reasoner']) {
      await cp(join(modules, `toy-${role}`), join(own, `mine-${role}`), { recursive: true });
      const manifestPath = join(own, `mine-${role}`, 'reasonplug.json');
      const manifest = JSON.parse(await readFile(manifestPath, 'utf8')) as { name: string };
      await writeFile(manifestPath, JSON.stringify({ ...manifest, name: `mine-${role}` }));
    }
    const evalRun = (args: string[]) =>
      run(process.execPath, [...fromSources, join(repoRoot, 'eval', 'run.ts'), ...args], { cwd: repoRoot, maxBuffer: 16 * 1024 * 1024 }).then(
        ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
        (e: { code?: number; stdout?: string; stderr?: string }) => ({ code: e.code ?? 1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' }),
      );
    try {
      const ran = await evalRun(['--n', '2', '--json', '--modules', own, '--prefix', 'mine']);
      expect(ran.code, ran.stderr).to.equal(0);
      expect(ran.stderr).to.include('/examples/mine-backbone-s:').and.include('/examples/mine-math-reasoner:');
      const settings = (JSON.parse(ran.stdout.trim().split('\n').at(-1)!) as { rows: JsonRow[] }).rows.map((r) => `${r.setting}/${r.task}`);
      expect(settings).to.deep.equal(['S/math', 'S+math/math', 'S/cipher', 'S+math/cipher']);

      const unprefixed = await evalRun(['--n', '2', '--local', '--modules', own]);
      expect(unprefixed.code).to.not.equal(0);
      expect(unprefixed.stderr).to.include(`the eval needs toy-backbone-s and toy-math-reasoner in ${own}`);
      expect(unprefixed.stderr).to.include('it looked for prefix toy, that directory has modules for --prefix mine');

      const bad = await evalRun(['--n', '2', '--local', '--modules', own, '--prefix', 'Mine']);
      expect(bad.code).to.not.equal(0);
      expect(bad.stderr).to.include('--prefix Mine: the module name Mine-backbone-s is not lower-case letters and digits');

      const help = await evalRun(['--help']);
      expect(help.code).to.equal(0);
      expect(help.stdout).to.include('--prefix NAME').and.include('default toy');
    } finally {
      await rm(own, { recursive: true, force: true });
    }
  });
});
