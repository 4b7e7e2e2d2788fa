/** Progress through a GGUF's tensor data as the converter reads it. */
import type { GgufFile } from './reader.js';

/** Reports each tensor read of `f` as progress through its data (a hook for {@link convertGguf}). */
export function reportTensorReads(f: GgufFile, report: (bytes: number, total: number) => void): void {
  const total = f.tensors.reduce((n, t) => n + (t.byteLength ?? 0), 0);
  let done = 0;
  const seen = new Set<string>();
  // (a tensor counts whole at its first read: a fused one's parts are read one at a time)
  const count = (name: string) => {
    if (seen.has(name)) return;
    seen.add(name);
    done += f.tensorInfo(name)?.byteLength ?? 0;
    report(done, total);
  };
  const wrap = <K extends 'readTensor' | 'readTensorBytes'>(key: K) => {
    const original = (f as unknown as Record<K, ((name: string) => Promise<unknown>) | undefined>)[key];
    if (typeof original !== 'function') return;
    (f as unknown as Record<K, (name: string) => Promise<unknown>>)[key] = async (name: string) => {
      const out = await original.call(f, name);
      count(name);
      return out;
    };
  };
  wrap('readTensor');
  wrap('readTensorBytes');
  const rows = f.readRowsSync;
  if (typeof rows !== 'function') return;
  f.readRowsSync = (name: string, from?: number, n?: number) => {
    const out = rows.call(f, name, from, n);
    count(name);
    return out;
  };
}
