/**
 * Per-token log-probabilities (`logprobs: k`): on the continuous batch, in the decode loop a call runs alone
 * in, for a composition's fused logits and for a constrained row, each value equal to a log-softmax computed
 * here from onnxruntime's bare session logits for the same ids (greedy).
 */
import { expect } from 'chai';
import { join } from 'node:path';
import { Engine, type StreamOptions } from '../src/engine.js';
import type { GenerationResult, TokenEvent, TokenLogprobs } from '../src/generate/types.js';
import { GenerateOptionsError } from '../src/generate/options.js';
import { TextTokenizer } from '../src/tokenizer/tokenizer.js';
import { bareLogits } from './support/bare-loop.js';
import { LogprobPass } from '../src/sampling/logprobs.js';
import { cacheDir } from './support/models.js';
import { makeModule, storiesConfig } from './support/modules.js';

/** Log-softmax in float64 of row `r` of `[rows × vocab]` logits. */
function logSoftmax(logits: Float32Array, r: number, vocab: number): number[] {
  const row = Array.from(logits.subarray(r * vocab, (r + 1) * vocab));
  const max = Math.max(...row);
  const lse = max + Math.log(row.reduce((s, x) => s + Math.exp(x - max), 0));
  return row.map((x) => x - lse);
}

describe('LogprobPass', () => {
  it('sums to 1 over finite entries, gives -Infinity to -Infinity/NaN entries and never lists them, and keeps its copy of the row', () => {
    const row = Float32Array.from([2, -Infinity, 0.5, NaN, 2, -3]);
    const pass = new LogprobPass(row, 5);
    // Ties: the lower id first, as argmax picks.
    expect(pass.top.map((t) => t.id)).to.deep.equal([0, 4, 2, 5]);
    const total = [0, 2, 4, 5].reduce((n, id) => n + Math.exp(pass.logprobOf(id)), 0);
    expect(total).to.be.closeTo(1, 1e-12);
    expect([pass.logprobOf(1), pass.logprobOf(3)]).to.deep.equal([-Infinity, -Infinity]);
    row.fill(-Infinity); // a mask or the sampler writing over the row afterwards
    expect(pass.logprobOf(0)).to.be.closeTo(Math.log(Math.exp(2) / (2 * Math.exp(2) + Math.exp(0.5) + Math.exp(-3))), 1e-6);
    const inf = new LogprobPass(Float32Array.from([1, Infinity, Infinity]), 0);
    expect([inf.logprobOf(0), inf.logprobOf(1)]).to.deep.equal([-Infinity, -Math.log(2)]);
    expect(inf.top).to.deep.equal([]);
  });
});

