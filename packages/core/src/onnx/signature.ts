/**
 * The I/O signature of an ONNX causal-LM decoder, read from session metadata (never assumed),
 * and the checks that refuse layouts the engine does not run.
 */

/** Element types the engine feeds or reads. */
export type IdType = 'int64' | 'int32';
/** Element types of the float inputs and outputs (KV cache, states, embeddings) the engine feeds or reads. */
export type FloatType = 'float32' | 'float16';

/** One past/present pair of a layer. */
export interface KvNames {
  pastKey: string;
  pastValue: string;
  presentKey: string;
  presentValue: string;
}

/**
 * A recurrent state of a layer (hybrid models: a short convolution's last inputs, an SSM's or a linear attention's
 * state): one fixed-size block per row, fed as `past` and returned as `present` each run, whatever the length.
 */
export interface StateNames {
  past: string;
  present: string;
  /** The block's dims after the batch dim. */
  shape: number[];
  type: FloatType;
}

/** What the engine needs to know to drive a decoder. */
export interface DecoderSignature {
  inputIds: { name: string; type: IdType };
  attentionMask?: { name: string; type: IdType };
  positionIds?: { name: string; type: IdType };
  /** Per attention layer, in layer order. */
  kv: KvNames[];
  /** Recurrent states of the other layers of a hybrid model, in layer order; none for a plain decoder. */
  states: StateNames[];
  kvType: FloatType;
  /**
   * The graph returns only each run's keys and values (`new_key_values.{i}.key|value`, `[batch, kvHeads, run, headDim]`)
   * and the caller appends them to its cache, which may hold room for more positions (masked out); otherwise the
   * presents are the past with the run's appended (`present.{i}.key|value`).
   */
  kvAppends: boolean;
  kvHeads: number;
  headDim: number;
  logits: { name: string; type: FloatType; vocabSize: number };
  /** Merged optimum decoders: a bool input choosing the with-past branch. */
  useCacheBranch?: string;
  /** Exports that can restrict logits to the last N positions themselves. */
  numLogitsToKeep?: { name: string; type: IdType };
  /** Present on prepared graphs that accept continuous input embeddings (`[B, S, hidden]`). */
  inputsEmbeds?: { name: string; type: FloatType; hiddenSize: number };
  /** Present on prepared graphs that also return the final (post-norm) hidden state. */
  hiddenState?: { name: string; type: FloatType; hiddenSize: number };
  /**
   * Set when the graph takes one row a run: its inputs' batch dim fixed at 1, as a static `torch.onnx.export` writes
   * it (see {@link rowsShareRuns}). Other fixed batch sizes are refused.
   */
  fixedBatch?: 1;
}

/**
 * Whether rows of different lengths may share a run of the graph: it takes any number of rows, and an
 * `attention_mask` that hides a shorter row's padding (a graph without one attends to the padding as to tokens).
 * Where they may not, the engine runs each row of a batch in a run of its own.
 */
export function rowsShareRuns(sig: DecoderSignature): boolean {
  return sig.attentionMask !== undefined && sig.fixedBatch === undefined;
}

/** Raised for a model whose layout the engine does not support; the message says what was found and what is expected. */
export class UnsupportedModelError extends Error {
  override name = 'UnsupportedModelError';
}

/**
 * What onnxruntime reports for one input or output (`session.inputMetadata` / `outputMetadata`); structurally
 * onnxruntime-common's `InferenceSession.ValueMetadata`, so the graph readers below can produce it too.
 */
export type ValueMetadata =
  | { readonly name: string; readonly isTensor: false }
  | { readonly name: string; readonly isTensor: true; readonly type: string; readonly shape: ReadonlyArray<number | string> };

type TensorMeta = Extract<ValueMetadata, { isTensor: true }>;

