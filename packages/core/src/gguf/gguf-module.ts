/**
 * A `.gguf` file given where a model is expected (`--model`, `Engine.load({ model })`, reasoners, the
 * LangChain plugin) is converted once into the cache and used as the module directory it became.
 *
 * The cache entry is keyed by the file's SHA-256 (and the converter's output version), so a renamed or
 * copied file is not converted again, and an edited one is. A conversion is written into a
 * process-unique temp directory beside its entry and renamed into place when complete: a failed or
 * interrupted conversion leaves nothing a later load would take for a module. An entry is reused only when its
 * files verify against its manifest (cheap through stat records, see modules/file-digest.ts); a damaged one is
 * converted again rather than refused on every load. The GGUF's own digest goes through the same stat records:
 * loading an unchanged multi-GB file again costs a `stat`, not a read of every byte.
 */
import { closeSync, existsSync, openSync, readSync, statSync } from 'node:fs';
import { readdir, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ggufDigest } from './digest.js';
import { ggufFiles, withGguf } from './reader.js';
import { MANIFEST_FILE, ManifestError } from '../modules/manifest.js';
import { loadModuleDir, ModuleIntegrityError } from '../modules/module-dir.js';
import { uniqueSuffix } from '../registry/atomic.js';
import { HASHING_DIGEST, sweepTemps, type TransferProgress } from '../registry/download.js';
import { ConversionError, conversionFailure, convertGguf, generalNameOf, moduleName, type ConvertGgufOptions } from './convert.js';
import { makeDirectory } from '../modules/make-directory.js';

/**
 * Bumped when the converter writes different modules for the same file, so old entries are not reused (v2: weights
 * in memory-mapped `model.onnx.data`; v3: attention as GroupQueryAttention; v4: a tied quantized head's codes as
 * their own initializer over the embedding's bytes, not a Reshape onnxruntime folds into a copy; a compact tokenizer.json;
 * v5: models whose query heads share kv heads get the op graph's attention, with a rotary kernel and fused norms;
 * v6: the op graph returns each run's keys and values alone, `new_key_values.{i}`, and is written for models with a kv
 * head per query head too, unless they have sliding windows; v7: tokenizer.json without the "[PAD<id>]" padding
 * llama.cpp's converter fills a vocabulary with, so its fingerprint is the model's own; v8: the same modules, with
 * manifests of schemaVersion 2 where the graph returns new keys and values: a build that reads only version 1 took such
 * a manifest under a name it owns, `-v7`, for a damaged entry, removed it and converted again; under a name of their
 * own, it never meets one).
 */
const LAYOUT = 'v8';

/**
 * The name of the module a GGUF file given as a model became (`dir`), as `convertGguf` names it from this file: its
 * `general.name`, else its file name; undefined for a spec that is no GGUF file. The cache entry is shared by every
 * copy of the same bytes and carries the name of the copy converted first; a model shown by name (served, a
 * reasoner) is named after the file given.
 */
export async function ggufModuleName(spec: string, dir: string): Promise<string | undefined> {
  if (!isGgufFile(spec)) return undefined;
  const from = (await loadModuleDir(dir, { verify: false })).manifest.provenance?.convertedFrom;
  const sha256 = typeof from === 'object' ? from['sha256'] : undefined;
  if (typeof sha256 !== 'string') return undefined;
  return withGguf(ggufFiles(spec)[0]!, async (f) => moduleName(spec, generalNameOf(f), undefined, sha256));
}

/** Whether a model spec names a GGUF file (by its extension). */
export function isGgufPath(spec: string): boolean {
  return /\.gguf$/i.test(spec);
}

/**
 * Whether `path` is an existing file to read as GGUF: named `.gguf`, or starting with GGUF's magic whatever its name
 * (Ollama's blobs are `sha256-<hex>`; read as ONNX they would fail as a corrupt model).
 */
export function isGgufFile(path: string): boolean {
  if (!existsSync(path) || !statSync(path).isFile()) return false;
  if (isGgufPath(path)) return true;
  const magic = Buffer.alloc(4);
  const fd = openSync(path, 'r');
  try {
    return readSync(fd, magic, 0, 4, 0) === 4 && magic.toString('latin1') === 'GGUF';
  } finally {
    closeSync(fd);
  }
}

