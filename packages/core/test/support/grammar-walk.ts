/**
 * Random walks through a constraint's grammar, for tests that check what a grammar writes against an outside judge
 * (ajv, JavaScript's regular expressions).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { XGrammarFactory } from '../../src/constrain/xgrammar-factory.js';
import type { ResponseFormat } from '../../src/constrain/types.js';
import { grammarVocabulary, type GrammarVocabulary } from '../../src/constrain/vocabulary.js';
import { storiesModule } from './modules.js';

/** A vocabulary to walk a grammar over: the ids a step may take, the end token, and how ids read as text. */
export interface WalkVocabulary {
  candidates: readonly number[];
  eos: number;
  decode(ids: number[]): string;
  /** Steps before a walk is given up. */
  steps: number;
  /** Ids preferred past 40 tokens, so that long walks close what they opened. */
  closers?: readonly number[];
}

/**
 * One random walk through a format's grammar: first the ids of `prefix` (undefined if the grammar refuses one),
 * then each step a uniform pick among the allowed candidates, ending where the grammar lets it with probability
 * 1/2; past 40 tokens, closers are preferred. The text, or undefined when the walk did not end.
 */
export async function walkGrammar(factory: XGrammarFactory, format: ResponseFormat, rng: () => number, v: WalkVocabulary, prefix: number[] = []): Promise<string | undefined> {
  const c = await factory.create(format, [v.eos]);
  const ids = [...prefix];
  try {
    if (!ids.every((id) => c.tryAccept(id))) return undefined;
    for (let step = 0; step < v.steps; step++) {
      const mask = await c.allowed();
      const ok = (id: number) => ((mask[id >> 5]! >>> (id & 31)) & 1) === 1;
      const next = v.candidates.filter(ok);
      if (ok(v.eos) && (next.length === 0 || rng() < 0.5)) return v.decode(ids);
      if (next.length === 0) return undefined;
      const closing = ids.length > 40 && v.closers ? next.filter((id) => v.closers!.includes(id)) : [];
      const pool = closing.length > 0 && rng() < 0.8 ? closing : next;
      const id = pool[Math.floor(rng() * pool.length)]!;
      c.accept(id);
      ids.push(id);
    }
    return undefined;
  } finally {
    c.dispose();
  }
}

/** The stories260K vocabulary's byte tokens (id = 3 + byte, bytes 0-127, EOS 2), for walks whose text is their bytes. */
export const STORIES_BYTES: WalkVocabulary = {
  candidates: Array.from({ length: 128 }, (_, b) => 3 + b),
  eos: 2,
  decode: (ids) => Buffer.from(ids.map((id) => id - 3)).toString('utf8'),
  steps: 600,
  closers: ['"', '}', ']', '0', 'e', 'l', '<', '/', '>'].map((ch) => 3 + ch.charCodeAt(0)),
};

/** A walk over the stories260K byte tokens, after the bytes of `prefix`. */
export const randomWalk = (factory: XGrammarFactory, format: ResponseFormat, rng: () => number, prefix = '') =>
  walkGrammar(factory, format, rng, STORIES_BYTES, [...Buffer.from(prefix)].map((b) => 3 + b));

/** stories260K's vocabulary as the grammar engine sees it (its tokenizer.json, 512 ids): what the grammar tests walk. */
export async function storiesGrammarVocabulary(): Promise<GrammarVocabulary> {
  const json = JSON.parse(await readFile(join(await storiesModule(), 'tokenizer.json'), 'utf8')) as object;
  return grammarVocabulary(json, 512);
}
