import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { writeFile, copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Engine } from '../src/engine.js';
import { PromptError } from '../src/generate/decode-loop.js';
import { SamplingOptionsError } from '../src/sampling/options.js';
import { EmbedInputError } from '../src/runtime/embed.js';
import { CompositionOptionsError } from '../src/compose/composition-options.js';
import { DecoderSession } from '../src/runtime/decoder-session.js';
import { prepareDecoder } from '../src/onnx/prepared-cache.js';
import { models } from '../../../test/support/paths.js';
import { builtModel, cacheDir, smallConfig, testDir } from './support/models.js';
import { bareLogits } from './support/bare-loop.js';
import { rejection } from './support/assertions.js';

const KNOWN_FP16_IDS = [30016, 7356, 9023, 25068, 22665, 2507, 5236, 14142];

async function openSession(path: string): Promise<DecoderSession> {
  const p = await prepareDecoder(path, { lastLogitsOnly: true, logitsFloat32: true, cacheDir });
  return DecoderSession.create({ path: p.preparedPath, ...(p.externalDataDir ? { externalDataDir: p.externalDataDir } : {}) });
}

function argmaxRow(logits: Float32Array, row: number, vocab: number): number {
  let best = 0;
  for (let v = 1; v < vocab; v++) if (logits[row * vocab + v]! > logits[row * vocab + best]!) best = v;
  return best;
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).to.equal(b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  return d;
}

describe('decoder session', () => {
  for (const [name, opts, tol] of [
    ['fp32', {}, 1e-4],
    ['fp16 int32 ids without position_ids', { dtype: 'float16', idsType: 'int32', positionIds: false }, 2e-2],
    ['merged decoder', { mergedDecoder: true }, 1e-4],
    ['num_logits_to_keep, external data, adjacent RoPE', { numLogitsToKeep: true, externalData: true }, 1e-4],
  ] as const) {
    it(`KV-cached steps equal full recomputation (${name})`, async () => {
      const config = name.includes('adjacent') ? { ...smallConfig, ropeStyle: 'adjacent' as const } : smallConfig;
      const session = await openSession(await builtModel(`kv-${name}`, config, opts));
      const fresh = await openSession(await builtModel(`kv-${name}`, config, opts));
      try {
        const seq = [5, 17, 3, 44];
        let logits = await session.prefill([seq]);
        for (let step = 0; step < 6; step++) {
          const full = await fresh.prefill([seq]);
          expect(maxAbsDiff(logits, full)).to.be.below(tol);
          const next = argmaxRow(logits, 0, session.vocabSize);
          expect(argmaxRow(full, 0, fresh.vocabSize)).to.equal(next);
          seq.push(next);
          logits = await session.step([next]);
        }
        expect(session.cachedLength).to.equal(seq.length);
      } finally {
        await session.release();
        await fresh.release();
      }
    });
  }

  it('KV-cached steps equal full recomputation on the onnxruntime-genai fp16 export', async () => {
    const session = await openSession(join(models.llamaFp16, 'model.onnx'));
    const fresh = await openSession(join(models.llamaFp16, 'model.onnx'));
    try {
      const seq = [1, 15043, 3186];
      let logits = await session.prefill([seq]);
      for (let step = 0; step < 4; step++) {
        const full = await fresh.prefill([seq]);
        expect(maxAbsDiff(logits, full)).to.be.below(5e-2);
        const next = argmaxRow(logits, 0, session.vocabSize);
        seq.push(next);
        logits = await session.step([next]);
      }
      expect(seq.slice(3)).to.deep.equal(KNOWN_FP16_IDS.slice(0, 4));
    } finally {
      await session.release();
      await fresh.release();
    }
  });

  it('a left-padded batch gives each row the logits it gets alone', async () => {
    const session = await openSession(await builtModel('batch'));
    try {
      const prompts = [[4, 9, 33, 2, 61], [7, 1], [50, 51, 52]];
      let batch = await session.prefill(prompts);
      const V = session.vocabSize;
      const alone = [];
      for (const p of prompts) alone.push(await session.prefill([p]));
      for (let r = 0; r < prompts.length; r++) expect(maxAbsDiff(batch.subarray(r * V, (r + 1) * V), alone[r]!)).to.be.below(1e-4);
      // and after a step
      await session.prefill(prompts);
      batch = await session.step([10, 11, 12]);
      for (let r = 0; r < prompts.length; r++) {
        await session.prefill([prompts[r]!]);
        const one = await session.step([10 + r]);
        expect(maxAbsDiff(batch.subarray(r * V, (r + 1) * V), one)).to.be.below(1e-4);
      }
    } finally {
      await session.release();
    }
  });
});

