/** onnxruntime's own session loop over a decoder file, without the engine: the reference the engine is checked against. */
import * as ort from 'onnxruntime-node';

/** onnxruntime's bare greedy loop over one prompt (no padding, no engine): the reference for graphs that compute in fp16. */
export async function bareGreedy(path: string, prompt: number[], steps: number): Promise<number[]> {
  const session = await ort.InferenceSession.create(path);
  try {
    const meta = new Map(session.inputMetadata.map((m) => [m.name, m as { type: string; shape: readonly (number | string)[] }]));
    const ids = (values: number[], name: string) => {
      const type = meta.get(name)!.type;
      return type === 'int32' ? new ort.Tensor('int32', Int32Array.from(values), [1, values.length]) : new ort.Tensor('int64', BigInt64Array.from(values, BigInt), [1, values.length]);
    };
    const kvType = meta.get('past_key_values.0.key')!.type as 'float16' | 'float32';
    let past: Record<string, ort.Tensor> = {};
    for (const [name, m] of meta) {
      if (name.startsWith('past_key_values.')) past[name] = new ort.Tensor(kvType, kvType === 'float16' ? new Uint16Array(0) : new Float32Array(0), [1, m.shape[1] as number, 0, m.shape[3] as number]);
    }
    const out: number[] = [];
    let feed = prompt;
    let length = 0;
    for (let s = 0; s < steps; s++) {
      length += feed.length;
      const feeds: Record<string, ort.Tensor> = { input_ids: ids(feed, 'input_ids'), attention_mask: ids(new Array(length).fill(1), 'attention_mask'), ...past };
      if (meta.has('position_ids')) feeds.position_ids = ids(feed.map((_, i) => length - feed.length + i), 'position_ids');
      const r = await session.run(feeds);
      const logits = r.logits!;
      const vocab = logits.dims[2] as number;
      const last = (logits.dims[1] as number) - 1;
      const row = Array.from({ length: vocab }, (_, v) => {
        const x = (logits.data as Float32Array | Uint16Array)[last * vocab + v]!;
        return logits.type === 'float16' ? float16(x) : x;
      });
      const next = row.indexOf(Math.max(...row));
      out.push(next);
      past = pastAfter(past, r);
      feed = [next];
    }
    return out;
  } finally {
    await session.release();
  }
}

export function float16(h: number): number {
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  const v = e === 0 ? m * 2 ** -24 : e === 31 ? (m ? NaN : Infinity) : (1 + m / 1024) * 2 ** (e - 15);
  return h & 0x8000 ? -v : v;
}

/** The argmax after every position of `ids`, from one run of the whole sequence (no cache, no engine). */
export async function bareArgmaxes(path: string, ids: number[]): Promise<number[]> {
  const data = await bareLogits(path, ids);
  const vocab = data.length / ids.length;
  return ids.map((_, p) => {
    let best = 0;
    for (let v = 1; v < vocab; v++) if (data[p * vocab + v]! > data[p * vocab + best]!) best = v;
    return best;
  });
}

/** The fp32 logits `[ids.length × vocab]` of one run of the whole sequence (no cache, no engine). */
export async function bareLogits(path: string, ids: number[]): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(path);
  try {
    const feeds: Record<string, ort.Tensor> = {};
    for (const m of session.inputMetadata) {
      const meta = m as { name: string; type: string; shape: readonly (number | string)[] };
      const seq = (values: number[]) => new ort.Tensor('int64', BigInt64Array.from(values, BigInt), [1, values.length]);
      if (meta.name === 'input_ids') feeds[meta.name] = seq(ids);
      else if (meta.name === 'attention_mask') feeds[meta.name] = seq(ids.map(() => 1));
      else if (meta.name === 'position_ids') feeds[meta.name] = seq(ids.map((_, i) => i));
      else feeds[meta.name] = new ort.Tensor('float32', new Float32Array(0), [1, meta.shape[1] as number, 0, meta.shape[3] as number]);
    }
    return (await session.run(feeds)).logits!.data as Float32Array;
  } finally {
    await session.release();
  }
}

/**
 * The next past of a bare loop from a run's outputs: a joined graph's presents (`present.{i}`, and a hybrid's
 * recurrent `present_{kind}.{i}`) as they are; a graph of new keys and values (`new_key_values.{i}`) appended to the past
 * along its positions, as its caller must.
 */
export function pastAfter(past: Record<string, ort.Tensor>, outputs: ort.InferenceSession.OnnxValueMapType): Record<string, ort.Tensor> {
  const next: Record<string, ort.Tensor> = {};
  for (const [name, t] of Object.entries(outputs)) {
    if (name.startsWith('present.')) next[name.replace('present.', 'past_key_values.')] = t;
    if (/^present_(conv|ssm|recurrent)\./.test(name)) next[name.replace('present_', 'past_')] = t;
    if (name.startsWith('new_key_values.')) {
      const key = name.replace('new_key_values.', 'past_key_values.');
      next[key] = joinPositions(past[key]!, t);
    }
  }
  return next;
}

/** `[B, H, L, D]` and `[B, H, S, D]` of one type joined into `[B, H, L + S, D]`. */
function joinPositions(a: ort.Tensor, b: ort.Tensor): ort.Tensor {
  const [B, H, L, D] = a.dims as number[];
  const S = b.dims[2]!;
  const [x, y] = [a.data as Float32Array | Uint16Array, b.data as Float32Array | Uint16Array];
  const out = new (x.constructor as Float32ArrayConstructor | Uint16ArrayConstructor)(B! * H! * (L! + S) * D!);
  for (let bh = 0; bh < B! * H!; bh++) {
    out.set(x.subarray(bh * L! * D!, (bh + 1) * L! * D!), bh * (L! + S) * D!);
    out.set(y.subarray(bh * S * D!, (bh + 1) * S * D!), (bh * (L! + S) + L!) * D!);
  }
  return new ort.Tensor(a.type, out, [B!, H!, L! + S, D!]);
}