const PAST_RE = /^past_key_values\.(\d+)\.(key|value)$/;
const PRESENT_RE = /^present\.(\d+)\.(key|value)$/;
/** This run's keys and values alone, appended by the caller (reasonplug's own graphs, LlamaBuildOptions.kvOutput). */
const NEW_KV_RE = /^new_key_values\.(\d+)\.(key|value)$/;
/** Recurrent states as transformers.js names them (`past_conv.{i}`, `past_ssm.{i}`, `past_recurrent.{i}`; outputs `present_…`). */
const STATE_PAST_RE = /^past_(conv|ssm|recurrent)\.(\d+)$/;
const STACKED_PAST_RE = /^past_(\d+)$/;
const STACKED_PRESENT_RE = /^present_(\d+)$/;
/** Optimum seq2seq past names (`past_key_values.0.decoder.key`, `...encoder.value`). */
const SEQ2SEQ_PAST_RE = /^past_key_values\.\d+\.(decoder|encoder)\.(key|value)$/;
const ENCODER_INPUTS = new Set(['encoder_hidden_states', 'encoder_outputs', 'encoder_attention_mask', 'decoder_input_ids', 'decoder_attention_mask']);

/** Input and output names the engine knows; prepared graphs add the last two of each. */
export const SIGNATURE_NAMES = {
  inputIds: 'input_ids',
  attentionMask: 'attention_mask',
  positionIds: 'position_ids',
  useCacheBranch: 'use_cache_branch',
  numLogitsToKeep: 'num_logits_to_keep',
  inputsEmbeds: 'inputs_embeds',
  logits: 'logits',
  hiddenState: 'last_hidden_state',
} as const;

const EXPECTED =
  'Expected an Optimum (text-generation-with-past) or onnxruntime-genai causal-LM decoder: inputs `input_ids` (int64|int32) ' +
  '[batch, seq], optional `attention_mask`, `position_ids`, `use_cache_branch`, `num_logits_to_keep`, and ' +
  '`past_key_values.{i}.key|value` (float32|float16) [batch, kv_heads, past, head_dim] (a hybrid model\'s recurrent layers: ' +
  '`past_conv|past_ssm|past_recurrent.{i}` [batch, ...fixed dims]); outputs `logits` [batch, seq, vocab] and ' +
  '`present.{i}.key|value` (`present_conv|present_ssm|present_recurrent.{i}`).';

function fmtShape(shape: ReadonlyArray<number | string>): string {
  return `[${shape.map(String).join(', ')}]`;
}

function fmtMeta(m: ValueMetadata): string {
  return m.isTensor ? `${m.name} ${m.type}${fmtShape(m.shape)}` : `${m.name} (non-tensor)`;
}

function refuse(source: string, found: string, extra = EXPECTED): never {
  throw new UnsupportedModelError(`${source}: ${found}. ${extra}`);
}

function asIdType(m: TensorMeta): IdType | undefined {
  return m.type === 'int64' || m.type === 'int32' ? m.type : undefined;
}

function asFloatType(m: TensorMeta): FloatType | undefined {
  return m.type === 'float32' || m.type === 'float16' ? m.type : undefined;
}

/**
 * Reads a decoder's I/O signature from onnxruntime session metadata (`session.inputMetadata`,
 * `session.outputMetadata`). Accepts the Optimum / onnxruntime-genai conventions (see ARCHITECTURE.md) and the
 * extra I/O of prepared graphs (`inputs_embeds`, `last_hidden_state`); refuses anything else with an
 * {@link UnsupportedModelError} naming `source`, what was found and what is expected.
 */
