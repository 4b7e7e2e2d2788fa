/**
 * Real graph edits that give builder models properties of models found in the wild: an LM-head bias (Phi,
 * GPT-NeoX-style heads) and a learned-position table that bounds the context (GPT-2 style).
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
