import { expect } from 'chai';
import * as ort from 'onnxruntime-node';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { models } from '../../../test/support/paths.js';
import { detectSignature, describeSignature, UnsupportedModelError, type ValueMetadata } from '../src/onnx/signature.js';
import { buildLlamaModel, writeLlamaModel, randomLlamaWeights } from '../src/onnx/llama-builder.js';
import { encodeModel } from '../src/onnx/proto.js';
import type { LlamaConfig } from '../src/onnx/llama-spec.js';

const GENAI = join(models.llamaFp16, 'model.onnx');
const LEGACY = join(models.gpt2Legacy, 'past.onnx');

async function sessionSignature(path: string) {
  const session = await ort.InferenceSession.create(path);
  try {
    return { sig: detectSignature(session.inputMetadata, session.outputMetadata, path), session };
  } finally {
    await session.release();
  }
}

function expectRefusal(fn: () => unknown, ...patterns: RegExp[]): UnsupportedModelError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught, 'expected an UnsupportedModelError').to.be.instanceOf(UnsupportedModelError);
  const err = caught as UnsupportedModelError;
  expect(err.name).to.equal('UnsupportedModelError');
  for (const p of patterns) expect(err.message).to.match(p);
  return err;
}

// Metadata builders for synthetic signatures.
const t = (name: string, type: string, shape: (string | number)[]): ValueMetadata => ({ name, isTensor: true, type, shape });
function decoderMeta(o: { layers?: number; kvType?: string; ids?: string; vocab?: number | string; heads?: number; dim?: number } = {}) {
  const layers = o.layers ?? 2;
  const kvType = o.kvType ?? 'float32';
  const inputs: ValueMetadata[] = [
    t('input_ids', o.ids ?? 'int64', ['batch_size', 'sequence_length']),
    t('attention_mask', o.ids ?? 'int64', ['batch_size', 'total_sequence_length']),
  ];
  const outputs: ValueMetadata[] = [t('logits', kvType, ['batch_size', 'sequence_length', o.vocab ?? 100])];
  for (let i = 0; i < layers; i++) {
    for (const k of ['key', 'value']) {
      inputs.push(t(`past_key_values.${i}.${k}`, kvType, ['batch_size', o.heads ?? 2, 'past_sequence_length', o.dim ?? 8]));
      outputs.push(t(`present.${i}.${k}`, kvType, ['batch_size', o.heads ?? 2, 'total_sequence_length', o.dim ?? 8]));
    }
  }
  return { inputs, outputs };
}

