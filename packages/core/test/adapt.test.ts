import { expect } from 'chai';
import * as ort from 'onnxruntime-node';
import { mkdir, mkdtemp, open, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { models } from '../../../test/support/paths.js';
import { adaptDecoder, modelValueMetadata, usesExternalData } from '../src/onnx/adapt.js';
import { prepareDecoder, preparedCacheStats, type PreparedDecoder } from '../src/onnx/prepared-cache.js';
import { DataType, OnnxFormatError, encodeModel, makeNode, makeTensor, makeValueInfo, readModel, type ModelProto } from '../src/onnx/proto.js';
import { detectSignature, UnsupportedModelError, type DecoderSignature } from '../src/onnx/signature.js';
import { buildLlamaModel, randomLlamaWeights, writeLlamaModel, type LlamaBuildOptions } from '../src/onnx/llama-builder.js';
import { float16ToFloat32, float32ArrayToFloat16 } from '../src/onnx/graph-builder.js';
import type { LlamaConfig, LlamaWeights } from '../src/onnx/llama-spec.js';

const GENAI_DIR = models.llamaFp16;
const GENAI = join(GENAI_DIR, 'model.onnx');
const ALL = { lastLogitsOnly: true, logitsFloat32: true, hiddenState: true, inputsEmbeds: true };

// ---------------------------------------------------------------------------------------------------------------
// helpers

type Feeds = Record<string, ort.Tensor>;

function ids(type: 'int64' | 'int32', values: number[], dims: number[]): ort.Tensor {
  return type === 'int32' ? new ort.Tensor('int32', Int32Array.from(values), dims) : new ort.Tensor('int64', BigInt64Array.from(values, BigInt), dims);
}

function floats(type: 'float32' | 'float16', values: Float32Array | Uint16Array, dims: number[]): ort.Tensor {
  if (type === 'float16') return new ort.Tensor('float16', values instanceof Uint16Array ? values : float32ArrayToFloat16(values), dims);
  return new ort.Tensor('float32', values as Float32Array, dims);
}

function toF32(t: ort.Tensor): Float32Array {
  if (t.type === 'float32') return t.data as Float32Array;
  if (t.type !== 'float16') throw new Error(`unexpected ${t.type}`);
  return Float32Array.from(t.data as Uint16Array, float16ToFloat32);
}

/** Row `r`'s last position of `[rows, seq, width]`. */
function lastOf(t: ort.Tensor, r: number): Float32Array {
  const [rows, seq, width] = t.dims.map(Number) as [number, number, number];
  expect(r).to.be.lessThan(rows);
  const all = toF32(t);
  return all.slice((r * seq + seq - 1) * width, (r * seq + seq) * width);
}

function expectClose(actual: Float32Array, expected: Float32Array, rel: number, what: string): void {
  expect(actual.length, `${what}: length`).to.equal(expected.length);
  let scale = 0;
  let diff = 0;
  for (let i = 0; i < expected.length; i++) {
    scale = Math.max(scale, Math.abs(expected[i]!));
    diff = Math.max(diff, Math.abs(actual[i]! - expected[i]!));
  }
  expect(scale, `${what}: reference is all zeros`).to.be.greaterThan(0);
  expect(diff / scale, `${what}: max |diff| ${diff} vs max |ref| ${scale}`).to.be.lessThan(rel);
}

async function session(p: PreparedDecoder | string): Promise<ort.InferenceSession> {
  if (typeof p === 'string') return ort.InferenceSession.create(p);
  if (p.externalDataDir) {
    return ort.InferenceSession.create(await readFile(p.preparedPath), {
      extra: { session: { model_external_initializers_file_folder_path: p.externalDataDir } },
    });
  }
  return ort.InferenceSession.create(p.preparedPath);
}

function signatureOf(s: ort.InferenceSession): DecoderSignature {
  return detectSignature(s.inputMetadata, s.outputMetadata, 'test');
}

interface RunArgs {
  /** Token ids per row (all rows the same length). */
  tokens: number[][];
  /** Embeddings per row, row-major `[embedsLength, hidden]` (for prepared graphs with inputs_embeds). */
  embeds?: Float32Array[] | Uint16Array[];
  embedsLength?: number;
  past?: Feeds;
  pastLength?: number;
  /** Positions with logits, for a graph that takes `num_logits_to_keep` (default 1; 0: every position). */
  keep?: number;
}

/** Runs one forward pass, feeding whatever the signature asks for; returns outputs and the next past. */
async function forward(s: ort.InferenceSession, a: RunArgs): Promise<{ out: ort.InferenceSession.ReturnType; past: Feeds }> {
  const sig = signatureOf(s);
  const rows = a.tokens.length;
  const sIds = a.tokens[0]!.length;
  const e = a.embedsLength ?? 0;
  const pastLength = a.pastLength ?? 0;
  const total = pastLength + sIds + e;
  const feeds: Feeds = { [sig.inputIds.name]: ids(sig.inputIds.type, a.tokens.flat(), [rows, sIds]) };
  if (sig.inputsEmbeds) {
    const h = sig.inputsEmbeds.hiddenSize;
    const data = sig.inputsEmbeds.type === 'float16' ? new Uint16Array(rows * e * h) : new Float32Array(rows * e * h);
    (a.embeds ?? []).forEach((rowData, r) => {
      const v = sig.inputsEmbeds!.type === 'float16' && rowData instanceof Float32Array ? float32ArrayToFloat16(rowData) : rowData;
      (data as Uint16Array).set(v as Uint16Array, r * e * h);
    });
    feeds[sig.inputsEmbeds.name] = new ort.Tensor(sig.inputsEmbeds.type, data, [rows, e, h]);
  } else {
    expect(e, 'graph has no inputs_embeds').to.equal(0);
  }
  if (sig.attentionMask) feeds[sig.attentionMask.name] = ids(sig.attentionMask.type, new Array(rows * total).fill(1), [rows, total]);
  if (sig.positionIds) {
    const pos: number[] = [];
    for (let r = 0; r < rows; r++) for (let i = pastLength; i < total; i++) pos.push(i);
    feeds[sig.positionIds.name] = ids(sig.positionIds.type, pos, [rows, sIds + e]);
  }
  for (const kv of sig.kv) {
    for (const name of [kv.pastKey, kv.pastValue]) {
      feeds[name] = a.past?.[name] ?? floats(sig.kvType, sig.kvType === 'float16' ? new Uint16Array(0) : new Float32Array(0), [rows, sig.kvHeads, 0, sig.headDim]);
    }
  }
  if (sig.useCacheBranch) feeds[sig.useCacheBranch] = new ort.Tensor('bool', [pastLength > 0], [1]);
  if (sig.numLogitsToKeep) feeds[sig.numLogitsToKeep.name] = ids(sig.numLogitsToKeep.type, [a.keep ?? 1], []);
  const out = await s.run(feeds);
  const past: Feeds = {};
  for (const kv of sig.kv) {
    past[kv.pastKey] = out[kv.presentKey] as ort.Tensor;
    past[kv.pastValue] = out[kv.presentValue] as ort.Tensor;
  }
  return { out, past };
}

/** Reads an external initializer's bytes from the genai model's data file. */
async function externalTensor(modelPath: string, name: string): Promise<{ dims: number[]; data: Uint16Array }> {
  const model = await readModel(modelPath);
  const t = model.graph!.initializer!.find((x) => x.name === name)!;
  const entry = (k: string) => t.externalData!.find((e) => e.key === k)?.value ?? '';
  const file = await open(join(dirname(modelPath), entry('location')), 'r');
  try {
    const length = Number(entry('length'));
    const buf = Buffer.alloc(length);
    await file.read(buf, 0, length, Number(entry('offset') || 0));
    expect(t.dataType).to.equal(DataType.FLOAT16);
    return { dims: t.dims!.map(Number), data: new Uint16Array(buf.buffer, buf.byteOffset, length / 2) };
  } finally {
    await file.close();
  }
}

/** `hidden [H] · W` where W is row-major `[H, V]` (fp16 bits or f32). */
function project(hidden: Float32Array, w: Float32Array, h: number, v: number): Float32Array {
  const out = new Float32Array(v);
  for (let i = 0; i < h; i++) {
    const x = hidden[i]!;
    for (let j = 0; j < v; j++) out[j]! += x * w[i * v + j]!;
  }
  return out;
}

function roundF16(a: Float32Array): Float32Array {
  return Float32Array.from(float32ArrayToFloat16(a), float16ToFloat32);
}

// A tiny hand-written graph: ids → Gather(E) → MatMul(W) → (Add of a per-token bias from a second Gather) → logits.
function syntheticModel(o: { tokenBias?: boolean; idsIntoHidden?: boolean; noLogits?: boolean } = {}): ModelProto {
  const V = 8;
  const H = 4;
  const E = Float32Array.from({ length: V * H }, (_, i) => Math.sin(i + 1));
  const W = Float32Array.from({ length: H * V }, (_, i) => Math.cos(i * 0.7));
  const C = Float32Array.from({ length: V * V }, (_, i) => (i % 5) * 0.1);
  const nodes = [makeNode('Gather', ['E', 'input_ids'], ['h'], { axis: 0 })];
  let h = 'h';
  if (o.idsIntoHidden) {
    nodes.push(
      makeNode('Cast', ['input_ids'], ['ids_f'], { to: DataType.FLOAT }),
      makeNode('Unsqueeze', ['ids_f', 'axes2'], ['ids_f3']),
      makeNode('Add', ['h', 'ids_f3'], ['h2']),
    );
    h = 'h2';
  }
  const out = o.noLogits ? 'scores' : 'logits';
  if (o.tokenBias) {
    nodes.push(makeNode('MatMul', [h, 'W'], ['proj']), makeNode('Gather', ['C', 'input_ids'], ['bias'], { axis: 0 }), makeNode('Add', ['proj', 'bias'], [out]));
  } else {
    nodes.push(makeNode('MatMul', [h, 'W'], [out]));
  }
  return {
    irVersion: 8,
    opsetImport: [{ domain: '', version: 17 }],
    graph: {
      name: 'synthetic',
      node: nodes,
      initializer: [
        makeTensor('E', DataType.FLOAT, [V, H], E),
        makeTensor('W', DataType.FLOAT, [H, V], W),
        ...(o.tokenBias ? [makeTensor('C', DataType.FLOAT, [V, V], C)] : []),
        ...(o.idsIntoHidden ? [makeTensor('axes2', DataType.INT64, [1], BigInt64Array.from([2n]))] : []),
      ],
      input: [makeValueInfo('input_ids', DataType.INT64, ['batch_size', 'sequence_length'])],
      output: [makeValueInfo(out, DataType.FLOAT, ['batch_size', 'sequence_length', V])],
    },
  } as ModelProto;
}

function expectThrows(fn: () => unknown, type: new (...a: never[]) => Error, ...patterns: RegExp[]): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught, `expected ${type.name}`).to.be.instanceOf(type);
  for (const p of patterns) expect((caught as Error).message).to.match(p);
}

