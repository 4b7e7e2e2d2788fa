/**
 * Tokenizer fingerprints remembered by the content digest of their tokenizer.json. Every load of a module checks that
 * the tokenizer it ships is the one its manifest declares (module-dir.ts), and a fingerprint is the whole file parsed
 * and its vocabulary and merges sorted and hashed: ~0.15 s of each load of a 32000-token llama's module on 2 vCPUs,
 * ~0.8 s of a module with Qwen2.5's 151,936 tokens and merges, on the thread that starts the model's worker. With a
 * record it is a stat and two small reads.
 *
 * A record, `tokenizer-v1-<sha256>.json` beside the stat records (file-digest.ts), holds the fingerprint of the bytes
 * whose digest names it; that digest comes from the file's stat record, trusted as a module's verification trusts it.
 * A record that does not give the fingerprint the caller expects is not believed, as a stat record that disagrees is
 * not: the fingerprint is computed again (a damaged record must not condemn a good module) and the record replaced.
 */
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { cachedHashFile, defaultDigestDir } from '../modules/file-digest.js';
import { writeFileAtomic } from '../registry/atomic.js';
import { tokenizerFingerprintOfDir } from './fingerprint.js';

/** Bump when the fingerprint's method changes: records of the old one then answer for nothing. */
const RECORD_VERSION = 'v1';

/** Counters for tests and diagnostics: fingerprints computed from tokenizer.json, and answered from a record. */
export const fingerprintRecordStats = { computed: 0, recorded: 0 };

/** The file's content digest (hex), undefined when it cannot be read (computing its fingerprint then says why). */
async function digestOf(path: string, cacheDir: string): Promise<string | undefined> {
  try {
    return (await cachedHashFile(path, undefined, cacheDir)).sha256;
  } catch {
    return undefined;
  }
}

async function readRecord(path: string): Promise<unknown> {
  try {
    return (JSON.parse(await readFile(path, 'utf8')) as { fingerprint?: unknown }).fingerprint;
  } catch {
    return undefined;
  }
}

/**
 * The fingerprint of the tokenizer.json in `dir` (undefined when there is none), as {@link tokenizerFingerprintOfDir}
 * gives it and with its errors, or from a record when that gives `expected`.
 */
export async function recordedTokenizerFingerprint(dir: string, expected: string, cacheDir = defaultDigestDir()): Promise<string | undefined> {
  const path = join(resolve(dir), 'tokenizer.json');
  const digest = await digestOf(path, cacheDir);
  const record = digest === undefined ? undefined : join(cacheDir, `tokenizer-${RECORD_VERSION}-${digest}.json`);
  const recorded = record === undefined ? undefined : await readRecord(record);
  if (recorded === expected) {
    fingerprintRecordStats.recorded++;
    return expected;
  }
  const fingerprint = await tokenizerFingerprintOfDir(dir);
  if (fingerprint === undefined) return undefined;
  fingerprintRecordStats.computed++;
  // Kept only when the file is still the one whose digest names the record (a file replaced meanwhile has another);
  // a record that cannot be written costs the next load the computing.
  if (record !== undefined && recorded !== fingerprint && (await digestOf(path, cacheDir)) === digest) {
    await writeFileAtomic(record, JSON.stringify({ fingerprint })).catch(() => undefined);
  }
  return fingerprint;
}