describe('engine', function () {
  this.timeout(120_000);

  it('reproduces the known greedy ids of the onnxruntime-genai fp16 model', async () => {
    const engine = await Engine.load({ model: models.llamaFp16, cacheDir });
    try {
      const r = await engine.generate({ promptIds: [1, 15043, 3186] }, { maxTokens: 8 });
      expect(r.rows[0]!.ids).to.deep.equal(KNOWN_FP16_IDS);
      expect(r.usage).to.deep.equal({ promptTokens: 3, completionTokens: 8 });
      expect(r.rows[0]!.finishReason).to.equal('length');
      expect(r.timing.msPerToken).to.be.greaterThan(0);
    } finally {
      await engine.dispose();
    }
  });

  it('a batch equals the same prompts one by one (greedy, and seeded sampling: each prompt draws as it would alone)', async () => {
    const engine = await Engine.load({ model: await builtModel('engine-batch'), cacheDir });
    try {
      const prompts = [[3, 8, 20, 1, 9], [12], [40, 41]];
      for (const opts of [{ maxTokens: 10 }, { maxTokens: 10, temperature: 0.9, topK: 20, seed: 42 }]) {
        const batch = await engine.generate({ promptIds: prompts }, opts);
        for (let r = 0; r < prompts.length; r++) {
          const one = await engine.generate({ promptIds: prompts[r]! }, opts);
          expect(batch.rows[r]!.ids).to.deep.equal(one.rows[0]!.ids);
        }
        expect(batch.usage.promptTokens).to.equal(8);
      }
      // the same prompt three times, sampled: three reproducible draws, not one draw three times
      const same = { maxTokens: 10, temperature: 0.9, seed: 42 };
      const three = (await engine.generate({ promptIds: [prompts[0]!, prompts[0]!, prompts[0]!] }, same)).rows.map((r) => r.ids);
      expect(new Set(three.map((ids) => ids.join()))).to.have.property('size', 3);
      expect((await engine.generate({ promptIds: [prompts[0]!, prompts[0]!, prompts[0]!] }, same)).rows.map((r) => r.ids)).to.deep.equal(three);
      // beside another prompt, a prompt's repeats draw as they do in a call of that prompt alone
      const mixed = (await engine.generate({ promptIds: [prompts[0]!, prompts[1]!, prompts[0]!] }, same)).rows.map((r) => r.ids);
      expect([mixed[0], mixed[2]]).to.deep.equal(three.slice(0, 2));
    } finally {
      await engine.dispose();
    }
  });

  it('a seed reproduces a sampled run; another seed changes it', async () => {
    const engine = await Engine.load({ model: await builtModel('engine-seed'), cacheDir });
    try {
      const opts = { maxTokens: 24, temperature: 1.0, topP: 0.95, seed: 1234 };
      const a = await engine.generate({ promptIds: [1, 2, 3] }, opts);
      const b = await engine.generate({ promptIds: [1, 2, 3] }, opts);
      const c = await engine.generate({ promptIds: [1, 2, 3] }, { ...opts, seed: 99 });
      expect(a.rows[0]!.ids).to.deep.equal(b.rows[0]!.ids);
      expect(a.rows[0]!.ids).to.not.deep.equal(c.rows[0]!.ids);
    } finally {
      await engine.dispose();
    }
  });

  it('stops on an end-of-sequence id and reports it', async () => {
    const engine = await Engine.load({ model: await builtModel('engine-eos'), cacheDir });
    try {
      const free = await engine.generate({ promptIds: [5, 6] }, { maxTokens: 12 });
      const eos = free.rows[0]!.ids[4]!;
      const r = await engine.generate({ promptIds: [5, 6] }, { maxTokens: 12, eosTokenIds: [eos] });
      const cut = free.rows[0]!.ids.indexOf(eos);
      expect(r.rows[0]!.ids).to.deep.equal(free.rows[0]!.ids.slice(0, cut + 1));
      expect(r.rows[0]!.finishReason).to.equal('eos');
    } finally {
      await engine.dispose();
    }
  });

  it('abort stops within one step and keeps the main thread responsive meanwhile', async () => {
    // A step (~2 ms) longer than the stream's batching interval (1 ms), so that each token reaches this thread
    // on its own and the count seen here is the worker's progress, not a batch that was already computed.
    const big = { ...smallConfig, vocabSize: 4000, hiddenSize: 512, numLayers: 4, numHeads: 8, numKvHeads: 4, intermediateSize: 1536 };
    const engine = await Engine.load({ model: await builtModel('engine-abort', big), cacheDir });
    try {
      const controller = new AbortController();
      let ticks = 0;
      const timer = setInterval(() => ticks++, 1);
      const stream = engine.stream({ promptIds: [1, 2, 3] }, { maxTokens: 100_000, ignoreEos: true, signal: controller.signal });
      let seen = 0;
      let atAbort = 0;
      for await (const _ of stream) {
        seen++;
        if (seen === 50) {
          atAbort = seen;
          controller.abort();
        }
      }
      clearInterval(timer);
      const r = await stream.result;
      expect(r.rows[0]!.finishReason).to.equal('abort');
      // tokens already in flight when abort was observed: at most one step's worth
      expect(r.usage.completionTokens).to.be.within(atAbort, atAbort + 2);
      expect(ticks).to.be.greaterThan(10);
    } finally {
      await engine.dispose();
    }
  });

  it('streams text that concatenates to the result, and cuts at a stop string', async () => {
    const engine = await Engine.load({ model: models.llamaFp16, cacheDir });
    try {
      const free = await engine.generate({ prompt: 'Hello' }, { maxTokens: 12 });
      const text = free.rows[0]!.text;
      expect(text.length).to.be.greaterThan(4);
      const stop = text.slice(3, 5);
      const stream = engine.stream({ prompt: 'Hello' }, { maxTokens: 12, stop: ['\u0000never', stop] });
      let streamed = '';
      for await (const t of stream) streamed += t.text;
      const r = await stream.result;
      expect(r.rows[0]!.finishReason).to.equal('stop');
      expect(r.rows[0]!.stopString).to.equal(stop);
      expect(free.rows[0]!).to.not.have.property('stopString');
      expect(r.rows[0]!.text).to.equal(text.slice(0, text.indexOf(stop)));
      expect(streamed).to.equal(r.rows[0]!.text);
    } finally {
      await engine.dispose();
    }
  });
});

