/**
 * Reference quantizers for tests: float32 → each ggml block type, written from the block layouts of
 * ggml-common.h (round-to-nearest with simple scale choices; llama-quantize searches harder, but any
 * valid block is a valid test input). `quantizeGgml` encodes whole rows; the writer stores the bytes.
 */
import { f16Bits } from './gguf-writer.js';

const IQ4 = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/** float16 round trip: the value a stored f16 reads back as. */
function h(x: number): number {
  const b = f16Bits(x);
  const e = (b >> 10) & 0x1f;
  const f = b & 0x3ff;
  const v = e === 0 ? f * 2 ** -24 : (1 + f / 1024) * 2 ** (e - 15);
  return b & 0x8000 ? -v : v;
}

class Out {
  readonly bytes: Uint8Array;
  /** The value each element's code stands for, as the quantizer meant it (float32, ggml's operation order). */
  readonly values: Float32Array;
  private view: DataView;
  pos = 0;
  /** First element of the block being written. */
  at = 0;
  constructor(n: number, elements: number) {
    this.bytes = new Uint8Array(n);
    this.values = new Float32Array(elements);
    this.view = new DataView(this.bytes.buffer);
  }
  /** Records the value of element `i` of the current block. */
  val(i: number, v: number): void {
    this.values[this.at + i] = v;
  }
  f16(x: number): void {
    this.view.setUint16(this.pos, f16Bits(x), true);
    this.pos += 2;
  }
  u8(x: number): void {
    this.bytes[this.pos++] = x & 0xff;
  }
  u16(x: number): void {
    this.view.setUint16(this.pos, x, true);
    this.pos += 2;
  }
  u32(x: number): void {
    this.view.setUint32(this.pos, x >>> 0, true);
    this.pos += 4;
  }
  put(a: ArrayLike<number>): void {
    for (let i = 0; i < a.length; i++) this.u8(a[i]!);
  }
}

/** v within [lo, hi]; a rounded -0 becomes 0 (codes are integers). */
const clamp = (v: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, v)) + 0;
/** The element of largest magnitude, with its sign. */
function signedMax(x: Float32Array, from: number, n: number): number {
  let m = 0;
  for (let i = from; i < from + n; i++) if (Math.abs(x[i]!) > Math.abs(m)) m = x[i]!;
  return m;
}
function range(x: Float32Array, from: number, n: number): [number, number] {
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = from; i < from + n; i++) {
    lo = Math.min(lo, x[i]!);
    hi = Math.max(hi, x[i]!);
  }
  return [lo, hi];
}
/** Packs 32 4-bit codes the legacy way: low nibble element j, high nibble element j + 16. */
function nibbles32(q: number[]): number[] {
  return Array.from({ length: 16 }, (_, j) => (q[j]! & 0xf) | ((q[j + 16]! & 0xf) << 4));
}
function highBits32(q: number[]): number {
  let qh = 0;
  for (let j = 0; j < 32; j++) qh |= ((q[j]! >> 4) & 1) << j;
  return qh >>> 0;
}

type Quantizer = { blockElems: number; blockBytes: number; block(x: Float32Array, at: number, o: Out): void };
const f = Math.fround;

const q4_0: Quantizer = {
  blockElems: 32,
  blockBytes: 18,
  block(x, at, o) {
    const d = h(signedMax(x, at, 32) / -8);
    const q = Array.from({ length: 32 }, (_, j) => (d === 0 ? 8 : clamp(Math.round(x[at + j]! / d) + 8, 0, 15)));
    q.forEach((c, j) => o.val(j, (c - 8) * d));
    o.f16(d);
    o.put(nibbles32(q));
  },
};
const q4_1: Quantizer = {
  blockElems: 32,
  blockBytes: 20,
  block(x, at, o) {
    const [lo, hi] = range(x, at, 32);
    const d = h((hi - lo) / 15);
    const m = h(lo);
    const q = Array.from({ length: 32 }, (_, j) => (d === 0 ? 0 : clamp(Math.round((x[at + j]! - m) / d), 0, 15)));
    q.forEach((c, j) => o.val(j, c * d + m));
    o.f16(d);
    o.f16(m);
    o.put(nibbles32(q));
  },
};
const q5_0: Quantizer = {
  blockElems: 32,
  blockBytes: 22,
  block(x, at, o) {
    const d = h(signedMax(x, at, 32) / -16);
    const q = Array.from({ length: 32 }, (_, j) => (d === 0 ? 16 : clamp(Math.round(x[at + j]! / d) + 16, 0, 31)));
    q.forEach((c, j) => o.val(j, (c - 16) * d));
    o.f16(d);
    o.u32(highBits32(q));
    o.put(nibbles32(q));
  },
};
const q5_1: Quantizer = {
  blockElems: 32,
  blockBytes: 24,
  block(x, at, o) {
    const [lo, hi] = range(x, at, 32);
    const d = h((hi - lo) / 31);
    const m = h(lo);
    const q = Array.from({ length: 32 }, (_, j) => (d === 0 ? 0 : clamp(Math.round((x[at + j]! - m) / d), 0, 31)));
    q.forEach((c, j) => o.val(j, c * d + m));
    o.f16(d);
    o.f16(m);
    o.u32(highBits32(q));
    o.put(nibbles32(q));
  },
};
const q8_0: Quantizer = {
  blockElems: 32,
  blockBytes: 34,
  block(x, at, o) {
    const d = h(Math.abs(signedMax(x, at, 32)) / 127);
    o.f16(d);
    for (let j = 0; j < 32; j++) {
      const c = d === 0 ? 0 : clamp(Math.round(x[at + j]! / d), -128, 127);
      o.val(j, c * d);
      o.u8(c);
    }
  },
};

