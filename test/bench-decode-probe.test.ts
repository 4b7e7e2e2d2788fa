/**
 * bench:decode's peak-RSS probe (`bench/decode.ts --rss-probe`): each contender's fresh process imports that
 * contender alone, and the figure it prints is its own peak, not the one it inherits from the benchmark that
 * started it.
 */
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fromSources, models, repoRoot } from './support/paths.js';

const DECODE = join(repoRoot, 'bench', 'decode.ts');
const MODEL = join(models.llamaFp16, 'model.onnx');

/** Every module URL a process resolves, appended to the file named by RP_IMPORT_LOG (a resolve hook after tsx's). */
const HOOKS = `import { appendFileSync } from 'node:fs';
export async function resolve(specifier, context, next) {
  const r = await next(specifier, context);
  appendFileSync(process.env.RP_IMPORT_LOG, r.url + '\\n');
  return r;
}`;
const LOG_IMPORTS = `import { register } from 'node:module'; register(${JSON.stringify(`data:text/javascript,${encodeURIComponent(HOOKS)}`)});`;

/** Runs one probe of 4 tokens; returns the MiB it prints. */
function probe(contender: string, flags: string[] = [], env: NodeJS.ProcessEnv = {}): number {
  const out = execFileSync(
    process.execPath,
    [...fromSources, ...flags, DECODE, '--rss-probe', contender, '--model', MODEL, '--prompt', '1,15043,3186', '--long', '4'],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } },
  );
  return Number(out.trim().split('\n').pop());
}

describe('bench:decode RSS probe', function () {
  this.timeout(180_000);
  let scratch: string;

  before(async function () {
    scratch = await mkdtemp(join(tmpdir(), 'rp-decode-probe-'));
  });
  after(async function () {
    await rm(scratch, { recursive: true, force: true });
  });

  /** The module URLs one contender's probe resolves. */
  async function importsOf(contender: string): Promise<string[]> {
    const log = join(scratch, `${contender.replace(/\W/g, '_')}.log`);
    const mib = probe(contender, ['--import', `data:text/javascript,${encodeURIComponent(LOG_IMPORTS)}`], {
      RP_IMPORT_LOG: log,
      REASONPLUG_CACHE: join(scratch, 'cache'),
    });
    expect(mib).to.be.greaterThan(0);
    return (await readFile(log, 'utf8')).trim().split('\n');
  }

  it("transformers.js's probe imports neither the engine nor the bare loop", async function () {
    const urls = await importsOf('transformers.js');
    expect(urls.some((u) => u.includes('/@huggingface/transformers/'))).to.equal(true);
    expect(urls.filter((u) => u.includes('/packages/core/') || u.includes('/bench/support/bare-loop.'))).to.deep.equal([]);
  });

  it("the engine's probe imports neither transformers.js nor the bare loop", async function () {
    const urls = await importsOf('reasonplug');
    expect(urls.some((u) => u.includes('/packages/core/src/'))).to.equal(true);
    expect(urls.filter((u) => u.includes('/@huggingface/transformers/') || /\/bench\/support\/(bare-loop|transformers-ref)\./.test(u))).to.deep.equal([]);
  });

  it('prints its own peak RSS, not the one of the process that started it', function () {
    // This process now holds more than any probe of the tiny model needs; a child's getrusage maxRSS starts there.
    const held = Buffer.alloc(768 * 1024 * 1024, 1);
    const ownRss = process.memoryUsage().rss / 2 ** 20;
    expect(ownRss).to.be.greaterThan(768);
    const mib = probe('bare loop');
    expect(held[held.length - 1]).to.equal(1);
    expect(mib).to.be.greaterThan(0).and.below(ownRss / 2);
  });
});
