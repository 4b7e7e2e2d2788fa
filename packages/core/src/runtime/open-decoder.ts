/** From a model path to a running decoder session: locate, prepare (cached), create. */
import { locateModel, type ModelLocation } from '../modules/locate.js';
import { prepareDecoder } from '../onnx/prepared-cache.js';
import { DecoderSession, type RuntimeOptions } from './decoder-session.js';

/** A session together with where it came from and what preparation noted. */
export interface OpenedDecoder {
  location: ModelLocation;
  session: DecoderSession;
  notes: string[];
}

/**
 * Opens the decoder behind a model path with last-position fp32 logits; with `latent`, the graph also takes
 * `inputs_embeds` and returns its final hidden state (what LiteReason's projector loop needs).
 */
export async function openDecoder(model: string, runtime: RuntimeOptions, cacheDir?: string, latent = false): Promise<OpenedDecoder> {
  const location = await locateModel(model);
  const prepared = await prepareDecoder(location.modelPath, {
    lastLogitsOnly: true,
    logitsFloat32: true,
    ...(latent ? { inputsEmbeds: true, hiddenState: true } : {}),
    ...(cacheDir ? { cacheDir } : {}),
  });
  const session = await DecoderSession.create(
    {
      path: prepared.preparedPath,
      label: location.modelPath,
      weightBytes: prepared.weightBytes,
      ...(prepared.externalDataDir ? { externalDataDir: prepared.externalDataDir } : {}),
    },
    runtime,
  );
  return { location, session, notes: prepared.notes };
}
