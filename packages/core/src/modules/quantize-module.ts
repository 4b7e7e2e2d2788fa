/**
 * `reasonplug quantize`: a module directory, a plain export directory or an .onnx file → its 4- or 8-bit
 * counterpart (see onnx/quantize/quantize-graph.ts). A module stays a module: same name, kind, tasks and
 * tokenizer fingerprint, the version gets a prerelease identifier (`1.0.0-q4`, so both can sit in one registry
 * repository, and ranges keep resolving to the original) or is the one given, the quantization is recorded in
 * `provenance.quantization` and every digest is computed afresh.
 * The result is written beside its destination and renamed into place, so nothing half-written is left.
 */
import semver from 'semver';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { isGgufFile, isGgufPath } from '../gguf/gguf-module.js';
import { isOllamaRef } from './ollama-store.js';
import { HfCacheError, hfCachePath, isHfRef } from './hf-cache.js';
import { readModel, writeModel, type ModelProto } from '../onnx/proto.js';
import { checkNotQuantized, headBitsOf, quantizeGraph, QuantizeError, type QuantizeOptions, type QuantizeReport } from '../onnx/quantize/quantize-graph.js';
import { isExactSemver, type ModuleManifest } from './manifest.js';
import { writeModuleDir } from './module-dir.js';
import { locateModel, ModelNotFoundError, type ModelLocation } from './locate.js';
import { listVariants, type Dtype } from './hub-variants.js';
import { localModelPath } from './local-names.js';
import { makeDirectory } from './make-directory.js';

/** Files beside a plain export's graph that describe its tokenizer and generation; copied as they are. */
const EXPORT_SIDE_FILES = ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'chat_template.jinja'];
/** onnxruntime-genai's description of an export: copied with its decoder renamed (see {@link copyGenaiConfig}). */
const GENAI_CONFIG = 'genai_config.json';
/** The graph a quantized export directory holds. */
const EXPORT_GRAPH = 'model.onnx';

/** What {@link quantizeModel} wrote. */
export interface QuantizeResult {
  /** The destination (a directory, or an .onnx file for an .onnx source). */
  path: string;
  report: QuantizeReport;
  /** The new module's manifest, for module sources. */
  manifest?: ModuleManifest;
  /**
   * For a hub export directory: the variant quantized, and the quantized one its config.json picks where that was
   * passed over for it (no dtype asked for).
   */
  variant?: { dtype: Dtype; passedOver?: Dtype };
}

/** External-data files a graph references (they are inlined, so they are not copied). */
function externalFiles(model: ModelProto): Set<string> {
  const out = new Set<string>();
  for (const t of model.graph?.initializer ?? []) {
    const loc = t.externalData?.find((e) => e.key === 'location')?.value;
    if (loc) out.add(loc);
  }
  return out;
}

/** A graph quantized in memory, and the external-data files its source read (inlined in it, so not copied). */
interface Quantized {
  model: ModelProto;
  report: QuantizeReport;
  external: Set<string>;
}

/** `source`, the graph read from `path`, quantized. */
function quantizeSource(source: ModelProto, path: string, opts: QuantizeOptions): Quantized {
  const { model, report } = quantizeGraph(source, path, dirname(path), opts);
  return { model, report, external: externalFiles(source) };
}

/**
 * Copies an onnxruntime-genai export's `genai_config.json` to `dest`, its decoder (`model.decoder.filename`, which
 * locate.ts loads) renamed to the quantized graph's file name: the config is the first source of the context length
 * (context-length.ts), and copied as it is it would name the export's own decoder file, which the copy lacks. One
 * that does not parse, or has no decoder, is copied as it is (onnxruntime-genai refuses it either way, and locate.ts
 * reads no decoder from it).
 */
async function copyGenaiConfig(src: string, dest: string): Promise<void> {
  let config: { model?: { decoder?: unknown } } | null;
  try {
    config = JSON.parse(await readFile(src, 'utf8')) as typeof config;
  } catch (err) {
    if (!(err instanceof SyntaxError)) throw err;
    return copyFile(src, dest);
  }
  const decoder = config?.model?.decoder;
  if (typeof decoder !== 'object' || decoder === null || Array.isArray(decoder)) return copyFile(src, dest);
  (decoder as Record<string, unknown>).filename = EXPORT_GRAPH;
  await writeFile(dest, JSON.stringify(config, null, 4) + '\n');
}

/**
 * The quantized module's version: `version` where one is given, else the original's with `q<bits>` as a prerelease
 * identifier (`1.0.0-q4`). A prerelease original gets none derived: semver ranks a longer prerelease above its prefix
 * (`2.0.0-beta.1.q4` above `2.0.0-beta.1`), so ranges and `latest` would pick the copy over it.
 */
