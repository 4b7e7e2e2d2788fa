/**
 * What the cache root holds and how much disk each part takes, and clearing parts of it (`reasonplug cache`).
 * Every part is derived and can be made again: converted GGUFs from their files, pulled modules and Ollama models from their registries,
 * prepared graphs and saved sessions from the modules, stat records and tokenizer fingerprints by hashing. Sizes count each file once, however
 * many hard links it has (a pulled module's files are links to its blobs). Conversions of an earlier layout and
 * prepared graphs of an earlier format, which an upgrade removes once it writes their successors, are listed as stale
 * where any remain. Clearing leaves what other processes are writing, and the module blobs while a pull is under way.
 */
import { lstat, readdir, readFile, rm, rmdir } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { madeByMe } from '../registry/atomic.js';
import { ownerGone } from '../registry/download.js';
import { isEarlierLayout } from '../gguf/gguf-module.js';
import { isEarlierFormat, isEntryFile } from '../onnx/prepared-cache.js';
import { cacheRoot } from './cache-root.js';
import { ollamaPulledModels, pulledOllamaStore } from './ollama-store.js';

/** The parts of the cache, each removable on its own. */
export const CACHE_PARTS = ['gguf', 'modules', 'ollama', 'prepared', 'sessions', 'digests'] as const;
export type CachePart = (typeof CACHE_PARTS)[number];

/** One thing the cache holds. */
export interface CacheEntry {
  part: CachePart;
  /**
   * What it is: a module's `name@version` and its source, a saved session's model (with `[int8 prompts]` after it for
   * the session prompts run on with `int8Prompts`, a graph of its own), or the part's file count.
   */
  name: string;
  path: string;
  bytes: number;
}

/** The cache root's entries and each part's bytes. */
export interface CacheUsage {
  root: string;
  entries: CacheEntry[];
  bytes: Record<CachePart, number>;
}

/** Directories (under the root) each part lives in; `prepared` holds `sessions`, counted apart. */
const DIRS: Record<CachePart, string[]> = {
  gguf: ['gguf'],
  // (blobs last: clearCache keeps them while anything of a pull is under way)
  modules: ['modules', 'refs', 'blobs'],
  ollama: ['ollama'],
  prepared: ['prepared'],
  sessions: [join('prepared', 'sessions')],
  digests: ['digests'],
};

/** What the listing says of an entry an earlier version wrote, which this one never reads: `cache clear` of its part removes it. */
const STALE = 'stale: no longer read';

/** A temp file or folder's name, `<target>.<uniqueSuffix>.tmp|partial`: a write under way, or left by a dead process. */
const TEMP = /\.(\d+-[0-9a-f]+)\.(?:tmp|partial)$/;

const isGone = (err: unknown) => ['ENOENT', 'ENOTDIR'].includes((err as NodeJS.ErrnoException).code ?? '');

/** Bytes of the files under `path` whose inodes are not in `seen` yet (adding them). */
async function sizeOf(path: string, seen: Set<string>, skip?: string): Promise<number> {
  let st;
  try {
    st = await lstat(path);
  } catch {
    return 0;
  }
  if (st.isDirectory()) {
    if (path === skip) return 0;
    let names: string[];
    try {
      names = await readdir(path);
    } catch (err) {
      // Renamed away or removed while listed (a conversion moved into place, a clear): nothing there to count.
      if (isGone(err)) return 0;
      throw err;
    }
    let total = 0;
    for (const name of names) total += await sizeOf(join(path, name), seen, skip);
    return total;
  }
  const id = `${st.dev}:${st.ino}`;
  if (seen.has(id)) return 0;
  seen.add(id);
  return st.size;
}

async function subdirs(path: string): Promise<string[]> {
  try {
    return (await readdir(path, { withFileTypes: true })).filter((d) => d.isDirectory()).map((d) => join(path, d.name));
  } catch {
    return [];
  }
}

async function readJson(path: string): Promise<Record<string, unknown> | undefined> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

/** `name@version` of a module directory's manifest, and what it was converted from. */
async function moduleName(dir: string, fallback: string): Promise<string> {
  const manifest = await readJson(join(dir, 'reasonplug.json'));
  if (!manifest || typeof manifest['name'] !== 'string') return fallback;
  const from = (manifest['provenance'] as { convertedFrom?: { file?: string } } | undefined)?.convertedFrom?.file;
  return `${manifest['name']}@${String(manifest['version'])}${from ? ` (from ${from})` : ''}`;
}