/** Per sub-block affine parameters with mins ≤ 0 (K-quants with mins): scale and -min per sub-block. */
function affineSubBlocks(x: Float32Array, at: number, sub: number, levels: number): { scale: number[]; min: number[] } {
  const scale: number[] = [];
  const min: number[] = [];
  for (let s = 0; s < 256 / sub; s++) {
    const [lo0, hi] = range(x, at + s * sub, sub);
    const lo = Math.min(lo0, 0);
    scale.push((hi - lo) / levels);
    min.push(-lo);
  }
  return { scale, min };
}
/** Quantizes non-negative sub-block parameters to `bits`-bit integers against one f16 super-scale. */
function superScale(v: number[], bits: number): { d: number; q: number[] } {
  const top = (1 << bits) - 1;
  const d = h(Math.max(...v) / top);
  return { d, q: v.map((s) => (d === 0 ? 0 : clamp(Math.round(s / d), 0, top))) };
}

const q2_K: Quantizer = {
  blockElems: 256,
  blockBytes: 84,
  block(x, at, o) {
    const p = affineSubBlocks(x, at, 16, 3);
    const sc = superScale(p.scale, 4);
    const mn = superScale(p.min, 4);
    const q = new Array<number>(256);
    for (let i = 0; i < 256; i++) {
      const s = i >> 4;
      const dl = sc.d * sc.q[s]!;
      q[i] = dl === 0 ? 0 : clamp(Math.round((x[at + i]! + mn.d * mn.q[s]!) / dl), 0, 3);
      o.val(i, f(sc.d * sc.q[s]!) * q[i]! - f(mn.d * mn.q[s]!));
    }
    o.put(sc.q.map((s, i) => s | (mn.q[i]! << 4)));
    // element 128·half + 32·k + l (l < 32) sits in bits 2k of byte 32·half + l
    const qs = new Array<number>(64).fill(0);
    for (let i = 0; i < 256; i++) qs[32 * (i >> 7) + (i & 31)] |= q[i]! << (2 * ((i >> 5) & 3));
    o.put(qs);
    o.f16(sc.d);
    o.f16(mn.d);
  },
};
const q3_K: Quantizer = {
  blockElems: 256,
  blockBytes: 110,
  block(x, at, o) {
    const sub = Array.from({ length: 16 }, (_, s) => signedMax(x, at + 16 * s, 16) / -4);
    const big = sub.reduce((a, b) => (Math.abs(b) > Math.abs(a) ? b : a), 0);
    const d = h(big / -32);
    const sc = sub.map((s) => (d === 0 ? 0 : clamp(Math.round(s / d), -32, 31)));
    const q = new Array<number>(256);
    for (let i = 0; i < 256; i++) {
      const dl = d * sc[i >> 4]!;
      q[i] = (dl === 0 ? 0 : clamp(Math.round(x[at + i]! / dl), -4, 3)) + 4;
      o.val(i, f(d * sc[i >> 4]!) * (q[i]! - 4));
    }
    const hmask = new Array<number>(32).fill(0);
    const qs = new Array<number>(64).fill(0);
    for (let i = 0; i < 256; i++) {
      const l = i & 31;
      const k = (i >> 5) & 3;
      qs[32 * (i >> 7) + l] |= (q[i]! & 3) << (2 * k);
      if (q[i]! & 4) hmask[l] |= 1 << (i >> 5);
    }
    o.put(hmask);
    o.put(qs);
    const u = sc.map((s) => s + 32); // 6 bits: low nibbles in bytes 0..7, high pairs in bytes 8..11
    const packed = new Array<number>(12).fill(0);
    for (let j = 0; j < 16; j++) {
      packed[j % 8] |= (u[j]! & 0xf) << (j < 8 ? 0 : 4);
      packed[8 + (j % 4)] |= (u[j]! >> 4) << (2 * (j >> 2));
    }
    o.put(packed);
    o.f16(d);
  },
};
/** The 12 bytes holding eight 6-bit scales and mins of Q4_K/Q5_K. */
function packScaleMin(s: number[], m: number[]): number[] {
  const b = new Array<number>(12).fill(0);
  for (let j = 0; j < 8; j++) {
    if (j < 4) {
      b[j] = s[j]!;
      b[j + 4] = m[j]!;
    } else {
      b[j + 4] = (s[j]! & 0xf) | ((m[j]! & 0xf) << 4);
      b[j - 4] |= (s[j]! >> 4) << 6;
      b[j] |= (m[j]! >> 4) << 6;
    }
  }
  return b;
}
function kAffine(levels: number, x: Float32Array, at: number, o: Out) {
  const p = affineSubBlocks(x, at, 32, levels);
  const sc = superScale(p.scale, 6);
  const mn = superScale(p.min, 6);
  const q = Array.from({ length: 256 }, (_, i) => {
    const s = i >> 5;
    const dl = sc.d * sc.q[s]!;
    const c = dl === 0 ? 0 : clamp(Math.round((x[at + i]! + mn.d * mn.q[s]!) / dl), 0, levels);
    o.val(i, f(sc.d * sc.q[s]!) * c - f(mn.d * mn.q[s]!));
    return c;
  });
  return { sc, mn, q };
}
const q4_K: Quantizer = {
  blockElems: 256,
  blockBytes: 144,
  block(x, at, o) {
    const { sc, mn, q } = kAffine(15, x, at, o);
    o.f16(sc.d);
    o.f16(mn.d);
    o.put(packScaleMin(sc.q, mn.q));
    for (let c = 0; c < 4; c++) for (let l = 0; l < 32; l++) o.u8(q[64 * c + l]! | (q[64 * c + 32 + l]! << 4));
  },
};
const q5_K: Quantizer = {
  blockElems: 256,
  blockBytes: 176,
  block(x, at, o) {
    const { sc, mn, q } = kAffine(31, x, at, o);
    o.f16(sc.d);
    o.f16(mn.d);
    o.put(packScaleMin(sc.q, mn.q));
    const qh = new Array<number>(32).fill(0);
    for (let i = 0; i < 256; i++) if (q[i]! & 16) qh[i & 31] |= 1 << (i >> 5);
    o.put(qh);
    for (let c = 0; c < 4; c++) for (let l = 0; l < 32; l++) o.u8((q[64 * c + l]! & 0xf) | ((q[64 * c + 32 + l]! & 0xf) << 4));
  },
};
const q6_K: Quantizer = {
  blockElems: 256,
  blockBytes: 210,
  block(x, at, o) {
    const sub = Array.from({ length: 16 }, (_, s) => signedMax(x, at + 16 * s, 16) / -32);
    const big = Math.max(...sub.map(Math.abs));
    const d = h(big / 127);
    const sc = sub.map((s) => (d === 0 ? 0 : clamp(Math.round(s / d), -128, 127)));
    const q = Array.from({ length: 256 }, (_, i) => {
      const dl = d * sc[i >> 4]!;
      const c = dl === 0 ? 0 : clamp(Math.round(x[at + i]! / dl), -32, 31);
      o.val(i, f(d * sc[i >> 4]!) * c);
      return c + 32;
    });
    const ql = new Array<number>(128).fill(0);
    const qh = new Array<number>(64).fill(0);
    for (let i = 0; i < 256; i++) {
      const half = i >> 7;
      const r = i & 127; // 32·k + l
      const k = r >> 5;
      const l = r & 31;
      ql[64 * half + l + 32 * (k & 1)] |= (q[i]! & 0xf) << (k >> 1 ? 4 : 0);
      qh[32 * half + l] |= (q[i]! >> 4) << (2 * k);
    }
    o.put(ql);
    o.put(qh);
    o.put(sc.map((s) => s & 0xff));
    o.f16(d);
  },
};
function nearestLevel(v: number): number {
  let best = 0;
  for (let k = 1; k < 16; k++) if (Math.abs(IQ4[k]! - v) < Math.abs(IQ4[best]! - v)) best = k;
  return best;
}
const iq4_nl: Quantizer = {
  blockElems: 32,
  blockBytes: 18,
  block(x, at, o) {
    const d = h(signedMax(x, at, 32) / -127);
    const q = Array.from({ length: 32 }, (_, j) => (d === 0 ? 8 : nearestLevel(x[at + j]! / d)));
    q.forEach((c, j) => o.val(j, d * IQ4[c]!));
    o.f16(d);
    o.put(nibbles32(q));
  },
};
const iq4_xs: Quantizer = {
  blockElems: 256,
  blockBytes: 136,
  block(x, at, o) {
    const sub = Array.from({ length: 8 }, (_, s) => signedMax(x, at + 32 * s, 32) / -127);
    const big = sub.reduce((a, b) => (Math.abs(b) > Math.abs(a) ? b : a), 0);
    const d = h(big / -32);
    const ls = sub.map((s) => (d === 0 ? 32 : clamp(Math.round(s / d), -32, 31) + 32));
    o.f16(d);
    let hi = 0;
    ls.forEach((l, ib) => (hi |= (l >> 4) << (2 * ib)));
    o.u16(hi);
    for (let k = 0; k < 4; k++) o.u8((ls[2 * k]! & 0xf) | ((ls[2 * k + 1]! & 0xf) << 4));
    for (let ib = 0; ib < 8; ib++) {
      const dl = f(d * (ls[ib]! - 32));
      const q = Array.from({ length: 32 }, (_, j) => (dl === 0 ? 8 : nearestLevel(x[at + 32 * ib + j]! / dl)));
      q.forEach((c, j) => o.val(32 * ib + j, dl * IQ4[c]!));
      o.put(nibbles32(q));
    }
  },
};