describe('detectSignature', () => {
  it('reads the onnxruntime-genai fp16 Llama export', async () => {
    const { sig } = await sessionSignature(GENAI);
    expect(sig.inputIds).to.deep.equal({ name: 'input_ids', type: 'int64' });
    expect(sig.attentionMask).to.deep.equal({ name: 'attention_mask', type: 'int64' });
    expect(sig.positionIds).to.deep.equal({ name: 'position_ids', type: 'int64' });
    expect(sig.kv).to.have.length(2);
    expect(sig.kv[1]).to.deep.equal({
      pastKey: 'past_key_values.1.key',
      pastValue: 'past_key_values.1.value',
      presentKey: 'present.1.key',
      presentValue: 'present.1.value',
    });
    expect(sig.kvType).to.equal('float16');
    expect(sig.kvHeads).to.equal(1);
    expect(sig.headDim).to.equal(16);
    expect(sig.logits).to.deep.equal({ name: 'logits', type: 'float16', vocabSize: 32000 });
    expect(sig.useCacheBranch).to.equal(undefined);
    expect(sig.inputsEmbeds).to.equal(undefined);
    expect(sig.hiddenState).to.equal(undefined);
  });

  it('refuses the legacy stacked past_N layout, naming it and the file', async () => {
    const session = await ort.InferenceSession.create(LEGACY);
    try {
      const err = expectRefusal(
        () => detectSignature(session.inputMetadata, session.outputMetadata, LEGACY),
        /stacked/,
        /`past_N`/,
        /past_0\.\.past_4/,
        /present_N/,
        /\[2, batch, heads, past, head_dim\]/,
        /past_key_values\.\{i\}\.key\|value/,
      );
      expect(err.message).to.contain(LEGACY);
    } finally {
      await session.release();
    }
  });

  it('refuses a real session without a logits output', async () => {
    const config: LlamaConfig = { vocabSize: 32, hiddenSize: 8, numLayers: 1, numHeads: 2, intermediateSize: 8 };
    const model = buildLlamaModel(config, randomLlamaWeights(config, 3), {});
    model.graph!.output = model.graph!.output!.filter((o) => o.name !== 'logits');
    const session = await ort.InferenceSession.create(encodeModel(model));
    try {
      expectRefusal(() => detectSignature(session.inputMetadata, session.outputMetadata, 'headless.onnx'), /headless\.onnx: has no `logits` output/, /present\.0\.key/);
    } finally {
      await session.release();
    }
  });

  describe('builder models', () => {
    let dir: string;
    const config: LlamaConfig = { vocabSize: 64, hiddenSize: 16, numLayers: 3, numHeads: 4, numKvHeads: 2, intermediateSize: 32 };
    before(async () => {
      dir = await mkdtemp(join(tmpdir(), 'rp-sig-'));
    });
    after(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    it('reads fp32 / int64 with position_ids', async () => {
      const path = join(dir, 'a.onnx');
      await writeLlamaModel(path, config, randomLlamaWeights(config, 1), {});
      const { sig } = await sessionSignature(path);
      expect(sig.kv).to.have.length(3);
      expect(sig).to.include({ kvType: 'float32', kvHeads: 2, headDim: 4 });
      expect(sig.logits).to.deep.equal({ name: 'logits', type: 'float32', vocabSize: 64 });
      expect(sig.positionIds?.type).to.equal('int64');
    });

    it('reads fp16 / int32 merged decoders with num_logits_to_keep and the prepared extras', async () => {
      const path = join(dir, 'b.onnx');
      await writeLlamaModel(path, config, randomLlamaWeights(config, 2), {
        dtype: 'float16',
        idsType: 'int32',
        positionIds: false,
        mergedDecoder: true,
        numLogitsToKeep: true,
        outputHidden: true,
        inputsEmbeds: true,
      });
      const { sig } = await sessionSignature(path);
      expect(sig.inputIds.type).to.equal('int32');
      expect(sig.attentionMask?.type).to.equal('int32');
      expect(sig.positionIds).to.equal(undefined);
      expect(sig.kvType).to.equal('float16');
      expect(sig.useCacheBranch).to.equal('use_cache_branch');
      expect(sig.numLogitsToKeep).to.deep.equal({ name: 'num_logits_to_keep', type: 'int64' });
      expect(sig.inputsEmbeds).to.deep.equal({ name: 'inputs_embeds', type: 'float16', hiddenSize: 16 });
      expect(sig.hiddenState).to.deep.equal({ name: 'last_hidden_state', type: 'float16', hiddenSize: 16 });
      const json = describeSignature(sig);
      expect(JSON.parse(JSON.stringify(json))).to.deep.equal(json);
      expect(json).to.include({ layers: 3, kvHeads: 2, headDim: 4, kvType: 'float16', vocabSize: 64, mergedDecoder: true });
    });
  });

  describe('synthetic metadata', () => {
    it('accepts the minimal optimum layout', () => {
      const { inputs, outputs } = decoderMeta({ ids: 'int32', kvType: 'float16' });
      const sig = detectSignature(inputs, outputs, 'm.onnx');
      expect(sig.inputIds.type).to.equal('int32');
      expect(sig.kv).to.have.length(2);
      expect(sig).to.include({ kvType: 'float16', kvHeads: 2, headDim: 8 });
    });

    it('refuses a model without logits', () => {
      const { inputs, outputs } = decoderMeta();
      expectRefusal(() => detectSignature(inputs, outputs.filter((o) => o.name !== 'logits'), 'nolog.onnx'), /nolog\.onnx/, /no `logits` output/);
    });

    it('refuses a model without input_ids', () => {
      const { inputs, outputs } = decoderMeta();
      expectRefusal(() => detectSignature(inputs.filter((i) => i.name !== 'input_ids'), outputs, 'x.onnx'), /no `input_ids` input/);
    });

    it('refuses float input_ids and a symbolic vocabulary', () => {
      const a = decoderMeta({ ids: 'float32' });
      expectRefusal(() => detectSignature(a.inputs, a.outputs, 'x.onnx'), /`input_ids` is float32, expected int64 or int32/);
      const b = decoderMeta({ vocab: 'vocab_size' });
      expectRefusal(() => detectSignature(b.inputs, b.outputs, 'x.onnx'), /vocabulary dimension must be a fixed number/, /vocab_size/);
    });

    it('refuses a KV count mismatch between past and present', () => {
      const { inputs, outputs } = decoderMeta({ layers: 3 });
      const fewer = outputs.filter((o) => !o.name.startsWith('present.2.'));
      expectRefusal(() => detectSignature(inputs, fewer, 'x.onnx'), /3 layers of `past_key_values.*2 layers of `present/);
      const halfLayer = outputs.filter((o) => o.name !== 'present.1.value');
      expectRefusal(() => detectSignature(inputs, halfLayer, 'x.onnx'), /present\.1\.value/);
    });

    it('refuses KV tensors that disagree in dtype or geometry', () => {
      const { inputs, outputs } = decoderMeta();
      const bad = inputs.map((m) => (m.name === 'past_key_values.1.key' ? t(m.name, 'float32', ['batch_size', 4, 'past_sequence_length', 8]) : m));
      expectRefusal(() => detectSignature(bad, outputs, 'x.onnx'), /all KV tensors must agree/);
      const sym = inputs.map((m) => (m.name === 'past_key_values.0.key' ? t(m.name, 'float32', ['batch_size', 'heads', 'past', 8]) : m));
      expectRefusal(() => detectSignature(sym, outputs, 'x.onnx'), /must be fixed numbers/);
    });

    it('refuses unexpected required inputs, naming them', () => {
      const { inputs, outputs } = decoderMeta();
      const err = expectRefusal(
        () => detectSignature([...inputs, t('token_type_ids', 'int64', ['batch_size', 'sequence_length'])], outputs, 'x.onnx'),
        /token_type_ids/,
        /does not know how to feed/,
      );
      expect(err.message).not.to.contain('attention_mask int64');
    });

    it('refuses decoders without a KV cache and unknown cache layouts', () => {
      const { inputs, outputs } = decoderMeta();
      const noKv = inputs.filter((i) => !i.name.startsWith('past_'));
      expectRefusal(() => detectSignature(noKv, outputs.filter((o) => !o.name.startsWith('present')), 'x.onnx'), /without KV cache/);
      const other = [...noKv, t('past_key.0', 'float32', ['batch_size', 2, 'past', 8])];
      expectRefusal(() => detectSignature(other, outputs, 'x.onnx'), /unknown layout/, /past_key\.0/);
    });

    it('refuses encoder-decoder models', () => {
      const { inputs, outputs } = decoderMeta();
      expectRefusal(
        () => detectSignature([...inputs, t('encoder_hidden_states', 'float32', ['batch_size', 'enc', 16])], outputs, 'dec.onnx'),
        /encoder-decoder/,
        /encoder_hidden_states/,
      );
      const seq2seq = inputs.map((m) => (m.name.startsWith('past_key_values.0.') ? t(m.name.replace('.0.', '.0.decoder.'), 'float32', [1]) : m));
      expectRefusal(() => detectSignature(seq2seq, outputs, 'dec.onnx'), /encoder-decoder/);
    });

    it('refuses non-tensor values and a stacked present_N layout alone', () => {
      const { inputs, outputs } = decoderMeta();
      expectRefusal(() => detectSignature([...inputs, { name: 'seq', isTensor: false }], outputs, 'x.onnx'), /non-tensor/);
      expectRefusal(() => detectSignature(inputs, [...outputs, t('present_0', 'float32', [2, 'b', 2, 't', 8])], 'x.onnx'), /stacked/, /present_N/);
    });

    it('refuses a shared past/present buffer (a fixed past length), naming it', () => {
      const { inputs, outputs } = decoderMeta();
      const fixed = inputs.map((m) => (m.name.startsWith('past_key_values.') && m.isTensor ? t(m.name, m.type, ['batch_size', 2, 256, 8]) : m));
      expectRefusal(() => detectSignature(fixed, outputs, 'x.onnx'), /past_key_values\.0\.key/, /fixed past length of 256/, /shared past\/present KV buffer/);
    });
  });
  describe('recurrent states (hybrid models)', () => {
    /** transformers.js's LFM2 layout: conv states at layers 0 and 2, attention at 1 and 3. */
    function hybridMeta(edit: (m: ValueMetadata) => ValueMetadata = (m) => m) {
      const { inputs, outputs } = decoderMeta({ layers: 4 });
      const conv = (prefix: string, i: number) => t(`${prefix}_conv.${i}`, 'float32', ['batch_size', 64, 3]);
      const drop = (m: ValueMetadata) => !/^(past_key_values|present)\.[02]\./.test(m.name);
      return { inputs: [...inputs.filter(drop), conv('past', 0), conv('past', 2)].map(edit), outputs: [...outputs.filter(drop), conv('present', 0), conv('present', 2)] };
    }

    it('reads past_conv.{i} ↔ present_conv.{i} with fixed dims after the batch, and the attention layers between them', () => {
      const { inputs, outputs } = hybridMeta();
      const sig = detectSignature(inputs, outputs, 'lfm2.onnx');
      expect(sig.states).to.deep.equal([
        { past: 'past_conv.0', present: 'present_conv.0', shape: [64, 3], type: 'float32' },
        { past: 'past_conv.2', present: 'present_conv.2', shape: [64, 3], type: 'float32' },
      ]);
      expect(sig.kv.map((k) => k.pastKey)).to.deep.equal(['past_key_values.1.key', 'past_key_values.3.key']);
      expect(describeSignature(sig)).to.include({ layers: 4 });
    });

    it('refuses a state without its present, one of a growing size, a plain layer with no cache, and states without attention; a hybrid layer may keep none', () => {
      const { inputs, outputs } = hybridMeta();
      expectRefusal(() => detectSignature(inputs, outputs.filter((m) => m.name !== 'present_conv.2'), 'x.onnx'), /past_conv\.2/, /no `present_conv\.2` output/);
      const growing = hybridMeta((m) => (m.name === 'past_conv.0' ? t(m.name, 'float32', ['batch_size', 64, 'n']) : m));
      expectRefusal(() => detectSignature(growing.inputs, growing.outputs, 'x.onnx'), /past_conv\.0/, /same fixed dims/);
      // A plain decoder's layers all keep keys and values; a hybrid's may keep none (Nemotron-H's MLP-only layers).
      const plain = decoderMeta({ layers: 3 });
      const without1 = (m: ValueMetadata) => !/^(past_key_values|present)\.1\./.test(m.name);
      expectRefusal(() => detectSignature(plain.inputs.filter(without1), plain.outputs.filter(without1), 'x.onnx'), /layer 1 has neither/);
      const gap = hybridMeta();
      const without2 = (m: ValueMetadata) => !m.name.endsWith('_conv.2');
      expect(detectSignature(gap.inputs.filter(without2), gap.outputs.filter(without2), 'x.onnx').states.map((st) => st.past)).to.deep.equal(['past_conv.0']);
      const onlyStates = (m: ValueMetadata) => !/^(past_key_values|present)\./.test(m.name);
      expectRefusal(() => detectSignature(inputs.filter(onlyStates), outputs.filter(onlyStates), 'x.onnx'), /recurrent states .* no attention layer/);
    });
  });
});
