/**
 * An on-disk cache of prepared decoder graphs ({@link adaptDecoder} outputs), keyed by the content of the source
 * graph file and the adaptation options. Files are written to a process-unique temporary name and renamed into
 * place, so concurrent processes never see a partial file; a hit reads only a small JSON sidecar (the model is
 * not parsed again).
 *
 * External data: a prepared graph keeps the source's external-data references (relative paths such as
 * `model.onnx.data`). onnxruntime refuses external-data paths that leave the model's directory, so a graph in
 * the cache cannot point at the source's data file by path. Instead, when {@link PreparedDecoder.externalDataDir}
 * is set, load the prepared graph from its bytes with the session option
 * `{ extra: { session: { model_external_initializers_file_folder_path: externalDataDir } } }`. onnxruntime resolves
 * links before that check, so a source whose data files are links into another folder (the Hugging Face cache keeps
 * every file as a link into `blobs/`, named by its hash) is given that folder, and its graph names each file by the
 * path from there that the link resolves to: an entry of its own, derived from the plain one (see {@link dataLayout}).
 *
 * Integrity: a hit is found through the source's stat-recorded digest (modules/file-digest.ts: no change of
 * bytes through the file system keeps a record valid) and the prepared graph is checked the same way. A miss
 * reads every byte of the source anyway, so it hashes what it reads and files the prepared graph under that
 * digest, never under one computed earlier: bytes changed behind a stale digest cannot poison the entry of the
 * good file. With `expectedSha256` (the module manifest's), other bytes are refused. External-data files are
 * checked against the extents the graph gives them before onnxruntime sees them.
 *
 * An unwritable cache (no permission, a read-only or full disk, a file in its place: a container run as another
 * user) does not stop a load: the prepared graph is only a speed-up, so it is then handed over in memory
 * ({@link PreparedDecoder.graph}) with a warning, prepared again at every load, and nothing of it is left in the cache.
 */
import { cachedHashFile, checkFile } from '../modules/file-digest.js';
import { cacheRoot } from '../modules/cache-root.js';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, realpath, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { adaptDecoder, modelValueMetadata, usesExternalData, type AdaptOptions } from './adapt.js';
import { detectSignature } from './signature.js';
import { checkExternalData, externalDataExtents, forEachTensor } from './external-data.js';
import { readHashedModel, sourceMismatch } from './source-graph.js';
import { OnnxFormatError, decodeModel, encodeModel, readModel, type ModelProto } from './proto.js';
import { graphFacts, type GraphFacts } from './graph-facts.js';
import { PreparedCacheError } from './prepared-cache-error.js';

/** Bump when the adaptation changes what it writes: old cache entries are then ignored, and removed by the new ones. */
export const PREPARED_FORMAT_VERSION = 10;

/**
 * Whether a prepared graph's sidecar (its JSON) is of an earlier {@link PREPARED_FORMAT_VERSION}: its graph is never
 * read again. (A later format's is a newer version's sharing the cache, and kept.)
 */
export function isEarlierFormat(sidecar: { format?: unknown }): boolean {
  return typeof sidecar.format === 'number' && sidecar.format < PREPARED_FORMAT_VERSION;
}

/** An entry's files: `<key>.json` (its sidecar) and `<key>.onnx` (its graph), the key 64 hex digits ({@link locateEntry}). */
const ENTRY_FILE = /^[0-9a-f]{64}\.(?:json|onnx)$/;

/**
 * Whether `name`, in a directory of prepared graphs, is a file of a cache entry: any other (a user's own file in the
 * `cacheDir` they chose) is none of this cache's to list or remove.
 */
export function isEntryFile(name: string): boolean {
  return ENTRY_FILE.test(name);
}

/** Options of {@link prepareDecoder}. */
export interface PrepareOptions extends AdaptOptions {
  /** Directory of prepared graphs; default `$REASONPLUG_CACHE/prepared` or `~/.cache/reasonplug/prepared`. */
  cacheDir?: string;
  /** SHA-256 (hex) the source must have, from its module manifest: other bytes are refused (`ModuleIntegrityError`). */
  expectedSha256?: string;
}

