/** A DecoderSession driven on the main thread through each path fp16 tensors take: logits, steps, a caller's cache. */
import * as ort from 'onnxruntime-node';
import { DecoderSession } from '../../src/runtime/decoder-session.js';

const argmax = (logits: Float32Array, vocab: number, row: number) => {
  const own = logits.subarray(row * vocab, (row + 1) * vocab);
  return own.indexOf(Math.max(...own));
};

/**
 * The logits of a two-row prefill of prompts of different lengths and four greedy steps after it (a latent step
 * among them where the graph takes `inputs_embeds`), then of one row through three runs of `forward`, each on the
 * cache the one before returned, the second on a copy of it in tensors of the caller's own. With `rowsAlone`, each
 * run of two rows runs them one at a time and joins the outputs (as for a graph with a run-wide activation scale).
 */
export async function float16Scenario(path: string, rowsAlone = false): Promise<number[][]> {
  const session = await DecoderSession.create({ path, runWideActivationScale: rowsAlone });
  const vocab = session.vocabSize;
  const out: Float32Array[] = [];
  try {
    let logits = await session.prefill([
      [1, 5, 9, 22, 40],
      [3, 17, 8],
    ]);
    out.push(logits);
    for (let i = 0; i < 4; i++) {
      const embeds = session.signature.inputsEmbeds;
      logits = embeds && i === 2 ? await session.stepEmbeds(new Float32Array(2 * embeds.hiddenSize).fill(0.25)) : await session.step([argmax(logits, vocab, 0), argmax(logits, vocab, 1)]);
      out.push(logits);
    }
    const first = await session.forward([1, 5, 9], 1, undefined, 0, [1, 1, 1], [0, 1, 2]);
    const copy = Object.fromEntries(Object.entries(first.present).map(([name, t]) => [name, new ort.Tensor(t.type as 'float32', (t.data as Float32Array).slice(), t.dims)]));
    const second = await session.forward([argmax(first.logits, vocab, 0)], 1, copy, 3, [1, 1, 1, 1], [3]);
    const third = await session.forward([argmax(second.logits, vocab, 0)], 1, second.present, 4, [1, 1, 1, 1, 1], [4]);
    out.push(first.logits, second.logits, third.logits);
  } finally {
    await session.release();
  }
  return out.map((l) => Array.from(l));
}
