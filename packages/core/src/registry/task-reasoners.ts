/**
 * Reasoners found by task (`Engine.load`'s `reasonerTasks`): each task's logit-reasoner in the registry whose
 * tokenizer is the backbone's, given as a reasoner pinned to the version found, so that whoever loads it pulls the
 * bytes that were found (the engine, or the server, which names what each reference resolved to).
 */
import { CompositionOptionsError } from '../compose/composition-options.js';
import type { WeightSpec } from '../compose/weights.js';
import { locateModel } from '../modules/locate.js';
import type { ReasonerSpec } from '../runtime/protocol.js';
import { tokenizerFingerprintOf } from '../tokenizer/fingerprint.js';
import { reasonerForTask } from './lookup.js';
import type { RegistryOptions } from './settings.js';

/** A reasoner asked for by task, with the weight it is composed at (default: the reasoner's own). */
export interface ReasonerTask {
  task: string;
  weight?: WeightSpec;
}

/**
 * The reasoners `tasks` name for the backbone at `model` (a loadable path; its tokenizer matches them), each as a
 * reasoner spec whose model is the registry reference pinned to a digest (not pulled yet), named after its task.
 */
export async function reasonersForTasks(model: string, dtype: string | undefined, tasks: readonly ReasonerTask[], registry: RegistryOptions | undefined): Promise<ReasonerSpec[]> {
  const tokenizer = await tokenizerFingerprintOf(await locateModel(model, dtype ? { dtype } : {}));
  if (tokenizer === undefined) throw new CompositionOptionsError(`reasonerTasks: the backbone ${model} has no tokenizer.json, so no reasoner can be matched to it`);
  return Promise.all(
    tasks.map(async ({ task, weight }) => {
      const { ref } = await reasonerForTask(task, tokenizer, registry);
      return { model: ref, name: task, ...(weight !== undefined ? { weight } : {}) };
    }),
  );
}
