/**
 * UniR composition speed, side by side in one run: a ~24M-parameter backbone alone, with 1 and with 3
 * reasoners 1/8 its size through the engine, in both placements (reasoners in lane workers on cores the
 * backbone gives up, or inline after the backbone on its thread; the one the engine picks by itself is marked
 * `auto` and is the engine's figure in the JSON line), and the naive
 * sequential loop the reference implementation uses (every model one after another on one thread). Greedy;
 * ms/token is the slope between a short and a long generation (a round whose slope comes out ≤ 0 on a busy
 * machine is run again, and counted); medians over rounds that interleave the settings.
 *
 * A decode step is bound by the bytes of weights it reads. The reasoner has the backbone's architecture (an
 * untied head, so its embedding table is only gathered from), hence reads ~1/9 of the backbone's bytes per
 * token. A tied-head reasoner of the same parameter count multiplies its whole embedding table every step and
 * reads ~1/5: it is reported too, so users can see what that choice costs. The last row is the backbone alone
 * on the cores one lane leaves it: with few cores, that, not the reasoners, is what lanes cost. A last table
 * is the floor on this machine: the backbone's plain steps, then with only the reasoners' output projections
 * run after each (the weights every reasoner step must read, with none of its layers); a target below that
 * row is out of reach here for any placement. The 4-bit tables run the same models after `reasonplug quantize`
 * (backbone and reasoners, block 32) in both placements, the engine's own marked, against the 4-bit backbone alone
 * with the same heads: once as quantize makes them by default (LM heads at 8 bits), once with `--head-bits 4` (issue
 * #17's target quantizes "MatMul weights including the LM head"). `--quantized-only` runs those tables alone.
 *
 *   npm run bench:compose [-- --rounds 9 --short 16 --long 144] [-- --quantized-only]
 */
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { Engine } from '../packages/core/src/engine.js';
import { ComposedSource, localReasoners } from '../packages/core/src/compose/composed-source.js';
import { runDecodeLoop } from '../packages/core/src/generate/decode-loop.js';
import { openDecoder } from '../packages/core/src/runtime/prepare-model.js';
import { llamaParameterCount, randomLlamaWeights } from '../packages/core/src/onnx/llama-builder.js';
import type { LlamaConfig } from '../packages/core/src/onnx/llama-spec.js';
import { median, printTable, quartiles } from './support/stats.js';
import { SlopeRounds } from './support/slope.js';
import { headsOnly, type Head } from './support/head-floor.js';
import { benchLlama, benchQuantized, LLAMA_24M, PROMPT } from './support/models.js';
import type { Placement, PlacementChoice } from '../packages/core/src/runtime/thread-budget.js';

const BACKBONE = LLAMA_24M;
/** 1/8 of the backbone's parameters over the same vocabulary, built like the backbone (untied head). */
const REASONER: LlamaConfig = { vocabSize: 32000, hiddenSize: 44, numLayers: 4, numHeads: 2, intermediateSize: 352 };
/** 1/8 of the backbone's parameters with a tied head: its embedding table is its head. */
const TIED_REASONER: LlamaConfig = { vocabSize: 32000, hiddenSize: 88, numLayers: 2, numHeads: 4, intermediateSize: 236, tieWordEmbeddings: true };

interface Setting {
  label: string;
  run(n: number): Promise<number>;
  dispose(): Promise<void>;
}

async function engineSetting(
  /** The row's label, or one made from the placement the engine chose. */
  label: string | ((chosen: Placement) => string),
  backbone: string,
  reasoners: string[],
  options: { threads?: number; placement?: PlacementChoice } = {},
): Promise<Setting> {
  const engine = await Engine.load({
    model: backbone,
    reasoners: reasoners.map((model, i) => ({ model, name: `r${i}`, weight: 0.5 })),
    ...(options.threads ? { intraOpThreads: options.threads } : {}),
    ...(options.placement ? { placement: options.placement } : {}),
  });
  return {
    label: typeof label === 'string' ? label : label(engine.info.placement.kind),
    async run(n) {
      const t0 = performance.now();
      await engine.generate({ promptIds: PROMPT }, { maxTokens: n, ignoreEos: true });
      return performance.now() - t0;
    },
    dispose: () => engine.dispose(),
  };
}