async function expectRejects(p: Promise<unknown>, type: new (...a: never[]) => Error, ...patterns: RegExp[]): Promise<void> {
  let caught: unknown;
  try {
    await p;
  } catch (err) {
    caught = err;
  }
  expect(caught, `expected ${type.name}`).to.be.instanceOf(type);
  for (const pattern of patterns) expect((caught as Error).message).to.match(pattern);
}

// ---------------------------------------------------------------------------------------------------------------

describe('adaptDecoder / prepareDecoder', function () {
  this.timeout(120_000);
  let dir: string;
  let cacheDir: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rp-adapt-'));
    cacheDir = join(dir, 'cache');
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  describe('onnxruntime-genai fp16 export (external data, contrib ops)', () => {
    const prompt = [1, 15043, 3186, 22, 30016];
    let original: ort.InferenceSession;
    let reference: Float32Array;

    before(async () => {
      original = await session(GENAI);
      const { out } = await forward(original, { tokens: [prompt] });
      expect((out.logits as ort.Tensor).dims).to.deep.equal([1, 5, 32000]);
      reference = lastOf(out.logits as ort.Tensor, 0);
    });
    after(async () => {
      await original.release();
    });

    it('prepares last-position fp32 logits equal to the original last position', async () => {
      const p = await prepareDecoder(GENAI, { lastLogitsOnly: true, logitsFloat32: true, cacheDir });
      expect(p.sourcePath).to.equal(GENAI);
      expect(dirname(p.preparedPath)).to.equal(cacheDir);
      expect(p.externalDataDir).to.equal(GENAI_DIR);
      expect(p.digest).to.match(/^sha256:[0-9a-f]{64}$/);
      expect(p.notes.join('\n')).to.match(/LM head now runs on the last `num_logits_to_keep` positions.*lm_head/);
      const s = await session(p);
      try {
        const sig = signatureOf(s);
        expect(sig.logits).to.deep.equal({ name: 'logits', type: 'float32', vocabSize: 32000 });
        expect(sig).to.include({ kvType: 'float16', kvHeads: 1, headDim: 16 });
        const { out } = await forward(s, { tokens: [prompt] });
        const logits = out.logits as ort.Tensor;
        expect(logits.dims).to.deep.equal([1, 1, 32000]);
        expect(logits.type).to.equal('float32');
        expectClose(logits.data as Float32Array, reference, 1e-3, 'prepared vs original logits');
      } finally {
        await s.release();
      }
    });

    it('exposes the hidden state: hidden · lm_head == logits', async () => {
      const p = await prepareDecoder(GENAI, { lastLogitsOnly: true, logitsFloat32: true, hiddenState: true, cacheDir });
      const s = await session(p);
      try {
        expect(signatureOf(s).hiddenState).to.deep.equal({ name: 'last_hidden_state', type: 'float16', hiddenSize: 16 });
        const { out } = await forward(s, { tokens: [prompt] });
        const hidden = out.last_hidden_state as ort.Tensor;
        expect(hidden.dims).to.deep.equal([1, 1, 16]);
        const w = await externalTensor(GENAI, 'lm_head.MatMul.weight');
        expect(w.dims).to.deep.equal([16, 32000]);
        const mine = project(toF32(hidden), Float32Array.from(w.data, float16ToFloat32), 16, 32000);
        expectClose(out.logits!.data as Float32Array, mine, 2e-3, 'logits vs hidden · W');
        expectClose(out.logits!.data as Float32Array, reference, 1e-3, 'logits vs original');
      } finally {
        await s.release();
      }
    });

    it('accepts inputs_embeds (embedding rows == ids), also with a KV cache afterwards', async () => {
      const p = await prepareDecoder(GENAI, { lastLogitsOnly: true, logitsFloat32: true, inputsEmbeds: true, cacheDir });
      expect(p.notes.join('\n')).to.match(/2 Shape reads rewritten/);
      const table = await externalTensor(GENAI, 'model.embed_tokens.weight');
      const rowsOf = (tokens: number[]) => {
        const out = new Uint16Array(tokens.length * 16);
        tokens.forEach((t, i) => out.set(table.data.subarray(t * 16, (t + 1) * 16), i * 16));
        return out;
      };
      const s = await session(p);
      try {
        expect(signatureOf(s).inputsEmbeds).to.deep.equal({ name: 'inputs_embeds', type: 'float16', hiddenSize: 16 });
        // ids for the first two tokens, embedding rows for the other three
        const mixed = await forward(s, { tokens: [prompt.slice(0, 2)], embeds: [rowsOf(prompt.slice(2))], embedsLength: 3 });
        expectClose(mixed.out.logits!.data as Float32Array, reference, 1e-3, 'ids + embeds');
        // embeddings only
        const only = await forward(s, { tokens: [[]], embeds: [rowsOf(prompt)], embedsLength: 5 });
        expectClose(only.out.logits!.data as Float32Array, reference, 1e-3, 'embeds only');
        // one more token by id, on the cache filled from embeddings
        const step = await forward(s, { tokens: [[7356]], past: mixed.past, pastLength: 5 });
        const full = await forward(original, { tokens: [[...prompt, 7356]] });
        expectClose(step.out.logits!.data as Float32Array, lastOf(full.out.logits as ort.Tensor, 0), 2e-3, 'step after embeds');
      } finally {
        await s.release();
      }
    });

    it('returns the cached graph on a second call without parsing the model again', async () => {
      const opts = { lastLogitsOnly: true, logitsFloat32: true, cacheDir };
      const first = await prepareDecoder(GENAI, opts);
      const mtime = (await stat(first.preparedPath)).mtimeMs;
      const parses = preparedCacheStats.parses;
      const hits = preparedCacheStats.hits;
      const second = await prepareDecoder(GENAI, opts);
      expect(second).to.deep.equal(first);
      expect(preparedCacheStats.parses).to.equal(parses);
      expect(preparedCacheStats.hits).to.equal(hits + 1);
      expect((await stat(second.preparedPath)).mtimeMs).to.equal(mtime);
      const other = await prepareDecoder(GENAI, { lastLogitsOnly: true, cacheDir });
      expect(other.preparedPath).not.to.equal(first.preparedPath);
      expect(other.digest).to.equal(first.digest);
    });
  });

  describe('builder models', () => {
    const variants: { name: string; config: LlamaConfig; build: LlamaBuildOptions & { externalData?: boolean } }[] = [
      {
        name: 'fp32, int64, position_ids, external data',
        config: { vocabSize: 96, hiddenSize: 32, numLayers: 2, numHeads: 4, intermediateSize: 48 },
        build: { externalData: true },
      },
      {
        name: 'fp16, int32, positions from the mask, GQA',
        config: { vocabSize: 80, hiddenSize: 32, numLayers: 2, numHeads: 4, numKvHeads: 2, intermediateSize: 40 },
        build: { dtype: 'float16', idsType: 'int32', positionIds: false },
      },
      {
        name: 'merged decoder, fp32, tied embeddings, num_logits_to_keep',
        config: { vocabSize: 72, hiddenSize: 16, numLayers: 2, numHeads: 2, numKvHeads: 1, intermediateSize: 24, tieWordEmbeddings: true },
        build: { mergedDecoder: true, numLogitsToKeep: true },
      },
      {
        name: 'merged decoder, fp16, external data',
        config: { vocabSize: 64, hiddenSize: 16, numLayers: 3, numHeads: 4, intermediateSize: 32, ropeStyle: 'adjacent' },
        build: { mergedDecoder: true, dtype: 'float16', externalData: true },
      },
    ];

    for (const [index, v] of variants.entries()) {
      it(`adapts a ${v.name} decoder`, async () => {
        const weights: LlamaWeights = randomLlamaWeights(v.config, 10 + index, 0.2);
        const path = join(dir, `builder-${index}`, 'model.onnx');
        await mkdir(dirname(path), { recursive: true });
        await writeLlamaModel(path, v.config, weights, v.build);
        const p = await prepareDecoder(path, { ...ALL, cacheDir });
        expect(Boolean(p.externalDataDir)).to.equal(Boolean(v.build.externalData));
        // A graph that takes num_logits_to_keep keeps it (the engine sets it); the others get their head sliced.
        if (v.build.numLogitsToKeep) expect(p.notes.join('\n')).to.match(/takes `num_logits_to_keep`.*left as is/);
        else if (v.build.mergedDecoder) expect(p.notes.join('\n')).to.match(/both branches of If/);
        else expect(p.notes.join('\n')).to.match(/LM head now runs on the last `num_logits_to_keep` positions/);

        const fp16 = v.build.dtype === 'float16';
        const H = v.config.hiddenSize;
        const V = v.config.vocabSize;
        const prompts = [
          [3, 9, 4, 17, 2, 11],
          [5, 1, 60, 8, 13, 7],
        ];
        const original = await session(path);
        const prepared = await session(p);
        try {
          const sig = signatureOf(prepared);
          expect(sig.logits).to.deep.equal({ name: 'logits', type: 'float32', vocabSize: V });
          expect(sig.inputsEmbeds).to.deep.equal({ name: 'inputs_embeds', type: fp16 ? 'float16' : 'float32', hiddenSize: H });
          // The head computes in fp32 in builder graphs, so the exposed hidden state is fp32 there.
          expect(sig.hiddenState).to.deep.equal({ name: 'last_hidden_state', type: 'float32', hiddenSize: H });

          const ref = await forward(original, { tokens: prompts, keep: 0 });
          const got = await forward(prepared, { tokens: prompts });
          const logits = got.out.logits as ort.Tensor;
          const hidden = got.out.last_hidden_state as ort.Tensor;
          expect(logits.dims).to.deep.equal([2, 1, V]);
          expect(hidden.dims).to.deep.equal([2, 1, H]);
          // More positions when asked (drafted tokens are verified so): the original's last ones.
          const three = (await forward(prepared, { tokens: prompts, keep: 3 })).out.logits as ort.Tensor;
          expect(three.dims).to.deep.equal([2, 3, V]);
          const seq = prompts[0]!.length;
          const all = ref.out.logits as ort.Tensor;
          const at = (t: ort.Tensor, row: number, pos: number, width: number) => (t.data as Float32Array).slice((row * width + pos) * V, (row * width + pos + 1) * V);
          // (fp16 originals' logits are compared through lastOf below)
          if (all.type === 'float32') {
            for (let r = 0; r < 2; r++) for (let i = 0; i < 3; i++) expectClose(at(three, r, i, 3), at(all, r, seq - 3 + i, seq), 1e-5, `row ${r} position ${seq - 3 + i}`);
          }
          // lm_head as [H, V] (row-major), rounded like the graph stores it
          const head = weights.lmHead ?? weights.embed; // [V, H]
          const wT = new Float32Array(H * V);
          for (let j = 0; j < V; j++) for (let i = 0; i < H; i++) wT[i * V + j] = head[j * H + i]!;
          const wGraph = fp16 ? roundF16(wT) : wT;
          for (let r = 0; r < 2; r++) {
            const mine = lastOf(logits, r);
            expectClose(mine, lastOf(ref.out.logits as ort.Tensor, r), fp16 ? 2e-3 : 1e-5, `row ${r} logits`);
            const h = lastOf(hidden, r);
            expectClose(mine, project(h, wGraph, H, V), fp16 ? 2e-3 : 1e-5, `row ${r} hidden · lm_head`);
          }

          // inputs_embeds: the last 4 tokens as embedding rows
          const embedRows = (tokens: number[]) => {
            const out = new Float32Array(tokens.length * H);
            tokens.forEach((t, i) => out.set(weights.embed.subarray(t * H, (t + 1) * H), i * H));
            return out;
          };
          const mixed = await forward(prepared, {
            tokens: prompts.map((p) => p.slice(0, 2)),
            embeds: prompts.map((p) => embedRows(p.slice(2))),
            embedsLength: 4,
          });
          for (let r = 0; r < 2; r++) {
            expectClose(lastOf(mixed.out.logits as ort.Tensor, r), lastOf(ref.out.logits as ort.Tensor, r), fp16 ? 2e-3 : 1e-5, `row ${r} ids + embeds`);
          }

          // a decode step on the cache (the with-past branch of merged decoders)
          const next = [[21], [22]];
          const refStep = await forward(original, { tokens: next, past: ref.past, pastLength: 6 });
          const gotStep = await forward(prepared, { tokens: next, past: mixed.past, pastLength: 6 });
          for (let r = 0; r < 2; r++) {
            expectClose(lastOf(gotStep.out.logits as ort.Tensor, r), lastOf(refStep.out.logits as ort.Tensor, r), fp16 ? 2e-3 : 1e-5, `row ${r} step`);
          }
          expect((gotStep.out.last_hidden_state as ort.Tensor).dims).to.deep.equal([2, 1, H]);
        } finally {
          await original.release();
          await prepared.release();
        }
      });
    }

    it('adapts each option alone', async () => {
      const config: LlamaConfig = { vocabSize: 40, hiddenSize: 16, numLayers: 1, numHeads: 2, intermediateSize: 16 };
      const model = buildLlamaModel(config, randomLlamaWeights(config, 3, 0.2), { dtype: 'float16' }) as ModelProto;
      const reference = await ort.InferenceSession.create(encodeModel(model));
      const ref = await forward(reference, { tokens: [[1, 2, 3]] });
      for (const opts of [{ lastLogitsOnly: true }, { logitsFloat32: true }, { hiddenState: true }, { inputsEmbeds: true }]) {
        const { model: adapted, notes } = adaptDecoder(model, opts, 'builder');
        expect(notes).to.have.length(1);
        const s = await ort.InferenceSession.create(encodeModel(adapted));
        try {
          const { out } = await forward(s, { tokens: [[1, 2, 3]] });
          const logits = out.logits as ort.Tensor;
          expect(logits.dims).to.deep.equal([1, opts.lastLogitsOnly ? 1 : 3, 40]);
          expect(logits.type).to.equal(opts.logitsFloat32 ? 'float32' : 'float16');
          expectClose(lastOf(logits, 0), lastOf(ref.out.logits as ort.Tensor, 0), 1e-3, JSON.stringify(opts));
          if (opts.hiddenState) expect((out.last_hidden_state as ort.Tensor).dims).to.deep.equal([1, 3, 16]);
        } finally {
          await s.release();
        }
      }
      await reference.release();
    });

    it('does not modify the model it is given', () => {
      const config: LlamaConfig = { vocabSize: 40, hiddenSize: 16, numLayers: 1, numHeads: 2, intermediateSize: 16 };
      const model = buildLlamaModel(config, randomLlamaWeights(config, 4), { mergedDecoder: true }) as ModelProto;
      const before = Buffer.from(encodeModel(model));
      adaptDecoder(model, ALL, 'builder');
      expect(Buffer.from(encodeModel(model)).equals(before)).to.equal(true);
    });
  });

  describe('fallbacks and refusals', () => {
    it('slices the logits output when the LM head cannot be isolated', async () => {
      const model = syntheticModel({ tokenBias: true });
      const { model: adapted, notes } = adaptDecoder(model, { lastLogitsOnly: true }, 'synthetic');
      expect(notes.join('\n')).to.match(/sliced the `logits` output to the last `num_logits_to_keep` positions/);
      expect(notes.join('\n')).to.match(/adds a computed value to the head's output/);
      const ref = await ort.InferenceSession.create(encodeModel(model));
      const s = await ort.InferenceSession.create(encodeModel(adapted));
      const feeds = { input_ids: ids('int64', [1, 2, 3, 7, 5, 0], [2, 3]) };
      const a = (await ref.run(feeds)).logits as ort.Tensor;
      const b = (await s.run({ ...feeds, num_logits_to_keep: ids('int64', [1], []) })).logits as ort.Tensor;
      expect(b.dims).to.deep.equal([2, 1, 8]);
      for (let r = 0; r < 2; r++) expectClose(lastOf(b, r), lastOf(a, r), 1e-6, `row ${r}`);
      const two = (await s.run({ ...feeds, num_logits_to_keep: ids('int64', [2], []) })).logits as ort.Tensor;
      expect(two.dims).to.deep.equal([2, 2, 8]);
      expectClose((two.data as Float32Array).slice(0, 16), (a.data as Float32Array).slice(8, 24), 1e-6, 'row 0, last two positions');
      await ref.release();
      await s.release();
      // The head is still found behind the bias, so its input can be exposed as the hidden state.
      const withHidden = adaptDecoder(model, { hiddenState: true }, 'synthetic');
      expect(withHidden.notes.join('\n')).to.match(/hiddenState: added output `last_hidden_state`/);
    });

    it('adapts a graph whose LM head reads the embedding directly', async () => {
      const model = syntheticModel();
      const { model: adapted } = adaptDecoder(model, ALL, 'synthetic');
      const ref = await ort.InferenceSession.create(encodeModel(model));
      const s = await ort.InferenceSession.create(encodeModel(adapted));
      const a = (await ref.run({ input_ids: ids('int64', [1, 2, 3, 7, 5, 0], [2, 3]) })).logits as ort.Tensor;
      // row r: ids [first], embeddings of the other two tokens
      const E = Float32Array.from({ length: 32 }, (_, i) => Math.sin(i + 1));
      const rows = [[2, 3], [5, 0]].flatMap((pair) => pair.flatMap((t) => Array.from(E.subarray(t * 4, t * 4 + 4))));
      const out = await s.run({
        input_ids: ids('int64', [1, 7], [2, 1]),
        inputs_embeds: new ort.Tensor('float32', Float32Array.from(rows), [2, 2, 4]),
        num_logits_to_keep: ids('int64', [1], []),
      });
      const b = out.logits as ort.Tensor;
      expect(b.dims).to.deep.equal([2, 1, 8]);
      expect((out.last_hidden_state as ort.Tensor).dims).to.deep.equal([2, 1, 4]);
      for (let r = 0; r < 2; r++) {
        expectClose(lastOf(b, r), lastOf(a, r), 1e-6, `row ${r}`);
        expectClose(lastOf(out.last_hidden_state as ort.Tensor, r), E.slice([3, 0][r]! * 4, [3, 0][r]! * 4 + 4), 1e-6, `hidden ${r}`);
      }
      await ref.release();
      await s.release();
    });

    it('refuses inputs_embeds when input_ids is read by other ops', () => {
      expectThrows(
        () => adaptDecoder(syntheticModel({ idsIntoHidden: true }), { inputsEmbeds: true }, 'odd.onnx'),
        UnsupportedModelError,
        /odd\.onnx: inputs_embeds adaptation is not possible/,
        /Unsqueeze/,
      );
      // the plain synthetic graph is fine
      const { notes } = adaptDecoder(syntheticModel(), { inputsEmbeds: true }, 'plain.onnx');
      expect(notes.join('\n')).to.match(/added input `inputs_embeds` float32\[batch, embeds_length, 4\]/);
    });

    it('refuses a model without logits', async () => {
      expectThrows(() => adaptDecoder(syntheticModel({ noLogits: true }), { lastLogitsOnly: true }, 'scores.onnx'), UnsupportedModelError, /scores\.onnx: has no `logits` output/, /scores/);
      const config: LlamaConfig = { vocabSize: 40, hiddenSize: 16, numLayers: 1, numHeads: 2, intermediateSize: 16 };
      const model = buildLlamaModel(config, randomLlamaWeights(config, 7), {}) as ModelProto;
      model.graph!.output = model.graph!.output!.filter((o) => o.name !== 'logits');
      expectThrows(() => adaptDecoder(model, { lastLogitsOnly: true }, 'nologits.onnx'), UnsupportedModelError, /nologits\.onnx: has no `logits` output/);
      const path = join(dir, 'nologits.onnx');
      await writeFile(path, encodeModel(model));
      await expectRejects(prepareDecoder(path, { lastLogitsOnly: true, cacheDir }), UnsupportedModelError, /nologits\.onnx/, /no `logits` output/);
    });

    it('refuses the legacy stacked past_N layout before adapting it', async () => {
      const legacy = join(models.gpt2Legacy, 'past.onnx');
      await expectRejects(prepareDecoder(legacy, { ...ALL, cacheDir }), UnsupportedModelError, /past\.onnx/, /stacked/, /`past_N`/);
    });

    it('reads the same I/O metadata from the protobuf as onnxruntime reports', async () => {
      for (const path of [GENAI, join(models.gpt2Legacy, 'past.onnx')]) {
        const s = await ort.InferenceSession.create(path);
        const io = modelValueMetadata(await readModel(path));
        expect(io.inputs).to.deep.equal(s.inputMetadata);
        expect(io.outputs).to.deep.equal(s.outputMetadata);
        await s.release();
      }
    });

    it('reports missing, empty, random and truncated files as OnnxFormatError', async () => {
      await expectRejects(prepareDecoder(join(dir, 'nope.onnx'), { lastLogitsOnly: true, cacheDir }), OnnxFormatError, /not found/, /nope\.onnx/);
      const empty = join(dir, 'empty.onnx');
      await writeFile(empty, new Uint8Array(0));
      await expectRejects(prepareDecoder(empty, { lastLogitsOnly: true, cacheDir }), OnnxFormatError, /empty/);
      const random = join(dir, 'random.onnx');
      const noise = new Uint8Array(4096);
      for (let i = 0; i < noise.length; i++) noise[i] = (i * 2654435761) >>> 24;
      await writeFile(random, noise);
      await expectRejects(prepareDecoder(random, { lastLogitsOnly: true, cacheDir }), OnnxFormatError, /random\.onnx/);
      const truncated = join(dir, 'truncated.onnx');
      const bytes = await readFile(GENAI);
      await writeFile(truncated, bytes.subarray(0, Math.floor(bytes.length * 0.6)));
      await expectRejects(prepareDecoder(truncated, { lastLogitsOnly: true, cacheDir }), OnnxFormatError, /truncated\.onnx/);
      await expectRejects(prepareDecoder(dir, { lastLogitsOnly: true, cacheDir }), OnnxFormatError, /not a file/);
    });
  });

  describe('the cache', () => {
    it('survives concurrent preparation and leaves no temporary files', async () => {
      const config: LlamaConfig = { vocabSize: 40, hiddenSize: 16, numLayers: 1, numHeads: 2, intermediateSize: 16 };
      const path = join(dir, 'concurrent.onnx');
      await writeLlamaModel(path, config, randomLlamaWeights(config, 5), {});
      const fresh = join(dir, 'cache-concurrent');
      const results = await Promise.all([1, 2, 3].map(() => prepareDecoder(path, { lastLogitsOnly: true, cacheDir: fresh })));
      expect(new Set(results.map((r) => r.preparedPath)).size).to.equal(1);
      const files = await readdir(fresh);
      expect(files.filter((f) => f.endsWith('.tmp'))).to.deep.equal([]);
      expect(files.filter((f) => f.endsWith('.onnx'))).to.have.length(1);
      const s = await session(results[0]!);
      expect(signatureOf(s).logits.vocabSize).to.equal(40);
      await s.release();
    });

    it('defaults to $REASONPLUG_CACHE/prepared and skips work when nothing is asked', async () => {
      const config: LlamaConfig = { vocabSize: 40, hiddenSize: 16, numLayers: 1, numHeads: 2, intermediateSize: 16 };
      const path = join(dir, 'env.onnx');
      await writeLlamaModel(path, config, randomLlamaWeights(config, 6), {});
      const saved = process.env['REASONPLUG_CACHE'];
      process.env['REASONPLUG_CACHE'] = join(dir, 'env-cache');
      try {
        const p = await prepareDecoder(path, { logitsFloat32: true });
        expect(dirname(p.preparedPath)).to.equal(join(dir, 'env-cache', 'prepared'));
        const none = await prepareDecoder(path, {});
        expect(none.preparedPath).to.equal(path);
        expect(none.digest).to.equal(p.digest);
      } finally {
        if (saved === undefined) delete process.env['REASONPLUG_CACHE'];
        else process.env['REASONPLUG_CACHE'] = saved;
      }
    });

    it('detects external data without loading it', async () => {
      expect(usesExternalData(await readModel(GENAI))).to.equal(true);
      expect(usesExternalData(syntheticModel())).to.equal(false);
    });
  });
});