export function detectSignature(
  inputs: readonly ValueMetadata[],
  outputs: readonly ValueMetadata[],
  source: string,
): DecoderSignature {
  const N = SIGNATURE_NAMES;
  const inputNames = inputs.map((m) => m.name);
  const outputNames = outputs.map((m) => m.name);

  // Layouts recognisably different from the accepted one get a message that names them.
  const stackedPast = inputNames.filter((n) => STACKED_PAST_RE.test(n));
  const stackedPresent = outputNames.filter((n) => STACKED_PRESENT_RE.test(n));
  if (stackedPast.length > 0 || stackedPresent.length > 0) {
    const first = inputs.find((m) => STACKED_PAST_RE.test(m.name)) ?? outputs.find((m) => STACKED_PRESENT_RE.test(m.name))!;
    refuse(
      source,
      `found the legacy stacked KV-cache layout (\`past_N\` inputs ${stackedPast.length ? `${stackedPast[0]}..${stackedPast.at(-1)}` : 'none'}, ` +
        `\`present_N\` outputs ${stackedPresent.length ? `${stackedPresent[0]}..${stackedPresent.at(-1)}` : 'none'}; e.g. ${fmtMeta(first)}, ` +
        'key and value stacked in one [2, batch, heads, past, head_dim] tensor per layer, as onnxruntime.transformers\' old GPT-2 export writes it), ' +
        'which is not supported',
      `${EXPECTED} Re-export the model with Optimum (\`optimum-cli export onnx --task text-generation-with-past\`) or onnxruntime-genai's model builder.`,
    );
  }
  const seq2seq = [...inputNames.filter((n) => ENCODER_INPUTS.has(n) || SEQ2SEQ_PAST_RE.test(n))];
  if (seq2seq.length > 0 || outputNames.includes('encoder_last_hidden_state')) {
    refuse(
      source,
      `looks like (part of) an encoder-decoder model (found ${[...seq2seq, ...outputNames.filter((n) => n === 'encoder_last_hidden_state')].slice(0, 4).join(', ')}); only decoder-only causal LMs are supported`,
    );
  }

  const nonTensor = [...inputs, ...outputs].filter((m) => !m.isTensor);
  if (nonTensor.length > 0) refuse(source, `found non-tensor inputs/outputs (${nonTensor.map((m) => m.name).join(', ')})`);
  const ins = new Map(inputs.map((m) => [m.name, m as TensorMeta]));
  const outs = new Map(outputs.map((m) => [m.name, m as TensorMeta]));
  const known = new Set<string>();

  const idInput = (name: string, required: boolean, rank?: number): { name: string; type: IdType } | undefined => {
    const m = ins.get(name);
    if (!m) {
      if (required) {
        refuse(source, `has no \`${name}\` input (inputs: ${inputs.map(fmtMeta).join(', ') || 'none'})`);
      }
      return undefined;
    }
    known.add(name);
    const type = asIdType(m);
    if (!type) refuse(source, `input \`${name}\` is ${m.type}, expected int64 or int32`);
    if (rank !== undefined && m.shape.length !== rank) {
      refuse(source, `input \`${name}\` has shape ${fmtShape(m.shape)}, expected rank ${rank}`);
    }
    return { name, type };
  };

  const inputIds = idInput(N.inputIds, true, 2)!;
  const attentionMask = idInput(N.attentionMask, false, 2);
  const positionIds = idInput(N.positionIds, false, 2);
  const numLogitsToKeep = idInput(N.numLogitsToKeep, false);

  let useCacheBranch: string | undefined;
  const ucb = ins.get(N.useCacheBranch);
  if (ucb) {
    known.add(ucb.name);
    if (ucb.type !== 'bool') refuse(source, `input \`${N.useCacheBranch}\` is ${ucb.type}, expected bool`);
    useCacheBranch = ucb.name;
  }

  // Recurrent states: past_{kind}.{i} ↔ present_{kind}.{i}, fixed dims after the batch.
  const states: (StateNames & { layer: number })[] = [];
  for (const m of ins.values()) {
    const match = STATE_PAST_RE.exec(m.name);
    if (!match) continue;
    const presentName = `present_${match[1]}.${match[2]}`;
    const out = outs.get(presentName);
    if (!out) refuse(source, `has the recurrent state input \`${m.name}\` but no \`${presentName}\` output`);
    const type = asFloatType(m);
    if (!type || out.type !== m.type) refuse(source, `recurrent state \`${m.name}\` is ${m.type} and \`${presentName}\` ${out.type}, expected float32 or float16, both alike`);
    const shape = m.shape.slice(1);
    if (m.shape.length < 2 || shape.some((d) => typeof d !== 'number') || fmtShape(out.shape.slice(1)) !== fmtShape(shape)) {
      refuse(source, `recurrent state \`${m.name}\` has shape ${fmtShape(m.shape)} and \`${presentName}\` ${fmtShape(out.shape)}: expected [batch, …] with the same fixed dims after the batch`);
    }
    known.add(m.name);
    states.push({ past: m.name, present: presentName, shape: shape as number[], type, layer: Number(match[2]) });
  }
  states.sort((a, b) => a.layer - b.layer || a.past.localeCompare(b.past));

  // KV cache: past_key_values.{i}.key|value ↔ present.{i}.key|value, one dtype and geometry; layers 0..n-1, or in a
  // hybrid model the layers that have no recurrent state.
  const collect = (metas: Map<string, TensorMeta>, re: RegExp): Map<number, { key?: TensorMeta; value?: TensorMeta }> => {
    const layers = new Map<number, { key?: TensorMeta; value?: TensorMeta }>();
    for (const m of metas.values()) {
      const match = re.exec(m.name);
      if (!match) continue;
      const i = Number(match[1]);
      const entry = layers.get(i) ?? {};
      entry[match[2] as 'key' | 'value'] = m;
      layers.set(i, entry);
    }
    return layers;
  };
  const pasts = collect(ins, PAST_RE);
  const joined = collect(outs, PRESENT_RE);
  const appended = collect(outs, NEW_KV_RE);
  if (joined.size > 0 && appended.size > 0) refuse(source, 'has both `present.{i}` and `new_key_values.{i}` outputs; a graph returns its caches one way');
  const kvAppends = appended.size > 0;
  const presents = kvAppends ? appended : joined;
  const presentStem = kvAppends ? 'new_key_values' : 'present';
  if (pasts.size === 0 && states.length > 0) {
    refuse(source, `has recurrent states (${states[0]!.past}, …) and no attention layer's KV cache; a model of recurrent layers only is not supported`);
  }
  if (pasts.size === 0) {
    const hint = inputNames.filter((n) => /past|cache/i.test(n));
    refuse(
      source,
      hint.length
        ? `has cache inputs in an unknown layout (${hint.slice(0, 4).join(', ')}${hint.length > 4 ? ', ...' : ''})`
        : 'has no `past_key_values.{i}.key|value` inputs (a decoder exported without KV cache)',
    );
  }
  if (pasts.size !== presents.size) {
    refuse(
      source,
      `has ${pasts.size} layers of \`past_key_values.{i}.key|value\` inputs but ${presents.size} layers of \`${presentStem}.{i}.key|value\` outputs; they must pair up`,
    );
  }
  const kv: KvNames[] = [];
  let kvType: FloatType | undefined;
  let kvHeads: number | undefined;
  let headDim: number | undefined;
  const kvLayers = [...new Set([...pasts.keys(), ...presents.keys()])].sort((a, b) => a - b);
  // (a hybrid's layers may keep no cache at all: Nemotron-H's MLP-only layers)
  const layers = new Set([...kvLayers, ...states.map((s) => s.layer)]);
  for (let i = 0; i < layers.size && states.length === 0; i++) {
    if (!layers.has(i)) refuse(source, `cache layers are not numbered 0..${layers.size - 1}: layer ${i} has neither KV-cache nor recurrent-state tensors`);
  }
  for (const i of kvLayers) {
    const past = pasts.get(i);
    const present = presents.get(i);
    if (!past || !present) refuse(source, `KV-cache layer ${i} is missing its ${past ? 'present' : 'past'} tensors`);
    for (const [what, m] of [
      [`past_key_values.${i}.key`, past.key],
      [`past_key_values.${i}.value`, past.value],
      [`${presentStem}.${i}.key`, present.key],
      [`${presentStem}.${i}.value`, present.value],
    ] as const) {
      if (!m) refuse(source, `layer ${i} has no \`${what}\``);
      const t = asFloatType(m);
      if (!t) refuse(source, `\`${m.name}\` is ${m.type}, expected float32 or float16`);
      if (m.shape.length !== 4) {
        refuse(source, `\`${m.name}\` has shape ${fmtShape(m.shape)}, expected [batch, kv_heads, past, head_dim]`);
      }
      const [, heads, length, dim] = m.shape;
      // A fixed length is a static cache that past and present share (onnxruntime-genai's
      // past_present_share_buffer): the engine feeds growing caches, which such a graph refuses at run time.
      if (typeof length === 'number' && m.name.startsWith('past_key_values.')) {
        refuse(
          source,
          `\`${m.name}\` has shape ${fmtShape(m.shape)}: a fixed past length of ${length} is a shared past/present KV buffer, which is not supported`,
          `${EXPECTED} Export with a dynamic past length (onnxruntime-genai's builder does by default; past_present_share_buffer is a runtime option of its config).`,
        );
      }
      if (typeof heads !== 'number' || typeof dim !== 'number') {
        refuse(source, `\`${m.name}\` has shape ${fmtShape(m.shape)}: kv_heads (dim 1) and head_dim (dim 3) must be fixed numbers`);
      }
      if (kvType === undefined) {
        kvType = t;
        kvHeads = heads;
        headDim = dim;
      } else if (t !== kvType || heads !== kvHeads || dim !== headDim) {
        refuse(source, `\`${m.name}\` is ${m.type}${fmtShape(m.shape)} while layer 0 has ${kvType}[batch, ${kvHeads}, past, ${headDim}]; all KV tensors must agree`);
      }
      known.add(m.name);
    }
    kv.push({ pastKey: past.key!.name, pastValue: past.value!.name, presentKey: present.key!.name, presentValue: present.value!.name });
  }

  // logits [batch, seq, vocab] with a fixed vocab.
  const lg = outs.get(N.logits);
  if (!lg) refuse(source, `has no \`logits\` output (outputs: ${outputs.map(fmtMeta).join(', ') || 'none'})`);
  const logitsType = asFloatType(lg);
  if (!logitsType) refuse(source, `output \`logits\` is ${lg.type}, expected float32 or float16`);
  if (lg.shape.length !== 3) refuse(source, `output \`logits\` has shape ${fmtShape(lg.shape)}, expected [batch, seq, vocab]`);
  const vocabSize = lg.shape[2];
  if (typeof vocabSize !== 'number') {
    refuse(source, `output \`logits\` has shape ${fmtShape(lg.shape)}: the vocabulary dimension must be a fixed number, found symbolic \`${vocabSize}\``);
  }

  // Prepared-graph extras.
  const floatWithHidden = (m: TensorMeta, kind: string): { name: string; type: FloatType; hiddenSize: number } => {
    const type = asFloatType(m);
    if (!type) refuse(source, `${kind} \`${m.name}\` is ${m.type}, expected float32 or float16`);
    const h = m.shape[2];
    if (m.shape.length !== 3 || typeof h !== 'number') {
      refuse(source, `${kind} \`${m.name}\` has shape ${fmtShape(m.shape)}, expected [batch, seq, hidden] with a fixed hidden size`);
    }
    return { name: m.name, type, hiddenSize: h };
  };
  const emb = ins.get(N.inputsEmbeds);
  let inputsEmbeds: DecoderSignature['inputsEmbeds'];
  if (emb) {
    known.add(emb.name);
    inputsEmbeds = floatWithHidden(emb, 'input');
  }
  const hs = outs.get(N.hiddenState);
  const hiddenState = hs ? floatWithHidden(hs, 'output') : undefined;

  const unexpected = inputs.filter((m) => !known.has(m.name));
  if (unexpected.length > 0) {
    refuse(source, `has required inputs the engine does not know how to feed: ${unexpected.map(fmtMeta).join(', ')}`);
  }
  // A cache appended to keeps slots to spare after its positions, which only a mask keeps out of attention.
  if (kvAppends && !attentionMask) refuse(source, 'returns only new keys and values (`new_key_values.{i}`) but takes no `attention_mask` to mask the cache\'s unused slots');

  // Static exports fix dims the engine varies. A run's tokens: a prompt's chunk, then one a step (a graph of one token
  // a run would take a prompt in as many runs as it has tokens, each reading every weight).
  for (const m of [ins.get(N.inputIds)!, ins.get(N.positionIds)]) {
    if (m && typeof m.shape[1] === 'number') {
      refuse(
        source,
        `input \`${m.name}\` has shape ${fmtShape(m.shape)}: a fixed sequence length of ${m.shape[1]} token${m.shape[1] === 1 ? '' : 's'} a run, which is not supported (the engine runs a prompt in chunks, then one token a step)`,
        `${EXPECTED} Export with a dynamic sequence length (torch.onnx.export's dynamic_axes or dynamic_shapes; Optimum's exports have one).`,
      );
    }
  }
  // A run's rows: any number, or one (its rows then run one at a time).
  const rowInputs = inputs.filter((m) => known.has(m.name) && m.name !== N.useCacheBranch && m.name !== N.numLogitsToKeep) as TensorMeta[];
  const fixedRows = rowInputs.filter((m) => typeof m.shape[0] === 'number');
  const wide = fixedRows.find((m) => m.shape[0] !== 1);
  if (wide) {
    refuse(
      source,
      `input \`${wide.name}\` has shape ${fmtShape(wide.shape)}: a fixed batch of ${wide.shape[0]} rows a run, which is not supported`,
      `${EXPECTED} Export with a dynamic batch dim (a batch fixed at 1 runs, one row at a time).`,
    );
  }

  return {
    inputIds,
    ...(attentionMask ? { attentionMask } : {}),
    ...(positionIds ? { positionIds } : {}),
    kv,
    states: states.map(({ layer: _, ...s }) => s),
    kvType: kvType!,
    kvAppends,
    kvHeads: kvHeads!,
    headDim: headDim!,
    logits: { name: lg.name, type: logitsType, vocabSize },
    ...(useCacheBranch ? { useCacheBranch } : {}),
    ...(numLogitsToKeep ? { numLogitsToKeep } : {}),
    ...(inputsEmbeds ? { inputsEmbeds } : {}),
    ...(hiddenState ? { hiddenState } : {}),
    ...(fixedRows.length > 0 ? { fixedBatch: 1 as const } : {}),
  };
}

