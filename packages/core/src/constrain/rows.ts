/**
 * The constraint stage as the generation worker uses it: a lazily built factory for the backbone's
 * vocabulary, one constraint per row of a request, and the parsed JSON of the rows that completed.
 */
import { join } from 'node:path';
import { readJsonIfPresent, TokenizerError } from '../tokenizer/tokenizer.js';
import type { RowResult } from '../generate/types.js';
import { grammarVocabulary } from './vocabulary.js';
import { XGrammarFactory } from './xgrammar-factory.js';
import { ConstraintError, type Constraint, type ConstraintFactory, type ResponseFormat, type ThoughtFirst } from './types.js';
import { ReasoningTextSplitter } from '../chat/reasoning.js';
import { writtenTokens } from './tool-syntax.js';

/** Per call: one format for every row, or one per row (`null`: free). */
export type ResponseFormatOption = ResponseFormat | (ResponseFormat | null)[] | undefined;

/**
 * A factory over the tokenizer in `tokenizerDir`, built on first use (reading the vocabulary and starting the
 * grammar engine cost time that unconstrained calls should not pay). `size` is the width of the logits masked.
 */
export function lazyConstraintFactory(tokenizerDir: string | undefined, fingerprint: string | undefined, size: number): () => Promise<ConstraintFactory> {
  let factory: Promise<ConstraintFactory> | undefined;
  return () => {
    factory ??= (async () => {
      const json = tokenizerDir ? await readJsonIfPresent(join(tokenizerDir, 'tokenizer.json')) : undefined;
      if (!json) throw new TokenizerError('constrained decoding needs the model\'s tokenizer.json (its vocabulary); this model has none');
      return new XGrammarFactory(grammarVocabulary(json, size), fingerprint ?? `${tokenizerDir}`);
    })();
    factory.catch(() => (factory = undefined));
    return factory;
  };
}

/** The format of each of `rows` rows (undefined: free). */
export function formatsPerRow(option: ResponseFormatOption, rows: number): (ResponseFormat | undefined)[] {
  if (option === undefined) return new Array<undefined>(rows).fill(undefined);
  if (!Array.isArray(option)) return new Array<ResponseFormat>(rows).fill(option);
  if (option.length !== rows) {
    throw new ConstraintError(`responseFormat lists ${option.length} formats for ${rows} prompts; give one per prompt (null for none)`);
  }
  return option.map((f) => f ?? undefined);
}

/**
 * Compiles (or finds cached) and starts one constraint per constrained row, all before generation; undefined
 * when no row is constrained. If one fails, those already made are released.
 */
export async function rowConstraints(
  option: ResponseFormatOption,
  rows: number,
  factory: () => Promise<ConstraintFactory>,
  stopTokenIds: readonly number[],
): Promise<(Constraint | undefined)[] | undefined> {
  const formats = formatsPerRow(option, rows);
  if (formats.every((f) => f === undefined)) return undefined;
  const made: (Constraint | undefined)[] = [];
  try {
    const engine = await factory();
    for (const format of formats) made.push(format ? await engine.create(format, stopTokenIds) : undefined);
    return made;
  } catch (err) {
    releaseConstraints(made);
    throw err;
  }
}

/** The answer of a reply written after a thought (the thought and the whitespace after it cut off). */
function answerAfterThought(text: string, thought: ThoughtFirst): string {
  const splitter = new ReasoningTextSplitter(thought, thought.opened);
  const content = splitter.push(text).content + splitter.end().content;
  return thought.answer && content.startsWith(thought.answer) ? content.slice(thought.answer.length) : content;
}

/**
 * The ids of the special tokens the rows' formats write as text (a tool-call marker such as Mistral's
 * `[TOOL_CALLS]`), and of `also` (those a call names): decoding keeps them in the replies, which are read by them.
 */
export function writtenTokenIds(option: ResponseFormatOption, rows: number, idOf: (text: string) => number | undefined, also: readonly string[] = []): Set<number> {
  const ids = new Set<number>();
  const texts = formatsPerRow(option, rows).flatMap((format) => (format ? writtenTokens(format) : []));
  for (const text of [...texts, ...also]) {
    const id = idOf(text);
    if (id !== undefined) ids.add(id);
  }
  return ids;
}

/** Frees the constraints of a request. */
export function releaseConstraints(constraints: readonly (Constraint | undefined)[] | undefined): void {
  for (const c of constraints ?? []) c?.dispose();
}

/**
 * Sets `parsed` on the rows whose JSON format completed. A row stopped by its token limit, a stop string or
 * an abort is incomplete, and gets none: it may not parse, and must not pass for a valid answer. Nor does a
 * completed row whose text does not parse (a grammar engine's fault), without failing the other rows.
 */
export function attachParsed(rows: RowResult[], option: ResponseFormatOption, constraints: readonly (Constraint | undefined)[]): void {
  const formats = formatsPerRow(option, rows.length);
  rows.forEach((row, r) => {
    const format = formats[r];
    if (!format || (format.type !== 'json_schema' && format.type !== 'json_object')) return;
    if (row.finishReason !== 'eos' || !constraints[r]?.isComplete()) return;
    try {
      row.parsed = JSON.parse(format.thought ? answerAfterThought(row.text, format.thought) : row.text);
    } catch {
      // left without `parsed`, as a cut row is
    }
  });
}