describe('bad models', () => {
  it('refuses the legacy stacked-KV GPT-2 layout naming past_N', async () => {
    const err = await Engine.load({ model: join(models.gpt2Legacy, 'past.onnx'), cacheDir }).then(
      () => undefined,
      (e: Error) => e,
    );
    expect(err?.name).to.equal('UnsupportedModelError');
    expect(err?.message).to.match(/past_N|past_0/);
  });

  it('reports a missing file, a corrupt protobuf and a model without logits clearly', async () => {
    const dir = testDir('bad');
    const corrupt = join(dir, 'corrupt.onnx');
    await writeFile(corrupt, Buffer.from('this is not a protobuf at all, just text'));
    const truncated = join(dir, 'truncated.onnx');
    await copyFile(await builtModel('bad-src'), truncated);
    const { truncate } = await import('node:fs/promises');
    await truncate(truncated, 2000);
    for (const [path, pattern] of [
      [join(dir, 'nope.onnx'), /not found/],
      [corrupt, /not a valid ONNX model|protobuf/i],
      [truncated, /not a valid ONNX model|protobuf|truncat/i],
    ] as const) {
      const err = await Engine.load({ model: path, cacheDir }).then(
        () => undefined,
        (e: Error) => e,
      );
      expect(err, path).to.be.instanceOf(Error);
      expect(err!.message).to.match(pattern);
    }
  });

  it('asks for the CUDA install when --device cuda has no provider libraries', async () => {
    const err = await Engine.load({ model: await builtModel('bad-device'), cacheDir, device: 'cuda' }).then(
      () => undefined,
      (e: Error) => e,
    );
    expect(err?.name).to.equal('DeviceUnavailableError');
    expect(err?.message).to.include('ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules/onnxruntime-node/script/install.js');
  });
});

