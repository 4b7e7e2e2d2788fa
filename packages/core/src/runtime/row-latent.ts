/**
 * LiteReason latent steps on one row's own cache, away from the running batch: `e = P(h)` fed as the row's next
 * input, each step from the hidden state the previous one produced, as a call alone runs them.
 */
import type { DecoderSession } from './decoder-session.js';
import type { RowCache } from './batch-kv.js';

/** Maps `[rows × hidden]` hidden states to latent input embeddings. */
export interface LatentProjector {
  project(hidden: Float32Array, rows: number): Promise<Float32Array>;
}

/** Runs `steps` (≥ 1) latent steps after `cache`, starting from `hidden`; returns the last logits (`[vocab]`), the grown cache and the last hidden state. */
export async function rowLatentSteps(
  session: DecoderSession,
  projector: LatentProjector,
  cache: RowCache,
  hidden: Float32Array,
  steps: number,
): Promise<{ logits: Float32Array; cache: RowCache; hidden: Float32Array }> {
  let { past, length } = cache;
  let h = hidden;
  let logits: Float32Array | undefined;
  for (let k = 0; k < steps; k++) {
    const embeds = await projector.project(h, 1);
    const out = await session.forward([], 1, past, length, new Array<number>(length + 1).fill(1), [length], embeds);
    past = out.present;
    length++;
    h = out.hidden!;
    logits = out.logits.slice(0, session.vocabSize);
  }
  return { logits: logits!, cache: { past, length }, hidden: h };
}
