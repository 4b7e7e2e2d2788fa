/**
 * `reasonplug quantize`: a module directory, a plain export directory or an .onnx file → its 4- or 8-bit
 * counterpart (see onnx/quantize/quantize-graph.ts). A module stays a module: same name, kind, tasks and
 * tokenizer fingerprint, the version gets a prerelease identifier (`1.0.0-q4`, so both can sit in one registry
 * repository, and ranges keep resolving to the original), the quantization is recorded in `provenance.quantization` and every digest is computed afresh.
 * The result is written beside its destination and renamed into place, so nothing half-written is left.
 */
import semver from 'semver';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { isGgufFile, isGgufPath } from '../gguf/gguf-module.js';
import { isOllamaRef } from './ollama-store.js';
import { readModel, writeModel } from '../onnx/proto.js';
import { headBitsOf, quantizeGraph, QuantizeError, type QuantizeOptions, type QuantizeReport } from '../onnx/quantize/quantize-graph.js';
import { MANIFEST_FILE, type ModuleManifest } from './manifest.js';
import { loadModuleDir, writeModuleDir } from './module-dir.js';
import { locateModel, ModelNotFoundError } from './locate.js';
import { isLocalModelName, localModelPath } from './local-names.js';
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
}

/** External-data files a graph references (they are inlined, so they are not copied). */
function externalFiles(model: Awaited<ReturnType<typeof readModel>>): Set<string> {
  const out = new Set<string>();
  for (const t of model.graph?.initializer ?? []) {
    const loc = t.externalData?.find((e) => e.key === 'location')?.value;
    if (loc) out.add(loc);
  }
  return out;
}

async function quantizeFile(src: string, dest: string, opts: QuantizeOptions): Promise<{ report: QuantizeReport; external: Set<string> }> {
  const model = await readModel(src);
  const { model: q, report } = quantizeGraph(model, src, dirname(src), opts);
  await writeModel(dest, q);
  return { report, external: externalFiles(model) };
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

/** The version of a quantized module: the source's, with `q<bits>` in its build metadata. */
function quantizedVersion(version: string, bits: number): string {
  // A prerelease identifier, not build metadata: semver (and the registry) take `1.0.0+q4` for 1.0.0 itself; as a
  // prerelease, ranges and `latest` pass it over unless it is asked for by name.
  const v = semver.parse(version);
  if (!v) throw new QuantizeError(`the module's version ${version} is not semver`);
  const build = v.build.length > 0 ? `+${v.build.join('.')}` : '';
  return `${v.major}.${v.minor}.${v.patch}-${[...v.prerelease, `q${bits}`].join('.')}${build}`;
}

/**
 * Quantizes `src` into `dest`, which must not exist. Throws `QuantizeError` for graphs that cannot be
 * quantized (already quantized, no constant MatMul), `ModelNotFoundError`, `ManifestError` and
 * `ModuleIntegrityError` for sources that are not models or fail verification.
 */
export async function quantizeModel(src: string, dest: string, opts: QuantizeOptions = {}): Promise<QuantizeResult> {
  // (an Ollama name is a GGUF file: refused below without pulling it)
  const path = isLocalModelName(src) && !isOllamaRef(src) ? await localModelPath(src) : src;
  const source = resolve(path);
  const target = resolve(dest);
  // Read as ONNX, a GGUF file would fail as a corrupt model ("check that the download is complete").
  if (isGgufPath(path) || isGgufFile(path) || isOllamaRef(src)) {
    throw new QuantizeError(
      `${src} is a GGUF file, and quantize reads ONNX: convert it first (reasonplug convert gguf ${path} DIR), which keeps ` +
        `quantized GGUF types quantized (as MatMulNBits); quantize DIR only if its weights are F32/F16/BF16`,
    );
  }
  if (!existsSync(source)) throw new ModelNotFoundError(`model path not found: ${src}`);
  if (existsSync(target)) throw new QuantizeError(`${target} already exists; choose a new destination`);
  const bits = opts.bits ?? 4;
  await makeDirectory(dirname(target));
  // Work in a short-named folder beside the destination (one file system, so the rename is atomic), not under a name
  // built from the destination's: one near the 255-byte limit would pass it. The result goes inside, not as that
  // folder, which mkdtemp makes private (0700).
  const work = await mkdtemp(join(dirname(target), '.rpq-'));
  const tmp = join(work, 'out');
  try {
    if (!(await stat(source)).isDirectory()) {
      const { report } = await quantizeFile(source, tmp, opts);
      await rename(tmp, target);
      return { path: target, report };
    }
    await mkdir(tmp);
    let result: Omit<QuantizeResult, 'path'>;
    if (existsSync(join(source, MANIFEST_FILE))) {
      const { manifest, files } = await loadModuleDir(source);
      const modelRel = manifest.files.model!.path;
      await mkdir(dirname(join(tmp, modelRel)), { recursive: true });
      const { report, external } = await quantizeFile(files.model!, join(tmp, modelRel), opts);
      const kept: Record<string, string> = { model: modelRel };
      for (const [key, entry] of Object.entries(manifest.files)) {
        if (key === 'model' || external.has(entry.path) || external.has(basename(entry.path))) continue;
        await mkdir(dirname(join(tmp, entry.path)), { recursive: true });
        await copyFile(join(source, entry.path), join(tmp, entry.path));
        kept[key] = entry.path;
      }
      // The source's schemaVersion too: quantizing swaps MatMuls and leaves the graph's outputs as they were, so a
      // graph that returns new keys and values (version 2) still does.
      const { files: _files, ...fields } = manifest;
      const written = await writeModuleDir(tmp, {
        ...fields,
        version: quantizedVersion(manifest.version, bits),
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
      result = { report, manifest: written };
    } else {
      const location = await locateModel(source);
      const { report } = await quantizeFile(location.modelPath, join(tmp, EXPORT_GRAPH), opts);
      for (const dir of new Set([source, location.tokenizerDir ?? source])) {
        for (const f of EXPORT_SIDE_FILES) if (existsSync(join(dir, f)) && !existsSync(join(tmp, f))) await copyFile(join(dir, f), join(tmp, f));
        if (existsSync(join(dir, GENAI_CONFIG)) && !existsSync(join(tmp, GENAI_CONFIG))) await copyGenaiConfig(join(dir, GENAI_CONFIG), join(tmp, GENAI_CONFIG));
      }
      result = { report };
    }
    await rename(tmp, target);
    return { path: target, ...result };
  } finally {
    // (empty once the result is renamed into place; what was written so far when it failed)
    await rm(work, { recursive: true, force: true });
  }
}
