/**
 * Registry throughput, reasonplug-registry against CNCF distribution (Debian's docker-registry), both on
 * loopback in their own processes, driven by the same client (`pushModule` / `pullModule`):
 * - push and pull of a module holding one large blob (1 GiB by default): MiB/s, median over rounds, and
 *   our/distribution ratios (targets: pull ≥ 1.0x, push ≥ 0.8x);
 * - peak RSS of each server process while it moves that blob (target for ours: < 150 MB);
 * - 64 concurrent pulls of a 64 MiB module into one cache (target: no error).
 *
 *   npm run bench:registry [-- --size-mib 1024 --rounds 3 --concurrent 64 --concurrent-mib 64]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync } from 'node:fs';
import { mkdir, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { pullModule, pushModule, writeModuleDir } from '@reasonplug/core';
import { bytesOf, distributionMissing, freePort, startDistribution } from '../packages/core/test/support/registries.js';
import { median, printTable } from './support/stats.js';
import { repoRoot } from '../test/support/paths.js';

const { values } = parseArgs({
  options: {
    'size-mib': { type: 'string', default: '1024' },
    rounds: { type: 'string', default: '3' },
    concurrent: { type: 'string', default: '64' },
    'concurrent-mib': { type: 'string', default: '64' },
  },
});
const sizeMib = Number(values['size-mib']);
const rounds = Number(values.rounds);
const concurrent = Number(values.concurrent);
const concurrentMib = Number(values['concurrent-mib']);
const MiB = 1024 * 1024;

const missing = distributionMissing();
if (missing) {
  console.error(`bench:registry needs CNCF distribution: ${missing}`);
  process.exit(1);
}

/** A module whose weights file is `mib` MiB of incompressible bytes, written once under .cache/bench. */
async function benchModule(name: string, mib: number): Promise<string> {
  const dir = join(repoRoot, '.cache', 'bench', `registry-${name}-${mib}m`, name);
  try {
    await readFile(join(dir, 'reasonplug.json'));
    return dir;
  } catch {
    await mkdir(dir, { recursive: true });
  }
  const fh = await open(join(dir, 'weights.bin'), 'w');
  for (let i = 0; i < mib; i += 64) await fh.write(bytesOf(Math.min(64, mib - i) * MiB, i + 1));
  await fh.close();
  const model = await open(join(dir, 'model.onnx'), 'w');
  await model.write(bytesOf(4096, 7));
  await model.close();
  await writeModuleDir(dir, {
    name,
    version: '1.0.0',
    kind: 'backbone',
    tasks: ['bench'],
    description: 'registry benchmark module',
    license: 'MIT',
    compat: { tokenizer: `sha256:${'ab'.repeat(32)}`, vocabSize: 512 },
    files: { model: 'model.onnx', weights: 'weights.bin' },
  });
  return dir;
}


interface Server {
  label: string;
  host: string;
  pid: number;
  close(): Promise<void>;
}

/** reasonplug-registry as its own process (so its RSS is its own), filesystem storage in a temp directory. */
async function startOurs(): Promise<Server> {
  const data = mkdtempSync(join(tmpdir(), 'reasonplug-bench-registry-'));
  const port = await freePort();
  const cli = join(repoRoot, 'packages', 'registry-server', 'src', 'cli.ts');
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', cli, 'serve', '--data', data, '--port', String(port), '--log-level', 'error'], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const host = `127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    if (await fetch(`http://${host}/v2/`).then((r) => r.ok, () => false)) break;
    if (i > 300 || child.exitCode !== null) throw new Error('reasonplug-registry did not start');
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    label: 'reasonplug-registry',
    host,
    pid: child.pid!,
    close: async () => {
      child.kill('SIGTERM');
      await once(child, 'exit');
      await rm(data, { recursive: true, force: true });
    },
  };
}

async function startTheirs(): Promise<Server> {
  const d = await startDistribution();
  return { label: 'distribution', host: d.host, pid: d.pid, close: d.close };
}

/** Peak resident set size (bytes) of `pid` while `work` runs, sampled every 20 ms from /proc. */
async function peakRss<T>(pid: number, work: () => Promise<T>): Promise<{ result: T; peak: number }> {
  let peak = 0;
  const sample = async () => {
    const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
    const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
    peak = Math.max(peak, kb * 1024);
  };
  const timer = setInterval(() => void sample(), 20);
  try {
    const result = await work();
    await sample();
    return { result, peak };
  } finally {
    clearInterval(timer);
  }
}