/** Options of {@link ggufModuleDir}. */
export interface GgufModuleOptions {
  /** Cache root (default `$REASONPLUG_CACHE`, else ~/.cache/reasonplug); entries go under `gguf/`. */
  cacheDir: string;
  /** Progress of hashing, then of reading the tensors, as byte counts (for a progress bar). */
  onProgress?: (p: TransferProgress) => void;
  /** Passed to the converter. */
  convert?: Pick<ConvertGgufOptions, 'dtype' | 'kvCache'>;
}

/** How often a load waiting for another process's conversion of its file looks again. */
const WAIT_MS = 1000;

/** How often a conversion touches its temp folder: well within the stillness after which it counts as abandoned. */
const HEARTBEAT_MS = 20_000;

/** Put in a claim's temp folder by the process that has started converting into it (and taken out before it lands). */
const CONVERTING = '.converting';

/**
 * Waits while another process converts entry `dir`; whether its entry has landed (else this process converts into its
 * claim, `mine`, which it made before looking). Replicas sharing a cache start together; one conversion of a multi-GB
 * file, not one each: a process waits while a live claim is converting, or is older in name order; otherwise it marks
 * its own as converting and looks once more, backing off where another marked its own meanwhile (the two then
 * settle by name order). A claim whose process is gone is swept, and the waiters take over.
 */
async function awaitOthers(dir: string, mine: string): Promise<boolean> {
  const root = dirname(dir);
  const marker = join(root, mine, CONVERTING);
  const converting = (names: string[]) => names.some((name) => existsSync(join(root, name, CONVERTING)));
  for (;;) {
    const running = await sweepTemps(dir);
    if (await intact(dir)) return true;
    if (!converting(running) && running.every((name) => name > mine)) {
      await writeFile(marker, '');
      if (!converting(await sweepTemps(dir))) return false;
      await rm(marker, { force: true });
    }
    await sleep(WAIT_MS);
  }
}

/** Whether a cache entry is there with every file verified; a damaged one is removed, to be converted again. */
async function intact(dir: string): Promise<boolean> {
  // The directory first: an entry is renamed into place whole, its manifest in it, so one seen before its manifest is
  // looked for and found without it is damaged (and blocks the rename of every later conversion into its place).
  const there = existsSync(dir);
  if (!existsSync(join(dir, MANIFEST_FILE))) {
    if (there) await removeEntry(dir).catch(() => {});
    return false;
  }
  try {
    await loadModuleDir(dir);
    return true;
  } catch (err) {
    if (!(err instanceof ModuleIntegrityError || err instanceof ManifestError)) throw err;
    await removeEntry(dir).catch(() => {});
    return false;
  }
}

/**
 * Removes a cache entry, renamed away first so that no other process loads it half-deleted (a leftover of the removal
 * is swept as a dead process's temp); rejects where it cannot be renamed.
 */
async function removeEntry(dir: string): Promise<void> {
  const doomed = `${dir}.${uniqueSuffix()}.tmp`;
  await rename(dir, doomed);
  await rm(doomed, { recursive: true, force: true });
}

/**
 * The module directory of a GGUF file: converted on first use into `<cacheDir>/gguf/<sha256>-kv16-v8` (the
 * conversion options, then the layout), reused afterwards; the file's entries of earlier layouts are then removed.
 * Conversion errors (`GgufError`, a `ConversionError` naming the file and the cache entry where writing failed, and
 * others) propagate, with nothing left in the cache.
 */
export async function ggufModuleDir(path: string, opts: GgufModuleOptions): Promise<string> {
  // A split GGUF is known by all its shards (found by their names: nothing of the file is read while its digest is recorded).
  const files = ggufFiles(path);
  const size = (await Promise.all(files.map((f) => stat(f)))).reduce((n, s) => n + s.size, 0);
  const file = basename(path);
  const progress = (bytes: number, total: number, digest: string, done = false) =>
    opts.onProgress?.({ file, digest, size: total, bytes, resumedFrom: 0, done });
  // Hashed once per file version (a stat record under the cache keeps the digest while the file is unchanged).
  const { sha256 } = await ggufDigest(files, join(opts.cacheDir, 'digests'), (bytes) => progress(Math.min(bytes, size), size, HASHING_DIGEST));
  const root = join(opts.cacheDir, 'gguf');
  const dtype = opts.convert?.dtype ?? 'float32';
  const kv16 = dtype === 'float32' && (opts.convert?.kvCache ?? 'float16') === 'float16';
  const entry = `${sha256}-${dtype === 'float32' ? '' : 'f16-'}${kv16 ? 'kv16-' : ''}`;
  const dir = join(root, `${entry}${LAYOUT}`);
  // (earlier layouts are removed as an entry is converted, not at each load: two builds sharing a cache would each
  // remove the other's entry and convert again, load after load)
  if (await intact(dir)) return dir;
  // Converted again once when the new entry is gone before it is used (a `reasonplug cache clear` in between).
  for (let tries = 0; tries < 2; tries++) {
    // One conversion per entry in this process (a backbone and a reasoner of the same file load in parallel).
    let pending = inflight.get(dir);
    if (!pending) {
      pending = (async () => {
        await convertInto(path, dir, sha256, opts, progress);
        await dropEarlierLayouts(root, sha256);
      })().finally(() => inflight.delete(dir));
      inflight.set(dir, pending);
    }
    await pending;
    if (existsSync(join(dir, MANIFEST_FILE))) {
      progress(size, size, `sha256:${sha256}`, true);
      return dir;
    }
  }
  throw new ConversionError(`the module converted from ${path} into ${dir} was removed before it could be loaded (the cache cleared meanwhile?), twice; load it again`);
}