/** A plain JSON description of a signature (for `reasonplug inspect`). */
export function describeSignature(sig: DecoderSignature): Record<string, unknown> {
  return {
    layers: sig.kv.length + new Set(sig.states.map((s) => /\d+$/.exec(s.past)![0])).size,
    ...(sig.states.length ? { recurrentStates: sig.states.map((s) => `${s.past} ${s.type}[batch, ${s.shape.join(', ')}]`) } : {}),
    kvHeads: sig.kvHeads,
    headDim: sig.headDim,
    kvType: sig.kvType,
    ...(sig.kvAppends ? { kvOutput: 'new keys and values (the caller appends them)' } : {}),
    vocabSize: sig.logits.vocabSize,
    logitsType: sig.logits.type,
    inputs: {
      inputIds: { ...sig.inputIds },
      attentionMask: sig.attentionMask ? { ...sig.attentionMask } : null,
      positionIds: sig.positionIds ? { ...sig.positionIds } : null,
      useCacheBranch: sig.useCacheBranch ?? null,
      numLogitsToKeep: sig.numLogitsToKeep ? { ...sig.numLogitsToKeep } : null,
      inputsEmbeds: sig.inputsEmbeds ? { ...sig.inputsEmbeds } : null,
    },
    outputs: {
      logits: { ...sig.logits },
      hiddenState: sig.hiddenState ? { ...sig.hiddenState } : null,
    },
    kvNames: {
      past: sig.kv.length ? `${sig.kv[0]!.pastKey} .. ${sig.kv.at(-1)!.pastValue}` : null,
      present: sig.kv.length ? `${sig.kv[0]!.presentKey} .. ${sig.kv.at(-1)!.presentValue}` : null,
    },
    mergedDecoder: sig.useCacheBranch !== undefined,
    ...(sig.fixedBatch ? { fixedBatch: sig.fixedBatch } : {}),
  };
}
