/**
 * A draft-model pair with a trained model's text: stories260K (the draft) and a wide copy of it (the target) whose
 * feed-forward layers gain `extra` neurons with small random output weights. The copy computes nearly what
 * stories260K computes (the new neurons nudge its residual stream by `nudge` of their natural size, so near ties
 * flip and the draft is sometimes wrong, as a family's small model is), and its step reads as many bytes as a model
 * of its size: a target that costs what a larger model costs and agrees with its draft most of the time.
 */
import { GgufValueType } from '../../packages/core/src/gguf/reader.js';
import { seededNormals } from '../../packages/core/src/onnx/random-weights.js';
import { rewriteGguf, type EditableTensor } from '../../packages/core/test/support/gguf-writer.js';
import { quantizeGgml } from '../../packages/core/test/support/ggml-quantize.js';

/** Writes the wide copy of the GGUF at `source` to `path`, its matrices as ggml `type` (rows the type cannot hold stay F32). */
export async function writeWideStories(source: string, path: string, extra: number, nudge: number, type: number, blockElems: number): Promise<void> {
  await rewriteGguf(
    source,
    path,
    (meta, tensors) => {
      const ff = Number(meta.get('llama.feed_forward_length')!.value);
      meta.set('llama.feed_forward_length', { type: GgufValueType.UINT32, value: ff + extra });
      let seed = 11;
      for (const [name, t] of tensors) {
        if (/ffn_(gate|up)\.weight$/.test(name)) {
          // [ff, hidden] rows of `hidden`: the new neurons' rows after the old ones.
          const hidden = t.dims[0]!;
          const added = seededNormals(seed++)(extra * hidden, 1 / Math.sqrt(hidden));
          tensors.set(name, { dims: [hidden, ff + extra], data: concat(t.data, added), type: t.type });
        } else if (/ffn_down\.weight$/.test(name)) {
          // [hidden, ff] rows of `ff`: each row gains `extra` small weights.
          const hidden = t.dims[1]!;
          const fresh = seededNormals(seed++)(hidden * extra, nudge / Math.sqrt(extra));
          const data = new Float32Array(hidden * (ff + extra));
          for (let r = 0; r < hidden; r++) {
            data.set(t.data.subarray(r * ff, (r + 1) * ff), r * (ff + extra));
            data.set(fresh.subarray(r * extra, (r + 1) * extra), r * (ff + extra) + ff);
          }
          tensors.set(name, { dims: [ff + extra, hidden], data, type: t.type });
        }
      }
      for (const t of tensors.values()) if (t.dims.length === 2 && t.dims[0]! % blockElems === 0) (t as EditableTensor).type = type;
    },
    (data, ggmlType) => quantizeGgml(data, ggmlType),
  );
}

function concat(a: Float32Array, b: Float32Array): Float32Array {
  const out = new Float32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
