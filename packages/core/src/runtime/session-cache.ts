/**
 * CPU sessions of large graphs created from their optimized form with prepacked weights, saved on disk the first
 * time (onnxruntime's `optimizedModelFilePath` with `session.save_external_prepacked_constant_initializers`).
 *
 * Why: creating a session of a quantized or float graph is mostly prepacking, onnxruntime writing every weight
 * matrix into a packed copy for its kernels, after reading the original from the memory-mapped data file. Loaded
 * from the saved form, the packed copies are mapped instead and the originals are never read. Measured on the
 * Qwen2.5-0.5B-shaped GGUF conversions (2 vCPUs, fresh processes, onnxruntime-node 1.31.1): session creation Q8_0
 * 1.02-1.11 → 0.70-0.73 s, Q4_K_M 1.14-1.25 → 0.79-0.92 s, F16 (float32 matrices) 4.0-4.5 → 1.4-1.5 s; identical
 * logits. The packed weights become pages of that file, which the kernel may drop and processes share, instead of
 * private memory (a whole engine's peak RSS stays about the same: README, bench:gguf). The price: the saved form holds the graph's
 * weights and their packed copies (2.3-2.5x the module's bytes on disk), and the first load, which writes it,
 * takes about three times as long. So only graphs whose decode step reads at least {@link SESSION_CACHE_MIN_BYTES}
 * are kept. That was 64 MiB, which left out a ~125M-parameter llama at Q4_0 (60 MiB a step): 4-bit weights are fewer
 * bytes for the same prepacking, and its session took 0.44 s to create against 0.29 s from the saved form (Engine.load
 * 0.81 → 0.67 s, 2 vCPUs, interleaved fresh processes; saved form 147 MB, first load 1.3-1.4 s). Below 32 MiB a session
 * is created in a quarter of a second or less.
 *
 * Packed layouts depend on the CPU's instruction set and onnxruntime's version ("may contain hardware specific
 * optimizations"), and the weights on the data files' bytes: an entry's key is the digest of the graph, of each
 * data file (stat-recorded digests, see file-digest.ts), the onnxruntime version and the CPU's model and flags.
 * An entry is this machine's own derived file, so a hit is trusted while both its files keep the inode, size,
 * mtime and ctime recorded when it was written (as file-digest's records are); anything else, or a session that
 * fails to load from it, makes it a miss that writes it again. It is not written where the disk would be left with
 * less than a tenth of it free (1 GiB at least), and any failure to write it leaves the session created the usual
 * way and nothing half-written behind. Entries are named after their model's path and variant too, and a new entry
 * removes the older ones of its model and variant, and those of models no longer there, so a module converted,
 * updated or removed leaves no stale gigabytes.
 *
 * onnxruntime (1.31.1) writes each packed copy into the data file straight after its weight, padding only before
 * weights past 1 MiB (to 4 KiB) and before others to their element's size, and maps the copies in place when loading,
 * while its kernels assume the 64-byte alignment of the buffers they packed into. A copy that lands elsewhere (after
 * one whose size is no multiple of 64: stories260K's MatMulNBits with K = 64 pack 13918 bytes) makes the loaded
 * session crash (SGEMM's aligned AVX-512 loads) or compute garbage (MatMulNBits finds its aligned parts at other
 * bytes). Such a form is never kept (see {@link packedCopiesAligned}): its graph's sessions are created the usual way,
 * and each load pays for writing it again (it comes out the same).
 */
import * as ort from 'onnxruntime-node';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat, statfs } from 'node:fs/promises';
import { arch, cpus } from 'node:os';
import { join, resolve } from 'node:path';
import { cachedHashFile } from '../modules/file-digest.js';
import { graphsOf } from '../onnx/graph-walk.js';
import { madeByMe, uniqueSuffix, writeFileAtomic } from '../registry/atomic.js';
import { ownerGone } from '../registry/download.js';

