/** Parsing of `Range` (blob reads) and `Content-Range` (upload chunks). */
import type { ByteRange } from '../storage/driver.js';

/**
 * The byte range a `Range` header asks for within `size` bytes: undefined to serve everything (no
 * header, or one we may ignore: several ranges, bad syntax), 'unsatisfiable' for a 416.
 */
export function requestedRange(header: string | undefined, size: number): ByteRange | 'unsatisfiable' | undefined {
  const m = header && /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    return suffix === 0 || size === 0 ? 'unsatisfiable' : { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(m[1]);
  const last = m[2] === '' ? Infinity : Number(m[2]);
  if (last < start) return undefined;
  if (start >= size) return 'unsatisfiable';
  return { start, end: Math.min(last, size - 1) };
}

/**
 * An upload chunk's `Content-Range`: `<start>-<end>` as the OCI spec writes it (a `bytes ` prefix and
 * a `/<total>` suffix are tolerated). Undefined when absent; null when malformed.
 */
export function chunkRange(header: string | undefined): ByteRange | undefined | null {
  if (header === undefined) return undefined;
  const m = /^(?:bytes[ =])?(\d+)-(\d+)(?:\/(?:\d+|\*))?$/.exec(header.trim());
  if (!m) return null;
  const range = { start: Number(m[1]), end: Number(m[2]) };
  return range.end < range.start ? null : range;
}
