/**
 * `compat.vocabSize` of a module manifest against the model it ships. The manifest states the vocabulary so
 * that a registry search can match modules without loading them; a value the model does not have would match
 * modules that cannot be composed, so it is refused on load.
 */
import { join } from 'node:path';
import { readJsonIfPresent } from '../tokenizer/tokenizer.js';
import { vocabularyPairs } from '../tokenizer/fingerprint.js';

/** Raised when a module's manifest declares something its model does not match. */
export class ModuleCompatError extends Error {
  override name = 'ModuleCompatError';
}

/** Ids a `tokenizer.json` in `dir` can produce (base vocabulary and added tokens); undefined without one. */
export async function tokenizerSizeOfDir(dir: string): Promise<number | undefined> {
  const json = await readJsonIfPresent(join(dir, 'tokenizer.json'));
  if (!json) return undefined;
  const pairs = vocabularyPairs(json);
  return pairs.length > 0 ? pairs[pairs.length - 1]![1] + 1 : undefined;
}

/** What a model's vocabulary is: the width of its logits and, when it has one, its tokenizer's size. */
export interface VocabularyShape {
  logits: number;
  /** Read only when the declared size is not the logit width (the common case costs nothing). */
  tokenizerSize: () => Promise<number | undefined>;
}

/**
 * Checks `compat.vocabSize` (`declared`, from the manifest at `manifestPath`) against the model. It is the
 * width of the logits (`vocab_size` of the model's config, as GGUF conversion writes it), or for a padded
 * vocabulary, whose logits are wider than its tokenizer (e.g. 151936 logits over 151665 tokens), the
 * tokenizer's size, the ids that can be sampled. Anything else is refused naming both numbers.
 */
export async function checkDeclaredVocabSize(
  manifestPath: string,
  declared: number,
  model: VocabularyShape,
  what = 'the model',
  advice = "write the model's vocabulary size in the manifest (re-pack the module) or use the module built for this model",
): Promise<void> {
  if (declared === model.logits) return;
  const tokens = await model.tokenizerSize();
  const sampled = tokens === undefined ? undefined : Math.min(tokens, model.logits);
  if (declared === sampled) return;
  throw new ModuleCompatError(
    `${manifestPath}: compat.vocabSize is ${declared}, but ${what} produces ${model.logits} logits` +
      `${sampled !== undefined && sampled !== model.logits ? ` over a tokenizer of ${sampled} tokens` : ''}; ${advice}`,
  );
}