/** The entries of the cache at `root` (default: the cache root) with their sizes. */
export async function cacheUsage(root = cacheRoot()): Promise<CacheUsage> {
  const seen = new Set<string>();
  const entries: CacheEntry[] = [];
  for (const dir of await subdirs(join(root, 'gguf'))) {
    // A conversion's temp directory (gguf-module.ts): running, or left by a killed one and removed by the next.
    if (dir.endsWith('.tmp')) {
      entries.push({ part: 'gguf', name: 'a conversion in progress or broken off', path: dir, bytes: await sizeOf(dir, seen) });
      continue;
    }
    // (the entry's conversion options: `kv16-v8`, `f16-v8`, `v8` after the file's digest)
    const variant = basename(dir).replace(/^[0-9a-f]{64}-/, '');
    // One of an earlier layout is one an upgrade did not remove (gguf-module.ts `dropEarlierLayouts`): an older version
    // converted it meanwhile, or removing it failed.
    const stale = isEarlierLayout(basename(dir)) ? `, ${STALE}` : '';
    entries.push({ part: 'gguf', name: `${await moduleName(dir, dir)} [${variant}${stale}]`, path: dir, bytes: await sizeOf(dir, seen) });
  }
  // A pulled module: modules/<registry>/<namespace>/<name>/sha256-<hex>; its files are links to blobs, counted there.
  for (const registry of await subdirs(join(root, 'modules'))) {
    for (const namespace of await subdirs(registry)) {
      for (const name of await subdirs(namespace)) {
        for (const dir of await subdirs(name)) {
          // A module directory's temp name (registry/cache.ts): being assembled or removed, or left by a dead process
          // and swept by the next pull of it.
          const label = TEMP.test(dir) ? 'a pull in progress or broken off' : await moduleName(dir, dir);
          entries.push({ part: 'modules', name: label, path: dir, bytes: await sizeOf(dir, seen) });
        }
      }
    }
  }
  const unlinked = (await sizeOf(join(root, 'blobs'), seen)) + (await sizeOf(join(root, 'refs'), seen));
  if (unlinked > 0) entries.push({ part: 'modules', name: 'manifests, refs and blobs outside module directories', path: join(root, 'blobs'), bytes: unlinked });
  // Models pulled by their Ollama names (registry/ollama-pull.ts): each model's GGUF blob, then what else is there.
  const ollama = pulledOllamaStore(root);
  for (const { name, path } of ollamaPulledModels([ollama])) {
    if (path !== undefined) entries.push({ part: 'ollama', name, path, bytes: await sizeOf(path, seen) });
  }
  const ollamaRest = await sizeOf(ollama, seen);
  if (ollamaRest > 0) entries.push({ part: 'ollama', name: 'manifests, and downloads in progress or broken off', path: ollama, bytes: ollamaRest });
  const sessions = join(root, DIRS.sessions[0]!);
  let sessionFiles: string[] = [];
  try {
    sessionFiles = await readdir(sessions);
  } catch {
    // none saved
  }
  for (const file of sessionFiles.filter((f) => f.endsWith('.json'))) {
    const meta = await readJson(join(sessions, file));
    const stem = file.slice(0, -'.json'.length);
    // Only what the entry is made of: other files of its key are writes in progress or left by a crash.
    const data = typeof meta?.['data'] === 'string' ? [meta['data']] : [];
    const parts = [file, `${stem}.onnx`, ...data].filter((f) => sessionFiles.includes(f));
    const bytes = (await Promise.all(parts.map((f) => sizeOf(join(sessions, f), seen)))).reduce((a, b) => a + b, 0);
    const model = typeof meta?.['model'] === 'string' ? meta['model'] : stem;
    // (a session of another graph of the model, runtime/session-cache.ts `SessionCacheSpec.label`)
    const label = typeof meta?.['label'] === 'string' ? ` [${meta['label']}]` : '';
    entries.push({ part: 'sessions', name: `${model}${label}`, path: join(sessions, file), bytes });
  }
  const others = await sizeOf(sessions, seen);
  if (others > 0) entries.push({ part: 'sessions', name: 'files of no saved session (writes in progress or left by a crash)', path: sessions, bytes: others });
  const prepared = join(root, 'prepared');
  // (entries' files only: other files there are counted in the part's bytes, but are no prepared graph, stale or not)
  const preparedFiles = (await readdir(prepared).catch(() => [] as string[])).filter(isEntryFile);
  // Graphs of an earlier format (onnx/prepared-cache.ts `dropEarlierFormats`) first, so the live count leaves them out.
  let staleGraphs = 0;
  let staleBytes = 0;
  for (const file of preparedFiles.filter((f) => f.endsWith('.json'))) {
    const meta = await readJson(join(prepared, file));
    if (!meta || !isEarlierFormat(meta)) continue;
    const graph = `${file.slice(0, -'.json'.length)}.onnx`;
    if (preparedFiles.includes(graph)) staleGraphs++;
    staleBytes += (await sizeOf(join(prepared, file), seen)) + (await sizeOf(join(prepared, graph), seen));
  }
  const graphs = preparedFiles.filter((f) => f.endsWith('.onnx')).length - staleGraphs;
  const preparedBytes = await sizeOf(prepared, seen, sessions);
  if (preparedBytes > 0) entries.push({ part: 'prepared', name: `${graphs} prepared graph(s)`, path: prepared, bytes: preparedBytes });
  if (staleBytes > 0) entries.push({ part: 'prepared', name: `${staleGraphs} prepared graph(s) of an earlier format, ${STALE}`, path: prepared, bytes: staleBytes });
  const digests = await sizeOf(join(root, 'digests'), seen);
  if (digests > 0) entries.push({ part: 'digests', name: 'stat records of verified files, tokenizer fingerprints', path: join(root, 'digests'), bytes: digests });
  const bytes = Object.fromEntries(CACHE_PARTS.map((p) => [p, entries.filter((e) => e.part === p).reduce((n, e) => n + e.bytes, 0)])) as Record<CachePart, number>;
  return { root, entries, bytes };
}