/** A prepared decoder graph, how to load it, and the facts of its graph that decide how the engine runs it. */
export interface PreparedDecoder extends GraphFacts {
  /** The source graph (absolute). */
  sourcePath: string;
  /** The graph to load (the source itself when no adaptation was asked for). */
  preparedPath: string;
  /**
   * Set when the graph keeps external data: load `preparedPath`'s bytes with the session option
   * `model_external_initializers_file_folder_path` = this directory: the source's, or the folder its data files
   * really lie in when they are links (see {@link dataLayout}).
   */
  externalDataDir?: string;
  /** `sha256:<hex>` of the source graph file. */
  digest: string;
  /** What the adaptation did (from the run that filled the cache). */
  notes: string[];
  /** Absolute paths of the external data files the graph reads (none when its weights are inside it). */
  dataFiles: string[];
  /** The adaptation asked for (the normalized options, as JSON): what tells the prepared variants of one source apart. */
  adaptation: string;
  /** For a graph of this cache: where sessions of it may keep their optimized form (runtime/session-cache.ts). */
  sessionDir?: string;
  /**
   * Set when the cache could not take the prepared graph: load these bytes instead of `preparedPath` (which is then
   * where the graph would have been, and does not exist), with `externalDataDir` when that is set.
   */
  graph?: Uint8Array;
  /** What the user should be told about this preparation (set with `graph`: why the cache was not used). */
  warnings?: string[];
}

/** Counters for tests and diagnostics. */
export const preparedCacheStats = { hits: 0, misses: 0, parses: 0 };

interface Sidecar {
  format: number;
  digest: string;
  /** SHA-256 (hex) of the prepared graph file, checked on every hit. */
  prepared: string;
  /** Bytes each external-data file must hold (`externalDataExtents`). */
  externalFiles: Record<string, number>;
  options: Required<AdaptOptions>;
  externalData: boolean;
  notes: string[];
  facts: GraphFacts;
}

const sha256Hex = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');

/** Where a cache entry's graph and sidecar are. */
interface EntryPaths {
  preparedPath: string;
  sidecarPath: string;
}

/** Where a prepared graph is: its cache entry's graph file, or, when the cache could not take it, memory. */
interface GraphPlace {
  preparedPath: string;
  /** The graph's bytes, and why they are not in the cache, when they are not. */
  uncached?: { graph: Uint8Array; warning: string };
}

/** A verified cache entry, or the graph and sidecar the cache could not take. */
interface CachedEntry extends GraphPlace {
  meta: Sidecar;
}

/** Each external-data location a graph gives and the one that replaces it. */
type Relocation = Map<string, string>;

/** The default directory of prepared graphs. */
export function defaultPreparedCacheDir(): string {
  return join(cacheRoot(), 'prepared');
}

