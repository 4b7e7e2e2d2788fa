/**
 * The forms of the composition options, checked on the caller's thread: a fusion mode not among the modes ran as
 * `logits` and was reported as given, a fractional trace was taken, and reasoners given as a text or with a
 * missing entry failed inside the engine as TypeErrors (found by fuzzing). Weights and names are checked where
 * the reasoners are known; only a normalised call's constant weights are summed here.
 */
import { unnormalisableSum, type FusionMode } from './fusion.js';
import { refuseUnknownOptions } from '../generate/options.js';
import type { CompositionOptions, ReasonerSpec } from '../runtime/protocol.js';

/** The fusion modes the engine runs. */
export const FUSION_MODES: readonly FusionMode[] = ['logits', 'logprobs'];

/** Raised for a composition option of the wrong form, naming it. */
export class CompositionOptionsError extends TypeError {
  override name = 'CompositionOptionsError';
}

const shown = (v: unknown) => (typeof v === 'string' ? JSON.stringify(v) : v === null ? 'null' : Array.isArray(v) ? 'a list' : typeof v === 'object' ? 'an object' : String(v));

/** A fusion mode, when given. */
export function checkMode(mode: unknown, where: string): void {
  if (mode !== undefined && !FUSION_MODES.includes(mode as FusionMode)) throw new CompositionOptionsError(`${where}mode must be ${FUSION_MODES.join(' or ')}; got ${shown(mode)}`);
}

/** A model given by path or registry reference. */
export function checkModelRef(value: unknown, name: string): void {
  if (typeof value !== 'string' || value.trim() === '') throw new CompositionOptionsError(`${name} must be a model path or registry reference; got ${shown(value)}`);
}

/** A reasoner entry's fields by name, at load and per call (the types make a new field fail to compile until it is listed). */
const REASONER_FIELD_NAMES = {
  model: { model: true, name: true, weight: true, dtype: true } satisfies Record<keyof ReasonerSpec, true>,
  name: { name: true, weight: true } satisfies Record<keyof NonNullable<CompositionOptions['reasoners']>[number], true>,
} as const;

/**
 * A list of reasoner entries: objects whose `key` (model at load, name per call) is a non-empty text, with no field
 * outside an entry's (refused as the options `what` names are: `Engine.load`, `generation`).
 */
export function checkReasonerList(list: unknown, key: 'model' | 'name', where: string, what: string): void {
  if (list === undefined) return;
  if (!Array.isArray(list)) throw new CompositionOptionsError(`${where}reasoners must be a list of { ${key}, weight? }; got ${shown(list)}`);
  list.forEach((r, i) => {
    if (r === null || typeof r !== 'object' || Array.isArray(r)) throw new CompositionOptionsError(`${where}reasoners[${i}] must be an object { ${key}, weight? }; got ${shown(r)}`);
    // (before the key's own check: `{ modle }` is misspelt, not missing its model)
    refuseUnknownOptions(r, REASONER_FIELD_NAMES[key], what, `reasoners[${i}]`);
    const v = (r as Record<string, unknown>)[key];
    if (key === 'model') checkModelRef(v, `${where}reasoners[${i}].model`);
    else if (typeof v !== 'string' || v === '') throw new CompositionOptionsError(`${where}reasoners[${i}].name must name a loaded reasoner; got ${shown(v)}`);
    const name = (r as Record<string, unknown>).name;
    if (key === 'model' && name !== undefined && (typeof name !== 'string' || name === '')) throw new CompositionOptionsError(`${where}reasoners[${i}].name must be a non-empty text; got ${shown(name)}`);
  });
}

/** A call's trace count: a whole number of candidates from 1. */
export function checkTrace(trace: unknown): void {
  if (trace !== undefined && !(typeof trace === 'number' && Number.isInteger(trace) && trace >= 1)) throw new CompositionOptionsError(`trace must be a whole number of candidates from 1; got ${shown(trace)}`);
}

/**
 * A call's other composition options: `normalize` a boolean, `latent` a policy text, `latentPlaceholder` a text. With
 * `normalize` and constant weights for every reasoner listed, their sum with the backbone's 1 must be above zero
 * (a schedule's, or a loaded reasoner's weight, is checked where it applies).
 */
export function checkCallShape(options: { normalize?: unknown; reasoners?: unknown; latent?: unknown; latentPlaceholder?: unknown }): void {
  if (options.normalize !== undefined && typeof options.normalize !== 'boolean') throw new CompositionOptionsError(`normalize must be true or false; got ${shown(options.normalize)}`);
  if (options.normalize === true && Array.isArray(options.reasoners)) {
    const weights = options.reasoners.map((r) => (r as { weight?: unknown } | null)?.weight);
    // (a weight that is not a finite number is refused by name where the reasoners are known)
    if (weights.every((w): w is number => Number.isFinite(w))) {
      const refused = unnormalisableSum(weights.reduce((s, w) => s + w, 1));
      if (refused) throw new CompositionOptionsError(`${refused}; the sum counts the backbone's weight 1 and the reasoners' weights: give weights that sum above zero, or leave normalize off`);
    }
  }
  if (options.latent !== undefined && typeof options.latent !== 'string') throw new CompositionOptionsError(`latent must be a policy (marker, never or fixed:K); got ${shown(options.latent)}`);
  if (options.latentPlaceholder !== undefined && typeof options.latentPlaceholder !== 'string') {
    throw new CompositionOptionsError(`latentPlaceholder must be a text (shown once per latent step); got ${shown(options.latentPlaceholder)}`);
  }
}