const inflight = new Map<string, Promise<void>>();

/**
 * An entry's name: the file's digest, the conversion options (`f16-`, `kv16-`, or none: builds before keys and values
 * were float16 by default wrote `<sha256>-v4` for today's `<sha256>-kv16-v8`) and the layout number.
 */
const ENTRY_NAME = /^([0-9a-f]{64})-(?:f16-)?(?:kv16-)?v(\d+)$/;

/** Whether `name` (under the cache's `gguf/`) is an entry of an earlier layout than this converter's: nothing reads it any more. */
export function isEarlierLayout(name: string): boolean {
  const layout = ENTRY_NAME.exec(name)?.[2];
  return layout !== undefined && Number(layout) < Number(LAYOUT.slice(1));
}

/**
 * Removes the entries of file `sha256` written by an earlier layout, whatever their conversion options (`<sha256>-v4`
 * once `<sha256>-kv16-v8` is there), and the temp folders of those entries whose writer is gone: each holds the whole
 * model, and nothing reads it any more. An entry with a temp folder still in use is left: an older build converting
 * into it, or waiting on its conversion, loads it as soon as it lands.
 */
async function dropEarlierLayouts(root: string, sha256: string): Promise<void> {
  const names = await readdir(root).catch(() => [] as string[]);
  // (an entry's temp folders are `<entry>.<uniqueSuffix>.tmp`)
  const earlier = new Set(names.map((name) => name.split('.')[0]!).filter((name) => name.startsWith(`${sha256}-`) && isEarlierLayout(name)));
  for (const name of earlier) {
    // (best effort: the new entry is in place whatever happens to an old one)
    try {
      if ((await sweepTemps(join(root, name))).length > 0 || !names.includes(name)) continue;
      await removeEntry(join(root, name));
    } catch {
      // (left, and listed as stale: modules/cache-usage.ts)
    }
  }
}

/** Converts the file into entry `dir`, unless another process does it meanwhile (see {@link awaitOthers}). */
async function convertInto(
  path: string,
  dir: string,
  sha256: string,
  opts: GgufModuleOptions,
  progress: (bytes: number, total: number, digest: string) => void,
): Promise<void> {
  const tmp = `${dir}.${uniqueSuffix()}.tmp`;
  // Other processes tell a conversion under way by its folder and its writes (sweepTemps): the folder is there from
  // the start, and touched while this process waits or reads weights before anything is written.
  const beat = setInterval(() => void utimes(tmp, new Date(), new Date()).catch(() => {}), HEARTBEAT_MS).unref();
  try {
    await makeDirectory(tmp);
    if (await awaitOthers(dir, basename(tmp))) return;
    await convertGguf(path, tmp, {
      ...(opts.convert ?? {}),
      ...(opts.onProgress ? { onTensorRead: (bytes: number, total: number) => progress(bytes, total, `sha256:${sha256}`) } : {}),
    });
    await rm(join(tmp, CONVERTING));
    try {
      await rename(tmp, dir);
    } catch (err) {
      // Another process finished the same conversion first: keep its entry.
      if (!existsSync(join(dir, MANIFEST_FILE))) throw err;
    }
  } catch (err) {
    // Named by the entry it was to become, not by its temp directory, which is gone.
    throw conversionFailure(err, path, dir);
  } finally {
    clearInterval(beat);
    // (gone once renamed into place)
    await rm(tmp, { recursive: true, force: true });
  }
}