describe('log-probabilities', function () {
  this.timeout(120_000);
  let engine: Engine;
  let tokenizer: TextTokenizer;
  let backbone: string;
  let reasoner: string;
  let prompt: number[];
  const V = 512;

  before(async () => {
    [backbone, reasoner] = await Promise.all([
      makeModule({ name: 'lp-backbone', kind: 'backbone', seed: 11 }),
      makeModule({ name: 'lp-reasoner', seed: 12, config: storiesConfig({ hiddenSize: 32 }) }),
    ]);
    engine = await Engine.load({ model: backbone, cacheDir, placement: 'inline', reasoners: [{ model: reasoner, name: 'r', weight: 0 }] });
    tokenizer = await TextTokenizer.fromDirectory(backbone);
    prompt = tokenizer.encode('Once upon a time');
  });
  after(() => engine?.dispose());

  /** The reference log-softmax after each generated position: the backbone's, or `z_b + w·z_r` fused. */
  async function reference(ids: number[], weight = 0): Promise<number[][]> {
    const seq = [...prompt, ...ids.slice(0, -1)];
    const base = await bareLogits(join(backbone, 'model.onnx'), seq);
    const fused = base.slice();
    if (weight !== 0) {
      const z = await bareLogits(join(reasoner, 'model.onnx'), seq);
      for (let i = 0; i < fused.length; i++) fused[i] = base[i]! + weight * z[i]!;
    }
    return ids.map((_, t) => logSoftmax(fused, prompt.length - 1 + t, V));
  }

  /** Checks each token's logprob and alternatives against the reference; returns the worst difference. */
  function compare(entries: TokenLogprobs[], ids: number[], want: number[][], k: number): number {
    expect(entries.map((e) => e.id)).to.deep.equal(ids);
    let worst = 0;
    entries.forEach((e, t) => {
      const ref = want[t]!;
      worst = Math.max(worst, Math.abs(e.logprob - ref[e.id]!));
      const order = ref.map((lp, id) => ({ id, lp })).sort((a, b) => b.lp - a.lp || a.id - b.id);
      expect(e.top.map((a) => a.id), `alternatives at token ${t}`).to.deep.equal(order.slice(0, k).map((o) => o.id));
      for (const a of e.top) worst = Math.max(worst, Math.abs(a.logprob - ref[a.id]!));
      // a token holding part of a character is named by nothing, or the character it completes (U+FFFD for one it
      // leaves unfinished); its bytes are then its own (the character's share), else its name's
      for (const a of [e, ...e.top]) {
        const own = Buffer.from(a.bytes!).toString('utf8');
        if (own.includes('\uFFFD')) expect(a.token === '' || [...a.token!].length === 1, `a piece named ${JSON.stringify(a.token)}`).to.equal(true);
        else if (!a.token!.includes('\uFFFD')) expect(own).to.equal(a.token);
      }
    });
    return worst;
  }

  async function run(options: StreamOptions): Promise<{ result: GenerationResult; events: TokenEvent[] }> {
    const stream = engine.stream({ promptIds: prompt }, options);
    const events: TokenEvent[] = [];
    for await (const e of stream) events.push(e);
    return { result: await stream.result, events };
  }

  it('equal a log-softmax of the bare session logits, in the batch and alone, for the backbone and a composition, streamed as in the result', async () => {
    const k = 4;
    const calls: [string, StreamOptions, number][] = [
      ['batch, backbone', { maxTokens: 8, logprobs: k }, 0],
      ['batch, composed', { maxTokens: 8, logprobs: k, reasoners: [{ name: 'r', weight: 1.5 }] }, 1.5],
      // A trace makes the call run alone, in the decode loop over the composed source.
      ['alone, composed', { maxTokens: 8, logprobs: k, trace: 1, reasoners: [{ name: 'r', weight: 1.5 }] }, 1.5],
      ['alone, backbone', { maxTokens: 8, logprobs: k, trace: 1 }, 0],
    ];
    // Concurrent: the batch calls share steps; the traced ones run once it drains.
    const runs = await Promise.all(calls.map(([, options]) => run(options)));
    const worst: Record<string, number> = {};
    for (const [i, [name, , weight]] of calls.entries()) {
      const { result, events } = runs[i]!;
      const row = result.rows[0]!;
      expect(row.ids.length, name).to.equal(8);
      const entries = row.logprobs!;
      worst[name] = compare(entries, row.ids, await reference(row.ids, weight), k);
      // Greedy: the chosen token is the most likely one.
      for (const e of entries) expect(e.logprob, name).to.equal(e.top[0]!.logprob);
      expect(events.map((e) => e.logprobs), name).to.deep.equal(entries);
      // Tokens are named as they read in the text (a word's leading space included); a reply cut mid-character ends
      // in U+FFFD, which no token's name holds (the pieces name nothing until a character completes)
      expect(entries.map((e) => e.token).join(''), name).to.equal(row.text.replace(/\uFFFD+$/, ''));
    }
    for (const [name, w] of Object.entries(worst)) expect(w, name).to.be.below(1e-4);
    // The composition changes the distribution.
    expect(runs[1]!.result.rows[0]!.logprobs![0]!.logprob).to.not.be.closeTo(runs[0]!.result.rows[0]!.logprobs![0]!.logprob, 1e-3);
  });

  it("come named in generate's result, whose tokens are not streamed, as in a stream's result: in the batch and alone", async () => {
    for (const options of [{ maxTokens: 6, logprobs: 2 }, { maxTokens: 6, logprobs: 2, trace: 1, reasoners: [{ name: 'r', weight: 1.5 }] }] as StreamOptions[]) {
      const streamed = (await run(options)).result.rows[0]!;
      const row = (await engine.generate({ promptIds: prompt }, options)).rows[0]!;
      expect(row.logprobs).to.deep.equal(streamed.logprobs);
      expect(row.logprobs!.map((e) => e.token).join('')).to.equal(row.text);
    }
  });

  it('are the model distribution before the grammar mask for a constrained row; 0 alternatives lists none; none asked, none computed; 21 refused', async () => {
    const { result } = await run({ maxTokens: 6, logprobs: 0, responseFormat: { type: 'json_object' } });
    const row = result.rows[0]!;
    const want = await reference(row.ids);
    row.logprobs!.forEach((e, t) => {
      expect(e.top).to.deep.equal([]);
      expect(Math.abs(e.logprob - want[t]![e.id]!)).to.be.below(1e-4);
    });
    // The grammar picked '{' first, which the model alone does not rank first.
    expect(row.text.startsWith('{')).to.equal(true);
    expect(row.logprobs![0]!.logprob).to.be.below(Math.max(...want[0]!));

    const plain = await run({ maxTokens: 3 });
    expect(plain.result.rows[0]!.logprobs).to.equal(undefined);
    expect(plain.events.every((e) => e.logprobs === undefined)).to.equal(true);
    expect(() => engine.stream({ promptIds: prompt }, { logprobs: 21 })).to.throw(GenerateOptionsError, /logprobs/);
  });
});