function copyVersion(manifest: ModuleManifest, bits: number, version: string | undefined): string {
  if (version !== undefined) {
    // (`1.0.0+q4` too: build metadata does not count, so the registry takes it for the original's version)
    if (semver.eq(version, manifest.version)) throw new QuantizeError(`the copy's version ${version} ranks as the original's, ${manifest.version}; choose another`);
    return version;
  }
  // A prerelease identifier, not build metadata: semver (and the registry) take `1.0.0+q4` for 1.0.0 itself; as a
  // prerelease, ranges and `latest` pass it over unless it is asked for by name.
  const v = semver.parse(manifest.version);
  if (!v) throw new QuantizeError(`the module's version ${manifest.version} is not semver`);
  const build = v.build.length > 0 ? `+${v.build.join('.')}` : '';
  const derived = `${v.major}.${v.minor}.${v.patch}-${[...v.prerelease, `q${bits}`].join('.')}${build}`;
  if (v.prerelease.length > 0) {
    throw new QuantizeError(
      `${manifest.name}@${manifest.version} is a prerelease, and its copy as ${derived} would rank above it (semver ranks a longer ` +
        `prerelease above its prefix), so ranges and latest would pick the copy: give the copy a version (--copy-version V, ` +
        `quantizeModel's version option), e.g. a prerelease of your choosing that ranks below ${manifest.version}`,
    );
  }
  return derived;
}

