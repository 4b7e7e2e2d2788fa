/**
 * Where the load time of a converted GGUF module goes, per file type and weight layout: the ~125M llama that
 * `npm run bench:gguf` writes (run it first), converted with its weights inside `model.onnx` (`inline`, the
 * converter's layout before 16 MiB of weights went to `model.onnx.data`) and in memory-mapped external data
 * (`external`, the default now). Each module is loaded once before the rounds (which writes its prepared graph
 * and saved session, as bench:gguf's warm load does), each figure comes from a fresh process, rounds interleave
 * layouts and types, medians are printed:
 * - `Engine.load`: what bench:gguf calls load time (worker start-up included), and the peak RSS after it and
 *   one 8-token generation;
 * - the same steps on one thread, timed apart: importing the runtime (onnxruntime-node, the engine's modules),
 *   locating the module and verifying its files against the manifest (stat records), the prepared-graph cache
 *   lookup, `InferenceSession.create`, building the tokenizer, and the first prefill. `Engine.load` less their
 *   sum is, roughly, the worker's own start-up (its thread, and its imports of the same modules).
 *
 * Our code runs from the compiled package (`dist/`, built first), or with `--from src` from the sources under tsx;
 * `--row-shards off` loads the engine without its row shards (see bench/gguf.ts).
 *
 *   npm run bench:gguf-load [-- --rounds 3 --types Q4_0,Q4_K_M,Q8_0,F16 --from dist --row-shards auto]
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { repoRoot } from '../test/support/paths.js';
import { median, printTable } from './support/stats.js';
import { buildCore, coreModule, parseCoreBuild, type CoreBuild } from './support/core-build.js';

const TYPES = ['Q4_0', 'Q4_K_M', 'Q8_0', 'F16'] as const;
const LAYOUTS = ['inline', 'external'] as const;
type Layout = (typeof LAYOUTS)[number];
const THREADS = 2;
const PROMPT = [1, 415, 2936, 9060, 285, 1142, 10575, 975];
const ggufDir = join(repoRoot, '.cache', 'bench', 'gguf');
const dir = join(repoRoot, '.cache', 'bench', 'gguf-load');

const STAGES = ['engineLoad', 'imports', 'locate', 'prepare', 'session', 'tokenizer', 'firstPrefill'] as const;
type Stage = (typeof STAGES)[number];
type Figures = Record<Stage | 'engineRssMb' | 'sessionRssMb', number>;

/**
 * The module of `type` in `layout`, converted again whenever bench:gguf has written its GGUF again or what the
 * converter writes for a miniature of it changes (bench/support/models.ts).
 */
async function prepare(type: string, layout: Layout): Promise<string> {
  const gguf = join(ggufDir, `llama-125m-${type}.gguf`);
  if (!existsSync(gguf)) throw new Error(`${gguf} is missing: run \`npm run bench:gguf -- --models llama125m --types ${type}\` first`);
  const module = join(dir, `llama-125m-${type}-${layout}`);
  // (imported here: the measuring children load neither the converter nor the builders)
  const [{ converterStamp, SERVING_SHAPE }, { withGguf }] = await Promise.all([import('./support/models.js'), import('../packages/core/src/gguf/reader.js')]);
  // The miniature's tensors take the types of the same tensors in the file (its layers are the file's first ones;
  // bench:gguf's llama is the serving shape).
  const types = await withGguf(gguf, async (f) => new Map(f.tensors.map((t) => [t.name, t.type])));
  const converter = await converterStamp(SERVING_SHAPE, (tensor) => types.get(tensor)!, { externalData: layout === 'external' });
  const recipe = JSON.stringify({ gguf: await readFile(`${gguf}.recipe`, 'utf8'), converter });
  const stamp = `${module}.converter`;
  if (!existsSync(join(module, 'reasonplug.json')) || (await readFile(stamp, 'utf8').catch(() => '')) !== recipe) {
    console.error(`converting ${gguf} (${layout})`);
    await rm(module, { recursive: true, force: true });
    const { convertGguf } = await import('../packages/core/src/gguf/convert.js');
    await convertGguf(gguf, module, { externalData: layout === 'external' });
    await writeFile(stamp, recipe);
  }
  return module;
}

const peakRssMb = () => Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? 0) / 1024;

/** `Engine.load`'s options for a bench module. */
const engineLoadOptions = (module: string, rowShards: boolean) => ({ model: module, intraOpThreads: THREADS, ...(rowShards ? {} : { rowShards: false }) });

/** `Engine.load` of the module, then one short generation: load time and peak RSS as bench:gguf sees them. */
async function engineChild(module: string, from: CoreBuild, rowShards: boolean): Promise<Partial<Figures>> {
  const { Engine } = (await import(coreModule(from, 'engine'))) as typeof import('../packages/core/src/engine.js');
  const t0 = performance.now();
  const engine = await Engine.load(engineLoadOptions(module, rowShards));
  const engineLoad = performance.now() - t0;
  await engine.generate({ promptIds: PROMPT }, { maxTokens: 8, ignoreEos: true });
  await engine.dispose();
  return { engineLoad, engineRssMb: peakRssMb() };
}

