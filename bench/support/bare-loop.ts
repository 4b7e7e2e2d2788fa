/**
 * The "bare loop" anchor: the least a greedy decoder can do per token on onnxruntime-node. One InferenceSession
 * created from the file path (so external data beside the model resolves), then per step one `session.run` with
 * input_ids / attention_mask / position_ids / past KV, present -> past, and an argmax over the last position's
 * logits. No sampling machinery, no cache objects, no copies beyond the tensors the run itself needs.
 * Names and element types come from `session.inputMetadata`; optimum / onnxruntime-genai I/O names are expected
 * (optimum's merged-decoder `use_cache_branch` input is fed too).
 */
import { performance } from 'node:perf_hooks';
import * as ort from 'onnxruntime-node';
import type { GenerationResult } from './transformers-ref.js';

export interface BareLoop {
  generate(promptIds: number[], n: number): Promise<GenerationResult>;
  dispose(): Promise<void>;
}

/** fp16 bit pattern -> float32 value, for all 65536 patterns. */
const F16_TO_F32: Float32Array = (() => {
  const lut = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    let v: number;
    if (exp === 0) v = frac * 2 ** -24; // subnormal (or zero)
    else if (exp === 31) v = frac === 0 ? Infinity : NaN;
    else v = (1 + frac / 1024) * 2 ** (exp - 15);
    lut[h] = sign * v;
  }
  return lut;
})();

/** Index of the first maximum of `data[offset, offset + n)` (fp32 values, or fp16 bit patterns via the LUT). */
function argmax(data: Float32Array | Uint16Array, offset: number, n: number): number {
  let best = 0;
  let bestV = -Infinity;
  if (data instanceof Uint16Array) {
    for (let i = 0; i < n; i++) {
      const v = F16_TO_F32[data[offset + i]!]!;
      if (v > bestV) {
        bestV = v;
        best = i;
      }
    }
  } else {
    for (let i = 0; i < n; i++) {
      const v = data[offset + i]!;
      if (v > bestV) {
        bestV = v;
        best = i;
      }
    }
  }
  return best;
}

type IntType = 'int64' | 'int32';

function intTensor(type: IntType, values: ArrayLike<number>, dims: number[]): ort.Tensor {
  if (type === 'int64') return new ort.Tensor('int64', BigInt64Array.from(values as number[], (x) => BigInt(x)), dims);
  return new ort.Tensor('int32', Int32Array.from(values as number[]), dims);
}

function onesTensor(type: IntType, n: number): ort.Tensor {
  return type === 'int64'
    ? new ort.Tensor('int64', new BigInt64Array(n).fill(1n), [1, n])
    : new ort.Tensor('int32', new Int32Array(n).fill(1), [1, n]);
}

function tensorMeta(m: ort.InferenceSession.ValueMetadata): { type: ort.Tensor.Type; shape: ReadonlyArray<number | string> } {
  if (!m.isTensor) throw new Error(`bare loop: input ${m.name} is not a tensor`);
  return { type: m.type, shape: m.shape };
}

/** Loads `onnxPath` into onnxruntime-node (CPU EP) and returns the minimal greedy loop over it. */
export async function loadBareLoop(onnxPath: string, opts: { intraOpNumThreads?: number } = {}): Promise<BareLoop> {
  const options: ort.InferenceSession.SessionOptions = { executionProviders: ['cpu'] };
  if (opts.intraOpNumThreads !== undefined) options.intraOpNumThreads = opts.intraOpNumThreads;
  const session = await ort.InferenceSession.create(onnxPath, options);

  const meta = new Map(session.inputMetadata.map((m) => [m.name, tensorMeta(m)]));
  const idsType = meta.get('input_ids')?.type;
  if (idsType !== 'int64' && idsType !== 'int32') throw new Error(`bare loop: input_ids must be int64 or int32, got ${idsType}`);
  const maskType = meta.get('attention_mask')?.type as IntType | undefined;
  const posType = meta.get('position_ids')?.type as IntType | undefined;
  const other = [...meta.keys()].filter(
    (n) =>
      !['input_ids', 'attention_mask', 'position_ids', 'use_cache_branch'].includes(n) && !n.startsWith('past_key_values.'),
  );
  const cacheBranch = meta.has('use_cache_branch'); // optimum's merged decoder: bool [1], true once past is non-empty
  if (other.length > 0) throw new Error(`bare loop: unsupported extra inputs ${other.join(', ')}`);

  // past_key_values.{i}.{key,value} -> present.{i}.{key,value}
  const pastNames = [...meta.keys()].filter((n) => n.startsWith('past_key_values.'));
  const presentOf = new Map<string, string>();
  for (const p of pastNames) {
    const out = p.replace(/^past_key_values\./, 'present.');
    if (!session.outputNames.includes(out)) throw new Error(`bare loop: ${p} has no matching output ${out}`);
    presentOf.set(p, out);
  }
  if (!session.outputNames.includes('logits')) throw new Error('bare loop: no logits output');

  /** Empty past: batch 1, every other symbolic dim (the past length) 0. */
  const emptyPast = (): Record<string, ort.Tensor> => {
    const feeds: Record<string, ort.Tensor> = {};
    for (const p of pastNames) {
      const { type, shape } = meta.get(p)!;
      const dims = shape.map((d, i) => (typeof d === 'number' && d >= 0 ? d : i === 0 ? 1 : 0));
      if (dims.includes(0)) {
        feeds[p] =
          type === 'float16'
            ? new ort.Tensor('float16', new Uint16Array(0), dims)
            : new ort.Tensor(type as 'float32', new Float32Array(0), dims);
      } else {
        throw new Error(`bare loop: cannot find the past-length dim of ${p} ${JSON.stringify(shape)}`);
      }
    }
    return feeds;
  };

  return {
    async generate(promptIds: number[], n: number): Promise<GenerationResult> {
      if (promptIds.length === 0) throw new Error('generate: empty prompt');
      const t0 = performance.now();
      let firstTokenMs = 0;
      const ids: number[] = [];
      let past = emptyPast();
      let pastLen = 0;
      let stepIds = promptIds;
      for (let step = 0; step < n; step++) {
        const s = stepIds.length;
        const feeds: Record<string, ort.Tensor> = { ...past, input_ids: intTensor(idsType, stepIds, [1, s]) };
        if (maskType) feeds.attention_mask = onesTensor(maskType, pastLen + s);
        if (cacheBranch) feeds.use_cache_branch = new ort.Tensor('bool', new Uint8Array([pastLen > 0 ? 1 : 0]), [1]);
        if (posType) feeds.position_ids = intTensor(posType, Array.from({ length: s }, (_, i) => pastLen + i), [1, s]);
        const out = await session.run(feeds);
        const logits = out.logits!;
        const vocab = logits.dims[2]!;
        const rows = logits.dims[1]!;
        const next = argmax(logits.data as Float32Array | Uint16Array, (rows - 1) * vocab, vocab);
        ids.push(next);
        if (step === 0) firstTokenMs = performance.now() - t0;
        const nextPast: Record<string, ort.Tensor> = {};
        for (const [p, o] of presentOf) nextPast[p] = out[o]!;
        past = nextPast;
        pastLen += s;
        stepIds = [next];
      }
      return { ids, firstTokenMs, totalMs: performance.now() - t0 };
    },
    async dispose(): Promise<void> {
      await session.release();
    },
  };
}
