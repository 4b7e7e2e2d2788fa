import { expect } from 'chai';
import * as ort from 'onnxruntime-node';
import { join } from 'node:path';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { Engine } from '../src/engine.js';
import { MarkerScanner } from '../src/generate/latent-marker.js';
import { buildIdentityProjector, buildProjectorModel, randomProjectorWeights, writeProjectorModel, type SwiGluWeights } from '../src/onnx/projector-builder.js';
import { randomLlamaWeights, writeLlamaModel } from '../src/onnx/llama-builder.js';
import { tokenizerFingerprintOfDir, writeModuleDir } from '../src/modules/module-dir.js';
import type { ModuleManifest } from '../src/modules/manifest.js';
import { TextTokenizer } from '../src/tokenizer/tokenizer.js';
import { followScript } from './support/graph-edits.js';
import { makeModule, storiesConfig, storiesModule } from './support/modules.js';
import { cacheDir, testDir } from './support/models.js';

const MARKER = { open: '<implicit_thought>', close: '</implicit_thought>', maxSteps: 32 };

describe('latent markers', () => {
  const scan = (pieces: string[], placeholder = '') => {
    const s = new MarkerScanner(MARKER, placeholder);
    const results = pieces.map((p) => s.push(p));
    return { text: results.map((r) => r.text).join('') + s.flush(), markers: results.flatMap((r) => r.markers) };
  };

  it('finds a marker split across pieces at any point', () => {
    const full = 'So <implicit_thought>3</implicit_thought> the answer';
    for (let a = 1; a < full.length - 1; a++) {
      for (const b of [a + 1, Math.min(full.length - 1, a + 7)]) {
        const r = scan([full.slice(0, a), full.slice(a, b), full.slice(b)], '.');
        expect(r.markers, `split at ${a},${b}`).to.deep.equal([3]);
        expect(r.text).to.equal('So ... the answer');
      }
    }
  });

  it('gives a marker no more steps (and placeholders) than the context has room for', () => {
    const s = new MarkerScanner(MARKER, '.');
    const r = s.push('a <implicit_thought>5</implicit_thought> b <implicit_thought>4</implicit_thought>', 7);
    expect(r.markers).to.deep.equal([5, 2]);
    expect(r.text).to.equal('a ..... b ..');
    expect(s.push('<implicit_thought>3</implicit_thought>', 0)).to.deep.equal({ text: '', markers: [0] });
  });

  it('clamps N into [1, maxSteps]', () => {
    expect(scan(['<implicit_thought>0</implicit_thought>']).markers).to.deep.equal([1]);
    expect(scan(['<implicit_thought>99</implicit_thought>']).markers).to.deep.equal([32]);
    expect(scan(['<implicit_thought>0007</implicit_thought>']).markers).to.deep.equal([7]);
    // Any number of steps a marker can ask for is clamped, however many digits it takes (nine at most).
    expect(scan(['<implicit_thought>99999</implicit_thought>']).markers).to.deep.equal([32]);
    expect(scan(['<implicit_thought>9999', '99999</implicit_thought>'], '.')).to.deep.equal({ text: '.'.repeat(32), markers: [32] });
  });

  it('treats malformed markers as text, never as steps', () => {
    for (const text of [
      '<implicit_thought></implicit_thought>',
      '<implicit_thought>x</implicit_thought>',
      '<implicit_thought>1234567890</implicit_thought>',
      '<implicit_thought>3</implicit_though',
      '<implicit_thought>3 and no close tag',
      '<implicit <implicit_thought>',
    ]) {
      const r = scan([text]);
      expect(r.markers, text).to.deep.equal([]);
      expect(r.text, text).to.equal(text);
    }
    const r = scan(['<<implicit_thought>2</implicit_thought>>']);
    expect(r.markers).to.deep.equal([2]);
    expect(r.text).to.equal('<>');
  });

  it('finds a well-formed marker right after a malformed one, split at any point', () => {
    // After N, a `<` is read as the close tag's: when it opens a marker instead, that marker must still count.
    const full = '<implicit_thought>3<implicit_thought>4</implicit_thought> done';
    expect(scan(['<implicit_thought>', '3', '<implicit_thought>', '4', '</implicit_thought>', ' done'], '.')).to.deep.equal({
      text: '<implicit_thought>3.... done',
      markers: [4],
    });
    for (let a = 1; a < full.length; a++) {
      for (const b of [a + 1, Math.min(full.length, a + 9)]) {
        expect(scan([full.slice(0, a), full.slice(a, b), full.slice(b)], '.'), `split at ${a},${b}`).to.deep.equal({
          text: '<implicit_thought>3.... done',
          markers: [4],
        });
      }
    }
  });

  it('keeps every possible marker start when a held fragment turns out to be text', () => {
    for (const [text, shown, markers] of [
      ['<implicit_thought><implicit_thought>2</implicit_thought>', '<implicit_thought>..', [2]],
      ['<implicit_thought>3<<implicit_thought>2</implicit_thought>', '<implicit_thought>3<..', [2]],
      ['<implicit_thought>3</<implicit_thought>2</implicit_thought>', '<implicit_thought>3</..', [2]],
      ['<implicit_thought>3</implicit_<implicit_thought>2</implicit_thought>', '<implicit_thought>3</implicit_..', [2]],
      ['<implicit_thought>3<implicit_thought>2<implicit_thought>1</implicit_thought>', '<implicit_thought>3<implicit_thought>2.', [1]],
      ['<implicit_thought>3<implicit_thought>2</implicit_thought><implicit_thought>5</implicit_thought>', '<implicit_thought>3.......', [2, 5]],
      ['<implicit_thought>3<', '<implicit_thought>3<', []],
      ['<implicit_thought>3<implicit_thought>', '<implicit_thought>3<implicit_thought>', []],
    ] as const) {
      expect(scan([text], '.'), text).to.deep.equal({ text: shown, markers });
      expect(scan([...text], '.'), `${text} a character at a time`).to.deep.equal({ text: shown, markers });
    }
  });

  it('holds back only what may still become a marker, and passes plain text with `<` through', () => {
    const s = new MarkerScanner(MARKER, '.');
    expect(s.push('if a < b and <b>c</b> <= d')).to.deep.equal({ text: 'if a < b and <b>c</b> <= d', markers: [] });
    expect(s.push('x <implicit_thought>3<impl')).to.deep.equal({ text: 'x <implicit_thought>3', markers: [] });
    expect(s.push('icit_thought>2</implicit_thought> <')).to.deep.equal({ text: '.. ', markers: [2] });
    expect(s.push('3')).to.deep.equal({ text: '<3', markers: [] });
    expect(s.push(' <implicit_thought>4</implic')).to.deep.equal({ text: ' ', markers: [] });
    expect(s.flush()).to.equal('<implicit_thought>4</implic');
  });
});

