/**
 * What every ggml block type module provides: its block geometry, a dequantizer that matches llama.cpp's
 * `dequantize_row_*` value for value, and a view of each block as integer codes times a float32 scale
 * where the type is that simple (the lossless road onto onnxruntime's MatMulNBits).
 */

/** A ggml block-quantized type. */
export interface BlockType {
  /** ggml type name, e.g. "Q4_K". */
  name: string;
  /** ggml type number. */
  type: number;
  /** Elements per block (32, or 256 for K-quants and IQ4_XS). */
  blockElems: number;
  /** Bytes per block. */
  blockBytes: number;
  /** Dequantizes `nBlocks` blocks from `src` (at byte `srcAt`) into `dst` (from element `dstAt`). */
  dequantize(src: Uint8Array, srcAt: number, dst: Float32Array, dstAt: number, nBlocks: number): void;
  /**
   * Present when every block is `scale · code` with signed integer codes in sub-blocks of `subBlock`
   * elements: writes the codes of one block into `codes` and the float32 scale of each sub-block into
   * `scales` (the exact float llama.cpp multiplies by), so the values are `codes[i] · scales[i / subBlock]`.
   */
  codes?: {
    subBlock: number;
    /** Codes lie in [minCode, maxCode]. */
    minCode: number;
    maxCode: number;
    read(src: Uint8Array, at: number, codes: Int16Array, scales: Float32Array): void;
  };
  /**
   * Present for the types with a per-sub-block offset (Q4_1, Q5_1, Q2_K, Q4_K, Q5_K): writes unsigned codes,
   * and per sub-block the float32 scale and offset llama.cpp uses, so the values are
   * `codes[i] · scales[s] - offsets[s]` (s = i / subBlock), rounded once to float32 as llama.cpp rounds them.
   */
  affine?: {
    subBlock: number;
    maxCode: number;
    read(src: Uint8Array, at: number, codes: Int16Array, scales: Float32Array, offsets: Float32Array): void;
  };
}

// Scratch for one block (the largest is 256 elements), reused: a dequantizer is often called a row (a few blocks) at a time.
const blockCodes = new Int16Array(256);
const blockScales = new Float32Array(256);
const blockOffsets = new Float32Array(256);

/** `dequantize` for a type with a `codes` view: each block read as codes and scales, multiplied out (what ggml computes). */
export function dequantizeByCodes(type: BlockType, src: Uint8Array, at: number, dst: Float32Array, out: number, n: number): void {
  const { subBlock, read } = type.codes!;
  const subBlocks = type.blockElems / subBlock;
  for (let b = 0; b < n; b++, at += type.blockBytes, out += type.blockElems) {
    read(src, at, blockCodes, blockScales);
    for (let s = 0, i = 0; s < subBlocks; s++) {
      const scale = blockScales[s]!;
      for (const end = i + subBlock; i < end; i++) dst[out + i] = scale * blockCodes[i]!;
    }
  }
}

/** `dequantize` for a type with an `affine` view: `codes · scale - offset` per sub-block, as ggml computes it. */
export function dequantizeByAffine(type: BlockType, src: Uint8Array, at: number, dst: Float32Array, out: number, n: number): void {
  const { subBlock, read } = type.affine!;
  const subBlocks = type.blockElems / subBlock;
  for (let b = 0; b < n; b++, at += type.blockBytes, out += type.blockElems) {
    read(src, at, blockCodes, blockScales, blockOffsets);
    for (let s = 0, i = 0; s < subBlocks; s++) {
      const scale = blockScales[s]!;
      const offset = blockOffsets[s]!;
      for (const end = i + subBlock; i < end; i++) dst[out + i] = blockCodes[i]! * scale - offset;
    }
  }
}

/**
 * A type whose block of 32 is one scale, then 16 bytes of nibbles indexing a table of integer levels (low nibble:
 * element j, high: j + 16), x = scale · level[q] (IQ4_NL, MXFP4): `scaleBytes` bytes the `scale` reads.
 */
export function tableNibbleType(spec: { name: string; type: number; levels: readonly number[]; scaleBytes: number; scale: (src: Uint8Array, at: number) => number }): BlockType {
  const { levels, scaleBytes } = spec;
  const t: BlockType = {
    name: spec.name,
    type: spec.type,
    blockElems: 32,
    blockBytes: scaleBytes + 16,
    dequantize(src, at, dst, out, n) {
      dequantizeByCodes(t, src, at, dst, out, n);
    },
    codes: {
      subBlock: 32,
      minCode: Math.min(...levels),
      maxCode: Math.max(...levels),
      read(src, at, codes, scales) {
        scales[0] = spec.scale(src, at);
        for (let j = 0; j < 16; j++) {
          const q = src[at + scaleBytes + j]!;
          codes[j] = levels[q & 0xf]!;
          codes[j + 16] = levels[q >> 4]!;
        }
      },
    },
  };
  return t;
}
