/** Reasoner weights: a constant, or a schedule over the generated-token index. */

/** One segment of a schedule: `weight` applies to generated tokens before `until` (or to all the rest). */
export interface WeightSegment {
  until?: number;
  weight: number;
}

/** A constant weight or a schedule, e.g. `[{ until: 40, weight: 1.2 }, { weight: 1.0 }]`. */
export type WeightSpec = number | readonly WeightSegment[];

/** Raised for a schedule that is not well formed. */
export class WeightScheduleError extends Error {
  override name = 'WeightScheduleError';
}

/** Checks a weight spec: finite numbers, increasing `until`, and a last segment without `until`. */
export function validateWeightSpec(spec: WeightSpec, owner: string): WeightSpec {
  if (typeof spec === 'number') {
    if (!Number.isFinite(spec)) throw new WeightScheduleError(`${owner}: weight must be a finite number, got ${spec}`);
    return spec;
  }
  if (!Array.isArray(spec)) throw new WeightScheduleError(`${owner}: weight must be a number or a schedule ([{ until?, weight }]), got ${JSON.stringify(spec)}`);
  if (spec.length === 0) throw new WeightScheduleError(`${owner}: a schedule needs at least one segment`);
  let previous = 0;
  spec.forEach((seg, i) => {
    if (!Number.isFinite(seg.weight)) throw new WeightScheduleError(`${owner}: segment ${i} has no finite weight`);
    const last = i === spec.length - 1;
    if (last && seg.until !== undefined) {
      throw new WeightScheduleError(`${owner}: the last segment must have no "until" (it covers the rest of the generation)`);
    }
    if (!last) {
      if (!Number.isInteger(seg.until) || seg.until! <= previous) {
        throw new WeightScheduleError(`${owner}: segment ${i} needs an integer "until" greater than ${previous}`);
      }
      previous = seg.until!;
    }
  });
  return spec;
}

/** The weight for the token at generated index `step` (0 = the first generated token). */
export function weightAt(spec: WeightSpec, step: number): number {
  if (typeof spec === 'number') return spec;
  for (const seg of spec) if (seg.until === undefined || step < seg.until) return seg.weight;
  return spec[spec.length - 1]!.weight;
}

/** True when the spec is 0 at every step (the model need not run at all). */
export function isAlwaysZero(spec: WeightSpec): boolean {
  return typeof spec === 'number' ? spec === 0 : spec.every((s) => s.weight === 0);
}
