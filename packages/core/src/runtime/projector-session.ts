/**
 * A LiteReason reasoning projector in onnxruntime: one input and one output, `[batch, hidden] → [batch, hidden]`
 * (any names). Non-finite outputs become 0, as the method's reference code does.
 */
import * as ort from 'onnxruntime-node';
import { executionProvidersFor, deviceFailure } from './devices.js';
import type { RuntimeOptions } from './decoder-session.js';
import { guardedRun } from './run-guard.js';

/** Raised for a projector whose graph is not `[batch, hidden] → [batch, hidden]`, or that fails to run. */
export class ProjectorError extends Error {
  override name = 'ProjectorError';
}

/** A loaded projector. */
export class ProjectorSession {
  private constructor(
    private readonly session: ort.InferenceSession,
    /** The hidden size it maps. */
    readonly hiddenSize: number,
    private readonly label: string,
  ) {}

  /** Loads a projector graph and checks its signature. */
  static async create(path: string, runtime: RuntimeOptions = {}): Promise<ProjectorSession> {
    const device = runtime.device ?? 'cpu';
    let session: ort.InferenceSession;
    try {
      // Projectors are a few small MLPs: one thread avoids handing microsecond operators to a pool.
      session = await ort.InferenceSession.create(path, { executionProviders: executionProvidersFor(device), intraOpNumThreads: 1 });
    } catch (err) {
      throw device === 'cpu' ? new ProjectorError(`cannot load projector ${path}: ${(err as Error).message}`) : deviceFailure(device, err, path);
    }
    const describe = (m: readonly ort.InferenceSession.ValueMetadata[]) =>
      m.map((v) => `${v.name}${v.isTensor ? ` ${v.type} [${v.shape.join(', ')}]` : ''}`).join(', ') || 'none';
    const [input, output] = [session.inputMetadata, session.outputMetadata];
    const hidden = (m: readonly ort.InferenceSession.ValueMetadata[]) => {
      const v = m[0];
      return m.length === 1 && v?.isTensor && v.type === 'float32' && v.shape.length === 2 && typeof v.shape[1] === 'number'
        ? v.shape[1]
        : undefined;
    };
    const h = hidden(input);
    if (h === undefined || hidden(output) !== h) {
      await session.release();
      throw new ProjectorError(
        `${path} is not a reasoning projector: expected one float32 input and one float32 output of shape [batch, hidden] ` +
          `with the same hidden size; found inputs ${describe(input)} and outputs ${describe(output)}`,
      );
    }
    return new ProjectorSession(session, h, path);
  }

  /** Projects `[rows × hidden]` hidden states to latent embeddings. */
  async project(hidden: Float32Array, rows: number): Promise<Float32Array> {
    const name = this.session.inputNames[0]!;
    let out: ort.InferenceSession.OnnxValueMapType;
    try {
      out = await guardedRun(() => this.session.run({ [name]: new ort.Tensor('float32', hidden, [rows, this.hiddenSize]) }));
    } catch (err) {
      throw new ProjectorError(`${this.label}: ${(err as Error).message}`);
    }
    // The output buffer is this call's own: clean it in place.
    const latent = out[this.session.outputNames[0]!]!.data as Float32Array;
    for (let i = 0; i < latent.length; i++) if (!Number.isFinite(latent[i]!)) latent[i] = 0;
    return latent;
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}
