/**
 * LiteReason latent steps vs discrete steps, side by side in one run, on the ~24M-parameter backbone.
 * A discrete step feeds a sampled token; a latent step runs the projector on the last hidden state and feeds
 * the result as an input embedding. Per-step time is a slope (short vs long run; a round whose slope comes out ≤ 0
 * on a busy machine is run again, and counted), medians over rounds.
 *
 *   npm run bench:latent [-- --rounds 7 --short 8 --long 72]
 */
import { parseArgs } from 'node:util';
import { Engine } from '@reasonplug/core';
import { median, printTable } from './support/stats.js';
import { SlopeRounds } from './support/slope.js';
import { benchLlama, benchProjector, LLAMA_24M, PROMPT } from './support/models.js';

const { values } = parseArgs({
  options: { rounds: { type: 'string', default: '7' }, short: { type: 'string', default: '8' }, long: { type: 'string', default: '72' } },
});
const rounds = Number(values.rounds);
const slope = new SlopeRounds(Number(values.short), Number(values.long));
const { short, long } = slope;

const backbone = await benchLlama('llama24m', LLAMA_24M, 1);
const projector = await benchProjector('projector288', LLAMA_24M.hiddenSize, 1);

const engine = await Engine.load({ model: backbone, projector });
const timed = async (options: Parameters<Engine['generate']>[1]) => {
  const t0 = performance.now();
  await engine.generate({ promptIds: PROMPT }, options);
  return performance.now() - t0;
};
// discrete: n tokens, no latent steps; latent: n latent steps after the prompt, then one token
const discrete = (n: number) => timed({ maxTokens: n, ignoreEos: true, latent: 'never' });
const latent = (n: number) => timed({ maxTokens: 1, ignoreEos: true, latent: `fixed:${n}` });

await discrete(short);
await latent(short);
const slopes = { discrete: [] as number[], latent: [] as number[] };
for (let round = 0; round < rounds; round++) {
  for (const kind of round % 2 ? (['latent', 'discrete'] as const) : (['discrete', 'latent'] as const)) {
    slopes[kind].push((await slope.take(kind, kind === 'discrete' ? discrete : latent, (ms) => ms)).msPerToken);
  }
}
await engine.dispose();

const d = median(slopes.discrete);
const l = median(slopes.latent);
console.log(JSON.stringify({ bench: 'latent', rounds, short, long, reruns: slope.reruns, msPerDiscreteStep: d, msPerLatentStep: l, latentVsDiscrete: l / d }));
printTable(`LiteReason steps on the 24M backbone (slope ${short}→${long} steps, median of ${rounds}${slope.note()})`, ['step', 'ms', 'ratio'], [
  ['discrete (token)', d, '1.00x'],
  ['latent (projector + inputs_embeds)', l, `${(l / d).toFixed(2)}x`],
]);
