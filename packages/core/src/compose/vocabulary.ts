/**
 * Vocabulary alignment of composed models: one tokenizer for all (checked by fingerprint), logits truncated
 * to the tokenizer's size so padded ids can never be sampled.
 */

/** Raised when models cannot be composed over one vocabulary. */
export class VocabularyMismatchError extends Error {
  override name = 'VocabularyMismatchError';
}

/** What is known about one model's vocabulary. */
export interface VocabularyFacts {
  name: string;
  /** Width of its logits. */
  logits: number;
  /** Fingerprint of its tokenizer (manifest `compat.tokenizer`, or computed from tokenizer.json). */
  fingerprint?: string;
}

/**
 * The vocabulary size fused logits use: the backbone tokenizer's, when it has one (every model must agree
 * with its fingerprint and produce at least that many logits; one without a tokenizer, exactly as many as the
 * backbone), else the common logit width of all models. Returns warnings for models whose tokenizer could not be
 * checked.
 */
export function sharedVocabulary(
  backbone: VocabularyFacts & { tokenizerSize?: number },
  reasoners: readonly VocabularyFacts[],
  /** What a mismatched tokenizer's error advises. */
  advice = 'Reasoners must share the backbone tokenizer, token for token. Pick a reasoner trained for this backbone family.',
): { vocab: number; warnings: string[] } {
  const warnings: string[] = [];
  const unchecked = (m: VocabularyFacts) =>
    warnings.push(`${m.name}: no tokenizer to check; composing by vocabulary size (${m.logits}) alone`);
  if (backbone.tokenizerSize === undefined || backbone.fingerprint === undefined) {
    for (const m of [backbone, ...reasoners]) {
      if (m.logits !== backbone.logits) {
        throw new VocabularyMismatchError(
          `${m.name} produces ${m.logits} logits but ${backbone.name} produces ${backbone.logits}; without tokenizers ` +
            'the vocabularies must be the same size. Add tokenizer.json beside the models to compose padded vocabularies.',
        );
      }
    }
    if (reasoners.length > 0) unchecked(backbone);
    return { vocab: backbone.logits, warnings };
  }
  const vocab = backbone.tokenizerSize;
  for (const m of [backbone, ...reasoners]) {
    if (m.fingerprint === undefined) {
      // Without a tokenizer only the width speaks for the vocabulary: a wider one is another model's, not padding.
      if (m.logits !== backbone.logits) {
        throw new VocabularyMismatchError(
          `${m.name} produces ${m.logits} logits but ${backbone.name} produces ${backbone.logits}; without a tokenizer ` +
            `to check, ${m.name} must produce as many. Add its tokenizer.json beside it to compose a padded vocabulary.`,
        );
      }
      unchecked(m);
    } else if (m.fingerprint !== backbone.fingerprint) {
      throw new VocabularyMismatchError(
        `${m.name} uses another tokenizer than ${backbone.name} (${m.fingerprint} vs ${backbone.fingerprint}). ${advice}`,
      );
    }
    if (m.logits < vocab) {
      throw new VocabularyMismatchError(
        `${m.name} produces ${m.logits} logits but the tokenizer has ${vocab} tokens; it cannot score every token`,
      );
    }
  }
  return { vocab, warnings };
}
