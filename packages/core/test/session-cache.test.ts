import { expect } from 'chai';
import { copyFile, mkdir, readdir, readFile, rm, stat, statfs, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Engine } from '../src/engine.js';
import { DecoderSession } from '../src/runtime/decoder-session.js';
import { SESSION_CACHE_MIN_BYTES } from '../src/runtime/session-cache.js';
import { prepareDecoder } from '../src/onnx/prepared-cache.js';
import { randomLlamaWeights, writeLlamaModel } from '../src/onnx/llama-builder.js';
import { smallConfig, testDir } from './support/models.js';
import { age, invisiblePid, suffixOf } from './support/owners.js';
import { cacheUsage } from '../src/modules/cache-usage.js';
import { Command } from 'commander';
import { addModelFlags, engineOptions, type ModelFlags } from '../src/cli/model-flags.js';
import { convertExact, writeStoriesQ4Draft } from './support/gguf-models.js';
import { readModel } from '../src/onnx/proto.js';

/** One model's directory, its weights in `model.onnx.data` (so models of one shape have byte-identical graphs). */
async function modelDir(name: string, seed: number): Promise<string> {
  const dir = testDir(name);
  await writeLlamaModel(join(dir, 'model.onnx'), smallConfig, randomLlamaWeights(smallConfig, seed, 0.08), { externalData: true });
  return dir;
}

async function open(dir: string, cacheDir: string, sessionCache: boolean | undefined, weightBytes?: number, keepFree?: number, hiddenState = false): Promise<DecoderSession> {
  const p = await prepareDecoder(join(dir, 'model.onnx'), { lastLogitsOnly: true, logitsFloat32: true, ...(hiddenState ? { hiddenState } : {}), cacheDir });
  expect(p.sessionDir).to.equal(join(cacheDir, 'sessions'));
  expect(p.dataFiles).to.deep.equal([join(dir, 'model.onnx.data')]);
  return DecoderSession.create(
    {
      path: p.preparedPath,
      ...(p.externalDataDir ? { externalDataDir: p.externalDataDir } : {}),
      ...(weightBytes !== undefined ? { weightBytes } : {}),
      sessionCache: { dir: p.sessionDir!, model: join(dir, 'model.onnx'), variant: p.adaptation, dataFiles: p.dataFiles, ...(keepFree !== undefined ? { keepFree } : {}) },
    },
    sessionCache === undefined ? {} : { sessionCache },
  );
}

/** Logits of a prefill and two steps, concatenated. */
async function run(session: DecoderSession): Promise<Float32Array> {
  try {
    const parts = [await session.prefill([[5, 17, 3, 44]]), await session.step([9]), await session.step([60])];
    const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) out.set(p, (at += p.length) - p.length);
    return out;
  } finally {
    await session.release();
  }
}

/** The saved entries of a sessions directory: name → inode. */
async function entries(dir: string): Promise<Map<string, bigint>> {
  const names = await readdir(dir).catch(() => [] as string[]);
  return new Map(await Promise.all(names.map(async (n): Promise<[string, bigint]> => [n, (await stat(join(dir, n), { bigint: true })).ino])));
}