/** The placement the engine picks by itself for these models on this machine. */
async function autoPlacement(backbone: string, reasoners: string[]): Promise<Placement> {
  const engine = await Engine.load({ model: backbone, reasoners: reasoners.map((model, i) => ({ model, name: `r${i}` })) });
  const { kind } = engine.info.placement;
  await engine.dispose();
  return kind;
}

/** The reference implementation's way: every model stepped one after another on this one thread. */
async function sequentialSetting(label: string, backbone: string, reasoners: string[]): Promise<Setting> {
  const opened = await Promise.all([backbone, ...reasoners].map((m) => openDecoder(m, {})));
  const [b, ...rs] = opened.map((o) => o.session);
  return {
    label,
    async run(n) {
      const source = new ComposedSource(b!, localReasoners(rs.map((decoder, i) => ({ name: `r${i}`, decoder }))), BACKBONE.vocabSize, {
        active: rs.map((_, slot) => ({ slot, weight: 0.5 })),
        mode: 'logits',
        normalize: false,
        traceTop: 0,
      });
      const t0 = performance.now();
      await runDecodeLoop(source, {
        prompts: [PROMPT],
        options: { maxTokens: n, ignoreEos: true },
        eosTokenIds: [],
        shouldAbort: () => false,
        onToken: () => {},
      });
      return performance.now() - t0;
    },
    dispose: async () => {
      for (const o of opened) await o.session.release();
    },
  };
}

/**
 * The floor: the backbone's plain steps on this thread, then the same with only the reasoners' output
 * projections after each step: what no placement of whole reasoners can beat on this machine.
 */
async function floorSetting(label: string, backbone: string, heads: Head[]): Promise<Setting> {
  const { session } = await openDecoder(backbone, {});
  const projections = heads.length > 0 ? await headsOnly(heads, BACKBONE.vocabSize) : undefined;
  return {
    label,
    async run(n) {
      const t0 = performance.now();
      await session.prefill([PROMPT]);
      await projections?.run();
      for (let i = 1; i < n; i++) {
        await session.step([PROMPT[i % PROMPT.length]!]);
        await projections?.run();
      }
      return performance.now() - t0;
    },
    dispose: async () => {
      await session.release();
      await projections?.release();
    },
  };
}

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '9' },
    short: { type: 'string', default: '16' },
    long: { type: 'string', default: '144' },
    /** Only the 4-bit tables: a short run for work on quantized composition. */
    'quantized-only': { type: 'boolean', default: false },
  },
});
const rounds = Number(values.rounds);
const slope = new SlopeRounds(Number(values.short), Number(values.long));
const { short, long } = slope;
const quantizedOnly = values['quantized-only'];

const backbone = await benchLlama('llama24m', BACKBONE, 1);
/** Weight seeds of the three reasoners (the backbone's is 1); the floor's heads are these reasoners' heads. */
const REASONER_SEEDS = [2, 3, 4];
const reasoners = await Promise.all(REASONER_SEEDS.map((seed) => benchLlama(`reasoner3m-untied-${seed}`, REASONER, seed)));
const settings: Setting[] = [];

/**
 * Both placements of `n` reasoners side by side, the one the engine picks by itself marked `(auto)`: the pick is
 * only as good as this says. Returns the index of the auto row.
 */