/** Bump when what an entry holds changes: old entries are then ignored (2: only forms whose packed copies are aligned). */
const SESSION_CACHE_FORMAT = 2;

/** What onnxruntime's CPU allocator aligns the buffers its kernels pack weights into to (MLAS's preferred alignment). */
const PACKED_ALIGNMENT = 64;

/** Bytes a decode step must read for a graph's session to be kept (smaller ones are created quickly anyway). */
export const SESSION_CACHE_MIN_BYTES = 32 * 2 ** 20;

/** What the cache's disk keeps free after a saved form is written, unless `SessionCacheSpec.keepFree` says: a tenth of it, 1 GiB at least. */
const keepFreeOf = (diskBytes: number) => Math.max(2 ** 30, diskBytes / 10);

/** The saved form's size against its graph's weights (their packed copies beside them; measured 2.3-2.5x). */
const SAVED_PER_WEIGHT_BYTE = 2.5;

/** Where a graph's session may keep its optimized form, and what its weights are. */
export interface SessionCacheSpec {
  /** Directory of saved sessions. */
  dir: string;
  /** The model the graph was prepared from. */
  model: string;
  /**
   * What the graph was prepared for (its adaptation): a new entry of a model and variant replaces their older ones (a
   * module converted again), while the variants of one model (with and without its hidden state) keep one each.
   */
  variant: string;
  /** Absolute paths of the external data files the graph reads. */
  dataFiles: string[];
  /**
   * What else the saved form depends on (a rewrite's format, when the session is of a graph rewritten at load): part
   * of the entry's content key, so that a new one replaces the entry of the old (a variant of its own would not).
   */
  salt?: string;
  /**
   * What the session is of where it is not the model's own graph (`int8 prompts`, see decoder-session.ts): kept in the
   * entry, so that `reasonplug cache` tells it apart from the model's own saved session.
   */
  label?: string;
  /**
   * What the caller counted from the graph to create its session (int8 prompts' products): kept in the entry, and
   * given back by {@link savedFacts} while the entry is whole, so that a load from it need not decode the graph again.
   */
  facts?: Record<string, number>;
  /**
   * Bytes the disk must keep free after the saved form is written (default: a tenth of the disk, 1 GiB at least): with
   * less room the session is created the usual way and nothing is written, so the cache never fills a disk.
   */
  keepFree?: number;
}

interface FileStamp {
  ino: string;
  size: string;
  mtimeNs: string;
  ctimeNs: string;
}

interface Sidecar {
  format: number;
  /** The model the graph was prepared from (what `reasonplug cache` lists). */
  model: string;
  /** {@link SessionCacheSpec.label}, where given (listed beside the model). */
  label?: string;
  /** {@link SessionCacheSpec.facts}, where given. */
  facts?: Record<string, number>;
  /** File name (in the entry's directory) of the saved form's data. */
  data: string;
  graph: FileStamp;
  dataStamp: FileStamp;
}

let cpuIdentity: string | undefined;

/** The CPU's model and instruction-set flags (Linux), else its model and architecture. */
function cpuKey(): string {
  if (cpuIdentity === undefined) {
    let identity = `${arch()} ${cpus()[0]?.model ?? 'unknown'}`;
    try {
      const info = readFileSync('/proc/cpuinfo', 'utf8');
      const flags = /^(?:flags|Features)\s*:\s*(.*)$/m.exec(info)?.[1];
      if (flags) identity += ` ${flags}`;
    } catch {
      // Not Linux: the model name stands for the instruction set.
    }
    cpuIdentity = identity;
  }
  return cpuIdentity;
}

async function stampOf(path: string): Promise<FileStamp> {
  const s = await stat(path, { bigint: true });
  return { ino: String(s.ino), size: String(s.size), mtimeNs: String(s.mtimeNs), ctimeNs: String(s.ctimeNs) };
}

const sameStamp = (a: FileStamp, b: FileStamp) => a.ino === b.ino && a.size === b.size && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs;