/** ggml's MXFP4 levels: twice the E2M1 values, the sign in the nibble's top bit. */
const MXFP4 = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];
/** MXFP4 as ggml's reference quantizer: the exponent puts the largest magnitude at 8–16 half-units, each value at its nearest level. */
const mxfp4: Quantizer = {
  blockElems: 32,
  blockBytes: 17,
  block(x, at, o) {
    const amax = Math.abs(signedMax(x, at, 32));
    const e = amax > 0 ? Math.floor(Math.log2(amax)) - 2 + 127 : 0;
    const d = 2 ** (e - 128);
    const q = Array.from({ length: 32 }, (_, j) => {
      let best = 0;
      for (let k = 1; k < 16; k++) if (Math.abs(MXFP4[k]! * d - x[at + j]!) < Math.abs(MXFP4[best]! * d - x[at + j]!)) best = k;
      return best;
    });
    q.forEach((c, j) => o.val(j, d * MXFP4[c]!));
    o.u8(e);
    o.put(nibbles32(q));
  },
};

/** Quantizers by ggml type number. */
export const QUANTIZERS: ReadonlyMap<number, Quantizer> = new Map([
  [2, q4_0],
  [3, q4_1],
  [6, q5_0],
  [7, q5_1],
  [8, q8_0],
  [10, q2_K],
  [11, q3_K],
  [12, q4_K],
  [13, q5_K],
  [14, q6_K],
  [20, iq4_nl],
  [23, iq4_xs],
  [39, mxfp4],
]);