describe('bad prompts', () => {
  it('refuses ids outside the vocabulary and empty prompts, and the engine keeps working', async () => {
    const engine = await Engine.load({ model: await builtModel('bad-prompt'), cacheDir });
    try {
      const outside = await engine.generate({ promptIds: [1, smallConfig.vocabSize] }).catch((e: Error) => e);
      // refused in the worker, rebuilt as the class the package exports
      expect(outside).to.be.instanceOf(PromptError);
      expect((outside as Error).name).to.equal('PromptError');
      const fraction = await engine.generate({ promptIds: [1, 1.5] }).catch((e: Error) => e);
      expect((fraction as Error).message).to.equal('prompt 0 has token id 1.5, which is not a whole number');
      const bias = await engine.generate({ promptIds: [1] }, { logitBias: { [smallConfig.vocabSize]: 5 } }).catch((e: Error) => e);
      expect(bias).to.be.instanceOf(SamplingOptionsError).and.have.property('option', 'logitBias');
      expect((outside as Error).message).to.include(`token id ${smallConfig.vocabSize}`);
      expect(() => engine.generate({ promptIds: [] })).to.throw(PromptError, 'promptIds is empty: give at least one token id');
      const ok = await engine.generate({ promptIds: [1, 2] }, { maxTokens: 3 });
      expect(ok.rows[0]!.ids).to.have.length(3);
    } finally {
      await engine.dispose();
    }
  });
});