async function entryPaths(graphPath: string, spec: SessionCacheSpec) {
  const files = await Promise.all([graphPath, ...spec.dataFiles].map((f) => cachedHashFile(f)));
  const digests = files.map((f) => f.sha256);
  const owner = createHash('sha256').update(JSON.stringify([resolve(spec.model), spec.variant])).digest('hex').slice(0, 16);
  const content = createHash('sha256')
    .update(JSON.stringify({ format: SESSION_CACHE_FORMAT, onnxruntime: ort.env.versions.node ?? ort.env.versions.common, cpu: cpuKey(), digests, ...(spec.salt ? { salt: spec.salt } : {}) }))
    .digest('hex');
  const key = `${owner}-${content}`;
  // (the graph's and its data's bytes size the saved form before it is written)
  const bytes = files.reduce((n, f) => n + f.size, 0);
  return { owner, key, bytes, ...entryFiles(spec.dir, key) };
}

/** An entry's saved graph and its sidecar (which names its data file). */
function entryFiles(dir: string, key: string): { graph: string; sidecar: string } {
  return { graph: join(dir, `${key}.onnx`), sidecar: join(dir, `${key}.json`) };
}

type Entry = Awaited<ReturnType<typeof entryPaths>>;

async function readSidecar(entry: Pick<Entry, 'sidecar'>): Promise<Sidecar | undefined> {
  try {
    const meta = JSON.parse(await readFile(entry.sidecar, 'utf8')) as Sidecar;
    return meta.format === SESSION_CACHE_FORMAT && typeof meta.data === 'string' && !meta.data.includes('/') ? meta : undefined;
  } catch {
    return undefined;
  }
}

