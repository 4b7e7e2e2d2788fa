/**
 * The quantized results table: each gain of a reference run (fp32) beside the same gain of another run (quantized
 * modules), and the share of it kept. Gain = composed − alone on the reasoner's task; for latent decoding, the
 * accuracy and the cut in reasoning tokens (cot − latent).
 */
import type { Row } from './run.js';

/** A composed setting, the setting it is measured against, and the task both run. */
const GAINS = [
  { alone: 'S', composed: 'S+math', task: 'math', label: 'S / S+math on math', gain: 'gain kept (S+math, math)' },
  { alone: 'S', composed: 'S+cipher', task: 'cipher', label: 'S / S+cipher on cipher', gain: 'gain kept (S+cipher, cipher)' },
  { alone: 'L', composed: 'L+math', task: 'math', label: 'L / L+math on math (weak-to-strong)', gain: 'gain kept (L+math, math)' },
] as const;

function find(rows: Row[], setting: string, task: string): Row | undefined {
  return rows.find((r) => r.setting === setting && r.task === task);
}

const pct = (x: number) => `${(x * 100).toFixed(1)}`;
/** A ratio of gains as a whole percentage ('–' when the reference gain is zero). */
const kept = (got: number, ref: number) => (ref === 0 ? '–' : `${Math.round((100 * got) / ref)}%`);

/** Markdown rows `| what | reference | other |` for the settings present in both runs. */
export function gainsKept(ref: Row[], other: Row[], label: string): string {
  const lines = [`| setting | fp32 | ${label} |`, '|---|---|---|'];
  for (const g of GAINS) {
    const [ra, rc, oa, oc] = [find(ref, g.alone, g.task), find(ref, g.composed, g.task), find(other, g.alone, g.task), find(other, g.composed, g.task)];
    if (!ra || !rc || !oa || !oc) continue;
    const refGain = rc.accuracy - ra.accuracy;
    lines.push(`| ${g.label} | ${pct(ra.accuracy)} / ${pct(rc.accuracy)}% | ${pct(oa.accuracy)} / ${pct(oc.accuracy)}% |`);
    lines.push(`| ${g.gain} | ${(refGain * 100).toFixed(1)} pts | ${kept(oc.accuracy - oa.accuracy, refGain)} |`);
  }
  const [rCot, rLat, oCot, oLat] = [find(ref, 'cot', 'math'), find(ref, 'latent', 'math'), find(other, 'cot', 'math'), find(other, 'latent', 'math')];
  if (rCot && rLat && oCot && oLat) {
    const tokens = (cot: Row, lat: Row) => `${cot.meanReasoningTokens.toFixed(1)} → ${lat.meanReasoningTokens.toFixed(1)}`;
    const cut = (cot: Row, lat: Row) => cot.meanReasoningTokens - lat.meanReasoningTokens;
    lines.push(`| latent accuracy | ${pct(rLat.accuracy)}% | ${pct(oLat.accuracy)}% |`);
    lines.push(`| reasoning tokens, cot → latent | ${tokens(rCot, rLat)} | ${tokens(oCot, oLat)} (${kept(cut(oCot, oLat), cut(rCot, rLat))}) |`);
  }
  return lines.join('\n');
}