describe('calls the fuzzing found mishandled', function () {
  this.timeout(120_000);

  it('refuses prompts of the wrong form by name, synchronously, and the engine keeps working', async () => {
    const engine = await Engine.load({ model: await builtModel('prompt-forms'), cacheDir });
    try {
      const forms: [unknown, RegExp][] = [
        [{ prompt: 5 }, /prompt must be a text or a non-empty list of texts, not a number/],
        [{ prompt: [1, 2] }, /item 0 is a number/],
        [{}, /no prompt given/],
        [null, /the prompt is null/],
        [{ prompt: 'a', promptIds: [1] }, /give one of prompt and promptIds/],
        [{ messages: 'hi' }, /messages must be a list/],
        [{ messages: [null] }, /messages\[0\] must be an object \{ role, content \}, not null/],
        [{ promptIds: 7 }, /promptIds must be a list/],
      ];
      for (const [input, message] of forms) {
        expect(() => engine.generate(input as never), JSON.stringify(input)).to.throw(PromptError, message);
      }
      expect(await engine.tokenize(5 as never).catch((e: Error) => e)).to.be.instanceOf(PromptError);
      // composition options of the wrong form: named, not run as something else
      for (const [options, message] of [
        [{ mode: 'bogus' }, /call option mode must be logits or logprobs; got "bogus"/],
        [{ trace: 1.5 }, /trace must be a whole number of candidates from 1; got 1\.5/],
        [{ reasoners: 'x' }, /call option reasoners must be a list/],
        [{ reasoners: [{}] }, /call option reasoners\[0\]\.name must name a loaded reasoner/],
        [{ latentPlaceholder: 5 }, /latentPlaceholder must be a text \(shown once per latent step\); got 5/],
        [{ normalize: 'yes' }, /normalize must be true or false; got "yes"/],
      ] as const) {
        expect(() => engine.generate({ promptIds: [1] }, options as never), JSON.stringify(options)).to.throw(CompositionOptionsError, message);
      }
      expect(await engine.promptLogprobs(null as never).catch((e: Error) => e)).to.be.instanceOf(EmbedInputError).and.have.property('message', 'prompt log-probabilities takes { texts: string[] } or { ids: number[][] }');
      expect((await engine.generate({ promptIds: [1, 2] }, { maxTokens: 3 })).rows[0]!.ids).to.have.length(3);
    } finally {
      await engine.dispose();
    }
  });

  it('refuses load options of the wrong form by name before loading anything', async () => {
    const model = await builtModel('prompt-forms');
    for (const [options, message] of [
      [{}, /model must be a model path or registry reference; got undefined/],
      [{ model: 42 }, /model must be a model path.*got 42/],
      [{ model, reasoners: 'x' }, /reasoners must be a list of \{ model, weight\? \}; got "x"/],
      [{ model, reasoners: [null] }, /reasoners\[0\] must be an object/],
      [{ model, reasoners: [{ model, name: '' }] }, /reasoners\[0\]\.name must be a non-empty text/],
      [{ model, mode: 'bogus' }, /mode must be logits or logprobs/],
    ] as const) {
      const err = await Engine.load({ ...options, cacheDir } as never).catch((e: Error) => e);
      expect(err, JSON.stringify(options)).to.be.instanceOf(CompositionOptionsError);
      expect((err as Error).message).to.match(message);
    }
  });

  it('a stream read twice gives each reader every token; leaving it early stops the generation', async () => {
    const engine = await Engine.load({ model: await builtModel('stream-readers'), cacheDir });
    try {
      const stream = engine.stream({ promptIds: [1, 2, 3] }, { maxTokens: 30, ignoreEos: true });
      const read = async () => {
        const ids: number[] = [];
        for await (const t of stream) ids.push(t.id);
        return ids;
      };
      const [a, b] = await Promise.all([read(), read()]);
      expect(a).to.have.length(30);
      expect(b).to.deep.equal(a);

      const long = engine.stream({ promptIds: [1, 2, 3] }, { maxTokens: 3000, ignoreEos: true });
      for await (const _ of long) break;
      const result = await long.result;
      expect(result.rows[0]!.finishReason).to.equal('abort');
      expect(result.rows[0]!.ids.length).to.be.below(3000);
    } finally {
      await engine.dispose();
    }
  });

  it('dispose under long generations stops them and frees the engine, without taking the process down', async () => {
    // steps slow enough that the generations outlast the two seconds dispose used to wait before ending the worker
    const engine = await Engine.load({ model: await builtModel('dispose-busy', { ...smallConfig, hiddenSize: 256, numLayers: 4, numHeads: 4, intermediateSize: 1024, vocabSize: 4096 }), cacheDir });
    const calls = Array.from({ length: 4 }, (_, i) => engine.generate({ promptIds: [1, 2 + i] }, { maxTokens: 3500, ignoreEos: true }).then(() => 'finished', (e: Error) => e.message));
    await new Promise((r) => setTimeout(r, 300));
    const t0 = performance.now();
    await engine.dispose();
    expect(performance.now() - t0, 'dispose waited for the generations to end').to.be.below(10_000);
    expect(await Promise.all(calls)).to.deep.equal(new Array(4).fill('the engine was disposed'));
    expect(() => engine.generate({ promptIds: [1] })).to.not.throw();
    expect(await engine.generate({ promptIds: [1] }).catch((e: Error) => e.message)).to.match(/closed/);
  });
});