/** A quantization tag ending a hub name (`hf://org/repo:Q4_K_M`, hf-cache.ts): it picks a GGUF file. */
const HF_QUANT_TAG = /:[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** Whether `spec` names a GGUF file as another tool keeps it: Ollama's names, a hub name with a quantization tag or a .gguf path. */
function isGgufName(spec: string): boolean {
  return isOllamaRef(spec) || (isHfRef(spec) && (isGgufPath(spec) || HF_QUANT_TAG.test(spec)));
}

/**
 * The path `src` names: a `file:` URL's, or the file or folder a name another tool keeps a model under stands for
 * (local-names.ts), read where it is kept and never pulled: what a pull brings (Ollama's, or the hub's for a name its
 * cache lacks) is a GGUF file, which quantize refuses. Such a name of a GGUF file is returned as it is, to be refused.
 */
async function sourcePath(src: string): Promise<string> {
  if (isOllamaRef(src)) return src;
  if (!isHfRef(src)) return localModelPath(src);
  try {
    return hfCachePath(src);
  } catch (err) {
    if (err instanceof HfCacheError && isGgufName(src)) return src;
    throw err;
  }
}

/** The float variants of a hub export directory, most precise first. */
const FLOAT_DTYPES: readonly Dtype[] = ['fp32', 'fp16'];

/**
 * Locates `source`'s graph as loading does (locate.ts, `dtype` choosing among a hub export's variants). Without a
 * dtype, where the variant config.json picks is quantized and a float one is present, the float one is located
 * instead (`passedOver`: the one config.json picks): quantized, the picked one would only be refused.
 */
async function locateSource(source: string, dtype: string | undefined): Promise<{ location: ModelLocation; passedOver?: Dtype }> {
  const location = await locateModel(source, dtype !== undefined ? { dtype } : {});
  const picked = location.dtype;
  if ((dtype !== undefined && dtype !== 'auto') || picked === undefined || FLOAT_DTYPES.includes(picked)) return { location };
  const float = listVariants(source).find((v) => FLOAT_DTYPES.includes(v.dtype));
  return float ? { location: await locateModel(source, { dtype: float.dtype }), passedOver: picked } : { location };
}

/**
 * `err` as the QuantizeError of writing the copy of `src` into `dest` when it is the system's (an errno error, which
 * names the temporary path `tmp` at most, a full disk's write not even that), else `err` itself (its type says more).
 */
function writeFailure(err: unknown, src: string, dest: string, tmp?: string): unknown {
  if (typeof (err as NodeJS.ErrnoException | undefined)?.syscall !== 'string') return err;
  const message = (err as Error).message;
  return new QuantizeError(`cannot write the quantized copy of ${src} into ${dest}: ${tmp ? message.replaceAll(tmp, dest) : message}`, { cause: err });
}

/** Writes a module's copy into the folder `out`: its quantized graph, its other files but the inlined data, a fresh manifest. */
async function writeModuleCopy(out: string, source: string, manifest: ModuleManifest, quantized: Quantized, version: string, opts: QuantizeOptions): Promise<ModuleManifest> {
  const { report } = quantized;
  const modelRel = manifest.files.model!.path;
  await mkdir(dirname(join(out, modelRel)), { recursive: true });
  await writeModel(join(out, modelRel), quantized.model);
  const kept: Record<string, string> = { model: modelRel };
  for (const [key, entry] of Object.entries(manifest.files)) {
    if (key === 'model' || quantized.external.has(entry.path) || quantized.external.has(basename(entry.path))) continue;
    await mkdir(dirname(join(out, entry.path)), { recursive: true });
    await copyFile(join(source, entry.path), join(out, entry.path));
    kept[key] = entry.path;
  }
  // The source's schemaVersion too: quantizing swaps MatMuls and leaves the graph's outputs as they were, so a
  // graph that returns new keys and values (version 2) still does.
  const { files: _files, ...fields } = manifest;
  const bits = opts.bits ?? 4;
  return writeModuleDir(out, {
    ...fields,
    version,
    provenance: {
      ...manifest.provenance,
      quantization: {
        from: `${manifest.name}@${manifest.version}`,
        method: 'MatMulNBits (round to nearest, uint8 zero point per block)',
        search: opts.search ?? 'range',
        bits,
        // The head's bits only when a head was found (a projector has none).
        ...(report.head.names.length ? { headBits: headBitsOf(opts) } : {}),
        blockSize: opts.blockSize ?? 32,
        accuracy: opts.accuracy ?? 'int8',
        embeddings: opts.embeddings ?? false,
      },
    },
    files: kept,
  });
}

/** Writes a plain export's copy into the folder `out`: its quantized graph as model.onnx, the files beside it. */
async function writeExportCopy(out: string, source: string, location: ModelLocation, quantized: Quantized): Promise<void> {
  await mkdir(out);
  await writeModel(join(out, EXPORT_GRAPH), quantized.model);
  for (const dir of new Set([source, location.tokenizerDir ?? source])) {
    for (const f of EXPORT_SIDE_FILES) if (existsSync(join(dir, f)) && !existsSync(join(out, f))) await copyFile(join(dir, f), join(out, f));
    if (existsSync(join(dir, GENAI_CONFIG)) && !existsSync(join(out, GENAI_CONFIG))) await copyGenaiConfig(join(dir, GENAI_CONFIG), join(out, GENAI_CONFIG));
  }
}

/**
 * Quantizes `src` into `dest`, which must not exist. `src` is a path, a `file:` URL, or a name another tool keeps a
 * model under, read where it is kept ({@link sourcePath}: GGUF files are refused, before any pull). Throws
 * `QuantizeError` for graphs that cannot be quantized (already quantized, no constant MatMul), a copy's version that
 * cannot be used, and writes that fail (naming `dest`); `ModelNotFoundError`, `DtypeError`, `ManifestError` and
 * `ModuleIntegrityError` for sources that are not models or fail verification.
 */
export async function quantizeModel(src: string, dest: string, opts: QuantizeOptions = {}): Promise<QuantizeResult> {
  const path = await sourcePath(src);
  const source = resolve(path);
  const target = resolve(dest);
  // Read as ONNX, a GGUF file would fail as a corrupt model ("check that the download is complete").
  if (isGgufName(path) || isGgufPath(path) || isGgufFile(path)) {
    throw new QuantizeError(
      `${src} is a GGUF file, and quantize reads ONNX: convert it first (reasonplug convert gguf ${path} DIR), which keeps ` +
        `quantized GGUF types quantized (as MatMulNBits); quantize DIR only if its weights are F32/F16/BF16`,
    );
  }
  if (opts.version !== undefined && !isExactSemver(opts.version)) throw new QuantizeError(`the copy's version "${opts.version}" is not a semantic version (e.g. "1.0.0-q4")`);
  if (!existsSync(source)) throw new ModelNotFoundError(`model path not found: ${src}`);
  if (existsSync(target)) throw new QuantizeError(`${target} already exists; choose a new destination`);
  // Work in a short-named folder beside the destination (one file system, so the rename is atomic), not under a name
  // built from the destination's: one near the 255-byte limit would pass it. The result goes inside, not as that
  // folder, which mkdtemp makes private (0700).
  let work: string;
  try {
    await makeDirectory(dirname(target));
    work = await mkdtemp(join(dirname(target), '.rpq-'));
  } catch (err) {
    throw writeFailure(err, src, target);
  }
  const tmp = join(work, 'out');
  try {
    const { location, passedOver } = await locateSource(source, opts.dtype);
    const { manifest } = location;
    const isFile = !(await stat(source)).isDirectory();
    if (opts.version !== undefined && !manifest) {
      throw new QuantizeError(`${src} is ${isFile ? 'an .onnx file' : 'a plain export'}, which has no version: a version is for a module's copy`);
    }
    const graph = await readModel(location.modelPath);
    // (before the version: a quantized module's is a prerelease too, and that it is quantized is what matters)
    checkNotQuantized(graph, location.modelPath);
    const version = manifest && copyVersion(manifest, opts.bits ?? 4, opts.version);
    const quantized = quantizeSource(graph, location.modelPath, opts);
    let written: ModuleManifest | undefined;
    try {
      if (isFile) await writeModel(tmp, quantized.model);
      else if (manifest) written = await writeModuleCopy(tmp, source, manifest, quantized, version!, opts);
      else await writeExportCopy(tmp, source, location, quantized);
      await rename(tmp, target);
    } catch (err) {
      throw writeFailure(err, src, target, tmp);
    }
    return {
      path: target,
      report: quantized.report,
      ...(written ? { manifest: written } : {}),
      ...(location.dtype ? { variant: { dtype: location.dtype, ...(passedOver ? { passedOver } : {}) } } : {}),
    };
  } finally {
    // (empty once the result is renamed into place; what was written so far when it failed)
    await rm(work, { recursive: true, force: true });
  }
}
