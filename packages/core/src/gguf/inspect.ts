/** What a GGUF file's header says of it, read without its tensor data (for listing the models a machine has). */
import { SUPPORTED_ARCHITECTURES } from './convert.js';
import { SUPPORTED_TENSOR_TYPES, withGguf } from './reader.js';

/** A GGUF file as its header describes it. */
export interface GgufSummary {
  /** `general.architecture`. */
  architecture: string;
  /** The tensor types it holds, e.g. `Q4_K`, `Q6_K`, `F32`. */
  tensorTypes: string[];
  /** The bytes of all its files. */
  bytes: number;
  /** Why the converter would refuse it, by its architecture or a tensor type; the rest is checked when converting. */
  refused?: string;
}

/** Reads the header of the GGUF file at `path` (a split one by its first shard); throws GgufError for a broken one. */
export function summarizeGguf(path: string): Promise<GgufSummary> {
  return withGguf(path, async (f) => {
    const architecture = String(f.metadata.get('general.architecture')?.value ?? '(none)');
    const tensorTypes = [...new Set(f.tensors.map((t) => t.typeName))].sort();
    const unread = tensorTypes.filter((t) => !SUPPORTED_TENSOR_TYPES.includes(t));
    const refused = !(SUPPORTED_ARCHITECTURES as readonly string[]).includes(architecture)
      ? `architecture "${architecture}" is not converted`
      : unread.length
        ? `tensor type${unread.length > 1 ? 's' : ''} ${unread.join(', ')} not read`
        : undefined;
    return { architecture, tensorTypes, bytes: f.fileSize, ...(refused ? { refused } : {}) };
  });
}