describe('abort before start', () => {
  it('a call aborted while queued runs nothing', async () => {
    const engine = await Engine.load({ model: await builtModel('abort-queued'), cacheDir });
    try {
      const controller = new AbortController();
      controller.abort();
      const r = await engine.generate({ promptIds: [1, 2, 3] }, { maxTokens: 5, signal: controller.signal });
      expect(r.rows[0]!.finishReason).to.equal('abort');
      expect(r.rows[0]!.ids).to.deep.equal([]);
      expect(r.usage.completionTokens).to.equal(0);
      expect(r.timing.prefillMs).to.equal(0);
    } finally {
      await engine.dispose();
    }
  });
});

describe('process lifetime', function () {
  this.timeout(120_000);

  /** Runs `body` in a fresh Node process with `engine` loaded from `model`; its exit code and output. */
  async function inChild(model: string, body: string): Promise<{ code: number | null; out: string }> {
    const engineUrl = new URL('../src/engine.ts', import.meta.url).href;
    const script = `const { Engine } = await import(${JSON.stringify(engineUrl)});
const engine = await Engine.load({ model: ${JSON.stringify(model)}, cacheDir: ${JSON.stringify(cacheDir)} });
${body}`;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const killer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    const [code] = (await once(child, 'exit')) as [number | null];
    clearTimeout(killer);
    return { code, out };
  }

  it('an idle engine does not keep the process alive; calls in flight and dispose() do', async () => {
    const model = await builtModel('lifetime');
    // no dispose: the script ends when its call is done (it hung until killed before)
    const forgot = await inChild(model, `const r = await engine.generate({ promptIds: [1, 2, 3] }, { maxTokens: 4, ignoreEos: true });\nconsole.log('tokens', r.rows[0].ids.length);`);
    expect(forgot, forgot.out).to.deep.equal({ code: 0, out: 'tokens 4\n' });
    // a call nobody awaits still runs to its end; code after an awaited dispose() runs
    const unawaited = await inChild(model, `engine.generate({ promptIds: [1] }, { maxTokens: 64, ignoreEos: true }).then((r) => console.log('unawaited', r.rows[0].ids.length));`);
    expect(unawaited, unawaited.out).to.deep.equal({ code: 0, out: 'unawaited 64\n' });
    const disposed = await inChild(model, `await engine.dispose();\nconsole.log('after dispose');`);
    expect(disposed, disposed.out).to.deep.equal({ code: 0, out: 'after dispose\n' });
  });
});

