/**
 * Hub export directories (onnx-community / Xenova layouts, as transformers.js downloads them) often hold one
 * graph per precision: `onnx/model.onnx`, `onnx/model_fp16.onnx`, `onnx/model_q4.onnx`, ... each with its own
 * external data chunks (`model_q4.onnx_data`, `model_q4.onnx_data_1`, ...). This module lists the variants a
 * directory holds and picks one by transformers.js's `dtype` names.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/** transformers.js's dtype names, and the file-name suffix each one selects. */
export const DTYPE_SUFFIXES = {
  fp32: '',
  fp16: '_fp16',
  q8: '_quantized',
  int8: '_int8',
  uint8: '_uint8',
  q4: '_q4',
  q4f16: '_q4f16',
  bnb4: '_bnb4',
} as const;

/** A dtype name a user may give (`--dtype`, `Engine.load({ dtype })`, the LangChain plugin's `dtype`). */
export type Dtype = keyof typeof DTYPE_SUFFIXES;

/** Every dtype name, in the order a directory's variants are preferred when no dtype is given: most precise first. */
export const DTYPES = Object.keys(DTYPE_SUFFIXES) as Dtype[];

/** What a user may ask for: a dtype, or `auto` (transformers.js's word for "as the export's config.json says", the default). */
export const DTYPE_CHOICES = [...DTYPES, 'auto'] as const;

/** Graph base names of the accepted layouts: optimum / onnx-community (`model`) and merged decoders. */
const BASES = ['model', 'decoder_model_merged'];
/** Where a hub directory keeps its graphs: its root (optimum) or `onnx/` (transformers.js). */
const SUBDIRS = ['', 'onnx'];

/** Raised for a dtype name that is not one of {@link DTYPES}, or a dtype the directory holds no graph for. */
export class DtypeError extends Error {
  override name = 'DtypeError';
}

/** One graph of a hub directory. */
export interface ModelVariant {
  dtype: Dtype;
  /** Absolute path of the graph. */
  path: string;
}

/** Checks a dtype given by a user (JavaScript callers, the CLI). */
export function validateDtype(value: string): Dtype | 'auto' {
  if (Object.hasOwn(DTYPE_SUFFIXES, value) || value === 'auto') return value as Dtype | 'auto';
  throw new DtypeError(`dtype must be one of ${DTYPE_CHOICES.join(', ')}; got "${value}"`);
}

/**
 * The graphs a directory holds, one per dtype (most precise first). Per dtype the first match wins among
 * `model<suffix>.onnx`, then `decoder_model_merged<suffix>.onnx`, at the root before `onnx/`.
 */
export function listVariants(dir: string): ModelVariant[] {
  const out: ModelVariant[] = [];
  for (const dtype of DTYPES) {
    const suffix = DTYPE_SUFFIXES[dtype];
    const path = SUBDIRS.flatMap((sub) => BASES.map((base) => join(dir, sub, `${base}${suffix}.onnx`))).find((p) => existsSync(p));
    if (path) out.push({ dtype, path });
  }
  return out;
}

/**
 * The dtype an export's `config.json` names for the CPU (`transformers.js_config.dtype`, or its
 * `device_config.cpu.dtype`; a map keyed by graph base name gives the decoder's), as transformers.js reads it.
 */
function configuredDtype(dir: string): Dtype | undefined {
  let config: { 'transformers.js_config'?: { dtype?: unknown; device_config?: { cpu?: { dtype?: unknown } } } };
  try {
    config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as typeof config;
  } catch {
    return undefined;
  }
  const settings = config?.['transformers.js_config'];
  const given = settings?.device_config?.cpu?.dtype ?? settings?.dtype;
  const named = typeof given === 'string' ? given : BASES.map((b) => (given as Record<string, unknown> | undefined)?.[b]).find((d) => typeof d === 'string');
  return typeof named === 'string' && Object.hasOwn(DTYPE_SUFFIXES, named) ? (named as Dtype) : undefined;
}

/**
 * Picks the graph of `dtype` among `variants`. Without one (or with `auto`), the variant the export's config.json
 * names, as transformers.js takes it, when present; else the most precise variant present (fp32, fp16, q8, int8,
 * uint8, q4, q4f16, bnb4: transformers.js's own fallback on the CPU is fp32), so a directory with a single variant
 * always works. Throws {@link DtypeError} naming the variants present when `dtype` has none.
 */
export function chooseVariant(dir: string, variants: readonly ModelVariant[], dtype?: string): ModelVariant | undefined {
  if (dtype === undefined || dtype === 'auto') {
    const configured = configuredDtype(dir);
    return variants.find((v) => v.dtype === configured) ?? variants[0];
  }
  const wanted = validateDtype(dtype) as Dtype;
  const found = variants.find((v) => v.dtype === wanted);
  if (found) return found;
  const present = variants.map((v) => `${v.dtype} (${v.path.slice(dir.length + 1)})`).join(', ');
  throw new DtypeError(
    `${dir} has no ${wanted} variant (model${DTYPE_SUFFIXES[wanted]}.onnx); ` +
      (variants.length > 0 ? `the variants present are: ${present}` : 'it holds no hub export graph at all'),
  );
}
