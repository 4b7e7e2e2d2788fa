import { expect } from 'chai';
import { join } from 'node:path';
import { Engine } from '../src/engine.js';
import { buildLlamaModel, randomLlamaWeights } from '../src/onnx/llama-builder.js';
import { DataType, makeNode, makeTensor, onnx, writeModel, type ModelProto, type NodeProto } from '../src/onnx/proto.js';
import { detectSignature, describeSignature, rowsShareRuns, UnsupportedModelError, type ValueMetadata } from '../src/onnx/signature.js';
import { cacheDir, smallConfig, testDir } from './support/models.js';

/**
 * Graphs whose rows cannot share a run, as found in the wild: one without an `attention_mask` input (its mask made
 * inside as all ones), and a static `torch.onnx.export` whose inputs fix the batch dim at 1. Both compute, for one
 * row, what the builder's graph computes; in the continuous batch each row must still get what it gets alone.
 */

const PROMPTS = [
  [5, 17, 3, 44, 9, 61, 22, 8, 71, 30, 12, 55, 19],
  [12, 80],
  [40, 2, 66, 91, 7],
];
const STEPS = 16;

const fresh = () => buildLlamaModel(smallConfig, randomLlamaWeights(smallConfig, 13, 0.08)) as ModelProto;

/** Drops the `attention_mask` input: the graph makes it itself, ones of `[batch, past + seq]` (as the auditor's export did). */
function withoutMask(model: ModelProto): ModelProto {
  const graph = model.graph!;
  graph.input = graph.input!.filter((i) => i.name !== 'attention_mask');
  const i64 = (name: string, v: number) => makeTensor(name, DataType.INT64, [1], BigInt64Array.of(BigInt(v)));
  graph.initializer!.push(i64('nm_0', 0), i64('nm_1', 1), i64('nm_2', 2));
  const one = { name: 'nm_one', dataType: DataType.INT64, dims: [1], rawData: new Uint8Array(BigInt64Array.of(1n).buffer) };
  graph.node!.unshift(
    ...([
      makeNode('Shape', ['input_ids'], ['nm_ids_shape']),
      makeNode('Shape', ['past_key_values.0.key'], ['nm_past_shape']),
      makeNode('Gather', ['nm_ids_shape', 'nm_0'], ['nm_rows'], { axis: 0 }),
      makeNode('Gather', ['nm_ids_shape', 'nm_1'], ['nm_seq'], { axis: 0 }),
      makeNode('Gather', ['nm_past_shape', 'nm_2'], ['nm_past'], { axis: 0 }),
      makeNode('Add', ['nm_seq', 'nm_past'], ['nm_total']),
      makeNode('Concat', ['nm_rows', 'nm_total'], ['nm_shape'], { axis: 0 }),
      { opType: 'ConstantOfShape', input: ['nm_shape'], output: ['attention_mask'], name: 'nm_mask', attribute: [{ name: 'value', type: onnx.AttributeProto.AttributeType.TENSOR, t: one }] },
    ] as NodeProto[]),
  );
  return model;
}

/** Fixes dim `axis` of the named inputs (every input with a symbolic dim there when none are named) at `value`. */
function fixDim(model: ModelProto, axis: number, value: number, names?: string[]): ModelProto {
  for (const input of model.graph!.input!) {
    const dims = input.type!.tensorType!.shape!.dim!;
    if (names ? names.includes(input.name!) : dims[axis]?.dimParam) dims[axis] = { dimValue: value };
  }
  return model;
}

async function write(dir: string, name: string, model: ModelProto): Promise<string> {
  const path = join(dir, `${name}.onnx`);
  await writeModel(path, model);
  return path;
}

/** Each prompt's greedy ids. */
const greedy = async (engine: Engine, prompts: number[][]) => (await engine.generate({ promptIds: prompts }, { maxTokens: STEPS, temperature: 0 })).rows.map((r) => r.ids);