/** The saved form's graph path and sidecar when the entry is whole and unchanged since it was written. */
async function hit(entry: Entry, dir: string): Promise<{ graph: string; meta: Sidecar } | undefined> {
  const meta = await readSidecar(entry);
  if (!meta) return undefined;
  try {
    const [graph, data] = await Promise.all([stampOf(entry.graph), stampOf(join(dir, meta.data))]);
    return sameStamp(graph, meta.graph) && sameStamp(data, meta.dataStamp) ? { graph: entry.graph, meta } : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The {@link SessionCacheSpec.facts} kept with `graphPath`'s saved form under `spec`, where it has a whole one that
 * kept them; a load that finds none counts them from the graph (and {@link createCachedSession} keeps them).
 */
export async function savedFacts(graphPath: string, spec: SessionCacheSpec): Promise<Record<string, number> | undefined> {
  try {
    return (await hit(await entryPaths(graphPath, spec), spec.dir))?.meta.facts;
  } catch {
    return undefined;
  }
}

/**
 * Whether every packed copy a saved graph names lies at a multiple of {@link PACKED_ALIGNMENT} in its data file, where
 * onnxruntime maps it for its kernels as if packed there (see the module's comment). Read from the graph alone, so a
 * saved form that would crash its process is refused before any session loads it. An entry is
 * `prepacked_<n>` = `<kernel key>|<offset>;<length>;<checksum>` with one `|`-separated blob per buffer; an entry not of
 * that form is not known to be aligned.
 */
async function packedCopiesAligned(graphPath: string): Promise<boolean> {
  // (loaded only when a form is saved: a model worker otherwise never loads protobuf, ~0.3 s of its start-up)
  const { readModel } = await import('../onnx/proto.js');
  const model = await readModel(graphPath);
  for (const graph of graphsOf(model.graph!)) {
    for (const tensor of graph.initializer ?? []) {
      for (const { key, value } of tensor.externalData ?? []) {
        if (!key?.startsWith('prepacked')) continue;
        const blobs = (value ?? '').split('|').slice(1);
        const aligned = (blob: string) => {
          const fields = blob.split(';');
          return fields.length === 3 && /^\d+$/.test(fields[0]!) && Number(fields[0]) % PACKED_ALIGNMENT === 0;
        };
        if (blobs.length === 0 || !blobs.every(aligned)) return false;
      }
    }
  }
  return true;
}

/** Removes an entry and the data file its sidecar names. */
async function drop(entry: Pick<Entry, 'sidecar' | 'graph'>, dir: string): Promise<void> {
  const meta = await readSidecar(entry);
  await rm(entry.sidecar, { force: true });
  await rm(entry.graph, { force: true });
  if (meta) await rm(join(dir, meta.data), { force: true });
}

/**
 * Removes the other entries of the model's variant (its earlier graphs or weights), and the entries of models that
 * are gone (a module deleted, or a GGUF conversion replaced by a newer layout's): each is several times the model's bytes.
 */
async function dropOlder(entry: Entry, dir: string): Promise<void> {
  for (const name of await readdir(dir)) {
    if (name.startsWith(entry.key)) continue;
    if (name.startsWith(`${entry.owner}-`)) await rm(join(dir, name), { force: true }).catch(() => undefined);
    else if (name.endsWith('.json')) {
      const other = entryFiles(dir, name.slice(0, -'.json'.length));
      const meta = await readSidecar(other);
      if (meta && !existsSync(meta.model)) await drop(other, dir).catch(() => undefined);
    }
  }
}

/** Stems (`<key>.<pid>.<hex>`) of the saves this process is writing: its other ones were left by failed saves. */
const saving = new Set<string>();

/**
 * A save's files in the making: `<key>.<uniqueSuffix>.data` (named in the sidecar once done) and `.onnx.tmp`; older
 * versions wrote `<key>.<pid>.<hex>`.
 */
const SAVE_FILE = /^([0-9a-f]{16}-[0-9a-f]{64})\.((\d+)[-.]([0-9a-f]+))\.(?:data|onnx\.tmp)$/;

/**
 * Removes the files of saves no sidecar names whose writer is gone (see registry/download.ts `ownerGone`): left by
 * a process killed mid-save, or by one whose entry a concurrent save of the same session replaced.
 */
async function dropLeftovers(dir: string): Promise<void> {
  for (const name of await readdir(dir)) {
    const m = SAVE_FILE.exec(name);
    if (!m) continue;
    const [, key, stemSuffix, pid, hex] = m as unknown as [string, string, string, string, string];
    if ((await readSidecar(entryFiles(dir, key)))?.data === name) continue;
    const suffix = `${pid}-${hex}`;
    const gone = madeByMe(suffix) ? !saving.has(`${key}.${stemSuffix}`) : await ownerGone(join(dir, name), suffix);
    if (gone) await rm(join(dir, name), { force: true }).catch(() => undefined);
  }
}

/** Whether the cache's disk holds an entry's saved form (estimated from its graph's bytes) and keeps its reserve free. */
async function roomFor(entry: Entry, spec: SessionCacheSpec): Promise<boolean> {
  const disk = await statfs(spec.dir);
  return disk.bavail * disk.bsize >= entry.bytes * SAVED_PER_WEIGHT_BYTE + (spec.keepFree ?? keepFreeOf(disk.blocks * disk.bsize));
}

/**
 * Creates the session of `graphPath` (loaded by `load` the usual way) from its saved optimized form when `spec`
 * has one for it, else the usual way while saving that form for the next time.
 */
export async function createCachedSession(
  graphPath: string,
  spec: SessionCacheSpec,
  options: ort.InferenceSession.SessionOptions,
  load: (options: ort.InferenceSession.SessionOptions) => Promise<ort.InferenceSession>,
): Promise<ort.InferenceSession> {
  let entry: Entry;
  try {
    entry = await entryPaths(graphPath, spec);
  } catch {
    return load(options);
  }
  const saved = await hit(entry, spec.dir);
  if (saved) {
    // The saved form's data lies beside it: onnxruntime finds it relative to the graph's own path.
    const session = { ...(options.extra?.session as Record<string, unknown> | undefined) };
    delete session['model_external_initializers_file_folder_path'];
    let created: ort.InferenceSession | undefined;
    try {
      created = await ort.InferenceSession.create(saved.graph, { ...options, extra: { ...options.extra, session } });
    } catch {
      // Written again below.
    }
    if (created) {
      if (spec.facts) await keepFacts(entry, spec.dir, spec.facts, saved.meta);
      return created;
    }
  }
  const stem = `${entry.key}.${uniqueSuffix()}`;
  saving.add(stem);
  try {
    return await save(entry, stem, spec, options, load);
  } finally {
    saving.delete(stem);
  }
}

/**
 * Gives `facts` to an entry saved before they were kept (its sidecar `loaded`), so that the next load need not count
 * them again; only while it is still the entry loaded: one saved again or dropped by another process while the session
 * was created is not written back.
 */
async function keepFacts(entry: Entry, dir: string, facts: Record<string, number>, loaded: Sidecar): Promise<void> {
  if (JSON.stringify(loaded.facts) === JSON.stringify(facts)) return;
  const still = await hit(entry, dir);
  if (still && JSON.stringify(still.meta) === JSON.stringify(loaded)) await writeFileAtomic(entry.sidecar, `${JSON.stringify({ ...loaded, facts })}\n`).catch(() => undefined);
}

/** Creates the session the usual way while saving its optimized form as entry `entry`, in files named `stem.*`. */
async function save(
  entry: Entry,
  stem: string,
  spec: SessionCacheSpec,
  options: ort.InferenceSession.SessionOptions,
  load: (options: ort.InferenceSession.SessionOptions) => Promise<ort.InferenceSession>,
): Promise<ort.InferenceSession> {
  const graphTmp = join(spec.dir, `${stem}.onnx.tmp`);
  const dataName = `${stem}.data`;
  const cleanUp = async () => {
    for (const f of [graphTmp, join(spec.dir, dataName)]) await rm(f, { force: true });
  };
  // A directory that cannot be made (a file in its place) or a disk without room: created the usual way, nothing written.
  const room = await mkdir(spec.dir, { recursive: true }).then(
    () => roomFor(entry, spec),
    () => false,
  );
  if (!room) return load(options);
  let created: ort.InferenceSession;
  try {
    created = await load({
      ...options,
      optimizedModelFilePath: graphTmp,
      // onnxruntime warns that the saved form is this machine's; the key says so.
      logSeverityLevel: 3,
      extra: {
        ...options.extra,
        session: {
          ...(options.extra?.session as Record<string, unknown> | undefined),
          save_external_prepacked_constant_initializers: '1',
          optimized_model_external_initializers_file_name: dataName,
          optimized_model_external_initializers_min_size_in_bytes: '1024',
        },
      },
    });
  } catch {
    await cleanUp().catch(() => undefined);
    // A graph that fails here fails the usual way too, with its own message; a full disk does not.
    return load(options);
  }
  try {
    if (!(await packedCopiesAligned(graphTmp))) {
      // Kept, it would crash or compute garbage when loaded; written again, it comes out the same. (The older entries
      // of the model go all the same: an earlier format's may be one of these.)
      await cleanUp();
      await dropOlder(entry, spec.dir);
      return created;
    }
    await drop(entry, spec.dir);
    await rename(graphTmp, entry.graph);
    const meta: Sidecar = { format: SESSION_CACHE_FORMAT, model: resolve(spec.model), ...(spec.label ? { label: spec.label } : {}), ...(spec.facts ? { facts: spec.facts } : {}), data: dataName, graph: await stampOf(entry.graph), dataStamp: await stampOf(join(spec.dir, dataName)) };
    await writeFileAtomic(entry.sidecar, `${JSON.stringify(meta)}\n`);
    await dropLeftovers(spec.dir);
    await dropOlder(entry, spec.dir);
  } catch {
    await cleanUp().catch(() => undefined);
    await drop(entry, spec.dir).catch(() => undefined);
  }
  return created;
}