/** Plain-TypeScript SwiGLU stack: down(silu(gate(x)) * up(x)) per layer. */
function swiglu(x: Float32Array, layers: SwiGluWeights[], H: number, inner: number): Float32Array {
  let h = Float64Array.from(x);
  for (const w of layers) {
    const a = new Float64Array(inner);
    for (let i = 0; i < inner; i++) {
      let g = 0;
      let u = 0;
      for (let j = 0; j < H; j++) {
        g += w.gate[i * H + j]! * h[j]!;
        u += w.up[i * H + j]! * h[j]!;
      }
      a[i] = (g / (1 + Math.exp(-g))) * u;
    }
    const next = new Float64Array(H);
    for (let j = 0; j < H; j++) for (let i = 0; i < inner; i++) next[j]! += w.down[j * inner + i]! * a[i]!;
    h = next;
  }
  return Float32Array.from(h);
}

describe('LiteReason latent decoding', function () {
  this.timeout(120_000);
  const H = 48;
  let backboneDir: string;
  let tokenizer: TextTokenizer;
  let projectorPath: string;
  let identityPath: string;
  let weights: SwiGluWeights[];

  before(async () => {
    tokenizer = await TextTokenizer.fromDirectory(await storiesModule());
    backboneDir = await makeModule({ name: 'latent-backbone', kind: 'backbone', config: storiesConfig({ hiddenSize: H }), seed: 21 });
    const dir = testDir('projectors');
    weights = randomProjectorWeights({ hiddenSize: H }, 5, 0.2);
    projectorPath = join(dir, 'projector.onnx');
    await writeProjectorModel(projectorPath, buildProjectorModel({ hiddenSize: H }, weights));
    identityPath = join(dir, 'identity.onnx');
    await writeProjectorModel(identityPath, buildIdentityProjector(H));
  });

  it('the projector graph computes the SwiGLU stack', async () => {
    const session = await ort.InferenceSession.create(projectorPath);
    const x = Float32Array.from({ length: 2 * H }, (_, i) => Math.sin(i));
    const out = (await session.run({ hidden_state: new ort.Tensor('float32', x, [2, H]) })).latent_embedding!.data as Float32Array;
    for (let r = 0; r < 2; r++) {
      const expected = swiglu(x.subarray(r * H, (r + 1) * H), weights, H, 2 * H);
      for (let j = 0; j < H; j++) expect(out[r * H + j]).to.be.closeTo(expected[j]!, 1e-4 * Math.max(1, Math.abs(expected[j]!)));
    }
    await session.release();
  });

  /**
   * The backbone by hand with raw onnxruntime: the builder's native inputs_embeds/last_hidden_state model,
   * prefill then `steps` latent steps where each input embedding is `project(h)` of the previous hidden state.
   */
  async function byHand(prompt: number[], steps: number, project: (h: Float32Array) => Float32Array): Promise<Float32Array> {
    const config = storiesConfig({ hiddenSize: H });
    const path = join(testDir('by-hand'), 'native.onnx');
    await writeLlamaModel(path, config, randomLlamaWeights(config, 21, 0.1), { inputsEmbeds: true, outputHidden: true });
    const s = await ort.InferenceSession.create(path);
    const past: Record<string, ort.Tensor> = {};
    for (let i = 0; i < config.numLayers; i++) for (const kv of ['key', 'value']) past[`past_key_values.${i}.${kv}`] = new ort.Tensor('float32', new Float32Array(0), [1, 2, 0, H / 4]);
    let total = 0;
    const run = async (ids: number[], embeds: Float32Array, n: number) => {
      const out = await s.run({
        input_ids: new ort.Tensor('int64', BigInt64Array.from(ids, BigInt), [1, ids.length]),
        inputs_embeds: new ort.Tensor('float32', embeds, [1, embeds.length / H, H]),
        attention_mask: new ort.Tensor('int64', new BigInt64Array(total + n).fill(1n), [1, total + n]),
        position_ids: new ort.Tensor('int64', BigInt64Array.from({ length: n }, (_, i) => BigInt(total + i)), [1, n]),
        ...past,
      });
      for (let i = 0; i < config.numLayers; i++) for (const kv of ['key', 'value']) past[`past_key_values.${i}.${kv}`] = out[`present.${i}.${kv}`] as ort.Tensor;
      total += n;
      const hidden = out.last_hidden_state!.data as Float32Array;
      const logits = out.logits!.data as Float32Array;
      return { hidden: hidden.slice(hidden.length - H), logits: logits.slice(logits.length - 512) };
    };
    let r = await run(prompt, new Float32Array(0), prompt.length);
    for (let k = 0; k < steps; k++) r = await run([], project(r.hidden), 1);
    await s.release();
    return r.logits;
  }

  async function engineLogits(projector: string, steps: number, prompt: number[]): Promise<Float32Array> {
    const engine = await Engine.load({ model: backboneDir, projector, cacheDir });
    try {
      const stream = engine.stream({ promptIds: prompt }, { maxTokens: 1, latent: `fixed:${steps}`, trace: 512 });
      const logits = new Float32Array(512);
      for await (const t of stream) for (const c of t.trace!.models[0]!.top) logits[c.id] = c.logit;
      expect((await stream.result).usage.latentSteps).to.equal(steps);
      return logits;
    } finally {
      await engine.dispose();
    }
  }

  it('a latent step equals running the decoder with inputs_embeds = P(h) by hand', async () => {
    const prompt = [1, 403, 407];
    const expected = await byHand(prompt, 1, (h) => swiglu(h, weights, H, 2 * H));
    const got = await engineLogits(projectorPath, 1, prompt);
    for (let v = 0; v < 512; v++) expect(got[v]).to.be.closeTo(expected[v]!, 2e-4);
  });

  it('the identity projector with fixed:K feeds the hidden states back (Coconut), as computed independently', async () => {
    const prompt = [1, 403, 407, 261];
    const expected = await byHand(prompt, 3, (h) => h);
    const got = await engineLogits(identityPath, 3, prompt);
    for (let v = 0; v < 512; v++) expect(got[v]).to.be.closeTo(expected[v]!, 2e-4);
  });

  /**
   * A backbone that writes `text` token by token after the prompt; after each complete marker it leaves
   * `steps` positions for the latent steps (the token after them is read at the last one).
   */
  async function scriptedBackbone(name: string, prompt: number[], text: string, stepsPerMarker: number[]): Promise<{ dir: string; discrete: number[] }> {
    const discrete = tokenizer.encode(text, false);
    const script = new Array<number>(prompt.length - 1).fill(0);
    // The token completing the k-th close tag is the first whose prefix decodes to k close tags.
    const closes = (ids: number[]) => tokenizer.decode(ids).split(MARKER.close).length - 1;
    const markerEnds = stepsPerMarker.map((_, k) => discrete.findIndex((_, i) => closes(discrete.slice(0, i + 1)) > k));
    discrete.forEach((id, i) => {
      script.push(id);
      const m = markerEnds.indexOf(i);
      if (m >= 0) for (let k = 0; k < stepsPerMarker[m]!; k++) script.push(id);
    });
    const dir = await makeModule({
      name,
      kind: 'backbone',
      config: storiesConfig({ hiddenSize: H }),
      seed: 21,
      edit: (p) => followScript(p, 512, [...script, 2]),
    });
    return { dir, discrete };
  }

  /**
   * Streams what a backbone scripted to write `reply` (its markers asking `steps`) answers 'Once upon a time', latent
   * placeholders '…'; `more` makes further calls of the same engine before it is disposed.
   */
  async function streamScripted(name: string, reply: string, steps: number[], more?: (engine: Engine, discrete: number[]) => Promise<void>) {
    const { dir, discrete } = await scriptedBackbone(name, tokenizer.encode('Once upon a time'), reply, steps);
    const engine = await Engine.load({ model: dir, projector: projectorPath, cacheDir });
    try {
      const stream = engine.stream({ prompt: 'Once upon a time' }, { maxTokens: discrete.length, latentPlaceholder: '…' });
      let streamed = '';
      for await (const t of stream) streamed += t.text;
      const result = await stream.result;
      await more?.(engine, discrete);
      return { result, streamed, discrete };
    } finally {
      await engine.dispose();
    }
  }

  it('runs N latent steps where the model writes a marker, hides the marker and counts steps and tokens', async () => {
    const reply = 'there was a dog. <implicit_thought>3</implicit_thought> The dog was happy.';
    const { result: r, streamed, discrete } = await streamScripted('scripted', reply, [3], async (engine, discrete) => {
      const never = await engine.generate({ prompt: 'Once upon a time' }, { maxTokens: discrete.length, latent: 'never' });
      expect(never.rows[0]!.text).to.include('<implicit_thought>3</implicit_thought>');
      expect(never.usage.latentSteps ?? 0).to.equal(0);
    });
    expect(r.rows[0]!.ids).to.deep.equal(discrete);
    expect(r.rows[0]!.text).to.equal(' there was a dog. ……… The dog was happy.');
    expect(streamed).to.equal(r.rows[0]!.text);
    expect(r.usage.latentSteps).to.equal(3);
    expect(r.usage.completionTokens).to.equal(discrete.length);
  });

  it('runs the steps of a marker the model writes right after a malformed one, which stays text', async () => {
    const reply = 'a cat. <implicit_thought>3<implicit_thought>4</implicit_thought> It ran.';
    const { result: r, streamed, discrete } = await streamScripted('scripted-malformed', reply, [4]);
    expect(r.rows[0]!.ids).to.deep.equal(discrete);
    expect(r.rows[0]!.text).to.equal(' a cat. <implicit_thought>3………… It ran.');
    expect(streamed).to.equal(r.rows[0]!.text);
    expect(r.usage.latentSteps).to.equal(4);
  });

  it('thinks only the latent steps that fit in the context, then stops with finishReason length', async () => {
    const prompt = tokenizer.encode('Once upon a time');
    const { dir, discrete } = await scriptedBackbone('scripted-ctx', prompt, 'there was a dog. <implicit_thought>3</implicit_thought> The dog was happy.', [3]);
    const markerEnd = discrete.findIndex((_, i) => tokenizer.decode(discrete.slice(0, i + 1)).includes(MARKER.close));
    // Room for the prompt, the tokens up to the marker's end and one latent step: two of the three are cut.
    const context = prompt.length + markerEnd + 2;
    const config = JSON.parse(await readFile(join(dir, 'tokenizer_config.json'), 'utf8'));
    await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify({ ...config, model_max_length: context }));
    const { schemaVersion: _, files, ...manifest } = JSON.parse(await readFile(join(dir, 'reasonplug.json'), 'utf8')) as ModuleManifest;
    await writeModuleDir(dir, { ...manifest, files: Object.fromEntries(Object.entries(files).map(([key, f]) => [key, f.path])) });
    const engine = await Engine.load({ model: dir, projector: projectorPath, cacheDir });
    try {
      expect(engine.info.contextLength).to.equal(context);
      const r = await engine.generate({ prompt: 'Once upon a time' }, { maxTokens: discrete.length, latentPlaceholder: '…' });
      expect(r.usage.latentSteps).to.equal(1);
      // one placeholder for the one step that ran, not three for the three the marker asked for
      expect(r.rows[0]!.text).to.match(/^ there was a dog\. …[^…]*$/);
      expect(r.rows[0]!.finishReason).to.equal('length');
      expect(r.rows[0]!.ids).to.have.length(markerEnd + 2);
      expect(r.rows[0]!.ids.slice(0, markerEnd + 1)).to.deep.equal(discrete.slice(0, markerEnd + 1));
    } finally {
      await engine.dispose();
    }
  });

  it('clamps a marker asking for too many steps, and ignores markers in the prompt', async () => {
    const promptText = 'Once <implicit_thought>2</implicit_thought> upon';
    const prompt = tokenizer.encode(promptText);
    const { dir, discrete } = await scriptedBackbone('scripted-clamp', prompt, 'a <implicit_thought>99</implicit_thought> time.', [4]);
    const projector = join(testDir('small-max'), 'projector');
    await mkdir(projector, { recursive: true });
    await writeProjectorModel(join(projector, 'model.onnx'), buildProjectorModel({ hiddenSize: H }, weights));
    await writeModuleDir(projector, {
      name: 'test-projector',
      version: '1.0.0',
      kind: 'latent-projector',
      tasks: ['test'],
      description: 'projector with a small step limit',
      license: 'MIT',
      compat: { tokenizer: (await tokenizerFingerprintOfDir(dir))!, vocabSize: 512, hiddenSize: H },
      latent: { ...MARKER, maxSteps: 4, tokensPerStep: 12.5 },
      files: { model: 'model.onnx' },
    });
    const engine = await Engine.load({ model: dir, projector, cacheDir });
    try {
      const r = await engine.generate({ prompt: promptText }, { maxTokens: discrete.length });
      expect(r.rows[0]!.ids).to.deep.equal(discrete);
      expect(r.usage.latentSteps).to.equal(4); // 99 clamped to the projector's maxSteps; the prompt's marker ignored
      expect(r.usage.reasoningTokensSaved).to.equal(50);
      expect(r.rows[0]!.text).to.equal(' a  time.');
    } finally {
      await engine.dispose();
    }
  });

  it('composes with a reasoner: reasoners skip latent steps and the generation still follows the policy, in lanes and inline', async () => {
    const prompt = tokenizer.encode('Once upon a time');
    const { dir, discrete } = await scriptedBackbone('scripted-unir', prompt, 'a cat. <implicit_thought>2</implicit_thought> It ran.', [2]);
    const reasoner = await makeModule({ name: 'latent-r', config: storiesConfig({ hiddenSize: 32 }), seed: 22 });
    for (const placement of ['lanes', 'inline'] as const) {
      const engine = await Engine.load({ model: dir, projector: projectorPath, reasoners: [{ model: reasoner, weight: 0.5 }], cacheDir, placement });
      try {
        expect(engine.info.placement.kind).to.equal(placement);
        const r = await engine.generate({ prompt: 'Once upon a time' }, { maxTokens: discrete.length });
        expect(r.rows[0]!.ids).to.deep.equal(discrete);
        expect(r.usage.latentSteps).to.equal(2);
        // Two prompts think in the batch, each row on its own cache, wherever the reasoners are placed (alone, a call
        // weighting reasoners in lanes would run the latent steps on every row at once); a traced call cannot.
        const options = { maxTokens: discrete.length, temperature: 0 };
        const batch = await engine.generate({ prompt: ['Once upon a time', 'a'] }, options);
        const alone = await engine.generate({ prompt: 'a' }, options);
        expect(batch.rows.map((row) => [row.ids, row.latentSteps])).to.deep.equal([
          [discrete, 2],
          [alone.rows[0]!.ids, alone.rows[0]!.latentSteps],
        ]);
        const traced = await engine.generate({ prompt: ['Once upon a time', 'a'] }, { ...options, trace: 3 }).catch((e: Error) => e);
        expect((traced as Error).name).to.equal('LatentPolicyError');
      } finally {
        await engine.dispose();
      }
    }
  });

  it('refuses a projector of another hidden size, and a graph that is not a projector', async () => {
    const wrong = join(testDir('wrong-projector'), 'p.onnx');
    await writeProjectorModel(wrong, buildIdentityProjector(H + 16));
    const err = await Engine.load({ model: backboneDir, projector: wrong, cacheDir }).catch((e: Error) => e);
    expect((err as Error).name).to.equal('ProjectorError');
    expect((err as Error).message).to.match(/hidden size 64 .* backbone's hidden size is 48/);
    const notProjector = join(backboneDir, 'model.onnx');
    const err2 = await Engine.load({ model: backboneDir, projector: notProjector, cacheDir }).catch((e: Error) => e);
    expect((err2 as Error).message).to.match(/is not a reasoning projector/);
  });
});