describe('graphs whose rows cannot share a run (no attention_mask, a batch fixed at one row)', function () {
  this.timeout(120_000);
  let reference: number[][];
  const engines: Engine[] = [];
  let dir: string;

  before(async () => {
    dir = testDir('lone-row-graphs');
    const masked = await Engine.load({ model: await write(dir, 'masked', fresh()), cacheDir });
    engines.push(masked);
    reference = [];
    for (const p of PROMPTS) reference.push(...(await greedy(masked, [p])));
    // (prompts whose tokens differ, so that a row reading another's padding or tokens shows)
    expect(new Set(reference.map(String)).size).to.equal(PROMPTS.length);
  });

  after(() => Promise.all(engines.map((e) => e.dispose())));

  for (const [kind, make] of [
    ['without an attention_mask input', () => withoutMask(fresh())],
    ['whose inputs fix the batch at one row', () => fixDim(fresh(), 0, 1)],
  ] as const) {
    it(`a graph ${kind}: concurrent greedy calls, and one call of prompts of different lengths, give each prompt what it gives alone`, async () => {
      const engine = await Engine.load({ model: await write(dir, kind.replace(/\W+/g, '-'), make()), cacheDir });
      engines.push(engine);
      const alone = [];
      for (const p of PROMPTS) alone.push(...(await greedy(engine, [p])));
      expect(alone, 'alone, as the graph with a mask').to.deep.equal(reference);
      const together = await Promise.all(PROMPTS.map(async (p) => (await greedy(engine, [p]))[0]!));
      expect(together, 'concurrent calls').to.deep.equal(reference);
      expect(await greedy(engine, PROMPTS), 'one call of several prompts').to.deep.equal(reference);
      // A traced call runs in the session's own loop, which runs a call's prompts together: one prompt only.
      const [traced] = (await engine.generate({ promptIds: PROMPTS[0]! }, { maxTokens: STEPS, temperature: 0, trace: 1 })).rows;
      expect(traced!.ids).to.deep.equal(reference[0]);
      const refused = await engine.generate({ promptIds: PROMPTS }, { maxTokens: STEPS, trace: 1 }).then(
        () => undefined,
        (err: Error) => err,
      );
      expect(refused?.name).to.equal('GenerateOptionsError');
      expect(refused?.message).to.match(/traced call runs its prompts together/).and.match(/trace one prompt a call/);
    });
  }

  it('a call of several prompts to a reasoner in a lane runs in the batch when the backbone takes no mask (not in the lanes\' padded loop)', async () => {
    const reasoner = await write(dir, 'reasoner', buildLlamaModel(smallConfig, randomLlamaWeights(smallConfig, 29, 0.08)) as ModelProto);
    const load = async (model: ModelProto, name: string) => {
      const engine = await Engine.load({ model: await write(dir, name, model), reasoners: [{ model: reasoner, weight: 0.5 }], placement: 'lanes', cacheDir });
      engines.push(engine);
      return engine;
    };
    const masked = await load(fresh(), 'masked-lanes');
    const expected = [];
    for (const p of PROMPTS) expected.push(...(await greedy(masked, [p])));
    expect(await greedy(await load(withoutMask(fresh()), 'unmasked-lanes'), PROMPTS)).to.deep.equal(expected);
  });

  it('a graph whose input_ids take a fixed sequence length is refused at load, naming it', async () => {
    const path = await write(dir, 'fixed-seq', fixDim(fresh(), 1, 1, ['input_ids', 'position_ids']));
    const err = await Engine.load({ model: path, cacheDir }).then(
      (engine) => {
        engines.push(engine);
        return undefined;
      },
      (e: Error) => e,
    );
    expect(err?.name).to.equal('UnsupportedModelError');
    expect(err?.message).to.match(/input `input_ids` has shape \[batch_size, 1\]: a fixed sequence length of 1 token a run/).and.match(/dynamic sequence length/);
  });
});

describe('detectSignature: fixed dims of static exports', () => {
  const t = (name: string, type: string, shape: (string | number)[]): ValueMetadata => ({ name, isTensor: true, type, shape });
  const meta = (rows: string | number, o: { mask?: boolean; kvOut?: string } = {}) => ({
    inputs: [
      t('input_ids', 'int64', [rows, 'sequence_length']),
      ...(o.mask === false ? [] : [t('attention_mask', 'int64', [rows, 'total_sequence_length'])]),
      t('use_cache_branch', 'bool', [1]),
      t('past_key_values.0.key', 'float32', [rows, 2, 'past_sequence_length', 8]),
      t('past_key_values.0.value', 'float32', [rows, 2, 'past_sequence_length', 8]),
    ],
    outputs: [
      t('logits', 'float32', [rows, 'sequence_length', 100]),
      t(`${o.kvOut ?? 'present'}.0.key`, 'float32', [rows, 2, 'total_sequence_length', 8]),
      t(`${o.kvOut ?? 'present'}.0.value`, 'float32', [rows, 2, 'total_sequence_length', 8]),
    ],
  });

  it('records a batch fixed at one row (use_cache_branch\'s [1] is no batch); rows of such a graph, or one without a mask, share no run', () => {
    const dynamic = detectSignature(meta('batch_size').inputs, meta('batch_size').outputs, 'x.onnx');
    expect(dynamic.fixedBatch).to.equal(undefined);
    expect(rowsShareRuns(dynamic)).to.equal(true);
    const one = detectSignature(meta(1).inputs, meta(1).outputs, 'x.onnx');
    expect(one.fixedBatch).to.equal(1);
    expect(describeSignature(one).fixedBatch).to.equal(1);
    expect(rowsShareRuns(one)).to.equal(false);
    const unmasked = meta('batch_size', { mask: false });
    expect(rowsShareRuns(detectSignature(unmasked.inputs, unmasked.outputs, 'x.onnx'))).to.equal(false);
  });

  it('refuses another fixed batch, and new keys and values without a mask to hide the room they are written into', () => {
    const refusal = (m: { inputs: ValueMetadata[]; outputs: ValueMetadata[] }) => {
      try {
        detectSignature(m.inputs, m.outputs, 'x.onnx');
      } catch (err) {
        expect(err).to.be.instanceOf(UnsupportedModelError);
        return (err as Error).message;
      }
      throw new Error('expected a refusal');
    };
    expect(refusal(meta(4))).to.match(/^x\.onnx: input `input_ids` has shape \[4, sequence_length\]: a fixed batch of 4 rows a run, which is not supported/);
    expect(refusal(meta('batch_size', { mask: false, kvOut: 'new_key_values' }))).to.match(/new_key_values.*no `attention_mask`/);
    expect(() => detectSignature(meta('batch_size', { kvOut: 'new_key_values' }).inputs, meta('batch_size', { kvOut: 'new_key_values' }).outputs, 'x.onnx')).not.to.throw();
  });
});