async function bothPlacements(what: string, backboneModel: string, reasonerModels: string[], n: number): Promise<number> {
  const auto = await autoPlacement(backboneModel, reasonerModels.slice(0, n));
  let picked = -1;
  for (const placement of ['lanes', 'inline'] as const) {
    if (placement === auto) picked = settings.length;
    settings.push(await engineSetting(`${what}, ${placement}${placement === auto ? ' (auto)' : ''}`, backboneModel, reasonerModels.slice(0, n), { placement }));
  }
  return picked;
}
const plural = (n: number) => `reasoner${n > 1 ? 's' : ''}`;

const picked = new Map<number, number>();
const sequential = new Map<number, number>();
let floorStart = 0;
if (!quantizedOnly) {
  const tied = await Promise.all(REASONER_SEEDS.map((seed) => benchLlama(`reasoner3m-${seed}`, TIED_REASONER, seed)));
  settings.push(await engineSetting('backbone alone', backbone, []));
  for (const n of [1, 3]) picked.set(n, await bothPlacements(`+ ${n} ${plural(n)}`, backbone, reasoners, n));
  for (const n of [1, 3]) {
    sequential.set(n, settings.length);
    settings.push(await sequentialSetting(`sequential, + ${n} ${plural(n)}`, backbone, reasoners.slice(0, n)));
  }
  for (const n of [1, 3]) settings.push(await engineSetting((chosen) => `tied-head: + ${n}, ${chosen} (auto)`, backbone, tied.slice(0, n)));
  // What the backbone alone costs on the cores one lane leaves it: the floor of any plan that gives a lane a core.
  const leftToBackbone = Math.max(1, availableParallelism() - 1);
  settings.push(await engineSetting(`backbone alone, ${leftToBackbone} thread(s)`, backbone, [], { threads: leftToBackbone }));
  const heads: Head[] = REASONER_SEEDS.map((seed) => ({ weights: randomLlamaWeights(REASONER, seed).lmHead!, hidden: REASONER.hiddenSize }));
  floorStart = settings.length;
  settings.push(await floorSetting('backbone steps alone', backbone, []));
  for (const n of [1, 3]) settings.push(await floorSetting(`+ ${n > 1 ? `${n} reasoners' output projections` : "1 reasoner's output projection"} only`, backbone, heads.slice(0, n)));
}
const q4Start = settings.length;
/** A 4-bit table: the rows from `start` (the backbone alone, its anchor) and the engine's own placement's rows. */
interface QuantizedGroup {
  headBits: 4 | 8;
  start: number;
  picked: Map<number, number>;
}
const quantizedGroups: QuantizedGroup[] = [];
for (const headBits of [8, 4] as const) {
  // benchQuantized names its file by bits alone, so the 4-bit heads are quantized from copies of the same fp32
  // models under other names (same shapes and seeds: the same weights), not over the 8-bit heads' files.
  const sources =
    headBits === 8
      ? { backbone, reasoners }
      : {
          backbone: await benchLlama('llama24m-head4', BACKBONE, 1),
          reasoners: await Promise.all(REASONER_SEEDS.map((seed) => benchLlama(`reasoner3m-untied-${seed}-head4`, REASONER, seed))),
        };
  // quantize's own default (8-bit head) as `{ bits: 4 }`, the options bench:decode quantizes its 4-bit model with
  const options = headBits === 8 ? { bits: 4 as const } : { bits: 4 as const, headBits };
  const backboneQ4 = await benchQuantized(sources.backbone, options);
  const reasonersQ4 = await Promise.all(sources.reasoners.map((r) => benchQuantized(r, options)));
  const what = `4-bit, ${headBits}-bit head`;
  const group: QuantizedGroup = { headBits, start: settings.length, picked: new Map() };
  settings.push(await engineSetting(`${what}: backbone alone`, backboneQ4, []));
  for (const n of [1, 3]) group.picked.set(n, await bothPlacements(`${what}: + ${n} ${plural(n)}`, backboneQ4, reasonersQ4, n));
  quantizedGroups.push(group);
}

const slopes = settings.map(() => [] as number[]);
for (const s of settings) await s.run(short); // warm-up
for (let round = 0; round < rounds; round++) {
  for (let k = 0; k < settings.length; k++) {
    const i = (k + round) % settings.length;
    slopes[i]!.push((await slope.take(settings[i]!.label, (n) => settings[i]!.run(n), (ms) => ms)).msPerToken);
  }
}
for (const s of settings) await s.dispose();

const ms = slopes.map(median);
const row = (i: number, anchor: number) => ({
  setting: settings[i]!.label,
  msPerToken: ms[i]!,
  middleHalf: quartiles(slopes[i]!),
  vsBackboneAlone: ms[i]! / anchor,
});
const table = (r: ReturnType<typeof row>) => [r.setting, r.msPerToken, `${r.middleHalf[0].toFixed(2)}–${r.middleHalf[1].toFixed(2)}`, `${r.vsBackboneAlone.toFixed(2)}x`];
const quantized = quantizedGroups.map(({ headBits, start, picked: own }, g) => {
  const end = quantizedGroups[g + 1]?.start ?? settings.length;
  const rows = settings.slice(start, end).map((_, i) => row(start + i, ms[start]!));
  return { headBits, rows, engineAuto: { oneReasoner: rows[own.get(1)! - start]!, threeReasoners: rows[own.get(3)! - start]! } };
});
const common = { bench: 'compose', cores: availableParallelism(), rounds, short, long, reruns: slope.reruns, backboneParams: llamaParameterCount(BACKBONE), reasonerParams: llamaParameterCount(REASONER) };
if (quantizedOnly) {
  console.log(JSON.stringify({ ...common, quantized }));
} else {
  const rows = settings.slice(0, floorStart).map((_, i) => row(i, ms[0]!));
  const floor = settings.slice(floorStart, q4Start).map((_, i) => row(floorStart + i, ms[floorStart]!));
  const autoRow = (n: number) => rows[picked.get(n)!]!;
  const engineAuto = { oneReasoner: autoRow(1), threeReasoners: autoRow(3) };
  const vsSequential = {
    oneReasoner: ms[picked.get(1)!]! / ms[sequential.get(1)!]!,
    threeReasoners: ms[picked.get(3)!]! / ms[sequential.get(3)!]!,
  };
  console.log(
    JSON.stringify({
      ...common,
      tiedReasonerParams: llamaParameterCount(TIED_REASONER),
      rows,
      engineAuto,
      engineVsSequential: vsSequential,
      floor,
      quantized,
    }),
  );
  printTable(
    `UniR composition, greedy, ms/token (slope ${short}→${long} tokens, median of ${rounds}${slope.note()}); backbone ${(llamaParameterCount(BACKBONE) / 1e6).toFixed(1)}M, reasoners ${(llamaParameterCount(REASONER) / 1e6).toFixed(2)}M each`,
    ['setting', 'ms/token', 'middle half of rounds', 'vs backbone alone'],
    rows.map(table),
  );
  printTable('engine (auto placement) vs the sequential loop', ['reasoners', 'ratio'], [
    ['1', `${vsSequential.oneReasoner.toFixed(2)}x`],
    ['3', `${vsSequential.threeReasoners.toFixed(2)}x`],
  ]);
  printTable(
    'floor on this machine: backbone steps on this thread, then with only the reasoners\' output projections (one thread)',
    ['setting', 'ms/token', 'middle half of rounds', 'vs backbone steps alone'],
    floor.map(table),
  );
}
for (const { headBits, rows } of quantized) {
  printTable(
    `4-bit backbone and reasoners (reasonplug quantize, block 32), LM heads ${headBits === 8 ? "8-bit (quantize's default)" : '4-bit too (--head-bits 4)'}, both placements, the engine's own marked (slope ${short}→${long} tokens, median of ${rounds}${slope.note()})`,
    ['setting', 'ms/token', 'middle half of rounds', `vs 4-bit, ${headBits}-bit head backbone alone`],
    rows.map(table),
  );
}