/** What {@link clearCache} left in the parts it cleared. */
export interface ClearOutcome {
  /** The temp files and folders of other processes' downloads and conversions still under way. */
  live: string[];
  /**
   * Whether the module blobs were kept (but for downloads broken off): a pull under way links the blobs it has verified
   * into its module directory once its downloads end, and would find them gone. Clearing `modules` again once it ends
   * removes them.
   */
  blobsKept: boolean;
}

/**
 * Removes the given parts of the cache at `root` (default: the cache root), but for other processes' writes still under
 * way, and, while a pull is under way, the module blobs (see {@link ClearOutcome}).
 */
export async function clearCache(parts: readonly CachePart[], root = cacheRoot()): Promise<ClearOutcome> {
  const live: string[] = [];
  let blobsKept = false;
  for (const part of parts) {
    if (!CACHE_PARTS.includes(part)) throw new RangeError(`unknown cache part ${String(part)}; one of ${CACHE_PARTS.join(', ')}`);
    const kept: string[] = [];
    for (const dir of DIRS[part]) {
      const path = join(root, dir);
      // A pull under way (its downloads, or its temp module directory or ref once they end) links the blobs it has
      // verified once its downloads end: they stay, but for downloads broken off.
      const keepBlobs = dir === 'blobs' && (kept.length > 0 || (await anyLive(path)));
      if (keepBlobs) blobsKept = true;
      kept.push(...(await clearTree(path, keepBlobs)));
    }
    live.push(...kept);
  }
  return { live, blobsKept };
}

/** Whether `path`, named `name`, is a temp file or folder of another process's write still under way (see clearTree). */
async function isLive(path: string, name: string): Promise<boolean> {
  const temp = TEMP.exec(name);
  return temp !== null && !madeByMe(temp[1]!) && !(await ownerGone(path, temp[1]!));
}

/** Whether anything under `path` is a temp file or folder of another process's write still under way. */
export async function anyLive(path: string): Promise<boolean> {
  let entries;
  try {
    entries = await readdir(path, { withFileTypes: true });
  } catch (err) {
    if (isGone(err)) return false;
    throw err;
  }
  for (const e of entries) {
    const child = join(path, e.name);
    if ((await isLive(child, e.name)) || (e.isDirectory() && (await anyLive(child)))) return true;
  }
  return false;
}

/**
 * Removes `path` and what it holds, but for the temp files and folders of other processes' conversions and downloads
 * still under way (`*.<pid>-<hex>.tmp`, `*.<pid>-<hex>.partial`; see registry/download.ts `ownerGone`), and the
 * folders holding them; returns those it left. `tempsOnly`: removes only the temps of writes broken off.
 */
async function clearTree(path: string, tempsOnly = false): Promise<string[]> {
  let entries;
  try {
    entries = await readdir(path, { withFileTypes: true });
  } catch (err) {
    if (isGone(err)) return [];
    throw err;
  }
  const live: string[] = [];
  for (const e of entries) {
    const child = join(path, e.name);
    if (await isLive(child, e.name)) live.push(child);
    else if (e.isDirectory() && !TEMP.test(e.name)) live.push(...(await clearTree(child, tempsOnly)));
    else if (!tempsOnly || TEMP.test(e.name)) await rm(child, { recursive: true, force: true });
  }
  try {
    await rmdir(path);
  } catch (err) {
    // Still holding a write under way, or what it needs.
    if (!isGone(err) && (err as NodeJS.ErrnoException).code !== 'ENOTEMPTY') throw err;
  }
  return live;
}
