/**
 * From a prepared model to a running decoder session. Locating and preparing a model live in prepare-model.ts: a
 * model worker handed its {@link PreparedModel}s (the engine looks cached ones up on its own thread, where those
 * modules are loaded anyway) then never loads the manifest's zod schema and protobuf (~0.3 s of its start-up).
 */
import type { ModelLocation } from '../modules/locate.js';
import type { ModuleManifest } from '../modules/manifest.js';
import type { PreparedDecoder } from '../onnx/prepared-cache.js';
import { DecoderSession, type DecoderSource, type Int8PromptsOutcome, type RuntimeOptions } from './decoder-session.js';
import { checkDeclaredVocabSize, tokenizerSizeOfDir } from '../modules/vocab-compat.js';
import { tokenizerFingerprintOf } from '../tokenizer/fingerprint.js';

/** A located model with its prepared graph, before any session exists (its weight bytes size the plan). */
export interface PreparedModel {
  location: ModelLocation;
  prepared: PreparedDecoder;
}

/** A session together with where it came from and what preparation noted. */
export interface OpenedDecoder {
  location: ModelLocation;
  session: DecoderSession;
  notes: string[];
}

/** Where a prepared model's session loads its graph from. */
export function decoderSource({ location, prepared }: PreparedModel): DecoderSource {
  return {
    path: prepared.preparedPath,
    ...(prepared.graph ? { graph: prepared.graph } : {}),
    label: location.modelPath,
    weightBytes: prepared.stepBytes,
    padding: prepared.padding,
    ...(prepared.longRopeContext !== undefined ? { longRopeContext: prepared.longRopeContext } : {}),
    ...(prepared.runWideActivationScale ? { runWideActivationScale: true } : {}),
    ...(prepared.externalDataDir ? { externalDataDir: prepared.externalDataDir } : {}),
    ...(prepared.sessionDir ? { sessionCache: { dir: prepared.sessionDir, model: location.modelPath, variant: prepared.adaptation, dataFiles: prepared.dataFiles } } : {}),
  };
}

/** Creates the session of a prepared model. */
export async function openPrepared({ location, prepared }: PreparedModel, runtime: RuntimeOptions): Promise<OpenedDecoder> {
  const session = await DecoderSession.create(decoderSource({ location, prepared }), runtime);
  const { manifest, manifestPath, tokenizerDir } = location;
  if (manifest && manifestPath) {
    const shape = { logits: session.vocabSize, tokenizerSize: async () => (tokenizerDir ? tokenizerSizeOfDir(tokenizerDir) : undefined) };
    await checkDeclaredVocabSize(manifestPath, manifest.compat.vocabSize, shape).catch(async (err: unknown) => {
      await session.release();
      throw err;
    });
  }
  return { location, session, notes: prepared.notes };
}

/** What the engine learns about a reasoner when it opens it. */
export interface ReasonerInfo {
  vocabSize: number;
  modelPath: string;
  manifest?: ModuleManifest;
  tokenizerFingerprint?: string;
  notes: string[];
  /** What `int8Prompts` did for its prompts (`DecoderSession.int8Prompts`), where asked for. */
  int8Prompts?: Int8PromptsOutcome;
}

/** Opens a prepared reasoner and reads what composing it needs (its manifest, tokenizer fingerprint). */
export async function openReasoner(model: PreparedModel, runtime: RuntimeOptions): Promise<{ session: DecoderSession; info: ReasonerInfo }> {
  const { location, session, notes } = await openPrepared(model, runtime);
  const fingerprint = await tokenizerFingerprintOf(location);
  const info: ReasonerInfo = {
    vocabSize: session.vocabSize,
    modelPath: location.modelPath,
    ...(location.manifest ? { manifest: location.manifest } : {}),
    ...(fingerprint ? { tokenizerFingerprint: fingerprint } : {}),
    notes,
    ...(session.int8Prompts ? { int8Prompts: session.int8Prompts } : {}),
  };
  return { session, info };
}
