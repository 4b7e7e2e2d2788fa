/**
 * Real graph edits that give builder models properties of models found in the wild: an LM-head bias (Phi,
 * GPT-NeoX-style heads), a learned-position table that bounds the context (GPT-2 style), and a refusal of runs
 * after a past (onnxruntime-genai mask subgraphs).
 */
import { DataType, makeNode, makeTensor, readModel, writeModel } from '../../src/onnx/proto.js';

/** Adds a constant bias to the logits: `logits = head(x) + bias`, with `bias[id] = value` for the given ids. */
export async function addLogitBias(path: string, vocab: number, bias: Record<number, number>): Promise<void> {
  await appendToLogits(path, 'logit_bias', (name) => {
    const data = new Float32Array(vocab);
    for (const [id, v] of Object.entries(bias)) data[Number(id)] = v;
    return { initializers: [makeTensor(name, DataType.FLOAT, [vocab], data)], operand: name, nodes: [] };
  });
}

/**
 * Adds a zero-valued learned-position lookup to the logits: outputs are unchanged, but any position ≥ `limit`
 * makes the run fail ("indices out of bounds"), like a model used past its context length.
 */
export async function limitContext(path: string, limit: number): Promise<void> {
  await appendToLogits(path, 'position_table', (name) => ({
    initializers: [makeTensor(name, DataType.FLOAT, [limit, 1], new Float32Array(limit))],
    nodes: [makeNode('Gather', [name, 'position_ids'], [`${name}_rows`], { axis: 0 })],
    operand: `${name}_rows`,
  }));
}

/**
 * Makes a model refuse a run of several tokens after a past (the run fails: a one-element tensor reshaped to two),
 * as onnxruntime-genai exports whose mask subgraph takes a whole prompt or one token do; outputs are unchanged.
 */
export async function refuseChunksAfterPast(path: string): Promise<void> {
  await appendToLogits(path, 'chunk_guard', (name) => {
    const int64 = (n: string, values: number[], dims: number[] = []) => makeTensor(n, DataType.INT64, dims, BigInt64Array.from(values, BigInt));
    return {
      initializers: [int64(`${name}_one`, [1]), int64(`${name}_seq_axis`, [1]), int64(`${name}_past_axis`, [2]), int64(`${name}_shape1`, [1], [1]),
        makeTensor(`${name}_zero`, DataType.FLOAT, [1], new Float32Array(1))],
      nodes: [
        makeNode('Shape', ['input_ids'], [`${name}_ids_shape`]),
        makeNode('Gather', [`${name}_ids_shape`, `${name}_seq_axis`], [`${name}_seq`], { axis: 0 }),
        makeNode('Shape', ['past_key_values.0.key'], [`${name}_past_shape`]),
        makeNode('Gather', [`${name}_past_shape`, `${name}_past_axis`], [`${name}_past`], { axis: 0 }),
        // several tokens (seq − 1 ≥ 1) and a past (past ≥ 1): 1 × 1, else 0
        makeNode('Sub', [`${name}_seq`, `${name}_one`], [`${name}_more`]),
        makeNode('Min', [`${name}_more`, `${name}_one`], [`${name}_several`]),
        makeNode('Min', [`${name}_past`, `${name}_one`], [`${name}_after`]),
        makeNode('Mul', [`${name}_several`, `${name}_after`], [`${name}_both`]),
        makeNode('Add', [`${name}_both`, `${name}_one`], [`${name}_count`]),
        makeNode('Reshape', [`${name}_count`, `${name}_shape1`], [`${name}_dims`]),
        makeNode('Reshape', [`${name}_zero`, `${name}_dims`], [`${name}_out`]),
      ],
      operand: `${name}_out`,
    };
  });
}

async function appendToLogits(
  path: string,
  name: string,
  make: (name: string) => { initializers: ReturnType<typeof makeTensor>[]; nodes: ReturnType<typeof makeNode>[]; operand: string },
): Promise<void> {
  const model = await readModel(path);
  const graph = model.graph!;
  const producer = graph.node!.find((n) => n.output!.includes('logits'))!;
  producer.output = producer.output!.map((o) => (o === 'logits' ? 'logits_before_edit' : o));
  const { initializers, nodes, operand } = make(name);
  graph.initializer!.push(...(initializers as never[]));
  graph.node!.push(...(nodes as never[]), makeNode('Add', ['logits_before_edit', operand], ['logits']) as never);
  await writeModel(path, model);
}

/**
 * Makes a model follow a script: `logits += table[position]`, where `table[p]` is `strength` at `script[p]`
 * (absolute positions). Hidden states are untouched, so latent steps compute as usual, but the tokens the
 * model writes are known in advance: a deterministic stand-in for a trained policy.
 */
export async function followScript(path: string, vocab: number, script: readonly number[], strength = 100): Promise<void> {
  await appendToLogits(path, 'script_table', (name) => {
    const table = new Float32Array(script.length * vocab);
    script.forEach((id, p) => (table[p * vocab + id] = strength));
    return {
      initializers: [makeTensor(name, DataType.FLOAT, [script.length, vocab], table)],
      nodes: [makeNode('Gather', [name, 'position_ids'], [`${name}_rows`], { axis: 0 })],
      operand: `${name}_rows`,
    };
  });
}

/**
 * Lets padding into a hybrid model's convolution states: the builder zeroes the inputs of masked-out positions
 * (a Mul by the mask's columns of the tokens fed); this multiplies by one instead, as an export that does not mask
 * them would compute. Positions the mask keeps compute as before.
 */
export async function unmaskConvolutions(path: string): Promise<void> {
  const model = await readModel(path);
  const graph = model.graph!;
  const producer = new Map(graph.node!.flatMap((n) => n.output!.map((o) => [o, n] as const)));
  const from = (name: string, op: string) => (producer.get(name)?.opType === op ? producer.get(name)! : undefined);
  const one = 'unmasked_one';
  graph.initializer!.push(makeTensor(one, DataType.FLOAT, [], Float32Array.of(1)) as never);
  let edited = 0;
  for (const n of graph.node!) {
    if (n.opType !== 'Mul') continue;
    const slice = from(from(from(n.input![1]!, 'Unsqueeze')?.input![0] ?? '', 'Cast')?.input![0] ?? '', 'Slice');
    if (slice?.input![0] !== 'attention_mask') continue;
    n.input![1] = one;
    edited++;
  }
  if (edited === 0) throw new Error(`${path}: no masked convolution input found`);
  await writeModel(path, model);
}
