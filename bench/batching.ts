/**
 * Continuous batching: four concurrent 64-token calls on one engine, against the same four calls one after
 * another, against the old queued engine (maxBatch 1: concurrent calls wait their turn), and against one static
 * batch of the four prompts. Greedy, random-weight 24M Llama (fp32 and 4-bit); medians over interleaved rounds.
 * Also reports the KV bytes the batch copied to add and drop rows against what a per-row layout would copy, and
 * the process's CPU time per mode (engine workers included): on a shared machine wall time carries the other
 * jobs, CPU time much less of them (an idle onnxruntime thread that spins still counts).
 *
 *   npm run bench:batching [-- --rounds 5 --tokens 64]
 */
import { parseArgs } from 'node:util';
import { Engine } from '@reasonplug/core';
import { median, printTable } from './support/stats.js';
import { benchLlama, benchQuantized, LLAMA_24M, PROMPT } from './support/models.js';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '5' }, tokens: { type: 'string', default: '64' } } });
const rounds = Number(values.rounds);
const tokens = Number(values.tokens);

/** Four prompts of different lengths. */
const PROMPTS = [PROMPT, PROMPT.slice(0, 3), [...PROMPT, ...PROMPT.slice(1)], [1, 450, 4996, 17354]];
const options = { maxTokens: tokens, ignoreEos: true };

type Mode = 'sequential' | 'queued (maxBatch 1)' | 'concurrent (continuous)' | 'static batch';
const MODES: Mode[] = ['sequential', 'queued (maxBatch 1)', 'concurrent (continuous)', 'static batch'];

/** Wall and CPU milliseconds of one run of a mode. */
async function runMode(mode: Mode, engine: Engine, queued: Engine): Promise<{ wall: number; cpu: number }> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  if (mode === 'sequential') for (const p of PROMPTS) await engine.generate({ promptIds: p }, options);
  else if (mode === 'static batch') await engine.generate({ promptIds: PROMPTS }, options);
  else await Promise.all(PROMPTS.map((p) => (mode === 'queued (maxBatch 1)' ? queued : engine).generate({ promptIds: p }, options)));
  const wall = performance.now() - t0;
  const c = process.cpuUsage(c0);
  return { wall, cpu: (c.user + c.system) / 1000 };
}

const results: Record<string, Record<Mode, number>> = {};
const cpuMs: Record<string, Record<Mode, number>> = {};
const copies: Record<string, { copiedMiB: number; perRowLayoutMiB: number }> = {};
const fp32 = await benchLlama('llama-24m', LLAMA_24M, 1);
const variants: [string, string][] = [
  ['24M fp32', fp32],
  ['24M q4', await benchQuantized(fp32, { bits: 4 })],
];
for (const [name, path] of variants) {
  const engine = await Engine.load({ model: path });
  const queued = await Engine.load({ model: path, maxBatch: 1 });
  try {
    for (const m of MODES) await runMode(m, engine, queued); // warm-up
    const before = await engine.stats();
    const times = Object.fromEntries(MODES.map((m) => [m, [] as { wall: number; cpu: number }[]])) as Record<Mode, { wall: number; cpu: number }[]>;
    for (let r = 0; r < rounds; r++) for (const m of MODES) times[m].push(await runMode(m, engine, queued));
    results[name] = Object.fromEntries(MODES.map((m) => [m, median(times[m].map((t) => t.wall))])) as Record<Mode, number>;
    cpuMs[name] = Object.fromEntries(MODES.map((m) => [m, median(times[m].map((t) => t.cpu))])) as Record<Mode, number>;
    const after = await engine.stats();
    const MiB = 2 ** 20;
    copies[name] = {
      copiedMiB: (after.counters.copiedBytes - before.counters.copiedBytes) / MiB,
      perRowLayoutMiB: (after.counters.perRowLayoutBytes - before.counters.perRowLayoutBytes) / MiB,
    };
  } finally {
    await Promise.all([engine.dispose(), queued.dispose()]);
  }
}

console.log(JSON.stringify({ bench: 'batching', rounds, tokens, calls: PROMPTS.length, wallMs: results, cpuMs, kvCopies: copies }));
for (const [name, r] of Object.entries(results)) {
  printTable(
    `${name}: ${PROMPTS.length} calls × ${tokens} tokens, wall ms (median of ${rounds}) and aggregate tokens/s; CPU ms (median)`,
    ['mode', 'wall ms', 'tokens/s', 'vs sequential', 'CPU ms', 'CPU vs sequential'],
    MODES.map((m) => {
      const cpu = cpuMs[name]!;
      return [m, r[m], (PROMPTS.length * tokens * 1000) / r[m], `${(r.sequential / r[m]).toFixed(2)}x`, cpu[m], `${(cpu[m] / cpu.sequential).toFixed(2)}x`];
    }),
  );
}
printTable(
  'KV bytes copied over the timed rounds: batch cache (rows added/dropped) vs a per-row layout (gather + split every step)',
  ['model', 'batch cache MiB', 'per-row layout MiB'],
  Object.entries(copies).map(([n, c]) => [n, c.copiedMiB, c.perRowLayoutMiB]),
);
