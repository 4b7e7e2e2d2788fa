/**
 * A second process that pulls a module, for the faults that need one: a client killed mid-pull, two
 * processes pulling at once. Prints `ready`, waits for the barrier file (if any), pulls, prints the result
 * as JSON. With `--stop-at N` it prints `stopped` once N bytes of a file are on disk and then blocks, so the
 * parent can kill it at a known point.
 *
 *   node --import tsx registry-child.ts REF CACHE_DIR [--stop-at BYTES] [--barrier FILE]
 */
import { existsSync, writeSync } from 'node:fs';
import { pullModule } from '../../src/registry/pull.js';

const [ref, cacheDir, ...rest] = process.argv.slice(2);
const flag = (name: string) => {
  const i = rest.indexOf(name);
  return i >= 0 ? rest[i + 1] : undefined;
};
const stopAt = Number(flag('--stop-at') ?? Infinity);
const barrier = flag('--barrier');

writeSync(1, 'ready\n');
while (barrier !== undefined && !existsSync(barrier)) await new Promise((r) => setTimeout(r, 2));
const pulled = await pullModule(ref!, {
  cacheDir: cacheDir!,
  onProgress: (p) => {
    if (p.done || p.bytes < stopAt) return;
    writeSync(1, `stopped ${p.digest} ${p.bytes}\n`);
    // Block the whole process (no more I/O of any kind) until the parent kills it.
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
  },
});
writeSync(1, `${JSON.stringify(pulled)}\n`);