const big = await benchModule('big', sizeMib);
const small = await benchModule('fleet', concurrentMib);
const servers = [await startOurs(), await startTheirs()];
const scratch = mkdtempSync(join(tmpdir(), 'reasonplug-bench-cache-'));

const results = servers.map(() => ({ push: [] as number[], pull: [] as number[], pushRss: 0, pullRss: 0 }));
try {
  for (let round = 0; round < rounds; round++) {
    // Alternate which server goes first, so neither always meets a warm page cache.
    for (let k = 0; k < servers.length; k++) {
      const i = (k + round) % servers.length;
      const s = servers[i]!;
      const r = results[i]!;
      const ref = `${s.host}/round${round}/big:1.0.0`;
      let t = performance.now();
      const pushed = await peakRss(s.pid, () => pushModule(big, ref));
      r.push.push(sizeMib / ((performance.now() - t) / 1000));
      r.pushRss = Math.max(r.pushRss, pushed.peak);
      const cacheDir = join(scratch, `${s.label}-${round}`);
      t = performance.now();
      const pulled = await peakRss(s.pid, () => pullModule(ref, { cacheDir }));
      r.pull.push(sizeMib / ((performance.now() - t) / 1000));
      r.pullRss = Math.max(r.pullRss, pulled.peak);
      await rm(cacheDir, { recursive: true, force: true });
    }
  }

  const fleet = [] as { label: string; ok: number; errors: string[]; seconds: number }[];
  for (const s of servers) {
    const ref = `${s.host}/fleet/fleet:1.0.0`;
    await pushModule(small, ref);
    const cacheDir = join(scratch, `${s.label}-fleet`);
    const t = performance.now();
    const outcomes = await Promise.allSettled(Array.from({ length: concurrent }, () => pullModule(ref, { cacheDir })));
    const errors = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected').map((o) => String((o.reason as Error).message));
    fleet.push({ label: s.label, ok: outcomes.length - errors.length, errors: [...new Set(errors)], seconds: (performance.now() - t) / 1000 });
    await rm(cacheDir, { recursive: true, force: true });
  }

  const mibps = results.map((r) => ({ push: median(r.push), pull: median(r.pull) }));
  const ratio = { pull: mibps[0]!.pull / mibps[1]!.pull, push: mibps[0]!.push / mibps[1]!.push };
  const oursRssMb = Math.max(results[0]!.pushRss, results[0]!.pullRss) / 1e6;
  const verdict = {
    pullRatio: ratio.pull >= 1.0,
    pushRatio: ratio.push >= 0.8,
    rss: oursRssMb < 150,
    concurrent: fleet[0]!.errors.length === 0,
  };
  console.log(
    JSON.stringify({
      bench: 'registry',
      sizeMib,
      rounds,
      servers: servers.map((s, i) => ({
        server: s.label,
        pushMiBps: mibps[i]!.push,
        pullMiBps: mibps[i]!.pull,
        peakRssMb: { push: results[i]!.pushRss / 1e6, pull: results[i]!.pullRss / 1e6 },
      })),
      ratio,
      concurrent: { pulls: concurrent, moduleMib: concurrentMib, results: fleet },
      pass: verdict,
    }),
  );
  printTable(
    `registry throughput, ${sizeMib} MiB blob over loopback, same client (median of ${rounds})`,
    ['server', 'push MiB/s', 'pull MiB/s', 'peak RSS push MB', 'peak RSS pull MB'],
    servers.map((s, i) => [s.label, mibps[i]!.push, mibps[i]!.pull, results[i]!.pushRss / 1e6, results[i]!.pullRss / 1e6]),
  );
  printTable('targets', ['check', 'value', 'target', 'pass'], [
    ['pull ratio (ours / distribution)', `${ratio.pull.toFixed(2)}x`, '>= 1.0x', String(verdict.pullRatio)],
    ['push ratio (ours / distribution)', `${ratio.push.toFixed(2)}x`, '>= 0.8x', String(verdict.pushRatio)],
    ['our server peak RSS', `${oursRssMb.toFixed(0)} MB`, '< 150 MB', String(verdict.rss)],
    [`${concurrent} concurrent pulls of ${concurrentMib} MiB (ours)`, `${fleet[0]!.ok} ok`, 'no error', String(verdict.concurrent)],
  ]);
  printTable(
    `${concurrent} concurrent pulls of a ${concurrentMib} MiB module into one cache`,
    ['server', 'ok', 'errors', 'seconds'],
    fleet.map((f) => [f.label, String(f.ok), f.errors.join('; ') || '-', f.seconds]),
  );
} finally {
  for (const s of servers) await s.close();
  await rm(scratch, { recursive: true, force: true });
}