/** The worker's loading steps on this thread, each timed. */
async function stagesChild(module: string, from: CoreBuild): Promise<Partial<Figures>> {
  const out: Partial<Figures> = {};
  let t = performance.now();
  const lap = (stage: Stage) => {
    const now = performance.now();
    out[stage] = now - t;
    t = now;
  };
  const [{ locateModel }, { prepareDecoder }, { DecoderSession }, { TextTokenizer }] = await Promise.all([
    import(coreModule(from, 'modules/locate')) as Promise<typeof import('../packages/core/src/modules/locate.js')>,
    import(coreModule(from, 'onnx/prepared-cache')) as Promise<typeof import('../packages/core/src/onnx/prepared-cache.js')>,
    import(coreModule(from, 'runtime/decoder-session')) as Promise<typeof import('../packages/core/src/runtime/decoder-session.js')>,
    import(coreModule(from, 'tokenizer/tokenizer')) as Promise<typeof import('../packages/core/src/tokenizer/tokenizer.js')>,
    import('onnxruntime-node'),
  ]);
  lap('imports');
  const location = await locateModel(module);
  lap('locate');
  // as open-decoder.ts prepares a backbone
  const prepared = await prepareDecoder(location.modelPath, { lastLogitsOnly: true, logitsFloat32: true, expectedSha256: location.manifest!.files.model.sha256 });
  lap('prepare');
  const session = await DecoderSession.create(
    { path: prepared.preparedPath, weightBytes: prepared.stepBytes, ...(prepared.externalDataDir ? { externalDataDir: prepared.externalDataDir } : {}) },
    { intraOpThreads: THREADS },
  );
  lap('session');
  out.sessionRssMb = peakRssMb();
  await TextTokenizer.fromDirectory(location.tokenizerDir!, location.generation ?? {});
  lap('tokenizer');
  await session.prefill([PROMPT]);
  lap('firstPrefill');
  await session.release();
  return out;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      rounds: { type: 'string', default: '3' },
      types: { type: 'string', default: TYPES.join(',') },
      child: { type: 'string' },
      module: { type: 'string' },
      from: { type: 'string', default: 'dist' },
      'row-shards': { type: 'string', default: 'auto' },
    },
  });
  const from = parseCoreBuild(values.from!);
  if (!['auto', 'off'].includes(values['row-shards']!)) throw new Error(`--row-shards must be auto or off; got ${values['row-shards']}`);
  const rowShards = values['row-shards'] === 'auto';
  if (values.child === 'warm') {
    const { Engine } = (await import(coreModule(from, 'engine'))) as typeof import('../packages/core/src/engine.js');
    await (await Engine.load(engineLoadOptions(values.module!, rowShards))).dispose();
    return;
  }
  if (values.child) {
    const fig = values.child === 'engine' ? await engineChild(values.module!, from, rowShards) : await stagesChild(values.module!, from);
    process.stdout.write(JSON.stringify(fig) + '\n');
    return;
  }
  const types = values.types!.split(',');
  for (const t of types) if (!(TYPES as readonly string[]).includes(t)) throw new Error(`unknown type ${t}; choose from ${TYPES.join(', ')}`);
  if (from === 'dist') buildCore();
  const modules = new Map<string, string>();
  for (const t of types) for (const l of LAYOUTS) modules.set(`${t} ${l}`, await prepare(t, l));
  const rounds = Number(values.rounds);
  const got = new Map<string, Partial<Figures>[]>();
  const loads: number[] = [];
  const self = fileURLToPath(import.meta.url);
  // One load of each module first, as bench:gguf does, so that no round pays for the prepared graph or the saved
  // session being written (the first round after a conversion was far off the others).
  for (const module of modules.values()) {
    execFileSync(process.execPath, [...process.execArgv, self, '--child', 'warm', '--module', module, '--from', from, '--row-shards', values['row-shards']!], { stdio: ['ignore', 'ignore', 'inherit'] });
  }
  for (let round = 0; round < rounds; round++) {
    for (const t of types) {
      const layouts = round % 2 === 0 ? LAYOUTS : [...LAYOUTS].reverse();
      for (const l of layouts) {
        const key = `${t} ${l}`;
        const fig: Partial<Figures> = {};
        for (const child of ['engine', 'stages']) {
          const out = execFileSync(process.execPath, [...process.execArgv, self, '--child', child, '--module', modules.get(key)!, '--from', from, '--row-shards', values['row-shards']!], {
            encoding: 'utf8',
            stdio: ['ignore', 'pipe', 'inherit'],
          });
          Object.assign(fig, JSON.parse(out.trim().split('\n').pop()!) as Partial<Figures>);
        }
        loads.push(loadavg()[0]!);
        got.set(key, [...(got.get(key) ?? []), fig]);
        console.error(`round ${round + 1}/${rounds} ${key}: ${JSON.stringify(fig, (_, v: unknown) => (typeof v === 'number' ? Math.round(v) : v))}`);
      }
    }
  }
  const med = (key: string, k: keyof Figures) => median(got.get(key)!.map((f) => f[k]!));
  const columns: (keyof Figures)[] = ['engineLoad', 'imports', 'locate', 'prepare', 'session', 'tokenizer', 'firstPrefill', 'sessionRssMb', 'engineRssMb'];
  const figures = Object.fromEntries([...modules.keys()].map((key) => [key, Object.fromEntries(columns.map((c) => [c, Math.round(med(key, c))]))]));
  console.log(JSON.stringify({ bench: 'gguf-load', threads: THREADS, reasonplugFrom: from, rowShards, rounds, loadAverage: median(loads), figures }));
  printTable(
    `Converted GGUF module load, llama 768x12 (~125M params), ${THREADS} threads, from ${from === 'dist' ? 'dist/' : 'sources (tsx)'}${rowShards ? '' : ' without row shards'}, ms and MB, medians of ${rounds} rounds (load average ${median(loads).toFixed(1)})`,
    ['type / layout', 'Engine.load', 'imports', 'locate+verify', 'prepared cache', 'session', 'tokenizer', 'first prefill', 'RSS session', 'RSS engine'],
    [...modules.keys()].map((key) => [key, ...columns.map((c) => med(key, c))]),
  );
}

await main();
