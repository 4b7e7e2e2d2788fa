/**
 * Hub export directories (onnx-community / Xenova layouts, as transformers.js downloads them) often hold one
 * graph per precision: `onnx/model.onnx`, `onnx/model_fp16.onnx`, `onnx/model_q4.onnx`, ... each with its own
 * external data chunks (`model_q4.onnx_data`, `model_q4.onnx_data_1`, ...). This module lists the variants a
 * directory holds and picks one by transformers.js's `dtype` names.
 */
import { existsSync } from 'node:fs';
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
export function validateDtype(value: string): Dtype {
  if (Object.hasOwn(DTYPE_SUFFIXES, value)) return value as Dtype;
  throw new DtypeError(`dtype must be one of ${DTYPES.join(', ')}; got "${value}"`);
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
 * Picks the graph of `dtype` among `variants`; without a dtype, the most precise variant present (fp32, fp16,
 * q8, int8, uint8, q4, q4f16, bnb4: transformers.js's own default on the CPU is fp32), so a directory with a
 * single variant always works. Throws {@link DtypeError} naming the variants present when `dtype` has none.
 */
export function chooseVariant(dir: string, variants: readonly ModelVariant[], dtype?: string): ModelVariant | undefined {
  if (dtype === undefined) return variants[0];
  const wanted = validateDtype(dtype);
  const found = variants.find((v) => v.dtype === wanted);
  if (found) return found;
  const present = variants.map((v) => `${v.dtype} (${v.path.slice(dir.length + 1)})`).join(', ');
  throw new DtypeError(
    `${dir} has no ${wanted} variant (model${DTYPE_SUFFIXES[wanted]}.onnx); ` +
      (variants.length > 0 ? `the variants present are: ${present}` : 'it holds no hub export graph at all'),
  );
}