describe('session cache (optimized graphs with prepacked weights saved beside the prepared graph)', () => {
  it('saves a session the first time, loads it after, and gives the same logits as a session made the usual way', async () => {
    const dir = await modelDir('sc-a', 7);
    const cacheDir = testDir('sc-cache');
    const sessions = join(cacheDir, 'sessions');
    const plain = await run(await open(dir, cacheDir, false, SESSION_CACHE_MIN_BYTES));
    // By default only a graph whose step reads SESSION_CACHE_MIN_BYTES is kept.
    expect(Array.from(await run(await open(dir, cacheDir, undefined)))).to.deep.equal(Array.from(plain));
    expect(await entries(sessions)).to.have.property('size', 0);

    const first = await run(await open(dir, cacheDir, undefined, SESSION_CACHE_MIN_BYTES));
    const written = await entries(sessions);
    expect([...written.keys()].map((n) => n.replace(/^[0-9a-f]{16}-[0-9a-f]{64}/, 'KEY').replace(/\.\d+-[0-9a-f]{16}\./, '.TMP.')).sort()).to.deep.equal(['KEY.TMP.data', 'KEY.json', 'KEY.onnx']);
    const second = await run(await open(dir, cacheDir, true));
    expect(await entries(sessions), 'the second load reads the entry, never writes it').to.deep.equal(written);
    expect(Array.from(first)).to.deep.equal(Array.from(plain));
    expect(Array.from(second)).to.deep.equal(Array.from(plain));
  });

  it('keys the entry by the data files: two models with the same graph bytes each get their own, and their own logits', async () => {
    // b: a's graph over another model's weights of the same shapes (the same external-data layout).
    const [a, other] = await Promise.all([modelDir('sc-same-a', 7), modelDir('sc-same-other', 8)]);
    const b = testDir('sc-same-b');
    await copyFile(join(a, 'model.onnx'), join(b, 'model.onnx'));
    await copyFile(join(other, 'model.onnx.data'), join(b, 'model.onnx.data'));
    const cacheDir = testDir('sc-cache');
    const plainA = await run(await open(a, cacheDir, false));
    const plainB = await run(await open(b, cacheDir, false));
    expect(Array.from(plainA)).to.not.deep.equal(Array.from(plainB));
    expect(Array.from(await run(await open(a, cacheDir, true)))).to.deep.equal(Array.from(plainA));
    expect(Array.from(await run(await open(b, cacheDir, true)))).to.deep.equal(Array.from(plainB));
    expect([...(await entries(join(cacheDir, 'sessions'))).keys()].filter((n) => n.endsWith('.json'))).to.have.length(2);
  });

  it("keeps one entry per model: a model's new weights replace its older entry, other models' entries stay", async () => {
    const [dir, other, kept] = await Promise.all([modelDir('sc-renew', 12), modelDir('sc-renew-other', 13), modelDir('sc-renew-kept', 14)]);
    const cacheDir = testDir('sc-cache');
    const sessions = join(cacheDir, 'sessions');
    await run(await open(kept, cacheDir, true));
    await run(await open(dir, cacheDir, true));
    const before = await entries(sessions);
    expect(before).to.have.property('size', 6);
    await copyFile(join(other, 'model.onnx.data'), join(dir, 'model.onnx.data'));
    const plain = Array.from(await run(await open(dir, cacheDir, false)));
    expect(Array.from(await run(await open(dir, cacheDir, true)))).to.deep.equal(plain);
    const after = await entries(sessions);
    expect(after).to.have.property('size', 6);
    const keptNames = [...before.keys()].filter((n) => after.has(n));
    expect(keptNames, "the other model's entry").to.have.length(3);
  });

  it('drops the entries of models that are gone when it writes another: a removed module leaves no saved session behind', async () => {
    const [gone, kept, next] = await Promise.all([modelDir('sc-gone', 15), modelDir('sc-gone-kept', 16), modelDir('sc-gone-next', 17)]);
    const cacheDir = testDir('sc-gone-cache');
    const sessions = join(cacheDir, 'sessions');
    await run(await open(gone, cacheDir, true));
    await run(await open(kept, cacheDir, true));
    const before = await entries(sessions);
    expect(before).to.have.property('size', 6);
    await rm(gone, { recursive: true });
    // (still there until an entry is written: a hit writes nothing)
    await run(await open(kept, cacheDir, true));
    expect([...(await entries(sessions)).keys()]).to.deep.equal([...before.keys()]);
    await run(await open(next, cacheDir, true));
    const after = await entries(sessions);
    expect(after).to.have.property('size', 6);
    const models = await Promise.all([...after.keys()].filter((n) => n.endsWith('.json')).map(async (n) => JSON.parse(await readFile(join(sessions, n), 'utf8')).model));
    expect(models.sort()).to.deep.equal([join(kept, 'model.onnx'), join(next, 'model.onnx')].sort());
  });

  it('keeps one entry for each prepared variant of a model (with and without its hidden state): neither replaces the other', async () => {
    const dir = await modelDir('sc-variants', 16);
    const cacheDir = testDir('sc-cache');
    const sessions = join(cacheDir, 'sessions');
    const plain = [Array.from(await run(await open(dir, cacheDir, false))), Array.from(await run(await open(dir, cacheDir, false, undefined, undefined, true)))];
    for (const hidden of [false, true]) expect(Array.from(await run(await open(dir, cacheDir, true, undefined, undefined, hidden)))).to.deep.equal(plain[hidden ? 1 : 0]);
    const written = await entries(sessions);
    expect(written).to.have.property('size', 6);
    for (const hidden of [false, true]) expect(Array.from(await run(await open(dir, cacheDir, true, undefined, undefined, hidden)))).to.deep.equal(plain[hidden ? 1 : 0]);
    expect(await entries(sessions), 'both loaded from their entries, neither written again').to.deep.equal(written);
  });

  it('writes an entry again when its files changed, or when it no longer loads, and the session is made all the same', async () => {
    const dir = await modelDir('sc-stale', 9);
    const cacheDir = testDir('sc-cache');
    const sessions = join(cacheDir, 'sessions');
    const plain = Array.from(await run(await open(dir, cacheDir, false)));
    await run(await open(dir, cacheDir, true));
    const dataOf = async () => [...(await entries(sessions)).keys()].find((n) => n.endsWith('.data'))!;

    // Touched: its stamps no longer match the sidecar's, so it is a miss (a new data file), never trusted.
    const before = await dataOf();
    await utimes(join(sessions, before), new Date(), new Date(2001, 0, 1));
    expect(Array.from(await run(await open(dir, cacheDir, true)))).to.deep.equal(plain);
    const rewritten = await dataOf();
    expect(rewritten).to.not.equal(before);
    expect(await entries(sessions)).to.have.property('size', 3);

    // Damaged beneath unchanged stamps (the sidecar rewritten to match): onnxruntime refuses it, the entry is dropped
    // and written again.
    const graph = [...(await entries(sessions)).keys()].find((n) => n.endsWith('.onnx'))!;
    const sidecarPath = join(sessions, graph.replace(/\.onnx$/, '.json'));
    await writeFile(join(sessions, graph), 'not a graph');
    const meta = JSON.parse(await readFile(sidecarPath, 'utf8')) as { graph: Record<string, string> };
    const s = await stat(join(sessions, graph), { bigint: true });
    meta.graph = { ino: String(s.ino), size: String(s.size), mtimeNs: String(s.mtimeNs), ctimeNs: String(s.ctimeNs) };
    await writeFile(sidecarPath, JSON.stringify(meta));
    expect(Array.from(await run(await open(dir, cacheDir, true)))).to.deep.equal(plain);
    expect((await stat(join(sessions, graph))).size).to.be.above(100);
    expect(await dataOf()).to.not.equal(rewritten);
    expect(await entries(sessions)).to.have.property('size', 3);
  });

  it('removes the files of saves whose writer is gone (killed mid-save, or beaten to the entry), not those still being written, and lists them apart', async () => {
    const dir = await modelDir('sc-leftovers', 12);
    const root = testDir('sc-leftovers-root');
    const cacheDir = join(root, 'prepared');
    const sessions = join(cacheDir, 'sessions');
    await run(await open(dir, cacheDir, true));
    const sidecar = [...(await entries(sessions)).keys()].find((n) => n.endsWith('.json'))!;
    const key = sidecar.slice(0, -'.json'.length);
    const pid = invisiblePid();
    const elsewhere = suffixOf(pid, true);
    const writing = [`${key}.${elsewhere}.data`, `${key}.${elsewhere}.onnx.tmp`];
    // The first two as an older version named them; the last two gone here (one of this process, one of another).
    const killed = [`${key}.${pid}.0b0b0b0b0b0b.data`, `${key}.${pid}.0b0b0b0b0b0b.onnx.tmp`, `${key}.${suffixOf(process.pid)}.data`, `${key}.${suffixOf(pid)}.data`];
    for (const f of [...writing, ...killed]) await writeFile(join(sessions, f), Buffer.alloc(100_000));
    for (const f of killed.slice(0, 2)) await age(join(sessions, f));

    // Listed apart from the entry, which is its sidecar, graph and the data file the sidecar names.
    const usage = await cacheUsage(root);
    const entryBytes = usage.entries.find((e) => e.part === 'sessions' && e.path === join(sessions, sidecar))!.bytes;
    const own = (await Promise.all([...(await entries(sessions)).keys()].filter((n) => !writing.includes(n) && !killed.includes(n)).map(async (n) => (await stat(join(sessions, n))).size))).reduce((a, b) => a + b, 0);
    expect(entryBytes).to.equal(own);
    expect(usage.entries.find((e) => e.part === 'sessions' && e.path === sessions)?.bytes).to.equal(600_000);

    // The next save of the entry removes the leftovers of writers that are gone.
    await rm(join(sessions, sidecar));
    await run(await open(dir, cacheDir, true));
    const left = [...(await entries(sessions)).keys()];
    expect(left.filter((n) => writing.includes(n))).to.deep.equal(writing);
    expect(left.filter((n) => killed.includes(n))).to.deep.equal([]);
    expect(left).to.have.length(3 + writing.length);
  });

  it('leaves nothing behind and still makes the session when the entry cannot be written', async () => {
    const dir = await modelDir('sc-unwritable', 10);
    const cacheDir = testDir('sc-cache');
    const plain = Array.from(await run(await open(dir, cacheDir, false)));
    await writeFile(join(cacheDir, 'sessions'), 'a file where the directory would be');
    expect(Array.from(await run(await open(dir, cacheDir, true)))).to.deep.equal(plain);
    expect((await readdir(cacheDir)).filter((n) => !n.endsWith('.onnx') && !n.endsWith('.json'))).to.deep.equal(['sessions']);
  });

  it('writes nothing where the disk would keep less free than its reserve, and makes the session all the same', async () => {
    const dir = await modelDir('sc-full-disk', 15);
    const cacheDir = testDir('sc-cache');
    const plain = Array.from(await run(await open(dir, cacheDir, false)));
    const { bavail, bsize } = await statfs(cacheDir);
    expect(Array.from(await run(await open(dir, cacheDir, true, undefined, bavail * bsize)))).to.deep.equal(plain);
    expect(await entries(join(cacheDir, 'sessions'))).to.have.property('size', 0);
    // with room left (a reserve 64 MiB below the free bytes; the saved form takes ~2.5x the graph's weights) it is written
    const weights = (await stat(join(dir, 'model.onnx'))).size + (await stat(join(dir, 'model.onnx.data'))).size;
    expect(2.5 * weights).to.be.below(2 ** 20);
    expect(Array.from(await run(await open(dir, cacheDir, true, undefined, bavail * bsize - 64 * 2 ** 20)))).to.deep.equal(plain);
    expect(await entries(join(cacheDir, 'sessions'))).to.have.property('size', 3);
  });

  it('Engine.load passes the choice on: a small graph is kept with sessionCache: true, not by default nor with false', async () => {
    const dir = await modelDir('sc-engine', 11);
    for (const [sessionCache, saved] of [[false, 0], [undefined, 0], [true, 3]] as const) {
      const cacheDir = testDir('sc-cache');
      await mkdir(cacheDir, { recursive: true });
      const engine = await Engine.load({ model: dir, cacheDir, ...(sessionCache !== undefined ? { sessionCache } : {}) });
      try {
        const result = await engine.generate({ promptIds: [5, 17, 3] }, { maxTokens: 4 });
        expect(result.rows[0]!.ids).to.have.length(4);
      } finally {
        await engine.dispose();
      }
      expect(await entries(join(cacheDir, 'sessions')), `sessionCache ${sessionCache}`).to.have.property('size', saved);
    }
  });

  it('keeps no saved form whose packed weights its data file holds off their 64-byte alignment (they crashed or computed garbage): stories260K as Q4_0 loads the same each time', async function () {
    this.timeout(120_000);
    // MatMulNBits with K = 64 packs copies whose sizes are no multiple of 64, and onnxruntime writes the next ones
    // straight after them: the first reload of such a form segfaulted in a packed SGEMM.
    const gguf = join(testDir('sc-q4'), 'stories-q4_0.gguf');
    await writeStoriesQ4Draft(gguf);
    const { dir } = await convertExact(gguf, testDir('sc-q4-module'));
    const cacheDir = testDir('sc-q4-cache');
    const greedy = async (sessionCache: boolean) => {
      const engine = await Engine.load({ model: dir, cacheDir, sessionCache, prefixCacheBytes: 0 });
      try {
        return (await engine.generate({ promptIds: [1, 403, 407, 261, 378] }, { maxTokens: 12 })).rows[0]!.ids;
      } finally {
        await engine.dispose();
      }
    };
    const plain = await greedy(false);
    expect(await greedy(true), 'the load that saves').to.deep.equal(plain);
    expect(await greedy(true), 'the load after').to.deep.equal(plain);
    // Whatever was kept has every packed copy at a multiple of 64 (packed sizes depend on the CPU: on x86-64 with
    // AVX-512 nothing of this model is kept).
    const sessions = join(cacheDir, 'sessions');
    for (const name of [...(await entries(sessions)).keys()].filter((n) => n.endsWith('.onnx'))) {
      for (const t of (await readModel(join(sessions, name))).graph!.initializer!) {
        for (const e of t.externalData ?? []) {
          if (e.key!.startsWith('prepacked')) for (const blob of e.value!.split('|').slice(1)) expect(Number(blob.split(';')[0]) % 64, `${t.name}`).to.equal(0);
        }
      }
    }
  });

  it('the CLI: --no-session-cache turns it off; without it the engine chooses', async () => {
    const parse = async (...args: string[]) => {
      const command = addModelFlags(new Command().exitOverride());
      command.parse(['--model', 'm.onnx', ...args], { from: 'user' });
      return engineOptions(command.opts<ModelFlags>());
    };
    expect(await parse('--no-session-cache')).to.have.property('sessionCache', false);
    expect(await parse()).to.not.have.property('sessionCache');
  });
});
