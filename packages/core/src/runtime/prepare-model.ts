/**
 * From a model path to a prepared model: locate it (module manifest, files verified) and prepare its graph
 * (cached). Apart from open-decoder.ts so that a model worker given its prepared models does not load this.
 */
import { locateModel, type ModelLocation } from '../modules/locate.js';
import { modelValueMetadata } from '../onnx/adapt.js';
import { findPreparedDecoder, prepareDecoder, type PrepareOptions } from '../onnx/prepared-cache.js';
import { decodeModel, readModel } from '../onnx/proto.js';
import { detectSignature } from '../onnx/signature.js';
import type { RuntimeOptions } from './decoder-session.js';
import { openPrepared, type OpenedDecoder, type PreparedModel } from './open-decoder.js';
import { ProjectorError } from './projector-session.js';

/** What a prepared graph offers beyond last-position fp32 logits. */
export interface GraphNeeds {
  /** `inputs_embeds` in and the final hidden state out: what LiteReason's projector loop needs. */
  latent?: boolean;
  /** The final hidden state out: what embeddings are. */
  hiddenState?: boolean;
}

/**
 * Locates a model and prepares its graph for last-position fp32 logits, and what `needs` asks beyond them. A
 * latent-projector module is refused by its kind (`ProjectorError`): it is no decoder, and its graph would only be
 * refused later for a decoder's missing inputs.
 */
export async function prepareModel(model: string, cacheDir?: string, needs: GraphNeeds = {}, dtype?: string): Promise<PreparedModel> {
  const location = await locateModel(model, dtype !== undefined ? { dtype } : {});
  if (location.manifest?.kind === 'latent-projector') {
    throw new ProjectorError(
      `${model} is a latent-projector module, not a decoder: pass it as the projector (--projector, or the projector option), not as a model, reasoner or draft model`,
    );
  }
  return { location, prepared: await prepareDecoder(location.modelPath, prepareOptions(location, cacheDir, needs)) };
}

/**
 * {@link prepareModel} when the graph is already prepared and cached, else undefined: it never parses or writes a
 * graph, so it may run on a thread that must stay responsive. Any failure also gives undefined: {@link prepareModel},
 * run again where the model loads, then reports it.
 */
export async function findPreparedModel(model: string, cacheDir?: string, needs: GraphNeeds = {}, dtype?: string): Promise<PreparedModel | undefined> {
  try {
    const location = await locateModel(model, dtype !== undefined ? { dtype } : {});
    const prepared = await findPreparedDecoder(location.modelPath, prepareOptions(location, cacheDir, needs));
    return prepared ? { location, prepared } : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The hidden size a latent-projector must map to run with `model`: that of the final hidden state its graph gives
 * once prepared for the projector loop (prepared and cached as a load with a projector would), read from the graph
 * without a session. Throws UnsupportedModelError for a graph that cannot give one.
 */
export async function projectorHiddenSize(model: string, cacheDir?: string): Promise<number | undefined> {
  const { prepared } = await prepareModel(model, cacheDir, { latent: true });
  const graph = prepared.graph ? decodeModel(prepared.graph, prepared.sourcePath) : await readModel(prepared.preparedPath);
  const io = modelValueMetadata(graph);
  return detectSignature(io.inputs, io.outputs, prepared.sourcePath).hiddenState?.hiddenSize;
}

/** {@link prepareModel}, then {@link openPrepared}. */
export async function openDecoder(model: string, runtime: RuntimeOptions, cacheDir?: string, needs: GraphNeeds = {}, dtype?: string): Promise<OpenedDecoder> {
  return openPrepared(await prepareModel(model, cacheDir, needs, dtype), runtime);
}

function prepareOptions(location: ModelLocation, cacheDir: string | undefined, needs: GraphNeeds): PrepareOptions {
  return {
    lastLogitsOnly: true,
    logitsFloat32: true,
    ...(needs.latent ? { inputsEmbeds: true } : {}),
    ...(needs.latent || needs.hiddenState ? { hiddenState: true } : {}),
    ...(cacheDir ? { cacheDir } : {}),
    // A module's graph must be the bytes its manifest lists, also as prepared (not only as stat-checked).
    ...(location.manifest ? { expectedSha256: location.manifest.files.model.sha256 } : {}),
  };
}