describe('what composed caches see during latent steps', function () {
  this.timeout(60_000);
  it('the backbone cache holds the latent positions; reasoner caches hold only the discrete tokens', async () => {
    const { openDecoder } = await import('../src/runtime/prepare-model.js');
    const { ProjectorSession } = await import('../src/runtime/projector-session.js');
    const { ComposedSource, localReasoners } = await import('../src/compose/composed-source.js');
    const H = 48;
    const backboneDir = await makeModule({ name: 'cache-backbone', kind: 'backbone', config: storiesConfig({ hiddenSize: H }), seed: 51 });
    const reasonerDir = await makeModule({ name: 'cache-r', config: storiesConfig({ hiddenSize: 32 }), seed: 52 });
    const path = join(testDir('cache-projector'), 'p.onnx');
    await writeProjectorModel(path, buildProjectorModel({ hiddenSize: H }, randomProjectorWeights({ hiddenSize: H }, 3)));
    const backbone = (await openDecoder(backboneDir, {}, cacheDir, { latent: true })).session;
    const reasoner = (await openDecoder(reasonerDir, {}, cacheDir)).session;
    const projector = await ProjectorSession.create(path);
    try {
      const source = new ComposedSource(backbone, localReasoners([{ name: 'cache-r', decoder: reasoner }]), 512, {
        active: [{ slot: 0, weight: 1 }],
        mode: 'logits',
        normalize: false,
        traceTop: 0,
      }, { backbone, projector });
      await source.prefill([[1, 403, 407]]);
      await source.step([261]);
      const afterLatent = await source.latentSteps(3);
      expect(backbone.cachedLength).to.equal(4 + 3);
      expect(reasoner.cachedLength).to.equal(4);
      // the next discrete token is fed to every model
      await source.step([Array.from(afterLatent).indexOf(Math.max(...afterLatent))]);
      expect(backbone.cachedLength).to.equal(8);
      expect(reasoner.cachedLength).to.equal(5);
    } finally {
      await Promise.all([backbone.release(), reasoner.release(), projector.release()]);
    }
  });
});