function normalize(opts: AdaptOptions): Required<AdaptOptions> {
  return {
    lastLogitsOnly: opts.lastLogitsOnly ?? false,
    logitsFloat32: opts.logitsFloat32 ?? false,
    hiddenState: opts.hiddenState ?? false,
    inputsEmbeds: opts.inputsEmbeds ?? false,
  };
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Writes `data` to `path` through a process-unique temporary file and an atomic rename. */
async function writeAtomic(path: string, data: Uint8Array | string): Promise<void> {
  const tmp = `${path}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    await writeFile(tmp, data);
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

/** Codes that say the cache cannot take files: no permission, a read-only or full disk, a file in the way. */
const UNWRITABLE = new Set(['EACCES', 'EPERM', 'EROFS', 'ENOSPC', 'EDQUOT', 'ENOTDIR']);

const codeOf = (err: unknown) => (err as NodeJS.ErrnoException).code ?? '';

/**
 * Writes an entry's graph and sidecar into `dir`. Returns the error code when the cache cannot be written
 * ({@link UNWRITABLE}; from making `dir` also EEXIST, a file in its place, and ENOENT, which a read-only mount says
 * for a directory whose parent exists), and throws other failures, in both cases leaving no part of the entry behind.
 */
async function writeEntry(dir: string, paths: EntryPaths, graph: Uint8Array, meta: Sidecar): Promise<string | undefined> {
  try {
    await mkdir(dir, { recursive: true });
  } catch (err) {
    const code = codeOf(err);
    if (UNWRITABLE.has(code) || code === 'EEXIST' || code === 'ENOENT') return code;
    throw err;
  }
  try {
    await writeAtomic(paths.preparedPath, graph);
    await writeAtomic(paths.sidecarPath, `${JSON.stringify(meta, null, 2)}\n`);
  } catch (err) {
    // A graph without its sidecar is never a hit, only a file to sweep (unless another process has completed the entry).
    if (!(await exists(paths.sidecarPath))) await rm(paths.preparedPath, { force: true }).catch(() => undefined);
    if (UNWRITABLE.has(codeOf(err))) return codeOf(err);
    throw err;
  }
  await dropEarlierFormats(dir);
  return undefined;
}

/**
 * Removes the entries written in an earlier format: each a copy of its graph (weights and all, where they are inside)
 * that nothing reads any more, whatever its source: after an upgrade a converted GGUF's graph has a new source too (the
 * conversion's new layout), so keying the removal by source would leave those behind. The sidecar goes first, so no
 * entry is taken for a hit half-removed; a process that has a graph open (an older version's) keeps reading it, the
 * file going when it closes it, as with saved sessions (runtime/session-cache.ts).
 */
async function dropEarlierFormats(dir: string): Promise<void> {
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (!name.endsWith('.json') || !isEntryFile(name)) continue;
    const sidecarPath = join(dir, name);
    // (best effort: the new entry is written whatever happens to an old one, and an unreadable sidecar is no entry)
    try {
      const meta = JSON.parse(await readFile(sidecarPath, 'utf8')) as Partial<Sidecar> | null;
      if (!meta || !isEarlierFormat(meta)) continue;
      await rm(sidecarPath, { force: true });
      await rm(`${sidecarPath.slice(0, -'.json'.length)}.onnx`, { force: true });
    } catch {
      // (listed as stale while it stays: modules/cache-usage.ts)
    }
  }
}

/** The warning of a prepared graph the cache could not take, with what would let it be kept. */
function uncachedWarning(located: Located, code: string): string {
  const { source, dir, cacheDirGiven } = located;
  const remedy = cacheDirGiven ? 'give a writable cache directory' : 'set REASONPLUG_CACHE to a writable directory';
  return `cannot write the prepared graph of ${source} to the cache ${dir} (${code}): it is used from memory and prepared again at every load; ${remedy} to keep it`;
}

/** The sidecar and graph of a cache entry for source `digest`, when both are there and the graph verifies. */
async function cachedEntry(paths: EntryPaths, digest: string): Promise<CachedEntry | undefined> {
  // The sidecar is written after the graph, so its presence means the graph is complete.
  if (!(await exists(paths.sidecarPath)) || !(await exists(paths.preparedPath))) return undefined;
  try {
    const meta = JSON.parse(await readFile(paths.sidecarPath, 'utf8')) as Sidecar;
    if (meta.format !== PREPARED_FORMAT_VERSION || meta.digest !== digest) return undefined;
    // A damaged prepared graph is a miss: it is written again.
    if ((await checkFile(paths.preparedPath, meta.prepared)).sha256 !== meta.prepared) return undefined;
    return { meta, preparedPath: paths.preparedPath };
  } catch {
    // An unreadable sidecar is rewritten on the miss.
    return undefined;
  }
}

/** The source graph checked (present, not empty, the manifest's bytes) and where its cache entry would be. */
async function locateEntry(sourcePath: string, opts: PrepareOptions) {
  const source = resolve(sourcePath);
  let size: number;
  try {
    const st = await stat(source);
    if (!st.isFile()) throw new OnnxFormatError(`model path is not a file: ${source}`);
    size = st.size;
  } catch (err) {
    if (err instanceof OnnxFormatError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    throw new OnnxFormatError(code === 'ENOENT' ? `model file not found: ${source}` : `cannot read model file ${source}: ${(err as Error).message}`);
  }
  if (size === 0) throw new OnnxFormatError(`${source} is empty; is the download complete?`);
  const expected = opts.expectedSha256;
  const recorded = (expected === undefined ? await cachedHashFile(source) : await checkFile(source, expected)).sha256;
  if (expected !== undefined && recorded !== expected) throw sourceMismatch(source, expected, recorded);
  const options = normalize(opts);
  const dir = resolve(opts.cacheDir ?? defaultPreparedCacheDir());
  // A relocated graph (see dataLayout) is an entry of its own, keyed by its relocation too.
  const entry = (hex: string, relocated?: Relocation): EntryPaths => {
    const moved = relocated ? { relocated: [...relocated] } : {};
    const key = createHash('sha256').update(JSON.stringify({ format: PREPARED_FORMAT_VERSION, source: hex, options, ...moved })).digest('hex');
    return { preparedPath: join(dir, `${key}.onnx`), sidecarPath: join(dir, `${key}.json`) };
  };
  const cacheDirGiven = opts.cacheDir !== undefined;
  return { source, sourceDir: dirname(source), expected, recorded, options, adapting: Object.values(options).some(Boolean), dir, cacheDirGiven, entry };
}

const dataFilesOf = (dir: string, extents: Record<string, number>) => Object.keys(extents).map((name) => join(dir, name));
const sessionDirOf = (cacheDir: string) => join(cacheDir, 'sessions');

type Located = Awaited<ReturnType<typeof locateEntry>>;

/**
 * Where onnxruntime is to find the data files at `locations` (relative to `sourceDir`, where they are checked). It
 * refuses one whose real path (links resolved) leaves the folder it is given, even when the link lies in it. So when
 * the files are links, `dir` is the deepest folder that really holds them all, and `relocated` gives the path from
 * there of each file whose real path is not `dir` plus its location (undefined when none is so).
 */
async function dataLayout(sourceDir: string, locations: string[]): Promise<{ dir: string; relocated?: Relocation }> {
  const real = await Promise.all(locations.map((l) => realpath(join(sourceDir, l))));
  const holds = (dir: string) => real.every((r, i) => r === join(dir, locations[i]!));
  if (holds(await realpath(sourceDir))) return { dir: sourceDir };
  const parts = real.map((r) => dirname(r).split(sep));
  let depth = 0;
  while (depth < parts[0]!.length && parts.every((p) => p[depth] === parts[0]![depth])) depth++;
  const dir = parts[0]!.slice(0, depth).join(sep) || sep;
  if (holds(dir)) return { dir };
  return { dir, relocated: new Map(locations.map((l, i) => [l, relative(dir, real[i]!).split(sep).join('/')])) };
}

/** `model` with its tensors' external-data locations replaced as `relocated` says (initializers, Constant tensors, subgraphs). */
function relocate(model: ModelProto, relocated: Relocation): ModelProto {
  forEachTensor(model, (t) => {
    const location = t.externalData?.find((e) => e.key === 'location');
    const moved = location?.value ? relocated.get(location.value) : undefined;
    if (moved !== undefined) location!.value = moved;
  });
  return model;
}

/**
 * The graph of entry `paths`, `base`'s relocated: from the cache, else with `write` derived from `base` and written,
 * or kept in memory where `base` is or the cache cannot take it (else undefined).
 */
async function relocatedGraph(located: Located, base: CachedEntry, paths: EntryPaths, relocated: Relocation, write: boolean): Promise<GraphPlace | undefined> {
  if (!base.uncached) {
    const hit = await cachedEntry(paths, base.meta.digest);
    if (hit || !write) return hit;
  }
  const bytes = base.uncached?.graph ?? (await readFile(base.preparedPath));
  if (!base.uncached && sha256Hex(bytes) !== base.meta.prepared) throw new OnnxFormatError(`the prepared graph ${base.preparedPath} changed while it was read; load the model again`);
  const moved = encodeModel(relocate(decodeModel(bytes, base.preparedPath), relocated));
  if (base.uncached) return { preparedPath: paths.preparedPath, uncached: { graph: moved, warning: base.uncached.warning } };
  let code: string | undefined;
  try {
    code = await writeEntry(located.dir, paths, moved, { ...base.meta, prepared: sha256Hex(moved) });
  } catch (err) {
    throw new PreparedCacheError(`cannot write the relocated graph of ${base.preparedPath} to ${paths.preparedPath}: ${(err as Error).message}`, { cause: err });
  }
  return { preparedPath: paths.preparedPath, ...(code === undefined ? {} : { uncached: { graph: moved, warning: uncachedWarning(located, code) } }) };
}

/**
 * The verified entry `hit` of the source with digest `hex` as {@link PreparedDecoder}. When the source's data files are
 * links to another folder, its graph is relocated there ({@link dataLayout}); undefined when that graph is not cached
 * yet and `write` is false.
 */
async function decoderOf(located: Located, hex: string, hit: CachedEntry, write: boolean): Promise<PreparedDecoder | undefined> {
  const { source, sourceDir, options, dir, entry } = located;
  const { meta } = hit;
  const layout = meta.externalData ? await dataLayout(sourceDir, Object.keys(meta.externalFiles)) : undefined;
  const place = layout?.relocated ? await relocatedGraph(located, hit, entry(hex, layout.relocated), layout.relocated, write) : hit;
  if (place === undefined) return undefined;
  const { preparedPath, uncached } = place;
  return {
    sourcePath: source,
    preparedPath,
    ...(uncached ? { graph: uncached.graph, warnings: [uncached.warning] } : { sessionDir: sessionDirOf(dir) }),
    ...(layout ? { externalDataDir: layout.dir } : {}),
    digest: meta.digest,
    notes: meta.notes,
    dataFiles: dataFilesOf(sourceDir, meta.externalFiles),
    adaptation: JSON.stringify(options),
    ...meta.facts,
  };
}

/** The cache entry of a checked source as {@link PreparedDecoder}, when there is one and it verifies (`write`: see {@link decoderOf}). */
async function findEntry(located: Located, write: boolean): Promise<PreparedDecoder | undefined> {
  const { source, sourceDir, recorded, entry } = located;
  const hit = await cachedEntry(entry(recorded), `sha256:${recorded}`);
  if (!hit) return undefined;
  await checkExternalData(source, sourceDir, hit.meta.externalFiles);
  const found = await decoderOf(located, recorded, hit, write);
  if (found) preparedCacheStats.hits++;
  return found;
}

/**
 * What {@link prepareDecoder} returns when the prepared graph is already cached (after the same checks), else
 * undefined (also when no adaptation is asked for): it never parses, adapts or writes a graph, so it is cheap
 * (stat records and a small JSON) and fit for a thread that must stay responsive.
 */
export async function findPreparedDecoder(sourcePath: string, opts: PrepareOptions = {}): Promise<PreparedDecoder | undefined> {
  const located = await locateEntry(sourcePath, opts);
  return located.adapting ? findEntry(located, false) : undefined;
}

/**
 * Returns the prepared form of the decoder graph at `sourcePath` for these options, adapting and caching it
 * on the first call. Throws {@link OnnxFormatError} for a missing or unreadable file and
 * `UnsupportedModelError` when the graph's I/O is not an accepted decoder layout (checked with
 * `detectSignature` on the graph's declared inputs and outputs) or the graph cannot be adapted, and
 * {@link PreparedCacheError} when the cache fails to take the graph for a reason other than being unwritable.
 */
export async function prepareDecoder(sourcePath: string, opts: PrepareOptions = {}): Promise<PreparedDecoder> {
  const located = await locateEntry(sourcePath, opts);
  const { source, sourceDir, expected, options, dir, entry } = located;

  if (!located.adapting) {
    const read = await readHashedModel(source);
    if (expected !== undefined && read.sha256 !== expected) throw sourceMismatch(source, expected, read.sha256);
    const extents = externalDataExtents(read.model);
    await checkExternalData(source, sourceDir, extents);
    const digest = `sha256:${read.sha256}`;
    return {
      sourcePath: source,
      preparedPath: source,
      digest,
      notes: ['no adaptation requested: the source graph is used as is'],
      dataFiles: dataFilesOf(sourceDir, extents),
      adaptation: JSON.stringify(options),
      ...graphFacts(read.model),
    };
  }

  const hit = await findEntry(located, true);
  if (hit) return hit;

  preparedCacheStats.misses++;
  preparedCacheStats.parses++;
  let model: Awaited<ReturnType<typeof readModel>> | undefined;
  let sha256: string;
  ({ model, sha256 } = await readHashedModel(source));
  if (expected !== undefined && sha256 !== expected) throw sourceMismatch(source, expected, sha256);
  // Filed under the digest of the bytes read, whatever the stat record said.
  const digest = `sha256:${sha256}`;
  const { preparedPath, sidecarPath } = entry(sha256);
  const externalFiles = externalDataExtents(model);
  await checkExternalData(source, sourceDir, externalFiles);
  // Refuse unsupported layouts (e.g. stacked past_N) with the signature's message before touching the graph.
  const io = modelValueMetadata(model);
  detectSignature(io.inputs, io.outputs, source);
  const externalData = usesExternalData(model);
  const facts = graphFacts(model);
  let adapted: ReturnType<typeof adaptDecoder> | undefined = adaptDecoder(model, options, source);
  model = undefined;
  let bytes: Uint8Array | undefined = encodeModel(adapted.model);
  const prepared = sha256Hex(bytes);
  const notes = adapted.notes;
  adapted = undefined;
  const meta: Sidecar = { format: PREPARED_FORMAT_VERSION, digest, prepared, externalFiles, options, externalData, notes, facts };
  let code: string | undefined;
  try {
    code = await writeEntry(dir, { preparedPath, sidecarPath }, bytes, meta);
  } catch (err) {
    throw new PreparedCacheError(`cannot write the prepared graph of ${source} to ${dir}: ${(err as Error).message}`, { cause: err });
  }
  const place: GraphPlace = code === undefined ? { preparedPath } : { preparedPath, uncached: { graph: bytes, warning: uncachedWarning(located, code) } };
  bytes = undefined;
  // (with `write`, always a decoder)
  return (await decoderOf(located, sha256, { meta, ...place }, true))!;
}