describe('prompt log-probabilities', function () {
  this.timeout(60_000);

  it("are onnxruntime's own over the whole prompt (its bare run): each token after the tokens before it, in chunks, beside a running generation", async () => {
    const path = await builtModel('prompt-logprobs');
    const engine = await Engine.load({ model: path, cacheDir, prefillChunk: 8 });
    try {
      const prompts = [Array.from({ length: 37 }, (_, i) => 1 + ((i * 7) % 90)), [5, 9]];
      const alone = await engine.generate({ promptIds: [[3, 4, 5]] }, { maxTokens: 40, ignoreEos: true });
      // scored while a generation runs in the batch: neither disturbs the other
      const [scored, beside] = await Promise.all([
        engine.promptLogprobs({ ids: prompts }, { topLogprobs: 3 }),
        engine.generate({ promptIds: [[3, 4, 5]] }, { maxTokens: 40, ignoreEos: true }),
      ]);
      expect(beside.rows[0]!.ids).to.deep.equal(alone.rows[0]!.ids);
      expect(scored.prompts.map((p) => p.ids)).to.deep.equal(prompts);
      for (const [i, prompt] of prompts.entries()) {
        const logits = await bareLogits(path, prompt);
        const vocab = logits.length / prompt.length;
        const entries = scored.prompts[i]!.logprobs;
        expect(entries).to.have.length(prompt.length - 1);
        entries.forEach((e, p) => {
          const row = Array.from(logits.subarray(p * vocab, (p + 1) * vocab));
          const max = Math.max(...row);
          const logZ = max + Math.log(row.reduce((s, x) => s + Math.exp(x - max), 0));
          expect(e.id, `position ${p + 1}`).to.equal(prompt[p + 1]);
          expect(e.logprob).to.be.closeTo(row[prompt[p + 1]!]! - logZ, 1e-4);
          const best = row.map((x, id) => [x, id] as const).sort((a, b) => b[0] - a[0]).slice(0, 3).map(([, id]) => id);
          expect(e.top.map((t) => t.id)).to.deep.equal(best);
        });
      }
      expect((await rejection(engine.promptLogprobs({ ids: [[1, 2]] }, { topLogprobs: 21 }))).message).to.match(/topLogprobs must be a whole number from 0 to 20/);
      const empty = await rejection(engine.promptLogprobs({ ids: [[1, 2, 3], []] }));
      expect(empty.message).to.equal('prompt log-probabilities: input 1 has no tokens');
    } finally {
      await engine.dispose();
    }
  });

  it('of a composition: the models fused at every position as a step fuses them (raw logits or log-probabilities, normalized)', async () => {
    const path = await builtModel('prompt-logprobs');
    const reasoner = await builtModel('prompt-logprobs-r', smallConfig, {}, 11);
    const engine = await Engine.load({ model: path, reasoners: [{ name: 'r', model: reasoner, weight: 0.5 }], cacheDir, prefillChunk: 8 });
    try {
      const prompt = Array.from({ length: 21 }, (_, i) => 1 + ((i * 5) % 90));
      const [zb, zr] = await Promise.all([bareLogits(path, prompt), bareLogits(reasoner, prompt)]);
      const vocab = zb.length / prompt.length;
      const logSoftmax = (row: number[]) => {
        const max = Math.max(...row);
        const logZ = max + Math.log(row.reduce((s, x) => s + Math.exp(x - max), 0));
        return row.map((x) => x - logZ);
      };
      type Fuse = (b: number[], r: number[]) => number[];
      const cases: [Parameters<Engine['promptLogprobs']>[1], Fuse][] = [
        [{}, (b: number[], r: number[]) => b.map((x, v) => x + 0.5 * r[v]!)],
        [{ reasoners: [{ name: 'r', weight: -0.3 }], mode: 'logprobs' }, (b: number[], r: number[]) => ((lb, lr) => lb.map((x, v) => x - 0.3 * lr[v]!))(logSoftmax(b), logSoftmax(r))],
        [{ normalize: true }, (b: number[], r: number[]) => b.map((x, v) => (x + 0.5 * r[v]!) / 1.5)],
        [{ reasoners: [] }, (b: number[]) => b],
      ];
      for (const [options, fuse] of cases) {
        const [scored] = (await engine.promptLogprobs({ ids: [prompt] }, { topLogprobs: 2, ...options })).prompts;
        scored!.logprobs.forEach((e, p) => {
          const row = (m: Float32Array) => Array.from(m.subarray(p * vocab, (p + 1) * vocab));
          const want = logSoftmax(fuse(row(zb), row(zr)));
          expect(e.logprob, `${JSON.stringify(options)} at ${p + 1}`).to.be.closeTo(want[prompt[p + 1]!]!, 1e-4);
          expect(e.top[0]!.id).to.equal(want.indexOf(Math.max(...want)));
        });
      }
      const scheduled = await rejection(engine.promptLogprobs({ ids: [prompt] }, { reasoners: [{ name: 'r', weight: [{ until: 3, weight: 1 }, { weight: 0 }] }] }));
      expect(scheduled.message).to.match(/r: prompt log-probabilities take a constant weight/);
    } finally {
      await engine.dispose();
    }
  });
});
