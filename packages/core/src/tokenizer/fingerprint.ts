/**
 * A fingerprint of a tokenizer's vocabulary, used as `compat.tokenizer` in module manifests: models whose
 * fingerprints match share token ids and can be composed.
 *
 * It hashes what fixes the id space and how BPE builds it — the vocabulary as [token, id] pairs sorted
 * by id (model vocabulary plus added tokens) and the merges list — and nothing about how the file is
 * laid out, so the same vocabulary gives the same fingerprint whichever file (or converter) it came from.
 */
import { createHash } from 'node:crypto';
import { join, resolve } from 'node:path';
import type { ModelLocation } from '../modules/locate.js';
import { readJsonIfPresent } from './tokenizer.js';

type Json = Record<string, unknown>;

/** Vocabulary of a tokenizer.json as [token, id] pairs sorted by id (then token). */
export function vocabularyPairs(tokenizerJson: object): [string, number][] {
  const tj = tokenizerJson as Json;
  const model = (tj.model ?? {}) as Json;
  const byKey = new Map<string, [string, number]>();
  const add = (token: string, id: number) => byKey.set(`${id}\u0000${token}`, [token, id]);
  const vocab = model.vocab;
  if (Array.isArray(vocab)) {
    // Unigram: [[piece, score], ...], id = index
    vocab.forEach((entry, id) => {
      const token = Array.isArray(entry) ? entry[0] : entry;
      if (typeof token === 'string') add(token, id);
    });
  } else if (vocab && typeof vocab === 'object') {
    for (const [token, id] of Object.entries(vocab as Record<string, unknown>)) {
      if (typeof id === 'number') add(token, id);
    }
  }
  if (Array.isArray(tj.added_tokens)) {
    for (const t of tj.added_tokens as Json[]) {
      if (typeof t.content === 'string' && typeof t.id === 'number') add(t.content, t.id);
    }
  }
  return [...byKey.values()].sort((a, b) => a[1] - b[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
}

/** Merges of a BPE tokenizer.json as [left, right] pairs, whichever of the two merge formats the file uses. */
export function mergePairs(tokenizerJson: object): [string, string][] {
  const model = ((tokenizerJson as Json).model ?? {}) as Json;
  if (!Array.isArray(model.merges)) return [];
  return (model.merges as unknown[]).map((m): [string, string] => {
    if (Array.isArray(m)) return [String(m[0]), String(m[1])];
    const s = String(m);
    const i = s.indexOf(' ');
    return i < 0 ? [s, ''] : [s.slice(0, i), s.slice(i + 1)];
  });
}

/** "sha256:<hex>" of the canonical JSON `{"vocab":[[token,id],...],"merges":[[a,b],...]}`. */
export function tokenizerFingerprint(tokenizerJson: object): string {
  const canonical = JSON.stringify({ vocab: vocabularyPairs(tokenizerJson), merges: mergePairs(tokenizerJson) });
  return 'sha256:' + createHash('sha256').update(canonical, 'utf8').digest('hex');
}

/** `compat.tokenizer` for the `tokenizer.json` in `dir`; undefined when there is none. */
export async function tokenizerFingerprintOfDir(dir: string): Promise<string | undefined> {
  const json = await readJsonIfPresent(join(resolve(dir), 'tokenizer.json'));
  return json ? tokenizerFingerprint(json) : undefined;
}

/** The tokenizer fingerprint of a located model: its manifest's `compat.tokenizer`, else computed from tokenizer.json. */
export async function tokenizerFingerprintOf(location: ModelLocation): Promise<string | undefined> {
  return location.manifest?.compat.tokenizer ?? (location.tokenizerDir ? tokenizerFingerprintOfDir(location.tokenizerDir) : undefined);
}