/** ggml type numbers by name, for the types tests write. */
export const GGML = { F32: 0, F16: 1, Q4_0: 2, Q4_1: 3, Q5_0: 6, Q5_1: 7, Q8_0: 8, Q2_K: 10, Q3_K: 11, Q4_K: 12, Q5_K: 13, Q6_K: 14, IQ4_NL: 20, IQ4_XS: 23, BF16: 30, MXFP4: 39 } as const;

/**
 * Encodes float32 values (rows a multiple of the block size) as ggml type `type`, with the value each code
 * stands for (float32, in ggml's operation order: what a correct dequantizer must return). BF16 truncates.
 */
export function quantizeGgmlWithValues(x: Float32Array, type: number): { bytes: Uint8Array; values: Float32Array } {
  if (type === GGML.BF16) {
    const u = new Uint32Array(x.buffer, x.byteOffset, x.length);
    const half = Uint16Array.from(u, (v) => v >>> 16);
    return { bytes: new Uint8Array(half.buffer), values: new Float32Array(Uint32Array.from(half, (v) => v << 16).buffer) };
  }
  const qz = QUANTIZERS.get(type);
  if (!qz) throw new Error(`no reference quantizer for ggml type ${type}`);
  if (x.length % qz.blockElems !== 0) throw new Error(`${x.length} values are not whole blocks of ${qz.blockElems}`);
  const o = new Out((x.length / qz.blockElems) * qz.blockBytes, x.length);
  for (let at = 0; at < x.length; at += qz.blockElems) {
    o.at = at;
    qz.block(x, at, o);
  }
  return { bytes: o.bytes, values: o.values };
}

/** Encodes float32 values as ggml type `type` (see {@link quantizeGgmlWithValues}). */
export function quantizeGgml(x: Float32Array, type: number): Uint8Array {
  return quantizeGgmlWithValues(x, type).bytes;
}
