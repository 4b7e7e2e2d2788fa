/**
 * Module directories on disk: load one (validate `reasonplug.json`, then check every listed file's size and
 * SHA-256) and write the manifest of one whose files are already in place.
 */
import { checkFile, hashFile } from './file-digest.js';
import { randomBytes } from 'node:crypto';
import { readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { externalDataLocations } from '../onnx/external-data-locations.js';
import { tokenizerFingerprintOfDir } from '../tokenizer/fingerprint.js';
import { recordedTokenizerFingerprint } from '../tokenizer/recorded-fingerprint.js';
// Defined beside the fingerprint (no manifest schema needed: model workers use it); still exported from here.
export { tokenizerFingerprintOfDir };
import { MANIFEST_FILE, ManifestError, parseManifest, type ModuleFileEntry, type ModuleManifest, type SchemaVersion } from './manifest.js';

/** A module directory whose manifest is valid and whose files were found (and, by default, verified). */
export interface LoadedModule {
  /** Absolute path of the directory. */
  dir: string;
  manifest: ModuleManifest;
  /** Absolute path of every file the manifest lists, by its key (`files.model` is the ONNX graph). */
  files: Record<string, string>;
}

/**
 * What `writeModuleDir` needs: the manifest less what it computes, with files as paths relative to the directory.
 * `schemaVersion` defaults to 1; give 2 for a graph that returns new keys and values only (SCHEMA_VERSIONS).
 */
export type ModuleDirInit = Omit<ModuleManifest, 'files' | 'schemaVersion'> & { files: Record<string, string>; schemaVersion?: SchemaVersion };

/**
 * `tokenizer`: the module's tokenizer.json is not the tokenizer its `compat.tokenizer` names. `unlisted`: the
 * model's graph keeps weights in a file the manifest does not list (`file` is then `model`, `path` that file).
 */
export type IntegrityProblem = 'missing' | 'not-a-file' | 'size' | 'sha256' | 'tokenizer' | 'unlisted';

/** Raised when a file of a module directory is missing or differs from its manifest entry. */
export class ModuleIntegrityError extends Error {
  override name = 'ModuleIntegrityError';
  /** The manifest key of the file (`model`, `tokenizer`, ...). */
  readonly file: string;
  /** Absolute path of the file. */
  readonly path: string;
  readonly problem: IntegrityProblem;
  /** What the manifest declares and what is on disk, for `size` (bytes), `sha256` (hex) and `tokenizer` (fingerprint) problems. */
  readonly expected?: number | string;
  readonly actual?: number | string;

  constructor(
    message: string,
    details: { file: string; path: string; problem: IntegrityProblem; expected?: number | string; actual?: number | string },
  ) {
    super(message);
    this.file = details.file;
    this.path = details.path;
    this.problem = details.problem;
    this.expected = details.expected;
    this.actual = details.actual;
  }
}

/** Files hashed at once: enough to overlap I/O with hashing, few enough not to thrash a disk. */
const HASH_CONCURRENCY = 4;
/** What to do about a module whose files do not match its manifest (`reasonplug pack` verifies, it does not re-hash). */
/** What to do about a module file that is not the one its manifest lists. */
export const REMEDY =
  'download the module again, or, if you changed the file on purpose, write the module again (with the command that made it, e.g. `reasonplug convert` or `reasonplug quantize`, or writeModuleDir in code: either records the new digests)';

/** Hex SHA-256 and size of a file, streamed. */
/** Size in bytes of a regular file, or why there is none. */
async function fileSize(path: string): Promise<number | 'missing' | 'not-a-file'> {
  try {
    const s = await stat(path);
    return s.isFile() ? s.size : 'not-a-file';
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return 'missing';
    throw err;
  }
}

/**
 * Maps `items` through `fn`, at most `limit` at a time; the first failure aborts the others and is thrown once they
 * have ended. (Thrown at once, a model worker reported it and was terminated while the others still wrote their digest
 * records, which left `.tmp` files in the cache.)
 */
async function mapBounded<T, R>(items: readonly T[], limit: number, fn: (item: T, signal: AbortSignal) => Promise<R>): Promise<R[]> {
  const abort = new AbortController();
  const results: R[] = new Array(items.length);
  let next = 0;
  let failed: { error: unknown } | undefined;
  const worker = async (): Promise<void> => {
    while (next < items.length && !abort.signal.aborted) {
      const i = next++;
      try {
        results[i] = await fn(items[i], abort.signal);
      } catch (err) {
        // (the others then fail as aborted)
        failed ??= { error: err };
        abort.abort();
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failed) throw failed.error;
  return results;
}

/**
 * Refuses a model graph that keeps weights in files `files` does not list: those are neither verified nor packed,
 * so a changed one would load unnoticed and a pushed module would arrive without them.
 */
function refuseUnlistedData(modelPath: string, listed: ReadonlySet<string>): void {
  const unlisted = externalDataLocations(modelPath)
    .map((location) => resolve(dirname(modelPath), location))
    .filter((path) => !listed.has(path));
  if (unlisted.length === 0) return;
  throw new ModuleIntegrityError(
    `${modelPath} (files.model) keeps weights in ${unlisted.join(', ')}, which the manifest's files do not list: ` +
      `unlisted, weights are neither verified nor published with the module — write the module again listing ` +
      `${unlisted.length > 1 ? 'them' : 'it'} (writeModuleDir, e.g. as files.modelData); a module downloaded so is incomplete and must be published again`,
    { file: 'model', path: unlisted[0]!, problem: 'unlisted' },
  );
}

async function readManifest(dir: string): Promise<ModuleManifest> {
  const path = join(dir, MANIFEST_FILE);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // (read() alone names neither the file nor what is wrong: "EISDIR: illegal operation on a directory, read")
    if (code === 'EISDIR') throw new ManifestError(path, [{ path: '', message: `is a directory, not the module's manifest file; ${REMEDY}` }]);
    if (code !== 'ENOENT' && code !== 'ENOTDIR') throw err;
    throw new ManifestError(path, [
      { path: '', message: `not found, so ${dir} is not a module directory; make one with \`reasonplug convert\` (or writeModuleDir in code)` },
    ]);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ManifestError(path, [{ path: '', message: `not valid JSON (${(err as Error).message}); ${REMEDY}` }]);
  }
  return parseManifest(json, path);
}

/**
 * Loads a module directory: validates `reasonplug.json`, checks that every listed file exists with its declared
 * size and, unless `verify` is false, its SHA-256. Sizes are always checked (one stat each), before any hashing,
 * so a missing or truncated file fails at once; so are the external-data files the model's graph names (its headers
 * only are read), which must be listed too. A module that ships tokenizer.json must be for the tokenizer its
 * `compat.tokenizer` names. Throws `ManifestError` or `ModuleIntegrityError`.
 */
export async function loadModuleDir(dir: string, opts: { verify?: boolean } = {}): Promise<LoadedModule> {
  const abs = resolve(dir);
  const manifest = await readManifest(abs);
  const entries = Object.entries(manifest.files).map(([key, entry]) => ({ key, entry, path: join(abs, entry.path) }));

  const sizes = await Promise.all(entries.map((e) => fileSize(e.path)));
  entries.forEach(({ key, entry, path }, i) => {
    const size = sizes[i];
    if (size === 'missing') {
      throw new ModuleIntegrityError(`${path} (files.${key}) is missing; the module is incomplete — ${REMEDY}`, { file: key, path, problem: 'missing' });
    }
    if (size === 'not-a-file') {
      throw new ModuleIntegrityError(`${path} (files.${key}) is not a regular file — ${REMEDY}`, { file: key, path, problem: 'not-a-file' });
    }
    if (size !== entry.size) {
      throw new ModuleIntegrityError(
        `${path} (files.${key}) is ${size} bytes but the manifest says ${entry.size}; it is truncated or was replaced — ${REMEDY}`,
        { file: key, path, problem: 'size', expected: entry.size, actual: size },
      );
    }
  });
  refuseUnlistedData(join(abs, manifest.files.model.path), new Set(entries.map((e) => e.path)));

  if (opts.verify ?? true) {
    await mapBounded(entries, HASH_CONCURRENCY, async ({ key, entry, path }, signal) => {
      // checkFile: a damaged stat record must not condemn a good file.
      const { sha256 } = await checkFile(path, entry.sha256, signal);
      if (sha256 !== entry.sha256) {
        throw new ModuleIntegrityError(
          `${path} (files.${key}) has SHA-256 ${sha256} but the manifest says ${entry.sha256}; the file is corrupt or was changed — ${REMEDY}`,
          { file: key, path, problem: 'sha256', expected: entry.sha256, actual: sha256 },
        );
      }
    });
  }
  // The fingerprint decides what composes with what (search, --reasoner-task, the engine's checks), and those trust
  // the manifest: a module must not claim a tokenizer other than the one it runs with. (Remembered by the file's
  // digest: computing it was a good part of each load.)
  const fingerprint = await recordedTokenizerFingerprint(abs, manifest.compat.tokenizer);
  if (fingerprint !== undefined && fingerprint !== manifest.compat.tokenizer) {
    const path = join(abs, 'tokenizer.json');
    throw new ModuleIntegrityError(
      `${path} has tokenizer fingerprint ${fingerprint} but the manifest's compat.tokenizer says ${manifest.compat.tokenizer}: the module declares another tokenizer than it ships, so nothing can compose with it by that fingerprint — where it is made, declare its tokenizer's fingerprint (tokenizerFingerprintOfDir) or ship the tokenizer it declares`,
      { file: entries.find((e) => e.path === path)?.key ?? 'tokenizer', path, problem: 'tokenizer', expected: manifest.compat.tokenizer, actual: fingerprint },
    );
  }
  return { dir: abs, manifest, files: Object.fromEntries(entries.map((e) => [e.key, e.path])) };
}

/**
 * Writes `reasonplug.json` for a directory whose files are already in place: hashes and sizes the named files
 * (paths relative to `dir`), validates the result and writes it atomically. Returns the manifest written.
 * Throws `ManifestError` for an invalid manifest and `ModuleIntegrityError` for a file that is not there.
 */
export async function writeModuleDir(dir: string, init: ModuleDirInit): Promise<ModuleManifest> {
  const abs = resolve(dir);
  const manifestPath = join(abs, MANIFEST_FILE);
  const { files: paths, schemaVersion = 1, ...fields } = init;
  // Model first, the rest by key, so the same module always serializes the same way.
  const keys = Object.keys(paths).sort((a, b) => (a === 'model' ? -1 : b === 'model' ? 1 : a < b ? -1 : a > b ? 1 : 0));
  const withFiles = (entry: (key: string, i: number) => ModuleFileEntry) => ({
    schemaVersion,
    ...fields,
    files: Object.fromEntries(keys.map((key, i) => [key, entry(key, i)])),
  });

  // Validate all but the hashes before opening any file: a path such as "../x" is never read, and a bad
  // name or version fails before a large model is hashed.
  parseManifest(withFiles((key) => ({ path: paths[key], sha256: '0'.repeat(64), size: 0 })), manifestPath);

  for (const key of keys) {
    const path = join(abs, paths[key]);
    const size = await fileSize(path);
    if (typeof size !== 'number') {
      throw new ModuleIntegrityError(
        `cannot write ${manifestPath}: files.${key} names ${path}, which ${size === 'missing' ? 'does not exist' : 'is not a regular file'}; put the file in the module directory first`,
        { file: key, path, problem: size },
      );
    }
  }
  const hashed = await mapBounded(keys, HASH_CONCURRENCY, (key, signal) => hashFile(join(abs, paths[key]), signal));
  const manifest = parseManifest(withFiles((key, i) => ({ path: paths[key], ...hashed[i] })), manifestPath);

  const tmp = `${manifestPath}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    await writeFile(tmp, JSON.stringify(manifest, null, 2) + '\n');
    await rename(tmp, manifestPath);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  return manifest;
}
